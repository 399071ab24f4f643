//! The recovery thread: takes in episode events, keeps the ladder's state durable in the
//! state directory (`recovery.json`), takes the steps that are due through the actions'
//! runner ([`Steps`]) and reports each through the outbox. Never the socket thread.
//!
//! A step is recorded (counted against the budget, the ladder moved on) durably before it
//! runs: a step whose record cannot be written is not taken, and is tried again later
//! (fail closed, as for `min_interval`). A rig that reboots in the middle of a step finds it
//! counted, and goes on to the next one.
//!
//! The ladders are paused, as in maintenance, while an agent update is under way or a new
//! version is on trial: that is a "not now" that ends by itself, not a refusal, so no step
//! is taken, counted or reported meanwhile. An update that starts between the check and
//! the step's start makes the runner answer [`StepRefusal::Wait`]: the step's record is
//! undone and the step is taken when the update is over.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use super::ladder::{Due, State};
use crate::actions::{StepRefusal, Steps};
use crate::config::Config;
use crate::config::recovery::RecoveryConfig;
use crate::episodes::event::EpisodeEvent;
use crate::jobs::{Context, Decision, Handler};
use crate::logging::Throttle;
use crate::os::durable::write_durably;
use crate::os::state_file;
use crate::outbox::spool::Spool;
use crate::protocol::escape::escape;
use crate::protocol::{ActIds, Identity, Query};
use crate::status::AgentStatus;

/// The state file's name in the state directory.
pub const FILE: &str = "recovery.json";
/// The state file is small (at most [`super::ladder::MAX_EPISODES`] episodes); more is not ours.
const MAX_FILE: u64 = 256 * 1024;
/// How soon (ms) a step not taken for want of a durable record is tried again.
const RETRY: u64 = 30_000;
/// The longest sleep while something is pending: the end of a pause (maintenance, an
/// update) is noticed this soon.
const TICK: Duration = Duration::from_secs(1);
/// The sleep while nothing is pending.
const IDLE: Duration = Duration::from_secs(60);

/// What the thread needs besides its events.
pub struct Parts {
    pub state_dir: PathBuf,
    pub steps: Steps,
    pub spool: Arc<Spool>,
    pub ids: Arc<ActIds>,
    pub id: Identity,
    pub status: Arc<AgentStatus>,
}

/// The handle registered with the runner (under no act): it hands reloads to the thread
/// and stops it with the agent.
pub struct Recovery {
    cfg: Arc<Mutex<RecoveryConfig>>,
    stop: Arc<AtomicBool>,
}

