//! Failure episodes of the things the agent watches, disks and GPUs alike: why one fails
//! ([`reason`]), what it is about ([`subject`]), one episode as the state files keep it
//! ([`episode`]), how the conditions of a scan open and close episodes ([`condition`]), and
//! the events the rest of the agent subscribes to ([`event`]). No IO: the monitor reads and
//! writes; this is what it reasons with, and what other parts may read without importing it.

pub mod condition;
pub mod episode;
pub mod event;
pub mod ledger;
pub mod reason;
pub mod subject;
