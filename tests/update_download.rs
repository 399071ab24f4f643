//! An update's download against a real server in the test process (HTTPS with the test
//! PKI, or plain HTTP) that misbehaves the ways a hostile or broken mirror does: the rig
//! writes at most the offered size, within its time limit, resumes or restarts a cut
//! transfer at most twice, follows a few redirects, and refuses the rest.

mod common;
#[path = "common/file_server.rs"]
mod file_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Guard, Pki, SEC, proxy};
use file_server::{FileServer, Serve};
use rig_agent::config::proxy::{ProxyPolicy, ProxyUrl};
use rig_agent::net::http_get::{GetError, HttpUrl, Limits, download};

fn body() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn tls(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let roots = rig_agent::config::tls::read_ca_file(&pki.ca_file).unwrap();
    Arc::new(rig_agent::config::tls::client_config(Some(roots), None).unwrap())
}

/// Downloads from `server` into a temp file: the result and the file's bytes.
fn get(server: &FileServer, pki: &Pki, limits: Limits) -> (Result<u64, GetError>, Vec<u8>) {
    get_via(server, pki, &ProxyPolicy::Off, limits)
}

/// [`get`] with the rig's proxy policy.
fn get_via(server: &FileServer, pki: &Pki, proxy: &ProxyPolicy, limits: Limits) -> (Result<u64, GetError>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("download");
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
    let r = download(&HttpUrl::parse(&server.url).unwrap(), &tls(pki), proxy, &mut f, limits);
    (r, std::fs::read(&path).unwrap())
}

fn https(pki: &Pki, serve: Serve) -> FileServer {
    FileServer::start(Some(pki.server_config()), body(), serve)
}

#[test]
fn a_whole_file_comes_over_https_and_over_plain_http() {
    let _g = Guard::new(30 * SEC);
    let pki = Pki::new(&["localhost"]);
    let (r, got) = get(&https(&pki, Serve::Whole), &pki, Limits::for_size(body().len() as u64));
    assert_eq!(r.unwrap(), body().len() as u64);
    assert_eq!(got, body());
    let plain = FileServer::start(None, body(), Serve::Whole);
    let (r, got) = get(&plain, &pki, Limits::for_size(body().len() as u64));
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(got, body());
}

#[test]
fn a_server_whose_certificate_the_rig_does_not_trust_is_refused() {
    let _g = Guard::new(30 * SEC);
    let (pki, other) = (Pki::new(&["localhost"]), Pki::new(&["localhost"]));
    let (r, got) = get(&https(&other, Serve::Whole), &pki, Limits::for_size(body().len() as u64));
    assert!(matches!(r, Err(GetError::Refused(ref w)) if w.contains("TLS")), "{r:?}");
    assert!(got.is_empty());
}

#[test]
fn a_transfer_cut_short_resumes_with_a_range_where_the_server_takes_one_and_restarts_where_not() {
    let _g = Guard::new(30 * SEC);
    let pki = Pki::new(&["localhost"]);
    let s = https(&pki, Serve::CutOnce { at: 100_000, ranges: true });
    let (r, got) = get(&s, &pki, Limits::for_size(body().len() as u64));
    assert_eq!(got, body(), "{r:?}");
    assert_eq!(r.unwrap(), body().len() as u64, "only the missing part is fetched again");
    assert!(s.requests()[1].contains("Range: bytes=100000-"), "{:?}", s.requests());

    let s = https(&pki, Serve::CutOnce { at: 100_000, ranges: false });
    let (r, got) = get(&s, &pki, Limits::for_size(body().len() as u64));
    assert_eq!(got, body());
    assert_eq!(r.unwrap(), body().len() as u64 + 100_000, "restarted from the beginning");
}

#[test]
fn a_transfer_cut_short_every_time_is_refused_after_two_retries() {
    let _g = Guard::new(30 * SEC);
    let pki = Pki::new(&["localhost"]);
    let s = https(&pki, Serve::CutAlways(1000));
    let (r, _) = get(&s, &pki, Limits::for_size(body().len() as u64));
    assert!(matches!(r, Err(GetError::CutShort(_))), "{r:?}");
    assert_eq!(s.requests().len(), 3);
}

#[test]
fn an_endless_body_or_more_bytes_than_offered_are_refused_having_written_no_more_than_the_size() {
    let _g = Guard::new(30 * SEC);
    let pki = Pki::new(&["localhost"]);
    let size = body().len() as u64;
    for serve in [Serve::Endless, Serve::Extra(10)] {
        let (r, got) = get(&https(&pki, serve.clone()), &pki, Limits::for_size(size));
        assert!(matches!(r, Err(GetError::Refused(ref w)) if w.contains("more than")), "{serve:?}: {r:?}");
        assert!(got.len() as u64 <= size, "{serve:?}: {} bytes written", got.len());
    }
}

#[test]
fn a_length_other_than_the_offered_size_even_a_huge_one_is_refused_before_the_body() {
    let _g = Guard::new(30 * SEC);
    let pki = Pki::new(&["localhost"]);
    let size = body().len() as u64;
    for len in [u64::MAX, size + 1, size - 1] {
        let (r, got) = get(&https(&pki, Serve::Length(len)), &pki, Limits::for_size(size));
        assert!(matches!(r, Err(GetError::Refused(ref w)) if w.contains("announces")), "{len}: {r:?}");
        assert!(got.is_empty());
    }
}

