//! A disk's failure in the kernel log is warned at once, once per episode, and never lost
//! nor doubled across a stop, a crash or a power cut; records a process forges never blame
//! a disk nor hold an episode open; an unreadable log is said and scans go on. End to end
//! against the real binary: a recorded kernel log is appended to the file `paths.kmsg`
//! names, over a copy of the fixture sysfs, with `scan_interval` at 60 s so only the event
//! path can raise a warning within the tests' waits; and the real kernel's log, with a
//! failing loop device and real segfaults.

mod common;
// Not declared in common/mod.rs: the FUSE crate it links would grow every other test binary.
#[path = "common/faulty_disk.rs"]
mod faulty_disk;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::segfault::{ExceptionTrace, KernelLog, build_segfault};
use common::*;
use faulty_disk::FaultyDisk;
use serde_json::{Value, json};

struct Rig {
    dir: tempfile::TempDir,
    rig: PathBuf,
    kmsg: PathBuf,
    pki: Pki,
    gw: Gateway,
    /// The agent's connection, once logged in.
    conn: usize,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let rig = rig_copy(dir.path());
        let kmsg = dir.path().join("kmsg.log");
        // Old records: read from the end, these are never reported.
        fs::write(&kmsg, "3,1,100,-;I/O error, dev nvme0n1, sector 0 op 0x0:(READ)\n").unwrap();
        let pki = Pki::new(&["localhost"]);
        let gw = Gateway::start(&pki, Script::default());
        Rig { dir, rig, kmsg, pki, gw, conn: 0 }
    }

    fn config(&self, disks_extra: &str) -> PathBuf {
        let mut c = AgentConfig::new(self.gw.url(), &self.pki.ca_file);
        // 60 s unless the test polls on purpose (predictive counters are polled).
        let scan = if disks_extra.contains("scan_interval") { "" } else { "scan_interval = \"60s\"\n" };
        let smart = if disks_extra.contains("smartctl") { "" } else { "smartctl = \"\"\n" };
        c.disks = format!("{smart}{scan}{disks_extra}");
        c.paths_extra = format!("{}kmsg = {:?}\n", rig_paths(&self.rig), self.kmsg.display().to_string());
        c.write(self.dir.path())
    }

    /// Asks the agent a query and returns its answer.
    fn ask(&mut self, act: &str) -> Value {
        self.gw.send_json(self.conn, json!({"act": act, "act_code": "q", "client_id": "c", "reqtype": "post"}));
        match self.gw.wait_for(10 * SEC, act, |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == "q")) {
            Event::Received { msg, .. } => msg,
            _ => unreachable!(),
        }
    }

    fn log(&self, records: &str) {
        OpenOptions::new().append(true).open(&self.kmsg).unwrap().write_all(records.as_bytes()).unwrap();
    }

    /// Starts the binary and waits for its login and first scan (sdb is offline in the
    /// fixture: that warning says the scan is done).
    fn start(&mut self, disks_extra: &str) -> Reaped {
        let child = spawn_agent(&self.config(disks_extra), &[]);
        self.conn = self.gw.wait_login(10 * SEC).0;
        self.gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
        child
    }

    /// Starts the agent again and lets it run 5 s; its log.
    fn restart(&mut self) -> String {
        let mut child = spawn_agent(&self.config(""), &[]);
        self.conn = self.gw.wait_login(10 * SEC).0;
        self.gw.soak(5 * SEC);
        stop_agent(&mut child).1
    }

    /// The kernel log's saved position (`state/kmsg.cursor`), "" when there is none.
    fn cursor(&self) -> String {
        fs::read_to_string(self.dir.path().join("state/kmsg.cursor")).unwrap_or_default()
    }
}

