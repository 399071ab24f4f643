//! Reading the spool directory back at start: the waiting messages, the tombstones of
//! acknowledged ones, and what could not be read (moved aside as `*.corrupt`).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use serde_json::Value;

use super::storage::parse_entry;
use super::{ENTRY_CAP, Entry, Problem};
use crate::os::bounded_read::{self, Links};

/// What [`read_back`] found.
pub(super) struct Recovered {
    /// The messages still waiting, in creation order.
    pub entries: Vec<Entry>,
    /// The tombstones: creation number to act_id.
    pub tombstones: BTreeMap<u64, String>,
    /// The act_id and text of each tombstone.
    pub acked_at_open: Vec<(String, String)>,
    pub problems: Vec<Problem>,
}

/// Reads `dir` (creating it): leftover temp files of an interrupted write are removed,
/// corrupt files renamed to `*.corrupt` and returned as problems. On a read-only state file
/// system with no spool yet, starts empty (a problem says so).
pub(super) fn read_back(dir: &Path) -> io::Result<Recovered> {
    let mut problems = Vec::new();
    let mut entries = Vec::new();
    let mut tombstones = BTreeMap::new();
    let mut acked_at_open = Vec::new();
    // On a read-only state file system there may be no spool yet: start empty in memory;
    // writes create the directory once they can.
    let mut names: Vec<String> = match fs::create_dir_all(dir).and_then(|()| fs::read_dir(dir)) {
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
        if let Some(seq) = seq_of(&name, "a-") {
            // An acknowledged message whose episode may not be saved as reported yet.
            let read = bounded_read::read(&path, ENTRY_CAP, Links::Refuse).ok();
            let text = read.and_then(|c| String::from_utf8(c.bytes).ok());
            let act_id = text
                .as_deref()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
                .and_then(|v| Some(v.get("act_id")?.as_str()?.to_string()));
            match (act_id, text) {
                (Some(a), Some(text)) => {
                    tombstones.insert(seq, a.clone());
                    acked_at_open.push((a, text));
                }
                _ => {
                    let _ = fs::remove_file(&path);
                }
            }
            continue;
        }
        let Some(seq) = seq_of(&name, "w-") else {
            continue; // *.corrupt and anything else that is not ours
        };
        // A FIFO, a device or a link here must not hang or flood the start-up: it is
        // moved aside like any other file that is not a warning.
        let (entry, unreadable) = match bounded_read::read(&path, ENTRY_CAP, Links::Refuse) {
            Ok(c) => (String::from_utf8(c.bytes).ok().and_then(|t| parse_entry(seq, t)), None),
            Err(e) => (None, Some(e)),
        };
        match entry {
            Some(e) => entries.push(e),
            None => {
                let aside = dir.join(format!("{name}.corrupt"));
                let moved = fs::rename(&path, &aside);
                let what = match unreadable {
                    Some(e) => e.to_string(),
                    None => format!("spool file {} is not a warning", path.display()),
                };
                problems.push(Problem(format!(
                    "{what}; {}",
                    match moved {
                        Ok(()) => format!("moved aside to {}", aside.display()),
                        Err(e) => format!("and could not be moved aside ({e})"),
                    }
                )));
            }
        }
    }
    entries.sort_by_key(|e| e.seq);
    Ok(Recovered { entries, tombstones, acked_at_open, problems })
}

/// The largest creation number in a spool file's name: its 12 digits. The agent never
/// comes near it (a warning a second for 30 000 years); a larger one was not written by it
/// (a damaged directory entry, a file copied in by hand), and counting on from it would
/// overflow `u64` (a panic, or in a release build a wrap to 0 that breaks creation order).
const MAX_SEQ: u64 = 999_999_999_999;

/// The creation number of a spool file name `<prefix><n>.json`, when in range.
fn seq_of(name: &str, prefix: &str) -> Option<u64> {
    let seq: u64 = name.strip_prefix(prefix)?.strip_suffix(".json")?.parse().ok()?;
    (seq <= MAX_SEQ).then_some(seq)
}
