//! `rig-agent privileged`: the privileged half's loop. It listens on a Unix socket, checks
//! each peer's uid, reads one strictly parsed request, runs smartctl for a monitored disk
//! through [`crate::os::child::run`] (own process group, `disks.smart_timeout`), and answers
//! with smartctl's exit status and stdout. It parses no JSON and talks to no network.

use std::fs;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, LazyLock};
use std::thread;
use std::time::{Duration, Instant};

use super::budget::{MAX_REQUESTS, REFUSALS, Slot, Streams, refused};
use crate::config::PrivilegedConfig;
use crate::os::child::{Groups, StuckRuns};
use crate::os::local_socket::{UntilDeadline, bind};
use crate::os::signals::Shutdown;
use crate::os::wake::{Interest, WakeReceiver};
use crate::privileged_client::wire::{self, Refusal, Request, SmartAnswer};
use crate::protocol::escape::escape;

/// How long a peer may take to send its request line, in all (not per read: see
/// [`UntilDeadline`]).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long writing the answer may take before the peer is given up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What `bind` calls a server already serving at the path.
pub const PRIVILEGED: &str = "privileged half";

/// How often the serving half looks whether its socket is still at its path.
const SOCKET_CHECK: Duration = Duration::from_secs(2);

/// Serves until the process is killed. `config` is read again for each request, so a
/// changed `disks.include` applies without a restart; a config that no longer loads
/// keeps the last good one.
pub fn serve(
    mut listener: UnixListener,
    config: PathBuf,
    first: PrivilegedConfig,
    shutdown: &Shutdown,
    wake: &WakeReceiver,
) {
    let own_uid = rustix::process::getuid().as_raw();
    let mut watch = first.paths.privileged_socket.clone().map(SocketWatch::new);
    let current = Arc::new(std::sync::Mutex::new(first));
    let requests = Arc::new(AtomicUsize::new(0));
    let streams = Arc::new(Streams::default());
    loop {
        // SIGTERM, SIGINT: the signal handler sets the flag and wakes this wait.
        wake.wait(Some((listener.as_fd(), Interest::Readable)), Some(SOCKET_CHECK));
        if shutdown.is_requested() {
            stop(watch.as_ref());
            return;
        }
        // SIGHUP: every request rereads the config anyway.
        shutdown.take_reload();
        if !readable_now(&listener) {
            if let Some(new) = watch.as_mut().and_then(SocketWatch::rebind_if_gone) {
                listener = new;
            }
            continue;
        }
        let Ok((conn, _)) = listener.accept() else { continue };
        let Some(slot) = Slot::take(&requests) else {
            refused(&format!("privileged: {MAX_REQUESTS} requests already running; closing a new connection"));
            continue;
        };
        let (current, config, streams) = (Arc::clone(&current), config.clone(), Arc::clone(&streams));
        let spawned = thread::Builder::new().name("privileged".into()).spawn(move || {
            let cfg = reload(&current, &config);
            if let Err(e) = handle(conn, &cfg, own_uid, slot, &streams) {
                log::debug!("privileged: answering failed: {e}");
            }
        });
        if spawned.is_err() {
            refused("privileged: cannot start a thread for a request");
        }
    }
}

/// What a stop does besides returning: the smartctl runs still going are killed (their
/// own process groups, which the process's exit would leave running, orphaned, when it
/// was started by hand), the socket this process bound is removed (a socket nobody
/// answers reads as a half that died), and the refusals not logged yet are counted.
fn stop(watch: Option<&SocketWatch>) {
    let killed = SMARTCTL_RUNS.kill_all();
    if let Some(w) = watch
        && identity(&w.path) == w.bound
    {
        let _ = fs::remove_file(&w.path);
    }
    let unlogged = REFUSALS.lock().unwrap_or_else(|p| p.into_inner()).take_suppressed();
    let mut also = String::new();
    if killed > 0 {
        also += &format!("; killed {killed} smartctl still running");
    }
    if unlogged > 0 {
        also += &format!("; {unlogged} refusals were not logged");
    }
    log::info!("privileged half stopped{also}");
}

/// Whether a connection waits on `listener` now.
fn readable_now(listener: &UnixListener) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(listener, PollFlags::IN)];
    poll(&mut fds, Some(&Timespec { tv_sec: 0, tv_nsec: 0 })).is_ok_and(|n| n > 0)
}

