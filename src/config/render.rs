//! The `check` renderer: the effective config as TOML, every default filled in.

use std::path::Path;

use crate::config::duration::format_duration;
use crate::config::{Config, GatewayConfig, PathsConfig};

impl Config {
    /// The effective config as TOML, every default filled in and the token shown as `***`.
    /// This is what `rig-agent check` prints.
    pub fn render(&self) -> String {
        let d = format_duration;
        let mut out = String::new();
        out += &format!("# effective config from {}\n", self.file.display());
        out += "[device]\n";
        out += &format!("hardware_id = {}\nname = {}\n", q(&self.device.hardware_id), q(&self.device.name));
        match &self.device.token_file {
            Some(f) => out += &format!("token_file = {}   # token: ***\n", p(f)),
            None => out += "token = \"***\"\n",
        }
        out += &render_gateway(&self.gateway);
        out += &format!(
            "\n[heartbeat]\ninterval = \"{}\"\ntimeout = \"{}\"\n",
            d(self.heartbeat.interval),
            d(self.heartbeat.timeout)
        );
        out += &format!(
            "\n[reconnect]\ninitial = \"{}\"\nmax = \"{}\"\n",
            d(self.reconnect.initial),
            d(self.reconnect.max)
        );
        let k = &self.disks;
        out += &format!(
            "\n[disks]\nscan_interval = \"{}\"\ninclude = {}\nexclude = {}\nioerr_threshold = {}\nsmartctl = {}\nsmart_interval = \"{}\"\nsmart_timeout = \"{}\"\nio_error_quiet = \"{}\"\n",
            d(k.scan_interval),
            list(&k.include),
            list(&k.exclude),
            k.ioerr_threshold,
            q(&k.smartctl),
            d(k.smart_interval),
            d(k.smart_timeout),
            d(k.io_error_quiet)
        );
        out += &format!("\n[warning]\nresend_after = \"{}\"\n", d(self.warning.resend_after));
        out += &render_paths(&self.paths);
        let pr = &self.probes;
        out += &format!(
            "\n[probes]\nnvidia_smi = {}\nnvidia_smi_timeout = \"{}\"\nnvidia_smi_interval = \"{}\"\n",
            q(&pr.nvidia_smi),
            d(pr.nvidia_smi_timeout),
            d(pr.nvidia_smi_interval)
        );
        out += &self.actions.render();
        out
    }
}

fn render_gateway(g: &GatewayConfig) -> String {
    let d = format_duration;
    let mut out = String::new();
    out += "\n[gateway]\n";
    let urls: Vec<String> = g.urls.iter().map(|u| u.as_str().to_string()).collect();
    out += &format!("urls = {}\n", list(&urls));
    for (k, v) in [("ca_file", &g.ca_file), ("client_cert", &g.client_cert), ("client_key", &g.client_key)] {
        match v {
            Some(v) => out += &format!("{k} = {}\n", p(v)),
            None => out += &format!("# {k} not set\n"),
        }
    }
    if g.ca_file.is_none() {
        out += "# trust: webpki-roots (Mozilla's CAs)\n";
    }
    out += &format!(
        "connect_timeout = \"{}\"\nlogin_timeout = \"{}\"\nallow_plaintext = {}\nmax_message_bytes = {}\n",
        d(g.connect_timeout),
        d(g.login_timeout),
        g.allow_plaintext,
        g.max_message_bytes
    );
    match &g.subprotocol {
        Some(sp) => out += &format!("subprotocol = {}\n", q(sp)),
        None => out += "# subprotocol not set\n",
    }
    out
}

fn render_paths(pa: &PathsConfig) -> String {
    let mut out = String::new();
    out += &format!(
        "\n[paths]\nstate_dir = {}\nsysfs = {}\nprocfs = {}\nrootfs = {}\nkmsg = {}\nprivileged_socket = {}\n",
        p(&pa.state_dir),
        p(&pa.sysfs),
        p(&pa.procfs),
        p(&pa.rootfs),
        p(&pa.kmsg),
        pa.privileged_socket.as_deref().map_or_else(|| "\"\"".to_string(), p)
    );
    if let Some(note) = &pa.state_dir_note {
        out += &format!("# state_dir {note}\n");
    }
    if let Some(why) = &pa.state_dir_problem {
        out += &format!("# state_dir is not writable now ({why}): warnings are kept in memory until it is\n");
    }
    out
}

/// A TOML string (JSON's escaping is valid TOML for a basic string).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn p(path: &Path) -> String {
    q(&path.display().to_string())
}

fn list(v: &[String]) -> String {
    format!("[{}]", v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", "))
}
