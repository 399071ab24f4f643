//! What a broken rig can put in the agent's way never wedges, crashes or fools it: FIFOs,
//! links and devices where the token, the config, the CA, the spool, the inventory or its
//! own state files should be, a dangling state directory, a 200 MB token, durations too
//! long to add to a clock, and outside programs stuck in the kernel. Each is refused naming
//! the path and the fix (exit 78, with `check` and start-up agreeing), or moved aside and
//! reported, or waited out without holding anything else up. The real binary, as systemd
//! runs it, and the readers of stuck programs in this process.

mod common;

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Duration;

use common::storage::LoopFs;
use common::*;
use rig_agent::probes::gpu::{NvidiaReader, NvidiaSettings};

/// Starts the agent and returns its exit code and log; a hang fails the test at `limit`.
fn start_and_wait(cfg: &Path) -> (Option<i32>, String) {
    let mut child = spawn_agent(cfg, &[]);
    let (code, _, log) = wait_exit(&mut child, 10 * SEC);
    (code, log)
}

#[test]
fn a_fifo_as_the_token_file_exits_78_at_once_instead_of_hanging() {
    let _g = Guard::new(30 * SEC);
    let b = Broken::new();
    let (dir, cfg) = (b.dir.path(), b.path());
    let token = dir.join("token");
    fs::remove_file(&token).unwrap();
    mkfifo(&token);
    let (code, log) = start_and_wait(&cfg);
    assert_eq!(code, Some(78), "{log}");
    assert!(log.contains("`device.token_file`") && log.contains("FIFO"), "{log}");
    assert!(log.contains(&token.display().to_string()), "the path is named: {log}");
    assert!(log.contains("Fix:"), "{log}");
}

#[test]
fn a_fifo_as_the_config_or_the_ca_file_exits_78_at_once_naming_it() {
    let _g = Guard::new(30 * SEC);
    let b = Broken::new();
    let (dir, cfg) = (b.dir.path(), b.path());
    let ca = dir.join("ca.pem");
    fs::remove_file(&ca).unwrap();
    mkfifo(&ca);
    let (code, log) = start_and_wait(&cfg);
    assert_eq!(code, Some(78), "{log}");
    assert!(log.contains("`gateway.ca_file`") && log.contains(&ca.display().to_string()), "{log}");
    fs::remove_file(&cfg).unwrap();
    mkfifo(&cfg);
    let (code, err) = check(&cfg);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("FIFO") && err.contains(&cfg.display().to_string()), "{err}");
}

#[test]
fn a_200_mb_token_file_is_refused_naming_the_cap() {
    let _g = Guard::new(30 * SEC);
    let b = Broken::new();
    let (dir, cfg) = (b.dir.path(), b.path());
    let token = dir.join("token");
    // Sparse: the agent would have to read it to find out, the test disk does not fill.
    fs::File::options().write(true).open(&token).unwrap().set_len(200_000_000).unwrap();
    let (code, log) = start_and_wait(&cfg);
    assert_eq!(code, Some(78), "{log}");
    assert!(log.contains("`device.token_file`") && log.contains("65536-byte cap"), "{log}");
    let (code, err) = check(&cfg);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("65536-byte cap"), "{err}");
}

#[test]
fn sighup_with_a_fifo_as_the_token_file_is_refused_and_heartbeats_go_on() {
    let _g = Guard::new(30 * SEC);
    let mut a = logged_in_agent(Script::default(), &[]);
    let token = a.dir.path().join("token");
    fs::remove_file(&token).unwrap();
    mkfifo(&token);
    signal(&a.child, Signal::HUP);
    for _ in 0..3 {
        let (c, _, _) = a.gw.wait_act(5 * SEC, "heartbeat");
        assert_eq!(c, a.conn, "same connection, still beating");
    }
    let (code, log) = stop_agent(&mut a.child);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.lines().any(|l| l.contains("ERROR") && l.contains("reload refused") && l.contains("FIFO")), "{log}");
}

#[test]
fn a_fifo_spool_entry_and_a_dev_zero_inventory_are_moved_aside_and_the_agent_starts() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let cfg = AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path());
    let state = dir.path().join("state");
    fs::create_dir_all(state.join("spool")).unwrap();
    let entry = state.join("spool/w-000000000001.json");
    mkfifo(&entry);
    std::os::unix::fs::symlink("/dev/zero", state.join("disks.json")).unwrap();
    let mut child = spawn_agent(&cfg, &[]);
    gw.wait_login(10 * SEC);
    gw.wait_act(5 * SEC, "heartbeat");
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    let aside = state.join("spool/w-000000000001.json.corrupt");
    assert!(fs::symlink_metadata(&aside).unwrap().file_type().is_fifo(), "the FIFO was moved aside");
    assert!(!entry.exists());
    let inv_aside = state.join("disks.json.corrupt");
    assert!(fs::symlink_metadata(&inv_aside).unwrap().file_type().is_symlink(), "the link was moved aside");
    assert!(log.lines().any(|l| l.contains("ERROR") && l.contains("FIFO") && l.contains("moved aside")), "{log}");
    assert!(
        log.lines().any(|l| l.contains("ERROR") && l.contains("disks.json") && l.contains("symbolic link")),
        "{log}"
    );
}

