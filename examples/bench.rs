//! `cargo build --release && cargo run --release --example bench [QUERIES]`
//!
//! Measures the release binary as it runs on a rig: the real `rig-agent` process against
//! the in-process test gateway over loopback wss. Prints binary size, RSS after login and
//! after QUERIES and 2×QUERIES queries (default 10 000), each act's round trip (median,
//! p99), whether heartbeats stayed on time, idle CPU, RSS over 1 000 reconnects, the time
//! from gateway back to logged in, and a sustained flood of 10 000 messages a second for
//! 5 s. `get_gpu_info` runs a stand-in nvidia-smi (a shell script printing a recorded answer)
//! on every query, its cache set to 1 ms, next to that script's own run time. Every figure is the median of BENCH_RUNS runs (default 3), each with a fresh agent.
//! BENCH_AGENT=PATH measures another build (the static musl one, say); BENCH_SMAPS=1 prints
//! where the RSS is. BENCH_MALLOC_ARENA_MAX=1 runs the agent with one glibc malloc arena
//! (about 0.1 MB less RSS). Figures, not pass/fail: the targets live in BENCHMARKS.md.

#[path = "../tests/common/agent_config.rs"]
mod agent_config;
#[path = "../tests/common/gateway.rs"]
mod gateway;
#[path = "support/measure.rs"]
mod measure;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_config::AgentConfig;
use gateway::{Event, Gateway, Pki, Script};
use measure::{agent_binary, cpu_ns, median, percentile, status_kib};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // utime and stime are fields 14 and 15; after the comm field they are at 11 and 12,
    // minus the one non-numeric state field.
    f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)
}

/// How a figure is printed.
#[derive(Clone, Copy)]
enum Unit {
    /// KiB, printed as MB.
    Mb,
    /// Seconds, printed as ms.
    Ms,
    Secs,
    PerSec,
    Count,
}

/// One run's figures, in print order.
#[derive(Default)]
struct Figures(Vec<(String, f64, Unit)>);

impl Figures {
    fn add(&mut self, label: impl Into<String>, value: f64, unit: Unit) {
        self.0.push((label.into(), value, unit));
    }
}

fn show(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Mb => format!("{:.2} MB", value / 1024.0),
        Unit::Ms => format!("{:.3} ms", value * 1e3),
        Unit::Secs => format!("{value:.3} s"),
        Unit::PerSec => format!("{value:.0} /s"),
        Unit::Count => format!("{value:.0}"),
    }
}

