//! The network layer: [`dial`], the one way to open a TCP stream (directly or through an
//! HTTP CONNECT or SOCKS5 proxy, DNS bounded and backed by the address book); the
//! DNS/TCP/TLS/upgrade under one deadline (transport), the RFC 6455
//! upgrade (upgrade), the byte stream under the WebSocket (stream) and the WebSocket frame
//! helpers; and for an update's download, a small HTTP GET (http_get) over that same
//! [`dial`]. The gateway URL and the rustls client config it connects with are the config's
//! (`config::url`, `config::tls`): they are refused or built at load.

pub mod abort;
pub mod address_book;
pub mod connection;
pub mod frames;
pub mod http_get;
pub(crate) mod http_tunnel;
pub mod resolve;
pub(crate) mod route;
pub(crate) mod socks;
pub mod stream;
pub mod transport;
pub mod upgrade;

use std::net::TcpStream;
use std::time::Instant;

use crate::config::proxy::ProxyChoice;
use crate::net::abort::Abort;
use crate::net::resolve::Resolver;
use crate::net::transport::ConnectError;

/// Opens a TCP stream to `host:port` (a name, or an IP literal without brackets) by
/// `proxy` (`GatewayConfig::proxy.choose(host, port, tls)`), all of it (DNS, TCP, the
/// proxy's handshake) done by `deadline`.
///
/// Through an HTTP CONNECT or `socks5h://` proxy no local DNS is done for `host`: the proxy
/// resolves it. The stream comes back blocking, without timeouts; TLS, when wanted, is the
/// caller's to run on it, verified against `host`. `abort` (from another thread) ends the
/// attempt at once, and keeps watching the stream after it is returned, so it also cuts a
/// transfer that must stop; call [`Abort::release`] when that is no longer wanted.
///
/// Errors name the phase and the fix (`ConnectError`'s text is for the log).
pub fn dial(
    host: &str,
    port: u16,
    proxy: &ProxyChoice,
    deadline: Instant,
    abort: &Abort,
) -> Result<TcpStream, ConnectError> {
    route::dial_with(Resolver::shared(), host, port, proxy, deadline, abort).map(|d| d.tcp)
}
