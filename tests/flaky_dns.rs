//! When the farm's DNS fails after it once answered, the agent reaches its gateway at the
//! address that last worked (kept in the state directory, so across restarts too), still
//! verifying the certificate against the host name, and says so in the log; a resolver that
//! never answers costs no more than the connect deadline. The real binary in a mount
//! namespace of its own (root), where a test hosts file and a resolv.conf naming a dead
//! nameserver are bind-mounted over the machine's.

mod common;

use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;

const NAME: &str = "gateway.farm.test";

/// A nameserver on a loopback address of this test's own that takes every query and never
/// answers (held while the returned socket lives), and the resolv.conf that names it: glibc
/// waits 5 s for it, longer than any connect deadline here.
fn silent_nameserver(dir: &Path) -> (UdpSocket, PathBuf) {
    let pid = std::process::id();
    let sock = (0..64)
        .find_map(|i| UdpSocket::bind((format!("127.53.{}.{}", (pid >> 8) & 0xff, (pid + i) & 0xff | 1), 53)).ok())
        .expect("a loopback address with port 53 free");
    let resolv = dir.join("resolv.conf");
    fs::write(&resolv, format!("nameserver {}\noptions timeout:5 attempts:1\n", sock.local_addr().unwrap().ip()))
        .unwrap();
    (sock, resolv)
}

/// The agent with `hosts` over /etc/hosts and `resolv` over /etc/resolv.conf, for itself
/// only. Files rewritten in place (same inode) change what it resolves while it runs.
fn spawn_in_namespace(config: &Path, hosts: &Path, resolv: &Path) -> Reaped {
    let agent = agent_command();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/resolv.conf && shift 2 && exec \"$@\"")
        .arg("sh")
        .arg(hosts)
        .arg(resolv)
        .arg(agent.get_program())
        .args(agent.get_args())
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .env_remove("JOURNAL_STREAM");
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    spawn_logged(&mut cmd)
}

#[test]
fn when_dns_fails_the_agent_reaches_the_gateway_at_the_address_that_last_worked() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&[NAME]);
    let mut gw = Gateway::start(&pki, Script::default());
    let url = format!("wss://{NAME}:{}/ws", gw.addr.port());
    let mut cfg = AgentConfig::new(url, &pki.ca_file);
    cfg.connect_timeout = "2s";
    let config = cfg.write(dir.path());
    let hosts = dir.path().join("hosts");
    fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {NAME}\n")).unwrap();
    let (_nameserver, resolv) = silent_nameserver(dir.path());

    let mut child = spawn_in_namespace(&config, &hosts, &resolv);
    gw.wait_login(10 * SEC);
    let book = dir.path().join("state/addresses.json");
    wait_until(10 * SEC, "the address book written", || {
        fs::read_to_string(&book).is_ok_and(|t| t.contains(NAME) && t.contains("127.0.0.1"))
    });

    // DNS goes: the name is no longer in the hosts file, and the nameserver never answers.
    // The lookup gets half of the 2 s deadline, the kept address the rest.
    fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    gw.close_all();
    let t = std::time::Instant::now();
    gw.wait_login(10 * SEC);
    assert!(t.elapsed() < 3 * SEC, "{:?}", t.elapsed());
    let (_, log) = stop_agent(&mut child);
    let used = format!("connected through 127.0.0.1:{}, the address {NAME} had when the agent last", gw.addr.port());
    assert!(log.contains(&used), "{log}");
    assert!(log.contains("the certificate was verified against gateway.farm.test"), "{log}");

    // A restart with DNS still down: the kept file does it.
    let mut child = spawn_in_namespace(&config, &hosts, &resolv);
    gw.wait_login(10 * SEC);
    let (_, log) = stop_agent(&mut child);
    assert!(log.contains(&used), "{log}");
}

#[test]
fn a_name_that_never_resolved_fails_within_the_connect_deadline_and_says_why() {
    if !root() {
        return;
    }
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&[NAME]);
    let gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(format!("wss://{NAME}:{}/ws", gw.addr.port()), &pki.ca_file);
    (cfg.connect_timeout, cfg.reconnect_initial, cfg.reconnect_max) = ("1s", "100ms", "100ms");
    let config = cfg.write(dir.path());
    let hosts = dir.path().join("hosts");
    fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let (_nameserver, resolv) = silent_nameserver(dir.path());
    let mut child = spawn_in_namespace(&config, &hosts, &resolv);
    std::thread::sleep(3 * SEC);
    let t = std::time::Instant::now();
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
    assert!(t.elapsed() < 2 * SEC, "a stop is prompt while lookups hang: {:?}", t.elapsed());
    assert!(log.contains(&format!("DNS lookup of {NAME} took longer than 1s")), "{log}");
    assert!(!log.contains("connected through"), "no address was ever kept: {log}");
}
