//! A disk failure's warning is reported once and only once across what cuts a warning's life
//! short (detected, spooled, sent, acknowledged, recorded as reported): kill -9 or a power
//! cut at each step, a state disk that stalls or turns read-only on the way, and what such
//! cuts leave in the spool (tombstones of acknowledged warnings, files the agent never
//! writes). Nothing lost, nothing doubled, nothing said once per scan. The disk monitor's
//! everyday end-to-end behaviour is in monitor.rs.

mod common;

use std::fs;
use std::thread;

use common::storage::{Unmount, mount};
use common::*;
use serde_json::{Value, json};

/// sdb's warning exactly as the agent spooled it (`encode_warning`), acknowledged: what the
/// ack's rename leaves as its tombstone.
fn sdb_offline_warning(act_id: &str) -> Value {
    json!({"from": "device", "act": "warning", "reqtype": "post", "act_id": act_id, "act_code": "",
           "client_id": "", "hardware_id": HARDWARE_ID, "name": HARDWARE_ID, "type": 2,
           "message": "Disk[/dev/sdb]硬盘损坏", "disk": "/dev/sdb", "serial": null,
           "reason": "offline", "detail": "device/state of sdb is \"offline\"", "time": 1_764_000_000u64})
}

/// The state filesystem stalls (frozen, as a dying SD card) when sdb's failure is
/// detected: the scan waits its 5 s for the spool write, then saves the inventory with the
/// episode "not reported yet" (that save blocks until the thaw). After the thaw the warning
/// is written, sent and acknowledged, its spool file deleted, and the agent killed before
/// its next scan records the episode as reported. After the restart the acknowledged
/// warning is not sent again.
#[test]
fn a_warning_acknowledged_after_a_stall_at_detection_is_not_sent_again_after_kill_9() {
    let _g = Guard::new(90 * SEC);
    if !root() {
        return;
    }
    // Scans 3 s apart: room to act between two of them.
    let mut r = FreezableRig::start(Script::default(), "3s", |_| String::new());
    let state = r.state.mnt.clone();
    r.freeze_and_fail_sdb();
    // Past the scan's 5 s wait for the spool write.
    thread::sleep(8 * SEC);
    r.state.thaw();
    let w = r.gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    let act_id = w["act_id"].as_str().unwrap().to_string();
    wait_until(5 * SEC, "the inventory saved and the acknowledged warning deleted", || {
        fs::read_to_string(state.join("disks.json")).is_ok_and(|t| t.contains(&act_id))
            && spool_files(&state).is_empty()
    });
    r.child.kill().unwrap();
    r.child.wait().unwrap();
    let saved: Value = serde_json::from_str(&fs::read_to_string(state.join("disks.json")).unwrap()).unwrap();
    let (_, _, log1) = wait_exit(&mut r.child, SEC);
    eprintln!("inventory at the kill: {}", saved["episodes"]);

    r.gw.seen.clear();
    r.child = spawn_agent(&r.config, &[]);
    r.gw.wait_login(10 * SEC);
    r.gw.soak(2 * SEC);
    let (_, log2) = stop_agent(&mut r.child);
    let again = r.gw.warnings_seen("/dev/sdb");
    assert!(again.is_empty(), "sent again after its ack: {again:?}\nfirst run:\n{log1}\nafter the restart:\n{log2}");
}

