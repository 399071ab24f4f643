//! `rig-agent maintenance on 2h|off|status`: asks the running agent, over the socket in the
//! state directory its config names, and never touches the agent's files itself.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::wire::{self, Ask};

/// How long the agent has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why the agent gave no state back; each maps to its own exit code in `main`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent answers for this config (not running, or running with another state
    /// directory): start it, or name its config with `--config`. Exit 69.
    #[error("{0}")]
    NoAgent(String),
    /// The agent answered with a refusal (a window out of bounds, a state directory it
    /// cannot write): fix what it says. Exit 1.
    #[error("the agent refused: {0}")]
    Refused(String),
    /// Something is wrong with the socket or the answer (not a socket, served by another
    /// user, a garbled answer): look at the state directory. Exit 1.
    #[error("{0}")]
    Failed(String),
}

/// Sends `ask` to the agent whose state directory is `state_dir` and returns the state it
/// answers with (`{"on","until","by"}`).
pub fn ask(state_dir: &Path, ask: Ask) -> Result<Value, ClientError> {
    let path = state_dir.join(wire::SOCKET);
    let shown = path.display();
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ClientError::NoAgent(format!(
                "no agent is running for this config: nothing at {shown} (start rig-agent, or name its config with --config)"
            )));
        }
        Err(e) => return Err(ClientError::Failed(format!("cannot look at {shown}: {e}"))),
        Ok(m) if !m.file_type().is_socket() => {
            return Err(ClientError::Failed(format!(
                "{shown} is not a socket (something else was put there); not talking to it"
            )));
        }
        Ok(_) => {}
    }
    let conn = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => ClientError::NoAgent(format!(
            "no agent is running for this config: nothing listens on {shown} (start rig-agent)"
        )),
        _ => ClientError::Failed(format!("cannot connect to {shown}: {e} (run as root or as the agent's user)")),
    })?;
    // Only the agent itself may answer: root, or the owner of its state directory.
    let owner = std::fs::metadata(state_dir).map(|m| m.uid()).map_err(|e| ClientError::Failed(e.to_string()))?;
    let server = rustix::net::sockopt::socket_peercred(&conn)
        .map(|c| c.uid.as_raw())
        .map_err(|e| ClientError::Failed(format!("cannot tell who serves {shown}: {e}")))?;
    if server != 0 && server != owner {
        return Err(ClientError::Failed(format!(
            "{shown} is served by uid {server}, neither root nor the state directory's owner ({owner}); not trusted"
        )));
    }
    let io = |e: std::io::Error| ClientError::Failed(format!("the agent did not answer on {shown}: {e}"));
    conn.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    conn.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    (&conn).write_all(ask.encode().as_bytes()).map_err(io)?;
    let line = wire::read_line(&mut &conn, wire::MAX_ANSWER).map_err(io)?;
    let v: Value = serde_json::from_str(&line).map_err(|e| ClientError::Failed(format!("a garbled answer ({e})")))?;
    if let Some(why) = v.get("error") {
        return Err(ClientError::Refused(crate::protocol::escape::escape(why.as_str().unwrap_or_default())));
    }
    if !v["on"].is_boolean() {
        return Err(ClientError::Failed("an answer without `on`".into()));
    }
    Ok(v)
}

/// The state as the command prints it: `maintenance: on until Unix time 1796620000 (1h 59m
/// from now), set by local` or `maintenance: off`.
pub fn describe(state: &Value, now_unix: u64) -> String {
    match (state["on"].as_bool(), state["until"].as_u64(), state["by"].as_str()) {
        (Some(true), Some(until), Some(by)) => {
            let left = Duration::from_secs(until.saturating_sub(now_unix));
            format!(
                "maintenance: on until Unix time {until} ({} from now), set by {}",
                crate::config::duration::format_duration(left),
                crate::protocol::escape::escape(by)
            )
        }
        _ => "maintenance: off".into(),
    }
}
