//! The durable outbox (PROTOCOL.md §7, §8): one file per message (a disk warning, or a
//! remote action's result) in `<state_dir>/spool/`, written to a temp name, fsynced,
//! renamed and the directory fsynced. A file is deleted only when the gateway acknowledges
//! its `act_id`.
//!
//! All disk IO happens on one storage thread, so that a slow or dying state disk (a 3 s
//! fsync on a worn SD card) never holds up the socket loop: callers change an in-memory
//! view under a short lock that is never held across IO, and queue the IO. Serialising
//! every write and delete on that one thread also keeps a late write from bringing back a
//! file whose ack was already processed. A message is offered to the gateway once its
//! write has finished: on disk, or (when the state filesystem is full or read-only) kept in
//! memory only; the error is logged once and the storage thread writes it out when it can.
//!
//! The outbox is capped ([`Limits`]): past the cap, the newest duplicates of the same disk
//! (or GPU) and reason are dropped first; the first unacknowledged warning of a subject and
//! reason, and every action result, are never dropped. A `warning_cleared` goes with its
//! warning: dropped when the cap drops the warning, and never taken in for a warning the
//! cap dropped ([`Spool::dropped`]), so the gateway never hears of an end without its start. Action results count towards the cap: remote
//! actions refuse new `write` runs while [`Spool::usage`] says the outbox is full, which is
//! what bounds them.
//!
//! An action result's sender keeps its own durable record of the run (a running marker) until
//! the result needs no other: [`Spool::set_on_settled`] tells it, on the storage thread, once
//! the result is on disk or acknowledged, and always before the result's file is deleted.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::Value;

use crate::os::wake::Waker;

mod recovery;
mod storage;
mod view;
use recovery::{Recovered, read_back};
use storage::*;
use view::{View, cap_message, lock};

/// The largest spool file read back. A warning is a few hundred bytes, but an action
/// result carries up to 64 KiB of each output stream, and JSON writes a control byte as
/// `\u00XX`: six bytes each, so 2 × 64 KiB × 6 plus the envelope must fit.
pub const ENTRY_CAP: u64 = 1 << 20;

/// What an outbox message is; its `act` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A disk-failure warning (PROTOCOL.md §7).
    Warning,
    /// The result of a remote action (PROTOCOL.md §8).
    ActionResult,
    /// The end of a warned failure episode (PROTOCOL.md §9, `warning.send_cleared`).
    WarningCleared,
    /// An automatic recovery step or the end of a ladder (PROTOCOL.md §9).
    Recovery,
    /// The outcome of an agent update (PROTOCOL.md §9).
    UpdateResult,
}

impl Kind {
    /// The message's `act` on the wire, which is also how the log names it.
    pub fn act(self) -> &'static str {
        match self {
            Kind::Warning => "warning",
            Kind::ActionResult => "action_result",
            Kind::WarningCleared => "warning_cleared",
            Kind::Recovery => "recovery",
            Kind::UpdateResult => "update_result",
        }
    }

    /// Written by the failure monitor, which records in its own state file when each is
    /// spooled (see [`Spool::acked_before`]).
    pub fn from_monitor(self) -> bool {
        matches!(self, Kind::Warning | Kind::WarningCleared)
    }

    fn from_act(act: &str) -> Option<Kind> {
        match act {
            "warning" => Some(Kind::Warning),
            "action_result" => Some(Kind::ActionResult),
            "warning_cleared" => Some(Kind::WarningCleared),
            "recovery" => Some(Kind::Recovery),
            "update_result" => Some(Kind::UpdateResult),
            _ => None,
        }
    }
}

/// Where a message's write stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Queued for the storage thread; not offered to the gateway yet, so that a crash
    /// cannot leave a message sent but not spooled while the disk is healthy.
    Writing,
    /// Durably in the spool directory.
    OnDisk,
    /// The write failed (full or read-only state filesystem): held in memory, sent, and
    /// written out by [`Spool::catch_up`] when the disk allows.
    MemoryOnly,
}

/// One unacknowledged message: its creation number, `act_id` and the exact text to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub act_id: String,
    pub kind: Kind,
    pub text: Arc<str>,
    pub durability: Durability,
    /// Disk and reason of a warning: entries with the same key are duplicates for the cap.
    key: Option<String>,
    /// The warning a `warning_cleared` ends (its `ref_act_id`).
    refers: Option<String>,
}

impl Entry {
    pub fn on_disk(&self) -> bool {
        self.durability == Durability::OnDisk
    }

