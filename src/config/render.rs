//! The `check` renderer: the effective config as TOML, every default filled in.

use std::path::Path;

use crate::config::duration::format_duration;
use crate::config::{
    Config, DeviceConfig, DisksConfig, GatewayConfig, GpusConfig, HeartbeatConfig, MaintenanceConfig, PathsConfig,
    ProbesConfig, ReconnectConfig, UpdateConfig, WarningConfig,
};

impl Config {
    /// The effective config as TOML, every default filled in and the token shown as `***`.
    /// This is what `rig-agent check` prints.
    ///
    /// Every field of every section is named (no `..`), so a new key does not compile until
    /// it is rendered here, or named `_` with the reason it is not shown.
    pub fn render(&self) -> String {
        let Config {
            file,
            device,
            gateway,
            heartbeat,
            reconnect,
            disks,
            warning,
            paths,
            probes,
            gpus,
            actions,
            maintenance,
            recovery,
            update,
        } = self;
        let d = format_duration;
        let mut out = String::new();
        out += &format!("# effective config from {}\n", file.display());
        out += &render_device(device);
        out += &render_gateway(gateway);
        let HeartbeatConfig { interval, timeout } = heartbeat;
        out += &format!("\n[heartbeat]\ninterval = \"{}\"\ntimeout = \"{}\"\n", d(*interval), d(*timeout));
        let ReconnectConfig { initial, max } = reconnect;
        out += &format!("\n[reconnect]\ninitial = \"{}\"\nmax = \"{}\"\n", d(*initial), d(*max));
        let DisksConfig {
            scan_interval,
            include,
            exclude,
            ioerr_threshold,
            smartctl,
            smart_interval,
            smart_timeout,
            io_error_quiet,
        } = disks;
        out += &format!(
            "\n[disks]\nscan_interval = \"{}\"\ninclude = {}\nexclude = {}\nioerr_threshold = {}\nsmartctl = {}\nsmart_interval = \"{}\"\nsmart_timeout = \"{}\"\nio_error_quiet = \"{}\"\n",
            d(*scan_interval),
            list(include),
            list(exclude),
            ioerr_threshold,
            q(smartctl),
            d(*smart_interval),
            d(*smart_timeout),
            d(*io_error_quiet)
        );
        let WarningConfig { resend_after, send_cleared } = warning;
        out += &format!("\n[warning]\nresend_after = \"{}\"\nsend_cleared = {send_cleared}\n", d(*resend_after));
        out += &render_paths(paths);
        let ProbesConfig { nvidia_smi, nvidia_smi_timeout, nvidia_smi_interval } = probes;
        out += &format!(
            "\n[probes]\nnvidia_smi = {}\nnvidia_smi_timeout = \"{}\"\nnvidia_smi_interval = \"{}\"\n",
            q(nvidia_smi),
            d(*nvidia_smi_timeout),
            d(*nvidia_smi_interval)
        );
        let GpusConfig { warn } = gpus;
        out += &format!("\n[gpus]\nwarn = {warn}\n");
        out += &actions.render();
        let MaintenanceConfig { remote } = maintenance;
        out += &format!("\n[maintenance]\nremote = {remote}\n");
        out += &recovery.render();
        // Public keys: nothing secret, and what an operator checks first when a build is refused.
        let UpdateConfig { enabled, keys, confirm_after, confirm_within, max_bytes } = update;
        out += &format!(
            "\n[update]\nenabled = {enabled}\nkeys = {}\nconfirm_after = \"{}\"\nconfirm_within = \"{}\"\nmax_bytes = {max_bytes}\n",
            list(keys),
            d(*confirm_after),
            d(*confirm_within)
        );
        out
    }
}

fn render_device(device: &DeviceConfig) -> String {
    // The token is never shown: `***` stands for it.
    let DeviceConfig { hardware_id, name, token: _, token_file } = device;
    let mut out = String::new();
    out += "[device]\n";
    out += &format!("hardware_id = {}\nname = {}\n", q(hardware_id), q(name));
    match token_file {
        Some(f) => out += &format!("token_file = {}   # token: ***\n", p(f)),
        None => out += "token = \"***\"\n",
    }
    out
}

fn render_gateway(g: &GatewayConfig) -> String {
    let GatewayConfig {
        urls,
        ca_file,
        client_cert,
        client_key,
        connect_timeout,
        login_timeout,
        allow_plaintext,
        max_message_bytes,
        subprotocol,
        proxy,
        // Made from the three files above; not keys of the file.
        tls: _,
        tls_digest: _,
    } = g;
    let d = format_duration;
    let mut out = String::new();
    out += "\n[gateway]\n";
    let urls: Vec<String> = urls.iter().map(|u| u.as_str().to_string()).collect();
    out += &format!("urls = {}\n", list(&urls));
    for (k, v) in [("ca_file", ca_file), ("client_cert", client_cert), ("client_key", client_key)] {
        match v {
            Some(v) => out += &format!("{k} = {}\n", p(v)),
            None => out += &format!("# {k} not set\n"),
        }
    }
    if ca_file.is_none() {
        out += "# trust: webpki-roots (Mozilla's CAs)\n";
    }
    out += &format!(
        "connect_timeout = \"{}\"\nlogin_timeout = \"{}\"\nallow_plaintext = {}\nmax_message_bytes = {}\n",
        d(*connect_timeout),
        d(*login_timeout),
        allow_plaintext,
        max_message_bytes
    );
    match subprotocol {
        Some(sp) => out += &format!("subprotocol = {}\n", q(sp)),
        None => out += "# subprotocol not set\n",
    }
    // The credentials of a proxy are masked like the token.
    out += &proxy.render();
    out
}

fn render_paths(pa: &PathsConfig) -> String {
    let PathsConfig {
        state_dir,
        state_dir_problem,
        state_dir_note,
        sysfs,
        procfs,
        rootfs,
        kmsg,
        privileged_socket,
        update_dir,
    } = pa;
    let mut out = String::new();
    out += &format!(
        "\n[paths]\nstate_dir = {}\nsysfs = {}\nprocfs = {}\nrootfs = {}\nkmsg = {}\nprivileged_socket = {}\nupdate_dir = {}\n",
        p(state_dir),
        p(sysfs),
        p(procfs),
        p(rootfs),
        p(kmsg),
        privileged_socket.as_deref().map_or_else(|| "\"\"".to_string(), p),
        p(update_dir)
    );
    if let Some(note) = state_dir_note {
        out += &format!("# state_dir {note}\n");
    }
    if let Some(why) = state_dir_problem {
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
