//! Maintenance (PROTOCOL.md §9) end to end: `rig-agent maintenance on|off|status` against
//! the running real binary over its socket, kept across a restart and ended by itself on
//! time; `set_maintenance` from a real TLS gateway only where the config allows it; warnings
//! marked while on; and what a local process or a gateway can throw at it (another user, an
//! endless or silent request, a file or a link where the socket goes, a corrupt state file,
//! absurd lengths, a flood of `set_maintenance`).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

use common::*;
use serde_json::{Value, json};

/// `rig-agent --config <config> maintenance <args>`.
fn cli(config: &Path, args: &[&str]) -> Output {
    agent_command().arg("--config").arg(config).arg("maintenance").args(args).output().expect("run the CLI")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn state_dir(config: &Path) -> PathBuf {
    config.parent().unwrap().join("state")
}

fn socket(config: &Path) -> PathBuf {
    state_dir(config).join("maintenance.sock")
}

/// Waits for the agent's maintenance socket (it is bound at start, before login).
fn wait_socket(config: &Path) {
    wait_until(10 * SEC, "the maintenance socket", || socket(config).exists());
}

fn query(gw: &mut Gateway, conn: usize, msg: Value) -> Value {
    let code = msg["act_code"].as_str().unwrap().to_string();
    gw.send_json(conn, msg);
    match gw.wait_for(10 * SEC, &code, |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == code.as_str()))
    {
        Event::Received { msg, .. } => msg,
        _ => unreachable!(),
    }
}

fn agent_info(gw: &mut Gateway, conn: usize, code: &str) -> Value {
    query(gw, conn, json!({"act":"get_agent_info","act_code":code,"client_id":"c","reqtype":"post"}))["data"].clone()
}

fn set_maintenance(gw: &mut Gateway, conn: usize, code: &str, body: Value) -> Value {
    let mut msg = json!({"from":"html","act":"set_maintenance","reqtype":"post","act_code":code,"client_id":"c-42"});
    msg.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
    query(gw, conn, msg)
}

fn remote(allowed: bool) -> impl FnOnce(&mut AgentConfig, &Path) {
    move |cfg, _| cfg.sections = format!("[maintenance]\nremote = {allowed}\n")
}

