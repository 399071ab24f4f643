//! At start: what the update state says (versions, the last outcome, to report if it was
//! not), and, when this agent is a new version on trial, its confirmation: once logged in
//! and connected for `update.confirm_after` without a break, it records itself as the
//! newest version this rig ever ran, ends the trial and reports `installed`.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::outbox::spool::Spool;
use crate::protocol::Identity;
use crate::update::state::{self, Last, Outcome};
use crate::update::{Phase, Shared, report};

/// How often the trial looks at the connection.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// Reads the update state, reports an outcome left unreported and starts the trial's
/// confirmation if this version is on trial. Disk IO: before the socket loop.
pub fn start(cfg: &Arc<Config>, shared: &Arc<Shared>, spool: &Arc<Spool>, id: &Identity) {
    let dir = &cfg.paths.update_dir;
    // No update directory: no state, but maybe an update a previous run left under way.
    let st = if dir.is_dir() {
        match state::load_or_reset(dir) {
            Ok(st) => st,
            Err(e) => {
                log::warn!("cannot read the update state in {} ({e})", dir.display());
                return;
            }
        }
    } else {
        state::UpdateState::default()
    };
    // Only a binary that is not the build on trial ends it: that build, started again by
    // its watcher (which read the config before updates were turned off), goes on with its
    // trial, and `rolled_back` always means the build before it is what runs.
    let orphaned = st.trial.as_ref().is_some_and(|t| t.request.to_version != crate::version());
    let st = if !cfg.update.enabled && orphaned { end_trial_updates_off(cfg).unwrap_or(st) } else { st };
    shared.set_known(&st);
    let interrupted = report::interrupted(cfg, &st, spool);
    let on_trial = st.trial.as_ref().filter(|t| t.request.to_version == crate::version()).cloned();
    let (cfg, shared, spool, id) = (Arc::clone(cfg), Arc::clone(shared), Arc::clone(spool), id.clone());
    if on_trial.is_some() {
        shared.set_phase(Phase::Trial);
    }
    // The report waits for the disk: on a thread of its own, as the trial's wait is.
    let spawned = std::thread::Builder::new().name("update-confirm".into()).spawn(move || {
        if let Some(last) = &st.last {
            report::report(&spool, &id, &cfg, &shared, last);
        }
        if let Some(last) = &interrupted {
            report::report(&spool, &id, &cfg, &shared, last);
        }
        if let Some(trial) = on_trial {
            watch(&cfg, &shared, &spool, &id, &trial.request.update_id);
        }
    });
    if let Err(e) = spawned {
        log::error!("cannot start the update confirmation thread: {e}");
    }
}

/// Updates were turned off while a build was on trial: the launcher ran this binary (the
/// package's), so nothing would ever end that trial. It ends here, `rolled_back`, with the
/// build that ran before it put back as current; the version is not remembered as bad (it
/// did not fail, the operator chose). `None` when the state could not be written (said).
fn end_trial_updates_off(cfg: &Config) -> Option<state::UpdateState> {
    let dir = &cfg.paths.update_dir;
    let ended = (|| -> std::io::Result<state::UpdateState> {
        let _lock = state::lock(dir)?;
        let mut st = state::load_or_reset(dir)?;
        if let Some(trial) = st.trial.take_if(|t| t.request.to_version != crate::version()) {
            let detail = format!(
                "updates were turned off ([update] enabled = false) while {} was on trial; {} runs",
                crate::protocol::escape::escape(&trial.request.to_version),
                crate::version()
            );
            log::warn!("update {}: {detail}", trial.request.update_id);
            st.current = st.previous.take();
            st.last = Some(Last { request: trial.request, outcome: Outcome::RolledBack, detail });
            state::save(dir, &st)?;
            state::prune(dir, &st);
        }
        Ok(st)
    })();
    ended.map_err(|e| log::warn!("cannot end the trial in {} ({e})", dir.display())).ok()
}

/// Waits for `confirm_after` of connection, then confirms. Ends when the trial is over.
fn watch(cfg: &Config, shared: &Shared, spool: &Spool, id: &Identity, update_id: &str) {
    log::info!(
        "update {update_id}: this version is on trial; confirmed once connected for {:?}",
        cfg.update.confirm_after
    );
    loop {
        std::thread::sleep(LOOK_EVERY);
        if shared.status.connected_for().is_none_or(|d| d < cfg.update.confirm_after) {
            continue;
        }
        let dir = &cfg.paths.update_dir;
        let confirmed = (|| -> std::io::Result<Option<Last>> {
            let _lock = state::lock(dir)?;
            let mut st = state::load_or_reset(dir)?;
            let Some(trial) = st.trial.take_if(|t| t.request.update_id == update_id) else {
                return Ok(None);
            };
            st.confirmed(crate::version());
            let last = Last {
                request: trial.request,
                outcome: Outcome::Installed,
                detail: format!("connected for {:?} after {} start(s)", cfg.update.confirm_after, trial.starts.max(1)),
            };
            st.last = Some(last.clone());
            state::save(dir, &st)?;
            shared.set_known(&st);
            Ok(Some(last))
        })();
        match confirmed {
            Ok(Some(last)) => {
                shared.set_phase(Phase::Idle);
                report::report(spool, id, cfg, shared, &last);
                return;
            }
            Ok(None) => {
                log::warn!("update {update_id}: the trial ended without this version (rolled back)");
                return;
            }
            Err(e) => {
                log::warn!("update {update_id}: cannot record the confirmation ({e}); trying again");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