#[test]
fn a_kernel_io_error_on_a_partition_raises_io_errors_for_its_disk_at_once() {
    let _g = Guard::new(60 * SEC);
    let mut r = Rig::new();
    let mut child = r.start("");
    // A process imitating the kernel (facility user) first: it must not count.
    r.log("12,2,200,-;I/O error, dev nvme0n1, sector 8 op 0x0:(READ)\n");
    r.log(
        "3,3,300,-;Buffer I/O error on dev sda1, logical block 12, async page read\n SUBSYSTEM=block\n DEVICE=b8:1\n",
    );
    let w = r.gw.wait_warning(10 * SEC, "/dev/sda", "io_errors");
    assert_eq!(w["detail"], "kernel: Buffer I/O error on dev sda1, logical block 12, async page read");
    assert_eq!(w["message"], "Disk[/dev/sda]硬盘损坏");
    assert_eq!(w["type"], 2);
    assert!(r.gw.warnings_seen("/dev/nvme0n1").is_empty(), "the old record and the userspace one were ignored");
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn a_storm_of_ten_thousand_lines_is_one_warning_and_a_quiet_period_ends_it() {
    let _g = Guard::new(60 * SEC);
    let mut r = Rig::new();
    let mut child = r.start("io_error_quiet = \"1500ms\"\n");
    let mut storm = String::new();
    for i in 0..10_000u64 {
        storm += &format!(
            "3,{},{},-;I/O error, dev sda, sector {} op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0\n",
            10 + i,
            1000 + i,
            i * 8
        );
    }
    r.log(&storm);
    // Read in order: once nvme0n1's warning is here, the whole storm has been read.
    r.log("3,20000,50000,-;I/O error, dev nvme0n1, sector 0 op 0x0:(READ)\n");
    r.gw.wait_warning(10 * SEC, "/dev/nvme0n1", "io_errors");
    let sda = r.gw.warnings_seen("/dev/sda");
    assert_eq!(sda.len(), 1, "{sda:?}");
    assert_eq!(
        sda[0]["detail"],
        "kernel: I/O error, dev sda, sector 0 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0"
    );
    // 1.5 s without a line ends the episode; the next error is a new one.
    std::thread::sleep(ms(2500));
    r.log("3,20001,60000,-;I/O error, dev sda, sector 99 op 0x0:(READ)\n");
    let again = r.gw.wait_warning(10 * SEC, "/dev/sda", "io_errors");
    assert_ne!(again["act_id"], sda[0]["act_id"]);
    assert_eq!(again["detail"], "kernel: I/O error, dev sda, sector 99 op 0x0:(READ)");
    assert_eq!(stop_agent(&mut child).0, Some(0));
}

/// A disk's episode ends after `io_error_quiet` without an error line. Kernel records a
/// process shapes like one (its name `XFS (sda): `, then a segfault every 400 ms) must not
/// count as lines: they would hold the episode open for ever, and sda's next real failure
/// would be part of the old episode, never warned.
#[test]
fn forged_records_do_not_hold_an_episode_open_and_hide_the_next_failure() {
    let _g = Guard::new(60 * SEC);
    let mut r = Rig::new();
    let mut child = r.start("io_error_quiet = \"1500ms\"\n");
    r.log("3,2,200,-;I/O error, dev sda, sector 8 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2\n");
    let first = r.gw.wait_warning(10 * SEC, "/dev/sda", "io_errors");
    for i in 0..8u64 {
        r.log(&format!(
            "6,{},{},-;XFS (sda): [{}]: segfault at 0 ip 000055bc57f79180 sp 00007ffe74b3c5e0 error 6 in \
             segfault[1180,55bc57f79000+1000] likely on CPU 0 (core 0, socket 0)\n",
            3 + i,
            300 + i,
            4000 + i
        ));
        std::thread::sleep(ms(400));
    }
    r.log("3,20,2000,-;I/O error, dev sda, sector 99 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2\n");
    let again = r.gw.wait_for(10 * SEC, "a new io_errors warning for sda", |e| match e {
        Event::Received { msg, .. } => {
            msg["act"] == "warning" && msg["disk"] == "/dev/sda" && msg["act_id"] != first["act_id"]
        }
        _ => false,
    });
    let Event::Received { msg, .. } = again else { unreachable!() };
    assert_eq!(msg["detail"], "kernel: I/O error, dev sda, sector 99 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2");
    assert_eq!(stop_agent(&mut child).0, Some(0));
}

#[test]
fn after_a_restart_in_the_same_boot_records_logged_while_stopped_are_read_once() {
    let _g = Guard::new(60 * SEC);
    let mut r = Rig::new();
    let mut child = r.start("io_error_quiet = \"1h\"\n");
    r.log("3,5,500,-;I/O error, dev sda, sector 8 op 0x0:(READ)\n");
    let first = r.gw.wait_warning(10 * SEC, "/dev/sda", "io_errors");
    assert_eq!(stop_agent(&mut child).0, Some(0));
    assert_eq!(
        fs::read_to_string(r.dir.path().join("state/kmsg.cursor")).unwrap(),
        "4f9c2d1e-7a3b-4c5d-9e8f-0a1b2c3d4e5f 5\n"
    );
    r.log("3,6,600,-;EXT4-fs error (device nvme0n1p1): ext4_find_entry:1683: inode #2: comm ls: reading directory lblock 0\n");
    r.gw.seen.clear();
    let mut child = spawn_agent(&r.config("io_error_quiet = \"1h\"\n"), &[]);
    let w = r.gw.wait_warning(10 * SEC, "/dev/nvme0n1", "io_errors");
    assert!(w["detail"].as_str().unwrap().starts_with("kernel: EXT4-fs error (device nvme0n1p1)"), "{w}");
    // An unacknowledged warning may be resent as it was; a second episode would be new.
    let sda = r.gw.warnings_seen("/dev/sda");
    assert!(sda.iter().all(|w| w["act_id"] == first["act_id"]), "sda's record was read again: {sda:?}");
    assert_eq!(stop_agent(&mut child).0, Some(0));
}

/// A kernel error that reaches the monitor while a scan is under way, when the agent is
/// cut off (a power cut) or stopped before the monitor takes it in: the kernel log's
/// position is saved only past what the monitor has recorded, so the error is warned after
/// the restart; and one read again after a crash is not warned twice.
#[test]
fn a_kernel_error_read_just_before_a_power_cut_is_warned_after_the_restart() {
    let _g = Guard::new(90 * SEC);
    let mut r = Rig::new();
    let mut child = r.start("");
    let slow = SlowScan::arm(&r.rig);
    // The cursor is written at most every 10 s: let them pass, as on any rig up for a while.
    std::thread::sleep(11 * SEC);
    r.log("3,2,200,-;I/O error, dev sda, sector 8 op 0x0:(READ)\n");
    std::thread::sleep(ms(1500));
    // Power cut while the monitor is still scanning.
    child.kill().unwrap();
    let (_, _, log1) = wait_exit(&mut child, 10 * SEC);
    let cursor = r.cursor();
    slow.end();
    let log2 = r.restart();
    assert!(
        r.gw.warnings_seen("/dev/sda").iter().any(|w| w["reason"] == "io_errors"),
        "sda's I/O error was never warned; cursor at the cut: {cursor:?}\nfirst run:\n{log1}\nsecond run:\n{log2}"
    );
}

#[test]
fn a_kernel_error_read_just_before_a_stop_is_warned_after_the_restart() {
    let _g = Guard::new(90 * SEC);
    let mut r = Rig::new();
    let mut child = r.start("");
    let slow = SlowScan::arm(&r.rig);
    // An error on nvme0n1 starts a scan, which blocks on the FIFO; then one on sda arrives
    // and waits in the monitor's queue.
    r.log("3,2,200,-;I/O error, dev nvme0n1, sector 0 op 0x0:(READ)\n");
    std::thread::sleep(ms(500));
    r.log("3,3,300,-;I/O error, dev sda, sector 8 op 0x0:(READ)\n");
    std::thread::sleep(ms(500));
    signal(&child, Signal::TERM);
    std::thread::sleep(ms(1000));
    slow.end();
    let (code, _, log1) = wait_exit(&mut child, 20 * SEC);
    assert_eq!(code, Some(0), "{log1}");
    let cursor = r.cursor();
    // Restarted in the same boot: whatever was not warned before the stop is warned now.
    let log2 = r.restart();
    assert!(!r.gw.warnings_seen("/dev/nvme0n1").is_empty(), "control: nvme0n1's error was warned\n{log1}");
    assert!(
        r.gw.warnings_seen("/dev/sda").iter().any(|w| w["reason"] == "io_errors"),
        "sda's I/O error was never warned; cursor at stop: {cursor:?}\nfirst run:\n{log1}\nsecond run:\n{log2}"
    );
}

/// A scan blocked in a read under sysfs (a dying disk's attribute can hang in the kernel for
/// minutes; a FIFO stands for it) does not hold a stop: the agent ends within seconds, says
/// why, and the error it had queued is warned after the restart.
#[test]
fn a_stop_while_a_scan_hangs_on_a_disk_read_ends_within_seconds_and_loses_no_error() {
    let _g = Guard::new(90 * SEC);
    let mut r = Rig::new();
    let mut child = r.start("");
    let slow = SlowScan::arm(&r.rig);
    r.log("3,2,200,-;I/O error, dev nvme0n1, sector 0 op 0x0:(READ)\n");
    let pid = child.id();
    wait_until(slack(10 * SEC), "a scan blocked opening the FIFO", || blocked_on_fifo(pid));
    r.log("3,3,300,-;I/O error, dev sda, sector 8 op 0x0:(READ)\n");
    std::thread::sleep(ms(500));
    signal(&child, Signal::TERM);
    // A guard, not a timing: the stop waits 5 s for the monitor, then goes without it.
    let (code, _, log1) = wait_exit(&mut child, slack(15 * SEC));
    slow.end();
    assert_eq!(code, Some(0), "{log1}");
    assert!(log1.contains("stopping without the disk monitor"), "{log1}");
    let log2 = r.restart();
    assert!(
        r.gw.warnings_seen("/dev/sda").iter().any(|w| w["reason"] == "io_errors"),
        "sda's I/O error was lost with the hung scan\nfirst run:\n{log1}\nsecond run:\n{log2}"
    );
}

/// Whether a thread of `pid` waits in the kernel for a FIFO's other end.
fn blocked_on_fifo(pid: u32) -> bool {
    fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten().any(|t| {
        fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w.contains("wait_for_partner") || w.contains("fifo"))
    })
}

