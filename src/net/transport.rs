//! Getting a WebSocket to the gateway: DNS (or the proxy), TCP connect, TLS and the RFC 6455
//! upgrade, each phase bounded by one deadline, each failure saying which phase failed, why,
//! and what to fix.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use rustls::pki_types::{ServerName, UnixTime};
use rustls::{CertificateError, ClientConnection, StreamOwned};

use crate::clock::Clock;
use crate::config::GatewayConfig;
use crate::config::url::GatewayUrl;
use crate::logging::utc_timestamp;
use crate::net::abort::Abort;
use crate::net::resolve::Resolver;
use crate::net::route::dial_with;
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
    /// DNS or TCP to the proxy failed: it is down, or its address is wrong.
    #[error("cannot reach the proxy {proxy}: {why}; check its address in {from}, and that it runs")]
    ProxyUnreachable { proxy: String, from: String, why: String },
    #[error(
        "the proxy {proxy} did not finish within gateway.connect_timeout ({timeout:?}, one deadline for DNS, TCP, the proxy, TLS and the upgrade together)"
    )]
    ProxyTimeout { proxy: String, timeout: Duration },
    /// 407, or SOCKS5 authentication refused. The credentials are never in the text.
    #[error(
        "the proxy {proxy} refused the agent: {why}; set the right user and password in {from} (scheme://user:password@host:port)"
    )]
    ProxyAuth { proxy: String, from: String, why: String },
    /// 403 and other refusals, a SOCKS5 rule.
    #[error("the proxy {proxy} refuses to connect to {target} ({why}); have {target} allowed on the proxy")]
    ProxyRefused { proxy: String, target: String, why: String },
    /// 502/503/504, SOCKS5 host or network unreachable, connection refused, TTL expired.
    #[error(
        "the proxy {proxy} cannot reach {target} ({why}); check that the gateway is up and that the proxy can resolve and reach it"
    )]
    ProxyCannotReach { proxy: String, target: String, why: String },
    /// A reply that is not the protocol of the proxy's scheme (garbage, an SSH banner, a
    /// SOCKS proxy asked in HTTP), or one that breaks it.
    #[error("{proxy} does not answer as {scheme} proxy: {why}; check the scheme and the port in {from}")]
    ProxyProtocol { proxy: String, from: String, scheme: &'static str, why: String },
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
            ConnectError::ProxyUnreachable { .. } => "proxy-unreachable",
            ConnectError::ProxyTimeout { .. } => "proxy-timeout",
            ConnectError::ProxyAuth { .. } => "proxy-auth",
            ConnectError::ProxyRefused { .. } => "proxy-refused",
            ConnectError::ProxyCannotReach { .. } => "proxy-cannot-reach",
            ConnectError::ProxyProtocol { .. } => "proxy-protocol",
            ConnectError::Abandoned => "abandoned",
        }
    }
}

/// Connects to `url`: DNS (or the proxy `cfg.proxy` chooses), TCP, TLS and the upgrade all
/// within one `connect_timeout` from now. The returned socket is still blocking; the runner
/// switches it to non-blocking. `resolver` bounds this agent's DNS lookups and keeps the
/// addresses that worked; certificates are verified at `clock`'s corrected time; `abort`
/// ends the attempt early.
pub fn connect(
    url: &GatewayUrl,
    cfg: &GatewayConfig,
    resolver: &Resolver,
    clock: &Arc<Clock>,
    abort: &Abort,
) -> Result<Connected, ConnectError> {
    let timeout = cfg.connect_timeout;
    let deadline = Instant::now() + timeout;
    let route = cfg.proxy.choose(url.host(), url.port(), url.is_tls());
    let dialed = dial_with(resolver, url.host(), url.port(), &route, deadline, abort)?;
    let result = handshake(url, cfg, clock, Sock::with_deadline(dialed.tcp, deadline), timeout);
    abort.release();
    let connected = result?;
    // It reached the gateway (verified, for wss): the addresses it came through are the
    // ones to keep, and when they were the kept ones, the log says so.
    if let Some((host, used, resolved)) = dialed.resolved {
        match resolved.cached {
            Some(why) => log::info!(
                "{why}; connected through {used}, the address {host} had when the agent last reached it (the \
                 certificate was verified against {host} as always)"
            ),
            None => {
                let fresh: Vec<_> = resolved.addrs.iter().map(|a| a.ip()).collect();
                resolver.book().remember(&host, used.ip(), &fresh);
            }
        }
    }
    Ok(connected)
}

