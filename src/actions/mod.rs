//! Remote actions (PROTOCOL.md §8): the console asks the rig to run one of the commands its
//! own config allows (`run_action`), synchronously (`post`: answered when it ends) or
//! asynchronously (`write`: answered at once, the result sent later through the durable
//! outbox as `action_result`, resent until acknowledged).
//!
//! The runner (socket thread) only decides: allowed, not running, not too soon, under the
//! global limit. Everything else (the durable markers, the child process, the outbox
//! write) happens on a thread per run, which hands answers back through a channel and wakes
//! the runner. Heartbeats and queries are never held up by an action.

pub mod child;
pub mod config;
pub mod journal;

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{error, info, warn};
use serde_json::{Value, json};

pub use config::{ActionSpec, ActionsConfig};
use journal::{Journal, RunRecord};

use crate::logging::Throttle;
use crate::os::wake::Waker;
use crate::outbox::spool::Spool;
use crate::protocol::{self, ActIds, FROM_DEVICE, Identity, Query, QueryEcho, Refusal};

/// How long a finished `write` run waits for its result to reach the disk before it lets
/// go of its running marker.
const SPOOL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The `act` of the request.
pub const ACT: &str = "run_action";
/// The `act` of a `write` run's result.
pub const RESULT_ACT: &str = "action_result";
/// Bytes kept of each of stdout and stderr (the tail).
pub const MAX_OUTPUT: usize = 64 * 1024;

/// How the gateway wants the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer when the action ends.
    Post,
    /// Answer at once; the result follows as `action_result` through the outbox.
    Write,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Post => "post",
            Mode::Write => "write",
        }
    }
}

/// An answer ready to go to the gateway on the connection it was asked on.
#[derive(Debug)]
pub struct Answer {
    pub generation: u64,
    pub text: String,
}

/// The actions running now. Shared with the runs' threads: a run leaves the set itself,
/// before its answer or result is visible, so a console asking again as soon as it has the
/// answer is never told "already running".
#[derive(Debug, Default, Clone)]
struct Running(Arc<Mutex<HashSet<String>>>);

impl Running {
    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The runner's side of actions.
pub struct Actions {
    cfg: Arc<ActionsConfig>,
    id: Identity,
    journal: Arc<Journal>,
    spool: Arc<Spool>,
    ids: Arc<ActIds>,
    waker: Waker,
    running: Running,
    /// Unix ms of each action's last start, as the journal keeps it.
    last_start: HashMap<String, u64>,
    tx: Sender<Answer>,
    rx: Receiver<Answer>,
    refusal_log: Throttle,
}

impl Actions {
    /// Reads the journal: runs a previous agent left unfinished are reported as interrupted
    /// through `spool`, and `min_interval` resumes from the last start times. Call before
    /// the socket loop starts (it does disk IO).
    pub fn new(
        cfg: Arc<ActionsConfig>,
        id: Identity,
        state_dir: &std::path::Path,
        spool: Arc<Spool>,
        ids: Arc<ActIds>,
        waker: Waker,
    ) -> Actions {
        let journal = Arc::new(Journal::new(state_dir));
        recover(&journal, &spool, &id);
        let (tx, rx) = mpsc::channel();
        Actions {
            last_start: journal.last_starts(),
            cfg,
            id,
            journal,
            spool,
            ids,
            waker,
            running: Running::default(),
            tx,
            rx,
            refusal_log: Throttle::new(Duration::from_secs(60), 20),
        }
    }

    /// A reloaded config: new requests see the new allow-list; runs in progress finish.
    pub fn reconfigure(&mut self, cfg: Arc<ActionsConfig>, id: Identity) {
        self.cfg = cfg;
        self.id = id;
    }

