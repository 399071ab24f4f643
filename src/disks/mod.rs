//! Disk failures: the monitor thread, the pure rules that turn what it sees into warnings,
//! the predictive (SMART trend) rules and the inventory of known disks.

pub(crate) mod health;
pub mod inventory;
pub mod monitor;
pub(crate) mod predictive;
pub(crate) mod reason;
pub mod rules;
