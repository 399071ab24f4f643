//! The first thing `rig-agent run` does: start the build the update state names, or this
//! one. Runs in the binary the unit starts (`/usr/bin/rig-agent`, the package's), so what
//! decides and watches is never the new build:
//!
//! - no update installed, updates off, or this binary not older than the installed update
//!   (a later `dpkg -i` of a newer package wins): this binary runs;
//! - a confirmed update: its file is checked (sha256 from the state, and its signature with
//!   the keys of this rig's config: a torn or replaced file is never run) and executed in
//!   place (same PID, same arguments);
//! - an update on trial: this process stays as its parent and watches it. Unless it
//!   confirms within `update.confirm_within` of the switch, or if it has started
//!   [`MAX_TRIAL_STARTS`] times without confirming, the old build is put back (the version
//!   remembered as bad, `rolled_back` kept as the last outcome) and runs again, which
//!   reports it. SIGTERM, SIGINT and SIGHUP are passed on to it.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::config::Config;
use crate::status::unix_now;
use crate::update::state::{self, Installed, Last, Outcome, UpdateState};
use crate::update::verify::{self, Expect};
use crate::update::{offer, version};

/// Starts of a new build on trial without confirming that count as "keeps dying".
pub const MAX_TRIAL_STARTS: u32 = 3;
/// How often the watcher looks at its child and the state.
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// A child asked to stop gets this long before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What to start.
#[derive(Debug, PartialEq, Eq)]
pub enum Launch {
    /// This binary.
    Here,
    /// A confirmed update, in place.
    Exec(PathBuf),
    /// An update on trial, as a child watched for `left` more at most: what the trial's
    /// wall-clock end leaves, never more than `update.confirm_within`. The watcher counts it
    /// down on the monotonic clock, so a wall clock set while it watches (NTP's first sync
    /// on a board that booted without a battery-backed clock, a day or decades forward)
    /// neither ends a trial early nor stretches it.
    Watch { path: PathBuf, update_id: String, left: Duration },
}

/// Decides what runs, updating the state as it goes (a start counted, a rollback).
pub fn decide(cfg: &Config) -> Launch {
    let dir = &cfg.paths.update_dir;
    if !cfg.update.enabled || !dir.join(state::FILE).exists() {
        return Launch::Here;
    }
    let decided = (|| -> std::io::Result<Launch> {
        let _lock = state::lock(dir)?;
        let mut st = state::load_or_reset(dir)?;
        loop {
            let Some(current) = st.current.clone() else { return Ok(Launch::Here) };
            if !version::newer(&current.version, crate::version()) {
                if current.version != crate::version() {
                    log::info!(
                        "this binary ({}) is newer than the installed update {}: it runs (a newer package wins)",
                        crate::version(),
                        current.version
                    );
                }
                return Ok(Launch::Here);
            }
            let path = dir.join(&current.file);
            let Some(trial) = st.trial.clone() else {
                return Ok(match intact(cfg, &current) {
                    Ok(()) => Launch::Exec(path),
                    Err(why) => {
                        log::error!("the installed update {} is not run: {why}; this binary runs", current.version);
                        Launch::Here
                    }
                });
            };
            let deadline = trial_end(trial.started_at, cfg.update.confirm_within);
            let why = if unix_now() >= deadline {
                Some(format!(
                    "{} did not confirm within update.confirm_within ({:?}) after {} start(s)",
                    current.version, cfg.update.confirm_within, trial.starts
                ))
            } else if trial.starts >= MAX_TRIAL_STARTS {
                Some(format!(
                    "{} started {} times without confirming (it keeps exiting before it has been connected for {:?})",
                    current.version, trial.starts, cfg.update.confirm_after
                ))
            } else {
                intact(cfg, &current).err().map(|w| format!("{} can no longer be run: {w}", current.version))
            };
            if let Some(why) = why {
                roll_back(&mut st, why);
                state::save(dir, &st)?;
                state::prune(dir, &st);
                continue;
            }
            st.trial.as_mut().expect("checked above").starts += 1;
            state::save(dir, &st)?;
            let left = Duration::from_secs(deadline.saturating_sub(unix_now())).min(cfg.update.confirm_within);
            return Ok(Launch::Watch { path, update_id: trial.request.update_id, left });
        }
    })();
    decided.unwrap_or_else(|e| {
        log::error!("cannot read or write the update state in {} ({e}); this binary runs", dir.display());
        Launch::Here
    })
}

/// When a trial started at `started_at` (Unix seconds, read back from the state file, so
/// any number) ends. Saturating: a time near the top of the range overflowed, a panic at
/// every start in a debug build.
fn trial_end(started_at: u64, confirm_within: Duration) -> u64 {
    started_at.saturating_add(confirm_within.as_secs())
}

/// The trial is over: the old build comes back, the new version is remembered as bad.
fn roll_back(st: &mut UpdateState, why: String) {
    let Some(trial) = st.trial.take() else { return };
    log::warn!("update {}: rolled back: {why}", trial.request.update_id);
    st.remember_bad(&trial.request.to_version);
    st.current = st.previous.take();
    st.last = Some(Last { request: trial.request, outcome: Outcome::RolledBack, detail: why });
}

