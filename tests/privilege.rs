//! Privilege separation end to end, with the real binary. The network half holds no
//! capability and no disk group, cannot regain them, and neither can what it runs; it rides
//! out the privileged half's death and restart without losing a kernel line. The privileged
//! half does only what the agent needs: SMART for monitored disks and the kernel log's disk
//! records, to any local asker; it refuses everything else in bounded log lines, is not held
//! by slow or many peers, and keeps its socket: put back when deleted, never taken from a
//! live half, never followed through a link. As root (CI is); skipped with a message
//! otherwise.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Instant;

use common::privileged::{HEALTHY, ask, config, fake_smartctl};
use common::*;
use serde_json::{Value, json};

/// Both halves on a fixture rig, as the two units run them; the agent logged in.
struct Split {
    dir: tempfile::TempDir,
    /// Its CA file is in the config the privileged half rereads.
    _pki: Pki,
    gw: Gateway,
    conn: usize,
    cfg: PathBuf,
    privileged: Reaped,
    agent: Reaped,
    calls: PathBuf,
    /// The recorded kernel log (`paths.kmsg`): owned by nobody, mode 0600, so only the
    /// privileged half (root with its capabilities) can open it, not the network half.
    kmsg: PathBuf,
}

impl Split {
    fn start(sda: &str, sda_exit: i32) -> Split {
        Split::start_with(sda, sda_exit, "", false)
    }

    /// `agent_first`: the agent starts before the privileged half has bound its socket.
    fn start_with(sda: &str, sda_exit: i32, disks_extra: &str, agent_first: bool) -> Split {
        let dir = tempfile::tempdir().unwrap();
        let rig = rig_copy(dir.path());
        let (smartctl, calls) = fake_smartctl(dir.path(), sda, sda_exit);
        let socket = dir.path().join("priv.sock");
        let kmsg = dir.path().join("kmsg.log");
        // An old record: read from the end, never reported.
        fs::write(&kmsg, "3,1,100,-;I/O error, dev nvme0n1, sector 0 op 0x0:(READ)\n").unwrap();
        fs::set_permissions(&kmsg, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Command::new("chown").arg("nobody").arg(&kmsg).status().unwrap().success());
        let pki = Pki::new(&["localhost"]);
        let mut gw = Gateway::start(&pki, Script::default());
        let mut c = config(gw.url(), &pki, &rig, &smartctl, socket.to_str().unwrap());
        c.disks += disks_extra;
        c.paths_extra += &format!("kmsg = {:?}\n", kmsg.display().to_string());
        let cfg = c.write(dir.path());
        let (privileged, agent, conn) = if agent_first {
            // As under its unit, the agent cannot open the kernel log even before its drop
            // (there: ProtectKernelLogs= and no CAP_SYSLOG; here: root without the DAC
            // overrides, the file being nobody's and 0600).
            let agent = Reaped(
                Command::new("setpriv")
                    .arg("--bounding-set=-dac_override,-dac_read_search")
                    .arg("--")
                    .arg(agent_command().get_program())
                    .args(agent_command().get_args())
                    .arg("--config")
                    .arg(&cfg)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .env_remove("JOURNAL_STREAM")
                    .spawn()
                    .unwrap(),
            );
            let (conn, _) = gw.wait_login(10 * SEC);
            (spawn_privileged(&cfg), agent, conn)
        } else {
            let privileged = spawn_privileged(&cfg);
            wait_until(10 * SEC, "the socket", || socket.exists());
            let agent = spawn_agent(&cfg, &[]);
            (privileged, agent, gw.wait_login(10 * SEC).0)
        };
        Split { dir, _pki: pki, gw, conn, cfg, privileged, agent, calls, kmsg }
    }

    fn log_kernel(&self, records: &str) {
        fs::OpenOptions::new().append(true).open(&self.kmsg).unwrap().write_all(records.as_bytes()).unwrap();
    }

    /// `event_sources.kmsg` in `get_agent_info`.
    fn kmsg_source(&mut self) -> String {
        let code = "info";
        self.gw.send_json(self.conn, json!({"act":"get_agent_info","act_code":code,"client_id":"c","reqtype":"post"}));
        match self.gw.wait_for(
            5 * SEC,
            "agent info",
            |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == code),
        ) {
            Event::Received { msg, .. } => {
                msg["data"]["event_sources"]["kmsg"].as_str().unwrap_or_default().to_string()
            }
            _ => unreachable!(),
        }
    }

    /// Once the stream is up (only then is a new line "new"), a kernel error line for sda
    /// and its io_errors warning.
    fn sda_error_through_the_stream(&mut self) {
        self.wait_kmsg_source("live (privileged half)");
        self.log_kernel("3,2,200,-;I/O error, dev sda, sector 8 op 0x0:(READ)\n");
        self.gw.wait_warning(10 * SEC, "/dev/sda", "io_errors");
    }

    /// Stops both halves; the agent must exit cleanly. Its log.
    fn stop_both(&mut self) -> String {
        let (code, log) = stop_agent(&mut self.agent);
        let _ = stop_agent(&mut self.privileged);
        assert_eq!(code, Some(0), "{log}");
        log
    }

    fn wait_kmsg_source(&mut self, want: &str) {
        let until = Instant::now() + 15 * SEC;
        loop {
            let seen = self.kmsg_source();
            if seen == want {
                return;
            }
            assert!(Instant::now() < until, "event_sources.kmsg is {seen:?}, not {want:?}");
            thread::sleep(ms(50));
        }
    }
}

