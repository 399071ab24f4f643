//! One taken offer, on its own thread: download into the state directory, verify, copy
//! into the update directory, smoke test, switch. Whatever fails, nothing the next start
//! runs has changed until the switch's one rename, and the outcome is reported once.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::net::http_get::{self, GetError, Limits};
use crate::os::durable::sync_dir;
use crate::outbox::spool::Spool;
use serde_json::json;

use crate::jobs::reply::Reply;
use crate::protocol::escape::escape;
use crate::protocol::{self, Identity, QueryEcho, Refusal};
use crate::update::offer::{Offer, hex};
use crate::update::state::{self, Installed, Last, Outcome, Request, Trial};
use crate::update::verify::{self, Expect, VerifyError};
use crate::update::{Phase, Shared, report, version};

/// How long each smoke test (`--version`, `check`) of a new build may take.
pub const SMOKE_TIMEOUT: Duration = Duration::from_secs(20);

/// The network half's staging directory for downloads, under the state directory.
pub fn staging_dir(cfg: &Config) -> PathBuf {
    cfg.paths.state_dir.join("update")
}

/// A taken offer and what it needs.
pub struct Job {
    pub cfg: Arc<Config>,
    pub offer: Offer,
    pub request: Request,
    pub id: Identity,
    pub spool: Arc<Spool>,
    pub shared: Arc<Shared>,
}

/// A step that failed: the outcome to report and what to say.
type Failure = (Outcome, String);

fn failed(what: &str, e: impl std::fmt::Display) -> Failure {
    (Outcome::Failed, format!("{what}: {}", escape(&e.to_string())))
}

impl Job {
    /// Starts the update on a thread of its own, which answers the offer through `reply`
    /// once the update is durably recorded as under way (so that it gets an outcome,
    /// whatever happens after the answer).
    pub fn spawn(self, reply: Reply, echo: QueryEcho) -> io::Result<()> {
        std::thread::Builder::new()
            .name("update".into())
            .spawn(move || {
                let data = json!({"update_id": self.request.update_id, "from_version": self.request.from_version,
                    "to_version": self.request.to_version});
                let answer = match report::begin(&self.cfg, &self.request) {
                    Ok(()) => Ok(data),
                    Err(e) => Err(Refusal {
                        code: protocol::code::PROBE_FAILED,
                        description: format!("cannot record the update in the state directory ({e}); try again"),
                    }),
                };
                let taken = answer.is_ok();
                let _ = reply.send(protocol::encode_answer(&self.id, &echo, answer));
                if taken {
                    self.run();
                } else {
                    self.shared.set_phase(Phase::Idle);
                }
            })
            .map(|_| ())
    }

    fn run(self) {
        self.run_with(|job, staged| job.attempt(staged));
    }

