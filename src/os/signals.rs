//! Requests from outside: stop (SIGTERM, SIGINT, or [`Shutdown::stop`] from code) and
//! reload (SIGHUP, `systemctl reload`). Each sets a flag and wakes the runner.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::os::wake::Waker;

#[derive(Debug, Clone)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Shutdown {
    pub fn new(waker: Waker) -> Shutdown {
        Shutdown {
            flag: Arc::new(AtomicBool::new(false)),
            reload: Arc::new(AtomicBool::new(false)),
            waker: Arc::new(waker),
        }
    }

    /// Asks the agent to close with 1001 and return.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    pub(crate) fn is_requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Asks the agent to re-read its config (what SIGHUP does).
    pub fn reload(&self) {
        self.reload.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Whether a reload was asked for since the last call.
    pub(crate) fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::SeqCst)
    }

    /// Routes SIGTERM and SIGINT to stop, SIGHUP to reload. Call once, from `main`.
    pub fn install_signal_handlers(&self) -> io::Result<()> {
        for (sig, flag) in [(SIGTERM, &self.flag), (SIGINT, &self.flag), (SIGHUP, &self.reload)] {
            signal_hook::flag::register(sig, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(sig, self.waker.try_clone()?.into_stream())?;
        }
        Ok(())
    }
}
