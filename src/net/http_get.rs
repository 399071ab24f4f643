//! A small HTTP/1.1 GET for an update's download: `http://` or `https://` (verified with the
//! rig's gateway trust anchors), status line and headers bounded, `Content-Length` or the
//! body up to the connection's end, `Range` to resume, a few redirects. Bounded in bytes
//! (never more than the expected size is written) and in time (one overall deadline, and a
//! connection silent for [`IDLE`] counts as cut short).
//!
//! Hand-written rather than a crate: a GET of one file is about 300 lines, where ureq or
//! reqwest would bring a second HTTP stack, a URL crate and their TLS glue into a binary
//! that already has rustls (docs/architecture.md, "Binary size").

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::config::proxy::ProxyPolicy;
use crate::net::abort::Abort;
use crate::net::stream::Sock;
use crate::protocol::escape::escape;

/// A connection silent this long is cut short.
pub const IDLE: Duration = Duration::from_secs(10);
/// The status line and headers together.
const MAX_HEAD: usize = 16 * 1024;
/// Redirects followed, in all.
pub const MAX_REDIRECTS: usize = 3;
/// Attempts after the first for a transfer cut short.
pub const RETRIES: usize = 2;

/// An `http://` or `https://` URL, as this client uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// `http://host[:port]/path` or `https://…`; no user info, no fragment, printable ASCII.
    pub fn parse(s: &str) -> Result<HttpUrl, String> {
        if s.len() > 2048 || !s.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err("not a URL of printable ASCII without spaces".into());
        }
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("neither https:// nor http://".into());
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err("user info in a URL is not taken".into());
        }
        let default = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unclosed [")?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| "bad port")?,
                None if after.is_empty() => default,
                None => return Err("junk after ]".into()),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| "bad port")?),
                None => (authority.to_string(), default),
            }
        };
        if host.is_empty() || port == 0 {
            return Err("no host or port".into());
        }
        Ok(HttpUrl { tls, host, port, path })
    }

    /// Where a redirect's `Location` points from here: absolute, or a path on this server.
    fn join(&self, location: &str) -> Result<HttpUrl, String> {
        if location.starts_with('/') && !location.starts_with("//") {
            return HttpUrl::parse(&format!("{}://{}{location}", self.scheme(), self.authority()));
        }
        HttpUrl::parse(location)
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// For logs and `update_result.detail` (the URL is the console's): escaped and cut at
/// 200 characters with `…`, host and path alike (a host may be 2 KB of printable ASCII).
impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(&format!("{}://{}{}", self.scheme(), self.authority(), self.path)))
    }
}

/// Why a download did not complete.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// The server answered an error status, or an answer this client does not take: final.
    #[error("{0}")]
    Refused(String),
    /// The transfer ended early (connection closed or silent, server unreachable): worth
    /// another attempt.
    #[error("{0}")]
    CutShort(String),
    /// The overall time limit passed: final.
    #[error("the download did not finish within its time limit ({0:?})")]
    TimedOut(Duration),
    /// Writing the file failed (the state disk is full or read-only): the rig's fault.
    #[error("cannot write the download: {0}")]
    Disk(io::Error),
}

/// What a download may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The exact size expected: a body that would go past it is refused.
    pub size: u64,
    /// The whole download, every attempt and redirect.
    pub total: Duration,
}

impl Limits {
    /// 10 s plus 1 s per 64 KiB: a 2.5 MB build gets about 50 s, 64 MiB about 17 min.
    pub fn for_size(size: u64) -> Limits {
        Limits { size, total: Duration::from_secs(10 + size / (64 * 1024)) }
    }
}

/// The connection, over a socket bounded by the download's deadline and [`IDLE`] at every
/// read and write: rustls loops over many socket reads for one record or the handshake, and
/// a server trickling a byte at a time would otherwise hold one `read` for hours.
enum Conn {
    Plain(Sock),
    Tls(Box<StreamOwned<ClientConnection, Sock>>),
}

