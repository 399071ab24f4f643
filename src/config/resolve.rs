//! What loading the config does beyond reading its text: the config file itself, the
//! token file, the PEM digests and the state directory (created, or only looked at by
//! `check`). Everything here touches the file system.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::config::ConfigErrors;
use crate::config::actions::{ActionsConfig, check_command};
use crate::config::error::{Found, quoted};
use crate::config::proxy::{EnvProxies, ProxyPolicy, ProxySetting};
use crate::config::section::Spot;
use crate::config::tls;
use crate::config::*;
use crate::os::bounded_read::{self, Links};
use crate::os::mountinfo;

/// The config file's text; a file that cannot be read is a config error.
pub(super) fn read_config(file: &Path) -> Result<String, ConfigError> {
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
pub(super) enum StateDir {
    Create,
    Inspect,
}

/// The largest token file read: tokens are short; this only stops a wrong file (a log, an
/// image) from being held in memory whole.
pub(crate) const TOKEN_CAP: u64 = 64 << 10;

/// The largest config file read.
pub(crate) const CONFIG_CAP: u64 = 1 << 20;

fn read_token_file(s: &Spot, file: &Path) -> Result<Token, ConfigError> {
    let contents = bounded_read::read(file, TOKEN_CAP, Links::Follow).map_err(|e| {
        let fix = match &e {
            _ if e.is_not_found() => "create the token file, or correct the path",
            bounded_read::ReadError::TooLarge { .. } | bounded_read::ReadError::NotRegular { .. } => {
                "point token_file at a regular file holding only the rig's token"
            }
            _ => "make it readable by the agent's user",
        };
        s.err(&e.to_string(), fix)
    })?;
    let mode = contents.mode & 0o777;
    if mode & 0o077 != 0 {
        return Err(s.err(
            &format!("{} is readable by group or others (mode {mode:04o})", file.display()),
            &format!("chmod 600 {}", file.display()),
        ));
    }
    let text =
        contents.into_string(file).map_err(|e| s.err(&e.to_string(), "write the rig's token on its first line"))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(s.err(&format!("{} is empty", file.display()), "write the rig's token on its first line"));
    }
    Ok(Token(token.to_string()))
}

/// Looks at (or creates) the state directory `paths` names, and notes in `paths` a storage
/// fault or that it does not exist yet.
fn check_state_dir(s: &Spot, paths: &mut PathsConfig, mode: StateDir) -> Result<(), ConfigError> {
    let state_dir = paths.state_dir.clone();
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
            mountinfo::filesystem_readonly(&mountinfo::read(Path::new("/proc")), &path).unwrap_or(true)
        }
        _ => false,
    };
    let mut state_dir_problem = None;
    let mut state_dir_note = None;
    // A link to a directory that is not there (a data partition not mounted yet): create_dir_all
    // says only "File exists", and `check` would have passed it. Both say what it is.
    if fs::symlink_metadata(&state_dir).is_ok_and(|m| m.file_type().is_symlink()) && !state_dir.exists() {
        let target = fs::read_link(&state_dir).map(|t| t.display().to_string()).unwrap_or_default();
        return Err(s.err(
            &format!("{} is a symbolic link to {target}, which does not exist", state_dir.display()),
            "create (or mount) the directory it points to, or point paths.state_dir at an existing one",
        ));
    }
    let attempt = match mode {
        StateDir::Create => fs::create_dir_all(&state_dir).and_then(|()| tempfile_probe(&state_dir)),
        StateDir::Inspect => {
            if !state_dir.exists() {
                state_dir_note = Some("does not exist yet; the agent creates it when it starts".to_string());
            }
            writable_dir_or_parent(&state_dir)
        }
    };
    match attempt {
        Ok(()) => {}
        Err(e) if storage_fault(&e) => state_dir_problem = Some(io_reason(&e)),
        Err(e) if e.kind() == ErrorKind::ReadOnlyFilesystem => {
            return Err(s.err(
                &format!("{} is on a read-only mount of a writable filesystem", state_dir.display()),
                "under systemd's sandbox only /var/lib/rig-agent is writable: use the default, or add the \
                 directory to ReadWritePaths= (systemctl edit rig-agent)",
            ));
        }
        Err(e) if !state_dir.is_dir() => {
            return Err(s.err(
                &format!("cannot create {} ({})", state_dir.display(), io_reason(&e)),
                "create it, give the agent's user write access, or point paths.state_dir elsewhere",
            ));
        }
        Err(e) => {
            return Err(s.err(
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
        return Err(s.err(
            &format!("{} is {}, not the warning spool directory", spool.display(), file_kind(&meta)),
            &format!("move it away (mv {0} {0}.bad) and start again: the agent creates the directory", spool.display()),
        ));
    }
    paths.state_dir_problem = state_dir_problem;
    paths.state_dir_note = state_dir_note;
    Ok(())
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

/// Whether `dir`, or the nearest parent that exists when `dir` does not, is a directory the
/// agent's user may write: `check`'s look at the state directory, which creates nothing.
pub(super) fn writable_dir_or_parent(dir: &Path) -> std::io::Result<()> {
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        return Err(ErrorKind::NotADirectory.into());
    }
    rustix::fs::access(existing, rustix::fs::Access::WRITE_OK).map_err(std::io::Error::from)
}

/// Writes and removes a small file: the only honest test that warnings can be spooled there.
pub(super) fn tempfile_probe(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".rig-agent-write-test-{}", std::process::id()));
    fs::write(&probe, b"")?;
    fs::remove_file(&probe)
}

