//! Attack review 6: hostile text in every field of every gateway message, with the agent
//! logging at trace level as an operator chasing a problem would run it. Every log line
//! must stay one line of the agent's own format, free of control characters from outside,
//! and bounded; heartbeats keep their schedule; the agent stops cleanly.

mod common;

use std::time::Instant;

use common::*;
use serde_json::{Value, json};
use tungstenite::Message;

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
    // Heartbeats keep coming on the same connection while the junk is read.
    let t = Instant::now();
    let mut beats = 0;
    while t.elapsed() < 3 * SEC {
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
