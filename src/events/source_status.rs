//! Whether each event source is live, shared with `get_agent_info` and the logs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

/// A source's state for `get_agent_info` and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceState {
    Starting,
    Live,
    /// Live, the records coming from the privileged half (the agent's unit may not read
    /// the kernel log itself).
    LivePrivileged,
    /// Not running; the reason (escaped) says why. Scans still run.
    Off(String),
}

impl SourceState {
    fn to_json(&self) -> Value {
        match self {
            SourceState::Starting => json!("starting"),
            SourceState::Live => json!("live"),
            SourceState::LivePrivileged => json!("live (privileged half)"),
            SourceState::Off(why) => json!(format!("off: {why}")),
        }
    }
}

/// Shared view of the sources, for `get_agent_info`.
#[derive(Debug)]
pub struct SourcesStatus {
    pub(super) kmsg: Mutex<SourceState>,
    pub(super) uevents: Mutex<SourceState>,
    pub(super) kmsg_lost: AtomicU64,
    pub(super) uevents_dropped: AtomicU64,
}

impl Default for SourcesStatus {
    fn default() -> SourcesStatus {
        SourcesStatus {
            kmsg: Mutex::new(SourceState::Starting),
            uevents: Mutex::new(SourceState::Starting),
            kmsg_lost: AtomicU64::new(0),
            uevents_dropped: AtomicU64::new(0),
        }
    }
}

pub(super) fn set(m: &Mutex<SourceState>, s: SourceState) {
    *m.lock().unwrap_or_else(|p| p.into_inner()) = s;
}

fn get(m: &Mutex<SourceState>) -> SourceState {
    m.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

impl SourcesStatus {
    pub fn kmsg(&self) -> SourceState {
        get(&self.kmsg)
    }

    pub fn uevents(&self) -> SourceState {
        get(&self.uevents)
    }

    /// `event_sources` in `get_agent_info`: `scan` is always on; `kmsg` and `uevents` are
    /// "live", "starting" or "off: <why>".
    pub fn to_json(&self) -> Value {
        json!({
            "scan": "live",
            "kmsg": self.kmsg().to_json(),
            "uevents": self.uevents().to_json(),
            "kmsg_lost_records": self.kmsg_lost.load(Ordering::Relaxed),
            "uevents_dropped": self.uevents_dropped.load(Ordering::Relaxed),
        })
    }
}
