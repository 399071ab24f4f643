//! Signals at any moment, as systemd and an operator send them to the real binary. SIGTERM
//! and SIGINT close the connection with 1001 and exit 0 within the close wait, whatever the
//! agent is doing: a backoff wait, any phase of a connect attempt, a remote action, a state
//! disk frozen with a warning on its way, a second SIGTERM on top. No command an action
//! started outlives the agent, and no warning is lost. SIGHUP reloads the config, or refuses
//! a broken one with `check`'s message, and the agent carries on: an unchanged connection
//! setting keeps the connection, a changed one reconnects, and a storm of them leaves no
//! thread or descriptor behind.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn sigterm_closes_with_1001_and_exits_0_within_3_seconds() {
    let _g = Guard::new(30 * SEC);
    let mut a = logged_in_agent(Script::default(), &[]);
    signal(&a.child, Signal::TERM);
    let (code, took, _) = wait_exit(&mut a.child, 10 * SEC);
    assert_eq!(code, Some(0));
    assert!(took < slack(3 * SEC), "exit took {took:?}");
    let closed = a.gw.wait_for(5 * SEC, "close frame", |e| matches!(e, Event::Closed { .. }));
    let Event::Closed { conn: c, code, .. } = closed else { unreachable!() };
    assert_eq!((c, code), (a.conn, Some(1001)));
}

#[test]
fn sigint_while_the_gateway_is_unreachable_exits_0_at_once() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = AgentConfig::new(format!("wss://localhost:{port}/ws"), &pki.ca_file);
    cfg.reconnect_initial = "10s";
    cfg.reconnect_max = "60s";
    let mut child = spawn_agent(&cfg.write(dir.path()), &[]);
    thread::sleep(slack(ms(500))); // let it fail once and sit in its backoff wait
    signal(&child, Signal::INT);
    let (code, took, _) = wait_exit(&mut child, 10 * SEC);
    assert_eq!(code, Some(0));
    assert!(took < slack(SEC), "exit took {took:?} during a backoff wait");
}

/// systemd sends SIGTERM; an impatient operator's `kill` sends another during the close
/// wait (a gateway that never answers the close). The agent still exits 0, within the 2 s
/// close wait (generous bound), having sent close 1001.
#[test]
fn a_second_sigterm_during_the_close_wait_still_exits_0_after_close_1001() {
    let _g = Guard::new(60 * SEC);
    let script = Script { blackhole_after_login: true, ..Script::default() };
    let mut a = logged_in_agent_with(script, &[], |c, _| c.heartbeat_timeout = "30s");
    thread::sleep(ms(300));
    signal(&a.child, Signal::TERM);
    thread::sleep(ms(300));
    signal(&a.child, Signal::TERM);
    signal(&a.child, Signal::INT);
    let (code, took, log) = wait_exit(&mut a.child, 10 * SEC);
    assert_eq!(code, Some(0), "{log}");
    assert!(took < slack(5 * SEC), "took {took:?} after the second SIGTERM\n{log}");
}

