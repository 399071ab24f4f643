//! The wall clock as the agent trusts it. A board without a battery-backed clock boots at
//! 1970 until NTP sets it; rustls would then find every certificate "not valid yet" and
//! the rig could never connect. The agent keeps a time floor ([`floor`]): the newest of its
//! build time and the last time it saw the gateway verified, kept in the state directory as
//! `clock` and only ever moved forward. Certificates are verified at the floor when the
//! system clock is below it, warnings carry the floor and `time_suspect`, and the runner
//! says once per episode that the clock is wrong and what to do.
//!
//! What needs a duration (heartbeats, backoff, timeouts, `min_interval`, resend schedules,
//! episodes) runs on the monotonic clock (`Instant`), which NTP does not move; only what is
//! shown to people or the gateway as a date comes from here.
//!
//! The test seam: [`Clock::skew`] moves the system clock as this agent sees it, so an
//! in-process test plays a board at 1970, or an NTP jump, without touching the machine's
//! clock. Nothing in the binary calls it (`faketime` does the same to the real binary).

pub mod floor;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::UnixTime;

use crate::clock::floor::{Floor, FloorSource, Reading};
use crate::logging::utc_timestamp;
use crate::os::deferred_write::DeferredWriter;
use crate::os::state_file;
use crate::protocol::Timestamp;

/// The record's file name in the state directory.
pub const RECORD: &str = "clock";

/// How often the record is written while the floor moves on: a floor an hour old is as good
/// as a fresh one, and an SD card is not written at every reconnect.
const RECORD_EVERY: Duration = Duration::from_secs(3600);

/// How far past this binary's build time a record may be: further is no clock's reading
/// (a flipped bit, a stray write) and is moved aside like any corrupt record. Believed, it
/// overflowed the time types at the first reading (a crash at every start), or verified
/// certificates in a distant future for good.
const LATEST_RECORD: Duration = Duration::from_secs(100 * 366 * 86_400);

/// This binary's build time (`build.rs`: `SOURCE_DATE_EPOCH`, else the last commit's time,
/// else the time of the build), in Unix seconds.
pub fn build_time() -> Duration {
    Duration::from_secs(env!("RIG_AGENT_BUILD_TIME").parse().unwrap_or(0))
}

/// What the runner says when the clock's verdict changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockNews {
    /// The system clock is wrong: the line for the log and the note for `STATUS=`.
    Wrong { line: String, note: String },
    /// It is right again (NTP set it).
    Right { line: String },
}

#[derive(Debug)]
struct State {
    floor: Floor,
    /// What the record holds (as loaded or last handed to the writer).
    recorded: Option<Duration>,
    /// The verdict last said, `None` before the first.
    said: Option<bool>,
}

/// The agent's clock: the system's, judged against the floor.
#[derive(Debug)]
pub struct Clock {
    state: Mutex<State>,
    /// Where the record is kept, and who writes it (off the socket thread).
    record: Option<(PathBuf, DeferredWriter)>,
    /// Milliseconds added to the system clock: the test seam ([`Clock::skew`]); 0 in the agent.
    skew_ms: AtomicI64,
}

impl Clock {
    /// The clock with the record kept in `state_dir`: loaded now (bounded; a corrupt one is
    /// moved aside and the message for an error line returned), written by `writer`.
    pub fn load(state_dir: &Path, writer: DeferredWriter) -> (Clock, Option<String>) {
        let (recorded, problem) = state_file::load_bytes(state_dir, RECORD, 64, "the clock record", |b| {
            let secs = std::str::from_utf8(b).ok()?.trim().parse::<u64>().ok()?;
            (secs <= build_time().as_secs() + LATEST_RECORD.as_secs()).then(|| Duration::from_secs(secs))
        });
        (Clock::with(recorded, Some((state_dir.join(RECORD), writer))), problem)
    }

    /// A clock with the build time as its only floor and no record (`probe`, tests).
    pub fn unrecorded() -> Clock {
        Clock::with(None, None)
    }

