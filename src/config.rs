//! The TOML config: raw text → validated [`Config`].
//!
//! The file is read with toml's spanned parser and walked key by key, so every refusal names
//! the file, the line, the full key (`gateway.max_message_bytes`) and the fix. Unknown keys are
//! refused with a "did you mean" hint: a typo in a fleet config must not pass silently.

use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::de::DeTable;

use crate::bounded_read::{self, Links};
use crate::config_section::{Doc, Section};
use crate::duration::format_duration;
use crate::tls;
use crate::url::GatewayUrl;

// Largest values of the duration keys: far beyond any sane setting, and small enough that
// `Instant + duration` cannot overflow (a panic, exit 101) whatever the clock.
const TEN_MINUTES: Duration = Duration::from_secs(600);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// The gateway host of the example config (systemd/rig-agent.toml), refused as a
/// placeholder like its `hardware_id = "CHANGE-ME"`.
pub const EXAMPLE_HOST: &str = "gateway.example.com";

/// Where `rig-agent` looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/rig-agent/rig-agent.toml";

/// The config was refused. The caller should print it and exit 78 (EX_CONFIG): retrying
/// with the same file cannot succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line of the offending key or value, when it is in the file.
    pub line: Option<usize>,
    /// Dotted key path (`gateway.urls`), when one key is at fault.
    pub key: Option<String>,
    pub problem: String,
    pub fix: String,
}

impl ConfigError {
    fn render(&self) -> String {
        let mut s = format!("config error in {}", self.file.display());
        if let Some(line) = self.line {
            s.push_str(&format!(", line {line}"));
        }
        if let Some(key) = &self.key {
            s.push_str(&format!(", key `{key}`"));
        }
        format!("{s}: {}. Fix: {}", self.problem, self.fix)
    }
}

/// The token, kept out of every `Debug`, `Display` and log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Token(value.into())
    }
    /// The only way to see the secret: used when building the login message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; shown by `get_agent_info` and in errors.
    pub file: PathBuf,
    pub device: DeviceConfig,
    pub gateway: GatewayConfig,
    pub heartbeat: HeartbeatConfig,
    pub reconnect: ReconnectConfig,
    pub disks: DisksConfig,
    pub warning: WarningConfig,
    pub paths: PathsConfig,
    pub probes: ProbesConfig,
}

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The rig's identity, sent as `hardware_id` on every message. Required.
    pub hardware_id: String,
    /// Display name sent at login. Default: `hardware_id`.
    pub name: String,
    /// From `token` or the first line of `token_file` (exactly one of the two).
    pub token: Token,
    /// `token_file` when the token came from a file, for `check` to print.
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Tried round robin. Required, at least one; `wss://` unless `allow_plaintext`.
    pub urls: Vec<GatewayUrl>,
    /// Trust only the CAs in this PEM file instead of webpki-roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and key (PEM) for gateways that authenticate by mTLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// DNS + TCP connect limit; TLS + upgrade get the same again. Default 10 s.
    pub connect_timeout: Duration,
    /// Time allowed for the login `return`. Default 10 s.
    pub login_timeout: Duration,
    /// Allow `ws://` URLs (labs only). Default false.
    pub allow_plaintext: bool,
    /// Larger incoming messages close the connection with 1009. Default 1 MiB.
    pub max_message_bytes: usize,
    /// Sent as `Sec-WebSocket-Protocol` when set.
    pub subprotocol: Option<String>,
    /// The rustls client config built from the keys above (ring provider, TLS 1.2/1.3).
    pub tls: Arc<rustls::ClientConfig>,
    /// A digest of the PEM files behind `tls`: a reload that changes a certificate but not
    /// its path still counts as a change of the connection settings.
    pub tls_digest: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct HeartbeatConfig {
    /// Time between heartbeats after login. Default 30 s.
    pub interval: Duration,
    /// No frame of any kind for this long = dead connection. Default 90 s; > interval.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct ReconnectConfig {
    /// Cap of the first wait. Default 1 s.
    pub initial: Duration,
    /// Largest cap; also the least wait after a rejected login. Default 60 s.
    pub max: Duration,
}

#[derive(Debug, Clone)]
pub struct DisksConfig {
    /// Time between disk-health scans. Default 60 s.
    pub scan_interval: Duration,
    /// Globs on `/sys/block` names of the disks to monitor.
    pub include: Vec<String>,
    /// Globs removed from `include`. Default none.
    pub exclude: Vec<String>,
    /// Rise of `device/ioerr_cnt` between scans that counts as failing. Default 1.
    pub ioerr_threshold: u64,
    /// smartctl binary; empty disables SMART. Default "smartctl".
    pub smartctl: String,
    /// How long a SMART result is reused. Default 1 h.
    pub smart_interval: Duration,
    /// smartctl is killed after this long. Default 30 s.
    pub smart_timeout: Duration,
    /// A kernel I/O-error episode ends after this long without an error line. Default 10 min.
    pub io_error_quiet: Duration,
}

