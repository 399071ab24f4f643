//! The state-change log policy of the gateway link: a lost connection and the first failure
//! of a kind at warn, the same failure again at debug, a rejected login at error, and one
//! line when logged in again. Apart from the loop so the policy reads on its own.

use std::time::Duration;

use log::{debug, error, info, warn};

use super::Outcome;
use crate::net::url::GatewayUrl;
use crate::protocol::escape::escape;
use crate::session::End;

/// What kind of failure ended the last attempt: a repetition of the same kind is logged
/// quietly. A rejected login is its own kind per description, so a changed answer from the
/// gateway is logged again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FailureKind {
    Named(&'static str),
    Rejected(String),
}

/// Logs connection state changes, not repetitions.
#[derive(Debug, Default)]
pub(super) struct LinkLog {
    up: bool,
    ever_up: bool,
    failures: u32,
    last_kind: Option<FailureKind>,
}

fn attempts(n: u32) -> String {
    if n == 1 { "1 failed attempt".into() } else { format!("{n} failed attempts") }
}

impl LinkLog {
    pub(super) fn logged_in(&mut self, url: &GatewayUrl) {
        let again = if self.ever_up { "connected again to" } else { "logged in to" };
        match self.failures {
            0 => info!("{again} {url}"),
            n => info!("{again} {url} after {}", attempts(n)),
        }
        (self.up, self.ever_up, self.failures, self.last_kind) = (true, true, 0, None);
    }

    /// Logs how a connection or attempt ended; returns the line for systemd's STATUS.
    pub(super) fn ended(&mut self, url: &GatewayUrl, ended: &Outcome, wait: Duration) -> String {
        let (kind, text) = match ended {
            Outcome::Stop => return "stopping".into(),
            Outcome::Reload => return "reloading".into(),
            Outcome::ConnectFailed(e) => (FailureKind::Named(e.kind()), e.to_string()),
            Outcome::Session(end @ End::LoginRejected { description, .. }) => {
                (FailureKind::Rejected(escape(description)), end.to_string())
            }
            Outcome::Session(end) => (FailureKind::Named(end.kind()), end.to_string()),
            Outcome::Lost(why) => (FailureKind::Named("lost"), why.to_string()),
        };
        let rejected = matches!(kind, FailureKind::Rejected(_));
        let next = format!("next attempt in {:.1}s", wait.as_secs_f64());
        if std::mem::take(&mut self.up) {
            warn!("connection to {url} lost: {text}; {next}");
        } else if self.last_kind.as_ref() == Some(&kind) {
            self.failures += 1;
            debug!("{url}: {text} ({} in a row); {next}", attempts(self.failures));
        } else if rejected {
            self.failures += 1;
            error!("{url}: {text}; check device.token and device.hardware_id; {next}");
        } else {
            self.failures += 1;
            warn!("{url}: {text}; {next}");
        }
        let status = if rejected {
            format!("login rejected by {url}, next attempt in {:.0}s: {text}", wait.as_secs_f64().ceil())
        } else {
            format!("gateway unreachable, next attempt in {:.0}s: {text}", wait.as_secs_f64().ceil())
        };
        self.last_kind = Some(kind);
        status
    }
}