    fn sendable(&self) -> bool {
        self.durability != Durability::Writing
    }
}

/// Something wrong found in the spool directory; reported at error level by the caller,
/// the agent goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

/// How much the outbox holds before it drops duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_entries: 10_000, max_bytes: 16 << 20 }
    }
}

/// How the spool is opened: its cap and, for tests only, a slow disk.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub limits: Limits,
    /// Test seam: the storage thread sleeps this long before each fsync (of a write, or of
    /// the directory after a delete), standing in for a dying SD card (no slow block device or FUSE is available to the test suite).
    pub fsync_delay: Duration,
}

/// How full the outbox is, against its cap; see [`Spool::usage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub entries: usize,
    pub bytes: usize,
    pub limits: Limits,
}

/// Called on the storage thread with the `act_id` of an action result that no longer needs
/// its sender's own record: it is durably spooled, or acknowledged. It may do disk IO (it is
/// never on the socket thread); it runs before any delete of that result's file is done.
pub type OnSettled = Arc<dyn Fn(&str) + Send + Sync>;

/// A message the gateway acknowledged, as [`Spool::ack`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    pub seq: u64,
    pub kind: Kind,
}

pub struct Spool {
    dir: PathBuf,
    view: Arc<Mutex<View>>,
    jobs: Option<Sender<Job>>,
    storage: Option<JoinHandle<()>>,
}

enum Job {
    Write(u64),
    /// A message left the outbox (acknowledged, or dropped by the cap): its file goes. An
    /// acknowledged warning's (`Some(act_id)`) becomes a tombstone (`a-<n>.json`) until the
    /// monitor has saved its episode as reported (see [`Spool::acked_before`]).
    Delete(u64, Option<String>),
    /// Remove the tombstones of every act_id but these (episodes not yet saved as reported).
    Purge(HashSet<String>),
    CatchUp,
    /// An action result acknowledged before it was on disk: tell its sender (no file to
    /// delete, so no other job will).
    Settled(String),
    /// Answered once every job queued before it is done.
    Barrier(Sender<()>),
}

impl Spool {
    /// Opens (creating) `<state_dir>/spool` with the default cap.
    pub fn open(state_dir: &Path) -> io::Result<(Spool, Vec<Problem>)> {
        Spool::open_with(state_dir, Options::default())
    }

    /// Opens (creating) `<state_dir>/spool` and starts its storage thread. Corrupt files are
    /// renamed to `*.corrupt` and returned as problems; leftover temp files of an
    /// interrupted write are removed; a spool over the cap is trimmed (and said so).
    pub fn open_with(state_dir: &Path, options: Options) -> io::Result<(Spool, Vec<Problem>)> {
        let dir = state_dir.join("spool");
        let Recovered { entries, tombstones, acked_at_open, mut problems } = read_back(&dir)?;
        // Past the tombstones too: a new message must not take the number of one.
        let next_seq = entries.last().map(|e| e.seq).max(tombstones.keys().next_back().copied()).map_or(1, |s| s + 1);
        let mut view = View { next_seq, limits: options.limits, tombstones, acked_at_open, ..View::default() };
        for e in entries {
            view.insert(e);
        }
        let dropped = view.enforce_cap();
        if !dropped.is_empty() {
            problems.push(Problem(cap_message(&dir, &view, dropped.len())));
        }
        let view = Arc::new(Mutex::new(view));
        let (jobs, rx) = mpsc::channel();
        for e in &dropped {
            let _ = jobs.send(Job::Delete(e.seq, None));
        }
        let storage = Storage { dir: dir.clone(), view: Arc::clone(&view), fsync_delay: options.fsync_delay };
        let storage = thread::Builder::new().name("storage".into()).spawn(move || storage.run(rx))?;
        Ok((Spool { dir, view, jobs: Some(jobs), storage: Some(storage) }, problems))
    }