#[derive(Debug, Clone)]
pub struct ProbesConfig {
    /// nvidia-smi binary, found through `PATH` unless a path is given; empty disables the
    /// NVIDIA part of `get_gpu_info`. Default "nvidia-smi".
    pub nvidia_smi: String,
    /// nvidia-smi (and its process group) is killed after this long. Default 10 s.
    pub nvidia_smi_timeout: Duration,
    /// How long one nvidia-smi answer is reused, so a burst of queries runs it once.
    /// Default 2 s.
    pub nvidia_smi_interval: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct WarningConfig {
    /// Unacknowledged warnings are sent again after this long. Default 60 s.
    pub resend_after: Duration,
}

#[derive(Debug, Clone)]
pub struct PathsConfig {
    /// Spool and disk inventory; created if missing. Default /var/lib/rig-agent.
    pub state_dir: PathBuf,
    /// Why `state_dir` could not be written at load when the storage, not the config, is at
    /// fault (read-only or full file system): the agent runs anyway, keeps warnings in
    /// memory and writes them out when it can. `None` when it was writable.
    pub state_dir_problem: Option<String>,
    /// What `check` noticed without changing anything (a state directory not created yet).
    pub state_dir_note: Option<String>,
    /// Roots for the probes, as node_exporter's `--path.*` (tests and containers).
    pub sysfs: PathBuf,
    pub procfs: PathBuf,
    pub rootfs: PathBuf,
    /// The kernel log read for disk errors; a regular file or FIFO in tests. Default /dev/kmsg.
    pub kmsg: PathBuf,
    /// The privileged half's Unix socket (issue 12): smartctl runs there. `None` (set to
    /// "") runs smartctl in the agent itself. Default /run/rig-agent-privileged/sock.
    pub privileged_socket: Option<PathBuf>,
}

impl Config {
    /// Reads, validates and prepares everything the agent needs from `file`: the token, the
    /// TLS material and the state directory (created if missing).
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let src = read_config(file)?;
        Config::parse_as(file, &src, StateDir::Create)
    }

    /// As [`Config::load`], for `rig-agent check`: nothing is created. A missing `state_dir`
    /// is judged by whether its nearest existing parent is writable, and noted in
    /// [`Config::render`].
    pub fn load_for_check(file: &Path) -> Result<Config, ConfigError> {
        let src = read_config(file)?;
        Config::parse_as(file, &src, StateDir::Inspect)
    }

    /// As [`Config::load`], for `rig-agent privileged`: the state directory is neither
    /// created nor checked (that half never writes it, and its sandbox has it read-only).
    pub fn load_for_privileged(file: &Path) -> Result<Config, ConfigError> {
        let src = read_config(file)?;
        Config::parse_as(file, &src, StateDir::Ignore)
    }

    /// As [`Config::load`], from text already read; `file` is used in messages and to resolve
    /// relative paths.
    pub fn parse(file: &Path, src: &str) -> Result<Config, ConfigError> {
        Config::parse_as(file, src, StateDir::Create)
    }

    fn parse_as(file: &Path, src: &str, state_dir: StateDir) -> Result<Config, ConfigError> {
        let doc = Doc { file, src };
        let root = DeTable::parse(src).map_err(|e| doc.syntax_error(&e))?;
        let mut top = Section::root(&doc, root.get_ref());
        top.deny_unknown(&["device", "gateway", "heartbeat", "reconnect", "disks", "warning", "paths", "probes"])?;

        let device = read_device(&mut top.table("device")?)?;
        let gateway = read_gateway(&mut top.table("gateway")?)?;
        let heartbeat = read_heartbeat(&mut top.table("heartbeat")?)?;
        let reconnect = read_reconnect(&mut top.table("reconnect")?)?;
        let disks = read_disks(&mut top.table("disks")?)?;
        let warning = WarningConfig {
            resend_after: top.table("warning")?.deny(&["resend_after"])?.duration_or(
                "resend_after",
                Duration::from_secs(60),
                Duration::from_millis(10),
                DAY,
            )?,
        };
        let paths = read_paths(&mut top.table("paths")?, state_dir)?;
        let probes = read_probes(&mut top.table("probes")?)?;

        Ok(Config { file: file.to_path_buf(), device, gateway, heartbeat, reconnect, disks, warning, paths, probes })
    }

