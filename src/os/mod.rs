//! Operating-system plumbing with no agent logic: signals, the wake pipe, sd_notify, the
//! capability drop, the child-process runner, size-bounded reads, sysfs/procfs attributes,
//! the mount table, durable writes (now or on a writer thread) and the agent's small state
//! files.

pub(crate) mod bounded_read;
pub mod caps;
pub mod child;
pub mod deferred_write;
pub mod durable;
pub mod local_socket;
pub mod mountinfo;
pub(crate) mod notify;
pub mod orphans;
pub mod signals;
pub mod state_file;
pub(crate) mod sysfs;
pub mod wake;
