//! Waking the socket loop from other threads and from signal handlers.
//!
//! The runner sleeps in poll(2) on the gateway socket and on the read end of this pipe;
//! a probe worker with an answer, a signal, or a test asking the agent to stop writes one
//! byte to the write end. This keeps idle CPU at zero (no periodic tick) while answers go
//! out the moment they are ready.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

/// The write end; cheap to clone, one per thread that needs to wake the runner.
#[derive(Debug)]
pub struct Waker(UnixStream);

/// The read end, owned by the runner.
#[derive(Debug)]
pub struct WakeReceiver(UnixStream);

pub fn pair() -> io::Result<(Waker, WakeReceiver)> {
    let (tx, rx) = UnixStream::pair()?;
    tx.set_nonblocking(true)?;
    rx.set_nonblocking(true)?;
    Ok((Waker(tx), WakeReceiver(rx)))
}

impl Waker {
    pub fn wake(&self) {
        // A full pipe means a wake-up is already pending: nothing is lost by ignoring it.
        let _ = (&self.0).write(&[1]);
    }

    pub(crate) fn try_clone(&self) -> io::Result<Waker> {
        self.0.try_clone().map(Waker)
    }

    /// The raw stream, for signal-hook's self-pipe registration.
    pub(crate) fn into_stream(self) -> UnixStream {
        self.0
    }
}

impl WakeReceiver {
    /// Empties the pipe so the next poll sleeps again.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.0).read(&mut buf), Ok(n) if n > 0) {}
    }
}

impl AsFd for WakeReceiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// What a wait watches a socket for besides the wake pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    Readable,
    /// Readable or writable: output is pending.
    ReadableOrWritable,
}

impl WakeReceiver {
    /// Sleeps until the wake pipe is written, the socket (if given) is ready as `Interest`
    /// says, or `timeout` passes (`None`: no limit).
    pub fn wait(&self, socket: Option<(BorrowedFd<'_>, Interest)>, timeout: Option<std::time::Duration>) {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let ts = timeout
            .map(|d| Timespec { tv_sec: d.as_secs().min(i64::MAX as u64) as i64, tv_nsec: d.subsec_nanos().into() });
        let mut fds = vec![PollFd::new(self, PollFlags::IN)];
        if let Some((fd, interest)) = socket {
            let flags = match interest {
                Interest::Readable => PollFlags::IN,
                Interest::ReadableOrWritable => PollFlags::IN | PollFlags::OUT,
            };
            fds.push(PollFd::from_borrowed_fd(fd, flags));
        }
        // EINTR (a signal) is a wake-up like any other: the caller looks at its flags again.
        let _ = poll(&mut fds, ts.as_ref());
        if fds[0].revents().contains(PollFlags::IN) {
            self.drain();
        }
    }
}