    /// The effective config as TOML, every default filled in and the token shown as `***`.
    /// This is what `rig-agent check` prints.
    pub fn render(&self) -> String {
        let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let p = |p: &Path| q(&p.display().to_string());
        let list = |v: &[String]| format!("[{}]", v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", "));
        let d = format_duration;
        let mut out = String::new();
        let g = &self.gateway;
        out += &format!("# effective config from {}\n", self.file.display());
        out += "[device]\n";
        out += &format!("hardware_id = {}\nname = {}\n", q(&self.device.hardware_id), q(&self.device.name));
        match &self.device.token_file {
            Some(f) => out += &format!("token_file = {}   # token: ***\n", p(f)),
            None => out += "token = \"***\"\n",
        }
        out += "\n[gateway]\n";
        let urls: Vec<String> = g.urls.iter().map(|u| u.as_str().to_string()).collect();
        out += &format!("urls = {}\n", list(&urls));
        for (k, v) in [("ca_file", &g.ca_file), ("client_cert", &g.client_cert), ("client_key", &g.client_key)] {
            match v {
                Some(v) => out += &format!("{k} = {}\n", p(v)),
                None => out += &format!("# {k} not set\n"),
            }
        }
        if g.ca_file.is_none() {
            out += "# trust: webpki-roots (Mozilla's CAs)\n";
        }
        out += &format!(
            "connect_timeout = \"{}\"\nlogin_timeout = \"{}\"\nallow_plaintext = {}\nmax_message_bytes = {}\n",
            d(g.connect_timeout),
            d(g.login_timeout),
            g.allow_plaintext,
            g.max_message_bytes
        );
        match &g.subprotocol {
            Some(sp) => out += &format!("subprotocol = {}\n", q(sp)),
            None => out += "# subprotocol not set\n",
        }
        out += &format!(
            "\n[heartbeat]\ninterval = \"{}\"\ntimeout = \"{}\"\n",
            d(self.heartbeat.interval),
            d(self.heartbeat.timeout)
        );
        out += &format!(
            "\n[reconnect]\ninitial = \"{}\"\nmax = \"{}\"\n",
            d(self.reconnect.initial),
            d(self.reconnect.max)
        );
        let k = &self.disks;
        out += &format!(
            "\n[disks]\nscan_interval = \"{}\"\ninclude = {}\nexclude = {}\nioerr_threshold = {}\nsmartctl = {}\nsmart_interval = \"{}\"\nsmart_timeout = \"{}\"\nio_error_quiet = \"{}\"\n",
            d(k.scan_interval),
            list(&k.include),
            list(&k.exclude),
            k.ioerr_threshold,
            q(&k.smartctl),
            d(k.smart_interval),
            d(k.smart_timeout),
            d(k.io_error_quiet)
        );
        out += &format!("\n[warning]\nresend_after = \"{}\"\n", d(self.warning.resend_after));
        let pa = &self.paths;
        out += &format!(
            "\n[paths]\nstate_dir = {}\nsysfs = {}\nprocfs = {}\nrootfs = {}\nkmsg = {}\nprivileged_socket = {}\n",
            p(&pa.state_dir),
            p(&pa.sysfs),
            p(&pa.procfs),
            p(&pa.rootfs),
            p(&pa.kmsg),
            pa.privileged_socket.as_deref().map_or_else(|| "\"\"".to_string(), p)
        );
        if let Some(note) = &pa.state_dir_note {
            out += &format!("# state_dir {note}\n");
        }
        if let Some(why) = &pa.state_dir_problem {
            out += &format!("# state_dir is not writable now ({why}): warnings are kept in memory until it is\n");
        }
        let pr = &self.probes;
        out += &format!(
            "\n[probes]\nnvidia_smi = {}\nnvidia_smi_timeout = \"{}\"\nnvidia_smi_interval = \"{}\"\n",
            q(&pr.nvidia_smi),
            d(pr.nvidia_smi_timeout),
            d(pr.nvidia_smi_interval)
        );
        out
    }
}

/// The config file's text; a file that cannot be read is a config error.
fn read_config(file: &Path) -> Result<String, ConfigError> {
    bounded_read::read_string(file, CONFIG_CAP, Links::Follow).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        line: None,
        key: None,
        fix: if e.is_not_found() {
            format!(
                "write a config there (see systemd/rig-agent.toml) or pass --config PATH \
                 (default {DEFAULT_PATH})"
            )
        } else {
            "make it a readable regular file of the agent's config".into()
        },
        problem: e.to_string(),
    })
}

/// Whether loading the config may create the state directory (running) or only look (`check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateDir {
    Create,
    Inspect,
    Ignore,
}

fn read_device(s: &mut Section) -> Result<DeviceConfig, ConfigError> {
    s.deny(&["hardware_id", "name", "token", "token_file"])?;
    let hardware_id = s.required_str("hardware_id", "hardware_id = \"rig-0042\"")?;
    if hardware_id.trim().is_empty() {
        return Err(s.err_at("hardware_id", "is empty", "set it to the rig's id as the gateway knows it"));
    }
    // It is the rig's key at the gateway and goes into every message: a stray space would
    // make a second, unknown rig.
    if hardware_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(s.err_at(
            "hardware_id",
            &format!("{hardware_id:?} contains white space or control characters"),
            "write the rig's id exactly as the gateway knows it, without spaces",
        ));
    }
    let name = s.str("name")?.unwrap_or_else(|| hardware_id.clone());
    let token = s.str("token")?;
    let token_file = s.path("token_file")?;
    let (token, token_file) = match (token, token_file) {
        (Some(_), Some(_)) => {
            return Err(s.err_at(
                "token",
                "both `token` and `token_file` are set",
                "keep one of them (token_file is better: the config can then be world-readable)",
            ));
        }
        (None, None) => {
            return Err(s.err_missing(
                "token_file",
                "neither `token_file` nor `token` is set",
                "add token_file = \"/etc/rig-agent/token\" (a file of mode 0600 holding the token)",
            ));
        }
        (Some(t), None) => {
            if t.trim().is_empty() {
                return Err(s.err_at("token", "is empty", "set the rig's token"));
            }
            // The same rule as for token_file: a secret readable by every local user is
            // refused. (Group-readable is fine here: the package's config is root:rig-agent 0640.)
            if let Ok(meta) = fs::metadata(s.file()) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o007 != 0 {
                    return Err(s.err_at(
                        "token",
                        &format!(
                            "the token is inline and {} is readable by others (mode {mode:04o})",
                            s.file().display()
                        ),
                        &format!("chmod o-rwx {}, or move the token to a token_file of mode 0600", s.file().display()),
                    ));
                }
            }
            (Token(t.trim().to_string()), None)
        }
        (None, Some(f)) => (read_token_file(s, &f)?, Some(f)),
    };
    // The example config ships this placeholder; a fleet of rigs all called CHANGE-ME would
    // overwrite each other at the gateway.
    if hardware_id == "CHANGE-ME" {
        return Err(s.err_at(
            "hardware_id",
            "is still the example's placeholder",
            "set it to the rig's id as the gateway knows it",
        ));
    }
    Ok(DeviceConfig { hardware_id, name, token, token_file })
}

