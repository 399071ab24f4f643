//! What the operator reads: the agent's log says what happened in words (a server that does
//! not speak TLS, a connection lost, a clock behind the certificate), once per change of
//! state rather than once per retry, with a syslog priority and no timestamp under journald,
//! and never the token, even at trace level; systemd hears READY, STATUS, the watchdog's
//! keep-alives (also while the agent waits between attempts) and STOPPING. The real binary.

mod common;

use std::thread;
use std::time::Instant;

use common::*;

#[test]
fn the_token_never_appears_in_the_log_even_at_trace_level() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw =
        Gateway::start(&pki, Script { login_code: 3, login_description: "bad token".into(), ..Script::default() });
    let cfg = AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path());
    let mut child = spawn_agent(&cfg, &[("RUST_LOG", "trace")]);
    gw.wait_login(10 * SEC);
    gw.script().login_code = 0;
    gw.wait_login(10 * SEC);
    gw.wait_act(5 * SEC, "heartbeat");
    signal(&child, Signal::TERM);
    let (code, _, log) = wait_exit(&mut child, 10 * SEC);
    assert_eq!(code, Some(0));
    assert!(log.contains("bad token"), "the rejection is logged with the gateway's description:\n{log}");
    assert!(log.contains("ERROR"), "a rejection is an error:\n{log}");
    assert!(log.contains(" DEBUG "), "verbose logging was on:\n{log}");
    assert!(!log.contains(TOKEN), "the token leaked into the log:\n{log}");
}

#[test]
fn at_trace_level_the_log_shows_login_heartbeats_and_answers_but_not_the_websocket_internals() {
    let _g = Guard::new(30 * SEC);
    let mut a = logged_in_agent(Script::default(), &[("RUST_LOG", "trace")]);
    a.gw.wait_act(5 * SEC, "heartbeat");
    a.gw.send_json(
        a.conn,
        serde_json::json!({"act":"get_agent_info","reqtype":"post","act_code":"q1","client_id":"c\u{1b}[31m"}),
    );
    a.gw.wait_for(5 * SEC, "the answer", |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == "q1"));
    // The gateway closes with a reason: tungstenite logs it raw at debug level.
    a.gw.close_all();
    a.gw.wait_login(10 * SEC);
    signal(&a.child, Signal::TERM);
    let (code, _, log) = wait_exit(&mut a.child, 10 * SEC);
    assert_eq!(code, Some(0));
    for line in ["login", "sent as", "accepted", "heartbeat", "answered", "answered get_agent_info (client_id"] {
        assert!(log.contains(line), "no {line:?} in the log:\n{log}");
    }
    assert!(log.contains("\\u{1b}[31m"), "the gateway's client_id is escaped:\n{log}");
    assert!(!log.contains('\u{1b}'), "a raw escape character reached the log:\n{log}");
    assert!(!log.contains("Received close frame"), "tungstenite's raw debug line leaked:\n{log}");
    assert!(!log.contains(TOKEN), "the token leaked into the log:\n{log}");
}

#[test]
fn rust_log_with_journalctls_word_for_a_level_is_reported_not_read_as_a_module() {
    let _g = Guard::new(30 * SEC);
    let mut a = logged_in_agent(Script::default(), &[("RUST_LOG", "warning")]);
    signal(&a.child, Signal::TERM);
    let (_, _, log) = wait_exit(&mut a.child, 10 * SEC);
    assert!(log.contains("RUST_LOG") && log.contains("RUST_LOG=warn"), "{log}");
    assert!(log.contains("starting"), "the default level (info) stays:\n{log}");
}

#[test]
fn wss_to_a_plain_http_port_says_the_server_does_not_speak_tls() {
    use std::io::{Read, Write};
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for conn in listener.incoming().take(2) {
            let mut conn = conn.unwrap();
            let _ = conn.read(&mut [0u8; 2048]);
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.send(());
        }
    });
    let cfg = AgentConfig::new(format!("wss://localhost:{port}/ws"), &pki.ca_file);
    let mut child = spawn_agent(&cfg.write(dir.path()), &[]);
    // The second attempt comes after the first one's failure was logged.
    for _ in 0..2 {
        rx.recv_timeout(10 * SEC).expect("the agent connects");
    }
    let (_, log) = stop_agent(&mut child);
    assert!(log.contains("does not speak TLS"), "{log}");
    assert!(!log.contains("InvalidContentType"), "{log}");
}

