//! The route to a host: a TCP stream to `host:port` within a deadline, directly (DNS
//! bounded, backed by the address book) or through the HTTP CONNECT or SOCKS5 proxy the
//! config chooses for it. [`crate::net::dial`] is its public face.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::config::proxy::{ProxyChoice, ProxyScheme, ProxySource, ProxyUrl};
use crate::net::abort::Abort;
use crate::net::resolve::{Resolved, Resolver};
use crate::net::stream::{Sock, timed_out};
use crate::net::transport::ConnectError;
use crate::net::{http_tunnel, socks};
use crate::protocol::escape::escape;

/// A stream [`dial_with`] opened, and what it learned for the address book.
pub(crate) struct Dialed {
    pub(crate) tcp: TcpStream,
    /// The host resolved here (the target's, or the proxy's) and how.
    pub(crate) resolved: Option<(String, SocketAddr, Resolved)>,
}

/// Why a proxy did not open the tunnel, before the proxy and the target are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyFailure {
    Timeout,
    /// Credentials missing or refused; the text says which.
    Auth(String),
    /// The proxy will not connect there (a 403, a SOCKS rule).
    Refused(String),
    /// The proxy could not reach the target (502/503/504, SOCKS host unreachable...).
    CannotReach(String),
    /// The proxy speaks another protocol, or broke this one.
    Protocol(String),
}

impl ProxyFailure {
    pub(crate) fn io(e: io::Error) -> ProxyFailure {
        if timed_out(&e) {
            return ProxyFailure::Timeout;
        }
        ProxyFailure::Protocol(match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                format!("it closed the connection ({})", escape(&e.to_string()))
            }
            _ => escape(&e.to_string()),
        })
    }
}

/// [`crate::net::dial`] with `resolver`'s lookup bound and address book.
pub(crate) fn dial_with(
    resolver: &Resolver,
    host: &str,
    port: u16,
    proxy: &ProxyChoice,
    deadline: Instant,
    abort: &Abort,
) -> Result<Dialed, ConnectError> {
    let timeout = budget(deadline);
    let (proxy, from) = match proxy {
        ProxyChoice::Direct => {
            let resolved = resolver.resolve(host, port, deadline, timeout)?;
            let (tcp, used) = connect_any(&resolved, deadline, timeout).map_err(|e| after_cached(e, &resolved))?;
            abort.watch(&tcp)?;
            return Ok(Dialed { tcp, resolved: Some((host.to_string(), used, resolved)) });
        }
        ProxyChoice::Via { proxy, from } => (proxy, *from),
    };
    match proxy.scheme {
        ProxyScheme::Http | ProxyScheme::Socks5h => {
            through(resolver, proxy, from, host, destination(host), port, deadline, abort)
        }
        // The agent resolves the target (its address book included), and asks the proxy for
        // each address in turn until one is reached: a name may have an address the proxy
        // cannot reach (::1 where it has no IPv6).
        ProxyScheme::Socks5 => {
            let target = resolver.resolve(host, port, deadline, timeout)?;
            let mut last = None;
            for addr in &target.addrs {
                let to = socks::Destination::Addr(addr.ip());
                match through(resolver, proxy, from, host, to, port, deadline, abort) {
                    Err(e @ ConnectError::ProxyCannotReach { .. }) => last = Some(e),
                    done => return done,
                }
            }
            Err(last.unwrap_or_else(|| ConnectError::Dns { host: host.into(), reason: "no addresses".into() }))
        }
    }
}

