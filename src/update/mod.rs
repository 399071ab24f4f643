//! The agent updates itself from the console (PROTOCOL.md §9, docs/updates.md).
//!
//! - [`Updates`] is the handler of `update_agent`: on the socket thread it only judges the
//!   offer ([`offer::judge`]) and answers at once; a taken offer runs on a thread of its own
//!   ([`install`]): download into the state directory, sha256 and the minisign signature
//!   with the rig's keys ([`verify`]), copy into `paths.update_dir`, fsync, smoke test, and
//!   the switch (one durable rename of the update state, [`state`]). Then the agent
//!   re-executes itself.
//! - [`launcher`] runs first in `main`: it starts the switched build (after checking its
//!   hash and signature again) and, while that build is on trial, stays its parent and
//!   watches it: unless the new version confirms within `update.confirm_within`, or if it
//!   keeps dying, the old build is put back and runs again, and reports `rolled_back`.
//! - The new version confirms itself once logged in and connected for
//!   `update.confirm_after` ([`confirm`]), and reports `installed`.
//! - Each outcome goes through the durable outbox once ([`report`]).

pub mod confirm;
pub mod install;
pub mod launcher;
pub mod offer;
pub mod report;
pub mod state;
pub mod verify;
pub mod version;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::json;

use crate::config::Config;
use crate::jobs::{Context, Decision, Handler};
use crate::logging::Throttle;
use crate::os::signals::Shutdown;
use crate::outbox::spool::Spool;
use crate::protocol::{self, ActIds, Query, Refusal};
use crate::status::AgentStatus;

/// The `act` of the request.
pub const ACT: &str = "update_agent";
/// The `act` of the outcome.
pub const RESULT_ACT: &str = "update_result";

/// Where an update stands, as `get_agent_info` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Downloading,
    Verifying,
    Switching,
    /// This agent is a new version not confirmed yet.
    Trial,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Downloading => "downloading",
            Phase::Verifying => "verifying",
            Phase::Switching => "switching",
            Phase::Trial => "trial",
        }
    }
}

/// Whether something else keeps an update from starting now; `Some` says what. The seam
/// for another part of the agent (an action running, maintenance).
pub type NotNow = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// What the handler, its job thread and the confirmation share.
pub struct Shared {
    phase: Mutex<Phase>,
    last: Mutex<Option<state::Last>>,
    status: Arc<AgentStatus>,
    /// Set when a switch is done and the agent must re-execute itself.
    restart: AtomicBool,
    shutdown: OnceLock<Shutdown>,
    /// The newest version this rig ever ran and the ones rolled back, as the update state
    /// last said: the socket thread judges offers with them without reading the disk.
    known: Mutex<Known>,
    /// `[update]` and `paths.update_dir` as the config says now (a reload changes them): an
    /// update that started under other settings is not switched to.
    settings: Mutex<Settings>,
    /// The smoke tests running (the new build's `--version` and `check`), killed when the
    /// agent stops: each has its own process group, which the agent's exit does not reach.
    pub(crate) smoke_runs: crate::os::child::Groups,
}

/// What an update depends on in the config; see [`Shared::settings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub update: crate::config::UpdateConfig,
    pub update_dir: std::path::PathBuf,
}

impl Settings {
    pub(crate) fn of(cfg: &Config) -> Settings {
        Settings { update: cfg.update.clone(), update_dir: cfg.paths.update_dir.clone() }
    }
}

/// See [`Shared::known`].
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub newest: String,
    pub bad: Vec<String>,
}

impl Shared {
    pub fn new(status: Arc<AgentStatus>, cfg: &Config) -> Arc<Shared> {
        let s = Arc::new(Shared {
            phase: Mutex::new(Phase::Idle),
            last: Mutex::new(None),
            status,
            restart: AtomicBool::new(false),
            shutdown: OnceLock::new(),
            known: Mutex::new(Known { newest: crate::version().to_string(), bad: Vec::new() }),
            settings: Mutex::new(Settings::of(cfg)),
            smoke_runs: crate::os::child::Groups::default(),
        });
        s.publish();
        s
    }