#[test]
fn a_kernel_error_read_again_after_a_crash_is_not_warned_twice() {
    let _g = Guard::new(90 * SEC);
    let mut r = Rig::new();
    let mut child = r.start("");
    r.log("3,2,200,-;I/O error, dev sda, sector 8 op 0x0:(READ)\n");
    r.gw.wait_warning(10 * SEC, "/dev/sda", "io_errors");
    child.kill().unwrap();
    let _ = wait_exit(&mut child, 10 * SEC);
    // As if the power went after the warning was spooled but before the position was
    // saved: the restart reads the error record again.
    let boot = fs::read_to_string(r.rig.join("proc/sys/kernel/random/boot_id")).unwrap();
    fs::write(r.dir.path().join("state/kmsg.cursor"), format!("{} 1\n", boot.trim())).unwrap();
    let log2 = r.restart();
    let ids: std::collections::HashSet<String> =
        r.gw.warnings_seen("/dev/sda")
            .iter()
            .filter(|w| w["reason"] == "io_errors")
            .map(|w| w["act_id"].to_string())
            .collect();
    assert_eq!(ids.len(), 1, "one episode, one warning (resent with its act_id at most): {ids:?}\n{log2}");
}

#[test]
fn an_unreadable_kernel_log_is_said_at_start_and_in_get_agent_info_and_scans_go_on() {
    let _g = Guard::new(60 * SEC);
    let mut r = Rig::new();
    r.kmsg = r.dir.path().join("no-such-kmsg");
    let mut child = r.start("");
    let info = r.ask("get_agent_info");
    let sources = &info["data"]["event_sources"];
    assert!(sources["kmsg"].as_str().unwrap().starts_with("off: "), "{info}");
    assert_eq!(sources["scan"], "live");
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0));
    let line = log.lines().find(|l| l.contains("kernel log unreadable")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("no-such-kmsg") && line.ends_with("; falling back to scans"), "{line}");
}

