//! The logger: env_logger (`RUST_LOG`, the filter syntax Rust services share) with our line
//! format, a guard for the WebSocket library's internals, a check of `RUST_LOG`'s words, and a throttle for lines
//! that a misbehaving peer could otherwise repeat without end.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp (journald adds its own) and
//! start with a `<N>` syslog priority so `journalctl -p warning` works.

use std::io::Write;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use log::{Level, LevelFilter};

/// Installs the logger. `RUST_LOG` directives that cannot be right (`warning`, journalctl's
/// word, is not a level and names no module of the agent) are left out and reported as a
/// warning once the logger runs, instead of silently filtering on a module called "warning".
pub fn init() {
    let (spec, problems) = check_spec(&std::env::var("RUST_LOG").unwrap_or_default());
    let inner = builder(&spec, std::env::var_os("JOURNAL_STREAM").is_some()).build();
    let max = inner.filter();
    // A second init (tests) keeps the first logger; the logger lives as long as the process.
    if log::set_boxed_logger(Box::new(Logger { inner })).is_ok() {
        log::set_max_level(max);
    }
    for p in problems {
        log::warn!("RUST_LOG: {p}");
    }
}

/// env_logger set up with `spec` (RUST_LOG syntax, default `info`) and our line format.
fn builder(spec: &str, journald: bool) -> env_logger::Builder {
    let mut b = env_logger::Builder::new();
    b.filter_level(LevelFilter::Info).parse_filters(spec).target(env_logger::Target::Stderr);
    b.format(move |buf, record| {
        if journald {
            writeln!(buf, "<{}>{}", syslog_priority(record.level()), record.args())
        } else {
            writeln!(buf, "{} {:<5} {}", utc_timestamp(SystemTime::now()), record.level(), record.args())
        }
    });
    b
}

/// The crates whose log targets a bare `RUST_LOG` word may name (besides the levels).
const KNOWN_TARGETS: &[&str] = &["rig_agent", "tungstenite", "rustls", "sysinfo", "webpki", "toml", "signal_hook"];

/// `RUST_LOG` as env_logger reads it, less the directives that cannot be what was meant:
/// a level env_logger does not know (`rig_agent=loud`), or a bare word that is neither a
/// level nor a target of the agent (`warning`, `err`, `4`: journalctl's words). Returns the
/// spec to hand to env_logger and one phrase per directive left out.
pub(crate) fn check_spec(spec: &str) -> (String, Vec<String>) {
    let (directives, text_filter) = match spec.split_once('/') {
        Some((d, f)) => (d, Some(f)),
        None => (spec, None),
    };
    let mut kept = Vec::new();
    let mut problems = Vec::new();
    for d in directives.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let shown = escape(d);
        match d.split_once('=') {
            Some((target, level)) => match LevelFilter::from_str(level.trim()) {
                Ok(_) if !target.trim().is_empty() => kept.push(d),
                Ok(_) => problems.push(format!("ignored \"{shown}\": no module before the '='")),
                Err(_) => problems.push(format!(
                    "ignored \"{shown}\": \"{}\" is not a level (off, error, warn, info, debug, trace)",
                    escape(level.trim())
                )),
            },
            None if LevelFilter::from_str(d).is_ok() => kept.push(d),
            None if KNOWN_TARGETS.iter().any(|t| d == *t || d.starts_with(&format!("{t}::"))) => kept.push(d),
            None => problems.push(match level_meant(d) {
                Some(l) => format!("ignored \"{shown}\": not a level; write RUST_LOG={l}"),
                None => format!(
                    "ignored \"{shown}\": neither a level (off, error, warn, info, debug, trace) nor a module \
                     of the agent (rig_agent::…)"
                ),
            }),
        }
    }
    let mut out = kept.join(",");
    if let Some(f) = text_filter {
        out = format!("{out}/{f}");
    }
    (out, problems)
}

/// The env_logger level for syslog's and journalctl's priority names and numbers.
fn level_meant(word: &str) -> Option<&'static str> {
    Some(match word.to_ascii_lowercase().as_str() {
        "emerg" | "alert" | "crit" | "critical" | "err" | "fatal" | "0" | "1" | "2" | "3" => "error",
        "warning" | "notice" | "4" | "5" => "warn",
        "information" | "informational" | "6" => "info",
        "verbose" | "7" => "debug",
        "all" => "trace",
        _ => return None,
    })
}

/// At most 60 characters of an outside string, with control characters escaped: what a log
/// line may show of a string the gateway or the environment chose.
pub fn escape(s: &str) -> String {
    s.chars().take(60).flat_map(char::escape_debug).collect()
}

/// env_logger behind one rule that no `RUST_LOG` can lift.
struct Logger {
    inner: env_logger::Logger,
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        !from_websocket_internals(m.target(), m.level()) && self.inner.enabled(m)
    }
    fn log(&self, record: &log::Record) {
        if !from_websocket_internals(record.target(), record.level()) {
            // env_logger writes each record with one write, so lines never interleave.
            self.inner.log(record);
        }
    }
    fn flush(&self) {
        self.inner.flush();
    }
}

/// Whether a record is one of the WebSocket library's debug or trace lines, which are never
/// logged whatever `RUST_LOG` asks: at trace it logs every frame it writes (the login frame
/// holds the token), and at debug it prints what the gateway sent (`Received close frame:
/// Some(...)`) unescaped and unbounded. The agent's own debug lines say what happened.
pub(crate) fn from_websocket_internals(target: &str, level: Level) -> bool {
    level >= Level::Debug && target.starts_with("tungstenite")
}

