//! What an operator types: the config file, `check`, `probe` and the command line. A
//! mistake in the config exits 78 before anything connects, in one line per mistake naming
//! the file, the line, the key and the fix, and `check` says exactly what start-up would;
//! a config up to its size cap is taken without hanging. A mistake on the command line
//! exits 64. `check` creates nothing and shows every key it reads with the token masked;
//! `probe` answers a query without a gateway. The real binary.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Output, Stdio};

use common::*;

fn run(args: &[&str]) -> Output {
    agent_command().args(args).output().expect("run rig-agent")
}

#[test]
fn check_accepts_a_good_config_and_prints_it_without_the_token() {
    let b = Broken::new();
    let out = run(&["--config", b.path().to_str().unwrap(), "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("***"));
    assert!(!shown.contains(TOKEN));
    assert!(shown.contains("hardware_id = \"billtest000000004\""));
    assert!(shown.contains("interval = \"200ms\""), "{shown}");
}

#[test]
fn each_class_of_config_error_exits_78_naming_the_key() {
    // (text in the good config, what replaces it, the key the error must name)
    let edits = [
        ("hardware_id = \"billtest000000004\"\n", "", "device.hardware_id"),
        ("[heartbeat]\n", "[heartbeat]\nintreval = \"1s\"\n", "heartbeat.intreval"),
        ("login_timeout = \"1s\"", "login_timeout = 10", "gateway.login_timeout"),
        ("interval = \"200ms\"", "interval = \"0.2s\"", "heartbeat.interval"),
        ("wss://", "ws://", "gateway.urls"),
        ("token_file = \"token\"", "token_file = \"token\"\ntoken = \"abc\"", "device.token"),
        ("token_file = \"token\"\n", "", "device.token_file"),
        ("ca.pem", "missing-ca.pem", "gateway.ca_file"),
        // What check must catch because the agent could not use it:
        ("/ws\"", "/ws \"", "gateway.urls"),
        ("localhost:1", "gateway.example.com", "gateway.urls"),
        ("[disks]\n", "[disks]\ninclude = []\n", "disks.include"),
        ("smartctl = \"\"", "smartctl = \"/nonexistent/smartctl\"", "disks.smartctl"),
        ("\"billtest000000004\"", "\"billtest 4\"", "device.hardware_id"),
        (
            "[heartbeat]",
            "client_cert = \"missing.pem\"\nclient_key = \"missing.key\"\n[heartbeat]",
            "gateway.client_cert",
        ),
    ];
    for (from, to, key) in edits {
        let b = Broken::new();
        b.edit(|s| s.replace(from, to));
        assert_config_error(&b, key);
    }

    let b = Broken::new();
    fs::set_permissions(b.dir.path().join("token"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_config_error(&b, "device.token_file");
    assert!(b.check().1.contains("chmod 600"));

    // An inline token is held to the token file's rule: not readable by every user.
    let b = Broken::new();
    b.edit(|s| s.replace("token_file = \"token\"", "token = \"abc\""));
    fs::set_permissions(b.path(), fs::Permissions::from_mode(0o644)).unwrap();
    assert_config_error(&b, "device.token");
    fs::set_permissions(b.path(), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(b.check().0, Some(0), "group-readable, as the package installs it, is fine");

    let b = Broken::new();
    fs::create_dir(b.dir.path().join("tokens")).unwrap();
    fs::set_permissions(b.dir.path().join("tokens"), fs::Permissions::from_mode(0o755)).unwrap();
    b.edit(|s| s.replace("token_file = \"token\"", "token_file = \"tokens\""));
    assert_config_error(&b, "device.token_file");
    let err = b.check().1;
    assert!(err.contains("is a directory") && !err.contains("chmod"), "{err}");

    let b = Broken::new();
    b.edit(|s| s.replace("[heartbeat]", "[heartbeat]\ninterval = \"1s\""));
    assert_config_error(&b, "heartbeat.interval");
    assert!(b.check().1.contains("set twice"));

    let b = Broken::new();
    fs::write(b.dir.path().join("ca.pem"), "not a certificate\n").unwrap();
    assert_config_error(&b, "gateway.ca_file");

    let b = Broken::new();
    fs::write(b.dir.path().join("blocker"), "a file where a directory should be").unwrap();
    b.edit(|s| {
        let state = b.dir.path().join("blocker/state").display().to_string();
        let start = s.find("state_dir = ").unwrap();
        format!("{}state_dir = {state:?}\n", &s[..start])
    });
    assert_config_error(&b, "paths.state_dir");
}

#[test]
fn check_creates_nothing_and_says_the_state_dir_will_be_created() {
    let b = Broken::new();
    let state = b.dir.path().join("state");
    let _ = fs::remove_dir_all(&state);
    let out = run(&["--config", b.path().to_str().unwrap(), "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!state.exists(), "check created the state directory");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("# state_dir does not exist yet"), "{shown}");
    // Every key it reads is shown, set or not.
    for key in ["subprotocol", "ca_file", "client_cert", "client_key", "login_timeout", "smart_timeout", "rootfs"] {
        assert!(shown.contains(key), "{key} missing from check's output:\n{shown}");
    }
}

#[test]
fn a_missing_config_file_exits_78_and_says_where_it_looked() {
    let out = run(&["--config", "/nonexistent/rig-agent.toml", "check"]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/rig-agent.toml") && err.contains("no such file"), "{err}");
}

#[test]
fn check_names_every_mistake_of_the_config_in_one_run_and_start_up_says_the_same() {
    let b = Broken::new();
    b.edit(|s| {
        let s = s
            .replace("[device]\n", "[device]\nca_file = \"ca.pem\"\n")
            .replace("[gateway]\n", "[gateway]\nbogus = 1\n")
            .replace("interval = \"200ms\"", "interval = \"200\"");
        format!("hardware_id = \"x\"\n{s}")
    });
    let (code, err) = b.check();
    assert_eq!(code, Some(78), "{err}");
    let lines: Vec<&str> = err.trim().lines().collect();
    assert_eq!(lines.len(), 4, "one line per mistake: {err}");
    for (line, key) in lines.iter().zip(["hardware_id", "device.ca_file", "gateway.bogus", "heartbeat.interval"]) {
        assert!(
            line.contains(&format!("`{key}`")) && line.contains(", line ") && line.contains("Fix:"),
            "{key}: {line}"
        );
    }
    assert!(lines[0].ends_with("Fix: move it to [device]"), "{}", lines[0]);
    assert!(lines[1].ends_with("Fix: move it to [gateway]"), "{}", lines[1]);
    let out = agent_command().args(["--config", b.path().to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(String::from_utf8_lossy(&out.stderr), err, "start-up refuses with check's very lines");
}

#[test]
fn running_with_a_bad_config_exits_78_before_connecting() {
    let b = Broken::new();
    b.edit(|s| s.replace("[gateway]", "[gateway]\nbogus = 1"));
    let out = agent_command().args(["--config", b.path().to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`gateway.bogus`"));
}

#[test]
fn a_state_dir_on_a_read_only_mount_of_a_writable_filesystem_is_a_config_error() {
    if !root() {
        return;
    }
    // What systemd's ProtectSystem=strict does to a state_dir outside ReadWritePaths=: the
    // mount is read-only, the filesystem is not. That is configuration, so exit 78.
    use common::storage::{Unmount, mount};
    let b = Broken::new();
    let state = b.dir.path().join("state");
    fs::create_dir_all(&state).unwrap();
    mount(&["--bind", state.to_str().unwrap(), state.to_str().unwrap()]);
    let _unmount = Unmount(state.clone());
    mount(&["-o", "remount,bind,ro", state.to_str().unwrap()]);
    assert_config_error(&b, "paths.state_dir");
    assert!(b.check().1.contains("ReadWritePaths="), "{}", b.check().1);
}

#[test]
fn probe_prints_the_data_of_a_query_without_a_gateway() {
    let b = Broken::new();
    let out = run(&["--config", b.path().to_str().unwrap(), "probe", "get_agent_info"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["config_file"], b.path().display().to_string());
    assert!(v["gateway_url"].as_str().is_some_and(|u| u.starts_with("wss://")), "the configured URL, not null: {v}");
    let out = run(&["--config", b.path().to_str().unwrap(), "probe", "get_nothing"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("get_agent_info"));
}

#[test]
fn version_help_with_the_probe_acts_and_usage_errors() {
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("rig-agent {}", env!("CARGO_PKG_VERSION")));
    let out = run(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("check"), "{help}");
    assert!(help.contains("get_disk_info") && help.contains("get_system_baseinfo"), "the acts probe takes: {help}");
    for form in [&["-c", "x.toml", "check"][..], &["-cx.toml", "check"], &["--config=x.toml", "check"]] {
        let err = String::from_utf8_lossy(&run(form).stderr).into_owned();
        assert!(err.contains("x.toml"), "{form:?} reads the path: {err}");
    }
    let out = run(&["--frobnicate"]);
    assert_eq!(out.status.code(), Some(64));
    let out = run(&["probe"]);
    assert_eq!(out.status.code(), Some(64));
}

/// A config of 20 000 `[actions.*]` sections stays under the 1 MiB cap, so the agent must
/// take it, and finding each refusal's line must not cost a scan of the whole file per key:
/// counting newlines from the start of the file twice per action is 20 000 × 800 KB, minutes
/// of CPU, during which `check` hangs and a starting agent sends no READY=1. The bound below
/// is a hang guard (the parse takes well under a second), not a speed claim.
#[test]
fn a_config_of_twenty_thousand_actions_under_the_size_cap_is_checked_without_hanging() {
    let _g = Guard::new(120 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut cfg = AgentConfig::new("wss://localhost:1/ws".into(), &pki.ca_file);
    let mut sections = String::from("[actions]\nenabled = true\n");
    for i in 0..20_000 {
        sections += &format!("[actions.a{i}]\ncommand = [\"/bin/true\"]\n");
    }
    cfg.sections = sections;
    let config = cfg.write(dir.path());
    assert!(fs::metadata(&config).unwrap().len() < 1 << 20, "the config must stay under the 1 MiB cap");

    let mut cmd = agent_command();
    cmd.arg("check").arg("--config").arg(&config).stdout(Stdio::null());
    let mut child = spawn_logged(&mut cmd);
    let (code, _, log) = exit_within(&mut child, 30 * SEC).expect("`check` still running after 30 s");
    assert_eq!(code, Some(0), "{log}");
}

/// A value the config refuses is quoted in the error escaped and cut: an ESC sequence in it
/// reaches neither the terminal of `check` nor the journal as is (it shows as `\x1b`), and
/// a value of 200 000 characters gives an error line of a few hundred bytes, not 200 KB.
/// The gateway URL, and every other refused value quoted back (hardware_id, the proxy, a
/// duration).
#[test]
fn a_refused_value_such_as_a_bad_gateway_url_is_quoted_escaped_and_capped_in_the_config_error() {
    let long = "a".repeat(200_000);
    let (url, interval) = ("wss://localhost:1/ws", "[heartbeat]\ninterval = \"");
    // (the key named, the text of the good config replaced, by this)
    let cases = [
        ("gateway.urls", url, "wss://localhost:1/ws\\u001b[2J".to_string()),
        ("gateway.urls", url, format!("wss://{long} x/ws")),
        ("gateway.urls", url, format!("ws://{long}/ws")),
        ("device.hardware_id", HARDWARE_ID, "rig\\u001b[2J".to_string()),
        ("device.hardware_id", HARDWARE_ID, format!("rig {long}")),
        ("gateway.proxy", "[gateway]\n", format!("[gateway]\nproxy = \"http://{long}\"\n")),
        ("heartbeat.interval", interval, format!("{interval}\\u001b[2J{long}")),
    ];
    for (key, from, to) in cases {
        let b = Broken::new();
        b.edit(|s| s.replace(from, &to));
        let (code, err) = b.check();
        let head: String = err.chars().take(500).collect();
        assert_eq!(code, Some(78), "{key}: {head}");
        assert!(err.contains(&format!("`{key}`")), "{key}: {head}");
        assert!(!err.contains('\u{1b}'), "{key}: a raw ESC in the error: {head:?}");
        assert!(err.len() < 4096, "{key}: the error quotes the whole value: {} bytes", err.len());
        assert_eq!(err.trim().lines().count(), 1, "{key}: {err}");
    }
    let b = Broken::new();
    b.edit(|s| s.replace(url, "wss://localhost:1/ws\\u001b[2J"));
    let err = b.check().1;
    assert!(err.contains("\"wss://localhost:1/ws\\x1b[2J\""), "the value is shown escaped: {err}");
}
