//! `cargo build --release && cargo run --release --example fleet [AGENTS]`
//!
//! A fleet of real `rig-agent` processes (default 50; one in ten with a token the gateway
//! rejects) against one local gateway, with reconnect.initial = 1 s and reconnect.max = 4 s:
//!
//! 1. everyone logs in;
//! 2. the gateway restarts (close 1012 to every connection): each agent's first reconnect
//!    must come after a wait in [cap/2, cap] = [0.5 s, 1 s], spread over that window;
//! 3. the gateway is down for 6 s (connections refused at once), then back: connection
//!    attempts per half second while down, and logins per half second once back;
//! 4. agents with a rejected token never try again sooner than reconnect.max.
//!
//! Prints the figures; they are copied into BENCHMARKS.md.

#[path = "../tests/common/agent_config.rs"]
mod agent_config;
#[path = "../tests/common/gateway.rs"]
mod gateway;
#[path = "support/measure.rs"]
mod measure;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_config::AgentConfig;
use gateway::{Event, Gateway, Pki, Script};
use measure::agent_binary;

const BAD_TOKEN: &str = "this-token-is-wrong";

/// Login times per hardware_id, and TCP accept times, as the gateway saw them.
#[derive(Default)]
struct Seen {
    logins: HashMap<String, Vec<Instant>>,
    accepts: Vec<Instant>,
}

impl Seen {
    fn pump(&mut self, gw: &mut Gateway, until: Instant) {
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match gw.next_event(left) {
                Some(Event::Received { msg, at, .. }) if msg["act"] == "start" => {
                    self.logins.entry(msg["hardware_id"].as_str().unwrap_or("").to_string()).or_default().push(at)
                }
                Some(Event::Accepted { at, .. }) => self.accepts.push(at),
                _ => {}
            }
            gw.seen.clear();
        }
    }

    /// Waits until every agent in `ids` has logged in after `since`; their first such login.
    fn wait_logins_after(&mut self, gw: &mut Gateway, ids: &[String], since: Instant) -> Vec<Duration> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let firsts: Vec<Option<Duration>> = ids
                .iter()
                .map(|id| self.logins.get(id).and_then(|t| t.iter().find(|t| **t >= since)).map(|t| *t - since))
                .collect();
            if firsts.iter().all(Option::is_some) {
                return firsts.into_iter().flatten().collect();
            }
            assert!(Instant::now() < deadline, "not every agent logged in within 60 s");
            self.pump(gw, Instant::now() + Duration::from_millis(50));
        }
    }
}

fn stats(mut d: Vec<Duration>) -> String {
    d.sort();
    let s = |x: Duration| format!("{:.3}s", x.as_secs_f64());
    format!("min {} / p50 {} / max {}", s(d[0]), s(d[d.len() / 2]), s(d[d.len() - 1]))
}

fn histogram(times: &[Duration], bucket: Duration, buckets: usize) -> String {
    let mut h = vec![0usize; buckets];
    for t in times {
        let i = (t.as_secs_f64() / bucket.as_secs_f64()) as usize;
        if i < buckets {
            h[i] += 1;
        }
    }
    h.iter().map(|n| format!("{n:>3}")).collect::<Vec<_>>().join(" ")
}

fn main() {
    let agents: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let bad = (agents / 10).max(1);
    let bin = agent_binary();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script { reject_token: Some(BAD_TOKEN.into()), ..Script::default() });
    let dir = tempfile::tempdir().unwrap();
    let mut children: Vec<Child> = Vec::new();
    let t_start = Instant::now();
    let mut good_ids = Vec::new();
    let mut bad_ids = Vec::new();
    for i in 0..agents {
        let d = dir.path().join(format!("agent-{i:03}"));
        std::fs::create_dir_all(&d).unwrap();
        let mut c = AgentConfig::new(gw.url(), &pki.ca_file);
        c.hardware_id = format!("fleet-{i:03}");
        c.token = if i < bad { BAD_TOKEN.into() } else { format!("good-token-{i:03}") };
        (c.heartbeat_interval, c.heartbeat_timeout) = ("1s", "5s");
        (c.reconnect_initial, c.reconnect_max) = ("1s", "4s");
        c.disks = "smartctl = \"\"\nscan_interval = \"1h\"\n".into();
        if i < bad {
            bad_ids.push(c.hardware_id.clone())
        } else {
            good_ids.push(c.hardware_id.clone())
        }
        let path = c.write(&d);
        children.push(
            Command::new(&bin)
                .arg("--config")
                .arg(path)
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .stderr(if std::env::var_os("FLEET_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
                .spawn()
                .expect("start rig-agent"),
        );
    }
    let mut seen = Seen::default();
    let first = seen.wait_logins_after(&mut gw, &good_ids, t_start);
    println!("fleet: {agents} rig-agent processes ({} with a rejected token), reconnect.initial 1s, max 4s", bad);
    println!("start-up: all {} good agents logged in, {}", good_ids.len(), stats(first));

    // Let heartbeats settle, then restart the gateway.
    seen.pump(&mut gw, Instant::now() + Duration::from_secs(2));
    let t_restart = Instant::now();
    gw.close_all();
    let again = seen.wait_logins_after(&mut gw, &good_ids, t_restart);
    let in_window =
        again.iter().filter(|d| **d >= Duration::from_millis(500) && **d <= Duration::from_millis(1100)).count();
    println!(
        "gateway restart (close 1012): first reconnects {}; {in_window}/{} within [cap/2, cap] = [0.5s, 1s] (+0.1s to connect)",
        stats(again.clone()),
        again.len()
    );
    println!("  logins per 100 ms after the restart (0-1.5 s): {}", histogram(&again, Duration::from_millis(100), 15));

    // An outage: every connection dropped, attempts refused for 6 s, then the gateway is back.
    seen.pump(&mut gw, Instant::now() + Duration::from_secs(2));
    gw.script().drop_on_accept = true;
    let t_down = Instant::now();
    let accepts_before = seen.accepts.len();
    gw.close_all();
    seen.pump(&mut gw, t_down + Duration::from_secs(6));
    let attempts: Vec<Duration> = seen.accepts[accepts_before..].iter().map(|t| *t - t_down).collect();
    gw.script().drop_on_accept = false;
    let t_up = Instant::now();
    let back = seen.wait_logins_after(&mut gw, &good_ids, t_up);
    println!(
        "outage of 6 s: {} connection attempts, per 500 ms: {}",
        attempts.len(),
        histogram(&attempts, Duration::from_millis(500), 12)
    );
    println!(
        "  gateway back: all {} good agents logged in again, {}; per 500 ms: {}",
        back.len(),
        stats(back.clone()),
        histogram(&back, Duration::from_millis(500), 10)
    );

    // Rejected tokens: time between successive login attempts of each such agent.
    let mut gaps = Vec::new();
    for id in &bad_ids {
        if let Some(t) = seen.logins.get(id) {
            gaps.extend(t.windows(2).map(|w| w[1] - w[0]));
        }
    }
    if gaps.is_empty() {
        println!("rejected tokens: no repeated attempt seen");
    } else {
        let fastest = *gaps.iter().min().unwrap();
        println!(
            "rejected tokens: {} retries over {:.0}s, gaps {}; fastest {:.3}s (reconnect.max 4s): {}",
            gaps.len(),
            t_start.elapsed().as_secs_f64(),
            stats(gaps.clone()),
            fastest.as_secs_f64(),
            if fastest >= Duration::from_secs(4) { "never faster than max" } else { "FASTER THAN MAX" }
        );
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}
