//! Attack review 2: text from outside the agent reaching its log lines. A mount point is
//! named by whoever mounts (an automounter names it after the filesystem's label, which
//! comes with the disk); mountinfo writes a newline in it as `\012`, the agent decodes that,
//! and a `readonly` warning's detail quoting the mount point is logged as it is.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_newline_in_a_mount_point_does_not_start_a_new_log_line() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rig");
    let rig = dir.path().join("rig");
    assert!(Command::new("cp").arg("-a").arg(&src).arg(&rig).status().unwrap().success());
    let mountinfo = rig.join("proc/self/mountinfo");
    let forged = "/srv\\0122026-01-01T00:00:00Z\\040INFO\\040\\040all\\040disks\\040healthy";
    let line = |ro: &str| {
        format!(
            "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
             27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n\
             32 27 259:1 / {forged} {ro},relatime - ext4 /dev/nvme0n1p1 {ro}\n"
        )
    };
    fs::write(&mountinfo, line("rw")).unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.disks = "smartctl = \"\"\nscan_interval = \"100ms\"\n".into();
    cfg.paths_extra = rig_paths(&rig);
    let config = cfg.write(dir.path());
    let mut child = spawn_agent(&config, &[]);
    gw.wait_login(10 * SEC);
    // `readonly` is a mount seen read-write before: remount only once a scan has saved it
    // so (a fixed 500 ms after the login was sometimes before the first scan).
    let inventory = dir.path().join("state/disks.json");
    let until = Instant::now() + 10 * SEC;
    let seen_rw = || {
        let saved = fs::read_to_string(&inventory).ok();
        let v: serde_json::Value = saved.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        v["disks"]["nvme0n1"]["rw_mounts"].as_array().is_some_and(|m| !m.is_empty())
    };
    while !seen_rw() {
        assert!(Instant::now() < until, "no scan saw nvme0n1's mount read-write");
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::write(&mountinfo, line("ro")).unwrap();
    let w = gw.wait_warning(10 * SEC, "/dev/nvme0n1", "readonly");
    let t = Instant::now();
    while t.elapsed() < ms(300) {
        gw.next_event(ms(50));
    }
    let (_, log) = stop_agent(&mut child);
    let forged_lines: Vec<&str> = log.lines().filter(|l| l.starts_with("2026-01-01T00:00:00Z")).collect();
    assert!(
        forged_lines.is_empty(),
        "a log line forged from outside: {forged_lines:?}\nwarning detail {}\n{log}",
        w["detail"]
    );
}
