//! Attack review: special files the agent itself writes in its state directory, replaced
//! by a FIFO. `bounded_read` exists for exactly this (O_NONBLOCK, fstat, size cap), but
//! these readers do not use it, and they run on the main thread before the agent's first
//! connection: the agent never logs in.

mod common;

use std::fs;
use std::path::Path;

use common::*;

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

fn mkfifo(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    rustix::fs::mknodat(rustix::fs::CWD, path, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0)
        .unwrap();
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
