//! A real gateway for tests and the demo: rustls + tungstenite server side, a CA and
//! certificate generated per run, bound to 127.0.0.1:0, scriptable (accept, reject login,
//! stop answering, drop, send junk) and recording everything it sees as [`Event`]s.
//!
//! Shared by `tests/` and `examples/demo.rs` (through `#[path]`), so the demo runs against
//! exactly the gateway the tests trust.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rig_agent::os::wake::{Interest, WakeReceiver, Waker};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::{Value, json};
use tungstenite::handshake::server::{Request, Response};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// Per connection: where to queue frames for it, and how to wake its thread.
type Outboxes = Arc<Mutex<HashMap<usize, (Sender<Message>, Waker)>>>;

/// A throwaway PKI: one CA, one server certificate for the given names, files in a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// PEM of the CA, for the agent's `gateway.ca_file`.
    pub ca_file: PathBuf,
    server: Arc<ServerConfig>,
}

impl Pki {
    /// The server side's TLS config, for tests that speak raw WebSocket bytes over it.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// `names`: DNS names or IP literals the server certificate is valid for.
    pub fn new(names: &[&str]) -> Pki {
        Pki::build(names, false)
    }

    /// A certificate whose validity starts in 2099: what a board without an RTC sees before
    /// NTP has set its clock (the reverse clock error, the same check in rustls).
    pub fn not_yet_valid(names: &[&str]) -> Pki {
        Pki::build(names, true)
    }

    /// A certificate valid from 2020 to the start of 2099, as real ones have an end: a
    /// clock at 2100 finds it expired.
    pub fn ending_in_2099(names: &[&str]) -> Pki {
        Pki::build_with(names, Some((2020, 2099)))
    }

    fn build(names: &[&str], future: bool) -> Pki {
        Pki::build_with(names, future.then_some((2099, 2100)))
    }

    /// `validity`: from the start of one year to the start of another.
    fn build_with(names: &[&str], validity: Option<(i32, i32)>) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "rig-agent test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        leaf_params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("gateway"));
        if let Some((from, until)) = validity {
            leaf_params.not_before = rcgen::date_time_ymd(from, 1, 1);
            leaf_params.not_after = rcgen::date_time_ymd(until, 1, 1);
        }
        let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let chain = vec![CertificateDer::from(leaf_cert.der().to_vec())];
        let key = PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).unwrap();
        let server = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Pki { dir, ca_file, server: Arc::new(server) }
    }
}

