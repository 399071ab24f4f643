//! An HTTP CONNECT tunnel (RFC 9110 §9.3.6) through a proxy: the request, and the proxy's
//! answer read a byte at a time (never a byte of the tunnel after it), at most
//! [`MAX_REPLY`] bytes, within the attempt's deadline. The proxy sees only `CONNECT
//! host:port`; TLS to the gateway runs inside the tunnel afterwards.

use std::io::{Read, Write};

use data_encoding::BASE64;

use crate::config::proxy::ProxyUrl;
use crate::net::route::ProxyFailure;
use crate::net::stream::Sock;
use crate::protocol::escape::{escape_bytes, escape_to};

/// The most of the proxy's answer (status line and headers) read: ample for any proxy, and
/// a proxy that streams without end costs at most this.
pub(crate) const MAX_REPLY: usize = 8 << 10;

/// Opens the tunnel to `host:port` on `sock`, connected to `proxy`.
pub(crate) fn open(sock: &mut Sock, proxy: &ProxyUrl, host: &str, port: u16) -> Result<(), ProxyFailure> {
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let mut request =
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: rig-agent/{}\r\n", crate::version());
    if let Some(c) = &proxy.credentials {
        let basic = BASE64.encode(format!("{}:{}", c.user, c.password).as_bytes());
        request += &format!("Proxy-Authorization: Basic {basic}\r\n");
    }
    request += "\r\n";
    sock.write_all(request.as_bytes()).map_err(ProxyFailure::io)?;
    let secrets = match &proxy.credentials {
        Some(c) => vec![BASE64.encode(format!("{}:{}", c.user, c.password).as_bytes()), c.password.clone()],
        None => Vec::new(),
    };
    // Interim (1xx) answers come before the final one (RFC 9110 §15.2: a client must take
    // them even unasked); all of them together are bounded as one answer is.
    let mut left = MAX_REPLY;
    loop {
        let head = read_head(sock, &secrets, left)?;
        left -= head.len();
        if judge(&redact(head, &secrets), proxy.credentials.is_some())? == Answer::Final {
            return Ok(());
        }
    }
}

/// Whether the proxy's answer was the final one (the tunnel is open) or an interim 1xx.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Interim,
    Final,
}

/// `head` with every secret in it replaced by `***`: a proxy that echoes the request back
/// (in its reason phrase, a header, an error page) must not put the credentials in the log.
fn redact(mut head: Vec<u8>, secrets: &[String]) -> Vec<u8> {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let secret = secret.as_bytes();
        let mut out = Vec::with_capacity(head.len());
        let mut i = 0;
        while i < head.len() {
            if head[i..].starts_with(secret) {
                out.extend_from_slice(b"***");
                i += secret.len();
            } else {
                out.push(head[i]);
                i += 1;
            }
        }
        head = out;
    }
    head
}

/// The proxy's answer up to the blank line that ends its headers, at most `max` bytes.
fn read_head(sock: &mut Sock, secrets: &[String], max: usize) -> Result<Vec<u8>, ProxyFailure> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    loop {
        match sock.read(&mut byte) {
            Ok(0) if head.is_empty() => {
                return Err(ProxyFailure::Protocol(
                    "it closed the connection without answering the CONNECT request (a SOCKS proxy? then write \
                     socks5h://)"
                        .into(),
                ));
            }
            Ok(0) => {
                return Err(ProxyFailure::Protocol(format!(
                    "it closed the connection in the middle of its answer: \"{}\"",
                    escape_bytes(&redact(head, secrets), 120)
                )));
            }
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(ProxyFailure::io(e)),
        }
        // Five bytes tell a proxy that speaks no HTTP (an SSH banner, a SOCKS reply): no
        // need to wait for a blank line that will not come.
        if head.len() == 5 && &head[..] != b"HTTP/" {
            return Err(ProxyFailure::Protocol(format!(
                "it does not speak HTTP: it answered \"{}\"",
                escape_bytes(&redact(head, secrets), 40)
            )));
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(head);
        }
        if head.len() >= max {
            return Err(ProxyFailure::Protocol(format!("its answer has more than {MAX_REPLY} bytes of headers")));
        }
    }
}

/// What the proxy's status means: a 2xx opens the tunnel, a 1xx other than 101 is interim
/// (the final answer follows), 407 is about credentials, 502, 503 and 504 mean it could not
/// reach the gateway, and anything else is a refusal.
fn judge(head: &[u8], had_credentials: bool) -> Result<Answer, ProxyFailure> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => {
            return Err(ProxyFailure::Protocol(format!(
                "its answer is not valid HTTP: \"{}\"",
                escape_bytes(head, 120)
            )));
        }
    }
    let code = response.code.unwrap_or(0);
    let status = format!("{code} {}", escape_to(response.reason.unwrap_or(""), 80));
    match code {
        200..=299 => Ok(Answer::Final),
        100 | 102..=199 => Ok(Answer::Interim),
        407 if had_credentials => Err(ProxyFailure::Auth(format!("it refused the user and password given ({status})"))),
        407 => Err(ProxyFailure::Auth(format!("it wants a user and password and none is given ({status})"))),
        502..=504 => Err(ProxyFailure::CannotReach(status)),
        _ => Err(ProxyFailure::Refused(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxys_status_decides_the_outcome() {
        assert!(judge(b"HTTP/1.0 200 Connection established\r\n\r\n", false).is_ok());
        assert!(judge(b"HTTP/1.1 200 OK\r\nProxy-Agent: x\r\n\r\n", false).is_ok());
        assert_eq!(judge(b"HTTP/1.1 100 Continue\r\n\r\n", false), Ok(Answer::Interim));
        assert!(matches!(judge(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false), Err(ProxyFailure::Refused(_))));
        let auth = judge(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", true).unwrap_err();
        assert_eq!(
            auth,
            ProxyFailure::Auth("it refused the user and password given (407 Proxy Authentication Required)".into())
        );
        assert!(
            matches!(judge(b"HTTP/1.1 407 x\r\n\r\n", false), Err(ProxyFailure::Auth(w)) if w.contains("none is given"))
        );
        assert_eq!(judge(b"HTTP/1.1 403 Forbidden\r\n\r\n", false), Err(ProxyFailure::Refused("403 Forbidden".into())));
        assert_eq!(
            judge(b"HTTP/1.1 502 Bad Gateway\r\n\r\n", false),
            Err(ProxyFailure::CannotReach("502 Bad Gateway".into()))
        );
        let evil = judge(b"HTTP/1.1 403 no\x1b[31m\r\n\r\n", false).unwrap_err();
        let ProxyFailure::Protocol(shown) = evil else { panic!("{evil:?}") };
        assert!(shown.contains("403 no\\x1b[31m\\r\\n"), "the proxy's bytes are escaped: {shown}");
        assert!(matches!(judge(b"HTTP/1.1 abc\r\n\r\n", false), Err(ProxyFailure::Protocol(_))));
    }

    #[test]
    fn a_proxy_that_echoes_the_credentials_does_not_get_them_logged() {
        let secrets = ["cmlnOnMzY3JldA==".to_string(), "s3cret".to_string()];
        let echo = b"HTTP/1.1 400 Proxy-Authorization: Basic cmlnOnMzY3JldA== s3cret\r\n\r\n".to_vec();
        let Err(ProxyFailure::Refused(shown)) = judge(&redact(echo, &secrets), true) else { panic!() };
        assert_eq!(shown, "400 Proxy-Authorization: Basic *** ***");
    }
}