/// The largest token file read: tokens are short; this only stops a wrong file (a log, an
/// image) from being held in memory whole.
pub const TOKEN_CAP: u64 = 64 << 10;

/// The largest config file read.
pub const CONFIG_CAP: u64 = 1 << 20;

fn read_token_file(s: &Section, file: &Path) -> Result<Token, ConfigError> {
    let key = "token_file";
    let contents = bounded_read::read(file, TOKEN_CAP, Links::Follow).map_err(|e| {
        let fix = match &e {
            _ if e.is_not_found() => "create the token file, or correct the path",
            bounded_read::ReadError::TooLarge { .. } | bounded_read::ReadError::NotRegular { .. } => {
                "point token_file at a regular file holding only the rig's token"
            }
            _ => "make it readable by the agent's user",
        };
        s.err_at(key, &e.to_string(), fix)
    })?;
    let mode = contents.mode & 0o777;
    if mode & 0o077 != 0 {
        return Err(s.err_at(
            key,
            &format!("{} is readable by group or others (mode {mode:04o})", file.display()),
            &format!("chmod 600 {}", file.display()),
        ));
    }
    let text = contents
        .into_string(file)
        .map_err(|e| s.err_at(key, &e.to_string(), "write the rig's token on its first line"))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(s.err_at(key, &format!("{} is empty", file.display()), "write the rig's token on its first line"));
    }
    Ok(Token(token.to_string()))
}

fn read_gateway(s: &mut Section) -> Result<GatewayConfig, ConfigError> {
    s.deny(&[
        "urls",
        "ca_file",
        "client_cert",
        "client_key",
        "connect_timeout",
        "login_timeout",
        "allow_plaintext",
        "max_message_bytes",
        "subprotocol",
    ])?;
    let allow_plaintext = s.bool_or("allow_plaintext", false)?;
    let Some(raw_urls) = s.str_list("urls")? else {
        return Err(s.err_missing("urls", "no gateway URL", "add urls = [\"wss://gateway.example.com/ws\"]"));
    };
    if raw_urls.is_empty() {
        return Err(s.err_at(
            "urls",
            "is empty",
            "list at least one URL, e.g. urls = [\"wss://gateway.example.com/ws\"]",
        ));
    }
    let mut urls = Vec::new();
    for raw in &raw_urls {
        let url = GatewayUrl::parse(raw).map_err(|why| {
            s.err_at("urls", &format!("\"{raw}\" is not a usable URL: {why}"), "write it as wss://host[:port]/path")
        })?;
        // The example config's placeholder: left in place, the agent would retry a host that
        // does not exist for ever, and `check` would have said the config is fine.
        if url.host() == EXAMPLE_HOST {
            return Err(s.err_at(
                "urls",
                &format!("\"{raw}\" is still the example's placeholder"),
                "set the URL of your farm's gateway",
            ));
        }
        if !url.is_tls() && !allow_plaintext {
            return Err(s.err_at(
                "urls",
                &format!("\"{raw}\" is plain-text ws:// and allow_plaintext is not set"),
                "use wss://, or set gateway.allow_plaintext = true (labs only: the token travels in clear)",
            ));
        }
        urls.push(url);
    }
    let ca_file = s.path("ca_file")?;
    let client_cert = s.path("client_cert")?;
    let client_key = s.path("client_key")?;

    let roots = match &ca_file {
        Some(f) => Some(
            tls::read_ca_file(f)
                .map_err(|why| s.err_at("ca_file", &why, "point it at a readable PEM file of CA certificates"))?,
        ),
        None => None,
    };
    let client_auth = match (&client_cert, &client_key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(s.err_missing(
                "client_key",
                "client_cert is set without client_key",
                "add client_key = \"/etc/rig-agent/client.key\"",
            ));
        }
        (None, Some(_)) => {
            return Err(s.err_missing(
                "client_cert",
                "client_key is set without client_cert",
                "add client_cert = \"/etc/rig-agent/client.pem\"",
            ));
        }
        (Some(c), Some(k)) => {
            let chain = tls::read_cert_chain(c)
                .map_err(|why| s.err_at("client_cert", &why, "point it at a readable PEM certificate chain"))?;
            let key = tls::read_private_key(k)
                .map_err(|why| s.err_at("client_key", &why, "point it at a readable PEM private key (mode 0600)"))?;
            Some((chain, key))
        }
    };
    let tls = tls::client_config(roots, client_auth).map_err(|why| {
        s.err_at(
            if ca_file.is_some() && client_cert.is_none() { "ca_file" } else { "client_key" },
            &why,
            "check that the certificate and key belong together",
        )
    })?;

    let max_message_bytes = s.int_or("max_message_bytes", 1 << 20, 1024, 1 << 30)?;
    let tls_digest = digest_files(&[&ca_file, &client_cert, &client_key]);
    Ok(GatewayConfig {
        tls_digest,
        urls,
        ca_file,
        client_cert,
        client_key,
        connect_timeout: s.duration_or(
            "connect_timeout",
            Duration::from_secs(10),
            Duration::from_millis(10),
            TEN_MINUTES,
        )?,
        login_timeout: s.duration_or(
            "login_timeout",
            Duration::from_secs(10),
            Duration::from_millis(10),
            TEN_MINUTES,
        )?,
        allow_plaintext,
        max_message_bytes: max_message_bytes as usize,
        subprotocol: s.str("subprotocol")?,
        tls: Arc::new(tls),
    })
}

