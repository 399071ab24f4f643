//! A lost or refused gateway is retried for ever, each attempt within the jittered backoff
//! window, round robin over the URLs, the backoff reset once a login's first heartbeat is
//! answered; a rejected login waits at least `reconnect.max`; a
//! half-open or silent gateway is left within its timeout; a gateway the CA does not vouch
//! for, or one for another name, gets no byte of the login; and a stop is prompt whatever
//! the connection is doing. In-process against a real TLS gateway.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn setup(script: Script) -> (tempfile::TempDir, Pki, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let gw = Gateway::start(&pki, script);
    (dir, pki, gw)
}

/// Times of the next `n` accepted TCP connections.
fn accepts(gw: &mut Gateway, n: usize, timeout: Duration) -> Vec<Instant> {
    (0..n).map(|_| gw.wait_for(timeout, "connection attempt", |e| matches!(e, Event::Accepted { .. })).at()).collect()
}

/// The cap of the n-th consecutive failure for initial 50 ms, max 400 ms.
fn cap(n: u32) -> Duration {
    (ms(50) * 2u32.pow(n.saturating_sub(1).min(10))).min(ms(400))
}

/// Each gap between attempts must lie in `[cap/2, cap]` plus the attempt's own duration
/// (a local TLS failure: a few ms; the margin allows for a loaded CI machine).
fn assert_gaps_in_backoff_window(times: &[Instant]) {
    for (i, pair) in times.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let c = cap(i as u32 + 1);
        assert!(gap >= c / 2, "wait {} was {gap:?}, below cap/2 = {:?}", i + 1, c / 2);
        assert!(gap <= c + slack(ms(120)), "wait {} was {gap:?}, above cap = {c:?}", i + 1);
    }
}

#[test]
fn a_gateway_that_drops_every_connection_is_retried_within_the_backoff_window() {
    let _g = Guard::new(30 * SEC);
    let (dir, pki, mut gw) = setup(Script { drop_on_accept: true, ..Script::default() });
    let _agent = Agent::start(&AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path()));
    let times = accepts(&mut gw, 7, 5 * SEC);
    assert_gaps_in_backoff_window(&times);
}

#[test]
fn a_gateway_that_drops_after_login_is_retried_within_the_backoff_window() {
    let _g = Guard::new(30 * SEC);
    // The login is accepted but no heartbeat is ever answered: the backoff must keep growing.
    let (dir, pki, mut gw) = setup(Script { drop_after_login: true, ..Script::default() });
    let _agent = Agent::start(&AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path()));
    // Each wait runs from the login (after which the gateway drops the connection) to the
    // next TCP accept: the TLS handshake and the login exchange of the next attempt are not
    // part of the backoff, and under qemu they alone take over 100 ms.
    let mut logins = Vec::new();
    let mut accepts = Vec::new();
    for _ in 0..6 {
        accepts.push(gw.wait_for(5 * SEC, "connection attempt", |e| matches!(e, Event::Accepted { .. })).at());
        gw.wait_login(5 * SEC);
        logins.push(gw.seen.last().unwrap().at());
    }
    for (i, (login, next)) in logins.iter().zip(&accepts[1..]).enumerate() {
        let gap = *next - *login;
        let c = cap(i as u32 + 1);
        assert!(gap >= c / 2, "wait {} was {gap:?}, below cap/2 = {:?}", i + 1, c / 2);
        assert!(gap <= c + slack(ms(120)), "wait {} was {gap:?}, above cap = {c:?}", i + 1);
    }
}

#[test]
fn a_refused_port_is_retried_forever_without_crashing() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    // A port nobody listens on: bind, learn the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = AgentConfig::new(format!("wss://localhost:{port}/ws"), &pki.ca_file);
    // Then a gateway appears on a second URL: round robin must reach it.
    let mut gw = Gateway::start(&pki, Script::default());
    cfg.urls.push(gw.url());
    let _agent = Agent::start(&cfg.write(dir.path()));
    gw.wait_login(5 * SEC);
}