/// What a path is, for a message about something that should have been a directory.
pub(super) fn file_kind(meta: &fs::Metadata) -> &'static str {
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
pub(super) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::NotFound => "no such file or directory".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::ReadOnlyFilesystem => "read-only file system".into(),
        ErrorKind::StorageFull => "no space left on the device".into(),
        _ => e.to_string(),
    }
}

/// `[device]` as written: the token is known only when it is inline.
#[derive(Debug, Clone)]
pub(super) struct ParsedDevice {
    pub(super) hardware_id: String,
    pub(super) name: String,
    pub(super) token: Option<Token>,
    pub(super) token_file: Option<PathBuf>,
}

/// `[gateway]` as written: [`GatewayConfig`] without the TLS config its PEM files make.
#[derive(Debug, Clone)]
pub(super) struct ParsedGateway {
    pub(super) urls: Vec<crate::config::url::GatewayUrl>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) client_cert: Option<PathBuf>,
    pub(super) client_key: Option<PathBuf>,
    pub(super) connect_timeout: std::time::Duration,
    pub(super) login_timeout: std::time::Duration,
    pub(super) allow_plaintext: bool,
    pub(super) max_message_bytes: usize,
    pub(super) subprotocol: Option<String>,
    pub(super) proxy: crate::config::proxy::ProxySetting,
}

/// Where the keys that name files are, for the resolve step's refusals.
#[derive(Debug, Clone)]
pub(super) struct Spots {
    pub(super) token: Spot,
    pub(super) token_file: Spot,
    pub(super) ca_file: Spot,
    pub(super) client_cert: Spot,
    pub(super) client_key: Spot,
    pub(super) proxy: Spot,
    pub(super) state_dir: Spot,
    pub(super) smartctl: Spot,
    /// `actions.NAME.command`, in the order of `actions.actions`.
    pub(super) commands: Vec<Spot>,
}

/// The config as written, validated, with nothing read from the file system: the result of
/// [`Config::parse`]. [`Parsed::resolve`] reads what its keys point at.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub(super) file: PathBuf,
    pub(super) device: ParsedDevice,
    pub(super) gateway: ParsedGateway,
    pub(super) heartbeat: HeartbeatConfig,
    pub(super) reconnect: ReconnectConfig,
    pub(super) disks: DisksConfig,
    pub(super) warning: WarningConfig,
    pub(super) paths: PathsConfig,
    pub(super) probes: ProbesConfig,
    pub(super) gpus: GpusConfig,
    pub(super) actions: ActionsConfig,
    pub(super) maintenance: MaintenanceConfig,
    pub(super) recovery: crate::config::recovery::RecoveryConfig,
    pub(super) update: UpdateConfig,
    pub(super) spots: Spots,
}

impl Parsed {
    /// Reads the token and the TLS material, checks the programs named, and creates the
    /// state directory if missing: what [`Config::load`] does after parsing.
    pub fn resolve(self) -> Result<Config, ConfigErrors> {
        self.resolve_as(StateDir::Create)
    }

