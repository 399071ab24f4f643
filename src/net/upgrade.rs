//! The RFC 6455 upgrade on a stream already connected (TLS done): the request, and the
//! gateway's answer judged as §4.1 says a client must, subprotocol included.

use std::io;

use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::{Response, generate_request};
use tungstenite::handshake::derive_accept_key;
use tungstenite::handshake::machine::{HandshakeMachine, RoundResult, StageResult};
use tungstenite::http::HeaderValue;
use tungstenite::protocol::{Role, WebSocketConfig};

use crate::config::GatewayConfig;
use crate::config::url::GatewayUrl;
use crate::net::stream::{Stream, WebSocket, timed_out};
use crate::protocol::escape::escape;

/// What came of the subprotocol the rig offers (`gateway.subprotocol`), once the gateway
/// answered 101. RFC 6455 §4.1 fails a connection only when the server selects one that
/// was not offered; a server that selects none (gorilla/websocket's default `Upgrader`)
/// leaves the client free to go on, and the agent does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subprotocol {
    /// None configured, none offered, none selected.
    NotOffered,
    /// The gateway selected this one of those offered.
    Selected(String),
    /// Offered (these words), and the gateway selected none.
    NoneSelected(String),
}

/// Why the upgrade failed; the transport turns it into its `ConnectError`, retried with
/// backoff.
#[derive(Debug, PartialEq, Eq)]
pub enum UpgradeError {
    /// The gateway's answer is not one the agent may go on with; the text says why.
    Refused(String),
    /// The gateway closed the connection before its answer ended.
    Eof,
    /// The attempt's deadline passed.
    TimedOut,
}

/// A WebSocket to the gateway, and what came of the subprotocol.
pub struct Connected {
    pub ws: WebSocket,
    pub subprotocol: Subprotocol,
}

pub(crate) fn upgrade(url: &GatewayUrl, cfg: &GatewayConfig, stream: Stream) -> Result<Connected, UpgradeError> {
    let mut request =
        url.as_str().into_client_request().map_err(|e| UpgradeError::Refused(format!("bad request for {url}: {e}")))?;
    let headers = request.headers_mut();
    let agent = HeaderValue::from_str(&format!("rig-agent/{}", crate::version()))
        .map_err(|_| UpgradeError::Refused("the version is not a header value".into()))?;
    headers.insert("User-Agent", agent);
    if let Some(p) = &cfg.subprotocol {
        let v = HeaderValue::from_str(p).map_err(|_| UpgradeError::Refused(format!("bad subprotocol {p:?}")))?;
        headers.insert("Sec-WebSocket-Protocol", v);
    }
    let ws_config = WebSocketConfig::default()
        // tungstenite zero-fills the whole read buffer before every read, so all of its
        // default 128 KiB stays resident; a gateway's queries are small, and one TLS record
        // holds at most 16 KiB. Larger messages still fit: the buffer grows to the frame.
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(cfg.max_message_bytes))
        .max_frame_size(Some(cfg.max_message_bytes))
        // Bounded output: a gateway that stops reading fills this and the connection is
        // dropped rather than buffering without limit.
        .max_write_buffer_size(4 * cfg.max_message_bytes.max(1 << 20));
    // tungstenite's own request writer and response reader (with its header limits), but
    // not its `ClientHandshake`, whose check refuses a 101 without `Sec-WebSocket-Protocol`
    // when one was offered: RFC 6455 allows that answer, and gorilla's default gives it.
    let (bytes, key) = generate_request(request).map_err(|e| UpgradeError::Refused(escape(&e.to_string())))?;
    let accept_key = derive_accept_key(key.as_bytes());
    let mut machine = HandshakeMachine::start_write(stream, bytes);
    loop {
        // The socket is blocking: WouldBlock only comes from its deadline (armed per read).
        machine = match machine.single_round::<Response>() {
            Ok(RoundResult::WouldBlock(_)) => return Err(UpgradeError::TimedOut),
            Ok(RoundResult::Incomplete(m)) => m,
            Ok(RoundResult::StageFinished(StageResult::DoneWriting(stream))) => HandshakeMachine::start_read(stream),
            Ok(RoundResult::StageFinished(StageResult::DoneReading { result, stream, tail })) => {
                let subprotocol = check_response(&result, &accept_key, cfg.subprotocol.as_deref())?;
                // Frames the gateway sent right behind its 101 (a ping, its first query) are in
                // `tail`, and are read first.
                let ws = WebSocket::from_partially_read(stream, tail, Role::Client, Some(ws_config));
                return Ok(Connected { ws, subprotocol });
            }
            Err(tungstenite::Error::Io(io)) if io.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(UpgradeError::Eof);
            }
            Err(tungstenite::Error::Io(io)) if timed_out(&io) => return Err(UpgradeError::TimedOut),
            Err(tungstenite::Error::Protocol(tungstenite::error::ProtocolError::HandshakeIncomplete)) => {
                return Err(UpgradeError::Eof);
            }
            // tungstenite's text quotes the peer's HTTP (status line, headers).
            Err(other) => return Err(UpgradeError::Refused(escape(&other.to_string()))),
        }
    }
}

