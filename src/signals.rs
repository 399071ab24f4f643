//! Shutdown requests: SIGTERM and SIGINT (from systemd or a terminal), or [`Shutdown::stop`]
//! from code (tests, the demo). Both set one flag and wake the runner.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::wake::Waker;

#[derive(Debug, Clone)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Shutdown {
    pub fn new(waker: Waker) -> Shutdown {
        Shutdown { flag: Arc::new(AtomicBool::new(false)), waker: Arc::new(waker) }
    }

    /// Asks the agent to close with 1001 and return.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    pub fn is_requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Routes SIGTERM and SIGINT to this shutdown. Call once, from `main`.
    pub fn install_signal_handlers(&self) -> io::Result<()> {
        for sig in [SIGTERM, SIGINT] {
            signal_hook::flag::register(sig, Arc::clone(&self.flag))?;
            signal_hook::low_level::pipe::register(sig, self.waker.try_clone()?.into_stream())?;
        }
        Ok(())
    }
}