    /// Decides on a `run_action` query. A refusal is answered at once (the text returned);
    /// an accepted run answers later through [`Actions::try_done`].
    pub fn request(&mut self, query: &Query, generation: u64) -> Option<String> {
        let now_ms = unix_ms();
        match self.decide(query, now_ms) {
            Ok((name, mode, spec)) => {
                let run_id = self.ids.next();
                let run = Run {
                    name: name.clone(),
                    mode,
                    spec,
                    run_id,
                    echo: query.echo.clone(),
                    generation,
                    received: Instant::now(),
                    started_at_ms: now_ms,
                };
                self.running.lock().insert(name.clone());
                match self.start(run) {
                    Ok(()) => {
                        self.last_start.insert(name, now_ms);
                        None
                    }
                    Err(e) => {
                        self.running.lock().remove(&name);
                        Some(self.refuse(query, Refusal::probe_failed(format!("cannot start the action: {e}"))))
                    }
                }
            }
            Err(r) => Some(self.refuse(query, r)),
        }
    }

    fn decide(&self, query: &Query, now_ms: u64) -> Result<(String, Mode, ActionSpec), Refusal> {
        let (mode, name) = decode_request(query)?;
        if !self.cfg.enabled {
            return Err(not_allowed("remote actions are disabled on this rig ([actions] enabled = false)".into()));
        }
        let Some(spec) = self.cfg.actions.get(name) else {
            return Err(not_allowed(format!(
                "action \"{}\" is not in this rig's allow-list",
                escape(name, config::MAX_NAME_LEN)
            )));
        };
        let running = self.running.lock();
        if running.contains(name) {
            return Err(not_now(format!("action \"{name}\" is already running")));
        }
        if let Some(last) = self.last_start.get(name) {
            let since = Duration::from_millis(now_ms.saturating_sub(*last));
            if since < spec.min_interval {
                let wait = spec.min_interval - since;
                return Err(not_now(format!(
                    "action \"{name}\" started {}s ago and its min_interval is {}: try again in {}s",
                    since.as_secs(),
                    crate::config::duration::format_duration(spec.min_interval),
                    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
                )));
            }
        }
        if running.len() >= self.cfg.max_concurrent {
            return Err(not_now(format!(
                "{} actions are already running: try again when one ends",
                self.cfg.max_concurrent
            )));
        }
        Ok((name.to_string(), mode, spec.clone()))
    }

    fn refuse(&mut self, query: &Query, r: Refusal) -> String {
        if let Some(suppressed) = self.refusal_log.admit(Instant::now()) {
            let more = if suppressed > 0 { format!(" ({suppressed} similar lines suppressed)") } else { String::new() };
            info!(
                "action request: client_id={} action={} outcome=refused (code {}: {}) duration=0ms{more}",
                escape_value(&query.echo.client_id),
                escape_value(query.body.get("action").unwrap_or(&Value::Null)),
                r.code,
                escape(&r.description, 200)
            );
        }
        protocol::encode_answer(&self.id, &query.echo, Err(r))
    }

    fn start(&self, run: Run) -> std::io::Result<()> {
        let ctx = RunCtx {
            run,
            id: self.id.clone(),
            journal: Arc::clone(&self.journal),
            spool: Arc::clone(&self.spool),
            tx: self.tx.clone(),
            waker: self.waker.try_clone()?,
            running: self.running.clone(),
        };
        thread::Builder::new().name("action".into()).spawn(move || ctx.run_to_end()).map(|_| ())
    }

