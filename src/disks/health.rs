//! The disk monitor's verdicts as the query side reads them: a leaf that both the monitor
//! (which publishes) and the probes (which answer `get_disk_info`) import, so neither
//! imports the other for it.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::disks::inventory::{Inventory, Remembered};
use crate::disks::reason::Reason;

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

    pub(super) fn publish(&self, inv: &Inventory, present: &[String]) {
        let mut v = self.lock();
        v.failing = inv.episodes.iter().rev().map(|e| (e.disk.clone(), e.reason)).collect();
        v.missing =
            inv.disks.iter().filter(|(n, _)| !present.contains(n)).map(|(n, r)| (n.clone(), r.clone())).collect();
    }
}
