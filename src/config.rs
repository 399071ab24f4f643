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

use crate::config_section::{Doc, Section};
use crate::duration::format_duration;
use crate::tls;
use crate::url::GatewayUrl;

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
    /// `[actions]`: what the gateway may ask the rig to run (PROTOCOL.md §8).
    pub actions: crate::actions::ActionsConfig,
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
    /// Roots for the probes, as node_exporter's `--path.*` (tests and containers).
    pub sysfs: PathBuf,
    pub procfs: PathBuf,
    pub rootfs: PathBuf,
}

impl Config {
    /// Reads, validates and prepares everything the agent needs from `file`: the token, the
    /// TLS material and the state directory (created if missing).
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let src = fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: None,
            key: None,
            problem: format!("cannot read the file ({})", io_reason(&e)),
            fix: if e.kind() == ErrorKind::NotFound {
                format!(
                    "write a config there (see systemd/rig-agent.toml) or pass --config PATH \
                     (default {DEFAULT_PATH})"
                )
            } else {
                "make the file readable by the agent".into()
            },
        })?;
        Config::parse(file, &src)
    }

    /// As [`Config::load`], from text already read; `file` is used in messages and to resolve
    /// relative paths.
    pub fn parse(file: &Path, src: &str) -> Result<Config, ConfigError> {
        let doc = Doc { file, src };
        let root = DeTable::parse(src).map_err(|e| doc.syntax_error(&e))?;
        let mut top = Section::root(&doc, root.get_ref());
        top.deny_unknown(&["device", "gateway", "heartbeat", "reconnect", "disks", "warning", "paths", "actions"])?;

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
            )?,
        };
        let paths = read_paths(&mut top.table("paths")?)?;
        let actions = crate::actions::config::read_actions(&mut top.table("actions")?)?;

        Ok(Config { file: file.to_path_buf(), device, gateway, heartbeat, reconnect, disks, warning, paths, actions })
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
        if let Some(sp) = &g.subprotocol {
            out += &format!("subprotocol = {}\n", q(sp));
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
            "\n[disks]\nscan_interval = \"{}\"\ninclude = {}\nexclude = {}\nioerr_threshold = {}\nsmartctl = {}\nsmart_interval = \"{}\"\nsmart_timeout = \"{}\"\n",
            d(k.scan_interval),
            list(&k.include),
            list(&k.exclude),
            k.ioerr_threshold,
            q(&k.smartctl),
            d(k.smart_interval),
            d(k.smart_timeout)
        );
        out += &format!("\n[warning]\nresend_after = \"{}\"\n", d(self.warning.resend_after));
        let pa = &self.paths;
        out += &format!(
            "\n[paths]\nstate_dir = {}\nsysfs = {}\nprocfs = {}\nrootfs = {}\n",
            p(&pa.state_dir),
            p(&pa.sysfs),
            p(&pa.procfs),
            p(&pa.rootfs)
        );
        if let Some(why) = &pa.state_dir_problem {
            out += &format!("# state_dir is not writable now ({why}): warnings are kept in memory until it is\n");
        }
        out += &self.actions.render();
        out
    }
}