fn status_line(pid: u32, key: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("{key} not in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn disk_gid() -> u32 {
    let group = fs::read_to_string("/etc/group").unwrap();
    group
        .lines()
        .find_map(|l| l.strip_prefix("disk:x:").and_then(|r| r.split(':').next()).and_then(|g| g.parse().ok()))
        .expect("a disk group in /etc/group")
}

fn get_disk_info(gw: &mut Gateway, conn: usize, code: &str) -> Value {
    gw.send_json(conn, json!({"act":"get_disk_info","act_code":code,"client_id":"c","reqtype":"post"}));
    match gw.wait_for(5 * SEC, "disk info", |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == code)) {
        // The answer comes on the connection asked: the agent did not reconnect.
        Event::Received { conn: on, msg, .. } => {
            assert_eq!(on, conn, "answered on another connection");
            msg
        }
        _ => unreachable!(),
    }
}

fn sda(info: &Value) -> Value {
    info["data"]["disks"].as_array().unwrap().iter().find(|d| d["name"] == "sda").cloned().expect("sda listed")
}

#[test]
fn the_network_half_holds_no_capability_no_disk_group_and_cannot_regain_them() {
    if !root() {
        return;
    }
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    let (smartctl, _) = fake_smartctl(dir.path(), HEALTHY, 0);
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let cfg = config(gw.url(), &pki, &rig, &smartctl, "").write(dir.path());
    // Started as root with every capability and the disk group, as a careless hand or an
    // old unit would: the binary gives all of it up itself.
    let gid = disk_gid();
    let mut agent = Reaped(
        Command::new("setpriv")
            .args(["--groups", &gid.to_string(), "--"])
            .arg(agent_command().get_program())
            .args(agent_command().get_args())
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    gw.wait_login(10 * SEC);
    let pid = agent.id();
    for key in ["CapEff", "CapPrm", "CapAmb", "CapInh"] {
        assert_eq!(status_line(pid, key), "0000000000000000", "{key} of the network half");
    }
    assert_eq!(status_line(pid, "NoNewPrivs"), "1");
    let groups = status_line(pid, "Groups");
    assert!(!groups.split_whitespace().any(|g| g == gid.to_string()), "disk group {gid} still held: {groups}");
    // The threads too (the drop came before any was made).
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: u32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        // A short-lived thread (a worker) may have ended since the listing: nothing to check.
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")) else { continue };
        assert!(status.contains("CapEff:\t0000000000000000"), "thread {tid}: {status}");
    }
    let (code, log) = stop_agent(&mut agent);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("dropped capabilities"), "{log}");
}

