//! Config text: any input must parse to a config or a `ConfigError`, never panic.
//!
//! Config::parse is pure (the token file, the PEM files and the state directory are read by
//! the separate resolve step), so every input is fed, paths and all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rig_agent::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = Config::parse(std::path::Path::new("/nonexistent/rig-agent.toml"), text) {
        // Every refusal names the file: the operator must know where to look.
        assert!(e.to_string().contains("rig-agent.toml"));
    }
});
