//! How the agent reaches a host: directly, or through an HTTP CONNECT or SOCKS5 proxy.
//! `gateway.proxy` says it (`"http://[user:pass@]host:port"`, `"socks5h://…"`,
//! `"socks5://…"` or `"none"`); without the key the standard environment does, as curl and
//! Go read it: `https_proxy`/`HTTPS_PROXY` then `all_proxy`/`ALL_PROXY` for `wss://`
//! (`http_proxy`, lower case only, for `ws://`), and `no_proxy`/`NO_PROXY`.
//!
//! A malformed proxy in the environment is refused at load like a wrong key (exit 78, and
//! `check` says so): it comes from the unit's own `Environment=` lines, where a typo would
//! otherwise send the rig around the proxy it must use, or nowhere, in silence. Everything
//! here is pure: the environment comes in as a lookup function.
//!
//! Credentials are never shown: every `Display` and `Debug` of a proxy masks them as
//! `http://***@host:port`, the way `check` shows the token.

use std::fmt;
use std::net::IpAddr;

use crate::config::error::quoted;

/// The proxy protocols the agent speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyScheme {
    /// HTTP CONNECT (`http://`).
    Http,
    /// SOCKS5 with the gateway's name resolved by the agent (`socks5://`, as curl).
    Socks5,
    /// SOCKS5 with the name resolved by the proxy (`socks5h://`): no local DNS.
    Socks5h,
}

impl ProxyScheme {
    fn as_str(self) -> &'static str {
        match self {
            ProxyScheme::Http => "http",
            ProxyScheme::Socks5 => "socks5",
            ProxyScheme::Socks5h => "socks5h",
        }
    }
}

/// A proxy's user and password (RFC 1929 for SOCKS5, `Proxy-Authorization: Basic` for
/// HTTP). Never shown: `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub(crate) user: String,
    pub(crate) password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One proxy, parsed. `Display` and `Debug` mask the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub scheme: ProxyScheme,
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    pub credentials: Option<Credentials>,
}

/// Why a proxy URL was refused: a phrase for the config error that names the key or the
/// variable. The operator should correct the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyUrlError {
    #[error("it has white space or control characters; remove them")]
    WhiteSpace,
    #[error("the scheme must be http:// (HTTP CONNECT), socks5h:// or socks5:// (SOCKS5); {0}:// is not supported")]
    Scheme(String),
    #[error("no scheme; write http://, socks5h:// or socks5:// in front")]
    NoScheme,
    #[error("no host")]
    NoHost,
    #[error("no port; write it, e.g. :3128 (curl and Go disagree on the default)")]
    NoPort,
    #[error("bad port \"{0}\"")]
    BadPort(String),
    #[error("a proxy URL has no path, query or fragment (found \"{0}\")")]
    Path(String),
    #[error("the user or password is not valid percent-encoding, or longer than 255 bytes")]
    Credentials,
    /// Shown without the text: the `@` after a `/`, `?` or `#` says a password holds one.
    #[error("the user or password has a '/', '?' or '#': percent-encode it (%2F, %3F, %23)")]
    UnencodedCredentials,
}

/// Where the words `user:pass@` were: the text with them replaced by `***`, for messages
/// about a proxy URL that could not even be parsed. Everything up to the last `@` goes,
/// even past a `/`, `?` or `#`: a password with one of them unencoded is still a password.
pub fn mask(text: &str) -> String {
    let (scheme, rest) = match text.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, text),
    };
    let masked = match rest.rfind('@') {
        Some(at) => format!("***{}", &rest[at..]),
        None => rest.to_string(),
    };
    match scheme {
        Some(s) => format!("{s}://{masked}"),
        None => masked,
    }
}

