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
    LoggingIn { act_id: String, deadline: Instant },
    Up { next_heartbeat: Instant, first_heartbeat: Option<String> },
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

    pub fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Up { .. })
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Any frame (text, binary, ping, pong) proves the connection alive.
    pub fn on_frame(&mut self, now: Instant) {
        self.last_frame = self.last_frame.max(now);
    }

    pub fn on_text(&mut self, text: &str, ids: &ActIds, now: Instant) -> Vec<Action> {
        self.on_frame(now);
        if self.is_closed() {
            return Vec::new();
        }
        match protocol::decode(text) {
            Err(junk) => vec![Action::Junk(junk, escape::escape_to(text, JUNK_HEAD_CHARS))],
            Ok(Inbound::Query(q)) => vec![Action::Dispatch(q)],
            Ok(Inbound::Return(r)) => self.on_return(r, ids, now),
        }
    }

    fn on_return(&mut self, r: protocol::Return, ids: &ActIds, now: Instant) -> Vec<Action> {
        match (&mut self.phase, r.action.as_str()) {
            (Phase::LoggingIn { act_id, .. }, "start") if r.act_id == *act_id || r.act_id.is_empty() => {
                if !r.is_ok() {
                    return self.close(1000, End::LoginRejected { code: r.code, description: r.description });
                }
                log::debug!("login {act_id} accepted");
                self.phase = Phase::Up { next_heartbeat: now + self.cfg.heartbeat_interval, first_heartbeat: None };
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
            // Action results go through the same outbox as warnings and are acknowledged the
            // same way (PROTOCOL.md §8).
            (Phase::Up { .. }, "warning" | "action_result") => {
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
            Phase::Up { next_heartbeat, first_heartbeat } => {
                if silent_for >= self.cfg.heartbeat_timeout {
                    return self.close(1000, End::Dead { silent_for });
                }
                if now < *next_heartbeat {
                    return Vec::new();
                }
                let act_id = ids.next();
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
    pub fn next_deadline(&self) -> Option<Instant> {
        let dead_at = self.last_frame + self.cfg.heartbeat_timeout;
        match &self.phase {
            Phase::Closed => None,
            Phase::LoggingIn { deadline, .. } => Some(*deadline),
            Phase::Up { next_heartbeat, .. } => Some((*next_heartbeat).min(dead_at)),
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
mod tests {
    use super::*;
    use serde_json::Value;

    const MS: Duration = Duration::from_millis(1);

    fn cfg() -> SessionConfig {
        SessionConfig { heartbeat_interval: 30_000 * MS, heartbeat_timeout: 90_000 * MS, login_timeout: 10_000 * MS }
    }

    struct Clock {
        t0: Instant,
        ids: ActIds,
    }

    impl Clock {
        fn new() -> Clock {
            Clock { t0: Instant::now(), ids: ActIds::with_prefix("abcd0123") }
        }
        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }
        fn start(&self) -> (Session, Vec<Action>) {
            let id = Identity { hardware_id: "rig-1".into(), name: "rig-1".into() };
            Session::start(cfg(), id, "tok", &self.ids, self.t0)
        }
        fn logged_in(&self) -> Session {
            let (mut s, _) = self.start();
            let a = s.on_text(&ret("start", "abcd0123-1", 0), &self.ids, self.at(5));
            assert_eq!(a[0], Action::LoggedIn);
            s
        }
    }

    fn ret(action: &str, act_id: &str, code: i64) -> String {
        format!(r#"{{"act":"return","action":"{action}","act_id":"{act_id}","code":{code},"description":"d"}}"#)
    }

    fn sent(actions: &[Action]) -> Vec<Value> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(t) => Some(serde_json::from_str(t).unwrap()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn login_is_the_first_message_and_nothing_else_goes_out_before_its_return() {
        let c = Clock::new();
        let (mut s, a) = c.start();
        let out = sent(&a);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["act"], "start");
        assert_eq!(out[0]["act_id"], "abcd0123-1");
        // A query answer and the heartbeat time passing do not send anything yet.
        assert!(s.answer("{\"act\":\"x\"}".into()).is_empty());
        assert!(sent(&s.on_tick(&c.ids, c.at(9_000))).is_empty());
        let a = s.on_text(&ret("start", "abcd0123-1", 0), &c.ids, c.at(9_500));
        assert_eq!(a[0], Action::LoggedIn);
        assert_eq!(sent(&a)[0]["act"], "x", "the held answer goes out after login");
    }

    #[test]
    fn answers_held_before_login_are_bounded_and_a_drop_is_reported() {
        let c = Clock::new();
        let (mut s, _) = c.start();
        for i in 0..MAX_HELD_ANSWERS {
            assert!(s.answer(format!("{{\"n\":{i}}}")).is_empty());
        }
        assert_eq!(s.answer("{\"n\":-1}".into()), vec![Action::DroppedHeldAnswer]);
        let a = s.on_text(&ret("start", "abcd0123-1", 0), &c.ids, c.at(5));
        let out = sent(&a);
        assert_eq!(out.len(), MAX_HELD_ANSWERS);
        assert_eq!(out[0]["n"], 1, "the oldest was dropped");
        assert_eq!(out.last().unwrap()["n"], -1);
    }

    #[test]
    fn answers_held_before_login_are_bounded_in_bytes_keeping_the_newest() {
        let c = Clock::new();
        let (mut s, _) = c.start();
        let answer = |i: usize| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(100_000));
        let mut drops = 0;
        for i in 0..30 {
            drops += s.answer(answer(i)).len();
        }
        assert_eq!(drops, 30 - 10, "ten answers of ~100 KB fit in 1 MiB");
        let out = sent(&s.on_text(&ret("start", "abcd0123-1", 0), &c.ids, c.at(5)));
        assert_eq!(out.len(), 10);
        assert_eq!((out[0]["n"].as_u64(), out[9]["n"].as_u64()), (Some(20), Some(29)));
        // One answer larger than the cap is still kept: the newest always is.
        let (mut s, _) = c.start();
        assert!(s.answer("y".repeat(2 << 20)).is_empty());
        assert_eq!(s.answer("z".repeat(2 << 20)), vec![Action::DroppedHeldAnswer]);
    }

    #[test]
    fn a_rejected_login_closes_with_1000_and_keeps_the_description() {
        let c = Clock::new();
        let (mut s, _) = c.start();
        let a = s.on_text(&ret("start", "abcd0123-1", 5), &c.ids, c.at(10));
        assert_eq!(
            a,
            vec![Action::Close { code: 1000, end: End::LoginRejected { code: Some(5), description: "d".into() } }]
        );
        assert!(s.is_closed());
    }

    #[test]
    fn a_rejection_description_is_shown_escaped_and_capped() {
        let end = End::LoginRejected { code: Some(4), description: format!("x\n<0>kernel: {}", "z".repeat(500)) };
        let shown = end.to_string();
        assert!(shown.starts_with("login rejected by the gateway (code 4): x\\n<0>kernel: zzz"), "{shown}");
        assert!(!shown.contains('\n'));
        assert!(shown.len() < 300 && shown.ends_with('…'), "{shown}");
    }

    #[test]
    fn no_login_return_within_login_timeout_ends_the_session() {
        let c = Clock::new();
        let (mut s, _) = c.start();
        assert_eq!(s.next_deadline(), Some(c.at(10_000)));
        assert!(s.on_tick(&c.ids, c.at(9_999)).is_empty());
        assert_eq!(s.on_tick(&c.ids, c.at(10_000)), vec![Action::Close { code: 1000, end: End::LoginTimeout }]);
    }

    #[test]
    fn heartbeats_go_out_every_interval_on_schedule() {
        let c = Clock::new();
        let mut s = c.logged_in();
        let mut times = Vec::new();
        let mut t = 5;
        while t < 200_000 {
            for m in sent(&s.on_tick(&c.ids, c.at(t))) {
                assert_eq!(m["act"], "heartbeat");
                assert_eq!(m["hardware_id"], "rig-1");
                times.push(t);
                // The gateway answers, keeping the connection alive.
                s.on_text(&ret("heartbeat", m["act_id"].as_str().unwrap(), 0), &c.ids, c.at(t + 1));
            }
            t += 7; // ticks at odd times: the schedule must not drift with them
        }
        assert_eq!(times.len(), 6);
        for (i, t) in times.iter().enumerate() {
            let due = 5 + 30_000 * (i as u64 + 1);
            assert!(*t >= due && *t < due + 7, "heartbeat {i} at {t}, due {due}");
        }
    }

    #[test]
    fn the_first_answered_heartbeat_establishes_the_session_once() {
        let c = Clock::new();
        let mut s = c.logged_in();
        let hb = sent(&s.on_tick(&c.ids, c.at(30_005)));
        let id = hb[0]["act_id"].as_str().unwrap().to_string();
        assert_eq!(s.on_text(&ret("heartbeat", &id, 0), &c.ids, c.at(30_010)), vec![Action::Established]);
        assert!(s.on_text(&ret("heartbeat", &id, 0), &c.ids, c.at(30_011)).is_empty());
    }

    #[test]
    fn silence_for_heartbeat_timeout_means_dead() {
        let c = Clock::new();
        let mut s = c.logged_in();
        // Heartbeats go out but nothing comes back.
        let mut t = 5;
        let end = loop {
            t += 100;
            if let Some(Action::Close { end, .. }) =
                s.on_tick(&c.ids, c.at(t)).into_iter().find(|a| matches!(a, Action::Close { .. }))
            {
                break end;
            }
        };
        assert!(matches!(end, End::Dead { .. }));
        assert!((90_005..=90_105).contains(&t), "declared dead at {t}");
    }

    #[test]
    fn any_frame_keeps_the_connection_alive() {
        let c = Clock::new();
        let mut s = c.logged_in();
        for t in (0..300_000).step_by(1_000) {
            s.on_frame(c.at(t)); // pings, say
            let a = s.on_tick(&c.ids, c.at(t));
            assert!(!a.iter().any(|a| matches!(a, Action::Close { .. })), "closed at {t}");
        }
    }

    #[test]
    fn next_deadline_is_the_earlier_of_heartbeat_and_death() {
        let c = Clock::new();
        let s = c.logged_in();
        assert_eq!(s.next_deadline(), Some(c.at(30_005)));
    }

    #[test]
    fn queries_are_dispatched_and_junk_is_reported_without_closing() {
        let c = Clock::new();
        let mut s = c.logged_in();
        let a = s.on_text(r#"{"act":"get_agent_info","act_code":"q1"}"#, &c.ids, c.at(10));
        assert!(matches!(&a[0], Action::Dispatch(q) if q.echo.act == "get_agent_info"));
        let a = s.on_text("not json", &c.ids, c.at(11));
        assert!(matches!(&a[0], Action::Junk(Junk::NotJson(_), head) if head == "not json"));
        let a = s.on_text("x\n<0>kernel: panic", &c.ids, c.at(12));
        assert!(matches!(&a[0], Action::Junk(_, head) if head == "x\\n<0>kernel: panic"), "{a:?}");
        assert!(s.is_up());
    }

    #[test]
    fn a_warning_return_acknowledges_or_refuses_that_warning() {
        let c = Clock::new();
        let mut s = c.logged_in();
        assert_eq!(s.on_text(&ret("warning", "w-9", 0), &c.ids, c.at(10)), vec![Action::WarningAcked("w-9".into())]);
        assert!(matches!(
            &s.on_text(&ret("warning", "w-9", 5), &c.ids, c.at(11))[0],
            Action::WarningRefused { code: Some(5), .. }
        ));
    }

    #[test]
    fn a_shorter_heartbeat_interval_applies_at_once() {
        let c = Clock::new();
        let mut s = c.logged_in();
        assert_eq!(s.next_deadline(), Some(c.at(30_005)));
        s.reconfigure(SessionConfig { heartbeat_interval: Duration::from_secs(5), ..cfg() }, c.at(1_000));
        assert_eq!(s.next_deadline(), Some(c.at(6_000)));
        s.reconfigure(SessionConfig { heartbeat_interval: Duration::from_secs(60), ..cfg() }, c.at(2_000));
        assert_eq!(s.next_deadline(), Some(c.at(6_000)), "a longer one waits for the next heartbeat");
    }

    #[test]
    fn a_refused_heartbeat_closes_so_the_agent_logs_in_again() {
        let c = Clock::new();
        let mut s = c.logged_in();
        let hb = sent(&s.on_tick(&c.ids, c.at(30_005)));
        let a = s.on_text(&ret("heartbeat", hb[0]["act_id"].as_str().unwrap(), 9), &c.ids, c.at(30_010));
        assert!(matches!(&a[0], Action::Close { end: End::HeartbeatRejected { .. }, .. }));
    }

    #[test]
    fn after_a_stall_heartbeats_resume_without_a_burst() {
        let c = Clock::new();
        let mut s = c.logged_in();
        s.on_frame(c.at(80_000));
        let a = sent(&s.on_tick(&c.ids, c.at(80_000)));
        assert_eq!(a.len(), 1, "one heartbeat, not the two that were missed");
        assert!(sent(&s.on_tick(&c.ids, c.at(80_001))).is_empty());
        assert_eq!(s.next_deadline(), Some(c.at(110_000)));
    }
}
