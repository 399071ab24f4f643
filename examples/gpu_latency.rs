//! `cargo build --release && cargo run --release --example gpu_latency [TRIALS]`
//!
//! GPU failures at kernel speed, measured on the real binary with `scan_interval = "60s"`:
//! detection latency from an NVIDIA Xid record (48, a double-bit ECC error: `gpu_xid`)
//! written to the FIFO `paths.kmsg` names (held open, so the agent's reader sleeps in
//! poll(2) and wakes on the record, as on `/dev/kmsg`) to the `type` 3 warning received by
//! the test gateway over loopback wss, p50 and p99 over TRIALS (default 50) trials, each a
//! new episode (`io_error_quiet = "1s"`); the agent's CPU while the kernel log carries
//! 10 000 GPU records a second for 10 s (a crashing miner's Xid 13 storm on two GPUs);
//! and the recogniser alone, in this process, per record. Figures, not pass/fail.

#[path = "../tests/common/agent_config.rs"]
mod agent_config;
#[path = "../tests/common/gateway.rs"]
mod gateway;
#[path = "support/measure.rs"]
mod measure;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use agent_config::{AgentConfig, rig_copy, rig_paths};
use gateway::{Event, Gateway, Pki, Script};
use measure::{percentile, process_cpu_ns, start_agent, stop};
use rig_agent::kernel_log::{gpu_error, record};

const WAIT: Duration = Duration::from_secs(10);

fn xid(seq: u64, gpu: &str, code: u32) -> String {
    format!(
        "4,{seq},{seq},c;NVRM: Xid (PCI:0000:{gpu}:00): {code}, pid=2204, name=lolMiner, Graphics Exception: ESR 0x504648=0x80000000\n"
    )
}

fn main() {
    let trials: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    for bus in ["0000:01:00.0", "0000:02:00.0"] {
        let d = rig.join("sys/bus/pci/devices").join(bus);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("class"), "0x030000\n").unwrap();
        fs::write(d.join("vendor"), "0x10de\n").unwrap();
    }
    // A FIFO, not a regular file: the agent re-reads a regular file only every 100 ms once
    // at its end (poll(2) calls one always readable), which would be most of the figure.
    // Opened for reading and writing before the agent starts, so it never sees an end.
    let kmsg = dir.path().join("kmsg.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&kmsg).status().unwrap().success());
    let mut f = OpenOptions::new().read(true).write(true).open(&kmsg).unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut c = AgentConfig::new(gw.url(), &pki.ca_file);
    (c.heartbeat_interval, c.heartbeat_timeout) = ("30s", "90s");
    c.disks = "smartctl = \"\"\nscan_interval = \"60s\"\nio_error_quiet = \"1s\"\n".into();
    c.paths_extra = format!("{}kmsg = {:?}\n", rig_paths(&rig), kmsg.display().to_string());
    c.sections = "[probes]\nnvidia_smi = \"\"\n".into();
    let inventory = dir.path().join("state/gpus.json");
    let child = start_agent(&c.write(dir.path()));
    let pid = child.id();
    gw.wait_login(WAIT);
    let until = Instant::now() + WAIT;
    while !fs::read_to_string(&inventory).is_ok_and(|t| t.contains("0000:02:00.0")) {
        assert!(Instant::now() < until, "the first scan never saved the GPUs");
        thread::sleep(Duration::from_millis(20));
    }
    let mut seq = 10u64;

    // 1. Xid 48 -> gpu_xid received; the episode ends after 1 s of quiet.
    let mut latency = Vec::new();
    for _ in 0..trials {
        seq += 1;
        gw.seen.clear();
        let t0 = Instant::now();
        f.write_all(xid(seq, "01", 48).as_bytes()).unwrap();
        match gw.wait_for(
            WAIT,
            "gpu_xid",
            |e| matches!(e, Event::Received { msg, .. } if msg["act"] == "warning" && msg["reason"] == "gpu_xid"),
        ) {
            Event::Received { at, .. } => latency.push(at - t0),
            _ => unreachable!(),
        }
        thread::sleep(Duration::from_millis(1300));
    }

    // 2. 10 000 application Xid records a second for 10 s, alternating two GPUs.
    thread::sleep(Duration::from_millis(1300));
    gw.seen.clear();
    let cpu0 = process_cpu_ns(pid);
    let t0 = Instant::now();
    for tick in 0..1000u64 {
        let mut chunk = String::new();
        for i in 0..100u64 {
            seq += 1;
            chunk += &xid(seq, if i % 2 == 0 { "01" } else { "02" }, 13);
        }
        f.write_all(chunk.as_bytes()).unwrap();
        let next = t0 + Duration::from_millis(10 * (tick + 1));
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            gw.next_event(left);
        }
    }
    let storm = t0.elapsed();
    thread::sleep(Duration::from_secs(1));
    let storm_cpu = (process_cpu_ns(pid) - cpu0) as f64 / 1e9;
    let warned = gw.seen.iter().filter(|e| matches!(e, Event::Received { msg, .. } if msg["act"] == "warning")).count();
    stop(child);

    // 3. The recogniser alone.
    let records: Vec<record::Record> = (0..100_000u64)
        .map(|i| match i % 4 {
            0 => record::parse(&xid(i, "01", 13)).unwrap(),
            1 => record::parse(&format!("6,{i},{i},-;usb 1-1: new high-speed USB device number {i} using xhci_hcd\n"))
                .unwrap(),
            2 => record::parse(&format!("3,{i},{i},-;I/O error, dev sda, sector {i} op 0x0:(READ)\n")).unwrap(),
            _ => record::parse(&format!(
                "6,{i},{i},-;t-rex[{i}]: segfault at 0 ip 0000 sp 0000 error 6 in t-rex[1000+1000]\n"
            ))
            .unwrap(),
        })
        .collect();
    let t = Instant::now();
    let recognised = records.iter().filter(|r| gpu_error::recognise(r).is_some()).count();
    let per_record = t.elapsed() / records.len() as u32;

    let mut v = latency;
    v.sort();
    println!("rig-agent GPU failures: {trials} trials, scan_interval 60 s, release binary");
    println!(
        "{:<56} p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms",
        "Xid 48 record appended -> gpu_xid warning received",
        percentile(&v, 0.5).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3,
        v.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "{:<56} {:.3} CPU-s in {:.1} s = {:.1} % of one core, {warned} warning(s)",
        "100 000 Xid 13 records at 10 000/s (two GPUs)",
        storm_cpu,
        storm.as_secs_f64() + 1.0,
        storm_cpu / (storm.as_secs_f64() + 1.0) * 100.0
    );
    println!(
        "{:<56} {:.0} ns per record ({recognised} of {} recognised), {:.2} % of one core at 10 000/s",
        "gpu_error::recognise alone (mixed records)",
        per_record.as_nanos() as f64,
        records.len(),
        per_record.as_secs_f64() * 10_000.0 * 100.0
    );
}
