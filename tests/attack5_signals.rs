//! Attack review 5: SIGTERM at moments the earlier rounds did not reach. An action whose
//! command is not started yet when the agent kills its running commands at stop, and each
//! separate phase of a connect attempt.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;

use common::storage::LoopFs;
use common::*;
use serde_json::json;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

/// An action is accepted while the state filesystem is frozen: its thread waits in the
/// kernel to record the start time, before it starts the command. SIGTERM now: the stop
/// kills the commands running (none yet) and then waits for the outbox and the monitor,
/// which wait on the same frozen disk. The disk comes back before that wait ends: the
/// action's thread goes on and starts its command, which must not outlive the agent as an
/// orphan nobody kills or reports.
#[test]
fn an_action_whose_command_starts_after_the_stop_killed_the_running_ones_does_not_outlive_the_agent() {
    let _g = Guard::new(120 * SEC);
    if !is_root() {
        eprintln!("skipped: needs root for a loop filesystem and fsfreeze");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    fs::write(rig.join("sys/block/sdb/device/state"), "running\n").unwrap();
    let statefs = LoopFs::state(dir.path());
    let state = statefs.mnt.clone();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script { warning_ack: None, ..Script::default() });
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.disks = "smartctl = \"\"\nscan_interval = \"200ms\"\n".into();
    cfg.paths_extra = rig_paths(&rig);
    let pidfile = dir.path().join("action.pid");
    let script = dir.path().join("long.sh");
    fs::write(&script, format!("#!/bin/sh\necho $$ > {}\nexec sleep 30\n", pidfile.display())).unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    cfg.sections = format!("[actions]\nenabled = true\n[actions.long]\ncommand = [{:?}]\ntimeout = \"60s\"\n", script);
    let mut child = spawn_agent(&cfg.write(dir.path()), &[]);
    let (conn, _) = gw.wait_login(10 * SEC);
    wait_until(10 * SEC, "the first inventory", || state.join("disks.json").exists());

    statefs.freeze();
    // A warning waits for the frozen spool, so the stop waits for the disk too.
    fs::write(rig.join("sys/block/sdb/device/state"), "offline\n").unwrap();
    gw.send_json(
        conn,
        json!({"from":"html","act":"run_action","reqtype":"post","act_code":"c1","client_id":"c-1","action":"long"}),
    );
    thread::sleep(SEC);
    assert!(!pidfile.exists(), "the command started on a frozen state disk");
    signal(&child, Signal::TERM);
    gw.wait_for(5 * SEC, "close 1001", |e| matches!(e, Event::Closed { conn: c, .. } if *c == conn));
    thread::sleep(ms(300));
    statefs.thaw();
    let (code, _, log) = wait_exit(&mut child, 20 * SEC);
    // Give a command started in the last moment time to write its pid.
    thread::sleep(ms(500));
    let action_pid: Option<i32> = fs::read_to_string(&pidfile).ok().and_then(|t| t.trim().parse().ok());
    let orphan = action_pid.filter(|p| alive(*p));
    if let Some(p) = orphan {
        let _ = Command::new("kill").arg("-9").arg(p.to_string()).status();
    }
    drop(statefs);
    assert_eq!(code, Some(0), "{log}");
    assert!(orphan.is_none(), "the action's command (pid {orphan:?}) outlived the agent\n{log}");
}

fn threads(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

/// The agent, with 30 s connect and login timeouts, is held in one connect phase by
/// `url`'s server (`reached` says when it is there). A SIGHUP with the config unchanged
/// leaves the attempt alone and starts no thread that stays; SIGTERM then ends the agent
/// with exit 0 within the close wait (2 s; 3 s allowed), not at the phase's 30 s timeout.
fn sighup_then_sigterm_in_a_connect_phase(url: String, ca: &Path, reached: impl FnOnce()) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AgentConfig::new(url, ca);
    (cfg.connect_timeout, cfg.login_timeout) = ("30s", "30s");
    let config = cfg.write(dir.path());
    let mut child = spawn_agent(&config, &[]);
    reached();
    thread::sleep(ms(300));
    let before = threads(child.id());
    signal(&child, Signal::HUP);
    thread::sleep(SEC);
    let after = threads(child.id());
    signal(&child, Signal::TERM);
    let (code, took, log) = wait_exit(&mut child, 35 * SEC);
    assert_eq!(code, Some(0), "{log}");
    assert!(took < 3 * SEC, "exit took {took:?} after SIGTERM\n{log}");
    assert!(after <= before, "SIGHUP left threads: {before} before, {after} after\n{log}");
    assert!(log.contains("configuration reloaded from"), "the SIGHUP was taken in\n{log}");
    assert!(!log.contains("connecting again"), "an unchanged config made it reconnect\n{log}");
}

#[test]
fn sighup_then_sigterm_during_a_tcp_connect_to_a_full_backlog_exit_0_at_once() {
    let _g = Guard::new(60 * SEC);
    let pki = Pki::new(&["localhost"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Backlog 0 (the kernel keeps one), filled: further SYNs are dropped, connect hangs.
    rustix::net::listen(&listener, 0).unwrap();
    let addr = listener.local_addr().unwrap();
    let fillers: Vec<_> = (0..4).filter_map(|_| std::net::TcpStream::connect_timeout(&addr, ms(300)).ok()).collect();
    let stuck = std::net::TcpStream::connect_timeout(&addr, ms(500));
    if stuck.is_ok() {
        eprintln!("skipped: this kernel did not drop SYNs on a full backlog");
        return;
    }
    sighup_then_sigterm_in_a_connect_phase(format!("wss://localhost:{}/ws", addr.port()), &pki.ca_file, || {
        thread::sleep(SEC)
    });
    drop(fillers);
}

#[test]
fn sighup_then_sigterm_during_a_trickling_tls_handshake_exit_0_at_once() {
    let _g = Guard::new(60 * SEC);
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script { trickle_tls: Some(ms(300)), ..Script::default() });
    let url = gw.url();
    sighup_then_sigterm_in_a_connect_phase(url, &pki.ca_file, || {
        gw.wait_for(10 * SEC, "the TCP accept", |e| matches!(e, Event::Accepted { .. }));
    });
}

#[test]
fn sighup_then_sigterm_during_an_upgrade_answer_that_never_ends_its_headers_exit_0_at_once() {
    let _g = Guard::new(60 * SEC);
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script { trickle_upgrade: Some(ms(300)), ..Script::default() });
    let url = gw.url();
    sighup_then_sigterm_in_a_connect_phase(url, &pki.ca_file, || {
        gw.wait_for(10 * SEC, "the TCP accept", |e| matches!(e, Event::Accepted { .. }));
        thread::sleep(SEC);
    });
}

#[test]
fn sighup_then_sigterm_during_a_login_never_answered_exit_0_at_once() {
    let _g = Guard::new(60 * SEC);
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script { login_delay: 60 * SEC, ..Script::default() });
    let url = gw.url();
    sighup_then_sigterm_in_a_connect_phase(url, &pki.ca_file, || {
        gw.wait_login(10 * SEC);
    });
}
