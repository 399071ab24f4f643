//! Attack review 2: a warning's life (detected → spooled → sent → acked → deleted) cut by
//! `kill -9`, with the state filesystem full at detection (a real tmpfs, filled).

mod common;

use std::fs;
use std::process::Command;
use std::thread;
use std::time::Instant;

use common::storage::LoopFs;
use common::*;
use serde_json::Value;

/// The state filesystem stalls (frozen, as a dying SD card) when sdb's failure is
/// detected: the scan waits its 5 s for the spool write, then saves the inventory with the
/// episode "not reported yet" (that save blocks until the thaw). After the thaw the warning
/// is written, sent and acknowledged, its spool file deleted, and the agent killed before
/// its next scan records the episode as reported. After the restart the acknowledged
/// warning must not be sent again; it is, with the log line "was neither spooled nor
/// acknowledged; raising it again".
#[test]
fn a_warning_acknowledged_after_a_stall_at_detection_is_not_sent_again_after_kill_9() {
    let _g = Guard::new(90 * SEC);
    if !Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n") {
        eprintln!("skipped: needs root for a loop filesystem and fsfreeze");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    fs::write(rig.join("sys/block/sdb/device/state"), "running\n").unwrap();
    let statefs = LoopFs::state(dir.path());
    let state = statefs.mnt.clone();

    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    // Scans 3 s apart: room to act between two of them.
    cfg.disks = "smartctl = \"\"\nscan_interval = \"3s\"\n".into();
    cfg.paths_extra = rig_paths(&rig);
    let config = cfg.write(dir.path());
    let mut child = spawn_agent(&config, &[]);
    gw.wait_login(10 * SEC);
    wait_until(10 * SEC, "the first inventory", || state.join("disks.json").exists());
    statefs.freeze();
    fs::write(rig.join("sys/block/sdb/device/state"), "offline\n").unwrap();
    // Past the scan's 5 s wait for the spool write.
    thread::sleep(8 * SEC);
    statefs.thaw();
    let w = gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    let act_id = w["act_id"].as_str().unwrap().to_string();
    wait_until(5 * SEC, "the inventory saved and the acknowledged warning deleted", || {
        fs::read_to_string(state.join("disks.json")).is_ok_and(|t| t.contains(&act_id))
            && spool_files(&state).is_empty()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let saved: Value = serde_json::from_str(&fs::read_to_string(state.join("disks.json")).unwrap()).unwrap();
    let (_, _, log1) = wait_exit(&mut child, SEC);
    eprintln!("inventory at the kill: {}", saved["episodes"]);

    gw.seen.clear();
    let mut child = spawn_agent(&config, &[]);
    gw.wait_login(10 * SEC);
    let end = Instant::now() + 2 * SEC;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        gw.next_event(left);
    }
    let (_, log2) = stop_agent(&mut child);
    let again = gw.warnings_seen("/dev/sdb");
    assert!(again.is_empty(), "sent again after its ack: {again:?}\nfirst run:\n{log1}\nafter the restart:\n{log2}");
}
