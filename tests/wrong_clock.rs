//! A rig whose clock is wrong still connects and says so: at 1970 (a board without a
//! battery-backed clock) the gateway's certificate is verified at the time floor, the log
//! and `STATUS=` say once that the clock is wrong and what to do, warnings carry
//! `time_suspect` and `get_agent_info` the clock's verdict (the real binary under
//! `faketime`); a clock at 2100 is told apart from an expired certificate, and a jump there
//! and back during a session leaves no trace; `min_interval` holds across an NTP jump (the
//! agent in-process, its clock moved through the test seam `Clock::skew`).

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use rig_agent::clock::{Clock, build_time};
use serde_json::json;

/// From now to 2100-01-01.
fn to_2100() -> Duration {
    Duration::from_secs(4_102_444_800) - SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

#[test]
fn a_board_at_1970_connects_says_once_that_its_clock_is_wrong_and_marks_its_warnings() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let config = AgentConfig::new(gw.url(), &pki.ca_file).watch(&rig, "100ms").write(dir.path());
    let notify = Notified::start(dir.path());
    // The glibc build of the tests (LD_PRELOAD does not reach a static musl binary), its
    // wall clock started at 1970 and running, its monotonic clock left alone.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rig-agent"));
    cmd.envs(wall_clock_at("1970-01-02 00:00:00"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .env_remove("JOURNAL_STREAM")
        .env("NOTIFY_SOCKET", &notify.path);
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    let mut child = spawn_logged(&mut cmd);
    let (conn, _) = gw.wait_login(10 * SEC);
    let w = gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    assert_eq!(w["time_suspect"], true, "{w}");
    assert!(w["time"].as_u64().unwrap() >= build_time().as_secs(), "the floor, not 1970: {w}");
    let clock = &gw.agent_info(conn)["clock"];
    assert_eq!(clock["suspect"], true, "{clock}");
    assert!(clock["system_time"].as_u64().unwrap() < 86_400 * 2, "{clock}");
    assert!(clock["floor"].as_u64().unwrap() >= build_time().as_secs(), "{clock}");
    let (_, log) = stop_agent(&mut child);
    let said: Vec<&str> = log.lines().filter(|l| l.contains("the system clock is wrong")).collect();
    assert_eq!(said.len(), 1, "once per episode:\n{log}");
    assert!(said[0].contains("it reads 1970-01-02T00:00") && said[0].contains("years behind"), "{}", said[0]);
    assert!(said[0].contains("systemctl enable --now systemd-timesyncd"), "{}", said[0]);
    let statuses: Vec<String> =
        notify.finish().into_iter().map(|(_, m)| m).filter(|m| m.starts_with("STATUS=")).collect();
    assert!(
        statuses.iter().any(|s| s.starts_with("STATUS=system clock wrong, at least 5")
            && s.contains("years behind: enable systemd-timesyncd; ")),
        "{statuses:?}"
    );
    // Dates shown to people are the corrected time too: not "connected since 1970".
    assert!(
        statuses.iter().any(|s| s.contains("; connected to wss://localhost:") && s.contains(" since 20")),
        "{statuses:?}"
    );
    assert!(!statuses.iter().any(|s| s.contains("1970")), "{statuses:?}");
}

#[test]
fn a_clock_at_2100_is_told_from_an_expired_certificate_and_a_jump_there_leaves_no_trace() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    // Real certificates end: this one in 2099.
    let pki = Pki::ending_in_2099(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let config = AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path());
    let slot: Arc<Mutex<Option<Arc<Clock>>>> = Arc::default();
    let _agent = Agent::start_with(&config, |a| {
        a.clock().skew(to_2100(), true);
        *slot.lock().unwrap() = Some(a.clock());
    });
    let clock = slot.lock().unwrap().take().unwrap();
    wait_until(10 * SEC, "the expired certificate logged", || {
        !logged_with("expired at 2099-01-01T00:00:00Z, and this rig's clock reads 2100-").is_empty()
    });
    assert!(!logged_with("unless this rig's clock is ahead").is_empty());
    clock.skew(to_2100(), false);
    gw.wait_login(10 * SEC);

    // During the session the clock jumps to 2100 for a few heartbeats, then back (a bad NTP
    // answer, corrected). A floor raised to 2100 would verify this certificate in 2100.
    clock.skew(to_2100(), true);
    thread::sleep(ms(800));
    clock.skew(to_2100(), false);
    gw.close_all();
    gw.wait_login(10 * SEC);
    let r = clock.read();
    assert!(!r.suspect, "{r:?}");
}

#[test]
fn min_interval_holds_when_the_clock_jumps_forward_by_hours() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.sections =
        "[actions]\nenabled = true\n[actions.hello]\ncommand = [\"/bin/echo\", \"hello\"]\nmin_interval = \"1h\"\n"
            .into();
    let config = cfg.write(dir.path());
    let slot: Arc<Mutex<Option<Arc<Clock>>>> = Arc::default();
    let _agent = Agent::start_with(&config, |a| *slot.lock().unwrap() = Some(a.clock()));
    let clock = slot.lock().unwrap().take().unwrap();
    let (conn, _) = gw.wait_login(10 * SEC);
    let mut ask = |code: &str| {
        gw.send_json(
            conn,
            json!({"from":"html","act":"run_action","reqtype":"post","act_code":code,"client_id":"c","action":"hello"}),
        );
        let e = gw.wait_for(
            10 * SEC,
            code,
            |e| matches!(e, Event::Received { msg, .. } if msg["act"] == "run_action" && msg["act_code"] == code),
        );
        let Event::Received { msg, .. } = e else { unreachable!() };
        msg
    };
    assert_eq!(ask("first")["code"], 0);
    // NTP sets the clock two hours forward: one hour has not passed.
    clock.skew(Duration::from_secs(2 * 3600), true);
    let again = ask("after-the-jump");
    assert_eq!(again["code"], 5, "{again}");
    assert!(again["description"].as_str().unwrap().contains("min_interval is 1h"), "{again}");
    clock.skew(Duration::from_secs(4 * 3600), false);
    assert_eq!(ask("after-a-jump-back")["code"], 5);
}
