//! `cargo build --release && cargo run --release --example event_latency [TRIALS]` (as root)
//!
//! Disk failures at kernel speed, measured on the real binary with
//! `scan_interval = "60s"`: detection latency from the kernel event to the warning received
//! by the test gateway over loopback wss, p50 and p99 over TRIALS (default 50) trials each
//! for a loop device detach (`losetup -d`: a `change` uevent, size 0, `missing`) and a
//! kernel I/O error (a read of a FUSE file's EIO range under a loop device, `io_errors`);
//! idle CPU with the event sources on (heartbeats at the default 30 s); and a storm of
//! 10 000 kernel error lines in 10 s fed through `paths.kmsg` (warnings raised, heartbeat
//! gaps, CPU). Figures, not pass/fail.

#[path = "../tests/common/agent_config.rs"]
mod agent_config;
#[path = "../tests/common/faulty_disk.rs"]
mod faulty_disk;
#[path = "../tests/common/gateway.rs"]
mod gateway;
#[path = "support/measure.rs"]
mod measure;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use agent_config::{AgentConfig, rig_copy, rig_paths};
use faulty_disk::{FaultyDisk, run};
use gateway::{Event, Gateway, Pki, Script};
use measure::{cpu_ns, percentile, start_agent, status_kib, stop};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// When the gateway received a warning with this reason for `device`.
fn warned_at(gw: &mut Gateway, device: &str, reason: &str) -> Instant {
    match gw.wait_for(WAIT, reason, |e| {
        matches!(e, Event::Received { msg, .. } if msg["act"] == "warning" && msg["disk"] == device && msg["reason"] == reason)
    }) {
        Event::Received { at, .. } => at,
        _ => unreachable!(),
    }
}

