use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A valid config in `dir` (token file, state dir), for other modules' tests.
pub(crate) fn minimal_config(dir: &Path) -> Config {
    let token = dir.join("token");
    fs::write(&token, "t\n").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let text = MINIMAL.replace("STATE", &dir.join("state").display().to_string());
    Config::parse(&dir.join("rig-agent.toml"), &text).and_then(Parsed::resolve).unwrap()
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
    /// The config, or its first refusal.
    fn parse(&self, body: &str) -> Result<Config, ConfigError> {
        self.parse_all(body).map_err(|e| e.first().clone())
    }
    fn parse_all(&self, body: &str) -> Result<Config, ConfigErrors> {
        let state = self.dir.path().join("state");
        let text = body.replace("STATE", &state.display().to_string());
        Config::parse(&self.dir.path().join("rig-agent.toml"), &text).and_then(Parsed::resolve)
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
fn a_reload_reconnects_for_the_connection_settings_and_only_for_them() {
    let f = Fixture::new();
    let token2 = f.dir.path().join("token2");
    fs::write(&token2, "secret-token-value\n").unwrap();
    fs::set_permissions(&token2, fs::Permissions::from_mode(0o600)).unwrap();
    let base = f.parse(MINIMAL).unwrap();
    let gateway = |line: &str| MINIMAL.replace("[gateway]\n", &format!("[gateway]\n{line}\n"));
    let section = |text: &str| format!("{MINIMAL}{text}\n");
    let reconnects = [
        MINIMAL.replace("rig-1", "rig-2"),
        MINIMAL.replace("[device]\n", "[device]\nname = \"other\"\n"),
        MINIMAL.replace("gw.example.com", "gw2.example.com"),
        gateway("subprotocol = \"rig.v1\""),
        gateway("allow_plaintext = true"),
        gateway("max_message_bytes = 2048"),
        gateway("connect_timeout = \"5s\""),
        gateway("proxy = \"http://proxy.example:3128\""),
        gateway("proxy = \"none\""),
    ];
    for text in &reconnects {
        assert!(base.connection_differs(&f.parse(text).unwrap()), "{text}");
    }
    let in_place = [
        // The same token from another file.
        MINIMAL.replace("token_file = \"token\"", "token_file = \"token2\""),
        gateway("login_timeout = \"5s\""),
        section("[heartbeat]\ninterval = \"10s\""),
        section("[reconnect]\nmax = \"2m\""),
        section("[disks]\nscan_interval = \"2m\""),
        section("[warning]\nresend_after = \"2m\""),
        section("[probes]\nnvidia_smi = \"\""),
        section("[actions]\nenabled = true"),
        format!("{MINIMAL}sysfs = \"/elsewhere\"\n"),
    ];
    for text in &in_place {
        assert!(!base.connection_differs(&f.parse(text).unwrap()), "{text}");
    }
    let moved = f.parse(&format!("{MINIMAL}sysfs = \"/elsewhere\"\n")).unwrap();
    assert!(base.paths_differ(&moved) && !base.paths_differ(&f.parse(&gateway("login_timeout = \"5s\"")).unwrap()));
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

#[test]
fn parse_reads_no_file_and_resolve_names_the_line_of_the_key_whose_file_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let text = format!(
        "[device]\nhardware_id = \"rig-1\"\ntoken_file = \"missing-token\"\n[gateway]\n\
         urls = [\"wss://gw.example.com/ws\"]\n[paths]\nstate_dir = \"{}\"\n",
        state.display()
    );
    let parsed = Config::parse(&dir.path().join("rig-agent.toml"), &text).unwrap();
    assert!(!state.exists(), "parse must not create the state directory");
    let e = parsed.resolve().unwrap_err();
    let e = e.first();
    assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("device.token_file")), "{e}");
}