    /// [`Job::run`] with the attempt given, so that a test can make it panic. A panic in
    /// the attempt (a bug, not an input: every input is checked) still gets the update its
    /// one outcome and sets the phase back to idle; otherwise the update would stay "under
    /// way" and refuse every later offer and action until a restart.
    fn run_with(self, attempt: impl FnOnce(&Job, &Path) -> Result<u64, Failure>) {
        let started = Instant::now();
        log::info!(
            "update {}: {} -> {} from {}",
            self.request.update_id,
            self.request.from_version,
            escape(&self.request.to_version),
            self.offer.url
        );
        let staged = staging_dir(&self.cfg).join("download");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| attempt(&self, &staged)))
            .unwrap_or_else(|panic| self.after_panic(panic.as_ref()));
        let _ = fs::remove_file(&staged);
        match result {
            Ok(bytes) => {
                log::info!(
                    "update {}: {} verified and switched in {:?} ({bytes} bytes downloaded); restarting into it",
                    self.request.update_id,
                    escape(&self.request.to_version),
                    started.elapsed()
                );
                report::end(&self.cfg);
                self.shared.restart_now();
            }
            Err((outcome, detail)) => {
                log::warn!("update {}: {}: {detail}", self.request.update_id, outcome.as_str());
                let last = Last { request: self.request.clone(), outcome, detail };
                // Kept in the update state too, for get_agent_info after a restart; the
                // outbox is what reports it, whether or not that write works.
                let dir = &self.cfg.paths.update_dir;
                if let Ok(_lock) = state::lock(dir)
                    && let Ok(mut st) = state::load_or_reset(dir)
                {
                    st.last = Some(last.clone());
                    let _ = state::save(dir, &st);
                }
                report::report(&self.spool, &self.id, &self.cfg, &self.shared, &last);
                self.shared.set_phase(Phase::Idle);
            }
        }
    }

    /// What a panicked attempt comes to: switched, when the update state already names this
    /// update's trial (the one rename was done; the next start runs the new build and
    /// reports for it), failed otherwise.
    fn after_panic(&self, panic: &(dyn std::any::Any + Send)) -> Result<u64, Failure> {
        let dir = &self.cfg.paths.update_dir;
        let switched = state::lock(dir)
            .ok()
            .and_then(|_lock| state::load_or_reset(dir).ok())
            .is_some_and(|st| st.trial.is_some_and(|t| t.request.update_id == self.request.update_id));
        if switched {
            return Ok(0);
        }
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err((
            Outcome::Failed,
            format!(
                "the update stopped on an internal error ({}); nothing was switched",
                escape(&what.chars().take(200).collect::<String>())
            ),
        ))
    }

    /// Download, verify, install, switch. Returns the bytes downloaded.
    fn attempt(&self, staged: &Path) -> Result<u64, Failure> {
        let o = &self.offer;
        let dir = staging_dir(&self.cfg);
        fs::create_dir_all(&dir).map_err(|e| failed("cannot create the staging directory", e))?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .read(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(staged)
            .map_err(|e| failed("cannot create the download file", e))?;
        let bytes = http_get::download(
            &o.url,
            &self.cfg.gateway.tls,
            &self.cfg.gateway.proxy,
            &mut file,
            Limits::for_size(o.size),
        )
        .map_err(|e| match e {
            GetError::Disk(e) => failed("cannot write the download in the state directory", e),
            e => (Outcome::Refused, format!("download: {e}")),
        })?;
        file.sync_all().map_err(|e| failed("cannot write the download in the state directory", e))?;
        drop(file);
        self.shared.set_phase(Phase::Verifying);
        let keys = &self.cfg.update.keys;
        let expect = Expect {
            version: &o.version,
            target: crate::TARGET,
            sha256: &o.sha256,
            signature: &o.signature,
            keys,
            max_bytes: self.cfg.update.max_bytes,
        };
        check(staged, expect)?;
        let installed = self.install(staged, expect)?;
        self.shared.set_phase(Phase::Switching);
        self.switch(installed)?;
        Ok(bytes)
    }

    /// Copies the verified download into the update directory, verifies the copy (what
    /// will run) and smoke-tests it.
    fn install(&self, staged: &Path, expect: Expect<'_>) -> Result<Installed, Failure> {
        let dir = &self.cfg.paths.update_dir;
        let name = format!("rig-agent-{}", self.offer.version);
        let tmp = dir.join(format!(".tmp-{name}"));
        let target = dir.join(&name);
        let copy = || -> io::Result<()> {
            let _ = fs::remove_file(&tmp);
            let mut out = OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o700)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&tmp)?;
            io::copy(&mut File::open(staged)?, &mut out)?;
            out.flush()?;
            out.sync_all()?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
            fs::rename(&tmp, &target)?;
            sync_dir(dir)
        };
        if let Err(e) = copy() {
            let _ = fs::remove_file(&tmp);
            return Err(failed(&format!("cannot install the build into {}", dir.display()), e));
        }
        let cleanup = |f: Failure| {
            let _ = fs::remove_file(&target);
            f
        };
        check(&target, expect).map_err(cleanup)?;
        smoke_test(&target, &self.offer.version, &self.cfg.file).map_err(|d| cleanup((Outcome::Refused, d)))?;
        Ok(Installed {
            version: self.offer.version.clone(),
            sha256: hex(&self.offer.sha256),
            file: name,
            signature: self.offer.signature.clone(),
        })
    }

    /// The switch: one durable rename of the update state makes the new build the one the
    /// next start runs, on trial, with the running one kept to go back to.
    fn switch(&self, installed: Installed) -> Result<(), Failure> {
        let dir = &self.cfg.paths.update_dir;
        let _lock = state::lock(dir).map_err(|e| failed("cannot lock the update state", e))?;
        let mut st = state::load_or_reset(dir).map_err(|e| failed("cannot read the update state", e))?;
        // Judged again with the state as it is now, not as it was at the offer.
        let newest = st.newest.clone().unwrap_or_default();
        if !version::newer(&installed.version, crate::version())
            || (!newest.is_empty() && !version::newer(&installed.version, &newest))
            || st.bad.contains(&installed.version)
        {
            return Err((
                Outcome::Refused,
                format!("version {} is no longer newer than what this rig ran", installed.version),
            ));
        }
        // What runs now is what comes back: an installed build, or the package's (None).
        st.previous = st.current.take().filter(|c| c.version == crate::version());
        st.current = Some(installed);
        st.trial = Some(Trial { request: self.request.clone(), started_at: crate::status::unix_now(), starts: 0 });
        if let Err(e) = state::save(dir, &st) {
            return Err(failed("cannot write the update state (nothing was switched)", e));
        }
        state::prune(dir, &st);
        self.shared.set_known(&st);
        Ok(())
    }
}

