//! Running an outside program with a hard deadline: smartctl, nvidia-smi, and the remote
//! actions (through [`run_with`], which adds a cleared environment and a capability drop).
//!
//! A plain `kill` + `wait` + read-to-EOF is not bounded: a program that forks keeps its
//! stdout open in the grandchild after the parent is killed, and a program stuck in
//! uninterruptible IO (D state, a dying disk) cannot be reaped until the IO ends. So:
//! the child gets its own process group and the whole group is killed at the deadline;
//! pipes are read and the child reaped on helper threads, and the caller waits for them
//! only until the deadline. Whatever is still stuck after that is left to those threads,
//! which end when the pipe closes or the process can be reaped. Once the program has exited,
//! its output is read for [`DRAIN_GRACE`] more only: a grandchild that left the group (setsid)
//! and holds the pipes does not hold the caller. [`Outcome::leftover`] tells when those
//! helpers have ended; a caller that runs the same program every interval keeps it in
//! [`StuckRuns`] and does not start another while the last one lives (each stuck run
//! holds three threads and a process).

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

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
    /// The helper threads (reaper, pipe readers) this run left behind.
    pub leftover: Leftover,
}

/// The helper threads of one run still alive: the reaper waits for a process that may be
/// stuck in the kernel, the readers for pipes it or its children hold.
#[derive(Debug, Clone, Default)]
pub struct Leftover(Arc<AtomicUsize>);

impl Leftover {
    /// The process is reaped and its pipes closed: nothing of the run is left.
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
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that one kill reaches whatever it forked.
        .process_group(0)
        .spawn()
        .map_err(|source| spawn_error(&cmd, source))?;
    let group = Pid::from_child(&child);
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
    let (tx, rx) = mpsc::channel();
    let stdout = Arc::new(Mutex::new(Tail::new(cap)));
    let stderr = Arc::new(Mutex::new(Tail::new(cap)));
    let leftover = Leftover::default();
    let mut open = 0;
    let pipes = [
        (child.stdout.take().map(|p| Box::new(p) as Pipe), &stdout),
        (child.stderr.take().map(|p| Box::new(p) as Pipe), &stderr),
    ];
    for (pipe, tail) in pipes {
        let Some(pipe) = pipe else { continue };
        let (tail, tx, holding) = (Arc::clone(tail), tx.clone(), leftover.hold());
        let read = move || {
            let _holding = holding;
            drain(pipe, &tail, &tx)
        };
        if thread::Builder::new().name("child-out".into()).spawn(read).is_ok() {
            open += 1;
        }
    }
    // The reaper: `wait` may block for as long as the process is stuck in the kernel.
    let reaper_tx = tx.clone();
    drop(tx);
    let holding = leftover.hold();
    let reaping = thread::Builder::new().name("child-wait".into()).spawn(move || {
        let _holding = holding;
        let _ = reaper_tx.send(Event::Exited(child.wait()));
    });
    let mut status = None;
    let mut exited = reaping.is_err();
    let mut until = deadline;
    while !exited || open > 0 {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(Event::Exited(s)) => {
                exited = true;
                status = s.ok();
                until = until.min(Instant::now() + DRAIN_GRACE);
            }
            Ok(Event::Closed) => open -= 1,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    // Exited, but its pipes held past the grace by a grandchild: not a timeout of the program.
    let timed_out = !exited || (open > 0 && Instant::now() >= deadline);
    if !exited || open > 0 {
        // The group id is the child's pid, still reserved while the child is unreaped or
        // any member of its group lives; an error means they are all gone already.
        let _ = kill_process_group(group, Signal::KILL);
    }
    if let Some(g) = groups {
        g.lock().running.remove(&group.as_raw_nonzero().get());
    }
    let take = |t: &Arc<Mutex<Tail>>| t.lock().unwrap_or_else(|p| p.into_inner()).take();
    let ((stdout, cut_out), (stderr, cut_err)) = (take(&stdout), take(&stderr));
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

enum Event {
    Exited(io::Result<ExitStatus>),
    /// One output pipe reached its end.
    Closed,
}

type Pipe = Box<dyn Read + Send>;

fn drain(mut pipe: Pipe, tail: &Mutex<Tail>, tx: &mpsc::Sender<Event>) {
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => tail.lock().unwrap_or_else(|p| p.into_inner()).push(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = tx.send(Event::Closed);
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
        let gone = (0..200).any(|_| {
            thread::sleep(Duration::from_millis(10));
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
        });
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
    fn a_killed_run_is_stuck_until_its_helpers_end_and_then_forgotten() {
        // A grandchild in its own session escapes the group kill and holds stdout open,
        // as a process in D state holds its pipes: the pipe reader outlives the deadline.
        let o = run(sh("setsid sleep 1 & sleep 30"), Duration::from_millis(200), 64).unwrap();
        assert!(o.timed_out && !o.leftover.is_done());
        let stuck = StuckRuns::default();
        stuck.note("sh /dev/sda", &o);
        assert!(stuck.stuck_for("sh /dev/sda").is_some());
        assert_eq!(stuck.stuck_for("sh /dev/sdb"), None);
        let ended = (0..500).any(|_| {
            thread::sleep(Duration::from_millis(10));
            o.leftover.is_done()
        });
        assert!(ended, "the pipe reader did not end after the grandchild did");
        assert_eq!(stuck.stuck_for("sh /dev/sda"), None);
    }

    #[test]
    fn a_missing_program_is_a_not_found_spawn_error() {
        let e = run(Command::new("/nonexistent/prog"), Duration::from_secs(1), 10).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().contains("/nonexistent/prog"), "{e}");
    }
}
