//! Attack review 2: the state directory in shapes an operator (or a broken image) leaves
//! behind, and whether `rig-agent check` and the start agree about them.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

/// `check`'s exit code and message for this config.
fn check(config: &std::path::Path) -> (Option<i32>, String) {
    let out = agent_command().arg("--config").arg(config).arg("check").stdin(Stdio::null()).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
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
/// partition not mounted yet, a link left by an image): `check` says "valid", the start
/// exits 78 with "cannot create … (File exists)".
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
/// the monitor's save opens it for writing without O_NONBLOCK and blocks for ever. The
/// agent must go on scanning (a second failure is warned) and stop when asked.
#[test]
fn a_fifo_at_the_inventorys_temp_name_does_not_stop_the_monitor() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.disks = "smartctl = \"\"\nscan_interval = \"100ms\"\n".into();
    cfg.paths_extra = rig_paths(&rig);
    let config = cfg.write(dir.path());
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        state.join(".tmp-disks.json"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
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
    let (stopped, log) = match start_exit_of(&mut child, 10 * SEC) {
        Some(log) => (true, log),
        None => (false, String::new()),
    };
    assert!(warned && stopped, "sda's failure warned: {warned}; stopped within 10 s of SIGTERM: {stopped}\n{log}");
}

/// The log of a child that exits within `limit`; `None` (and killed) otherwise.
fn start_exit_of(child: &mut std::process::Child, limit: Duration) -> Option<String> {
    let t = std::time::Instant::now();
    while t.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(wait_exit(child, SEC).2);
        }
        std::thread::sleep(ms(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A symbolic link at the inventory's temp name: the save writes through it, replacing
/// the file it points to (any file the agent's user may write) with the inventory, and then
/// renames the link into place as `disks.json`.
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
