//! Disk failures: the pure rules that turn what the monitor sees into failure conditions,
//! the predictive (SMART trend) rules, the inventory of known disks, and the verdicts the
//! queries read. The monitor thread that applies them is `monitor`.

pub mod health;
pub mod inventory;
pub(crate) mod predictive;
pub mod rules;