#[test]
fn a_spool_that_is_a_file_or_fifo_exits_78_in_check_and_at_start_naming_path_and_fix() {
    let _g = Guard::new(30 * SEC);
    for fifo in [false, true] {
        let b = Broken::new();
        let (dir, cfg) = (b.dir.path(), b.path());
        let spool = dir.join("state/spool");
        fs::create_dir_all(spool.parent().unwrap()).unwrap();
        if fifo {
            mkfifo(&spool);
        } else {
            fs::write(&spool, "not a directory").unwrap();
        }
        for (what, (code, err)) in [("check", check(&cfg)), ("start", start_and_wait(&cfg))] {
            assert_eq!(code, Some(78), "{what}: {err}");
            assert!(err.contains(&spool.display().to_string()), "{what} names the path: {err}");
            assert!(err.contains(&format!("Fix: move it away (mv {}", spool.display())), "{what}: {err}");
        }
    }
}

#[test]
fn a_duration_too_long_to_add_to_a_clock_exits_78_in_check_and_at_start_naming_key_and_maximum() {
    let _g = Guard::new(30 * SEC);
    let b = Broken::new();
    let cfg = b.path();
    let text =
        fs::read_to_string(&cfg).unwrap().replace("login_timeout = \"1s\"", "login_timeout = \"200000000000000d\"");
    fs::write(&cfg, text).unwrap();
    for (what, (code, err)) in [("check", check(&cfg)), ("start", start_and_wait(&cfg))] {
        assert_eq!(code, Some(78), "{what}: {err}");
        assert!(err.contains("`gateway.login_timeout`") && err.contains("maximum is \"10m\""), "{what}: {err}");
    }
}

/// The agent's exit code within `limit`, or `None` when it is still running (then it is
/// stopped); and its log.
fn start_exit(config: &std::path::Path, limit: Duration) -> (Option<i32>, String) {
    let mut child = spawn_agent(config, &[]);
    let t = std::time::Instant::now();
    while t.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            let (code, _, log) = wait_exit(&mut child, SEC);
            return (code, log);
        }
        std::thread::sleep(ms(20));
    }
    let (_, log) = stop_agent(&mut child);
    (None, log)
}

/// `paths.state_dir` is a symbolic link to a directory that does not exist (a data
/// partition not mounted yet, a link left by an image): `check` and the start must not
/// disagree ("valid", then exit 78 with "cannot create … (File exists)").
#[test]
fn check_and_the_start_agree_about_a_state_dir_that_is_a_dangling_symlink() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let gw = Gateway::start(&pki, Script::default());
    let config = AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path());
    let state = dir.path().join("state");
    let _ = std::fs::remove_dir_all(&state);
    std::os::unix::fs::symlink(dir.path().join("not-mounted-yet/state"), &state).unwrap();
    let (checked, check_msg) = check(&config);
    let (started, log) = start_exit(&config, 5 * SEC);
    // Either both refuse it (78), or check passes and the agent runs.
    let start_refused = started == Some(78);
    let check_refused = checked == Some(78);
    assert_eq!(
        check_refused,
        start_refused,
        "check exited {checked:?} ({}), the start {started:?} ({})",
        check_msg.trim(),
        log.trim()
    );
}

