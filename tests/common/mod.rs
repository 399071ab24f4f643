//! What the integration tests share, once: the test gateway (and one that writes raw
//! frames), agent configs with short timings, the fixture rig, an in-process agent and the
//! real binary (spawned, logged in, stopped, its log read), a guard that turns a hang into a
//! failure, the privileged half with a fake smartctl, loop filesystems to freeze, fill and
//! remount, the agent run as another user, and a fake systemd. The failing disk
//! (faulty_disk.rs) is here too but declared only where it is used: it links the FUSE crate,
//! 6 MB more in every debug test binary.

#![allow(dead_code)]

pub mod agent_config;
pub mod gateway;
pub mod nobody;
pub mod privileged;
pub mod proxy;
pub mod raw_gateway;
pub mod segfault;
pub mod storage;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// Each test binary uses a different part of these.
#[allow(unused_imports)]
pub use agent_config::{AgentConfig, HARDWARE_ID, TOKEN, rig_copy, rig_paths};
#[allow(unused_imports)]
pub use gateway::{Event, Gateway, Pki, Script, slack};
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
        let limit = slack(limit);
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

    /// Starts after `before` has had the built agent (a test sets the system clock it sees).
    pub fn start_with(config: &Path, before: impl FnOnce(&rig_agent::agent::Agent)) -> Agent {
        init_test_log();
        let cfg = Config::load(config).unwrap_or_else(|e| panic!("{e}"));
        let mut agent = rig_agent::agent::Agent::build(cfg, |_| {}).unwrap();
        before(&agent);
        let shutdown = agent.shutdown();
        let thread = thread::Builder::new().name("agent".into()).spawn(move || agent.run()).unwrap();
        Agent { shutdown, thread: Some(thread) }
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
    let mut cmd = match std::env::var("RIG_AGENT_UNDER_TEST") {
        Ok(spec) if !spec.trim().is_empty() => {
            let mut words = spec.split_whitespace();
            let mut cmd = Command::new(words.next().unwrap());
            cmd.args(words);
            cmd
        }
        _ => Command::new(env!("CARGO_BIN_EXE_rig-agent")),
    };
    // The machine's proxy settings are not the test's: a test that wants one sets it.
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// The environment variables the agent reads for its proxy.
pub const PROXY_VARS: [&str; 8] =
    ["https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"];

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

/// Waits up to `limit` for the child to exit: its exit code, how long it took, and what it
/// logged; `None` when it was still running (then it is killed and reaped).
pub fn exit_within(child: &mut Child, limit: Duration) -> Option<(Option<i32>, Duration, String)> {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let err = take_log(child);
            LOGS.lock().unwrap().retain(|(pid, _)| *pid != child.id());
            return Some((status.code(), t.elapsed(), err));
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(ms(10));
    }
}

/// Waits for the child to exit, killing it after `limit` (a guard, not a timing).
/// Returns its exit code, how long it took, and what it logged.
pub fn wait_exit(child: &mut Child, limit: Duration) -> (Option<i32>, Duration, String) {
    exit_within(child, limit).unwrap_or_else(|| panic!("rig-agent did not exit within {limit:?}"))
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

/// A test directory with a copy of the fixture rig, a PKI and a gateway run by `script`.
pub struct FixtureRig {
    pub dir: tempfile::TempDir,
    pub rig: PathBuf,
    pub pki: Pki,
    pub gw: Gateway,
}

impl FixtureRig {
    pub fn new(script: Script) -> FixtureRig {
        let dir = tempfile::tempdir().unwrap();
        let rig = rig_copy(dir.path());
        let pki = Pki::new(&["localhost"]);
        let gw = Gateway::start(&pki, script);
        FixtureRig { dir, rig, pki, gw }
    }
}

/// The real binary logged in to a gateway of its own. Dropped in this order: the gateway,
/// the agent, then its directory.
pub struct LoggedIn {
    pub gw: Gateway,
    pub child: Reaped,
    pub conn: usize,
    pub config: PathBuf,
    pub pki: Pki,
    pub dir: tempfile::TempDir,
}

/// The real binary with the test config and `env` set, logged in to a gateway run by `script`.
pub fn logged_in_agent(script: Script, env: &[(&str, &str)]) -> LoggedIn {
    logged_in_agent_with(script, env, |_, _| {})
}

/// As [`logged_in_agent`], its config changed first by `configure` (given the test dir,
/// where it may write scripts).
pub fn logged_in_agent_with(
    script: Script,
    env: &[(&str, &str)],
    configure: impl FnOnce(&mut AgentConfig, &Path),
) -> LoggedIn {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, script);
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    configure(&mut cfg, dir.path());
    let config = cfg.write(dir.path());
    let child = spawn_agent(&config, env);
    let (conn, _) = gw.wait_login(10 * SEC);
    LoggedIn { gw, child, conn, config, pki, dir }
}

