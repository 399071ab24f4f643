//! One run of an action's command: no shell, a cleared environment, stdin from /dev/null,
//! its own process group, output tails capped, and a deadline after which the whole group
//! is killed. Self-contained so that it can later be shared with the smartctl runner.
//!
//! The output is read with poll(2) on non-blocking pipes by the calling thread, never by
//! helper threads: when the command ends but a grandchild it left behind still holds the
//! pipes, we stop reading after [`DRAIN_GRACE`] and close our ends, and nothing of ours is
//! left waiting on that grandchild.

use std::io::{ErrorKind, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, Signal, kill_process_group};

/// How long output is still read after the command ended (or was killed), for what is left
/// in the pipes; a grandchild that keeps them open does not hold us longer than this.
pub const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Environment variables passed on from the agent; everything else is cleared.
const KEPT_ENV: [&str; 2] = ["PATH", "LANG"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    /// Bytes kept per stream: the last ones, where the error usually is.
    pub max_output: usize,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code; `None` when killed by a signal (ours at the timeout, or another).
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration: Duration,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Some output was dropped from the front of either stream to keep it under the cap.
    pub truncated: bool,
}

/// The command could not be started. Nothing ran; the caller reports the reason.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("empty command")]
    Empty,
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
}

/// The last `cap` bytes written to it.
#[derive(Debug, Default)]
struct Tail {
    buf: Vec<u8>,
    cap: usize,
    dropped: bool,
}

impl Tail {
    fn new(cap: usize) -> Tail {
        Tail { buf: Vec::new(), cap, dropped: false }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        // Trim only when twice over, so a chatty command costs amortised O(1) per byte.
        if self.buf.len() > self.cap.saturating_mul(2).max(4096) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.buf.len() > self.cap {
            let cut = self.buf.len() - self.cap;
            self.buf.drain(..cut);
            self.dropped = true;
        }
    }

    fn finish(mut self) -> (Vec<u8>, bool) {
        self.trim();
        (self.buf, self.dropped)
    }
}

/// A pipe we still read from.
struct Stream<R> {
    pipe: Option<R>,
    tail: Tail,
}

impl<R: Read + std::os::fd::AsFd> Stream<R> {
    /// Reads what is there without blocking; closes the pipe at EOF or on an error.
    fn read_available(&mut self) {
        let Some(pipe) = self.pipe.as_mut() else { return };
        let mut buf = [0u8; 16 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break self.pipe = None,
                Ok(n) => self.tail.push(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break self.pipe = None,
            }
        }
    }
}

/// Runs `argv` to its end or its timeout. `argv[0]` is executed as given (the config
/// requires an absolute path), never through a shell.
pub fn run(argv: &[String], limits: &Limits) -> Result<Outcome, SpawnError> {
    let (program, args) = argv.split_first().ok_or(SpawnError::Empty)?;
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for key in KEPT_ENV {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    // Its own process group, so that the timeout kills whatever it started too.
    cmd.process_group(0);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| SpawnError::Spawn { program: program.clone(), source })?;
    let mut out = Stream { pipe: child.stdout.take(), tail: Tail::new(limits.max_output) };
    let mut err = Stream { pipe: child.stderr.take(), tail: Tail::new(limits.max_output) };
    set_nonblocking(&out.pipe, &err.pipe);
    let deadline = started + limits.timeout;
    let mut timed_out = false;
    let status = loop {
        wait_readable(&out, &err, deadline.min(Instant::now() + Duration::from_millis(50)));
        out.read_available();
        err.read_available();
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(_) => break kill_and_reap(&mut child),
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break kill_and_reap(&mut child);
        }
    };
    let duration = started.elapsed();
    // What is still in the pipes, for a short while only.
    let grace_end = Instant::now() + DRAIN_GRACE;
    while (out.pipe.is_some() || err.pipe.is_some()) && Instant::now() < grace_end {
        wait_readable(&out, &err, grace_end);
        out.read_available();
        err.read_available();
    }
    let (stdout, t1) = out.tail.finish();
    let (stderr, t2) = err.tail.finish();
    Ok(Outcome {
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        duration,
        stdout,
        stderr,
        truncated: t1 || t2,
    })
}

