//! Config text: any input must parse to a config or a `ConfigError`, never panic.
//!
//! Config::parse reads the token file, creates the state directory and reads TLS files.
//! Inputs with a `/` (other than in a `wss://` or `ws://` scheme) or `..` are skipped, so
//! every path stays inside this run's temp dir.
#![no_main]

use std::os::unix::fs::PermissionsExt;

use libfuzzer_sys::fuzz_target;
use rig_agent::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let outside_schemes = text.replace("wss://", "").replace("ws://", "");
    if outside_schemes.contains('/') || text.contains("..") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    if let Err(e) = Config::parse(&dir.path().join("rig-agent.toml"), text) {
        // Every refusal names the file: the operator must know where to look.
        assert!(e.to_string().contains("rig-agent.toml"));
    }
});
