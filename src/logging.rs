//! The logger (level from `RUST_LOG`, default `info`) and a throttle for lines that a
//! misbehaving peer could otherwise repeat without end.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp (journald adds its own) and
//! start with a `<N>` syslog priority so `journalctl -p warning` works.
//!
//! Our own rather than env_logger: the agent needs one output format and `RUST_LOG`'s
//! `target=level` directives, and env_logger cost 28 KB of the board's flash for the rest.

use std::io::Write;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter};

pub fn init() {
    let (filter, problems) = Filter::parse(&std::env::var("RUST_LOG").unwrap_or_default());
    let max = filter.max();
    let logger = Logger { filter, journald: std::env::var_os("JOURNAL_STREAM").is_some() };
    // A second init (tests) keeps the first logger; the logger lives as long as the process.
    if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
        log::set_max_level(max);
    }
    for p in problems {
        log::warn!("RUST_LOG: {p}");
    }
}

/// `RUST_LOG` as env_logger reads it, less its regex filter: comma-separated directives,
/// each `level`, `target=level` or a bare `target` (everything from it). The longest target
/// prefix that matches decides; otherwise the bare level, `info` when there is none.
#[derive(Debug, PartialEq)]
pub struct Filter {
    default: LevelFilter,
    targets: Vec<(String, LevelFilter)>,
}

impl Filter {
    /// The filter and the directives that were ignored, as phrases for a warning.
    pub fn parse(spec: &str) -> (Filter, Vec<String>) {
        let mut f = Filter { default: LevelFilter::Info, targets: Vec::new() };
        let mut problems = Vec::new();
        for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match d.split_once('=') {
                Some((target, level)) => match LevelFilter::from_str(level.trim()) {
                    Ok(l) => f.targets.push((target.trim().to_string(), l)),
                    Err(_) => {
                        problems.push(format!("ignored \"{d}\": {level:?} is not off/error/warn/info/debug/trace"))
                    }
                },
                None => match LevelFilter::from_str(d) {
                    Ok(l) => f.default = l,
                    Err(_) => f.targets.push((d.to_string(), LevelFilter::Trace)),
                },
            }
        }
        // Longest first, so the first match is the most specific.
        f.targets.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        (f, problems)
    }

    pub fn level_for(&self, target: &str) -> LevelFilter {
        self.targets.iter().find(|(t, _)| target.starts_with(t.as_str())).map_or(self.default, |(_, l)| *l)
    }

    pub fn max(&self) -> LevelFilter {
        self.targets.iter().map(|(_, l)| *l).fold(self.default, |a, b| a.max(b))
    }
}

struct Logger {
    filter: Filter,
    journald: bool,
}

impl Logger {
    fn line(&self, record: &log::Record, now: SystemTime) -> String {
        if self.journald {
            format!("<{}>{}\n", syslog_priority(record.level()), record.args())
        } else {
            format!("{} {:<5} {}\n", utc_timestamp(now), record.level(), record.args())
        }
    }
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        !may_carry_secret(m.target(), m.level()) && m.level() <= self.filter.level_for(m.target())
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            // One write per line, so that lines from different threads never interleave.
            let _ = std::io::stderr().lock().write_all(self.line(record, SystemTime::now()).as_bytes());
        }
    }
    fn flush(&self) {}
}

/// Whether a record may carry a secret, and so is never logged whatever `RUST_LOG` asks:
/// tungstenite logs every frame it writes at trace level, and the login frame holds the token.
pub fn may_carry_secret(target: &str, level: Level) -> bool {
    level == Level::Trace && target.starts_with("tungstenite")
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
    fn rust_log_sets_a_default_level_and_per_target_levels() {
        let (f, problems) = Filter::parse("warn, rig_agent::runner=debug, rig_agent=error");
        assert!(problems.is_empty());
        assert_eq!(f.level_for("tungstenite::protocol"), LevelFilter::Warn);
        assert_eq!(f.level_for("rig_agent::monitor"), LevelFilter::Error);
        assert_eq!(f.level_for("rig_agent::runner"), LevelFilter::Debug, "the longest prefix wins");
        assert_eq!(f.max(), LevelFilter::Debug);
    }

    #[test]
    fn without_rust_log_the_level_is_info() {
        let (f, _) = Filter::parse("");
        assert_eq!(f.level_for("rig_agent::runner"), LevelFilter::Info);
        assert_eq!(f.max(), LevelFilter::Info);
    }

    #[test]
    fn a_bare_target_logs_everything_from_it() {
        let (f, _) = Filter::parse("rig_agent::monitor");
        assert_eq!(f.level_for("rig_agent::monitor"), LevelFilter::Trace);
        assert_eq!(f.level_for("rig_agent::runner"), LevelFilter::Info);
    }

    #[test]
    fn a_directive_with_a_bad_level_is_ignored_and_reported() {
        let (f, problems) = Filter::parse("rig_agent=loud,debug");
        assert_eq!(f.level_for("rig_agent"), LevelFilter::Debug);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("rig_agent=loud"), "{problems:?}");
    }

    #[test]
    fn lines_for_a_terminal_are_timestamped_and_lines_for_journald_carry_a_priority() {
        let args = format_args!("gateway unreachable");
        let record = log::Record::builder().level(Level::Warn).target("rig_agent::runner").args(args).build();
        let (filter, _) = Filter::parse("");
        let terminal = Logger { filter, journald: false };
        assert_eq!(terminal.line(&record, UNIX_EPOCH), "1970-01-01T00:00:00Z WARN  gateway unreachable\n");
        let (filter, _) = Filter::parse("");
        let journal = Logger { filter, journald: true };
        assert_eq!(journal.line(&record, UNIX_EPOCH), "<4>gateway unreachable\n");
    }

    #[test]
    fn frame_traces_of_the_websocket_library_are_never_logged_even_when_asked_for() {
        let (filter, _) = Filter::parse("trace");
        let logger = Logger { filter, journald: false };
        let meta = |target| log::Metadata::builder().level(Level::Trace).target(target).build();
        use log::Log;
        assert!(!logger.enabled(&meta("tungstenite::protocol::frame")));
        assert!(logger.enabled(&meta("rig_agent::runner")));
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
