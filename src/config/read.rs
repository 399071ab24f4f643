//! The pure readers of the config's sections: text already parsed into spanned TOML in,
//! validated values out. Nothing here touches the file system: what the keys point at (the
//! token file, the PEM files, the state directory, the programs) is read by `resolve`.
//!
//! Each reader goes on past a refusal, keeping it in [`Found`], so `check` names every
//! mistake at once; a check that compares keys runs only when those keys were read.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::error::{Found, quoted};
use crate::config::keys;
use crate::config::proxy::{self, ProxySetting, ProxyUrl};
use crate::config::section::Section;
use crate::config::url::GatewayUrl;
use crate::config::*;

// Largest values of the duration keys: far beyond any sane setting, and small enough that
// `Instant + duration` cannot overflow (a panic, exit 101) whatever the clock.
pub(super) const TEN_MINUTES: Duration = Duration::from_secs(600);
pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const DAY: Duration = Duration::from_secs(86_400);

pub(super) fn read_device(s: &Section, f: &mut Found) -> Option<ParsedDevice> {
    s.deny(keys::DEVICE, f);
    let hardware_id = f.ok(s.required_str("hardware_id", "hardware_id = \"rig-0042\"")).and_then(|id| {
        if id.trim().is_empty() {
            f.push(s.err_at("hardware_id", "is empty", "set it to the rig's id as the gateway knows it"));
            return None;
        }
        // It is the rig's key at the gateway and goes into every message: a stray space would
        // make a second, unknown rig.
        if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            f.push(s.err_at(
                "hardware_id",
                &format!("{} contains white space or control characters", quoted(&id)),
                "write the rig's id exactly as the gateway knows it, without spaces",
            ));
            return None;
        }
        // The example config ships this placeholder; a fleet of rigs all called CHANGE-ME
        // would overwrite each other at the gateway.
        if id == "CHANGE-ME" {
            f.push(s.err_at(
                "hardware_id",
                "is still the example's placeholder",
                "set it to the rig's id as the gateway knows it",
            ));
            return None;
        }
        Some(id)
    });
    let name = f.ok(s.str("name"));
    let token = f.ok(s.str("token"));
    let token_file = f.ok(s.path("token_file"));
    let (token, token_file) = match (token?, token_file?) {
        (Some(_), Some(_)) => {
            f.push(s.err_at(
                "token",
                "both `token` and `token_file` are set",
                "keep one of them (token_file is better: the config can then be world-readable)",
            ));
            return None;
        }
        (None, None) => {
            f.push(s.err_missing(
                "token_file",
                "neither `token_file` nor `token` is set",
                "add token_file = \"/etc/rig-agent/token\" (a file of mode 0600 holding the token)",
            ));
            return None;
        }
        (Some(t), None) => {
            if t.trim().is_empty() {
                f.push(s.err_at("token", "is empty", "set the rig's token"));
                return None;
            }
            // Whether the config file itself is readable by others is `resolve`'s to check.
            (Some(Token(t.trim().to_string())), None)
        }
        (None, Some(file)) => (None, Some(file)),
    };
    let hardware_id = hardware_id?;
    Some(ParsedDevice { name: name?.unwrap_or_else(|| hardware_id.clone()), hardware_id, token, token_file })
}