#[test]
fn the_cli_turns_maintenance_on_and_off_and_get_agent_info_shows_it() {
    let _g = Guard::new(60 * SEC);
    let mut a = logged_in_agent(Script::default(), &[]);
    wait_socket(&a.config);
    let out = cli(&a.config, &["status"]);
    assert_eq!((out.status.code(), text(&out.stdout).trim()), (Some(0), "maintenance: off"), "{}", text(&out.stderr));
    let before = rig_agent::status::unix_now();
    let out = cli(&a.config, &["on", "2h"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("maintenance: on until Unix time "), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("set by local"));
    let m = agent_info(&mut a.gw, a.conn, "i1")["maintenance"].clone();
    assert_eq!((m["on"].as_bool(), m["by"].as_str()), (Some(true), Some("local")));
    let until = m["until"].as_u64().unwrap();
    assert!((before + 7200..=rig_agent::status::unix_now() + 7200).contains(&until), "{m}");
    let kept: Value =
        serde_json::from_str(&fs::read_to_string(state_dir(&a.config).join("maintenance.json")).unwrap()).unwrap();
    assert_eq!(kept, json!({"until": until, "by": "local"}));
    let out = cli(&a.config, &["off"]);
    assert_eq!((out.status.code(), text(&out.stdout).trim()), (Some(0), "maintenance: off"));
    assert_eq!(agent_info(&mut a.gw, a.conn, "i2")["maintenance"], json!({"on": false, "until": null, "by": null}));
    assert!(!state_dir(&a.config).join("maintenance.json").exists());
}

#[test]
fn maintenance_survives_a_restart_and_ends_by_itself_within_five_seconds_of_its_end() {
    let _g = Guard::new(60 * SEC);
    let mut a = logged_in_agent(Script::default(), &[]);
    wait_socket(&a.config);
    let out = cli(&a.config, &["on", "4s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let until = agent_info(&mut a.gw, a.conn, "i1")["maintenance"]["until"].as_u64().unwrap();
    let (code, _) = stop_agent(&mut a.child.0);
    assert_eq!(code, Some(0));
    a.child = spawn_agent(&a.config, &[]);
    a.conn = a.gw.wait_login(10 * SEC).0;
    let m = agent_info(&mut a.gw, a.conn, "i2")["maintenance"].clone();
    assert_eq!(m, json!({"on": true, "until": until, "by": "local"}));
    wait_until(15 * SEC, "maintenance to end", || {
        text(&cli(&a.config, &["status"]).stdout).trim() == "maintenance: off"
    });
    let ended = rig_agent::status::unix_now();
    assert!(ended <= until + 5, "ended at {ended}, {}s after its end {until}", ended - until);
    assert!(ended >= until - 1, "ended at {ended}, before its end {until}");
    wait_until(5 * SEC, "the state file removed", || !state_dir(&a.config).join("maintenance.json").exists());
    let (_, log) = stop_agent(&mut a.child.0);
    assert!(log.contains("maintenance ended"), "{log}");
}

#[test]
fn with_no_agent_running_the_cli_says_so_and_exits_69() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let config = AgentConfig::new("wss://localhost:9/ws".into(), &pki.ca_file).write(dir.path());
    fs::create_dir_all(state_dir(&config)).unwrap();
    let out = cli(&config, &["status"]);
    assert_eq!(out.status.code(), Some(69));
    assert!(text(&out.stderr).contains("no agent is running for this config"), "{}", text(&out.stderr));
    // A socket left by an agent that died: nothing listens.
    let stale = std::os::unix::net::UnixListener::bind(socket(&config)).unwrap();
    drop(stale);
    let out = cli(&config, &["on", "1h"]);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("nothing listens"), "{}", text(&out.stderr));
}

#[test]
fn zero_negative_and_absurd_lengths_are_usage_errors_and_change_nothing() {
    let _g = Guard::new(60 * SEC);
    let a = logged_in_agent(Script::default(), &[]);
    wait_socket(&a.config);
    for bad in ["99999999h", "0s", "0", "-5m", "8d", "2 hours", "1h\u{1b}[2J"] {
        let out = cli(&a.config, &["on", bad]);
        assert_eq!(out.status.code(), Some(64), "{bad}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("maintenance on "), "{bad}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains('\u{1b}'));
    }
    assert_eq!(text(&cli(&a.config, &["status"]).stdout).trim(), "maintenance: off");
    // Whatever a local process sends, the agent bounds it too: a week at most.
    let answer = raw_request(&socket(&a.config), b"on 360000000\n");
    assert!(answer.contains("\"error\"") && answer.contains("out of bounds"), "{answer}");
    let answer = raw_request(&socket(&a.config), b"on -5\n");
    assert!(answer.contains("\"error\""), "{answer}");
    assert_eq!(text(&cli(&a.config, &["status"]).stdout).trim(), "maintenance: off");
}

/// Sends `bytes` on the socket and returns whatever comes back before it closes.
fn raw_request(socket: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(5 * SEC)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn set_maintenance_is_refused_with_code_4_unless_the_config_allows_it() {
    let _g = Guard::new(60 * SEC);
    let mut a = logged_in_agent_with(Script::default(), &[], |_, _| {});
    let r = set_maintenance(&mut a.gw, a.conn, "s1", json!({"on": true, "minutes": 120}));
    assert_eq!(r["code"], 4, "{r}");
    assert!(r.get("data").is_none());
    assert_eq!(agent_info(&mut a.gw, a.conn, "i1")["maintenance"]["on"], false);
    let mut b = logged_in_agent_with(Script::default(), &[], remote(false));
    assert_eq!(set_maintenance(&mut b.gw, b.conn, "s2", json!({"on": false}))["code"], 4);
}

#[test]
fn set_maintenance_where_allowed_answers_the_state_and_refuses_ill_typed_fields_with_code_2() {
    let _g = Guard::new(60 * SEC);
    let mut a = logged_in_agent_with(Script::default(), &[], remote(true));
    for (i, bad) in [
        json!({"on": "yes", "minutes": 5}),
        json!({"on": true}),
        json!({"on": true, "minutes": "5"}),
        json!({"on": true, "minutes": 0}),
        json!({"on": true, "minutes": -5}),
        json!({"on": true, "minutes": 10081}),
        json!({"on": true, "minutes": 1.5}),
        json!({}),
    ]
    .into_iter()
    .enumerate()
    {
        let r = set_maintenance(&mut a.gw, a.conn, &format!("b{i}"), bad.clone());
        assert_eq!(r["code"], 2, "{bad} -> {r}");
    }
    let before = rig_agent::status::unix_now();
    let r = set_maintenance(&mut a.gw, a.conn, "on", json!({"on": true, "minutes": 120}));
    assert_eq!(
        (r["code"].as_i64(), r["data"]["on"].as_bool(), r["data"]["by"].as_str()),
        (Some(0), Some(true), Some("console"))
    );
    let until = r["data"]["until"].as_u64().unwrap();
    assert!((before + 7200..=before + 7202).contains(&until), "{r}");
    let out = cli(&a.config, &["status"]);
    assert!(text(&out.stdout).contains("set by console"), "{}", text(&out.stdout));
    let r = set_maintenance(&mut a.gw, a.conn, "off", json!({"on": false}));
    assert_eq!((r["code"].as_i64(), &r["data"]), (Some(0), &json!({"on": false, "until": null, "by": null})));
}

#[test]
fn a_flood_of_set_maintenance_is_answered_busy_or_done_and_the_agent_keeps_its_heartbeats() {
    let _g = Guard::new(60 * SEC);
    let mut a = logged_in_agent_with(Script::default(), &[], remote(true));
    for i in 0..300 {
        let on = i % 2 == 0;
        a.gw.send_json(
            a.conn,
            json!({"act":"set_maintenance","reqtype":"post","act_code":format!("f{i}"),"client_id":"c","on":on,"minutes":60}),
        );
    }
    let mut codes = std::collections::BTreeMap::new();
    let start = Instant::now();
    let mut answered = 0;
    while answered < 300 {
        let e = a.gw.next_event(10 * SEC).expect("every set_maintenance is answered");
        if let Event::Received { msg, .. } = e
            && msg["act"] == "set_maintenance"
        {
            *codes.entry(msg["code"].as_i64().unwrap()).or_insert(0) += 1;
            answered += 1;
        }
    }
    assert!(start.elapsed() < 10 * SEC);
    assert!(codes.keys().all(|c| *c == 0 || *c == 3), "{codes:?}");
    assert!(codes.get(&0).copied().unwrap_or(0) >= 1, "{codes:?}");
    // Still connected and answering; the last word is the one in force.
    let r = set_maintenance(&mut a.gw, a.conn, "last", json!({"on": false}));
    assert_eq!(r["code"], 0);
    assert_eq!(agent_info(&mut a.gw, a.conn, "i")["maintenance"]["on"], false);
    assert!(!a.gw.dropped(a.conn));
}

#[test]
fn warnings_raised_while_in_maintenance_are_marked_and_others_are_not() {
    let _g = Guard::new(60 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.watch(&rig, "100ms");
    let config = cfg.write(dir.path());
    let _agent = spawn_agent(&config, &[]);
    gw.wait_login(10 * SEC);
    let sdb = gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    assert!(sdb.get("maintenance").is_none(), "{sdb}");
    wait_socket(&config);
    assert_eq!(cli(&config, &["on", "1h"]).status.code(), Some(0));
    fs::remove_dir_all(rig.join("sys/block/sda")).unwrap();
    let sda = gw.wait_warning(10 * SEC, "/dev/sda", "missing");
    assert_eq!(sda["maintenance"], true, "{sda}");
}

#[test]
fn another_user_is_refused_on_the_socket_even_when_its_mode_lets_them_in() {
    let _g = Guard::new(60 * SEC);
    let Some(_nobody) = nobody::Nobody::new() else { return };
    let a = logged_in_agent(Script::default(), &[]);
    wait_socket(&a.config);
    // As if the directory and the socket had been opened up by mistake.
    for d in [a.dir.path(), &state_dir(&a.config)] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(socket(&a.config), fs::Permissions::from_mode(0o777)).unwrap();
    // It is refused before anything it sends is read: it only listens for the answer.
    let script =
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nprint(s.recv(4096).decode())";
    let out =
        nobody::as_nobody(&[]).arg("/usr/bin/python3").arg("-c").arg(script).arg(socket(&a.config)).output().unwrap();
    let answer = text(&out.stdout);
    assert!(answer.contains("uid 65534 may not change maintenance"), "{answer} {}", text(&out.stderr));
    assert_eq!(text(&cli(&a.config, &["status"]).stdout).trim(), "maintenance: off");
}

#[test]
fn an_endless_request_or_a_silent_connection_never_holds_the_socket_for_long() {
    let _g = Guard::new(60 * SEC);
    let a = logged_in_agent(Script::default(), &[]);
    wait_socket(&a.config);
    // Endless: refused after a few dozen bytes, not read to the end.
    let mut endless = UnixStream::connect(socket(&a.config)).unwrap();
    endless.set_write_timeout(Some(5 * SEC)).unwrap();
    let chunk = vec![b'o'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 64 * 1024 * 1024 && endless.write_all(&chunk).is_ok() {
        sent += chunk.len();
    }
    assert!(sent < 64 * 1024 * 1024, "the agent read on without end");
    // Silent: a few connections that never send; the CLI still gets through within seconds.
    let silent: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(socket(&a.config)).unwrap()).collect();
    let t = Instant::now();
    let out = cli(&a.config, &["on", "10m"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(t.elapsed() < 5 * SEC, "took {:?}", t.elapsed());
    drop(silent);
}

#[test]
fn a_file_or_a_link_where_the_socket_goes_is_left_alone_and_the_cli_will_not_talk_to_it() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let config = AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path());
    fs::create_dir_all(state_dir(&config)).unwrap();
    // A socket elsewhere, served by something else, and a link to it where the agent's goes.
    let elsewhere = dir.path().join("elsewhere.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, socket(&config)).unwrap();
    let mut child = spawn_agent(&config, &[]);
    gw.wait_login(10 * SEC);
    let out = cli(&config, &["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is not a socket"), "{}", text(&out.stderr));
    assert!(fs::symlink_metadata(socket(&config)).unwrap().file_type().is_symlink());
    let (_, log) = stop_agent(&mut child.0);
    assert!(log.contains("a file that is not a socket is there"), "{log}");
    // A regular file: the same.
    fs::remove_file(socket(&config)).unwrap();
    fs::write(socket(&config), "not a socket").unwrap();
    let out = cli(&config, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(fs::read_to_string(socket(&config)).unwrap(), "not a socket");
}

#[test]
fn a_corrupt_or_huge_state_file_is_moved_aside_reported_and_the_rig_is_not_in_maintenance() {
    let _g = Guard::new(60 * SEC);
    for junk in ["{\"until\":\"soon\"}".to_string(), "x".repeat(10 << 20)] {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(&["localhost"]);
        let mut gw = Gateway::start(&pki, Script::default());
        let config = AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path());
        fs::create_dir_all(state_dir(&config)).unwrap();
        fs::write(state_dir(&config).join("maintenance.json"), &junk).unwrap();
        let mut child = spawn_agent(&config, &[]);
        let (conn, _) = gw.wait_login(10 * SEC);
        assert_eq!(agent_info(&mut gw, conn, "i")["maintenance"]["on"], false);
        assert!(state_dir(&config).join("maintenance.json.corrupt").exists());
        let (_, log) = stop_agent(&mut child.0);
        assert!(log.contains("maintenance state file") && log.contains("moved aside"), "{log}");
    }
}
