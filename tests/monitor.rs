//! A disk that fails is reported to the gateway once per episode, with every protocol field,
//! whether it goes missing, offline, read-only, fails its SMART check or counts rising
//! errors; warnings survive a gateway outage, a restart, kill -9 and a state filesystem that
//! is full, read-only or frozen, and are sent from memory meanwhile; `get_disk_info` shows
//! the monitor's verdicts. End to end: a copy of the fixture tree stands in for /sys and
//! /proc (disks are "removed" by deleting their directory), the agent talks to the real TLS
//! test gateway, and real loop filesystems are filled, frozen and remounted. The rarer cuts
//! of a warning's life are in outbox_crash_safety.rs.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::thread;
use std::time::Instant;

use common::storage::LoopFs;
use common::*;
use serde_json::{Value, json};

/// Config with the monitor looking at `rig` every 100 ms.
fn config(gw_url: String, pki: &Pki, rig: &Path) -> AgentConfig {
    let mut c = AgentConfig::new(gw_url, &pki.ca_file);
    c.watch(rig, "100ms");
    c
}

#[test]
fn a_disk_that_disappears_is_reported_once_with_every_protocol_field() {
    let _g = Guard::new(30 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script::default());
    let _agent = Agent::start(&config(gw.url(), &pki, &rig).write(dir.path()));
    gw.wait_login(5 * SEC);
    // The fixture's sdb is offline from the start: that is the first failure seen.
    gw.wait_warning(5 * SEC, "/dev/sdb", "offline");
    fs::remove_dir_all(rig.join("sys/block/sda")).unwrap();
    let w = gw.wait_warning(5 * SEC, "/dev/sda", "missing");
    let act_id = w["act_id"].as_str().unwrap();
    let want = json!({"from":"device","act":"warning","reqtype":"post","act_id":act_id,"act_code":"","client_id":"",
        "hardware_id":HARDWARE_ID,"name":HARDWARE_ID,"type":2,"message":"Disk[/dev/sda]硬盘损坏","disk":"/dev/sda",
        "serial":"WD-WCC7K1234567","reason":"missing","detail":"block device sda disappeared","time":w["time"]});
    assert_eq!(w, want);
    assert!(w["time"].as_u64().unwrap() > 1_700_000_000);
    // Ten more scans: still one warning for this episode.
    gw.soak(ms(1000));
    assert_eq!(gw.warnings_seen("/dev/sda").len(), 1, "{:?}", gw.warnings_seen("/dev/sda"));
}

#[test]
fn get_disk_info_shows_the_monitors_verdicts_and_lists_disks_that_are_gone() {
    let _g = Guard::new(30 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script::default());
    let _agent = Agent::start(&config(gw.url(), &pki, &rig).write(dir.path()));
    let (conn, _) = gw.wait_login(5 * SEC);
    gw.wait_warning(5 * SEC, "/dev/sdb", "offline");
    fs::remove_dir_all(rig.join("sys/block/sda")).unwrap();
    gw.wait_warning(5 * SEC, "/dev/sda", "missing");
    gw.send_json(conn, json!({"act":"get_disk_info","act_code":"di","client_id":"c","reqtype":"post"}));
    let a = match gw.wait_for(
        5 * SEC,
        "disk info",
        |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == "di"),
    ) {
        Event::Received { msg, .. } => msg,
        _ => unreachable!(),
    };
    let disks = a["data"]["disks"].as_array().unwrap();
    let by = |n: &str| disks.iter().find(|d| d["name"] == n).unwrap_or_else(|| panic!("{n} not listed: {a}"));
    assert_eq!((by("sda")["health"].as_str(), by("sda")["reason"].as_str()), (Some("missing"), Some("missing")));
    assert_eq!(by("sda")["serial"], "WD-WCC7K1234567", "identity kept from the inventory");
    assert_eq!((by("sdb")["health"].as_str(), by("sdb")["reason"].as_str()), (Some("failed"), Some("offline")));
    assert_eq!(by("nvme0n1")["health"], "ok", "a live NVMe controller is healthy");
}