#[test]
fn a_key_in_the_wrong_section_is_told_where_it_belongs() {
    let f = Fixture::new();
    let e = f.parse(&MINIMAL.replace("[gateway]\n", "ca_file = \"ca.pem\"\n[gateway]\n")).unwrap_err();
    assert_eq!((e.key.as_deref(), e.line), (Some("device.ca_file"), Some(4)), "{e}");
    assert_eq!(e.problem, "is not a key in [device]");
    assert_eq!(e.fix, "move it to [gateway]");
    let e = f.parse(&format!("hardware_id = \"rig-2\"\n{MINIMAL}")).unwrap_err();
    assert_eq!((e.key.as_deref(), e.fix.as_str()), (Some("hardware_id"), "move it to [device]"), "{e}");
    assert_eq!(e.problem, "is not a key at the top level");
    let e = f.parse(&format!("{MINIMAL}[gateway.x]\n")).unwrap_err();
    assert!(e.fix.contains("remove it"), "a key no section has is still told to go: {e}");
    let e = f.parse(&format!("{MINIMAL}[actions]\ninterval = \"1s\"\n")).unwrap_err();
    assert_eq!(e.fix, "move it to [heartbeat]", "{e}");
}

#[test]
fn every_mistake_of_a_config_is_named_in_one_reading() {
    let f = Fixture::new();
    let text = "ca_file = \"x.pem\"\n\
        [device]\nhardware_id = \"rig 1\"\ntoken_file = \"token\"\n\
        [gateway]\nurls = [\"wss://gw.example.com/ws\"]\nconnect_timeout = \"10\"\nintervall = 3\n\
        [heartbeat]\ninterval = \"5x\"\ntimeout = 7\n\
        [paths]\nstate_dir = \"STATE\"\n\
        [actions]\n[actions.reboot]\ncommand = [\"reboot\"]\n";
    let errors = f.parse_all(text).unwrap_err();
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_deref().unwrap_or("")).collect();
    assert_eq!(
        keys,
        [
            "ca_file",
            "device.hardware_id",
            "gateway.intervall",
            "gateway.connect_timeout",
            "heartbeat.interval",
            "heartbeat.timeout",
            "actions.reboot.command"
        ],
        "{errors}"
    );
    // Each names the file, its line and a fix, on its own line.
    let text = errors.to_string();
    assert_eq!(text.lines().count(), errors.len());
    for line in text.lines() {
        assert!(
            line.starts_with("config error in ") && line.contains("rig-agent.toml, line ") && line.contains(". Fix: ")
        );
    }
}

#[test]
fn a_refusal_judged_from_another_key_is_not_made_up_when_that_key_is_wrong() {
    // interval cannot be read: the "timeout must be longer than interval" check is skipped
    // rather than run against a default the operator never wrote.
    let f = Fixture::new();
    let errors =
        f.parse_all(&format!("{MINIMAL}[heartbeat]\ninterval = \"5 minutes\"\ntimeout = \"10s\"\n")).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors}");
    assert_eq!(errors.first().key.as_deref(), Some("heartbeat.interval"));
}

#[test]
fn files_named_by_several_keys_are_all_judged_in_one_reading() {
    let f = Fixture::new();
    let text = MINIMAL
        .replace("token_file = \"token\"", "token_file = \"no-token\"")
        .replace("[gateway]\n", "[gateway]\nca_file = \"no-ca.pem\"\n")
        + "[disks]\nsmartctl = \"/nonexistent/smartctl\"\n";
    let errors = f.parse_all(&text).unwrap_err();
    let keys: Vec<&str> = errors.iter().filter_map(|e| e.key.as_deref()).collect();
    assert_eq!(keys, ["device.token_file", "gateway.ca_file", "disks.smartctl"], "{errors}");
}

