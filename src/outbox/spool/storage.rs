//! The spool's files: one file per entry, written durably (fsync, atomic rename, fsync of
//! the directory), read back at start, deleted in batches. Only the writer thread of
//! [`super::Spool`] calls into here.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::PathBuf;

use super::*;
use crate::os::durable::{sync_dir, write_durably_with};

/// Deletes the storage thread does under one directory fsync, at most.
pub(super) const MAX_DELETE_BATCH: usize = 256;

/// The storage thread: the only one that touches the spool directory after open.
pub(super) struct Storage {
    pub(super) dir: PathBuf,
    pub(super) view: Arc<Mutex<View>>,
    pub(super) fsync_delay: Duration,
}

impl Storage {
    pub(super) fn run(self, jobs: Receiver<Job>) {
        // A job taken from the queue while collecting a batch of deletes.
        let mut next = None;
        loop {
            let Some(job) = next.take().or_else(|| jobs.recv().ok()) else { return };
            match job {
                Job::Write(seq) => {
                    let text = lock(&self.view).entries.get(&seq).map(|e| Arc::clone(&e.text));
                    if let Some(text) = text {
                        let ok = self.write(seq, &text);
                        self.written(seq, &text, ok);
                    }
                }
                Job::Settled(act_id) => self.settled(&act_id),
                Job::Delete(seq, act_id) => {
                    // Acks come in bursts while a backlog drains: one directory fsync for
                    // the deletes already queued, not one each.
                    let mut batch = vec![(seq, act_id)];
                    while batch.len() < MAX_DELETE_BATCH {
                        match jobs.try_recv() {
                            Ok(Job::Delete(seq, act_id)) => batch.push((seq, act_id)),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.delete(&batch);
                }
                Job::Purge(keep) => self.purge(&keep),
                Job::CatchUp => {
                    let pending: Vec<(u64, Arc<str>)> = {
                        let mut view = lock(&self.view);
                        view.catch_up_queued = false;
                        let memory = view.entries.values().filter(|e| e.durability == Durability::MemoryOnly);
                        memory.map(|e| (e.seq, Arc::clone(&e.text))).collect()
                    };
                    for (seq, text) in pending {
                        let ok = self.write(seq, &text);
                        self.written(seq, &text, ok);
                        if !ok {
                            break;
                        }
                    }
                }
                Job::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    pub(super) fn written(&self, seq: u64, text: &str, ok: bool) {
        let mut view = lock(&self.view);
        if let Some(e) = view.entries.get_mut(&seq) {
            e.durability = if ok { Durability::OnDisk } else { Durability::MemoryOnly };
            if ok && e.kind == Kind::ActionResult {
                let act_id = e.act_id.clone();
                drop(view);
                self.settled(&act_id);
                view = lock(&self.view);
            }
        } else if ok {
            // Acknowledged while its write was under way (a catch-up of one held in memory):
            // no delete was queued for it. It goes now, as a tombstone when it is a warning
            // whose episode is not saved as reported yet, as every other such ack.
            let tombstone = tombstone_for(text, &view);
            drop(view);
            self.delete(&[(seq, tombstone)]);
            return;
        }
        if let Some(w) = &view.waker {
            w.wake();
        }
    }

    /// Tells the action result's sender (see [`OnSettled`]); outside the view's lock, as it
    /// does disk IO.
    fn settled(&self, act_id: &str) {
        let hook = lock(&self.view).on_settled.clone();
        if let Some(f) = hook {
            f(act_id);
        }
    }

    pub(super) fn write(&self, seq: u64, text: &str) -> bool {
        let result = fs::create_dir_all(&self.dir).and_then(|()| {
            write_durably_with(&self.dir, &file_name(seq), text.as_bytes(), || thread::sleep(self.fsync_delay))
        });
        let mut view = lock(&self.view);
        match result {
            Ok(()) => {
                if std::mem::take(&mut view.failing) {
                    log::info!("the outbox in {} is writable again", self.dir.display());
                }
                true
            }
            Err(e) => {
                if !std::mem::replace(&mut view.failing, true) {
                    log::error!(
                        "cannot write the warning spool in {} ({e}); warnings are kept in memory and \
                         still sent, and written out when the disk allows",
                        self.dir.display()
                    );
                }
                false
            }
        }
    }

    /// Deletes each file, or turns an acknowledged warning's into its tombstone (one rename,
    /// the same fsync), so that a restart before the monitor saved the episode as reported
    /// knows it was delivered.
    pub(super) fn delete(&self, batch: &[(u64, Option<String>)]) {
        let mut changed = false;
        for (seq, tombstone) in batch {
            let file = self.dir.join(file_name(*seq));
            let done = match tombstone {
                Some(_) => fs::rename(&file, self.dir.join(tombstone_name(*seq))),
                None => fs::remove_file(&file),
            };
            match done {
                Ok(()) => {
                    changed = true;
                    if let Some(act_id) = tombstone {
                        lock(&self.view).tombstones.insert(*seq, act_id.clone());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // The gateway drops duplicates by act_id: a resend after a restart is harmless.
                Err(e) => log::warn!(
                    "acknowledged outbox message {} could not be deleted from the spool ({e})",
                    file_name(*seq)
                ),
            }
        }
        if changed {
            self.sync();
        }
    }

    /// Removes the tombstones whose act_id is not in `keep`.
    pub(super) fn purge(&self, keep: &HashSet<String>) {
        let gone: Vec<u64> =
            lock(&self.view).tombstones.iter().filter(|(_, a)| !keep.contains(*a)).map(|(s, _)| *s).collect();
        let mut changed = false;
        for seq in gone {
            match fs::remove_file(self.dir.join(tombstone_name(seq))) {
                Ok(()) => changed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Asked again at every scan while it stays (a read-only state file
                    // system): said once until a removal succeeds, not once per scan.
                    if !std::mem::replace(&mut lock(&self.view).purge_failing, true) {
                        log::warn!("tombstone {} could not be removed from the spool ({e})", tombstone_name(seq));
                    } else {
                        log::debug!("tombstone {} could not be removed from the spool ({e})", tombstone_name(seq));
                    }
                    continue;
                }
            }
            let mut view = lock(&self.view);
            view.tombstones.remove(&seq);
            view.purge_failing = false;
        }
        if changed {
            self.sync();
        }
    }

    fn sync(&self) {
        thread::sleep(self.fsync_delay);
        if let Err(e) = sync_dir(&self.dir) {
            log::warn!("the spool directory {} could not be synced after deletes ({e})", self.dir.display());
        }
    }
}

/// The act_id of `text` when it is a message of the monitor (a warning or a
/// `warning_cleared`) that it has not saved as reported: its ack must leave a tombstone,
/// as [`Spool::ack`] leaves one.
fn tombstone_for(text: &str, view: &View) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    let act_id = v["act_id"].as_str()?;
    let monitor = v["act"].as_str().and_then(Kind::from_act).is_some_and(Kind::from_monitor);
    (monitor && view.unreported.contains(act_id)).then(|| act_id.to_string())
}

/// The tombstone of message `seq`: acknowledged, kept until the monitor recorded it.
pub(super) fn tombstone_name(seq: u64) -> String {
    format!("a-{seq:012}.json")
}

pub(super) fn file_name(seq: u64) -> String {
    format!("w-{seq:012}.json")
}

pub(super) fn parse_entry(seq: u64, text: String) -> Option<Entry> {
    let v: Value = serde_json::from_str(&text).ok()?;
    let act_id = v.get("act_id")?.as_str()?.to_string();
    let kind = Kind::from_act(v.get("act")?.as_str()?)?;
    let key = dedup_key(kind, &v);
    let refers = refers(kind, &v);
    Some(Entry { seq, act_id, kind, text: text.into(), durability: Durability::OnDisk, key, refers })
}
