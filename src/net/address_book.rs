//! The addresses that last worked for each host the agent dials by name (the gateway's,
//! or a proxy's), kept in `<state_dir>/addresses.json`, so that a farm whose DNS fails
//! (SERVFAIL, a resolver that never answers, no network yet at boot) still reaches its
//! gateway. A fresh answer always wins and replaces them; they are used only when the
//! lookup fails, and the certificate is still verified against the host name.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde_json::{Value, json};

use crate::os::deferred_write::DeferredWriter;
use crate::os::state_file;

/// The file's name in the state directory.
pub const FILE: &str = "addresses.json";
/// The largest file read: far above what the caps below write.
const FILE_CAP: u64 = 16 << 10;
/// Hosts kept (the most recently used first): a config has a few gateway URLs and a proxy.
const MAX_HOSTS: usize = 16;
/// Addresses kept per host.
const MAX_ADDRESSES: usize = 8;

#[derive(Debug)]
pub struct AddressBook {
    /// Host name (lower case) → addresses, the one that worked first; most recent host first.
    hosts: Mutex<Vec<(String, Vec<IpAddr>)>>,
    record: Option<(PathBuf, DeferredWriter)>,
}

impl AddressBook {
    /// The book kept in `state_dir`, loaded now (bounded; a corrupt file is moved aside and
    /// the message for an error line returned), written by `writer`.
    pub fn load(state_dir: &Path, writer: DeferredWriter) -> (AddressBook, Option<String>) {
        let (hosts, problem) = state_file::load(state_dir, FILE, FILE_CAP, "the address book", parse);
        let book =
            AddressBook { hosts: Mutex::new(hosts.unwrap_or_default()), record: Some((state_dir.join(FILE), writer)) };
        (book, problem)
    }

    /// An empty book kept nowhere.
    pub fn in_memory() -> AddressBook {
        AddressBook { hosts: Mutex::new(Vec::new()), record: None }
    }

    fn hosts(&self) -> MutexGuard<'_, Vec<(String, Vec<IpAddr>)>> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The addresses that last worked for `host`.
    pub fn get(&self, host: &str) -> Vec<IpAddr> {
        let host = host.to_ascii_lowercase();
        self.hosts().iter().find(|(h, _)| *h == host).map(|(_, a)| a.clone()).unwrap_or_default()
    }

    /// `worked` reached `host`, from the fresh answer `answer`: they replace what was kept,
    /// the one that worked first. Written (off the caller's thread) when that changes it.
    pub fn remember(&self, host: &str, worked: IpAddr, answer: &[IpAddr]) {
        let host = host.to_ascii_lowercase();
        let mut addresses = vec![worked];
        addresses.extend(answer.iter().filter(|a| **a != worked).take(MAX_ADDRESSES - 1));
        let mut hosts = self.hosts();
        let at = hosts.iter().position(|(h, _)| *h == host);
        if at == Some(0) && hosts[0].1 == addresses {
            return;
        }
        if let Some(i) = at {
            hosts.remove(i);
        }
        hosts.insert(0, (host, addresses));
        hosts.truncate(MAX_HOSTS);
        if let Some((path, writer)) = &self.record {
            writer.put(path.clone(), to_json(&hosts).to_string().into_bytes());
        }
    }
}

fn to_json(hosts: &[(String, Vec<IpAddr>)]) -> Value {
    let hosts: Vec<Value> = hosts
        .iter()
        .map(|(h, a)| json!({"host": h, "addresses": a.iter().map(ToString::to_string).collect::<Vec<_>>()}))
        .collect();
    json!({"version": 1, "hosts": hosts})
}

fn parse(v: &Value) -> Option<Vec<(String, Vec<IpAddr>)>> {
    if v["version"].as_u64()? != 1 {
        return None;
    }
    let hosts = v["hosts"].as_array()?;
    hosts
        .iter()
        .take(MAX_HOSTS)
        .map(|h| {
            let addresses = h["addresses"].as_array()?.iter().take(MAX_ADDRESSES);
            Some((h["host"].as_str()?.to_string(), addresses.map(|a| a.as_str()?.parse().ok()).collect::<Option<_>>()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_fresh_answer_replaces_what_was_kept_with_the_address_that_worked_first() {
        let book = AddressBook::in_memory();
        assert!(book.get("gw.example").is_empty());
        book.remember("GW.example", ip("10.0.0.2"), &[ip("10.0.0.1"), ip("10.0.0.2")]);
        assert_eq!(book.get("gw.example"), [ip("10.0.0.2"), ip("10.0.0.1")]);
        book.remember("gw.example", ip("10.9.9.9"), &[ip("10.9.9.9")]);
        assert_eq!(book.get("gw.example"), [ip("10.9.9.9")]);
        for i in 0..40 {
            book.remember(&format!("h{i}"), ip("10.0.0.1"), &[]);
        }
        assert_eq!(book.hosts().len(), MAX_HOSTS, "bounded");
        assert!(book.get("gw.example").is_empty(), "the least recent went first");
    }

    #[test]
    fn the_book_is_kept_across_restarts_and_a_corrupt_one_is_moved_aside() {
        let d = tempfile::tempdir().unwrap();
        let (book, problem) = AddressBook::load(d.path(), DeferredWriter::default());
        assert_eq!(problem, None);
        book.remember("gw.example", ip("2001:db8::1"), &[ip("192.0.2.1")]);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !d.path().join(FILE).exists() {
            assert!(std::time::Instant::now() < until, "not written");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let (again, _) = AddressBook::load(d.path(), DeferredWriter::default());
        assert_eq!(again.get("gw.example"), [ip("2001:db8::1"), ip("192.0.2.1")]);
        std::fs::write(d.path().join(FILE), r#"{"version":1,"hosts":[{"host":"x","addresses":["nope"]}]}"#).unwrap();
        let (empty, problem) = AddressBook::load(d.path(), DeferredWriter::default());
        assert!(empty.get("x").is_empty());
        assert!(problem.unwrap().contains("moved aside"));
    }
}
