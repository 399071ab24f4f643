//! The real binary run as another user: `nobody` (uid 65534) stands for the `rig-agent`
//! user of a rig. That user cannot reach a checkout in a private directory (a clone under
//! /root, which is 0700): setpriv's own exec still works (it holds root's capabilities until
//! then), but a program running as that user cannot exec the binary (the seccomp filter's
//! python) nor read the checkout's files. So the binary under test, and any file of the
//! checkout the run needs, are linked or copied into a directory it can reach. Root only: as
//! root these tests always run; without root they say they are skipped.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `nobody`: the agent's own unprivileged user in these tests.
pub const UID: u32 = 65534;

/// A directory `nobody` can reach, holding the agent binary under test (and what else
/// [`Nobody::reachable`] put there); removed when dropped.
pub struct Nobody {
    dir: tempfile::TempDir,
    program: OsString,
    args: Vec<OsString>,
}

impl Nobody {
    /// `None` when not root (after saying the test is skipped). As root it panics, naming
    /// the cause, when `nobody` still cannot run the agent: such a test must fail, not skip.
    pub fn new() -> Option<Nobody> {
        super::root().then(|| Nobody::for_agent(&super::agent_command()))
    }

    /// As [`Nobody::new`] for the agent command line `agent`, as root.
    pub fn for_agent(agent: &Command) -> Nobody {
        let dir = tempfile::Builder::new().prefix("rig-agent-nobody-").tempdir().expect("a temporary directory");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let mut nobody = Nobody { dir, program: OsString::new(), args: Vec::new() };
        // `RIG_AGENT_UNDER_TEST` may be "qemu-aarch64 target/…/rig-agent": each word that
        // names a file is put within reach; a bare command name (found on PATH) is kept.
        let mut words = std::iter::once(agent.get_program()).chain(agent.get_args()).map(|w| {
            let path = Path::new(w);
            if path.is_file() { nobody.reachable(path).into_os_string() } else { w.to_os_string() }
        });
        let program = words.next().unwrap();
        let args: Vec<OsString> = words.collect();
        (nobody.program, nobody.args) = (program, args);
        let out = nobody.command(&[]).arg("--version").output().expect("run setpriv");
        assert!(
            out.status.success(),
            "uid {UID} cannot run the agent from {}: {}",
            nobody.dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        nobody
    }

    /// `file` where `nobody` can reach it (a hard link, or a copy across filesystems), with
    /// its mode: its path there.
    pub fn reachable(&self, file: &Path) -> PathBuf {
        let name = file.file_name().expect("a file name");
        let to = self.dir.path().join(name);
        if fs::hard_link(file, &to).is_err() {
            fs::copy(file, &to).unwrap_or_else(|e| panic!("copy {} for uid {UID}: {e}", file.display()));
        }
        to
    }

    /// `setpriv` running the agent as `nobody` (its group too, no supplementary groups), with
    /// `setpriv_args` (capability sets, …) before the agent's command line.
    pub fn command(&self, setpriv_args: &[&str]) -> Command {
        let mut cmd = as_nobody(setpriv_args);
        cmd.arg(&self.program).args(&self.args);
        cmd
    }

    /// The agent's command line within reach (for a wrapper of its own: a seccomp filter).
    pub fn agent(&self) -> Vec<OsString> {
        std::iter::once(self.program.clone()).chain(self.args.iter().cloned()).collect()
    }

    /// Makes `dirs` traversable by all (0755), as the tests' temporary directories are not,
    /// and gives `owned` (the token, the state directory) to `nobody`.
    pub fn give(dirs: &[&Path], owned: &[&Path]) {
        for d in dirs {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        for p in owned {
            std::os::unix::fs::chown(p, Some(UID), Some(UID)).unwrap();
        }
    }
}

/// `setpriv` as `nobody` with `setpriv_args`, up to `--`: the program and its arguments
/// follow.
pub fn as_nobody(setpriv_args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={UID}")).arg(format!("--regid={UID}")).arg("--clear-groups").args(setpriv_args).arg("--");
    cmd
}
