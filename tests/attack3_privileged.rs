//! Attack review 3: the privileged half's socket against slow and many peers.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::Instant;

use common::*;

/// The privileged half on a fixture rig, with a fake smartctl that answers healthy.
fn start_privileged(dir: &Path) -> (Reaped, PathBuf) {
    let rig = rig_copy(dir);
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
    let cfg = c.write(dir);
    let child = agent_command()
        .arg("--config")
        .arg(&cfg)
        .arg("privileged")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_remove("JOURNAL_STREAM")
        .spawn()
        .expect("spawn rig-agent privileged");
    let until = Instant::now() + 10 * SEC;
    while !socket.exists() {
        assert!(Instant::now() < until, "the privileged half did not bind its socket");
        thread::sleep(ms(20));
    }
    (Reaped(child), socket)
}

/// One request; the answer's header line ("" when the connection was closed unanswered).
fn ask(socket: &Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).expect("connect to the privileged half");
    s.set_read_timeout(Some(5 * SEC)).unwrap();
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_string()
}

/// REQUEST_TIMEOUT (2 s) says how long a peer may take to send its request line, but it
/// was armed per read: a peer sending one byte a second never hit it and held its slot
/// for as long as its 128-byte line lasted. Sixteen such peers held every slot, and the
/// network half's own SMART request was closed unanswered ("16 requests already running")
/// for the two minutes they took.
#[test]
fn peers_trickling_their_request_a_byte_a_second_do_not_hold_the_privileged_half_past_its_request_timeout() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let (_privileged, socket) = start_privileged(dir.path());
    assert!(ask(&socket, b"smart sda\n").starts_with("output 0 "), "serves before the attack");

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
