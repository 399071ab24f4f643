//! The maintenance window as the state directory keeps it (`maintenance.json`), and the
//! rules that bound it. Reading and writing here; what the file says is judged by pure
//! functions ([`decode`], [`window_at`]).
//!
//! The file holds the end in Unix seconds and who set it: `{"until":1796620000,"by":"local"}`.
//! No file: not in maintenance. While the agent runs the end is kept as a monotonic
//! instant, so a wall clock stepped while it runs changes nothing. At start the time left
//! is `until` minus the wall clock then, capped at [`MAX`]: a clock that boots at 1970 cannot
//! stretch a window past the longest one may set, and a clock ahead ends it early (the
//! safe side: the rig is back under its automatic rules).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::os::durable::write_durably;
use crate::os::state_file;
use crate::protocol::escape::escape_to;
use crate::status::{By, Window};

/// The file's name in the state directory.
pub const FILE: &str = "maintenance.json";
/// The shortest window `rig-agent maintenance on` takes.
pub const MIN: Duration = Duration::from_secs(1);
/// The longest window: a week. Longer is a rig taken out of service, not maintenance.
pub const MAX: Duration = Duration::from_secs(7 * 86_400);
/// The file is a few dozen bytes; anything longer is not ours.
const MAX_FILE: u64 = 512;

/// Whether `d` is a window one may set, and the refusal to show when not.
pub fn check_length(d: Duration) -> Result<Duration, String> {
    if d < MIN || d > MAX {
        return Err(format!(
            "a maintenance window lasts from {} to {} (7d); {} is out of bounds",
            crate::config::duration::format_duration(MIN),
            crate::config::duration::format_duration(MAX),
            crate::config::duration::format_duration(d)
        ));
    }
    Ok(d)
}

/// The length `rig-agent maintenance on` was given (`30m`, `2h`, `1d`, as the config writes
/// durations), within [`MIN`] and [`MAX`]; the refusal names the text, escaped.
pub fn parse_length(text: &str) -> Result<Duration, String> {
    let shown = escape_to(text, 40);
    let d = crate::config::duration::parse_duration(text)
        .map_err(|e| format!("maintenance on {shown}: {} (write e.g. 30m, 2h, 1d)", escape_to(&e.0, 120)))?;
    check_length(d).map_err(|e| format!("maintenance on {shown}: {e}"))
}

/// What the file says, or why it is not a window (the file is then moved aside).
pub fn decode(text: &str) -> Result<(u64, By), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    from_json(&v)
}

fn from_json(v: &Value) -> Result<(u64, By), String> {
    let until = v["until"].as_u64().ok_or("`until` is not a number of seconds")?;
    let by = v["by"].as_str().and_then(By::parse).ok_or("`by` is not \"console\" or \"local\"")?;
    Ok((until, by))
}

/// The file's text for `w`.
pub fn encode(w: &Window) -> String {
    json!({"until": w.until, "by": w.by.as_str()}).to_string()
}

/// The window a file read at wall time `now_unix` (monotonic `now`) stands for: `None`
/// when it has ended; its time left capped at [`MAX`].
pub fn window_at(until: u64, by: By, now_unix: u64, now: Instant) -> Option<Window> {
    let left = Duration::from_secs(until.checked_sub(now_unix)?).min(MAX);
    (!left.is_zero()).then(|| Window { until, by, ends: now + left })
}

/// The state file of one state directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> StateFile {
        StateFile { dir: dir.to_path_buf() }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The window kept by an earlier run, if it has not ended. A file that has ended is
    /// removed; one that cannot be read as a window is moved aside and the returned text
    /// says where (for the log).
    pub fn load(&self, now_unix: u64, now: Instant) -> (Option<Window>, Option<String>) {
        let (kept, problem) =
            state_file::load(&self.dir, FILE, MAX_FILE, "the maintenance state file", |v| from_json(v).ok());
        let problem = problem.map(|p| format!("{p}; the rig is not in maintenance"));
        let Some((until, by)) = kept else { return (None, problem) };
        let w = window_at(until, by, now_unix, now);
        if w.is_none() {
            let _ = self.remove();
        }
        (w, problem)
    }

    /// Keeps `w`, durably, before it is in force.
    pub fn save(&self, w: &Window) -> io::Result<()> {
        write_durably(&self.dir, FILE, encode(w).as_bytes())
    }

    /// Forgets the window, durably (a restart must not bring it back).
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_file(self.path()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => crate::os::durable::sync_dir(&self.dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_read_at_start_keeps_its_time_left_but_never_more_than_a_week() {
        let now = Instant::now();
        let w = window_at(1_000_600, By::Local, 1_000_000, now).unwrap();
        assert_eq!((w.until, w.by, w.ends), (1_000_600, By::Local, now + Duration::from_secs(600)));
        // A clock at 1970 after a reboot: the window ends a week from now at the latest.
        let w = window_at(1_800_000_000, By::Console, 5, now).unwrap();
        assert_eq!(w.ends, now + MAX);
        assert_eq!(window_at(1_000_000, By::Local, 1_000_000, now), None);
        assert_eq!(window_at(999_999, By::Local, 1_000_000, now), None);
    }

    #[test]
    fn only_a_complete_well_typed_file_is_a_window() {
        assert_eq!(decode(r#"{"until":5,"by":"console"}"#), Ok((5, By::Console)));
        for bad in [r#"{"until":-5,"by":"local"}"#, r#"{"until":5,"by":"root"}"#, r#"{"until":5}"#, "{", ""] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lengths_outside_a_second_to_a_week_are_refused() {
        assert!(check_length(Duration::ZERO).is_err());
        assert!(check_length(MAX + Duration::from_secs(1)).is_err());
        assert!(check_length(Duration::from_secs(99_999_999 * 3600)).is_err());
        assert_eq!(check_length(Duration::from_secs(7200)), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn zero_negative_and_absurd_lengths_are_refused_naming_the_text() {
        for bad in ["0s", "0", "-5m", "-1h", "99999999h", "2x", "", "1h\u{1b}[31m"] {
            let e = parse_length(bad).unwrap_err();
            assert!(e.starts_with("maintenance on "), "{bad}: {e}");
            assert!(!e.contains('\u{1b}'), "{e}");
        }
        assert_eq!(parse_length("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_length("7d"), Ok(MAX));
    }

    #[test]
    fn a_corrupt_or_huge_file_is_moved_aside_and_an_ended_one_removed() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        let now = Instant::now();
        fs::write(dir.path().join(FILE), "x".repeat(1 << 20)).unwrap();
        let (w, problem) = f.load(1000, now);
        assert!(w.is_none());
        assert!(problem.unwrap().contains("moved aside"));
        assert!(dir.path().join("maintenance.json.corrupt").exists());
        assert!(!dir.path().join(FILE).exists());
        fs::write(dir.path().join(FILE), r#"{"until":999,"by":"local"}"#).unwrap();
        assert_eq!(f.load(1000, now), (None, None));
        assert!(!dir.path().join(FILE).exists());
        let w = Window { until: 2000, by: By::Local, ends: now };
        f.save(&w).unwrap();
        assert_eq!(f.load(1000, now).0.map(|w| (w.until, w.by)), Some((2000, By::Local)));
    }
}
