//! Attack review: a kernel error that reaches the monitor while a scan is under way, when
//! the agent is stopped before the monitor takes it in. The kernel log cursor is saved at
//! stop past that record, and the monitor's last act on stop (`finish`) takes queued events
//! without a scan, so the error is never warned: not now, not after the restart.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::*;

/// A fixture rig whose agent logs in and finishes its first scan; then sda's `size` becomes
/// a FIFO, so the next scan takes as long as the test wants (a stand-in for any slow
/// scan; the window is the scan's length).
struct Rig {
    dir: tempfile::TempDir,
    rig: std::path::PathBuf,
    kmsg: std::path::PathBuf,
    _pki: Pki,
    gw: Gateway,
    config: std::path::PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let rig = dir.path().join("rig");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rig");
        assert!(Command::new("cp").arg("-a").arg(&src).arg(&rig).status().unwrap().success());
        let kmsg = dir.path().join("kmsg.log");
        fs::write(&kmsg, "3,1,100,-;old record\n").unwrap();
        let pki = Pki::new(&["localhost"]);
        let gw = Gateway::start(&pki, Script::default());
        let mut c = AgentConfig::new(gw.url(), &pki.ca_file);
        c.disks = "smartctl = \"\"\nscan_interval = \"60s\"\n".into();
        c.paths_extra = format!(
            "sysfs = {:?}\nprocfs = {:?}\nrootfs = {:?}\nkmsg = {:?}\n",
            rig.join("sys").display().to_string(),
            rig.join("proc").display().to_string(),
            rig.display().to_string(),
            kmsg.display().to_string()
        );
        let config = c.write(dir.path());
        Rig { dir, rig, kmsg, _pki: pki, gw, config }
    }

    fn log(&self, records: &str) {
        OpenOptions::new().append(true).open(&self.kmsg).unwrap().write_all(records.as_bytes()).unwrap();
    }

    fn size(&self) -> std::path::PathBuf {
        self.rig.join("sys/block/sda/size")
    }

    /// Starts the agent; returns once its first scan is done, with the slow scan armed.
    fn start_then_slow_scans(&mut self) -> Reaped {
        let child = spawn_agent(&self.config, &[]);
        self.gw.wait_login(10 * SEC);
        self.gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
        fs::remove_file(self.size()).unwrap();
        assert!(Command::new("mkfifo").arg(self.size()).status().unwrap().success());
        child
    }

    /// Ends the slow scan (the FIFO opened for writing and closed: its read sees EOF) and
    /// puts the real file back.
    fn end_slow_scan(&self) {
        // Non-blocking: with no reader left (the agent was killed) there is nothing to end.
        use std::os::unix::fs::OpenOptionsExt;
        let _ = OpenOptions::new().write(true).custom_flags(libc_o_nonblock()).open(self.size());
        fs::remove_file(self.size()).unwrap();
        fs::write(self.size(), "7814037168\n").unwrap();
    }

    /// Restarts the agent and lets it run a few seconds; its log.
    fn restart(&mut self) -> String {
        let mut child = spawn_agent(&self.config, &[]);
        self.gw.wait_login(10 * SEC);
        let deadline = std::time::Instant::now() + 5 * SEC;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            if self.gw.next_event(left).is_none() {
                break;
            }
        }
        stop_agent(&mut child).1
    }

    fn cursor(&self) -> String {
        fs::read_to_string(self.dir.path().join("state/kmsg.cursor")).unwrap_or_default()
    }
}

fn libc_o_nonblock() -> i32 {
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}

#[test]
fn a_kernel_error_read_just_before_a_power_cut_is_warned_after_the_restart() {
    let _g = Guard::new(90 * SEC);
    let mut r = Rig::new();
    let mut child = r.start_then_slow_scans();
    // The cursor is written at most every 10 s: let them pass, as on any rig up for a while.
    std::thread::sleep(11 * SEC);
    r.log("3,2,200,-;I/O error, dev sda, sector 8 op 0x0:(READ)\n");
    std::thread::sleep(ms(1500));
    // Power cut while the monitor is still scanning.
    child.kill().unwrap();
    let (_, _, log1) = wait_exit(&mut child, 10 * SEC);
    let cursor = r.cursor();
    r.end_slow_scan();
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
    let mut child = r.start_then_slow_scans();
    // An error on nvme0n1 starts a scan, which blocks on the FIFO; then one on sda arrives
    // and waits in the monitor's queue.
    r.log("3,2,200,-;I/O error, dev nvme0n1, sector 0 op 0x0:(READ)\n");
    std::thread::sleep(ms(500));
    r.log("3,3,300,-;I/O error, dev sda, sector 8 op 0x0:(READ)\n");
    std::thread::sleep(ms(500));
    signal(&child, Signal::TERM);
    std::thread::sleep(ms(1000));
    r.end_slow_scan();
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

#[test]
fn a_kernel_error_read_again_after_a_crash_is_not_warned_twice() {
    let _g = Guard::new(90 * SEC);
    let mut r = Rig::new();
    let mut child = spawn_agent(&r.config, &[]);
    r.gw.wait_login(10 * SEC);
    r.gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
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
