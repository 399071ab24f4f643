//! Helpers for the integration tests: the test gateway, agent configs with short timings, an
//! in-process agent, and a guard that turns a hang into a failure.

#![allow(dead_code)]

pub mod agent_config;
pub mod gateway;
pub mod nobody;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// Each test binary uses a different part of these.
#[allow(unused_imports)]
pub use agent_config::{AgentConfig, HARDWARE_ID, TOKEN};
#[allow(unused_imports)]
pub use gateway::{Event, Gateway, Pki, Script};
use rig_agent::config::Config;
use rig_agent::os::signals::Shutdown;
use rig_agent::queries::Catalogue;
pub use rustix::process::Signal;
use rustix::process::{Pid, kill_process};

/// Aborts the whole test binary if the test is still running after `limit`: a hang must fail,
/// not block CI.
pub struct Guard(Option<Sender<()>>);

impl Guard {
    pub fn new(limit: Duration) -> Guard {
        let (tx, rx) = mpsc::channel::<()>();
        let name = thread::current().name().unwrap_or("test").to_string();
        thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("GUARD: {name} still running after {limit:?}; aborting");
                std::process::abort();
            }
        });
        Guard(Some(tx))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Agent log lines go through `eprintln!`, which libtest captures per test (threads inherit
/// the capture) and prints only when the test fails: a flaky failure explains itself.
struct TestLog;

impl log::Log for TestLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        let max = if m.target().starts_with("rig_agent") { log::Level::Debug } else { log::Level::Warn };
        m.level() <= max
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let t = std::thread::current();
            eprintln!("[agent {:>8}] {:<5} {}", t.name().unwrap_or("?"), r.level(), r.args());
            if r.level() <= log::Level::Warn {
                WARNINGS.lock().unwrap().push(r.args().to_string());
            }
            if r.level() <= log::Level::Info {
                LOGGED.lock().unwrap().push(r.args().to_string());
            }
        }
    }
    fn flush(&self) {}
}

/// Warnings and errors of every in-process agent of this test binary, for tests that check
/// why something happened. Tests share the process: filter on something of your own (the
/// gateway's port).
static WARNINGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Lines at info level or above of every in-process agent of this test binary (filter on
/// something of your own, as for [`warnings_with`]).
static LOGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The lines at info level or above logged so far that contain `needle`.
pub fn logged_with(needle: &str) -> Vec<String> {
    LOGGED.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect()
}

/// The warnings logged so far that contain `needle`.
pub fn warnings_with(needle: &str) -> Vec<String> {
    WARNINGS.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect()
}

pub fn init_test_log() {
    if log::set_logger(&TestLog).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

/// The agent's runner on a thread of the test process.
pub struct Agent {
    shutdown: Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl Agent {
    pub fn start(config: &Path) -> Agent {
        Agent::with_catalogue(config, |_| {})
    }

    /// Starts with the standard catalogue plus whatever `extend` adds (slow probes...).
    pub fn with_catalogue(config: &Path, extend: impl FnOnce(&mut Catalogue)) -> Agent {
        init_test_log();
        let cfg = Config::load(config).unwrap_or_else(|e| panic!("{e}"));
        let mut agent = rig_agent::agent::Agent::build(cfg, extend).unwrap();
        let shutdown = agent.shutdown();
        let thread = thread::Builder::new().name("agent".into()).spawn(move || agent.run()).unwrap();
        Agent { shutdown, thread: Some(thread) }
    }

    /// Starts with the standard catalogue and these outbox options (a slow state disk).
    pub fn with_outbox(config: &Path, outbox: rig_agent::outbox::spool::Options) -> Agent {
        init_test_log();
        let cfg = Config::load(config).unwrap_or_else(|e| panic!("{e}"));
        let mut agent = rig_agent::agent::Agent::build_with(cfg, |_| {}, outbox).unwrap();
        let shutdown = agent.shutdown();
        let thread = thread::Builder::new().name("agent".into()).spawn(move || agent.run()).unwrap();
        Agent { shutdown, thread: Some(thread) }
    }

    /// Stops the agent and returns how long it took to return.
    pub fn stop(mut self) -> Duration {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Duration {
        let t = Instant::now();
        self.shutdown.stop();
        if let Some(h) = self.thread.take() {
            h.join().expect("agent thread panicked");
        }
        t.elapsed()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_inner();
        }
    }
}

pub const SEC: Duration = Duration::from_secs(1);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The real `rig-agent` binary, as systemd runs it: `--config` and these extra environment
/// variables, stdout and stderr captured, not under journald.
/// The agent binary under test: this build's, or the command in `RIG_AGENT_UNDER_TEST`
/// (`qemu-aarch64 target/aarch64-unknown-linux-musl/release/rig-agent`), so that CI runs
/// the tests that spawn the agent against the release builds it ships, ARM ones included.
pub fn agent_command() -> Command {
    match std::env::var("RIG_AGENT_UNDER_TEST") {
        Ok(spec) if !spec.trim().is_empty() => {
            let mut words = spec.split_whitespace();
            let mut cmd = Command::new(words.next().unwrap());
            cmd.args(words);
            cmd
        }
        _ => Command::new(env!("CARGO_BIN_EXE_rig-agent")),
    }
}

pub fn spawn_agent(config: &Path, envs: &[(&str, &str)]) -> Reaped {
    let mut cmd = agent_command();
    cmd.arg("--config").arg(config).stdout(Stdio::null()).env_remove("JOURNAL_STREAM");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    spawn_logged(&mut cmd)
}

/// The logs of the children spawned by [`spawn_logged`], by pid.
static LOGS: std::sync::Mutex<Vec<(u32, std::fs::File)>> = std::sync::Mutex::new(Vec::new());

/// Spawns `cmd` with its stderr going to an unnamed temporary file, read by [`take_log`].
/// Not a pipe: nobody reads a pipe until the child exits, and a child that logged more
/// than the pipe holds (64 KiB) would block on its next log line.
pub fn spawn_logged(cmd: &mut Command) -> Reaped {
    let file = tempfile::tempfile().expect("a temporary file for the child's log");
    cmd.stderr(file.try_clone().expect("dup the log file"));
    let child = cmd.spawn().expect("spawn rig-agent");
    LOGS.lock().unwrap().push((child.id(), file));
    Reaped(child)
}

/// A child process (an agent, its privileged half) killed and reaped when dropped, so that a
/// failing test, which unwinds past its stop, leaves no process behind.
#[derive(Debug)]
pub struct Reaped(pub Child);

impl Reaped {
    /// Spawns `cmd`; the process is the guard's from then on.
    pub fn spawn(cmd: &mut Command) -> Reaped {
        Reaped(cmd.spawn().unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program())))
    }
}

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        // Already reaped (stopped by the test): try_wait says so, nothing is killed.
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// What the child has logged so far: its stderr file (see [`spawn_logged`]), or its stderr
/// pipe read to the end (call that only once it has exited).
pub fn take_log(child: &mut Child) -> String {
    use std::io::{Seek, SeekFrom};
    let mut err = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut err);
        return err;
    }
    let mut logs = LOGS.lock().unwrap();
    if let Some((_, file)) = logs.iter_mut().find(|(pid, _)| *pid == child.id()) {
        let _ = file.seek(SeekFrom::Start(0));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        err = String::from_utf8_lossy(&bytes).into_owned();
    }
    err
}

