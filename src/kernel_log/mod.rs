//! The kernel log (`/dev/kmsg`) as both halves read it: its records ([`record`]), reading
//! them from an open file or stream ([`reader`]), where a reader resumes ([`cursor`]), where
//! the records come from ([`feed`]), which records mean a failing disk ([`disk_error`])
//! and which a GPU in trouble ([`gpu_error`], with NVIDIA's Xid codes in [`xid`]). The
//! privileged half opens the log and forwards whole only the records [`needed`] names; the
//! agent attributes those to disks and GPUs (`events`). Both import this folder, and
//! neither half's folder imports the other's for it.

pub mod cursor;
pub mod disk_error;
pub mod feed;
pub mod gpu_error;
pub mod reader;
pub mod record;
mod scan;
mod task_report;
pub mod xid;

use record::Record;

/// Whether the agent needs this record: the one question the privileged half asks before
/// forwarding a record whole. Every other record goes out as its header alone
/// ([`Record::without_message`]), so any process that may ask the privileged half for the
/// kernel log (its own uid's, an action's command among them) learns no more of it than
/// what the agent acts on. A new kind of record the agent reads is added here.
pub fn needed(r: &Record) -> bool {
    disk_error::recognise(r).is_some() || gpu_error::recognise(r).is_some()
}
