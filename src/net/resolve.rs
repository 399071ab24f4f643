//! Name resolution bounded by the attempt's deadline, with the address book as the fallback
//! when the resolver fails. `getaddrinfo` cannot be bounded; a helper thread can. A lookup
//! that hangs leaves its thread to finish on the resolver's own timeout while the attempt
//! moves on, and at most [`MAX_RUNNING_LOOKUPS`] such threads run at once: past them a
//! lookup fails at once, so a resolver that never answers holds neither a thread per
//! attempt nor a reload (which does no DNS) nor a stop.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::net::address_book::AddressBook;
use crate::net::transport::ConnectError;
use crate::protocol::escape::escape;

/// How many lookup threads may run at once. Each ends on the resolver's own timeout (glibc:
/// 5 s a try, two tries a nameserver), so a few are plenty.
const MAX_RUNNING_LOOKUPS: usize = 4;

/// Who resolves: the count of lookups still running, and the addresses that last worked.
/// Clones share both.
#[derive(Debug, Clone)]
pub struct Resolver {
    lookups: Arc<AtomicUsize>,
    book: Arc<AddressBook>,
}

/// What a lookup gave.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) addrs: Vec<SocketAddr>,
    /// `Some(why the lookup failed)` when these are the addresses that last worked.
    pub(crate) cached: Option<ConnectError>,
}

impl Resolver {
    pub fn new(book: Arc<AddressBook>) -> Resolver {
        Resolver { lookups: Arc::new(AtomicUsize::new(0)), book }
    }

    /// The process's resolver without a book (what `net::dial` uses): its lookups count
    /// against one bound, whoever dials.
    pub(crate) fn shared() -> &'static Resolver {
        static SHARED: OnceLock<Resolver> = OnceLock::new();
        SHARED.get_or_init(|| Resolver::new(Arc::new(AddressBook::in_memory())))
    }

    pub(crate) fn book(&self) -> &AddressBook {
        &self.book
    }

    /// The addresses of `host:port` by `deadline` (`timeout`, the attempt's whole budget,
    /// for the message). With addresses that last worked, the lookup gets half of what is
    /// left, so that they still have time to connect if it fails.
    pub(crate) fn resolve(
        &self,
        host: &str,
        port: u16,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Resolved, ConnectError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Resolved { addrs: vec![SocketAddr::new(ip, port)], cached: None });
        }
        let kept = self.book.get(host);
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = if kept.is_empty() { left } else { left / 2 };
        match self.lookup(host, port, wait, if kept.is_empty() { timeout } else { wait }) {
            Ok(addrs) => Ok(Resolved { addrs, cached: None }),
            Err(e) if kept.is_empty() => Err(e),
            Err(e) => {
                Ok(Resolved { addrs: kept.into_iter().map(|ip| SocketAddr::new(ip, port)).collect(), cached: Some(e) })
            }
        }
    }

    fn lookup(&self, host: &str, port: u16, wait: Duration, said: Duration) -> Result<Vec<SocketAddr>, ConnectError> {
        if self.lookups.fetch_add(1, Ordering::SeqCst) >= MAX_RUNNING_LOOKUPS {
            self.lookups.fetch_sub(1, Ordering::SeqCst);
            return Err(ConnectError::Dns {
                host: host.into(),
                reason: format!("the resolver has not answered the last {MAX_RUNNING_LOOKUPS} lookups"),
            });
        }
        let (tx, rx) = mpsc::channel();
        let (name, running) = (host.to_string(), Arc::clone(&self.lookups));
        let spawned = std::thread::Builder::new().name("dns".into()).spawn(move || {
            let found = (name.as_str(), port).to_socket_addrs().map(|a| a.collect::<Vec<_>>());
            running.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(found);
        });
        if let Err(e) = spawned {
            self.lookups.fetch_sub(1, Ordering::SeqCst);
            return Err(ConnectError::Dns { host: host.into(), reason: format!("cannot start lookup thread: {e}") });
        }
        match rx.recv_timeout(wait) {
            Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
            Ok(Ok(_)) => Err(ConnectError::Dns { host: host.into(), reason: "no addresses".into() }),
            Ok(Err(e)) => Err(ConnectError::Dns { host: host.into(), reason: escape(&e.to_string()) }),
            Err(_) => Err(ConnectError::DnsTimeout { host: host.into(), timeout: said }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_lookup_falls_back_to_the_addresses_that_last_worked() {
        let book = Arc::new(AddressBook::in_memory());
        let r = Resolver::new(Arc::clone(&book));
        let (deadline, t) = (Instant::now() + Duration::from_secs(5), Duration::from_secs(5));
        // .invalid never resolves (RFC 6761).
        let host = "gateway.rig-agent-test.invalid";
        assert!(matches!(
            r.resolve(host, 443, deadline, t),
            Err(ConnectError::Dns { .. } | ConnectError::DnsTimeout { .. })
        ));
        book.remember(host, "192.0.2.7".parse().unwrap(), &[]);
        let got = r.resolve(host, 8443, deadline, t).unwrap();
        assert_eq!(got.addrs, ["192.0.2.7:8443".parse::<SocketAddr>().unwrap()]);
        assert!(got.cached.is_some());
        // A fresh answer wins over what is kept.
        book.remember("localhost", "192.0.2.8".parse().unwrap(), &[]);
        let fresh = r.resolve("localhost", 1, deadline, t).unwrap();
        assert!(fresh.cached.is_none() && fresh.addrs.iter().all(|a| a.ip().is_loopback()), "{fresh:?}");
    }
}
