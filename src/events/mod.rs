//! Disk failures at kernel speed (issue 13): the kernel log (`/dev/kmsg`) and block-device
//! uevents (`NETLINK_KOBJECT_UEVENT`), read on their own threads and handed to the monitor
//! as [`DiskEvent`]s. Parsing (pure, fixture-tested) is apart from reading, so the kmsg read
//! can move into a privileged process (issue 12) and hand over records or an open fd.

pub mod attribution;
pub mod disk_event;
pub mod kernel_error;
pub mod kmsg_feed;
pub(crate) mod kmsg_job;
pub mod kmsg_reader;
pub mod kmsg_record;
pub mod resume;
pub mod source_status;
pub mod sources;
pub mod sources_config;
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
