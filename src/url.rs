//! Gateway URLs: `wss://host[:port]/path` (or `ws://` in labs). Parsed here rather than with a
//! URL crate: we need only scheme, host, port and the request target.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct GatewayUrl {
    text: String,
    tls: bool,
    host: String,
    port: u16,
}

impl GatewayUrl {
    /// Accepts `ws://` and `wss://` URLs; the reason for a refusal is a short phrase.
    pub fn parse(text: &str) -> Result<GatewayUrl, String> {
        let (tls, rest) = if let Some(r) = text.strip_prefix("wss://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("ws://") {
            (false, r)
        } else {
            return Err("the scheme must be wss:// (or ws:// with allow_plaintext)".into());
        };
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if authority.contains('@') {
            return Err("user:password@ is not supported; the token authenticates the rig".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or("unclosed [ in an IPv6 address")?;
            (&v6[..end], v6[end + 1..].strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or(format!("bad port \"{p}\""))?,
        };
        Ok(GatewayUrl { text: text.to_string(), tls, host: host.to_string(), port })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
    pub fn is_tls(&self) -> bool {
        self.tls
    }
    /// Host name or IP literal (without IPv6 brackets): what DNS, SNI and certificate
    /// verification use.
    pub fn host(&self) -> &str {
        &self.host
    }
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for GatewayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for GatewayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_scheme_are_taken_apart() {
        let u = GatewayUrl::parse("wss://gw.example.com:8443/ws?x=1").unwrap();
        assert!(u.is_tls());
        assert_eq!((u.host(), u.port()), ("gw.example.com", 8443));
        let u = GatewayUrl::parse("wss://gw.example.com/ws").unwrap();
        assert_eq!(u.port(), 443);
        let u = GatewayUrl::parse("ws://[::1]:9000/").unwrap();
        assert_eq!((u.host(), u.port(), u.is_tls()), ("::1", 9000, false));
    }

    #[test]
    fn unusable_urls_are_refused_with_a_reason() {
        assert!(GatewayUrl::parse("https://gw/ws").unwrap_err().contains("scheme"));
        assert!(GatewayUrl::parse("wss:///ws").unwrap_err().contains("no host"));
        assert!(GatewayUrl::parse("wss://gw:0/ws").unwrap_err().contains("port"));
        assert!(GatewayUrl::parse("wss://gw:http/ws").is_err());
        assert!(GatewayUrl::parse("wss://u:p@gw/ws").is_err());
    }
}
