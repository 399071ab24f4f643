//! Getting a WebSocket to the gateway: DNS, TCP connect, TLS and the RFC 6455 upgrade, each
//! phase bounded, each failure saying which phase failed and why.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConnection, StreamOwned};

use crate::config::GatewayConfig;
use crate::config::url::GatewayUrl;
use crate::net::stream::Stream;
use crate::net::stream::timed_out;
use crate::net::stream::{Inner, Sock};
use crate::net::upgrade::Connected;
use crate::net::upgrade::{UpgradeError, upgrade};
use crate::protocol::escape::escape;

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
    #[error(
        "TCP connect to {addr} did not finish within gateway.connect_timeout ({timeout:?}, one deadline for DNS, TCP, TLS and the upgrade together)"
    )]
    TcpTimeout { addr: String, timeout: Duration },
    #[error("TLS handshake with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error(
        "TLS handshake + WebSocket upgrade with {host} did not finish within gateway.connect_timeout ({timeout:?}, one deadline for DNS, TCP, TLS and the upgrade together)"
    )]
    HandshakeTimeout { host: String, timeout: Duration },
    #[error("WebSocket upgrade refused: {0}")]
    Upgrade(String),
    #[error("connection closed during the handshake")]
    Eof,
    /// The runner gave the attempt up (stop, or a reload that changed the gateway
    /// settings); nobody reads this one.
    #[error("attempt abandoned")]
    Abandoned,
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
            ConnectError::Abandoned => "abandoned",
        }
    }
}

/// Lets the runner give up an attempt that runs on a helper thread: the attempt's socket is
/// shut down, so a read blocked in TLS or the upgrade returns at once and the thread ends
/// with its socket closed instead of living on until its deadline. Call [`Abort::abort`]
/// when the attempt's result is no longer wanted.
#[derive(Debug, Clone, Default)]
pub struct Abort(Arc<Mutex<AbortState>>);

#[derive(Debug, Default)]
struct AbortState {
    aborted: bool,
    /// A second handle on the attempt's socket while its handshake runs.
    tcp: Option<TcpStream>,
}

impl Abort {
    pub fn abort(&self) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.aborted = true;
        if let Some(tcp) = s.tcp.take() {
            let _ = tcp.shutdown(std::net::Shutdown::Both);
        }
    }

    /// From now on `abort` shuts `tcp` down; `Abandoned` if it was already called.
    fn watch(&self, tcp: &TcpStream) -> Result<(), ConnectError> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if s.aborted {
            return Err(ConnectError::Abandoned);
        }
        s.tcp = tcp.try_clone().ok();
        Ok(())
    }

    /// The handshake is over: the second handle (an fd) goes.
    fn release(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).tcp = None;
    }
}

/// Connects to `url`: DNS, TCP, TLS and the upgrade all within one `connect_timeout` from
/// now. The returned socket is still blocking; the runner switches it to non-blocking.
/// `lookups` counts this agent's DNS lookups still running (the runner keeps it); `abort`
/// ends the attempt early.
pub fn connect(
    url: &GatewayUrl,
    cfg: &GatewayConfig,
    lookups: &Arc<AtomicUsize>,
    abort: &Abort,
) -> Result<Connected, ConnectError> {
    let timeout = cfg.connect_timeout;
    let deadline = Instant::now() + timeout;
    let addrs = resolve(url.host(), url.port(), timeout, lookups)?;
    let tcp = connect_tcp(&addrs, deadline, timeout)?;
    let _ = tcp.set_nodelay(true);
    abort.watch(&tcp)?;
    let result = handshake(url, cfg, Sock::with_deadline(tcp, deadline), timeout);
    abort.release();
    result
}

/// TLS (for `wss`) and the upgrade, on a socket whose deadline is set.
fn handshake(url: &GatewayUrl, cfg: &GatewayConfig, sock: Sock, timeout: Duration) -> Result<Connected, ConnectError> {
    let inner =
        if url.is_tls() { Inner::Tls(Box::new(tls_handshake(url, cfg, sock, timeout)?)) } else { Inner::Plain(sock) };
    let stream = Stream::new(inner);
    let mut c = upgrade(url, cfg, stream).map_err(|e| match e {
        UpgradeError::Refused(why) => ConnectError::Upgrade(why),
        UpgradeError::Eof => ConnectError::Eof,
        UpgradeError::TimedOut => ConnectError::HandshakeTimeout { host: url.host().to_string(), timeout },
    })?;
    c.ws.get_mut().end_deadline().map_err(|e| ConnectError::Upgrade(format!("cannot reset socket timeouts: {e}")))?;
    Ok(c)
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
        Ok(Err(e)) => Err(ConnectError::Dns { host: host.into(), reason: escape(&e.to_string()) }),
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

fn tls_handshake(
    url: &GatewayUrl,
    cfg: &GatewayConfig,
    mut sock: Sock,
    timeout: Duration,
) -> Result<StreamOwned<ClientConnection, Sock>, ConnectError> {
    let host = url.host().to_string();
    let tls_err = |reason: String| ConnectError::Tls { host: host.clone(), reason };
    let name = ServerName::try_from(host.clone()).map_err(|e| tls_err(format!("bad server name: {e}")))?;
    let mut conn = ClientConnection::new(Arc::clone(&cfg.tls), name).map_err(|e| tls_err(e.to_string()))?;
    while conn.is_handshaking() {
        match conn.complete_io(&mut sock) {
            Ok((0, 0)) if conn.wants_read() => return Err(ConnectError::Eof),
            Ok(_) => {}
            Err(e) if timed_out(&e) => return Err(ConnectError::HandshakeTimeout { host, timeout }),
            Err(e) => return Err(tls_err(explain_tls(&e))),
        }
    }
    Ok(StreamOwned::new(conn, sock))
}

/// Turns rustls' certificate errors into what an operator can act on.
fn explain_tls(e: &io::Error) -> String {
    let Some(err) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                "the gateway closed the connection (is it speaking TLS on that port?)".into()
            }
            _ => escape(&e.to_string()),
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
        // rustls' own words, but alerts and decode errors may quote what the peer sent.
        other => escape(&other.to_string()),
    }
}