    /// Every field of `Parsed` and of the sections resolved here is named (no `..`), and
    /// `Config` is built with every field: a new key does not compile until it is copied
    /// from what was parsed to what the agent runs with.
    pub(super) fn resolve_as(self, mode: StateDir) -> Result<Config, ConfigErrors> {
        let Parsed {
            file,
            device,
            gateway,
            heartbeat,
            reconnect,
            disks,
            warning,
            mut paths,
            probes,
            gpus,
            actions,
            maintenance,
            recovery,
            update,
            spots,
        } = self;
        let ParsedDevice { hardware_id, name, token, token_file } = device;
        // Each file a key names is looked at, whatever the others gave: every refusal at once.
        let mut f = Found::default();
        let token = match (token, &token_file) {
            (_, Some(file)) => f.ok(read_token_file(&spots.token_file, file)),
            (Some(t), None) => f.ok(inline_token_guarded(&spots.token, &file)).map(|()| t),
            (None, None) => unreachable!("read_device refuses a device without token and token_file"),
        };
        let tls = f.ok(tls_material(&spots, &gateway));
        let proxy = f.ok(proxy_policy(&spots.proxy, &gateway.proxy, &|var| std::env::var(var).ok()));
        // A bare name is looked up on PATH when it runs (smartmontools is only recommended, and
        // a missing one gives smart: null); a path is the operator's explicit choice and must work.
        if disks.smartctl.contains('/') {
            let executable = fs::metadata(&disks.smartctl)
                .is_ok_and(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0);
            if !executable {
                f.push(spots.smartctl.err(
                    &format!("{} is not an executable file", quoted(&disks.smartctl)),
                    "install smartmontools, correct the path, or set smartctl = \"\" to turn SMART off",
                ));
            }
        }
        for (spec, at) in actions.actions.values().zip(&spots.commands) {
            f.ok(check_command(&spec.command[0], at));
        }
        f.ok(check_state_dir(&spots.state_dir, &mut paths, mode));
        let (token, ((tls, tls_digest), proxy)) = f.finish(token.zip(tls.zip(proxy)), &file)?;
        let ParsedGateway {
            urls,
            ca_file,
            client_cert,
            client_key,
            connect_timeout,
            login_timeout,
            allow_plaintext,
            max_message_bytes,
            subprotocol,
            // Decided above, with the environment.
            proxy: _,
        } = gateway;
        Ok(Config {
            file,
            device: DeviceConfig { hardware_id, name, token, token_file },
            gateway: GatewayConfig {
                urls,
                ca_file,
                client_cert,
                client_key,
                connect_timeout,
                login_timeout,
                allow_plaintext,
                max_message_bytes,
                subprotocol,
                proxy,
                tls: std::sync::Arc::new(tls),
                tls_digest,
            },
            heartbeat,
            reconnect,
            disks,
            warning,
            paths,
            probes,
            gpus,
            actions,
            maintenance,
            recovery,
            update,
        })
    }
}

/// The proxy policy: `gateway.proxy` as written, or without it the environment (`env`),
/// whose malformed proxy is refused like a wrong key, naming the variable.
pub(super) fn proxy_policy(
    at: &Spot,
    setting: &ProxySetting,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ProxyPolicy, ConfigError> {
    Ok(match setting {
        ProxySetting::Off => ProxyPolicy::Off,
        ProxySetting::Url(p) => ProxyPolicy::Always(p.clone()),
        ProxySetting::Environment => ProxyPolicy::Environment(EnvProxies::read(env).map_err(|why| {
            at.err(
                &format!("gateway.proxy is not set, so the environment decides, and {why}"),
                "correct the variable where it is set (the unit's drop-in: systemctl edit rig-agent), \
                 or set gateway.proxy to a proxy URL or \"none\" to override it",
            )
        })?),
    })
}

/// The same rule as for token_file: a secret readable by every local user is refused.
/// (Group-readable is fine here: the package's config is root:rig-agent 0640.)
fn inline_token_guarded(at: &Spot, file: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(file) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            return Err(at.err(
                &format!("the token is inline and {} is readable by others (mode {mode:04o})", file.display()),
                &format!("chmod o-rwx {}, or move the token to a token_file of mode 0600", file.display()),
            ));
        }
    }
    Ok(())
}

/// The rustls client config from the PEM files (webpki-roots without `ca_file`), and a
/// digest of those files.
fn tls_material(spots: &Spots, g: &ParsedGateway) -> Result<(rustls::ClientConfig, u64), ConfigError> {
    let roots = match &g.ca_file {
        Some(f) => Some(tls::read_ca_file(f).map_err(|why| {
            spots.ca_file.err(&why.to_string(), "point it at a readable PEM file of CA certificates")
        })?),
        None => None,
    };
    let client_auth = match (&g.client_cert, &g.client_key) {
        (Some(c), Some(k)) => {
            let chain = tls::read_cert_chain(c).map_err(|why| {
                spots.client_cert.err(&why.to_string(), "point it at a readable PEM certificate chain")
            })?;
            let key = tls::read_private_key(k).map_err(|why| {
                spots.client_key.err(&why.to_string(), "point it at a readable PEM private key (mode 0600)")
            })?;
            Some((chain, key))
        }
        // read_gateway refuses one without the other.
        _ => None,
    };
    let config = tls::client_config(roots, client_auth).map_err(|why| {
        let at = if g.ca_file.is_some() && g.client_cert.is_none() { &spots.ca_file } else { &spots.client_key };
        at.err(&why.to_string(), "check that the certificate and key belong together")
    })?;
    Ok((config, digest_files(&[&g.ca_file, &g.client_cert, &g.client_key])))
}
