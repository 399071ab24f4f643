//! The disk monitor's verdicts as the query side reads them: a leaf that both the monitor
//! (which publishes) and the probes (which answer `get_disk_info`) import, so neither
//! imports the other for it.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::disks::inventory::{Inventory, Remembered};
use crate::episodes::reason::Reason;

/// A disk's `health` in `get_disk_info` (PROTOCOL.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// A failure other than the disk being gone.
    Failed,
    /// Gone: known from earlier scans and no longer in `/sys/block`, or still there with
    /// size 0 (a detached loop device, a pulled disk whose node lingers). Its `reason` is
    /// `missing` too, as the warning's.
    Missing,
    /// Neither its state nor SMART says (a virtio disk).
    Unknown,
}

impl Health {
    /// The health a failure of this reason gives.
    pub fn of_failure(reason: Reason) -> Health {
        if reason == Reason::Missing { Health::Missing } else { Health::Failed }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Failed => "failed",
            Health::Missing => "missing",
            Health::Unknown => "unknown",
        }
    }
}

/// The monitor's verdicts, for `get_disk_info`: which disks are in an open failure episode
/// and which known disks are gone.
#[derive(Debug, Default)]
pub struct DiskHealth {
    inner: Mutex<Verdicts>,
}

#[derive(Debug, Default, Clone)]
struct Verdicts {
    failing: HashMap<String, Reason>,
    missing: Vec<(String, Remembered)>,
}

impl DiskHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, Verdicts> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reason of the disk's open failure episode, if it has one.
    pub fn failing(&self, disk: &str) -> Option<Reason> {
        self.lock().failing.get(disk).cloned()
    }

    /// Disks known from earlier scans that are gone from `/sys/block`.
    pub fn missing(&self) -> Vec<(String, Remembered)> {
        self.lock().missing.clone()
    }

    pub(crate) fn publish(&self, inv: &Inventory, present: &[String]) {
        let mut v = self.lock();
        v.failing = inv.episodes.open.iter().rev().map(|e| (e.subject.clone(), e.reason)).collect();
        v.missing =
            inv.disks.iter().filter(|(n, _)| !present.contains(n)).map(|(n, r)| (n.clone(), r.clone())).collect();
    }
}
