//! A gateway that writes WebSocket frames of its own choosing, as a well-behaved WebSocket
//! library would not: frames for the scripted [`super::Gateway`] to send as they are, and a
//! gateway speaking raw WebSocket bytes over real TLS (the test PKI) that can flood frames
//! faster than the agent reads them.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use rustls::{ServerConnection, StreamOwned};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::OpCode;
use tungstenite::protocol::frame::{Frame, FrameHeader};

use super::{Pki, SEC};

/// A frame as a gateway that writes bytes of its own choosing would send it (unmasked; any
/// opcode, FIN or not).
fn any_frame(opcode: OpCode, is_final: bool, payload: &[u8]) -> Frame {
    Frame::from_payload(FrameHeader { is_final, opcode, ..FrameHeader::default() }, payload.to_vec().into())
}

/// [`any_frame`] as a message for the scripted gateway to send as it is.
pub fn raw_frame(opcode: OpCode, is_final: bool, payload: &[u8]) -> Message {
    Message::Frame(any_frame(opcode, is_final, payload))
}

/// The bytes of a server frame: the first byte (FIN and opcode, `0x89` a ping) and payload.
pub fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    any_frame(OpCode::from(b0 & 0x0f), b0 & 0x80 != 0, payload).format(&mut bytes).unwrap();
    bytes
}

/// Accepts one agent connection: TLS, the upgrade, the login answered. Returns the TLS
/// state and the (non-blocking) socket.
pub fn accept_and_login(listener: &TcpListener, pki: &Pki) -> (ServerConnection, TcpStream) {
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
pub fn flood(mut tls: ServerConnection, mut tcp: TcpStream, chunk: &[u8], stop: &AtomicBool, written: &AtomicU64) {
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
pub fn flood_counting(
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
