//! The privileged half on a copy of the fixture rig, with a fake smartctl: the setup of every
//! test that talks to its socket, and the one request any local process could send it.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::{AgentConfig, Pki, Reaped, SEC, ms, rig_copy, rig_paths, script, spawn_privileged, wait_until};

/// What the fake smartctl answers for a healthy disk.
pub const HEALTHY: &str = r#"{"smart_status":{"passed":true},"temperature":{"current":33}}"#;

/// A fake smartctl in `dir` that appends its device argument to `calls`, answers `sda` for
/// /dev/sda (with exit status `sda_exit`) and [`HEALTHY`] for any other disk:
/// (smartctl, calls).
pub fn fake_smartctl(dir: &Path, sda: &str, sda_exit: i32) -> (PathBuf, PathBuf) {
    let calls = dir.join("calls");
    let smartctl = script(
        dir,
        "smartctl",
        &format!(
            "echo \"$4\" >> {}\ncase \"$4\" in\n  /dev/sda) echo '{sda}'; exit {sda_exit} ;;\n  *) echo '{HEALTHY}' ;;\nesac",
            calls.display()
        ),
    );
    (smartctl, calls)
}

/// A config for both halves on `rig`, SMART through `smartctl` (every second), the
/// privileged half on `socket` ("" for none: the agent runs smartctl itself).
pub fn config(url: String, pki: &Pki, rig: &Path, smartctl: &Path, socket: &str) -> AgentConfig {
    let mut c = AgentConfig::new(url, &pki.ca_file);
    c.disks = format!(
        "smartctl = {:?}\nscan_interval = \"100ms\"\nsmart_interval = \"1s\"\nsmart_timeout = \"5s\"\n",
        smartctl.display().to_string()
    );
    c.paths_extra = format!("{}privileged_socket = {socket:?}\n", rig_paths(rig));
    c
}

/// The config of a privileged half alone in `dir` on a copy of the fixture rig, with a
/// healthy fake smartctl and its kernel log `kmsg` (a recorded file, empty at first, or the
/// real `/dev/kmsg`): the config file and the socket's path.
pub fn config_alone(dir: &Path, kmsg: Option<&str>) -> (PathBuf, PathBuf) {
    let rig = rig_copy(dir);
    let (smartctl, _) = fake_smartctl(dir, HEALTHY, 0);
    let socket = dir.join("priv.sock");
    let pki = Pki::new(&["localhost"]);
    let mut c = config("wss://localhost:1/".into(), &pki, &rig, &smartctl, socket.to_str().unwrap());
    fs::write(dir.join("kmsg.log"), "").unwrap();
    let kmsg = kmsg.map_or_else(|| dir.join("kmsg.log").display().to_string(), str::to_string);
    c.paths_extra += &format!("kmsg = {kmsg:?}\n");
    (c.write(dir), socket)
}

/// The privileged half alone (see [`config_alone`]), its socket bound: the test dir, the
/// half, its socket.
pub fn alone(kmsg: Option<&str>) -> (tempfile::TempDir, Reaped, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, socket) = config_alone(dir.path(), kmsg);
    let privileged = spawn_privileged(&cfg);
    wait_until(10 * SEC, "the socket", || socket.exists());
    (dir, privileged, socket)
}

/// One request, raw, as any local process could send it; the answer's header line ("" when
/// the connection was closed unanswered), or why it could not connect.
pub fn try_ask(socket: &Path, request: &[u8]) -> std::io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(5 * SEC)).unwrap();
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    Ok(String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_string())
}

/// As [`try_ask`], on a socket that must be there.
pub fn ask(socket: &Path, request: &[u8]) -> String {
    try_ask(socket, request).expect("connect to the privileged half")
}

/// Whether the half answers a SMART request on `socket` within `limit`.
pub fn serves_within(socket: &Path, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if try_ask(socket, b"smart sda\n").is_ok_and(|a| a.starts_with("output 0 ")) {
            return true;
        }
        thread::sleep(ms(50));
    }
    false
}