#[test]
fn a_disk_whose_size_dropped_to_zero_is_listed_with_health_missing_as_its_warning_says() {
    // A detached loop device or a pulled disk whose node lingers: still in /sys/block, size 0.
    let _g = Guard::new(30 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script::default());
    let _agent = Agent::start(&config(gw.url(), &pki, &rig).write(dir.path()));
    let (conn, _) = gw.wait_login(5 * SEC);
    gw.wait_warning(5 * SEC, "/dev/sdb", "offline");
    fs::write(rig.join("sys/block/sda/size"), "0\n").unwrap();
    gw.wait_warning(5 * SEC, "/dev/sda", "missing");
    gw.send_json(conn, json!({"act":"get_disk_info","act_code":"di0","client_id":"c","reqtype":"post"}));
    let a = match gw.wait_for(
        5 * SEC,
        "disk info",
        |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == "di0"),
    ) {
        Event::Received { msg, .. } => msg,
        _ => unreachable!(),
    };
    let sda: Vec<&Value> = a["data"]["disks"].as_array().unwrap().iter().filter(|d| d["name"] == "sda").collect();
    assert_eq!(sda.len(), 1, "listed once: {a}");
    assert_eq!((sda[0]["health"].as_str(), sda[0]["reason"].as_str()), (Some("missing"), Some("missing")));
    assert_eq!(sda[0]["size_bytes"], 0);
}

#[test]
fn a_live_nvme_disk_is_not_reported_and_a_dead_one_is_reported_offline() {
    let _g = Guard::new(30 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script::default());
    let state = rig.join("sys/block/nvme0n1/device/state");
    assert_eq!(fs::read_to_string(&state).unwrap().trim(), "live", "the fixture's NVMe controller is live");
    let _agent = Agent::start(&config(gw.url(), &pki, &rig).write(dir.path()));
    gw.wait_login(5 * SEC);
    gw.wait_warning(5 * SEC, "/dev/sdb", "offline");
    gw.soak(ms(1000)); // ten scans
    assert_eq!(gw.warnings_seen("/dev/nvme0n1"), Vec::<Value>::new(), "a healthy NVMe disk was reported");
    fs::write(&state, "dead\n").unwrap();
    let w = gw.wait_warning(5 * SEC, "/dev/nvme0n1", "offline");
    assert!(w["detail"].as_str().unwrap().contains("\"dead\""), "{w}");
}

#[test]
fn warnings_raised_while_the_gateway_is_down_are_delivered_when_it_is_back() {
    let _g = Guard::new(30 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script { drop_on_accept: true, ..Script::default() });
    let _agent = Agent::start(&config(gw.url(), &pki, &rig).write(dir.path()));
    gw.wait_for(5 * SEC, "a refused attempt", |e| matches!(e, Event::Accepted { .. }));
    fs::remove_dir_all(rig.join("sys/block/nvme0n1")).unwrap();
    wait_until(5 * SEC, "two spooled warnings", || spool_files(&dir.path().join("state")).len() == 2);
    gw.script().drop_on_accept = false;
    let (conn, _) = gw.wait_login(5 * SEC);
    let first = gw.wait_warning(5 * SEC, "/dev/sdb", "offline");
    let second = gw.wait_warning(5 * SEC, "/dev/nvme0n1", "missing");
    let on_conn = |w: &Value| {
        gw.seen
            .iter()
            .any(|e| matches!(e, Event::Received { conn: c, msg, .. } if *c == conn && msg["act_id"] == w["act_id"]))
    };
    assert!(on_conn(&first) && on_conn(&second));
    wait_until(5 * SEC, "acknowledged warnings to leave the spool", || {
        spool_files(&dir.path().join("state")).is_empty()
    });
}

#[test]
fn an_unacknowledged_warning_is_resent_with_the_same_act_id() {
    let _g = Guard::new(30 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script { warning_ack: None, ..Script::default() });
    let mut cfg = config(gw.url(), &pki, &rig);
    cfg.warning = "resend_after = \"300ms\"\n".into();
    let _agent = Agent::start(&cfg.write(dir.path()));
    let first = gw.wait_warning(5 * SEC, "/dev/sdb", "offline");
    let first_at = gw.seen.last().unwrap().at();
    let again = gw.wait_warning(5 * SEC, "/dev/sdb", "offline");
    let gap = gw.seen.last().unwrap().at() - first_at;
    assert_eq!(again["act_id"], first["act_id"]);
    assert_eq!(again, first, "the very same message");
    // Timed where the gateway reads them, so a late read of the first one (qemu, a loaded
    // machine) can shorten the gap a little; the exact schedule is resend.rs's unit tests'.
    assert!(gap >= ms(250) && gap < ms(300) + SEC, "resent after {gap:?}");
    // Once acknowledged, it stops.
    gw.script().warning_ack = Some(0);
    gw.wait_warning(5 * SEC, "/dev/sdb", "offline");
    wait_until(5 * SEC, "the spool to empty", || spool_files(&dir.path().join("state")).is_empty());
    let n = gw.warnings_seen("/dev/sdb").len();
    gw.soak(ms(900));
    assert_eq!(gw.warnings_seen("/dev/sdb").len(), n, "resent after the ack");
}