/// The socket's path and the identity of the socket bound there. Someone removing it
/// (`rm` in the runtime directory, a clean-up job) left this half listening on a name
/// that no longer existed: alive for systemd, unreachable for the agent, SMART null until
/// a restart. A path found empty is bound again; a path taken by something else (an
/// operator's file, another half) is said once and left alone.
struct SocketWatch {
    path: PathBuf,
    bound: Option<(u64, u64)>,
    said_taken: bool,
}

impl SocketWatch {
    fn new(path: PathBuf) -> SocketWatch {
        let bound = identity(&path);
        SocketWatch { path, bound, said_taken: false }
    }

    /// A new listener when the socket had gone from its path and was bound again.
    fn rebind_if_gone(&mut self) -> Option<UnixListener> {
        let now = match fs::symlink_metadata(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(_) => return None,
            Ok(_) => identity(&self.path),
        };
        if now.is_some() {
            if now != self.bound && !std::mem::replace(&mut self.said_taken, true) {
                log::warn!(
                    "privileged: {} is no longer this process's socket; not taking it back",
                    escape(&self.path.display().to_string())
                );
            }
            return None;
        }
        match bind(&self.path, PRIVILEGED) {
            Ok(listener) => {
                log::warn!(
                    "privileged: the socket {} had been removed; bound it again",
                    escape(&self.path.display().to_string())
                );
                (self.bound, self.said_taken) = (identity(&self.path), false);
                Some(listener)
            }
            Err(e) => {
                log::debug!("privileged: {}", escape(&e.to_string()));
                None
            }
        }
    }
}

/// Device and inode of what is at `path`, not following a link.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The config for one request: `[disks]` read again (a changed `disks.include` applies
/// without a restart), `[paths]` kept from the start, as in the agent, where `paths.*` need
/// a restart too: the socket is bound and the roots chosen once. A config that no longer
/// loads keeps the last good one. Each is said once, not once per request.
fn reload(current: &std::sync::Mutex<PrivilegedConfig>, config: &Path) -> PrivilegedConfig {
    static SAID: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let mut cur = current.lock().unwrap_or_else(|p| p.into_inner());
    let news = match crate::config::Config::load_for_privileged(config) {
        Ok(new) => {
            let news = (new.paths != cur.paths)
                .then(|| "privileged: [paths] changed in the config; it applies at the next restart".to_string());
            cur.disks = new.disks;
            news
        }
        Err(e) => Some(format!(
            "privileged: the config no longer loads ({}); keeping the last good one",
            crate::protocol::escape::escape(&e.to_string())
        )),
    };
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if news.is_some() && *said != news {
        log::warn!("{}", news.as_deref().unwrap_or_default());
    }
    *said = news;
    cur.clone()
}

/// One connection: peer check, one request, one answer (or the kernel log stream, which
/// gives `slot` back and counts among the streams instead).
fn handle(mut conn: UnixStream, cfg: &PrivilegedConfig, own_uid: u32, slot: Slot, streams: &Streams) -> io::Result<()> {
    conn.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    let peer = rustix::net::sockopt::socket_peercred(&conn)?.uid.as_raw();
    let line = if peer == own_uid || peer == 0 {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        wire::read_request(&mut UntilDeadline::new(&conn, deadline))?
    } else {
        Vec::new()
    };
    if line.is_empty() && (peer == own_uid || peer == 0) {
        // Closed without a word: another privileged half checking whether this one is
        // alive (see `bind`). Nothing was asked, nothing is refused.
        return Ok(());
    }
    let answer = match check(&line, cfg, peer, own_uid) {
        Ok(Request::Smart(name)) => run_smartctl(cfg, &name),
        Ok(Request::Kmsg(cursor)) => {
            drop(slot);
            conn.set_write_timeout(None)?;
            let _open = streams.admit(&conn)?;
            return super::kmsg::serve(conn, cfg, cursor);
        }
        Err(refusal) => {
            refused(&format!(
                "privileged: refused \"{}\" from uid {peer}: {refusal}; nothing run",
                escape(&String::from_utf8_lossy(&line))
            ));
            SmartAnswer::Refused(refusal.word().into())
        }
    };
    conn.write_all(&answer.encode())
}

/// The request, if the peer may ask it and it names a monitored disk present now.
pub fn check(line: &[u8], cfg: &PrivilegedConfig, peer: u32, own_uid: u32) -> Result<Request, Refusal> {
    if peer != own_uid && peer != 0 {
        return Err(Refusal::Peer(peer));
    }
    let request = wire::parse_request(line)?;
    let Request::Smart(name) = &request else { return Ok(request) };
    let d = &cfg.disks;
    if !crate::probes::disks::monitored(&cfg.paths.sysfs, &d.include, &d.exclude).contains(name) {
        return Err(Refusal::NotMonitored(name.clone()));
    }
    Ok(request)
}