/// The gateway's answer to the upgrade, judged as RFC 6455 §4.1 says a client must: 101,
/// `Upgrade: websocket`, `Connection: Upgrade`, the right `Sec-WebSocket-Accept`, no
/// extension (the agent offers none), and a subprotocol only from those offered. `offered`
/// is `gateway.subprotocol` (one word, or a comma-separated list).
pub(crate) fn check_response(
    resp: &Response,
    accept_key: &str,
    offered: Option<&str>,
) -> Result<Subprotocol, UpgradeError> {
    let refused = |why: String| Err(UpgradeError::Refused(why));
    if resp.status() != tungstenite::http::StatusCode::SWITCHING_PROTOCOLS {
        return refused(format!("the gateway answered HTTP {}", resp.status()));
    }
    let h = resp.headers();
    let header = |name: &str| h.get(name).map(|v| escape(&String::from_utf8_lossy(v.as_bytes())));
    let has_token = |name: &str, token: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token("Upgrade", "websocket") {
        return refused(format!(
            "the gateway answered 101 without `Upgrade: websocket` (it sent {})",
            header("Upgrade").map_or("none".into(), |v| format!("{v:?}"))
        ));
    }
    if !has_token("Connection", "upgrade") {
        return refused("the gateway answered 101 without `Connection: Upgrade`".into());
    }
    if h.get("Sec-WebSocket-Accept").map(|v| v.as_bytes()) != Some(accept_key.as_bytes()) {
        return refused("the gateway's Sec-WebSocket-Accept does not match the key sent".into());
    }
    if let Some(ext) = header("Sec-WebSocket-Extensions") {
        return refused(format!(
            "the gateway selected extension {ext:?}, which the agent did not offer (it offers none)"
        ));
    }
    let offered_words: Vec<&str> =
        offered.map(|o| o.split(',').map(str::trim).filter(|w| !w.is_empty()).collect()).unwrap_or_default();
    match (header("Sec-WebSocket-Protocol"), offered) {
        (None, None) => Ok(Subprotocol::NotOffered),
        (None, Some(o)) => Ok(Subprotocol::NoneSelected(o.to_string())),
        (Some(sel), None) => refused(format!(
            "the gateway selected subprotocol {sel:?}, which the agent did not offer (gateway.subprotocol is not set)"
        )),
        (Some(sel), Some(_)) if offered_words.contains(&sel.as_str()) => Ok(Subprotocol::Selected(sel)),
        (Some(sel), Some(o)) => refused(format!(
            "the gateway selected subprotocol {sel:?}, which the agent did not offer (it offered {o:?})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    /// A 101 as a server writes it, with these extra header lines.
    fn answer(extra: &[(&'static str, &str)]) -> Response {
        let mut r = Response::new(None);
        *r.status_mut() = tungstenite::http::StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert("Upgrade", HeaderValue::from_static("websocket"));
        h.insert("Connection", HeaderValue::from_static("Upgrade"));
        h.insert("Sec-WebSocket-Accept", HeaderValue::from_static(KEY));
        for (k, v) in extra {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        r
    }

    fn refusal(r: Result<Subprotocol, UpgradeError>) -> String {
        match r {
            Err(UpgradeError::Refused(why)) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_gateway_that_selects_no_subprotocol_is_accepted_and_the_outcome_says_so() {
        assert_eq!(
            check_response(&answer(&[]), KEY, Some("rig.v1")).unwrap(),
            Subprotocol::NoneSelected("rig.v1".into())
        );
        assert_eq!(check_response(&answer(&[]), KEY, None).unwrap(), Subprotocol::NotOffered);
        let selected = answer(&[("Sec-WebSocket-Protocol", "rig.v1")]);
        assert_eq!(
            check_response(&selected, KEY, Some("rig.v0, rig.v1")).unwrap(),
            Subprotocol::Selected("rig.v1".into())
        );
    }

    #[test]
    fn a_gateway_that_selects_a_subprotocol_not_offered_is_refused_saying_exactly_that() {
        let other = answer(&[("Sec-WebSocket-Protocol", "chat")]);
        assert_eq!(
            refusal(check_response(&other, KEY, Some("rig.v1"))),
            "the gateway selected subprotocol \"chat\", which the agent did not offer (it offered \"rig.v1\")"
        );
        assert_eq!(
            refusal(check_response(&other, KEY, None)),
            "the gateway selected subprotocol \"chat\", which the agent did not offer (gateway.subprotocol is not set)"
        );
    }

    #[test]
    fn an_answer_that_is_not_a_websocket_upgrade_is_refused() {
        let mut not_101 = answer(&[]);
        *not_101.status_mut() = tungstenite::http::StatusCode::FORBIDDEN;
        assert_eq!(refusal(check_response(&not_101, KEY, None)), "the gateway answered HTTP 403 Forbidden");
        assert!(refusal(check_response(&answer(&[]), "other-key", None)).contains("Sec-WebSocket-Accept"));
        let ext = answer(&[("Sec-WebSocket-Extensions", "permessage-deflate")]);
        assert!(refusal(check_response(&ext, KEY, None)).contains("extension \"permessage-deflate\""));
        let mut no_upgrade = answer(&[]);
        no_upgrade.headers_mut().remove("Upgrade");
        assert!(refusal(check_response(&no_upgrade, KEY, None)).contains("Upgrade: websocket"));
        // Header values are tokens in any case, in a list (`Connection: keep-alive, Upgrade`).
        let listed = answer(&[("Connection", "keep-alive, upgrade"), ("Upgrade", "WebSocket")]);
        assert_eq!(check_response(&listed, KEY, None).unwrap(), Subprotocol::NotOffered);
    }
}
