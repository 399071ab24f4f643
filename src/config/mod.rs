//! The TOML config: raw text → validated [`Config`].
//!
//! The file is read with toml's spanned parser and walked key by key, so every refusal names
//! the file, the line, the full key (`gateway.max_message_bytes`) and the fix. Unknown keys are
//! refused with a "did you mean" hint: a typo in a fleet config must not pass silently.

pub(crate) mod duration;
pub(crate) mod error;
mod read;
mod render;
mod resolve;
pub(crate) mod section;
mod structs;

use std::path::Path;
use std::time::Duration;

use toml::de::DeTable;

use crate::config::duration::format_duration;
use crate::config::section::{Doc, Section};
pub use error::ConfigError;
use read::*;
pub use resolve::Parsed;
use resolve::*;
pub use structs::*;

/// The gateway host of the example config (systemd/rig-agent.toml), refused as a
/// placeholder like its `hardware_id = "CHANGE-ME"`.
pub(crate) const EXAMPLE_HOST: &str = "gateway.example.com";

/// Where `rig-agent` looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/rig-agent/rig-agent.toml";

impl Config {
    /// Reads, validates and prepares everything the agent needs from `file`: the token, the
    /// TLS material and the state directory (created if missing).
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let src = read_config(file)?;
        Config::parse(file, &src)?.resolve_as(StateDir::Create)
    }

    /// As [`Config::load`], for `rig-agent check`: nothing is created. A missing `state_dir`
    /// is judged by whether its nearest existing parent is writable, and noted in
    /// [`Config::render`].
    pub fn load_for_check(file: &Path) -> Result<Config, ConfigError> {
        let src = read_config(file)?;
        Config::parse(file, &src)?.resolve_as(StateDir::Inspect)
    }

    /// What `rig-agent privileged` needs of the config: `[disks]` and `[paths]`, parsed and
    /// checked like the rest of the file but with nothing read on their behalf. That half
    /// never holds the token or the TLS keys, and never touches the state directory.
    pub fn load_for_privileged(file: &Path) -> Result<PrivilegedConfig, ConfigError> {
        let src = read_config(file)?;
        let parsed = Config::parse(file, &src)?;
        Ok(PrivilegedConfig { disks: parsed.disks, paths: parsed.paths })
    }

    /// The text `src` of the config file `file`, validated, with nothing read from the file
    /// system (no token, no PEM file, no state directory): any refusal names `file`, the line,
    /// the key and the fix. `file` also anchors relative paths. [`Parsed::resolve`] then
    /// reads what the keys point at.
    pub fn parse(file: &Path, src: &str) -> Result<Parsed, ConfigError> {
        let doc = Doc::new(file, src);
        let root = DeTable::parse(src).map_err(|e| doc.syntax_error(&e))?;
        let mut top = Section::root(&doc, root.get_ref());
        top.deny_unknown(&[
            "device",
            "gateway",
            "heartbeat",
            "reconnect",
            "disks",
            "warning",
            "paths",
            "probes",
            "actions",
        ])?;

        let mut section = top.table("device")?;
        let device = read_device(&mut section)?;
        let (token, token_file) = (section.spot("token"), section.spot("token_file"));
        let mut section = top.table("gateway")?;
        let gateway = read_gateway(&mut section)?;
        let (ca_file, client_cert, client_key) =
            (section.spot("ca_file"), section.spot("client_cert"), section.spot("client_key"));
        let heartbeat = read_heartbeat(&mut top.table("heartbeat")?)?;
        let reconnect = read_reconnect(&mut top.table("reconnect")?)?;
        let mut section = top.table("disks")?;
        let disks = read_disks(&mut section)?;
        let smartctl = section.spot("smartctl");
        let warning = WarningConfig {
            resend_after: top.table("warning")?.deny(&["resend_after"])?.duration_or(
                "resend_after",
                Duration::from_secs(60),
                Duration::from_millis(10),
                DAY,
            )?,
        };
        let mut section = top.table("paths")?;
        let paths = read_paths(&mut section)?;
        let state_dir = section.spot("state_dir");
        let probes = read_probes(&mut top.table("probes")?)?;

        let mut section = top.table("actions")?;
        let actions = crate::actions::config::read_actions(&mut section)?;
        let commands =
            actions.actions.keys().map(|name| Ok(section.table(name)?.spot("command"))).collect::<Result<_, _>>()?;

        Ok(Parsed {
            file: file.to_path_buf(),
            device,
            gateway,
            heartbeat,
            reconnect,
            disks,
            warning,
            paths,
            probes,
            actions,
            spots: Spots { token, token_file, ca_file, client_cert, client_key, state_dir, smartctl, commands },
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
