//! Text from outside never forges a log line, a journal priority or a word to systemd: a
//! gateway's fields, close reasons and login rejections, what a disk or its USB bridge says
//! through smartctl, a mount point named after a filesystem's label. Every log line stays one
//! line of the agent's own format, escaped and capped, and every datagram to the notify
//! socket is one assignment of the agent's own. The real binary.

mod common;

use std::fs;
use std::thread;
use std::time::Instant;

use common::*;
use serde_json::{Value, json};
use tungstenite::Message;

#[test]
fn a_close_reason_with_a_newline_cannot_add_an_assignment_to_the_notify_datagram() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    (cfg.reconnect_initial, cfg.reconnect_max) = ("2s", "2s");
    let cfg = cfg.write(dir.path());
    let notify = Notified::start(dir.path());
    let mut child = spawn_agent(&cfg, &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())]);
    let (conn, _) = gw.wait_login(10 * SEC);
    gw.wait_act(5 * SEC, "heartbeat");
    let frame = tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye\nWATCHDOG=trigger".into(),
    };
    gw.send(conn, tungstenite::Message::Close(Some(frame)));
    gw.wait_for(5 * SEC, "the agent's close reply", |e| matches!(e, Event::Gone { .. }));
    thread::sleep(ms(300));
    let (code, log) = stop_agent(&mut child);
    let msgs: Vec<String> = notify.finish().into_iter().map(|(_, m)| m).collect();
    assert_eq!(code, Some(0));
    assert!(msgs.iter().all(|m| !m.contains('\n')), "a datagram with two lines: {msgs:?}");
    assert!(msgs.iter().any(|m| m.starts_with("STATUS=") && m.contains("bye\\nWATCHDOG=trigger")), "{msgs:?}");
    assert!(log.contains("(1000 bye\\nWATCHDOG=trigger)"), "the log shows the reason escaped:\n{log}");
}

#[test]
fn a_login_rejection_description_with_a_newline_stays_one_journal_line() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let forged = "x\n<0>kernel: Oops: forged by the gateway";
    let mut gw = Gateway::start(&pki, Script { login_code: 3, login_description: forged.into(), ..Script::default() });
    let cfg = AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path());
    let mut child = spawn_agent(&cfg, &[("JOURNAL_STREAM", "8:12345")]);
    gw.wait_login(10 * SEC);
    gw.wait_for(5 * SEC, "the agent's close", |e| matches!(e, Event::Closed { .. }));
    thread::sleep(ms(200));
    let (_, log) = stop_agent(&mut child);
    assert!(!log.lines().any(|l| l.starts_with("<0>")), "a forged emergency entry:\n{log}");
    let rejected: Vec<&str> = log.lines().filter(|l| l.contains("login rejected")).collect();
    assert_eq!(rejected.len(), 1, "{log}");
    assert!(rejected[0].starts_with("<3>"), "{log}");
    assert!(rejected[0].contains("x\\n<0>kernel: Oops: forged by the gateway"), "{log}");
}

/// A gateway rejecting the login with a description holding newlines and assignments
/// (`WATCHDOG=trigger`, `MAINPID=1`): systemd reads every line of a datagram as an
/// assignment. Every datagram the agent sends is one line, and the only assignments are
/// its own.
#[test]
fn a_login_rejection_with_newlines_reaches_sd_notify_as_one_escaped_status_line() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let (sock, notify) = notify_socket(dir.path());
    let pki = Pki::new(&["localhost"]);
    let evil = "nope\nWATCHDOG=trigger\r\nMAINPID=1\u{2028}STATUS=owned";
    let mut gw = Gateway::start(&pki, Script { login_code: 4, login_description: evil.into(), ..Script::default() });
    let cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    let mut child = spawn_agent(&cfg.write(dir.path()), &[("NOTIFY_SOCKET", notify.to_str().unwrap())]);
    gw.wait_login(10 * SEC);
    let mut got = Vec::new();
    let until = Instant::now() + 5 * SEC;
    let mut buf = vec![0u8; 4096];
    while Instant::now() < until && !got.iter().any(|d: &String| d.contains("login rejected")) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let (code, log) = stop_agent(&mut child);
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(code, Some(0), "{log}");
    assert!(got.iter().any(|d| d.contains("login rejected")), "{got:?}");
    for d in &got {
        assert!(!d.contains(['\n', '\r', '\u{2028}']), "a datagram of several lines: {d:?}");
        let key = d.split('=').next().unwrap();
        assert!(["READY", "STATUS", "STOPPING", "WATCHDOG"].contains(&key), "{d:?}");
        assert!(!d.starts_with("WATCHDOG=trigger") && !d.contains("MAINPID=1\n"), "{d:?}");
    }
    assert!(got.iter().any(|d| d == "STOPPING=1"), "{got:?}");
}

