//! Helpers for the integration tests: the test gateway, agent configs with short timings, an
//! in-process agent, and a guard that turns a hang into a failure.

#![allow(dead_code)]

pub mod gateway;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use gateway::{Event, Gateway, Pki, Script};
use rig_agent::queries::Catalogue;
use rig_agent::signals::Shutdown;
use rig_agent::status::AgentStatus;
use rig_agent::{Config, Runner};

pub const TOKEN: &str = "ece75cbd23bcc805518b5988079f5583";
pub const HARDWARE_ID: &str = "billtest000000004";

/// Aborts the whole test binary if the test is still running after `limit`: a hang must fail,
/// not block CI.
pub struct Guard(Option<Sender<()>>);

impl Guard {
    pub fn new(limit: Duration) -> Guard {
        let (tx, rx) = mpsc::channel::<()>();
        let name = thread::current().name().unwrap_or("test").to_string();
        thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("GUARD: {name} still running after {limit:?}; aborting");
                std::process::abort();
            }
        });
        Guard(Some(tx))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// An agent config with test timings. Fields are the TOML values, as written.
pub struct AgentConfig {
    pub urls: Vec<String>,
    pub ca_file: PathBuf,
    pub heartbeat_interval: &'static str,
    pub heartbeat_timeout: &'static str,
    pub reconnect_initial: &'static str,
    pub reconnect_max: &'static str,
    pub login_timeout: &'static str,
    pub connect_timeout: &'static str,
    /// Extra lines for the `[gateway]` section.
    pub gateway_extra: String,
}

impl AgentConfig {
    pub fn new(url: String, ca_file: &Path) -> AgentConfig {
        AgentConfig {
            urls: vec![url],
            ca_file: ca_file.to_path_buf(),
            heartbeat_interval: "200ms",
            heartbeat_timeout: "600ms",
            reconnect_initial: "50ms",
            reconnect_max: "400ms",
            login_timeout: "1s",
            connect_timeout: "1s",
            gateway_extra: String::new(),
        }
    }

    /// Writes the config, a token file (mode 0600) and a state dir into `dir`.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let token = dir.join("token");
        fs::write(&token, format!("{TOKEN}\n")).unwrap();
        fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
        let urls: Vec<String> = self.urls.iter().map(|u| format!("{u:?}")).collect();
        let text = format!(
            "[device]\nhardware_id = \"{HARDWARE_ID}\"\ntoken_file = \"token\"\n\n\
             [gateway]\nurls = [{}]\nca_file = {:?}\nconnect_timeout = \"{}\"\nlogin_timeout = \"{}\"\n{}\n\n\
             [heartbeat]\ninterval = \"{}\"\ntimeout = \"{}\"\n\n\
             [reconnect]\ninitial = \"{}\"\nmax = \"{}\"\n\n\
             [paths]\nstate_dir = {:?}\n",
            urls.join(", "),
            self.ca_file.display().to_string(),
            self.connect_timeout,
            self.login_timeout,
            self.gateway_extra,
            self.heartbeat_interval,
            self.heartbeat_timeout,
            self.reconnect_initial,
            self.reconnect_max,
            dir.join("state").display().to_string(),
        );
        let path = dir.join("rig-agent.toml");
        fs::write(&path, text).unwrap();
        path
    }
}

/// The agent's runner on a thread of the test process.
pub struct Agent {
    shutdown: Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl Agent {
    pub fn start(config: &Path) -> Agent {
        Agent::with_catalogue(config, |_| {})
    }

    /// Starts with the standard catalogue plus whatever `extend` adds (slow probes...).
    pub fn with_catalogue(config: &Path, extend: impl FnOnce(&mut Catalogue)) -> Agent {
        let cfg = Config::load(config).unwrap_or_else(|e| panic!("{e}"));
        let status = Arc::new(AgentStatus::new(cfg.file.clone()));
        let mut catalogue = Catalogue::standard(Arc::clone(&status));
        extend(&mut catalogue);
        let mut runner = Runner::new(Arc::new(cfg), catalogue, status).unwrap();
        let shutdown = runner.shutdown();
        let thread = thread::Builder::new().name("agent".into()).spawn(move || runner.run()).unwrap();
        Agent { shutdown, thread: Some(thread) }
    }

    /// Stops the agent and returns how long it took to return.
    pub fn stop(mut self) -> Duration {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Duration {
        let t = Instant::now();
        self.shutdown.stop();
        if let Some(h) = self.thread.take() {
            h.join().expect("agent thread panicked");
        }
        t.elapsed()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_inner();
        }
    }
}

pub const SEC: Duration = Duration::from_secs(1);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
