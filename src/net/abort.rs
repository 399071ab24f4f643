//! Giving up an attempt that runs on another thread: its socket is shut down, so a read or
//! write blocked on it returns at once and the thread ends with its socket closed, instead
//! of living on until its deadline.

use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::net::transport::ConnectError;

/// Shared by the thread that connects and the one that may give up. Call [`Abort::abort`]
/// when the attempt's result is no longer wanted: from then on (and at once, for the socket
/// it watches) the attempt fails with [`ConnectError::Abandoned`].
#[derive(Debug, Clone, Default)]
pub struct Abort(Arc<Mutex<AbortState>>);

#[derive(Debug, Default)]
struct AbortState {
    aborted: bool,
    /// A second handle on the attempt's socket while it is watched.
    tcp: Option<TcpStream>,
}

impl Abort {
    fn state(&self) -> MutexGuard<'_, AbortState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn abort(&self) {
        let mut s = self.state();
        s.aborted = true;
        if let Some(tcp) = s.tcp.take() {
            let _ = tcp.shutdown(std::net::Shutdown::Both);
        }
    }

    /// From now on `abort` shuts `tcp` down; `Abandoned` if it was already called.
    pub(crate) fn watch(&self, tcp: &TcpStream) -> Result<(), ConnectError> {
        let mut s = self.state();
        if s.aborted {
            return Err(ConnectError::Abandoned);
        }
        s.tcp = tcp.try_clone().ok();
        Ok(())
    }

    /// The socket is no longer watched: its second handle (an fd) goes.
    pub fn release(&self) {
        self.state().tcp = None;
    }
}