    fn lock(&self) -> MutexGuard<'_, View> {
        lock(&self.view)
    }

    fn queue(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // The storage thread only ends when the spool is dropped.
            let _ = jobs.send(job);
        }
    }

    /// Who to wake when a message becomes ready to send (the runner).
    pub fn set_waker(&self, waker: Waker) {
        self.lock().waker = Some(waker);
    }

    /// Who to tell when an action result is durably spooled or acknowledged (remote
    /// actions, which then remove the run's running marker). Set it before pushing results.
    pub fn set_on_settled(&self, f: OnSettled) {
        self.lock().on_settled = Some(f);
    }

    /// How many messages and bytes the outbox holds, and its cap. Never blocks on the disk.
    pub fn usage(&self) -> Usage {
        let view = self.lock();
        Usage { entries: view.entries.len(), bytes: view.bytes, limits: view.limits }
    }

    /// Adds a message (the full JSON; its `act_id` and `act` are read from it) and queues
    /// its durable write; returns its creation number. It is offered to the gateway once
    /// the write is done (or failed: then it is held in memory and still sent). Never
    /// blocks on the disk. Past the cap, the newest duplicate warnings are dropped, and
    /// this one too if it is such a duplicate.
    pub fn push(&self, message: &Value) -> u64 {
        let act_id = message["act_id"].as_str().unwrap_or_default().to_string();
        let kind = message["act"].as_str().and_then(Kind::from_act).unwrap_or(Kind::Warning);
        let key = dedup_key(kind, message);
        let refers = refers(kind, message);
        let text: Arc<str> = message.to_string().into();
        let mut view = self.lock();
        // The end of an episode whose warning the cap dropped: the gateway never heard of
        // its start, so it hears nothing of its end either.
        if let Some(r) = &refers
            && view.dropped.remove(r)
        {
            return 0;
        }
        let seq = view.next_seq;
        view.next_seq += 1;
        if kind.from_monitor() {
            // Not saved as reported yet, by definition: its ack must leave a tombstone even
            // when it comes before the monitor's next save (which sets the whole list).
            view.unreported.insert(act_id.clone());
        }
        view.insert(Entry { seq, act_id, kind, text, durability: Durability::Writing, key, refers });
        let dropped = view.enforce_cap();
        let message = (!dropped.is_empty()).then(|| cap_message(&self.dir, &view, dropped.len()));
        drop(view);
        if let Some(m) = message {
            log::error!("{m}");
        }
        for e in &dropped {
            // Its write may be queued already: delete after it.
            if e.seq != seq {
                self.queue(Job::Delete(e.seq, None));
            }
        }
        if !dropped.iter().any(|e| e.seq == seq) {
            self.queue(Job::Write(seq));
        }
        seq
    }

    /// Asks the storage thread to write out messages held only in memory; call from time to
    /// time (the disk monitor does, every scan). Never blocks on the disk.
    pub fn catch_up(&self) {
        let mut view = self.lock();
        let wanted = !view.catch_up_queued && view.entries.values().any(|e| e.durability == Durability::MemoryOnly);
        view.catch_up_queued |= wanted;
        drop(view);
        if wanted {
            self.queue(Job::CatchUp);
        }
    }

    /// Waits until the storage thread has done every write and delete queued so far, or
    /// `limit` passed; `true` when done. For tests and start-up, never the socket loop.
    pub fn settle(&self, limit: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        self.queue(Job::Barrier(tx));
        rx.recv_timeout(limit).is_ok()
    }

    /// Unacknowledged messages in creation order (a copy: for start-up and tests).
    pub fn unacked(&self) -> Vec<Entry> {
        self.lock().entries.values().cloned().collect()
    }

    /// Up to `max` creation numbers from `from` on that are ready to send, in order; stops
    /// at the first one still being written, so that messages go out in creation order.
    pub fn sendable_from(&self, from: u64, max: usize) -> Vec<u64> {
        self.lock().entries.range(from..).take(max).take_while(|(_, e)| e.sendable()).map(|(s, _)| *s).collect()
    }

    /// The texts of these messages; `None` for one that is gone (acknowledged or dropped).
    pub fn texts(&self, seqs: &[u64]) -> Vec<(u64, Option<Arc<str>>)> {
        let view = self.lock();
        seqs.iter().map(|s| (*s, view.entries.get(s).map(|e| Arc::clone(&e.text)))).collect()
    }

    /// Where the message with this `act_id` stands; `None` when it is not in the outbox
    /// (acknowledged, dropped by the cap, or never pushed).
    pub fn durability(&self, act_id: &str) -> Option<Durability> {
        let view = self.lock();
        view.by_act.get(act_id).and_then(|s| view.entries.get(s)).map(|e| e.durability)
    }

    /// Whether the cap dropped the warning with this `act_id` (a newer duplicate of a
    /// failure already waiting), as far as this run knows: its episode was never warned.
    pub fn dropped(&self, act_id: &str) -> bool {
        self.lock().dropped.contains(act_id)
    }

    /// Whether a message with this `act_id` is waiting.
    pub fn contains(&self, act_id: &str) -> bool {
        self.lock().by_act.contains_key(act_id)
    }

    /// Waits (up to `limit`) for the storage thread, then tells whether the message with
    /// this `act_id` is durably spooled or already acknowledged: what a caller must know
    /// before it forgets its own record of the message. Never the socket loop.
    pub fn wait_durable(&self, act_id: &str, limit: Duration) -> bool {
        self.settle(limit) && self.durability(act_id).is_none_or(|d| d == Durability::OnDisk)
    }

    /// The creation number and kind of the message with this `act_id`, if it is waiting.
    pub fn find(&self, act_id: &str) -> Option<(u64, Kind)> {
        let view = self.lock();
        let seq = *view.by_act.get(act_id)?;
        view.entries.get(&seq).map(|e| (seq, e.kind))
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `act_id` left the outbox (acknowledged, or dropped by the cap) and its
    /// tombstone is still there: the monitor has not yet saved its episode as reported.
    pub fn acked_before(&self, act_id: &str) -> bool {
        self.lock().tombstones.values().any(|a| a == act_id)
    }

    /// The act_id and text of each tombstone found when the spool was opened, once: the
    /// warnings acknowledged before the last stop whose episodes may be missing from the
    /// saved inventory altogether (a kill -9 during the first save after their detection).
    pub fn take_acked_at_open(&self) -> Vec<(String, String)> {
        std::mem::take(&mut self.lock().acked_at_open)
    }

    /// What the monitor's saved inventory has not marked reported (`keep`): acks of these
    /// leave a tombstone, and the tombstones of every other act_id can go. Never blocks on
    /// the disk.
    pub fn purge_tombstones(&self, keep: HashSet<String>) {
        let mut view = self.lock();
        view.unreported = keep.clone();
        let stale = view.tombstones.values().any(|a| !keep.contains(a));
        drop(view);
        if stale {
            self.queue(Job::Purge(keep));
        }
    }

    /// The gateway acknowledged `act_id`: forget it and queue the deletion of its file.
    /// `None` when no such message is waiting (a duplicate ack). Never blocks on the disk.
    pub fn ack(&self, act_id: &str) -> Option<Acked> {
        let mut view = self.lock();
        let seq = *view.by_act.get(act_id)?;
        let e = view.remove(seq)?;
        let unreported = view.unreported.contains(act_id);
        drop(view);
        // A queued write for it may still be ahead: the delete goes after it.
        if e.durability != Durability::MemoryOnly {
            let tombstone = (e.kind.from_monitor() && unreported).then(|| e.act_id.clone());
            self.queue(Job::Delete(seq, tombstone));
        }
        // One on disk was settled when its write finished, before this delete.
        if e.kind == Kind::ActionResult && !e.on_disk() {
            self.queue(Job::Settled(e.act_id));
        }
        Some(Acked { seq, kind: e.kind })
    }
}