    pub fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_phase(&self, p: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = p;
        self.publish();
    }

    /// An update is under way (or this version is on trial): actions wait.
    pub fn busy(&self) -> bool {
        self.phase() != Phase::Idle
    }

    /// Takes in what the update state says of versions (read off the socket thread).
    pub(crate) fn set_known(&self, st: &state::UpdateState) {
        let mut newest = crate::version().to_string();
        if let Some(n) = &st.newest
            && version::newer(n, &newest)
        {
            newest = n.clone();
        }
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) = Known { newest, bad: st.bad.clone() };
    }

    /// What the config says now of updates (see [`Shared::settings`]).
    pub(crate) fn settings(&self) -> Settings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the agent was asked to stop (for the switch's restart or for good).
    pub(crate) fn stopping(&self) -> bool {
        self.shutdown.get().is_some_and(Shutdown::is_requested)
    }

    pub(crate) fn set_last(&self, last: state::Last) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
        self.publish();
    }

    /// What `get_agent_info` shows as `update` (no key material).
    fn publish(&self) {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.status.set_update(json!({
            "enabled": self.settings().update.enabled,
            "state": self.phase().as_str(),
            "last": last.map(|l| json!({"update_id": l.request.update_id, "outcome": l.outcome.as_str(),
                "from_version": l.request.from_version, "to_version": l.request.to_version, "detail": l.detail})),
        }));
    }

    /// Where the switch asks the agent to stop, so that `main` re-executes it.
    pub fn set_shutdown(&self, s: Shutdown) {
        let _ = self.shutdown.set(s);
    }

    /// Stops the agent for `main` to start it again, unless it is already stopping (a
    /// SIGTERM during the switch): then it just stops, and the next start runs the switched
    /// build.
    pub(crate) fn restart_now(&self) {
        if let Some(s) = self.shutdown.get()
            && !s.is_requested()
        {
            self.restart.store(true, Ordering::SeqCst);
            s.stop();
        }
    }

    /// The agent stopped for a switch: `main` re-executes itself.
    pub fn restart_requested(&self) -> bool {
        self.restart.load(Ordering::SeqCst)
    }
}

/// The runner's side of updates: the handler of `update_agent`.
pub struct Updates {
    cfg: Arc<Config>,
    spool: Arc<Spool>,
    ids: Arc<ActIds>,
    shared: Arc<Shared>,
    not_now: Vec<NotNow>,
    /// Refusals are logged at most 20 a minute (as `run_action`'s are): a gateway sending
    /// offers without end gets every answer, not a journal line for each.
    refusal_log: Throttle,
}

impl Updates {
    /// Reports an outcome a previous run left unreported and, when this is a new version on
    /// trial, starts its confirmation. Does disk IO: call before the socket loop starts.
    pub fn new(
        cfg: Arc<Config>,
        id: &protocol::Identity,
        status: Arc<AgentStatus>,
        spool: Arc<Spool>,
        ids: Arc<ActIds>,
    ) -> Updates {
        let shared = Shared::new(status, &cfg);
        confirm::start(&cfg, &shared, &spool, id);
        Updates {
            cfg,
            spool,
            ids,
            shared,
            not_now: Vec::new(),
            refusal_log: Throttle::new(std::time::Duration::from_secs(60), 20),
        }
    }

    /// What the agent wiring shares with actions and `main`.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Adds a reason an update may not start now (an action running, maintenance).
    pub fn add_not_now(&mut self, check: NotNow) {
        self.not_now.push(check);
    }

