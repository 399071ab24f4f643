//! What the event sources tell the monitor, and the sink they tell it through.

use std::sync::Arc;

use crate::kernel_log::cursor::Cursor;
use crate::kernel_log::gpu_error::{GpuRef, Kind};

/// What the monitor hears from the sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// A block device was added, removed or changed (a uevent): scan now. `None` when the
    /// kernel dropped uevents and any disk may have changed.
    Changed(Option<String>),
    /// The kernel logged disk errors for `disk` (a `/sys/block` name, not yet checked
    /// against the monitored set): `line` is the first of `lines`, escaped and capped.
    KernelError { disk: String, line: String, lines: u64 },
    /// The kernel logged a GPU's trouble (`kernel_log::gpu_error`): `line` is the first of
    /// `lines` records of this GPU and kind, escaped and capped.
    GpuRecord { gpu: GpuRef, kind: Kind, line: String, lines: u64 },
    /// A PCI device was removed from the bus or added to it (a uevent): `slot` is its
    /// address (`0000:03:00.0`), checked for its form only. Whether it is a GPU, the GPU
    /// inventory says.
    Pci { slot: String, added: bool },
    /// The kernel log was read up to this record: every error before it was handed over
    /// above. The monitor saves it as the resume cursor once it has durably recorded what
    /// those errors caused: the sources never save it themselves, or a crash
    /// between reading a record and spooling its warning would lose the warning for good.
    KmsgRead(Cursor),
}

/// Where the sink is gone (the monitor stopped) it returns false and the source stops.
pub type Sink = Arc<dyn Fn(KernelEvent) -> bool + Send + Sync>;
