//! `cargo build --release && cargo run --release --example actions_bench`
//!
//! Remote actions on the real release binary over loopback wss: the answer latency of a
//! trivial `post` action (`/bin/true`, from the gateway's send to its receipt of the answer:
//! decision, thread, fork/exec, reap, encode), and the agent's RSS and thread count while 10
//! actions run at once (`max_concurrent = 10`, each `/bin/sleep 3`). Medians of BENCH_RUNS
//! runs (default 3), each with a fresh agent. BENCH_AGENT=PATH measures another build.
//! Figures, not pass/fail.

#[path = "../tests/common/agent_config.rs"]
mod agent_config;
#[path = "../tests/common/gateway.rs"]
mod gateway;
#[path = "support/measure.rs"]
mod measure;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_config::AgentConfig;
use gateway::{Event, Gateway, Pki, Script};
use measure::{agent_binary, median, status_kib};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);
const POSTS: usize = 100;

struct Run {
    rss_idle: f64,
    p50_ms: f64,
    p90_ms: f64,
    rss_10: f64,
    threads_10: f64,
}

fn answer(gw: &mut Gateway, code: &str) -> (Value, Instant) {
    let is_answer =
        |e: &Event| matches!(e, Event::Received { msg, .. } if msg["act"] == "run_action" && msg["act_code"] == code);
    match gw.wait_for(WAIT, code, is_answer) {
        Event::Received { msg, at, .. } => (msg, at),
        _ => unreachable!(),
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

fn one_run() -> Run {
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    (cfg.heartbeat_interval, cfg.heartbeat_timeout) = ("1s", "5s");
    let sleeps: String = (1..=10).map(|i| format!("[actions.s{i}]\ncommand = [\"/bin/sleep\", \"3\"]\n")).collect();
    cfg.sections =
        format!("[actions]\nenabled = true\nmax_concurrent = 10\n[actions.t]\ncommand = [\"/bin/true\"]\n{sleeps}");
    let config = cfg.write(dir.path());
    let child = Command::new(agent_binary())
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rig-agent");
    // Killed however this run ends, a failed assertion included.
    let child = KillOnDrop(child);
    let pid = child.0.id();
    let (conn, _) = gw.wait_login(WAIT);
    gw.wait_act(WAIT, "heartbeat");
    let rss_idle = status_kib(pid, "VmRSS:") as f64;
    let ask = |gw: &Gateway, mode: &str, code: &str, action: &str| {
        gw.send_json(conn, json!({"act":"run_action","reqtype":mode,"act_code":code,"client_id":"b","action":action}));
    };
    let mut lat = Vec::new();
    for i in 0..POSTS {
        let code = format!("t{i}");
        let sent = Instant::now();
        ask(&gw, "post", &code, "t");
        let (a, at) = answer(&mut gw, &code);
        assert_eq!(a["data"]["exit_code"], 0, "{a}");
        lat.push((at - sent).as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    for i in 1..=10 {
        ask(&gw, "write", &format!("w{i}"), &format!("s{i}"));
    }
    // The ten answers come from ten threads, in any order.
    for _ in 0..10 {
        let e = gw.wait_for(WAIT, "write answer", |e| e.act() == Some("run_action"));
        let Event::Received { msg, .. } = e else { unreachable!() };
        assert_eq!(msg["code"], 0, "{msg}");
    }
    std::thread::sleep(Duration::from_millis(1000));
    let (rss_10, threads_10) = (status_kib(pid, "VmRSS:") as f64, threads(pid) as f64);
    for _ in 0..10 {
        gw.wait_act(WAIT, "action_result");
    }
    drop(child);
    Run { rss_idle, p50_ms: lat[POSTS / 2], p90_ms: lat[POSTS * 9 / 10], rss_10, threads_10 }
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let all: Vec<Run> = (0..runs).map(|_| one_run()).collect();
    let m = |f: fn(&Run) -> f64| median(all.iter().map(f).collect());
    println!("remote actions, medians of {runs} runs ({})", agent_binary().display());
    println!("| figure | value |\n|---|---|");
    println!("| RSS logged in, idle | {:.2} MB |", m(|r| r.rss_idle) / 1024.0);
    println!("| trivial post action (`/bin/true`), answer latency p50 | {:.2} ms |", m(|r| r.p50_ms));
    println!("| same, p90 | {:.2} ms |", m(|r| r.p90_ms));
    println!("| RSS while 10 actions run | {:.2} MB |", m(|r| r.rss_10) / 1024.0);
    println!("| threads while 10 actions run | {:.0} |", m(|r| r.threads_10));
}
