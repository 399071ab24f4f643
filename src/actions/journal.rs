//! What must survive a restart or `kill -9` about actions, in `<state_dir>/actions/`:
//!
//! - `run-<run_id>.json`: a `write` run in progress, written durably before its command
//!   starts and deleted by the outbox's storage thread once its result is on disk or
//!   acknowledged, before the result's file is deleted. One found at start whose result is
//!   not in the outbox is a run the agent lost; it is reported as interrupted.
//! - `last-<action>`: when the action last started (Unix ms of the agent's corrected clock,
//!   followed by ` suspect` when the system clock was wrong then), so that `min_interval`
//!   holds across restarts: a rig the console rebooted must not be rebooted again as soon as
//!   it is back. Within a run the interval is measured on the monotonic clock, which a jump
//!   of the wall clock does not move; this record is for the next run only.
//!
//! All writes happen on the action's own thread or the outbox's storage thread, never on the
//! socket thread.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

    /// `suspect`: the clock was wrong, so the time is only a lower bound.
    pub fn record_start(&self, action: &str, unix_ms: u64, suspect: bool) -> io::Result<()> {
        let text = if suspect { format!("{unix_ms} suspect") } else { unix_ms.to_string() };
        self.write(&format!("last-{action}"), text.as_bytes())
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

    /// How long ago each action last started, by name, judged at `now_ms` (corrected Unix
    /// ms); unreadable entries are skipped (the worst case is one run that `min_interval`
    /// would have refused).
    ///
    /// The rule for a wall clock that was wrong: a start recorded while the clock was known
    /// wrong (a board at 1970, its time only a lower bound) or later than now (the clock
    /// was ahead then and jumped back since) counts as having happened just now, so its
    /// `min_interval` runs in full from this start of the agent; never less, and never a
    /// lock-out until a date that the clock got wrong.
    pub fn last_starts(&self, now_ms: u64) -> HashMap<String, Duration> {
        self.names()
            .into_iter()
            .filter_map(|n| {
                let action = n.strip_prefix("last-")?.to_string();
                let text = read_small(&self.dir.join(&n))?;
                let mut words = text.split_whitespace();
                let ms: u64 = words.next()?.parse().ok()?;
                let suspect = words.next() == Some("suspect");
                let ago = if suspect { 0 } else { now_ms.saturating_sub(ms) };
                Some((action, Duration::from_millis(ago)))
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
        j.record_start("reboot", 1234, false).unwrap();
        let j = Journal::new(d.path());
        assert_eq!(j.leftovers(), vec![Ok(r)]);
        assert_eq!(j.last_starts(1500).get("reboot"), Some(&Duration::from_millis(266)));
        j.clear_running("ab-1").unwrap();
        assert!(j.clear_running("../../etc/x").is_err(), "a run id that is a path is refused");
        assert!(j.leftovers().is_empty());
        fs::write(d.path().join("actions/run-zz.json"), "{half").unwrap();
        assert_eq!(j.leftovers(), vec![Err("run-zz.json".to_string())]);
    }

    #[test]
    fn a_start_recorded_with_a_wrong_clock_or_in_the_future_counts_as_just_now() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::new(d.path());
        // Recorded at a board's floor (1970 on its clock), read after NTP set it: however
        // far the floor is behind, the start may have been a minute ago.
        j.record_start("reboot", 1_700_000_000_000, true).unwrap();
        // Recorded while the clock ran a day ahead, read after it was set back.
        j.record_start("restart_miner", 1_800_000_000_000, false).unwrap();
        j.record_start("flash", 1_799_999_000_000, false).unwrap();
        let ago = j.last_starts(1_799_999_999_000);
        assert_eq!(ago["reboot"], Duration::ZERO);
        assert_eq!(ago["restart_miner"], Duration::ZERO);
        assert_eq!(ago["flash"], Duration::from_secs(999));
    }
}
