//! The TOML config: raw text → validated [`Config`].
//!
//! The file is read with toml's spanned parser and walked key by key, so every refusal names
//! the file, the line, the full key (`gateway.max_message_bytes`) and the fix. Unknown keys are
//! refused with a "did you mean" hint: a typo in a fleet config must not pass silently.
//!
//! # Adding a key
//!
//! Add the field to its section's struct (`structs.rs`, or `actions.rs` for `[actions]`),
//! with its default in the doc comment, and build: every place that must decide about each
//! field names them all (no `..` in its patterns, every field in its struct literals), so
//! the compiler lists what is left to do (E0027 "pattern does not mention field", E0063
//! "missing field"):
//!
//! - `read.rs`: the section's reader builds the struct, or for `[device]` and `[gateway]`
//!   their parsed form (`ParsedDevice`, `ParsedGateway` in `resolve.rs`, which get the field
//!   too): read the key there, with its default and bounds.
//! - `resolve.rs`, `Parsed::resolve_as`: the copy from what was parsed to the `Config` the
//!   agent runs with; a key that names a file is read or checked here (its line in `Spots`).
//! - `structs.rs`, `Config::connection_differs` (and `paths_differ` for `[paths]`): does a
//!   reload that changes the key need a new connection? Compare it, or name it `_` with the
//!   reason it does not.
//! - `render.rs`, `Config::render`: how `rig-agent check` shows it; a secret is masked.
//!
//! Two places the compiler cannot point at: `keys.rs`, the section's list of keys (a config
//! that sets the new key is refused as unknown until it is listed, so write the test that
//! sets it; `render_output_is_accepted_back_as_config` also reads `check`'s output back),
//! and the code that uses the key, including what a reload does with it when it does not
//! reconnect (`runner/reload.rs` and the reload hook the agent's wiring sets). Then give it
//! its row in the configuration reference.

pub mod actions;
pub(crate) mod duration;
mod error;
pub(crate) mod keys;
pub mod proxy;
mod read;
pub mod recovery;
mod render;
mod resolve;
pub(crate) mod section;
pub mod sources;
mod structs;
pub mod tls;
pub mod url;

use std::path::Path;

use toml::de::DeTable;

use crate::config::duration::format_duration;
use crate::config::section::{Doc, Section};
use error::Found;
pub use error::{ConfigError, ConfigErrors};
use read::*;
pub use resolve::Parsed;
use resolve::*;
pub use structs::*;

/// The gateway host of the example config (systemd/rig-agent.toml), refused as a
/// placeholder like its `hardware_id = "CHANGE-ME"`.
pub(crate) const EXAMPLE_HOST: &str = "gateway.example.com";

/// Where `rig-agent` looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/rig-agent/rig-agent.toml";

/// Where the privileged half listens unless `paths.privileged_socket` says otherwise; its
/// unit's `RuntimeDirectory=` creates the folder.
pub(crate) const DEFAULT_PRIVILEGED_SOCKET: &str = "/run/rig-agent-privileged/sock";

/// Where installed updates live unless `paths.update_dir` says otherwise; the package's
/// postinst creates it, root-owned.
pub const DEFAULT_UPDATE_DIR: &str = "/var/lib/rig-agent-update";

/// The default of `update.max_bytes`.
pub(crate) const DEFAULT_UPDATE_MAX_BYTES: u64 = 64 << 20;

/// A minisign public key from `update.keys` (the base64 line of its `.pub` file), or why it
/// is not one. The config refuses a key this refuses, so later users may rely on it.
pub fn update_key(b64: &str) -> Result<minisign_verify::PublicKey, String> {
    minisign_verify::PublicKey::from_base64(b64.trim()).map_err(|e| match e {
        minisign_verify::Error::UnsupportedAlgorithm => "not an Ed25519 minisign key".to_string(),
        _ => "not 42 bytes of base64".to_string(),
    })
}

/// The shortest `disks.io_error_quiet`: at least four of the kernel log reader's rate-limit
/// windows (`events::kmsg_job::PASS_EVERY`, checked there at compile time), or the first
/// line of a new storm could be held back as part of the one that just ended.
pub(crate) const MIN_IO_ERROR_QUIET: std::time::Duration = std::time::Duration::from_secs(1);

impl Config {
    /// Reads, validates and prepares everything the agent needs from `file`: the token, the
    /// TLS material and the state directory (created if missing).
    pub fn load(file: &Path) -> Result<Config, ConfigErrors> {
        let src = read_config(file)?;
        Config::parse(file, &src)?.resolve_as(StateDir::Create)
    }