impl ProxyUrl {
    /// `scheme://[user[:password]@]host:port[/]`, as `gateway.proxy` takes it.
    pub fn parse(text: &str) -> Result<ProxyUrl, ProxyUrlError> {
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ProxyUrlError::WhiteSpace);
        }
        let (scheme, rest) = text.split_once("://").ok_or(ProxyUrlError::NoScheme)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => ProxyScheme::Http,
            "socks5" => ProxyScheme::Socks5,
            "socks5h" => ProxyScheme::Socks5h,
            other => return Err(ProxyUrlError::Scheme(other.to_string())),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if tail.contains('@') {
            return Err(ProxyUrlError::UnencodedCredentials);
        }
        if !tail.is_empty() && tail != "/" {
            return Err(ProxyUrlError::Path(tail.to_string()));
        }
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let credentials = userinfo
            .map(|u| {
                let (user, password) = u.split_once(':').unwrap_or((u, ""));
                let (user, password) = (percent_decode(user)?, percent_decode(password)?);
                // RFC 1929 carries each in one length byte.
                (user.len() <= 255 && password.len() <= 255).then_some(Credentials { user, password })
            })
            .map(|c| c.ok_or(ProxyUrlError::Credentials))
            .transpose()?;
        let (host, port) = split_host_port(hostport)?;
        let port = port.ok_or(ProxyUrlError::NoPort)?;
        Ok(ProxyUrl { scheme, host, port, credentials })
    }

    /// As [`ProxyUrl::parse`], for a value from the environment, where `host:port` without a
    /// scheme means HTTP CONNECT (as curl and Go read it).
    pub fn parse_env(text: &str) -> Result<ProxyUrl, ProxyUrlError> {
        if text.contains("://") { ProxyUrl::parse(text) } else { ProxyUrl::parse(&format!("http://{text}")) }
    }

    /// Whether the proxy resolves the target's name (no local DNS for it).
    pub fn resolves_names(&self) -> bool {
        matches!(self.scheme, ProxyScheme::Http | ProxyScheme::Socks5h)
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = if self.credentials.is_some() { "***@" } else { "" };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "{}://{auth}{host}:{}", self.scheme.as_str(), self.port)
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `host[:port]`, `[v6][:port]`: the bare host (lower case) and the port if any.
fn split_host_port(s: &str) -> Result<(String, Option<u16>), ProxyUrlError> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or(ProxyUrlError::NoHost)?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':').ok_or_else(|| ProxyUrlError::BadPort(p.to_string()))?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(ProxyUrlError::NoHost);
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| ProxyUrlError::BadPort(p.into()))?),
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// Where a proxy setting came from, for messages that say what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxySource {
    /// `gateway.proxy` in the config file.
    Config,
    /// This environment variable.
    Env(&'static str),
}

impl fmt::Display for ProxySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxySource::Config => f.write_str("gateway.proxy"),
            ProxySource::Env(var) => write!(f, "the environment variable {var}"),
        }
    }
}

/// How to reach one host: what [`crate::config::GatewayConfig::proxy`] decides per URL, and
/// what `net::dial` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyChoice {
    Direct,
    Via { proxy: ProxyUrl, from: ProxySource },
}

/// One `no_proxy` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bypass {
    /// `*`: no proxy for any host.
    All,
    /// A host name and every name under it (`example.com`, `.example.com`, `*.example.com`).
    Domain(String, Option<u16>),
    /// An IP address (`10.1.2.3`, `::1`, `[::1]:443`) or a range (`10.0.0.0/8`, `fd00::/8`).
    Net(IpAddr, u8, Option<u16>),
}

impl Bypass {
    fn parse(entry: &str) -> Result<Bypass, String> {
        let e = entry.trim().to_ascii_lowercase();
        if e == "*" {
            return Ok(Bypass::All);
        }
        let bad = |why: &str| format!("no_proxy entry \"{entry}\" {why}");
        // A range: address/bits (no port: curl and Go take none there).
        if let Some((ip, bits)) = e.split_once('/') {
            let ip: IpAddr = ip.trim_matches(['[', ']']).parse().map_err(|_| bad("is not an address range"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits: u8 = bits.parse().ok().filter(|b| *b <= max).ok_or_else(|| bad("has a bad prefix length"))?;
            return Ok(Bypass::Net(ip, bits, None));
        }
        // A bare IPv6 address has colons of its own: it takes a port only in brackets.
        if let Ok(ip) = e.parse::<IpAddr>() {
            return Ok(Bypass::Net(ip, if ip.is_ipv4() { 32 } else { 128 }, None));
        }
        let (host, port) = split_host_port(&e).map_err(|why| bad(&why.to_string()))?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Bypass::Net(ip, if ip.is_ipv4() { 32 } else { 128 }, port));
        }
        // A trailing dot (the fully qualified spelling) is dropped, as curl drops it, and as
        // `choose` drops the host's.
        let domain = host.trim_start_matches('*').trim_start_matches('.').trim_end_matches('.');
        if domain.is_empty() {
            return Err(bad("names no host"));
        }
        Ok(Bypass::Domain(domain.to_string(), port))
    }

