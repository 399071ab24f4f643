//! `cargo run --release --example scan_bench`
//!
//! The disk monitor's cost: one scan (sysfs, mountinfo, rules, inventory) over a generated
//! tree of 64 and of 24 SATA disks with two partitions each, every one mounted. Prints the
//! median and p99 wall time per scan and the CPU time per scan, extrapolated to CPU-seconds
//! per hour at the default 60 s scan interval. Each figure is the median of 5 runs.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/measure.rs"]
mod measure;

use measure::median;
use rig_agent::config::Config;
use rig_agent::disks::health::DiskHealth;
use rig_agent::monitor::{Monitor, Shared};
use rig_agent::outbox::spool::Spool;
use rig_agent::probes::gpu::{NvidiaReader, NvidiaSettings};
use rig_agent::probes::smart::SmartReader;
use rig_agent::protocol::ActIds;
use rig_agent::status::AgentStatus;

fn disk_name(i: usize) -> String {
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    if i < 26 {
        format!("sd{}", letters[i] as char)
    } else {
        format!("sd{}{}", letters[i / 26 - 1] as char, letters[i % 26] as char)
    }
}

fn build_tree(root: &Path, disks: usize) {
    let w = |p: &Path, v: &str| {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, format!("{v}\n")).unwrap();
    };
    let mut mountinfo = String::from("22 27 0:21 / /proc rw,relatime - proc proc rw\n");
    for i in 0..disks {
        let n = disk_name(i);
        let d = root.join("sys/block").join(&n);
        w(&d.join("size"), "7814037168");
        w(&d.join("queue/rotational"), "1");
        w(&d.join("dev"), &format!("8:{}", i * 16));
        w(&d.join("device/vendor"), "ATA");
        w(&d.join("device/model"), "WDC WD40EFRX-68N32N0");
        w(&d.join("device/serial"), &format!("WD-{i:08}"));
        w(&d.join("device/state"), "running");
        w(&d.join("device/ioerr_cnt"), "0x0");
        for p in 1..=2 {
            w(&d.join(format!("{n}{p}/partition")), &p.to_string());
            w(&d.join(format!("{n}{p}/dev")), &format!("8:{}", i * 16 + p));
            let mp = root.join(format!("mnt/{n}{p}"));
            fs::create_dir_all(&mp).unwrap();
            writeln!(
                mountinfo,
                "{} 27 8:{} / {} rw,relatime - ext4 /dev/{n}{p} rw",
                100 + i * 2 + p,
                i * 16 + p,
                format_args!("/mnt/{n}{p}")
            )
            .unwrap();
        }
    }
    w(&root.join("proc/self/mountinfo"), mountinfo.trim_end());
}

fn cpu_secs() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<u64> = stat.rsplit_once(')').unwrap().1.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    (f[10] + f[11]) as f64 / 100.0
}

fn measure(disks: usize, scans: usize) -> (Duration, Duration, f64) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rig");
    build_tree(&root, disks);
    let token = dir.path().join("token");
    fs::write(&token, "t\n").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "[device]\nhardware_id = \"bench\"\ntoken_file = \"token\"\n[gateway]\nurls = [\"wss://gw.invalid/ws\"]\n\
         [disks]\nsmartctl = \"\"\n[paths]\nstate_dir = {:?}\nsysfs = {:?}\nprocfs = {:?}\nrootfs = {:?}\n",
        dir.path().join("state").display().to_string(),
        root.join("sys").display().to_string(),
        root.join("proc").display().to_string(),
        root.display().to_string()
    );
    let cfg =
        Config::parse(&dir.path().join("rig-agent.toml"), &text).and_then(rig_agent::config::Parsed::resolve).unwrap();
    let (spool, _) = Spool::open(&cfg.paths.state_dir).unwrap();
    let shared = Shared {
        ids: Arc::new(ActIds::new()),
        spool: Arc::new(spool),
        smart: Arc::new(SmartReader::new("", Duration::from_secs(1), Duration::from_secs(1))),
        health: Arc::new(DiskHealth::default()),
        status: Arc::new(AgentStatus::new(cfg.file.clone())),
        gpu_health: Arc::default(),
        nvidia: Arc::new(NvidiaReader::new(NvidiaSettings {
            binary: String::new(),
            timeout: Duration::from_secs(1),
            max_age: Duration::from_secs(1),
        })),
        episodes: Arc::default(),
    };
    let mut m = Monitor::new(&cfg, shared);
    m.scan(); // first scan builds the inventory and saves it
    let mut times = Vec::with_capacity(scans);
    let cpu0 = cpu_secs();
    for _ in 0..scans {
        let t = Instant::now();
        assert_eq!(m.scan(), 0);
        times.push(t.elapsed());
    }
    let cpu_per_scan = (cpu_secs() - cpu0) / scans as f64;
    times.sort();
    (times[scans / 2], times[scans * 99 / 100], cpu_per_scan)
}

fn main() {
    const RUNS: usize = 5;
    println!("disk monitor scan cost (generated sysfs trees, SMART off, 1000 scans a run; medians of {RUNS} runs)");
    for disks in [64, 24] {
        let runs: Vec<(Duration, Duration, f64)> = (0..RUNS).map(|_| measure(disks, 1000)).collect();
        let p50 = median(runs.iter().map(|r| r.0.as_secs_f64()).collect());
        let p99 = median(runs.iter().map(|r| r.1.as_secs_f64()).collect());
        let cpu = median(runs.iter().map(|r| r.2).collect());
        println!(
            "{disks:>3} disks: scan p50 {:.3} ms, p99 {:.3} ms; CPU {:.3} ms/scan = {:.3} CPU-s/hour at a 60 s interval",
            p50 * 1e3,
            p99 * 1e3,
            cpu * 1e3,
            cpu * 60.0
        );
    }
}