#[test]
fn the_network_half_and_its_children_cannot_open_a_block_device_node() {
    let _g = Guard::new(30 * SEC);
    let Some(nobody) = nobody::Nobody::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let out = Command::new("losetup").args(["-f", "--show"]).arg(&image).output().expect("losetup (util-linux)");
    let node = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success() && !node.is_empty(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
    /// Detaches the loop device however the test ends.
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let _detach = Detach(node.clone());
    let rig = rig_copy(dir.path());
    // The "smartctl" the agent runs in-process (no privileged socket) tries the node: a
    // child inherits exactly the agent's credentials.
    let tries = dir.path().join("tries");
    let smartctl = dir.path().join("smartctl");
    fs::write(
        &smartctl,
        format!(
            "#!/bin/sh\nif head -c 1 {node} >/dev/null 2>&1; then echo opened >> {t}; else echo denied >> {t}; fi\n\
             echo '{{\"smart_status\":{{\"passed\":true}}}}'\n",
            t = tries.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&smartctl, fs::Permissions::from_mode(0o755)).unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut c = config("wss://localhost:1/".into(), &pki, &rig, &smartctl, "");
    c.disks += "include = [\"sda\"]\n";
    let cfg = c.write(dir.path());
    assert!(Command::new("chown").args(["-R", "nobody"]).arg(dir.path()).status().unwrap().success());
    // The old unit's credentials: an unprivileged user with capabilities in the ambient set
    // (DAC_OVERRIDE stands in for the disk group, which only the unit can withhold).
    let caps = ["--inh-caps=+dac_override,+sys_rawio,+sys_admin", "--ambient-caps=+dac_override,+sys_rawio,+sys_admin"];
    // Control: with those credentials, the node opens.
    let mut control = nobody::as_nobody(&caps);
    control.arg(&smartctl).args(["--json", "-H", "-A", "/dev/sda"]).stdout(Stdio::null());
    assert!(control.status().unwrap().success());
    let out = nobody.command(&caps).arg("--config").arg(&cfg).args(["probe", "get_disk_info"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(fs::read_to_string(&tries).unwrap(), "opened\ndenied\n", "control, then under the agent: {log}");
}

#[test]
fn requests_for_unmonitored_path_like_oversized_or_malformed_names_are_refused_logged_and_nothing_runs() {
    if !root() {
        return;
    }
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    let (smartctl, calls) = fake_smartctl(dir.path(), HEALTHY, 0);
    let socket = dir.path().join("priv.sock");
    let pki = Pki::new(&["localhost"]);
    let mut c = config("wss://localhost:1/".into(), &pki, &rig, &smartctl, socket.to_str().unwrap());
    c.disks += "exclude = [\"sdb\"]\n";
    let cfg = c.write(dir.path());
    let mut privileged = spawn_privileged(&cfg);
    wait_until(10 * SEC, "the socket", || socket.exists());
    let refused = [
        (b"smart sdz\n".to_vec(), "refused not-monitored"), // not in /sys/block
        (b"smart sdb\n".to_vec(), "refused not-monitored"), // excluded
        (b"smart loop0\n".to_vec(), "refused not-monitored"), // not included
        (b"smart ../sda\n".to_vec(), "refused bad-name"),
        (b"smart /dev/sda\n".to_vec(), "refused bad-name"),
        (format!("smart {}\n", "a".repeat(1024)).into_bytes(), "refused oversized"),
        (format!("smart {}\n", "a".repeat(40)).into_bytes(), "refused bad-name"),
        (b"smart sda; reboot\n".to_vec(), "refused malformed"),
        (b"exec /bin/sh\n".to_vec(), "refused malformed"),
        (vec![b'x'; 4096], "refused oversized"),
        (b"kmsg ../etc/passwd 1\n".to_vec(), "refused malformed"),
        (b"kmsg 4f9c2d1e -1\n".to_vec(), "refused malformed"),
        (b"kmsg end /dev/sda\n".to_vec(), "refused malformed"),
    ];
    for (request, expected) in &refused {
        assert_eq!(ask(&socket, request), *expected, "{:?}", String::from_utf8_lossy(request));
    }
    assert!(!calls.exists(), "smartctl was run: {:?}", fs::read_to_string(&calls));
    // The same socket does run it for a monitored disk.
    assert!(ask(&socket, b"smart sda\n").starts_with("output 0 "));
    assert_eq!(fs::read_to_string(&calls).unwrap(), "/dev/sda\n");
    let (_, log) = stop_agent(&mut privileged);
    // Each logged, escaped, up to five a minute; the rest are counted, not logged.
    assert_eq!(log.matches("refused ").count(), 5, "{log}");
    assert!(log.contains("; 8 refusals were not logged"), "{log}");
    assert!(log.contains("refused \"smart ../sda\\n\""), "escaped in the log: {log}");
}

#[test]
fn with_the_privileged_half_killed_the_agent_stays_connected_smart_degrades_and_then_recovers() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let Split { dir: _dir, _pki, mut gw, conn, cfg, mut privileged, mut agent, calls, .. } = Split::start(HEALTHY, 0);
    let before = sda(&get_disk_info(&mut gw, conn, "d1"));
    assert_eq!(before["smart"]["temperature_celsius"], 33, "{before}");
    assert!(fs::read_to_string(&calls).unwrap().contains("/dev/sda"), "smartctl ran in the privileged half");

    privileged.kill().unwrap();
    privileged.wait().unwrap();
    // smart_interval is 1 s: the next answer asks again and finds nobody.
    thread::sleep(ms(1100));
    let during = sda(&get_disk_info(&mut gw, conn, "d2"));
    assert_eq!(during["smart"], Value::Null, "{during}");
    let why = during["smart_error"].as_str().unwrap_or_default();
    assert!(why.contains("privileged half") && why.contains("unreachable"), "{during}");

    let mut privileged = spawn_privileged(&cfg);
    let mut after = Value::Null;
    wait_until(15 * SEC, "SMART back", || {
        after = sda(&get_disk_info(&mut gw, conn, "d3"));
        after["smart"]["temperature_celsius"] == 33
    });
    assert!(after.get("smart_error").is_none(), "{after}");
    let (code, log) = stop_agent(&mut agent);
    let _ = stop_agent(&mut privileged);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(log.matches("SMART data is null").count(), 1, "said once: {log}");
    assert!(log.contains("SMART data is back"), "{log}");
}

#[test]
fn a_failed_smart_check_through_the_privileged_half_raises_smart_failed() {
    if !root() {
        return;
    }
    let _g = Guard::new(30 * SEC);
    let Split { dir: _dir, _pki, mut gw, mut privileged, mut agent, calls, .. } =
        Split::start(r#"{"smart_status":{"passed":false}}"#, 8);
    let w = gw.wait_warning(10 * SEC, "/dev/sda", "smart_failed");
    assert_eq!(w["detail"], "SMART overall health check of /dev/sda failed");
    let (code, log) = stop_agent(&mut agent);
    let _ = stop_agent(&mut privileged);
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("in this process"), "smartctl ran in the agent: {log}");
    assert!(fs::read_to_string(&calls).unwrap().contains("/dev/sda"));
}

#[test]
fn a_kernel_io_error_read_by_the_privileged_half_raises_io_errors_in_an_agent_that_cannot_open_the_log() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let mut split = Split::start(HEALTHY, 0);
    // Only once the stream is up is a new line "new" (read from the end before).
    split.wait_kmsg_source("live (privileged half)");
    split.log_kernel("3,2,200,-;Buffer I/O error on dev sda1, logical block 12, async page read\n DEVICE=b8:1\n");
    let w = split.gw.wait_warning(10 * SEC, "/dev/sda", "io_errors");
    assert_eq!(w["detail"], "kernel: Buffer I/O error on dev sda1, logical block 12, async page read");
    assert!(split.gw.warnings_seen("/dev/nvme0n1").is_empty(), "the old record was not reported");
    let log = split.stop_both();
    assert!(log.contains("kernel log read through the privileged half"), "{log}");
    assert!(!log.contains("in this process"), "{log}");
    assert!(!log.contains("kernel log unreadable"), "{log}");
}

#[test]
fn with_the_privileged_half_restarted_between_two_kernel_lines_both_reach_the_agent_once() {
    if !root() {
        return;
    }
    let _g = Guard::new(90 * SEC);
    // A short quiet period: a line read twice after the restart would be a new warning.
    let mut split = Split::start_with(HEALTHY, 0, "io_error_quiet = \"1s\"\n", false);
    split.sda_error_through_the_stream();

    split.privileged.kill().unwrap();
    split.privileged.wait().unwrap();
    split.wait_kmsg_source("off: privileged half unreachable");
    // Logged while nobody reads the log, and after sda's episode is over.
    thread::sleep(ms(1500));
    split.log_kernel("3,3,300,-;I/O error, dev nvme0n1, sector 16 op 0x0:(READ)\n");
    split.privileged = spawn_privileged(&split.cfg);
    split.wait_kmsg_source("live (privileged half)");
    // The status queries above may have taken the warning in already.
    let until = Instant::now() + 10 * SEC;
    while !split.gw.warnings_seen("/dev/nvme0n1").iter().any(|w| w["reason"] == "io_errors") {
        assert!(Instant::now() < until, "no io_errors for nvme0n1 after the restart");
        split.kmsg_source();
        thread::sleep(ms(50));
    }
    thread::sleep(ms(1500));
    // A query round trip takes in every message sent before its answer.
    assert_eq!(split.kmsg_source(), "live (privileged half)");
    let io_errors = |w: &Vec<Value>| w.iter().filter(|w| w["reason"] == "io_errors").count();
    let (sda, nvme) = (split.gw.warnings_seen("/dev/sda"), split.gw.warnings_seen("/dev/nvme0n1"));
    assert_eq!((io_errors(&sda), io_errors(&nvme)), (1, 1), "{sda:?} {nvme:?}");
    let log = split.stop_both();
    assert!(log.contains("the privileged half answers again"), "{log}");
}

#[test]
fn an_agent_started_before_the_privileged_half_waits_for_it_and_then_reads_the_kernel_log_through_it() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    // Both units start together: the socket may come after the agent's start.
    let mut split = Split::start_with(HEALTHY, 0, "", true);
    split.sda_error_through_the_stream();
    let log = split.stop_both();
    assert!(!log.contains("reading the kernel log in this process"), "{log}");
    assert!(log.contains("kernel log read through the privileged half"), "{log}");
}

#[test]
fn a_kernel_error_streamed_by_the_privileged_half_just_before_a_power_cut_is_warned_after_the_restart() {
    if !root() {
        return;
    }
    let _g = Guard::new(90 * SEC);
    let mut split = Split::start(HEALTHY, 0);
    split.wait_kmsg_source("live (privileged half)");
    // The kernel log position was once written every 10 s whatever the monitor had
    // recorded: let those pass, so a position written too early would show.
    thread::sleep(11 * SEC);
    // sda's size a FIFO: the next scan (every 100 ms) blocks until the test ends it, so the
    // error below waits in the monitor's queue.
    let slow = SlowScan::arm(&split.dir.path().join("rig"));
    thread::sleep(ms(500));
    split.log_kernel("3,2,200,-;I/O error, dev sda, sector 8 op 0x0:(READ)\n");
    thread::sleep(ms(1500));
    split.agent.kill().unwrap();
    split.agent.wait().unwrap();
    let cursor = fs::read_to_string(split.dir.path().join("state/kmsg.cursor")).unwrap_or_default();
    slow.end();
    assert!(split.gw.warnings_seen("/dev/sda").is_empty(), "the first run never took the error in");
    split.agent = spawn_agent(&split.cfg, &[]);
    split.conn = split.gw.wait_login(10 * SEC).0;
    let until = Instant::now() + 10 * SEC;
    while !split.gw.warnings_seen("/dev/sda").iter().any(|w| w["reason"] == "io_errors") {
        assert!(Instant::now() < until, "sda's I/O error was never warned; cursor at the cut: {cursor:?}");
        split.kmsg_source();
        thread::sleep(ms(50));
    }
    split.stop_both();
}

#[test]
#[cfg(target_arch = "x86_64")]
fn the_agent_starts_under_the_units_seccomp_filter_that_refuses_capset() {
    let _g = Guard::new(30 * SEC);
    let Some(nobody) = nobody::Nobody::new() else { return };
    // Installs the filter and execs the agent; python3 is a test dependency (.ci/run).
    let python = Path::new("/usr/bin/python3");
    assert!(python.exists(), "this test needs /usr/bin/python3 (apt-get install python3)");
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    let (smartctl, _) = fake_smartctl(dir.path(), HEALTHY, 0);
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let cfg = config(gw.url(), &pki, &rig, &smartctl, "").write(dir.path());
    // As rig-agent.service runs it: an unprivileged user with no capability at all, and
    // capset refused with EPERM (SystemCallFilter=~@privileged): the drop must not need it.
    fs::set_permissions(&pki.ca_file, fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir_all(dir.path().join("state")).unwrap();
    let (token, state) = (dir.path().join("token"), dir.path().join("state"));
    nobody::Nobody::give(&[dir.path(), pki.dir.path()], &[&token, &state]);
    let filter = nobody.reachable(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seccomp/deny_capset.py"));
    let mut cmd = nobody::as_nobody(&["--inh-caps=-all", "--bounding-set=-all"]);
    cmd.arg(python).arg(&filter).args(nobody.agent()).arg("--config").arg(&cfg).stdout(Stdio::null());
    let mut agent = spawn_logged(&mut cmd);
    gw.wait_login(10 * SEC);
    let (code, log) = stop_agent(&mut agent);
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn a_privileged_half_that_cannot_read_the_kernel_log_is_asked_again_rarely_and_says_so_once() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let mut split = Split::start(HEALTHY, 0);
    split.wait_kmsg_source("live (privileged half)");
    // The log goes away (as under a unit without CAP_SYSLOG): the next stream is refused.
    fs::remove_file(&split.kmsg).unwrap();
    split.privileged.kill().unwrap();
    split.privileged.wait().unwrap();
    split.privileged = spawn_privileged(&split.cfg);
    let until = Instant::now() + 15 * SEC;
    while !split.kmsg_source().starts_with("off: the privileged half cannot read the kernel log") {
        assert!(Instant::now() < until, "the kernel log source never went off");
        thread::sleep(ms(50));
    }
    // Asked every second before: three more refusals, three more warnings, in this wait.
    thread::sleep(ms(3500));
    let (_, privileged_log) = stop_agent(&mut split.privileged);
    let (code, log) = stop_agent(&mut split.agent);
    assert_eq!(code, Some(0), "{log}");
    let said = privileged_log.lines().filter(|l| l.contains("WARN") && l.contains("kernel log unreadable")).count();
    assert_eq!(said, 1, "{privileged_log}");
}

/// That half never needs the token or the TLS keys, so it never reads them: with both gone
/// (or, as under its unit, out of its reach) it still serves.
#[test]
fn the_privileged_half_serves_without_reading_the_token_or_the_ca_file() {
    if !root() {
        return;
    }
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    let (smartctl, calls) = fake_smartctl(dir.path(), HEALTHY, 0);
    let socket = dir.path().join("priv.sock");
    let pki = Pki::new(&["localhost"]);
    let cfg = config("wss://localhost:1/".into(), &pki, &rig, &smartctl, socket.to_str().unwrap()).write(dir.path());
    fs::remove_file(dir.path().join("token")).unwrap();
    let ca = pki.ca_file.clone();
    fs::rename(&ca, dir.path().join("ca.moved")).unwrap();
    let mut privileged = spawn_privileged(&cfg);
    wait_until(10 * SEC, "the socket", || socket.exists() || privileged.try_wait().unwrap().is_some());
    assert!(ask(&socket, b"smart sda\n").starts_with("output 0 "));
    assert_eq!(fs::read_to_string(&calls).unwrap(), "/dev/sda\n");
    let (_, log) = stop_agent(&mut privileged);
    assert!(!log.contains("token"), "{log}");
}

/// A clone in a private directory (under /root, 0700) as CI and developers make it: the
/// user the agent runs as cannot reach the binary there, and the tests that run it as that
/// user must still run it, not fail or skip.
#[test]
fn the_tests_run_the_agent_as_another_user_even_from_a_private_checkout() {
    if !root() {
        return;
    }
    let _g = Guard::new(30 * SEC);
    let private = tempfile::tempdir().unwrap();
    fs::set_permissions(private.path(), fs::Permissions::from_mode(0o700)).unwrap();
    // The agent's command line with its binary (under qemu: the emulated one) moved in.
    let agent = agent_command();
    let words: Vec<std::ffi::OsString> = std::iter::once(agent.get_program())
        .chain(agent.get_args())
        .map(|w| match Path::new(w) {
            p if p.is_file() => {
                let inside = private.path().join(p.file_name().unwrap());
                fs::copy(p, &inside).unwrap();
                inside.into_os_string()
            }
            _ => w.to_os_string(),
        })
        .collect();
    let mut in_private = Command::new(&words[0]);
    in_private.args(&words[1..]);
    // Started by a program that runs as that user (a shell here, python with the seccomp
    // filter in the unit test): setpriv itself execs with root's capabilities still in
    // effect, which would hide the problem.
    let runs = |agent: &[std::ffi::OsString]| {
        let mut cmd = nobody::as_nobody(&[]);
        cmd.args(["/bin/sh", "-c", "exec \"$@\" --version", "sh"]).args(agent);
        cmd.output().unwrap().status.success()
    };
    assert!(!runs(&words), "control: uid {} reached a binary in a 0700 directory", nobody::UID);
    assert!(runs(&nobody::Nobody::for_agent(&in_private).agent()));
}

#[test]
fn run_by_hand_as_its_user_the_agent_does_not_call_the_users_own_group_a_grant() {
    if !root() {
        return;
    }
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    let (smartctl, _) = fake_smartctl(dir.path(), HEALTHY, 0);
    let pki = Pki::new(&["localhost"]);
    let cfg = config("wss://localhost:9/ws".into(), &pki, &rig, &smartctl, "").write(dir.path());
    let (token, state) = (dir.path().join("token"), dir.path().join("state"));
    fs::create_dir_all(&state).unwrap();
    nobody::Nobody::give(&[dir.path()], &[&token, &state]);
    // `runuser -u USER` sets the user's groups by initgroups: its primary group is listed
    // as supplementary too. setpriv does the same here without needing a named user.
    let nobody = nobody::Nobody::for_agent(&agent_command());
    let uid = nobody::UID;
    let probe_as = |groups: String| {
        let out = Command::new("setpriv")
            .args([format!("--reuid={uid}"), format!("--regid={uid}"), "--groups".into(), groups, "--".into()])
            .args(nobody.agent())
            .arg("--config")
            .arg(&cfg)
            .args(["probe", "get_agent_info"])
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let own = probe_as(uid.to_string());
    assert!(!own.contains("supplementary groups"), "{own}");
    let more = probe_as(format!("{uid},100"));
    assert!(more.contains("supplementary groups [100] kept"), "a real extra group is still named: {more}");
}

/// Asks for the kernel log as any local process of the service's uid could (`request`),
/// and reads the records that come within `for_`.
fn read_kmsg_stream(
    socket: &Path,
    request: &str,
    for_: std::time::Duration,
) -> Vec<rig_agent::kernel_log::record::Record> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s.set_read_timeout(Some(ms(200))).unwrap();
    let mut bytes = Vec::new();
    let mut splitter = rig_agent::kernel_log::record::Splitter::default();
    let mut records = Vec::new();
    let until = Instant::now() + for_;
    let mut buf = [0u8; 65536];
    while Instant::now() < until {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if let Some(body) = bytes.strip_prefix(b"kmsg\n") {
            records.extend(splitter.feed(body));
            bytes = b"kmsg\n".to_vec();
        }
    }
    records.extend(splitter.flush());
    records
}

/// Any process of the service's uid (an action's command among them) may ask the privileged
/// half for the kernel log; it gets only what the agent acts on, a disk's failure, whole.
/// Everything else comes as its header alone: the sequence stays continuous.
#[test]
fn the_kernel_log_stream_carries_only_the_records_the_agent_needs() {
    if !root() {
        return;
    }
    let _g = Guard::new(30 * SEC);
    let (dir, mut privileged, socket) = privileged::alone(None);
    let io_error = "I/O error, dev sda, sector 8 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2";
    fs::write(
        dir.path().join("kmsg.log"),
        format!(
            "6,1,100,-;Command line: BOOT_IMAGE=/vmlinuz root=UUID=9a3e ro luks.key=/dev/disk/by-id/usb-K3Y\n\
             6,2,200,-;usb 1-1: SerialNumber: 4C530001090911117253\n SUBSYSTEM=usb\n DEVICE=c189:1\n\
             3,3,300,-;{io_error}\n\
             14,4,400,-;sshd[812]: Accepted password for root from 10.0.0.9\n\
             6,5,500,-;XFS (sda): [4000]: segfault at 0 ip 0 sp 0 error 6 in timeout[1180,0+1000]\n"
        ),
    )
    .unwrap();
    let records = read_kmsg_stream(&socket, "kmsg 4f9c2d1e-7a3b-4c5d-9e8f-0a1b2c3d4e5f 0\n", 2 * SEC);
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "every record, in order, none left out");
    for r in &records {
        if r.seq == 3 {
            assert_eq!(r.message, io_error);
        } else {
            assert!(r.message.is_empty() && r.device.is_none() && r.subsystem.is_none(), "{r:?}");
        }
    }
    let _ = stop_agent(&mut privileged);
}

/// The same on this machine's real kernel log, from its oldest record: whatever the ring
/// holds (boot lines, other tests' devices), no message goes out that no disk rule needs.
#[test]
fn the_real_kernel_log_streamed_to_any_asker_carries_no_record_the_agent_does_not_need() {
    if !root() {
        return;
    }
    let _g = Guard::new(30 * SEC);
    let (_dir, mut privileged, socket) = privileged::alone(Some("/dev/kmsg"));
    // The half reads the boot id under the fixture's procfs: the fixture's, from record 0.
    let records = read_kmsg_stream(&socket, "kmsg 4f9c2d1e-7a3b-4c5d-9e8f-0a1b2c3d4e5f 0\n", 3 * SEC);
    assert!(records.len() > 10, "the ring holds records: {}", records.len());
    // In order. (Continuity is the recorded-log test's: here other tests' kernel lines may
    // overrun the ring or the socket while this one reads.)
    assert!(records.windows(2).all(|w| w[1].seq > w[0].seq), "out of order");
    let whole: Vec<_> = records.iter().filter(|r| !r.message.is_empty()).collect();
    for r in &whole {
        assert!(rig_agent::kernel_log::needed(r), "forwarded whole: {r:?}");
    }
    let _ = stop_agent(&mut privileged);
}

/// Opens a kernel log stream as any process of the service's uid could; once its header
/// came.
fn open_kmsg_stream(socket: &Path) -> UnixStream {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(b"kmsg end\n").unwrap();
    s.set_read_timeout(Some(5 * SEC)).unwrap();
    let mut header = [0u8; 5];
    s.read_exact(&mut header).unwrap();
    assert_eq!(&header, b"kmsg\n");
    s
}

/// Streams live as long as their reader; requests are short. Twenty streams held open do
/// not take the slots SMART requests need: at most two stay open (the newest; the agent,
/// replaced, asks again and resumes after its last record), and `smart` is answered.
#[test]
fn kernel_log_streams_held_open_never_starve_smart_requests() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let (_dir, mut privileged, socket) = privileged::alone(None);
    let streams: Vec<UnixStream> = (0..20).map(|_| open_kmsg_stream(&socket)).collect();
    assert!(ask(&socket, b"smart sda\n").starts_with("output 0 "), "smart was not answered");
    // The replaced streams were ended by the privileged half; the two newest are open.
    let ended = |s: &UnixStream| {
        s.set_read_timeout(Some(ms(300))).unwrap();
        matches!((&*s).read(&mut [0u8; 64]), Ok(0))
    };
    let open: Vec<usize> = streams.iter().enumerate().filter(|(_, s)| !ended(s)).map(|(i, _)| i).collect();
    assert_eq!(open, [18, 19], "the newest two streams stay open");
    let (_, log) = stop_agent(&mut privileged);
    let said = log.lines().filter(|l| l.contains("kernel log streams open")).count();
    assert!(said <= 5, "{said} lines: {log}");
}

/// Connections past the request slots, and malformed requests, are refused; 200 of each
/// log a handful of lines and a count, not 200.
#[test]
fn two_hundred_refused_connections_log_a_bounded_number_of_lines() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let (_dir, mut privileged, socket) = privileged::alone(None);
    for _ in 0..200 {
        assert_eq!(ask(&socket, b"exec /bin/sh\n"), "refused malformed");
    }
    // Sixteen peers that say nothing hold every request slot (for 2 s each at most).
    let silent: Vec<UnixStream> = (0..16).map(|_| UnixStream::connect(&socket).unwrap()).collect();
    thread::sleep(ms(300));
    for _ in 0..200 {
        assert_eq!(ask(&socket, b"smart sda\n"), "", "a connection past the slots is closed");
    }
    drop(silent);
    // The slots come back: a request is answered again.
    wait_until(10 * SEC, "an answer", || ask(&socket, b"smart sda\n").starts_with("output 0 "));
    let (_, log) = stop_agent(&mut privileged);
    let lines = log.lines().filter(|l| l.contains("refused") || l.contains("requests already running")).count();
    assert!(lines <= 5, "{lines} lines for 400 refusals: {log}");
    assert!(log.contains(&format!("; {} refusals were not logged", 400 - lines)), "the rest counted: {log}");
}

