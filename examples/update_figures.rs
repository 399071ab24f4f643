//! Figures for agent updates (docs/updates.md): the time from the console's offer to the
//! new version's `installed`, and the bytes the rig downloads, for a build of the release
//! binary's size served over HTTPS on loopback. The binary is `RIG_AGENT_BIN`, else
//! `target/release/rig-agent` (build it first: `cargo build --release`), else the debug one.
//!
//!     cargo build --release && cargo run --example update_figures
//!
//! Needs Debian's `minisign` (the key is made per run, as the tests do).

#[path = "../tests/common/agent_config.rs"]
mod agent_config;
#[path = "../tests/common/file_server.rs"]
mod file_server;
#[path = "../tests/common/gateway.rs"]
mod gateway;
#[path = "../tests/common/release.rs"]
mod release;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use agent_config::AgentConfig;
use file_server::{FileServer, Serve};
use gateway::{Gateway, Pki, Script};
use serde_json::json;

fn binary() -> PathBuf {
    if let Ok(b) = std::env::var("RIG_AGENT_BIN") {
        return b.into();
    }
    ["target/release/rig-agent", "target/debug/rig-agent"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("build the agent first (cargo build --release)")
}

fn main() {
    let bin = binary();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let key = release::Key::new(dir.path(), "op");
    let update_dir = dir.path().join("update");
    std::fs::create_dir(&update_dir).unwrap();
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.paths_extra = format!("update_dir = {:?}\n", update_dir.display().to_string());
    cfg.sections = format!(
        "\n[update]\nenabled = true\nkeys = [{:?}]\nconfirm_after = \"1s\"\nconfirm_within = \"60s\"\n",
        key.public
    );
    let config = cfg.write(dir.path());
    let build = release::patched(&bin, &dir.path().join("rig-agent-0.2.0"), "0.2.0");
    let size = std::fs::metadata(&build).unwrap().len();
    let signature = key.sign(&build, &release::comment("0.2.0"));
    let server = FileServer::start(Some(pki.server_config()), std::fs::read(&build).unwrap(), Serve::Whole);
    let mut child =
        Command::new(&bin).arg("--config").arg(&config).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let (conn, _) = gw.wait_login(Duration::from_secs(10));
    let offered = Instant::now();
    gw.send_json(
        conn,
        json!({"from":"html","act":"update_agent","reqtype":"write","act_code":"f","client_id":"f",
            "version":"0.2.0","target":rig_agent::TARGET,"url":server.url,"size":size,
            "sha256":release::sha256_hex(&build),"signature":signature}),
    );
    let answered = gw.wait_act(Duration::from_secs(10), "update_agent").2;
    gw.wait_login(Duration::from_secs(60));
    let relogged = Instant::now();
    let (_, result, at) = gw.wait_act(Duration::from_secs(60), "update_result");
    assert_eq!(result["data"]["outcome"], "installed", "{result}");
    println!("build: {} ({size} bytes)", bin.display());
    println!("offer answered after     {:>8.1} ms", (answered - offered).as_secs_f64() * 1e3);
    println!("new version logged in    {:>8.1} ms after the offer", (relogged - offered).as_secs_f64() * 1e3);
    println!("installed reported after {:>8.1} ms (confirm_after = 1 s of it)", (at - offered).as_secs_f64() * 1e3);
    println!("bytes downloaded         {:>8}", server.sent.load(Ordering::SeqCst));
    // The watcher passes SIGTERM on to the new version.
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let _ = child.wait();
}
