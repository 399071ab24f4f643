//! Every key of the config, by section: what each reader accepts, and where a key given in
//! the wrong section belongs ("move it to [gateway]").

pub(crate) const TOP: &[&str] = &[
    "device",
    "gateway",
    "heartbeat",
    "reconnect",
    "disks",
    "warning",
    "paths",
    "probes",
    "gpus",
    "actions",
    "maintenance",
    "recovery",
    "update",
];
pub(crate) const DEVICE: &[&str] = &["hardware_id", "name", "token", "token_file"];
pub(crate) const GATEWAY: &[&str] = &[
    "urls",
    "ca_file",
    "client_cert",
    "client_key",
    "connect_timeout",
    "login_timeout",
    "allow_plaintext",
    "max_message_bytes",
    "subprotocol",
    "proxy",
];
pub(crate) const HEARTBEAT: &[&str] = &["interval", "timeout"];
pub(crate) const RECONNECT: &[&str] = &["initial", "max"];
pub(crate) const DISKS: &[&str] = &[
    "scan_interval",
    "include",
    "exclude",
    "ioerr_threshold",
    "smartctl",
    "smart_interval",
    "smart_timeout",
    "io_error_quiet",
];
pub(crate) const WARNING: &[&str] = &["resend_after", "send_cleared"];
pub(crate) const MAINTENANCE: &[&str] = &["remote"];
/// `[recovery]` itself; its other keys are `[recovery.<reason>]` ladders.
pub(crate) const RECOVERY: &[&str] = &["enabled", "dry_run"];
/// `[recovery.<reason>]`.
pub(crate) const LADDER: &[&str] = &["steps", "wait_between", "budget"];
pub(crate) const PATHS: &[&str] =
    &["state_dir", "sysfs", "procfs", "rootfs", "kmsg", "privileged_socket", "update_dir"];
pub(crate) const PROBES: &[&str] = &["nvidia_smi", "nvidia_smi_timeout", "nvidia_smi_interval"];
pub(crate) const GPUS: &[&str] = &["warn"];
/// `[actions]` itself; its other keys are `[actions.<name>]` sections.
pub(crate) const ACTIONS: &[&str] = &["enabled", "max_concurrent"];
/// `[actions.<name>]`.
pub(crate) const ACTION: &[&str] = &["command", "timeout", "min_interval"];
pub(crate) const UPDATE: &[&str] = &["enabled", "keys", "confirm_after", "confirm_within", "max_bytes"];

/// Each section, as an operator writes its header, with its keys.
const SECTIONS: &[(&str, &[&str])] = &[
    ("device", DEVICE),
    ("gateway", GATEWAY),
    ("heartbeat", HEARTBEAT),
    ("reconnect", RECONNECT),
    ("disks", DISKS),
    ("warning", WARNING),
    ("paths", PATHS),
    ("probes", PROBES),
    ("gpus", GPUS),
    ("actions", ACTIONS),
    ("maintenance", MAINTENANCE),
    ("recovery", RECOVERY),
    ("recovery.<reason>", LADDER),
    ("actions.<name>", ACTION),
    ("update", UPDATE),
];

/// The sections other than `here` (`""` for the top level, `actions.reboot` for an action)
/// that have `key`, as headers: `["[gateway]"]`.
pub(crate) fn elsewhere(key: &str, here: &str) -> Vec<String> {
    let here = if here.starts_with("actions.") {
        "actions.<name>"
    } else if here.starts_with("recovery.") {
        "recovery.<reason>"
    } else {
        here
    };
    SECTIONS.iter().filter(|(name, keys)| *name != here && keys.contains(&key)).map(|(n, _)| format!("[{n}]")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_of_another_section_names_that_section() {
        assert_eq!(elsewhere("ca_file", "device"), ["[gateway]"]);
        assert_eq!(elsewhere("hardware_id", ""), ["[device]"]);
        assert_eq!(elsewhere("timeout", "gateway"), ["[heartbeat]", "[actions.<name>]"]);
        assert_eq!(elsewhere("timeout", "actions.reboot"), ["[heartbeat]"]);
        assert!(elsewhere("bogus", "device").is_empty());
    }
}