/// smartctl runs killed at the timeout and not ended yet, by disk: the network half asks
/// every `smart_interval`, and a disk that hangs one smartctl in D state would hang each.
static STUCK: LazyLock<StuckRuns> = LazyLock::new(StuckRuns::default);
/// The process groups of the smartctl runs going on, killed at stop.
static SMARTCTL_RUNS: LazyLock<Groups> = LazyLock::new(Groups::default);

/// `smartctl --json -H -A /dev/<name>`, as the agent ran it before the split; not again
/// while the last one on that disk is still stuck.
fn run_smartctl(cfg: &PrivilegedConfig, name: &str) -> SmartAnswer {
    crate::privileged_client::smartctl::run_in(
        &cfg.disks.smartctl,
        name,
        cfg.disks.smart_timeout,
        &STUCK,
        &SMARTCTL_RUNS,
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn config(dir: &Path) -> PrivilegedConfig {
        let mut cfg = PrivilegedConfig::from(crate::config::tests::minimal_config(dir));
        cfg.paths.sysfs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rig/sys");
        cfg.disks.exclude = vec!["sdb".into()];
        cfg
    }

    #[test]
    fn only_the_services_own_uid_and_root_may_ask() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        assert_eq!(check(b"smart sda\n", &cfg, 1000, 999), Err(Refusal::Peer(1000)));
        assert_eq!(check(b"smart sda\n", &cfg, 999, 999), Ok(Request::Smart("sda".into())));
        assert_eq!(check(b"smart sda\n", &cfg, 0, 999), Ok(Request::Smart("sda".into())));
    }

    #[test]
    fn only_disks_the_config_monitors_and_sysfs_lists_are_run() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        assert_eq!(check(b"smart nvme0n1\n", &cfg, 0, 0), Ok(Request::Smart("nvme0n1".into())));
        assert_eq!(check(b"smart sdb\n", &cfg, 0, 0), Err(Refusal::NotMonitored("sdb".into())));
        assert_eq!(check(b"smart loop0\n", &cfg, 0, 0), Err(Refusal::NotMonitored("loop0".into())));
        assert_eq!(check(b"smart sdq\n", &cfg, 0, 0), Err(Refusal::NotMonitored("sdq".into())));
    }

    /// The socket appears at its path already listening (renamed into place), with no
    /// temporary name left; a path too long for a temporary name is bound as it is.
    #[test]
    fn the_socket_is_in_place_listening_and_mode_0600_with_short_and_long_paths() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("d".repeat(100 - dir.path().as_os_str().len().min(90)));
        fs::create_dir(&long).unwrap();
        for path in [dir.path().join("sock"), long.join("s")] {
            assert!(path.as_os_str().len() < 108, "{}", path.display());
            let listener = bind(&path, PRIVILEGED).unwrap_or_else(|e| panic!("{e}"));
            UnixStream::connect(&path).unwrap();
            assert!(listener.accept().is_ok());
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            // Bound again over the old socket, as after a restart.
            drop(listener);
            let _again = bind(&path, PRIVILEGED).unwrap_or_else(|e| panic!("{e}"));
            UnixStream::connect(&path).unwrap();
        }
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    /// `[disks]` applies at the next request; `[paths]` at the next restart, as in the
    /// agent; a broken config keeps the last good one.
    #[test]
    fn a_reload_takes_disks_keeps_paths_and_survives_a_broken_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rig-agent.toml");
        let write = |sysfs: &str, exclude: &str| {
            let text = format!(
                "[device]\nhardware_id = \"rig-1\"\ntoken_file = \"token\"\n[gateway]\nurls = [\"wss://gw.example.com/ws\"]\n\
                 [disks]\nexclude = [\"{exclude}\"]\n[paths]\nsysfs = \"{sysfs}\"\n"
            );
            fs::write(&file, text).unwrap();
        };
        let first = config(dir.path());
        let current = std::sync::Mutex::new(first.clone());
        write("/elsewhere/sys", "sda");
        let cfg = reload(&current, &file);
        assert_eq!(cfg.disks.exclude, ["sda"]);
        assert_eq!(cfg.paths, first.paths, "paths.* wait for a restart");
        fs::write(&file, "[disks\n").unwrap();
        let cfg = reload(&current, &file);
        assert_eq!(cfg.disks.exclude, ["sda"], "the last good config serves");
    }
}