/// TLS (for `wss`) and the upgrade, on a socket whose deadline is set.
fn handshake(
    url: &GatewayUrl,
    cfg: &GatewayConfig,
    clock: &Arc<Clock>,
    sock: Sock,
    timeout: Duration,
) -> Result<Connected, ConnectError> {
    let inner = if url.is_tls() {
        let tls = tls_handshake(url, cfg, clock, sock, timeout)?;
        // Verified at the corrected time: the floor moves up to it.
        clock.saw_verified();
        Inner::Tls(Box::new(tls))
    } else {
        Inner::Plain(sock)
    };
    let stream = Stream::new(inner);
    let mut c = upgrade(url, cfg, stream).map_err(|e| match e {
        UpgradeError::Refused(why) => ConnectError::Upgrade(why),
        UpgradeError::Eof => ConnectError::Eof,
        UpgradeError::TimedOut => ConnectError::HandshakeTimeout { host: url.host().to_string(), timeout },
    })?;
    c.ws.get_mut().end_deadline().map_err(|e| ConnectError::Upgrade(format!("cannot reset socket timeouts: {e}")))?;
    Ok(c)
}

fn tls_handshake(
    url: &GatewayUrl,
    cfg: &GatewayConfig,
    clock: &Arc<Clock>,
    mut sock: Sock,
    timeout: Duration,
) -> Result<StreamOwned<ClientConnection, Sock>, ConnectError> {
    let host = url.host().to_string();
    let tls_err = |reason: String| ConnectError::Tls { host: host.clone(), reason };
    let name = ServerName::try_from(host.clone()).map_err(|e| tls_err(format!("bad server name: {e}")))?;
    // The config as loaded, with the agent's clock: a board at 1970 verifies at its floor.
    let mut tls = (*cfg.tls).clone();
    tls.time_provider = clock.time_provider();
    let mut conn = ClientConnection::new(Arc::new(tls), name).map_err(|e| tls_err(e.to_string()))?;
    while conn.is_handshaking() {
        match conn.complete_io(&mut sock) {
            Ok((0, 0)) if conn.wants_read() => return Err(ConnectError::Eof),
            Ok(_) => {}
            Err(e) if timed_out(&e) => return Err(ConnectError::HandshakeTimeout { host, timeout }),
            Err(e) => return Err(tls_err(explain_tls(&e, clock))),
        }
    }
    Ok(StreamOwned::new(conn, sock))
}

/// Turns rustls' certificate errors into what an operator can act on.
fn explain_tls(e: &io::Error, clock: &Clock) -> String {
    let Some(err) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                "the gateway closed the connection (is it speaking TLS on that port?)".into()
            }
            _ => escape(&e.to_string()),
        };
    };
    match err {
        rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext { time, not_before }) => {
            not_valid_yet(date(*not_before), date(*time), clock)
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidYet) => {
            not_valid_yet("a later date".into(), date(UnixTime::since_unix_epoch(clock.read().corrected())), clock)
        }
        rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { time, not_after }) => format!(
            "the gateway's certificate expired at {}, and this rig's clock reads {}: renew the certificate on the \
             gateway, unless this rig's clock is ahead (check it: timedatectl)",
            date(*not_after),
            date(*time)
        ),
        rustls::Error::InvalidCertificate(CertificateError::Expired) => {
            "the gateway's certificate has expired: renew it on the gateway, unless this rig's clock is ahead (check \
             it: timedatectl)"
                .into()
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

fn date(t: UnixTime) -> String {
    utc_timestamp(UNIX_EPOCH + Duration::from_secs(t.as_secs()))
}

/// A certificate whose validity starts after the time it was checked at: this rig's clock
/// is wrong (below even the floor it was checked at), or the gateway's certificate was made
/// by a clock that runs ahead, or installed before its start date.
fn not_valid_yet(not_before: String, checked_at: String, clock: &Clock) -> String {
    let r = clock.read();
    if r.suspect {
        format!(
            "the gateway's certificate is valid from {not_before} only, checked at {checked_at}: the latest time this \
             agent knows has passed, as this rig's clock is wrong (it reads {}); set the clock (enable \
             systemd-timesyncd)",
            utc_timestamp(UNIX_EPOCH + r.system)
        )
    } else {
        format!(
            "the gateway's certificate is not valid yet: it is valid from {not_before}, and this rig's clock reads \
             {checked_at}; the certificate was made by a clock that runs ahead, or installed before its start date \
             (fix it on the gateway), unless this rig's clock is behind (check it)"
        )
    }
}
