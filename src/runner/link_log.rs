//! The state-change log policy of the gateway link: a lost connection and the first failure
//! of a kind at warn, the same failure again at debug with a reminder every
//! [`REMIND_EVERY`] at the first line's level (so `journalctl -f` still tells a story that
//! lasts hours), a rejected login at error, one line when logged in again, and the
//! subprotocol outcome once per change. Apart from the loop so the policy reads on its own,
//! and driven by the times it is given, so its tests use a fake clock.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use log::Level;

use super::Outcome;
use crate::config::url::GatewayUrl;
use crate::logging::utc_timestamp;
use crate::net::upgrade::Subprotocol;
use crate::protocol::escape::escape;
use crate::session::End;

/// How often a failure that keeps repeating is said again at its first line's level. A
/// wrong token is retried every `reconnect.max` to 1.5 × that (60 to 90 s by default): a
/// reminder about every tenth attempt, not one line per attempt.
pub(super) const REMIND_EVERY: Duration = Duration::from_secs(600);

/// What kind of failure ended the last attempt: a repetition of the same kind is logged
/// quietly. A rejected login is its own kind per description, so a changed answer from the
/// gateway is logged again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FailureKind {
    Named(&'static str),
    Rejected(String),
}

/// The failure that keeps happening, since when, and when it was last said out loud.
#[derive(Debug, Clone)]
struct Run {
    kind: FailureKind,
    attempts: u32,
    since: SystemTime,
    said_at: Instant,
}

/// One log line the policy decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) level: Level,
    pub(super) text: String,
}

impl Line {
    fn new(level: Level, text: String) -> Option<Line> {
        Some(Line { level, text })
    }

    /// Logs it.
    pub(super) fn say(line: Option<Line>) {
        if let Some(l) = line {
            log::log!(l.level, "{}", l.text);
        }
    }
}

/// Logs connection state changes, not repetitions.
#[derive(Debug, Default)]
pub(super) struct LinkLog {
    up: bool,
    ever_up: bool,
    /// Failed attempts since the last login, of any kind.
    failures: u32,
    run: Option<Run>,
    /// Per gateway URL, the subprotocol outcome last said.
    subprotocols: HashMap<String, Subprotocol>,
}

fn attempts(n: u32) -> String {
    if n == 1 { "1 failed attempt".into() } else { format!("{n} failed attempts") }
}

impl LinkLog {
    pub(super) fn logged_in(&mut self, url: &GatewayUrl) -> Option<Line> {
        let again = if self.ever_up { "connected again to" } else { "logged in to" };
        let text = match self.failures {
            0 => format!("{again} {url}"),
            n => format!("{again} {url} after {}", attempts(n)),
        };
        (self.up, self.ever_up, self.failures, self.run) = (true, true, 0, None);
        Line::new(Level::Info, text)
    }

    /// What came of the subprotocol on a new connection: said when it changes for this URL,
    /// not at every reconnect.
    pub(super) fn upgraded(&mut self, url: &GatewayUrl, sub: &Subprotocol) -> Option<Line> {
        let before = self.subprotocols.insert(url.as_str().to_string(), sub.clone());
        if before.as_ref() == Some(sub) {
            return None;
        }
        match sub {
            Subprotocol::NoneSelected(offered) => Line::new(
                Level::Warn,
                format!(
                    "{url} selected no subprotocol (the agent offered {:?}, gateway.subprotocol); going on without \
                     one, as RFC 6455 allows. Make the gateway select it, or remove gateway.subprotocol",
                    escape(offered)
                ),
            ),
            Subprotocol::Selected(p) if matches!(before, Some(Subprotocol::NoneSelected(_))) => {
                Line::new(Level::Info, format!("{url} now selects subprotocol {:?}", escape(p)))
            }
            _ => None,
        }
    }

