//! Real proxies for tests and the connect benchmark: an HTTP CONNECT proxy and a SOCKS5
//! proxy on 127.0.0.1:0, each with optional credentials, scriptable (tunnel, refuse with an
//! HTTP status or a SOCKS reply code, answer garbage, say nothing, trickle the answer a byte
//! at a time, die in the middle of the tunnel) and recording what they were asked and what
//! went through them.
//!
//! Shared by `tests/` and `examples/` (through `#[path]`).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// Which protocol the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
    Socks5,
}

/// What the proxy answers a well-formed, authenticated request with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Opens the tunnel (or, when the target refuses, 502 / SOCKS reply 5, as real ones do).
    Tunnel,
    /// HTTP: this status and reason (403, 502...).
    Status(u16, &'static str),
    /// SOCKS5: this reply code (1 to 8).
    SocksReply(u8),
    /// These bytes, then the connection is closed.
    Garbage(Vec<u8>),
    /// Nothing, ever (the connection stays open until the client goes).
    Silent,
}

/// How the proxy behaves; change it at any time with [`Proxy::set`].
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub credentials: Option<(String, String)>,
    pub answer: Answer,
    /// Its answer (status line, or SOCKS messages) sent one byte per this interval.
    pub trickle: Option<Duration>,
    /// The tunnel is cut (both ways) after this many bytes from the target to the client.
    pub die_after: Option<usize>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour { credentials: None, answer: Answer::Tunnel, trickle: None, die_after: None }
    }
}

/// What the proxy saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Every request: `CONNECT localhost:4431` (HTTP), `name localhost:4431` or
    /// `addr 127.0.0.1:4431` (SOCKS5).
    pub requests: Vec<String>,
    /// Per request, whether it came with the right credentials (`None`: none were asked).
    pub authenticated: Vec<Option<bool>>,
    /// Every byte the clients sent into tunnels, in order (at most 1 MiB).
    pub tunneled: Vec<u8>,
    /// Tunnels opened.
    pub tunnels: usize,
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub kind: Kind,
    behaviour: Arc<Mutex<Behaviour>>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    /// Every socket it holds, shut down when it is dropped.
    live: Arc<Mutex<Vec<TcpStream>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Proxy {
    pub fn start(kind: Kind, behaviour: Behaviour) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            kind,
            behaviour: Arc::new(Mutex::new(behaviour)),
            seen: Arc::default(),
            stop: Arc::default(),
            live: Arc::default(),
        };
        let (b, seen, stop, live) =
            (Arc::clone(&proxy.behaviour), Arc::clone(&proxy.seen), Arc::clone(&proxy.stop), Arc::clone(&proxy.live));
        thread::Builder::new()
            .name("test-proxy".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    // As a proxy that relays interactive traffic should: no Nagle delay on
                    // the small TLS records it forwards.
                    let _ = client.set_nodelay(true);
                    if let Ok(c) = client.try_clone() {
                        lock(&live).push(c);
                    }
                    let (b, seen, live) = (lock(&b).clone(), Arc::clone(&seen), Arc::clone(&live));
                    thread::spawn(move || {
                        let held = client.try_clone();
                        let _ = match kind {
                            Kind::Http => serve_http(client, &b, &seen, &live),
                            Kind::Socks5 => serve_socks(client, &b, &seen, &live),
                        };
                        // Done with it: closed, though `live` holds a second handle.
                        if let Ok(c) = held {
                            let _ = c.shutdown(Shutdown::Both);
                        }
                    });
                }
            })
            .unwrap();
        proxy
    }

    /// The proxy's URL for `gateway.proxy` or `https_proxy`, with its credentials.
    pub fn url(&self) -> String {
        let scheme = match self.kind {
            Kind::Http => "http",
            Kind::Socks5 => "socks5h",
        };
        match &lock(&self.behaviour).credentials {
            Some((u, p)) => format!("{scheme}://{u}:{p}@{}", self.addr),
            None => format!("{scheme}://{}", self.addr),
        }
    }

    pub fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut lock(&self.behaviour));
    }

    pub fn seen(&self) -> Seen {
        lock(&self.seen).clone()
    }

    /// Cuts every connection it holds now (a proxy restart).
    pub fn cut_all(&self) {
        for s in lock(&self.live).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        self.cut_all();
    }
}