#[test]
fn a_disk_removed_while_no_agent_runs_is_reported_at_start() {
    let _g = Guard::new(30 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script::default());
    let cfg = config(gw.url(), &pki, &rig).write(dir.path());
    let agent = Agent::start(&cfg);
    gw.wait_warning(5 * SEC, "/dev/sdb", "offline");
    wait_until(5 * SEC, "the inventory to be saved", || {
        fs::read_to_string(dir.path().join("state/disks.json")).is_ok_and(|t| t.contains("\"sda\""))
    });
    agent.stop();
    fs::remove_dir_all(rig.join("sys/block/sda")).unwrap();
    let _agent = Agent::start(&cfg);
    let w = gw.wait_warning(5 * SEC, "/dev/sda", "missing");
    assert_eq!(w["serial"], "WD-WCC7K1234567");
}

#[test]
fn an_acknowledged_episode_is_not_reported_again_after_a_restart() {
    let _g = Guard::new(30 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script::default());
    let cfg = config(gw.url(), &pki, &rig).write(dir.path());
    let agent = Agent::start(&cfg);
    gw.wait_warning(5 * SEC, "/dev/sdb", "offline");
    fs::remove_dir_all(rig.join("sys/block/sda")).unwrap();
    gw.wait_warning(5 * SEC, "/dev/sda", "missing");
    wait_until(5 * SEC, "acks to empty the spool", || spool_files(&dir.path().join("state")).is_empty());
    agent.stop();
    gw.seen.clear();
    let _agent = Agent::start(&cfg);
    gw.wait_login(5 * SEC);
    gw.soak(ms(1000)); // ten scans
    let warnings: Vec<&Value> = gw
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::Received { msg, .. } if msg["act"] == "warning" => Some(msg),
            _ => None,
        })
        .collect();
    assert!(warnings.is_empty(), "reported again after a restart: {warnings:?}");
}

#[test]
fn a_cleared_failure_that_comes_back_is_a_new_episode_with_a_new_warning() {
    let _g = Guard::new(30 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script::default());
    let _agent = Agent::start(&config(gw.url(), &pki, &rig).write(dir.path()));
    let first = gw.wait_warning(5 * SEC, "/dev/sdb", "offline");
    fs::write(rig.join("sys/block/sdb/device/state"), "running\n").unwrap();
    gw.soak(ms(400));
    fs::write(rig.join("sys/block/sdb/device/state"), "offline\n").unwrap();
    let second = gw.wait_warning(5 * SEC, "/dev/sdb", "offline");
    assert_ne!(first["act_id"], second["act_id"]);
}

#[test]
fn rising_io_errors_raise_io_errors() {
    let _g = Guard::new(30 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script::default());
    let _agent = Agent::start(&config(gw.url(), &pki, &rig).write(dir.path()));
    gw.wait_warning(5 * SEC, "/dev/sdb", "offline");
    fs::write(rig.join("sys/block/sda/device/ioerr_cnt"), "0x9\n").unwrap();
    let w = gw.wait_warning(5 * SEC, "/dev/sda", "io_errors");
    assert_eq!(w["detail"], "device/ioerr_cnt of sda rose from 0x2 to 0x9");
}

#[test]
fn a_warning_survives_kill_9_right_after_detection_and_is_delivered_after_restart() {
    let _g = Guard::new(30 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script { drop_on_accept: true, ..Script::default() });
    let cfg = config(gw.url(), &pki, &rig).write(dir.path());
    let state = dir.path().join("state");
    let mut child = spawn_agent(&cfg, &[]);
    wait_until(10 * SEC, "sdb's warning in the spool", || spool_files(&state).len() == 1);
    fs::remove_dir_all(rig.join("sys/block/sda")).unwrap();
    wait_until(10 * SEC, "sda's warning in the spool", || spool_files(&state).len() == 2);
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let spooled: Vec<Value> =
        spool_files(&state).iter().map(|p| serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()).collect();
    gw.script().drop_on_accept = false;
    let mut child = spawn_agent(&cfg, &[]);
    for w in &spooled {
        let got = gw.wait_warning(10 * SEC, w["disk"].as_str().unwrap(), w["reason"].as_str().unwrap());
        assert_eq!(&got, w, "delivered exactly as spooled, original act_id included");
    }
    gw.soak(ms(600));
    assert_eq!(gw.warnings_seen("/dev/sda").len(), 1, "no second episode after the restart");
    assert_eq!(stop_agent(&mut child).0, Some(0));
}

