//! A SOCKS5 CONNECT (RFC 1928) through a proxy, with user and password (RFC 1929) when the
//! proxy URL has them: fixed-size messages read exactly, within the attempt's deadline.

use std::io::{self, Read, Write};
use std::net::IpAddr;

use crate::config::proxy::ProxyUrl;
use crate::net::route::ProxyFailure;
use crate::net::stream::Sock;
use crate::protocol::escape::escape_bytes;

/// Where the proxy is asked to connect: a name it resolves (`socks5h://`), or an address
/// the agent resolved (`socks5://`).
pub(crate) enum Destination<'a> {
    Name(&'a str),
    Addr(IpAddr),
}

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const USER_PASSWORD: u8 = 2;
const NO_ACCEPTABLE: u8 = 0xff;

/// Asks the proxy on `sock` to connect to `to:port`.
pub(crate) fn open(sock: &mut Sock, proxy: &ProxyUrl, to: Destination, port: u16) -> Result<(), ProxyFailure> {
    let greeting: &[u8] =
        if proxy.credentials.is_some() { &[VERSION, 2, NO_AUTH, USER_PASSWORD] } else { &[VERSION, 1, NO_AUTH] };
    sock.write_all(greeting).map_err(ProxyFailure::io)?;
    let [version, method] = read_exact::<2>(sock, "the greeting")?;
    if version != VERSION {
        return Err(not_socks(&[version, method]));
    }
    match (method, &proxy.credentials) {
        (NO_AUTH, _) => {}
        (USER_PASSWORD, Some(c)) => {
            let mut m = vec![1, c.user.len() as u8];
            m.extend_from_slice(c.user.as_bytes());
            m.push(c.password.len() as u8);
            m.extend_from_slice(c.password.as_bytes());
            sock.write_all(&m).map_err(ProxyFailure::io)?;
            let [_, status] = read_exact::<2>(sock, "the user and password")?;
            if status != 0 {
                return Err(ProxyFailure::Auth("it refused the user and password given".into()));
            }
        }
        (NO_ACCEPTABLE, None) => {
            return Err(ProxyFailure::Auth("it wants a user and password and none is given".into()));
        }
        (NO_ACCEPTABLE, Some(_)) => {
            return Err(ProxyFailure::Auth("it takes neither no authentication nor a user and password".into()));
        }
        (other, _) => {
            return Err(ProxyFailure::Protocol(format!(
                "it chose an authentication method that was not offered (0x{other:02x})"
            )));
        }
    }
    let mut request = vec![VERSION, 1, 0];
    match to {
        Destination::Name(name) => {
            let len = u8::try_from(name.len()).map_err(|_| {
                ProxyFailure::Protocol("the host name is longer than SOCKS5 carries (255 bytes)".into())
            })?;
            request.extend_from_slice(&[3, len]);
            request.extend_from_slice(name.as_bytes());
        }
        Destination::Addr(IpAddr::V4(a)) => {
            request.push(1);
            request.extend_from_slice(&a.octets());
        }
        Destination::Addr(IpAddr::V6(a)) => {
            request.push(4);
            request.extend_from_slice(&a.octets());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    sock.write_all(&request).map_err(ProxyFailure::io)?;
    let [version, reply, _, address_type] = read_exact::<4>(sock, "the CONNECT request")?;
    if version != VERSION {
        return Err(not_socks(&[version, reply]));
    }
    if reply != 0 {
        return Err(refusal(reply));
    }
    // The address the proxy bound, which the agent does not need, but which is on the wire
    // before the tunnel's first byte.
    let rest = match address_type {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => usize::from(read_exact::<1>(sock, "the CONNECT reply")?[0]) + 2,
        other => return Err(ProxyFailure::Protocol(format!("its reply has an unknown address type 0x{other:02x}"))),
    };
    let mut skip = vec![0u8; rest];
    read_into(sock, &mut skip, "the CONNECT reply")?;
    Ok(())
}

/// What a SOCKS5 reply code means (RFC 1928 §6).
fn refusal(code: u8) -> ProxyFailure {
    let why = |w: &str| format!("{w} (SOCKS5 reply {code})");
    match code {
        2 => ProxyFailure::Refused(why("connection not allowed by its rules")),
        1 => ProxyFailure::CannotReach(why("general SOCKS server failure")),
        3 => ProxyFailure::CannotReach(why("network unreachable")),
        4 => ProxyFailure::CannotReach(why("host unreachable")),
        5 => ProxyFailure::CannotReach(why("connection refused by the gateway's host")),
        6 => ProxyFailure::CannotReach(why("TTL expired")),
        7 => ProxyFailure::Protocol(why("command not supported")),
        8 => ProxyFailure::Protocol(why(
            "address type not supported: write socks5:// to send an address instead of a name, or socks5h:// for the \
             reverse",
        )),
        _ => ProxyFailure::Protocol(why("unknown reply code")),
    }
}

fn not_socks(first: &[u8]) -> ProxyFailure {
    let hint = if first.starts_with(b"HT") { " (an HTTP proxy? then write http://)" } else { "" };
    ProxyFailure::Protocol(format!("it does not speak SOCKS5: it answered \"{}\"{hint}", escape_bytes(first, 16)))
}

fn read_exact<const N: usize>(sock: &mut Sock, what: &str) -> Result<[u8; N], ProxyFailure> {
    let mut buf = [0u8; N];
    read_into(sock, &mut buf, what)?;
    Ok(buf)
}

fn read_into(sock: &mut Sock, buf: &mut [u8], what: &str) -> Result<(), ProxyFailure> {
    sock.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ProxyFailure::Protocol(format!(
            "it closed the connection without answering {what} (an HTTP proxy? then write http://)"
        )),
        _ => ProxyFailure::io(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reply_code_has_its_own_outcome() {
        assert!(
            matches!(refusal(2), ProxyFailure::Refused(w) if w == "connection not allowed by its rules (SOCKS5 reply 2)")
        );
        for code in [1, 3, 4, 5, 6] {
            assert!(matches!(refusal(code), ProxyFailure::CannotReach(_)), "{code}");
        }
        assert!(matches!(refusal(5), ProxyFailure::CannotReach(w) if w.contains("connection refused")));
        assert!(matches!(refusal(6), ProxyFailure::CannotReach(w) if w.contains("TTL expired")));
        for code in [7, 8, 9, 0xff] {
            assert!(matches!(refusal(code), ProxyFailure::Protocol(_)), "{code}");
        }
    }
}