fn send(s: &mut TcpStream, bytes: &[u8], b: &Behaviour) -> std::io::Result<()> {
    match b.trickle {
        None => s.write_all(bytes),
        Some(every) => {
            for byte in bytes {
                s.write_all(&[*byte])?;
                thread::sleep(every);
            }
            Ok(())
        }
    }
}

fn serve_http(
    mut c: TcpStream,
    b: &Behaviour,
    seen: &Arc<Mutex<Seen>>,
    live: &Mutex<Vec<TcpStream>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if c.read(&mut byte)? == 0 || head.len() > 16 << 10 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let request = text.lines().next().unwrap_or_default();
    let target = request.strip_prefix("CONNECT ").and_then(|r| r.split_whitespace().next()).unwrap_or("").to_string();
    let auth = b.credentials.as_ref().map(|(u, p)| {
        let want = format!("proxy-authorization: basic {}", base64(format!("{u}:{p}").as_bytes())).to_lowercase();
        text.lines().any(|l| l.to_lowercase() == want)
    });
    {
        let mut s = lock(seen);
        s.requests.push(format!("CONNECT {target}"));
        s.authenticated.push(auth);
    }
    if auth == Some(false) {
        let reply = b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n";
        return send(&mut c, reply, b);
    }
    match &b.answer {
        Answer::Tunnel => match connect(&target) {
            Some(up) => {
                send(&mut c, b"HTTP/1.1 200 Connection established\r\n\r\n", b)?;
                tunnel(c, up, b, seen, live);
                Ok(())
            }
            None => send(&mut c, b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", b),
        },
        Answer::Status(code, reason) => {
            send(&mut c, format!("HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\n\r\n").as_bytes(), b)
        }
        Answer::SocksReply(code) => send(&mut c, &[5, *code, 0, 1, 0, 0, 0, 0, 0, 0], b),
        Answer::Garbage(bytes) => send(&mut c, bytes, b),
        Answer::Silent => {
            let _ = c.read(&mut [0u8; 1]);
            Ok(())
        }
    }
}

fn serve_socks(
    mut c: TcpStream,
    b: &Behaviour,
    seen: &Arc<Mutex<Seen>>,
    live: &Mutex<Vec<TcpStream>>,
) -> std::io::Result<()> {
    let mut greeting = [0u8; 2];
    c.read_exact(&mut greeting)?;
    if greeting[0] != 5 {
        // As dante does: not SOCKS5, closed.
        lock(seen).requests.push("not SOCKS5".into());
        return Ok(());
    }
    let mut methods = vec![0u8; usize::from(greeting[1])];
    c.read_exact(&mut methods)?;
    if let Answer::Garbage(bytes) = &b.answer {
        return send(&mut c, bytes, b);
    }
    if let Answer::Silent = &b.answer {
        let _ = c.read(&mut [0u8; 1]);
        return Ok(());
    }
    let auth = match &b.credentials {
        None => {
            send(&mut c, &[5, 0], b)?;
            None
        }
        Some(_) if !methods.contains(&2) => {
            lock(seen).authenticated.push(Some(false));
            lock(seen).requests.push("no acceptable method".into());
            return send(&mut c, &[5, 0xff], b);
        }
        Some((u, p)) => {
            send(&mut c, &[5, 2], b)?;
            let mut ver_len = [0u8; 2];
            c.read_exact(&mut ver_len)?;
            let mut user = vec![0u8; usize::from(ver_len[1])];
            c.read_exact(&mut user)?;
            let mut plen = [0u8; 1];
            c.read_exact(&mut plen)?;
            let mut pass = vec![0u8; usize::from(plen[0])];
            c.read_exact(&mut pass)?;
            let ok = user == u.as_bytes() && pass == p.as_bytes();
            send(&mut c, &[1, if ok { 0 } else { 1 }], b)?;
            if !ok {
                lock(seen).authenticated.push(Some(false));
                lock(seen).requests.push("bad credentials".into());
                return Ok(());
            }
            Some(true)
        }
    };
    let mut req = [0u8; 4];
    c.read_exact(&mut req)?;
    let (kind, host) = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            c.read_exact(&mut a)?;
            ("addr", std::net::Ipv4Addr::from(a).to_string())
        }
        4 => {
            let mut a = [0u8; 16];
            c.read_exact(&mut a)?;
            ("addr", format!("[{}]", std::net::Ipv6Addr::from(a)))
        }
        _ => {
            let mut len = [0u8; 1];
            c.read_exact(&mut len)?;
            let mut name = vec![0u8; usize::from(len[0])];
            c.read_exact(&mut name)?;
            ("name", String::from_utf8_lossy(&name).into_owned())
        }
    };
    let mut port = [0u8; 2];
    c.read_exact(&mut port)?;
    let target = format!("{host}:{}", u16::from_be_bytes(port));
    {
        let mut s = lock(seen);
        s.requests.push(format!("{kind} {target}"));
        s.authenticated.push(auth);
    }
    match &b.answer {
        Answer::Tunnel => match connect(&target) {
            Some(up) => {
                send(&mut c, &[5, 0, 0, 1, 127, 0, 0, 1, 0x10, 0x00], b)?;
                tunnel(c, up, b, seen, live);
                Ok(())
            }
            None => send(&mut c, &[5, 5, 0, 1, 0, 0, 0, 0, 0, 0], b),
        },
        Answer::SocksReply(code) => send(&mut c, &[5, *code, 0, 1, 0, 0, 0, 0, 0, 0], b),
        Answer::Status(code, reason) => send(&mut c, format!("HTTP/1.1 {code} {reason}\r\n\r\n").as_bytes(), b),
        Answer::Garbage(_) | Answer::Silent => Ok(()),
    }
}