    fn with(recorded: Option<Duration>, record: Option<(PathBuf, DeferredWriter)>) -> Clock {
        let floor = Floor::new(build_time(), recorded, Instant::now());
        Clock { state: Mutex::new(State { floor, recorded, said: None }), record, skew_ms: AtomicI64::new(0) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The system clock as this agent sees it.
    fn system(&self) -> Duration {
        let real = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let skew = self.skew_ms.load(Ordering::Relaxed);
        let d = Duration::from_millis(skew.unsigned_abs());
        if skew >= 0 { real + d } else { real.saturating_sub(d) }
    }

    /// The clock now: the system's, the floor, the verdict.
    pub fn read(&self) -> Reading {
        let system = self.system();
        self.state().floor.read(system, Instant::now())
    }

    /// Now, for a message: corrected Unix seconds, and whether the clock is wrong.
    pub fn stamp(&self) -> Timestamp {
        let r = self.read();
        Timestamp { secs: r.corrected().as_secs(), suspect: r.suspect }
    }

    /// Now in corrected Unix milliseconds, for a record that outlives the process, and
    /// whether the clock is wrong (the record should say so).
    pub fn stamp_ms(&self) -> (u64, bool) {
        let r = self.read();
        (u64::try_from(r.corrected().as_millis()).unwrap_or(u64::MAX), r.suspect)
    }

    /// The corrected time as a `SystemTime`, for dates shown to people (`STATUS=`'s
    /// "since"), so that a board at 1970 does not say "failing since 1970".
    pub fn wall(&self) -> SystemTime {
        UNIX_EPOCH + self.read().corrected()
    }

    /// Corrected Unix seconds (`get_agent_info`'s dates).
    pub fn unix_secs(&self) -> u64 {
        self.read().corrected().as_secs()
    }

    /// What rustls verifies certificates at: the corrected time.
    pub fn time_provider(self: &Arc<Self>) -> Arc<dyn rustls::time_provider::TimeProvider> {
        Arc::new(VerifyAt(Arc::clone(self)))
    }

    /// A verified TLS handshake now: the certificate vouched for the corrected time, so the
    /// floor moves up to it, and the record is handed to the writer when it is an hour
    /// behind.
    pub fn saw_verified(&self) {
        self.note_verified(true);
    }

    /// Frames on a verified session now: the floor, carried on by the monotonic clock since
    /// the handshake, is recorded when the record is an hour behind. The system clock does
    /// not raise it here: a clock that jumps ahead during a session (to 2100) was vouched for
    /// by no certificate, and a floor raised to it would outlive the jump, calling a right
    /// clock wrong and verifying certificates in 2100.
    pub fn session_alive(&self) {
        self.note_verified(false);
    }

    fn note_verified(&self, handshake: bool) {
        let (now, system) = (Instant::now(), self.system());
        let mut s = self.state();
        if handshake {
            let time = s.floor.read(system, now).corrected();
            s.floor.raise(time, now);
        }
        let time = s.floor.at(now);
        let Some((path, writer)) = &self.record else { return };
        if s.floor.source() == FloorSource::Verified && s.recorded.is_none_or(|r| time >= r + RECORD_EVERY) {
            s.recorded = Some(time);
            writer.put(path.clone(), format!("{}\n", time.as_secs()).into_bytes());
        }
    }

    /// The test seam: the system clock as this agent sees it moves by `by` (negative: back).
    /// A test plays a board at 1970 (`skew` by minus the time since 1970) or an NTP jump.
    pub fn skew(&self, by: Duration, forward: bool) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.skew_ms.fetch_add(if forward { ms } else { -ms }, Ordering::Relaxed);
    }

    /// The verdict's change since the last call, if any: said once per episode (the first
    /// call says a wrong clock, not a right one).
    pub fn news(&self) -> Option<ClockNews> {
        let r = self.read();
        let mut s = self.state();
        let before = s.said.replace(r.suspect);
        match (before, r.suspect) {
            (Some(true), true) | (Some(false) | None, false) => None,
            (_, true) => Some(ClockNews::Wrong { line: self.wrong_line(&r), note: wrong_note(&r) }),
            (Some(true), false) => Some(ClockNews::Right {
                line: format!(
                    "the system clock is right again ({}): certificates are verified at it, and warnings \
                     carry it",
                    utc_timestamp(UNIX_EPOCH + r.system)
                ),
            }),
        }
    }

    fn wrong_line(&self, r: &Reading) -> String {
        let source = match r.source {
            FloorSource::Build => "this binary's build time",
            FloorSource::Verified => "the last time it saw the gateway verified",
        };
        let record = self.record.as_ref().map_or(String::new(), |(path, _)| {
            format!(" If the clock is right, {} holds a time from a clock that ran ahead: remove it.", path.display())
        });
        format!(
            "the system clock is wrong: it reads {}, at least {} behind {} ({}) that this agent knows has \
             passed. The gateway's certificate is verified at that time instead, and warnings carry it with \
             time_suspect, until the clock is set. Fix: enable time sync (systemctl enable --now \
             systemd-timesyncd; it also keeps the time across reboots in /var/lib/systemd/timesync/clock).{record}",
            utc_timestamp(UNIX_EPOCH + r.system),
            rough(r.behind()),
            utc_timestamp(UNIX_EPOCH + r.floor),
            source,
        )
    }

    /// `get_agent_info`'s `clock`: the system time, the floor (Unix seconds) and the verdict.
    pub fn to_json(&self) -> serde_json::Value {
        let r = self.read();
        serde_json::json!({"system_time": r.system.as_secs(), "floor": r.floor.as_secs(), "suspect": r.suspect})
    }
}

fn wrong_note(r: &Reading) -> String {
    format!("system clock wrong, at least {} behind: enable systemd-timesyncd", rough(r.behind()))
}

/// A duration as a person says it: "56 years", "3 days", "5 hours", "7 minutes".
fn rough(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = match s {
        s if s >= 2 * 365 * 86_400 => (s / (365 * 86_400), "years"),
        s if s >= 2 * 86_400 => (s / 86_400, "days"),
        s if s >= 2 * 3600 => (s / 3600, "hours"),
        s if s >= 120 => (s / 60, "minutes"),
        s => (s, "seconds"),
    };
    format!("{n} {unit}")
}

/// rustls' clock: the corrected time, so that a certificate valid at the floor verifies on a
/// board whose clock reads 1970.
#[derive(Debug)]
struct VerifyAt(Arc<Clock>);

impl rustls::time_provider::TimeProvider for VerifyAt {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(self.0.read().corrected()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn since_1970() -> Duration {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
    }

    #[test]
    fn a_board_at_1970_is_told_once_and_its_times_are_the_floor_marked_suspect() {
        let c = Clock::unrecorded();
        assert_eq!(c.news(), None, "a right clock is not news");
        assert!(!c.stamp().suspect);
        c.skew(since_1970() - Duration::from_secs(86_400), false);
        let stamp = c.stamp();
        assert!(stamp.suspect);
        assert!(stamp.secs >= build_time().as_secs() && stamp.secs < build_time().as_secs() + 60, "{stamp:?}");
        let Some(ClockNews::Wrong { line, note }) = c.news() else { panic!("no news") };
        assert!(line.contains("it reads 1970-01-02T"), "{line}");
        assert!(line.contains("years behind") && line.contains("systemd-timesyncd"), "{line}");
        assert!(note.starts_with("system clock wrong, at least ") && note.contains("years behind"), "{note}");
        assert_eq!(c.news(), None, "once per episode");
        c.skew(since_1970() - Duration::from_secs(86_400), true);
        assert!(matches!(c.news(), Some(ClockNews::Right { .. })));
        assert_eq!(c.news(), None);
    }

    #[test]
    fn the_record_moves_forward_only_is_written_off_thread_and_a_corrupt_one_is_moved_aside() {
        let d = tempfile::tempdir().unwrap();
        let future = build_time().as_secs() + 400 * 86_400;
        std::fs::write(d.path().join(RECORD), format!("{future}\n")).unwrap();
        let (c, problem) = Clock::load(d.path(), DeferredWriter::default());
        assert_eq!(problem, None);
        let r = c.read();
        assert!(r.floor.as_secs() >= future && r.source == FloorSource::Verified);
        // Seen verified now: the record is only an hour behind at most, so not written again.
        c.saw_verified();
        assert_eq!(std::fs::read_to_string(d.path().join(RECORD)).unwrap(), format!("{future}\n"));

        std::fs::write(d.path().join(RECORD), "not a time").unwrap();
        let (c, problem) = Clock::load(d.path(), DeferredWriter::default());
        assert!(problem.unwrap().contains("is corrupt; moved aside"));
        assert!(d.path().join("clock.corrupt").exists());
        c.saw_verified();
        let until = Instant::now() + Duration::from_secs(10);
        let written = loop {
            if let Ok(t) = std::fs::read_to_string(d.path().join(RECORD)) {
                break t;
            }
            assert!(Instant::now() < until, "the record was not written");
            std::thread::sleep(Duration::from_millis(5));
        };
        let secs: u64 = written.trim().parse().unwrap();
        assert!(secs.abs_diff(since_1970().as_secs()) < 60, "the corrected time now: {written}");
    }

    #[test]
    fn a_record_no_clock_can_have_written_is_moved_aside_not_believed() {
        // A number, but past any date a clock can be at: a flipped bit, a stray write.
        for junk in [u64::MAX.to_string(), (i64::MAX as u64).to_string(), "99999999999999".to_string()] {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join(RECORD), format!("{junk}\n")).unwrap();
            let (c, problem) = Clock::load(d.path(), DeferredWriter::default());
            assert!(problem.is_some_and(|p| p.contains("is corrupt; moved aside")), "{junk}");
            let r = c.read();
            assert_eq!(r.source, FloorSource::Build, "{junk}");
            // Every reading of it works: shown to people, to rustls, in get_agent_info.
            let _ = (c.wall(), c.stamp(), c.stamp_ms(), c.to_json(), c.news());
            assert!(Arc::new(c).time_provider().current_time().is_some());
        }
    }

    #[test]
    fn a_clock_that_jumps_ahead_during_a_session_leaves_no_floor_behind() {
        let c = Clock::unrecorded();
        c.saw_verified();
        let to_2100 = Duration::from_secs(4_102_444_800) - since_1970();
        c.skew(to_2100, true);
        c.session_alive();
        c.skew(to_2100, false);
        let r = c.read();
        assert!(!r.suspect, "the right clock is not called wrong after the jump back: {r:?}");
        assert!(r.floor < since_1970() + Duration::from_secs(60), "{r:?}");
    }

    #[test]
    fn rustls_verifies_at_the_corrected_time() {
        let c = Arc::new(Clock::unrecorded());
        c.skew(since_1970(), false);
        let at = c.time_provider().current_time().unwrap();
        assert!(at.as_secs() >= build_time().as_secs(), "not 1970: {}", at.as_secs());
    }
}
