//! Remote actions (PROTOCOL.md §8): the console asks the rig to run one of the commands its
//! own config allows (`run_action`), synchronously (`post`: answered when it ends) or
//! asynchronously (`write`: answered at once, the result sent later through the durable
//! outbox as `action_result`, resent until acknowledged).
//!
//! [`Actions`] is the [`Handler`] of `run_action`: on the socket thread it only decides
//! (allowed, not running, not too soon, under the global limit). Everything else (the
//! durable markers, the child process, the outbox write) happens on a thread per run,
//! which answers through its [`Reply`]. Heartbeats and queries are never held up by an
//! action.

pub mod child;
pub mod journal;
mod run;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};
use serde_json::Value;

use crate::clock::Clock;
use crate::config::actions::{self as config, ActionSpec, ActionsConfig};
use journal::Journal;

use crate::config::Config;
use crate::jobs::reply::Reply;
use crate::jobs::{Context, Decision, Handler};
use crate::logging::Throttle;
use crate::outbox::spool::Spool;
use crate::protocol::{self, ActIds, Identity, Query, Refusal};
pub use run::encode_result;
use run::*;

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

/// When an action started, on the monotonic clock: `before` earlier than `anchor` (a start
/// of an earlier run, as the journal said how long ago at load), so that `min_interval` is
/// measured by a clock an NTP jump does not move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Start {
    anchor: Instant,
    before: Duration,
}

impl Start {
    fn now() -> Start {
        Start { anchor: Instant::now(), before: Duration::ZERO }
    }

    fn elapsed(&self) -> Duration {
        self.anchor.elapsed() + self.before
    }
}

/// Each action's last start. Shared with the runs' threads: a run refused because its start
/// could not be recorded puts back the start it replaced, so that nothing claims it started.
#[derive(Debug, Default, Clone)]
struct StartTimes(Arc<Mutex<HashMap<String, Start>>>);

impl StartTimes {
    /// From the journal's "how long ago", at this start of the agent.
    fn loaded(ago: HashMap<String, Duration>) -> StartTimes {
        let anchor = Instant::now();
        let starts = ago.into_iter().map(|(name, before)| (name, Start { anchor, before })).collect();
        StartTimes(Arc::new(Mutex::new(starts)))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Start>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Undoes the start taken at `at` (a run that did not start): the time before it, or
    /// none, is the last start again.
    fn put_back(&self, name: &str, at: Start, previous: Option<Start>) {
        let mut times = self.lock();
        if times.get(name) == Some(&at) {
            match previous {
                Some(p) => times.insert(name.to_string(), p),
                None => times.remove(name),
            };
        }
    }
}

/// The log of refused requests, rate-limited (20 lines a minute, then a count). Shared with
/// the runs' threads, which refuse a run whose start cannot be recorded.
#[derive(Clone)]
struct RefusalLog(Arc<Mutex<Throttle>>);

impl RefusalLog {
    fn new() -> RefusalLog {
        RefusalLog(Arc::new(Mutex::new(Throttle::new(Duration::from_secs(60), 20))))
    }