/// A mount point is named by whoever mounts (an automounter names it after the filesystem's
/// label, which comes with the disk); mountinfo writes a newline in it as `\012`, the agent
/// decodes that, and a `readonly` warning's detail quotes the mount point.
#[test]
fn a_newline_in_a_mount_point_does_not_start_a_new_log_line() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    let mountinfo = rig.join("proc/self/mountinfo");
    let forged = "/srv\\0122026-01-01T00:00:00Z\\040INFO\\040\\040all\\040disks\\040healthy";
    let line = |ro: &str| {
        format!(
            "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
             27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n\
             32 27 259:1 / {forged} {ro},relatime - ext4 /dev/nvme0n1p1 {ro}\n"
        )
    };
    fs::write(&mountinfo, line("rw")).unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let config = AgentConfig::new(gw.url(), &pki.ca_file).watch(&rig, "100ms").write(dir.path());
    let mut child = spawn_agent(&config, &[]);
    gw.wait_login(10 * SEC);
    // `readonly` is a mount seen read-write before: remount only once a scan has saved it
    // so (a fixed 500 ms after the login was sometimes before the first scan).
    let inventory = dir.path().join("state/disks.json");
    wait_until(10 * SEC, "a scan to see nvme0n1's mount read-write", || {
        let saved = fs::read_to_string(&inventory).ok();
        let v: serde_json::Value = saved.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        v["disks"]["nvme0n1"]["rw_mounts"].as_array().is_some_and(|m| !m.is_empty())
    });
    // Renamed into place, as the kernel's file changes all at once: a scan every 100 ms
    // reading a half-written file (under qemu-user on a busy machine, it did) sees the
    // mount gone, forgets it was read-write, and rightly never warns.
    let next = rig.join("proc/self/mountinfo.next");
    fs::write(&next, line("ro")).unwrap();
    fs::rename(&next, &mountinfo).unwrap();
    let w = gw.wait_warning(10 * SEC, "/dev/nvme0n1", "readonly");
    gw.soak(ms(300));
    let (_, log) = stop_agent(&mut child);
    let forged_lines: Vec<&str> = log.lines().filter(|l| l.starts_with("2026-01-01T00:00:00Z")).collect();
    assert!(
        forged_lines.is_empty(),
        "a log line forged from outside: {forged_lines:?}\nwarning detail {}\n{log}",
        w["detail"]
    );
}

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
    let rig = rig_copy(dir.path());
    let smartctl = script(
        dir.path(),
        "smartctl",
        "printf '%s\\n' '{\"smartctl\":{\"exit_status\":2,\"messages\":[{\"string\":\"bridge says hi\\nFORGED-ENTRY <0>kernel: panic\",\"severity\":\"error\"}]}}'\nexit 2",
    );

    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.disks = format!("smartctl = {:?}\nscan_interval = \"200ms\"\n", smartctl.display().to_string());
    cfg.paths_extra = format!("{}privileged_socket = \"\"\n", rig_paths(&rig));
    let config = cfg.write(dir.path());
    let mut child = spawn_agent(&config, &[]);
    gw.wait_login(10 * SEC);
    wait_until(10 * SEC, "smartctl's message in the log", || take_log(&mut child).contains("bridge says hi"));
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    let forged: Vec<&str> = log.lines().filter(|l| l.starts_with("FORGED")).collect();
    assert!(forged.is_empty(), "smartctl's text started its own log line: {forged:?}\n{log}");
}

