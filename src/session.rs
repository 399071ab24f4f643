//! One connection's protocol state, from login to close: PROTOCOL.md §3, §4 and §6 without IO.
//!
//! The runner feeds it events with the current time and carries out the [`Action`]s it
//! returns. Everything time-related is decided here against the `now` it is given, so the
//! unit tests drive it with a fake clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::protocol::escape;
use crate::protocol::{self, ActIds, Identity, Inbound, Junk, Query};

/// How much of a dropped frame its log line shows: enough to recognise it.
const JUNK_HEAD_CHARS: usize = 80;

#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub login_timeout: Duration,
}

/// Answers held while the login is pending, at most this many and this many bytes (a
/// gateway that floods queries before answering the login gets the oldest ones dropped).
/// The newest answer is always kept, however large: it fits the output buffer by itself.
const MAX_HELD_ANSWERS: usize = 256;
const MAX_HELD_BYTES: usize = 1 << 20;

/// Why a session ended; the runner logs it and picks the backoff from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The gateway answered the login with a code other than 0: wait at least
    /// `reconnect.max` before trying again.
    LoginRejected { code: Option<i64>, description: String },
    /// No login `return` within `login_timeout`.
    LoginTimeout,
    /// No frame of any kind for `heartbeat.timeout`: half-open or dead gateway.
    Dead { silent_for: Duration },
    /// Frames still arrive (pings), but no heartbeat has been answered for
    /// `heartbeat.timeout`: the gateway's WebSocket layer is alive, its application is not
    /// (PROTOCOL.md §4).
    HeartbeatsUnanswered { unanswered_for: Duration, sent: u32 },
    /// The gateway refused a heartbeat: it no longer knows this session; log in again.
    HeartbeatRejected { code: Option<i64>, description: String },
}

impl End {
    /// A short class, so that logs can tell "the same failure again" from a new one.
    pub fn kind(&self) -> &'static str {
        match self {
            End::LoginRejected { .. } => "login-rejected",
            End::LoginTimeout => "login-timeout",
            End::Dead { .. } => "dead",
            End::HeartbeatsUnanswered { .. } => "heartbeats-unanswered",
            End::HeartbeatRejected { .. } => "heartbeat-rejected",
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::LoginRejected { code, description } => {
                write!(f, "login rejected by the gateway (code {}): {}", show_code(*code), escape::escape(description))
            }
            End::LoginTimeout => f.write_str("no answer to the login in time"),
            End::Dead { silent_for } => write!(f, "no frame from the gateway for {:.1}s", silent_for.as_secs_f64()),
            End::HeartbeatsUnanswered { unanswered_for, sent } => write!(
                f,
                "no heartbeat answered for {:.1}s ({sent} sent) although the connection is alive: the gateway's \
                 application is gone; reconnecting",
                unanswered_for.as_secs_f64()
            ),
            End::HeartbeatRejected { code, description } => {
                write!(
                    f,
                    "heartbeat refused by the gateway (code {}): {}",
                    show_code(*code),
                    escape::escape(description)
                )
            }
        }
    }
}

fn show_code(code: Option<i64>) -> String {
    code.map_or_else(|| "missing".into(), |c| c.to_string())
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this text frame.
    Send(String),
    /// Answer this query (through the probe workers; the answer comes back via
    /// [`Session::answer`]).
    Dispatch(Query),
    /// Drop this frame and log it (rate-limited), with the head of the frame, escaped.
    Junk(Junk, String),
    /// The login was accepted.
    LoggedIn,
    /// The first heartbeat after login was answered: the reconnect backoff may reset.
    Established,
    /// The gateway acknowledged this warning (`return`, action `warning`, code 0).
    WarningAcked(String),
    /// The gateway answered this warning with an error: it stays spooled and is resent.
    WarningRefused { act_id: String, code: Option<i64>, description: String },
    /// An answer held for after login was dropped: the gateway sent more than
    /// [`MAX_HELD_ANSWERS`] queries before answering the login. Log it (rate-limited).
    DroppedHeldAnswer,
    /// Close the connection with this WebSocket close code, then end the session.
    Close { code: u16, end: End },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    LoggingIn {
        act_id: String,
        deadline: Instant,
    },
    Up {
        next_heartbeat: Instant,
        first_heartbeat: Option<String>,
        /// The oldest heartbeat sent since the gateway last answered one, and how many
        /// have been sent since: unanswered for `heartbeat.timeout`, the session is over.
        unanswered: Option<(Instant, u32)>,
    },
    Closed,
}

