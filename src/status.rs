//! What the agent knows about itself, for `get_agent_info` and the logs. Written by the
//! runner, read by the probe workers.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

#[derive(Debug)]
pub struct AgentStatus {
    started_at: u64,
    config_file: PathBuf,
    link: Mutex<Link>,
    /// Which kernel event sources are live (for `get_agent_info`); unset before they start.
    event_sources: Mutex<Option<std::sync::Arc<crate::events::source_status::SourcesStatus>>>,
    /// Whether the rig is in maintenance: no update starts. Set by [`AgentStatus::set_maintenance`].
    maintenance: AtomicBool,
    /// `get_agent_info`'s `update`, as the update part last published it.
    update: Mutex<Value>,
}

#[derive(Debug, Default, Clone)]
struct Link {
    connected_at: Option<u64>,
    /// The same moment on the monotonic clock, for how long the link has held.
    connected_since: Option<Instant>,
    gateway_url: Option<String>,
    logins: u64,
    warnings_pending: u64,
    /// The action names the gateway may run (never the commands).
    actions: Vec<String>,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl AgentStatus {
    pub fn new(config_file: PathBuf) -> AgentStatus {
        AgentStatus {
            started_at: unix_now(),
            config_file,
            link: Mutex::new(Link::default()),
            event_sources: Mutex::new(None),
            maintenance: AtomicBool::new(false),
            update: Mutex::new(json!({"enabled": false, "state": "idle", "last": null})),
        }
    }

    /// The gateway the agent will try first, shown as `gateway_url` until a login names the
    /// one it is connected to (so `probe get_agent_info` shows the configured URL, not null).
    pub fn with_gateway(self, url: &str) -> AgentStatus {
        self.link().gateway_url = Some(url.to_string());
        self
    }

    fn link(&self) -> std::sync::MutexGuard<'_, Link> {
        // A panic elsewhere while holding the lock leaves plain data behind; keep serving it.
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn logged_in(&self, url: &str) {
        let mut l = self.link();
        l.connected_at = Some(unix_now());
        l.connected_since = Some(Instant::now());
        l.gateway_url = Some(url.to_string());
        l.logins += 1;
    }

    pub(crate) fn disconnected(&self) {
        let mut l = self.link();
        l.connected_at = None;
        l.connected_since = None;
    }

    /// How long the agent has been logged in on its current connection; `None` when it is
    /// not connected.
    pub fn connected_for(&self) -> Option<Duration> {
        self.link().connected_since.map(|at| at.elapsed())
    }

    /// Whether the rig is in maintenance. The one check every "not now" decision makes
    /// (an update offered); the maintenance switch sets it.
    pub fn in_maintenance(&self) -> bool {
        self.maintenance.load(Ordering::SeqCst)
    }

    /// Puts the rig in maintenance or takes it out.
    pub fn set_maintenance(&self, on: bool) {
        self.maintenance.store(on, Ordering::SeqCst);
    }

    /// What `get_agent_info` shows as `update`.
    pub(crate) fn set_update(&self, v: Value) {
        *self.update.lock().unwrap_or_else(|p| p.into_inner()) = v;
    }

    pub(crate) fn set_warnings_pending(&self, n: u64) {
        self.link().warnings_pending = n;
    }

    /// Where `get_agent_info` reads which event sources are live.
    pub(crate) fn set_event_sources(&self, s: std::sync::Arc<crate::events::source_status::SourcesStatus>) {
        *self.event_sources.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }

    pub(crate) fn set_actions(&self, names: Vec<String>) {
        self.link().actions = names;
    }

    /// The `data` of `get_agent_info`. `reconnects` counts logins after the first one.
    pub fn agent_info(&self) -> Value {
        let l = self.link().clone();
        let sources = self.event_sources.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|s| s.to_json());
        json!({
            "event_sources": sources.unwrap_or_else(|| json!({"scan": "live"})),
            "version": crate::version(),
            "update": self.update.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            "started_at": self.started_at,
            "connected_at": l.connected_at,
            "reconnects": l.logins.saturating_sub(1),
            "gateway_url": l.gateway_url,
            "warnings_pending": l.warnings_pending,
            "config_file": self.config_file.display().to_string(),
            "actions": l.actions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_info_counts_reconnects_after_the_first_login() {
        let s = AgentStatus::new("/etc/rig-agent/rig-agent.toml".into());
        let v = s.agent_info();
        assert_eq!(v["connected_at"], Value::Null);
        assert_eq!(v["reconnects"], 0);
        s.logged_in("wss://a/ws");
        s.disconnected();
        s.logged_in("wss://b/ws");
        let v = s.agent_info();
        assert_eq!(v["reconnects"], 1);
        assert_eq!(v["gateway_url"], "wss://b/ws");
        assert!(v["connected_at"].as_u64().unwrap() >= v["started_at"].as_u64().unwrap());
        assert_eq!(v["config_file"], "/etc/rig-agent/rig-agent.toml");
    }

    #[test]
    fn before_any_login_the_gateway_url_is_the_first_configured_one() {
        let s = AgentStatus::new("/x.toml".into()).with_gateway("wss://a/ws");
        assert_eq!(s.agent_info()["gateway_url"], "wss://a/ws");
        s.logged_in("wss://b/ws");
        assert_eq!(s.agent_info()["gateway_url"], "wss://b/ws");
    }
}