#[test]
fn a_connection_dropped_without_a_tls_close_is_said_in_words_not_a_docs_url() {
    let _g = Guard::new(30 * SEC);
    let mut a = logged_in_agent(Script { drop_after_login: true, ..Script::default() }, &[]);
    a.gw.wait_login(10 * SEC);
    let (_, log) = stop_agent(&mut a.child);
    assert!(log.contains("lost"), "{log}");
    assert!(!log.contains("docs.rs") && !log.contains("https://"), "{log}");
}

#[test]
fn under_journald_lines_carry_a_syslog_priority_and_no_timestamp() {
    let _g = Guard::new(30 * SEC);
    let mut a = logged_in_agent(Script::default(), &[("JOURNAL_STREAM", "8:12345")]);
    let (_, log) = stop_agent(&mut a.child);
    let first = log.lines().next().unwrap_or("");
    assert!(first.starts_with("<6>rig-agent"), "first line: {first:?}");
    assert!(log.lines().all(|l| l.starts_with('<')), "{log}");
    assert!(!log.contains(" INFO "), "{log}");
}

#[test]
fn state_changes_are_logged_once_not_once_per_retry() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script { drop_on_accept: true, ..Script::default() });
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.reconnect_max = "100ms";
    let mut child = spawn_agent(&cfg.write(dir.path()), &[]);
    for _ in 0..8 {
        gw.wait_for(5 * SEC, "attempt", |e| matches!(e, Event::Accepted { .. }));
    }
    gw.script().drop_on_accept = false;
    gw.wait_login(10 * SEC);
    gw.wait_act(5 * SEC, "heartbeat");
    signal(&child, Signal::TERM);
    let (_, _, log) = wait_exit(&mut child, 10 * SEC);
    // The attempts' warnings, which name the gateway (not one about the host: qemu-user,
    // running the ARM builds, refuses the subreaper and the agent says so).
    let url = gw.url();
    let warnings = log.lines().filter(|l| l.contains(" WARN ") && l.contains(url.as_str())).count();
    assert_eq!(warnings, 1, "eight failed attempts should log one warning:\n{log}");
    assert!(log.contains("logged in to") && log.contains("failed attempts"), "{log}");
}

#[test]
fn a_certificate_not_valid_yet_is_logged_as_a_clock_problem() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::not_yet_valid(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let cfg = AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path());
    let mut child = spawn_agent(&cfg, &[]);
    // A second attempt means the first one's failure has been logged.
    for _ in 0..2 {
        gw.wait_for(10 * SEC, "failed TLS handshake", |e| matches!(e, Event::TlsFailed { .. }));
    }
    signal(&child, Signal::TERM);
    let (code, _, log) = wait_exit(&mut child, 10 * SEC);
    assert_eq!(code, Some(0));
    // Told apart from a generic TLS failure, with the date it starts and what to fix.
    assert!(log.contains("the gateway's certificate is not valid yet: it is valid from 2099-01-01T00:00:00"), "{log}");
    assert!(log.contains("fix it on the gateway"), "{log}");
}

#[test]
fn under_systemd_it_notifies_ready_status_watchdog_during_backoff_and_stopping() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script { drop_on_accept: true, ..Script::default() });
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    (cfg.reconnect_initial, cfg.reconnect_max) = ("2s", "2s"); // long waits between attempts
    let cfg = cfg.write(dir.path());
    let notify = Notified::start(dir.path());
    let mut child = spawn_agent(
        &cfg,
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap()), ("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "")],
    );
    thread::sleep(ms(1500));
    // The gateway accepts now; the agent logs in after its backoff.
    gw.script().drop_on_accept = false;
    gw.wait_login(10 * SEC);
    thread::sleep(ms(300));
    signal(&child, Signal::TERM);
    let (code, _, _) = wait_exit(&mut child, 10 * SEC);
    let got = notify.finish();
    assert_eq!(code, Some(0));
    let msgs: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(msgs.first(), Some(&"READY=1"), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.starts_with("STATUS=gateway unreachable, next attempt in 2s:")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.starts_with("STATUS=connected to wss://localhost:")), "{msgs:?}");
    assert!(msgs.contains(&"STOPPING=1"), "{msgs:?}");
    // Keep-alives every 100 ms (half of WATCHDOG_USEC), also while waiting between attempts.
    let pings: Vec<Instant> = got.iter().filter(|(_, m)| m == "WATCHDOG=1").map(|(t, _)| *t).collect();
    assert!(pings.len() >= 12, "only {} keep-alives in ~2 s: {msgs:?}", pings.len());
    let worst = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(worst < ms(200), "a keep-alive gap of {worst:?} would let systemd kill the agent");
}