/// How long dropping the spool (the agent stopping) waits for queued writes and deletes.
/// Bounded: a state disk stuck in D state must not keep the agent from stopping; what is
/// not written then is raised again, or resent, after the restart.
const STOP_WAIT: Duration = Duration::from_secs(5);

impl Drop for Spool {
    fn drop(&mut self) {
        // Ends the storage thread once it has done what is queued.
        drop(self.jobs.take());
        let Some(t) = self.storage.take() else { return };
        let until = std::time::Instant::now() + STOP_WAIT;
        while !t.is_finished() {
            if std::time::Instant::now() >= until {
                log::warn!("the outbox in {} is still writing; not waiting for it", self.dir.display());
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let _ = t.join();
    }
}

/// Disk (or GPU) and reason of a warning; action results and cleared messages have none and
/// are never dropped on their own. A disk's key is as it always was, `<disk>\n<reason>`, so
/// a spool written by an earlier version keeps its duplicates.
fn dedup_key(kind: Kind, v: &Value) -> Option<String> {
    if kind != Kind::Warning {
        return None;
    }
    let reason = v["reason"].as_str()?;
    match (v["disk"].as_str(), v["gpu"].as_str()) {
        (Some(disk), _) => Some(format!("{disk}\n{reason}")),
        (None, Some(gpu)) => Some(format!("gpu {gpu}\n{reason}")),
        (None, None) => None,
    }
}

/// The warning a `warning_cleared` refers to.
fn refers(kind: Kind, v: &Value) -> Option<String> {
    (kind == Kind::WarningCleared).then(|| v["ref_act_id"].as_str().map(str::to_string)).flatten()
}

#[cfg(test)]
mod tests;
