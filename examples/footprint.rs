//! `cargo build --release --target x86_64-unknown-linux-musl && cargo run --release --example
//! footprint -- target/x86_64-unknown-linux-musl/release/rig-agent [QUERIES]`
//!
//! What one agent costs a rig, and where it goes: the binary's size, and the real process's
//! RSS after login and after QUERIES `get_system_baseinfo` queries (default 2 000, one at a
//! time over loopback wss), then that RSS split by what holds it: the binary's own pages,
//! the heap, each thread's stack (found by the stack pointer of the thread's current system
//! call in `/proc/PID/task/TID/syscall`), and other anonymous maps. The agent binary is the
//! first argument, else `BENCH_AGENT`, else the release build beside this example. Medians
//! of BENCH_RUNS runs (default 3), each with a fresh agent; the split is the last run's.
//! Figures, not pass/fail: the targets live in BENCHMARKS.md.

#[path = "../tests/common/agent_config.rs"]
mod agent_config;
#[path = "../tests/common/gateway.rs"]
mod gateway;
#[path = "support/measure.rs"]
mod measure;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_config::AgentConfig;
use gateway::{Event, Gateway, Pki, Script};
use measure::{agent_binary, median, start_agent_at, status_kib};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

/// One mapping of `/proc/PID/smaps`: its range, its name, and its resident KiB.
struct Mapping {
    start: u64,
    end: u64,
    perms: String,
    name: String,
    rss_kib: u64,
}

fn mappings(pid: u32) -> Vec<Mapping> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut out: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
        {
            let perms = words.next().unwrap_or("").to_string();
            let name = words.skip(3).collect::<Vec<_>>().join(" ");
            out.push(Mapping { start, end, perms, name, rss_kib: 0 });
        } else if first == "Rss:"
            && let Some(m) = out.last_mut()
        {
            m.rss_kib = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    out
}

/// Each thread's name and stack pointer (None while it runs rather than waits in a call).
fn threads(pid: u32) -> Vec<(String, Option<u64>)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut out = Vec::new();
    for task in dir.flatten() {
        let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_string();
        // "nr arg1 .. arg6 sp pc" while blocked in a system call.
        let syscall = fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
        let words: Vec<&str> = syscall.split_whitespace().collect();
        let sp = (words.len() == 9).then(|| u64::from_str_radix(words[7].trim_start_matches("0x"), 16).ok()).flatten();
        out.push((comm, sp));
    }
    out.sort();
    out
}

/// The RSS split of the process, printed.
fn split(pid: u32, binary: &Path) {
    let maps = mappings(pid);
    let threads = threads(pid);
    let binary = fs::canonicalize(binary).unwrap_or_else(|_| binary.to_path_buf());
    let mut stacks = vec![false; maps.len()];
    println!("  threads: {}", threads.len());
    for (name, sp) in &threads {
        match sp.and_then(|sp| maps.iter().position(|m| m.start <= sp && sp < m.end)) {
            Some(i) => {
                stacks[i] = true;
                let m = &maps[i];
                println!(
                    "    {name:<16} stack {:>5} KiB resident of {:>5} KiB mapped",
                    m.rss_kib,
                    (m.end - m.start) / 1024
                );
            }
            None => println!("    {name:<16} (running, stack not found)"),
        }
    }
    let (mut file, mut heap, mut stack, mut anon, mut other) = (0, 0, 0, 0, 0);
    let mut libs: Vec<(String, u64)> = Vec::new();
    let mut segments: Vec<String> = Vec::new();
    for (i, m) in maps.iter().enumerate() {
        if stacks[i] || m.name == "[stack]" {
            stack += m.rss_kib;
        } else if m.name == "[heap]" {
            heap += m.rss_kib;
        } else if m.name.starts_with('/') {
            file += m.rss_kib;
            if Path::new(&m.name) != binary {
                libs.push((m.name.clone(), m.rss_kib));
            } else {
                // Code (r-xp), read-only data and unwind tables (r--p), relocated data (rw-p):
                // what is resident of each shows what the binary's size costs in memory.
                segments.push(format!("{} {} of {} KiB", m.perms, m.rss_kib, (m.end - m.start) / 1024));
            }
        } else if m.name.is_empty() {
            anon += m.rss_kib;
        } else {
            other += m.rss_kib;
        }
    }
    println!("  file-backed (the binary, and any shared libraries): {file} KiB");
    println!("    the binary's mappings, resident: {}", segments.join(", "));
    for (name, kib) in libs.iter().filter(|(_, k)| *k > 0) {
        println!("    of which {name}: {kib} KiB");
    }
    println!("  heap ([heap], brk): {heap} KiB");
    println!("  thread stacks (main's included): {stack} KiB");
    println!("  other anonymous maps (large allocations, allocator arenas): {anon} KiB");
    println!("  vdso, vvar and the like: {other} KiB");
}

struct Run {
    rss_login: u64,
    rss_after: u64,
    hwm: u64,
}

fn run_once(bin: &Path, queries: usize, show_split: bool) -> Run {
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let dir = tempfile::tempdir().unwrap();
    let mut agent_config = AgentConfig::new(gw.url(), &pki.ca_file);
    (agent_config.heartbeat_interval, agent_config.heartbeat_timeout) = ("1s", "5s");
    let config = agent_config.write(dir.path());
    let mut child = start_agent_at(bin, &config);
    let pid = child.id();
    let (conn, _) = gw.wait_login(WAIT);
    gw.wait_act(WAIT, "heartbeat");
    let rss_login = status_kib(pid, "VmRSS:");
    for i in 0..queries {
        let code = format!("q{i}");
        gw.send_json(
            conn,
            json!({"from":"html","act":"get_system_baseinfo","reqtype":"post","act_code":code,"client_id":"b"}),
        );
        loop {
            match gw.next_event(WAIT).expect("answer") {
                Event::Received { msg, .. } if msg["act_code"] == code.as_str() => {
                    assert_eq!(msg["code"], 0, "{msg}");
                    break;
                }
                _ => {}
            }
        }
        gw.seen.clear();
    }
    // Steady state: the answers are out, the workers back to waiting.
    gw.soak(Duration::from_millis(1500));
    let rss_after = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");
    if show_split {
        println!("where the RSS is after {queries} queries (KiB, /proc/{pid}/smaps):");
        split(pid, bin);
    }
    let _ = child.kill();
    let _ = child.wait();
    Run { rss_login, rss_after, hwm }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args.next().map(PathBuf::from).unwrap_or_else(agent_binary);
    let queries: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    let all: Vec<Run> = (0..runs).map(|r| run_once(&bin, queries, r + 1 == runs)).collect();
    let mib = |f: fn(&Run) -> u64| median(all.iter().map(|r| f(r) as f64).collect()) / 1024.0;
    let size = fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    println!("{}: medians of {runs} runs", bin.display());
    println!("  binary                                 {size} bytes ({:.2} MB)", size as f64 / 1e6);
    println!("  RSS after login                        {:.2} MiB", mib(|r| r.rss_login));
    println!("  RSS after {queries} get_system_baseinfo    {:.2} MiB", mib(|r| r.rss_after));
    println!("  peak RSS (VmHWM)                       {:.2} MiB", mib(|r| r.hwm));
}