pub(crate) fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// `2026-11-25T08:51:56Z`, the timestamp of the log lines.
pub(crate) fn utc_timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Lets through the first `burst` events of each `window`, then counts the rest and reports
/// the count with the next line that is let through.
#[derive(Debug)]
pub(crate) struct Throttle {
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

    /// Logs `line` at warn level when this event is let through, with the count of the
    /// lines held back before it.
    pub(crate) fn warn(&mut self, line: &str) {
        self.log(log::Level::Warn, line);
    }

    /// [`Throttle::warn`] at info level.
    pub(crate) fn info(&mut self, line: &str) {
        self.log(log::Level::Info, line);
    }

    fn log(&mut self, level: log::Level, line: &str) {
        if let Some(suppressed) = self.admit(Instant::now()) {
            if suppressed > 0 {
                log::log!(level, "{line} ({suppressed} similar lines suppressed)");
            } else {
                log::log!(level, "{line}");
            }
        }
    }

    /// The events counted silently since the last one let through, and none from now.
    pub(crate) fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }

    /// `Some(n)` when this event should be logged, `n` being how many were suppressed
    /// before it; `None` when it should be counted silently.
    pub(crate) fn admit(&mut self, now: Instant) -> Option<u64> {
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
    use log::Log;
    use std::sync::{Arc, Mutex};
    use std::time::UNIX_EPOCH;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH + Duration::from_secs(1_764_000_000)), "2025-11-24T16:00:00Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
    }

    /// A logger built as `init` builds it, writing into a buffer.
    fn capture(spec: &str, journald: bool) -> (Logger, Arc<Mutex<Vec<u8>>>) {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().write(b)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (spec, _) = check_spec(spec);
        let mut b = builder(&spec, journald);
        b.target(env_logger::Target::Pipe(Box::new(Sink(buf.clone()))));
        (Logger { inner: b.build() }, buf)
    }

    fn emit(logger: &Logger, level: Level, target: &str, text: &str) {
        logger.log(&log::Record::builder().level(level).target(target).args(format_args!("{text}")).build());
    }

    fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8(buf.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn rust_log_sets_a_default_level_and_per_target_levels() {
        let (logger, buf) = capture("warn, rig_agent::runner=debug, rig_agent=error", false);
        emit(&logger, Level::Info, "sysinfo", "hidden: below warn");
        emit(&logger, Level::Warn, "rig_agent::monitor", "hidden: below error");
        emit(&logger, Level::Debug, "rig_agent::runner", "shown: the longest prefix wins");
        let out = text(&buf);
        assert!(!out.contains("hidden"), "{out}");
        assert!(out.contains("shown"), "{out}");
        assert_eq!(logger.inner.filter(), LevelFilter::Debug);
    }

    #[test]
    fn without_rust_log_the_level_is_info() {
        let (logger, _) = capture("", false);
        assert_eq!(logger.inner.filter(), LevelFilter::Info);
    }

    #[test]
    fn a_bare_module_of_the_agent_logs_everything_from_it() {
        let (spec, problems) = check_spec("rig_agent::monitor");
        assert_eq!((spec.as_str(), problems.len()), ("rig_agent::monitor", 0));
        let (logger, buf) = capture("rig_agent::monitor", false);
        emit(&logger, Level::Trace, "rig_agent::monitor", "scan");
        emit(&logger, Level::Debug, "rig_agent::runner", "not this one");
        assert_eq!(text(&buf).lines().count(), 1, "{}", text(&buf));
    }

    #[test]
    fn journalctl_priority_words_are_reported_with_the_level_meant() {
        let (spec, problems) = check_spec("warning");
        assert_eq!(spec, "", "not read as a module called \"warning\"");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("RUST_LOG=warn"), "{problems:?}");
        let (_, problems) = check_spec("err,rig_agent=debug");
        assert!(problems[0].contains("RUST_LOG=error"), "{problems:?}");
        let (_, problems) = check_spec("nonsense");
        assert!(problems[0].contains("neither a level"), "{problems:?}");
    }

    #[test]
    fn a_directive_with_a_bad_level_is_ignored_and_reported() {
        let (spec, problems) = check_spec("rig_agent=loud,debug");
        assert_eq!(spec, "debug");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("rig_agent=loud"), "{problems:?}");
    }

    #[test]
    fn lines_for_a_terminal_are_timestamped_and_lines_for_journald_carry_a_priority() {
        let (terminal, buf) = capture("", false);
        emit(&terminal, Level::Warn, "rig_agent::runner", "gateway unreachable");
        let line = text(&buf);
        // 2026-11-25T08:51:56Z WARN  gateway unreachable
        assert_eq!(line.len(), "1970-01-01T00:00:00Z WARN  gateway unreachable\n".len(), "{line:?}");
        assert!(line.ends_with("Z WARN  gateway unreachable\n"), "{line:?}");
        let (journal, buf) = capture("", true);
        emit(&journal, Level::Warn, "rig_agent::runner", "gateway unreachable");
        assert_eq!(text(&buf), "<4>gateway unreachable\n");
    }

    #[test]
    fn debug_and_trace_lines_of_the_websocket_library_are_never_logged_even_when_asked_for() {
        let (logger, buf) = capture("trace", false);
        emit(&logger, Level::Trace, "tungstenite::protocol::frame", "frame with the token");
        emit(&logger, Level::Debug, "tungstenite::protocol", "Received close frame: Some(..)");
        emit(&logger, Level::Warn, "tungstenite::protocol", "kept");
        emit(&logger, Level::Trace, "rig_agent::runner", "ours");
        let out = text(&buf);
        assert!(!out.contains("token") && !out.contains("close frame"), "{out}");
        assert!(out.contains("kept") && out.contains("ours"), "{out}");
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
