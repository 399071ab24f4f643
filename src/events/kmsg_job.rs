//! The kernel log reader's thread: reads records (from `/dev/kmsg`, a handed-over fd, or
//! the privileged half's stream, reconnected when that half restarts), rate-limits each
//! subject's error lines, attributes disks' to disks, and hands them and GPUs' to the
//! monitor with the read position to save.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::QUOTE_CHARS;
use super::attribution::Attribution;
use super::kernel_event::{KernelEvent, Sink};
use super::source_status::{SourceState, SourcesStatus, set};
use crate::config::sources::SourcesConfig;
use crate::kernel_log::cursor::{self, Cursor};
use crate::kernel_log::disk_error::{self, Subject};
use crate::kernel_log::gpu_error::{self, GpuRef};
use crate::kernel_log::reader::{KmsgReader, Progress};
use crate::kernel_log::record::Record;
use crate::os::wake::{Interest, WakeReceiver};
use crate::protocol::escape::escape_to;

/// A subject's error lines are passed on at most this often; the rest are counted. A storm
/// of thousands of lines a second costs the monitor a few events a second. Shorter than the
/// least `disks.io_error_quiet` (1 s), so the first line after a storm ended is never held
/// back as part of the old one.
pub const PASS_EVERY: Duration = Duration::from_millis(250);
const _: () = assert!(PASS_EVERY.as_millis() * 4 <= crate::config::MIN_IO_ERROR_QUIET.as_millis());
/// Subjects remembered by the rate limit; beyond this it starts over (bounded memory).
const MAX_SUBJECTS: usize = 64;

/// What the rate limit counts lines of: a disk's subject, or a GPU and what its driver
/// reported (each Xid code on its own, so a storm of application Xids never holds back the
/// Xid 79 that follows it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Limited {
    Disk(Subject),
    Gpu(GpuRef, gpu_error::Kind),
}

