//! The durable warning outbox (PROTOCOL.md §7): one file per warning in
//! `<state_dir>/spool/`, written to a temp name, fsynced, renamed and the directory fsynced
//! before anyone is told about it. A file is deleted only when the gateway acknowledges its
//! `act_id`.
//!
//! When the state filesystem is full or read-only, a warning is kept in memory and still
//! sent; the error is logged once and the spool writes it out when it can again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

/// One unacknowledged warning: its creation number, `act_id` and the exact text to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub act_id: String,
    pub text: String,
    /// `false` while only in memory (the write failed).
    pub on_disk: bool,
}

/// Something wrong found in the spool directory; reported at error level by the caller,
/// the agent goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

pub struct Spool {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// In creation order.
    entries: Vec<Entry>,
    next_seq: u64,
    /// A write or delete failed and has not succeeded since: log only the first.
    failing: bool,
}

impl Spool {
    /// Opens (creating) `<state_dir>/spool`. Corrupt files are renamed to `*.corrupt` and
    /// returned as problems; leftover temp files of an interrupted write are removed.
    pub fn open(state_dir: &Path) -> io::Result<(Spool, Vec<Problem>)> {
        let dir = state_dir.join("spool");
        let mut problems = Vec::new();
        let mut entries = Vec::new();
        // On a read-only state file system there may be no spool yet: start empty in memory;
        // writes create the directory once they can.
        let mut names: Vec<String> = match fs::create_dir_all(&dir).and_then(|()| fs::read_dir(&dir)) {
            Ok(rd) => rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
            Err(e) if !dir.exists() => {
                problems.push(Problem(format!("cannot create the warning spool {} ({e})", dir.display())));
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        names.sort();
        for name in names {
            let path = dir.join(&name);
            if name.starts_with(".tmp-") {
                // Never renamed into place: the warning it held was never reported as spooled
                // and is re-created by the monitor from the disk's state.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(seq) = name.strip_prefix("w-").and_then(|n| n.strip_suffix(".json")).and_then(|n| n.parse().ok())
            else {
                continue; // *.corrupt and anything else that is not ours
            };
            match fs::read_to_string(&path).ok().and_then(|t| parse_entry(seq, t)) {
                Some(e) => entries.push(e),
                None => {
                    let aside = dir.join(format!("{name}.corrupt"));
                    let moved = fs::rename(&path, &aside);
                    problems.push(Problem(format!(
                        "spool file {} is not a warning; {}",
                        path.display(),
                        match moved {
                            Ok(()) => format!("moved aside to {}", aside.display()),
                            Err(e) => format!("and could not be moved aside ({e})"),
                        }
                    )));
                }
            }
        }
        entries.sort_by_key(|e| e.seq);
        let next_seq = entries.last().map_or(1, |e| e.seq + 1);
        Ok((Spool { dir, inner: Mutex::new(Inner { entries, next_seq, failing: false }) }, problems))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a warning (the full message; its `act_id` is read from it). It is on disk when
    /// this returns `true`; in memory only (and still sent) when `false`.
    pub fn push(&self, warning: &Value) -> bool {
        let act_id = warning["act_id"].as_str().unwrap_or_default().to_string();
        let text = warning.to_string();
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let on_disk = self.write(&mut inner, seq, &text);
        inner.entries.push(Entry { seq, act_id, text, on_disk });
        on_disk
    }

    /// Writes out warnings that could only be kept in memory; call from time to time.
    pub fn catch_up(&self) {
        let mut inner = self.lock();
        let pending: Vec<(u64, String)> =
            inner.entries.iter().filter(|e| !e.on_disk).map(|e| (e.seq, e.text.clone())).collect();
        for (seq, text) in pending {
            if !self.write(&mut inner, seq, &text) {
                return;
            }
            if let Some(e) = inner.entries.iter_mut().find(|e| e.seq == seq) {
                e.on_disk = true;
            }
        }
    }

    fn write(&self, inner: &mut Inner, seq: u64, text: &str) -> bool {
        match fs::create_dir_all(&self.dir).and_then(|()| write_durably(&self.dir, &file_name(seq), text.as_bytes())) {
            Ok(()) => {
                if std::mem::take(&mut inner.failing) {
                    log::info!("the warning spool in {} is writable again", self.dir.display());
                }
                true
            }
            Err(e) => {
                if !std::mem::replace(&mut inner.failing, true) {
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

    /// Unacknowledged warnings in creation order.
    pub fn unacked(&self) -> Vec<Entry> {
        self.lock().entries.clone()
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a message with this `act_id` is waiting.
    pub fn contains(&self, act_id: &str) -> bool {
        self.lock().entries.iter().any(|e| e.act_id == act_id)
    }

    /// The gateway acknowledged `act_id`: forget it and delete its file. `false` when no
    /// such warning is waiting (a duplicate ack).
    pub fn ack(&self, act_id: &str) -> bool {
        let mut inner = self.lock();
        let Some(i) = inner.entries.iter().position(|e| e.act_id == act_id) else { return false };
        let e = inner.entries.remove(i);
        if e.on_disk {
            let removed = fs::remove_file(self.dir.join(file_name(e.seq))).and_then(|()| sync_dir(&self.dir));
            if let Err(err) = removed
                && err.kind() != io::ErrorKind::NotFound
            {
                // The gateway drops duplicates by act_id: a resend after a restart is harmless.
                log::warn!("acknowledged warning {act_id} could not be deleted from the spool ({err})");
            }
        }
        true
    }
}

fn file_name(seq: u64) -> String {
    format!("w-{seq:012}.json")
}

fn parse_entry(seq: u64, text: String) -> Option<Entry> {
    let v: Value = serde_json::from_str(&text).ok()?;
    let act_id = v.get("act_id")?.as_str()?.to_string();
    // The outbox holds warnings and the results of `write` actions (PROTOCOL.md §8).
    matches!(v.get("act")?.as_str()?, "warning" | "action_result").then_some(Entry { seq, act_id, text, on_disk: true })
}

/// Temp name, write, fsync, rename, fsync the directory: after this returns the file
/// survives a power cut, and a crash at any point leaves either nothing or the whole file.
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".tmp-{name}"));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn warning(act_id: &str) -> Value {
        json!({"from":"device","act":"warning","act_id":act_id,"disk":"/dev/sdl","reason":"missing"})
    }

    #[test]
    fn warnings_survive_a_reopen_in_creation_order() {
        let d = tempfile::tempdir().unwrap();
        let (s, p) = Spool::open(d.path()).unwrap();
        assert!(p.is_empty());
        for id in ["a-3", "a-1", "a-2"] {
            assert!(s.push(&warning(id)));
        }
        drop(s);
        let (s, _) = Spool::open(d.path()).unwrap();
        let ids: Vec<String> = s.unacked().into_iter().map(|e| e.act_id).collect();
        assert_eq!(ids, ["a-3", "a-1", "a-2"], "creation order, not id order");
        assert_eq!(serde_json::from_str::<Value>(&s.unacked()[0].text).unwrap(), warning("a-3"));
    }

    #[test]
    fn an_ack_deletes_exactly_that_warning() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(d.path()).unwrap();
        s.push(&warning("x-1"));
        s.push(&warning("x-2"));
        assert!(s.ack("x-1"));
        assert!(!s.ack("x-1"), "a duplicate ack finds nothing");
        assert!(!s.ack("unknown"));
        let (s, _) = Spool::open(d.path()).unwrap();
        assert_eq!(s.unacked().len(), 1);
        assert_eq!(s.unacked()[0].act_id, "x-2");
        assert!(s.push(&warning("x-3")));
        assert!(s.unacked()[1].seq > s.unacked()[0].seq, "numbering continues after a reopen");
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_reported() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(d.path()).unwrap();
        s.push(&warning("ok-1"));
        drop(s);
        fs::write(d.path().join("spool/w-000000000007.json"), "{\"act\":\"warn").unwrap();
        fs::write(d.path().join("spool/.tmp-w-000000000008.json"), "half").unwrap();
        let (s, problems) = Spool::open(d.path()).unwrap();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].0.contains("moved aside"), "{problems:?}");
        assert!(d.path().join("spool/w-000000000007.json.corrupt").exists());
        assert!(!d.path().join("spool/.tmp-w-000000000008.json").exists(), "half-written temp removed");
        assert_eq!(s.len(), 1);
        let (_, again) = Spool::open(d.path()).unwrap();
        assert!(again.is_empty(), "reported once, not on every start");
    }

    #[test]
    fn an_unwritable_spool_keeps_warnings_in_memory_and_catches_up() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(d.path()).unwrap();
        // Replace the spool directory with a file: every write now fails.
        let spool = d.path().join("spool");
        fs::remove_dir(&spool).unwrap();
        fs::write(&spool, "not a directory").unwrap();
        assert!(!s.push(&warning("m-1")));
        assert_eq!(s.unacked()[0].act_id, "m-1", "still there to be sent");
        assert!(!s.unacked()[0].on_disk);
        fs::remove_file(&spool).unwrap();
        fs::create_dir(&spool).unwrap();
        s.catch_up();
        assert!(s.unacked()[0].on_disk);
        let (reopened, _) = Spool::open(d.path()).unwrap();
        assert_eq!(reopened.unacked()[0].act_id, "m-1");
    }
}