    fn log(&self, client_id: &str, action: &Value, r: &Refusal) {
        let admitted = self.0.lock().unwrap_or_else(|p| p.into_inner()).admit(Instant::now());
        if let Some(suppressed) = admitted {
            let more = if suppressed > 0 { format!(" ({suppressed} similar lines suppressed)") } else { String::new() };
            info!(
                "action request: client_id={} action={} outcome=refused (code {}: {}) duration=0ms{more}",
                escape_echo(client_id),
                escape_value(action),
                r.code,
                escape(&r.description, 200)
            );
        }
    }
}

/// The runner's side of actions: the handler of `run_action`.
pub struct Actions {
    cfg: SharedConfig,
    journal: Arc<Journal>,
    spool: Arc<Spool>,
    ids: Arc<ActIds>,
    running: Running,
    /// `write` runs accepted whose result is not in the outbox yet (see [`InFlight`]).
    in_flight: Arc<AtomicUsize>,
    last_start: StartTimes,
    refusal_log: RefusalLog,
    /// The process groups of the commands running now (see [`Actions::kill_running`]).
    groups: crate::os::child::Groups,
    /// Start times for the journal (corrected, marked when the clock is wrong).
    clock: Arc<Clock>,
    /// Other reasons no action may start now (an agent update under way), shared with the
    /// recovery steps' runner.
    not_now: NotNowChecks,
}

impl Actions {
    /// Reads the journal: runs a previous agent left unfinished are reported as interrupted
    /// through `spool` (as `id`), and `min_interval` resumes from the last start times.
    /// Call before the socket loop starts (it does disk IO).
    pub fn new(
        cfg: Arc<ActionsConfig>,
        id: &Identity,
        state_dir: &std::path::Path,
        spool: Arc<Spool>,
        ids: Arc<ActIds>,
        clock: Arc<Clock>,
    ) -> Actions {
        let journal = Arc::new(Journal::new(state_dir));
        // A run's marker goes when the storage thread has its result on disk or sees it
        // acknowledged, before the result's file is deleted: never lost, never doubled,
        // however slow the disk. Set before `recover` pushes anything.
        let markers = Arc::clone(&journal);
        spool.set_on_settled(Arc::new(move |run_id: &str| {
            if let Err(e) = markers.clear_running(run_id) {
                warn!(
                    "cannot remove the running marker of run {} ({e}); a restart reports it again (same act_id)",
                    escape(run_id, 64)
                );
            }
        }));
        recover(&journal, &spool, id);
        Actions {
            last_start: StartTimes::loaded(journal.last_starts(clock.stamp_ms().0)),
            clock,
            cfg: SharedConfig(Arc::new(Mutex::new(cfg))),
            journal,
            spool,
            ids,
            running: Running::default(),
            in_flight: Arc::default(),
            refusal_log: RefusalLog::new(),
            groups: Default::default(),
            not_now: NotNowChecks::default(),
        }
    }

    /// Adds a reason no action may start now: while it says one, requests are answered
    /// code 5 with its text.
    pub fn add_not_now(&mut self, check: crate::update::NotNow) {
        self.not_now.0.lock().unwrap_or_else(|p| p.into_inner()).push(check);
    }

    /// Says whether an action is running (for what must not start meanwhile).
    pub fn running_check(&self) -> crate::update::NotNow {
        let running = self.running.clone();
        Arc::new(move || {
            let names = running.lock();
            (!names.is_empty()).then(|| {
                let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
                names.sort_unstable();
                format!("an action is running ({})", names.join(", "))
            })
        })
    }

    /// Decides on a `run_action` query. A refusal is answered at once (the text returned);
    /// an accepted run answers later, from its thread, through the [`Reply`] `cx` gives.
    fn request(&mut self, query: &Query, cx: &Context<'_>) -> Option<String> {
        let (now_ms, suspect) = self.clock.stamp_ms();
        match self.decide(query) {
            Ok((name, mode, spec)) => {
                let run_id = self.ids.next();
                // Taken now, so that a second request is refused at once; the run puts the
                // previous time back if it is refused for want of a durable record.
                let started = Start::now();
                let previous_start = self.last_start.lock().insert(name.clone(), started);
                let run = Run {
                    name: name.clone(),
                    mode,
                    spec,
                    run_id,
                    echo: query.echo.clone(),
                    received: Instant::now(),
                    started_at_ms: now_ms,
                    clock_suspect: suspect,
                    started,
                    previous_start,
                };
                self.running.lock().insert(name.clone());
                match self.start(run, cx.id(), cx.reply()) {
                    Ok(()) => None,
                    Err(e) => {
                        self.last_start.put_back(&name, started, previous_start);
                        self.running.lock().remove(&name);
                        Some(self.refuse(query, Refusal::probe_failed(format!("cannot start the action: {e}")), cx))
                    }
                }
            }
            Err(r) => Some(self.refuse(query, r, cx)),
        }
    }

    fn decide(&self, query: &Query) -> Result<(String, Mode, ActionSpec), Refusal> {
        let (mode, name) = decode_request(query)?;
        let cfg = self.cfg.get();
        let spec = allowed(&cfg, name)?;
        self.not_now.check()?;
        let running = self.running.lock();
        not_running_nor_too_soon(&running, &self.last_start, name, &spec)?;
        if mode == Mode::Write {
            self.outbox_has_room()?;
        }
        under_the_cap(&running, &cfg)?;
        Ok((name.to_string(), mode, spec))
    }

    /// The runner of automatic recovery steps: the same allow-list, running set,
    /// `min_interval`, concurrency cap, journal and process groups as the console's runs.
    pub fn steps(&self) -> Steps {
        Steps {
            cfg: self.cfg.clone(),
            journal: Arc::clone(&self.journal),
            running: self.running.clone(),
            last_start: self.last_start.clone(),
            groups: self.groups.clone(),
            clock: Arc::clone(&self.clock),
            not_now: self.not_now.clone(),
        }
    }

