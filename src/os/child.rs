//! Running an outside program with a hard deadline: smartctl, nvidia-smi, and the remote
//! actions (through [`run_with`], which adds a cleared environment and a capability drop).
//!
//! A plain `kill` + `wait` + read-to-EOF is not bounded: a program that forks keeps its
//! stdout open in the grandchild after the parent is killed, and a program stuck in
//! uninterruptible IO (D state, a dying disk) cannot be reaped until the IO ends. So:
//! the child gets its own process group and the whole group is killed at the deadline, and
//! at its exit too (what it left in its group ends with it). Its pipes are read on the
//! caller's own thread with poll(2), never on a thread of their own, and closed when the run
//! is over, whoever still holds their other ends: once the program has exited its output is
//! read for [`DRAIN_GRACE`] more only, and at the deadline not at all. The child is reaped on
//! a helper thread, which the caller waits for only until the deadline; that thread (one per
//! run) ends when the process can be reaped. What left the group (setsid) and outlives the
//! program is handed to the agent by the kernel, which ends it ([`super::orphans`]).
//! [`Outcome::leftover`] tells when the reaper has ended; a caller that runs the same
//! program every interval keeps it in [`StuckRuns`] and does not start another while the
//! last one lives (each stuck run holds a thread and a process).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, kill_process_group};

use super::orphans;

/// The program could not be started. `is_not_found` tells a missing binary (say which
/// package or setting provides it) from anything else (log it; retrying may work).
#[derive(Debug, thiserror::Error)]
#[error("cannot start {program}: {source}")]
pub struct SpawnError {
    pub program: String,
    #[source]
    pub source: io::Error,
}

impl SpawnError {
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The child's exit status; `None` when it had not exited by the deadline (it was
    /// killed, and is reaped in the background).
    pub status: Option<ExitStatus>,
    /// The deadline passed before the child exited and its output ended; its process
    /// group was killed. The output is what came before.
    pub timed_out: bool,
    /// The last `cap` bytes of stdout and of stderr.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// More than `cap` bytes came on stdout or stderr; the beginning was dropped.
    pub truncated: bool,
    pub duration: Duration,
    /// The helper thread (the reaper) this run left behind.
    pub leftover: Leftover,
}

/// The helper thread of one run while it lives: the reaper, which waits for a process that
/// may be stuck in the kernel (and then ends what the process left behind).
#[derive(Debug, Clone, Default)]
pub struct Leftover(Arc<AtomicUsize>);

impl Leftover {
    /// The process is reaped: nothing of the run is left.
    pub fn is_done(&self) -> bool {
        self.0.load(Ordering::SeqCst) == 0
    }

    /// Counts one helper thread until the returned guard is dropped (when the thread ends).
    fn hold(&self) -> Holding {
        self.0.fetch_add(1, Ordering::SeqCst);
        Holding(Arc::clone(&self.0))
    }
}

