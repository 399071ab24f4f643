//! Attack review 3: the spool's tombstones (`spool/a-<n>.json`, an acknowledged warning
//! whose episode the inventory may not record yet) against kill -9 at each step of a
//! warning's life, and against what a broken rig leaves in the spool directory.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Config with the monitor looking at `rig` every 100 ms.
fn config(gw: &Gateway, pki: &Pki, rig: &Path) -> AgentConfig {
    let mut c = AgentConfig::new(gw.url(), &pki.ca_file);
    c.disks = "smartctl = \"\"\nscan_interval = \"100ms\"\n".into();
    c.paths_extra = rig_paths(rig);
    c
}

/// Lets events arrive for `d`, recording them in `gw.seen`.
fn soak(gw: &mut Gateway, d: Duration) {
    let until = Instant::now() + d;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        gw.next_event(left);
    }
}

/// sdb's warning exactly as the agent spooled it (`encode_warning`), acknowledged: what the
/// ack's rename leaves as its tombstone.
fn sdb_offline_warning(act_id: &str) -> Value {
    json!({"from": "device", "act": "warning", "reqtype": "post", "act_id": act_id, "act_code": "",
           "client_id": "", "hardware_id": HARDWARE_ID, "name": HARDWARE_ID, "type": 2,
           "message": "Disk[/dev/sdb]硬盘损坏", "disk": "/dev/sdb", "serial": null,
           "reason": "offline", "detail": "device/state of sdb is \"offline\"", "time": 1_764_000_000u64})
}

/// A new failure's warning is written (the scan waits for that), sent and acknowledged
/// while the scan's inventory save is still under way: an fsync of disks.json takes
/// seconds on a worn SD card, the gateway's round trip milliseconds. The ack renames the
/// spool file to its tombstone; a kill -9 (or a power cut) before the save's rename leaves
/// that tombstone and a disks.json without the episode. The restart must know from the
/// tombstone that this failure was reported: it found no episode for the tombstone's
/// act_id, purged it, saw sdb offline as a new failure and warned again under a new act_id,
/// which the gateway cannot take for a duplicate (PROTOCOL.md §7: one warning per episode).
#[test]
fn a_warning_acknowledged_before_its_first_inventory_save_is_not_raised_again_under_a_new_act_id_after_kill_9() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let cfg = config(&gw, &pki, &rig).write(dir.path());
    let state = dir.path().join("state");

    // A first run with sdb healthy: disks.json is saved, with no episode.
    fs::write(rig.join("sys/block/sdb/device/state"), "running\n").unwrap();
    let agent = Agent::start(&cfg);
    gw.wait_login(10 * SEC);
    wait_until(10 * SEC, "the first inventory", || state.join("disks.json").exists());
    agent.stop();
    let inventory = fs::read_to_string(state.join("disks.json")).unwrap();
    assert!(inventory.contains("\"episodes\":[]"), "{inventory}");

    // What the kill -9 left: sdb failed, its warning was acknowledged (the tombstone), and
    // the save that would have recorded the episode never finished.
    fs::write(rig.join("sys/block/sdb/device/state"), "offline\n").unwrap();
    let act_id = "5eedf00d-3";
    fs::write(state.join("spool/a-000000000001.json"), sdb_offline_warning(act_id).to_string()).unwrap();

    gw.seen.clear();
    let agent = Agent::start(&cfg);
    gw.wait_login(10 * SEC);
    soak(&mut gw, 2 * SEC); // twenty scans
    wait_until(10 * SEC, "the inventory to record the episode", || {
        fs::read_to_string(state.join("disks.json")).is_ok_and(|t| t.contains("offline"))
    });
    agent.stop();
    let again = gw.warnings_seen("/dev/sdb");
    assert!(again.is_empty(), "sdb's failure was warned about again after its ack: {again:?}");
    let saved = fs::read_to_string(state.join("disks.json")).unwrap();
    assert!(saved.contains(act_id), "the episode keeps the acknowledged warning's act_id: {saved}");
    assert!(!state.join("spool/a-000000000001.json").exists(), "the tombstone goes once the episode is saved");
}

/// A spool file whose number is the largest u64 (a name the agent never writes: a damaged
/// directory entry, a file copied in by hand) made the next number overflow: a panic at
/// start in a debug build ("attempt to add with overflow" in Spool::open), and in a release
/// build a wrap to 0, the next warnings numbered before it (creation order lost). Such a
/// file is not the agent's and is left alone, as any other name it does not write.
#[test]
fn a_spool_file_numbered_at_the_top_of_u64_neither_stops_the_agent_nor_keeps_new_warnings_from_being_sent() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    fs::write(rig.join("sys/block/sdb/device/state"), "running\n").unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let cfg = config(&gw, &pki, &rig).write(dir.path());
    let state = dir.path().join("state");
    fs::create_dir_all(state.join("spool")).unwrap();
    let planted = sdb_offline_warning("5eedf00d-9").to_string();
    fs::write(state.join(format!("spool/w-{}.json", u64::MAX)), &planted).unwrap();
    fs::write(state.join(format!("spool/a-{}.json", u64::MAX - 1)), &planted).unwrap();

    let _agent = Agent::start(&cfg);
    gw.wait_login(10 * SEC);
    fs::remove_dir_all(rig.join("sys/block/sda")).unwrap();
    gw.wait_warning(10 * SEC, "/dev/sda", "missing");
}

/// The state filesystem read-only (remounted so by the kernel after an error) while a
/// tombstone waits to be purged: its episode is saved as reported, so every scan asks for
/// the purge again, and each failed removal was logged at warning level, once per scan
/// (22 lines in 2 s here; 1440 a day at the default 60 s interval), where every other
/// failing write in the state directory is said once.
#[test]
fn a_tombstone_that_cannot_be_removed_from_a_read_only_state_filesystem_is_warned_about_once_not_every_scan() {
    let _g = Guard::new(60 * SEC);
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let cfg = config(&gw, &pki, &rig).write(dir.path());
    let state = dir.path().join("state");
    fs::create_dir_all(&state).unwrap();
    let mount = |args: &[&str]| assert!(Command::new("mount").args(args).status().unwrap().success());
    mount(&["-t", "tmpfs", "-o", "size=4m", "tmpfs", state.to_str().unwrap()]);
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state.clone());
    // A first run: sdb's failure warned about, acknowledged and saved as reported.
    let agent = Agent::start(&cfg);
    gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    wait_until(10 * SEC, "the episode saved as reported and the spool empty", || {
        fs::read_to_string(state.join("disks.json")).is_ok_and(|t| t.contains("\"reported\":true"))
            && fs::read_dir(state.join("spool")).is_ok_and(|d| d.count() == 0)
    });
    agent.stop();
    let saved: Value = serde_json::from_str(&fs::read_to_string(state.join("disks.json")).unwrap()).unwrap();
    let act_id = saved["episodes"][0]["act_id"].as_str().unwrap().to_string();
    // The tombstone of its acknowledged warning left behind (the stop came between the
    // save and the purge).
    fs::write(state.join("spool/a-000000000004.json"), sdb_offline_warning(&act_id).to_string()).unwrap();
    mount(&["-o", "remount,ro", state.to_str().unwrap()]);

    let agent = Agent::start(&cfg);
    gw.wait_login(10 * SEC);
    soak(&mut gw, 2 * SEC); // twenty scans
    agent.stop();
    let said = warnings_with("a-000000000004.json");
    assert!(said.len() <= 1, "said {} times: {said:?}", said.len());
}