/// REQUEST_TIMEOUT (2 s) is how long a peer may take to send its whole request line, not
/// each read of it: a peer sending one byte a second would otherwise hold its slot for as
/// long as its 128-byte line lasts, and sixteen such peers would hold every slot while the
/// network half's own SMART request was closed unanswered ("16 requests already running").
#[test]
fn peers_trickling_their_request_a_byte_a_second_do_not_hold_the_privileged_half_past_its_request_timeout() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, socket) = privileged::config_alone(dir.path(), None);
    let _privileged = spawn_privileged(&cfg);
    assert!(privileged::serves_within(&socket, 10 * SEC), "serves before the tricklers come");

    let slow: Vec<_> = (0..16)
        .map(|_| {
            let socket = socket.clone();
            thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                // A byte a second (under the 2 s timeout of each read) for 30 s: a line
                // that never ends. Stops when the privileged half has closed it.
                for _ in 0..30 {
                    if s.write_all(b"s").is_err() {
                        return;
                    }
                    thread::sleep(SEC);
                }
            })
        })
        .collect();
    thread::sleep(ms(500));
    // Past the 2 s every trickler must be gone; asked until 15 s, while they still trickle.
    let until = Instant::now() + 15 * SEC;
    let mut answers = Vec::new();
    loop {
        let answer = ask(&socket, b"smart sda\n");
        if answer.starts_with("output 0 ") {
            break;
        }
        answers.push(answer);
        assert!(Instant::now() < until, "the real request was not answered while the tricklers ran: {answers:?}");
        thread::sleep(ms(500));
    }
    drop(slow);
}