fn read_heartbeat(s: &mut Section) -> Result<HeartbeatConfig, ConfigError> {
    s.deny(&["interval", "timeout"])?;
    let interval = s.duration_or("interval", Duration::from_secs(30), Duration::from_millis(10), HOUR)?;
    let timeout = s.duration_or("timeout", Duration::from_secs(90), Duration::from_millis(10), 3 * HOUR)?;
    if timeout <= interval {
        return Err(s.err_at(
            "timeout",
            &format!(
                "timeout ({}) must be longer than interval ({}), or every connection is declared dead",
                format_duration(timeout),
                format_duration(interval)
            ),
            "make heartbeat.timeout about three times heartbeat.interval",
        ));
    }
    Ok(HeartbeatConfig { interval, timeout })
}

fn read_reconnect(s: &mut Section) -> Result<ReconnectConfig, ConfigError> {
    s.deny(&["initial", "max"])?;
    let initial = s.duration_or("initial", Duration::from_secs(1), Duration::from_millis(1), HOUR)?;
    let max = s.duration_or("max", Duration::from_secs(60), Duration::from_millis(1), DAY)?;
    if max < initial {
        return Err(s.err_at(
            "max",
            &format!("max ({}) is shorter than initial ({})", format_duration(max), format_duration(initial)),
            "make reconnect.max at least reconnect.initial",
        ));
    }
    Ok(ReconnectConfig { initial, max })
}

fn read_disks(s: &mut Section) -> Result<DisksConfig, ConfigError> {
    s.deny(&[
        "scan_interval",
        "include",
        "exclude",
        "ioerr_threshold",
        "smartctl",
        "smart_interval",
        "smart_timeout",
        "io_error_quiet",
    ])?;
    let default_include = ["sd*", "hd*", "vd*", "xvd*", "nvme*", "mmcblk*"];
    let include = s.str_list("include")?.unwrap_or_else(|| default_include.iter().map(|g| g.to_string()).collect());
    if include.is_empty() {
        return Err(s.err_at(
            "include",
            "is empty, so no disk is reported or monitored",
            "remove the line for the default globs, or list the disks, e.g. include = [\"sd*\"]",
        ));
    }
    let smartctl = s.str("smartctl")?.unwrap_or_else(|| "smartctl".into());
    // A bare name is looked up on PATH when it runs (smartmontools is only recommended, and a
    // missing one gives smart: null); a path is the operator's explicit choice and must work.
    if smartctl.contains('/') {
        let path = Path::new(&smartctl);
        let executable = fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !executable {
            return Err(s.err_at(
                "smartctl",
                &format!("{smartctl} is not an executable file"),
                "install smartmontools, correct the path, or set smartctl = \"\" to turn SMART off",
            ));
        }
    }
    Ok(DisksConfig {
        scan_interval: s.duration_or("scan_interval", Duration::from_secs(60), Duration::from_millis(10), DAY)?,
        include,
        exclude: s.str_list("exclude")?.unwrap_or_default(),
        ioerr_threshold: s.int_or("ioerr_threshold", 1, 1, u32::MAX as i64)? as u64,
        smartctl,
        smart_interval: s.duration_or("smart_interval", Duration::from_secs(3600), Duration::from_secs(1), 7 * DAY)?,
        smart_timeout: s.duration_or(
            "smart_timeout",
            Duration::from_secs(30),
            Duration::from_millis(10),
            TEN_MINUTES,
        )?,
        // At least the kmsg reader's rate-limit window (events::sources::PASS_EVERY) times 4.
        io_error_quiet: s.duration_or("io_error_quiet", Duration::from_secs(600), Duration::from_secs(1), DAY)?,
    })
}

fn read_probes(s: &mut Section) -> Result<ProbesConfig, ConfigError> {
    s.deny(&["nvidia_smi", "nvidia_smi_timeout", "nvidia_smi_interval"])?;
    Ok(ProbesConfig {
        nvidia_smi: s.str("nvidia_smi")?.unwrap_or_else(|| "nvidia-smi".into()),
        nvidia_smi_timeout: s.duration_or(
            "nvidia_smi_timeout",
            Duration::from_secs(10),
            Duration::from_millis(10),
            TEN_MINUTES,
        )?,
        nvidia_smi_interval: s.duration_or(
            "nvidia_smi_interval",
            Duration::from_secs(2),
            Duration::from_millis(1),
            HOUR,
        )?,
    })
}