#[test]
fn corrupt_state_files_are_moved_aside_reported_and_the_agent_goes_on() {
    let _g = Guard::new(30 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script::default());
    let cfg = config(gw.url(), &pki, &rig).write(dir.path());
    let state = dir.path().join("state");
    fs::create_dir_all(state.join("spool")).unwrap();
    fs::write(state.join("disks.json"), "{\"version\":1,\"disks\":").unwrap();
    fs::write(state.join("spool/w-000000000001.json"), [0xff, 0xfe, 0x00]).unwrap();
    let mut child = spawn_agent(&cfg, &[]);
    gw.wait_login(10 * SEC);
    gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    assert!(state.join("disks.json.corrupt").exists() && state.join("spool/w-000000000001.json.corrupt").exists());
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR") && l.contains("disk inventory")).collect();
    assert_eq!(errors.len(), 1, "the inventory is reported once:\n{log}");
    assert!(
        log.lines().any(|l| l.contains("ERROR") && l.contains("not a warning")),
        "the spool file is reported:\n{log}"
    );
}

#[test]
fn a_real_filesystem_remounted_read_only_raises_readonly() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    if !root() {
        return;
    }
    let lfs = LoopFs::new(dir.path(), "mnt", 16 << 20, &[]);
    let (dev, mnt) = (lfs.dev.clone(), lfs.mnt.clone());
    let name = dev.trim_start_matches("/dev/").to_string();

    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.disks = format!("smartctl = \"\"\nscan_interval = \"100ms\"\ninclude = [{name:?}]\n");
    let _agent = Agent::start(&cfg.write(dir.path()));
    gw.wait_login(5 * SEC);
    wait_until(5 * SEC, "the monitor to see the filesystem read-write", || {
        fs::read_to_string(dir.path().join("state/disks.json")).is_ok_and(|t| t.contains(mnt.to_str().unwrap()))
    });
    lfs.remount("ro");
    let w = gw.wait_warning(5 * SEC, &dev, "readonly");
    assert_eq!(w["message"], format!("Disk[{dev}]硬盘损坏"));
    assert!(w["detail"].as_str().unwrap().contains(mnt.to_str().unwrap()), "{w}");
    drop(lfs);
}

#[test]
fn with_the_state_filesystem_full_warnings_are_still_sent_and_the_spool_catches_up() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    if !root() {
        return;
    }
    let lfs = LoopFs::new(dir.path(), "state", 4 << 20, &["-m", "0"]);
    let (rig, mnt) = (rig_copy(dir.path()), lfs.mnt.clone());
    fs::create_dir(mnt.join("spool")).unwrap();
    // Fill every block; a small file of slack is kept so freeing it is quick.
    lfs.fill();

    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script { warning_ack: None, ..Script::default() });
    let mut cfg = config(gw.url(), &pki, &rig);
    cfg.warning = "resend_after = \"300ms\"\n".into();
    let config_path = cfg.write(dir.path());
    let mut child = spawn_agent(&config_path, &[]);
    let w = gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    assert!(spool_files(&mnt).is_empty(), "the disk is full: nothing could be spooled");
    // Room again: the next scan writes the warning out.
    lfs.make_room();
    wait_until(10 * SEC, "the spool to catch up", || spool_files(&mnt).len() == 1);
    let on_disk: Value = serde_json::from_str(&fs::read_to_string(&spool_files(&mnt)[0]).unwrap()).unwrap();
    assert_eq!(on_disk, w, "the warning it had sent, same act_id");
    gw.script().warning_ack = Some(0);
    wait_until(10 * SEC, "the ack to empty the spool", || spool_files(&mnt).is_empty());
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    let spool_errors =
        log.lines().filter(|l| l.contains("ERROR") && l.contains("cannot write the warning spool")).count();
    assert_eq!(spool_errors, 1, "logged once, not once per scan:\n{log}");
    drop(lfs);
}