    /// A `write` run's result goes through the outbox, which never drops one: so that a
    /// gateway that does not acknowledge cannot grow the spool without bound, no new `write`
    /// run is accepted while the outbox, counting the results of the `write` runs still
    /// going, is at its cap (of messages or bytes). `post` runs do not use the outbox.
    fn outbox_has_room(&self) -> Result<(), Refusal> {
        let u = self.spool.usage();
        let coming = self.in_flight.load(Ordering::SeqCst);
        if u.entries + coming < u.limits.max_entries && u.bytes < u.limits.max_bytes {
            return Ok(());
        }
        Err(not_now(format!(
            "the outbox is full of unacknowledged action results and warnings ({} waiting and {coming} write runs going, {} bytes; its \
             cap is {} messages or {} bytes): write runs are refused until the gateway acknowledges action results; \
             post runs are still accepted",
            u.entries, u.bytes, u.limits.max_entries, u.limits.max_bytes
        )))
    }

    fn refuse(&mut self, query: &Query, r: Refusal, cx: &Context<'_>) -> String {
        self.refusal_log.log(&query.echo.client_id, query.body.get("action").unwrap_or(&Value::Null), &r);
        cx.answer(&query.echo, Err(r))
    }

    fn start(&self, run: Run, id: &Identity, reply: Reply) -> std::io::Result<()> {
        let ctx = RunCtx {
            id: id.clone(),
            journal: Arc::clone(&self.journal),
            spool: Arc::clone(&self.spool),
            reply: Some(reply),
            running: self.running.clone(),
            last_start: self.last_start.clone(),
            refusal_log: self.refusal_log.clone(),
            in_flight: (run.mode == Mode::Write).then(|| InFlight::take(&self.in_flight)),
            groups: self.groups.clone(),
            run,
        };
        thread::Builder::new().name("action".into()).spawn(move || ctx.run_to_end()).map(|_| ())
    }

    /// Kills the commands still running, when the agent stops. Each has its own process
    /// group, which the agent's exit does not reach: outside systemd's cgroup kill they ran
    /// on, orphaned, past their timeout. A `write` run's marker stays, so a result that is
    /// not on disk by the exit is reported as interrupted at the next start.
    fn kill_running(&self) {
        let n = self.groups.kill_all();
        if n > 0 {
            info!("stopping: killed {n} running action command(s)");
        }
        // What they (or earlier commands) left running outside their groups, handed to
        // the agent as their parents died: it must not outlive the agent either.
        let orphans = crate::os::orphans::end_all(Duration::from_secs(1));
        if orphans > 0 {
            info!("stopping: killed {orphans} process(es) left behind by commands");
        }
    }
}

impl Handler for Actions {
    fn handle(&mut self, query: Query, cx: &Context<'_>) -> Decision {
        match self.request(&query, cx) {
            Some(text) => Decision::Answer(text),
            None => Decision::Started,
        }
    }

    /// New requests see the new allow-list; runs in progress finish.
    fn reconfigure(&mut self, cfg: &Config) {
        self.cfg.set(Arc::new(cfg.actions.clone()));
    }

    fn stop(&mut self) {
        self.kill_running();
    }
}

/// The reasons besides the allow-list, the running set and `min_interval` that no action may
/// start now (an agent update under way), shared with the recovery steps' runner.
#[derive(Clone, Default)]
struct NotNowChecks(Arc<Mutex<Vec<crate::update::NotNow>>>);

impl NotNowChecks {
    /// The first reason that holds now, if any.
    fn holds(&self) -> Option<String> {
        let checks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        checks.iter().find_map(|c| c())
    }