#[test]
fn urls_are_tried_round_robin() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut a = Gateway::start(&pki, Script { drop_on_accept: true, ..Script::default() });
    let mut b = Gateway::start(&pki, Script { drop_on_accept: true, ..Script::default() });
    let mut cfg = AgentConfig::new(a.url(), &pki.ca_file);
    cfg.urls.push(b.url());
    let _agent = Agent::start(&cfg.write(dir.path()));
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(('a', accepts(&mut a, 1, 5 * SEC)[0]));
        order.push(('b', accepts(&mut b, 1, 5 * SEC)[0]));
    }
    order.sort_by_key(|(_, t)| *t);
    let names: String = order.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, "ababab");
}

#[test]
fn a_rejected_login_closes_with_1000_and_waits_at_least_reconnect_max() {
    let _g = Guard::new(30 * SEC);
    let (dir, pki, mut gw) =
        setup(Script { login_code: 4, login_description: "token invalid".into(), ..Script::default() });
    let _agent = Agent::start(&AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path()));
    let mut logins = Vec::new();
    for _ in 0..3 {
        let (conn, _) = gw.wait_login(5 * SEC);
        logins.push(gw.seen.last().unwrap().at());
        let closed = gw.wait_for(5 * SEC, "close after rejection", |e| matches!(e, Event::Closed { .. }));
        let Event::Closed { conn: c, code, .. } = closed else { unreachable!() };
        assert_eq!((c, code), (conn, Some(1000)));
    }
    for pair in logins.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= ms(400), "retried {gap:?} after a rejection; reconnect.max is 400ms");
        assert!(gap <= ms(600) + slack(ms(150)), "waited {gap:?}, more than max + max/2");
    }
}

#[test]
fn a_half_open_gateway_is_detected_and_replaced_within_heartbeat_timeout() {
    let _g = Guard::new(30 * SEC);
    let (dir, pki, mut gw) = setup(Script { blackhole_after_login: true, ..Script::default() });
    let _agent = Agent::start(&AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path()));
    let (first, _) = gw.wait_login(5 * SEC);
    // From here the gateway neither reads nor writes nor closes: the login return (sent
    // right after the login) was the last frame the agent got.
    let last_frame = gw.seen.last().unwrap().at();
    gw.script().blackhole_after_login = false;
    let (second, _) = gw.wait_login(5 * SEC);
    let relogin = gw.seen.last().unwrap().at();
    assert_ne!(first, second);
    let took = relogin - last_frame;
    assert!(took >= ms(600), "declared dead after {took:?}, before heartbeat.timeout");
    assert!(took <= ms(600) + SEC, "new login {took:?} after the last frame; limit timeout + 1 s");
}

#[test]
fn a_gateway_that_never_answers_the_login_is_left_after_login_timeout() {
    let _g = Guard::new(30 * SEC);
    let (dir, pki, mut gw) = setup(Script { login_delay: 60 * SEC, ..Script::default() });
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.login_timeout = "300ms";
    let _agent = Agent::start(&cfg.write(dir.path()));
    let (first, _) = gw.wait_login(5 * SEC);
    let t0 = gw.seen.last().unwrap().at();
    let (second, _) = gw.wait_login(5 * SEC);
    let gap = gw.seen.last().unwrap().at() - t0;
    assert_ne!(first, second);
    assert!(gap >= ms(300) && gap <= ms(300) + cap(1) + slack(ms(150)), "gap {gap:?}");
}

#[test]
fn the_backoff_resets_once_a_login_has_its_first_heartbeat_answered() {
    let _g = Guard::new(30 * SEC);
    let (dir, pki, mut gw) = setup(Script { drop_on_accept: true, ..Script::default() });
    let _agent = Agent::start(&AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path()));
    // Six failures: the cap is now at max (400 ms).
    accepts(&mut gw, 6, 5 * SEC);
    gw.script().drop_on_accept = false;
    let (conn, _) = gw.wait_login(5 * SEC);
    // The gateway answers this heartbeat at once, before anything else it sends.
    gw.wait_act(5 * SEC, "heartbeat");
    // Then it closes the session and refuses connections again: the first wait after an
    // established session must be a first-failure wait, not the grown one.
    gw.script().drop_on_accept = true;
    gw.send(conn, tungstenite::Message::Close(None));
    let gone =
        gw.wait_for(5 * SEC, "end of the session", |e| matches!(e, Event::Gone { conn: c, .. } if *c == conn)).at();
    let next = accepts(&mut gw, 1, 5 * SEC)[0];
    assert!(next - gone <= cap(1) + ms(120), "first wait after a good session was {:?}", next - gone);
}