#[test]
fn interim_1xx_answers_before_the_200_are_skipped() {
    let _g = Guard::new(30 * SEC);
    let pki = Pki::new(&["localhost"]);
    let (r, got) = get(&https(&pki, Serve::Interim), &pki, Limits::for_size(body().len() as u64));
    assert_eq!(r.unwrap(), body().len() as u64);
    assert_eq!(got, body());
}

#[test]
fn a_huge_length_for_the_rest_of_a_resumed_transfer_is_refused_too() {
    let _g = Guard::new(30 * SEC);
    let pki = Pki::new(&["localhost"]);
    let s = https(&pki, Serve::CutThenHugeRange(100_000));
    let (r, got) = get(&s, &pki, Limits::for_size(body().len() as u64));
    assert!(matches!(r, Err(GetError::Refused(ref w)) if w.contains("announces")), "{r:?}");
    assert!(s.requests()[1].contains("Range: bytes=100000-"), "{:?}", s.requests());
    assert_eq!(got.len(), 100_000);
}

#[test]
fn an_error_status_is_final() {
    let _g = Guard::new(30 * SEC);
    let pki = Pki::new(&["localhost"]);
    let s = https(&pki, Serve::Status(404));
    let (r, _) = get(&s, &pki, Limits::for_size(body().len() as u64));
    assert!(matches!(r, Err(GetError::Refused(ref w)) if w.contains("404")), "{r:?}");
    assert_eq!(s.requests().len(), 1, "not retried");
}

#[test]
fn redirects_are_followed_three_times_and_no_more() {
    let _g = Guard::new(30 * SEC);
    let pki = Pki::new(&["localhost"]);
    let target = https(&pki, Serve::Whole);
    let hop = https(&pki, Serve::Redirect(target.url.clone()));
    let (r, got) = get(&hop, &pki, Limits::for_size(body().len() as u64));
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(got, body());
    let looping = https(&pki, Serve::Redirect("/again".into()));
    let (r, _) = get(&looping, &pki, Limits::for_size(body().len() as u64));
    assert!(matches!(r, Err(GetError::Refused(ref w)) if w.contains("redirects")), "{r:?}");
    assert_eq!(looping.requests().len(), 4);
}

#[test]
fn a_server_that_trickles_is_given_up_at_the_time_limit() {
    let _g = Guard::new(30 * SEC);
    let pki = Pki::new(&["localhost"]);
    let s = https(&pki, Serve::Trickle(Duration::from_millis(50)));
    let started = Instant::now();
    let (r, got) = get(&s, &pki, Limits { size: body().len() as u64, total: 2 * SEC });
    assert!(matches!(r, Err(GetError::TimedOut(_))), "{r:?}");
    assert!(started.elapsed() < 5 * SEC, "took {:?}", started.elapsed());
    assert!(got.len() < 100);
}

#[test]
fn a_tls_server_that_trickles_its_records_a_byte_at_a_time_is_given_up_at_the_time_limit() {
    let _g = Guard::new(60 * SEC);
    let pki = Pki::new(&["localhost"]);
    // Never silent for the idle limit, but a TLS record of 16 KiB takes over 16 s: only the
    // overall limit ends it, and it must, inside rustls' loop over the socket's reads too.
    let s = https(&pki, Serve::WireTrickle(Duration::from_millis(1)));
    let started = Instant::now();
    let (r, got) = get(&s, &pki, Limits { size: body().len() as u64, total: 4 * SEC });
    assert!(matches!(r, Err(GetError::TimedOut(_))), "{r:?}");
    assert!(started.elapsed() < 7 * SEC, "took {:?}", started.elapsed());
    assert!(got.len() < 100_000);
}

#[test]
fn the_download_goes_through_the_rigs_proxy_with_tls_end_to_end() {
    let _g = Guard::new(30 * SEC);
    let pki = Pki::new(&["localhost"]);
    let server = https(&pki, Serve::Whole);
    for kind in [proxy::Kind::Http, proxy::Kind::Socks5] {
        let p = proxy::Proxy::start(
            kind,
            proxy::Behaviour { credentials: Some(("rig".into(), "s3cret".into())), ..Default::default() },
        );
        let policy = ProxyPolicy::Always(ProxyUrl::parse(&p.url()).unwrap());
        let (r, got) = get_via(&server, &pki, &policy, Limits::for_size(body().len() as u64));
        assert_eq!(r.unwrap(), body().len() as u64, "{kind:?}");
        assert_eq!(got, body());
        let seen = p.seen();
        assert_eq!(seen.tunnels, 1, "{kind:?}: {seen:?}");
        assert_eq!(seen.authenticated, [Some(true)], "{kind:?}");
        // The proxy relayed a TLS handshake, not the request in clear.
        assert!(!String::from_utf8_lossy(&seen.tunneled).contains("GET "), "{kind:?}");
        assert_eq!(seen.tunneled.first(), Some(&0x16), "{kind:?}: a TLS record first");
    }
}

#[test]
fn a_proxy_that_refuses_the_mirror_fails_the_download_with_its_reason() {
    let _g = Guard::new(30 * SEC);
    let pki = Pki::new(&["localhost"]);
    let server = https(&pki, Serve::Whole);
    let p = proxy::Proxy::start(
        proxy::Kind::Http,
        proxy::Behaviour { answer: proxy::Answer::Status(403, "Forbidden"), ..Default::default() },
    );
    let policy = ProxyPolicy::Always(ProxyUrl::parse(&p.url()).unwrap());
    let (r, got) = get_via(&server, &pki, &policy, Limits::for_size(body().len() as u64));
    let e = format!("{:?}", r.unwrap_err());
    assert!(e.contains("403"), "{e}");
    assert!(got.is_empty());
}