#[test]
fn with_the_state_filesystem_remounted_read_only_warnings_are_still_sent_and_the_spool_catches_up() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    if !root() {
        return;
    }
    let lfs = LoopFs::new(dir.path(), "state", 4 << 20, &[]);
    let (rig, mnt) = (rig_copy(dir.path()), lfs.mnt.clone());

    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = config(gw.url(), &pki, &rig);
    cfg.warning = "resend_after = \"300ms\"\n".into();
    let mut child = spawn_agent(&cfg.write(dir.path()), &[]);
    // The fixture's offline disk is reported and acknowledged while the state is writable.
    gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    wait_until(10 * SEC, "the acknowledged warning to leave the spool", || spool_files(&mnt).is_empty());

    // An SD card that went bad: ext4 remounts it read-only (errors=remount-ro).
    lfs.remount("ro");
    gw.script().warning_ack = None;
    fs::remove_dir_all(rig.join("sys/block/nvme0n1")).unwrap();
    let w = gw.wait_warning(10 * SEC, "/dev/nvme0n1", "missing");
    assert!(spool_files(&mnt).is_empty(), "the state is read-only: nothing could be spooled");

    // Writable again (fsck, remount): the warning it sent is written out, same act_id.
    lfs.remount("rw");
    wait_until(10 * SEC, "the spool to catch up", || spool_files(&mnt).len() == 1);
    let on_disk: Value = serde_json::from_str(&fs::read_to_string(&spool_files(&mnt)[0]).unwrap()).unwrap();
    assert_eq!(on_disk, w);
    gw.script().warning_ack = Some(0);
    wait_until(10 * SEC, "the ack to empty the spool", || spool_files(&mnt).is_empty());
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("cannot write the warning spool") && log.contains("Read-only file system"), "{log}");
    drop(lfs);
}

#[test]
fn with_the_state_filesystem_read_only_at_start_the_agent_runs_and_spools_once_it_is_writable() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    if !root() {
        return;
    }
    let lfs = LoopFs::new(dir.path(), "state", 4 << 20, &[]);
    let (rig, mnt) = (rig_copy(dir.path()), lfs.mnt.clone());
    // A rig that rebooted with its SD card read-only: a storage fault, not a config error.
    lfs.remount("ro");
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script { warning_ack: None, ..Script::default() });
    let mut cfg = config(gw.url(), &pki, &rig);
    cfg.warning = "resend_after = \"300ms\"\n".into();
    let config_path = cfg.write(dir.path());
    let (code, shown) = {
        let out = agent_command().args(["--config", config_path.to_str().unwrap(), "check"]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("state_dir is not writable now (read-only file system)"), "{shown}");

    let mut child = spawn_agent(&config_path, &[]);
    let w = gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    lfs.remount("rw");
    wait_until(10 * SEC, "the spool to catch up", || spool_files(&mnt).len() == 1);
    let on_disk: Value = serde_json::from_str(&fs::read_to_string(&spool_files(&mnt)[0]).unwrap()).unwrap();
    assert_eq!(on_disk, w);
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("is not writable (read-only file system)"), "{log}");
    drop(lfs);
}

#[test]
fn a_failed_smart_check_raises_smart_failed_without_the_scan_waiting_for_smartctl() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    // sda fails its health check; every call takes 300 ms, longer than the scan interval.
    let smartctl = dir.path().join("smartctl");
    fs::write(
        &smartctl,
        "#!/bin/sh\nsleep 0.3\ncase \"$4\" in\n  /dev/sda) echo '{\"smart_status\":{\"passed\":false}}'; exit 8 ;;\n  \
         *) echo '{\"smart_status\":{\"passed\":true}}' ;;\nesac\n",
    )
    .unwrap();
    fs::set_permissions(&smartctl, fs::Permissions::from_mode(0o755)).unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = config(gw.url(), &pki, &rig);
    cfg.disks =
        format!("smartctl = {:?}\nscan_interval = \"100ms\"\nsmart_timeout = \"5s\"\n", smartctl.display().to_string());
    let _agent = Agent::start(&cfg.write(dir.path()));
    gw.wait_login(5 * SEC);
    let w = gw.wait_warning(10 * SEC, "/dev/sda", "smart_failed");
    assert_eq!(w["detail"], "SMART overall health check of /dev/sda failed");
    assert!(gw.warnings_seen("/dev/nvme0n1").is_empty());
}

