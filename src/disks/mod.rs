//! Disk failures: the monitor thread, the pure rules that turn what it sees into warnings,
//! the predictive (SMART trend) rules, the inventory of known disks, and what a restarted
//! monitor takes over from the spool.

pub mod health;
pub mod inventory;
pub mod monitor;
pub(crate) mod predictive;
pub mod reason;
pub(crate) mod restart;
pub mod rules;