/// The real agent on a copy of the fixture rig whose sdb is healthy (for the test to fail
/// it), its state directory on a loop filesystem the test can freeze (root only): logged in,
/// its first inventory saved. Dropped in this order: the agent, then its mount, then the
/// directory.
pub struct FreezableRig {
    pub gw: Gateway,
    pub child: Reaped,
    pub state: storage::LoopFs,
    pub pki: Pki,
    pub rig: PathBuf,
    pub config: PathBuf,
    pub conn: usize,
    pub dir: tempfile::TempDir,
}

impl FreezableRig {
    /// Scans every `scan_interval`; `sections` (given the test dir) are the config's extra
    /// sections.
    pub fn start(script: Script, scan_interval: &str, sections: impl FnOnce(&Path) -> String) -> FreezableRig {
        let dir = tempfile::tempdir().unwrap();
        let rig = rig_copy(dir.path());
        std::fs::write(rig.join("sys/block/sdb/device/state"), "running\n").unwrap();
        let state = storage::LoopFs::state(dir.path());
        let pki = Pki::new(&["localhost"]);
        let mut gw = Gateway::start(&pki, script);
        let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
        cfg.watch(&rig, scan_interval).sections = sections(dir.path());
        let config = cfg.write(dir.path());
        let child = spawn_agent(&config, &[]);
        let (conn, _) = gw.wait_login(10 * SEC);
        wait_until(10 * SEC, "the first inventory", || state.mnt.join("disks.json").exists());
        FreezableRig { gw, child, state, pki, rig, config, conn, dir }
    }

    /// The state filesystem stalls, then sdb fails: its warning waits for the spool's write.
    pub fn freeze_and_fail_sdb(&self) {
        self.state.freeze();
        std::fs::write(self.rig.join("sys/block/sdb/device/state"), "offline\n").unwrap();
    }
}

/// An action `long` in `dir` whose command writes its pid to `dir/action.pid` and then sleeps
/// 30 s (its timeout is 60 s): the pid file and the `[actions]` sections.
pub fn long_action(dir: &Path) -> (PathBuf, String) {
    let pidfile = dir.join("action.pid");
    let command = script(dir, "long.sh", &format!("echo $$ > {}\nexec sleep 30", pidfile.display()));
    (pidfile, format!("[actions]\nenabled = true\n[actions.long]\ncommand = [{command:?}]\ntimeout = \"60s\"\n"))
}

/// Polls `cond` until it holds; fails the test after `timeout` (a guard, not a timing).
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        thread::sleep(ms(10));
    }
}

/// `rig-agent --config CONFIG check`: its exit code and what it said on stderr.
pub fn check(config: &Path) -> (Option<i32>, String) {
    let out = agent_command().arg("--config").arg(config).arg("check").stdin(Stdio::null()).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Writes an executable shell script `name` into `dir` running `body`; its path.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A FIFO at `path` (its directory made first): what a broken image or a hostile hand
/// leaves where the agent expects a file.
pub fn mkfifo(path: &Path) {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0).expect("mkfifo");
}

