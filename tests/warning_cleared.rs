//! With `warning.send_cleared = true`, the end of a warned episode reaches the gateway as
//! `warning_cleared` referring to its warning: once, after the warning, acknowledged like
//! one, and across a restart between the two. Without it nothing is sent. End to end with
//! the real binary over a copy of the fixture sysfs (scanned every 300 ms).

mod common;

use std::fs;
use std::path::PathBuf;

use common::*;
use serde_json::Value;

struct Rig {
    dir: tempfile::TempDir,
    rig: PathBuf,
    kmsg: PathBuf,
    pki: Pki,
    gw: Gateway,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let rig = rig_copy(dir.path());
        let kmsg = dir.path().join("kmsg.log");
        fs::write(&kmsg, "").unwrap();
        let pki = Pki::new(&["localhost"]);
        let gw = Gateway::start(&pki, Script::default());
        Rig { dir, rig, kmsg, pki, gw }
    }

    fn start(&mut self, warning: &str) -> Reaped {
        let mut c = AgentConfig::new(self.gw.url(), &self.pki.ca_file);
        c.disks = "smartctl = \"\"\nscan_interval = \"300ms\"\nio_error_quiet = \"1s\"\n".into();
        c.paths_extra = format!("{}kmsg = {:?}\n", rig_paths(&self.rig), self.kmsg.display().to_string());
        c.warning = warning.into();
        c.sections = "[probes]\nnvidia_smi = \"\"\n".into();
        let child = spawn_agent(&c.write(self.dir.path()), &[]);
        self.gw.wait_login(10 * SEC);
        child
    }

    fn wait_cleared(&mut self, disk: &str, reason: &str) -> Value {
        match self.gw.wait_for(10 * SEC, &format!("warning_cleared {reason} for {disk}"), |e| {
            matches!(e, Event::Received { msg, .. }
                if msg["act"] == "warning_cleared" && msg["disk"] == disk && msg["reason"] == reason)
        }) {
            Event::Received { msg, .. } => msg,
            _ => unreachable!(),
        }
    }

    /// How many `warning_cleared` the gateway received.
    fn ends(&self) -> usize {
        self.gw
            .seen
            .iter()
            .filter(|e| matches!(e, Event::Received { msg, .. } if msg["act"] == "warning_cleared"))
            .count()
    }
}

#[test]
fn a_disk_back_online_sends_one_warning_cleared_referring_to_its_warning() {
    let _g = Guard::new(60 * SEC);
    let mut r = Rig::new();
    let mut child = r.start("send_cleared = true\n");
    let w = r.gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    fs::write(r.rig.join("sys/block/sdb/device/state"), "running\n").unwrap();
    let c = r.wait_cleared("/dev/sdb", "offline");
    assert_eq!(c["ref_act_id"], w["act_id"]);
    assert_eq!((c["type"].as_u64(), c["hardware_id"].as_str()), (Some(2), Some(HARDWARE_ID)));
    assert!(c["time"].as_u64() >= w["time"].as_u64(), "{c}");
    assert_ne!(c["act_id"], w["act_id"]);
    r.gw.soak(ms(1000));
    assert_eq!(r.ends(), 1);
    assert_eq!(r.gw.warnings_seen("/dev/sdb").len(), 1, "no second warning");
    assert_eq!(stop_agent(&mut child).0, Some(0));
}

/// sda leaves the bus (`missing`) and the agent stops; sda is back when it starts again:
/// the end of the episode of before the restart is sent, with that warning's act_id.
#[test]
fn a_disk_back_after_a_restart_ends_the_episode_of_before_the_restart() {
    let _g = Guard::new(60 * SEC);
    let mut r = Rig::new();
    let mut child = r.start("send_cleared = true\n");
    let aside = r.dir.path().join("sda-aside");
    fs::rename(r.rig.join("sys/block/sda"), &aside).unwrap();
    let w = r.gw.wait_warning(10 * SEC, "/dev/sda", "missing");
    wait_until(10 * SEC, "the episode saved as reported", || {
        fs::read_to_string(r.dir.path().join("state/disks.json"))
            .is_ok_and(|t| t.contains(&format!("\"act_id\":{},", w["act_id"])) && !t.contains("\"reported\":false"))
    });
    assert_eq!(stop_agent(&mut child).0, Some(0));
    fs::rename(&aside, r.rig.join("sys/block/sda")).unwrap();
    let mut child = r.start("send_cleared = true\n");
    let c = r.wait_cleared("/dev/sda", "missing");
    assert_eq!(c["ref_act_id"], w["act_id"]);
    r.gw.soak(ms(1000));
    // A resend of the same warning (acknowledged or not before the stop) is not a new one.
    let sda = r.gw.warnings_seen("/dev/sda");
    assert!(sda.iter().all(|x| x["act_id"] == w["act_id"]), "warned again: {sda:?}");
    assert_eq!(r.ends(), 1);
    assert_eq!(stop_agent(&mut child).0, Some(0));
}