/// SIGTERM while a `post` action runs (a 30 s command): the agent exits 0 within its close
/// wait, and the action's command, which has its own process group, does not outlive it
/// as an orphan nobody will report or kill.
#[test]
fn sigterm_during_a_post_action_exits_0_and_leaves_no_orphaned_command() {
    let _g = Guard::new(60 * SEC);
    let mut pidfile = PathBuf::new();
    let mut a = logged_in_agent_with(Script::default(), &[], |c, dir| (pidfile, c.sections) = long_action(dir));
    a.gw.send_json(
        a.conn,
        json!({"from":"html","act":"run_action","reqtype":"post","act_code":"c1","client_id":"c-1","action":"long"}),
    );
    wait_until(10 * SEC, "the action to start", || fs::read_to_string(&pidfile).is_ok_and(|t| t.ends_with('\n')));
    let action_pid: i32 = fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    signal(&a.child, Signal::TERM);
    let (code, took, log) = wait_exit(&mut a.child, 10 * SEC);
    let alive = alive(action_pid);
    if alive {
        let _ = Command::new("kill").arg("-9").arg(action_pid.to_string()).status();
    }
    assert_eq!(code, Some(0), "{log}");
    assert!(took < slack(5 * SEC), "took {took:?}\n{log}");
    assert!(!alive, "the action's command (pid {action_pid}) outlived the agent\n{log}");
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
    if !root() {
        return;
    }
    let mut pidfile = PathBuf::new();
    let mut r = FreezableRig::start(Script { warning_ack: None, ..Script::default() }, "200ms", |dir| {
        let sections;
        (pidfile, sections) = long_action(dir);
        sections
    });
    // A warning waits for the frozen spool, so the stop waits for the disk too.
    r.freeze_and_fail_sdb();
    r.gw.send_json(
        r.conn,
        json!({"from":"html","act":"run_action","reqtype":"post","act_code":"c1","client_id":"c-1","action":"long"}),
    );
    thread::sleep(SEC);
    assert!(!pidfile.exists(), "the command started on a frozen state disk");
    signal(&r.child, Signal::TERM);
    let conn = r.conn;
    r.gw.wait_for(5 * SEC, "close 1001", |e| matches!(e, Event::Closed { conn: c, .. } if *c == conn));
    thread::sleep(ms(300));
    r.state.thaw();
    let (code, _, log) = wait_exit(&mut r.child, 20 * SEC);
    // Give a command started in the last moment time to write its pid.
    thread::sleep(ms(500));
    let action_pid: Option<i32> = fs::read_to_string(&pidfile).ok().and_then(|t| t.trim().parse().ok());
    let orphan = action_pid.filter(|p| alive(*p));
    if let Some(p) = orphan {
        let _ = Command::new("kill").arg("-9").arg(p.to_string()).status();
    }
    drop(r);
    assert_eq!(code, Some(0), "{log}");
    assert!(orphan.is_none(), "the action's command (pid {orphan:?}) outlived the agent\n{log}");
}

