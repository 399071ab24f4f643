//! rig-agent: the agent on every mining rig's controller board. One wss connection to the
//! farm's operations gateway; login, heartbeats, hardware queries, disk-failure warnings.
//! See PROTOCOL.md (the wire contract) and DESIGN.md (the architecture) in `../shared/`,
//! and `NOTES.md` here for decisions taken beyond them.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod config;
mod config_section;
pub mod duration;
pub mod logging;
pub mod probes;
pub mod protocol;
pub mod queries;
pub mod runner;
pub mod session;
pub mod signals;
pub mod status;
pub mod tls;
pub mod transport;
pub mod url;
pub mod wake;
pub mod workers;

use std::sync::Arc;

pub use config::{Config, ConfigError};
pub use runner::Runner;

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
    /// EX_CONFIG: the config is wrong; the unit does not restart on it.
    pub const CONFIG: i32 = 78;
}

/// A runner with the standard query catalogue, as the binary runs it.
pub fn standard_runner(cfg: Config) -> std::io::Result<Runner> {
    let status = Arc::new(status::AgentStatus::new(cfg.file.clone()));
    let catalogue = queries::Catalogue::standard(&cfg, Arc::clone(&status));
    Runner::new(Arc::new(cfg), catalogue, status)
}
