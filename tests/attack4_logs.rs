//! Attack review 4: outside text that reaches a log line unescaped.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Instant;

use common::*;

/// smartctl's `messages` quote what the disk or its USB bridge says ("Unknown USB bridge
/// [...]", "Read Device Identity failed: ..."), and its JSON may carry any character,
/// newlines included. A disk smartctl cannot talk to (exit status bit 1) is reported with
/// those messages as the reason, and that reason went into a warning line as it was: a
/// newline started a new journal entry, and a `<0>` at its start would have set its
/// priority to emergency. Every other outside text is escaped.
#[test]
fn a_newline_in_smartctls_messages_does_not_start_a_new_log_line() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let rig = dir.path().join("rig");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rig");
    assert!(Command::new("cp").arg("-a").arg(&src).arg(&rig).status().unwrap().success());
    let smartctl = dir.path().join("smartctl");
    fs::write(
        &smartctl,
        "#!/bin/sh\nprintf '%s\\n' '{\"smartctl\":{\"exit_status\":2,\"messages\":[{\"string\":\"bridge says hi\\nFORGED-ENTRY <0>kernel: panic\",\"severity\":\"error\"}]}}'\nexit 2\n",
    )
    .unwrap();
    fs::set_permissions(&smartctl, fs::Permissions::from_mode(0o755)).unwrap();

    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.disks = format!("smartctl = {:?}\nscan_interval = \"200ms\"\n", smartctl.display().to_string());
    cfg.paths_extra = format!(
        "sysfs = {:?}\nprocfs = {:?}\nrootfs = {:?}\nprivileged_socket = \"\"\n",
        rig.join("sys").display().to_string(),
        rig.join("proc").display().to_string(),
        rig.display().to_string()
    );
    let config = cfg.write(dir.path());
    let mut child = spawn_agent(&config, &[]);
    gw.wait_login(10 * SEC);
    let until = Instant::now() + 10 * SEC;
    while !take_log(&mut child).contains("bridge says hi") {
        assert!(Instant::now() < until, "smartctl's message was never logged:\n{}", take_log(&mut child));
        thread::sleep(ms(100));
    }
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    let forged: Vec<&str> = log.lines().filter(|l| l.starts_with("FORGED")).collect();
    assert!(forged.is_empty(), "smartctl's text started its own log line: {forged:?}\n{log}");
}
