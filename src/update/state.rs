//! What the update keeps in `paths.update_dir`: the verified build that runs next start,
//! the one kept to go back to, the newest version this rig ever ran, the versions rolled
//! back, the trial under way and the last outcome. One small JSON file, written durably
//! (temp, fsync, rename, fsync of the directory): the rename is the switch, so a power cut
//! leaves the old state or the new one. Read-modify-write happens under an exclusive
//! `flock` of a lock file beside it (the trial's watcher and the new agent both write).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use serde_json::{Value, json};

use crate::os::durable::write_durably;

/// The state file's name in the update directory.
pub const FILE: &str = "state.json";
/// The largest state file read; a real one is under 2 KiB.
const MAX: u64 = 64 * 1024;
/// Rolled-back versions remembered; the oldest are forgotten first.
const MAX_BAD: usize = 16;

/// A verified build in the update directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub version: String,
    /// Its sha256, hex: a file that does not match (torn by a power cut) is never run.
    pub sha256: String,
    /// Its file name in the update directory.
    pub file: String,
    /// The minisign signature it was verified with, checked again before each start.
    pub signature: String,
}

/// Who asked for an update, to address its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub update_id: String,
    pub act_code: String,
    pub client_id: String,
    pub from_version: String,
    pub to_version: String,
}

/// A new version on trial: switched to, not confirmed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    pub request: Request,
    /// Unix seconds of the switch.
    pub started_at: u64,
    /// Starts of the new version so far.
    pub starts: u32,
}

/// What became of an update (PROTOCOL.md §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Installed,
    RolledBack,
    Refused,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Installed => "installed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Outcome> {
        [Outcome::Installed, Outcome::RolledBack, Outcome::Refused, Outcome::Failed]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// An outcome and the update it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Last {
    pub request: Request,
    pub outcome: Outcome,
    pub detail: String,
}

/// The whole state. `Default` is a rig that never installed an update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateState {
    pub current: Option<Installed>,
    pub previous: Option<Installed>,
    /// The newest version ever confirmed here (the package's own is compared separately).
    pub newest: Option<String>,
    pub bad: Vec<String>,
    pub trial: Option<Trial>,
    pub last: Option<Last>,
}

/// Why the state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Unreadable: the caller runs the package's binary and says so.
    #[error("cannot read {0}: {1}")]
    Io(String, io::Error),
    /// Not a state file this agent wrote: the caller moves it aside and starts over.
    #[error("{0} is corrupt ({1})")]
    Corrupt(String, String),
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k)?.as_str().map(str::to_string)
}

fn installed_json(i: &Installed) -> Value {
    json!({"version": i.version, "sha256": i.sha256, "file": i.file, "signature": i.signature})
}

fn installed_from(v: &Value) -> Option<Option<Installed>> {
    if v.is_null() {
        return Some(None);
    }
    let file = s(v, "file")?;
    // A name in the directory, never a path: the state cannot point elsewhere.
    if file.is_empty() || file.contains('/') || file.starts_with('.') {
        return None;
    }
    Some(Some(Installed { version: s(v, "version")?, sha256: s(v, "sha256")?, file, signature: s(v, "signature")? }))
}

pub(crate) fn request_json(r: &Request) -> Value {
    json!({"update_id": r.update_id, "act_code": r.act_code, "client_id": r.client_id,
        "from_version": r.from_version, "to_version": r.to_version})
}

pub(crate) fn request_from(v: &Value) -> Option<Request> {
    Some(Request {
        update_id: s(v, "update_id")?,
        act_code: s(v, "act_code")?,
        client_id: s(v, "client_id")?,
        from_version: s(v, "from_version")?,
        to_version: s(v, "to_version")?,
    })
}

impl UpdateState {
    pub fn to_json(&self) -> Value {
        json!({
            "current": self.current.as_ref().map(installed_json),
            "previous": self.previous.as_ref().map(installed_json),
            "newest": self.newest,
            "bad": self.bad,
            "trial": self.trial.as_ref().map(|t| json!({"request": request_json(&t.request),
                "started_at": t.started_at, "starts": t.starts})),
            "last": self.last.as_ref().map(|l| json!({"request": request_json(&l.request),
                "outcome": l.outcome.as_str(), "detail": l.detail})),
        })
    }