/// Whether process `pid` still runs: gone, or a zombie nobody has reaped yet (the test
/// process is not its parent), is not.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// How many entries `dir` holds (0 when it is gone).
pub fn count_entries(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Threads and open fds of process `pid` (`self` for this one).
pub fn threads_and_fds(pid: impl std::fmt::Display) -> (usize, usize) {
    (count_entries(&format!("/proc/{pid}/task")), count_entries(&format!("/proc/{pid}/fd")))
}

/// sda's `size` in a fixture rig turned into a FIFO: the next scan that reads it blocks until
/// [`SlowScan::end`], a stand-in for any slow scan (the window is the scan's length).
pub struct SlowScan(PathBuf);

impl SlowScan {
    pub fn arm(rig: &Path) -> SlowScan {
        let size = rig.join("sys/block/sda/size");
        std::fs::remove_file(&size).unwrap();
        mkfifo(&size);
        SlowScan(size)
    }

    /// Ends a read blocked on the FIFO and puts the real file back. The FIFO is held open
    /// for reading and writing (which never blocks) while the real file is renamed over its
    /// name: a scan blocked in its open, or arriving in it meanwhile, gets in; closing then
    /// gives its read EOF, and every later scan finds the real file. (Opening for writing
    /// only when a reader is already there, then unlinking, raced a scan that looked the
    /// name up just then: it blocked for good on a FIFO no one would open again, and the
    /// agent never finished its stop.)
    pub fn end(self) {
        let fifo = std::fs::OpenOptions::new().read(true).write(true).open(&self.0).unwrap();
        let real = self.0.with_extension("real");
        std::fs::write(&real, "7814037168\n").unwrap();
        std::fs::rename(&real, &self.0).unwrap();
        thread::sleep(ms(200));
        drop(fifo);
    }
}

/// A directory with a valid config and token whose gateway never answers (enough for
/// start-up and `check`), to break one thing at a time.
pub struct Broken {
    pub dir: tempfile::TempDir,
    _pki: Pki,
}

impl Broken {
    pub fn new() -> Broken {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(&["localhost"]);
        std::fs::copy(&pki.ca_file, dir.path().join("ca.pem")).unwrap();
        AgentConfig::new("wss://localhost:1/ws".into(), &dir.path().join("ca.pem")).write(dir.path());
        Broken { dir, _pki: pki }
    }
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("rig-agent.toml")
    }
    pub fn edit(&self, f: impl FnOnce(String) -> String) -> &Self {
        let p = self.path();
        std::fs::write(&p, f(std::fs::read_to_string(&p).unwrap())).unwrap();
        self
    }
    /// Runs `check`; returns (exit code, stderr).
    pub fn check(&self) -> (Option<i32>, String) {
        check(&self.path())
    }
}

/// `check` refuses the config with exit 78 in one line naming the file, `key` and a fix.
pub fn assert_config_error(b: &Broken, key: &str) {
    let (code, err) = b.check();
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains(&b.path().display().to_string()), "file not named: {err}");
    assert!(err.contains(&format!("`{key}`")), "key {key} not named: {err}");
    assert!(err.contains("Fix:"), "no fix given: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one message, one line: {err}");
}

/// A fake systemd's notify socket at `dir/notify.sock` (reads time out after 100 ms): the
/// socket and its path, for `NOTIFY_SOCKET`.
pub fn notify_socket(dir: &Path) -> (std::os::unix::net::UnixDatagram, PathBuf) {
    let path = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(ms(100))).unwrap();
    (sock, path)
}

/// A fake systemd: the datagrams the agent sends to its notify socket, each with its arrival
/// time, received on a thread until [`Notified::finish`].
pub struct Notified {
    /// For `NOTIFY_SOCKET`.
    pub path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: JoinHandle<Vec<(Instant, String)>>,
}

impl Notified {
    pub fn start(dir: &Path) -> Notified {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (sock, path) = notify_socket(dir);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 1024];
            while !stopped.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    out.push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
                }
            }
            out
        });
        Notified { path, stop, thread }
    }

    /// What came, once 200 ms more have passed for the last datagrams.
    pub fn finish(self) -> Vec<(Instant, String)> {
        thread::sleep(ms(200));
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
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

/// The environment that starts the agent (the glibc build of the tests: `LD_PRELOAD` does
/// not reach a static musl binary) with its wall clock at `at` ("1970-01-02 00:00:00") and
/// running, its monotonic clock left alone. libfaketime is preloaded directly rather than
/// through the `faketime` command, which forks the program and, when it is stopped, leaves
/// it running: each such test left an agent behind.
pub fn wall_clock_at(at: &str) -> Vec<(String, String)> {
    let out = Command::new("faketime").args(["-m", "-f", "+0", "sh", "-c", "printf %s \"$LD_PRELOAD\""]).output();
    let preload = String::from_utf8(out.expect("faketime (Debian's faketime package)").stdout).unwrap();
    assert!(preload.contains("libfaketime"), "{preload:?}");
    vec![
        ("LD_PRELOAD".into(), preload),
        ("FAKETIME".into(), format!("@{at}")),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ]
}
