//! Issue 12's figures: the RSS of the two halves beside the single process of before, and
//! what the privileged hop adds to a smartctl answer. Release binary; run as root (the
//! privileged half is started by hand on a temp socket, as tests/privilege.rs does).
//!
//! `cargo build --release --examples && target/release/examples/privsep`

#[path = "../tests/common/agent_config.rs"]
mod agent_config;
#[path = "../tests/common/gateway.rs"]
mod gateway;
#[path = "support/measure.rs"]
mod measure;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use agent_config::AgentConfig;
use gateway::{Event, Gateway, Pki, Script};
use measure::{agent_binary, median, status_kib};
use serde_json::json;

const RUNS: usize = 300;

fn spawn(cfg: &Path, extra: &[&str]) -> Child {
    Command::new(agent_binary())
        .arg("--config")
        .arg(cfg)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("MALLOC_ARENA_MAX", "1")
        .spawn()
        .unwrap()
}

/// The agent logged in, answered `get_disk_info` 20 times (SMART of three fixture disks
/// each time: smart_interval 1 s, so some go through smartctl); its RSS and, if any, the
/// privileged half's.
fn rss_after_queries(dir: &Path, smartctl: &Path, socket: &str) -> (u64, u64) {
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let rig = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rig");
    let mut c = AgentConfig::new(gw.url(), &pki.ca_file);
    c.disks = format!("smartctl = {:?}\nsmart_interval = \"1s\"\n", smartctl.display().to_string());
    c.paths_extra = format!(
        "sysfs = {:?}\nprocfs = {:?}\nrootfs = {:?}\nprivileged_socket = {socket:?}\n",
        rig.join("sys").display().to_string(),
        rig.join("proc").display().to_string(),
        rig.display().to_string()
    );
    let cfg = c.write(dir);
    let mut privileged = (!socket.is_empty()).then(|| spawn(&cfg, &["privileged"]));
    if privileged.is_some() {
        let until = Instant::now() + Duration::from_secs(10);
        while !Path::new(socket).exists() {
            assert!(Instant::now() < until, "privileged socket");
            thread::sleep(Duration::from_millis(10));
        }
    }
    let mut agent = spawn(&cfg, &[]);
    let conn = match gw.wait_for(Duration::from_secs(10), "login", |e| e.act() == Some("start")) {
        Event::Received { conn, .. } => conn,
        _ => unreachable!(),
    };
    for i in 0..20 {
        let code = format!("d{i}");
        gw.send_json(conn, json!({"act":"get_disk_info","act_code":code,"client_id":"c","reqtype":"post"}));
        gw.wait_for(
            Duration::from_secs(10),
            "answer",
            |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == code.as_str()),
        );
        thread::sleep(Duration::from_millis(100));
    }
    let rss = (status_kib(agent.id(), "VmRSS:"), privileged.as_ref().map_or(0, |p| status_kib(p.id(), "VmRSS:")));
    let _ = agent.kill();
    let _ = agent.wait();
    if let Some(p) = privileged.as_mut() {
        let _ = p.kill();
        let _ = p.wait();
    }
    rss
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let smartctl = dir.path().join("smartctl");
    fs::write(&smartctl, "#!/bin/sh\necho '{\"smart_status\":{\"passed\":true},\"temperature\":{\"current\":33}}'\n")
        .unwrap();
    fs::set_permissions(&smartctl, fs::Permissions::from_mode(0o755)).unwrap();

    let single = rss_after_queries(&tempfile::tempdir().unwrap().keep(), &smartctl, "");
    let sock = dir.path().join("priv.sock");
    let (net, privileged) = rss_after_queries(&tempfile::tempdir().unwrap().keep(), &smartctl, sock.to_str().unwrap());
    println!("RSS after login and 20 get_disk_info (KiB): single process (smartctl run by the agent) {}", single.0);
    println!(
        "  split: network half {net} + privileged half {privileged} = {} ({:.2}x)",
        net + privileged,
        (net + privileged) as f64 / single.0 as f64
    );

    // The hop: the same fake smartctl through a privileged half, and run directly.
    let pki = Pki::new(&["localhost"]);
    let rig = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rig");
    let mut c = AgentConfig::new("wss://localhost:1/".into(), &pki.ca_file);
    c.disks = format!("smartctl = {:?}\n", smartctl.display().to_string());
    c.paths_extra = format!(
        "sysfs = {:?}\nprivileged_socket = {:?}\n",
        rig.join("sys").display().to_string(),
        sock.display().to_string()
    );
    let cfg = c.write(dir.path());
    let mut privileged = spawn(&cfg, &["privileged"]);
    while !sock.exists() {
        thread::sleep(Duration::from_millis(10));
    }
    let timeout = Duration::from_secs(5);
    let time = |f: &mut dyn FnMut()| {
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect::<Vec<_>>()
    };
    let via = time(&mut || {
        rig_agent::privileged::client::smart(&sock, "sda", timeout).unwrap();
    });
    let direct = time(&mut || {
        let mut cmd = Command::new(&smartctl);
        cmd.args(["--json", "-H", "-A", "/dev/sda"]);
        rig_agent::child::run(cmd, timeout, 1 << 20).unwrap();
    });
    let (v, d) = (median(via), median(direct));
    println!(
        "smartctl answer, median of {RUNS}: through the privileged half {v:.3} ms, run directly {d:.3} ms: the hop adds {:.3} ms",
        v - d
    );
    let _ = privileged.kill();
    let _ = privileged.wait();
}