/// Asks get_disk_info until `name` is listed and not in a `reason` episode: the agent has
/// scanned the device since it came back.
fn wait_healthy(gw: &mut Gateway, conn: usize, name: &str, reason: &str) {
    let until = Instant::now() + WAIT;
    for i in 0.. {
        assert!(Instant::now() < until, "{name} still {reason}");
        let code = format!("h{i}");
        gw.send_json(conn, json!({"act":"get_disk_info","act_code":code,"client_id":"b","reqtype":"post"}));
        let answer = match gw.wait_for(
            WAIT,
            "disk info",
            |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == code.as_str()),
        ) {
            Event::Received { msg, .. } => msg,
            _ => unreachable!(),
        };
        let disks = answer["data"]["disks"].as_array().cloned().unwrap_or_default();
        if disks.iter().any(|d: &Value| d["name"] == name && d["reason"] != reason && d["health"] != "missing") {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn show(label: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{label:<52} p50 {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms   (n = {})",
        percentile(&v, 0.5).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3,
        v.last().unwrap().as_secs_f64() * 1e3,
        v.len()
    );
}

fn main() {
    let trials: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    if !rustix::process::geteuid().is_root() {
        eprintln!("event_latency needs root (losetup, FUSE, /dev/kmsg)");
        std::process::exit(1);
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());

    // The failing disk first, so its loop device is known before the agent starts.
    let bad_at: u64 = 32 << 20;
    let mut faulty = FaultyDisk::new(dir.path(), 64 << 20, bad_at..bad_at + (64 << 10)).expect("FUSE and loop devices");
    let image = dir.path().join("plain.img");
    fs::write(&image, vec![0u8; 1 << 20]).unwrap();

    let mut c = AgentConfig::new(gw.url(), &pki.ca_file);
    (c.heartbeat_interval, c.heartbeat_timeout) = ("30s", "90s");
    c.disks = "smartctl = \"\"\nscan_interval = \"60s\"\ninclude = [\"loop*\"]\nio_error_quiet = \"1s\"\n".into();
    c.paths_extra = "kmsg = \"/dev/kmsg\"\n".into();
    let child = start_agent(&c.write(dir.path()));
    let pid = child.id();
    let (conn, _) = gw.wait_login(WAIT);

    // 1. Detach: losetup -d -> change uevent -> scan -> missing.
    let mut detach = Vec::new();
    for _ in 0..trials {
        let dev = run("losetup", &["--find", "--show", image.to_str().unwrap()]).unwrap();
        let name = dev.trim_start_matches("/dev/").to_string();
        wait_healthy(&mut gw, conn, &name, "missing");
        let t0 = Instant::now();
        run("losetup", &["-d", &dev]).unwrap();
        detach.push(warned_at(&mut gw, &dev, "missing") - t0);
        gw.seen.clear();
    }

    // 2. Kernel I/O error: dd of the EIO range -> "I/O error, dev loopN" -> io_errors.
    wait_healthy(&mut gw, conn, &faulty.name, "io_errors");
    let mut io = Vec::new();
    for _ in 0..trials {
        let t0 = Instant::now();
        assert!(!faulty.read(bad_at / 4096, 1));
        io.push(warned_at(&mut gw, &faulty.device(), "io_errors") - t0);
        gw.seen.clear();
        // The episode ends after 1 s without an error; the next trial is a new one.
        wait_healthy(&mut gw, conn, &faulty.name, "io_errors");
    }
    faulty.detach();

    // 3. Idle with the event sources on: nothing happens for 60 s.
    let rss = status_kib(pid, "VmRSS:");
    let cpu0 = cpu_ns(pid);
    thread::sleep(Duration::from_secs(60));
    let idle = (cpu_ns(pid) - cpu0) as f64 / 1e9;
    stop(child);

    // 4. Storm: 10 000 kernel error lines for one disk in 10 s, through a kmsg file.
    let storm_dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(storm_dir.path());
    let kmsg = storm_dir.path().join("kmsg.log");
    fs::write(&kmsg, "").unwrap();
    let mut c = AgentConfig::new(gw.url(), &pki.ca_file);
    (c.heartbeat_interval, c.heartbeat_timeout) = ("1s", "5s");
    c.disks = "smartctl = \"\"\nscan_interval = \"60s\"\n".into();
    c.paths_extra = format!("{}kmsg = {:?}\n", rig_paths(&rig), kmsg.display().to_string());
    gw.seen.clear();
    let child = start_agent(&c.write(storm_dir.path()));
    let pid = child.id();
    gw.wait_login(WAIT);
    thread::sleep(Duration::from_secs(2));
    gw.seen.clear();
    let cpu0 = cpu_ns(pid);
    let t0 = Instant::now();
    let mut f = OpenOptions::new().append(true).open(&kmsg).unwrap();
    for tick in 0..100u64 {
        let mut chunk = String::new();
        for i in 0..100u64 {
            let seq = 10 + tick * 100 + i;
            chunk += &format!(
                "3,{seq},{seq},-;I/O error, dev sda, sector {} op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0\n",
                seq * 8
            );
        }
        f.write_all(chunk.as_bytes()).unwrap();
        let next = t0 + Duration::from_millis(100 * (tick + 1));
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            gw.next_event(left);
        }
    }
    let until = Instant::now() + Duration::from_secs(2);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        gw.next_event(left);
    }
    let storm_cpu = (cpu_ns(pid) - cpu0) as f64 / 1e9;
    let warnings = gw
        .seen
        .iter()
        .filter(|e| matches!(e, Event::Received { msg, .. } if msg["act"] == "warning" && msg["disk"] == "/dev/sda"))
        .count();
    let beats: Vec<Instant> = gw
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::Received { msg, at, .. } if msg["act"] == "heartbeat" => Some(*at),
            _ => None,
        })
        .collect();
    let worst_gap = beats.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    stop(child);

    println!("rig-agent kernel events: {trials} trials each, scan_interval 60 s, release binary");
    show("loop detach (losetup -d) -> missing received", detach);
    show("kernel I/O error (dd of an EIO range) -> io_errors received", io);
    println!(
        "{:<52} {:.4} CPU-s over 60 s = {:.3} CPU-s/h (RSS {} KiB)",
        "idle, event sources on, heartbeats every 30 s",
        idle,
        idle * 60.0,
        rss
    );
    println!(
        "{:<52} {warnings} warning(s) for sda, {:.3} CPU-s, {} heartbeats (1 s), worst gap {:.2} s",
        "storm: 10 000 kernel lines in 10 s",
        storm_cpu,
        beats.len(),
        worst_gap.as_secs_f64()
    );
}
