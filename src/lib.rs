//! rig-agent: the agent on every mining rig's controller board. One wss connection to the
//! farm's operations gateway; login, heartbeats, hardware queries, disk-failure warnings.
//! The wire contract, as a gateway author needs it, is `docs/PROTOCOL.md`; the decisions
//! taken beyond it, and the map of the parts, are in `docs/architecture.md`.

#![forbid(unsafe_code)]

pub mod actions;
pub mod agent;
pub(crate) mod backoff;
pub mod clock;
pub mod config;
pub mod disks;
pub mod episodes;
pub mod events;
pub mod gpus;
pub mod jobs;
pub mod kernel_log;
pub mod logging;
pub mod maintenance;
pub mod monitor;
pub mod net;
pub mod os;
pub mod outbox;
pub mod privileged;
pub mod privileged_client;
pub mod probes;
pub mod protocol;
pub mod queries;
pub mod recovery;
pub mod runner;
pub mod session;
pub mod status;

/// The agent's version, as `--version`, the login and `get_agent_info` report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit codes of the binary.
pub mod exit {
    /// Clean stop (SIGTERM/SIGINT), or a command that succeeded.
    pub const OK: i32 = 0;
    /// Anything else fatal.
    pub const FAILURE: i32 = 1;
    /// EX_USAGE: the command line is wrong.
    pub const USAGE: i32 = 64;
    /// EX_UNAVAILABLE: `rig-agent maintenance` found no running agent for its config.
    pub const UNAVAILABLE: i32 = 69;
    /// EX_CONFIG: the config is wrong; the unit does not restart on it.
    pub const CONFIG: i32 = 78;
}
