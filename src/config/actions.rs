//! The `[actions]` section: the rig's allow-list. Nothing the gateway sends can enable
//! actions or add one; what runs is fixed here.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::config::ConfigError;
use crate::config::duration::format_duration;
use crate::config::error::{Found, quoted};
use crate::config::keys;
use crate::config::section::{Section, Spot};

/// Longest action name; names are `[A-Za-z0-9_-]`, so they are safe in logs and file names.
pub const MAX_NAME_LEN: usize = 64;
/// Bounds of `timeout`: a command that needs more than an hour is not a remote action.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// `min_interval` above a week is surely a typo (`"10d"` meant `"10m"`).
const MAX_MIN_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionsConfig {
    /// Default false: monitoring only.
    pub enabled: bool,
    /// Runs at once, all actions together: each is a process and a thread. Default 4.
    pub max_concurrent: usize,
    pub actions: BTreeMap<String, ActionSpec>,
}

/// Default of `max_concurrent`: a restart, a reboot and a couple of diagnostics at once.
pub const DEFAULT_MAX_CONCURRENT: usize = 4;
const MAX_MAX_CONCURRENT: i64 = 16;

impl Default for ActionsConfig {
    fn default() -> Self {
        ActionsConfig { enabled: false, max_concurrent: DEFAULT_MAX_CONCURRENT, actions: BTreeMap::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSpec {
    /// `command[0]` absolute, checked to exist and be executable at load.
    pub command: Vec<String>,
    /// Killed (with its process group) after this long. Default 60 s.
    pub timeout: Duration,
    /// Least time between two starts, kept across restarts. Default 0.
    pub min_interval: Duration,
}

impl ActionsConfig {
    /// The names the gateway may ask for: none when actions are disabled.
    pub fn allowed(&self) -> Vec<String> {
        if self.enabled { self.actions.keys().cloned().collect() } else { Vec::new() }
    }

    /// The section as `check` prints it.
    pub fn render(&self) -> String {
        // Every field named (no `..`): a new key does not compile until it is rendered.
        let ActionsConfig { enabled, max_concurrent, actions } = self;
        let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let mut out = format!("\n[actions]\nenabled = {enabled}\nmax_concurrent = {max_concurrent}\n");
        if actions.is_empty() {
            out += "# no actions listed\n";
        }
        for (name, ActionSpec { command, timeout, min_interval }) in actions {
            let cmd: Vec<String> = command.iter().map(|c| q(c)).collect();
            out += &format!(
                "[actions.{name}]\ncommand = [{}]\ntimeout = \"{}\"\nmin_interval = \"{}\"\n",
                cmd.join(", "),
                format_duration(*timeout),
                format_duration(*min_interval)
            );
        }
        out
    }
}

/// Whether `name` is a well-formed action name (config keys and requests alike).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(crate) fn read_actions(s: &Section, f: &mut Found) -> Option<ActionsConfig> {
    let enabled = f.ok(s.bool_or("enabled", false));
    let max_concurrent = f.ok(s.int_or("max_concurrent", DEFAULT_MAX_CONCURRENT as i64, 1, MAX_MAX_CONCURRENT));
    let mut actions = Some(BTreeMap::new());
    for key in s.keys() {
        if keys::ACTIONS.contains(&key.as_str()) {
            continue;
        }
        if !s.is_table(&key) {
            let elsewhere = keys::elsewhere(&key, "actions");
            let fix = if elsewhere.is_empty() {
                format!("actions are sections: write [actions.{key}] with command = [\"/absolute/path\", ...]")
            } else {
                format!("move it to {}", elsewhere.join(" or "))
            };
            f.push(s.err_at(&key, "unknown key", &fix));
            actions = None;
            continue;
        }
        if !valid_name(&key) {
            f.push(s.err_at(
                &key,
                "is not a usable action name",
                &format!("use 1 to {MAX_NAME_LEN} letters, digits, '_' or '-'"),
            ));
            actions = None;
            continue;
        }
        let spec = f.ok(s.table(&key)).and_then(|t| read_action(&t, f));
        match (spec, actions.as_mut()) {
            (Some(spec), Some(a)) => {
                a.insert(key, spec);
            }
            _ => actions = None,
        }
    }
    Some(ActionsConfig { enabled: enabled?, max_concurrent: max_concurrent? as usize, actions: actions? })
}

fn read_action(s: &Section, f: &mut Found) -> Option<ActionSpec> {
    s.deny(keys::ACTION, f);
    let example = "command = [\"/usr/bin/systemctl\", \"restart\", \"miner.service\"]";
    let command = f.ok(s.str_list("command")).and_then(|command| {
        let Some(command) = command else {
            f.push(s.err_missing("command", "is required and missing", &format!("add `{example}`")));
            return None;
        };
        let Some(program) = command.first() else {
            f.push(s.err_at("command", "is empty", &format!("write it as {example}")));
            return None;
        };
        if !Path::new(program).is_absolute() {
            f.push(s.err_at(
                "command",
                &format!("{} is not an absolute path (no PATH lookup, no shell)", quoted(program)),
                &format!("write the full path, e.g. {example}"),
            ));
            return None;
        }
        // Whether it exists and is executable is checked by the config's resolve step
        // (`check_command`), so that this reader stays pure.
        Some(command)
    });
    // Capped here rather than by duration_or, with their own words.
    let timeout = f.ok(s.duration_or("timeout", DEFAULT_TIMEOUT, MIN_TIMEOUT, Duration::MAX));
    let timeout = at_most(
        s,
        f,
        "timeout",
        timeout,
        MAX_TIMEOUT,
        ("an hour", "use at most \"1h\"; a longer job is not a remote action"),
    );
    let min_interval = f.ok(s.duration_or("min_interval", Duration::ZERO, Duration::ZERO, Duration::MAX));
    let min_interval = at_most(
        s,
        f,
        "min_interval",
        min_interval,
        MAX_MIN_INTERVAL,
        ("a week", "use at most \"7d\" (did you mean minutes, \"10m\"?)"),
    );
    Some(ActionSpec { command: command?, timeout: timeout?, min_interval: min_interval? })
}

/// `d` when it is at most `max`; else refused at `key` as longer than `words.0`, with the
/// fix `words.1`.
fn at_most(
    s: &Section,
    f: &mut Found,
    key: &str,
    d: Option<Duration>,
    max: Duration,
    words: (&str, &str),
) -> Option<Duration> {
    let d = d?;
    if d > max {
        f.push(s.err_at(key, &format!("{} is longer than {}", format_duration(d), words.0), words.1));
        return None;
    }
    Some(d)
}

/// The resolve step's check of `command[0]` (an absolute path, per `read_action`): it must
/// exist and be executable, or the first run would fail where only the log shows it.
pub(crate) fn check_command(program: &str, at: &Spot) -> Result<(), ConfigError> {
    match fs::metadata(program) {
        Err(e) => Err(at.err(&format!("{} cannot be used ({e})", quoted(program)), "install it or correct the path")),
        Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => Err(at.err(
            &format!("{} is not an executable file", quoted(program)),
            &format!("chmod +x {}, or point at the program itself", crate::protocol::escape::escape(program)),
        )),
        Ok(_) => Ok(()),
    }
}
