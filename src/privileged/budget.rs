//! The privileged half's budgets: request slots, kernel log streams, and the throttle its
//! refusals are logged through. A kernel log stream lives as long as its reader and a
//! request about a second: they must not share one budget, or streams held open starve
//! every smart request.

use std::collections::VecDeque;
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use crate::logging::Throttle;

/// Requests served at once, from the connection's accept to its answer: one per disk being
/// read, with room to spare; more are closed at once (the network half reads a few disks at
/// a time). A kernel log stream gives its slot back once its request is read: streams live
/// as long as their reader and have their own budget, [`MAX_STREAMS`].
pub(super) const MAX_REQUESTS: usize = 16;
/// Kernel log streams open at once: the agent's, and one more (an operator's tool, or the
/// agent's next one while the last is going away). A new stream past this replaces the
/// oldest, whose reader sees its stream end: the agent asks again within a second and
/// resumes after the last record it read, losing nothing the ring still holds. Refusing the
/// new one instead would let two streams opened first by any process of this uid keep the
/// agent deaf to the kernel log.
const MAX_STREAMS: usize = 2;
/// Refusals (a full house, a malformed request, another uid) are logged at most this many
/// times a minute, then counted: a local process looping on the socket must not flood the
/// journal, least of all while a disk is failing.
const REFUSALS_PER_MINUTE: u32 = 5;
/// The refusals' throttle.
pub(super) static REFUSALS: LazyLock<Mutex<Throttle>> =
    LazyLock::new(|| Mutex::new(Throttle::new(Duration::from_secs(60), REFUSALS_PER_MINUTE)));

/// Logs a refusal through the refusals' throttle.
pub(super) fn refused(line: &str) {
    REFUSALS.lock().unwrap_or_else(|p| p.into_inner()).warn(line);
}

/// One of the [`MAX_REQUESTS`] request slots, given back when dropped (the request
/// answered, its thread gone, or never started).
pub(super) struct Slot(Arc<AtomicUsize>);

impl Slot {
    pub(super) fn take(taken: &Arc<AtomicUsize>) -> Option<Slot> {
        taken.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_REQUESTS).then_some(n + 1)).ok()?;
        Some(Slot(Arc::clone(taken)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The kernel log streams open now, oldest first, each with a handle to end it.
#[derive(Default)]
pub(super) struct Streams {
    open: Mutex<VecDeque<(u64, UnixStream)>>,
    next: AtomicU64,
}

impl Streams {
    /// Counts `conn` among the open streams, ending the oldest when [`MAX_STREAMS`] are
    /// open; the stream leaves the count when the returned guard is dropped.
    pub(super) fn admit<'a>(&'a self, conn: &UnixStream) -> io::Result<OpenStream<'a>> {
        let handle = conn.try_clone()?;
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while open.len() >= MAX_STREAMS {
            if let Some((_, oldest)) = open.pop_front() {
                // Its thread sees the end at its next read or write and returns.
                let _ = oldest.shutdown(std::net::Shutdown::Both);
                refused(&format!("privileged: {MAX_STREAMS} kernel log streams open; ended the oldest for a new one"));
            }
        }
        open.push_back((id, handle));
        Ok(OpenStream { streams: self, id })
    }
}

/// A stream counted in [`Streams`] while it lives.
pub(super) struct OpenStream<'a> {
    streams: &'a Streams,
    id: u64,
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.streams.open.lock().unwrap_or_else(|p| p.into_inner()).retain(|(id, _)| *id != self.id);
    }
}
