//! Disk failures at kernel speed (issue 13): the kernel log (`/dev/kmsg`) and block-device
//! uevents (`NETLINK_KOBJECT_UEVENT`), read on their own threads and handed to the monitor
//! as [`DiskEvent`]s. Parsing (pure, fixture-tested) is apart from reading, so the kmsg read
//! can move into a privileged process (issue 12) and hand over records or an open fd.

pub mod attribution;
pub mod kernel_error;
pub mod kmsg_reader;
pub mod kmsg_record;
pub mod resume;
pub mod sources;
pub mod storm;
pub mod uevent;
pub mod uevent_listener;

pub use attribution::Attribution;
pub use kernel_error::{KernelError, Subject};
pub use kmsg_record::Record;
pub use sources::{DiskEvent, Sources, SourcesStatus};
pub use storm::Storms;
pub use uevent::Uevent;

/// Longest kernel line quoted in a warning's `detail` or a log line, in characters.
pub const QUOTE_CHARS: usize = 200;

/// `text` made safe for a log line or a warning: control characters and backslashes escaped,
/// at most `max` characters of the original kept, "…" marking a cut.
pub fn escape_capped(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_kernel_text_is_escaped_and_capped() {
        assert_eq!(escape_capped("a\tb\\c\u{1b}[0m", 100), "a\\tb\\\\c\\u{1b}[0m");
        assert_eq!(escape_capped("abcdef", 3), "abc…");
        assert_eq!(escape_capped("abc", 3), "abc");
    }
}
