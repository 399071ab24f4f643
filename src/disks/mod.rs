//! Disk failures: the monitor thread, the pure rules that turn what it sees into warnings,
//! the predictive (SMART trend) rules and the inventory of known disks.

pub mod health;
pub mod inventory;
pub mod monitor;
pub mod predictive;
pub mod reason;
pub mod rules;
