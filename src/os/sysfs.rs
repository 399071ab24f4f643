//! Reading sysfs and procfs: one attribute, trimmed, or the entries of a folder. Missing,
//! unreadable or empty is `None` (or no entries), never an error: the kernel leaves out what
//! a driver does not give, and every caller reports such a field as unknown.

use std::fs;
use std::path::Path;

/// A sysfs/procfs attribute, trimmed; `None` when missing, unreadable or empty.
pub(crate) fn read_attr(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// The first of `candidates` (relative to `dir`) that reads as a non-empty attribute.
pub(crate) fn first_attr(dir: &Path, candidates: &[&str]) -> Option<String> {
    candidates.iter().find_map(|c| read_attr(&dir.join(c)))
}

/// Names of the entries of `dir`, sorted; empty when it cannot be read.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_trimmed_and_empty_ones_are_none() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a"), " value \n").unwrap();
        fs::write(d.path().join("e"), "\n").unwrap();
        assert_eq!(read_attr(&d.path().join("a")).as_deref(), Some("value"));
        assert_eq!(read_attr(&d.path().join("e")), None);
        assert_eq!(read_attr(&d.path().join("missing")), None);
        assert_eq!(first_attr(d.path(), &["missing", "e", "a"]).as_deref(), Some("value"));
    }
}
