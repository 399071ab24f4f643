//! Kernel I/O-error storms: a disk that keeps erroring logs thousands of lines; it is one
//! failure episode, open while errors keep coming and ended by a quiet period
//! (`disks.io_error_quiet`) without any.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Storm {
    /// The first kernel line of the storm, escaped and capped: the warning's evidence.
    first_line: String,
    last: Instant,
    lines: u64,
}

/// Open storms by disk. Only monitored disks are noted, so this is bounded by their number.
#[derive(Debug, Clone)]
pub struct Storms {
    quiet: Duration,
    by_disk: BTreeMap<String, Storm>,
}

impl Storms {
    pub fn new(quiet: Duration) -> Storms {
        Storms { quiet, by_disk: BTreeMap::new() }
    }

    pub fn set_quiet(&mut self, quiet: Duration) {
        self.quiet = quiet;
    }

    /// Takes in one error line for `disk`; true when it starts a new storm (the monitor
    /// scans at once so the warning goes out now).
    pub fn note(&mut self, disk: &str, line: &str, now: Instant) -> bool {
        self.expire(now);
        match self.by_disk.get_mut(disk) {
            Some(s) => {
                s.last = now;
                s.lines += 1;
                false
            }
            None => {
                self.by_disk.insert(disk.to_string(), Storm { first_line: line.to_string(), last: now, lines: 1 });
                true
            }
        }
    }

    /// Keeps a storm open for a quiet period from `now` without a line of its own: an
    /// episode taken over from before a restart is not closed by the restart alone.
    pub fn resume(&mut self, disk: &str, detail: &str, now: Instant) {
        self.by_disk.entry(disk.to_string()).or_insert(Storm { first_line: detail.to_string(), last: now, lines: 0 });
    }

    fn expire(&mut self, now: Instant) {
        let quiet = self.quiet;
        self.by_disk.retain(|_, s| now.saturating_duration_since(s.last) < quiet);
    }

    /// The storms still open at `now`: (disk, first line, lines seen).
    pub fn open(&mut self, now: Instant) -> Vec<(String, String, u64)> {
        self.expire(now);
        self.by_disk.iter().map(|(d, s)| (d.clone(), s.first_line.clone(), s.lines)).collect()
    }

    /// When the next storm ends if no line comes: the monitor looks again then.
    pub fn next_end(&self) -> Option<Instant> {
        self.by_disk.values().map(|s| s.last + self.quiet).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_is_one_episode_until_a_quiet_period_passes() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut st = Storms::new(s(600));
        assert!(st.note("sda", "I/O error, dev sda, sector 8", t0));
        for i in 1..10_000u64 {
            assert!(!st.note("sda", "later line", t0 + Duration::from_millis(i)));
        }
        let open = st.open(t0 + s(11));
        assert_eq!(open, [("sda".to_string(), "I/O error, dev sda, sector 8".to_string(), 10_000)]);
        assert_eq!(st.next_end(), Some(t0 + Duration::from_millis(9_999) + s(600)));
        assert!(!st.note("sda", "still", t0 + s(500)), "errors 500 s apart keep the storm open");
        assert_eq!(st.open(t0 + s(1099)).len(), 1);
        assert!(st.open(t0 + s(1100)).is_empty(), "600 s without a line end it");
        assert!(st.note("sda", "again", t0 + s(1200)), "a later error is a new storm");
    }

    #[test]
    fn disks_storm_independently() {
        let t0 = Instant::now();
        let mut st = Storms::new(Duration::from_secs(10));
        assert!(st.note("sda", "a", t0));
        assert!(st.note("nvme0n1", "b", t0 + Duration::from_secs(5)));
        let open: Vec<String> = st.open(t0 + Duration::from_secs(12)).into_iter().map(|o| o.0).collect();
        assert_eq!(open, ["nvme0n1"]);
    }
}