fn read_paths(s: &mut Section, mode: StateDir) -> Result<PathsConfig, ConfigError> {
    s.deny(&["state_dir", "sysfs", "procfs", "rootfs", "kmsg", "privileged_socket"])?;
    let state_dir = s.path("state_dir")?.unwrap_or_else(|| PathBuf::from("/var/lib/rig-agent"));
    // A read-only or full file system is a storage fault (an SD card that ext4 remounted
    // read-only), not a config mistake: refusing to start would lose exactly the disk
    // warnings that matter then. Anything else (permissions, a file in the way) is exit 78.
    // A read-only *mount* of a writable filesystem is systemd's sandbox (ProtectSystem=strict
    // outside ReadWritePaths=), which is configuration; only the filesystem's own read-only
    // flag is a fault.
    let storage_fault = |e: &std::io::Error| match e.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => true,
        ErrorKind::ReadOnlyFilesystem => {
            let path = fs::canonicalize(&state_dir).unwrap_or_else(|_| state_dir.clone());
            crate::probes::mounts::filesystem_readonly(&crate::probes::mounts::read(Path::new("/proc")), &path)
                .unwrap_or(true)
        }
        _ => false,
    };
    let mut state_dir_problem = None;
    let mut state_dir_note = None;
    let attempt = match mode {
        StateDir::Create => fs::create_dir_all(&state_dir).and_then(|()| tempfile_probe(&state_dir)),
        StateDir::Inspect => {
            if !state_dir.exists() {
                state_dir_note = Some("does not exist yet; the agent creates it when it starts".to_string());
            }
            writable_dir_or_parent(&state_dir)
        }
        StateDir::Ignore => Ok(()),
    };
    match attempt {
        Ok(()) => {}
        Err(e) if storage_fault(&e) => state_dir_problem = Some(io_reason(&e)),
        Err(e) if e.kind() == ErrorKind::ReadOnlyFilesystem => {
            return Err(s.err_at(
                "state_dir",
                &format!("{} is on a read-only mount of a writable filesystem", state_dir.display()),
                "under systemd's sandbox only /var/lib/rig-agent is writable: use the default, or add the \
                 directory to ReadWritePaths= (systemctl edit rig-agent)",
            ));
        }
        Err(e) if !state_dir.is_dir() => {
            return Err(s.err_at(
                "state_dir",
                &format!("cannot create {} ({})", state_dir.display(), io_reason(&e)),
                "create it, give the agent's user write access, or point paths.state_dir elsewhere",
            ));
        }
        Err(e) => {
            return Err(s.err_at(
                "state_dir",
                &format!("{} is not writable ({})", state_dir.display(), io_reason(&e)),
                "give the agent's user write access, or point paths.state_dir elsewhere",
            ));
        }
    }
    // The spool must be a directory: anything else there (a file, a FIFO) would fail every
    // start with a bare "File exists". `check` and the start-up both refuse it here.
    let spool = state_dir.join("spool");
    if let Ok(meta) = fs::metadata(&spool)
        && !meta.is_dir()
    {
        return Err(s.err_at(
            "state_dir",
            &format!("{} is {}, not the warning spool directory", spool.display(), file_kind(&meta)),
            &format!("move it away (mv {0} {0}.bad) and start again: the agent creates the directory", spool.display()),
        ));
    }
    Ok(PathsConfig {
        state_dir,
        state_dir_problem,
        state_dir_note,
        sysfs: s.path("sysfs")?.unwrap_or_else(|| "/sys".into()),
        procfs: s.path("procfs")?.unwrap_or_else(|| "/proc".into()),
        rootfs: s.path("rootfs")?.unwrap_or_else(|| "/".into()),
        kmsg: s.path("kmsg")?.unwrap_or_else(|| "/dev/kmsg".into()),
        privileged_socket: match s.str("privileged_socket")?.as_deref() {
            Some("") => None,
            Some(_) => s.path("privileged_socket")?,
            None => Some(crate::privileged::DEFAULT_SOCKET.into()),
        },
    })
}

fn digest_files(files: &[&Option<PathBuf>]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files.iter().copied().flatten() {
        f.hash(&mut h);
        bounded_read::read(f, tls::PEM_CAP, Links::Follow).map(|c| c.bytes).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

impl Config {
    /// Whether `other` needs a new connection to take effect: identity, token, URLs, TLS
    /// material and anything else the connection was made with.
    pub fn connection_differs(&self, other: &Config) -> bool {
        let (a, b) = (&self.gateway, &other.gateway);
        let urls = |g: &GatewayConfig| g.urls.iter().map(|u| u.as_str().to_string()).collect::<Vec<_>>();
        self.device.hardware_id != other.device.hardware_id
            || self.device.name != other.device.name
            || self.device.token != other.device.token
            || urls(a) != urls(b)
            // Paths and contents of ca_file, client_cert and client_key.
            || a.tls_digest != b.tls_digest
            || a.subprotocol != b.subprotocol
            || a.allow_plaintext != b.allow_plaintext
            || a.max_message_bytes != b.max_message_bytes
            || a.connect_timeout != b.connect_timeout
    }

    /// Whether `other` moves the state directory or the probe roots, which only a restart
    /// can apply.
    pub fn paths_differ(&self, other: &Config) -> bool {
        let (a, b) = (&self.paths, &other.paths);
        (&a.state_dir, &a.sysfs, &a.procfs, &a.rootfs, &a.kmsg, &a.privileged_socket)
            != (&b.state_dir, &b.sysfs, &b.procfs, &b.rootfs, &b.kmsg, &b.privileged_socket)
    }
}

/// Whether `dir`, or the nearest parent that exists when `dir` does not, is a directory the
/// agent's user may write: `check`'s look at the state directory, which creates nothing.
fn writable_dir_or_parent(dir: &Path) -> std::io::Result<()> {
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        return Err(ErrorKind::NotADirectory.into());
    }
    rustix::fs::access(existing, rustix::fs::Access::WRITE_OK).map_err(std::io::Error::from)
}

/// Writes and removes a small file: the only honest test that warnings can be spooled there.
fn tempfile_probe(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".rig-agent-write-test-{}", std::process::id()));
    fs::write(&probe, b"")?;
    fs::remove_file(&probe)
}

/// What a path is, for a message about something that should have been a directory.
fn file_kind(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "a file"
    }
}

