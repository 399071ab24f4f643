//! `cargo run --release --example proxy_connect`
//!
//! What a proxy costs the agent's connect: the whole of it (DNS, TCP, the proxy's
//! handshake, TLS with the certificate verified, the WebSocket upgrade) to the test gateway
//! on loopback, directly and through the test HTTP CONNECT and SOCKS5 proxies (with
//! credentials), 100 connects each; prints p50 and p90 in milliseconds. The proxies are the
//! tests' own (`tests/common/proxy.rs`), a thread per connection: the figure is the agent's
//! side plus one loopback hop, not a production proxy's speed.

#[path = "../tests/common/agent_config.rs"]
mod agent_config;
#[path = "../tests/common/gateway.rs"]
mod gateway;
#[path = "../tests/common/proxy.rs"]
mod proxy;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_config::AgentConfig;
use gateway::{Gateway, Pki, Script};
use proxy::{Behaviour, Kind, Proxy};
use rig_agent::clock::Clock;
use rig_agent::config::Config;
use rig_agent::net::abort::Abort;
use rig_agent::net::address_book::AddressBook;
use rig_agent::net::resolve::Resolver;
use rig_agent::net::transport;

const CONNECTS: usize = 100;

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Ends the connection as the agent does (a close frame, the gateway's reply read) rather
/// than dropping the socket: the test gateway reports a connection lost without a close on
/// stderr, and 300 such lines would bury the figures.
fn close(mut ws: rig_agent::net::stream::WebSocket) {
    let _ = ws.close(None);
    while ws.read().is_ok() {}
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let gw = Gateway::start(&pki, Script::default());
    let creds = || Behaviour { credentials: Some(("rig".into(), "bench-pass".into())), ..Behaviour::default() };
    let http = Proxy::start(Kind::Http, creds());
    let socks = Proxy::start(Kind::Socks5, creds());
    let resolver = Resolver::new(Arc::new(AddressBook::in_memory()));
    let clock = Arc::new(Clock::unrecorded());
    println!("connect to the loopback gateway, {CONNECTS} times each (DNS, TCP, proxy, TLS, upgrade)");
    println!("{:<22} {:>8} {:>8}", "route", "p50 ms", "p90 ms");
    for (name, proxy) in
        [("direct", "none".to_string()), ("HTTP CONNECT", http.url()), ("SOCKS5 (socks5h)", socks.url())]
    {
        let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
        cfg.gateway_extra = format!("proxy = {proxy:?}\n");
        let sub = dir.path().join(name.replace([' ', '(', ')'], "_"));
        std::fs::create_dir_all(&sub).unwrap();
        let config = Config::load(&cfg.write(&sub)).unwrap_or_else(|e| panic!("{e}"));
        let url = config.gateway.urls[0].clone();
        let mut times = Vec::with_capacity(CONNECTS);
        for _ in 0..CONNECTS {
            let t = Instant::now();
            let c = transport::connect(&url, &config.gateway, &resolver, &clock, &Abort::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            times.push(t.elapsed());
            close(c.ws);
        }
        times.sort();
        println!("{name:<22} {:>8.2} {:>8.2}", percentile(&times, 50), percentile(&times, 90));
    }
}