struct Holding(Arc<AtomicUsize>);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs of one program that timed out and are still stuck (D state: SIGKILL waits for the
/// kernel call), by key (program + device). A caller asks [`StuckRuns::stuck_for`] before
/// starting the program again, so at most one stuck run per key exists.
#[derive(Debug, Default)]
pub struct StuckRuns(Mutex<HashMap<String, (Instant, Leftover)>>);

impl StuckRuns {
    /// How long the last run for `key` has been stuck, or `None` when there is none (a
    /// finished one is forgotten).
    pub fn stuck_for(&self, key: &str) -> Option<Duration> {
        let mut runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match runs.get(key) {
            Some((since, left)) if !left.is_done() => Some(since.elapsed()),
            Some(_) => {
                runs.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `outcome`'s leftover under `key` when the run was killed and is not gone yet.
    pub fn note(&self, key: &str, outcome: &Outcome) {
        if outcome.timed_out && !outcome.leftover.is_done() {
            let mut runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
            runs.retain(|_, (_, left)| !left.is_done());
            runs.insert(key.to_string(), (Instant::now(), outcome.leftover.clone()));
        }
    }
}

/// How long output is still read after the program exited, for what is left in the pipes; a
/// grandchild that keeps them open does not hold the caller longer than this.
pub const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// What the program inherits from the agent's environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Env {
    /// Everything (smartctl and nvidia-smi need nothing hidden from them).
    #[default]
    Inherit,
    /// Cleared but for `PATH` and `LANG`: a remote action sees none of the agent's settings.
    PathAndLang,
}

/// What [`run_with`] does beyond [`run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    pub env: Env,
    /// Drop every capability of the calling thread before the spawn, so that the program
    /// starts with none (see [`drop_thread_capabilities`]). For a thread of its own only:
    /// the drop is for good.
    pub drop_capabilities: bool,
}

/// The process groups of the runs going on now, for a caller that must end them when it
/// stops: each run has its own group (so that the timeout reaches whatever it forked), so
/// the agent's exit alone leaves them running, orphaned, past their timeout.
#[derive(Debug, Default, Clone)]
pub struct Groups(Arc<Mutex<GroupSet>>);

#[derive(Debug, Default)]
struct GroupSet {
    running: HashSet<i32>,
    /// [`Groups::kill_all`] was called: a run whose thread reaches its spawn only now (it
    /// waited on a stalled state disk to record its start) must not run on, orphaned,
    /// after the agent's exit.
    killed: bool,
}

impl Groups {
    fn lock(&self) -> std::sync::MutexGuard<'_, GroupSet> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Kills every group still running (SIGKILL, as at a timeout), and every one started
    /// from now on; returns how many were running.
    pub fn kill_all(&self) -> usize {
        let mut groups = self.lock();
        groups.killed = true;
        for g in groups.running.iter() {
            if let Some(pid) = Pid::from_raw(*g) {
                let _ = kill_process_group(pid, Signal::KILL);
            }
        }
        groups.running.len()
    }

    fn is_killed(&self) -> bool {
        self.lock().killed
    }
}

/// As [`run`], with the environment and capabilities of `options`; the run's process group
/// is in `groups` while it runs.
pub fn run_with(
    mut cmd: Command,
    timeout: Duration,
    cap: usize,
    options: Options,
    groups: &Groups,
) -> Result<Outcome, SpawnError> {
    if options.env == Env::PathAndLang {
        cmd.env_clear();
        for key in ["PATH", "LANG"] {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
    }
    if options.drop_capabilities {
        drop_thread_capabilities();
    }
    run_in(cmd, timeout, cap, Some(groups))
}

/// Drops every capability of the calling thread (capabilities are per thread on Linux), so
/// that what it spawns starts with none. Under root nothing is dropped: root gets every
/// capability back at exec anyway, and keeping ours lets the state directory stay writable
/// whatever its owner (tests, containers).
pub fn drop_thread_capabilities() {
    use rustix::thread::{CapabilitySet, CapabilitySets, clear_ambient_capability_set, set_capabilities};
    let _ = clear_ambient_capability_set();
    if rustix::process::geteuid().is_root() {
        return;
    }
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    let _ = set_capabilities(None, none);
}

/// Runs `cmd` (stdin from /dev/null, stdout and stderr captured) for at most `timeout`,
/// keeping the last `cap` bytes of each output. Returns by `timeout` plus a few
/// milliseconds whatever the program or its children do.
pub fn run(cmd: Command, timeout: Duration, cap: usize) -> Result<Outcome, SpawnError> {
    run_in(cmd, timeout, cap, None)
}

fn run_in(mut cmd: Command, timeout: Duration, cap: usize, groups: Option<&Groups>) -> Result<Outcome, SpawnError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let spawn_error =
        |cmd: &Command, source| SpawnError { program: cmd.get_program().to_string_lossy().into_owned(), source };
    // Looked up first, not left to spawn's error: posix_spawn in older glibc (and under
    // qemu-user) reports a program that is not there as a child exiting 127, and "not
    // installed" must not read as "ran and failed".
    locate(&cmd).map_err(|source| spawn_error(&cmd, source))?;
    if groups.is_some_and(Groups::is_killed) {
        return Err(spawn_error(&cmd, io::Error::other("not started: the agent is stopping")));
    }
    // The reaper's word that the child is over wakes the pipe reading below.
    let (wake_tx, wake_rx) = UnixStream::pair().map_err(|source| spawn_error(&cmd, source))?;
    let spawning = orphans::Spawning::begin();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that one kill reaches whatever it forked.
        .process_group(0)
        .spawn()
        .map_err(|source| spawn_error(&cmd, source))?;
    let group = Pid::from_child(&child);
    spawning.started(group);
    if let Some(g) = groups {
        let mut set = g.lock();
        if set.killed {
            // kill_all ran between the check above and the spawn: it cannot have seen
            // this group, so it is killed here (the run ends as killed by SIGKILL).
            let _ = kill_process_group(group, Signal::KILL);
        } else {
            set.running.insert(group.as_raw_nonzero().get());
        }
    }
    let mut output = Output([
        Stream::new(child.stdout.take().map(OwnedFd::from), cap),
        Stream::new(child.stderr.take().map(OwnedFd::from), cap),
    ]);
    let (tx, rx) = mpsc::channel();
    let leftover = Leftover::default();
    // The group id is the child's pid, reserved only until the child is reaped: whoever
    // kills the group checks, under this lock, that the reaper has not reaped it yet.
    let reaped = Arc::new(Mutex::new(false));
    let reaper = Reaper { group, groups: groups.cloned(), reaped: Arc::clone(&reaped), tx, wake: wake_tx };
    let holding = leftover.hold();
    // `wait` may block for as long as the process is stuck in the kernel: its own thread.
    let reaping = thread::Builder::new().name("child-wait".into()).spawn(move || {
        let _holding = holding;
        reaper.reap(child)
    });
    if reaping.is_err() {
        // No thread: nothing would ever reap it. Killed now, reaped by the kernel once this
        // process exits; its output is what came before.
        let _ = kill_process_group(group, Signal::KILL);
    }
    let mut status = None;
    let mut exited = reaping.is_err();
    let mut until = deadline;
    while !(exited && output.is_closed()) {
        let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else { break };
        if output.read_for(&wake_rx, left) {
            drain_wake(&wake_rx);
            match rx.try_recv() {
                Ok(s) => {
                    exited = true;
                    status = s;
                    until = until.min(Instant::now() + DRAIN_GRACE);
                }
                // The reaper ended without a word (it panicked): nothing more will come.
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {}
            }
        }
    }
    // Exited, but its pipes held past the grace by what it left outside its group: not a
    // timeout of the program.
    let timed_out = !exited || (!output.is_closed() && Instant::now() >= deadline);
    if !exited {
        let reaped = reaped.lock().unwrap_or_else(|p| p.into_inner());
        if !*reaped {
            let _ = kill_process_group(group, Signal::KILL);
        }
    }
    // The pipes close here, whoever still holds their other ends: no thread waits on them.
    let ((stdout, cut_out), (stderr, cut_err)) = output.take();
    Ok(Outcome {
        status,
        timed_out,
        stdout,
        stderr,
        truncated: cut_out || cut_err,
        duration: started.elapsed(),
        leftover,
    })
}

/// The reaper of one run, on its own thread: it waits for the child to exit, kills what is
/// left of its group, reaps it, ends the orphans it left (when the agent adopts them), and
/// only then says so to the run, so that what held the pipes is gone by then.
struct Reaper {
    group: Pid,
    groups: Option<Groups>,
    reaped: Arc<Mutex<bool>>,
    tx: mpsc::Sender<Option<ExitStatus>>,
    wake: UnixStream,
}

impl Reaper {
    fn reap(self, mut child: std::process::Child) {
        // Exited but not reaped (WNOWAIT): its pid, the group's id, is still reserved.
        let pid = self.group;
        loop {
            match rustix::process::waitid(WaitId::Pid(pid), WaitIdOptions::EXITED | WaitIdOptions::NOWAIT) {
                Err(e) if e == rustix::io::Errno::INTR => continue,
                _ => break,
            }
        }
        let status = {
            let mut reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(g) = &self.groups {
                g.lock().running.remove(&pid.as_raw_nonzero().get());
            }
            // What it left in its group ends with it; outside the group, the orphans below.
            let _ = kill_process_group(pid, Signal::KILL);
            let status = child.wait().ok();
            *reaped = true;
            status
        };
        orphans::run_ended(pid);
        let _ = self.tx.send(status);
        let _ = (&self.wake).write(&[1]);
    }
}

fn drain_wake(rx: &UnixStream) {
    let mut buf = [0u8; 16];
    while matches!((&*rx).read(&mut buf), Ok(n) if n > 0) {}
}

/// One output pipe of a run (closed once it ended) and the tail of what came through it.
struct Stream {
    pipe: Option<File>,
    tail: Tail,
}

impl Stream {
    fn new(pipe: Option<OwnedFd>, cap: usize) -> Stream {
        let pipe = pipe.map(File::from);
        if let Some(f) = &pipe {
            // Read only when poll says so; non-blocking all the same, so a read never waits.
            let _ = rustix::io::ioctl_fionbio(f, true);
        }
        Stream { pipe, tail: Tail::new(cap) }
    }

    /// Reads until the pipe is empty (at most 128 KiB, so that a program writing without
    /// pause cannot hold the caller past its deadline: the rest waits for the next round);
    /// closes it at its end.
    fn read(&mut self) {
        let Some(file) = &mut self.pipe else { return };
        let mut buf = [0u8; 8192];
        let mut ended = false;
        for _ in 0..16 {
            match file.read(&mut buf) {
                Ok(n) if n > 0 => self.tail.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The end, or an error: nothing more will come.
                Ok(_) | Err(_) => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            self.pipe = None;
        }
    }
}

/// A run's stdout and stderr, read on the caller's thread: no thread of ours ever waits on
/// a pipe, so a descendant that keeps one open costs nothing once the run is over.
struct Output([Stream; 2]);

impl Output {
    fn is_closed(&self) -> bool {
        self.0.iter().all(|s| s.pipe.is_none())
    }

    /// Waits up to `left` for output or for the wake pipe, and reads what came. Returns
    /// whether the wake pipe is readable.
    fn read_for(&mut self, wake: &UnixStream, left: Duration) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let ts = Timespec { tv_sec: left.as_secs().min(i64::MAX as u64) as i64, tv_nsec: left.subsec_nanos().into() };
        let mut fds = vec![PollFd::new(wake, PollFlags::IN)];
        let open: Vec<usize> = (0..2).filter(|i| self.0[*i].pipe.is_some()).collect();
        fds.extend(self.0.iter().filter_map(|s| s.pipe.as_ref()).map(|f| PollFd::new(f, PollFlags::IN)));
        // EINTR is a wake-up like any other: the caller's loop looks again.
        let _ = poll(&mut fds, Some(&ts));
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        for (n, i) in open.into_iter().enumerate() {
            if ready[n + 1] {
                self.0[i].read();
            }
        }
        ready[0]
    }

    /// The tails of stdout and stderr, each with whether it was cut.
    fn take(self) -> ((Vec<u8>, bool), (Vec<u8>, bool)) {
        let [mut out, mut err] = self.0;
        (out.tail.take(), err.tail.take())
    }
}

/// `NotFound` when `cmd`'s program does not exist: a path is looked at, a bare name is
/// looked for in the `PATH` the child will get (as spawn itself searches).
fn locate(cmd: &Command) -> io::Result<()> {
    let program = std::path::Path::new(cmd.get_program());
    if program.components().count() > 1 || program.is_absolute() {
        return std::fs::metadata(program).map(|_| ());
    }
    let path = match cmd.get_envs().find(|(k, _)| *k == "PATH") {
        Some((_, v)) => v.map(std::ffi::OsStr::to_os_string),
        None => std::env::var_os("PATH"),
    };
    let found = path.as_deref().is_some_and(|p| std::env::split_paths(p).any(|dir| dir.join(program).is_file()));
    if found { Ok(()) } else { Err(io::Error::new(io::ErrorKind::NotFound, "not found on PATH")) }
}

/// The last `cap` bytes of a stream, in memory bounded by twice `cap`.
struct Tail {
    cap: usize,
    buf: Vec<u8>,
    dropped: bool,
}

impl Tail {
    fn new(cap: usize) -> Tail {
        Tail { cap, buf: Vec::new(), dropped: false }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        // Trim in batches: moving the kept bytes on every read would be quadratic.
        if self.buf.len() > self.cap.saturating_mul(2).max(8192) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.buf.len() > self.cap {
            self.buf.drain(..self.buf.len() - self.cap);
            self.dropped = true;
        }
    }

    fn take(&mut self) -> (Vec<u8>, bool) {
        self.trim();
        (std::mem::take(&mut self.buf), self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", script]);
        c
    }

    /// Whether process `pid` is gone (or a zombie nobody reaped yet) within 2 s.
    fn ends_soon(pid: i32) -> bool {
        (0..200).any(|_| {
            thread::sleep(Duration::from_millis(10));
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
        })
    }

    #[test]
    fn output_and_status_of_a_quick_program_are_returned() {
        let o = run(sh("echo out; echo err >&2; exit 3"), Duration::from_secs(10), 1024).unwrap();
        assert_eq!(o.status.and_then(|s| s.code()), Some(3));
        assert!(!o.timed_out && !o.truncated);
        assert_eq!((o.stdout.as_slice(), o.stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
    }

    #[test]
    fn only_the_tail_of_a_long_output_is_kept() {
        let o = run(sh("seq 1 100000"), Duration::from_secs(10), 16).unwrap();
        assert!(o.truncated);
        assert_eq!(o.stdout, b"98\n99999\n100000\n");
    }

    #[test]
    fn a_grandchild_holding_stdout_does_not_hold_the_caller_past_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let script = format!("sleep 30 & echo $! > {}; echo started; sleep 30", pidfile.display());
        let o = run(sh(&script), Duration::from_millis(300), 1024).unwrap();
        assert!(o.timed_out);
        assert_eq!(o.status, None);
        assert_eq!(o.stdout, b"started\n", "output before the kill is kept");
        assert!(o.duration < Duration::from_secs(5), "{:?}", o.duration);
        // The whole group was killed: the grandchild is gone (reaped by init) soon after.
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let gone = ends_soon(pid);
        assert!(gone, "grandchild {pid} survived the group kill");
    }

    #[test]
    fn a_program_that_exited_is_not_held_by_a_grandchild_outside_its_group_holding_stdout() {
        // setsid puts the sleep out of reach of the group kill; it keeps our pipes open.
        let o = run(sh("setsid sleep 5 & echo bye"), Duration::from_secs(10), 1024).unwrap();
        assert_eq!((o.status.and_then(|s| s.code()), o.timed_out), (Some(0), false));
        assert_eq!(o.stdout, b"bye\n");
        assert!(o.duration < Duration::from_secs(2), "waited on the grandchild's pipe: {:?}", o.duration);
    }

    #[test]
    fn a_killed_run_is_stuck_until_its_reaper_ends_and_then_forgotten() {
        // A process in D state cannot be reaped until its kernel call returns; its reaper
        // thread is held meanwhile. Played here by the reaper's count itself.
        let o = run(sh("sleep 30"), Duration::from_millis(100), 64).unwrap();
        assert!(o.timed_out);
        let held = o.leftover.hold();
        let stuck = StuckRuns::default();
        stuck.note("sh /dev/sda", &o);
        assert!(stuck.stuck_for("sh /dev/sda").is_some());
        assert_eq!(stuck.stuck_for("sh /dev/sdb"), None);
        drop(held);
        let ended = (0..500).any(|_| {
            thread::sleep(Duration::from_millis(10));
            o.leftover.is_done()
        });
        assert!(ended, "the reaper did not end after the kill");
        assert_eq!(stuck.stuck_for("sh /dev/sda"), None);
    }

    /// Whether the run's helper thread is gone within a second.
    fn helpers_end(o: &Outcome) -> bool {
        (0..100).any(|_| {
            thread::sleep(Duration::from_millis(10));
            o.leftover.is_done()
        })
    }

    #[test]
    fn a_grandchild_outside_the_group_holding_the_pipes_leaves_no_thread_behind_after_an_exit() {
        // setsid puts the sleep out of reach of the group kill; it keeps our pipes open for
        // 5 s. Nothing of ours may wait on them once the program has exited.
        let o = run(sh("setsid sleep 5 & echo bye"), Duration::from_secs(10), 1024).unwrap();
        assert_eq!((o.status.and_then(|s| s.code()), o.stdout.as_slice()), (Some(0), &b"bye\n"[..]));
        assert!(helpers_end(&o), "a thread still waits on the grandchild's pipe");
    }

    #[test]
    fn a_grandchild_outside_the_group_holding_the_pipes_leaves_no_thread_behind_after_a_timeout() {
        let o = run(sh("setsid sleep 5 & echo started; sleep 30"), Duration::from_millis(300), 1024).unwrap();
        assert!(o.timed_out);
        assert_eq!(o.stdout, b"started\n");
        assert!(helpers_end(&o), "a thread still waits on the grandchild's pipe");
    }

    #[test]
    fn a_member_of_the_group_left_running_ends_with_the_program() {
        // Backgrounded in the group, its output sent elsewhere: it holds no pipe of ours,
        // and it is killed with the group once the program exits.
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("member");
        let script = format!("sleep 30 >/dev/null 2>&1 & echo $! > {}", pidfile.display());
        let o = run(sh(&script), Duration::from_secs(10), 1024).unwrap();
        assert_eq!(o.status.and_then(|s| s.code()), Some(0));
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let gone = ends_soon(pid);
        assert!(gone, "{pid} of the program's group outlived it");
    }

    #[test]
    fn a_missing_program_is_a_not_found_spawn_error() {
        let e = run(Command::new("/nonexistent/prog"), Duration::from_secs(1), 10).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().contains("/nonexistent/prog"), "{e}");
    }
}
