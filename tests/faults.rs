//! Faults from outside are bounded by the agent's own limits and leave no growth behind:
//! many dropped connections, a gateway that stops reading, floods frames or fragments, or
//! sends megabyte fields, a handshake that stalls, a host that does not resolve, a DNS server
//! that never answers, a spool backlog of thousands, a notify socket nobody reads.
//! Heartbeats keep their schedule and a stop is prompt throughout.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use common::raw_gateway::{accept_and_login, flood, flood_counting, frame};
use common::*;
use rig_agent::queries::Lane;
use rustls::ServerConnection;
use serde_json::json;

/// These tests measure this process (fds, threads, RSS) or load it heavily (50 MiB of
/// answers, 10 000 messages a second): they run one at a time, or one would measure another.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// VmRSS of a process (`self`, or a pid) in KiB; 0 once it is gone.
fn rss_kib(pid: &str) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS:`, `VmHWM:` the peak); 0 once it is gone.
fn status_kib(pid: &str, key: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

#[test]
fn five_hundred_dropped_sessions_leave_no_growth_in_fds_threads_or_memory() {
    let _serial = one_at_a_time();
    let _g = Guard::new(120 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    // Every session: TLS, upgrade, login accepted, then the gateway drops it.
    let mut gw = Gateway::start(&pki, Script { drop_after_login: true, ..Script::default() });
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    (cfg.reconnect_initial, cfg.reconnect_max) = ("1ms", "2ms");
    let _agent = Agent::start(&cfg.write(dir.path()));
    let mut logins = 0;
    let mut sample = None;
    while logins < 500 {
        gw.wait_login(10 * SEC);
        gw.seen.clear(); // the history would grow with the test, not with the agent
        logins += 1;
        if logins == 50 {
            std::thread::sleep(ms(200)); // let the first sessions' threads finish
            let (threads, fds) = threads_and_fds("self");
            sample = Some((fds, threads, rss_kib("self")));
        }
    }
    std::thread::sleep(ms(200));
    let (fds0, threads0, rss0) = sample.unwrap();
    let ((threads, fds), rss) = (threads_and_fds("self"), rss_kib("self"));
    // Agent and gateway share this process: a few in-flight connections of either side
    // are allowed for, a leak per session (450 more) is not.
    assert!(fds <= fds0 + 8, "open fds grew from {fds0} to {fds} over 450 sessions");
    assert!(threads <= threads0 + 6, "threads grew from {threads0} to {threads} over 450 sessions");
    assert!(rss <= rss0 + 4096, "RSS grew from {rss0} KiB to {rss} KiB over 450 sessions");
}

/// Starts an agent with a 256 KiB answer, sends `queries` of them to a gateway that reads
/// nothing after the login (but keeps pinging, so the connection is never silent), and
/// returns how long the agent took to leave and the warning that said why.
/// `gateway_extra`: more `[gateway]` lines.
fn leave_a_deaf_gateway(queries: usize, gateway_extra: &str) -> (Duration, String) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script { deaf_after_login: true, ..Script::default() });
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    // No heartbeat goes out before the stall is judged: heartbeats unanswered for
    // heartbeat.timeout end a connection too (PROTOCOL.md §4), and this is about the stall.
    (cfg.heartbeat_interval, cfg.heartbeat_timeout) = ("5s", "6s");
    cfg.gateway_extra = gateway_extra.into();
    let _agent = Agent::with_catalogue(&cfg.write(dir.path()), |c| {
        c.add("test_big_answer", Lane::Fast, |_| Ok(json!({"blob": "x".repeat(256 << 10)})))
    });
    let (conn, _) = gw.wait_login(5 * SEC);
    for i in 0..queries {
        gw.send_json(
            conn,
            json!({"act":"test_big_answer","act_code":format!("b{i}"),"client_id":"c","reqtype":"post"}),
        );
    }
    let t0 = Instant::now();
    gw.script().deaf_after_login = false;
    let (again, _) = gw.wait_login(10 * SEC);
    let took = t0.elapsed();
    assert_ne!(again, conn);
    let lost = warnings_with(&format!("{} lost", gw.url()));
    assert_eq!(lost.len(), 1, "{lost:?}");
    (took, lost[0].clone())
}

#[test]
fn a_gateway_that_stops_reading_while_large_answers_pile_up_is_left_when_the_buffer_is_full() {
    let _serial = one_at_a_time();
    let _g = Guard::new(30 * SEC);
    // 40 × 256 KiB is more than the 4 MiB output buffer: dropped at once, not buffered.
    let (took, why) = leave_a_deaf_gateway(40, "");
    assert!(why.contains("output buffer full"), "{why}");
    assert!(took < 2 * SEC, "left after {took:?}");
}

#[test]
fn a_gateway_that_stops_reading_is_left_after_heartbeat_timeout_without_progress() {
    let _serial = one_at_a_time();
    let _g = Guard::new(60 * SEC);
    // With max_message_bytes = 64 MiB the output buffer may hold 256 MiB, so the 50 MiB of
    // answers never fill it. They do fill the kernel's socket buffers (at most 4 MiB send
    // + 32 MiB receive here), after which no byte moves: the stall timer
    // (heartbeat.timeout, 6 s) ends it, 5 s before the first heartbeat could be judged
    // unanswered. Without the stall timer the agent would stay that long.
    let (took, why) = leave_a_deaf_gateway(200, "max_message_bytes = 67108864");
    assert!(why.contains("took no data for"), "{why}");
    // The stall began after the queries were sent, so it lasted the full 6 s.
    assert!(took >= 6 * SEC && took < 11 * SEC, "left after {took:?}");
}

#[test]
fn a_gateway_that_stalls_after_tls_is_given_up_after_connect_timeout() {
    let _serial = one_at_a_time();
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script { stall_upgrade: true, ..Script::default() });
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.connect_timeout = "300ms";
    let _agent = Agent::start(&cfg.write(dir.path()));
    let times: Vec<Instant> =
        (0..3).map(|_| gw.wait_for(5 * SEC, "attempt", |e| matches!(e, Event::Accepted { .. })).at()).collect();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= ms(300) && gap < ms(300) + ms(400) + ms(200), "gap {gap:?}");
    }
    assert!(!gw.seen.iter().any(|e| matches!(e, Event::Upgraded { .. })));
}

/// A first gateway that `script` makes trickle its handshake, a healthy second one: returns
/// how long after reaching the first the agent logged in to the second.
fn leave_a_trickling_handshake_for_the_next_url(script: Script) -> Duration {
    let _serial = one_at_a_time();
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut slow = Gateway::start(&pki, script);
    let mut good = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(slow.url(), &pki.ca_file);
    cfg.urls.push(good.url());
    cfg.connect_timeout = "1s";
    let _agent = Agent::start(&cfg.write(dir.path()));
    let reached = slow.wait_for(5 * SEC, "first attempt", |e| matches!(e, Event::Accepted { .. })).at();
    // An attempt not bounded by connect_timeout would last minutes: no login within the guard.
    good.wait_login(20 * SEC);
    let took = good.seen.last().unwrap().at() - reached;
    eprintln!("left the trickling gateway and logged in to the next after {took:?}");
    took
}

#[test]
fn a_gateway_trickling_its_tls_handshake_is_left_at_connect_timeout_for_the_next_url() {
    let took = leave_a_trickling_handshake_for_the_next_url(Script { trickle_tls: Some(ms(300)), ..Script::default() });
    // connect_timeout 1 s, a backoff of at most reconnect_max (400 ms), a healthy login.
    assert!(took < SEC + ms(400) + SEC, "took {took:?}");
}

#[test]
fn a_gateway_trickling_its_upgrade_headers_is_left_at_connect_timeout_for_the_next_url() {
    let took =
        leave_a_trickling_handshake_for_the_next_url(Script { trickle_upgrade: Some(ms(300)), ..Script::default() });
    assert!(took < SEC + ms(400) + SEC, "took {took:?}");
}

#[test]
fn twenty_reloads_during_a_stalled_handshake_leave_no_thread_or_socket_behind() {
    let _serial = one_at_a_time();
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut slow = Gateway::start(&pki, Script { trickle_tls: Some(ms(300)), ..Script::default() });
    let mut cfg = AgentConfig::new(slow.url(), &pki.ca_file);
    cfg.connect_timeout = "30s"; // every attempt stays stalled for the whole test
    let mut child = spawn_agent(&cfg.write(dir.path()), &[]);
    let pid = child.id();
    slow.wait_for(10 * SEC, "first attempt", |e| matches!(e, Event::Accepted { .. }));
    std::thread::sleep(ms(300));
    let before = threads_and_fds(pid);
    for i in 0..20 {
        // A changed connect_timeout is a connection setting: each reload starts a new attempt.
        cfg.connect_timeout = if i % 2 == 0 { "31s" } else { "30s" };
        cfg.write(dir.path());
        signal(&child, Signal::HUP);
        slow.wait_for(10 * SEC, "attempt after reload", |e| matches!(e, Event::Accepted { .. }));
    }
    std::thread::sleep(ms(300));
    let after = threads_and_fds(pid);
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    eprintln!("threads and fds: {before:?} before, {after:?} after 20 reloads");
    // One attempt in flight at either sample; an abandoned one may be finishing.
    assert!(after.0 <= before.0 + 1, "threads {before:?} -> {after:?} over 20 reloads\n{log}");
    assert!(after.1 <= before.1 + 2, "fds {before:?} -> {after:?} over 20 reloads\n{log}");
}

#[test]
fn megabyte_fields_in_queries_before_login_do_not_grow_the_agent_by_their_echoes() {
    let _serial = one_at_a_time();
    let _g = Guard::new(120 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    // The login is answered late: every answer until then is held.
    let mut gw = Gateway::start(&pki, Script { login_delay: 8 * SEC, ..Script::default() });
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.login_timeout = "30s";
    let mut child = spawn_agent(&cfg.write(dir.path()), &[]);
    let pid = child.id().to_string();
    let (conn, _) = gw.wait_login(10 * SEC);
    let peak_before = status_kib(&pid, "VmHWM:");
    let big = "a".repeat(1_000_000);
    for i in 0..256 {
        gw.send_json(conn, json!({"act": format!("{big}{i}"), "act_code": format!("q{i}"), "client_id": "c"}));
    }
    // All 256 answers, code 2 with `act` cut to 256 bytes; or what came within the guard.
    let mut answers = Vec::new();
    let deadline = Instant::now() + 40 * SEC;
    while answers.len() < 256 && Instant::now() < deadline {
        if let Some(Event::Received { msg, .. }) = gw.next_event(ms(200))
            && msg["act"].as_str().is_some_and(|a| a.starts_with("aaa"))
        {
            answers.push((msg["code"].clone(), msg["act"].as_str().unwrap().len()));
        }
    }
    let peak = status_kib(&pid, "VmHWM:");
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    eprintln!("agent peak RSS {peak_before} KiB before, {peak} KiB after 256 queries with 1 MB act values");
    // Every echo held until the login would be ~430 MB; a frame in flight costs a few copies
    // of 1 MB.
    assert!(peak < peak_before + 32 * 1024, "peak RSS {peak_before} -> {peak} KiB\n{log}");
    assert_eq!(answers.len(), 256, "{log}");
    assert!(answers.iter().all(|a| *a == (json!(2), 256)), "{answers:?}");
}

#[test]
fn an_unresolvable_gateway_host_is_retried_with_one_log_line() {
    let _serial = one_at_a_time();
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    // .invalid never resolves (RFC 6761); on a machine without DNS the lookup may hang
    // instead, which connect_timeout bounds.
    let mut cfg = AgentConfig::new("wss://gateway.rig-agent-test.invalid/ws".into(), &pki.ca_file);
    (cfg.connect_timeout, cfg.reconnect_initial, cfg.reconnect_max) = ("300ms", "50ms", "100ms");
    let path = cfg.write(dir.path());
    let mut child = spawn_agent(&path, &[("RUST_LOG", "debug")]);
    std::thread::sleep(ms(2500));
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    let warns = log.lines().filter(|l| l.contains(" WARN ")).count();
    let attempts = log.lines().filter(|l| l.contains("gateway.rig-agent-test.invalid")).count();
    assert_eq!(warns, 1, "one warning for the state change:\n{log}");
    assert!(attempts >= 4, "retried ({attempts} attempts logged at debug):\n{log}");
    assert!(log.contains("resolve") || log.contains("DNS"), "{log}");
}

#[test]
fn ten_thousand_messages_a_second_for_five_seconds_cost_no_heartbeat_and_no_memory_growth() {
    let _serial = one_at_a_time();
    let _g = Guard::new(120 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    (cfg.heartbeat_interval, cfg.heartbeat_timeout) = ("250ms", "3s");
    let mut child = spawn_agent(&cfg.write(dir.path()), &[]);
    let (conn, _) = gw.wait_login(10 * SEC);
    let login_at = gw.seen.last().unwrap().at();

    // 10 messages every millisecond for 5 s: 9 queries and 1 junk frame. Past 64 queries in
    // flight the agent answers code 3 (busy) at once, so nothing queues without limit.
    let (mut queries, mut rss) = (0usize, Vec::new());
    let start = Instant::now();
    for tick in 0..5_000u32 {
        if let Some(wait) = (start + ms(1) * tick).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for _ in 0..9 {
            let q = json!({"act":"get_agent_info","act_code":format!("q{queries}"),"client_id":"c","reqtype":"post"});
            gw.send_json(conn, q);
            queries += 1;
        }
        gw.send(conn, tungstenite::Message::text("junk {"));
        if tick % 500 == 499 {
            rss.push(rss_kib(&child.id().to_string()));
        }
    }
    let sent_in = start.elapsed();

    let mut answered = std::collections::HashSet::new();
    let deadline = Instant::now() + 60 * SEC;
    while answered.len() < queries {
        assert!(Instant::now() < deadline, "{} of {queries} answers within 60 s of the flood", answered.len());
        match gw.next_event(10 * SEC).expect("answers stopped coming") {
            Event::Gone { .. } | Event::Accepted { .. } => panic!("the flood cost the connection"),
            Event::Received { msg, .. } if msg["act"] == "get_agent_info" => {
                assert!(matches!(msg["code"].as_i64(), Some(0 | 3)), "{msg}");
                assert!(answered.insert(msg["act_code"].as_str().unwrap().to_string()), "answered twice: {msg}");
            }
            _ => {}
        }
    }
    // A little longer, so that the heartbeats due by the end of the flood are all in.
    let until = Instant::now() + ms(600);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        gw.next_event(left);
    }
    let hbs: Vec<Instant> = gw.seen.iter().filter(|e| e.act() == Some("heartbeat")).map(Event::at).collect();
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");

    eprintln!(
        "sent {queries} queries + {} junk frames in {sent_in:?}; agent RSS every 0.5 s: {rss:?} KiB",
        queries / 9
    );
    // Heartbeats went out on their schedule throughout (as the gateway saw them, so with
    // the gateway's own delays on a loaded machine: a generous bound).
    assert!(hbs.len() >= 20, "{} heartbeats", hbs.len());
    for (i, at) in hbs.iter().enumerate() {
        let late = at.saturating_duration_since(login_at + ms(250) * (i as u32 + 1));
        assert!(late < slack(SEC), "heartbeat {i} late by {late:?}");
    }
    // Memory: flat after the first second, not growing with the 45 000 queries.
    let (first, peak) = (rss[1], *rss[1..].iter().max().unwrap());
    assert!(peak <= first + 4096, "agent RSS grew from {first} KiB to {peak} KiB during the flood");
    // Junk is logged, but 5 000 junk frames and thousands of busy refusals are not 5 000
    // lines: the throttle lets 5 a minute through.
    assert!(log.contains("dropped a frame from the gateway"), "{log}");
    let warnings = log.lines().filter(|l| l.contains(" WARN ")).count();
    assert!(warnings <= 10, "{warnings} warnings:\n{log}");
}

#[test]
fn a_dns_server_that_never_answers_costs_one_warning_a_bounded_number_of_threads_and_no_delay_in_stopping() {
    let _serial = one_at_a_time();
    // Root: a private mount of /etc/resolv.conf.
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    // A nameserver that takes every query and answers none, with a 30 s resolver timeout. On
    // a loopback address of this run's own: another run of this test on the machine holds
    // port 53 of another.
    let pid = std::process::id();
    let (dns, nameserver) = (0..16u32)
        .map(|i| std::net::Ipv4Addr::new(127, 77, (pid >> 8) as u8, (pid as u8).wrapping_add(i as u8)))
        .find_map(|ip| std::net::UdpSocket::bind((ip, 53)).ok().map(|s| (s, ip)))
        .expect("a free 127.77.x.y:53 for the silent nameserver");
    dns.set_read_timeout(Some(ms(50))).unwrap();
    let resolv = dir.path().join("resolv.conf");
    fs::write(&resolv, format!("nameserver {nameserver}\noptions timeout:30 attempts:1\n")).unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut cfg = AgentConfig::new("wss://gateway.rig-agent-test.example/ws".into(), &pki.ca_file);
    (cfg.connect_timeout, cfg.reconnect_initial, cfg.reconnect_max) = ("300ms", "50ms", "100ms");
    let config = cfg.write(dir.path());

    // The agent sees that resolv.conf through a private mount namespace.
    let agent = agent_command();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "sh", "-c", "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\""])
        .arg(&resolv)
        .arg(agent.get_program())
        .args(agent.get_args())
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "debug")
        .env_remove("JOURNAL_STREAM")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = Reaped::spawn(&mut cmd);
    let (mut queries, until) = (0, Instant::now() + 3 * SEC);
    let mut buf = [0u8; 512];
    while Instant::now() < until {
        queries += usize::from(dns.recv(&mut buf).is_ok());
    }
    let dns_threads = fs::read_dir(format!("/proc/{}/task", child.id()))
        .unwrap()
        .filter(|t| {
            t.as_ref().is_ok_and(|t| fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "dns"))
        })
        .count();
    let t = Instant::now();
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    assert!(t.elapsed() < SEC, "stopping took {:?} with lookups hanging", t.elapsed());

    assert!(queries >= 1, "the lookups reached the silent nameserver:\n{log}");
    assert!((1..=4).contains(&dns_threads), "{dns_threads} lookup threads hanging");
    let warns: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(warns.len(), 1, "one warning for the state change:\n{log}");
    assert!(warns[0].contains("DNS lookup of gateway.rig-agent-test.example took longer than"), "{log}");
    let attempts = log.lines().filter(|l| l.contains("gateway.rig-agent-test.example")).count();
    assert!(attempts >= 8, "retried ({attempts} attempts logged at debug):\n{log}");
}

/// The real agent in `dir` (heartbeats every `interval`, 5 s timeout) logged in to a gateway
/// of raw WebSocket bytes: the agent, and the gateway's TLS state and socket.
fn agent_logged_in_to_a_raw_gateway(dir: &Path, interval: &'static str) -> (Reaped, ServerConnection, TcpStream) {
    let pki = Pki::new(&["localhost"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("wss://localhost:{}/ws", listener.local_addr().unwrap().port());
    let mut cfg = AgentConfig::new(url, &pki.ca_file);
    (cfg.heartbeat_interval, cfg.heartbeat_timeout) = (interval, "5s");
    let child = spawn_agent(&cfg.write(dir), &[]);
    let (tls, tcp) = accept_and_login(&listener, &pki);
    (child, tls, tcp)
}

/// SIGTERM during a flood, then the flood stopped: how long the agent took to exit (`None`:
/// still running after 10 s, then killed), and its log.
fn stop_during_a_flood(
    child: &mut Reaped,
    stop: &AtomicBool,
    flooder: thread::JoinHandle<()>,
) -> (Option<Duration>, String) {
    signal(child, Signal::TERM);
    let exited = exit_within(child, 10 * SEC);
    stop.store(true, Ordering::SeqCst);
    let _ = flooder.join();
    match exited {
        Some((_, took, log)) => (Some(took), log),
        None => (None, take_log(child)),
    }
}

/// SIGTERM while the gateway floods empty pings: the agent sends its close 1001 and waits
/// at most 2 s for the gateway's close reply (PROTOCOL.md §1), then exits.
#[test]
fn a_gateway_flooding_pings_does_not_keep_a_stopping_agent_from_exiting() {
    let _serial = one_at_a_time();
    let _g = Guard::new(120 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let (mut child, tls, tcp) = agent_logged_in_to_a_raw_gateway(dir.path(), "1s");
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let (s2, w2) = (stop.clone(), written.clone());
    // 8192 empty pings per TLS write: cheap to send, one read() each for the agent.
    let chunk = frame(0x89, b"").repeat(8192);
    let flooder = thread::spawn(move || flood(tls, tcp, &chunk, &s2, &w2));
    thread::sleep(2 * SEC);
    let (took, log) = stop_during_a_flood(&mut child, &stop, flooder);
    eprintln!("flooded {} MB; exit after {took:?}", written.load(Ordering::Relaxed) >> 20);
    assert!(took.is_some(), "the agent had not exited 10 s after SIGTERM (its close wait is 2 s); log:\n{log}");
}

/// A text message begun and then continued by empty, unfinished fragments for ever: the
/// message never grows (so `max_message_bytes` never trips), and tungstenite's `read()`
/// loops over fragments until it has a whole message. Heartbeats must keep their schedule
/// (PROTOCOL.md §4: "whatever else happens").
#[test]
fn endless_empty_fragments_of_one_text_message_do_not_stop_heartbeats() {
    let _serial = one_at_a_time();
    let _g = Guard::new(120 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut tls, mut tcp) = agent_logged_in_to_a_raw_gateway(dir.path(), "500ms");
    let stop = Arc::new(AtomicBool::new(false));
    let (written, heartbeats) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (s2, w2, h2) = (stop.clone(), written.clone(), heartbeats.clone());
    let flooder = thread::spawn(move || {
        // A text frame without FIN, then continuation frames without FIN and no payload.
        let chunk = frame(0x00, b"").repeat(8192);
        flood_counting(&mut tls, &mut tcp, Some(&frame(0x01, b"{")), &chunk, &s2, &w2, &h2);
    });
    thread::sleep(SEC);
    let before = heartbeats.load(Ordering::SeqCst);
    thread::sleep(4 * SEC);
    let during = heartbeats.load(Ordering::SeqCst) - before;
    let (took, log) = stop_during_a_flood(&mut child, &stop, flooder);
    eprintln!("flooded {} MB; {during} heartbeats in 4 s; exit after {took:?}", written.load(Ordering::Relaxed) >> 20);
    // Either heartbeats keep their schedule on that connection, or the agent leaves it as a
    // hostile one (as for an oversized message) and stays in charge: it stops at once.
    let left = log.contains("more than 4096 fragments");
    assert!(during >= 4 || left, "{during} heartbeats in 4 s at a 500 ms interval; log:\n{log}");
    assert!(took.is_some_and(|t| t < 3 * SEC), "SIGTERM took {took:?}; log:\n{log}");
}

/// A notify socket nobody reads (PID 1 busy or stuck, a supervisor that passed
/// NOTIFY_SOCKET and went away without closing it): a Unix datagram socket's queue holds
/// `net.unix.max_dgram_qlen` (10) datagrams, and a blocking send past that waits until the
/// reader reads. sd_notify is advice to the supervisor: it never holds up the loop that
/// sends heartbeats, nor the stop.
#[test]
fn a_notify_socket_that_is_never_read_does_not_stop_heartbeats_nor_the_stop() {
    let _serial = one_at_a_time();
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    // Bound, never read.
    let (_sock, notify) = notify_socket(dir.path());
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.heartbeat_interval = "200ms";
    cfg.heartbeat_timeout = "30s";
    let config = cfg.write(dir.path());
    // A keep-alive every 10 ms: the queue is full within a fraction of a second.
    let mut child = spawn_agent(&config, &[("NOTIFY_SOCKET", notify.to_str().unwrap()), ("WATCHDOG_USEC", "20000")]);
    let (conn, _) = gw.wait_login(10 * SEC);
    let t = Instant::now();
    let mut beats = 0;
    while t.elapsed() < 3 * SEC {
        if let Some(Event::Received { msg, conn: c, .. }) = gw.next_event(ms(100)) {
            if msg["act"] == "heartbeat" && c == conn {
                beats += 1;
            }
        }
    }
    signal(&child, Signal::TERM);
    let (exited, code, log) = match exit_within(&mut child, 5 * SEC) {
        Some((code, _, log)) => (true, code, log),
        None => (false, None, take_log(&mut child)),
    };
    assert!(beats >= 10, "{beats} heartbeats in 3 s at a 200 ms interval: the loop is stuck on sd_notify\n{log}");
    assert!(exited, "still running 5 s after SIGTERM\n{log}");
    assert_eq!(code, Some(0), "{log}");
}

/// Writes `n` warnings into the spool of the state dir the test config uses, as a long
/// outage with a flapping disk leaves them: `detail_bytes` of detail each.
fn spool_backlog(dir: &std::path::Path, n: u64, detail_bytes: usize) {
    let spool = dir.join("state/spool");
    fs::create_dir_all(&spool).unwrap();
    let detail = "x".repeat(detail_bytes);
    for seq in 1..=n {
        let w = json!({"from":"device","act":"warning","reqtype":"post","act_id":format!("backlog-{seq}"),
            "act_code":"","client_id":"","hardware_id":HARDWARE_ID,"name":HARDWARE_ID,"type":2,
            "message":"Disk[/dev/sdz]硬盘损坏","disk":"/dev/sdz","serial":null,"reason":"offline",
            "detail":detail,"time":1_764_000_000u64 + seq});
        fs::write(spool.join(format!("w-{seq:012}.json")), w.to_string()).unwrap();
    }
}

#[test]
fn a_backlog_of_2000_warnings_drains_in_windows_without_losing_the_connection_or_a_heartbeat() {
    let _serial = one_at_a_time();
    let _g = Guard::new(120 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    (cfg.heartbeat_interval, cfg.heartbeat_timeout) = ("250ms", "3s");
    // 2 000 × 7.5 KB (15 MB, under the outbox cap): far more than the 4 MiB output cap if
    // queued at once after the login.
    let config = cfg.write(dir.path());
    spool_backlog(dir.path(), 2_000, 7_500);
    // Its log (a line per ack) goes to a file: a pipe nobody reads would fill and stall it.
    let log_path = dir.path().join("agent.log");
    let mut child = Reaped::spawn(
        agent_command()
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(&log_path).unwrap())
            .env_remove("JOURNAL_STREAM"),
    );
    let (conn, _) = gw.wait_login(10 * SEC);
    let login_at = gw.seen.last().unwrap().at();
    let mut got = std::collections::HashSet::new();
    while got.len() < 2_000 {
        match gw.next_event(10 * SEC).unwrap_or_else(|| panic!("warnings stopped coming at {}", got.len())) {
            Event::Gone { .. } | Event::Accepted { .. } => panic!("the backlog cost the connection at {}", got.len()),
            Event::Received { conn: c, msg, .. } if msg["act"] == "warning" => {
                assert_eq!(c, conn);
                got.insert(msg["act_id"].as_str().unwrap().to_string());
            }
            _ => {}
        }
    }
    let drained_at = gw.seen.last().unwrap().at();
    let spool = dir.path().join("state/spool");
    let until = Instant::now() + 30 * SEC;
    while count_entries(spool.to_str().unwrap()) > 0 {
        assert!(Instant::now() < until, "acknowledged warnings are still in the spool");
        std::thread::sleep(ms(50));
    }
    // Heartbeats go on after the drain, too.
    let after = Instant::now() + ms(600);
    while let Some(left) = after.checked_duration_since(Instant::now()) {
        gw.next_event(left);
    }
    signal(&child, Signal::TERM);
    let code = child.wait().unwrap().code();
    let log = fs::read_to_string(&log_path).unwrap();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("not reading"), "{log}");
    let hbs: Vec<Instant> = gw.seen.iter().filter(|e| e.act() == Some("heartbeat")).map(Event::at).collect();
    eprintln!("2 000 warnings drained in {:?}, {} heartbeats", drained_at - login_at, hbs.len());
    let mut prev = login_at;
    for at in &hbs {
        // Interval 250 ms; the bound has honest slack for a loaded machine.
        assert!(*at - prev < ms(250) + SEC, "a heartbeat gap of {:?} at {:?}", *at - prev, prev - login_at);
        prev = *at;
    }
    assert!(prev > drained_at, "no heartbeat after the drain");
}