/// A FIFO at the temp name the inventory is written through (`state/.tmp-disks.json`):
/// a save that opened it for writing without O_NONBLOCK would block for ever. The agent
/// goes on scanning (a second failure is warned) and stops when asked.
#[test]
fn a_fifo_at_the_inventorys_temp_name_does_not_stop_the_monitor() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let config = AgentConfig::new(gw.url(), &pki.ca_file).watch(&rig, "100ms").write(dir.path());
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    mkfifo(&state.join(".tmp-disks.json"));
    let mut child = spawn_agent(&config, &[]);
    gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    std::fs::remove_dir_all(rig.join("sys/block/sda")).unwrap();
    let deadline = std::time::Instant::now() + 10 * SEC;
    let mut warned = false;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match gw.next_event(left) {
            Some(Event::Received { msg, .. }) if msg["act"] == "warning" && msg["disk"] == "/dev/sda" => {
                warned = true;
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    signal(&child, Signal::TERM);
    let (stopped, log) = match exit_within(&mut child, 10 * SEC) {
        Some((_, _, log)) => (true, log),
        None => (false, String::new()),
    };
    assert!(warned && stopped, "sda's failure warned: {warned}; stopped within 10 s of SIGTERM: {stopped}\n{log}");
}

/// A symbolic link at the inventory's temp name: a save that wrote through it would replace
/// the file it points to (any file the agent's user may write) with the inventory, and then
/// rename the link into place as `disks.json`. The file behind the link stays as it was.
#[test]
fn a_symlink_at_the_inventorys_temp_name_is_not_written_through() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let config = AgentConfig::new(gw.url(), &pki.ca_file).write(dir.path());
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let victim = dir.path().join("precious.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, state.join(".tmp-disks.json")).unwrap();
    let mut child = spawn_agent(&config, &[]);
    gw.wait_login(10 * SEC);
    // The first scan saves the inventory at start.
    let t = std::time::Instant::now();
    while t.elapsed() < 2 * SEC && !state.join("disks.json").exists() {
        std::thread::sleep(ms(20));
    }
    let (_, log) = stop_agent(&mut child);
    let after = std::fs::read_to_string(&victim).unwrap();
    assert_eq!(after, "precious\n", "the file behind the link was overwritten; log:\n{log}");
}

/// Whether the agent logs in within `limit` (a guard, not a timing: it logs in well
/// under a second when nothing is wrong).
fn logs_in(gw: &mut Gateway, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while let Some(e) = gw.next_event(deadline.saturating_duration_since(std::time::Instant::now())) {
        if e.act() == Some("start") {
            return true;
        }
    }
    false
}

/// Starts an agent whose state dir has a FIFO at `rel`; whether it logged in, and its log.
fn start_with_fifo_at(rel: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    let config = cfg.write(dir.path());
    mkfifo(&dir.path().join("state").join(rel));
    let mut child = spawn_agent(&config, &[]);
    let ok = logs_in(&mut gw, 10 * SEC);
    // SIGKILL: a wedged agent does not answer SIGTERM's shutdown either.
    let _ = child.kill();
    let (_, _, log) = wait_exit(&mut child, 10 * SEC);
    (ok, log)
}

/// The special files the agent itself writes in its state directory (the kernel log's
/// cursor, an action's start time and running marker), replaced by a FIFO: they are read
/// on the main thread before the first connection, so each is read bounded (O_NONBLOCK,
/// fstat, a size cap) or the agent would never log in.
#[test]
fn a_fifo_at_the_kmsg_cursor_does_not_keep_the_agent_from_logging_in() {
    let (ok, log) = start_with_fifo_at("kmsg.cursor");
    assert!(ok, "no login within 10 s; log:\n{log}");
}

#[test]
fn a_fifo_at_an_action_start_time_file_does_not_keep_the_agent_from_logging_in() {
    let (ok, log) = start_with_fifo_at("actions/last-reboot");
    assert!(ok, "no login within 10 s; log:\n{log}");
}

#[test]
fn a_fifo_at_an_action_running_marker_does_not_keep_the_agent_from_logging_in() {
    let (ok, log) = start_with_fifo_at("actions/run-x.json");
    assert!(ok, "no login within 10 s; log:\n{log}");
}

/// The two hung-program tests count this process's threads: not at the same time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The threads of this process waiting for a program to exit (`child-wait`, one per run),
/// whatever else the process runs meanwhile.
fn child_waiters() -> usize {
    fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| {
            t.as_ref().is_ok_and(|t| fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "child-wait"))
        })
        .count()
}

/// Outside programs that cannot be killed: nvidia-smi hangs in D state when a GPU falls off
/// the bus (Xid 79), smartctl when a disk's controller does; SIGKILL does not end them until
/// the driver call returns. A reader must not start another while the last is stuck, or each
/// query leaves a thread (and a process) behind.
#[test]
fn a_hung_nvidia_smi_is_not_started_again_while_the_last_one_is_still_stuck() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hang = LoopFs::new(dir.path(), "gpu", 32 << 20, &[]);
    // Blocks uninterruptibly (D state) on the frozen filesystem, as a hung driver call does.
    let fake = script(dir.path(), "nvidia-smi", &format!("echo x >> {:?}", hang.mnt.join("f").display().to_string()));
    hang.freeze();
    let reader = NvidiaReader::new(NvidiaSettings {
        binary: fake.display().to_string(),
        timeout: Duration::from_millis(200),
        max_age: Duration::from_millis(1),
    });
    let before = child_waiters();
    // Ten get_gpu_info queries, one per nvidia_smi_interval.
    for _ in 0..10 {
        assert!(reader.read().is_err());
        std::thread::sleep(Duration::from_millis(20));
    }
    let grown = child_waiters().saturating_sub(before);
    hang.thaw();
    assert!(grown <= 3, "{grown} threads left behind by 10 runs of one hung nvidia-smi");
}

#[test]
fn a_hung_smartctl_is_not_started_again_while_the_last_one_is_still_stuck() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hang = LoopFs::new(dir.path(), "disk", 32 << 20, &[]);
    let fake = script(dir.path(), "smartctl", &format!("echo x >> {:?}", hang.mnt.join("f").display().to_string()));
    hang.freeze();
    let reader = rig_agent::probes::smart::SmartReader::new(
        &fake.display().to_string(),
        Duration::from_millis(200),
        Duration::from_millis(1),
    );
    let before = child_waiters();
    for _ in 0..10 {
        assert!(reader.read("/dev/sdz").is_err());
        std::thread::sleep(Duration::from_millis(20));
    }
    let grown = child_waiters().saturating_sub(before);
    hang.thaw();
    assert!(grown <= 3, "{grown} threads left behind by 10 runs of one hung smartctl");
}