/// Someone removes the socket (`rm -rf /run/rig-agent-privileged/*`, a tmpfiles clean-up)
/// while the privileged half runs. A process listening on a name that no longer exists is
/// never reached again: the network half would report SMART as null until somebody
/// restarted the privileged half, while `systemctl status` showed it running. The half
/// notices and puts its socket back.
#[test]
fn a_privileged_socket_deleted_while_the_half_runs_comes_back() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, socket) = privileged::config_alone(dir.path(), None);
    let mut child = spawn_privileged(&cfg);
    assert!(privileged::serves_within(&socket, 10 * SEC), "serves before the deletion");
    fs::remove_file(&socket).unwrap();
    let back = privileged::serves_within(&socket, 15 * SEC);
    let log = take_log(&mut child.0);
    assert!(back, "the socket was not put back within 15 s; privileged half's log:\n{log}");
    assert!(child.0.try_wait().unwrap().is_none(), "the half keeps running:\n{log}");
}

/// A second `rig-agent privileged` on the same path (run by hand as root beside the unit,
/// as the README suggests for a tarball install, or a unit and a leftover) must not remove
/// the first one's live socket and bind its own: the first would live on unreachable, and
/// once the second stopped nothing would answer any more. A live socket is another half
/// serving: the second refuses to start and leaves the first one in place.
#[test]
fn a_second_privileged_half_on_the_same_path_does_not_take_the_socket_of_a_live_one() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, socket) = privileged::config_alone(dir.path(), None);
    let first = spawn_privileged(&cfg);
    assert!(privileged::serves_within(&socket, 10 * SEC), "the first half serves");
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::symlink_metadata(p).unwrap());
    let before = inode(&socket);

    let mut second = spawn_privileged(&cfg);
    let until = Instant::now() + 10 * SEC;
    let exited = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= until {
            break None;
        }
        thread::sleep(ms(50));
    };
    let log = take_log(&mut second);
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(inode(&socket), before, "the second half replaced the live socket:\n{log}");
    assert!(exited.is_some_and(|s| !s.success()), "the second half should refuse and exit non-zero: {exited:?}\n{log}");
    assert!(log.contains("already"), "the refusal says another half serves there:\n{log}");
    drop(second);
    assert!(privileged::serves_within(&socket, 5 * SEC), "the first half still serves");
    drop(first);
}