fn check(path: &Path, expect: Expect<'_>) -> Result<(), Failure> {
    verify::check_file(path, expect).map_err(|e| match e {
        VerifyError::Refused(why) => (Outcome::Refused, why),
        VerifyError::Io(e) => failed("cannot read the build", e),
    })
}

/// The new build must say the signed version and accept this rig's config.
fn smoke_test(binary: &Path, version: &str, config: &Path) -> Result<(), String> {
    let run = |args: &[&std::ffi::OsStr]| {
        let mut cmd = Command::new(binary);
        cmd.args(args);
        crate::os::child::run(cmd, SMOKE_TIMEOUT, 4096).map_err(|e| format!("smoke test: cannot run the build: {e}"))
    };
    let out = run(&["--version".as_ref()])?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.is_some_and(|s| s.success()) || said != format!("rig-agent {version}") {
        return Err(format!(
            "smoke test: `--version` said \"{}\" ({}), not \"rig-agent {version}\" (exit 0)",
            escape(&said.chars().take(100).collect::<String>()),
            out.status.map_or_else(|| "timed out".to_string(), |s| s.to_string())
        ));
    }
    let out = run(&["--config".as_ref(), config.as_os_str(), "check".as_ref()])?;
    if !out.status.is_some_and(|s| s.success()) {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "smoke test: `check` refused this rig's config ({})",
            escape(&err.trim().chars().take(300).collect::<String>())
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ActIds;
    use crate::status::AgentStatus;

    fn job(dir: &Path) -> Job {
        let mut cfg = crate::config::tests::minimal_config(dir);
        cfg.update.enabled = true;
        cfg.paths.update_dir = dir.join("update-dir");
        fs::create_dir_all(&cfg.paths.update_dir).unwrap();
        let body = json!({"act":"update_agent","reqtype":"write","version":"99.0.0","target":crate::TARGET,
            "url":"https://mirror.example/x","size":10,"sha256":"00".repeat(32),"signature":"s"});
        let rig =
            crate::update::offer::Rig { target: crate::TARGET, newest: crate::version(), bad: &[], max_bytes: 1 << 20 };
        let offer = crate::update::offer::judge("write", body.as_object().unwrap(), rig).unwrap();
        let (spool, _) = Spool::open(&dir.join("state")).unwrap();
        let status = Arc::new(AgentStatus::new("/x.toml".into()));
        let id = Identity::from(&cfg.device);
        let request = Request {
            update_id: format!("update-{}", ActIds::new().next()),
            act_code: "a".into(),
            client_id: "c".into(),
            from_version: crate::version().into(),
            to_version: "99.0.0".into(),
        };
        let shared = Shared::new(status, true);
        shared.set_phase(Phase::Downloading);
        Job { cfg: Arc::new(cfg), offer, request, id, spool: Arc::new(spool), shared }
    }

    #[test]
    fn a_panic_in_the_update_reports_failed_once_and_frees_the_rig_for_offers_and_actions() {
        let dir = tempfile::tempdir().unwrap();
        let job = job(dir.path());
        let (spool, shared, update_id) =
            (Arc::clone(&job.spool), Arc::clone(&job.shared), job.request.update_id.clone());
        job.run_with(|_, _| panic!("index out of bounds"));
        assert_eq!(shared.phase(), Phase::Idle, "a panicked update left the rig busy");
        assert!(spool.contains(&update_id), "no update_result for the panicked update");
        let (seq, _) = spool.find(&update_id).unwrap();
        let text = spool.texts(&[seq])[0].1.clone().unwrap();
        let sent: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(sent["data"]["outcome"], "failed", "{sent}");
        let detail = sent["data"]["detail"].as_str().unwrap();
        assert!(
            detail.contains("internal error (index out of bounds)") && detail.contains("nothing was switched"),
            "{detail}"
        );
        assert!(!shared.restart_requested());
    }

    #[test]
    fn a_panic_after_the_switch_restarts_into_the_new_build_and_reports_nothing_yet() {
        let dir = tempfile::tempdir().unwrap();
        let job = job(dir.path());
        let (spool, shared, update_id) =
            (Arc::clone(&job.spool), Arc::clone(&job.shared), job.request.update_id.clone());
        let (waker, _rx) = crate::os::wake::pair().unwrap();
        shared.set_shutdown(crate::os::signals::Shutdown::new(waker));
        job.run_with(|job, _| {
            let dir = &job.cfg.paths.update_dir;
            let mut st = state::load_or_reset(dir).unwrap();
            st.trial = Some(Trial { request: job.request.clone(), started_at: 1, starts: 0 });
            state::save(dir, &st).unwrap();
            panic!("after the rename")
        });
        assert!(shared.restart_requested(), "the switched build must run");
        assert!(!spool.contains(&update_id), "the new build reports this update, not the old one");
    }
}
