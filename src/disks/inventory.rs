//! What the disk monitor remembers across restarts, in `<state_dir>/disks.json`: the disks
//! it has seen (so one that vanished while the agent was down is still reported), what the
//! rules compare against (error counter, read-write filesystems), and the open failure
//! episodes (so an acknowledged one is not reported again).
//!
//! An episode is `reported` once its warning was durably in the spool or acknowledged. At
//! start, a reported episode whose warning is no longer in the spool was acknowledged; one
//! not reported whose warning is not in the spool (the spool was unwritable, the agent
//! stopped before the ack) is raised again with the same `act_id`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::episodes::ledger::Ledger;

use crate::os::durable::write_durably;
use crate::os::state_file;

const FILE: &str = "disks.json";

/// The largest inventory read back: a few hundred bytes per disk.
pub(crate) const FILE_CAP: u64 = 4 << 20;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remembered {
    pub serial: Option<String>,
    pub model: Option<String>,
    pub size_bytes: Option<u64>,
    pub ioerr_count: Option<u64>,
    /// Mountpoints of this disk last seen mounted read-write.
    pub rw_mounts: Vec<String>,
    /// The transient `device/state` (an NVMe reset) the last scan saw, if any: one that is
    /// still there at the next scan is raised. Not saved: after a restart it takes one more
    /// scan.
    pub unsettled_state: Option<String>,
    /// Predictive SMART counters as first seen for this serial: the baseline a rise is
    /// measured from.
    pub smart_baseline: Option<SmartBaseline>,
    /// ext4 `errors_count` per filesystem device as first seen (or after a reset).
    pub fs_errors: BTreeMap<String, u64>,
}

/// What a disk's predictive SMART counters were when first seen; a rise above them is
/// `smart_degrading`. Tied to the serial: another disk at the same name starts over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmartBaseline {
    pub serial: Option<String>,
    /// Counter name (`"5"`, `"197"`, `"media_errors"`) to raw value.
    pub counters: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub disks: BTreeMap<String, Remembered>,
    /// The disks' failure episodes, open and closing.
    pub episodes: Ledger,
}

impl Inventory {
    /// Loads the inventory; a missing file is an empty inventory. A corrupt one is renamed
    /// to `disks.json.corrupt` and the message for an error-level log line is returned with
    /// an empty inventory: the agent goes on.
    pub fn load(state_dir: &Path) -> (Inventory, Option<String>) {
        let (inv, problem) = state_file::load(state_dir, FILE, FILE_CAP, "disk inventory", Inventory::from_json);
        (inv.unwrap_or_default(), problem)
    }

