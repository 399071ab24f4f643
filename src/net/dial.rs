//! Opening a TCP connection for what is not the gateway's WebSocket (an update's download):
//! DNS and connect within one deadline. The one place such a connection is dialled, so
//! that proxy settings, when the rig has them, apply here and everywhere it is used.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A TCP connection to `host:port`, DNS and connect within `timeout`. getaddrinfo cannot be
/// bounded, so it runs on a helper thread left to end on the resolver's own timeout.
pub fn dial(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else {
        let (tx, rx) = mpsc::channel();
        let name = host.to_string();
        std::thread::Builder::new().name("dns".into()).spawn(move || {
            let _ = tx.send((name.as_str(), port).to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        })?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(a)) if !a.is_empty() => a,
            Ok(Ok(_)) => return Err(io::Error::new(io::ErrorKind::NotFound, format!("{host}: no addresses"))),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, format!("DNS lookup of {host} timed out"))),
        }
    };
    let mut last = io::Error::new(io::ErrorKind::TimedOut, format!("connect to {host}:{port} timed out"));
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}
