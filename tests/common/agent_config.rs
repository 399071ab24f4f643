//! Agent configs with test timings, written as an operator would write them. Shared by the
//! tests and the examples (through `#[path]`).

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const TOKEN: &str = "ece75cbd23bcc805518b5988079f5583";
pub const HARDWARE_ID: &str = "billtest000000004";

/// An agent config with test timings. Fields are the TOML values, as written.
pub struct AgentConfig {
    pub hardware_id: String,
    pub token: String,
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
    /// The `[disks]` section's lines (default: SMART off, so tests do not depend on
    /// smartmontools being installed).
    pub disks: String,
    /// Extra lines for `[paths]` (sysfs/procfs/rootfs of a fixture tree). Without a `kmsg`
    /// line the agent reads an empty `kmsg` file in the test dir, not the host's kernel log
    /// (whose errors, from other tests' loop devices, would be blamed on fixture disks).
    pub paths_extra: String,
    /// Extra lines for `[warning]`.
    pub warning: String,
    /// Whole sections appended at the end (`[actions]`).
    pub sections: String,
}

impl AgentConfig {
    pub fn new(url: String, ca_file: &Path) -> AgentConfig {
        AgentConfig {
            hardware_id: HARDWARE_ID.into(),
            token: TOKEN.into(),
            urls: vec![url],
            ca_file: ca_file.to_path_buf(),
            heartbeat_interval: "200ms",
            heartbeat_timeout: "600ms",
            reconnect_initial: "50ms",
            reconnect_max: "400ms",
            login_timeout: "1s",
            connect_timeout: "1s",
            gateway_extra: String::new(),
            disks: "smartctl = \"\"\n".into(),
            paths_extra: String::new(),
            warning: String::new(),
            sections: String::new(),
        }
    }

    /// The monitor looks at the fixture tree `rig` (its sys, proc and root) every
    /// `scan_interval`, SMART off.
    pub fn watch(&mut self, rig: &Path, scan_interval: &str) -> &mut Self {
        self.disks = format!("smartctl = \"\"\nscan_interval = {scan_interval:?}\n");
        self.paths_extra = rig_paths(rig);
        self
    }

    /// Writes the config, a token file (mode 0600) and a state dir into `dir`.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let token = dir.join("token");
        fs::write(&token, format!("{}\n", self.token)).unwrap();
        fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
        let urls: Vec<String> = self.urls.iter().map(|u| format!("{u:?}")).collect();
        // An empty kernel log unless the test names one: the host's own kernel log must not
        // blame fixture disks. It goes into [paths], before any extra sections.
        let mut paths_extra = self.paths_extra.clone();
        if !paths_extra.contains("kmsg") {
            let kmsg = dir.join("kmsg");
            fs::write(&kmsg, "").unwrap();
            paths_extra += &format!("\nkmsg = {:?}\n", kmsg.display().to_string());
        }
        let text = format!(
            "[device]\nhardware_id = {:?}\ntoken_file = \"token\"\n\n\
             [gateway]\nurls = [{}]\nca_file = {:?}\nconnect_timeout = \"{}\"\nlogin_timeout = \"{}\"\n{}\n\n\
             [heartbeat]\ninterval = \"{}\"\ntimeout = \"{}\"\n\n\
             [reconnect]\ninitial = \"{}\"\nmax = \"{}\"\n\n\
             [disks]\n{}\n[warning]\n{}\n[paths]\nstate_dir = {:?}\n{}\n{}",
            self.hardware_id,
            urls.join(", "),
            self.ca_file.display().to_string(),
            self.connect_timeout,
            self.login_timeout,
            self.gateway_extra,
            self.heartbeat_interval,
            self.heartbeat_timeout,
            self.reconnect_initial,
            self.reconnect_max,
            self.disks,
            self.warning,
            dir.join("state").display().to_string(),
            paths_extra,
            self.sections,
        );
        let path = dir.join("rig-agent.toml");
        fs::write(&path, text).unwrap();
        path
    }
}

/// The `[paths]` lines that point the agent's probes at the fixture tree `rig`.
pub fn rig_paths(rig: &Path) -> String {
    format!(
        "sysfs = {:?}\nprocfs = {:?}\nrootfs = {:?}\n",
        rig.join("sys").display().to_string(),
        rig.join("proc").display().to_string(),
        rig.display().to_string()
    )
}

/// A writable copy of `tests/fixtures/rig` (a sysfs/procfs tree) at `dir/rig`.
pub fn rig_copy(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rig");
    let dst = dir.join("rig");
    assert!(
        std::process::Command::new("cp").arg("-a").arg(&src).arg(&dst).status().unwrap().success(),
        "copy the fixture rig"
    );
    dst
}
