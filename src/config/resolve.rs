//! What loading the config does beyond reading its text: the config file itself, the
//! token file, the PEM digests and the state directory (created, or only looked at by
//! `check`). Everything here touches the file system.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::config::section::Section;
use crate::config::*;
use crate::net::tls;
use crate::os::bounded_read::{self, Links};

/// The config file's text; a file that cannot be read is a config error.
pub(super) fn read_config(file: &Path) -> Result<String, ConfigError> {
    bounded_read::read_string(file, CONFIG_CAP, Links::Follow).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        line: None,
        key: None,
        fix: if e.is_not_found() {
            format!(
                "write a config there (see systemd/rig-agent.toml) or pass --config PATH \
                 (default {DEFAULT_PATH})"
            )
        } else {
            "make it a readable regular file of the agent's config".into()
        },
        problem: e.to_string(),
    })
}

/// Whether loading the config may create the state directory (running) or only look (`check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StateDir {
    Create,
    Inspect,
    /// `rig-agent privileged`: never written there, and read-only in its sandbox.
    Ignore,
}

/// The largest token file read: tokens are short; this only stops a wrong file (a log, an
/// image) from being held in memory whole.
pub const TOKEN_CAP: u64 = 64 << 10;

/// The largest config file read.
pub const CONFIG_CAP: u64 = 1 << 20;

pub(super) fn read_token_file(s: &Section, file: &Path) -> Result<Token, ConfigError> {
    let key = "token_file";
    let contents = bounded_read::read(file, TOKEN_CAP, Links::Follow).map_err(|e| {
        let fix = match &e {
            _ if e.is_not_found() => "create the token file, or correct the path",
            bounded_read::ReadError::TooLarge { .. } | bounded_read::ReadError::NotRegular { .. } => {
                "point token_file at a regular file holding only the rig's token"
            }
            _ => "make it readable by the agent's user",
        };
        s.err_at(key, &e.to_string(), fix)
    })?;
    let mode = contents.mode & 0o777;
    if mode & 0o077 != 0 {
        return Err(s.err_at(
            key,
            &format!("{} is readable by group or others (mode {mode:04o})", file.display()),
            &format!("chmod 600 {}", file.display()),
        ));
    }
    let text = contents
        .into_string(file)
        .map_err(|e| s.err_at(key, &e.to_string(), "write the rig's token on its first line"))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(s.err_at(key, &format!("{} is empty", file.display()), "write the rig's token on its first line"));
    }
    Ok(Token(token.to_string()))
}

