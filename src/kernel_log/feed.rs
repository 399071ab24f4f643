//! Where the kernel log reader gets its records.

use std::path::PathBuf;

/// Where the kernel log comes from.
#[derive(Debug)]
pub enum KmsgFeed {
    /// Opened by the caller (before it dropped its capabilities), or the error it got.
    Opened(std::io::Result<std::fs::File>),
    /// Streamed by the privileged half at this socket; reconnected when it restarts.
    Privileged(PathBuf),
}