#[test]
fn predictive_counters_rising_raise_smart_degrading_fs_errors_and_raid_degraded() {
    let _g = Guard::new(60 * SEC);
    let mut r = Rig::new();
    let sys = r.rig.join("sys");
    // sda came with 8 reallocated sectors; the fake smartctl reports what `realloc` says.
    let realloc = r.dir.path().join("realloc");
    fs::write(&realloc, "8").unwrap();
    let smartctl = r.dir.path().join("smartctl");
    fs::write(
        &smartctl,
        format!(
            "#!/bin/sh\ncase \"$4\" in\n  /dev/sda) echo \"{{\\\"smart_status\\\":{{\\\"passed\\\":true}},\
             \\\"ata_smart_attributes\\\":{{\\\"table\\\":[{{\\\"id\\\":5,\\\"raw\\\":{{\\\"value\\\":$(cat {})}}}}]}}}}\" ;;\n  \
             *) echo '{{\"smart_status\":{{\"passed\":true}}}}' ;;\nesac\n",
            realloc.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&smartctl, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(sys.join("fs/ext4/sda1")).unwrap();
    fs::write(sys.join("fs/ext4/sda1/errors_count"), "2\n").unwrap();
    let md = sys.join("block/md0/md");
    for m in ["sda2", "sdc1"] {
        fs::create_dir_all(md.join(format!("dev-{m}"))).unwrap();
        fs::write(md.join(format!("dev-{m}/state")), "in_sync\n").unwrap();
    }
    fs::write(md.join("degraded"), "0\n").unwrap();
    fs::write(md.join("raid_disks"), "2\n").unwrap();
    let mut child = r.start(&format!(
        "smartctl = {:?}\nscan_interval = \"100ms\"\nsmart_interval = \"1s\"\n",
        smartctl.display().to_string()
    ));
    let inventory = r.dir.path().join("state/disks.json");
    let until = std::time::Instant::now() + 10 * SEC;
    while !fs::read_to_string(&inventory).is_ok_and(|t| t.contains("\"counters\":{\"5\":8}")) {
        assert!(std::time::Instant::now() < until, "no SMART baseline in {}", inventory.display());
        std::thread::sleep(ms(50));
    }
    assert!(r.gw.warnings_seen("/dev/sda").is_empty(), "8 at first sight is a baseline");
    fs::write(&realloc, "9").unwrap();
    let w = r.gw.wait_warning(10 * SEC, "/dev/sda", "smart_degrading");
    assert_eq!(w["detail"], "SMART 5 (reallocated sectors) rose from 8 to 9");
    fs::write(sys.join("fs/ext4/sda1/errors_count"), "3\n").unwrap();
    let w = r.gw.wait_warning(10 * SEC, "/dev/sda", "fs_errors");
    assert_eq!(w["detail"], "ext4 on sda1 counts 3 errors (was 2)");
    fs::write(md.join("dev-sdc1/state"), "faulty\n").unwrap();
    fs::write(md.join("degraded"), "1\n").unwrap();
    let w = r.gw.wait_warning(10 * SEC, "/dev/md0", "raid_degraded");
    assert_eq!(w["detail"], "md array md0 is degraded (1 of 2 devices missing); failed members: sdc1");
    let info = r.ask("get_disk_info");
    let sda = info["data"]["disks"].as_array().unwrap().iter().find(|d| d["name"] == "sda").unwrap().clone();
    assert_eq!(sda["smart"]["indicators"]["ata"]["5"], 9, "{sda}");
    assert_eq!(sda["reason"], "smart_degrading", "{sda}");
    assert_eq!(stop_agent(&mut child).0, Some(0));
}

/// 64 MiB whose 64 KiB at 32 MiB (sectors 65536..65664) fail.
const BAD_AT: u64 = 32 << 20;

#[test]
fn a_real_kernel_io_error_on_a_loop_device_raises_io_errors_and_its_detach_raises_missing() {
    let _g = Guard::new(120 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let Some(mut disk) = FaultyDisk::new(dir.path(), 64 << 20, BAD_AT..BAD_AT + (64 << 10)) else {
        assert!(!root(), "root, FUSE and loop devices are needed (CI runs as root)");
        return;
    };
    assert!(disk.read(0, 16), "the good range reads");
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut c = AgentConfig::new(gw.url(), &pki.ca_file);
    // The real machine: /sys, /proc, /dev/kmsg. Only this loop device is monitored.
    c.disks = format!("smartctl = \"\"\nscan_interval = \"60s\"\ninclude = [{:?}]\n", disk.name);
    c.paths_extra = "kmsg = \"/dev/kmsg\"\n".into();
    let mut child = spawn_agent(&c.write(dir.path()), &[]);
    gw.wait_login(10 * SEC);
    let inventory = dir.path().join("state/disks.json");
    let until = std::time::Instant::now() + 10 * SEC;
    while !fs::read_to_string(&inventory).is_ok_and(|t| t.contains(&format!("\"{}\"", disk.name))) {
        assert!(std::time::Instant::now() < until, "the first scan did not remember {}", disk.name);
        std::thread::sleep(ms(20));
    }
    assert!(!disk.read(BAD_AT / 4096, 1), "the bad range fails");
    let w = gw.wait_warning(10 * SEC, &disk.device(), "io_errors");
    let detail = w["detail"].as_str().unwrap();
    assert!(detail.starts_with("kernel: ") && detail.contains(&format!("dev {}", disk.name)), "{detail}");
    disk.detach();
    let w = gw.wait_warning(10 * SEC, &disk.device(), "missing");
    assert_eq!(w["detail"], format!("size of {} dropped to 0", disk.name));
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
}

/// `get_agent_info`'s answer.
fn agent_info(gw: &mut Gateway, conn: usize) -> Value {
    gw.send_json(conn, json!({"act":"get_agent_info","act_code":"i","client_id":"c","reqtype":"post"}));
    match gw.wait_for(5 * SEC, "agent info", |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == "i")) {
        Event::Received { msg, .. } => msg,
        _ => unreachable!(),
    }
}

/// A sysfs built like a real one around the agent: a SATA disk `sdz` behind port `ata1`
/// at SCSI address 0:0:0:0, an NVMe namespace `nvme0n1` of controller `nvme0`, and the
/// host's own loop device `loop` (a link into the real /sys).
fn forgery_sysfs(root: &Path, loop_name: &str) {
    use std::os::unix::fs::symlink;
    let disk = |dev: &str, name: &str, number: &str, state: &str| {
        let dir = root.join("devices").join(dev).join("block").join(name);
        fs::create_dir_all(dir.join("queue")).unwrap();
        fs::write(dir.join("size"), "2097152\n").unwrap();
        fs::write(dir.join("dev"), format!("{number}\n")).unwrap();
        fs::write(dir.join("queue/rotational"), "0\n").unwrap();
        let device = root.join("devices").join(dev);
        fs::write(device.join("state"), format!("{state}\n")).unwrap();
        fs::write(device.join("model"), "FORGERY TARGET\n").unwrap();
        symlink(&device, dir.join("device")).unwrap();
        fs::create_dir_all(root.join("block")).unwrap();
        symlink(&dir, root.join("block").join(name)).unwrap();
    };
    fs::create_dir_all(root.join("devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0")).unwrap();
    disk("pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0", "sdz", "259:200", "running");
    fs::create_dir_all(root.join("devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0")).unwrap();
    disk("pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0", "nvme0n1", "259:201", "live");
    symlink(Path::new("/sys/devices/virtual/block").join(loop_name), root.join("block").join(loop_name)).unwrap();
}

/// The reported forgery and its relatives, end to end on the real kernel: processes name
/// themselves like a disk driver's line (`XFS (loopN): `, `nvme nvme0: `, `sd 0:0:0:0: `,
/// `ata1: error: {`, `nvme0n1: `) and really segfault, some in a file whose name carries
/// the rest of a driver's words (`timeout`, `Medium Error`, ` @ LBA … (sct `). The real
/// privileged half reads /dev/kmsg and streams it to the real agent; no disk is blamed.
/// Then a real I/O error on the monitored loop device is warned, once, with its own line:
/// the pipeline was live all along, and the forgeries held no episode open for it.
#[test]
fn a_forged_segfault_record_never_blames_a_disk_and_a_real_failure_still_warns() {
    let _g = Guard::new(180 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = FaultyDisk::new(dir.path(), 64 << 20, BAD_AT..BAD_AT + (64 << 10)) else {
        panic!("root, FUSE and loop devices are needed (CI runs as root)");
    };
    let _trace = ExceptionTrace::on();
    let bin = dir.path().join("bin");
    build_segfault(&bin);
    let sys = dir.path().join("sys");
    forgery_sysfs(&sys, &disk.name);

    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let socket = dir.path().join("priv.sock");
    let mut c = AgentConfig::new(gw.url(), &pki.ca_file);
    c.disks = format!(
        "smartctl = \"\"\nscan_interval = \"60s\"\nio_error_quiet = \"1h\"\ninclude = [\"sdz\", \"nvme0n1\", {:?}]\n",
        disk.name
    );
    c.paths_extra = format!(
        "sysfs = {:?}\nkmsg = \"/dev/kmsg\"\nprivileged_socket = {:?}\n",
        sys.display().to_string(),
        socket.display().to_string()
    );
    let cfg = c.write(dir.path());
    let mut privileged = spawn_privileged(&cfg);
    wait_until(10 * SEC, "the privileged socket", || socket.exists());
    let mut agent = spawn_agent(&cfg, &[]);
    let conn = gw.wait_login(10 * SEC).0;
    let until = std::time::Instant::now() + 15 * SEC;
    while agent_info(&mut gw, conn)["data"]["event_sources"]["kmsg"] != "live (privileged half)" {
        assert!(std::time::Instant::now() < until, "the kernel log never went live");
        std::thread::sleep(ms(50));
    }
    let inventory = dir.path().join("state/disks.json");
    wait_until(10 * SEC, "the first scan", || {
        fs::read_to_string(&inventory).is_ok_and(|t| ["sdz", "nvme0n1", &disk.name].iter().all(|d| t.contains(d)))
    });

    let mut klog = KernelLog::from_now();
    let xfs = format!("XFS ({}): ", disk.name);
    // (the name the process gives itself, the name of the file it faults in)
    let forgeries = [
        (xfs.as_str(), "segfault"),
        ("nvme nvme0: ", "timeout"),
        ("sd 0:0:0:0: x", "Medium Error"),
        ("ata1: error: {", "segfault"),
        ("nvme0n1: ", "x @ LBA 0, 8 blocks, (sct 0x2"),
    ];
    for (comm, file) in forgeries {
        assert!(comm.len() <= 15, "{comm:?} is longer than a task name");
        if file != "segfault" {
            fs::copy(bin.join("segfault"), bin.join(file)).unwrap();
        }
        // printk_ratelimit() may hold a report back when other tests fault too: try again.
        let mut logged = None;
        for _ in 0..4 {
            let child = Command::new(bin.join(file)).arg(comm).status().unwrap();
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(child.signal(), Some(11), "{file} did not segfault");
            logged = klog.find(&format!("{comm}["), 6 * SEC);
            if logged.is_some() {
                break;
            }
        }
        let logged = logged.unwrap_or_else(|| panic!("the kernel never logged {comm:?}'s segfault"));
        assert!(logged.contains("segfault at 0") && logged.contains(&format!(" in {file}[")), "{logged}");
    }

    // Read in order: once the real error's warning is here, every forgery was read first.
    assert!(!disk.read(BAD_AT / 4096, 1), "the bad range fails");
    let w = gw.wait_warning(10 * SEC, &disk.device(), "io_errors");
    // A query's answer comes after every warning raised before it.
    agent_info(&mut gw, conn);
    let real = format!("kernel: I/O error, dev {}, sector ", disk.name);
    assert!(w["detail"].as_str().unwrap().starts_with(&real), "{w}");
    for d in ["/dev/sdz", "/dev/nvme0n1"] {
        assert!(gw.warnings_seen(d).is_empty(), "{d} blamed: {:?}", gw.warnings_seen(d));
    }
    let loop_warnings = gw.warnings_seen(&disk.device());
    assert!(loop_warnings.iter().all(|x| x["act_id"] == w["act_id"]), "{loop_warnings:?}");
    let (code, log) = stop_agent(&mut agent);
    assert_eq!(code, Some(0), "{log}");
    let _ = stop_agent(&mut privileged);
}

/// mm/page_alloc.c `warn_alloc` reports a failed allocation at KERN_WARNING as `<task
/// name>: page allocation failure: …, nodemask=(null)` followed in the same record
/// (`pr_cont`, kernel/cgroup/cpuset.c) by `,cpuset=<its cpuset cgroup's name>,mems_allowed=0`.
/// A miner that names itself `ata1.0: cmd 60/` (15 bytes) and runs in a cgroup it named
/// `x Emask 0x1 (media error)` (a container's or a delegated subtree's) gets this record,
/// exactly as the kernel writes it, when an allocation of its fails. It must not blame
/// the SATA disk behind ata1, nor hold its episode open: the disk's real error after it
/// is warned with its own line.
#[test]
fn a_page_allocation_failure_of_a_task_in_a_cgroup_it_named_never_blames_a_disk() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    forgery_sysfs(&sys, "loop-not-here");
    let kmsg = dir.path().join("kmsg.log");
    fs::write(&kmsg, "6,1,100,-;old\n").unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut c = AgentConfig::new(gw.url(), &pki.ca_file);
    c.disks = "smartctl = \"\"\nscan_interval = \"60s\"\nio_error_quiet = \"1h\"\ninclude = [\"sdz\"]\n".into();
    c.paths_extra = format!(
        "sysfs = {:?}\nkmsg = {:?}\nprivileged_socket = \"\"\n",
        sys.display().to_string(),
        kmsg.display().to_string()
    );
    let cfg = c.write(dir.path());
    let mut agent = spawn_agent(&cfg, &[]);
    let conn = gw.wait_login(10 * SEC).0;
    let inventory = dir.path().join("state/disks.json");
    wait_until(10 * SEC, "the first scan", || fs::read_to_string(&inventory).is_ok_and(|t| t.contains("sdz")));
    let until = std::time::Instant::now() + 10 * SEC;
    while agent_info(&mut gw, conn)["data"]["event_sources"]["kmsg"] != "live" {
        assert!(std::time::Instant::now() < until, "the kernel log never went live");
        std::thread::sleep(ms(50));
    }
    let append = |text: &str| OpenOptions::new().append(true).open(&kmsg).unwrap().write_all(text.as_bytes()).unwrap();
    append(
        "4,2,200,-;ata1.0: cmd 60/: page allocation failure: order:4, \
         mode:0x40dc0(GFP_KERNEL|__GFP_COMP|__GFP_ZERO), nodemask=(null),cpuset=x Emask 0x1 (media error),mems_allowed=0\n",
    );
    gw.soak(2 * SEC);
    append("3,3,300,-;ata1.00: error: { UNC }\n");
    let w = gw.wait_warning(10 * SEC, "/dev/sdz", "io_errors");
    assert_eq!(w["detail"], "kernel: ata1.00: error: { UNC }", "{w}");
    let (code, log) = stop_agent(&mut agent);
    assert_eq!(code, Some(0), "{log}");
}

/// The GPU rules against the same forgery, on the real kernel: processes name themselves
/// like NVIDIA's and amdgpu's lines (`NVRM: Xid (PCI:`, `NVRM: GPU 0000:`, `amdgpu
/// 0000:01:`, `[drm:amdgpu_job`) and segfault in files named for the rest of a driver's
/// words (`0000:01:00): 79, GPU has fallen off the bus.`), with a GPU at 0000:01:00.0 on
/// the fixture's PCI bus. The real privileged half streams the log; no GPU is warned. A
/// real disk failure after them is warned: they were read.
#[test]
fn a_forged_segfault_record_never_names_a_gpu() {
    let _g = Guard::new(180 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = FaultyDisk::new(dir.path(), 64 << 20, BAD_AT..BAD_AT + (64 << 10)) else {
        panic!("root, FUSE and loop devices are needed (CI runs as root)");
    };
    let _trace = ExceptionTrace::on();
    let bin = dir.path().join("bin");
    build_segfault(&bin);
    let sys = dir.path().join("sys");
    forgery_sysfs(&sys, &disk.name);
    let gpu = sys.join("bus/pci/devices/0000:01:00.0");
    fs::create_dir_all(&gpu).unwrap();
    fs::write(gpu.join("class"), "0x030000\n").unwrap();
    fs::write(gpu.join("vendor"), "0x10de\n").unwrap();

    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let socket = dir.path().join("priv.sock");
    let mut c = AgentConfig::new(gw.url(), &pki.ca_file);
    c.disks =
        format!("smartctl = \"\"\nscan_interval = \"60s\"\nio_error_quiet = \"1h\"\ninclude = [{:?}]\n", disk.name);
    c.paths_extra = format!(
        "sysfs = {:?}\nkmsg = \"/dev/kmsg\"\nprivileged_socket = {:?}\n",
        sys.display().to_string(),
        socket.display().to_string()
    );
    c.sections = "[probes]\nnvidia_smi = \"\"\n".into();
    let cfg = c.write(dir.path());
    let mut privileged = spawn_privileged(&cfg);
    wait_until(10 * SEC, "the privileged socket", || socket.exists());
    let mut agent = spawn_agent(&cfg, &[]);
    let conn = gw.wait_login(10 * SEC).0;
    let until = std::time::Instant::now() + 15 * SEC;
    while agent_info(&mut gw, conn)["data"]["event_sources"]["kmsg"] != "live (privileged half)" {
        assert!(std::time::Instant::now() < until, "the kernel log never went live");
        std::thread::sleep(ms(50));
    }
    let inventory = dir.path().join("state/gpus.json");
    wait_until(10 * SEC, "the GPU in the inventory", || {
        fs::read_to_string(&inventory).is_ok_and(|t| t.contains("0000:01:00.0"))
    });

    let mut klog = KernelLog::from_now();
    let forgeries = [
        ("NVRM: Xid (PCI:", "0000:01:00): 79, GPU has fallen off the bus."),
        ("NVRM: GPU 0000:", "01:00.0: GPU has fallen off the bus."),
        ("amdgpu 0000:01:", "00.0: amdgpu: GPU reset begin!"),
        ("[drm:amdgpu_job", "ring gfx timeout, signaled seq=1, emitted seq=2"),
        ("NVRM: Xid (0000", "segfault"),
    ];
    for (comm, file) in forgeries {
        assert!(comm.len() <= 15, "{comm:?} is longer than a task name");
        if file != "segfault" {
            fs::copy(bin.join("segfault"), bin.join(file)).unwrap();
        }
        let mut logged = None;
        for _ in 0..4 {
            let child = Command::new(bin.join(file)).arg(comm).status().unwrap();
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(child.signal(), Some(11), "{file} did not segfault");
            logged = klog.find(&format!("{comm}["), 6 * SEC);
            if logged.is_some() {
                break;
            }
        }
        let logged = logged.unwrap_or_else(|| panic!("the kernel never logged {comm:?}'s segfault"));
        assert!(logged.contains(&format!(" in {file}[")), "{logged}");
    }

    // Read in order: once the real error's warning is here, every forgery was read first.
    assert!(!disk.read(BAD_AT / 4096, 1), "the bad range fails");
    gw.wait_warning(10 * SEC, &disk.device(), "io_errors");
    agent_info(&mut gw, conn);
    for act in ["warning", "warning_cleared"] {
        assert!(gw.gpu_seen(act, "0000:01:00.0").is_empty(), "{:?}", gw.gpu_seen(act, "0000:01:00.0"));
    }
    let (code, log) = stop_agent(&mut agent);
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("GPU 0000:01:00.0 failed"), "{log}");
    let _ = stop_agent(&mut privileged);
}
