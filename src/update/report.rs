//! Each update's outcome, reported once through the durable outbox as `update_result`
//! (PROTOCOL.md §9). Its `act_id` is the `update_id`, so a result sent again after a crash
//! is the same message. Which updates were reported is kept in the state directory
//! (`update/reported`), written once the result is durably spooled: a crash before that
//! sends it again (the gateway sees the same `act_id`), never loses it.

use std::fs;

use serde_json::{Value, json};

use crate::config::Config;
use crate::os::bounded_read::{Links, read};
use crate::os::durable::write_durably;
use crate::outbox::spool::Spool;
use crate::protocol::Identity;
use crate::update::install::staging_dir;
use crate::update::state::{Last, Outcome, Request, UpdateState, request_from, request_json};
use crate::update::{RESULT_ACT, Shared};

/// The update under way, kept in the state directory from its start until its outcome is
/// spooled or it is switched to (then the trial carries it): after a crash or a stop, an
/// update that never got an outcome is reported `failed`, once.
const UNDER_WAY: &str = "under-way.json";

/// Records `request` as under way. An error means no outcome could be promised: the caller
/// refuses to start.
pub fn begin(cfg: &Config, request: &Request) -> std::io::Result<()> {
    let dir = staging_dir(cfg);
    fs::create_dir_all(&dir)?;
    write_durably(&dir, UNDER_WAY, request_json(request).to_string().as_bytes())
}

/// The update is no longer under way (its outcome is spooled, or the trial carries it).
pub fn end(cfg: &Config) {
    let _ = fs::remove_file(staging_dir(cfg).join(UNDER_WAY));
}

/// An update a previous run left without an outcome (it stopped or crashed while
/// downloading, verifying or installing), unless its outcome is known already: in the
/// update state, among the updates reported, or spooled and waiting to be sent (the
/// previous run spooled it and stopped before it could say so; a packaged rig's update
/// state is not the agent's to write, so the spool and the reported list are what know).
pub fn interrupted(cfg: &Config, st: &UpdateState, spool: &Spool) -> Option<Last> {
    let c = read(&staging_dir(cfg).join(UNDER_WAY), 4096, Links::Refuse).ok()?;
    let request = serde_json::from_slice(&c.bytes).ok().as_ref().and_then(request_from);
    let done = reported(cfg);
    let known = |id: &str| {
        st.trial.as_ref().is_some_and(|t| t.request.update_id == id)
            || st.last.as_ref().is_some_and(|l| l.request.update_id == id)
            || done.iter().any(|d| d == id)
            || spool.contains(id)
    };
    match request {
        Some(r) if !known(&r.update_id) => Some(Last {
            request: r,
            outcome: Outcome::Failed,
            detail: "the agent stopped before the update was done (restart, crash or power cut); nothing was switched"
                .into(),
        }),
        _ => {
            end(cfg);
            None
        }
    }
}

/// How long a result waits for the disk before the update is let go of unrecorded.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Update ids remembered as reported.
const KEEP: usize = 32;
const MARKER: &str = "reported";

/// The `update_result` message of `last`.
pub fn encode(id: &Identity, last: &Last) -> Value {
    let r = &last.request;
    json!({
        "from": "device",
        "act": RESULT_ACT,
        "reqtype": "post",
        "act_id": r.update_id,
        "act_code": r.act_code,
        "client_id": r.client_id,
        "hardware_id": id.hardware_id,
        "update_id": r.update_id,
        "data": {"outcome": last.outcome.as_str(), "from_version": r.from_version, "to_version": r.to_version,
            "detail": last.detail},
    })
}

fn reported(cfg: &Config) -> Vec<String> {
    match read(&staging_dir(cfg).join(MARKER), 4096, Links::Refuse) {
        Ok(c) => String::from_utf8_lossy(&c.bytes).lines().map(str::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

/// Spools `last` unless it was reported before, and remembers it as reported once durable.
/// Call off the socket thread (it waits for the disk).
pub fn report(spool: &Spool, id: &Identity, cfg: &Config, shared: &Shared, last: &Last) {
    shared.set_last(last.clone());
    let update_id = &last.request.update_id;
    let mut done = reported(cfg);
    if done.iter().any(|d| d == update_id) {
        return;
    }
    if !spool.contains(update_id) {
        spool.push(&encode(id, last));
        log::info!("update {update_id}: {} reported", last.outcome.as_str());
    }
    // Held in memory and sent meanwhile. Until it is on disk or acknowledged the update
    // stays recorded as under way, so this waits for a stalled disk (a worn card) rather
    // than leave that record behind at once: the next start would report the update again,
    // `failed`, after the gateway had its real outcome. The wait is bounded (the update
    // keeps the rig busy meanwhile) and a stop ends it; the next start then finds the
    // result in the spool (same act_id) or, if the disk never took it, reports it failed.
    let until = std::time::Instant::now() + PATIENCE;
    let mut said = false;
    while !spool.wait_durable(update_id, std::time::Duration::from_secs(10)) {
        if shared.stopping() || std::time::Instant::now() >= until {
            return;
        }
        if !std::mem::replace(&mut said, true) {
            log::warn!(
                "update {update_id}: its result is not on disk yet (the state disk is slow or read-only); waiting"
            );
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    end(cfg);
    done.push(update_id.clone());
    let over = done.len().saturating_sub(KEEP);
    done.drain(..over);
    let dir = staging_dir(cfg);
    let _ = fs::create_dir_all(&dir);
    if let Err(e) = write_durably(&dir, MARKER, (done.join("\n") + "\n").as_bytes()) {
        log::warn!("cannot record update {update_id} as reported ({e}); it may be reported again after a restart");
    }
}
