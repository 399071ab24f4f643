//! Attack review 5: the config file at its limits. A config may be up to 1 MiB; every
//! refusal names a line, and finding that line must not cost a scan of the whole file per
//! key.

mod common;

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// A config of 20 000 `[actions.*]` sections stays under the 1 MiB cap, so the agent must
/// take it. Each section's line used to be found by counting newlines from the start of the
/// file, twice per action: 20 000 × 800 KB, minutes of CPU (4 000 actions took 13 s),
/// during which `check` hangs and a starting agent sends no READY=1. The bound below is a
/// hang guard (the fixed parse takes well under a second), not a speed claim.
#[test]
fn a_config_of_twenty_thousand_actions_under_the_size_cap_is_checked_without_hanging() {
    let _g = Guard::new(120 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&["localhost"]);
    let mut cfg = AgentConfig::new("wss://localhost:1/ws".into(), &pki.ca_file);
    let mut sections = String::from("[actions]\nenabled = true\n");
    for i in 0..20_000 {
        sections += &format!("[actions.a{i}]\ncommand = [\"/bin/true\"]\n");
    }
    cfg.sections = sections;
    let config = cfg.write(dir.path());
    assert!(fs::metadata(&config).unwrap().len() < 1 << 20, "the config must stay under the 1 MiB cap");

    let mut cmd = agent_command();
    cmd.arg("check").arg("--config").arg(&config).stdout(Stdio::null());
    let mut child = spawn_logged(&mut cmd);
    let (code, _, log) = wait_exit_or_kill(&mut child, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");
}

/// Waits for `child`, killing it after `limit`; `None` as the code when it was killed.
fn wait_exit_or_kill(child: &mut std::process::Child, limit: Duration) -> (Option<i32>, Duration, String) {
    let t = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), t.elapsed(), take_log(child));
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return (None, t.elapsed(), format!("still running after {limit:?}:\n{}", take_log(child)));
        }
        std::thread::sleep(ms(20));
    }
}