#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    id: Identity,
    phase: Phase,
    last_frame: Instant,
    held: VecDeque<String>,
    /// Bytes of `held`.
    held_bytes: usize,
}

impl Session {
    /// Opens the session: the login is the first and only thing sent until its `return`.
    pub fn start(cfg: SessionConfig, id: Identity, token: &str, ids: &ActIds, now: Instant) -> (Session, Vec<Action>) {
        let act_id = ids.next();
        let login = protocol::encode_login(&id, &act_id, token);
        // The act_id only: the login frame holds the token.
        log::debug!("login {act_id} sent as {}", id.hardware_id);
        let phase = Phase::LoggingIn { act_id, deadline: now + cfg.login_timeout };
        (Session { cfg, id, phase, last_frame: now, held: VecDeque::new(), held_bytes: 0 }, vec![Action::Send(login)])
    }

    /// New timings from a reloaded config. A shorter heartbeat interval applies at once; a
    /// longer one from the next heartbeat on.
    pub fn reconfigure(&mut self, cfg: SessionConfig, now: Instant) {
        self.cfg = cfg;
        if let Phase::Up { next_heartbeat, .. } = &mut self.phase {
            *next_heartbeat = (*next_heartbeat).min(now + cfg.heartbeat_interval);
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Up { .. })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Any frame (text, binary, ping, pong) proves the connection alive.
    pub(crate) fn on_frame(&mut self, now: Instant) {
        self.last_frame = self.last_frame.max(now);
    }

    pub fn on_text(&mut self, text: &str, ids: &ActIds, now: Instant) -> Vec<Action> {
        self.on_frame(now);
        if self.is_closed() {
            return Vec::new();
        }
        match protocol::decode(text) {
            Err(junk) => vec![Action::Junk(junk, escape::escape_to(text, JUNK_HEAD_CHARS))],
            Ok(Inbound::Query(q)) => {
                self.application_alive();
                vec![Action::Dispatch(q)]
            }
            Ok(Inbound::Return(r)) => {
                self.application_alive();
                self.on_return(r, ids, now)
            }
        }
    }

    /// A message only the gateway's application writes (a query, a return) shows it
    /// alive as well as a heartbeat's answer does: a gateway busy sending a flood of
    /// queries queues its heartbeat answers behind them, and is not gone. Pings and junk
    /// do not count: a proxy or a WebSocket library sends those by itself.
    fn application_alive(&mut self) {
        if let Phase::Up { unanswered, .. } = &mut self.phase {
            *unanswered = None;
        }
    }

    fn on_return(&mut self, r: protocol::Return, ids: &ActIds, now: Instant) -> Vec<Action> {
        match (&mut self.phase, r.action.as_str()) {
            (Phase::LoggingIn { act_id, .. }, "start") if r.act_id == *act_id || r.act_id.is_empty() => {
                if !r.is_ok() {
                    return self.close(1000, End::LoginRejected { code: r.code, description: r.description });
                }
                log::debug!("login {act_id} accepted");
                self.phase = Phase::Up {
                    next_heartbeat: now + self.cfg.heartbeat_interval,
                    first_heartbeat: None,
                    unanswered: None,
                };
                let mut actions = vec![Action::LoggedIn];
                self.held_bytes = 0;
                actions.extend(self.held.drain(..).map(Action::Send));
                // A session that logs in after a long login still keeps its heartbeat due.
                actions.extend(self.on_tick(ids, now));
                actions
            }
            (Phase::Up { first_heartbeat, .. }, "heartbeat") => {
                if !r.is_ok() {
                    return self.close(1000, End::HeartbeatRejected { code: r.code, description: r.description });
                }
                log::debug!("heartbeat {} answered", crate::logging::escape(&r.act_id));
                if first_heartbeat.as_deref() == Some(r.act_id.as_str()) {
                    *first_heartbeat = Some(String::new());
                    return vec![Action::Established];
                }
                Vec::new()
            }
            // Action and update results (PROTOCOL.md §8, §9), the ends of episodes and
            // recovery reports (§9) go through the same outbox as warnings and are
            // acknowledged the same way.
            (Phase::Up { .. }, "warning" | "action_result" | "update_result" | "warning_cleared" | "recovery") => {
                if r.is_ok() {
                    vec![Action::WarningAcked(r.act_id)]
                } else {
                    vec![Action::WarningRefused { act_id: r.act_id, code: r.code, description: r.description }]
                }
            }
            // Returns to something we no longer wait for (a late login answer, an old
            // heartbeat) carry no news.
            _ => Vec::new(),
        }
    }

    /// Time passed: login timeout, heartbeat due, dead connection.
    pub fn on_tick(&mut self, ids: &ActIds, now: Instant) -> Vec<Action> {
        let silent_for = now.saturating_duration_since(self.last_frame);
        match &mut self.phase {
            Phase::Closed => Vec::new(),
            Phase::LoggingIn { deadline, .. } => {
                if now >= *deadline {
                    self.close(1000, End::LoginTimeout)
                } else {
                    Vec::new()
                }
            }
            Phase::Up { next_heartbeat, first_heartbeat, unanswered } => {
                if silent_for >= self.cfg.heartbeat_timeout {
                    return self.close(1000, End::Dead { silent_for });
                }
                // Pings keep `last_frame` fresh; only answers show the application alive.
                if let Some((since, sent)) = *unanswered {
                    let unanswered_for = now.saturating_duration_since(since);
                    if unanswered_for >= self.cfg.heartbeat_timeout {
                        return self.close(1000, End::HeartbeatsUnanswered { unanswered_for, sent });
                    }
                }
                if now < *next_heartbeat {
                    return Vec::new();
                }
                let act_id = ids.next();
                let (since, sent) = unanswered.unwrap_or((now, 0));
                *unanswered = Some((since, sent + 1));
                if first_heartbeat.is_none() {
                    *first_heartbeat = Some(act_id.clone());
                }
                // Keep the schedule (no drift); after a stall, start again from now rather
                // than sending a burst of missed heartbeats.
                *next_heartbeat += self.cfg.heartbeat_interval;
                if *next_heartbeat <= now {
                    *next_heartbeat = now + self.cfg.heartbeat_interval;
                }
                log::debug!("heartbeat {act_id} sent");
                vec![Action::Send(protocol::encode_heartbeat(&self.id, &act_id))]
            }
        }
    }

    /// A finished answer (already encoded): sent now if logged in, else held until login.
    pub fn answer(&mut self, text: String) -> Vec<Action> {
        match self.phase {
            Phase::Up { .. } => vec![Action::Send(text)],
            Phase::LoggingIn { .. } => {
                self.held_bytes += text.len();
                self.held.push_back(text);
                let mut dropped = false;
                while self.held.len() > 1 && (self.held.len() > MAX_HELD_ANSWERS || self.held_bytes > MAX_HELD_BYTES) {
                    let old = self.held.pop_front().unwrap_or_default();
                    self.held_bytes -= old.len();
                    dropped = true;
                }
                if dropped { vec![Action::DroppedHeldAnswer] } else { Vec::new() }
            }
            Phase::Closed => Vec::new(),
        }
    }

    /// When `on_tick` next has something to do; the runner sleeps until then at most.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let dead_at = self.last_frame + self.cfg.heartbeat_timeout;
        match &self.phase {
            Phase::Closed => None,
            Phase::LoggingIn { deadline, .. } => Some(*deadline),
            Phase::Up { next_heartbeat, unanswered, .. } => {
                let given_up_at = unanswered.map(|(since, _)| since + self.cfg.heartbeat_timeout);
                Some([Some(*next_heartbeat), Some(dead_at), given_up_at].into_iter().flatten().min().unwrap_or(dead_at))
            }
        }
    }

    fn close(&mut self, code: u16, end: End) -> Vec<Action> {
        self.phase = Phase::Closed;
        self.held.clear();
        self.held_bytes = 0;
        vec![Action::Close { code, end }]
    }
}

#[cfg(test)]
mod tests;