impl Conn {
    fn sock(&mut self) -> &mut Sock {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &mut s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// Downloads `url` into `file` (from its start), exactly `limits.size` bytes, reaching the
/// server as the gateway is reached: through the rig's proxy when `proxy` chooses one (TLS
/// stays end to end with the server). Returns the bytes received over the network in all
/// (more than the size when an attempt restarted).
pub fn download(
    url: &HttpUrl,
    tls: &Arc<ClientConfig>,
    proxy: &ProxyPolicy,
    file: &mut File,
    limits: Limits,
) -> Result<u64, GetError> {
    let deadline = Instant::now() + limits.total;
    let mut url = url.clone();
    let (mut have, mut received, mut redirects, mut retries) = (0u64, 0u64, 0usize, 0usize);
    let mut ranges = false;
    loop {
        let attempt = get_once(&url, tls, proxy, file, have, ranges, limits.size, deadline, &mut received);
        match attempt {
            Ok(Step::Done) => return Ok(received),
            Ok(Step::Redirect(to)) => {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(GetError::Refused(format!("more than {MAX_REDIRECTS} redirects")));
                }
                url = url.join(&to).map_err(|why| GetError::Refused(format!("redirect to a bad URL: {why}")))?;
            }
            Err((GetError::CutShort(why), got, resumable)) => {
                have = got;
                ranges = resumable;
                if Instant::now() >= deadline {
                    return Err(GetError::TimedOut(limits.total));
                }
                retries += 1;
                if retries > RETRIES {
                    return Err(GetError::CutShort(format!("{why} (after {RETRIES} retries)")));
                }
                log::info!("update download from {url} cut short at {have} bytes ({why}); retrying");
            }
            Err((e, _, _)) => return Err(e),
        }
    }
}

enum Step {
    Done,
    Redirect(String),
}

/// One GET. On error: the error, how many bytes the file holds now, and whether the server
/// takes ranges.
#[allow(clippy::too_many_arguments)]
fn get_once(
    url: &HttpUrl,
    tls: &Arc<ClientConfig>,
    proxy: &ProxyPolicy,
    file: &mut File,
    have: u64,
    ranges: bool,
    size: u64,
    deadline: Instant,
    received: &mut u64,
) -> Result<Step, (GetError, u64, bool)> {
    let left = || deadline.saturating_duration_since(Instant::now());
    let cut = |why: String, got: u64, r: bool| (GetError::CutShort(why), got, r);
    let timeout = left().min(IDLE);
    if timeout.is_zero() {
        return Err((GetError::TimedOut(Duration::ZERO), have, ranges));
    }
    let route = proxy.choose(&url.host, url.port, url.tls);
    let tcp = crate::net::dial(&url.host, url.port, &route, Instant::now() + timeout, &Abort::default())
        .map_err(|e| cut(format!("cannot connect to {url}: {e}"), have, ranges))?;
    let tcp = Sock::with_idle(tcp, deadline, IDLE);
    let mut conn = if url.tls {
        let name = ServerName::try_from(url.host.clone())
            .map_err(|e| (GetError::Refused(format!("bad server name: {e}")), have, ranges))?;
        let c = ClientConnection::new(Arc::clone(tls), name)
            .map_err(|e| (GetError::Refused(e.to_string()), have, ranges))?;
        Conn::Tls(Box::new(StreamOwned::new(c, tcp)))
    } else {
        Conn::Plain(tcp)
    };
    let range = if ranges && have > 0 { format!("Range: bytes={have}-\r\n") } else { String::new() };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: rig-agent/{}\r\nAccept-Encoding: identity\r\nConnection: close\r\n{range}\r\n",
        url.path,
        if url.port == if url.tls { 443 } else { 80 } { url.host.clone() } else { url.authority() },
        crate::version()
    );
    let io_err = |e: io::Error, got: u64| -> (GetError, u64, bool) {
        if let Some(tls_err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return (
                GetError::Refused(format!("TLS with {}: {}", escape(&url.host), escape(&tls_err.to_string()))),
                got,
                ranges,
            );
        }
        cut(format!("{url}: {e}"), got, ranges)
    };
    conn.write_all(request.as_bytes()).and_then(|_| conn.flush()).map_err(|e| io_err(e, have))?;
    // Interim (1xx) answers come before the final one (RFC 9110 §15.2: a client must take
    // them even unasked); all of them together are bounded as one head is.
    let (mut pending, mut spent) = (Vec::new(), 0);
    let (head, mut body_start) = loop {
        let (raw, rest) =
            read_head(&mut conn, deadline, pending, MAX_HEAD.saturating_sub(spent)).map_err(|e| io_err(e, have))?;
        let head = parse_head(&raw).map_err(|why| (GetError::Refused(format!("{url}: {why}")), have, ranges))?;
        if !matches!(head.status, 100 | 102..=199) {
            break (head, rest);
        }
        spent += raw.len();
        pending = rest;
    };
    let takes_ranges = head.accept_ranges || head.status == 206;
    let start = match head.status {
        200 => 0,
        206 if ranges && have > 0 => {
            if head.range_start != Some(have) {
                return Err((GetError::Refused(format!("{url}: 206 for another range than asked")), have, ranges));
            }
            have
        }
        301 | 302 | 303 | 307 | 308 => {
            let to =
                head.location.ok_or((GetError::Refused(format!("{url}: redirect without Location")), have, ranges))?;
            return Ok(Step::Redirect(to));
        }
        s => return Err((GetError::Refused(format!("{url} answered HTTP {s}")), have, ranges)),
    };
    // Checked: after a resume, a length near u64::MAX plus the bytes already here overflows.
    if let Some(len) = head.content_length
        && start.checked_add(len) != Some(size)
    {
        let total = start.checked_add(len).map_or_else(|| format!("{start} + {len}"), |t| t.to_string());
        return Err((GetError::Refused(format!("{url} announces {total} bytes, the offer says {size}")), have, ranges));
    }
    if head.chunked {
        return Err((GetError::Refused(format!("{url}: chunked transfer coding is not taken")), have, ranges));
    }
    let disk = |e: io::Error, got: u64| (GetError::Disk(e), got, takes_ranges);
    file.set_len(start).map_err(|e| disk(e, have))?;
    file.seek(SeekFrom::Start(start)).map_err(|e| disk(e, have))?;
    let mut got = start;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !body_start.is_empty() {
            if got + body_start.len() as u64 > size {
                return Err((GetError::Refused(format!("{url} sent more than the {size} bytes offered")), got, false));
            }
            file.write_all(&body_start).map_err(|e| disk(e, got))?;
            got += body_start.len() as u64;
            *received += body_start.len() as u64;
            body_start.clear();
        }
        if got == size {
            // Anything more, right now, is a server sending past what it announced.
            conn.sock().shorten(Instant::now() + Duration::from_millis(50));
            return match conn.read(&mut buf[..1]) {
                Ok(n) if n > 0 => {
                    Err((GetError::Refused(format!("{url} sent more than the {size} bytes offered")), got, false))
                }
                _ => Ok(Step::Done),
            };
        }
        if left().is_zero() {
            return Err((GetError::TimedOut(Duration::ZERO), got, takes_ranges));
        }
        match conn.read(&mut buf) {
            Ok(0) => {
                return Err(cut(format!("{url} closed the connection at {got} of {size} bytes"), got, takes_ranges));
            }
            Ok(n) => body_start.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if left().is_zero() {
                    return Err((GetError::TimedOut(Duration::ZERO), got, takes_ranges));
                }
                return Err(cut(format!("{url} was silent for {IDLE:?} at {got} of {size} bytes"), got, takes_ranges));
            }
            Err(e) => return Err((io_err(e, got).0, got, takes_ranges)),
        }
    }
}

