//! Gateway URLs: `wss://host[:port]/path` (or `ws://` in labs), parsed by `http::Uri`
//! (through tungstenite, which parses the same text again for the upgrade request), so a
//! URL the upgrade would refuse (a space, a stray character) is refused at config load.

use std::fmt;

use tungstenite::http::Uri;

/// Why a gateway URL was refused: a short phrase for the config error that names the key.
/// The operator should correct the URL in the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("it has {what} ({found:?} at byte {at}); remove it")]
    WhiteSpace { what: &'static str, found: char, at: usize },
    #[error("no host")]
    NoHost,
    /// `http::Uri`'s own reason.
    #[error("{0}")]
    Invalid(String),
    #[error("the scheme must be wss:// (or ws:// with allow_plaintext)")]
    Scheme,
    #[error("user:password@ is not supported; the token authenticates the rig")]
    UserInfo,
    #[error("bad port {}", crate::config::error::quoted(.0))]
    BadPort(String),
}

#[derive(Clone, PartialEq, Eq)]
pub struct GatewayUrl {
    text: String,
    tls: bool,
    host: String,
    port: u16,
}

impl GatewayUrl {
    /// Accepts `ws://` and `wss://` URLs; the reason for a refusal is a short phrase.
    pub fn parse(text: &str) -> Result<GatewayUrl, UrlError> {
        if let Some((i, c)) = text.char_indices().find(|(_, c)| c.is_whitespace() || c.is_control()) {
            let what = if text.trim() != text { "leading or trailing white space" } else { "white space" };
            return Err(UrlError::WhiteSpace { what, found: c, at: i });
        }
        if text.split_once("://").is_some_and(|(_, rest)| rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
            return Err(UrlError::NoHost);
        }
        let uri: Uri = text.parse().map_err(|e| UrlError::Invalid(format!("{e}")))?;
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => return Err(UrlError::Scheme),
        };
        let authority = uri.authority().ok_or(UrlError::NoHost)?;
        if authority.as_str().contains('@') {
            return Err(UrlError::UserInfo);
        }
        let raw_host = authority.host();
        // `Uri` keeps an IPv6 literal's brackets; DNS, SNI and verification want it bare.
        let host = raw_host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(raw_host);
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        // Taken from the text: `Authority::port` reads a non-numeric port as no port at all.
        let port = match authority.as_str()[raw_host.len()..].strip_prefix(':') {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| UrlError::BadPort(p.to_string()))?,
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
        assert!(GatewayUrl::parse("https://gw/ws").unwrap_err().to_string().contains("scheme"));
        assert!(GatewayUrl::parse("wss:///ws").unwrap_err().to_string().contains("no host"));
        assert!(GatewayUrl::parse("wss://gw:0/ws").unwrap_err().to_string().contains("port"));
        assert!(GatewayUrl::parse("wss://gw:http/ws").is_err());
        assert!(GatewayUrl::parse("wss://u:p@gw/ws").is_err());
        assert!(GatewayUrl::parse("wss://gw:99999/ws").is_err());
    }

    #[test]
    fn a_url_with_a_trailing_space_is_refused_naming_the_space() {
        let e = GatewayUrl::parse("wss://gw.example.com/ws ").unwrap_err().to_string();
        assert!(e.contains("trailing white space"), "{e}");
        assert!(GatewayUrl::parse("wss://gw.example.com/w s").unwrap_err().to_string().contains("white space"));
        assert!(GatewayUrl::parse("wss://gw.example.com/w\u{7f}").is_err());
    }
}