/// One connection to `proxy`, and its tunnel to `to:port` (`host` names it in messages).
#[allow(clippy::too_many_arguments)]
fn through(
    resolver: &Resolver,
    proxy: &ProxyUrl,
    from: ProxySource,
    host: &str,
    to: socks::Destination,
    port: u16,
    deadline: Instant,
    abort: &Abort,
) -> Result<Dialed, ConnectError> {
    let timeout = budget(deadline);
    let named = |why: String| unreachable(proxy, from, why);
    let resolved = resolver.resolve(&proxy.host, proxy.port, deadline, timeout).map_err(|e| named(e.to_string()))?;
    let (tcp, used) = connect_any(&resolved, deadline, timeout).map_err(|e| match e {
        ConnectError::TcpTimeout { .. } => ConnectError::ProxyTimeout { proxy: proxy.to_string(), timeout },
        other => named(after_cached(other, &resolved).to_string()),
    })?;
    abort.watch(&tcp)?;
    let mut sock = Sock::with_deadline(tcp, deadline);
    let opened = match proxy.scheme {
        ProxyScheme::Http => http_tunnel::open(&mut sock, proxy, host, port),
        ProxyScheme::Socks5 | ProxyScheme::Socks5h => socks::open(&mut sock, proxy, to, port),
    };
    opened.map_err(|f| failure(f, proxy, from, host, port, timeout))?;
    let tcp = sock.into_tcp().map_err(|e| named(format!("cannot reset socket timeouts: {e}")))?;
    let resolved = (proxy.host.parse::<IpAddr>().is_err()).then(|| (proxy.host.clone(), used, resolved));
    Ok(Dialed { tcp, resolved })
}

/// The time left until `deadline`, to the millisecond, for messages ("1s", not
/// "999.992947ms": the caller's timeout as it wrote it).
fn budget(deadline: Instant) -> Duration {
    let left = deadline.saturating_duration_since(Instant::now());
    Duration::from_millis(u64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u64::MAX))
}

/// What a SOCKS5 proxy is asked for: the name itself (it resolves it), or an IP literal.
fn destination(host: &str) -> socks::Destination<'_> {
    match host.parse() {
        Ok(ip) => socks::Destination::Addr(ip),
        Err(_) => socks::Destination::Name(host),
    }
}

/// TCP to the first of `resolved` that answers, by `deadline`; the address it reached.
fn connect_any(
    resolved: &Resolved,
    deadline: Instant,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let mut last = None;
    for addr in &resolved.addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok((s, *addr));
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
                last = Some(ConnectError::TcpTimeout { addr: addr.to_string(), timeout })
            }
            Err(e) => last = Some(ConnectError::Tcp { addr: addr.to_string(), source: e }),
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::TcpTimeout {
        addr: resolved.addrs.first().map_or_else(String::new, ToString::to_string),
        timeout,
    }))
}

/// A failure to connect to addresses that came from the address book is a DNS failure
/// first: it says both.
fn after_cached(e: ConnectError, resolved: &Resolved) -> ConnectError {
    match &resolved.cached {
        Some(ConnectError::Dns { host, reason }) => ConnectError::Dns {
            host: host.clone(),
            reason: format!("{reason}; the addresses that last worked failed too: {e}"),
        },
        Some(ConnectError::DnsTimeout { host, timeout }) => ConnectError::Dns {
            host: host.clone(),
            reason: format!("no answer within {timeout:?}; the addresses that last worked failed too: {e}"),
        },
        _ => e,
    }
}

fn unreachable(proxy: &ProxyUrl, from: ProxySource, why: String) -> ConnectError {
    ConnectError::ProxyUnreachable { proxy: proxy.to_string(), from: from.to_string(), why }
}

fn failure(
    f: ProxyFailure,
    proxy: &ProxyUrl,
    from: ProxySource,
    host: &str,
    port: u16,
    timeout: Duration,
) -> ConnectError {
    let (proxy_text, from) = (proxy.to_string(), from.to_string());
    let target = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    match f {
        ProxyFailure::Timeout => ConnectError::ProxyTimeout { proxy: proxy_text, timeout },
        ProxyFailure::Auth(why) => ConnectError::ProxyAuth { proxy: proxy_text, from, why },
        ProxyFailure::Refused(why) => ConnectError::ProxyRefused { proxy: proxy_text, target, why },
        ProxyFailure::CannotReach(why) => ConnectError::ProxyCannotReach { proxy: proxy_text, target, why },
        ProxyFailure::Protocol(why) => {
            let scheme = match proxy.scheme {
                ProxyScheme::Http => "an HTTP",
                ProxyScheme::Socks5 | ProxyScheme::Socks5h => "a SOCKS5",
            };
            ConnectError::ProxyProtocol { proxy: proxy_text, from, scheme, why }
        }
    }
}