    /// Writes the inventory durably (temp, fsync, rename).
    pub(crate) fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        write_durably(state_dir, FILE, self.to_json().to_string().as_bytes())
    }

    pub(crate) fn to_json(&self) -> Value {
        let disks: serde_json::Map<String, Value> = self
            .disks
            .iter()
            .map(|(n, r)| {
                (
                    n.clone(),
                    json!({"serial": r.serial, "model": r.model, "size_bytes": r.size_bytes,
                                   "ioerr_count": r.ioerr_count, "rw_mounts": r.rw_mounts,
                                   "smart_baseline": r.smart_baseline.as_ref().map(|b| json!({"serial": b.serial, "counters": b.counters})),
                                   "fs_errors": r.fs_errors}),
                )
            })
            .collect();
        // Version 1 still: an earlier agent (a rolled-back update) reads the disks and the
        // open episodes it knows, and ignores `closing`.
        let mut v = json!({"version": 1, "disks": disks});
        self.episodes.put(&mut v);
        v
    }

    pub(crate) fn from_json(v: &Value) -> Option<Inventory> {
        if v["version"].as_u64()? != 1 {
            return None;
        }
        let s = |x: &Value| x.as_str().map(str::to_string);
        // Absent in files written before the agent kept baselines: empty, not corrupt.
        let counters = |x: &Value| -> BTreeMap<String, u64> {
            x.as_object()
                .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect())
                .unwrap_or_default()
        };
        let mut disks = BTreeMap::new();
        for (name, d) in v["disks"].as_object()? {
            let rw_mounts = d["rw_mounts"].as_array()?.iter().map(s).collect::<Option<Vec<_>>>()?;
            disks.insert(
                name.clone(),
                Remembered {
                    serial: s(&d["serial"]),
                    model: s(&d["model"]),
                    size_bytes: d["size_bytes"].as_u64(),
                    ioerr_count: d["ioerr_count"].as_u64(),
                    rw_mounts,
                    unsettled_state: None,
                    smart_baseline: d["smart_baseline"].is_object().then(|| SmartBaseline {
                        serial: s(&d["smart_baseline"]["serial"]),
                        counters: counters(&d["smart_baseline"]["counters"]),
                    }),
                    fs_errors: counters(&d["fs_errors"]),
                },
            );
        }
        Some(Inventory { disks, episodes: Ledger::get(v)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episodes::episode::{Closing, Episode};
    use crate::episodes::reason::Reason;
    use crate::protocol::Timestamp;

    fn sample() -> Inventory {
        let mut inv = Inventory::default();
        inv.disks.insert(
            "sdl".into(),
            Remembered {
                serial: Some("ZA1B2C3D".into()),
                model: None,
                size_bytes: Some(8),
                ioerr_count: Some(3),
                rw_mounts: vec!["/data".into()],
                unsettled_state: None,
                smart_baseline: Some(SmartBaseline {
                    serial: Some("ZA1B2C3D".into()),
                    counters: BTreeMap::from([("5".into(), 8), ("197".into(), 0)]),
                }),
                fs_errors: BTreeMap::from([("sdl1".into(), 2)]),
            },
        );
        inv.episodes.open.push(Episode {
            subject: "sdl".into(),
            reason: Reason::Missing,
            act_id: "9f3a61c2-12".into(),
            since: Timestamp::exact(1_764_000_000),
            detail: "block device sdl disappeared".into(),
            reported: false,
        });
        inv.episodes.closing.push(Closing {
            episode: Episode {
                subject: "sdm".into(),
                reason: Reason::Offline,
                act_id: "9f3a61c2-10".into(),
                since: Timestamp { secs: 1_763_999_000, suspect: true },
                detail: "device/state of sdm is \"offline\"".into(),
                reported: true,
            },
            act_id: "9f3a61c2-13".into(),
            time: Timestamp::exact(1_764_000_100),
            detail: "device/state of sdm is \"running\" again".into(),
            reported: false,
        });
        inv
    }

    #[test]
    fn the_inventory_round_trips_through_its_file() {
        let d = tempfile::tempdir().unwrap();
        sample().save(d.path()).unwrap();
        let (inv, problem) = Inventory::load(d.path());
        assert_eq!(problem, None);
        assert_eq!(inv, sample());
    }

    #[test]
    fn an_episode_from_a_file_without_the_reported_flag_counts_as_reported() {
        // Earlier versions saved an episode only after its warning was spooled.
        let v = json!({"version": 1, "disks": {}, "episodes": [
            {"disk": "sdl", "reason": "missing", "act_id": "a-1", "since": 5}]});
        let inv = Inventory::from_json(&v).unwrap();
        assert!(inv.episodes.open[0].reported);
        assert_eq!(inv.episodes.open[0].detail, "");
        assert!(inv.episodes.closing.is_empty());
    }

    #[test]
    fn no_file_is_an_empty_inventory() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Inventory::load(d.path()), (Inventory::default(), None));
    }

    #[test]
    fn a_corrupt_inventory_is_moved_aside_and_reported() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), "{\"version\":1,\"disks\":{\"sda\":").unwrap();
        let (inv, problem) = Inventory::load(d.path());
        assert_eq!(inv, Inventory::default());
        assert!(problem.unwrap().contains("corrupt"));
        assert!(d.path().join("disks.json.corrupt").exists());
        assert!(!d.path().join(FILE).exists());
    }
}
