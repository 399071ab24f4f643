//! A local Unix socket server's plumbing: binding a socket path safely (mode 0600, never
//! through a file that is not a socket, never over a live server) and reading a request
//! under one deadline. The privileged half and the agent's maintenance socket use it.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The socket could not be set up; the service should exit and let systemd retry.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {path}: {source}")]
pub struct ListenError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Binds `path` with mode 0600, replacing a socket left by an earlier run (anything else
/// there is an error, not removed). A socket that accepts a connection is another
/// server (`who`) serving: refused, not replaced. Replacing it left that one alive and
/// unreachable, and nothing answered once this one stopped.
pub fn bind(path: &Path, who: &str) -> Result<UnixListener, ListenError> {
    let err = |source| ListenError { path: path.to_path_buf(), source };
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(err(io::Error::new(io::ErrorKind::AlreadyExists, "a file that is not a socket is there")));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another {who} is already serving there (stop it first)"),
            )));
        }
        fs::remove_file(path).map_err(err)?;
    }
    // Bound and listening under a temporary name, then renamed into place: a client that
    // sees the path can connect (bind and listen are two calls, and between them a connect
    // is refused, which a client would take for a server that is down).
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    // A socket's path has at most 107 bytes: where the temporary name would not fit, the
    // path itself is bound (the agent retries a refused connect within seconds).
    let tmp = if tmp.len() < 108 { PathBuf::from(tmp) } else { path.to_path_buf() };
    let _ = fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(err)?;
    let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(listener)
}

/// Reads from the connection until a deadline: `SO_RCVTIMEO` armed with what is left before
/// each read. Armed once, it bounded each read only, and a peer sending a byte a second
/// held its thread (and its slot) for its whole request.
pub struct UntilDeadline<'a> {
    conn: &'a UnixStream,
    deadline: Instant,
}

impl<'a> UntilDeadline<'a> {
    pub fn new(conn: &'a UnixStream, deadline: Instant) -> UntilDeadline<'a> {
        UntilDeadline { conn, deadline }
    }
}

impl Read for UntilDeadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the request line took too long"));
        }
        self.conn.set_read_timeout(Some(left))?;
        (&*self.conn).read(buf)
    }
}