fn set_nonblocking(out: &Option<ChildStdout>, err: &Option<ChildStderr>) {
    if let Some(p) = out {
        let _ = rustix::io::ioctl_fionbio(p, true);
    }
    if let Some(p) = err {
        let _ = rustix::io::ioctl_fionbio(p, true);
    }
}

/// Sleeps until either open pipe has something (or is closed) or `until` passes.
fn wait_readable(out: &Stream<ChildStdout>, err: &Stream<ChildStderr>, until: Instant) {
    let left = until.saturating_duration_since(Instant::now());
    let ts = Timespec { tv_sec: left.as_secs() as i64, tv_nsec: left.subsec_nanos().into() };
    let mut fds = Vec::with_capacity(2);
    if let Some(p) = &out.pipe {
        fds.push(PollFd::new(p, PollFlags::IN));
    }
    if let Some(p) = &err.pipe {
        fds.push(PollFd::new(p, PollFlags::IN));
    }
    if fds.is_empty() {
        std::thread::sleep(left);
        return;
    }
    let _ = poll(&mut fds, Some(&ts));
}

/// Kills the command's whole process group, then reaps the command. The group is killed
/// before the reap, while its id cannot have been reused.
fn kill_and_reap(child: &mut Child) -> std::process::ExitStatus {
    if let Some(pid) = Pid::from_raw(child.id() as i32) {
        let _ = kill_process_group(pid, Signal::KILL);
    }
    let _ = child.kill();
    child.wait().unwrap_or_else(|_| std::process::ExitStatus::from_raw(9))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    fn limits(ms: u64) -> Limits {
        Limits { timeout: Duration::from_millis(ms), max_output: 1024 }
    }

    #[test]
    fn the_exit_code_and_both_streams_are_reported() {
        let o = run(&sh("echo out; echo err >&2; exit 3"), &limits(5_000)).unwrap();
        assert_eq!((o.exit_code, o.timed_out, o.truncated), (Some(3), false, false));
        assert_eq!(o.stdout, b"out\n");
        assert_eq!(o.stderr, b"err\n");
    }

    #[test]
    fn the_environment_is_cleared_but_for_path_and_lang_and_stdin_is_empty() {
        let o = run(&sh("env | sort; cat"), &limits(5_000)).unwrap();
        let env = String::from_utf8(o.stdout).unwrap();
        for line in env.lines() {
            let key = line.split('=').next().unwrap();
            assert!(["PATH", "LANG", "PWD", "SHLVL", "_"].contains(&key), "leaked {line}");
        }
    }

    #[test]
    fn only_the_tail_of_a_long_output_is_kept() {
        let o = run(&sh("i=0; while [ $i -lt 500 ]; do echo line$i; i=$((i+1)); done"), &limits(10_000)).unwrap();
        assert!(o.truncated);
        assert_eq!(o.stdout.len(), 1024);
        assert!(o.stdout.ends_with(b"line499\n"));
    }

    #[test]
    fn a_timeout_kills_the_group_even_when_a_grandchild_holds_stdout() {
        let t = Instant::now();
        let o = run(&sh("sleep 30 & echo started; wait"), &limits(300)).unwrap();
        assert!(o.timed_out);
        assert_eq!(o.signal, Some(9));
        assert_eq!(o.stdout, b"started\n");
        assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    }

    #[test]
    fn a_grandchild_that_left_the_group_and_holds_stdout_does_not_hold_the_answer() {
        // setsid puts the sleep out of reach of the group kill; it keeps our pipes open.
        let t = Instant::now();
        let o = run(&sh("setsid sleep 5 & echo bye"), &limits(10_000)).unwrap();
        assert_eq!((o.exit_code, o.timed_out), (Some(0), false));
        assert_eq!(o.stdout, b"bye\n");
        assert!(t.elapsed() < Duration::from_secs(2), "waited on the grandchild's pipe: {:?}", t.elapsed());
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        assert!(matches!(run(&["/nonexistent/x".into()], &limits(100)), Err(SpawnError::Spawn { .. })));
    }
}