/// The state filesystem freezes (a stalled SD card) and a disk fails: the warning waits in
/// memory for the spool's write. SIGTERM now: the gateway still gets close 1001 within the
/// close wait (the socket thread never waits on the disk), the process exits 0 once the
/// disk is back (threads in the kernel's frozen write cannot be cut short), and after a
/// restart the warning is delivered exactly once: nothing lost, nothing doubled.
#[test]
fn sigterm_with_the_state_filesystem_frozen_closes_at_once_and_loses_no_warning() {
    let _g = Guard::new(120 * SEC);
    if !root() {
        return;
    }
    let mut r = FreezableRig::start(Script { warning_ack: None, ..Script::default() }, "200ms", |_| String::new());
    r.freeze_and_fail_sdb();
    thread::sleep(SEC);
    signal(&r.child, Signal::TERM);
    let t = Instant::now();
    let conn = r.conn;
    let closed = r.gw.wait_for(5 * SEC, "close 1001", |e| matches!(e, Event::Closed { conn: c, .. } if *c == conn));
    let close_took = t.elapsed();
    assert!(matches!(closed, Event::Closed { code: Some(1001), .. }), "{closed:?}");
    assert!(close_took < slack(3 * SEC), "close 1001 came {close_took:?} after SIGTERM");
    thread::sleep(2 * SEC);
    r.state.thaw();
    let (code, _, log1) = wait_exit(&mut r.child, 20 * SEC);
    assert_eq!(code, Some(0), "{log1}");

    let first: Vec<_> = r.gw.warnings_seen("/dev/sdb");
    r.gw.seen.clear();
    r.gw.script().warning_ack = Some(0);
    r.child = spawn_agent(&r.config, &[]);
    r.gw.wait_login(10 * SEC);
    r.gw.soak(3 * SEC);
    let (code, log2) = stop_agent(&mut r.child);
    assert_eq!(code, Some(0), "{log2}");
    let sent = r.gw.warnings_seen("/dev/sdb");
    let mut ids: Vec<_> = first.iter().chain(&sent).map(|w| w["act_id"].clone()).collect();
    ids.dedup();
    let why =
        format!("before the stop: {first:?}\nafter the restart: {sent:?}\nfirst run:\n{log1}\nsecond run:\n{log2}");
    assert!(!sent.is_empty(), "the warning was lost: {why}");
    assert_eq!(ids.len(), 1, "one episode, one act_id: {why}");
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
    let (before, _) = threads_and_fds(child.id());
    signal(&child, Signal::HUP);
    thread::sleep(SEC);
    let (after, _) = threads_and_fds(child.id());
    signal(&child, Signal::TERM);
    let (code, took, log) = wait_exit(&mut child, 35 * SEC);
    assert_eq!(code, Some(0), "{log}");
    assert!(took < slack(3 * SEC), "exit took {took:?} after SIGTERM\n{log}");
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
    assert!(stuck.is_err(), "control: a connect to the full backlog was accepted");
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

#[test]
fn sighup_with_an_invalid_config_is_refused_with_the_check_message_and_the_agent_carries_on() {
    let _g = Guard::new(30 * SEC);
    let mut a = logged_in_agent(Script::default(), &[]);
    let good = fs::read_to_string(&a.config).unwrap();
    fs::write(&a.config, good.replace("[heartbeat]\n", "[heartbeat]\nintreval = \"1s\"\n")).unwrap();
    signal(&a.child, Signal::HUP);
    // Heartbeats go on, on the same connection, at the old interval.
    let (c, _, _) = a.gw.wait_act(5 * SEC, "heartbeat");
    let (c2, _, _) = a.gw.wait_act(5 * SEC, "heartbeat");
    assert_eq!((c, c2), (a.conn, a.conn));
    signal(&a.child, Signal::TERM);
    let (code, _, log) = wait_exit(&mut a.child, 10 * SEC);
    assert_eq!(code, Some(0));
    let check_msg = check(&a.config).1.trim().trim_start_matches("rig-agent: ").to_string();
    assert!(check_msg.contains("`heartbeat.intreval`"), "{check_msg}");
    assert!(
        log.lines().any(|l| l.contains("ERROR") && l.contains("reload refused") && l.contains(&check_msg)),
        "{log}"
    );
    assert_eq!(a.gw.seen.iter().filter(|e| e.act() == Some("start")).count(), 1, "no new login");
}

#[test]
fn sighup_applies_a_new_heartbeat_interval_on_the_same_connection() {
    let _g = Guard::new(30 * SEC);
    let mut a =
        logged_in_agent_with(Script::default(), &[], |c, _| (c.heartbeat_interval, c.heartbeat_timeout) = ("1s", "5s"));
    a.gw.wait_act(5 * SEC, "heartbeat");
    let text = fs::read_to_string(&a.config).unwrap().replace("interval = \"1s\"", "interval = \"100ms\"");
    fs::write(&a.config, text).unwrap();
    signal(&a.child, Signal::HUP);
    let mut times = Vec::new();
    for _ in 0..6 {
        let (c, _, at) = a.gw.wait_act(5 * SEC, "heartbeat");
        assert_eq!(c, a.conn, "a new interval needs no new connection");
        times.push(at);
    }
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g < ms(400)), "heartbeats did not speed up: {gaps:?}");
    signal(&a.child, Signal::TERM);
    let (_, _, log) = wait_exit(&mut a.child, 10 * SEC);
    assert!(log.contains("configuration reloaded"), "{log}");
}

