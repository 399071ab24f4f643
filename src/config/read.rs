//! The pure readers of the config's sections: text already parsed into spanned TOML in,
//! validated values out. Nothing here touches the file system: what the keys point at (the
//! token file, the PEM files, the state directory, the programs) is read by `resolve`.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::section::Section;
use crate::config::*;
use crate::net::url::GatewayUrl;

// Largest values of the duration keys: far beyond any sane setting, and small enough that
// `Instant + duration` cannot overflow (a panic, exit 101) whatever the clock.
pub(super) const TEN_MINUTES: Duration = Duration::from_secs(600);
pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const DAY: Duration = Duration::from_secs(86_400);

pub(super) fn read_device(s: &mut Section) -> Result<ParsedDevice, ConfigError> {
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
            // Whether the config file itself is readable by others is `resolve`'s to check.
            (Some(Token(t.trim().to_string())), None)
        }
        (None, Some(f)) => (None, Some(f)),
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
    Ok(ParsedDevice { hardware_id, name, token, token_file })
}

pub(super) fn read_gateway(s: &mut Section) -> Result<ParsedGateway, ConfigError> {
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
    let urls = read_urls(s, allow_plaintext)?;
    let ca_file = s.path("ca_file")?;
    let client_cert = s.path("client_cert")?;
    let client_key = s.path("client_key")?;

    match (&client_cert, &client_key) {
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
        _ => {}
    }
    let max_message_bytes = s.int_or("max_message_bytes", 1 << 20, 1024, 1 << 30)?;
    Ok(ParsedGateway {
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
    Ok(urls)
}

pub(super) fn read_heartbeat(s: &mut Section) -> Result<HeartbeatConfig, ConfigError> {
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

pub(super) fn read_reconnect(s: &mut Section) -> Result<ReconnectConfig, ConfigError> {
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

pub(super) fn read_disks(s: &mut Section) -> Result<DisksConfig, ConfigError> {
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
    // A path given here is checked to be executable by `resolve`.
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

pub(super) fn read_probes(s: &mut Section) -> Result<ProbesConfig, ConfigError> {
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

/// The `[paths]` keys; the state directory is looked at (or created) by `resolve`.
pub(super) fn read_paths(s: &mut Section) -> Result<PathsConfig, ConfigError> {
    s.deny(&["state_dir", "sysfs", "procfs", "rootfs", "kmsg", "privileged_socket"])?;
    Ok(PathsConfig {
        state_dir: s.path("state_dir")?.unwrap_or_else(|| PathBuf::from("/var/lib/rig-agent")),
        state_dir_problem: None,
        state_dir_note: None,
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
