//! The spool's in-memory view: every message waiting, by creation number, act_id and
//! duplicate key, and what the storage thread and the monitor share about the files.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use super::{Entry, Limits, OnSettled};
use crate::os::wake::Waker;

/// The in-memory outbox. Every operation on it is O(log n).
#[derive(Default)]
pub(super) struct View {
    /// By creation number: creation order.
    pub(super) entries: BTreeMap<u64, Entry>,
    pub(super) by_act: HashMap<String, u64>,
    /// Entries per duplicate key, so the first of each is known.
    pub(super) by_key: HashMap<String, BTreeSet<u64>>,
    /// Entries that are not the first of their key: the ones the cap may drop.
    pub(super) dups: BTreeSet<u64>,
    pub(super) bytes: usize,
    pub(super) next_seq: u64,
    pub(super) limits: Limits,
    /// A write or delete failed and has not succeeded since: log only the first.
    pub(super) failing: bool,
    /// The same for removing tombstones, which every scan asks for again.
    pub(super) purge_failing: bool,
    pub(super) catch_up_queued: bool,
    pub(super) waker: Option<Waker>,
    pub(super) on_settled: Option<OnSettled>,
    /// Tombstones on disk: creation number to act_id.
    pub(super) tombstones: BTreeMap<u64, String>,
    /// The act_id and text of each tombstone found at open, until the monitor takes them
    /// ([`Spool::take_acked_at_open`]).
    pub(super) acked_at_open: Vec<(String, String)>,
    /// The act_ids of episodes the monitor's saved inventory has not marked reported: only
    /// their acks leave a tombstone; every other ack deletes the file at once.
    pub(super) unreported: HashSet<String>,
    /// Each waiting `warning_cleared` by the act_id of the warning it ends.
    pub(super) cleared_of: HashMap<String, u64>,
    /// Warnings the cap dropped in this run, until their episode's end is pushed (and
    /// refused). At most [`MAX_DROPPED`]: past that the oldest knowledge goes, and such an
    /// end would be sent (a `ref_act_id` the gateway never saw, which it can ignore).
    pub(super) dropped: HashSet<String>,
}

/// Dropped warnings remembered; each is a failure of a subject that already has an
/// unacknowledged warning, so many only while the gateway is gone for long.
const MAX_DROPPED: usize = 10_000;

impl View {
    pub(super) fn insert(&mut self, e: Entry) {
        self.bytes += e.text.len();
        self.by_act.insert(e.act_id.clone(), e.seq);
        if let Some(r) = &e.refers {
            self.cleared_of.insert(r.clone(), e.seq);
        }
        if let Some(k) = &e.key {
            let set = self.by_key.entry(k.clone()).or_default();
            set.insert(e.seq);
            if set.first() != Some(&e.seq) {
                self.dups.insert(e.seq);
            }
        }
        self.entries.insert(e.seq, e);
    }

    pub(super) fn remove(&mut self, seq: u64) -> Option<Entry> {
        let e = self.entries.remove(&seq)?;
        self.bytes -= e.text.len();
        if self.by_act.get(&e.act_id) == Some(&seq) {
            self.by_act.remove(&e.act_id);
        }
        self.dups.remove(&seq);
        if let Some(r) = &e.refers
            && self.cleared_of.get(r) == Some(&seq)
        {
            self.cleared_of.remove(r);
        }
        if let Some(k) = &e.key
            && let Some(set) = self.by_key.get_mut(k)
        {
            set.remove(&seq);
            match set.first() {
                None => {
                    self.by_key.remove(k);
                }
                // The next one is the first of its key now, and no longer droppable.
                Some(first) => {
                    self.dups.remove(first);
                }
            }
        }
        Some(e)
    }

    pub(super) fn over_cap(&self) -> bool {
        self.entries.len() > self.limits.max_entries || self.bytes > self.limits.max_bytes
    }

    /// Drops the newest duplicates until within the cap, each with the `warning_cleared`
    /// that ends it; returns what it dropped.
    pub(super) fn enforce_cap(&mut self) -> Vec<Entry> {
        let mut dropped = Vec::new();
        while self.over_cap() {
            let Some(&seq) = self.dups.last() else { break };
            let Some(warning) = self.remove(seq) else { break };
            if let Some(cleared) = self.cleared_of.get(&warning.act_id).copied() {
                dropped.extend(self.remove(cleared));
            } else {
                if self.dropped.len() >= MAX_DROPPED {
                    self.dropped.clear();
                }
                self.dropped.insert(warning.act_id.clone());
            }
            dropped.push(warning);
        }
        dropped
    }
}

pub(super) fn lock(view: &Mutex<View>) -> MutexGuard<'_, View> {
    view.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn cap_message(dir: &Path, view: &View, dropped: usize) -> String {
    format!(
        "the outbox in {} is over its cap ({} messages, {} bytes; at most {} and {}): dropped the {dropped} newest \
         duplicate warnings of a disk and reason already waiting; the first warning of each is kept",
        dir.display(),
        view.entries.len(),
        view.bytes,
        view.limits.max_entries,
        view.limits.max_bytes
    )
}
