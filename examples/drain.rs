//! `cargo build --release && cargo run --release --example drain [WARNINGS]`
//!
//! A long outage leaves WARNINGS (default 20 000) warnings in the spool; the real
//! `rig-agent` binary starts, logs in to the in-process test gateway (which acknowledges
//! every warning) over loopback wss, and drains them. Prints the time from login to the
//! last warning received and to an empty spool directory, the connections it took, and the
//! largest gap between heartbeats (interval 100 ms) while draining. Each warning is of its own
//! disk, so the outbox cap (which drops duplicates of a disk and reason) keeps them all.
//! Medians of BENCH_RUNS runs (default 3). Figures, not pass/fail.

#[path = "../tests/common/agent_config.rs"]
mod agent_config;
#[path = "../tests/common/gateway.rs"]
mod gateway;
#[path = "support/measure.rs"]
mod measure;

use std::collections::HashSet;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_config::{AgentConfig, HARDWARE_ID};
use gateway::{Event, Gateway, Pki, Script};
use measure::{agent_binary, median};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

struct Run {
    received: Duration,
    emptied: Duration,
    connections: usize,
    max_gap: Duration,
}

fn one(n: u64) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    // Short, so that several fall due while the backlog drains.
    (cfg.heartbeat_interval, cfg.heartbeat_timeout) = ("100ms", "3s");
    // Nothing to monitor: the figures are the outbox's alone.
    cfg.disks = "smartctl = \"\"\ninclude = [\"none-such\"]\n".into();
    let config = cfg.write(dir.path());
    let spool = dir.path().join("state/spool");
    fs::create_dir_all(&spool).unwrap();
    for seq in 1..=n {
        let w = json!({"from":"device","act":"warning","reqtype":"post","act_id":format!("backlog-{seq}"),
            "act_code":"","client_id":"","hardware_id":HARDWARE_ID,"name":HARDWARE_ID,"type":2,
            "message":format!("Disk[/dev/bench{seq}]硬盘损坏"),"disk":format!("/dev/bench{seq}"),
            "serial":null,"reason":"offline","detail":"device/state is \"offline\"","time":1_764_000_000u64 + seq});
        fs::write(spool.join(format!("w-{seq:012}.json")), w.to_string()).unwrap();
    }
    let mut child = Command::new(agent_binary())
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_remove("JOURNAL_STREAM")
        .spawn()
        .expect("spawn rig-agent");
    gw.wait_login(WAIT);
    let login_at = gw.seen.last().unwrap().at();
    let mut got = HashSet::new();
    while got.len() < n as usize {
        match gw.next_event(WAIT).expect("warnings stopped coming") {
            Event::Received { msg, .. } if msg["act"] == "warning" => {
                got.insert(msg["act_id"].as_str().unwrap().to_string());
            }
            _ => {}
        }
    }
    let received = gw.seen.last().unwrap().at() - login_at;
    while fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0) > 0 {
        assert!(login_at.elapsed() < 10 * WAIT, "the spool did not empty");
        gw.next_event(Duration::from_millis(20));
    }
    let emptied = login_at.elapsed();
    // Heartbeats after the drain too, so the last gap of the drain is closed.
    let until = Instant::now() + Duration::from_millis(500);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        gw.next_event(left);
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let hbs: Vec<Instant> = gw.seen.iter().filter(|e| e.act() == Some("heartbeat")).map(Event::at).collect();
    // From the login through the drain: each gap that began before the spool was empty.
    let mut max_gap = Duration::ZERO;
    let mut prev = login_at;
    for at in hbs {
        if prev - login_at > emptied {
            break;
        }
        max_gap = max_gap.max(at - prev);
        prev = at;
    }
    let connections = gw.seen.iter().filter(|e| matches!(e, Event::Accepted { .. })).count();
    Run { received, emptied, connections, max_gap }
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let all: Vec<Run> = (0..runs).map(|_| one(n)).collect();
    let m = |f: fn(&Run) -> f64| median(all.iter().map(f).collect());
    println!("{n} spooled warnings, gateway acknowledging each; medians of {runs} runs");
    println!("  last warning received      {:.3} s after login", m(|r| r.received.as_secs_f64()));
    println!("  spool directory empty      {:.3} s after login", m(|r| r.emptied.as_secs_f64()));
    println!("  warnings per second        {:.0}", n as f64 / m(|r| r.received.as_secs_f64()));
    println!("  connections                {}", all.iter().map(|r| r.connections).max().unwrap_or(0));
    println!("  largest heartbeat gap      {:.3} s (interval 0.1 s)", m(|r| r.max_gap.as_secs_f64()));
    println!(
        "  largest heartbeat gap, worst run {:.3} s",
        all.iter().map(|r| r.max_gap.as_secs_f64()).fold(0.0, f64::max)
    );
}
