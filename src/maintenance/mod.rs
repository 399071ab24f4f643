//! Maintenance (PROTOCOL.md §9): a window during which no automatic recovery step or update
//! starts and warnings still go out, marked `"maintenance": true`. Set on the rig with
//! `rig-agent maintenance on 2h|off|status` ([`client`], over a socket in the state
//! directory) or by the console's `set_maintenance` ([`console`], where the config allows
//! it). One thread owns the window ([`control`]): it keeps it in the state directory
//! ([`state`]) and ends it on time. Everything else reads it through
//! [`AgentStatus::maintenance`](crate::status::AgentStatus).

pub mod client;
pub mod console;
pub mod control;
pub mod state;
pub mod wire;
