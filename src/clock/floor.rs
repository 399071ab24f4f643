//! The time floor: a lower bound of the real time that a board without a battery-backed
//! clock can still trust at 1970. It is the newest of what the agent knows has passed (the
//! binary's build time, the last time it saw the gateway verified), carried forward on the
//! monotonic clock, which a jump of the wall clock does not move. Pure: the system time and
//! the monotonic instant come in as arguments, so the tests use a fake clock.

use std::time::{Duration, Instant};

/// How far below the floor the system clock may read before it is called wrong. An NTP step
/// back of a few seconds or minutes (a clock that ran a little fast when the floor was
/// recorded) is not worth a warning; the floor is still used where it is higher.
pub(crate) const SLACK: Duration = Duration::from_secs(300);

/// Where the floor's value came from, for the message that explains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorSource {
    /// This binary's build time.
    Build,
    /// The last time the agent saw the gateway verified (this run, or the record it kept).
    Verified,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Floor {
    /// Since the Unix epoch, as of `at`.
    base: Duration,
    at: Instant,
    source: FloorSource,
}

/// The clock at one moment: the system's, the floor, and the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// The system clock, since the Unix epoch (zero for a clock before 1970).
    pub system: Duration,
    pub floor: Duration,
    pub source: FloorSource,
    /// The system clock is more than [`SLACK`] below the floor: it is wrong.
    pub suspect: bool,
}

impl Reading {
    /// The time the agent uses: the system clock, or the floor where that is higher.
    pub fn corrected(&self) -> Duration {
        self.system.max(self.floor)
    }

    /// How far the system clock is behind the floor (at least: the floor is a lower bound).
    pub fn behind(&self) -> Duration {
        self.floor.saturating_sub(self.system)
    }
}

impl Floor {
    /// The floor from the build time and the kept record (`recorded`), at `now`.
    pub(crate) fn new(build: Duration, recorded: Option<Duration>, now: Instant) -> Floor {
        match recorded {
            Some(r) if r > build => Floor { base: r, at: now, source: FloorSource::Verified },
            _ => Floor { base: build, at: now, source: FloorSource::Build },
        }
    }

    /// The floor at `now`: it moves on with the monotonic clock (which stands still in
    /// suspend, so it stays a lower bound).
    pub(crate) fn at(&self, now: Instant) -> Duration {
        self.base + now.saturating_duration_since(self.at)
    }

    pub(crate) fn source(&self) -> FloorSource {
        self.source
    }

    /// Reads the clock: `system` is the system clock at `now`.
    pub(crate) fn read(&self, system: Duration, now: Instant) -> Reading {
        let floor = self.at(now);
        Reading { system, floor, source: self.source, suspect: system + SLACK < floor }
    }

    /// The gateway was seen verified at `time` (the corrected time then): the floor moves up
    /// to it, never down.
    pub(crate) fn raise(&mut self, time: Duration, now: Instant) {
        if time > self.at(now) {
            *self = Floor { base: time, at: now, source: FloorSource::Verified };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILD: Duration = Duration::from_secs(1_764_000_000);
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_clock_at_1970_reads_the_floor_which_moves_on_with_monotonic_time() {
        let t0 = Instant::now();
        let f = Floor::new(BUILD, None, t0);
        let r = f.read(Duration::from_secs(12), t0);
        assert!(r.suspect);
        assert_eq!((r.corrected(), r.source), (BUILD, FloorSource::Build));
        assert_eq!(r.behind(), BUILD - Duration::from_secs(12));
        let later = f.read(Duration::from_secs(12) + HOUR, t0 + HOUR);
        assert_eq!(later.corrected(), BUILD + HOUR, "an hour later by the monotonic clock");
    }

    #[test]
    fn the_newest_of_build_time_and_record_wins_and_the_floor_only_moves_up() {
        let t0 = Instant::now();
        let f = Floor::new(BUILD, Some(BUILD - HOUR), t0);
        assert_eq!((f.at(t0), f.source), (BUILD, FloorSource::Build), "an older record loses");
        let mut f = Floor::new(BUILD, Some(BUILD + 24 * HOUR), t0);
        assert_eq!((f.at(t0), f.source), (BUILD + 24 * HOUR, FloorSource::Verified));
        f.raise(BUILD, t0 + HOUR);
        assert_eq!(f.at(t0 + HOUR), BUILD + 25 * HOUR, "never down");
        f.raise(BUILD + 48 * HOUR, t0 + HOUR);
        assert_eq!(f.at(t0 + 2 * HOUR), BUILD + 49 * HOUR);
    }

    #[test]
    fn a_right_clock_or_one_a_little_behind_is_not_called_wrong_and_jumps_are_judged_at_once() {
        let t0 = Instant::now();
        let f = Floor::new(BUILD, None, t0);
        let now = BUILD + 90 * 24 * HOUR;
        assert!(!f.read(now, t0).suspect);
        assert_eq!(f.read(now, t0).corrected(), now);
        let slow = f.read(BUILD - SLACK + Duration::from_secs(1), t0);
        assert!(!slow.suspect && slow.corrected() == BUILD, "within the slack: not wrong, the floor still used");
        // NTP jumps forwards: fine at once; backwards by hours below the floor: wrong at once.
        assert!(!f.read(now + 5 * HOUR, t0 + HOUR).suspect);
        assert!(f.read(BUILD - 5 * HOUR, t0 + HOUR).suspect);
    }
}