/// How the gateway behaves; change it at any time through [`Gateway::script`].
#[derive(Debug, Clone)]
pub struct Script {
    /// Code of the login `return`; 0 accepts.
    pub login_code: i64,
    pub login_description: String,
    /// Hold the login `return` back this long.
    pub login_delay: Duration,
    pub answer_heartbeats: bool,
    /// After answering the login, stop reading and writing without closing (half-open).
    pub blackhole_after_login: bool,
    /// Close the TCP connection right after the login `return`.
    pub drop_after_login: bool,
    /// Close the TCP connection right after accepting it, before TLS.
    pub drop_on_accept: bool,
    /// Accept TCP and never speak TLS (slowloris).
    pub stall_tls: bool,
    /// Acknowledge warnings and action results with this code (`None`: never acknowledge).
    pub warning_ack: Option<i64>,
    /// After the login return, never read again but keep sending pings (a gateway whose
    /// reader is stuck: the agent's writes stall while frames still arrive).
    pub deaf_after_login: bool,
    /// Complete TLS, then never answer the WebSocket upgrade.
    pub stall_upgrade: bool,
    /// Logins with this token are refused with code 4 (a fleet with one wrong token).
    pub reject_token: Option<String>,
    /// Instead of TLS, a TLS record header announcing 16 KiB, then one byte of it per this
    /// interval (slowloris inside the handshake).
    pub trickle_tls: Option<Duration>,
    /// Complete TLS, then answer the upgrade with `101` and one header line per this
    /// interval, never ending the headers.
    pub trickle_upgrade: Option<Duration>,
    /// The `Sec-WebSocket-Protocol` the 101 selects. `None`, the default, selects none
    /// whatever the agent offers, as gorilla/websocket's default `Upgrader` does.
    pub select_subprotocol: Option<String>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            login_code: 0,
            login_description: "操作成功".into(),
            login_delay: Duration::ZERO,
            answer_heartbeats: true,
            blackhole_after_login: false,
            drop_after_login: false,
            drop_on_accept: false,
            stall_tls: false,
            warning_ack: Some(0),
            deaf_after_login: false,
            stall_upgrade: false,
            reject_token: None,
            trickle_tls: None,
            trickle_upgrade: None,
            select_subprotocol: None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    Accepted {
        conn: usize,
        at: Instant,
    },
    TlsFailed {
        conn: usize,
        error: String,
        at: Instant,
    },
    Upgraded {
        conn: usize,
        user_agent: Option<String>,
        protocol: Option<String>,
        at: Instant,
    },
    /// A text frame from the agent, parsed (non-JSON text is recorded as a JSON string).
    Received {
        conn: usize,
        msg: Value,
        at: Instant,
    },
    Binary {
        conn: usize,
        at: Instant,
    },
    /// The login `return` the gateway sent, as sent.
    Sent {
        conn: usize,
        msg: Value,
        at: Instant,
    },
    /// A close frame from the agent.
    Closed {
        conn: usize,
        code: Option<u16>,
        at: Instant,
    },
    /// The connection is over (closed, reset, or dropped by the script).
    Gone {
        conn: usize,
        at: Instant,
    },
}

impl Event {
    pub fn conn(&self) -> usize {
        match self {
            Event::Accepted { conn, .. }
            | Event::TlsFailed { conn, .. }
            | Event::Upgraded { conn, .. }
            | Event::Received { conn, .. }
            | Event::Binary { conn, .. }
            | Event::Sent { conn, .. }
            | Event::Closed { conn, .. }
            | Event::Gone { conn, .. } => *conn,
        }
    }

    pub fn at(&self) -> Instant {
        match self {
            Event::Accepted { at, .. }
            | Event::TlsFailed { at, .. }
            | Event::Upgraded { at, .. }
            | Event::Received { at, .. }
            | Event::Binary { at, .. }
            | Event::Sent { at, .. }
            | Event::Closed { at, .. }
            | Event::Gone { at, .. } => *at,
        }
    }

    /// The `act` of a received message.
    pub fn act(&self) -> Option<&str> {
        match self {
            Event::Received { msg, .. } => msg.get("act").and_then(Value::as_str),
            _ => None,
        }
    }
}

pub struct Gateway {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    events: Receiver<Event>,
    outboxes: Outboxes,
    stop: Arc<AtomicBool>,
    /// Every event seen so far by `next_event`, for checks over the whole history.
    pub seen: Vec<Event>,
}

impl Gateway {
    pub fn start(pki: &Pki, script: Script) -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (tx, events) = mpsc::channel();
        let script = Arc::new(Mutex::new(script));
        let outboxes = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (server, script2, outboxes2, stop2) = (pki.server.clone(), script.clone(), outboxes.clone(), stop.clone());
        thread::spawn(move || {
            let next_id = AtomicUsize::new(1);
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        let conn = next_id.fetch_add(1, Ordering::SeqCst);
                        let (server, script, outboxes, stop, tx) =
                            (server.clone(), script2.clone(), outboxes2.clone(), stop2.clone(), tx.clone());
                        thread::spawn(move || serve(conn, tcp, server, script, outboxes, stop, tx));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(2)),
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Gateway { addr, script, events, outboxes, stop, seen: Vec::new() }
    }

    /// `wss://localhost:<port>/ws`
    pub fn url(&self) -> String {
        format!("wss://localhost:{}/ws", self.addr.port())
    }