#[test]
fn an_untrusted_ca_gets_no_byte_of_the_login_and_retries_continue() {
    let _g = Guard::new(30 * SEC);
    let (dir, _pki, mut gw) = setup(Script::default());
    let other = Pki::new(&["localhost"]);
    let _agent = Agent::start(&AgentConfig::new(gw.url(), &other.ca_file).write(dir.path()));
    for _ in 0..3 {
        gw.wait_for(5 * SEC, "failed TLS handshake", |e| matches!(e, Event::TlsFailed { .. }));
    }
    assert!(
        !gw.seen.iter().any(|e| matches!(e, Event::Upgraded { .. } | Event::Received { .. })),
        "the agent spoke to a gateway it should not trust: {:?}",
        gw.seen
    );
}

#[test]
fn a_certificate_for_another_host_name_gets_no_byte_of_the_login() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    // Same CA the agent trusts, but the certificate names another host.
    let pki = Pki::new(&["gateway.other.example"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let _agent = Agent::start(&AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path()));
    for _ in 0..3 {
        gw.wait_for(5 * SEC, "failed TLS handshake", |e| matches!(e, Event::TlsFailed { .. }));
    }
    assert!(!gw.seen.iter().any(|e| matches!(e, Event::Upgraded { .. } | Event::Received { .. })));
}

#[test]
fn a_gateway_that_never_speaks_tls_is_given_up_after_connect_timeout() {
    let _g = Guard::new(30 * SEC);
    let (dir, pki, mut gw) = setup(Script { stall_tls: true, ..Script::default() });
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.connect_timeout = "300ms";
    let _agent = Agent::start(&cfg.write(dir.path()));
    let times = accepts(&mut gw, 3, 5 * SEC);
    for (i, pair) in times.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let c = cap(i as u32 + 1);
        assert!(gap >= ms(300) + c / 2 && gap <= ms(300) + c + slack(ms(150)), "gap {i}: {gap:?}");
    }
}

#[test]
fn stop_closes_with_1001_and_returns_promptly() {
    let _g = Guard::new(30 * SEC);
    let (dir, pki, mut gw) = setup(Script::default());
    let agent = Agent::start(&AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path()));
    let (conn, _) = gw.wait_login(5 * SEC);
    let took = agent.stop();
    let closed = gw.wait_for(5 * SEC, "close 1001", |e| matches!(e, Event::Closed { .. }));
    let Event::Closed { conn: c, code, .. } = closed else { unreachable!() };
    assert_eq!((c, code), (conn, Some(1001)));
    assert!(took < ms(2500), "stop took {took:?}");
}

#[test]
fn stop_is_prompt_even_while_a_connect_attempt_hangs() {
    let _g = Guard::new(30 * SEC);
    let (dir, pki, mut gw) = setup(Script { stall_tls: true, ..Script::default() });
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.connect_timeout = "20s";
    let agent = Agent::start(&cfg.write(dir.path()));
    accepts(&mut gw, 1, 5 * SEC);
    let took = agent.stop();
    assert!(took < SEC, "stop took {took:?} while TLS was stalled");
}

#[test]
fn stop_is_prompt_during_a_flood_of_queries() {
    let _g = Guard::new(30 * SEC);
    let (dir, pki, mut gw) = setup(Script::default());
    // The gateway answers heartbeats behind 20 000 queries of its own: with the usual
    // 600 ms the agent would (rightly) judge its application gone before the stop.
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.heartbeat_timeout = "10s";
    let agent = Agent::start(&cfg.write(dir.path()));
    let (conn, _) = gw.wait_login(5 * SEC);
    gw.wait_act(5 * SEC, "heartbeat");
    for i in 0..20_000 {
        gw.send_json(
            conn,
            serde_json::json!({"act":"get_agent_info","act_code":format!("s{i}"),"client_id":"c","reqtype":"post"}),
        );
    }
    // Let the agent get busy with the flood, then stop it.
    gw.wait_for(5 * SEC, "first answers", |e| e.act() == Some("get_agent_info"));
    let took = agent.stop();
    assert!(took < ms(2500), "stop took {took:?} during a flood");
    gw.wait_for(10 * SEC, "close 1001", |e| matches!(e, Event::Closed { code: Some(1001), .. }));
}