#[test]
fn a_disk_smartctl_cannot_read_is_warned_about_once_not_every_smart_interval() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    // Like smartctl on a virtio disk: the same failure every time. Each call is counted.
    let (smartctl, calls) = (dir.path().join("smartctl"), dir.path().join("calls"));
    let unique = format!("cannot read it in {}", dir.path().display());
    fs::write(
        &smartctl,
        format!(
            "#!/bin/sh\necho x >> {calls:?}\n\
             echo '{{\"smartctl\":{{\"messages\":[{{\"string\":\"Unable to detect device type: {unique}\"}}]}}}}'\nexit 2\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&smartctl, fs::Permissions::from_mode(0o755)).unwrap();
    let pki = Pki::new(&["localhost"]);
    let gw = Gateway::start(&pki, Script::default());
    let mut cfg = config(gw.url(), &pki, &rig);
    cfg.disks = format!(
        "smartctl = {:?}\nscan_interval = \"100ms\"\nsmart_interval = \"1s\"\ninclude = [\"sda\"]\n",
        smartctl.display().to_string()
    );
    let _agent = Agent::start(&cfg.write(dir.path()));
    wait_until(15 * SEC, "smartctl to be asked three times", || {
        fs::read_to_string(&calls).is_ok_and(|c| c.lines().count() >= 3)
    });
    let warned = warnings_with(&unique);
    assert_eq!(warned.len(), 1, "{warned:?}");
}

#[test]
fn a_reload_while_the_state_filesystem_is_frozen_does_not_stop_heartbeats() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    if !root() {
        return;
    }
    let lfs = LoopFs::new(dir.path(), "state", 16 << 20, &[]);
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    // No disk monitored: nothing but the reload touches the state filesystem.
    cfg.disks = "smartctl = \"\"\ninclude = [\"none-such*\"]\n".into();
    let cfg = cfg.write(dir.path());
    let mut child = spawn_agent(&cfg, &[]);
    let (conn, _) = gw.wait_login(10 * SEC);
    gw.wait_act(5 * SEC, "heartbeat");
    // A frozen filesystem blocks every write, as a dying SD card or a hung NFS server
    // does: the reload's check that the state directory is writable waits on it.
    lfs.freeze();
    signal(&child, Signal::HUP);
    for _ in 0..8 {
        let (c, _, _) = gw.wait_act(2 * SEC, "heartbeat");
        assert_eq!(c, conn, "same connection, still beating while the reload waits");
    }
    lfs.thaw();
    thread::sleep(ms(500));
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("configuration reloaded"), "the reload finished once thawed:\n{log}");
    drop(lfs);
}

fn spawn_agent_as_nobody(nobody: &nobody::Nobody, config: &Path) -> Reaped {
    let mut cmd = nobody.command(&[]);
    cmd.arg("--config").arg(config).stdout(std::process::Stdio::null()).env_remove("JOURNAL_STREAM");
    spawn_logged(&mut cmd)
}