fn read_device(s: &mut Section) -> Result<DeviceConfig, ConfigError> {
    s.deny(&["hardware_id", "name", "token", "token_file"])?;
    let hardware_id = s.required_str("hardware_id", "hardware_id = \"rig-0042\"")?;
    if hardware_id.trim().is_empty() {
        return Err(s.err_at("hardware_id", "is empty", "set it to the rig's id as the gateway knows it"));
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

fn read_token_file(s: &Section, file: &Path) -> Result<Token, ConfigError> {
    let key = "token_file";
    let meta = fs::metadata(file).map_err(|e| {
        s.err_at(
            key,
            &format!("cannot read {} ({})", file.display(), io_reason(&e)),
            "create the token file, or correct the path",
        )
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(s.err_at(
            key,
            &format!("{} is readable by group or others (mode {mode:04o})", file.display()),
            &format!("chmod 600 {}", file.display()),
        ));
    }
    let text = fs::read_to_string(file).map_err(|e| {
        s.err_at(
            key,
            &format!("cannot read {} ({})", file.display(), io_reason(&e)),
            "make it readable by the agent's user",
        )
    })?;
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
        connect_timeout: s.duration_or("connect_timeout", Duration::from_secs(10), Duration::from_millis(10))?,
        login_timeout: s.duration_or("login_timeout", Duration::from_secs(10), Duration::from_millis(10))?,
        allow_plaintext,
        max_message_bytes: max_message_bytes as usize,
        subprotocol: s.str("subprotocol")?,
        tls: Arc::new(tls),
    })
}

fn read_heartbeat(s: &mut Section) -> Result<HeartbeatConfig, ConfigError> {
    s.deny(&["interval", "timeout"])?;
    let interval = s.duration_or("interval", Duration::from_secs(30), Duration::from_millis(10))?;
    let timeout = s.duration_or("timeout", Duration::from_secs(90), Duration::from_millis(10))?;
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
    let initial = s.duration_or("initial", Duration::from_secs(1), Duration::from_millis(1))?;
    let max = s.duration_or("max", Duration::from_secs(60), Duration::from_millis(1))?;
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
    s.deny(&["scan_interval", "include", "exclude", "ioerr_threshold", "smartctl", "smart_interval", "smart_timeout"])?;
    let default_include = ["sd*", "hd*", "vd*", "xvd*", "nvme*", "mmcblk*"];
    Ok(DisksConfig {
        scan_interval: s.duration_or("scan_interval", Duration::from_secs(60), Duration::from_millis(10))?,
        include: s.str_list("include")?.unwrap_or_else(|| default_include.iter().map(|g| g.to_string()).collect()),
        exclude: s.str_list("exclude")?.unwrap_or_default(),
        ioerr_threshold: s.int_or("ioerr_threshold", 1, 1, u32::MAX as i64)? as u64,
        smartctl: s.str("smartctl")?.unwrap_or_else(|| "smartctl".into()),
        smart_interval: s.duration_or("smart_interval", Duration::from_secs(3600), Duration::from_secs(1))?,
        smart_timeout: s.duration_or("smart_timeout", Duration::from_secs(30), Duration::from_millis(10))?,
    })
}

fn read_paths(s: &mut Section) -> Result<PathsConfig, ConfigError> {
    s.deny(&["state_dir", "sysfs", "procfs", "rootfs"])?;
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
    match fs::create_dir_all(&state_dir).and_then(|()| tempfile_probe(&state_dir)) {
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
    Ok(PathsConfig {
        state_dir,
        state_dir_problem,
        sysfs: s.path("sysfs")?.unwrap_or_else(|| "/sys".into()),
        procfs: s.path("procfs")?.unwrap_or_else(|| "/proc".into()),
        rootfs: s.path("rootfs")?.unwrap_or_else(|| "/".into()),
    })
}

fn digest_files(files: &[&Option<PathBuf>]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files.iter().copied().flatten() {
        f.hash(&mut h);
        fs::read(f).unwrap_or_default().hash(&mut h);
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
        (&a.state_dir, &a.sysfs, &a.procfs, &a.rootfs) != (&b.state_dir, &b.sysfs, &b.procfs, &b.rootfs)
    }
}

/// Writes and removes a small file: the only honest test that warnings can be spooled there.
fn tempfile_probe(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".rig-agent-write-test-{}", std::process::id()));
    fs::write(&probe, b"")?;
    fs::remove_file(&probe)
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
        let e = f.parse(&format!("{MINIMAL}[reconnect]\ninitial = \"1 sec\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("reconnect.initial"));
        assert!(e.to_string().contains("Fix:"), "{e}");
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
    fn heartbeat_timeout_must_exceed_interval() {
        let f = Fixture::new();
        let e = f.parse(&format!("{MINIMAL}[heartbeat]\ninterval = \"30s\"\ntimeout = \"30s\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("heartbeat.timeout"));
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let f = Fixture::new();
        let e = f.parse("[device\nhardware_id = 1\n").unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(e.problem.contains("not valid TOML"));
    }

    #[test]
    fn actions_are_off_by_default_and_an_allow_list_is_read_with_defaults() {
        let f = Fixture::new();
        let c = f.parse(MINIMAL).unwrap();
        assert!(!c.actions.enabled);
        assert!(c.actions.allowed().is_empty());
        assert_eq!(c.actions.max_concurrent, 4);
        let c = f
            .parse(&format!(
                "{MINIMAL}[actions]\nenabled = true\n[actions.reboot]\ncommand = [\"/bin/true\", \"x\"]\n\
                 min_interval = \"10m\"\n[actions.restart-miner]\ncommand = [\"/bin/sh\"]\ntimeout = \"5s\"\n"
            ))
            .unwrap();
        assert_eq!(c.actions.allowed(), ["reboot", "restart-miner"]);
        let r = &c.actions.actions["reboot"];
        assert_eq!((r.timeout, r.min_interval), (Duration::from_secs(60), Duration::from_secs(600)));
        assert_eq!(c.actions.actions["restart-miner"].timeout, Duration::from_secs(5));
        assert!(c.render().contains("[actions.reboot]\ncommand = [\"/bin/true\", \"x\"]"), "{}", c.render());
    }

    #[test]
    fn an_action_must_name_an_absolute_existing_executable_with_sane_durations() {
        let f = Fixture::new();
        let bad = |section: &str| f.parse(&format!("{MINIMAL}[actions]\n{section}")).unwrap_err();
        let e = bad("[actions.a]\ncommand = [\"systemctl\", \"reboot\"]\n");
        assert_eq!(e.key.as_deref(), Some("actions.a.command"));
        assert!(e.problem.contains("not an absolute path"), "{e}");
        assert!(bad("[actions.a]\ncommand = [\"/nonexistent/x\"]\n").problem.contains("cannot be used"));
        let token = f.dir.path().join("token").display().to_string();
        assert!(bad(&format!("[actions.a]\ncommand = [{token:?}]\n")).problem.contains("not an executable"));
        assert!(bad("[actions.a]\ncommand = []\n").problem.contains("is empty"));
        assert!(bad("[actions.a]\n").problem.contains("missing"));
        assert!(bad("[actions.a]\ncommand = [\"/bin/true\"]\ntimeout = \"2h\"\n").problem.contains("longer than"));
        assert!(bad("[actions.a]\ncommand = [\"/bin/true\"]\nmin_interval = \"10d\"\n").fix.contains("10m"));
        assert!(bad("[actions.a]\ncommand = [\"/bin/true\"]\nshell = true\n").problem.contains("unknown key"));
        assert!(bad("enabled = true\nreboot = \"/sbin/reboot\"\n").fix.contains("[actions.reboot]"));
        assert_eq!(bad("max_concurrent = 100\n").key.as_deref(), Some("actions.max_concurrent"));
        let e = bad("[actions.\"a b\"]\ncommand = [\"/bin/true\"]\n");
        assert!(e.problem.contains("not a usable action name"), "{e}");
    }
}
