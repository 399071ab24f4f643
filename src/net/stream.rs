//! The byte stream under the WebSocket: TLS (or plain TCP where the config allows `ws://`)
//! over a socket whose every read and write has a deadline, with the frame watch looking at
//! each byte the gateway sends.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};

use crate::net::frames::{FrameWatch, Kind};

/// The byte stream under the WebSocket: TLS, or plain TCP where the config allows `ws://`.
pub struct Stream {
    inner: Inner,
    /// Bytes accepted for sending so far: lets the runner tell a slow peer (progress) from
    /// a stalled one (none).
    written: u64,
    /// Every byte from the gateway passes through it (see `frames`).
    watch: FrameWatch,
    /// What the watch passed on and tungstenite has not read yet.
    ready: Vec<u8>,
    ready_from: usize,
}

pub(crate) enum Inner {
    Plain(Sock),
    Tls(Box<StreamOwned<ClientConnection, Sock>>),
}

/// The TCP socket, with the handshake's deadline while there is one. The deadline is checked
/// and armed (`SO_RCVTIMEO`/`SO_SNDTIMEO` = what is left) before every read and write: rustls'
/// `complete_io` and tungstenite's handshake loop over many reads, and a peer that trickles
/// a byte at a time would otherwise restart a per-read timeout for ever.
pub(crate) struct Sock {
    tcp: TcpStream,
    deadline: Option<Instant>,
    /// A single read or write waits at most this long (a peer silent this long is cut).
    idle: Option<Duration>,
}

impl Sock {
    /// `tcp`, every read and write of which fails once `deadline` has passed.
    pub(crate) fn with_deadline(tcp: TcpStream, deadline: Instant) -> Sock {
        Sock { tcp, deadline: Some(deadline), idle: None }
    }

    /// [`Sock::with_deadline`], each single read or write also waiting at most `idle`.
    pub(crate) fn with_idle(tcp: TcpStream, deadline: Instant, idle: Duration) -> Sock {
        Sock { tcp, deadline: Some(deadline), idle: Some(idle) }
    }

    /// Moves the deadline (never later than it was).
    pub(crate) fn shorten(&mut self, deadline: Instant) {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
    }

    /// The socket, its timeouts cleared: the caller's, blocking and without a deadline.
    pub(crate) fn into_tcp(self) -> io::Result<TcpStream> {
        self.tcp.set_read_timeout(None)?;
        self.tcp.set_write_timeout(None)?;
        Ok(self.tcp)
    }

    fn arm(&self) -> io::Result<()> {
        let Some(deadline) = self.deadline else { return Ok(()) };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let left = self.idle.map_or(left, |idle| left.min(idle));
        self.tcp.set_read_timeout(Some(left))?;
        self.tcp.set_write_timeout(Some(left))
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        self.tcp.read(buf)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        &self.sock().tcp
    }

    fn sock(&self) -> &Sock {
        match &self.inner {
            Inner::Plain(s) => s,
            Inner::Tls(s) => &s.sock,
        }
    }

    /// The handshake is over: no deadline, blocking IO without timeouts again.
    pub(crate) fn end_deadline(&mut self) -> io::Result<()> {
        let sock = match &mut self.inner {
            Inner::Plain(s) => s,
            Inner::Tls(s) => &mut s.sock,
        };
        sock.deadline = None;
        sock.tcp.set_read_timeout(None)?;
        sock.tcp.set_write_timeout(None)
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub(crate) fn new(inner: Inner) -> Stream {
        Stream { inner, written: 0, watch: FrameWatch::default(), ready: Vec::new(), ready_from: 0 }
    }

    /// Whether the gateway sent the oldest data message not yet asked about as text:
    /// tungstenite hands every data message over as binary (see `frames`).
    pub fn next_kind(&mut self) -> Kind {
        self.watch.next_kind()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.watch.overrun() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the gateway sent a message in more than {} fragments", super::frames::MAX_FRAGMENTS),
                ));
            }
            if self.ready_from < self.ready.len() {
                let n = buf.len().min(self.ready.len() - self.ready_from);
                buf[..n].copy_from_slice(&self.ready[self.ready_from..self.ready_from + n]);
                self.ready_from += n;
                if self.ready_from == self.ready.len() {
                    // Keeps its capacity: at most one read's worth (tungstenite's read buffer).
                    self.ready_from = 0;
                    self.ready.clear();
                }
                return Ok(n);
            }
            let n = match &mut self.inner {
                Inner::Plain(s) => s.read(buf)?,
                // rustls' own text for this ends in a docs.rs URL, which tells an operator nothing.
                Inner::Tls(s) => s.read(buf).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        io::Error::new(e.kind(), "the gateway closed the TCP connection without closing TLS first")
                    } else {
                        e
                    }
                })?,
            };
            if n == 0 || buf.is_empty() {
                return Ok(n);
            }
            // What the watch holds back (part of a header or close frame) waits for more.
            self.watch.feed(&buf[..n], &mut self.ready);
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.inner {
            Inner::Plain(s) => s.write(buf)?,
            // On a nonblocking socket rustls' StreamOwned answers Ok(0) when its TLS buffer
            // is full and the socket took only part of it. That is back-pressure, but
            // tungstenite reads Ok(0) as a reset ("Connection reset while sending") and the
            // connection was dropped whenever the kernel's send buffer filled.
            Inner::Tls(s) => match s.write(buf)? {
                0 if !buf.is_empty() => return Err(io::ErrorKind::WouldBlock.into()),
                n => n,
            },
        };
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(s) => s.flush(),
            Inner::Tls(s) => s.flush(),
        }
    }
}

pub type WebSocket = tungstenite::WebSocket<Stream>;

/// IO errors that mean the deadline passed (`SO_RCVTIMEO` expiring reads as WouldBlock).
pub(crate) fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}