/// Each subject's last line passed on, the lines counted since, and the first of those.
type Limits = HashMap<Limited, (Option<Instant>, u64, Option<String>)>;
/// The read position goes to the monitor at most this often when no error came with it
/// (the monitor writes it, and flash wears), and at stop.
pub const SAVE_EVERY: Duration = Duration::from_secs(10);
/// How often a regular file or writerless FIFO (tests) is looked at again.
const IDLE_POLL: Duration = Duration::from_millis(100);

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
pub(super) fn privileged_loop(
    cfg: &SourcesConfig,
    socket: &Path,
    sink: &Sink,
    status: &Arc<SourcesStatus>,
    stop: &AtomicBool,
    rx: &WakeReceiver,
) {
    let boot = cursor::boot_id(&cfg.procfs);
    let mut last = cursor::remembered(&cfg.state_dir, boot.as_deref()).map(|c| c.seq);
    let mut lost_base = 0;
    let mut backoff = RECONNECT_FIRST;
    let mut said: Option<String> = None;
    let mut connected_before = false;
    while !stop.load(Ordering::SeqCst) {
        let after = boot.as_ref().zip(last).map(|(b, seq)| Cursor { boot_id: b.clone(), seq });
        let start = after.as_ref().map_or(cursor::Start::End, |c| cursor::Start::After(c.seq));
        let opened = crate::privileged_client::kmsg(socket, after.as_ref());
        match opened.and_then(|f| {
            KmsgReader::new(f, start).map_err(|source| crate::privileged_client::ClientError::Unreachable {
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
                    crate::privileged_client::ClientError::KmsgUnreadable(_) => e.to_string(),
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
                    crate::privileged_client::ClientError::KmsgUnreadable(_) => UNREADABLE_RETRY,
                    _ => backoff,
                };
                rx.wait(None, Some(wait));
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// Counts one line of `key`: `Some(lines)` (this one and those held back before it) when
/// it goes to the monitor, `None` when one went less than [`PASS_EVERY`] ago.
fn pass(limit: &mut Limits, key: Limited, line: &str) -> Option<u64> {
    let now = Instant::now();
    if limit.len() >= MAX_SUBJECTS && !limit.contains_key(&key) {
        limit.clear();
    }
    let entry = limit.entry(key).or_insert((None, 0, None));
    entry.1 += 1;
    if entry.0.is_some_and(|t: Instant| now.duration_since(t) < PASS_EVERY) {
        entry.2.get_or_insert_with(|| line.to_string());
        return None;
    }
    entry.0 = Some(now);
    entry.2 = None;
    Some(std::mem::take(&mut entry.1))
}

/// How a [`KmsgJob`] ended.
pub(super) struct Ended {
    last_seq: Option<u64>,
    /// Records lost so far, this job's included.
    lost: u64,
    /// The privileged half's stream closed (it stopped): connect again.
    stream_ended: bool,
}

pub(super) struct KmsgJob {
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
    pub(super) fn new(
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

    pub(super) fn run(mut self, stop: &AtomicBool, rx: &WakeReceiver) -> Ended {
        let live = if self.via_privileged { SourceState::LivePrivileged } else { SourceState::Live };
        set(&self.status.kmsg, live);
        let mut limit: Limits = HashMap::new();
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
            let Some(mut passed) = self.pass_errors(&records, &mut limit) else { return self.ended(false) };
            // Nothing more to read now: the GPU lines held back go too, so that every Xid is
            // counted (`get_gpu_info`), not only those that came a rate-limit window apart.
            if progress != Progress::More {
                let Some(held) = self.pass_held_back(&mut limit) else { return self.ended(false) };
                passed |= held;
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

    /// Hands the monitor the disk and GPU errors among `records`, each subject's at most
    /// every [`PASS_EVERY`] (the lines between are counted); whether any went. `None`: the
    /// monitor is gone.
    fn pass_errors(&self, records: &[Record], limit: &mut Limits) -> Option<bool> {
        let mut passed = false;
        for r in records {
            let disk = disk_error::recognise(r);
            let gpu = if disk.is_none() { gpu_error::recognise(r) } else { None };
            let key = match (&disk, &gpu) {
                (Some(d), _) => Limited::Disk(d.subject.clone()),
                (None, Some(g)) => Limited::Gpu(g.gpu.clone(), g.kind),
                (None, None) => continue,
            };
            let line = escape_to(&r.message, QUOTE_CHARS);
            let Some(lines) = pass(limit, key, &line) else { continue };
            let events: Vec<KernelEvent> = match (disk, gpu) {
                (Some(err), _) => self
                    .attribution
                    .disks(&err)
                    .into_iter()
                    .map(|disk| KernelEvent::KernelError { disk, line: line.clone(), lines })
                    .collect(),
                (None, Some(g)) => vec![KernelEvent::GpuRecord { gpu: g.gpu, kind: g.kind, line, lines }],
                (None, None) => Vec::new(),
            };
            for e in events {
                passed = true;
                if !(self.sink)(e) {
                    return None;
                }
            }
        }
        Some(passed)
    }

    /// Hands the monitor the GPU lines the rate limit held back, each GPU and kind as one
    /// event with their count; whether any went. `None`: the monitor is gone.
    fn pass_held_back(&self, limit: &mut Limits) -> Option<bool> {
        let mut passed = false;
        for (key, (_, lines, line)) in limit.iter_mut() {
            let (Limited::Gpu(gpu, kind), Some(line)) = (key, line.take()) else { continue };
            let lines = std::mem::take(lines);
            passed = true;
            if !(self.sink)(KernelEvent::GpuRecord { gpu: gpu.clone(), kind: *kind, line, lines }) {
                return None;
            }
        }
        Some(passed)
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
        (self.sink)(KernelEvent::KmsgRead(Cursor { boot_id: boot_id.clone(), seq }))
    }
}