pub(super) fn read_gateway(s: &Section, f: &mut Found) -> Option<ParsedGateway> {
    s.deny(keys::GATEWAY, f);
    let allow_plaintext = f.ok(s.bool_or("allow_plaintext", false));
    // Whether a ws:// URL is allowed depends on allow_plaintext: not judged when that is
    // itself refused (the URLs' other mistakes still are).
    let urls = f.ok(read_urls(s, allow_plaintext.unwrap_or(true)));
    let ca_file = f.ok(s.path("ca_file"));
    let client_cert = f.ok(s.path("client_cert"));
    let client_key = f.ok(s.path("client_key"));
    match (&client_cert, &client_key) {
        (Some(Some(_)), Some(None)) => f.push(s.err_missing(
            "client_key",
            "client_cert is set without client_key",
            "add client_key = \"/etc/rig-agent/client.key\"",
        )),
        (Some(None), Some(Some(_))) => f.push(s.err_missing(
            "client_cert",
            "client_key is set without client_cert",
            "add client_cert = \"/etc/rig-agent/client.pem\"",
        )),
        _ => {}
    }
    let max_message_bytes = f.ok(s.int_or("max_message_bytes", 1 << 20, 1024, 1 << 30));
    let connect_timeout =
        f.ok(s.duration_or("connect_timeout", Duration::from_secs(10), Duration::from_millis(10), TEN_MINUTES));
    let login_timeout =
        f.ok(s.duration_or("login_timeout", Duration::from_secs(10), Duration::from_millis(10), TEN_MINUTES));
    let subprotocol = f.ok(s.str("subprotocol"));
    let proxy = f.ok(read_proxy(s));
    Some(ParsedGateway {
        urls: urls?,
        ca_file: ca_file?,
        client_cert: client_cert?,
        client_key: client_key?,
        connect_timeout: connect_timeout?,
        login_timeout: login_timeout?,
        allow_plaintext: allow_plaintext?,
        max_message_bytes: max_message_bytes? as usize,
        subprotocol: subprotocol?,
        proxy: proxy?,
    })
}

/// `gateway.proxy`: a proxy URL, `"none"`, or absent (the environment decides at load).
fn read_proxy(s: &Section) -> Result<ProxySetting, ConfigError> {
    let Some(text) = s.str("proxy")? else { return Ok(ProxySetting::Environment) };
    if text == "none" {
        return Ok(ProxySetting::Off);
    }
    ProxyUrl::parse(&text).map(ProxySetting::Url).map_err(|why| {
        s.err_at(
            "proxy",
            &format!("{} is not a usable proxy: {why}", quoted(&proxy::mask(&text))),
            "write it as http://[user:password@]host:port (HTTP CONNECT) or socks5h://[user:password@]host:port, \
             or \"none\" to ignore the proxy environment",
        )
    })
}

/// `gateway.urls`: at least one, parsed, not the example's placeholder, `wss://` unless
/// `allow_plaintext`.
fn read_urls(s: &Section, allow_plaintext: bool) -> Result<Vec<GatewayUrl>, ConfigError> {
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
            s.err_at(
                "urls",
                &format!("{} is not a usable URL: {why}", quoted(raw)),
                "write it as wss://host[:port]/path",
            )
        })?;
        // The example config's placeholder: left in place, the agent would retry a host that
        // does not exist for ever, and `check` would have said the config is fine.
        if url.host() == EXAMPLE_HOST {
            return Err(s.err_at(
                "urls",
                &format!("{} is still the example's placeholder", quoted(raw)),
                "set the URL of your farm's gateway",
            ));
        }
        if !url.is_tls() && !allow_plaintext {
            return Err(s.err_at(
                "urls",
                &format!("{} is plain-text ws:// and allow_plaintext is not set", quoted(raw)),
                "use wss://, or set gateway.allow_plaintext = true (labs only: the token travels in clear)",
            ));
        }
        urls.push(url);
    }
    Ok(urls)
}

pub(super) fn read_heartbeat(s: &Section, f: &mut Found) -> Option<HeartbeatConfig> {
    s.deny(keys::HEARTBEAT, f);
    let interval = f.ok(s.duration_or("interval", Duration::from_secs(30), Duration::from_millis(10), HOUR));
    let timeout = f.ok(s.duration_or("timeout", Duration::from_secs(90), Duration::from_millis(10), 3 * HOUR));
    let (interval, timeout) = (interval?, timeout?);
    if timeout <= interval {
        f.push(s.err_at(
            "timeout",
            &format!(
                "timeout ({}) must be longer than interval ({}), or every connection is declared dead",
                format_duration(timeout),
                format_duration(interval)
            ),
            "make heartbeat.timeout about three times heartbeat.interval",
        ));
        return None;
    }
    Some(HeartbeatConfig { interval, timeout })
}

