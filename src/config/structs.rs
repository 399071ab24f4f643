//! The config structs, each key with its documented default.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::actions::ActionsConfig;
use crate::config::url::GatewayUrl;

/// The token, kept out of every `Debug`, `Display` and log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub(super) String);

impl Token {
    /// The only way to see the secret: used when building the login message.
    pub(crate) fn expose(&self) -> &str {
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
    /// `[gpus]`: GPU failure warnings (PROTOCOL.md §9).
    pub gpus: GpusConfig,
    /// `[actions]`: what the gateway may ask the rig to run (PROTOCOL.md §8).
    pub actions: ActionsConfig,
    pub maintenance: MaintenanceConfig,
    pub recovery: crate::config::recovery::RecoveryConfig,
    /// `[update]`: whether and how the console may update the agent (PROTOCOL.md §9).
    pub update: UpdateConfig,
}

/// `[update]` (PROTOCOL.md §9), read from the root-owned config: the keys a build is
/// verified with are never the gateway's to give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateConfig {
    /// Whether `update_agent` is taken at all. Default false.
    pub enabled: bool,
    /// minisign public keys (the base64 line of a `.pub` file), each checked at load; more
    /// than one for key rotation. Required when `enabled`.
    pub keys: Vec<String>,
    /// How long the new version must be logged in and connected before it is confirmed.
    /// Default 2 min, at least 1 s.
    pub confirm_after: Duration,
    /// The new version is rolled back unless confirmed this long after the switch. Default
    /// 10 min, at least 10 s and above `confirm_after`.
    pub confirm_within: Duration,
    /// The largest build taken. Default 64 MiB.
    pub max_bytes: u64,
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
    /// `proxy`: a proxy for every URL, none, or (absent) the environment's, read at load.
    pub proxy: crate::config::proxy::ProxyPolicy,
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

/// The part of the config the privileged half reads ([`Config::load_for_privileged`]).
#[derive(Debug, Clone)]
pub struct PrivilegedConfig {
    pub disks: DisksConfig,
    pub paths: PathsConfig,
    pub update: UpdateConfig,
}

impl From<Config> for PrivilegedConfig {
    fn from(c: Config) -> PrivilegedConfig {
        PrivilegedConfig { disks: c.disks, paths: c.paths, update: c.update }
    }
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
    /// Send `warning_cleared` when a warned episode ends (PROTOCOL.md §9). Default false: a
    /// gateway that does not know the message would never acknowledge it.
    pub send_cleared: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct GpusConfig {
    /// Warn (`type` 3) when a GPU falls off the bus, goes missing, reports a hardware Xid or
    /// is reset by its driver. Default true: a rig without GPUs has nothing to warn about.
    pub warn: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// Whether the console may turn maintenance on or off (`set_maintenance`). Default
    /// false: only `rig-agent maintenance` on the rig itself may.
    pub remote: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The privileged half's Unix socket: smartctl runs there and the kernel log is read
    /// there, so the agent itself holds no capability. `None` (set to "") runs smartctl in
    /// the agent itself. Default /run/rig-agent-privileged/sock.
    pub privileged_socket: Option<PathBuf>,
    /// The root-owned home of installed updates: the verified binaries, the one kept to go
    /// back to, the newest version ever run. Default /var/lib/rig-agent-update.
    pub update_dir: PathBuf,
}

impl Config {
    /// Whether `other` needs a new connection to take effect: identity, token, URLs, TLS
    /// material and anything else the connection was made with.
    ///
    /// Every field of every struct involved is named (no `..`), so a new key does not compile
    /// until it is decided here: compared, or `_` with the reason it does not reconnect.
    pub(crate) fn connection_differs(&self, other: &Config) -> bool {
        let Config {
            // Always the same file: a reload reads the file the agent started with.
            file: _,
            device,
            gateway,
            // Taken by the next session; not worth dropping a live connection for.
            heartbeat: _,
            // Applied in place (backoff bounds, resend window, disk and GPU rules, probes,
            // actions).
            reconnect: _,
            disks: _,
            warning: _,
            probes: _,
            gpus: _,
            actions: _,
            maintenance: _,
            recovery: _,
            // Read by the next offer and by the privileged half at each request.
            update: _,
            // Only a restart applies them (`paths_differ`).
            paths: _,
        } = self;
        let DeviceConfig {
            hardware_id,
            name,
            token,
            // The token it held is compared.
            token_file: _,
        } = device;
        let GatewayConfig {
            urls,
            // Paths and contents of these three are in `tls_digest`, and `tls` is made of them.
            ca_file: _,
            client_cert: _,
            client_key: _,
            tls: _,
            tls_digest,
            connect_timeout,
            // Used by the next login; the live session is logged in already.
            login_timeout: _,
            allow_plaintext,
            max_message_bytes,
            subprotocol,
            // A new proxy (or none) is a new way to the gateway: connect again through it.
            proxy,
        } = gateway;
        let (d, g) = (&other.device, &other.gateway);
        let texts = |urls: &[GatewayUrl]| urls.iter().map(|u| u.as_str().to_string()).collect::<Vec<_>>();
        *hardware_id != d.hardware_id
            || *name != d.name
            || *token != d.token
            || texts(urls) != texts(&g.urls)
            || *tls_digest != g.tls_digest
            || *subprotocol != g.subprotocol
            || *allow_plaintext != g.allow_plaintext
            || *max_message_bytes != g.max_message_bytes
            || *connect_timeout != g.connect_timeout
            || *proxy != g.proxy
    }

    /// Whether `other` moves the state directory or the probe roots, which only a restart
    /// can apply. Every field is named, as in [`Config::connection_differs`].
    pub(crate) fn paths_differ(&self, other: &Config) -> bool {
        let PathsConfig {
            state_dir,
            // What loading found, not what the file says.
            state_dir_problem: _,
            state_dir_note: _,
            sysfs,
            procfs,
            rootfs,
            kmsg,
            privileged_socket,
            update_dir,
        } = &self.paths;
        let b = &other.paths;
        (state_dir, sysfs, procfs, rootfs, kmsg, privileged_socket, update_dir)
            != (&b.state_dir, &b.sysfs, &b.procfs, &b.rootfs, &b.kmsg, &b.privileged_socket, &b.update_dir)
    }
}

/// The rig's identity on the wire, as every message carries it.
impl From<&DeviceConfig> for crate::protocol::Identity {
    fn from(d: &DeviceConfig) -> Self {
        crate::protocol::Identity { hardware_id: d.hardware_id.clone(), name: d.name.clone() }
    }
}
