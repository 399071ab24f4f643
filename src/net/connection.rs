//! The open WebSocket connection as the runner drives it: queued writes, flushes that notice
//! a gateway which takes no data (a stall), the close handshake and the drain after it.
//! Non-blocking; waits only on the wake pipe with the socket's fd.

use std::io::Read;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use tungstenite::Message;
use tungstenite::error::Error as WsError;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::net::stream::WebSocket;
use crate::os::wake::{Interest, WakeReceiver};
use crate::protocol::escape::escape;

/// Why a connection was lost. The runner logs it and connects again after its backoff;
/// nothing else is to be done about it. Outside text in it is already escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Lost {
    /// A local failure around the connection (a thread, the wake pipe, a socket option).
    #[error("{0}")]
    Local(String),
    /// An incoming message over `max_message_bytes`; closed with 1009.
    #[error("the gateway sent a message over max_message_bytes ({0}); closed with 1009")]
    TooBig(String),
    #[error("the connection was closed")]
    Closed,
    #[error("the gateway closed the connection without a close frame")]
    NoCloseFrame,
    /// Any other read error, escaped.
    #[error("{0}")]
    Read(String),
    /// The gateway's close frame: its code and reason, escaped.
    #[error("the gateway closed the connection ({0})")]
    ClosedByGateway(String),
    #[error("the gateway is not reading (output buffer full)")]
    OutputFull,
    /// A write error, escaped.
    #[error("write failed: {0}")]
    WriteFailed(String),
    /// The gateway took no byte of our pending output for this long.
    #[error("the gateway took no data for {:.1}s", .0.as_secs_f64())]
    Stalled(Duration),
}

/// The open connection and its write state.
pub(crate) struct Conn {
    pub(crate) ws: WebSocket,
    /// Since when the gateway has taken none of our pending output (socket full, no
    /// progress). A gateway that is slow but reading is not stalled.
    pub(crate) write_stalled_since: Option<Instant>,
    /// `Stream::written` when `write_stalled_since` was last set.
    written_at_stall: u64,
    /// The last read round stopped at its cap, not at WouldBlock.
    pub(crate) more_to_read: bool,
}

/// How to close: the code and reason of our close frame, how long to wait, and whether to
/// wait for the gateway's reply.
pub(crate) struct Closing<'a> {
    pub(crate) code: CloseCode,
    pub(crate) reason: &'a str,
    pub(crate) wait: Duration,
    pub(crate) reply: Reply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Read until the gateway answers our close frame.
    Await,
    /// After an oversized message tungstenite's reader is mid-frame and must not be read
    /// again; we only make sure our close frame goes out.
    Skip,
}

impl Conn {
    pub(crate) fn new(ws: WebSocket) -> Conn {
        Conn { ws, write_stalled_since: None, written_at_stall: 0, more_to_read: false }
    }

    /// Queues a text frame and pushes out what the socket takes.
    pub(crate) fn send(&mut self, text: String) -> Result<(), Lost> {
        match self.ws.write(Message::text(text)) {
            Ok(()) => Ok(()),
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.note_blocked();
                Ok(())
            }
            Err(WsError::WriteBufferFull(_)) => Err(Lost::OutputFull),
            Err(e) => Err(Lost::WriteFailed(escape(&e.to_string()))),
        }
    }

    /// Flushes buffered output; a gateway that takes no byte of it for `stall_limit` is dropped.
    pub(crate) fn flush_within(&mut self, stall_limit: Duration) -> Result<(), Lost> {
        match self.ws.flush() {
            Ok(()) => {
                self.write_stalled_since = None;
                Ok(())
            }
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let since = self.note_blocked();
                if since.elapsed() >= stall_limit { Err(Lost::Stalled(since.elapsed())) } else { Ok(()) }
            }
            Err(e) => Err(Lost::WriteFailed(escape(&e.to_string()))),
        }
    }

    /// Output is pending. Returns since when no byte has moved: the clock restarts whenever
    /// some output went out since the last look.
    fn note_blocked(&mut self) -> Instant {
        let written = self.ws.get_ref().written();
        match self.write_stalled_since {
            Some(since) if written == self.written_at_stall => since,
            _ => {
                self.written_at_stall = written;
                *self.write_stalled_since.insert(Instant::now())
            }
        }
    }

    /// Sends a close frame and waits up to `how.wait` for the gateway's reply.
    pub(crate) fn close(&mut self, wake: &WakeReceiver, how: Closing<'_>) {
        let frame = CloseFrame { code: how.code, reason: how.reason.to_string().into() };
        let _ = self.ws.close(Some(frame));
        let deadline = Instant::now() + how.wait;
        loop {
            let flushed = self.ws.flush().is_ok();
            if flushed && how.reply == Reply::Skip {
                return self.drain_raw(wake, deadline);
            }
            if how.reply == Reply::Await {
                match self.ws.read() {
                    // A peer that keeps sending (a ping flood) must not hold a stop past the
                    // deadline: it is checked after every frame, not only when none is left.
                    Ok(_) if Instant::now() < deadline => continue,
                    Ok(_) => return,
                    Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return, // the close handshake is complete, or the peer is gone
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let interest = if flushed { Interest::Readable } else { Interest::ReadableOrWritable };
            wake.wait(Some((self.ws.get_ref().tcp().as_fd(), interest)), Some(left));
        }
    }

    /// Ends a connection whose WebSocket reader cannot be used any more: FIN after our close
    /// frame, then discard what still arrives. Closing a socket with unread data would send an
    /// RST, and an RST makes the peer drop our close frame unread.
    fn drain_raw(&mut self, wake: &WakeReceiver, deadline: Instant) {
        let tcp = self.ws.get_ref().tcp();
        let _ = tcp.shutdown(std::net::Shutdown::Write);
        let mut buf = [0u8; 16 * 1024];
        loop {
            match (&mut &*tcp).read(&mut buf) {
                Ok(0) => return,
                Ok(_) if Instant::now() < deadline => continue,
                Ok(_) => return,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            wake.wait(Some((tcp.as_fd(), Interest::Readable)), Some(left));
        }
    }
}