pub(super) fn read_reconnect(s: &Section, f: &mut Found) -> Option<ReconnectConfig> {
    s.deny(keys::RECONNECT, f);
    let initial = f.ok(s.duration_or("initial", Duration::from_secs(1), Duration::from_millis(1), HOUR));
    let max = f.ok(s.duration_or("max", Duration::from_secs(60), Duration::from_millis(1), DAY));
    let (initial, max) = (initial?, max?);
    if max < initial {
        f.push(s.err_at(
            "max",
            &format!("max ({}) is shorter than initial ({})", format_duration(max), format_duration(initial)),
            "make reconnect.max at least reconnect.initial",
        ));
        return None;
    }
    Some(ReconnectConfig { initial, max })
}

pub(super) fn read_disks(s: &Section, f: &mut Found) -> Option<DisksConfig> {
    s.deny(keys::DISKS, f);
    let default_include = ["sd*", "hd*", "vd*", "xvd*", "nvme*", "mmcblk*"];
    let include = f.ok(s.str_list("include")).and_then(|include| {
        let include = include.unwrap_or_else(|| default_include.iter().map(|g| g.to_string()).collect());
        if include.is_empty() {
            f.push(s.err_at(
                "include",
                "is empty, so no disk is reported or monitored",
                "remove the line for the default globs, or list the disks, e.g. include = [\"sd*\"]",
            ));
            return None;
        }
        Some(include)
    });
    // A path given here is checked to be executable by `resolve`.
    let smartctl = f.ok(s.str("smartctl"));
    let scan_interval = f.ok(s.duration_or("scan_interval", Duration::from_secs(60), Duration::from_millis(10), DAY));
    let exclude = f.ok(s.str_list("exclude"));
    let ioerr_threshold = f.ok(s.int_or("ioerr_threshold", 1, 1, u32::MAX as i64));
    let smart_interval =
        f.ok(s.duration_or("smart_interval", Duration::from_secs(3600), Duration::from_secs(1), 7 * DAY));
    let smart_timeout =
        f.ok(s.duration_or("smart_timeout", Duration::from_secs(30), Duration::from_millis(10), TEN_MINUTES));
    let io_error_quiet = f.ok(s.duration_or("io_error_quiet", Duration::from_secs(600), MIN_IO_ERROR_QUIET, DAY));
    Some(DisksConfig {
        scan_interval: scan_interval?,
        include: include?,
        exclude: exclude?.unwrap_or_default(),
        ioerr_threshold: ioerr_threshold? as u64,
        smartctl: smartctl?.unwrap_or_else(|| "smartctl".into()),
        smart_interval: smart_interval?,
        smart_timeout: smart_timeout?,
        io_error_quiet: io_error_quiet?,
    })
}

pub(super) fn read_probes(s: &Section, f: &mut Found) -> Option<ProbesConfig> {
    s.deny(keys::PROBES, f);
    let nvidia_smi = f.ok(s.str("nvidia_smi"));
    let nvidia_smi_timeout =
        f.ok(s.duration_or("nvidia_smi_timeout", Duration::from_secs(10), Duration::from_millis(10), TEN_MINUTES));
    let nvidia_smi_interval =
        f.ok(s.duration_or("nvidia_smi_interval", Duration::from_secs(2), Duration::from_millis(1), HOUR));
    Some(ProbesConfig {
        nvidia_smi: nvidia_smi?.unwrap_or_else(|| "nvidia-smi".into()),
        nvidia_smi_timeout: nvidia_smi_timeout?,
        nvidia_smi_interval: nvidia_smi_interval?,
    })
}

pub(super) fn read_warning(s: &Section, f: &mut Found) -> Option<WarningConfig> {
    s.deny(keys::WARNING, f);
    let resend_after = f.ok(s.duration_or("resend_after", Duration::from_secs(60), Duration::from_millis(10), DAY));
    let send_cleared = f.ok(s.bool_or("send_cleared", false));
    Some(WarningConfig { resend_after: resend_after?, send_cleared: send_cleared? })
}

