//! Attack review: remote actions against a slow state disk and a hostile gateway.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::storage::LoopFs;
use common::*;
use serde_json::{Value, json};

fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn results(gw: &Gateway) -> Vec<Value> {
    gw.seen
        .iter()
        .filter_map(|e| match e {
            Event::Received { msg, .. } if msg["act"] == "action_result" => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

/// Drains events for `d` (the gateway records them in `seen`).
fn drain(gw: &mut Gateway, d: Duration) {
    let end = Instant::now() + d;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if gw.next_event(left).is_none() {
            break;
        }
    }
}

/// One write run while the state disk has `trouble` (which returns once the disk is well
/// again), then a restart: the run must be reported exactly once.
fn one_write_run_through_disk_trouble(trouble: impl FnOnce(&LoopFs, &mut Gateway)) {
    let _g = Guard::new(120 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    let cmd = script(dir.path(), "slow", "sleep 1; echo done");
    cfg.sections = format!("[actions]\nenabled = true\n[actions.slow]\ncommand = [{cmd:?}]\n");
    let config = cfg.write(dir.path());
    let state = LoopFs::state(dir.path());
    let mut child = spawn_agent(&config, &[]);
    let (conn, _) = gw.wait_login(10 * SEC);
    gw.send_json(
        conn,
        json!({"from":"html","act":"run_action","reqtype":"write","act_code":"w1","client_id":"c","action":"slow"}),
    );
    gw.wait_for(10 * SEC, "write answer", |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == "w1"));
    // The marker is on disk (written before the answer); the trouble starts now.
    trouble(&state, &mut gw);
    // The result goes out and the gateway acknowledges it (Script::warning_ack = Some(0)).
    drain(&mut gw, 3 * SEC);
    let first = results(&gw);
    assert!(first.len() == 1 && first[0]["data"]["interrupted"] == false, "{first:#?}");
    let markers: Vec<String> = fs::read_dir(state.mnt.join("actions"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("run-"))
        .collect();
    let (_, log1) = stop_agent(&mut child);
    // The agent comes back (a restart, a reboot): the run was reported and acknowledged.
    let mut child = spawn_agent(&config, &[]);
    gw.wait_login(10 * SEC);
    drain(&mut gw, 3 * SEC);
    let (_, log2) = stop_agent(&mut child);
    let all = results(&gw);
    assert_eq!(
        all.len(),
        1,
        "one run, one result; markers left after the ack: {markers:?}\nresults: {all:#?}\nfirst log:\n{log1}\nsecond log:\n{log2}"
    );
    drop(state);
}

#[test]

fn a_write_result_spooled_slowly_and_acknowledged_is_not_reported_again_after_a_restart() {
    one_write_run_through_disk_trouble(|state, gw| {
        // Stalled for longer than the 5 s the run waits for its result to be durable.
        state.freeze();
        drain(gw, 9 * SEC);
        state.thaw();
    });
}

#[test]
fn a_start_time_recorded_with_a_clock_that_was_ahead_does_not_lock_the_action_out() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    let cmd = script(dir.path(), "tick", "echo ok");
    cfg.sections = format!("[actions]\nenabled = true\n[actions.tick]\ncommand = [{cmd:?}]\nmin_interval = \"2s\"\n");
    let config = cfg.write(dir.path());
    // The last start, as an agent wrote it 10 days "from now" by a clock that was wrong.
    let ahead = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
        + 10 * 24 * 3600 * 1000;
    fs::create_dir_all(dir.path().join("state/actions")).unwrap();
    fs::write(dir.path().join("state/actions/last-tick"), ahead.to_string()).unwrap();
    let mut child = spawn_agent(&config, &[]);
    let (conn, _) = gw.wait_login(10 * SEC);
    // Well past min_interval since this agent started.
    std::thread::sleep(3 * SEC);
    gw.send_json(
        conn,
        json!({"from":"html","act":"run_action","reqtype":"post","act_code":"p2","client_id":"c","action":"tick"}),
    );
    let a = match gw.wait_for(
        10 * SEC,
        "answer",
        |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == "p2"),
    ) {
        Event::Received { msg, .. } => msg,
        _ => unreachable!(),
    };
    let _ = stop_agent(&mut child);
    assert_eq!(a["code"], 0, "min_interval is 2s and the action is refused: {a}");
}

#[test]

fn write_runs_are_refused_once_unacknowledged_results_fill_the_outbox() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script { warning_ack: None, ..Script::default() });
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    let cmd = script(dir.path(), "quick", "echo ok");
    cfg.sections = format!("[actions]\nenabled = true\n[actions.quick]\ncommand = [{cmd:?}]\n");
    let config = cfg.write(dir.path());
    let cap = 5;
    let outbox = rig_agent::outbox::spool::Options {
        limits: rig_agent::outbox::spool::Limits { max_entries: cap, max_bytes: 16 << 20 },
        ..Default::default()
    };
    let _agent = Agent::with_outbox(&config, outbox);
    let (conn, _) = gw.wait_login(10 * SEC);
    for i in 0..4 * cap {
        let code = format!("w{i}");
        gw.send_json(
            conn,
            json!({"from":"html","act":"run_action","reqtype":"write","act_code":code,"client_id":"c","action":"quick"}),
        );
        gw.wait_for(10 * SEC, "answer", |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == code));
        // The run ends before the next request ("already running" is not the point here).
        std::thread::sleep(ms(300));
    }
    drain(&mut gw, 2 * SEC);
    let spooled = fs::read_dir(dir.path().join("state/spool")).unwrap().count();
    assert!(spooled <= cap, "{spooled} messages in an outbox capped at {cap}");
}