#[test]
fn a_warning_the_spool_could_not_take_is_raised_again_with_the_same_act_id_after_a_restart_before_the_ack() {
    let _g = Guard::new(60 * SEC);
    let Some(nobody) = nobody::Nobody::new() else { return };
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script { warning_ack: None, ..Script::default() });
    let mut cfg = config(gw.url(), &pki, &rig);
    cfg.warning = "resend_after = \"300ms\"\n".into();
    let cfg = cfg.write(dir.path());
    // The agent runs as its own user and owns its state directory, but `state/spool` is
    // root's: an operator once ran the agent as root. Its user can read the spool, not write.
    let state = dir.path().join("state");
    fs::create_dir_all(state.join("spool")).unwrap();
    nobody::Nobody::give(&[dir.path(), pki.dir.path()], &[&state, &dir.path().join("token")]);
    fs::set_permissions(state.join("spool"), fs::Permissions::from_mode(0o755)).unwrap();

    let mut child = spawn_agent_as_nobody(&nobody, &cfg);
    let w = gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    let act_id = w["act_id"].as_str().unwrap().to_string();
    wait_until(10 * SEC, "the episode to be saved", || {
        fs::read_to_string(state.join("disks.json")).is_ok_and(|t| t.contains(&act_id))
    });
    assert!(spool_files(&state).is_empty(), "the spool is not writable for the agent");
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("cannot write the warning spool") && log.contains("Permission denied"), "{log}");

    // Restarted before the gateway acknowledged it: the warning comes again, same act_id.
    gw.seen.clear();
    let mut child = spawn_agent_as_nobody(&nobody, &cfg);
    let again = gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    assert_eq!(again, w, "the same warning, same act_id and time");
    // Acknowledged now: after a restart it is not raised again.
    gw.script().warning_ack = Some(0);
    wait_until(10 * SEC, "the episode to be saved as reported", || {
        fs::read_to_string(state.join("disks.json")).is_ok_and(|t| t.contains("\"reported\":true"))
    });
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    let mut child = spawn_agent_as_nobody(&nobody, &cfg);
    let (conn, _) = gw.wait_login(10 * SEC);
    gw.soak(ms(1000)); // ten scans
    let (code, log) = stop_agent(&mut child);
    let on_conn: Vec<&Event> = gw.seen.iter().filter(|e| e.conn() == conn && e.act() == Some("warning")).collect();
    assert!(on_conn.is_empty(), "raised again after the ack: {on_conn:?}\n{log}");
    assert!(!log.contains("raising it again"), "{log}");
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn with_the_state_filesystem_full_at_detection_an_acknowledged_warning_is_not_raised_again_after_a_restart() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    if !root() {
        return;
    }
    let lfs = LoopFs::new(dir.path(), "state", 4 << 20, &["-m", "0"]);
    let (rig, mnt) = (rig_copy(dir.path()), lfs.mnt.clone());
    fs::create_dir(mnt.join("spool")).unwrap();
    lfs.fill();

    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script { warning_ack: None, ..Script::default() });
    let mut cfg = config(gw.url(), &pki, &rig);
    cfg.warning = "resend_after = \"300ms\"\n".into();
    let config_path = cfg.write(dir.path());
    let mut child = spawn_agent(&config_path, &[]);
    let w = gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    assert!(!mnt.join("disks.json").exists(), "the disk is full: no inventory could be saved");
    // Space comes back: the spool catches up, then the gateway acknowledges.
    lfs.make_room();
    wait_until(10 * SEC, "the spool to catch up", || spool_files(&mnt).len() == 1);
    gw.script().warning_ack = Some(0);
    wait_until(10 * SEC, "the ack to empty the spool", || spool_files(&mnt).is_empty());
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");

    gw.seen.clear();
    let mut child = spawn_agent(&config_path, &[]);
    gw.wait_login(10 * SEC);
    gw.soak(ms(1000)); // ten scans
    let doubled: Vec<Value> = gw.warnings_seen("/dev/sdb").into_iter().filter(|x| x["act_id"] != w["act_id"]).collect();
    assert!(doubled.is_empty(), "raised again with a new act_id: {doubled:?}");
    assert_eq!(stop_agent(&mut child).0, Some(0));
    drop(lfs);
}

#[test]
fn heartbeats_keep_their_schedule_while_the_state_disk_takes_3_s_per_fsync() {
    // A seam, not a real slow device: the spool's storage thread sleeps 3 s before each
    // fsync (spool::Options::fsync_delay); no dm-delay, nbd or FUSE is available here.
    let _g = Guard::new(60 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script::default());
    let slow = rig_agent::outbox::spool::Options { fsync_delay: 3 * SEC, ..Default::default() };
    let started = Instant::now();
    let _agent = Agent::with_outbox(&config(gw.url(), &pki, &rig).write(dir.path()), slow);
    gw.wait_login(5 * SEC);
    let login_at = gw.seen.last().unwrap().at();
    // The fixture's sdb is offline from the start; a second failure follows while the first
    // warning is still being written, and the acks' deletions are as slow.
    fs::remove_dir_all(rig.join("sys/block/sda")).unwrap();
    gw.wait_warning(15 * SEC, "/dev/sdb", "offline");
    gw.wait_warning(15 * SEC, "/dev/sda", "missing");
    gw.soak(4 * SEC);
    let hbs: Vec<Instant> = gw.seen.iter().filter(|e| e.act() == Some("heartbeat")).map(Event::at).collect();
    let first_warning = gw.seen.iter().find(|e| e.act() == Some("warning")).unwrap().at();
    assert!(first_warning - started >= 3 * SEC, "sent before it was written: {:?}", first_warning - started);
    // Interval 200 ms; a bound with honest slack for a loaded machine, far below the 3 s
    // a heartbeat waiting for an fsync would take.
    let mut prev = login_at;
    for at in &hbs {
        assert!(*at - prev < ms(200) + slack(SEC), "a heartbeat gap of {:?} after {:?}", *at - prev, prev - login_at);
        prev = *at;
    }
    assert!(hbs.len() >= 25, "{} heartbeats in {:?}", hbs.len(), prev - login_at);
}