#[test]
fn sighup_with_a_new_gateway_url_connects_to_it() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut old = Gateway::start(&pki, Script::default());
    let mut new = Gateway::start(&pki, Script::default());
    let cfg = AgentConfig::new(old.url(), &pki.ca_file).write(dir.path());
    let mut child = spawn_agent(&cfg, &[]);
    let (conn, _) = old.wait_login(10 * SEC);
    fs::write(&cfg, fs::read_to_string(&cfg).unwrap().replace(&old.url(), &new.url())).unwrap();
    signal(&child, Signal::HUP);
    let closed = old.wait_for(5 * SEC, "close from the agent", |e| matches!(e, Event::Closed { .. }));
    assert!(matches!(closed, Event::Closed { conn: c, code: Some(1000), .. } if c == conn));
    new.wait_login(5 * SEC);
    signal(&child, Signal::TERM);
    assert_eq!(wait_exit(&mut child, 10 * SEC).0, Some(0));
}

#[test]
fn sighup_with_a_new_hardware_id_answers_every_query_under_the_new_one() {
    let _g = Guard::new(30 * SEC);
    let mut a = logged_in_agent(Script::default(), &[]);
    let renamed = "billtest000000005";
    fs::write(&a.config, fs::read_to_string(&a.config).unwrap().replace(HARDWARE_ID, renamed)).unwrap();
    signal(&a.child, Signal::HUP);
    let (conn, login) = a.gw.wait_login(5 * SEC);
    assert_eq!(login["hardware_id"], renamed, "{login}");
    // A probe's answer (encoded on its worker thread), a refused action and an unknown act.
    for act in ["get_agent_info", "run_action", "get_nothing"] {
        a.gw.send_json(conn, json!({"act": act, "act_code": act, "client_id": "c", "reqtype": "post", "action": "x"}));
        let answer =
            a.gw.wait_for(5 * SEC, act, |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == act));
        let Event::Received { msg, .. } = answer else { unreachable!() };
        assert_eq!(msg["hardware_id"], renamed, "{msg}");
    }
    signal(&a.child, Signal::TERM);
    assert_eq!(wait_exit(&mut a.child, 10 * SEC).0, Some(0));
}

/// A hundred SIGHUPs in a second, with the config unchanged and then broken: the
/// connection stays (no setting changed), heartbeats keep going, the broken config is
/// refused, and the storm leaves no reload thread or descriptor behind.
#[test]
fn a_hundred_sighups_in_a_second_keep_the_connection_and_leave_no_thread_or_fd_behind() {
    let _g = Guard::new(90 * SEC);
    let mut a = logged_in_agent(Script::default(), &[]);
    let pid = a.child.id();
    a.gw.wait_act(5 * SEC, "heartbeat");
    thread::sleep(SEC);
    let before = threads_and_fds(pid);

    for round in 0..2 {
        if round == 1 {
            fs::write(&a.config, "[device\nhardware_id = ").unwrap();
        }
        for _ in 0..100 {
            signal(&a.child, Signal::HUP);
            thread::sleep(ms(10));
        }
        for _ in 0..5 {
            let (c, _, _) = a.gw.wait_act(2 * SEC, "heartbeat");
            assert_eq!(c, a.conn, "same connection through the storm");
        }
    }
    thread::sleep(SEC);
    let after = threads_and_fds(pid);
    assert!(!a.gw.dropped(a.conn), "the connection was dropped");
    let (code, log) = stop_agent(&mut a.child);
    assert_eq!(code, Some(0), "{log}");
    eprintln!("threads and fds: {before:?} before, {after:?} after 200 SIGHUPs");
    assert!(after.0 <= before.0 + 1, "threads {before:?} -> {after:?}\n{log}");
    assert!(after.1 <= before.1 + 1, "fds {before:?} -> {after:?}\n{log}");
    assert!(log.contains("reload refused"), "{log}");
    let refused = log.lines().filter(|l| l.contains("reload refused")).count();
    eprintln!("{refused} reload refused lines");
}