    pub fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }

    /// Sends a frame to connection `conn` (ignored if it is gone).
    pub fn send(&self, conn: usize, msg: Message) {
        if let Some((tx, waker)) = self.outboxes.lock().unwrap().get(&conn) {
            let _ = tx.send(msg);
            waker.wake();
        }
    }

    /// A gateway restart as the rigs see it: every open connection gets close 1012
    /// ("service restart").
    pub fn close_all(&self) {
        for (tx, waker) in self.outboxes.lock().unwrap().values() {
            let frame = tungstenite::protocol::CloseFrame {
                code: tungstenite::protocol::frame::coding::CloseCode::Restart,
                reason: "service restart".into(),
            };
            let _ = tx.send(Message::Close(Some(frame)));
            waker.wake();
        }
    }

    pub fn send_json(&self, conn: usize, v: Value) {
        self.send(conn, Message::text(v.to_string()));
    }

    pub fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        let e = self.events.recv_timeout(timeout).ok()?;
        self.seen.push(e.clone());
        Some(e)
    }

    /// Records whatever arrives for `d` (in `seen`).
    pub fn soak(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            self.next_event(left);
        }
    }

    /// The next event matching `pred`; panics after `timeout` (a test guard, not a timing).
    pub fn wait_for(&mut self, timeout: Duration, what: &str, mut pred: impl FnMut(&Event) -> bool) -> Event {
        let timeout = slack(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left) {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("gateway: no {what} within {timeout:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// Whether connection `conn` was closed or lost so far. Only that connection: attempts
    /// before the login (a handshake that ran over the agent's deadline on a loaded machine
    /// or under qemu) are not the connection a test watches.
    pub fn dropped(&self, conn: usize) -> bool {
        self.seen.iter().any(|e| matches!(e, Event::Closed { .. } | Event::Gone { .. }) && e.conn() == conn)
    }

    /// Waits for the agent's login on a new connection and returns (conn, login message).
    pub fn wait_login(&mut self, timeout: Duration) -> (usize, Value) {
        match self.wait_for(timeout, "login", |e| e.act() == Some("start")) {
            Event::Received { conn, msg, .. } => (conn, msg),
            _ => unreachable!(),
        }
    }

    /// Waits for a message with this `act` (any connection).
    pub fn wait_act(&mut self, timeout: Duration, act: &str) -> (usize, Value, Instant) {
        match self.wait_for(timeout, act, |e| e.act() == Some(act)) {
            Event::Received { conn, msg, at } => (conn, msg, at),
            _ => unreachable!(),
        }
    }

    /// Waits for a warning about `disk` (`/dev/sda`) with this `reason`.
    pub fn wait_warning(&mut self, timeout: Duration, disk: &str, reason: &str) -> Value {
        match self.wait_for(timeout, &format!("warning {reason} for {disk}"), |e| match e {
            Event::Received { msg, .. } => msg["act"] == "warning" && msg["disk"] == disk && msg["reason"] == reason,
            _ => false,
        }) {
            Event::Received { msg, .. } => msg,
            _ => unreachable!(),
        }
    }

    /// Waits for a message `act` (`warning`, `warning_cleared`) about the GPU at `bus`
    /// with this `reason`.
    pub fn wait_gpu(&mut self, timeout: Duration, act: &str, bus: &str, reason: &str) -> Value {
        match self.wait_for(timeout, &format!("{act} {reason} for GPU {bus}"), |e| match e {
            Event::Received { msg, .. } => msg["act"] == act && msg["gpu"] == bus && msg["reason"] == reason,
            _ => false,
        }) {
            Event::Received { msg, .. } => msg,
            _ => unreachable!(),
        }
    }

    /// Asks connection `conn` for `get_agent_info` and returns the answer's `data`.
    pub fn agent_info(&mut self, conn: usize) -> Value {
        self.send_json(
            conn,
            serde_json::json!({"act":"get_agent_info","act_code":"info","client_id":"c","reqtype":"post"}),
        );
        let e = self.wait_for(
            Duration::from_secs(10),
            "agent info",
            |e| matches!(e, Event::Received { msg, .. } if msg["act"] == "get_agent_info"),
        );
        match e {
            Event::Received { msg, .. } => msg["data"].clone(),
            _ => unreachable!(),
        }
    }

    /// The messages `act` about the GPU at `bus` received so far.
    pub fn gpu_seen(&self, act: &str, bus: &str) -> Vec<Value> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Event::Received { msg, .. } if msg["act"] == act && msg["gpu"] == bus => Some(msg.clone()),
                _ => None,
            })
            .collect()
    }

    /// The warnings about `disk` received so far.
    pub fn warnings_seen(&self, disk: &str) -> Vec<Value> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Event::Received { msg, .. } if msg["act"] == "warning" && msg["disk"] == disk => Some(msg.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// tungstenite's handshake callback type has a large error variant; not ours to change.
#[allow(clippy::result_large_err)]
fn serve(
    conn: usize,
    tcp: TcpStream,
    server: Arc<ServerConfig>,
    script: Arc<Mutex<Script>>,
    outboxes: Outboxes,
    stop: Arc<AtomicBool>,
    events: Sender<Event>,
) {
    let _ = events.send(Event::Accepted { conn, at: Instant::now() });
    let s = script.lock().unwrap().clone();
    if s.drop_on_accept {
        drop(tcp);
        let _ = events.send(Event::Gone { conn, at: Instant::now() });
        return;
    }
    if let Some(every) = s.trickle_tls {
        // A handshake record of 16 KiB, the most rustls takes, then its bytes one by one.
        let mut tcp = tcp;
        trickle(&mut tcp, b"\x16\x03\x03\x40\x00", every, &stop, || b"\x00".to_vec());
        let _ = events.send(Event::Gone { conn, at: Instant::now() });
        return;
    }
    if s.stall_tls {
        while !stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
        }
        return;
    }
    let _ = tcp.set_nonblocking(false);
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let mut tls = match ServerConnection::new(server) {
        Ok(c) => c,
        Err(_) => return,
    };
    // rustls holds at most 64 KiB of records to send by default, and a write into a full
    // buffer returns 0, which tungstenite takes for a reset connection: a test flooding a
    // slow agent (qemu-user) would see the gateway drop it. The test's own queue is the
    // bound here.
    tls.set_buffer_limit(None);
    let mut tcp = tcp;
    while tls.is_handshaking() {
        if let Err(e) = tls.complete_io(&mut tcp) {
            let _ = events.send(Event::TlsFailed { conn, error: e.to_string(), at: Instant::now() });
            let _ = events.send(Event::Gone { conn, at: Instant::now() });
            return;
        }
    }
    let mut stream = StreamOwned::new(tls, tcp);
    if let Some(every) = s.trickle_upgrade {
        let mut n = 0;
        trickle(&mut stream, b"HTTP/1.1 101 Switching Protocols\r\n", every, &stop, || {
            n += 1;
            format!("X-Slow-{n}: x\r\n").into_bytes()
        });
        let _ = events.send(Event::Gone { conn, at: Instant::now() });
        return;
    }
    if s.stall_upgrade {
        while !stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = events.send(Event::Gone { conn, at: Instant::now() });
        return;
    }
    let (mut user_agent, mut protocol) = (None, None);
    let callback = |req: &Request, mut resp: Response| {
        let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        user_agent = h("user-agent");
        protocol = h("sec-websocket-protocol");
        if let Some(p) = &s.select_subprotocol {
            resp.headers_mut().insert("Sec-WebSocket-Protocol", p.parse().unwrap());
        }
        Ok(resp)
    };
    let config = WebSocketConfig::default().max_message_size(None).max_frame_size(None);
    let mut ws = match tungstenite::accept_hdr_with_config(stream, callback, Some(config)) {
        Ok(ws) => ws,
        Err(_) => {
            let _ = events.send(Event::Gone { conn, at: Instant::now() });
            return;
        }
    };
    let _ = events.send(Event::Upgraded { conn, user_agent, protocol, at: Instant::now() });
    // Event-driven from here: poll(2) on the socket and on a wake pipe that `send` writes to,
    // so the gateway adds no latency of its own to what the benchmark measures.
    let _ = ws.get_ref().sock.set_nonblocking(true);
    let (waker, wake_rx) = rig_agent::os::wake::pair().expect("wake pipe");
    let (out_tx, out_rx) = mpsc::channel();
    outboxes.lock().unwrap().insert(conn, (out_tx, waker));
    let outcome = converse(conn, &mut ws, &script, &out_rx, &wake_rx, &stop, &events);
    if outcome == Outcome::Deaf {
        // Never read again; keep sending what the test queues, and a ping every 100 ms,
        // until the agent gives up on us (the writes fail).
        'deaf: while !stop.load(Ordering::SeqCst) {
            let mut frames: Vec<Message> = out_rx.try_iter().collect();
            frames.push(Message::Ping(Vec::new().into()));
            for f in frames {
                match ws.write(f) {
                    Ok(()) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => break 'deaf,
                }
            }
            match ws.flush() {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    outboxes.lock().unwrap().remove(&conn);
    if outcome == Outcome::Blackhole {
        // Half-open: hold the socket, neither read nor write, until the test ends.
        while !stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = events.send(Event::Gone { conn, at: Instant::now() });
}

/// Writes `first`, then `next()` every `every`, until the peer is gone or the test ends.
fn trickle(out: &mut impl Write, first: &[u8], every: Duration, stop: &AtomicBool, mut next: impl FnMut() -> Vec<u8>) {
    let mut chunk = first.to_vec();
    while !stop.load(Ordering::SeqCst) {
        if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
            return;
        }
        thread::sleep(every);
        chunk = next();
    }
}

#[derive(PartialEq)]
enum Outcome {
    Over,
    Blackhole,
    Deaf,
}

type Ws = WebSocket<StreamOwned<ServerConnection, TcpStream>>;

fn converse(
    conn: usize,
    ws: &mut Ws,
    script: &Mutex<Script>,
    outbox: &Receiver<Message>,
    wake: &WakeReceiver,
    stop: &AtomicBool,
    events: &Sender<Event>,
) -> Outcome {
    // The login answer and what to do after it, as the script said when the login arrived.
    let mut login_due: Option<(Instant, Value, Script)> = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Outcome::Over;
        }
        // A due login return goes before anything the test queued: a real gateway answers
        // the login before it forwards queries to the rig.
        if let Some((due, answer, s)) = login_due.take() {
            if Instant::now() < due {
                login_due = Some((due, answer, s));
            } else {
                let _ = events.send(Event::Sent { conn, msg: answer.clone(), at: Instant::now() });
                if !send(conn, ws, Message::text(answer.to_string())) {
                    return Outcome::Over;
                }
                if s.blackhole_after_login {
                    return Outcome::Blackhole;
                }
                if s.deaf_after_login {
                    return Outcome::Deaf;
                }
                if s.drop_after_login {
                    return Outcome::Over;
                }
            }
        }
        while let Ok(msg) = outbox.try_recv() {
            // A peer that stops reading (as the agent does after an oversized message) must
            // not keep this loop from reading its close frame: unsent data waits in the buffer.
            match ws.write(msg) {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if retry(&e) => {}
                Err(e) => return gone(conn, "writing a queued frame", &e),
            }
        }
        let write_blocked = match ws.flush() {
            Ok(()) => false,
            Err(tungstenite::Error::Io(e)) if retry(&e) => true,
            Err(e) => return gone(conn, "flushing", &e),
        };
        let msg = match ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e)) if retry(&e) => {
                let timeout = match &login_due {
                    Some((due, _, _)) => due.saturating_duration_since(Instant::now()),
                    None => Duration::from_millis(50), // to notice `stop`
                };
                let interest = if write_blocked { Interest::ReadableOrWritable } else { Interest::Readable };
                wake.wait(Some((ws.get_ref().sock.as_fd(), interest)), Some(timeout));
                continue;
            }
            // The agent went away (closed, reset, killed): its own tests say whether it should.
            Err(_) => return Outcome::Over,
        };
        let at = Instant::now();
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or_else(|_| Value::String(t.to_string()));
                // Read the script before reporting the message: a test that changes the script
                // on seeing this message means the next one.
                let s = script.lock().unwrap().clone();
                let _ = events.send(Event::Received { conn, msg: v.clone(), at });
                let act = v.get("act").and_then(Value::as_str).unwrap_or("");
                let ret = |action: &str, code: i64, description: &str| {
                    json!({"act": "return", "action": action, "act_id": v["act_id"], "act_code": "",
                           "hardware_id": v["hardware_id"], "code": code, "description": description})
                };
                match act {
                    "start" => {
                        let rejected = s.reject_token.is_some() && v["token"].as_str() == s.reject_token.as_deref();
                        let answer = if rejected {
                            ret("start", 4, "token invalid")
                        } else {
                            ret("start", s.login_code, &s.login_description)
                        };
                        login_due = Some((at + s.login_delay, answer, s.clone()))
                    }
                    "heartbeat"
                        if s.answer_heartbeats
                            && !send(conn, ws, Message::text(ret("heartbeat", 0, "操作成功").to_string())) =>
                    {
                        return Outcome::Over;
                    }
                    // Action and update results, the ends of episodes and recovery reports
                    // travel the same outbox and are acknowledged alike.
                    "warning" | "action_result" | "update_result" | "warning_cleared" | "recovery" => {
                        if let Some(code) = s.warning_ack
                            && !send(conn, ws, Message::text(ret(act, code, "ok").to_string()))
                        {
                            return Outcome::Over;
                        }
                    }
                    _ => {}
                }
            }
            Message::Binary(_) => {
                let _ = events.send(Event::Binary { conn, at });
            }
            Message::Close(frame) => {
                let _ = events.send(Event::Closed { conn, code: frame.map(|f| u16::from(f.code)), at });
                // tungstenite answers the close; flush it and finish.
                let _ = ws.flush();
                return Outcome::Over;
            }
            _ => {}
        }
    }
}

