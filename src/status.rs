//! What the agent knows about itself, for `get_agent_info` and the logs. Written by the
//! runner, read by the probe workers.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::clock::Clock;

use serde_json::{Value, json};

#[derive(Debug)]
pub struct AgentStatus {
    started_at: u64,
    /// The agent's clock (the system's, judged against its floor): its dates and `clock`.
    clock: Arc<Clock>,
    config_file: PathBuf,
    link: Mutex<Link>,
    /// Which kernel event sources are live (for `get_agent_info`); unset before they start.
    event_sources: Mutex<Option<std::sync::Arc<crate::events::source_status::SourcesStatus>>>,
    /// Whether the rig is in maintenance: warnings then carry `"maintenance": true`, no
    /// recovery step and no update starts.
    pub maintenance: Maintenance,
    /// `get_agent_info`'s `update`, as the update part last published it.
    update: Mutex<Value>,
}

/// Who turned maintenance on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The console, with `set_maintenance`.
    Console,
    /// Someone on the rig, with `rig-agent maintenance`.
    Local,
}

impl By {
    pub const fn as_str(self) -> &'static str {
        match self {
            By::Console => "console",
            By::Local => "local",
        }
    }

    pub fn parse(s: &str) -> Option<By> {
        [By::Console, By::Local].into_iter().find(|b| b.as_str() == s)
    }
}

/// One maintenance window: it ends at `ends` (monotonic, so a wall clock set back or
/// forward while the agent runs neither shortens nor stretches it); `until` is the same
/// end in Unix seconds, as shown and as kept in the state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub until: u64,
    pub by: By,
    pub ends: Instant,
}

/// The rig's maintenance, as everything that must honour it reads it (warnings are marked,
/// recovery steps and updates are not started). Off at start; the maintenance part (its
/// command, its end, its state file) sets it.
#[derive(Debug, Default)]
pub struct Maintenance(Mutex<Option<Window>>);

impl Maintenance {
    /// Whether the rig is in maintenance now: a window is set and has not ended.
    pub fn is_on(&self) -> bool {
        self.window().is_some()
    }

    /// The window in force now, if any (one that has ended reads as none, even before the
    /// maintenance part has noticed and removed its file).
    pub fn window(&self) -> Option<Window> {
        let w = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        w.filter(|w| w.ends > Instant::now())
    }

    /// Sets the window (`None`: off).
    pub fn set(&self, window: Option<Window>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = window;
    }

    /// `{on, until, by}` as `get_agent_info` and the answers of `set_maintenance` show it.
    pub fn to_json(&self) -> Value {
        match self.window() {
            Some(w) => json!({"on": true, "until": w.until, "by": w.by.as_str()}),
            None => json!({"on": false, "until": null, "by": null}),
        }
    }
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

/// The system's wall clock in Unix seconds (0 before 1970), for the local commands that
/// run without the agent's clock; the agent itself reads [`AgentStatus::clock`].
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl AgentStatus {
    /// The status with a clock that keeps no record (`probe`, tests); the agent gives its
    /// own with [`AgentStatus::with_clock`].
    pub fn new(config_file: PathBuf) -> AgentStatus {
        let clock = Arc::new(Clock::unrecorded());
        AgentStatus {
            started_at: clock.unix_secs(),
            clock,
            config_file,
            link: Mutex::new(Link::default()),
            event_sources: Mutex::new(None),
            maintenance: Maintenance::default(),
            update: Mutex::new(json!({"enabled": false, "state": "idle", "last": null})),
        }
    }

    /// The gateway the agent will try first, shown as `gateway_url` until a login names the
    /// one it is connected to (so `probe get_agent_info` shows the configured URL, not null).
    pub fn with_gateway(self, url: &str) -> AgentStatus {
        self.link().gateway_url = Some(url.to_string());
        self
    }

    /// The agent's clock, whose record is kept in the state directory.
    pub fn with_clock(mut self, clock: Arc<Clock>) -> AgentStatus {
        self.started_at = clock.unix_secs();
        self.clock = clock;
        self
    }

    pub fn clock(&self) -> &Arc<Clock> {
        &self.clock
    }

    fn link(&self) -> std::sync::MutexGuard<'_, Link> {
        // A panic elsewhere while holding the lock leaves plain data behind; keep serving it.
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn logged_in(&self, url: &str) {
        let at = self.clock.unix_secs();
        let mut l = self.link();
        l.connected_at = Some(at);
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

    /// The time and state a warning or `warning_cleared` made now carries: the one place
    /// their `time` is taken.
    pub fn stamp(&self) -> crate::protocol::Stamp {
        crate::protocol::Stamp { time: self.clock.stamp(), maintenance: self.maintenance.is_on() }
    }

    pub(crate) fn set_actions(&self, names: Vec<String>) {
        self.link().actions = names;
    }

    /// Whether the rig is in maintenance now: what refuses an update or a recovery step.
    pub fn in_maintenance(&self) -> bool {
        self.maintenance.is_on()
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
            "maintenance": self.maintenance.to_json(),
            "clock": self.clock.to_json(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        assert_eq!(v["maintenance"], json!({"on": false, "until": null, "by": null}));
    }

    #[test]
    fn maintenance_reads_as_off_once_its_window_has_ended() {
        let s = AgentStatus::new("/x.toml".into());
        let now = Instant::now();
        s.maintenance.set(Some(Window { until: 1_800_000_000, by: By::Local, ends: now + Duration::from_secs(60) }));
        assert!(s.in_maintenance());
        assert_eq!(s.agent_info()["maintenance"], json!({"on": true, "until": 1_800_000_000u64, "by": "local"}));
        s.maintenance.set(Some(Window { until: 1_800_000_000, by: By::Console, ends: now }));
        assert!(!s.in_maintenance());
        assert_eq!(s.agent_info()["maintenance"]["on"], false);
    }

    #[test]
    fn before_any_login_the_gateway_url_is_the_first_configured_one() {
        let s = AgentStatus::new("/x.toml".into()).with_gateway("wss://a/ws");
        assert_eq!(s.agent_info()["gateway_url"], "wss://a/ws");
        s.logged_in("wss://b/ws");
        assert_eq!(s.agent_info()["gateway_url"], "wss://b/ws");
    }
}