/// A symbolic link (to someone else's file) or a directory at the socket's path is refused
/// (exit 1), never followed nor removed; once the path is free the half binds.
#[test]
fn a_symlink_or_a_directory_at_the_socket_path_is_refused_and_left_alone() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, socket) = privileged::config_alone(dir.path(), None);
    let victim = dir.path().join("victim");
    fs::write(&victim, "keep me").unwrap();

    // A symlink at the path: refused, the target untouched.
    std::os::unix::fs::symlink(&victim, &socket).unwrap();
    let mut c = spawn_privileged(&cfg);
    let (code, _, log) = wait_exit(&mut c, 10 * SEC);
    assert_eq!(code, Some(1), "{log}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(fs::symlink_metadata(&socket).unwrap().file_type().is_symlink(), "the link is left for the operator");
    fs::remove_file(&socket).unwrap();

    // A directory at the path: refused, left alone.
    fs::create_dir(&socket).unwrap();
    let mut c = spawn_privileged(&cfg);
    let (code, _, log) = wait_exit(&mut c, 10 * SEC);
    assert_eq!(code, Some(1), "{log}");
    assert!(socket.is_dir());
    fs::remove_dir(&socket).unwrap();

    // With the path free again, it binds and serves.
    let child = spawn_privileged(&cfg);
    assert!(privileged::serves_within(&socket, 10 * SEC), "serves once the path is free");
    drop(child);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
}