    pub fn from_json(v: &Value) -> Option<UpdateState> {
        let trial = match v.get("trial")? {
            Value::Null => None,
            t => Some(Trial {
                request: request_from(t.get("request")?)?,
                started_at: t.get("started_at")?.as_u64()?,
                starts: u32::try_from(t.get("starts")?.as_u64()?).ok()?,
            }),
        };
        let last = match v.get("last")? {
            Value::Null => None,
            l => Some(Last {
                request: request_from(l.get("request")?)?,
                outcome: Outcome::parse(l.get("outcome")?.as_str()?)?,
                detail: s(l, "detail")?,
            }),
        };
        let bad =
            v.get("bad")?.as_array()?.iter().map(|b| b.as_str().map(str::to_string)).collect::<Option<Vec<_>>>()?;
        Some(UpdateState {
            current: installed_from(v.get("current")?)?,
            previous: installed_from(v.get("previous")?)?,
            newest: match v.get("newest")? {
                Value::Null => None,
                n => Some(n.as_str()?.to_string()),
            },
            bad,
            trial,
            last,
        })
    }

    /// `version` was rolled back: remembered as bad until a newer one succeeds.
    pub fn remember_bad(&mut self, version: &str) {
        if !self.bad.iter().any(|b| b == version) {
            self.bad.push(version.to_string());
        }
        let over = self.bad.len().saturating_sub(MAX_BAD);
        self.bad.drain(..over);
    }

    /// `version` was confirmed: the newest ever run, and what was bad before it is history.
    pub fn confirmed(&mut self, version: &str) {
        if self.newest.as_deref().is_none_or(|n| crate::update::version::newer(version, n)) {
            self.newest = Some(version.to_string());
        }
        self.bad.retain(|b| crate::update::version::newer(b, version));
    }
}

/// The state in `dir`; a missing file is a rig that never updated.
pub fn load(dir: &Path) -> Result<UpdateState, StateError> {
    let path = dir.join(FILE);
    let shown = path.display().to_string();
    use crate::os::bounded_read::{Links, ReadError, read};
    let text = match read(&path, MAX, Links::Refuse) {
        Ok(c) => c.bytes,
        Err(e) if e.is_not_found() => return Ok(UpdateState::default()),
        Err(ReadError::Open { source, .. } | ReadError::Read { source, .. }) => {
            return Err(StateError::Io(shown, source));
        }
        Err(e) => return Err(StateError::Corrupt(shown, e.to_string())),
    };
    let v: Value = serde_json::from_slice(&text).map_err(|e| StateError::Corrupt(shown.clone(), e.to_string()))?;
    UpdateState::from_json(&v).ok_or_else(|| StateError::Corrupt(shown, "not the update state's shape".into()))
}

/// The state, with a corrupt file moved aside (to `state.json.corrupt`) and reported.
pub fn load_or_reset(dir: &Path) -> io::Result<UpdateState> {
    match load(dir) {
        Ok(s) => Ok(s),
        Err(StateError::Corrupt(path, why)) => {
            log::error!(
                "update state {path} is corrupt ({}); moved aside, starting over",
                crate::protocol::escape::escape(&why)
            );
            let _ = fs::rename(dir.join(FILE), dir.join(format!("{FILE}.corrupt")));
            Ok(UpdateState::default())
        }
        Err(StateError::Io(_, e)) => Err(e),
    }
}

/// Writes `state` durably; the rename is the switch.
pub fn save(dir: &Path, state: &UpdateState) -> io::Result<()> {
    write_durably(dir, FILE, state.to_json().to_string().as_bytes())
}

