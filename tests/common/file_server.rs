//! A file server for update downloads, over HTTPS (the test PKI) or plain HTTP, that can
//! also misbehave the ways a hostile or broken mirror does: cut the transfer short, trickle,
//! never end, send more than it announces, announce a huge length, redirect, answer an
//! error status. Records each request line and the body bytes it sent.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// How the server answers.
#[derive(Debug, Clone)]
pub enum Serve {
    /// 200 and the whole file; `Range` honoured with 206.
    Whole,
    /// The first request is cut (connection closed) after this many body bytes; later ones
    /// are whole (or the asked range, when `ranges`).
    CutOnce { at: usize, ranges: bool },
    /// Every request is cut after this many body bytes.
    CutAlways(usize),
    /// One body byte per interval.
    Trickle(Duration),
    /// No length, and bytes without end.
    Endless,
    /// The file, then this many more bytes, no length announced.
    Extra(usize),
    /// Announces this length, sends the file.
    Length(u64),
    /// This status and no body.
    Status(u16),
    /// A redirect to this location (relative or absolute).
    Redirect(String),
    /// The whole file, every byte on the wire (TLS records included) one per interval: a
    /// slowloris that is never silent for long, but never finishes a TLS record either.
    WireTrickle(Duration),
    /// `100 Continue` and `102 Processing` (interim answers), then the whole file.
    Interim,
    /// The first request is cut after this many body bytes (ranges taken); a range asked
    /// after it is answered 206 with a `Content-Length` of `u64::MAX`.
    CutThenHugeRange(usize),
}

/// The socket, writing a byte at a time with `every` between them when set.
struct Wire {
    tcp: std::net::TcpStream,
    every: Option<Duration>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(every) = self.every else { return self.tcp.write(buf) };
        if buf.is_empty() {
            return Ok(0);
        }
        thread::sleep(every);
        self.tcp.write(&buf[..1])
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

pub struct FileServer {
    /// The URL of the file.
    pub url: String,
    pub port: u16,
    pub serve: Arc<Mutex<Serve>>,
    pub requests: Arc<Mutex<Vec<String>>>,
    pub sent: Arc<AtomicU64>,
    /// Requested paths other than the file's answer with this file instead (for redirects).
    pub body: Arc<Mutex<Vec<u8>>>,
}

impl FileServer {
    /// Serves `body` at `/rig-agent` over HTTPS with `tls`, or plain HTTP when `None`.
    pub fn start(tls: Option<Arc<ServerConfig>>, body: Vec<u8>, serve: Serve) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let scheme = if tls.is_some() { "https://localhost" } else { "http://127.0.0.1" };
        let s = FileServer {
            url: format!("{scheme}:{port}/rig-agent"),
            port,
            serve: Arc::new(Mutex::new(serve)),
            requests: Arc::default(),
            sent: Arc::default(),
            body: Arc::new(Mutex::new(body)),
        };
        let (serve, requests, sent, body) = (s.serve.clone(), s.requests.clone(), s.sent.clone(), s.body.clone());
        thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(tcp) = conn else { continue };
                let (serve, requests, sent, body, tls) =
                    (serve.clone(), requests.clone(), sent.clone(), body.clone(), tls.clone());
                thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
                    let _ = tcp.set_nodelay(true);
                    let how = serve.lock().unwrap().clone();
                    let body = body.lock().unwrap().clone();
                    let every = match how {
                        Serve::WireTrickle(every) => Some(every),
                        _ => None,
                    };
                    let tcp = Wire { tcp, every };
                    match tls {
                        Some(cfg) => {
                            let Ok(c) = ServerConnection::new(cfg) else { return };
                            answer(StreamOwned::new(c, tcp), n, how, &body, &requests, &sent)
                        }
                        None => answer(tcp, n, how, &body, &requests, &sent),
                    }
                });
            }
        });
        s
    }

    pub fn set(&self, serve: Serve) {
        *self.serve.lock().unwrap() = serve;
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn answer<S: Read + Write>(
    mut s: S,
    n: usize,
    how: Serve,
    body: &[u8],
    requests: &Mutex<Vec<String>>,
    sent: &AtomicU64,
) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    requests.lock().unwrap().push(head.clone());
    let range: Option<usize> =
        head.lines().find_map(|l| l.strip_prefix("Range: bytes=")).and_then(|r| r.trim_end_matches('-').parse().ok());
    let mut send = |bytes: &[u8]| -> bool {
        sent.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        s.write_all(bytes).and_then(|_| s.flush()).is_ok()
    };
    let whole = |ranges: bool, cut: Option<usize>, send: &mut dyn FnMut(&[u8]) -> bool| {
        let (status, from) = match range {
            Some(r) if ranges && r < body.len() => ("206 Partial Content", r),
            _ => ("200 OK", 0),
        };
        let mut h = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len() - from);
        if ranges {
            h += "Accept-Ranges: bytes\r\n";
        }
        if from > 0 {
            h += &format!("Content-Range: bytes {from}-{}/{}\r\n", body.len() - 1, body.len());
        }
        h += "\r\n";
        let _ = send(h.as_bytes()) && send(&body[from..cut.map_or(body.len(), |c| (from + c).min(body.len()))]);
    };
    match how {
        Serve::Whole | Serve::WireTrickle(_) => whole(true, None, &mut send),
        Serve::CutThenHugeRange(at) if n == 0 => whole(true, Some(at), &mut send),
        Serve::CutThenHugeRange(_) => {
            let from = range.unwrap_or(0);
            let h = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\n\r\n",
                u64::MAX,
                body.len() - 1,
                body.len()
            );
            let _ = send(h.as_bytes()) && send(&body[from..]);
        }
        Serve::Interim => {
            if send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX-A: b\r\n\r\n") {
                whole(true, None, &mut send)
            }
        }
        Serve::CutOnce { at, ranges } => whole(ranges, (n == 0).then_some(at), &mut send),
        Serve::CutAlways(at) => whole(false, Some(at), &mut send),
        Serve::Trickle(every) => {
            if send(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes()) {
                for byte in body {
                    thread::sleep(every);
                    if !send(std::slice::from_ref(byte)) {
                        return;
                    }
                }
            }
        }
        Serve::Endless => {
            if send(b"HTTP/1.1 200 OK\r\n\r\n") {
                let junk = vec![0x55u8; 64 * 1024];
                while send(&junk) {}
            }
        }
        Serve::Extra(more) => {
            let _ = send(b"HTTP/1.1 200 OK\r\n\r\n") && send(body) && send(&vec![0u8; more]);
        }
        Serve::Length(len) => {
            let _ = send(format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes()) && send(body);
        }
        Serve::Status(code) => {
            let _ = send(format!("HTTP/1.1 {code} Nope\r\nContent-Length: 0\r\n\r\n").as_bytes());
        }
        Serve::Redirect(to) => {
            let _ = send(format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n").as_bytes());
        }
    }
}