/// The pid of the only child of `pid` (what `unshare --fork` runs).
fn only_child(pid: u32) -> u32 {
    let mut child = None;
    wait_until(10 * SEC, "the child", || {
        child = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()));
        child.is_some()
    });
    child.unwrap()
}

/// SIGTERM, as systemd stops the unit: the half stops at once, with a line saying so,
/// exit 0, its socket removed, a smartctl still running killed (its own process group,
/// which would run on orphaned), also with a kernel log stream open. And as PID 1 of a
/// PID namespace (a container), where a signal without a handler is ignored.
#[test]
fn sigterm_stops_the_privileged_half_at_once_and_it_says_so() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    // A smartctl that hangs: its pid in `calls`, then 60 s of sleep.
    let smartctl = dir.path().join("smartctl");
    let calls = dir.path().join("calls");
    fs::write(&smartctl, format!("#!/bin/sh\necho $$ >> {}\nexec sleep 60\n", calls.display())).unwrap();
    fs::set_permissions(&smartctl, fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("priv.sock");
    let pki = Pki::new(&["localhost"]);
    let mut c = config("wss://localhost:1/".into(), &pki, &rig, &smartctl, socket.to_str().unwrap());
    fs::write(dir.path().join("kmsg.log"), "").unwrap();
    c.paths_extra += &format!("kmsg = {:?}\n", dir.path().join("kmsg.log").display().to_string());
    let cfg = c.write(dir.path());

    let mut privileged = spawn_privileged(&cfg);
    wait_until(10 * SEC, "the socket", || socket.exists());
    let _stream = open_kmsg_stream(&socket);
    let asker = thread::spawn({
        let socket = socket.clone();
        move || ask(&socket, b"smart sda\n")
    });
    wait_until(10 * SEC, "smartctl running", || fs::read_to_string(&calls).is_ok_and(|c| c.ends_with('\n')));
    let smartctl_pid: i32 = fs::read_to_string(&calls).unwrap().trim().parse().unwrap();
    signal(&privileged, Signal::TERM);
    let (code, _, log) = wait_exit(&mut privileged, 10 * SEC);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.lines().last().is_some_and(|l| l.contains("privileged half stopped; killed 1 smartctl")), "{log}");
    assert!(!socket.exists(), "its socket was left behind");
    wait_until(5 * SEC, "smartctl's end", || !Path::new(&format!("/proc/{smartctl_pid}")).exists());
    let _ = asker.join();

    // PID 1 of its own PID namespace, as in a container.
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--"])
        .arg(agent_command().get_program())
        .args(agent_command().get_args())
        .arg("--config")
        .arg(&cfg)
        .arg("privileged")
        .stdout(Stdio::null())
        .env_remove("JOURNAL_STREAM");
    let mut unshare = spawn_logged(&mut cmd);
    wait_until(10 * SEC, "the socket", || socket.exists());
    let pid1 = only_child(unshare.id());
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid1 as i32).unwrap(), Signal::TERM).unwrap();
    let (code, _, log) = wait_exit(&mut unshare, 10 * SEC);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("privileged half stopped"), "{log}");
}