    /// As [`Config::load`], for `rig-agent check`: nothing is created. A missing `state_dir`
    /// is judged by whether its nearest existing parent is writable, and noted in
    /// [`Config::render`].
    pub fn load_for_check(file: &Path) -> Result<Config, ConfigErrors> {
        let src = read_config(file)?;
        Config::parse(file, &src)?.resolve_as(StateDir::Inspect)
    }

    /// What `rig-agent privileged` needs of the config: `[disks]`, `[paths]` and `[update]`, parsed and
    /// checked like the rest of the file but with nothing read on their behalf. That half
    /// never holds the token or the TLS keys, and never touches the state directory.
    pub fn load_for_privileged(file: &Path) -> Result<PrivilegedConfig, ConfigErrors> {
        let src = read_config(file)?;
        let parsed = Config::parse(file, &src)?;
        Ok(PrivilegedConfig { disks: parsed.disks, paths: parsed.paths, update: parsed.update })
    }

    /// The text `src` of the config file `file`, validated, with nothing read from the file
    /// system (no token, no PEM file, no state directory): any refusal names `file`, the line,
    /// the key and the fix. `file` also anchors relative paths. [`Parsed::resolve`] then
    /// reads what the keys point at.
    pub fn parse(file: &Path, src: &str) -> Result<Parsed, ConfigErrors> {
        let doc = Doc::new(file, src);
        let root = DeTable::parse(src).map_err(|e| doc.syntax_error(&e))?;
        let top = Section::root(&doc, root.get_ref());
        // Every section is read, whatever the ones before it held, so that one run names
        // every mistake.
        let mut f = Found::default();
        top.deny(keys::TOP, &mut f);
        let device_s = f.ok(top.table("device"));
        let device = device_s.as_ref().and_then(|s| read_device(s, &mut f));
        let gateway_s = f.ok(top.table("gateway"));
        let gateway = gateway_s.as_ref().and_then(|s| read_gateway(s, &mut f));
        let heartbeat = f.ok(top.table("heartbeat")).and_then(|s| read_heartbeat(&s, &mut f));
        let reconnect = f.ok(top.table("reconnect")).and_then(|s| read_reconnect(&s, &mut f));
        let disks_s = f.ok(top.table("disks"));
        let disks = disks_s.as_ref().and_then(|s| read_disks(s, &mut f));
        let warning = f.ok(top.table("warning")).and_then(|s| read_warning(&s, &mut f));
        let maintenance = f.ok(top.table("maintenance")).and_then(|s| read_maintenance(&s, &mut f));
        let paths_s = f.ok(top.table("paths"));
        let paths = paths_s.as_ref().and_then(|s| read_paths(s, &mut f));
        let probes = f.ok(top.table("probes")).and_then(|s| read_probes(&s, &mut f));
        let gpus = f.ok(top.table("gpus")).and_then(|s| read_gpus(&s, &mut f));
        let actions_s = f.ok(top.table("actions"));
        let actions = actions_s.as_ref().and_then(|s| crate::config::actions::read_actions(s, &mut f));
        let recovery = f.ok(top.table("recovery")).and_then(|s| recovery::read_recovery(&s, &mut f));
        if let (Some((r, spots)), Some(a)) = (&recovery, &actions) {
            for e in recovery::check_steps(r, spots, a) {
                f.push(e);
            }
        }
        let update = f.ok(top.table("update")).and_then(|s| read_update(&s, &mut f));

        let parsed = (|| {
            let (device_s, gateway_s, disks_s, paths_s, actions_s) =
                (device_s?, gateway_s?, disks_s?, paths_s?, actions_s?);
            let actions = actions?;
            let commands = actions
                .actions
                .keys()
                .map(|name| actions_s.table(name).ok().map(|t| t.spot("command")))
                .collect::<Option<Vec<_>>>()?;
            Some(Parsed {
                file: file.to_path_buf(),
                device: device?,
                gateway: gateway?,
                heartbeat: heartbeat?,
                reconnect: reconnect?,
                disks: disks?,
                warning: warning?,
                paths: paths?,
                probes: probes?,
                gpus: gpus?,
                actions,
                maintenance: maintenance?,
                recovery: recovery?.0,
                update: update?,
                spots: Spots {
                    token: device_s.spot("token"),
                    token_file: device_s.spot("token_file"),
                    ca_file: gateway_s.spot("ca_file"),
                    client_cert: gateway_s.spot("client_cert"),
                    client_key: gateway_s.spot("client_key"),
                    proxy: gateway_s.spot("proxy"),
                    state_dir: paths_s.spot("state_dir"),
                    smartctl: disks_s.spot("smartctl"),
                    commands,
                },
            })
        })();
        f.finish(parsed, file)
    }
}

#[cfg(test)]
pub(crate) mod tests;
