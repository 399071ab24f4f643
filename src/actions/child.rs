//! One run of an action's command: no shell, the environment cleared but for PATH and LANG,
//! no capabilities, stdin from /dev/null, its own process group killed at the deadline,
//! output tails capped. The runner is [`crate::os::child`]'s (shared with smartctl and
//! nvidia-smi); this adds the action's argv and the exit code / signal split of its result.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use crate::os::child::{self, Env, Options};

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
    #[error(transparent)]
    Spawn(#[from] child::SpawnError),
}

/// Runs `argv` to its end or its timeout. `argv[0]` is executed as given (the config
/// requires an absolute path), never through a shell.
pub fn run(argv: &[String], limits: &Limits) -> Result<Outcome, SpawnError> {
    run_in(argv, limits, &child::Groups::default())
}

/// As [`run`], its process group in `groups` while it runs (for [`child::Groups::kill_all`]
/// when the agent stops).
pub fn run_in(argv: &[String], limits: &Limits, groups: &child::Groups) -> Result<Outcome, SpawnError> {
    let (program, args) = argv.split_first().ok_or(SpawnError::Empty)?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    let options = Options { env: Env::PathAndLang, drop_capabilities: true };
    let o = child::run_with(cmd, limits.timeout, limits.max_output, options, groups)?;
    Ok(Outcome {
        exit_code: o.status.and_then(|s| s.code()),
        // Not reaped by the deadline (stuck in the kernel): it was sent our SIGKILL.
        signal: o.status.map_or(o.timed_out.then_some(9), |s| s.signal()),
        timed_out: o.timed_out,
        duration: o.duration,
        stdout: o.stdout,
        stderr: o.stderr,
        truncated: o.truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

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
        assert!(matches!(run(&["/nonexistent/x".into()], &limits(100)), Err(SpawnError::Spawn(_))));
    }

    /// A command that never pauses keeps its pipes full: the reader must still see the
    /// deadline between two reads. The run is on a thread so that a hang fails the test.
    #[test]
    fn a_command_writing_without_pause_is_killed_at_its_timeout() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let t = Instant::now();
            let o =
                run(&["/usr/bin/yes".to_string()], &Limits { timeout: Duration::from_secs(1), max_output: 64 * 1024 });
            let _ = tx.send((t.elapsed(), o.map(|o| (o.timed_out, o.stdout.len()))));
        });
        let got = rx.recv_timeout(Duration::from_secs(20));
        let (took, outcome) = got.expect("run() of `yes` with a 1 s timeout had not returned after 20 s");
        assert!(matches!(outcome, Ok((true, _))), "not said to have timed out, after {took:?}: {outcome:?}");
    }
}