pub(super) fn read_gpus(s: &Section, f: &mut Found) -> Option<GpusConfig> {
    s.deny(keys::GPUS, f);
    let warn = f.ok(s.bool_or("warn", true))?;
    Some(GpusConfig { warn })
}

pub(super) fn read_maintenance(s: &Section, f: &mut Found) -> Option<MaintenanceConfig> {
    s.deny(keys::MAINTENANCE, f);
    let remote = f.ok(s.bool_or("remote", false))?;
    Some(MaintenanceConfig { remote })
}

/// The `[paths]` keys; the state directory is looked at (or created) by `resolve`.
pub(super) fn read_paths(s: &Section, f: &mut Found) -> Option<PathsConfig> {
    s.deny(keys::PATHS, f);
    let state_dir = f.ok(s.path("state_dir"));
    let sysfs = f.ok(s.path("sysfs"));
    let procfs = f.ok(s.path("procfs"));
    let rootfs = f.ok(s.path("rootfs"));
    let kmsg = f.ok(s.path("kmsg"));
    let update_dir = f.ok(s.path("update_dir"));
    let privileged_socket = match f.ok(s.str("privileged_socket"))?.as_deref() {
        Some("") => None,
        Some(_) => f.ok(s.path("privileged_socket"))?,
        None => Some(DEFAULT_PRIVILEGED_SOCKET.into()),
    };
    Some(PathsConfig {
        state_dir: state_dir?.unwrap_or_else(|| PathBuf::from("/var/lib/rig-agent")),
        state_dir_problem: None,
        state_dir_note: None,
        sysfs: sysfs?.unwrap_or_else(|| "/sys".into()),
        procfs: procfs?.unwrap_or_else(|| "/proc".into()),
        rootfs: rootfs?.unwrap_or_else(|| "/".into()),
        kmsg: kmsg?.unwrap_or_else(|| "/dev/kmsg".into()),
        privileged_socket,
        update_dir: update_dir?.unwrap_or_else(|| DEFAULT_UPDATE_DIR.into()),
    })
}

/// `[update]`: off by default; on, it needs at least one key, and every key must be a
/// minisign public key.
pub(super) fn read_update(s: &Section, f: &mut Found) -> Option<UpdateConfig> {
    s.deny(keys::UPDATE, f);
    let enabled = f.ok(s.bool_or("enabled", false));
    let keys = f.ok(s.str_list("keys")).map(Option::unwrap_or_default).and_then(|keys| {
        let mut good = true;
        for k in &keys {
            if let Err(why) = crate::config::update_key(k) {
                f.push(s.err_at(
                    "keys",
                    &format!("{} is not a minisign public key ({why})", quoted(k)),
                    "give the base64 line of the key's .pub file (the second line, starting with RW)",
                ));
                good = false;
            }
        }
        good.then_some(keys)
    });
    let confirm_after = f.ok(s.duration_or("confirm_after", Duration::from_secs(120), Duration::from_secs(1), DAY));
    let confirm_within = f.ok(s.duration_or("confirm_within", Duration::from_secs(600), Duration::from_secs(10), DAY));
    let max_bytes = f.ok(s.int_or("max_bytes", DEFAULT_UPDATE_MAX_BYTES as i64, 1 << 20, 1 << 30));
    let (enabled, keys, confirm_after, confirm_within) = (enabled?, keys?, confirm_after?, confirm_within?);
    if enabled && keys.is_empty() {
        f.push(s.err_at(
            "keys",
            "is empty, but enabled = true: no build could ever be verified",
            "add the operator's minisign public key, keys = [\"RW...\"], or set enabled = false",
        ));
        return None;
    }
    if confirm_within <= confirm_after {
        f.push(s.err_at(
            "confirm_within",
            &format!(
                "confirm_within ({}) must be longer than confirm_after ({}), or no new version could ever be confirmed",
                format_duration(confirm_within),
                format_duration(confirm_after)
            ),
            "make update.confirm_within a few times update.confirm_after (the defaults are 10m and 2m)",
        ));
        return None;
    }
    Some(UpdateConfig { enabled, keys, confirm_after, confirm_within, max_bytes: max_bytes? as u64 })
}
