//! Attack review 2: a hostile gateway speaking raw WebSocket bytes over real TLS (the test
//! PKI), so that it can do what a well-behaved WebSocket library would not: flood frames
//! faster than the agent can read them.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rustls::{ServerConnection, StreamOwned};

/// A server frame (unmasked) with this opcode byte and payload.
fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![op];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n < 65536 => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// Accepts one agent connection: TLS, the upgrade, the login answered. Returns the TLS
/// state and the (non-blocking) socket.
fn accept_and_login(listener: &TcpListener, pki: &Pki) -> (ServerConnection, TcpStream) {
    let (tcp, _) = listener.accept().unwrap();
    tcp.set_read_timeout(Some(10 * SEC)).unwrap();
    let tls = ServerConnection::new(pki.server_config()).unwrap();
    let mut s = StreamOwned::new(tls, tcp);
    let mut req = Vec::new();
    let mut b = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        req.push(b[0]);
    }
    let req = String::from_utf8(req).unwrap();
    let key = req
        .lines()
        .find_map(|l| l.to_ascii_lowercase().starts_with("sec-websocket-key:").then(|| l[18..].trim().to_string()))
        .unwrap();
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    write!(s, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").unwrap();
    // The login: answered without reading it (an empty act_id is accepted).
    s.write_all(&frame(0x81, br#"{"act":"return","action":"start","act_id":"","code":0}"#)).unwrap();
    s.flush().unwrap();
    let StreamOwned { conn, sock } = s;
    sock.set_nonblocking(true).unwrap();
    (conn, sock)
}

/// Writes `chunk` over and over as fast as TLS and TCP take it, reading and discarding what
/// the agent sends, until `stop` or the agent is gone. Returns the frames' bytes written.
fn flood(mut tls: ServerConnection, mut tcp: TcpStream, chunk: &[u8], stop: &AtomicBool, written: &AtomicU64) {
    flood_counting(&mut tls, &mut tcp, None, chunk, stop, written, &AtomicU64::new(0));
}

/// Heartbeats in the agent's frames read so far (masked client frames, parsed from `input`,
/// which keeps what is not a whole frame yet).
fn count_heartbeats(input: &mut Vec<u8>, heartbeats: &AtomicU64) {
    loop {
        if input.len() < 2 {
            return;
        }
        let (mut at, len) = match input[1] & 0x7f {
            126 if input.len() >= 4 => (4, u16::from_be_bytes([input[2], input[3]]) as usize),
            127 if input.len() >= 10 => (10, u64::from_be_bytes(input[2..10].try_into().unwrap()) as usize),
            126 | 127 => return,
            n => (2, n as usize),
        };
        if input.len() < at + 4 + len {
            return;
        }
        let key = [input[at], input[at + 1], input[at + 2], input[at + 3]];
        at += 4;
        let payload: Vec<u8> = input[at..at + len].iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
        if String::from_utf8_lossy(&payload).contains("\"act\":\"heartbeat\"") {
            heartbeats.fetch_add(1, Ordering::SeqCst);
        }
        input.drain(..at + len);
    }
}

/// As [`flood`], with `first` written once before the chunks, and the agent's heartbeats counted.
fn flood_counting(
    tls: &mut ServerConnection,
    tcp: &mut TcpStream,
    first: Option<&[u8]>,
    chunk: &[u8],
    stop: &AtomicBool,
    written: &AtomicU64,
    heartbeats: &AtomicU64,
) {
    if let Some(first) = first {
        tls.writer().write_all(first).unwrap();
    }
    let mut from_agent = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    // Once the agent has shut its side, keep writing (a gateway that does not care).
    let mut agent_done = false;
    while !stop.load(Ordering::SeqCst) {
        while !agent_done {
            match tls.read_tls(tcp) {
                Ok(0) => agent_done = true,
                Ok(_) => {
                    if tls.process_new_packets().is_err() {
                        return;
                    }
                    loop {
                        match tls.reader().read(&mut buf) {
                            Ok(0) => {
                                agent_done = true;
                                break;
                            }
                            Ok(n) => {
                                from_agent.extend_from_slice(&buf[..n]);
                                count_heartbeats(&mut from_agent, heartbeats);
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
        if tls.wants_write() {
            match tls.write_tls(tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_micros(200)),
                Err(_) => return,
            }
        } else {
            tls.writer().write_all(chunk).unwrap();
            written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    }
}

/// Waits up to `limit` for the child to exit; how long it took, or `None` (then it is killed).
fn exits_within(child: &mut std::process::Child, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(t.elapsed());
        }
        thread::sleep(ms(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn log_of(child: &mut std::process::Child) -> String {
    take_log(child)
}

/// SIGTERM while the gateway floods empty pings: the agent sends its close 1001 and waits
/// at most 2 s for the gateway's close reply (PROTOCOL.md §1), then exits.
#[test]
fn a_gateway_flooding_pings_does_not_keep_a_stopping_agent_from_exiting() {
    let _g = Guard::new(120 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("wss://localhost:{}/ws", listener.local_addr().unwrap().port());
    let mut cfg = AgentConfig::new(url, &pki.ca_file);
    cfg.heartbeat_interval = "1s";
    cfg.heartbeat_timeout = "5s";
    let config = cfg.write(dir.path());
    let mut child = spawn_agent(&config, &[]);
    let (tls, tcp) = accept_and_login(&listener, &pki);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let (s2, w2) = (stop.clone(), written.clone());
    // 8192 empty pings per TLS write: cheap to send, one read() each for the agent.
    let chunk = frame(0x89, b"").repeat(8192);
    let flooder = thread::spawn(move || flood(tls, tcp, &chunk, &s2, &w2));
    thread::sleep(2 * SEC);
    signal(&child, Signal::TERM);
    let took = exits_within(&mut child, 10 * SEC);
    stop.store(true, Ordering::SeqCst);
    let _ = flooder.join();
    let log = log_of(&mut child);
    eprintln!("flooded {} MB; exit after {took:?}", written.load(Ordering::Relaxed) >> 20);
    assert!(took.is_some(), "the agent had not exited 10 s after SIGTERM (its close wait is 2 s); log:\n{log}");
}

/// A text message begun and then continued by empty, unfinished fragments for ever: the
/// message never grows (so `max_message_bytes` never trips), and tungstenite's `read()`
/// loops over fragments until it has a whole message. Heartbeats must keep their schedule
/// (PROTOCOL.md §4: "whatever else happens").
#[test]
fn endless_empty_fragments_of_one_text_message_do_not_stop_heartbeats() {
    let _g = Guard::new(120 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("wss://localhost:{}/ws", listener.local_addr().unwrap().port());
    let mut cfg = AgentConfig::new(url, &pki.ca_file);
    cfg.heartbeat_interval = "500ms";
    cfg.heartbeat_timeout = "5s";
    let config = cfg.write(dir.path());
    let mut child = spawn_agent(&config, &[]);
    let (mut tls, mut tcp) = accept_and_login(&listener, &pki);
    let stop = Arc::new(AtomicBool::new(false));
    let (written, heartbeats) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (s2, w2, h2) = (stop.clone(), written.clone(), heartbeats.clone());
    let flooder = thread::spawn(move || {
        // A text frame without FIN, then continuation frames without FIN and no payload.
        let chunk = frame(0x00, b"").repeat(8192);
        flood_counting(&mut tls, &mut tcp, Some(&frame(0x01, b"{")), &chunk, &s2, &w2, &h2);
    });
    thread::sleep(SEC);
    let before = heartbeats.load(Ordering::SeqCst);
    thread::sleep(4 * SEC);
    let during = heartbeats.load(Ordering::SeqCst) - before;
    signal(&child, Signal::TERM);
    let took = exits_within(&mut child, 10 * SEC);
    stop.store(true, Ordering::SeqCst);
    let _ = flooder.join();
    let log = log_of(&mut child);
    eprintln!("flooded {} MB; {during} heartbeats in 4 s; exit after {took:?}", written.load(Ordering::Relaxed) >> 20);
    // Either heartbeats keep their schedule on that connection, or the agent leaves it as a
    // hostile one (as for an oversized message) and stays in charge: it stops at once.
    let left = log.contains("more than 4096 fragments");
    assert!(during >= 4 || left, "{during} heartbeats in 4 s at a 500 ms interval; log:\n{log}");
    assert!(took.is_some_and(|t| t < 3 * SEC), "SIGTERM took {took:?}; log:\n{log}");
}
