//! Attack review 4: the privileged half's socket path against what can be found there or
//! happen to it: a symbolic link, a directory, the socket deleted
//! while the half runs, and a second privileged half started on the same path.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Instant;

use common::*;

/// A config for the privileged half on a fixture rig, with a fake smartctl that answers
/// healthy; the socket at `dir/priv.sock`.
fn privileged_config(dir: &Path) -> (PathBuf, PathBuf) {
    let rig = dir.join("rig");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rig");
    assert!(Command::new("cp").arg("-a").arg(&src).arg(&rig).status().unwrap().success());
    let smartctl = dir.join("smartctl");
    fs::write(&smartctl, "#!/bin/sh\necho '{\"smart_status\":{\"passed\":true}}'\n").unwrap();
    fs::set_permissions(&smartctl, fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.join("priv.sock");
    let pki = Pki::new(&["localhost"]);
    let mut c = AgentConfig::new("wss://localhost:1/".into(), &pki.ca_file);
    c.disks = format!("smartctl = {:?}\n", smartctl.display().to_string());
    c.paths_extra = format!(
        "sysfs = {:?}\nprocfs = {:?}\nrootfs = {:?}\nprivileged_socket = {:?}\n",
        rig.join("sys").display().to_string(),
        rig.join("proc").display().to_string(),
        rig.display().to_string(),
        socket.display().to_string()
    );
    (c.write(dir), socket)
}

fn spawn_privileged(cfg: &Path) -> Reaped {
    let mut cmd = agent_command();
    cmd.arg("--config").arg(cfg).arg("privileged").stdout(Stdio::null()).env_remove("JOURNAL_STREAM");
    spawn_logged(&mut cmd)
}

/// One request; the answer's header line ("" when the connection was closed unanswered).
fn ask(socket: &Path, request: &[u8]) -> std::io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(5 * SEC)).unwrap();
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    Ok(String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_string())
}

fn wait_serving(socket: &Path, limit: std::time::Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if ask(socket, b"smart sda\n").is_ok_and(|a| a.starts_with("output 0 ")) {
            return true;
        }
        thread::sleep(ms(50));
    }
    false
}

/// Someone removes the socket (`rm -rf /run/rig-agent-privileged/*`, a tmpfiles clean-up)
/// while the privileged half runs: the process lives on, listening on a name that no
/// longer exists, and nothing ever reaches it again. The network half reports SMART as
/// null until somebody restarts the privileged half, while `systemctl status` shows it
/// running. The half must notice and put its socket back.
#[test]
fn a_privileged_socket_deleted_while_the_half_runs_comes_back() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, socket) = privileged_config(dir.path());
    let mut child = spawn_privileged(&cfg);
    assert!(wait_serving(&socket, 10 * SEC), "serves before the deletion");
    fs::remove_file(&socket).unwrap();
    let back = wait_serving(&socket, 15 * SEC);
    let log = take_log(&mut child.0);
    assert!(back, "the socket was not put back within 15 s; privileged half's log:\n{log}");
    assert!(child.0.try_wait().unwrap().is_none(), "the half keeps running:\n{log}");
}

/// A second `rig-agent privileged` on the same path (run by hand as root beside the unit,
/// as the README suggests for a tarball install, or a unit and a leftover) removed the
/// first one's live socket and bound its own: the first lived on unreachable, and when the
/// second stopped, nothing answered any more. A live socket is another half serving: the
/// second must refuse to start and leave the first one in place.
#[test]
fn a_second_privileged_half_on_the_same_path_does_not_take_the_socket_of_a_live_one() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, socket) = privileged_config(dir.path());
    let first = spawn_privileged(&cfg);
    assert!(wait_serving(&socket, 10 * SEC), "the first half serves");
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
    assert!(wait_serving(&socket, 5 * SEC), "the first half still serves");
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
    let (cfg, socket) = privileged_config(dir.path());
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
    assert!(wait_serving(&socket, 10 * SEC), "serves once the path is free");
    drop(child);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
}