#[test]
fn a_refused_warning_is_logged_even_after_a_flood_of_junk_frames() {
    let _g = Guard::new(30 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script { warning_ack: None, ..Script::default() });
    let mut cfg = config(gw.url(), &pki, &rig);
    cfg.warning = "resend_after = \"300ms\"\n".into();
    let _agent = Agent::start(&cfg.write(dir.path()));
    let (conn, _) = gw.wait_login(5 * SEC);
    // More junk than the junk throttle lets through in a minute.
    for i in 0..20 {
        gw.send(conn, tungstenite::Message::text(format!("junk {i}")));
    }
    let w = gw.wait_warning(5 * SEC, "/dev/sdb", "offline");
    let act_id = w["act_id"].as_str().unwrap().to_string();
    gw.script().warning_ack = Some(3);
    gw.wait_warning(5 * SEC, "/dev/sdb", "offline");
    wait_until(5 * SEC, "the refusal in the log", || {
        !warnings_with(&format!("the gateway refused warning {act_id}")).is_empty()
    });
}

#[test]
fn one_low_smart_reading_from_a_flaky_bridge_raises_no_smart_degrading_and_a_new_serial_is_a_new_baseline() {
    let _g = Guard::new(60 * SEC);
    let FixtureRig { dir, rig, pki, mut gw } = FixtureRig::new(Script::default());
    // sda's attribute 5 is what `realloc` says; each answer is logged to `asked`.
    let (realloc, asked, smartctl) =
        (dir.path().join("realloc"), dir.path().join("asked"), dir.path().join("smartctl"));
    fs::write(&realloc, "8").unwrap();
    fs::write(
        &smartctl,
        format!(
            "#!/bin/sh\ncase \"$4\" in\n  /dev/sda) v=$(cat {realloc:?}); echo \"$v\" >> {asked:?}\n    \
             echo \"{{\\\"smart_status\\\":{{\\\"passed\\\":true}},\\\"ata_smart_attributes\\\":{{\\\"table\\\":\
             [{{\\\"id\\\":5,\\\"raw\\\":{{\\\"value\\\":$v}}}}]}}}}\" ;;\n  \
             *) echo '{{\"smart_status\":{{\"passed\":true}}}}' ;;\nesac\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&smartctl, fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = config(gw.url(), &pki, &rig);
    cfg.disks = format!(
        "smartctl = {:?}\nscan_interval = \"100ms\"\nsmart_interval = \"1s\"\ninclude = [\"sda\"]\n",
        smartctl.display().to_string()
    );
    let mut child = spawn_agent(&cfg.write(dir.path()), &[]);
    gw.wait_login(10 * SEC);
    let inventory = dir.path().join("state/disks.json");
    wait_until(10 * SEC, "the SMART baseline", || {
        fs::read_to_string(&inventory).is_ok_and(|t| t.contains("\"counters\":{\"5\":8}"))
    });
    // Answered with 0 twice (scans every 100 ms look at each answer), then 8 again.
    let answers = |v: &str| fs::read_to_string(&asked).unwrap_or_default().lines().filter(|l| *l == v).count();
    fs::write(&realloc, "0").unwrap();
    wait_until(10 * SEC, "two answers of 0", || answers("0") >= 2);
    let eights = answers("8");
    fs::write(&realloc, "8").unwrap();
    wait_until(10 * SEC, "two answers of 8 again", || answers("8") >= eights + 2);
    gw.soak(ms(500));
    assert!(gw.warnings_seen("/dev/sda").is_empty(), "a disk that never changed: {:?}", gw.warnings_seen("/dev/sda"));
    assert!(fs::read_to_string(&inventory).unwrap().contains("\"counters\":{\"5\":8}"), "the baseline was lowered");

    // The disk is replaced under the same name: another serial, 3 reallocated sectors. That
    // is its own baseline, and only its rise to 4 is a warning.
    fs::write(rig.join("sys/block/sda/device/serial"), "REPLACED-2\n").unwrap();
    fs::write(&realloc, "3").unwrap();
    wait_until(10 * SEC, "the new disk's baseline", || {
        fs::read_to_string(&inventory).is_ok_and(|t| t.contains("REPLACED-2") && t.contains("\"counters\":{\"5\":3}"))
    });
    assert!(gw.warnings_seen("/dev/sda").is_empty(), "{:?}", gw.warnings_seen("/dev/sda"));
    fs::write(&realloc, "4").unwrap();
    let w = gw.wait_warning(10 * SEC, "/dev/sda", "smart_degrading");
    assert_eq!(w["detail"], "SMART 5 (reallocated sectors) rose from 3 to 4");
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
}