/// `io::Error` without the "(os error 13)" tail, for operator messages.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::NotFound => "no such file or directory".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::ReadOnlyFilesystem => "read-only file system".into(),
        ErrorKind::StorageFull => "no space left on the device".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A valid config in `dir` (token file, state dir), for other modules' tests.
    pub(crate) fn minimal_config(dir: &Path) -> Config {
        let token = dir.join("token");
        fs::write(&token, "t\n").unwrap();
        fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
        let text = MINIMAL.replace("STATE", &dir.join("state").display().to_string());
        Config::parse(&dir.join("rig-agent.toml"), &text).unwrap()
    }

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let token = dir.path().join("token");
            fs::write(&token, "secret-token-value\n").unwrap();
            fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
            Fixture { dir }
        }
        fn parse(&self, body: &str) -> Result<Config, ConfigError> {
            let state = self.dir.path().join("state");
            let text = body.replace("STATE", &state.display().to_string());
            Config::parse(&self.dir.path().join("rig-agent.toml"), &text)
        }
    }

    const MINIMAL: &str = "[device]\nhardware_id = \"rig-1\"\ntoken_file = \"token\"\n\
        [gateway]\nurls = [\"wss://gw.example.com/ws\"]\n[paths]\nstate_dir = \"STATE\"\n";

    #[test]
    fn the_privileged_socket_defaults_to_the_units_and_an_empty_one_means_none() {
        let f = Fixture::new();
        let c = f.parse(MINIMAL).unwrap();
        assert_eq!(c.paths.privileged_socket, Some(PathBuf::from("/run/rig-agent-privileged/sock")));
        let c = f.parse(&format!("{MINIMAL}privileged_socket = \"\"\n")).unwrap();
        assert_eq!(c.paths.privileged_socket, None);
        assert!(c.render().contains("privileged_socket = \"\""));
        let c = f.parse(&format!("{MINIMAL}privileged_socket = \"priv.sock\"\n")).unwrap();
        assert_eq!(c.paths.privileged_socket, Some(f.dir.path().join("priv.sock")));
    }

    #[test]
    fn a_minimal_config_gets_every_documented_default() {
        let f = Fixture::new();
        let c = f.parse(MINIMAL).unwrap();
        assert_eq!(c.device.name, "rig-1");
        assert_eq!(c.device.token.expose(), "secret-token-value");
        assert_eq!(c.gateway.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.gateway.login_timeout, Duration::from_secs(10));
        assert_eq!(c.gateway.max_message_bytes, 1 << 20);
        assert_eq!(c.heartbeat.interval, Duration::from_secs(30));
        assert_eq!(c.heartbeat.timeout, Duration::from_secs(90));
        assert_eq!(c.reconnect.initial, Duration::from_secs(1));
        assert_eq!(c.reconnect.max, Duration::from_secs(60));
        assert_eq!(c.disks.scan_interval, Duration::from_secs(60));
        assert_eq!(c.disks.include.len(), 6);
        assert_eq!(c.warning.resend_after, Duration::from_secs(60));
        assert_eq!(c.paths.sysfs, PathBuf::from("/sys"));
        assert_eq!(c.paths.kmsg, PathBuf::from("/dev/kmsg"));
        assert_eq!(c.disks.io_error_quiet, Duration::from_secs(600));
        assert!(c.paths.state_dir.is_dir(), "state dir is created");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_a_suggestion() {
        let f = Fixture::new();
        let e = f.parse(&format!("{MINIMAL}[heartbeat]\nintervall = \"5s\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("heartbeat.intervall"));
        assert_eq!(e.line, Some(9));
        assert!(e.fix.contains("did you mean `heartbeat.interval`"), "{e}");
    }

    #[test]
    fn an_unknown_section_is_named() {
        let f = Fixture::new();
        let e = f.parse(&format!("{MINIMAL}[gatway]\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("gatway"));
        assert!(e.fix.contains("`gateway`"), "{e}");
    }

    #[test]
    fn a_wrong_type_names_the_key_and_the_expected_type() {
        let f = Fixture::new();
        let e = f.parse(&MINIMAL.replace("[paths]", "max_message_bytes = \"big\"\n[paths]")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("gateway.max_message_bytes"));
        assert!(e.problem.contains("expected an integer"), "{e}");
    }

    #[test]
    fn a_bad_duration_names_the_key() {
        let f = Fixture::new();
        let e = f.parse(&format!("{MINIMAL}[reconnect]\ninitial = \"1 fortnight\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("reconnect.initial"));
        assert!(e.to_string().contains("Fix:"), "{e}");
    }

    #[test]
    fn an_io_error_quiet_period_shorter_than_a_second_is_refused() {
        // Shorter than 4 times the kmsg rate-limit window, a new storm's first line could be
        // held back as part of the storm that just ended.
        let f = Fixture::new();
        let e = f.parse(&format!("{MINIMAL}[disks]\nio_error_quiet = \"500ms\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("disks.io_error_quiet"));
        let c = f.parse(&format!("{MINIMAL}[disks]\nio_error_quiet = \"1s\"\n")).unwrap();
        assert_eq!(c.disks.io_error_quiet, Duration::from_secs(1));
        assert!(crate::events::sources::PASS_EVERY * 4 <= c.disks.io_error_quiet);
    }

    #[test]
    fn plaintext_urls_need_allow_plaintext() {
        let f = Fixture::new();
        let ws = MINIMAL.replace("wss://", "ws://");
        let e = f.parse(&ws).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("gateway.urls"));
        assert!(e.fix.contains("allow_plaintext"), "{e}");
        let ok = ws.replace("[paths]", "allow_plaintext = true\n[paths]");
        assert!(f.parse(&ok).is_ok());
    }

    #[test]
    fn token_and_token_file_are_exclusive_and_one_is_required() {
        let f = Fixture::new();
        let both = MINIMAL.replace("token_file", "token = \"x\"\ntoken_file");
        assert_eq!(f.parse(&both).unwrap_err().key.as_deref(), Some("device.token"));
        let neither = MINIMAL.replace("token_file = \"token\"\n", "");
        assert_eq!(f.parse(&neither).unwrap_err().key.as_deref(), Some("device.token_file"));
    }

    #[test]
    fn a_token_file_readable_by_others_is_refused_with_chmod_fix() {
        let f = Fixture::new();
        fs::set_permissions(f.dir.path().join("token"), fs::Permissions::from_mode(0o644)).unwrap();
        let e = f.parse(MINIMAL).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("device.token_file"));
        assert!(e.fix.starts_with("chmod 600"), "{e}");
    }

    #[test]
    fn the_token_never_appears_in_debug_or_render() {
        let f = Fixture::new();
        let c = f.parse(MINIMAL).unwrap();
        assert!(!format!("{c:?}").contains("secret-token-value"));
        let shown = c.render();
        assert!(!shown.contains("secret-token-value"));
        assert!(shown.contains("***"));
    }

    #[test]
    fn render_output_is_accepted_back_as_config() {
        let f = Fixture::new();
        let c = f.parse(MINIMAL).unwrap();
        let again = f.parse(&c.render()).unwrap();
        assert_eq!(again.render(), c.render());
    }

    #[test]
    fn the_example_placeholder_hardware_id_is_refused() {
        let f = Fixture::new();
        let e = f.parse(&MINIMAL.replace("rig-1", "CHANGE-ME")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("device.hardware_id"));
    }

    #[test]
    fn a_missing_required_key_points_at_its_section() {
        let f = Fixture::new();
        let e = f.parse(&MINIMAL.replace("hardware_id = \"rig-1\"\n", "")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("device.hardware_id"));
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn every_duration_key_has_a_maximum_named_in_the_refusal() {
        let f = Fixture::new();
        let keys = [
            ("gateway", "connect_timeout", "10m"),
            ("gateway", "login_timeout", "10m"),
            ("heartbeat", "interval", "1h"),
            ("heartbeat", "timeout", "3h"),
            ("reconnect", "initial", "1h"),
            ("reconnect", "max", "24h"),
            ("disks", "scan_interval", "24h"),
            ("disks", "smart_interval", "168h"),
            ("disks", "smart_timeout", "10m"),
            ("warning", "resend_after", "24h"),
        ];
        for (section, key, max) in keys {
            let text = if section == "gateway" {
                MINIMAL.replace("[paths]", &format!("{key} = \"200000000000000d\"\n[paths]"))
            } else {
                format!("{MINIMAL}[{section}]\n{key} = \"200000000000000d\"\n")
            };
            let e = f.parse(&text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(format!("{section}.{key}").as_str()), "{e}");
            assert!(e.problem.contains(&format!("maximum is \"{max}\"")), "{e}");
            assert!(e.fix.contains(&format!("at most \"{max}\"")), "{e}");
        }
    }

    #[test]
    fn a_spool_that_is_not_a_directory_is_refused_naming_the_path_and_the_fix() {
        let f = Fixture::new();
        let spool = f.dir.path().join("state/spool");
        fs::create_dir_all(spool.parent().unwrap()).unwrap();
        fs::write(&spool, "x").unwrap();
        let e = f.parse(MINIMAL).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("paths.state_dir"));
        assert!(e.problem.contains(&spool.display().to_string()) && e.problem.contains("a file"), "{e}");
        assert!(e.fix.contains("mv "), "{e}");
    }

    #[test]
    fn heartbeat_timeout_must_exceed_interval() {
        let f = Fixture::new();
        let e = f.parse(&format!("{MINIMAL}[heartbeat]\ninterval = \"30s\"\ntimeout = \"30s\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("heartbeat.timeout"));
    }

    #[test]
    fn a_duplicate_key_is_named_with_its_section() {
        let f = Fixture::new();
        let e = f.parse(&MINIMAL.replace("token_file", "name = \"a\"\nname = \"b\"\ntoken_file")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("device.name"), "{e}");
        assert_eq!(e.line, Some(4));
        assert!(e.fix.contains("`name =`"), "{e}");
        let e = f.parse(&format!("{MINIMAL}[device]\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("device"), "{e}");
        assert!(e.problem.contains("twice"), "{e}");
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let f = Fixture::new();
        let e = f.parse("[device\nhardware_id = 1\n").unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(e.problem.contains("not valid TOML"));
    }

    #[test]
    fn probes_keys_default_to_nvidia_smi_on_path_10s_and_2s_and_unknown_ones_are_refused() {
        let f = Fixture::new();
        let c = f.parse(MINIMAL).unwrap();
        assert_eq!(c.probes.nvidia_smi, "nvidia-smi");
        assert_eq!(c.probes.nvidia_smi_timeout, Duration::from_secs(10));
        assert_eq!(c.probes.nvidia_smi_interval, Duration::from_secs(2));
        let c = f.parse(&format!("{MINIMAL}[probes]\nnvidia_smi = \"\"\nnvidia_smi_timeout = \"3s\"\n")).unwrap();
        assert_eq!((c.probes.nvidia_smi.as_str(), c.probes.nvidia_smi_timeout), ("", Duration::from_secs(3)));
        let e = f.parse(&format!("{MINIMAL}[probes]\nnvidia_smi_timout = \"3s\"\n")).unwrap_err();
        assert!(e.to_string().contains("nvidia_smi_timeout"), "{e}");
    }
}
