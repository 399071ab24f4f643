//! What the benchmark examples share: finding the agent binary, reading a process's RSS,
//! and the median of several runs.

#![allow(dead_code)]

use std::path::PathBuf;

/// The release binary beside the example (`cargo build --release`), or `BENCH_AGENT` when
/// set, to measure another build (the static musl one, say).
pub fn agent_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BENCH_AGENT") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.parent().and_then(|p| p.parent()).expect("target dir").join("rig-agent");
    assert!(bin.exists(), "{} not found: run `cargo build --release` first", bin.display());
    bin
}

/// A `/proc/PID/status` memory field (`VmRSS:`, `VmHWM:`) in KiB; 0 when unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

/// The median of several runs' figures (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// CPU time of a process in nanoseconds (first field of /proc/PID/schedstat).
pub fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time of a whole process, every thread's, in nanoseconds (the sum of
/// /proc/PID/task/*/schedstat; threads that already ended are not counted).
pub fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks.filter_map(|t| t.ok()?.file_name().to_str()?.parse::<u32>().ok()).map(|tid| cpu_ns_of(pid, tid)).sum()
}

fn cpu_ns_of(pid: u32, tid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The `p` quantile (0..=1) of sorted durations, nearest rank.
pub fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The agent binary with `config`, logging warnings and worse to this process's stderr.
pub fn start_agent(config: &std::path::Path) -> std::process::Child {
    start_agent_at(&agent_binary(), config)
}

/// `start_agent` with the binary at `bin`.
pub fn start_agent_at(bin: &std::path::Path, config: &std::path::Path) -> std::process::Child {
    std::process::Command::new(bin)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start rig-agent")
}

/// SIGTERM, as systemd stops a unit, and the exit reaped.
pub fn stop(mut child: std::process::Child) {
    let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}
