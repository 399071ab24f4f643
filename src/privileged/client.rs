//! The network half's side of the privileged socket: one connection per request.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::wire::SmartAnswer;

/// Why no answer came from the privileged half.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket at the path: no privileged half is installed here (a binary run by
    /// hand). The caller may run smartctl itself, with whatever rights it has.
    #[error("no privileged half at {0}")]
    Absent(String),
    /// A socket is there but nobody answers, or the answer broke off: the privileged half
    /// died or is restarting. The caller should report SMART as unavailable and retry
    /// in a few seconds.
    #[error("privileged half at {path} unreachable: {source}")]
    Unreachable {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Asks for smartctl's answer on `name` (`sda`), waiting at most `wait` for it (the
/// smart timeout plus slack: the privileged half kills smartctl at its own deadline).
pub fn smart(socket: &Path, name: &str, wait: Duration) -> Result<SmartAnswer, ClientError> {
    let unreachable = |source| ClientError::Unreachable { path: socket.display().to_string(), source };
    let mut conn = match UnixStream::connect(socket) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ClientError::Absent(socket.display().to_string())),
        Err(e) => return Err(unreachable(e)),
    };
    conn.set_read_timeout(Some(wait)).map_err(unreachable)?;
    conn.set_write_timeout(Some(Duration::from_secs(2))).map_err(unreachable)?;
    conn.write_all(format!("smart {name}\n").as_bytes()).map_err(unreachable)?;
    SmartAnswer::read(&mut conn).map_err(unreachable)
}