/// The installed file is the one verified: sha256 as recorded, signature by a key of the
/// rig's config.
fn intact(cfg: &Config, i: &Installed) -> Result<(), String> {
    let sha = offer::parse_hex(&i.sha256).ok_or("the state's sha256 is malformed")?;
    verify::check_file(
        &cfg.paths.update_dir.join(&i.file),
        Expect {
            version: &i.version,
            target: crate::TARGET,
            sha256: &sha,
            signature: &i.signature,
            keys: &cfg.update.keys,
            max_bytes: cfg.update.max_bytes,
        },
    )
    .map_err(|e| e.to_string())
}

/// Starts what the state names; returns only when this binary is to run (an update on
/// trial that failed comes back here as the old build). `args` are this process's
/// arguments, passed on as they are.
pub fn launch(cfg: &Config, args: &[std::ffi::OsString]) {
    loop {
        match decide(cfg) {
            Launch::Here => return,
            Launch::Exec(path) => {
                log::info!("starting the installed update {}", path.display());
                let e = Command::new(&path).args(args).exec();
                log::error!("cannot start {} ({e}); this binary runs", path.display());
                return;
            }
            Launch::Watch { path, update_id, left } => {
                if let Some(code) = watch(cfg, &path, args, &update_id, Instant::now() + left) {
                    std::process::exit(code);
                }
            }
        }
    }
}

/// Runs the build on trial as a child. `Some(exit code)` when this process should end with
/// it (stopped, or confirmed and then exited); `None` to decide again (it died on trial,
/// or was rolled back).
fn watch(cfg: &Config, path: &PathBuf, args: &[std::ffi::OsString], update_id: &str, ends: Instant) -> Option<i32> {
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGTERM, &stop),
        (signal_hook::consts::SIGINT, &stop),
        (signal_hook::consts::SIGHUP, &hup),
    ] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(flag)) {
            log::warn!("cannot pass signal {sig} on to the build on trial ({e})");
        }
    }
    log::info!("update {update_id}: starting {} on trial", path.display());
    let mut child = match Command::new(path).args(args).spawn() {
        Ok(c) => c,
        Err(e) => {
            log::error!("update {update_id}: cannot start {} ({e})", path.display());
            return None;
        }
    };
    let pid = Pid::from_child(&child);
    let mut stopping: Option<Instant> = None;
    let mut confirmed = false;
    loop {
        // The stop first: systemd's stop signals the whole cgroup, so the child may have
        // exited from its own SIGTERM before this process looked at its flag.
        if stop.swap(false, Ordering::SeqCst) && stopping.is_none() {
            let _ = kill_process(pid, Signal::TERM);
            stopping = Some(Instant::now());
        }
        if let Ok(Some(status)) = child.try_wait() {
            if confirmed {
                return Some(code_of(status));
            }
            // Stopped: a restart or a reboot during the trial, which is not the new version
            // dying, so its start is given back. (An exit 0 of its own is not taken for a
            // stop: a broken build that returns at once must still come to a rollback.)
            if stopping.is_some() {
                give_back_start(cfg, update_id);
                return Some(code_of(status));
            }
            log::warn!("update {update_id}: the build on trial exited ({status}) before it confirmed");
            return if still_on_trial(cfg, update_id) { None } else { Some(code_of(status)) };
        }
        if hup.swap(false, Ordering::SeqCst) {
            let _ = kill_process(pid, Signal::HUP);
        }
        if stopping.is_some_and(|at| at.elapsed() > STOP_GRACE) {
            let _ = child.kill();
        }
        if !confirmed && stopping.is_none() {
            if !still_on_trial(cfg, update_id) {
                log::info!("update {update_id}: the trial is over");
                confirmed = true;
            } else if Instant::now() >= ends {
                end(&mut child, pid);
                return None;
            }
        }
        std::thread::sleep(LOOK_EVERY);
    }
}

/// A start of the build on trial that ended in a stop does not count against it.
fn give_back_start(cfg: &Config, update_id: &str) {
    let dir = &cfg.paths.update_dir;
    let given = (|| -> std::io::Result<()> {
        let _lock = state::lock(dir)?;
        let mut st = state::load(dir).map_err(std::io::Error::other)?;
        if let Some(t) = st.trial.as_mut().filter(|t| t.request.update_id == update_id && t.starts > 0) {
            t.starts -= 1;
            state::save(dir, &st)?;
        }
        Ok(())
    })();
    if let Err(e) = given {
        log::warn!("update {update_id}: cannot record that the trial's last start ended in a stop ({e})");
    }
}

/// Whether update `update_id` is still on trial.
fn still_on_trial(cfg: &Config, update_id: &str) -> bool {
    let dir = &cfg.paths.update_dir;
    let Ok(_lock) = state::lock(dir) else { return true };
    state::load(dir).map(|st| st.trial.is_some_and(|t| t.request.update_id == update_id)).unwrap_or(true)
}

/// Stops the child: SIGTERM, then SIGKILL after the grace.
fn end(child: &mut Child, pid: Pid) {
    let _ = kill_process(pid, Signal::TERM);
    let at = Instant::now();
    while at.elapsed() < STOP_GRACE {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(LOOK_EVERY);
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn code_of(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trial_start_read_back_as_any_number_gives_an_end_without_overflowing() {
        assert_eq!(trial_end(1_000, Duration::from_secs(600)), 1_600);
        assert_eq!(trial_end(u64::MAX - 5, Duration::from_secs(600)), u64::MAX);
    }
}