    /// The offer judged on its own and against this rig's versions and settings; what else
    /// runs now is [`Updates::claim`]'s to ask.
    fn decide(&self, query: &Query) -> Result<offer::Offer, Refusal> {
        let refuse = |code, description: String| Refusal { code, description };
        if query.echo.reqtype != "write" {
            return Err(refuse(
                protocol::code::BAD_REQUEST,
                "update_agent is answered at once and reports through update_result: reqtype must be \"write\"".into(),
            ));
        }
        if !self.cfg.update.enabled {
            return Err(refuse(
                protocol::code::NOT_ALLOWED,
                "updates are off on this rig ([update] enabled = false)".into(),
            ));
        }
        if self.shared.busy() {
            return Err(refuse(
                protocol::code::NOT_NOW,
                format!("an update is already under way ({})", self.shared.phase().as_str()),
            ));
        }
        let known = self.shared.known.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let rig = offer::Rig {
            target: crate::TARGET,
            newest: &known.newest,
            bad: &known.bad,
            max_bytes: self.cfg.update.max_bytes,
        };
        offer::judge(&query.echo.reqtype, &query.body, rig).map_err(|e| match e {
            offer::OfferError::BadRequest(w) => refuse(protocol::code::BAD_REQUEST, w),
            offer::OfferError::Refused(w) => refuse(protocol::code::REFUSED, w),
        })
    }

    /// Takes the phase (downloading) for an offer judged good, then asks whether something
    /// else keeps an update from starting (an action running, maintenance), and gives the
    /// phase back if one does. A recovery step, on its own
    /// thread, enters the actions' running set and then looks at this phase: of the two
    /// starting at the same moment, at least one sees the other, and never both run.
    fn claim(&self) -> Result<(), Refusal> {
        self.shared.set_phase(Phase::Downloading);
        match self.not_now.iter().find_map(|c| c()) {
            Some(why) => {
                self.shared.set_phase(Phase::Idle);
                Err(Refusal { code: protocol::code::NOT_NOW, description: why })
            }
            None => Ok(()),
        }
    }
}

impl Handler for Updates {
    fn handle(&mut self, query: Query, cx: &Context<'_>) -> Decision {
        let offer = match self.decide(&query).and_then(|o| self.claim().map(|()| o)) {
            Ok(o) => o,
            Err(r) => {
                self.refusal_log.info(&format!(
                    "update offer refused (code {}: {})",
                    r.code,
                    crate::protocol::escape::escape(&r.description)
                ));
                return Decision::Answer(cx.answer(&query.echo, Err(r)));
            }
        };
        let request = state::Request {
            update_id: format!("update-{}", self.ids.next()),
            act_code: query.echo.act_code.clone(),
            client_id: query.echo.client_id.clone(),
            from_version: crate::version().to_string(),
            to_version: offer.version.clone(),
        };
        let job = install::Job {
            cfg: Arc::clone(&self.cfg),
            offer,
            request,
            id: cx.id().clone(),
            spool: Arc::clone(&self.spool),
            shared: Arc::clone(&self.shared),
        };
        match job.spawn(cx.reply(), query.echo.clone()) {
            Ok(()) => Decision::Started,
            Err(e) => {
                self.shared.set_phase(Phase::Idle);
                let r = Refusal {
                    code: protocol::code::PROBE_FAILED,
                    description: format!("cannot start the update: {e}"),
                };
                Decision::Answer(cx.answer(&query.echo, Err(r)))
            }
        }
    }

    fn reconfigure(&mut self, cfg: &Config) {
        self.cfg = Arc::new(cfg.clone());
        *self.shared.settings.lock().unwrap_or_else(|p| p.into_inner()) = Settings::of(cfg);
        self.shared.publish();
    }

