//! What must survive a restart or `kill -9` about actions, in `<state_dir>/actions/`:
//!
//! - `run-<run_id>.json`: a `write` run in progress, written durably before its command
//!   starts and deleted by the outbox's storage thread once its result is on disk or
//!   acknowledged, before the result's file is deleted. One found at start whose result is
//!   not in the outbox is a run the agent lost; it is reported as interrupted.
//! - `last-<action>`: when the action last started (Unix ms), so that `min_interval` holds
//!   across restarts: a rig the console rebooted must not be rebooted again as soon as it
//!   is back.
//!
//! All writes happen on the action's own thread or the outbox's storage thread, never on the
//! socket thread.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::os::durable::write_durably;

/// A `write` run the agent has accepted and not yet reported.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub action: String,
    /// Echoed from the request, as its answer echoes them (strings, PROTOCOL.md §2).
    pub act_code: String,
    pub client_id: String,
    pub started_at_ms: u64,
}

#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn new(state_dir: &Path) -> Journal {
        Journal { dir: state_dir.join("actions") }
    }

    /// Writes `name` durably: the file and its directory are fsynced, and the directory's
    /// own entry too when this creates it, so a power cut cannot lose a start time.
    fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        if !self.dir.is_dir() {
            fs::create_dir_all(&self.dir)?;
            if let Some(state_dir) = self.dir.parent() {
                fs::File::open(state_dir)?.sync_all()?;
            }
        }
        write_durably(&self.dir, name, bytes)
    }

    pub fn record_start(&self, action: &str, unix_ms: u64) -> io::Result<()> {
        self.write(&format!("last-{action}"), unix_ms.to_string().as_bytes())
    }

    pub fn mark_running(&self, r: &RunRecord) -> io::Result<()> {
        let v = json!({"run_id": r.run_id, "action": r.action, "act_code": r.act_code,
            "client_id": r.client_id, "started_at_ms": r.started_at_ms});
        self.write(&format!("run-{}.json", r.run_id), v.to_string().as_bytes())
    }

    /// Removes a run's marker. The outbox's storage thread calls this with the `act_id` of
    /// any action result in the spool: one that could name a path outside the journal is
    /// refused.
    pub fn clear_running(&self, run_id: &str) -> io::Result<()> {
        if run_id.is_empty() || run_id.contains(['/', '\0']) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a run id"));
        }
        match fs::remove_file(self.dir.join(format!("run-{run_id}.json"))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => fs::File::open(&self.dir)?.sync_all(),
        }
    }

    /// Last start times by action name; unreadable entries are skipped (the worst case is
    /// one run that `min_interval` would have refused).
    pub fn last_starts(&self) -> HashMap<String, u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.names()
            .into_iter()
            .filter_map(|n| {
                let action = n.strip_prefix("last-")?.to_string();
                let ms: u64 = read_small(&self.dir.join(&n))?.trim().parse().ok()?;
                // A start recorded while the clock was ahead (a board without an RTC before
                // NTP set it) counts as now, not as a lock-out until that date.
                Some((action, ms.min(now)))
            })
            .collect()
    }

    /// Runs that were in progress when the agent last stopped. Markers that cannot be read
    /// are returned as `Err(file name)` so the caller can log and remove them.
    pub fn leftovers(&self) -> Vec<Result<RunRecord, String>> {
        self.names()
            .into_iter()
            .filter(|n| n.starts_with("run-") && n.ends_with(".json"))
            .map(|n| {
                let parsed = read_small(&self.dir.join(&n)).and_then(|t| parse_record(&t));
                parsed.ok_or(n)
            })
            .collect()
    }

    /// Removes an unreadable marker found by [`Journal::leftovers`].
    pub fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.dir.join(name))
    }

    fn names(&self) -> Vec<String> {
        let Ok(rd) = fs::read_dir(&self.dir) else { return Vec::new() };
        let mut names: Vec<String> = rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        names.sort();
        names
    }
}

fn parse_record(text: &str) -> Option<RunRecord> {
    let v: Value = serde_json::from_str(text).ok()?;
    Some(RunRecord {
        run_id: v.get("run_id")?.as_str()?.to_string(),
        action: v.get("action")?.as_str()?.to_string(),
        // Always strings since they are echoed as strings; a marker of an older agent that
        // kept another JSON type is read the way a query's field would be echoed.
        act_code: crate::protocol::echo_text("act_code", Some(v.get("act_code")?)).0,
        client_id: crate::protocol::echo_text("client_id", Some(v.get("client_id")?)).0,
        started_at_ms: v.get("started_at_ms")?.as_u64()?,
    })
}

/// A journal file: a regular file (not a FIFO, not a link to /dev/zero) of at most 64 KiB,
/// or nothing. A bad one is skipped (a start time) or reported and removed (a marker).
fn read_small(path: &std::path::Path) -> Option<String> {
    crate::os::bounded_read::read_string(path, 64 << 10, crate::os::bounded_read::Links::Refuse).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_survives_until_cleared_and_start_times_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::new(d.path());
        let r = RunRecord {
            run_id: "ab-1".into(),
            action: "reboot".into(),
            act_code: "c1".into(),
            client_id: "u".into(),
            started_at_ms: 5,
        };
        j.mark_running(&r).unwrap();
        j.record_start("reboot", 1234).unwrap();
        let j = Journal::new(d.path());
        assert_eq!(j.leftovers(), vec![Ok(r)]);
        assert_eq!(j.last_starts().get("reboot"), Some(&1234));
        j.clear_running("ab-1").unwrap();
        assert!(j.clear_running("../../etc/x").is_err(), "a run id that is a path is refused");
        assert!(j.leftovers().is_empty());
        fs::write(d.path().join("actions/run-zz.json"), "{half").unwrap();
        assert_eq!(j.leftovers(), vec![Err("run-zz.json".to_string())]);
    }
}