    /// How a connection or attempt ended, at `now` (`wall` the same moment on the clock): the
    /// line to log, if any, and the line for systemd's STATUS.
    pub(super) fn ended(
        &mut self,
        url: &GatewayUrl,
        ended: &Outcome,
        wait: Duration,
        now: Instant,
        wall: SystemTime,
    ) -> (Option<Line>, String) {
        let (kind, text) = match ended {
            Outcome::Stop => return (None, "stopping".into()),
            Outcome::Reload => return (None, "reloading".into()),
            Outcome::ConnectFailed(e) => (FailureKind::Named(e.kind()), e.to_string()),
            Outcome::Session(end @ End::LoginRejected { description, .. }) => {
                (FailureKind::Rejected(escape(description)), end.to_string())
            }
            Outcome::Session(end) => (FailureKind::Named(end.kind()), end.to_string()),
            Outcome::Lost(why) => (FailureKind::Named("lost"), why.to_string()),
        };
        let rejected = matches!(kind, FailureKind::Rejected(_));
        let next = format!("next attempt in {:.1}s", wait.as_secs_f64());
        let status = if rejected {
            format!("login rejected by {url}, next attempt in {:.0}s: {text}", wait.as_secs_f64().ceil())
        } else {
            format!("gateway unreachable, next attempt in {:.0}s: {text}", wait.as_secs_f64().ceil())
        };
        if std::mem::take(&mut self.up) {
            self.run = Some(Run { kind: FailureKind::Named("lost"), attempts: 0, since: wall, said_at: now });
            return (Line::new(Level::Warn, format!("connection to {url} lost: {text}; {next}")), status);
        }
        self.failures += 1;
        let level = if rejected { Level::Error } else { Level::Warn };
        if let Some(run) = self.run.as_mut().filter(|r| r.kind == kind) {
            run.attempts += 1;
            if now.saturating_duration_since(run.said_at) < REMIND_EVERY {
                let line = format!("{url}: {text} ({} in a row); {next}", attempts(self.failures));
                return (Line::new(Level::Debug, line), status);
            }
            run.said_at = now;
            let still = if rejected { "still rejected" } else { "still failing" };
            let n = run.attempts;
            let line = format!(
                "{url}: {still}: {text}; {n} attempt{} since {}; {next}",
                if n == 1 { "" } else { "s" },
                utc_timestamp(run.since)
            );
            return (Line::new(level, line), status);
        }
        self.run = Some(Run { kind, attempts: 1, since: wall, said_at: now });
        let line = if rejected {
            format!("{url}: {text}; check device.token and device.hardware_id; {next}")
        } else {
            format!("{url}: {text}; {next}")
        };
        (Line::new(level, line), status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn url() -> GatewayUrl {
        GatewayUrl::parse("wss://gw.example.net/ws").unwrap()
    }

    fn rejected() -> Outcome {
        Outcome::Session(End::LoginRejected { code: Some(4), description: "bad token".into() })
    }

    #[test]
    fn a_login_rejected_for_hours_is_said_again_every_ten_minutes_with_a_count_and_a_start() {
        let mut log = LinkLog::default();
        let (t0, wall0) = (Instant::now(), UNIX_EPOCH + Duration::from_secs(1_764_040_320));
        let every = Duration::from_secs(75);
        let mut said = Vec::new();
        for i in 0..60u32 {
            let (line, status) = log.ended(&url(), &rejected(), every, t0 + every * i, wall0 + every * i);
            let line = line.unwrap();
            assert!(status.starts_with("login rejected by wss://gw.example.net/ws"), "{status}");
            if line.level <= Level::Info {
                said.push((i, line));
            }
        }
        // The first at error level, then one every ten minutes (every 8th attempt at 75 s).
        let at: Vec<u32> = said.iter().map(|(i, _)| *i).collect();
        assert_eq!(at, [0, 8, 16, 24, 32, 40, 48, 56]);
        assert!(said.iter().all(|(_, l)| l.level == Level::Error), "{said:?}");
        assert!(said[0].1.text.contains("check device.token"), "{}", said[0].1.text);
        assert_eq!(
            said[1].1.text,
            "wss://gw.example.net/ws: still rejected: login rejected by the gateway (code 4): bad token; 9 attempts \
             since 2025-11-25T03:12:00Z; next attempt in 75.0s"
        );
    }

    #[test]
    fn a_changed_failure_is_said_at_once_and_a_login_ends_the_run() {
        let mut log = LinkLog::default();
        let (t0, wall) = (Instant::now(), UNIX_EPOCH);
        let lost = Outcome::Lost(crate::net::connection::Lost::Closed);
        assert_eq!(log.ended(&url(), &lost, Duration::ZERO, t0, wall).0.unwrap().level, Level::Warn);
        assert_eq!(log.ended(&url(), &rejected(), Duration::ZERO, t0, wall).0.unwrap().level, Level::Error);
        assert_eq!(log.ended(&url(), &rejected(), Duration::ZERO, t0, wall).0.unwrap().level, Level::Debug);
        let line = log.logged_in(&url()).unwrap();
        assert_eq!(line.text, "logged in to wss://gw.example.net/ws after 3 failed attempts");
        let again = log.ended(&url(), &rejected(), Duration::ZERO, t0, wall).0.unwrap();
        assert_eq!(again.level, Level::Warn, "the connection was up: its loss is news");
    }

    #[test]
    fn a_gateway_that_selects_no_subprotocol_is_said_once_per_change_not_per_reconnect() {
        let mut log = LinkLog::default();
        let none = Subprotocol::NoneSelected("rig.v1".into());
        let line = log.upgraded(&url(), &none).unwrap();
        assert_eq!(line.level, Level::Warn);
        assert!(line.text.contains("selected no subprotocol (the agent offered \"rig.v1\""), "{}", line.text);
        assert_eq!(log.upgraded(&url(), &none), None, "a reconnect to the same gateway says nothing");
        let now = log.upgraded(&url(), &Subprotocol::Selected("rig.v1".into())).unwrap();
        assert_eq!(now.text, "wss://gw.example.net/ws now selects subprotocol \"rig.v1\"");
        assert!(log.upgraded(&url(), &none).is_some(), "a change back is said again");
        assert_eq!(LinkLog::default().upgraded(&url(), &Subprotocol::NotOffered), None);
        assert_eq!(LinkLog::default().upgraded(&url(), &Subprotocol::Selected("x".into())), None);
    }
}