pub(super) fn read_paths(s: &mut Section, mode: StateDir) -> Result<PathsConfig, ConfigError> {
    s.deny(&["state_dir", "sysfs", "procfs", "rootfs", "kmsg", "privileged_socket"])?;
    let state_dir = s.path("state_dir")?.unwrap_or_else(|| PathBuf::from("/var/lib/rig-agent"));
    // A read-only or full file system is a storage fault (an SD card that ext4 remounted
    // read-only), not a config mistake: refusing to start would lose exactly the disk
    // warnings that matter then. Anything else (permissions, a file in the way) is exit 78.
    // A read-only *mount* of a writable filesystem is systemd's sandbox (ProtectSystem=strict
    // outside ReadWritePaths=), which is configuration; only the filesystem's own read-only
    // flag is a fault.
    let storage_fault = |e: &std::io::Error| match e.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => true,
        ErrorKind::ReadOnlyFilesystem => {
            let path = fs::canonicalize(&state_dir).unwrap_or_else(|_| state_dir.clone());
            crate::probes::mounts::filesystem_readonly(&crate::probes::mounts::read(Path::new("/proc")), &path)
                .unwrap_or(true)
        }
        _ => false,
    };
    let mut state_dir_problem = None;
    let mut state_dir_note = None;
    let attempt = match mode {
        StateDir::Create => fs::create_dir_all(&state_dir).and_then(|()| tempfile_probe(&state_dir)),
        StateDir::Inspect => {
            if !state_dir.exists() {
                state_dir_note = Some("does not exist yet; the agent creates it when it starts".to_string());
            }
            writable_dir_or_parent(&state_dir)
        }
        StateDir::Ignore => Ok(()),
    };
    match attempt {
        Ok(()) => {}
        Err(e) if storage_fault(&e) => state_dir_problem = Some(io_reason(&e)),
        Err(e) if e.kind() == ErrorKind::ReadOnlyFilesystem => {
            return Err(s.err_at(
                "state_dir",
                &format!("{} is on a read-only mount of a writable filesystem", state_dir.display()),
                "under systemd's sandbox only /var/lib/rig-agent is writable: use the default, or add the \
                 directory to ReadWritePaths= (systemctl edit rig-agent)",
            ));
        }
        Err(e) if !state_dir.is_dir() => {
            return Err(s.err_at(
                "state_dir",
                &format!("cannot create {} ({})", state_dir.display(), io_reason(&e)),
                "create it, give the agent's user write access, or point paths.state_dir elsewhere",
            ));
        }
        Err(e) => {
            return Err(s.err_at(
                "state_dir",
                &format!("{} is not writable ({})", state_dir.display(), io_reason(&e)),
                "give the agent's user write access, or point paths.state_dir elsewhere",
            ));
        }
    }
    // The spool must be a directory: anything else there (a file, a FIFO) would fail every
    // start with a bare "File exists". `check` and the start-up both refuse it here.
    let spool = state_dir.join("spool");
    if let Ok(meta) = fs::metadata(&spool)
        && !meta.is_dir()
    {
        return Err(s.err_at(
            "state_dir",
            &format!("{} is {}, not the warning spool directory", spool.display(), file_kind(&meta)),
            &format!("move it away (mv {0} {0}.bad) and start again: the agent creates the directory", spool.display()),
        ));
    }
    Ok(PathsConfig {
        state_dir,
        state_dir_problem,
        state_dir_note,
        sysfs: s.path("sysfs")?.unwrap_or_else(|| "/sys".into()),
        procfs: s.path("procfs")?.unwrap_or_else(|| "/proc".into()),
        rootfs: s.path("rootfs")?.unwrap_or_else(|| "/".into()),
        kmsg: s.path("kmsg")?.unwrap_or_else(|| "/dev/kmsg".into()),
        privileged_socket: match s.str("privileged_socket")?.as_deref() {
            Some("") => None,
            Some(_) => s.path("privileged_socket")?,
            None => Some(crate::privileged::DEFAULT_SOCKET.into()),
        },
    })
}

pub(super) fn digest_files(files: &[&Option<PathBuf>]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files.iter().copied().flatten() {
        f.hash(&mut h);
        bounded_read::read(f, tls::PEM_CAP, Links::Follow).map(|c| c.bytes).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

/// Whether `dir`, or the nearest parent that exists when `dir` does not, is a directory the
/// agent's user may write: `check`'s look at the state directory, which creates nothing.
pub(super) fn writable_dir_or_parent(dir: &Path) -> std::io::Result<()> {
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        return Err(ErrorKind::NotADirectory.into());
    }
    rustix::fs::access(existing, rustix::fs::Access::WRITE_OK).map_err(std::io::Error::from)
}

/// Writes and removes a small file: the only honest test that warnings can be spooled there.
pub(super) fn tempfile_probe(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".rig-agent-write-test-{}", std::process::id()));
    fs::write(&probe, b"")?;
    fs::remove_file(&probe)
}

/// What a path is, for a message about something that should have been a directory.
pub(super) fn file_kind(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "a file"
    }
}

/// `io::Error` without the "(os error 13)" tail, for operator messages.
pub(super) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::NotFound => "no such file or directory".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::ReadOnlyFilesystem => "read-only file system".into(),
        ErrorKind::StorageFull => "no space left on the device".into(),
        _ => e.to_string(),
    }
}