fn evil_values() -> Vec<Value> {
    // Just under max_message_bytes (1 MiB) with the envelope: larger closes with 1009 by design.
    let big = format!("big\n\x1b[31m{}\u{2028}end", "x".repeat(900 << 10));
    vec![
        json!("a\nERROR forged line\r\n<0>kernel: x"),
        json!("nul\0here\x1b[2J\x07\u{85}\u{202e}"),
        json!(big),
        json!(1.5),
        json!(-0.0),
        json!(1e300),
        json!(u64::MAX),
        json!({"nested": {"deeper": "line\nbreak", "x": [1, "\x1b[0m"]}}),
        json!(["\n", "\0"]),
        json!(null),
        json!(true),
    ]
}

/// Hostile text in every field of every gateway message, with the agent logging at trace
/// level as an operator chasing a problem would run it: every log line stays one line of the
/// agent's own format, free of control characters from outside, and bounded; heartbeats keep
/// their schedule; the agent stops cleanly.
#[test]
fn hostile_text_in_every_field_of_every_gateway_message_stays_out_of_the_log_lines() {
    let _g = Guard::new(120 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.heartbeat_interval = "300ms";
    cfg.heartbeat_timeout = "30s";
    cfg.sections = "[actions]\nenabled = true\n[actions.ok]\ncommand = [\"/bin/true\"]\n".into();
    let config = cfg.write(dir.path());
    let mut child = spawn_agent(&config, &[("RUST_LOG", "trace")]);
    let (conn, _) = gw.wait_login(10 * SEC);
    let fields = ["act", "act_code", "client_id", "reqtype", "description", "code", "action", "act_id", "from"];
    let acts = ["return", "get_agent_info", "run_action", "nope", "get_disk_info"];
    // Not "heartbeat": a refused heartbeat ends the session by design.
    let actions = ["start", "warning", "action_result", "x"];
    let mut sent = 0;
    for v in evil_values() {
        for f in fields {
            for (i, act) in acts.iter().enumerate() {
                let mut m = json!({"from":"html","act":act,"reqtype":"post","act_code":"c","client_id":"k",
                    "action": actions[i % actions.len()], "act_id": "zz-1", "code": 1, "description": "d"});
                m[f] = v.clone();
                gw.send_json(conn, m);
                sent += 1;
            }
        }
        // Raw frames too: not JSON, not UTF-8, binary.
        if let Value::String(s) = &v {
            gw.send(conn, Message::text(s.clone()));
            gw.send(conn, Message::binary(s.clone().into_bytes()));
        }
    }
    gw.send(conn, Message::binary(vec![0xff, 0x1b, b'\n', 0]));
    // Heartbeats keep coming on the same connection while the junk is read (within a window
    // stretched for an agent under an emulator, which reads the junk that much slower).
    let t = Instant::now();
    let mut beats = 0;
    while t.elapsed() < common::slack(3 * SEC) {
        if let Some(Event::Received { msg, conn: c, .. }) = gw.next_event(ms(200)) {
            if msg["act"] == "heartbeat" && c == conn {
                beats += 1;
            }
        }
    }
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{}", &log[..log.len().min(20_000)]);
    let short = &log[log.len().saturating_sub(3000)..];
    assert!(!gw.dropped(conn) || gw.seen.iter().all(|e| e.conn() <= conn), "reconnected after the junk: {short}");
    assert!(beats >= 5, "{beats} heartbeats in 3 s at a 300 ms interval ({sent} hostile messages)");
    for line in log.lines() {
        let short: String = line.chars().take(300).collect();
        assert!(line.len() < 8192, "a log line of {} bytes: {short:?}", line.len());
        assert!(
            !line.contains(|c: char| c.is_control() || c == '\u{2028}' || c == '\u{202e}'),
            "outside control text in a log line: {short:?}"
        );
        let mut words = line.split_whitespace();
        let ts = words.next().unwrap_or_default();
        let level = words.next().unwrap_or_default();
        assert!(
            ts.len() >= 20 && ts.as_bytes()[4] == b'-' && ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level),
            "a log line not of the agent's format: {short:?}"
        );
    }
}
