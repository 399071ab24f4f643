//! `cargo build --release && cargo run --release --example kmsg_hop [TRIALS]` (as root)
//!
//! What the privileged half's hop costs a kernel event: a kernel error
//! line written to a FIFO that stands for `/dev/kmsg` (held open, so both readers sleep in
//! poll(2) as on the device) → `io_errors` received by the test gateway over loopback wss.
//! p50 and p99 over TRIALS (default 30) lines, first with the agent reading the FIFO
//! itself (`paths.privileged_socket = ""`), then through `rig-agent privileged`.
//! `io_error_quiet` is 1 s and lines come 1.5 s apart, so each one is a new warning.
//! Figures, not pass/fail. The real-kernel path (FUSE EIO under a loop device) is in
//! examples/event_latency.rs.

#[path = "../tests/common/agent_config.rs"]
mod agent_config;
#[path = "../tests/common/gateway.rs"]
mod gateway;
#[path = "support/measure.rs"]
mod measure;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use agent_config::{AgentConfig, rig_copy, rig_paths};
use gateway::{Event, Gateway, Pki, Script};
use measure::{agent_binary, percentile, stop};

const WAIT: Duration = Duration::from_secs(10);

fn spawn(config: &Path, extra: &[&str]) -> Child {
    Command::new(agent_binary())
        .arg("--config")
        .arg(config)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rig-agent")
}

/// Latencies of `trials` kernel lines for sda, with or without the privileged half.
fn run(trials: usize, privileged: bool) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    let kmsg = dir.path().join("kmsg.fifo");
    assert!(Command::new("mkfifo").arg(&kmsg).status().unwrap().success());
    // Read and write: held open without waiting for a reader, never at end of file.
    let mut fifo = OpenOptions::new().read(true).write(true).open(&kmsg).unwrap();
    let socket = dir.path().join("priv.sock");
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut c = AgentConfig::new(gw.url(), &pki.ca_file);
    c.disks = "smartctl = \"\"\nscan_interval = \"60s\"\nio_error_quiet = \"1s\"\n".into();
    let socket_setting = if privileged { socket.display().to_string() } else { String::new() };
    c.paths_extra =
        format!("{}kmsg = {:?}\nprivileged_socket = {socket_setting:?}\n", rig_paths(&rig), kmsg.display().to_string());
    let cfg = c.write(dir.path());
    let half = privileged.then(|| spawn(&cfg, &["privileged"]));
    let until = Instant::now() + WAIT;
    while privileged && !socket.exists() {
        assert!(Instant::now() < until, "no privileged socket");
        thread::sleep(Duration::from_millis(20));
    }
    let agent = spawn(&cfg, &[]);
    gw.wait_login(WAIT);
    // The first scan's warnings (sdb is offline in the fixture) and the stream's set-up.
    thread::sleep(Duration::from_secs(2));
    let mut v = Vec::new();
    for i in 0..trials as u64 {
        gw.seen.clear();
        let line = format!("3,{},{},-;I/O error, dev sda, sector {} op 0x0:(READ)\n", 10 + i, 1000 + i, i * 8);
        let t0 = Instant::now();
        fifo.write_all(line.as_bytes()).unwrap();
        let at = match gw.wait_for(WAIT, "io_errors for sda", |e| {
            matches!(e, Event::Received { msg, .. } if msg["act"] == "warning" && msg["disk"] == "/dev/sda" && msg["reason"] == "io_errors")
        }) {
            Event::Received { at, .. } => at,
            _ => unreachable!(),
        };
        v.push(at - t0);
        thread::sleep(Duration::from_millis(1500));
    }
    stop(agent);
    if let Some(h) = half {
        stop(h);
    }
    v.sort();
    v
}

fn show(label: &str, v: &[Duration]) {
    println!(
        "{label:<44} p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>6.2} ms   (n = {})",
        percentile(v, 0.5).as_secs_f64() * 1e3,
        percentile(v, 0.99).as_secs_f64() * 1e3,
        v.last().unwrap().as_secs_f64() * 1e3,
        v.len()
    );
}

fn main() {
    let trials: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    if !rustix::process::geteuid().is_root() {
        eprintln!("kmsg_hop needs root (both halves as the units run them)");
        std::process::exit(1);
    }
    println!("rig-agent kernel line -> io_errors received, {trials} lines each, release binary");
    show("agent reads the kernel log itself", &run(trials, false));
    show("through the privileged half", &run(trials, true));
}
