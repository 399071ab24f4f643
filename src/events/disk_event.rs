//! What the event sources tell the monitor, and the sink they tell it through.

use std::sync::Arc;

use crate::kernel_log::cursor::Cursor;

/// What the monitor hears from the sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskEvent {
    /// A block device was added, removed or changed (a uevent): scan now. `None` when the
    /// kernel dropped uevents and any disk may have changed.
    Changed(Option<String>),
    /// The kernel logged disk errors for `disk` (a `/sys/block` name, not yet checked
    /// against the monitored set): `line` is the first of `lines`, escaped and capped.
    KernelError { disk: String, line: String, lines: u64 },
    /// The kernel log was read up to this record: every error before it was handed over
    /// above. The monitor saves it as the resume cursor once it has durably recorded what
    /// those errors caused: the sources never save it themselves, or a crash
    /// between reading a record and spooling its warning would lose the warning for good.
    KmsgRead(Cursor),
}

/// Where the sink is gone (the monitor stopped) it returns false and the source stops.
pub type Sink = Arc<dyn Fn(DiskEvent) -> bool + Send + Sync>;
