//! Through an HTTP CONNECT or SOCKS5 proxy the agent logs in as directly, with TLS end to end
//! (the proxy sees `CONNECT host:port` and ciphertext only), fails over and reconnects
//! through it; the proxy's answer is bounded in size and time, every refusal names the phase
//! and the fix, a hostile proxy neither wedges nor crashes the agent, and the proxy's
//! credentials never reach a log line. `net::dial`, the one way to open a stream, is tested
//! on its own too. Real proxies in the test process (`common::proxy`), a real TLS gateway,
//! the real binary for the environment.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::proxy::{Answer, Behaviour, Kind, Proxy};
use common::*;
use rig_agent::config::proxy::{ProxyChoice, ProxySource, ProxyUrl};
use rig_agent::net::abort::Abort;
use rig_agent::net::transport::ConnectError;

/// A TCP server on 127.0.0.1 that answers every connection with `hello` and then echoes.
fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            thread::spawn(move || {
                let _ = c.write_all(b"hello");
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn via(url: &str) -> ProxyChoice {
    ProxyChoice::Via { proxy: ProxyUrl::parse(url).unwrap(), from: ProxySource::Config }
}

fn dial(url: &str, port: u16, within: Duration) -> Result<TcpStream, ConnectError> {
    rig_agent::net::dial("localhost", port, &via(url), Instant::now() + within, &Abort::default())
}

fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    s.set_read_timeout(Some(5 * SEC)).unwrap();
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

fn with(kind: Kind, change: impl FnOnce(&mut Behaviour)) -> Proxy {
    let mut b = Behaviour::default();
    change(&mut b);
    Proxy::start(kind, b)
}

fn creds(b: &mut Behaviour) {
    b.credentials = Some(("rig".into(), "s3cret-pass".into()));
}

#[test]
fn dial_opens_a_stream_through_each_kind_of_proxy_and_directly() {
    let _g = Guard::new(30 * SEC);
    let port = echo_server();
    for kind in [Kind::Http, Kind::Socks5] {
        let p = with(kind, creds);
        let mut s = dial(&p.url(), port, 5 * SEC).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(read_n(&mut s, 5), b"hello", "{kind:?}: not a byte of the tunnel is lost");
        s.write_all(b"ping").unwrap();
        assert_eq!(read_n(&mut s, 4), b"ping");
        assert_eq!(p.seen().authenticated, [Some(true)], "{kind:?}");
    }
    let http = with(Kind::Http, |_| {});
    dial(&http.url(), port, 5 * SEC).unwrap();
    assert_eq!(http.seen().requests, [format!("CONNECT localhost:{port}")], "the proxy resolves the name");
    let socks = with(Kind::Socks5, |_| {});
    dial(&socks.url(), port, 5 * SEC).unwrap();
    assert_eq!(socks.seen().requests, [format!("name localhost:{port}")], "socks5h: the name, no local DNS");
    let direct =
        rig_agent::net::dial("localhost", port, &ProxyChoice::Direct, Instant::now() + 5 * SEC, &Abort::default());
    assert_eq!(read_n(&mut direct.unwrap(), 5), b"hello");
}

#[test]
fn each_refusal_of_an_http_proxy_names_its_cause_and_the_fix() {
    let _g = Guard::new(30 * SEC);
    let port = echo_server();
    let p = with(Kind::Http, creds);
    let wrong = p.url().replace("s3cret-pass", "wrong-pass");
    let e = dial(&wrong, port, 5 * SEC).unwrap_err();
    assert!(matches!(e, ConnectError::ProxyAuth { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("refused the user and password given (407"), "{text}");
    assert!(text.contains("set the right user and password in gateway.proxy"), "{text}");
    assert!(!text.contains("wrong-pass") && text.contains("http://***@127.0.0.1:"), "masked: {text}");
    let e = dial(&p.url().replace("rig:s3cret-pass@", ""), port, 5 * SEC).unwrap_err();
    assert!(e.to_string().contains("wants a user and password and none is given"), "{e}");

    p.set(|b| b.answer = Answer::Status(403, "Forbidden"));
    let e = dial(&p.url(), port, 5 * SEC).unwrap_err();
    assert!(matches!(e, ConnectError::ProxyRefused { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("refuses to connect to localhost:{port} (403 Forbidden)")), "{e}");
    assert!(e.to_string().contains("have localhost:") && e.to_string().contains("allowed on the proxy"), "{e}");

    p.set(|b| b.answer = Answer::Status(502, "Bad Gateway"));
    let e = dial(&p.url(), port, 5 * SEC).unwrap_err();
    assert!(matches!(e, ConnectError::ProxyCannotReach { .. }), "{e:?}");
    assert!(e.to_string().contains("cannot reach localhost:") && e.to_string().contains("502 Bad Gateway"), "{e}");

    // Nobody listens on the proxy's port.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = dial(&format!("http://127.0.0.1:{closed}"), port, 5 * SEC).unwrap_err();
    assert!(matches!(e, ConnectError::ProxyUnreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("check its address in gateway.proxy, and that it runs"), "{e}");
}

#[test]
fn each_socks5_reply_code_names_its_cause() {
    let _g = Guard::new(30 * SEC);
    let port = echo_server();
    let p = with(Kind::Socks5, creds);
    let e = dial(&p.url().replace("s3cret-pass", "nope"), port, 5 * SEC).unwrap_err();
    assert!(matches!(e, ConnectError::ProxyAuth { .. }) && !e.to_string().contains("nope"), "{e:?}");
    let e = dial(&p.url().replace("rig:s3cret-pass@", ""), port, 5 * SEC).unwrap_err();
    assert!(e.to_string().contains("wants a user and password and none is given"), "{e}");
    for (code, kind, words) in [
        (1, "cannot reach", "general SOCKS server failure"),
        (2, "refuses to connect", "connection not allowed by its rules"),
        (4, "cannot reach", "host unreachable"),
        (5, "cannot reach", "connection refused"),
        (6, "cannot reach", "TTL expired"),
        (8, "does not answer as a SOCKS5 proxy", "address type not supported"),
    ] {
        p.set(|b| b.answer = Answer::SocksReply(code));
        let e = dial(&p.url(), port, 5 * SEC).unwrap_err().to_string();
        assert!(e.contains(kind) && e.contains(words) && e.contains(&format!("SOCKS5 reply {code}")), "{code}: {e}");
    }
}

#[test]
fn a_proxy_of_the_other_kind_or_one_that_answers_garbage_is_named_as_such() {
    let _g = Guard::new(30 * SEC);
    let port = echo_server();
    let socks = with(Kind::Socks5, |_| {});
    let e = dial(&format!("http://{}", socks.addr), port, 5 * SEC).unwrap_err().to_string();
    assert!(e.contains("does not answer as an HTTP proxy") && e.contains("write socks5h://"), "{e}");
    let http = with(Kind::Http, |b| b.answer = Answer::Garbage(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()));
    let e = dial(&http.url(), port, 5 * SEC).unwrap_err().to_string();
    assert!(e.contains("does not speak HTTP: it answered \"SSH-2\""), "{e}");
    assert!(e.contains("check the scheme and the port in gateway.proxy"), "{e}");
    let garbage = with(Kind::Socks5, |b| b.answer = Answer::Garbage(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()));
    let e = dial(&garbage.url(), port, 5 * SEC).unwrap_err().to_string();
    assert!(e.contains("does not speak SOCKS5") && e.contains("write http://"), "{e}");
}

#[test]
fn a_silent_or_trickling_proxy_is_bounded_by_the_one_deadline_and_abort_ends_it_at_once() {
    let _g = Guard::new(30 * SEC);
    let port = echo_server();
    for kind in [Kind::Http, Kind::Socks5] {
        let p = with(kind, |b| b.answer = Answer::Silent);
        let t = Instant::now();
        let e = dial(&p.url(), port, ms(500)).unwrap_err();
        assert!(matches!(e, ConnectError::ProxyTimeout { .. }), "{kind:?}: {e:?}");
        assert!(t.elapsed() < ms(1500), "{kind:?}: {:?}", t.elapsed());

        // A byte every 100 ms never finishes within 500 ms, however steady.
        p.set(|b| (b.answer, b.trickle) = (Answer::Tunnel, Some(ms(100))));
        let t = Instant::now();
        assert!(matches!(dial(&p.url(), port, ms(500)), Err(ConnectError::ProxyTimeout { .. })), "{kind:?}");
        assert!(t.elapsed() < ms(1500), "{kind:?}: {:?}", t.elapsed());
        // A byte every 2 ms is a slow proxy, not a broken one.
        p.set(|b| b.trickle = Some(ms(2)));
        let mut s = dial(&p.url(), port, 5 * SEC).unwrap();
        assert_eq!(read_n(&mut s, 5), b"hello");

        p.set(|b| (b.answer, b.trickle) = (Answer::Silent, None));
        let abort = Abort::default();
        let (a, url) = (abort.clone(), p.url());
        let t = Instant::now();
        let attempt =
            thread::spawn(move || rig_agent::net::dial("localhost", port, &via(&url), Instant::now() + 20 * SEC, &a));
        thread::sleep(ms(200));
        abort.abort();
        assert!(attempt.join().unwrap().is_err());
        assert!(t.elapsed() < 5 * SEC, "{kind:?}: abort took {:?}", t.elapsed());
    }
}

#[test]
fn an_endless_header_is_cut_at_8_kib_and_bytes_after_the_answer_belong_to_the_tunnel() {
    let _g = Guard::new(30 * SEC);
    let port = echo_server();
    let endless = [b"HTTP/1.1 200 OK\r\n".to_vec(), b"X-Filler: aaaaaaaaaaaaaaaa\r\n".repeat(2000)].concat();
    let p = with(Kind::Http, |b| b.answer = Answer::Garbage(endless));
    let e = dial(&p.url(), port, 5 * SEC).unwrap_err().to_string();
    assert!(e.contains("more than 8192 bytes of headers"), "{e}");
    // 200 and more bytes at once: they are the tunnel's first bytes, not eaten with the
    // answer (TLS on them then fails as TLS, not as a hang).
    p.set(|b| b.answer = Answer::Garbage(b"HTTP/1.1 200 OK\r\n\r\nEXTRA".to_vec()));
    let mut s = dial(&p.url(), port, 5 * SEC).unwrap();
    assert_eq!(read_n(&mut s, 5), b"EXTRA");
}

#[test]
fn interim_1xx_answers_before_the_200_still_open_the_tunnel_and_no_byte_of_it_is_eaten() {
    let _g = Guard::new(30 * SEC);
    let port = echo_server();
    let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX-A: b\r\n\r\nHTTP/1.1 200 OK\r\n\r\nEXTRA";
    let p = with(Kind::Http, |b| b.answer = Answer::Garbage(answer.to_vec()));
    let mut s = dial(&p.url(), port, 5 * SEC).unwrap();
    assert_eq!(read_n(&mut s, 5), b"EXTRA");
    // Interim answers without end are bounded as one endless answer is.
    let endless = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(1000);
    p.set(|b| b.answer = Answer::Garbage(endless));
    let e = dial(&p.url(), port, 5 * SEC).unwrap_err().to_string();
    assert!(e.contains("more than 8192 bytes of headers"), "{e}");
}

#[test]
fn a_proxy_url_whose_password_has_a_slash_a_question_mark_or_a_hash_is_refused_without_showing_it() {
    for text in ["http://rig:pa/ss-w0rd@proxy:3128", "socks5h://rig:pa#ss-w0rd@proxy:1080", "rig:pa?ss-w0rd@proxy:3128"]
    {
        let env = |k: &str| (k == "https_proxy").then(|| text.to_string());
        let e = rig_agent::config::proxy::EnvProxies::read(&env).unwrap_err();
        assert!(!e.contains("ss-w0rd") && !e.contains("rig:pa"), "{e}");
        assert!(e.contains("percent-encode"), "{e}");
        let e = ProxyUrl::parse_env(text).unwrap_err().to_string();
        assert!(!e.contains("ss-w0rd") && !e.contains("rig:pa"), "{e}");
    }
}

#[test]
fn a_no_proxy_entry_with_a_trailing_dot_still_bypasses_its_host_as_curl_reads_it() {
    use rig_agent::config::proxy::{EnvProxies, ProxyPolicy};
    let env = |k: &str| match k {
        "https_proxy" => Some("http://p:3128".to_string()),
        "no_proxy" => Some("gateway.farm.,.mirror.farm.".to_string()),
        _ => None,
    };
    let policy = ProxyPolicy::Environment(EnvProxies::read(&env).unwrap());
    for host in ["gateway.farm", "gateway.farm.", "GATEWAY.farm", "a.mirror.farm"] {
        assert!(matches!(policy.choose(host, 443, true), ProxyChoice::Direct), "{host}");
    }
    for host in ["other.farm", "xgateway.farm"] {
        assert!(matches!(policy.choose(host, 443, true), ProxyChoice::Via { .. }), "{host}");
    }
}

#[test]
fn a_proxy_that_echoes_the_credentials_back_does_not_get_them_into_the_error() {
    let _g = Guard::new(30 * SEC);
    let port = echo_server();
    // A hostile proxy that answers with what it was sent, the Basic header included.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && c.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let line =
                String::from_utf8_lossy(&head).lines().find(|l| l.starts_with("Proxy-Auth")).unwrap().to_string();
            let _ = c.write_all(format!("HTTP/1.1 400 {line}\r\nX-Echo: {line}\r\n\r\n").as_bytes());
        }
    });
    let e = dial(&format!("http://rig:s3cret-pass@{addr}"), port, 5 * SEC).unwrap_err().to_string();
    assert!(e.contains("400 Proxy-Authorization: Basic ***"), "{e}");
    assert!(!e.contains("s3cret-pass") && !e.contains("cmlnOnMzY3JldC1wYXNz"), "{e}");
}

fn gateway_through(proxy: &Proxy, dir: &std::path::Path, pki: &Pki, urls: Vec<String>) -> std::path::PathBuf {
    let mut cfg = AgentConfig::new(urls[0].clone(), &pki.ca_file);
    cfg.urls = urls;
    cfg.gateway_extra = format!("proxy = {:?}\n", proxy.url());
    cfg.write(dir)
}

#[test]
fn through_either_proxy_the_agent_logs_in_with_tls_end_to_end_and_reconnects_when_it_dies() {
    let _g = Guard::new(60 * SEC);
    for kind in [Kind::Http, Kind::Socks5] {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(&["localhost"]);
        let mut gw = Gateway::start(&pki, Script::default());
        let proxy = with(kind, creds);
        let _agent = Agent::start(&gateway_through(&proxy, dir.path(), &pki, vec![gw.url()]));
        gw.wait_login(10 * SEC);
        let seen = proxy.seen();
        let port = gw.addr.port();
        let asked = match kind {
            Kind::Http => format!("CONNECT localhost:{port}"),
            Kind::Socks5 => format!("name localhost:{port}"),
        };
        assert_eq!(seen.requests, std::slice::from_ref(&asked));
        // TLS from the agent's first byte: a ClientHello, and never the token in clear.
        assert_eq!(&seen.tunneled[..2], [0x16, 0x03], "{kind:?}");
        let token = common::agent_config::TOKEN.as_bytes();
        assert!(!seen.tunneled.windows(token.len()).any(|w| w == token), "{kind:?}: the token went in clear");
        // The proxy dies in the middle of the session: the agent comes back through it.
        proxy.cut_all();
        gw.wait_login(10 * SEC);
        assert_eq!(proxy.seen().requests, [asked.clone(), asked], "{kind:?}");
    }
}

#[test]
fn through_a_proxy_the_agent_fails_over_to_the_next_url() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let proxy = with(Kind::Http, |_| {});
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = gateway_through(&proxy, dir.path(), &pki, vec![format!("wss://localhost:{dead}/ws"), gw.url()]);
    let _agent = Agent::start(&config);
    gw.wait_login(10 * SEC);
    let requests = proxy.seen().requests;
    assert_eq!(requests.first(), Some(&format!("CONNECT localhost:{dead}")), "{requests:?}");
    let said = logged_with(&format!("cannot reach localhost:{dead} (502 Bad Gateway)"));
    assert!(!said.is_empty(), "the failed URL's cause is logged");
}

#[test]
fn the_environment_proxy_is_used_by_the_binary_and_no_proxy_bypasses_it() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let proxy = with(Kind::Http, creds);
    let config = AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path());
    let url = proxy.url();
    let mut child = spawn_agent(&config, &[("HTTPS_PROXY", &url), ("no_proxy", "example.org,10.0.0.0/8")]);
    gw.wait_login(10 * SEC);
    assert_eq!(proxy.seen().requests, [format!("CONNECT localhost:{}", gw.addr.port())]);
    stop_agent(&mut child);

    let mut child = spawn_agent(&config, &[("https_proxy", &url), ("NO_PROXY", ".example.org, localhost")]);
    gw.wait_login(10 * SEC);
    assert_eq!(proxy.seen().requests.len(), 1, "localhost is in no_proxy: direct");
    stop_agent(&mut child);
}

#[test]
fn wrong_proxy_credentials_are_logged_as_such_and_never_the_credentials_themselves() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let gw = Gateway::start(&pki, Script::default());
    let proxy = with(Kind::Http, creds);
    let wrong = proxy.url().replace("s3cret-pass", "Wr0ng-Secret");
    let config = AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path());
    let mut child = spawn_agent(&config, &[("https_proxy", &wrong), ("RUST_LOG", "debug")]);
    let until = Instant::now() + 10 * SEC;
    while proxy.seen().requests.len() < 3 {
        assert!(Instant::now() < until, "the agent does not retry through the proxy");
        thread::sleep(ms(20));
    }
    let (_, log) = stop_agent(&mut child);
    assert!(log.contains("refused the user and password given (407"), "{log}");
    assert!(log.contains("set the right user and password in the environment variable https_proxy"), "{log}");
    assert!(log.contains("http://***@127.0.0.1:"), "{log}");
    for secret in ["Wr0ng-Secret", "s3cret-pass", "cmlnOldyMG5nLVNlY3JldA=="] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}