/// A new failure's warning is written (the scan waits for that), sent and acknowledged
/// while the scan's inventory save is still under way: an fsync of disks.json takes
/// seconds on a worn SD card, the gateway's round trip milliseconds. The ack renames the
/// spool file to its tombstone; a kill -9 (or a power cut) before the save's rename leaves
/// that tombstone and a disks.json without the episode. The restart knows from the
/// tombstone that this failure was reported: purging the tombstone for want of an episode
/// would make sdb offline a new failure, warned again under a new act_id, which the gateway
/// cannot take for a duplicate (PROTOCOL.md §7: one warning per episode).
#[test]
fn a_warning_acknowledged_before_its_first_inventory_save_is_not_raised_again_under_a_new_act_id_after_kill_9() {
    let _g = Guard::new(60 * SEC);
    let (fixture, cfg, state) = saved_healthy();
    let FixtureRig { rig, mut gw, .. } = fixture;
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
    gw.soak(2 * SEC); // twenty scans
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
/// directory entry, a file copied in by hand) must not make the next number overflow (a
/// panic at start in a debug build, and in a release build a wrap to 0 that numbers the next
/// warnings before it). Such a file is not the agent's and is left alone, as any other name
/// it does not write.
#[test]
fn a_spool_file_numbered_at_the_top_of_u64_neither_stops_the_agent_nor_keeps_new_warnings_from_being_sent() {
    let _g = Guard::new(60 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script::default());
    fs::write(rig.join("sys/block/sdb/device/state"), "running\n").unwrap();
    let cfg = AgentConfig::new(gw.url(), &pki.ca_file).watch(&rig, "100ms").write(dir.path());
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
/// the purge again. The failed removal is said once, as every other failing write in the
/// state directory, not once per scan (1440 lines a day at the default 60 s interval).
#[test]
fn a_tombstone_that_cannot_be_removed_from_a_read_only_state_filesystem_is_warned_about_once_not_every_scan() {
    let _g = Guard::new(60 * SEC);
    if !root() {
        return;
    }
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script::default());
    let cfg = AgentConfig::new(gw.url(), &pki.ca_file).watch(&rig, "100ms").write(dir.path());
    let state = dir.path().join("state");
    fs::create_dir_all(&state).unwrap();
    mount(&["-t", "tmpfs", "-o", "size=4m", "tmpfs", state.to_str().unwrap()]);
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
    gw.soak(2 * SEC); // twenty scans
    agent.stop();
    let said = warnings_with("a-000000000004.json");
    assert!(said.len() <= 1, "said {} times: {said:?}", said.len());
}

/// A kill -9 after a new failure's warning was durably spooled and before the scan's save
/// of disks.json leaves the warning waiting in the spool and no episode on disk. The
/// restart sends it (same act_id) and the gateway acknowledges it. The episode the
/// take-over rebuilt from the spool must then be saved before that ack erases the only
/// record of it; otherwise a later restart, even a clean one, takes sdb offline for a new
/// failure and warns again under a new act_id (PROTOCOL.md §7: one warning per episode).
#[test]
fn a_warning_resent_from_the_spool_after_kill_9_is_not_raised_again_under_a_new_act_id_after_a_clean_restart() {
    let _g = Guard::new(60 * SEC);
    let (fixture, cfg, state) = saved_healthy();
    let FixtureRig { rig, mut gw, .. } = fixture;

    // What the kill -9 left: sdb failed, its warning durably spooled (waiting, not yet
    // acknowledged), and the save that would have recorded the episode never finished.
    fs::write(rig.join("sys/block/sdb/device/state"), "offline\n").unwrap();
    let act_id = "5eedf00d-4";
    fs::write(state.join("spool/w-000000000001.json"), sdb_offline_warning(act_id).to_string()).unwrap();

    gw.seen.clear();
    let agent = Agent::start(&cfg);
    gw.wait_login(10 * SEC);
    let w = gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    assert_eq!(w["act_id"], act_id, "resent with its act_id");
    wait_until(10 * SEC, "the acknowledged warning deleted", || spool_files(&state).is_empty());
    gw.soak(2 * SEC); // twenty scans
    agent.stop();
    let saved = fs::read_to_string(state.join("disks.json")).unwrap();

    gw.seen.clear();
    let agent = Agent::start(&cfg);
    gw.wait_login(10 * SEC);
    gw.soak(2 * SEC);
    agent.stop();
    let again = gw.warnings_seen("/dev/sdb");
    assert!(
        again.is_empty(),
        "sdb's failure, warned and acknowledged as {act_id}, was warned again: {again:?}\n\
         disks.json after the first restart: {saved}"
    );
}

/// A rig whose first run, with sdb healthy, saved disks.json with no episode: its config and
/// state directory, the agent stopped.
fn saved_healthy() -> (FixtureRig, std::path::PathBuf, std::path::PathBuf) {
    let mut fixture = FixtureRig::new(Script::default());
    let (dir, rig) = (fixture.dir.path().to_path_buf(), fixture.rig.clone());
    let cfg = AgentConfig::new(fixture.gw.url(), &fixture.pki.ca_file).watch(&rig, "100ms").write(&dir);
    let state = dir.join("state");
    fs::write(rig.join("sys/block/sdb/device/state"), "running\n").unwrap();
    let agent = Agent::start(&cfg);
    fixture.gw.wait_login(10 * SEC);
    wait_until(10 * SEC, "the first inventory", || state.join("disks.json").exists());
    agent.stop();
    (fixture, cfg, state)
}
