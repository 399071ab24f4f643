//! Records what the binary needs to know about its own build, which cargo gives only to
//! build scripts or not at all:
//!
//! - the build time, for the agent's time floor (`src/clock`): a board that boots at 1970
//!   verifies the gateway's certificate at no earlier time than this. Reproducible: the
//!   `SOURCE_DATE_EPOCH` of reproducible-builds.org when set, else the last commit's time
//!   (`git log -1`), else the time of the build (a tarball without git, a container without
//!   it: `cross build` works either way);
//! - the Rust target triple (`TARGET`), so that an `update_agent` offer for another target
//!   is refused before any download and the privileged half checks the signed `target=`
//!   against it (`rig_agent::TARGET`).

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let from_env = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse::<u64>().ok());
    let from_git = || {
        let out = Command::new("git").args(["log", "-1", "--format=%ct"]).output().ok()?;
        out.status.success().then_some(())?;
        String::from_utf8(out.stdout).ok()?.trim().parse::<u64>().ok()
    };
    let now = || SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let at = from_env.or_else(from_git).unwrap_or_else(now);
    println!("cargo:rustc-env=RIG_AGENT_BUILD_TIME={at}");
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=RIG_AGENT_TARGET={target}");
}