#[test]
fn a_malformed_proxy_names_file_line_key_and_fix_without_its_password() {
    let f = Fixture::new();
    let text = MINIMAL.replace("[gateway]\n", "[gateway]\nproxy = \"https://rig:hunter2@proxy.example:3128\"\n");
    let e = f.parse(&text).unwrap_err();
    assert_eq!((e.line, e.key.as_deref()), (Some(5), Some("gateway.proxy")));
    assert!(e.problem.contains("\"https://***@proxy.example:3128\" is not a usable proxy"), "{e}");
    assert!(e.problem.contains("https:// is not supported"), "{e}");
    assert!(e.fix.contains("http://[user:password@]host:port"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let no_port = f.parse(&MINIMAL.replace("[gateway]\n", "[gateway]\nproxy = \"http://proxy.example\"\n"));
    assert!(no_port.unwrap_err().problem.contains("no port"));
}

#[test]
fn check_masks_the_proxy_credentials_and_reads_back_the_same() {
    let f = Fixture::new();
    let text = MINIMAL.replace("[gateway]\n", "[gateway]\nproxy = \"socks5h://rig:hunter2@proxy.example:1080\"\n");
    let c = f.parse(&text).unwrap();
    let shown = c.render();
    assert!(shown.contains("proxy = \"socks5h://***@proxy.example:1080\""), "{shown}");
    assert!(!shown.contains("hunter2") && !format!("{c:?}").contains("hunter2"), "{shown}");
    assert_eq!(f.parse(&shown).unwrap().render(), shown);
    let off = f.parse(&MINIMAL.replace("[gateway]\n", "[gateway]\nproxy = \"none\"\n")).unwrap();
    assert_eq!(off.gateway.proxy, crate::config::proxy::ProxyPolicy::Off);
}

#[test]
fn a_malformed_proxy_in_the_environment_is_refused_naming_the_variable() {
    use crate::config::proxy::{ProxyPolicy, ProxySetting};
    let f = Fixture::new();
    let env = |var: &str| (var == "https_proxy").then(|| "http://rig:hunter2@proxy.example".to_string());
    let spot = crate::config::section::Spot::for_tests(&f.dir.path().join("rig-agent.toml"), "gateway.proxy");
    let e = resolve::proxy_policy(&spot, &ProxySetting::Environment, &env).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("gateway.proxy"));
    assert!(e.problem.contains("https_proxy=\"http://***@proxy.example\" is not a usable proxy: no port"), "{e}");
    assert!(e.fix.contains("systemctl edit rig-agent"), "{e}");
    assert!(!e.to_string().contains("hunter2"));
    // The key overrides a malformed environment.
    let off = resolve::proxy_policy(&spot, &ProxySetting::Off, &env).unwrap();
    assert_eq!(off, ProxyPolicy::Off);
}

/// A public key minisign made (`minisign -G`), the second line of its `.pub` file.
const UPDATE_KEY: &str = "RWQluyckVB15nlYpgNXxtNaUp7e8ukzyGuj0kMFbgn+a2arrcb4/oJ71";

#[test]
fn updates_are_off_by_default_and_on_need_a_key() {
    let f = Fixture::new();
    let c = f.parse(MINIMAL).unwrap();
    assert!(!c.update.enabled);
    assert_eq!((c.update.confirm_after, c.update.confirm_within), (Duration::from_secs(120), Duration::from_secs(600)));
    assert_eq!(c.update.max_bytes, 64 << 20);
    assert_eq!(c.paths.update_dir, Path::new("/var/lib/rig-agent-update"));
    let e = f.parse(&format!("{MINIMAL}[update]\nenabled = true\n")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("update.keys"));
    let c = f.parse(&format!("{MINIMAL}[update]\nenabled = true\nkeys = [\"{UPDATE_KEY}\"]\n")).unwrap();
    assert_eq!(c.update.keys, vec![UPDATE_KEY.to_string()]);
}

#[test]
fn a_malformed_update_key_or_confirm_times_that_cannot_work_are_named_with_their_line_and_fix() {
    let f = Fixture::new();
    let e = f.parse(&format!("{MINIMAL}[update]\nenabled = true\nkeys = [\"RWQnotakey\"]\n")).unwrap_err();
    assert_eq!((e.key.as_deref(), e.line), (Some("update.keys"), Some(10)));
    assert!(e.fix.contains(".pub"), "{e}");
    let e = f.parse(&format!("{MINIMAL}[update]\nconfirm_after = \"5m\"\nconfirm_within = \"2m\"\n")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("update.confirm_within"));
    let e = f.parse(&format!("{MINIMAL}[update]\nconfirm_within = \"5s\"\n")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("update.confirm_within"));
    let e = f.parse(&format!("{MINIMAL}[update]\nconfirm_after = \"500ms\"\n")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("update.confirm_after"));
}
