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
        let started = Instant::now();
        log::info!(
            "update {}: {} -> {} from {}",
            self.request.update_id,
            self.request.from_version,
            escape(&self.request.to_version),
            self.offer.url
        );
        let staged = staging_dir(&self.cfg).join("download");
        let result = self.attempt(&staged);
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
