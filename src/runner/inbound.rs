//! What the loop does with one connection's traffic: frames read (capped per round), the
//! session's actions applied, queries dispatched to their handlers, the outbox's due entries.

use super::{CLOSE_WAIT, Outcome, Runner};
use crate::config::url::GatewayUrl;
use crate::jobs::Decision;
use crate::logging::utc_timestamp;
use crate::net::connection::{Closing, Conn, Lost, Reply};
use crate::net::frames::Kind;
use crate::protocol::Query;
use crate::protocol::escape::{escape, escape_bytes};
use crate::session::{Action, End, Session};
use log::info;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tungstenite::Message;
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;

/// How much of a dropped binary frame its log line shows.
const JUNK_HEAD_CHARS: usize = 80;

/// Frames read before the loop looks at answers, heartbeats and stop requests again.
const MAX_FRAMES_PER_ROUND: usize = 64;

impl Runner {
    /// The outbox messages to send now. Reads only the outbox's in-memory view: no disk IO.
    pub(super) fn outbox_due(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let spool = &self.spool;
            let seqs = self.resend.due(Instant::now(), |from, max| spool.sendable_from(from, max));
            if seqs.is_empty() {
                return out;
            }
            let mut gone = false;
            for (seq, text) in self.spool.texts(&seqs) {
                match text {
                    Some(t) => out.push(t.to_string()),
                    // Acknowledged meanwhile, or dropped by the outbox's cap: make room.
                    None => {
                        self.resend.acked(seq);
                        gone = true;
                    }
                }
            }
            if !gone {
                return out;
            }
        }
    }

    /// Carries out the session's actions; `Some` when the connection is over.
    pub(super) fn apply(
        &mut self,
        conn: &mut Conn,
        session: &mut Session,
        pending: &mut VecDeque<Action>,
        url: &GatewayUrl,
    ) -> Option<Outcome> {
        while let Some(action) = pending.pop_front() {
            match action {
                Action::Send(text) => {
                    if let Err(lost) = conn.send(text) {
                        return Some(Outcome::Lost(lost));
                    }
                }
                Action::Dispatch(query) => {
                    if let Some(text) = self.dispatch(query) {
                        pending.extend(session.answer(text));
                    }
                }
                Action::Junk(junk, head) => {
                    self.log_junk(&format!("dropped a frame from the gateway: {}: {head}", escape(&junk.to_string())))
                }
                Action::LoggedIn => {
                    self.status.logged_in(url.as_str());
                    super::link_log::Line::say(self.link.logged_in(url));
                    let since = utc_timestamp(self.status.clock().wall());
                    self.notifier.status(&format!("connected to {url} since {since}"));
                }
                Action::Established => self.backoff.reset(),
                Action::DroppedHeldAnswer => self.log_junk(
                    "dropped an answer: the gateway sent more queries than can be held before it answered the login",
                ),
                Action::WarningAcked(act_id) => {
                    if let Some(acked) = self.spool.ack(&act_id) {
                        self.resend.acked(acked.seq);
                        // Named by what the outbox holds, not by the gateway's `action`.
                        info!("{} {} acknowledged by the gateway", acked.kind.act(), escape(&act_id));
                    }
                    self.status.set_warnings_pending(self.spool.len() as u64);
                }
                Action::WarningRefused { act_id, code, description } => {
                    let found = self.spool.find(&act_id);
                    if let Some((seq, _)) = found {
                        self.resend.refused(seq, Instant::now());
                    }
                    // Its own throttle: junk frames or busy refusals must not hide that the
                    // gateway refuses our disk warnings.
                    let line = format!(
                        "the gateway refused {} {} (code {}): {}; it stays spooled and is resent",
                        found.map_or("outbox message", |(_, kind)| kind.act()),
                        escape(&act_id),
                        code.map_or("missing".into(), |c| c.to_string()),
                        escape(&description)
                    );
                    self.refusal_log.warn(&line);
                }
                Action::Close { code, end } => {
                    // A dead peer will not answer a close: do not wait for it.
                    let wait = if matches!(end, End::Dead { .. }) { Duration::ZERO } else { CLOSE_WAIT };
                    conn.close(
                        &self.wake_rx,
                        Closing { code: CloseCode::from(code), reason: "", wait, reply: Reply::Await },
                    );
                    return Some(Outcome::Session(end));
                }
            }
        }
        None
    }

    /// Hands `query` to its handler; returns the answer to send now, if it has one (the
    /// others come back through [`Registry::try_finished`](crate::jobs::Registry::try_finished)).
    pub(super) fn dispatch(&mut self, query: Query) -> Option<String> {
        match self.jobs.dispatch(query, self.generation, &self.id) {
            Decision::Started => None,
            Decision::Answer(text) => Some(text),
            Decision::Busy { answer, why } => {
                self.log_junk(&why);
                Some(answer)
            }
        }
    }

    pub(super) fn log_junk(&mut self, line: &str) {
        self.junk_log.warn(line);
    }

    /// Reads every frame that is already there; stops at WouldBlock. Each frame's actions are
    /// carried out before the next frame is read, so that a heartbeat return followed by a
    /// close still counts as an established session.
    ///
    /// At most [`MAX_FRAMES_PER_ROUND`] frames are read per call, so that a gateway sending
    /// faster than we read cannot starve heartbeats and answers; `conn.more_to_read` then
    /// tells the loop not to sleep.
    pub(super) fn read_available(
        &mut self,
        conn: &mut Conn,
        session: &mut Session,
        url: &GatewayUrl,
    ) -> Option<Outcome> {
        let mut pending = VecDeque::new();
        conn.more_to_read = false;
        let mut frames = 0;
        loop {
            if let Some(end) = self.apply(conn, session, &mut pending, url) {
                return Some(end);
            }
            if frames == MAX_FRAMES_PER_ROUND {
                conn.more_to_read = true;
                return None;
            }
            frames += 1;
            let msg = match conn.ws.read() {
                Ok(msg) => msg,
                Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(WsError::Capacity(e)) => {
                    conn.close(
                        &self.wake_rx,
                        Closing {
                            code: CloseCode::Size,
                            reason: "message too big",
                            wait: CLOSE_WAIT,
                            reply: Reply::Skip,
                        },
                    );
                    return Some(Outcome::Lost(Lost::TooBig(e.to_string())));
                }
                Err(WsError::Utf8(_)) => {
                    session.on_frame(Instant::now());
                    self.log_junk("dropped a text frame that is not UTF-8");
                    continue;
                }
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    return Some(Outcome::Lost(Lost::Closed));
                }
                Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    return Some(Outcome::Lost(Lost::NoCloseFrame));
                }
                Err(e) => return Some(Outcome::Lost(Lost::Read(escape(&e.to_string())))),
            };
            if let Some(end) = self.on_message(conn, session, &mut pending, msg) {
                return Some(end);
            }
        }
    }

    /// One message read: its actions queued in `pending`, junk logged, a close ended.
    fn on_message(
        &mut self,
        conn: &mut Conn,
        session: &mut Session,
        pending: &mut VecDeque<Action>,
        msg: Message,
    ) -> Option<Outcome> {
        let now = Instant::now();
        match msg {
            Message::Text(text) => pending.extend(session.on_text(text.as_str(), &self.ids, now)),
            // Text arrives as binary (see `frames`): its UTF-8 is checked here, so that a bad
            // message is dropped whole, fragmented or not.
            Message::Binary(b) if conn.ws.get_mut().next_kind() == Kind::Text => match std::str::from_utf8(&b) {
                Ok(text) => pending.extend(session.on_text(text, &self.ids, now)),
                Err(_) => {
                    session.on_frame(now);
                    self.log_junk(&format!(
                        "dropped a text message that is not UTF-8: {}",
                        escape_bytes(&b, JUNK_HEAD_CHARS)
                    ));
                }
            },
            Message::Binary(b) => {
                session.on_frame(now);
                self.log_junk(&format!(
                    "dropped a binary frame of {} bytes (the protocol is JSON text): {}",
                    b.len(),
                    escape_bytes(&b, JUNK_HEAD_CHARS)
                ));
            }
            Message::Close(frame) => {
                // tungstenite has queued our close reply; send it before going.
                let _ = conn.ws.flush();
                let why = frame
                    .map_or_else(|| "no code".to_string(), |f| format!("{} {}", u16::from(f.code), escape(&f.reason)));
                return Some(Outcome::Lost(Lost::ClosedByGateway(why.trim().to_string())));
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => session.on_frame(now),
        }
        None
    }
}