#[test]
fn a_kernel_io_error_episode_quiet_for_io_error_quiet_is_cleared_and_none_without_send_cleared() {
    let _g = Guard::new(60 * SEC);
    let mut r = Rig::new();
    let mut child = r.start("send_cleared = true\n");
    r.gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    let line =
        "3,10,1000,-;Buffer I/O error on dev sda1, logical block 12, async page read\n SUBSYSTEM=block\n DEVICE=b8:1\n";
    use std::io::Write;
    fs::OpenOptions::new().append(true).open(&r.kmsg).unwrap().write_all(line.as_bytes()).unwrap();
    let w = r.gw.wait_warning(10 * SEC, "/dev/sda", "io_errors");
    let c = r.wait_cleared("/dev/sda", "io_errors");
    assert_eq!(c["ref_act_id"], w["act_id"]);
    assert_eq!(stop_agent(&mut child).0, Some(0));

    // Off (the default): the same end sends nothing.
    let mut r = Rig::new();
    let mut child = r.start("");
    r.gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    fs::write(r.rig.join("sys/block/sdb/device/state"), "running\n").unwrap();
    wait_until(10 * SEC, "the episode closed", || {
        fs::read_to_string(r.dir.path().join("state/disks.json")).is_ok_and(|t| !t.contains("\"offline\""))
    });
    r.gw.soak(ms(500));
    assert_eq!(r.ends(), 0);
    assert_eq!(stop_agent(&mut child).0, Some(0));
}

/// The same window the outbox guards for warnings
/// (outbox_crash_safety.rs: an ack faster than the fsync of disks.json), for the end of an
/// episode. sdb's episode ends; its `warning_cleared` is written, sent and acknowledged
/// (the ack's rename leaves its tombstone) while the scan's save of disks.json, which would
/// record the episode as closed, is still in its fsync; kill -9. After the restart the
/// gateway must not get a second `warning_cleared` (under a new act_id) for the same
/// warning: PROTOCOL.md §9 "One per episode".
#[test]
fn a_cleared_acknowledged_before_the_inventory_save_is_not_sent_again_after_kill_9() {
    let _g = Guard::new(60 * SEC);
    let mut r = Rig::new();
    let mut child = r.start("send_cleared = true\n");
    let w = r.gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    let warning = w["act_id"].as_str().unwrap().to_string();
    let state = r.dir.path().join("state");
    wait_until(10 * SEC, "the episode saved as reported", || {
        fs::read_to_string(state.join("disks.json")).is_ok_and(|t| {
            t.contains(&format!("\"act_id\":{w_id:?},", w_id = warning)) && !t.contains("\"reported\":false")
        })
    });
    assert_eq!(stop_agent(&mut child).0, Some(0));

    // What the kill -9 left: sdb is back, its end was acknowledged (the tombstone, exactly
    // as the agent encodes it), and disks.json still holds the episode open and reported.
    fs::write(r.rig.join("sys/block/sdb/device/state"), "running\n").unwrap();
    let cleared = serde_json::json!({"from":"device","act":"warning_cleared","reqtype":"post",
        "act_id":"5eedf00d-9","ref_act_id":warning,"act_code":"","client_id":"","hardware_id":HARDWARE_ID,
        "type":2,"disk":"/dev/sdb","reason":"offline","detail":"disk /dev/sdb: offline no longer holds",
        "time":w["time"].as_u64().unwrap() + 1});
    fs::write(state.join("spool/a-000000000999.json"), cleared.to_string()).unwrap();

    r.gw.seen.clear();
    let mut child = r.start("send_cleared = true\n");
    r.gw.soak(ms(2000));
    let again: Vec<Value> =
        r.gw.seen
            .iter()
            .filter_map(|e| match e {
                Event::Received { msg, .. } if msg["act"] == "warning_cleared" => Some(msg.clone()),
                _ => None,
            })
            .collect();
    let (_, log) = stop_agent(&mut child);
    assert!(again.is_empty(), "the end of {warning}, acknowledged as 5eedf00d-9, was sent again: {again:#?}\n{log}");
}
