//! The event sources as threads: the kernel log reader and the uevent listener. Each hands
//! [`DiskEvent`]s to a sink (the monitor's channel) and says in [`SourcesStatus`] whether
//! it is live; one that cannot start says why once, at start, and the scans go on alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::QUOTE_CHARS;
use super::attribution::Attribution;
use super::kernel_error::{self, Subject};
use super::kmsg_reader::{self, KmsgReader, Progress};
use super::resume::{self, Cursor};
use super::uevent::Action;
use super::uevent_listener::UeventListener;
use crate::config::Config;
use crate::os::wake::{self, Interest, WakeReceiver, Waker};
use crate::protocol::escape::escape_to;

/// What the monitor hears from the sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskEvent {
    /// A block device was added, removed or changed (a uevent): scan now. `None` when the
    /// kernel dropped uevents and any disk may have changed.
    Changed(Option<String>),
    /// The kernel logged disk errors for `disk` (a `/sys/block` name, not yet checked
    /// against the monitored set): `line` is the first of `lines`, escaped and capped.
    KernelError { disk: String, line: String, lines: u64 },
    /// The kernel log was read up to this record: every error before it was handed over
    /// above. The monitor saves it as the resume cursor once it has durably recorded what
    /// those errors caused (defect 7): the sources never save it themselves, or a crash
    /// between reading a record and spooling its warning would lose the warning for good.
    KmsgRead(Cursor),
}

/// Where the sink is gone (the monitor stopped) it returns false and the source stops.
pub type Sink = Arc<dyn Fn(DiskEvent) -> bool + Send + Sync>;

/// A source's state for `get_agent_info` and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceState {
    Starting,
    Live,
    /// Live, the records coming from the privileged half (issue 13 point 4).
    LivePrivileged,
    /// Not running; the reason (escaped) says why. Scans still run.
    Off(String),
}

impl SourceState {
    fn to_json(&self) -> Value {
        match self {
            SourceState::Starting => json!("starting"),
            SourceState::Live => json!("live"),
            SourceState::LivePrivileged => json!("live (privileged half)"),
            SourceState::Off(why) => json!(format!("off: {why}")),
        }
    }
}

/// Shared view of the sources, for `get_agent_info`.
#[derive(Debug)]
pub struct SourcesStatus {
    kmsg: Mutex<SourceState>,
    uevents: Mutex<SourceState>,
    kmsg_lost: AtomicU64,
    uevents_dropped: AtomicU64,
}

impl Default for SourcesStatus {
    fn default() -> SourcesStatus {
        SourcesStatus {
            kmsg: Mutex::new(SourceState::Starting),
            uevents: Mutex::new(SourceState::Starting),
            kmsg_lost: AtomicU64::new(0),
            uevents_dropped: AtomicU64::new(0),
        }
    }
}

fn set(m: &Mutex<SourceState>, s: SourceState) {
    *m.lock().unwrap_or_else(|p| p.into_inner()) = s;
}

