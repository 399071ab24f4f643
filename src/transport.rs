//! Getting a WebSocket to the gateway: DNS, TCP connect, TLS and the RFC 6455 upgrade, each
//! phase bounded, each failure saying which phase failed and why.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConnection, StreamOwned};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocketConfig;

use crate::config::GatewayConfig;
use crate::url::GatewayUrl;

/// The byte stream under the WebSocket: TLS, or plain TCP where the config allows `ws://`.
pub struct Stream {
    inner: Inner,
    /// Bytes accepted for sending so far: lets the runner tell a slow peer (progress) from
    /// a stalled one (none).
    written: u64,
}

enum Inner {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match &self.inner {
            Inner::Plain(s) => s,
            Inner::Tls(s) => &s.sock,
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(s) => s.read(buf),
            // rustls' own text for this ends in a docs.rs URL, which tells an operator nothing.
            Inner::Tls(s) => s.read(buf).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    io::Error::new(e.kind(), "the gateway closed the TCP connection without closing TLS first")
                } else {
                    e
                }
            }),
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

/// A connection attempt failed. Every variant is retried with backoff by the runner; none is
/// fatal. The text is what the operator reads in the log.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {host}: {reason}")]
    Dns { host: String, reason: String },
    #[error("DNS lookup of {host} took longer than {timeout:?}")]
    DnsTimeout { host: String, timeout: Duration },
    #[error("TCP connect to {addr} failed: {source}")]
    Tcp { addr: String, source: io::Error },
    #[error("TCP connect to {addr} took longer than {timeout:?}")]
    TcpTimeout { addr: String, timeout: Duration },
    #[error("TLS handshake with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("TLS handshake + WebSocket upgrade with {host} took longer than {timeout:?}")]
    HandshakeTimeout { host: String, timeout: Duration },
    #[error("WebSocket upgrade refused: {0}")]
    Upgrade(String),
    #[error("connection closed during the handshake")]
    Eof,
}

impl ConnectError {
    /// A short class for "the same failure again" decisions in logging.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::Dns { .. } | ConnectError::DnsTimeout { .. } => "dns",
            ConnectError::Tcp { .. } | ConnectError::TcpTimeout { .. } => "tcp",
            ConnectError::Tls { .. } => "tls",
            ConnectError::HandshakeTimeout { .. } => "handshake-timeout",
            ConnectError::Upgrade(_) => "upgrade",
            ConnectError::Eof => "eof",
        }
    }
}

/// Connects to `url`: DNS + TCP within `connect_timeout`, then TLS + upgrade within the same
/// again. The returned socket is still blocking; the runner switches it to non-blocking.
/// `lookups` counts this agent's DNS lookups still running (the runner keeps it).
pub fn connect(url: &GatewayUrl, cfg: &GatewayConfig, lookups: &Arc<AtomicUsize>) -> Result<WebSocket, ConnectError> {
    let timeout = cfg.connect_timeout;
    let deadline = Instant::now() + timeout;
    let addrs = resolve(url.host(), url.port(), timeout, lookups)?;
    let tcp = connect_tcp(&addrs, deadline, timeout)?;
    let _ = tcp.set_nodelay(true);

    let deadline = Instant::now() + timeout;
    let inner = if url.is_tls() {
        Inner::Tls(Box::new(tls_handshake(url, cfg, tcp, deadline, timeout)?))
    } else {
        Inner::Plain(tcp)
    };
    let stream = Stream { inner, written: 0 };
    upgrade(url, cfg, stream, deadline, timeout)
}

/// How many lookup threads of one agent may run at once. Each ends on the resolver's own
/// timeout (glibc: 5 s a try, two tries a nameserver), so a few are plenty.
const MAX_RUNNING_LOOKUPS: usize = 4;

fn resolve(
    host: &str,
    port: u16,
    timeout: Duration,
    lookups: &Arc<AtomicUsize>,
) -> Result<Vec<SocketAddr>, ConnectError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    // getaddrinfo cannot be bounded; a helper thread can. A lookup that hangs leaves its
    // thread to finish on the resolver's own timeout, while we move on; but a resolver
    // that never answers must not cost one more thread per attempt.
    if lookups.fetch_add(1, Ordering::SeqCst) >= MAX_RUNNING_LOOKUPS {
        lookups.fetch_sub(1, Ordering::SeqCst);
        return Err(ConnectError::Dns {
            host: host.into(),
            reason: format!("the resolver has not answered the last {MAX_RUNNING_LOOKUPS} lookups"),
        });
    }
    let (tx, rx) = mpsc::channel();
    let (name, running) = (host.to_string(), Arc::clone(lookups));
    let spawned = std::thread::Builder::new().name("dns".into()).spawn(move || {
        let found = (name.as_str(), port).to_socket_addrs().map(|a| a.collect::<Vec<_>>());
        running.fetch_sub(1, Ordering::SeqCst);
        let _ = tx.send(found);
    });
    if let Err(e) = spawned {
        lookups.fetch_sub(1, Ordering::SeqCst);
        return Err(ConnectError::Dns { host: host.into(), reason: format!("cannot start lookup thread: {e}") });
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(ConnectError::Dns { host: host.into(), reason: "no addresses".into() }),
        Ok(Err(e)) => Err(ConnectError::Dns { host: host.into(), reason: e.to_string() }),
        Err(_) => Err(ConnectError::DnsTimeout { host: host.into(), timeout }),
    }
}

