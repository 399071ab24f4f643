//! The agent's (the network half's) side of the privileged socket, one connection per
//! request, and what the two halves share: the closed request set and its encoding
//! ([`wire`]), and running smartctl ([`smartctl`]), which the privileged half does for the
//! agent and the agent does itself where no privileged half is installed. The privileged
//! half (`privileged/`, the server) imports this folder; nothing here imports it.

pub(crate) mod smartctl;
pub(crate) mod wire;

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::kernel_log::cursor::Cursor;
use wire::{MAX_HEADER, SmartAnswer};

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
    /// The privileged half answered but cannot read the kernel log itself (its unit lacks
    /// CAP_SYSLOG, or `ProtectKernelLogs=`): the reason, escaped. Scans go on; asking
    /// again later is cheap.
    #[error("the privileged half cannot read the kernel log: {0}")]
    KmsgUnreadable(String),
}

/// Asks for smartctl's answer on `name` (`sda`), waiting at most `wait` for it (the
/// smart timeout plus slack: the privileged half kills smartctl at its own deadline).
pub fn smart(socket: &Path, name: &str, wait: Duration) -> Result<SmartAnswer, ClientError> {
    let unreachable = |source| ClientError::Unreachable { path: socket.display().to_string(), source };
    let mut conn = connect(socket)?;
    conn.set_read_timeout(Some(wait)).map_err(unreachable)?;
    conn.set_write_timeout(Some(Duration::from_secs(2))).map_err(unreachable)?;
    conn.write_all(format!("smart {name}\n").as_bytes()).map_err(unreachable)?;
    SmartAnswer::read(&mut conn).map_err(unreachable)
}

/// Asks for the kernel log from after `cursor` (a record of this boot), or from now on.
/// The stream that comes back is non-blocking and carries records in `/dev/kmsg`'s text
/// form until the privileged half stops; read it with
/// [`crate::kernel_log::reader::KmsgReader`], whose end-of-file then means "reconnect".
pub fn kmsg(socket: &Path, cursor: Option<&Cursor>) -> Result<std::fs::File, ClientError> {
    let unreachable = |source| ClientError::Unreachable { path: socket.display().to_string(), source };
    let mut conn = connect(socket)?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).map_err(unreachable)?;
    conn.set_write_timeout(Some(Duration::from_secs(2))).map_err(unreachable)?;
    conn.write_all(wire::kmsg_request(cursor).as_bytes()).map_err(unreachable)?;
    // The header byte by byte: whatever follows it belongs to the record stream.
    let mut header = Vec::new();
    let mut byte = [0u8; 1];
    while header.len() < MAX_HEADER && header.last() != Some(&b'\n') {
        match io::Read::read(&mut conn, &mut byte).map_err(unreachable)? {
            0 => return Err(unreachable(io::ErrorKind::UnexpectedEof.into())),
            _ => header.push(byte[0]),
        }
    }
    let header = String::from_utf8_lossy(&header);
    match header.trim_end_matches('\n').split_once(' ') {
        None if header == "kmsg\n" => {}
        Some(("unreadable", why)) => return Err(ClientError::KmsgUnreadable(crate::protocol::escape::escape(why))),
        _ => {
            let bad = format!("unexpected answer {:?}", crate::protocol::escape::escape(&header));
            return Err(unreachable(io::Error::new(io::ErrorKind::InvalidData, bad)));
        }
    }
    conn.set_nonblocking(true).map_err(unreachable)?;
    Ok(std::fs::File::from(std::os::fd::OwnedFd::from(conn)))
}

/// Where the agent's kernel log comes from, decided once at start, before the
/// capabilities are dropped: the privileged half when its socket is there; else the
/// kernel log opened here (a tarball run as root, or `paths.privileged_socket = ""`),
/// which is said once. A missing socket with a kernel log this process may not open is a
/// privileged half not up yet (both units start together): it is waited for, not given up.
pub fn kmsg_feed(cfg: &crate::config::Config) -> crate::kernel_log::feed::KmsgFeed {
    use crate::kernel_log::feed::KmsgFeed;
    use crate::protocol::escape::escape;
    let open = || crate::kernel_log::reader::open(&cfg.paths.kmsg);
    match &cfg.paths.privileged_socket {
        Some(socket) if std::fs::symlink_metadata(socket).is_ok() => KmsgFeed::Privileged(socket.clone()),
        Some(socket) => match open() {
            Ok(file) => {
                log::info!(
                    "no privileged half at {}: reading the kernel log in this process",
                    escape(&socket.display().to_string())
                );
                KmsgFeed::Opened(Ok(file))
            }
            // Refused (no CAP_SYSLOG, ProtectKernelLogs=): the privileged half's job.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => KmsgFeed::Privileged(socket.clone()),
            Err(e) => KmsgFeed::Opened(Err(e)),
        },
        None => {
            log::info!("paths.privileged_socket is \"\": reading the kernel log in this process");
            KmsgFeed::Opened(open())
        }
    }
}

/// Connects to the privileged half. No socket is `Absent` (run without it) only where its
/// directory is missing too: under the units systemd makes the directory before it starts
/// the half, so a missing socket there means "not bound yet" (the boot race), retried soon,
/// not a reason to run smartctl here without the disks for the next hour.
fn connect(socket: &Path) -> Result<UnixStream, ClientError> {
    match UnixStream::connect(socket) {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !socket.parent().is_some_and(Path::is_dir) => {
            Err(ClientError::Absent(socket.display().to_string()))
        }
        Err(source) => Err(ClientError::Unreachable { path: socket.display().to_string(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_is_absent_only_where_its_directory_is_missing_too() {
        let d = tempfile::tempdir().unwrap();
        // The units' runtime directory exists but the half has not bound yet: retried.
        assert!(matches!(connect(&d.path().join("sock")), Err(ClientError::Unreachable { .. })));
        // Nothing there at all (a binary run by hand): run smartctl in this process.
        assert!(matches!(connect(&d.path().join("none/sock")), Err(ClientError::Absent(_))));
    }
}
