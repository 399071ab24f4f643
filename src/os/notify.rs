//! sd_notify(3) without libsystemd: READY=1, STATUS=…, WATCHDOG=1 and STOPPING=1 as
//! datagrams to `$NOTIFY_SOCKET`. Outside systemd (no `NOTIFY_SOCKET`) every call is a
//! no-op.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::protocol::escape;

/// The longest `STATUS=` text, in characters.
const MAX_STATUS_CHARS: usize = 512;

pub struct Notifier {
    socket: Option<(UnixDatagram, Target)>,
    /// Half of `WATCHDOG_USEC`, when systemd asked for keep-alives.
    watchdog_every: Option<Duration>,
    last_ping: Instant,
    last_status: String,
    /// The status last given, before the note and the escaping.
    given: String,
    /// Said after every status while it is set (a wrong system clock).
    note: Option<String>,
}

enum Target {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the watchdog is ours only
    /// when the pid is ours or unset).
    pub fn from_env() -> Notifier {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let socket = var("NOTIFY_SOCKET").and_then(|path| {
            let target = match path.strip_prefix('@') {
                Some(name) => Target::Abstract(name.as_bytes().to_vec()),
                None => Target::Path(path.into()),
            };
            // Non-blocking: a supervisor that does not read (PID 1 busy or stuck) fills the
            // socket's queue (`net.unix.max_dgram_qlen`, 10 datagrams), and a blocking send
            // would then hold up the main loop, its heartbeats and the stop. A datagram that
            // does not fit is dropped (logged at debug level).
            let s = UnixDatagram::unbound().ok()?;
            s.set_nonblocking(true).ok()?;
            Some((s, target))
        });
        let ours = var("WATCHDOG_PID").is_none_or(|p| p.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog_every = var("WATCHDOG_USEC")
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && ours)
            .map(|u| Duration::from_micros(u / 2));
        Notifier {
            socket,
            watchdog_every,
            last_ping: Instant::now(),
            last_status: String::new(),
            given: String::new(),
            note: None,
        }
    }

    fn send(&self, msg: &str) {
        let Some((sock, target)) = &self.socket else { return };
        let sent = match target {
            Target::Path(p) => sock.send_to(msg.as_bytes(), p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| sock.send_to_addr(msg.as_bytes(), &addr))
            }
        };
        if let Err(e) = sent {
            log::debug!("sd_notify {msg:?} failed: {e}");
        }
    }

    pub fn ready(&self) {
        self.send("READY=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// What `systemctl status` shows on its "Status:" line; sent only when it changes.
    ///
    /// Escaped here whatever the caller did: systemd reads each line of the datagram as an
    /// assignment, so a newline in gateway text would be a command (`WATCHDOG=trigger`).
    /// The cap is above the callers' (their own words plus outside text cut at
    /// [`escape::MAX_CHARS`]), so text they escaped is not changed again.
    pub fn status(&mut self, text: &str) {
        self.given = text.to_string();
        self.send_status();
    }

    fn send_status(&mut self) {
        let text = match &self.note {
            Some(note) if self.given.is_empty() => escape::escape_to(note, MAX_STATUS_CHARS),
            Some(note) => escape::escape_to(&format!("{note}; {}", self.given), MAX_STATUS_CHARS),
            None => escape::escape_to(&self.given, MAX_STATUS_CHARS),
        };
        if text != self.last_status {
            self.send(&format!("STATUS={text}"));
            self.last_status = text;
        }
    }

    /// A note that leads every status from now on (`None`: no more), sent at once with the
    /// status last given: what must stay in sight while it holds, as a wrong clock.
    pub fn set_note(&mut self, note: Option<String>) {
        self.note = note;
        self.send_status();
    }

    /// When the next keep-alive is due, if systemd watches us.
    pub fn watchdog_due(&self) -> Option<Instant> {
        self.watchdog_every.map(|every| self.last_ping + every)
    }

    /// Sends WATCHDOG=1 if it is due. Called from the main loop only: a stuck loop stops
    /// pinging and systemd restarts the agent.
    pub fn keep_alive(&mut self, now: Instant) {
        if self.watchdog_due().is_some_and(|due| now >= due) {
            self.send("WATCHDOG=1");
            self.last_ping = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake systemd socket in `d` and a notifier that sends to it.
    fn pair(d: &tempfile::TempDir, watchdog_every: Option<Duration>) -> (UnixDatagram, Notifier) {
        let path = d.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), Target::Path(path))),
            watchdog_every,
            last_ping: Instant::now(),
            last_status: String::new(),
            given: String::new(),
            note: None,
        };
        (server, n)
    }

    #[test]
    fn messages_reach_a_path_socket_and_status_is_sent_only_on_change() {
        let d = tempfile::tempdir().unwrap();
        let (server, mut n) = pair(&d, Some(Duration::from_millis(50)));
        n.ready();
        n.status("connecting");
        n.status("connecting");
        n.status("connected");
        n.keep_alive(Instant::now());
        n.keep_alive(Instant::now() + Duration::from_millis(60));
        n.stopping();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        for _ in 0..5 {
            let len = server.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        assert_eq!(got, ["READY=1", "STATUS=connecting", "STATUS=connected", "WATCHDOG=1", "STOPPING=1"]);
    }

    #[test]
    fn a_note_leads_every_status_while_it_is_set() {
        let d = tempfile::tempdir().unwrap();
        let (server, mut n) = pair(&d, None);
        n.status("connecting to wss://gw/ws");
        n.set_note(Some("system clock wrong".into()));
        n.status("connected to wss://gw/ws");
        n.set_note(None);
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        for _ in 0..4 {
            let len = server.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        assert_eq!(
            got,
            [
                "STATUS=connecting to wss://gw/ws",
                "STATUS=system clock wrong; connecting to wss://gw/ws",
                "STATUS=system clock wrong; connected to wss://gw/ws",
                "STATUS=connected to wss://gw/ws",
            ]
        );
    }

    #[test]
    fn a_status_with_a_newline_stays_one_assignment() {
        let d = tempfile::tempdir().unwrap();
        let (server, mut n) = pair(&d, None);
        n.status("lost: bye\nWATCHDOG=trigger");
        let mut buf = [0u8; 1024];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=lost: bye\\nWATCHDOG=trigger");
    }

    #[test]
    fn without_notify_socket_nothing_is_sent_and_no_watchdog_is_due() {
        let n = Notifier {
            socket: None,
            watchdog_every: None,
            last_ping: Instant::now(),
            last_status: String::new(),
            given: String::new(),
            note: None,
        };
        n.ready();
        assert_eq!(n.watchdog_due(), None);
    }
}
