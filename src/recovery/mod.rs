//! Automatic recovery (PROTOCOL.md §9, opt-in): a ladder of the rig's own actions per
//! warning reason, taken step by step while the episode stays open, within a budget kept
//! across reboots, never in maintenance. [`ladder`] decides (no IO, tested with a fake
//! clock); [`driver`] is the thread that listens to the monitors' episode events, keeps the
//! state durable, runs the steps through the actions' runner and reports them.

pub mod driver;
pub mod ladder;