/// A stand-in nvidia-smi (sh + cat of a recorded answer of six GPUs) in `dir`.
fn fake_nvidia_smi(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let answer = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nvidia-smi/rtx30_535.54.03.txt");
    let path = dir.join("nvidia-smi");
    fs::write(&path, format!("#!/bin/sh\ncat {:?}\n", answer.display().to_string())).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Median wall time of running `bin` to its end, as the agent would, outside the agent.
fn child_own_time(bin: &std::path::Path) -> Duration {
    let mut t: Vec<Duration> = (0..200)
        .map(|_| {
            let start = Instant::now();
            let out = Command::new(bin).stdout(Stdio::piped()).output().expect("run the stand-in nvidia-smi");
            assert!(out.status.success());
            start.elapsed()
        })
        .collect();
    t.sort();
    percentile(&t, 0.5)
}

fn main() {
    let queries: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    let bin = agent_binary();
    let all: Vec<Figures> = (0..runs)
        .map(|r| {
            eprintln!("run {} of {runs}", r + 1);
            run_once(&bin, queries)
        })
        .collect();
    let size = fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    println!("rig-agent benchmark: {} queries over loopback wss per run; medians of {runs} runs", 2 * queries);
    println!("{:<52} {:>16}", "binary size (release, this target)", format!("{:.2} MB", size as f64 / 1e6));
    for (i, (label, _, unit)) in all[0].0.iter().enumerate() {
        let m = median(all.iter().map(|f| f.0[i].1).collect());
        println!("{label:<52} {:>16}", show(m, *unit));
    }
}

fn run_once(bin: &std::path::Path, queries: usize) -> Figures {
    let mut fig = Figures::default();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let dir = tempfile::tempdir().unwrap();
    let mut agent_config = AgentConfig::new(gw.url(), &pki.ca_file);
    agent_config.hardware_id = "bench-rig".into();
    (agent_config.heartbeat_interval, agent_config.heartbeat_timeout) = ("1s", "5s");
    // Fast reconnects, so that 1 000 of them take seconds, not minutes.
    (agent_config.reconnect_initial, agent_config.reconnect_max) = ("1ms", "2ms");
    // get_gpu_info with a child process on every query: a stand-in nvidia-smi printing a
    // recorded answer, never cached, so its p50 compares with the child's own time below.
    let nvidia_smi = fake_nvidia_smi(dir.path());
    agent_config.paths_extra =
        format!("\n[probes]\nnvidia_smi = {:?}\nnvidia_smi_interval = \"1ms\"", nvidia_smi.display().to_string());
    let child_own = child_own_time(&nvidia_smi);
    let config = agent_config.write(dir.path());
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .envs(std::env::var("BENCH_MALLOC_ARENA_MAX").ok().map(|v| ("MALLOC_ARENA_MAX", v)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rig-agent");
    let pid = child.id();
    if let Ok(path) = std::env::var("BENCH_STRACE") {
        let _ = Command::new("strace").args(["-f", "-tt", "-T", "-o", &path, "-p", &pid.to_string()]).spawn();
        std::thread::sleep(Duration::from_millis(500));
    }
    let (conn, _) = gw.wait_login(WAIT);
    gw.wait_act(WAIT, "heartbeat");
    let rss_start = status_kib(pid, "VmRSS:");
    if std::env::var_os("BENCH_SMAPS").is_some() {
        let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        eprintln!(
            "{}",
            rollup
                .lines()
                .filter(|l| l.starts_with("Rss")
                    || l.starts_with("Anonymous")
                    || l.starts_with("Shared")
                    || l.starts_with("Private"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let maps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        let mut name = String::new();
        for l in maps.lines() {
            if l.contains('-') && l.split_whitespace().count() >= 5 && !l.starts_with("Rss") {
                name = l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
            } else if let Some(v) = l.strip_prefix("Rss:") {
                let kb: u64 = v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
                if kb >= 64 {
                    eprintln!("{kb:>6} kB {name}");
                }
            }
        }
    }
    let cpu_start = cpu_ticks(pid);

    const ACTS: [&str; 9] = [
        "get_system_baseinfo",
        "get_system_status",
        "get_disk_info",
        "get_network_info",
        "get_temperature",
        "get_agent_info",
        "get_fans",
        "get_board_health",
        "get_gpu_info",
    ];
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); ACTS.len()];
    let mut heartbeats = Vec::new();
    let mut rss_mid = 0;
    let t0 = Instant::now();
    for i in 0..2 * queries {
        if i == queries {
            rss_mid = status_kib(pid, "VmRSS:");
        }
        let k = i % ACTS.len();
        let code = format!("q{i}");
        let sent = Instant::now();
        gw.send_json(conn, json!({"from":"html","act":ACTS[k],"reqtype":"post","act_code":code,"client_id":"b"}));
        loop {
            match gw.next_event(WAIT).expect("answer") {
                Event::Received { msg, at, .. } if msg["act_code"] == code.as_str() => {
                    assert_eq!(msg["code"], 0, "{msg}");
                    lat[k].push(at - sent);
                    break;
                }
                Event::Received { msg, at, .. } if msg["act"] == "heartbeat" => heartbeats.push(at),
                _ => {}
            }
        }
        gw.seen.clear();
    }
    let flood = t0.elapsed();
    let cpu_used = cpu_ticks(pid) - cpu_start;
    let rss_end = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");

    // Idle: nothing but heartbeats (every 1 s here) for 10 s.
    let idle_cpu0 = cpu_ns(pid);
    let idle_until = Instant::now() + Duration::from_secs(10);
    let mut idle_heartbeats = 0;
    while let Some(left) = idle_until.checked_duration_since(Instant::now()) {
        if let Some(Event::Received { msg, .. }) = gw.next_event(left)
            && msg["act"] == "heartbeat"
        {
            idle_heartbeats += 1;
        }
        gw.seen.clear();
    }
    let idle_cpu = cpu_ns(pid) - idle_cpu0;

    // 1 000 reconnects: the gateway closes, the agent logs in again.
    let rss_before_reconnects = status_kib(pid, "VmRSS:");
    let t_reconnects = Instant::now();
    for _ in 0..1000 {
        gw.close_all();
        gw.wait_login(WAIT);
        gw.seen.clear();
    }
    let reconnects_took = t_reconnects.elapsed();
    let rss_after_reconnects = status_kib(pid, "VmRSS:");

    // The gateway is down for 2 s, then back: how long until the agent is logged in.
    gw.script().drop_on_accept = true;
    gw.close_all();
    std::thread::sleep(Duration::from_secs(2));
    gw.script().drop_on_accept = false;
    let t_up = Instant::now();
    let (conn, _) = gw.wait_login(WAIT);
    let back_in = t_up.elapsed();

    // 10 000 messages a second for 5 s: 9 queries and 1 junk frame every millisecond,
    // answered (ok or busy) as they come; heartbeats every second meanwhile.
    gw.seen.clear();
    let rss_before_flood = status_kib(pid, "VmRSS:");
    let (mut sent, mut answered, mut busy, mut peak) = (0usize, 0usize, 0usize, 0u64);
    let mut flood_heartbeats = Vec::new();
    let start = Instant::now();
    let tally = |e: Event, answered: &mut usize, busy: &mut usize, hbs: &mut Vec<Instant>| {
        if let Event::Received { msg, at, .. } = e {
            if msg["act"] == "get_agent_info" {
                *answered += 1;
                *busy += usize::from(msg["code"] == 3);
            } else if msg["act"] == "heartbeat" {
                hbs.push(at);
            }
        }
    };
    for tick in 0..5_000u32 {
        if let Some(wait) = (start + Duration::from_millis(1) * tick).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for _ in 0..9 {
            gw.send_json(
                conn,
                json!({"act":"get_agent_info","act_code":format!("f{sent}"),"client_id":"b","reqtype":"post"}),
            );
            sent += 1;
        }
        gw.send(conn, tungstenite::Message::text("junk {"));
        while let Some(e) = gw.next_event(Duration::ZERO) {
            tally(e, &mut answered, &mut busy, &mut flood_heartbeats);
        }
        gw.seen.clear();
        if tick % 100 == 99 {
            peak = peak.max(status_kib(pid, "VmRSS:"));
        }
    }
    let flood_sent_in = start.elapsed();
    while answered < sent {
        tally(gw.next_event(WAIT).expect("flood answers"), &mut answered, &mut busy, &mut flood_heartbeats);
    }
    gw.seen.clear();
    let flood_done_in = start.elapsed();
    let rss_after_flood = status_kib(pid, "VmRSS:");
    let _ = child.kill();
    let _ = child.wait();

    let worst_hb_gap = heartbeats.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let worst_flood_gap = flood_heartbeats.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let secs = |d: Duration| d.as_secs_f64();
    fig.add("RSS after login", rss_start as f64, Unit::Mb);
    fig.add(format!("RSS after {queries} queries"), rss_mid as f64, Unit::Mb);
    fig.add(format!("RSS after {} queries", 2 * queries), rss_end as f64, Unit::Mb);
    fig.add("peak RSS during the queries (VmHWM)", hwm as f64, Unit::Mb);
    for (k, act) in ACTS.iter().enumerate() {
        lat[k].sort();
        fig.add(format!("{act} p50"), secs(percentile(&lat[k], 0.5)), Unit::Ms);
        fig.add(format!("{act} p99"), secs(percentile(&lat[k], 0.99)), Unit::Ms);
    }
    fig.add("  the stand-in nvidia-smi's own run time (p50)", secs(child_own), Unit::Ms);
    fig.add("throughput, one query at a time", (2 * queries) as f64 / secs(flood), Unit::PerSec);
    fig.add("agent CPU for all queries", cpu_used as f64 / 100.0, Unit::Secs);
    fig.add("largest heartbeat gap meanwhile (interval 1 s)", secs(worst_hb_gap), Unit::Secs);
    let per_hb = idle_cpu as f64 / idle_heartbeats.max(1) as f64 / 1e9;
    fig.add("idle: CPU per heartbeat", per_hb, Unit::Ms);
    fig.add("  = CPU-s per hour at the default 30 s", per_hb * 120.0, Unit::Secs);
    fig.add("RSS before 1 000 reconnects", rss_before_reconnects as f64, Unit::Mb);
    fig.add("RSS after 1 000 reconnects", rss_after_reconnects as f64, Unit::Mb);
    fig.add("1 000 reconnects took", secs(reconnects_took), Unit::Secs);
    fig.add("gateway back -> logged in (backoff 1-2 ms)", secs(back_in), Unit::Ms);
    fig.add("flood: messages sent (10 000/s)", (sent + sent / 9) as f64, Unit::Count);
    fig.add("flood: sending took", secs(flood_sent_in), Unit::Secs);
    fig.add("flood: last answer after", secs(flood_done_in), Unit::Secs);
    fig.add("flood: queries answered busy (code 3)", busy as f64, Unit::Count);
    fig.add("flood: largest heartbeat gap (interval 1 s)", secs(worst_flood_gap), Unit::Secs);
    fig.add("flood: RSS before", rss_before_flood as f64, Unit::Mb);
    fig.add("flood: peak RSS during", peak as f64, Unit::Mb);
    fig.add("flood: RSS after", rss_after_flood as f64, Unit::Mb);
    fig
}
