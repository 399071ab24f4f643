//! `cargo build --release && cargo run --release --example peers`
//!
//! rig-agent beside the agents farms use today, from Debian's packages
//! (`apt-get install prometheus-node-exporter zabbix-agent2`), on this machine:
//! binary size, RSS after start and after 1 000 requests, and request latency
//! (node_exporter's /metrics scrape; `zabbix_agent2 -t` for a CPU-load item, which starts
//! the agent for each item; rig-agent's get_system_status over loopback wss). Medians of
//! five runs, and the ratios peer / rig-agent.

#[path = "../tests/common/agent_config.rs"]
mod agent_config;
#[path = "../tests/common/gateway.rs"]
mod gateway;
#[path = "support/measure.rs"]
mod measure;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_config::AgentConfig;
use gateway::{Event, Gateway, Pki, Script};
use measure::{agent_binary, median, status_kib};
use serde_json::json;

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const ZABBIX_AGENT2: &str = "/usr/sbin/zabbix_agent2";

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

struct Figures {
    size: u64,
    rss_start_kib: u64,
    rss_after_kib: u64,
    p50_ms: f64,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn scrape(port: u16) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    assert!(body.starts_with(b"HTTP/1.0 200") || body.starts_with(b"HTTP/1.1 200"), "scrape failed");
    t.elapsed()
}

fn node_exporter(requests: usize) -> Figures {
    let port = free_port();
    let mut child: Child = Command::new(NODE_EXPORTER)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-node-exporter: apt-get install prometheus-node-exporter");
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "node_exporter did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_start_kib = status_kib(child.id(), "VmRSS:");
    let lat: Vec<f64> = (0..requests).map(|_| scrape(port).as_secs_f64() * 1e3).collect();
    let rss_after_kib = status_kib(child.id(), "VmRSS:");
    let _ = child.kill();
    let _ = child.wait();
    Figures { size: size(Path::new(NODE_EXPORTER)), rss_start_kib, rss_after_kib, p50_ms: median(lat) }
}

fn zabbix_agent2(requests: usize) -> Figures {
    // `-t` starts the agent, answers one item and exits: its RSS is the peak of one run.
    let mut rss = Vec::new();
    let lat: Vec<f64> = (0..requests)
        .map(|_| {
            let t = Instant::now();
            let mut child = Command::new(ZABBIX_AGENT2)
                .args(["-t", "system.cpu.load[all,avg1]"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("zabbix_agent2: apt-get install zabbix-agent2");
            let mut stdout = child.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                let mut out = String::new();
                stdout.read_to_string(&mut out).unwrap();
                out
            });
            // Its RSS while it runs, at the peak.
            let mut peak = 0;
            while child.try_wait().unwrap().is_none() {
                peak = peak.max(status_kib(child.id(), "VmRSS:"));
                std::thread::sleep(Duration::from_millis(10));
            }
            rss.push(peak);
            let out = reader.join().unwrap();
            assert!(out.contains("system.cpu.load"), "zabbix_agent2 -t failed: {out}");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let peak = rss.iter().copied().max().unwrap_or(0);
    Figures { size: size(Path::new(ZABBIX_AGENT2)), rss_start_kib: peak, rss_after_kib: peak, p50_ms: median(lat) }
}

fn rig_agent(requests: usize) -> Figures {
    let bin = agent_binary();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let dir = tempfile::tempdir().unwrap();
    let mut c = AgentConfig::new(gw.url(), &pki.ca_file);
    (c.heartbeat_interval, c.heartbeat_timeout) = ("30s", "90s");
    let path = c.write(dir.path());
    let mut child =
        Command::new(&bin).arg("--config").arg(path).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let (conn, _) = gw.wait_login(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let rss_start_kib = status_kib(child.id(), "VmRSS:");
    let mut lat = Vec::with_capacity(requests);
    for i in 0..requests {
        let code = format!("p{i}");
        let t = Instant::now();
        gw.send_json(conn, json!({"act":"get_system_status","act_code":code,"client_id":"c","reqtype":"post"}));
        loop {
            match gw.next_event(Duration::from_secs(10)).expect("answer") {
                Event::Received { msg, at, .. } if msg["act_code"] == code.as_str() => {
                    lat.push((at - t).as_secs_f64() * 1e3);
                    break;
                }
                _ => {}
            }
        }
        gw.seen.clear();
    }
    let rss_after_kib = status_kib(child.id(), "VmRSS:");
    let _ = child.kill();
    let _ = child.wait();
    Figures { size: size(&bin), rss_start_kib, rss_after_kib, p50_ms: median(lat) }
}

fn main() {
    let runs = 5;
    let med = |f: &dyn Fn() -> Figures| {
        let all: Vec<Figures> = (0..runs).map(|_| f()).collect();
        Figures {
            size: all[0].size,
            rss_start_kib: median(all.iter().map(|x| x.rss_start_kib as f64).collect()) as u64,
            rss_after_kib: median(all.iter().map(|x| x.rss_after_kib as f64).collect()) as u64,
            p50_ms: median(all.iter().map(|x| x.p50_ms).collect()),
        }
    };
    let rig = med(&|| rig_agent(1000));
    let node = med(&|| node_exporter(1000));
    let zbx = med(&|| zabbix_agent2(50));
    let mb = |b: u64| b as f64 / 1e6;
    let kmb = |k: u64| k as f64 / 1024.0;
    println!("medians of {runs} runs on this machine");
    println!(
        "{:<34} {:>10} {:>16} {:>18} {:>16}",
        "agent", "binary MB", "RSS at start MB", "RSS after req. MB", "request p50 ms"
    );
    for (name, f) in [
        ("rig-agent (get_system_status, wss)", &rig),
        ("node_exporter 1.5 (/metrics)", &node),
        ("zabbix_agent2 6.0 (-t, per item)", &zbx),
    ] {
        println!(
            "{:<34} {:>10.2} {:>16.2} {:>18.2} {:>16.3}",
            name,
            mb(f.size),
            kmb(f.rss_start_kib),
            kmb(f.rss_after_kib),
            f.p50_ms
        );
    }
    for (name, f) in [("node_exporter", &node), ("zabbix_agent2", &zbx)] {
        println!(
            "ratio {name} / rig-agent: binary {:.1}x, RSS after requests {:.1}x, latency {:.1}x",
            f.size as f64 / rig.size as f64,
            f.rss_after_kib as f64 / rig.rss_after_kib as f64,
            f.p50_ms / rig.p50_ms
        );
    }
}
