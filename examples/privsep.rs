//! What the privilege split costs: the RSS of the two halves beside the single process of
//! before, and what the privileged hop adds to a smartctl answer. Release binary; run as
//! root (the privileged half is started by hand on a temp socket, as tests/privilege.rs
//! does).
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

#[derive(Debug, Default, Clone, Copy)]
struct Mem {
    rss: u64,
    anon: u64,
    pss: u64,
}

/// A `/proc/PID/smaps_rollup` field in KiB (PSS: shared pages divided among their users).
fn rollup_kib(pid: u32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

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
fn rss_after_queries(dir: &Path, smartctl: &Path, socket: &str) -> (Mem, Mem) {
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
    let mem = |pid: u32| Mem {
        rss: status_kib(pid, "VmRSS:"),
        anon: status_kib(pid, "RssAnon:"),
        pss: rollup_kib(pid, "Pss:"),
    };
    let rss = (mem(agent.id()), privileged.as_ref().map_or(Mem::default(), |p| mem(p.id())));
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
    println!("memory after login and 20 get_disk_info, KiB (RSS / anonymous / PSS):");
    println!("  single process, smartctl run by the agent: {} / {} / {}", single.0.rss, single.0.anon, single.0.pss);
    println!("  network half:    {} / {} / {}", net.rss, net.anon, net.pss);
    println!("  privileged half: {} / {} / {}", privileged.rss, privileged.anon, privileged.pss);
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    println!(
        "  both halves: RSS {} ({:.2}x), anonymous {} ({:.2}x), PSS {} ({:.2}x): PSS counts the binary's and libc's shared pages once",
        net.rss + privileged.rss,
        ratio(net.rss + privileged.rss, single.0.rss),
        net.anon + privileged.anon,
        ratio(net.anon + privileged.anon, single.0.anon),
        net.pss + privileged.pss,
        ratio(net.pss + privileged.pss, single.0.pss)
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
    // The first run's half was killed and left its socket: wait for the new one's.
    let _ = fs::remove_file(&sock);
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
        rig_agent::privileged_client::smart(&sock, "sda", timeout).unwrap();
    });
    let direct = time(&mut || {
        let mut cmd = Command::new(&smartctl);
        cmd.args(["--json", "-H", "-A", "/dev/sda"]);
        rig_agent::os::child::run(cmd, timeout, 1 << 20).unwrap();
    });
    let (v, d) = (median(via), median(direct));
    println!(
        "smartctl answer, median of {RUNS}: through the privileged half {v:.3} ms, run directly {d:.3} ms: the hop adds {:.3} ms",
        v - d
    );
    let _ = privileged.kill();
    let _ = privileged.wait();
}