fn connect_tcp(addrs: &[SocketAddr], deadline: Instant, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let mut last = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(s) => return Ok(s),
            Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
                last = Some(ConnectError::TcpTimeout { addr: addr.to_string(), timeout })
            }
            Err(e) => last = Some(ConnectError::Tcp { addr: addr.to_string(), source: e }),
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::TcpTimeout { addr: addrs[0].to_string(), timeout }))
}

/// Bounds the next blocking IO by what is left until `deadline`.
fn arm(tcp: &TcpStream, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    tcp.set_read_timeout(Some(left)).is_ok() && tcp.set_write_timeout(Some(left)).is_ok()
}

fn tls_handshake(
    url: &GatewayUrl,
    cfg: &GatewayConfig,
    mut tcp: TcpStream,
    deadline: Instant,
    timeout: Duration,
) -> Result<StreamOwned<ClientConnection, TcpStream>, ConnectError> {
    let host = url.host().to_string();
    let tls_err = |reason: String| ConnectError::Tls { host: host.clone(), reason };
    let name = ServerName::try_from(host.clone()).map_err(|e| tls_err(format!("bad server name: {e}")))?;
    let mut conn = ClientConnection::new(Arc::clone(&cfg.tls), name).map_err(|e| tls_err(e.to_string()))?;
    while conn.is_handshaking() {
        if !arm(&tcp, deadline) {
            return Err(ConnectError::HandshakeTimeout { host, timeout });
        }
        match conn.complete_io(&mut tcp) {
            Ok((0, 0)) if conn.wants_read() => return Err(ConnectError::Eof),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(ConnectError::HandshakeTimeout { host, timeout });
            }
            Err(e) => return Err(tls_err(explain_tls(&e))),
        }
    }
    Ok(StreamOwned::new(conn, tcp))
}

/// Turns rustls' certificate errors into what an operator can act on.
fn explain_tls(e: &io::Error) -> String {
    let Some(err) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                "the gateway closed the connection (is it speaking TLS on that port?)".into()
            }
            _ => e.to_string(),
        };
    };
    match err {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "certificate not valid yet; is the clock set? (boards without an RTC need NTP first)".into(),
        rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "the gateway's certificate has expired (or this clock is wrong)".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the gateway's certificate is not signed by a trusted CA (check gateway.ca_file)".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
        | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "the gateway's certificate is not valid for this host name".into()
        }
        // The first bytes back were not a TLS record: an HTTP server's "HTTP/1.1 400", say.
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            "the server does not speak TLS on this port (a plain-HTTP port? check the port in gateway.urls)".into()
        }
        other => other.to_string(),
    }
}

fn upgrade(
    url: &GatewayUrl,
    cfg: &GatewayConfig,
    stream: Stream,
    deadline: Instant,
    timeout: Duration,
) -> Result<WebSocket, ConnectError> {
    let mut request =
        url.as_str().into_client_request().map_err(|e| ConnectError::Upgrade(format!("bad request for {url}: {e}")))?;
    let headers = request.headers_mut();
    headers.insert("User-Agent", HeaderValue::from_static(concat!("rig-agent/", env!("CARGO_PKG_VERSION"))));
    if let Some(p) = &cfg.subprotocol {
        let v = HeaderValue::from_str(p).map_err(|_| ConnectError::Upgrade(format!("bad subprotocol {p:?}")))?;
        headers.insert("Sec-WebSocket-Protocol", v);
    }
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(cfg.max_message_bytes))
        .max_frame_size(Some(cfg.max_message_bytes))
        // Bounded output: a gateway that stops reading fills this and the connection is
        // dropped rather than buffering without limit.
        .max_write_buffer_size(4 * cfg.max_message_bytes.max(1 << 20));
    let timed_out = || ConnectError::HandshakeTimeout { host: url.host().to_string(), timeout };
    if !arm(stream.tcp(), deadline) {
        return Err(timed_out());
    }
    let mut attempt = tungstenite::client::client_with_config(request, stream, Some(ws_config));
    loop {
        match attempt {
            Ok((ws, _response)) => return Ok(ws),
            Err(HandshakeError::Interrupted(mid)) => {
                if !arm(mid.get_ref().get_ref().tcp(), deadline) {
                    return Err(timed_out());
                }
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(e)) => {
                return Err(match e {
                    tungstenite::Error::Http(resp) => {
                        ConnectError::Upgrade(format!("the gateway answered HTTP {}", resp.status()))
                    }
                    tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => ConnectError::Eof,
                    tungstenite::Error::Io(io) if matches!(io.kind(), io::ErrorKind::TimedOut) => timed_out(),
                    other => ConnectError::Upgrade(other.to_string()),
                });
            }
        }
    }
}