/// Removes the builds in `dir` that `st` no longer names (a build rolled back, one
/// replaced twice): the directory holds at most the current and the previous one.
pub fn prune(dir: &Path, st: &UpdateState) {
    let named: Vec<&str> = [&st.current, &st.previous].into_iter().flatten().map(|i| i.file.as_str()).collect();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("rig-agent-") && !named.contains(&name.as_ref()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Holds the update directory's lock while alive.
pub struct Locked(#[allow(dead_code)] File);

/// Takes the update directory's lock, waiting for whoever holds it. The lock file must be a
/// regular file: opened without following a link and without waiting (a FIFO there, opened
/// for writing, waited for a reader forever, and every start of the agent with it), and
/// anything else is refused naming the path and the fix.
pub fn lock(dir: &Path) -> io::Result<Locked> {
    let path = dir.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(&path)
        .map_err(|e| match e.raw_os_error().map(rustix::io::Errno::from_raw_os_error) {
            // A FIFO without a reader (with one, fstat below says it), or a link.
            Some(rustix::io::Errno::NXIO) => not_a_lock(&path, "a FIFO"),
            Some(rustix::io::Errno::LOOP) => not_a_lock(&path, "a symbolic link"),
            _ => e,
        })?;
    let kind = f.metadata()?.file_type();
    if !kind.is_file() {
        return Err(not_a_lock(&path, if kind.is_fifo() { "a FIFO" } else { "not a regular file" }));
    }
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(Locked(f))
}

fn not_a_lock(path: &Path, what: &str) -> io::Error {
    io::Error::other(format!("{} is {what}, not the update lock file; remove it (it is made again)", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            update_id: "u-1".into(),
            act_code: "a".into(),
            client_id: "c".into(),
            from_version: "0.1.0".into(),
            to_version: "0.2.0".into(),
        }
    }

    #[test]
    fn the_state_reads_back_as_written_and_a_corrupt_one_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), UpdateState::default());
        let st = UpdateState {
            current: Some(Installed {
                version: "0.2.0".into(),
                sha256: "ab".into(),
                file: "rig-agent-0.2.0".into(),
                signature: "s".into(),
            }),
            previous: None,
            newest: Some("0.1.0".into()),
            bad: vec!["0.1.5".into()],
            trial: Some(Trial { request: request(), started_at: 5, starts: 1 }),
            last: Some(Last { request: request(), outcome: Outcome::RolledBack, detail: "d".into() }),
        };
        save(dir.path(), &st).unwrap();
        assert_eq!(load(dir.path()).unwrap(), st);
        fs::write(dir.path().join(FILE), "{\"current\":{\"file\":\"../../bin/sh\"}}").unwrap();
        assert!(matches!(load(dir.path()), Err(StateError::Corrupt(..))));
        assert_eq!(load_or_reset(dir.path()).unwrap(), UpdateState::default());
        assert!(dir.path().join("state.json.corrupt").exists());
    }

    #[test]
    fn the_lock_is_taken_on_a_regular_file_and_refused_at_once_on_a_fifo_or_a_link() {
        let dir = tempfile::tempdir().unwrap();
        drop(lock(dir.path()).unwrap());
        drop(lock(dir.path()).unwrap());
        let path = dir.path().join("lock");
        fs::remove_file(&path).unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, &path, rustix::fs::FileType::Fifo, 0o600.into(), 0).unwrap();
        let e = lock(dir.path()).err().unwrap().to_string();
        assert!(e.contains("is a FIFO") && e.contains("remove it"), "{e}");
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &path).unwrap();
        let e = lock(dir.path()).err().unwrap().to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        assert!(!dir.path().join("elsewhere").exists(), "nothing made through the link");
    }

    #[test]
    fn a_confirmed_version_forgets_older_bad_ones_and_only_moves_newest_forward() {
        let mut st = UpdateState { bad: vec!["0.2.0".into(), "0.4.0".into()], ..Default::default() };
        st.confirmed("0.3.0");
        assert_eq!((st.newest.as_deref(), st.bad.clone()), (Some("0.3.0"), vec!["0.4.0".to_string()]));
        st.confirmed("0.2.5");
        assert_eq!(st.newest.as_deref(), Some("0.3.0"));
    }
}