/// Queues a frame and pushes out what the socket takes; `false` when the connection is
/// unusable. A full socket (WouldBlock) is not a failure: the frame waits in the buffer.
fn send(conn: usize, ws: &mut Ws, msg: Message) -> bool {
    match ws.send(msg) {
        Ok(()) => true,
        Err(tungstenite::Error::Io(e)) if retry(&e) => true,
        Err(e) => {
            gone(conn, "sending a return", &e);
            false
        }
    }
}

/// A socket error that means "not now", not "gone": a full or empty non-blocking socket,
/// or a call interrupted by a signal (which qemu-user, running the ARM tests, lets through).
fn retry(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

/// Says on the test's stderr why the test gateway ended a connection on an error of its
/// own sending side: when a test sees the agent reconnect, this tells a gateway fault from
/// the agent's. (A failed read is the agent going away, said by its own tests.)
fn gone(conn: usize, doing: &str, e: &tungstenite::Error) -> Outcome {
    eprintln!("[test gateway] connection {conn} ended {doing}: {e}");
    Outcome::Over
}

/// A bound on lateness, scaled by `RIG_AGENT_TEST_SLOWDOWN` (default 1): under qemu-user
/// the whole test process, the test gateway included, runs several times slower, so a
/// lateness measured at the gateway says as much about the emulator as about the agent.
/// The bound stays tight enough to catch a socket loop starved by the work it waits on.
pub fn slack(bound: Duration) -> Duration {
    let factor = std::env::var("RIG_AGENT_TEST_SLOWDOWN").ok().and_then(|f| f.parse::<u32>().ok());
    bound * factor.unwrap_or(1).clamp(1, 20)
}
