//! Reading one of the agent's own small state files (the clock record, the address book):
//! bounded, a regular file only, and when it cannot be understood, moved aside as
//! `<name>.corrupt` and reported, so the agent starts without it instead of failing or
//! tripping over it at every start.

use std::fs;
use std::path::{Path, PathBuf};

use crate::os::bounded_read::{self, Links, ReadError};

/// The file `name` of `dir` parsed by `parse` (`None`: not understood). Missing: `(None,
/// None)`. Unreadable or not understood: `None` and the message for an error-level log line,
/// the file moved aside when it is there but wrong.
pub fn load<T>(
    dir: &Path,
    name: &str,
    cap: u64,
    parse: impl FnOnce(&[u8]) -> Option<T>,
) -> (Option<T>, Option<String>) {
    let path = dir.join(name);
    let read = match bounded_read::read(&path, cap, Links::Refuse) {
        Err(e) if e.is_not_found() => return (None, None),
        Err(e @ ReadError::Open { .. }) => return (None, Some(format!("{e}; going on without it"))),
        other => other,
    };
    let why = match read {
        Ok(contents) => match parse(&contents.bytes) {
            Some(v) => return (Some(v), None),
            None => format!("{} is corrupt", path.display()),
        },
        Err(e) => e.to_string(),
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
        assert_eq!(load(d.path(), "clock", 64, parse), (None, None), "missing is nothing yet");
        fs::write(d.path().join("clock"), "12\n").unwrap();
        assert_eq!(load(d.path(), "clock", 64, parse), (Some(12), None));
        fs::write(d.path().join("clock"), "twelve").unwrap();
        let (v, why) = load(d.path(), "clock", 64, parse);
        assert_eq!(v, None);
        assert!(why.unwrap().contains("is corrupt; moved aside to"));
        assert!(d.path().join("clock.corrupt").exists() && !d.path().join("clock").exists());
        fs::write(d.path().join("clock"), vec![b'1'; 100]).unwrap();
        let (_, why) = load(d.path(), "clock", 64, parse);
        assert!(why.unwrap().contains("moved aside"), "an oversized file too");
    }
}
