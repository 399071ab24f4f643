//! Disk and GPU failures at kernel speed: the kernel log (`/dev/kmsg`) and block and PCI
//! device uevents (`NETLINK_KOBJECT_UEVENT`), read on their own threads and handed to the
//! monitor as [`kernel_event::KernelEvent`]s. The kernel log's records and their
//! recognisers live in `kernel_log`, which the privileged half (that reads `/dev/kmsg` for
//! the agent) shares; this folder attributes what is recognised to disks through sysfs
//! (GPU records name their PCI address themselves) and feeds the monitor.

pub mod attribution;
pub mod kernel_event;
pub(crate) mod kmsg_job;
pub mod source_status;
pub mod sources;
pub mod storm;
pub mod uevent;
pub mod uevent_listener;

/// Longest kernel line quoted in a warning's `detail` or a log line, in characters.
pub const QUOTE_CHARS: usize = 200;
