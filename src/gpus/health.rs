//! The monitor's GPU verdicts as the query side reads them: which GPUs are in an open
//! failure episode, and how many Xid records the kernel logged for each since the agent
//! started (the application Xids included, which are never warned). A leaf that both the
//! monitor (which publishes) and the probes (which answer `get_gpu_info`) import.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::episodes::ledger::Ledger;
use crate::episodes::reason::Reason;
use crate::gpus::inventory::MAX_GPUS;

/// Distinct Xid codes counted per GPU; the kernel's codes are below 200 today.
const MAX_CODES: usize = 256;

#[derive(Debug, Default)]
pub struct GpuHealth {
    inner: Mutex<Verdicts>,
}

#[derive(Debug, Default, Clone)]
struct Verdicts {
    failing: HashMap<String, Reason>,
    /// By bus id, then Xid code: records seen.
    xids: BTreeMap<String, BTreeMap<u32, u64>>,
}

impl GpuHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, Verdicts> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reason of the GPU's open failure episode, if it has one.
    pub fn failing(&self, bus: &str) -> Option<Reason> {
        self.lock().failing.get(bus).copied()
    }

    /// Xid records seen for the GPU at `bus` since the agent started, by code.
    pub fn xids(&self, bus: &str) -> BTreeMap<u32, u64> {
        self.lock().xids.get(bus).cloned().unwrap_or_default()
    }

    /// Counts `records` Xid records of `code` for `bus`. Bounded: at most as many GPUs as
    /// the inventory holds, and [`MAX_CODES`] codes each.
    pub(crate) fn count_xid(&self, bus: &str, code: u32, records: u64) {
        let mut v = self.lock();
        if !v.xids.contains_key(bus) && v.xids.len() >= MAX_GPUS {
            return;
        }
        let codes = v.xids.entry(bus.to_string()).or_default();
        if codes.contains_key(&code) || codes.len() < MAX_CODES {
            let n = codes.entry(code).or_default();
            *n = n.saturating_add(records);
        }
    }

    pub(crate) fn publish(&self, episodes: &Ledger) {
        self.lock().failing = episodes.open.iter().rev().map(|e| (e.subject.clone(), e.reason)).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xids_are_counted_per_gpu_and_code_and_the_counts_are_bounded() {
        let h = GpuHealth::default();
        h.count_xid("0000:01:00.0", 13, 1);
        h.count_xid("0000:01:00.0", 13, 40);
        h.count_xid("0000:01:00.0", 43, 1);
        h.count_xid("0000:02:00.0", 79, 1);
        assert_eq!(h.xids("0000:01:00.0"), BTreeMap::from([(13, 41), (43, 1)]));
        assert_eq!(h.xids("0000:03:00.0"), BTreeMap::new());
        for i in 0..MAX_GPUS as u32 + 5 {
            h.count_xid(&format!("0001:{i:02x}:00.0"), 13, 1);
        }
        assert_eq!(h.lock().xids.len(), MAX_GPUS);
        h.count_xid("0000:01:00.0", 13, u64::MAX);
        assert_eq!(h.xids("0000:01:00.0")[&13], u64::MAX);
    }
}
