//! Reading back one of the agent's own small state files (the disk and GPU inventories,
//! the clock record, the address book, the maintenance window, the recovery ladders):
//! bounded, a regular file only, never through a link, and when it cannot be understood,
//! moved aside as `<name>.corrupt` and reported, so the agent starts without it instead of
//! failing or tripping over it at every start.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::os::bounded_read::{self, Links, ReadError};

/// `dir/name` read back as JSON with `parse` (`None`: not understood). See [`load_bytes`].
pub fn load<T>(
    dir: &Path,
    name: &str,
    cap: u64,
    what: &str,
    parse: impl FnOnce(&Value) -> Option<T>,
) -> (Option<T>, Option<String>) {
    load_bytes(dir, name, cap, what, |b| parse(&serde_json::from_slice::<Value>(b).ok()?))
}

/// `dir/name` read with `parse` (`None`: not understood). A missing file is `(None,
/// None)`; one that cannot be opened, or whose content `parse` refuses, is `(None,
/// Some(message))` for an error-level log line naming `what`, a refused file renamed to
/// `<name>.corrupt` (replacing an older one, so they cannot pile up).
pub fn load_bytes<T>(
    dir: &Path,
    name: &str,
    cap: u64,
    what: &str,
    parse: impl FnOnce(&[u8]) -> Option<T>,
) -> (Option<T>, Option<String>) {
    let path = dir.join(name);
    // Read with a cap and only if it is a regular file: a FIFO, a device or a link in its
    // place would hang or flood the start-up; it is moved aside like a corrupt file.
    let read = match bounded_read::read(&path, cap, Links::Refuse) {
        Err(e) if e.is_not_found() => return (None, None),
        Err(e @ ReadError::Open { .. }) => return (None, Some(format!("{what}: {e}; going on without it"))),
        other => other,
    };
    let why = match read {
        Ok(contents) => match parse(&contents.bytes) {
            Some(v) => return (Some(v), None),
            None => format!("{what} {} is corrupt", path.display()),
        },
        Err(e) => format!("{what}: {e}"),
    };
    let aside = PathBuf::from(format!("{}.corrupt", path.display()));
    let moved = match fs::rename(&path, &aside) {
        Ok(()) => format!("moved aside to {}", aside.display()),
        Err(e) => format!("could not be moved aside ({e})"),
    };
    (None, Some(format!("{why}; {moved}; going on without it")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_cannot_be_understood_is_moved_aside_and_reported() {
        let d = tempfile::tempdir().unwrap();
        let parse = |b: &[u8]| std::str::from_utf8(b).ok()?.trim().parse::<u64>().ok();
        assert_eq!(
            load_bytes(d.path(), "clock", 64, "the clock record", parse),
            (None, None),
            "missing is nothing yet"
        );
        fs::write(d.path().join("clock"), "12\n").unwrap();
        assert_eq!(load_bytes(d.path(), "clock", 64, "the clock record", parse), (Some(12), None));
        fs::write(d.path().join("clock"), "twelve").unwrap();
        let (v, why) = load_bytes(d.path(), "clock", 64, "the clock record", parse);
        assert_eq!(v, None);
        let why = why.unwrap();
        assert!(why.starts_with("the clock record ") && why.contains("is corrupt; moved aside to"), "{why}");
        assert!(d.path().join("clock.corrupt").exists() && !d.path().join("clock").exists());
        fs::write(d.path().join("clock"), vec![b'1'; 100]).unwrap();
        let (_, why) = load_bytes(d.path(), "clock", 64, "the clock record", parse);
        assert!(why.unwrap().contains("moved aside"), "an oversized file too");
    }

    #[test]
    fn a_json_file_the_parser_refuses_is_moved_aside_like_one_that_is_not_json() {
        let d = tempfile::tempdir().unwrap();
        let parse = |v: &Value| v["n"].as_u64();
        fs::write(d.path().join("s.json"), r#"{"n": 3}"#).unwrap();
        assert_eq!(load(d.path(), "s.json", 64, "the state", parse), (Some(3), None));
        for text in [r#"{"n": "three"}"#, "{half"] {
            fs::write(d.path().join("s.json"), text).unwrap();
            let (v, why) = load(d.path(), "s.json", 64, "the state", parse);
            assert_eq!(v, None);
            assert!(why.unwrap().contains("is corrupt; moved aside to"));
            assert!(!d.path().join("s.json").exists());
        }
    }
}