fn get(m: &Mutex<SourceState>) -> SourceState {
    m.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

impl SourcesStatus {
    pub fn kmsg(&self) -> SourceState {
        get(&self.kmsg)
    }

    pub fn uevents(&self) -> SourceState {
        get(&self.uevents)
    }

    /// `event_sources` in `get_agent_info`: `scan` is always on; `kmsg` and `uevents` are
    /// "live", "starting" or "off: <why>".
    pub fn to_json(&self) -> Value {
        json!({
            "scan": "live",
            "kmsg": self.kmsg().to_json(),
            "uevents": self.uevents().to_json(),
            "kmsg_lost_records": self.kmsg_lost.load(Ordering::Relaxed),
            "uevents_dropped": self.uevents_dropped.load(Ordering::Relaxed),
        })
    }
}

/// What the sources read, from the config (`paths.*`).
#[derive(Debug, Clone)]
pub struct SourcesConfig {
    pub kmsg: PathBuf,
    pub sysfs: PathBuf,
    pub procfs: PathBuf,
    pub state_dir: PathBuf,
}

impl SourcesConfig {
    pub fn from_config(cfg: &Config) -> SourcesConfig {
        SourcesConfig {
            kmsg: cfg.paths.kmsg.clone(),
            sysfs: cfg.paths.sysfs.clone(),
            procfs: cfg.paths.procfs.clone(),
            state_dir: cfg.paths.state_dir.clone(),
        }
    }
}

/// The running sources; stopped (and joined) when dropped. Drop this before the monitor:
/// the sources hold senders into its channel.
pub struct Sources {
    stop: Arc<AtomicBool>,
    wakers: Vec<Waker>,
    threads: Vec<JoinHandle<()>>,
    pub status: Arc<SourcesStatus>,
}

impl Sources {
    /// Opens `cfg.kmsg` itself and starts both sources.
    pub fn start(cfg: SourcesConfig, sink: Sink) -> Sources {
        let kmsg = kmsg_reader::open(&cfg.kmsg);
        Sources::start_with_kmsg(cfg, kmsg, sink)
    }

    /// As [`Sources::start`], with the kernel log from `feed`: opened by the caller, or
    /// streamed by the privileged half at a socket.
    pub fn start_with_feed(cfg: SourcesConfig, feed: KmsgFeed, sink: Sink) -> Sources {
        let status = Arc::new(SourcesStatus::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut s = Sources { stop, wakers: Vec::new(), threads: Vec::new(), status };
        match feed {
            KmsgFeed::Opened(kmsg) => s.start_kmsg(&cfg, kmsg, &sink),
            KmsgFeed::Privileged(socket) => {
                let (job_cfg, sink, status) = (cfg.clone(), Arc::clone(&sink), Arc::clone(&s.status));
                s.spawn("kmsg", move |stop, rx| privileged_loop(&job_cfg, &socket, &sink, &status, &stop, &rx));
            }
        }
        s.start_uevents(sink);
        s
    }

    /// As [`Sources::start`], with the kernel log already opened elsewhere: the hook for
    /// the privileged half of issue 12, which opens `/dev/kmsg` (or a pipe it writes the
    /// records to, read in stream mode) and hands the fd over. `Err` is reported like an
    /// open that failed here.
    pub fn start_with_kmsg(cfg: SourcesConfig, kmsg: std::io::Result<std::fs::File>, sink: Sink) -> Sources {
        Sources::start_with_feed(cfg, KmsgFeed::Opened(kmsg), sink)
    }

    fn start_kmsg(&mut self, cfg: &SourcesConfig, kmsg: std::io::Result<std::fs::File>, sink: &Sink) {
        let s = self;
        match kmsg {
            Ok(file) => {
                let boot_id = resume::boot_id(&cfg.procfs);
                let start =
                    resume::start(resume::remembered(&cfg.state_dir, boot_id.as_deref()).as_ref(), boot_id.as_deref());
                match KmsgReader::new(file, start) {
                    Ok(reader) => {
                        let job = KmsgJob::new(cfg, reader, boot_id, sink, &s.status);
                        s.spawn("kmsg", move |stop, rx| {
                            job.run(&stop, &rx);
                        });
                    }
                    Err(e) => s.kmsg_off(&cfg.kmsg, &e),
                }
            }
            Err(e) => s.kmsg_off(&cfg.kmsg, &e),
        }
    }

    fn start_uevents(&mut self, sink: Sink) {
        let s = self;
        match UeventListener::open() {
            Ok(listener) => {
                let status = Arc::clone(&s.status);
                s.spawn("uevents", move |stop, rx| uevent_loop(listener, &sink, &status, &stop, &rx));
            }
            Err(e) => {
                let why = escape_to(&e.to_string(), QUOTE_CHARS);
                log::warn!("block device events unavailable: {why}; falling back to scans");
                set(&s.status.uevents, SourceState::Off(why));
            }
        }
    }

    fn kmsg_off(&self, path: &Path, e: &std::io::Error) {
        let why = escape_to(&format!("{}: {e}", path.display()), QUOTE_CHARS);
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (needs CAP_SYSLOG where kernel.dmesg_restrict=1, and no ProtectKernelLogs=)"
        } else {
            ""
        };
        log::warn!("kernel log unreadable: {why}{hint}; falling back to scans");
        set(&self.status.kmsg, SourceState::Off(why));
    }

    fn spawn(&mut self, name: &str, f: impl FnOnce(Arc<AtomicBool>, WakeReceiver) + Send + 'static) {
        let (waker, rx) = match wake::pair() {
            Ok(p) => p,
            Err(e) => {
                log::warn!("cannot start the {name} event source ({e}); falling back to scans");
                return;
            }
        };
        let stop = Arc::clone(&self.stop);
        match thread::Builder::new().name(name.into()).spawn(move || f(stop, rx)) {
            Ok(t) => {
                self.wakers.push(waker);
                self.threads.push(t);
            }
            Err(e) => log::warn!("cannot start the {name} event source ({e}); falling back to scans"),
        }
    }
}

impl Drop for Sources {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.wakers {
            w.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A subject's error lines are passed on at most this often; the rest are counted. A storm
/// of thousands of lines a second costs the monitor a few events a second. Shorter than the
/// least `disks.io_error_quiet` (1 s), so the first line after a storm ended is never held
/// back as part of the old one.
pub const PASS_EVERY: Duration = Duration::from_millis(250);
/// Subjects remembered by the rate limit; beyond this it starts over (bounded memory).
const MAX_SUBJECTS: usize = 64;
/// The read position goes to the monitor at most this often when no error came with it
/// (the monitor writes it, and flash wears), and at stop.
pub const SAVE_EVERY: Duration = Duration::from_secs(10);
/// How often a regular file or writerless FIFO (tests) is looked at again.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Where the kernel log comes from.
#[derive(Debug)]
pub enum KmsgFeed {
    /// Opened by the caller (before it dropped its capabilities), or the error it got.
    Opened(std::io::Result<std::fs::File>),
    /// Streamed by the privileged half at this socket; reconnected when it restarts.
    Privileged(PathBuf),
}

/// First wait before asking a privileged half that went away again; doubled to
/// [`RECONNECT_MAX`]. systemd restarts it after 1 s (`RestartSec=`); a refused connect
/// costs a syscall, so the wait stays short and the gap in the stream with it.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// How long to wait before asking again a privileged half that answered it cannot read
/// the kernel log.
const UNREADABLE_RETRY: Duration = Duration::from_secs(60);

/// The kernel log through the privileged half: connect, read until the stream ends,
/// connect again after the last record read (in memory, saved as the cursor), so a restart
/// of the privileged half loses and doubles nothing the ring still holds.
fn privileged_loop(
    cfg: &SourcesConfig,
    socket: &Path,
    sink: &Sink,
    status: &Arc<SourcesStatus>,
    stop: &AtomicBool,
    rx: &WakeReceiver,
) {
    let boot = resume::boot_id(&cfg.procfs);
    let mut last = resume::remembered(&cfg.state_dir, boot.as_deref()).map(|c| c.seq);
    let mut lost_base = 0;
    let mut backoff = RECONNECT_FIRST;
    let mut said: Option<String> = None;
    let mut connected_before = false;
    while !stop.load(Ordering::SeqCst) {
        let cursor = boot.as_ref().zip(last).map(|(b, seq)| Cursor { boot_id: b.clone(), seq });
        let start = cursor.as_ref().map_or(resume::Start::End, |c| resume::Start::After(c.seq));
        let opened = crate::privileged::client::kmsg(socket, cursor.as_ref());
        match opened.and_then(|f| {
            KmsgReader::new(f, start).map_err(|source| crate::privileged::client::ClientError::Unreachable {
                path: socket.display().to_string(),
                source,
            })
        }) {
            Ok(reader) => {
                said = None;
                if std::mem::replace(&mut connected_before, true) {
                    let from = last.map_or_else(|| "from now on".to_string(), |s| format!("after record {s}"));
                    log::info!("kernel log: the privileged half answers again; resuming {from}");
                } else {
                    log::info!("kernel log read through the privileged half at {}", socket.display());
                }
                backoff = RECONNECT_FIRST;
                let mut job = KmsgJob::new(cfg, reader, boot.clone(), sink, status);
                job.lost_base = lost_base;
                job.via_privileged = true;
                let ended = job.run(stop, rx);
                last = ended.last_seq.or(last);
                lost_base = ended.lost;
                if !ended.stream_ended {
                    return;
                }
            }
            Err(e) => {
                let why = match &e {
                    crate::privileged::client::ClientError::KmsgUnreadable(_) => e.to_string(),
                    _ => "privileged half unreachable".to_string(),
                };
                if said.as_deref() != Some(why.as_str()) {
                    let detail = escape_to(&e.to_string(), QUOTE_CHARS);
                    log::warn!("kernel log unreadable: {detail}; falling back to scans (asking again)");
                    set(&status.kmsg, SourceState::Off(escape_to(&why, QUOTE_CHARS)));
                    said = Some(why);
                }
                // A half that cannot read the log (no CAP_SYSLOG, a container) will not be
                // able to a second later: ask again once a minute, not every second.
                let wait = match &e {
                    crate::privileged::client::ClientError::KmsgUnreadable(_) => UNREADABLE_RETRY,
                    _ => backoff,
                };
                rx.wait(None, Some(wait));
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// How a [`KmsgJob`] ended.
struct Ended {
    last_seq: Option<u64>,
    /// Records lost so far, this job's included.
    lost: u64,
    /// The privileged half's stream closed (it stopped): connect again.
    stream_ended: bool,
}

struct KmsgJob {
    reader: KmsgReader,
    /// Lost records counted by earlier connections to the privileged half.
    lost_base: u64,
    /// The reader is the privileged half's stream: its end means "reconnect".
    via_privileged: bool,
    boot_id: Option<String>,
    attribution: Attribution,
    state_dir: PathBuf,
    sink: Sink,
    status: Arc<SourcesStatus>,
}

impl KmsgJob {
    fn new(
        cfg: &SourcesConfig,
        reader: KmsgReader,
        boot_id: Option<String>,
        sink: &Sink,
        status: &Arc<SourcesStatus>,
    ) -> KmsgJob {
        KmsgJob {
            reader,
            lost_base: 0,
            via_privileged: false,
            boot_id,
            attribution: Attribution::new(&cfg.sysfs),
            state_dir: cfg.state_dir.clone(),
            sink: Arc::clone(sink),
            status: Arc::clone(status),
        }
    }

    fn ended(&self, stream_ended: bool) -> Ended {
        Ended { last_seq: self.reader.last_seq(), lost: self.lost_base + self.reader.lost(), stream_ended }
    }

    fn run(mut self, stop: &AtomicBool, rx: &WakeReceiver) -> Ended {
        let live = if self.via_privileged { SourceState::LivePrivileged } else { SourceState::Live };
        set(&self.status.kmsg, live);
        let mut limit: HashMap<Subject, (Option<Instant>, u64)> = HashMap::new();
        let mut saved = (self.reader.last_seq(), Instant::now());
        // Started at the end of the ring (no cursor of this boot): nothing before the first
        // record read needs the monitor, so that position is saved here at once; a crash
        // before the monitor saves a later one resumes there, not at the end again.
        let mut baseline = self.reader.last_seq().is_none();
        let mut records = Vec::new();
        let mut reported_lost = 0;
        let mut lost_said: Option<Instant> = None;
        while !stop.load(Ordering::SeqCst) {
            records.clear();
            let progress = match self.reader.read(&mut records) {
                Ok(p) => p,
                Err(e) => {
                    let why = escape_to(&e.to_string(), QUOTE_CHARS);
                    log::warn!("kernel log unreadable: {why}; falling back to scans");
                    set(&self.status.kmsg, SourceState::Off(why));
                    self.hand_position();
                    // A broken stream from the privileged half is asked for again.
                    return self.ended(self.via_privileged);
                }
            };
            if baseline && let Some(first) = records.first() {
                baseline = false;
                self.save_baseline(first.seq);
            }
            let mut passed = false;
            for r in records.iter().filter(|r| r.from_kernel()) {
                let Some(err) = kernel_error::recognise(&r.message) else { continue };
                let now = Instant::now();
                if limit.len() >= MAX_SUBJECTS && !limit.contains_key(&err.subject) {
                    limit.clear();
                }
                let entry = limit.entry(err.subject.clone()).or_insert((None, 0));
                entry.1 += 1;
                if entry.0.is_some_and(|t: Instant| now.duration_since(t) < PASS_EVERY) {
                    continue;
                }
                let lines = std::mem::take(&mut entry.1);
                entry.0 = Some(now);
                let line = escape_to(&r.message, QUOTE_CHARS);
                for disk in self.attribution.disks(&err.subject) {
                    passed = true;
                    if !(self.sink)(DiskEvent::KernelError { disk, line: line.clone(), lines }) {
                        return self.ended(false);
                    }
                }
            }
            let lost = self.reader.lost();
            if lost > reported_lost {
                // The count at once (get_agent_info); the log line at most every SAVE_EVERY,
                // since a storm can overrun the ring on every read.
                self.status.kmsg_lost.store(self.lost_base + lost, Ordering::Relaxed);
                if lost_said.is_none_or(|t: Instant| t.elapsed() >= SAVE_EVERY) {
                    log::warn!("kernel log: {} records overwritten before they were read", lost - reported_lost);
                    reported_lost = lost;
                    lost_said = Some(Instant::now());
                }
            }
            // Right after errors, so that the monitor records the position with their
            // warnings (a record read again after a crash then finds its episode open).
            if self.reader.last_seq() != saved.0 && (passed || saved.1.elapsed() >= SAVE_EVERY) {
                if !self.hand_position() {
                    return self.ended(false);
                }
                saved = (self.reader.last_seq(), Instant::now());
            }
            match progress {
                Progress::More => {}
                // Asleep until a record comes, unless a cursor is still to be written.
                Progress::Wait => {
                    let dirty = self.reader.last_seq() != saved.0;
                    rx.wait(Some((self.reader_fd(), Interest::Readable)), dirty.then_some(SAVE_EVERY))
                }
                // The privileged half closed its end: it stopped or restarts.
                Progress::Idle if self.via_privileged => {
                    log::warn!("kernel log: the privileged half went away; asking again");
                    self.hand_position();
                    return self.ended(true);
                }
                Progress::Idle => rx.wait(None, Some(IDLE_POLL)),
            }
        }
        self.hand_position();
        self.ended(false)
    }

    fn reader_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.reader.as_fd()
    }

    /// Saves "handled up to the record before `first`" on this thread: see `baseline`.
    fn save_baseline(&self, first: u64) {
        let (Some(boot_id), Some(seq)) = (&self.boot_id, first.checked_sub(1)) else { return };
        if let Err(e) = (Cursor { boot_id: boot_id.clone(), seq }).save(&self.state_dir) {
            log::debug!("cannot save the kernel log position ({e})");
        }
    }

    /// Hands the read position to the monitor, after the errors read before it; false
    /// when the monitor is gone.
    fn hand_position(&self) -> bool {
        let (Some(boot_id), Some(seq)) = (&self.boot_id, self.reader.last_seq()) else { return true };
        (self.sink)(DiskEvent::KmsgRead(Cursor { boot_id: boot_id.clone(), seq }))
    }
}

fn uevent_loop(
    mut listener: UeventListener,
    sink: &Sink,
    status: &SourcesStatus,
    stop: &AtomicBool,
    rx: &WakeReceiver,
) {
    use std::os::fd::AsFd;
    set(&status.uevents, SourceState::Live);
    while !stop.load(Ordering::SeqCst) {
        loop {
            match listener.try_next() {
                Ok(Some(ev)) => {
                    if !matches!(ev.action, Action::Add | Action::Remove | Action::Change) {
                        continue;
                    }
                    let Some(dev) = ev.block_device() else { continue };
                    if !sink(DiskEvent::Changed(Some(dev.to_string()))) {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOBUFS.raw_os_error()) => {
                    status.uevents_dropped.fetch_add(1, Ordering::Relaxed);
                    if !sink(DiskEvent::Changed(None)) {
                        return;
                    }
                }
                Err(e) => {
                    let why = escape_to(&e.to_string(), QUOTE_CHARS);
                    log::warn!("block device events failed: {why}; falling back to scans");
                    set(&status.uevents, SourceState::Off(why));
                    return;
                }
            }
        }
        rx.wait(Some((listener.as_fd(), Interest::Readable)), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;

    #[test]
    fn a_kernel_log_handed_over_as_a_stream_is_read_and_its_errors_attributed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sys/block/sda/sda1")).unwrap();
        std::fs::write(d.path().join("sys/block/sda/sda1/partition"), "1\n").unwrap();
        // What a privileged half would pass: one end of a socket it writes records to.
        let (mut writer, reader) = UnixStream::pair().unwrap();
        reader.set_nonblocking(true).unwrap();
        let file = std::fs::File::from(OwnedFd::from(reader));
        let (tx, rx) = mpsc::channel();
        let sink: Sink = Arc::new(move |e| tx.send(e).is_ok());
        let cfg = SourcesConfig {
            kmsg: "/handed-over".into(),
            sysfs: d.path().join("sys"),
            procfs: d.path().join("proc"),
            state_dir: d.path().to_path_buf(),
        };
        let sources = Sources::start_with_kmsg(cfg, Ok(file), sink);
        writer.write_all(b"12,1,1,-;I/O error, dev sda1, sector 0\n").unwrap();
        writer.write_all(b"3,2,2,-;Buffer I/O error on dev sda1, logical block 0, async page read\n").unwrap();
        let got = loop {
            match rx.recv_timeout(Duration::from_secs(10)).expect("an event within 10 s") {
                DiskEvent::KernelError { disk, line, lines } => break (disk, line, lines),
                DiskEvent::Changed(_) | DiskEvent::KmsgRead(_) => {} // the host's own uevents
            }
        };
        assert_eq!(got, ("sda".into(), "Buffer I/O error on dev sda1, logical block 0, async page read".into(), 1));
        assert_eq!(sources.status.kmsg(), SourceState::Live);
        drop(sources); // stops and joins both threads
    }
}
