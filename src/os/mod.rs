//! Operating-system plumbing with no agent logic: signals, the wake pipe, sd_notify, the
//! child-process runner and size-bounded reads.

pub mod bounded_read;
pub mod child;
pub mod notify;
pub mod signals;
pub mod wake;
