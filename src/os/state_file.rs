//! Reading back a JSON state file the agent wrote in its state directory (the disk and GPU
//! inventories): bounded, never through a link, and a file that cannot be believed moved
//! aside and said, so the agent starts empty rather than not at all.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::os::bounded_read::{self, Links};

/// `state_dir/name` read back with `parse`. A missing file is `(None, None)`; one that
/// cannot be opened, or whose content `parse` refuses, is `(None, Some(message))` for an
/// error-level log line naming `what`, the refused file renamed to `<name>.corrupt`.
pub fn load<T>(
    state_dir: &Path,
    name: &str,
    cap: u64,
    what: &str,
    parse: impl FnOnce(&Value) -> Option<T>,
) -> (Option<T>, Option<String>) {
    let path = state_dir.join(name);
    // Read with a cap and only if it is a regular file: a FIFO, a device or a link in its
    // place would hang or flood the start-up; it is moved aside like a corrupt file.
    let text = match bounded_read::read(&path, cap, Links::Refuse) {
        Ok(t) => Ok(t),
        Err(e) if e.is_not_found() => return (None, None),
        Err(e @ bounded_read::ReadError::Open { .. }) => return (None, Some(format!("{e}; starting empty"))),
        Err(e) => Err(e),
    };
    let parsed = text.as_ref().ok().and_then(|c| serde_json::from_slice::<Value>(&c.bytes).ok());
    if let Some(v) = parsed.and_then(|v| parse(&v)) {
        return (Some(v), None);
    }
    let aside = PathBuf::from(format!("{}.corrupt", path.display()));
    let moved = match fs::rename(&path, &aside) {
        Ok(()) => format!("moved aside to {}", aside.display()),
        Err(e) => format!("could not be moved aside ({e})"),
    };
    let problem = match text {
        Err(e) => format!("{what}: {e}; {moved}; starting empty"),
        Ok(_) => format!("{what} {} is corrupt, {moved}; starting empty", path.display()),
    };
    (None, Some(problem))
}