pub fn signal(child: &Child, sig: Signal) {
    let pid = Pid::from_raw(child.id() as i32).expect("child pid");
    kill_process(pid, sig).expect("send signal");
}

/// Waits for the child to exit, killing it after `limit` (a guard, not a timing).
/// Returns its exit code, how long it took, and what it logged.
pub fn wait_exit(child: &mut Child, limit: Duration) -> (Option<i32>, Duration, String) {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let err = take_log(child);
            LOGS.lock().unwrap().retain(|(pid, _)| *pid != child.id());
            return (status.code(), t.elapsed(), err);
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rig-agent did not exit within {limit:?}");
        }
        thread::sleep(ms(10));
    }
}

/// `rig-agent privileged` on `config`, as its unit runs it (not under journald).
pub fn spawn_privileged(config: &Path) -> Reaped {
    let mut cmd = agent_command();
    cmd.arg("--config").arg(config).arg("privileged").stdout(Stdio::null()).env_remove("JOURNAL_STREAM");
    spawn_logged(&mut cmd)
}

/// SIGTERM, as systemd stops it; its exit code and its log.
pub fn stop_agent(child: &mut Child) -> (Option<i32>, String) {
    signal(child, Signal::TERM);
    let (code, _, log) = wait_exit(child, 10 * SEC);
    (code, log)
}

/// A writable copy of `tests/fixtures/rig` (a sysfs/procfs tree) at `dir/rig`.
pub fn rig_copy(dir: &Path) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rig");
    let dst = dir.join("rig");
    assert!(Command::new("cp").arg("-a").arg(&src).arg(&dst).status().unwrap().success(), "copy the fixture rig");
    dst
}

/// The `[paths]` lines that point the agent's probes at the fixture tree `rig`.
pub fn rig_paths(rig: &Path) -> String {
    format!(
        "sysfs = {:?}\nprocfs = {:?}\nrootfs = {:?}\n",
        rig.join("sys").display().to_string(),
        rig.join("proc").display().to_string(),
        rig.display().to_string()
    )
}

/// Polls `cond` until it holds; fails the test after `timeout` (a guard, not a timing).
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        thread::sleep(ms(10));
    }
}

/// Whether the tests run as root (loop devices, capabilities, setpriv); says so when not.
pub fn root() -> bool {
    let yes = rustix::process::geteuid().is_root();
    if !yes {
        eprintln!("skipped: needs root (loop devices, capabilities, setpriv)");
    }
    yes
}

/// The messages waiting in the spool of `state` (`spool/w-<n>.json`), in creation order: not
/// a write under way (`.tmp-…`, which a kill leaves half-written), not a tombstone.
pub fn spool_files(state: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(state.join("spool"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("w-") && n.ends_with(".json"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