    fn matches(&self, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        match self {
            Bypass::All => true,
            Bypass::Domain(d, p) => {
                port_ok(p) && (host == d || (host.ends_with(d.as_str()) && host[..host.len() - d.len()].ends_with('.')))
            }
            Bypass::Net(net, bits, p) => port_ok(p) && ip.is_some_and(|ip| in_range(ip, *net, *bits)),
        }
    }
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (a, b, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        // An IPv4-mapped IPv6 address is the IPv4 one.
        (IpAddr::V6(a), IpAddr::V4(_)) => {
            return a.to_ipv4_mapped().is_some_and(|a| in_range(IpAddr::V4(a), net, bits));
        }
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (a >> shift) == (b >> shift)
}

/// The proxy variables of the environment, as read at load.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvProxies {
    /// For `wss://`: `https_proxy`, `HTTPS_PROXY`, else `all_proxy`, `ALL_PROXY`.
    secure: Option<(ProxyUrl, &'static str)>,
    /// For `ws://`: `http_proxy` (lower case only, as curl: `HTTP_PROXY` can be set by a
    /// request header in CGI), else the `all_proxy` pair.
    plain: Option<(ProxyUrl, &'static str)>,
    no_proxy: Vec<Bypass>,
    /// The `no_proxy` text as read, for `check`.
    no_proxy_text: Option<(String, &'static str)>,
}

/// A proxy variable that is set and not empty (an empty value means unset, as in curl and Go).
fn first_set(vars: &[&'static str], env: &dyn Fn(&str) -> Option<String>) -> Option<(String, &'static str)> {
    vars.iter().find_map(|v| env(v).filter(|s| !s.trim().is_empty()).map(|s| (s, *v)))
}

impl EnvProxies {
    /// Reads the variables through `env` (`std::env::var` in the agent). `Err` names the
    /// variable and the problem, with credentials masked.
    pub fn read(env: &dyn Fn(&str) -> Option<String>) -> Result<EnvProxies, String> {
        let url = |vars: &[&'static str]| -> Result<Option<(ProxyUrl, &'static str)>, String> {
            match first_set(vars, env) {
                None => Ok(None),
                Some((text, var)) => ProxyUrl::parse_env(text.trim())
                    .map(|u| Some((u, var)))
                    .map_err(|why| format!("{var}={} is not a usable proxy: {why}", quoted(&mask(&text)))),
            }
        };
        let all = url(&["all_proxy", "ALL_PROXY"])?;
        let secure = url(&["https_proxy", "HTTPS_PROXY"])?.or_else(|| all.clone());
        let plain = url(&["http_proxy"])?.or(all);
        let no_proxy_text = first_set(&["no_proxy", "NO_PROXY"], env);
        let no_proxy = match &no_proxy_text {
            None => Vec::new(),
            Some((text, var)) => text
                .split(',')
                .filter(|e| !e.trim().is_empty())
                .map(Bypass::parse)
                .collect::<Result<_, _>>()
                .map_err(|why| format!("{var}: {why}"))?,
        };
        Ok(EnvProxies { secure, plain, no_proxy, no_proxy_text })
    }

    fn choose(&self, host: &str, port: u16, tls: bool) -> ProxyChoice {
        let Some((proxy, var)) = (if tls { &self.secure } else { &self.plain }) else { return ProxyChoice::Direct };
        let host = host.to_ascii_lowercase();
        let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
        let ip = host.parse::<IpAddr>().ok();
        if self.no_proxy.iter().any(|b| b.matches(host, ip, port)) {
            return ProxyChoice::Direct;
        }
        ProxyChoice::Via { proxy: proxy.clone(), from: ProxySource::Env(var) }
    }
}

/// `gateway.proxy` as written: a URL, `"none"`, or absent (the environment decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxySetting {
    Environment,
    Off,
    Url(ProxyUrl),
}

/// What the agent does about proxies, decided at load (the environment read then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyPolicy {
    /// `gateway.proxy = "none"`: always direct, whatever the environment says.
    Off,
    /// `gateway.proxy` names a proxy: every gateway URL goes through it (`no_proxy` is for
    /// the environment's proxies, not this one).
    Always(ProxyUrl),
    /// No `gateway.proxy`: the environment's variables, as read at load.
    Environment(EnvProxies),
}

impl ProxyPolicy {
    /// How to reach `host:port` (`tls`: a `wss://` or `https://` URL).
    pub fn choose(&self, host: &str, port: u16, tls: bool) -> ProxyChoice {
        match self {
            ProxyPolicy::Off => ProxyChoice::Direct,
            ProxyPolicy::Always(p) => ProxyChoice::Via { proxy: p.clone(), from: ProxySource::Config },
            ProxyPolicy::Environment(env) => env.choose(host, port, tls),
        }
    }

    /// `check`'s lines: the key as TOML that reads back to this policy (credentials masked),
    /// and for the environment a comment saying what it holds.
    pub(crate) fn render(&self) -> String {
        let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        match self {
            ProxyPolicy::Off => "proxy = \"none\"\n".into(),
            ProxyPolicy::Always(p) => format!("proxy = {}\n", q(&p.to_string())),
            ProxyPolicy::Environment(env) => {
                let mut out = String::from("# proxy not set: the environment decides\n");
                let mut seen = Vec::new();
                for (label, entry) in [("wss://", &env.secure), ("ws://", &env.plain)] {
                    match entry {
                        Some((p, var)) => seen.push(format!("{label} through {p} ({var})")),
                        None => seen.push(format!("{label} direct")),
                    }
                }
                out += &format!("#   {}\n", seen.join("; "));
                if let Some((text, var)) = &env.no_proxy_text {
                    out += &format!("#   {var} = {}\n", q(text));
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn via(choice: ProxyChoice) -> Option<String> {
        match choice {
            ProxyChoice::Direct => None,
            ProxyChoice::Via { proxy, .. } => Some(proxy.to_string()),
        }
    }

    #[test]
    fn proxy_urls_are_taken_apart_and_shown_without_their_credentials() {
        let p = ProxyUrl::parse("http://rig%40farm:s3cr%3At@Proxy.Example:3128/").unwrap();
        assert_eq!((p.scheme, p.host.as_str(), p.port), (ProxyScheme::Http, "proxy.example", 3128));
        let c = p.credentials.clone().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("rig@farm", "s3cr:t"));
        assert_eq!(p.to_string(), "http://***@proxy.example:3128");
        assert!(!format!("{p:?}").contains("s3cr"), "{p:?}");
        let p = ProxyUrl::parse("socks5h://[fd00::1]:1080").unwrap();
        assert_eq!(
            (p.scheme, p.host.as_str(), p.to_string().as_str()),
            (ProxyScheme::Socks5h, "fd00::1", "socks5h://[fd00::1]:1080")
        );
        assert!(p.resolves_names());
        assert!(!ProxyUrl::parse("socks5://10.0.0.1:1080").unwrap().resolves_names());
    }

    #[test]
    fn unusable_proxy_urls_are_refused_with_the_reason() {
        let e = |t: &str| ProxyUrl::parse(t).unwrap_err();
        assert_eq!(e("https://p:443"), ProxyUrlError::Scheme("https".into()));
        assert_eq!(e("proxy:3128"), ProxyUrlError::NoScheme);
        assert_eq!(e("http://proxy"), ProxyUrlError::NoPort);
        assert_eq!(e("http://proxy:0"), ProxyUrlError::BadPort("0".into()));
        assert_eq!(e("http://:3128"), ProxyUrlError::NoHost);
        assert_eq!(e("http://p:3128/x"), ProxyUrlError::Path("/x".into()));
        assert_eq!(e("http://u:%zz@p:3128"), ProxyUrlError::Credentials);
        assert_eq!(e("http://p :3128"), ProxyUrlError::WhiteSpace);
        assert_eq!(ProxyUrl::parse_env("proxy.corp:3128").unwrap().to_string(), "http://proxy.corp:3128");
        assert_eq!(mask("htp://user:pw@p:1/x"), "htp://***@p:1/x");
        assert_eq!(mask("user:pw@p"), "***@p");
    }

    #[test]
    fn the_environment_is_read_as_curl_reads_it() {
        let e = EnvProxies::read(&env(&[("HTTPS_PROXY", "http://a:1"), ("all_proxy", "socks5h://b:2")])).unwrap();
        assert_eq!(via(e.choose("gw", 443, true)).as_deref(), Some("http://a:1"));
        assert_eq!(via(e.choose("gw", 80, false)).as_deref(), Some("socks5h://b:2"), "ws:// falls back to all_proxy");
        let e = EnvProxies::read(&env(&[("https_proxy", "http://a:1"), ("HTTPS_PROXY", "http://z:9")])).unwrap();
        assert_eq!(via(e.choose("gw", 443, true)).as_deref(), Some("http://a:1"), "lower case first");
        assert_eq!(via(e.choose("gw", 80, false)), None);
        let e = EnvProxies::read(&env(&[("HTTP_PROXY", "http://a:1"), ("https_proxy", "")])).unwrap();
        assert_eq!(via(e.choose("gw", 80, false)), None, "HTTP_PROXY is not read (httpoxy)");
        assert_eq!(via(e.choose("gw", 443, true)), None, "empty means unset");
        let err = EnvProxies::read(&env(&[("https_proxy", "http://u:secret@p")])).unwrap_err();
        assert!(err.contains("https_proxy=\"http://***@p\"") && err.contains("no port"), "{err}");
        assert!(!err.contains("secret"));
    }

    #[test]
    fn no_proxy_takes_suffixes_hosts_addresses_ranges_and_ports() {
        let no =
            "localhost, .corp.example,*.lab.example,farm.example:8443,10.0.0.0/8,192.168.1.7,[fd00::5]:443,fe80::/10";
        let e = EnvProxies::read(&env(&[("https_proxy", "http://p:1"), ("NO_PROXY", no)])).unwrap();
        let direct = |h: &str, port: u16| via(e.choose(h, port, true)).is_none();
        assert!(direct("localhost", 443));
        assert!(direct("gw.corp.example", 443) && direct("corp.example", 443));
        assert!(direct("a.lab.example", 443) && direct("LAB.example.", 443));
        assert!(!direct("notcorp.example", 443), "a suffix matches on a label boundary");
        assert!(direct("farm.example", 8443) && !direct("farm.example", 443));
        assert!(direct("10.20.30.40", 443) && !direct("11.0.0.1", 443));
        assert!(direct("192.168.1.7", 443) && !direct("192.168.1.8", 443));
        assert!(direct("fd00::5", 443) && !direct("fd00::5", 80));
        assert!(direct("[fe80::1]", 443));
        assert!(!direct("gw.example", 443));
        let all = EnvProxies::read(&env(&[("https_proxy", "http://p:1"), ("no_proxy", "*")])).unwrap();
        assert_eq!(via(all.choose("anything", 443, true)), None);
        let bad = EnvProxies::read(&env(&[("no_proxy", "10.0.0.0/40")])).unwrap_err();
        assert!(bad.contains("no_proxy entry \"10.0.0.0/40\" has a bad prefix length"), "{bad}");
    }

    #[test]
    fn the_config_key_wins_over_the_environment() {
        let p = ProxyUrl::parse("socks5h://p:1080").unwrap();
        assert_eq!(via(ProxyPolicy::Always(p).choose("localhost", 443, true)).as_deref(), Some("socks5h://p:1080"));
        assert_eq!(via(ProxyPolicy::Off.choose("gw", 443, true)), None);
    }
}