    /// Code 5 with the first reason that holds now.
    fn check(&self) -> Result<(), Refusal> {
        match self.holds() {
            Some(why) => Err(not_now(why)),
            None => Ok(()),
        }
    }
}

/// The allow-list in force, shared with the recovery steps' runner ([`Steps`]), which must
/// see a reload as the console's runs do.
#[derive(Debug, Clone)]
struct SharedConfig(Arc<Mutex<Arc<ActionsConfig>>>);

impl SharedConfig {
    fn get(&self) -> Arc<ActionsConfig> {
        Arc::clone(&self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn set(&self, cfg: Arc<ActionsConfig>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = cfg;
    }
}

/// The spec of `name`, if actions are enabled and it is in the allow-list (else code 4).
fn allowed(cfg: &ActionsConfig, name: &str) -> Result<ActionSpec, Refusal> {
    if !cfg.enabled {
        return Err(not_allowed("remote actions are disabled on this rig ([actions] enabled = false)".into()));
    }
    cfg.actions.get(name).cloned().ok_or_else(|| {
        not_allowed(format!("action \"{}\" is not in this rig's allow-list", escape(name, config::MAX_NAME_LEN)))
    })
}

/// Refused (code 5) while `name` runs or before its `min_interval` has passed.
fn not_running_nor_too_soon(
    running: &HashSet<String>,
    last_start: &StartTimes,
    name: &str,
    spec: &ActionSpec,
) -> Result<(), Refusal> {
    if running.contains(name) {
        return Err(not_now(format!("action \"{name}\" is already running")));
    }
    if let Some(last) = last_start.lock().get(name) {
        let since = last.elapsed();
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
    Ok(())
}

/// Refused (code 5) when `max_concurrent` actions run already.
fn under_the_cap(running: &HashSet<String>, cfg: &ActionsConfig) -> Result<(), Refusal> {
    if running.len() >= cfg.max_concurrent {
        return Err(not_now(format!("{} actions are already running: try again when one ends", cfg.max_concurrent)));
    }
    Ok(())
}

/// Why a recovery step did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepRefusal {
    /// Not now, for a while that ends by itself (an agent update under way, or a new
    /// version on trial; the text says which): nothing was started or recorded, and the
    /// step is to be taken once it is over, not counted as taken.
    Wait(String),
    /// Refused as a console `post` run would be (code 4 or 5: not allowed, already running,
    /// too soon, the cap, the start not recordable).
    Refused(Refusal),
}

/// Runs automatic recovery steps (see [`Actions::steps`]) on the caller's thread, which
/// must not be the socket thread: it writes the journal and waits for the command.
#[derive(Clone)]
pub struct Steps {
    cfg: SharedConfig,
    journal: Arc<Journal>,
    running: Running,
    last_start: StartTimes,
    groups: crate::os::child::Groups,
    clock: Arc<Clock>,
    not_now: NotNowChecks,
}

impl Steps {
    /// Why no step may start now, for a while that ends by itself (an agent update under
    /// way or on trial): the ladder waits while this says one.
    pub fn wait_reason(&self) -> Option<String> {
        self.not_now.holds()
    }

    /// Runs `name` as a console `post` run would, to its end: refused as such a run would be
    /// (code 4 or 5, the start not recordable while it has a `min_interval`), or told to
    /// wait (an update under way), else the `data` of its result (as `action_result`
    /// carries it).
    ///
    /// The step is in the running set before the update checks are asked, and leaves it
    /// when they refuse: an update's offer, judged on the socket thread, claims its phase
    /// and then looks at the running set, so of a step and an update starting at the same
    /// moment at least one sees the other, and never both run.
    pub fn run(&self, name: &str) -> Result<Value, StepRefusal> {
        let (now_ms, suspect) = self.clock.stamp_ms();
        let cfg = self.cfg.get();
        let spec = allowed(&cfg, name).map_err(StepRefusal::Refused)?;
        {
            let mut running = self.running.lock();
            not_running_nor_too_soon(&running, &self.last_start, name, &spec).map_err(StepRefusal::Refused)?;
            under_the_cap(&running, &cfg).map_err(StepRefusal::Refused)?;
            running.insert(name.to_string());
        }
        let finished = FinishGuard { name, running: &self.running };
        if let Some(why) = self.not_now.holds() {
            return Err(StepRefusal::Wait(why));
        }
        let started = Start::now();
        let previous = self.last_start.lock().insert(name.to_string(), started);
        if let Err(e) = self.journal.record_start(name, now_ms, suspect)
            && !spec.min_interval.is_zero()
        {
            self.last_start.put_back(name, started, previous);
            return Err(StepRefusal::Refused(unrecorded(name, spec.min_interval, &e)));
        }
        let limits = child::Limits { timeout: spec.timeout, max_output: MAX_OUTPUT };
        let data = match child::run_in(&spec.command, &limits, &self.groups) {
            Ok(o) => result_data(name, &o),
            Err(e) => start_failed_data(name, &e),
        };
        finished.finish();
        Ok(data)
    }
}

/// The mode and the action name of a `run_action` query, or why it is a bad request
/// (code 2). Nothing here decides whether the action may run.
pub fn decode_request(query: &Query) -> Result<(Mode, &str), Refusal> {
    let mode = match query.echo.reqtype.as_str() {
        "post" => Mode::Post,
        "write" => Mode::Write,
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

#[cfg(test)]
mod tests;
