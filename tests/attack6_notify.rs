//! Attack review 6: a notify socket nobody reads (PID 1 busy or stuck, a supervisor that
//! passed NOTIFY_SOCKET and went away without closing it). A Unix datagram socket's queue
//! holds `net.unix.max_dgram_qlen` (10) datagrams; a blocking send past that waits until
//! the reader reads. sd_notify is advice to the supervisor: it must never hold up the loop
//! that sends heartbeats, nor the stop.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use common::*;

#[test]
fn a_notify_socket_that_is_never_read_does_not_stop_heartbeats_nor_the_stop() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify");
    // Bound, never read.
    let _sock = UnixDatagram::bind(&notify).unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut gw = Gateway::start(&pki, Script::default());
    let mut cfg = AgentConfig::new(gw.url(), &pki.ca_file);
    cfg.heartbeat_interval = "200ms";
    cfg.heartbeat_timeout = "30s";
    let config = cfg.write(dir.path());
    // A keep-alive every 10 ms: the queue is full within a fraction of a second.
    let mut child = spawn_agent(&config, &[("NOTIFY_SOCKET", notify.to_str().unwrap()), ("WATCHDOG_USEC", "20000")]);
    let (conn, _) = gw.wait_login(10 * SEC);
    let t = Instant::now();
    let mut beats = 0;
    while t.elapsed() < 3 * SEC {
        if let Some(Event::Received { msg, conn: c, .. }) = gw.next_event(ms(100)) {
            if msg["act"] == "heartbeat" && c == conn {
                beats += 1;
            }
        }
    }
    signal(&child, Signal::TERM);
    let stopped = Instant::now();
    let mut code = None;
    while stopped.elapsed() < 5 * SEC {
        if let Some(s) = child.try_wait().unwrap() {
            code = s.code();
            break;
        }
        std::thread::sleep(ms(20));
    }
    let exited = code.is_some();
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    let log = take_log(&mut child);
    assert!(beats >= 10, "{beats} heartbeats in 3 s at a 200 ms interval: the loop is stuck on sd_notify\n{log}");
    assert!(exited, "still running 5 s after SIGTERM\n{log}");
    assert_eq!(code, Some(0), "{log}");
}