impl Recovery {
    /// Loads the state (a corrupt file is moved aside and reported) and starts the thread,
    /// which reads `events` until the agent stops.
    pub fn start(cfg: &RecoveryConfig, parts: Parts, events: Receiver<EpisodeEvent>) -> std::io::Result<Recovery> {
        let shared = Arc::new(Mutex::new(cfg.clone()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker =
            Worker { state: load(&parts.state_dir), parts, cfg: Arc::clone(&shared), retry_at: 0, waiting: None };
        let flag = Arc::clone(&stop);
        thread::Builder::new().name("recovery".into()).spawn(move || {
            crate::os::child::drop_thread_capabilities();
            worker.run(&flag, &events)
        })?;
        Ok(Recovery { cfg: shared, stop })
    }
}

impl Handler for Recovery {
    fn handle(&mut self, _query: Query, _cx: &Context<'_>) -> Decision {
        unreachable!("registered under no act")
    }

    fn reconfigure(&mut self, cfg: &Config) {
        *self.cfg.lock().unwrap_or_else(|p| p.into_inner()) = cfg.recovery.clone();
    }

    /// The thread is not waited for: a step running now is killed with the actions'
    /// process groups, and the thread ends at its next wake-up.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn load(dir: &std::path::Path) -> State {
    let (state, problem) = state_file::load(dir, FILE, MAX_FILE, "recovery state file", |v| State::from_json(v).ok());
    if let Some(p) = problem {
        log::error!("{p}: the ladders start afresh (budget and positions forgotten)");
    }
    state.unwrap_or_default()
}

struct Worker {
    state: State,
    parts: Parts,
    cfg: Arc<Mutex<RecoveryConfig>>,
    /// Unix ms before which nothing is tried again after a failed record.
    retry_at: u64,
    /// Why the ladders wait now besides maintenance (an update), as last logged.
    waiting: Option<String>,
}

impl Worker {
    /// The agent's corrected wall clock in Unix milliseconds: what the state file keeps, so
    /// that it means the same after a reboot. Not the system clock: a board without a
    /// battery-backed clock comes back at 1970, where every step taken before reads as in
    /// the future (the budget spent for decades, the next step due then); the corrected
    /// clock reads at least the last time the gateway was seen verified.
    fn unix_ms(&self) -> u64 {
        self.parts.status.clock().stamp_ms().0
    }

    fn run(&mut self, stop: &AtomicBool, events: &Receiver<EpisodeEvent>) {
        let mut save_failures = Throttle::new(Duration::from_secs(600), 3);
        loop {
            let cfg = self.cfg.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let sleep = match self.state.next_due() {
                // Still due after `act`: paused, or a record to retry; looked at again in a tick.
                Some(due) if cfg.enabled => match due.saturating_sub(self.unix_ms()) {
                    0 => TICK,
                    ms => Duration::from_millis(ms).min(TICK),
                },
                _ => IDLE,
            };
            match events.recv_timeout(sleep) {
                Ok(e) => self.take_in(&e, &cfg, &mut save_failures),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if stop.load(Ordering::SeqCst) {
                return;
            }
            // A burst of events is taken in before anything is acted on.
            while let Ok(e) = events.try_recv() {
                self.take_in(&e, &cfg, &mut save_failures);
            }
            self.act(&cfg, &mut save_failures);
        }
    }

    fn take_in(&mut self, e: &EpisodeEvent, cfg: &RecoveryConfig, failures: &mut Throttle) {
        let mut next = self.state.clone();
        if next.on_event(e, cfg, self.unix_ms()) {
            // Not durable yet is no danger here: a step is recorded before it runs.
            let _ = self.save(&next, failures);
            self.state = next;
        }
    }

    fn save(&self, s: &State, failures: &mut Throttle) -> std::io::Result<()> {
        let r = write_durably(&self.parts.state_dir, FILE, s.to_json().to_string().as_bytes());
        if let Err(e) = &r {
            failures.warn(&format!(
                "recovery: cannot write {} in the state directory ({e}); no step is taken until it can be",
                FILE
            ));
        }
        r
    }

    /// Takes what is due, one at a time.
    fn act(&mut self, cfg: &RecoveryConfig, failures: &mut Throttle) {
        loop {
            let now = self.unix_ms();
            if now < self.retry_at {
                return;
            }
            let Some(due) = self.state.due(cfg, now, self.parts.status.in_maintenance()) else { return };
            // Asked only when something is due: an update with no ladder waiting is not logged.
            if self.update_under_way() {
                return;
            }
            let before = self.state.clone();
            let mut next = self.state.clone();
            match &due {
                Due::Step { act_id, .. } => next.took(cfg, act_id, now),
                Due::GiveUp { act_id, .. } => next.gave_up(act_id),
            }
            if self.save(&next, failures).is_err() {
                self.retry_at = now + RETRY;
                return;
            }
            self.state = next;
            let (act_id, data) = match due {
                Due::Step { act_id, index, name, budget_left } => {
                    match self.step(&act_id, index, &name, budget_left, cfg.dry_run) {
                        Some(data) => (act_id, data),
                        None => {
                            // An update started since the check: the step did not start,
                            // and is not counted.
                            if self.save(&before, failures).is_ok() {
                                self.state = before;
                            }
                            return;
                        }
                    }
                }
                Due::GiveUp { act_id, why, budget_left } => {
                    log::error!(
                        "recovery: giving up on {} ({}): {why}; a human is needed",
                        escape(&act_id),
                        self.describe(&act_id)
                    );
                    (act_id, json!({"step": "gave_up", "why": why, "budget_left": budget_left}))
                }
            };
            self.report(&act_id, data);
        }
    }

    /// Whether an agent update is under way or on trial (the ladders wait); a change is
    /// logged once.
    fn update_under_way(&mut self) -> bool {
        let why = self.parts.steps.wait_reason();
        if why != self.waiting {
            match &why {
                Some(w) if self.waiting.is_none() => {
                    log::info!("recovery: the ladders wait while {}", escape(w));
                }
                Some(_) => {}
                None => log::info!("recovery: the ladders go on (the agent update is over)"),
            }
            self.waiting = why.clone();
        }
        why.is_some()
    }

    fn describe(&self, act_id: &str) -> String {
        self.state.episodes.get(act_id).map_or_else(String::new, |t| format!("{} {}", t.reason, escape(&t.subject)))
    }

    /// Runs (or, dry, only names) step `index`; the `data` of its report, or `None` when the
    /// runner says to wait (an update started since the ladder looked).
    fn step(&mut self, act_id: &str, index: usize, name: &str, budget_left: u32, dry_run: bool) -> Option<Value> {
        let about = format!("{} ({})", escape(act_id), self.describe(act_id));
        if dry_run {
            log::warn!("recovery (dry run): would take step {} \"{name}\" for {about}", index + 1);
            return Some(json!({"step": name, "dry_run": true, "result": null, "budget_left": budget_left}));
        }
        log::warn!("recovery: step {} \"{name}\" for {about}", index + 1);
        let result = match self.parts.steps.run(name) {
            Ok(data) => data,
            Err(StepRefusal::Wait(why)) => {
                log::info!("recovery: step \"{name}\" for {about} waits: {}", escape(&why));
                self.waiting = Some(why);
                return None;
            }
            Err(StepRefusal::Refused(r)) => {
                log::warn!(
                    "recovery: step \"{name}\" for {about} was refused (code {}): {}",
                    r.code,
                    escape(&r.description)
                );
                json!({"action": name, "refused": true, "code": r.code, "description": r.description})
            }
        };
        Some(json!({"step": name, "result": result, "budget_left": budget_left}))
    }

    fn report(&self, ref_act_id: &str, data: Value) {
        let msg = json!({
            "from": "device",
            "act": "recovery",
            "reqtype": "post",
            "act_id": self.parts.ids.next(),
            "ref_act_id": ref_act_id,
            // As every agent message (PROTOCOL.md §2): one typed envelope decodes them all.
            "act_code": "",
            "client_id": "",
            "hardware_id": self.parts.id.hardware_id,
            "data": data,
        });
        self.parts.spool.push(&msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_or_huge_state_file_is_moved_aside_and_the_ladders_start_afresh() {
        let dir = tempfile::tempdir().unwrap();
        for junk in ["{\"taken\":[\"soon\"],\"episodes\":{}}".to_string(), "[".repeat(2 << 20)] {
            std::fs::write(dir.path().join(FILE), &junk).unwrap();
            assert_eq!(load(dir.path()), State::default());
            assert!(!dir.path().join(FILE).exists());
            assert!(dir.path().join("recovery.json.corrupt").exists());
        }
        assert_eq!(load(dir.path()), State::default());
    }
}
