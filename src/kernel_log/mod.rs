//! The kernel log (`/dev/kmsg`) as both halves read it: its records ([`record`]), reading
//! them from an open file or stream ([`reader`]), where a reader resumes ([`cursor`]), where
//! the records come from ([`feed`]), and which records mean a failing disk
//! ([`disk_error`]). The privileged half opens the log and streams it; the agent
//! attributes what it recognises to disks (`events`). Both import this folder, and neither
//! half's folder imports the other's for it.

pub mod cursor;
pub mod disk_error;
pub mod feed;
pub mod reader;
pub mod record;

pub use disk_error::{DiskError, Subject};
pub use record::Record;
