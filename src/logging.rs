//! Log set-up (env_logger, level from `RUST_LOG`, default `info`) and a throttle for lines
//! that a misbehaving peer could otherwise repeat without end.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp (journald adds its own) and
//! start with a `<N>` syslog priority so `journalctl -p warning` works.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::Level;

pub fn init() {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Info);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.format(move |buf, record| {
        if journald {
            writeln!(buf, "<{}>{}", syslog_priority(record.level()), record.args())
        } else {
            writeln!(buf, "{} {:<5} {}", utc_timestamp(SystemTime::now()), record.level(), record.args())
        }
    });
    let inner = builder.build();
    let max = inner.filter();
    // A second init (tests) keeps the first logger.
    if log::set_boxed_logger(Box::new(Redacting(inner))).is_ok() {
        log::set_max_level(max);
    }
}

/// Drops the records that could carry a secret whatever `RUST_LOG` asks for: tungstenite
/// logs every frame it writes at trace level, and the login frame holds the token.
struct Redacting(env_logger::Logger);

/// Whether a record may be logged at all.
pub fn may_carry_secret(target: &str, level: Level) -> bool {
    level == Level::Trace && target.starts_with("tungstenite")
}

impl log::Log for Redacting {
    fn enabled(&self, m: &log::Metadata) -> bool {
        !may_carry_secret(m.target(), m.level()) && self.0.enabled(m)
    }
    fn log(&self, record: &log::Record) {
        if !may_carry_secret(record.target(), record.level()) {
            self.0.log(record);
        }
    }
    fn flush(&self) {
        self.0.flush();
    }
}

pub fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// `2026-11-25T08:51:56Z`, without a date crate.
pub fn utc_timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (H. Hinnant), valid for every date after 1970.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Lets through the first `burst` events of each `window`, then counts the rest and reports
/// the count with the next line that is let through.
#[derive(Debug)]
pub struct Throttle {
    window: Duration,
    burst: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl Throttle {
    pub fn new(window: Duration, burst: u32) -> Throttle {
        Throttle { window, burst, window_start: None, in_window: 0, suppressed: 0 }
    }

    /// `Some(n)` when this event should be logged, `n` being how many were suppressed
    /// before it; `None` when it should be counted silently.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        let start = *self.window_start.get_or_insert(now);
        if now.duration_since(start) >= self.window {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH + Duration::from_secs(1_764_000_000)), "2025-11-24T16:00:00Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn frame_traces_of_the_websocket_library_are_never_logged() {
        assert!(may_carry_secret("tungstenite::protocol::frame", Level::Trace));
        assert!(!may_carry_secret("tungstenite::protocol", Level::Debug));
        assert!(!may_carry_secret("rig_agent::runner", Level::Trace));
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(syslog_priority(Level::Error), 3);
        assert_eq!(syslog_priority(Level::Warn), 4);
        assert_eq!(syslog_priority(Level::Info), 6);
        assert_eq!(syslog_priority(Level::Debug), 7);
    }

    #[test]
    fn the_throttle_lets_a_burst_through_then_reports_what_it_held_back() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(60), 3);
        let admitted: Vec<_> = (0..10).map(|i| t.admit(t0 + Duration::from_millis(i))).collect();
        assert_eq!(admitted[..3], [Some(0), Some(0), Some(0)]);
        assert!(admitted[3..].iter().all(Option::is_none));
        assert_eq!(t.admit(t0 + Duration::from_secs(61)), Some(7));
    }
}
