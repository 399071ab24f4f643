//! Attack review 4: gateway-chosen text on its way to systemd's notify socket.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use common::*;

/// A gateway rejecting the login with a description holding newlines and assignments
/// (`WATCHDOG=trigger`, `MAINPID=1`): systemd reads every line of a datagram as an
/// assignment. Every datagram the agent sends is one line, and the only assignments are
/// its own.
#[test]
fn a_login_rejection_with_newlines_reaches_sd_notify_as_one_escaped_status_line() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(ms(200))).unwrap();
    let pki = Pki::new(&["localhost"]);
    let evil = "nope\nWATCHDOG=trigger\r\nMAINPID=1\u{2028}STATUS=owned";
    let mut gw = Gateway::start(&pki, Script { login_code: 4, login_description: evil.into(), ..Script::default() });
    let cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    let mut child = spawn_agent(&cfg.write(dir.path()), &[("NOTIFY_SOCKET", notify.to_str().unwrap())]);
    gw.wait_login(10 * SEC);
    let mut got = Vec::new();
    let until = Instant::now() + 5 * SEC;
    let mut buf = vec![0u8; 4096];
    while Instant::now() < until && !got.iter().any(|d: &String| d.contains("login rejected")) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let (code, log) = stop_agent(&mut child);
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(code, Some(0), "{log}");
    assert!(got.iter().any(|d| d.contains("login rejected")), "{got:?}");
    for d in &got {
        assert!(!d.contains(['\n', '\r', '\u{2028}']), "a datagram of several lines: {d:?}");
        let key = d.split('=').next().unwrap();
        assert!(["READY", "STATUS", "STOPPING", "WATCHDOG"].contains(&key), "{d:?}");
        assert!(!d.starts_with("WATCHDOG=trigger") && !d.contains("MAINPID=1\n"), "{d:?}");
    }
    assert!(got.iter().any(|d| d == "STOPPING=1"), "{got:?}");
}