/// The status line and headers (at most `max` bytes), and what came after them; `buf` is
/// what was read already.
fn read_head(conn: &mut Conn, deadline: Instant, mut buf: Vec<u8>, max: usize) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut chunk = [0u8; 4096];
    loop {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|e| e + 4);
        if let Some(end) = end
            && end <= max
        {
            let body = buf.split_off(end);
            return Ok((buf, body));
        }
        if end.is_some() || buf.len() > max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("headers longer than {MAX_HEAD} bytes")));
        }
        if deadline <= Instant::now() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
        }
        match conn.read(&mut chunk)? {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the headers ended")),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: Option<u64>,
    location: Option<String>,
    accept_ranges: bool,
    range_start: Option<u64>,
    chunked: bool,
}

fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(head).map_err(|_| "headers are not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.splitn(3, ' ');
    let version = words.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 answer: \"{}\"", escape(&status_line.chars().take(80).collect::<String>())));
    }
    let status = words.next().and_then(|s| s.parse().ok()).ok_or("no status code")?;
    let mut h = Head { status, ..Head::default() };
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else { return Err("a header line without a colon".into()) };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => {
                let n = value.parse().map_err(|_| "Content-Length is not a number")?;
                if h.content_length.is_some_and(|m| m != n) {
                    return Err("two different Content-Length".into());
                }
                h.content_length = Some(n);
            }
            "location" => h.location = Some(value.to_string()),
            "accept-ranges" => h.accept_ranges = value.eq_ignore_ascii_case("bytes"),
            "content-range" => {
                h.range_start =
                    value.strip_prefix("bytes ").and_then(|r| r.split('-').next()).and_then(|s| s.parse().ok())
            }
            "transfer-encoding" => h.chunked = !value.eq_ignore_ascii_case("identity"),
            _ => {}
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_http_and_https_with_ports_and_paths_and_nothing_else() {
        let u = HttpUrl::parse("https://mirror.example:8443/a/b?c=d#frag").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.path.as_str()), (true, "mirror.example", 8443, "/a/b?c=d"));
        let u = HttpUrl::parse("http://[::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        assert_eq!(HttpUrl::parse("http://h").unwrap().path, "/");
        for bad in ["ftp://h/x", "http://", "http://u:p@h/", "http://h:0/", "http://h:x/", "http://h/a b", "file:///x"]
        {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
        let base = HttpUrl::parse("https://h:1/a").unwrap();
        assert_eq!(base.join("/b").unwrap().to_string(), "https://h:1/b");
        assert_eq!(base.join("http://o/c").unwrap().to_string(), "http://o:80/c");
    }

    #[test]
    fn a_url_is_shown_cut_at_200_characters_with_an_ellipsis_host_and_path_alike() {
        let short = HttpUrl::parse("https://mirror.example/a/b?c=d").unwrap();
        assert_eq!(short.to_string(), "https://mirror.example:443/a/b?c=d");
        let host = "h".repeat(2000);
        let long_host = HttpUrl::parse(&format!("https://{host}/x")).unwrap();
        assert_eq!(long_host.host.len(), 2000, "parsed whole: only its display is cut");
        let shown = long_host.to_string();
        assert_eq!(shown, format!("https://{}…", &host[..192]));
        assert_eq!(shown.chars().count(), 201);
        let long_path = HttpUrl::parse(&format!("http://h/{}", "p".repeat(2000))).unwrap();
        assert_eq!(long_path.to_string().chars().count(), 201);
        assert!(long_path.to_string().starts_with("http://h:80/ppp"));
    }

    #[test]
    fn headers_give_status_length_ranges_and_location() {
        let h = parse_head(
            b"HTTP/1.1 206 Partial\r\nContent-Length: 5\r\nContent-Range: bytes 10-14/15\r\nAccept-Ranges: bytes\r\n",
        )
        .unwrap();
        assert_eq!((h.status, h.content_length, h.range_start, h.accept_ranges), (206, Some(5), Some(10), true));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n").is_err());
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n").is_err());
    }
}