fn connect(target: &str) -> Option<TcpStream> {
    let addrs: Vec<SocketAddr> = target.to_socket_addrs().ok()?.collect();
    let up = addrs.iter().find_map(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).ok())?;
    let _ = up.set_nodelay(true);
    Some(up)
}

/// Both ways until either side closes; the client's bytes are recorded; with `die_after`
/// the tunnel is cut after that many bytes from the target.
fn tunnel(client: TcpStream, up: TcpStream, b: &Behaviour, seen: &Arc<Mutex<Seen>>, live: &Mutex<Vec<TcpStream>>) {
    lock(seen).tunnels += 1;
    if let Ok(u) = up.try_clone() {
        lock(live).push(u);
    }
    let (mut c_in, mut u_out) = (client.try_clone().unwrap(), up.try_clone().unwrap());
    let seen_up = Arc::clone(seen);
    let forward = thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        while let Ok(n) = c_in.read(&mut buf) {
            if n == 0 || u_out.write_all(&buf[..n]).is_err() {
                break;
            }
            let mut s = lock(&seen_up);
            if s.tunneled.len() < 1 << 20 {
                s.tunneled.extend_from_slice(&buf[..n]);
            }
        }
        let _ = u_out.shutdown(Shutdown::Write);
    });
    let (mut u_in, mut c_out) = (up, client);
    let mut sent = 0usize;
    let mut buf = [0u8; 16 << 10];
    while let Ok(n) = u_in.read(&mut buf) {
        if n == 0 {
            break;
        }
        let n = match b.die_after {
            Some(limit) => n.min(limit.saturating_sub(sent)),
            None => n,
        };
        if n == 0 || c_out.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
        if b.die_after.is_some_and(|limit| sent >= limit) {
            break;
        }
    }
    let _ = c_out.shutdown(Shutdown::Both);
    let _ = u_in.shutdown(Shutdown::Both);
    let _ = forward.join();
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