    fn stop(&mut self) {
        let n = self.shared.smoke_runs.kill_all();
        if n > 0 {
            log::info!("stopping: killed the update's smoke test of the new build");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QueryEcho;

    fn updates(dir: &std::path::Path) -> Updates {
        let mut cfg = crate::config::tests::minimal_config(dir);
        cfg.update.enabled = true;
        cfg.paths.update_dir = dir.join("update");
        let status = Arc::new(AgentStatus::new("/x.toml".into()));
        let (spool, _) = Spool::open(&dir.join("state")).unwrap();
        let id = protocol::Identity::from(&cfg.device);
        Updates::new(Arc::new(cfg), &id, status, Arc::new(spool), Arc::new(ActIds::new()))
    }

    fn offer() -> Query {
        let body = json!({"act":"update_agent","reqtype":"write","version":"99.0.0","target":crate::TARGET,
            "url":"https://mirror.example/x","size":10,"sha256":"00".repeat(32),"signature":"s"});
        Query {
            echo: QueryEcho { act: ACT.into(), reqtype: "write".into(), act_code: "a".into(), client_id: "c".into() },
            bad_request: None,
            body: body.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn an_offer_in_maintenance_or_while_an_action_runs_is_not_now() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = updates(dir.path());
        let take = |u: &Updates| {
            let taken = u.decide(&offer()).and_then(|_| u.claim());
            u.shared.set_phase(Phase::Idle);
            taken
        };
        assert!(take(&u).is_ok());
        let status = Arc::clone(&u.shared.status);
        u.add_not_now(Arc::new(move || status.in_maintenance().then(|| "the rig is in maintenance".into())));
        assert!(take(&u).is_ok());
        let window = crate::status::Window {
            until: 1_800_000_000,
            by: crate::status::By::Local,
            ends: std::time::Instant::now() + std::time::Duration::from_secs(60),
        };
        u.shared.status.maintenance.set(Some(window));
        let r = take(&u).unwrap_err();
        assert_eq!((r.code, r.description.as_str()), (protocol::code::NOT_NOW, "the rig is in maintenance"));
        u.shared.status.maintenance.set(None);
        u.shared.set_phase(Phase::Switching);
        assert_eq!(u.decide(&offer()).unwrap_err().code, protocol::code::NOT_NOW);
    }

    /// The phase is taken before the running actions are looked at, and given back when
    /// one runs: a recovery step entering the running set at that moment sees the update,
    /// or the update sees it.
    #[test]
    fn an_offer_claims_its_phase_before_looking_for_a_running_action_and_gives_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = updates(dir.path());
        let step_running = Arc::new(AtomicBool::new(true));
        let phase_seen = Arc::new(Mutex::new(Vec::new()));
        let (running, seen, shared) = (Arc::clone(&step_running), Arc::clone(&phase_seen), u.shared());
        u.add_not_now(Arc::new(move || {
            seen.lock().unwrap().push(shared.phase());
            running.load(Ordering::SeqCst).then(|| "an action is running (restart_miner)".into())
        }));
        let r = u.claim().unwrap_err();
        assert_eq!((r.code, r.description.as_str()), (protocol::code::NOT_NOW, "an action is running (restart_miner)"));
        assert_eq!(*phase_seen.lock().unwrap(), [Phase::Downloading]);
        assert_eq!(u.shared.phase(), Phase::Idle, "given back");
        step_running.store(false, Ordering::SeqCst);
        assert!(u.claim().is_ok());
        assert_eq!(u.shared.phase(), Phase::Downloading);
    }

    #[test]
    fn a_switch_that_lands_while_the_agent_is_being_stopped_does_not_restart_it() {
        let dir = tempfile::tempdir().unwrap();
        let u = updates(dir.path());
        let (waker, _rx) = crate::os::wake::pair().unwrap();
        let shutdown = Shutdown::new(waker);
        u.shared.set_shutdown(shutdown.clone());
        shutdown.stop();
        u.shared.restart_now();
        assert!(!u.shared.restart_requested(), "a stop asked for is a stop");
        let (waker, _rx) = crate::os::wake::pair().unwrap();
        let u = updates(dir.path());
        u.shared.set_shutdown(Shutdown::new(waker));
        u.shared.restart_now();
        assert!(u.shared.restart_requested());
    }

    #[test]
    fn get_agent_info_shows_whether_updates_are_on_where_one_stands_and_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let u = updates(dir.path());
        u.shared.set_phase(Phase::Downloading);
        let info = u.shared.status.agent_info();
        assert_eq!(info["update"], json!({"enabled": true, "state": "downloading", "last": null}));
    }
}