    /// The next answer to send, if any; never blocks.
    pub fn try_done(&mut self) -> Option<Answer> {
        self.rx.try_recv().ok()
    }
}

/// The mode and the action name of a `run_action` query, or why it is a bad request
/// (code 2). Nothing here decides whether the action may run.
pub fn decode_request(query: &Query) -> Result<(Mode, &str), Refusal> {
    let mode = match query.echo.reqtype.as_str() {
        Some("post") => Mode::Post,
        Some("write") => Mode::Write,
        _ => return Err(Refusal::bad_request("`reqtype` must be \"post\" or \"write\" for run_action")),
    };
    match query.body.get("action") {
        Some(Value::String(name)) => Ok((mode, name)),
        _ => Err(Refusal::bad_request("`action` must be a string naming one of the rig's actions")),
    }
}

fn not_allowed(description: String) -> Refusal {
    Refusal { code: protocol::code::NOT_ALLOWED, description }
}

fn not_now(description: String) -> Refusal {
    Refusal { code: protocol::code::NOT_NOW, description }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

struct Run {
    name: String,
    mode: Mode,
    spec: ActionSpec,
    run_id: String,
    echo: QueryEcho,
    generation: u64,
    received: Instant,
    started_at_ms: u64,
}

struct RunCtx {
    run: Run,
    id: Identity,
    journal: Arc<Journal>,
    spool: Arc<Spool>,
    tx: Sender<Answer>,
    waker: Waker,
    running: Running,
}

/// Takes the run out of [`Running`] however its thread ends (a panic included), so the
/// action never stays "already running".
struct FinishGuard<'a> {
    name: &'a str,
    running: &'a Running,
}

impl FinishGuard<'_> {
    fn finish(&self) {
        self.running.lock().remove(self.name);
    }
}

impl Drop for FinishGuard<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl RunCtx {
    fn send(&self, text: String) {
        let _ = self.tx.send(Answer { generation: self.run.generation, text });
        self.waker.wake();
    }

    fn run_to_end(self) {
        let r = &self.run;
        let finished = FinishGuard { name: &r.name, running: &self.running };
        drop_capabilities();
        if let Err(e) = self.journal.record_start(&r.name, r.started_at_ms) {
            warn!("action {}: cannot record its start time ({e}); min_interval will not survive a restart", r.name);
        }
        if r.mode == Mode::Write {
            let rec = RunRecord {
                run_id: r.run_id.clone(),
                action: r.name.clone(),
                act_code: r.echo.act_code.clone(),
                client_id: r.echo.client_id.clone(),
                started_at_ms: r.started_at_ms,
            };
            if let Err(e) = self.journal.mark_running(&rec) {
                error!(
                    "action {} (run {}): cannot persist the running marker ({e}); if the agent dies now the run \
                     is not reported",
                    r.name, r.run_id
                );
            }
            self.send(protocol::encode_answer(&self.id, &r.echo, Ok(json!({"action": r.name, "run_id": r.run_id}))));
        }
        let limits = child::Limits { timeout: r.spec.timeout, max_output: MAX_OUTPUT };
        let result = child::run(&r.spec.command, &limits);
        let took = r.received.elapsed();
        let outcome = match &result {
            Ok(o) if o.timed_out => format!("timed out after {}ms, killed", o.duration.as_millis()),
            Ok(o) => match (o.exit_code, o.signal) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                (None, None) => "ended".into(),
            },
            Err(e) => format!("failed to start: {e}"),
        };
        info!(
            "action request: client_id={} action={} mode={} run_id={} outcome={} duration={}ms",
            escape_value(&r.echo.client_id),
            r.name,
            r.mode.as_str(),
            r.run_id,
            escape(&outcome, 200),
            took.as_millis()
        );
        let data = match &result {
            Ok(o) => result_data(&r.name, o),
            Err(e) => json!({"action": r.name, "exit_code": null, "timed_out": false, "duration_ms": 0,
                "stdout": "", "stderr": "", "truncated": false, "interrupted": false, "error": e.to_string()}),
        };
        // Over before anyone can see that it is.
        finished.finish();
        match r.mode {
            Mode::Post => self.send(match result {
                Ok(_) => protocol::encode_answer(&self.id, &r.echo, Ok(data)),
                Err(e) => protocol::encode_answer(
                    &self.id,
                    &r.echo,
                    Err(Refusal::probe_failed(format!("cannot start the action: {e}"))),
                ),
            }),
            Mode::Write => {
                let msg = encode_result(&self.id, &r.run_id, &r.echo.act_code, &r.echo.client_id, data);
                if !self.spool.contains(&r.run_id) {
                    self.spool.push(&msg);
                }
                // Only once the result is durably spooled (or acknowledged): a crash before
                // this finds the marker and reports the run as interrupted, under the same
                // act_id, instead of losing it.
                if !self.spool.wait_durable(&r.run_id, SPOOL_WAIT) {
                    warn!(
                        "action {} (run {}): its result is not on disk yet; its running marker stays",
                        r.name, r.run_id
                    );
                } else if let Err(e) = self.journal.clear_running(&r.run_id) {
                    warn!("action {} (run {}): cannot remove its running marker ({e})", r.name, r.run_id);
                }
                self.waker.wake();
            }
        }
    }
}

