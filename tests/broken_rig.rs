//! What a broken rig can put in the agent's way (issue 10, items 9, 10 and 12): special
//! files where the token, the spool or the inventory should be, a spool that is not a
//! directory, durations too long to add to a clock. The real binary, as systemd runs it.

mod common;

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use common::*;

/// A config whose gateway never answers: enough for start-up and `check`.
fn offline_config(dir: &Path) -> std::path::PathBuf {
    let pki = Pki::new(&["localhost"]);
    fs::copy(&pki.ca_file, dir.join("ca.pem")).unwrap();
    AgentConfig::new("wss://localhost:1/ws".into(), &dir.join("ca.pem")).write(dir)
}

/// Starts the agent and returns its exit code and log; a hang fails the test at `limit`.
fn start_and_wait(cfg: &Path) -> (Option<i32>, String) {
    let mut child = spawn_agent(cfg, &[]);
    let (code, _, log) = wait_exit(&mut child, 10 * SEC);
    (code, log)
}

#[test]
fn a_fifo_as_the_token_file_exits_78_at_once_instead_of_hanging() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let cfg = offline_config(dir.path());
    let token = dir.path().join("token");
    fs::remove_file(&token).unwrap();
    mkfifo(&token);
    let (code, log) = start_and_wait(&cfg);
    assert_eq!(code, Some(78), "{log}");
    assert!(log.contains("`device.token_file`") && log.contains("FIFO"), "{log}");
    assert!(log.contains(&token.display().to_string()), "the path is named: {log}");
    assert!(log.contains("Fix:"), "{log}");
}

#[test]
fn a_fifo_as_the_config_or_the_ca_file_exits_78_at_once_naming_it() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let cfg = offline_config(dir.path());
    let ca = dir.path().join("ca.pem");
    fs::remove_file(&ca).unwrap();
    mkfifo(&ca);
    let (code, log) = start_and_wait(&cfg);
    assert_eq!(code, Some(78), "{log}");
    assert!(log.contains("`gateway.ca_file`") && log.contains(&ca.display().to_string()), "{log}");
    fs::remove_file(&cfg).unwrap();
    mkfifo(&cfg);
    let (code, err) = check(&cfg);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("FIFO") && err.contains(&cfg.display().to_string()), "{err}");
}

#[test]
fn a_200_mb_token_file_is_refused_naming_the_cap() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let cfg = offline_config(dir.path());
    let token = dir.path().join("token");
    // Sparse: the agent would have to read it to find out, the test disk does not fill.
    fs::File::options().write(true).open(&token).unwrap().set_len(200_000_000).unwrap();
    let (code, log) = start_and_wait(&cfg);
    assert_eq!(code, Some(78), "{log}");
    assert!(log.contains("`device.token_file`") && log.contains("65536-byte cap"), "{log}");
    let (code, err) = check(&cfg);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("65536-byte cap"), "{err}");
}

#[test]
fn sighup_with_a_fifo_as_the_token_file_is_refused_and_heartbeats_go_on() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let cfg = AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path());
    let mut child = spawn_agent(&cfg, &[]);
    let (conn, _) = gw.wait_login(10 * SEC);
    let token = dir.path().join("token");
    fs::remove_file(&token).unwrap();
    mkfifo(&token);
    signal(&child, Signal::HUP);
    for _ in 0..3 {
        let (c, _, _) = gw.wait_act(5 * SEC, "heartbeat");
        assert_eq!(c, conn, "same connection, still beating");
    }
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.lines().any(|l| l.contains("ERROR") && l.contains("reload refused") && l.contains("FIFO")), "{log}");
}

#[test]
fn a_fifo_spool_entry_and_a_dev_zero_inventory_are_moved_aside_and_the_agent_starts() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let cfg = AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path());
    let state = dir.path().join("state");
    fs::create_dir_all(state.join("spool")).unwrap();
    let entry = state.join("spool/w-000000000001.json");
    mkfifo(&entry);
    std::os::unix::fs::symlink("/dev/zero", state.join("disks.json")).unwrap();
    let mut child = spawn_agent(&cfg, &[]);
    gw.wait_login(10 * SEC);
    gw.wait_act(5 * SEC, "heartbeat");
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    let aside = state.join("spool/w-000000000001.json.corrupt");
    assert!(fs::symlink_metadata(&aside).unwrap().file_type().is_fifo(), "the FIFO was moved aside");
    assert!(!entry.exists());
    let inv_aside = state.join("disks.json.corrupt");
    assert!(fs::symlink_metadata(&inv_aside).unwrap().file_type().is_symlink(), "the link was moved aside");
    assert!(log.lines().any(|l| l.contains("ERROR") && l.contains("FIFO") && l.contains("moved aside")), "{log}");
    assert!(
        log.lines().any(|l| l.contains("ERROR") && l.contains("disks.json") && l.contains("symbolic link")),
        "{log}"
    );
}

#[test]
fn a_spool_that_is_a_file_or_fifo_exits_78_in_check_and_at_start_naming_path_and_fix() {
    let _g = Guard::new(30 * SEC);
    for fifo in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = offline_config(dir.path());
        let spool = dir.path().join("state/spool");
        fs::create_dir_all(spool.parent().unwrap()).unwrap();
        if fifo {
            mkfifo(&spool);
        } else {
            fs::write(&spool, "not a directory").unwrap();
        }
        for (what, (code, err)) in [("check", check(&cfg)), ("start", start_and_wait(&cfg))] {
            assert_eq!(code, Some(78), "{what}: {err}");
            assert!(err.contains(&spool.display().to_string()), "{what} names the path: {err}");
            assert!(err.contains(&format!("Fix: move it away (mv {}", spool.display())), "{what}: {err}");
        }
    }
}

#[test]
fn a_duration_too_long_to_add_to_a_clock_exits_78_in_check_and_at_start_naming_key_and_maximum() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let cfg = offline_config(dir.path());
    let text =
        fs::read_to_string(&cfg).unwrap().replace("login_timeout = \"1s\"", "login_timeout = \"200000000000000d\"");
    fs::write(&cfg, text).unwrap();
    for (what, (code, err)) in [("check", check(&cfg)), ("start", start_and_wait(&cfg))] {
        assert_eq!(code, Some(78), "{what}: {err}");
        assert!(err.contains("`gateway.login_timeout`") && err.contains("maximum is \"10m\""), "{what}: {err}");
    }
}
