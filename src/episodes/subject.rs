//! What an episode is about: a disk or a GPU.

use std::fmt;

/// The kind of thing a failure episode is about; a warning's `type` says it on the wire
/// (2 for a disk, 3 for a GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectKind {
    /// A monitored disk, named by its kernel name (`sdl`; `/dev/sdl` in a warning).
    Disk,
    /// A GPU, named by its PCI bus id as sysfs writes it (`0000:01:00.0`).
    Gpu,
}

impl SubjectKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Disk => "disk",
            SubjectKind::Gpu => "gpu",
        }
    }

    /// The warning's `type` (PROTOCOL.md §7, §9).
    pub const fn warning_type(self) -> u8 {
        match self {
            SubjectKind::Disk => 2,
            SubjectKind::Gpu => 3,
        }
    }
}

impl fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