/// `data` of a finished run, as the post answer and `action_result` carry it.
fn result_data(name: &str, o: &child::Outcome) -> Value {
    json!({
        "action": name,
        "exit_code": o.exit_code,
        "timed_out": o.timed_out,
        "duration_ms": o.duration.as_millis() as u64,
        "stdout": String::from_utf8_lossy(&o.stdout),
        "stderr": String::from_utf8_lossy(&o.stderr),
        "truncated": o.truncated,
        "interrupted": false,
    })
}

/// The `action_result` message. Its `act_id` is the `run_id`: a result spooled twice (a
/// crash between spooling and clearing the marker) is the same message to the gateway.
pub fn encode_result(id: &Identity, run_id: &str, act_code: &Value, client_id: &Value, data: Value) -> Value {
    json!({
        "from": FROM_DEVICE,
        "act": RESULT_ACT,
        "reqtype": "post",
        "act_id": run_id,
        "act_code": act_code,
        "client_id": client_id,
        "hardware_id": id.hardware_id,
        "run_id": run_id,
        "data": data,
    })
}

/// Turns the markers of runs a previous agent lost into `interrupted` results.
fn recover(journal: &Journal, spool: &Spool, id: &Identity) {
    for leftover in journal.leftovers() {
        let rec = match leftover {
            Ok(rec) => rec,
            Err(name) => {
                error!("action marker {name} in the state directory is unreadable; removed");
                let _ = journal.remove(&name);
                continue;
            }
        };
        warn!(
            "action {} (run {}) was cut short by an agent restart; reporting it as interrupted",
            escape(&rec.action, config::MAX_NAME_LEN),
            escape(&rec.run_id, 64)
        );
        let data = json!({"action": rec.action, "exit_code": null, "timed_out": false, "duration_ms": null,
            "stdout": "", "stderr": "", "truncated": false, "interrupted": true});
        if !spool.contains(&rec.run_id) {
            spool.push(&encode_result(id, &rec.run_id, &rec.act_code, &rec.client_id, data));
        }
        if !spool.wait_durable(&rec.run_id, SPOOL_WAIT) {
            warn!("the interrupted result of run {} is not on disk yet; its marker stays", rec.run_id);
        } else if let Err(e) = journal.clear_running(&rec.run_id) {
            warn!("cannot remove the marker of run {} ({e}); it will be reported again", rec.run_id);
        }
    }
}

/// The agent's capabilities (CAP_SYS_RAWIO and CAP_SYS_ADMIN, ambient, for smartctl) are
/// per thread: this run's thread drops them all before starting the command, so an action
/// runs with the rig-agent user's rights and nothing more.
fn drop_capabilities() {
    use rustix::thread::{CapabilitySet, CapabilitySets, clear_ambient_capability_set, set_capabilities};
    let _ = clear_ambient_capability_set();
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    if rustix::process::geteuid().is_root() {
        // Root gets every capability back at exec anyway; keeping ours lets the state
        // directory stay writable whatever its owner (tests, containers).
        return;
    }
    let _ = set_capabilities(None, none);
}

/// Outside text for a log line: the agent's one escaping function, at this cap.
fn escape(s: &str, max: usize) -> String {
    crate::protocol::escape::escape_to(s, max)
}

/// The `action` field as the request carried it, for a log line.
fn escape_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{}\"", escape(s, 200)),
        Value::Null => "none".into(),
        Value::Array(_) | Value::Object(_) => "(not a string)".into(),
        other => escape(&other.to_string(), 40),
    }
}

#[cfg(test)]
mod tests;
