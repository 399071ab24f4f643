//! rig-agent: the agent on every mining rig's controller board. One wss connection to the
//! farm's operations gateway; login, heartbeats, hardware queries, disk-failure warnings.
//! The wire contract, as a gateway author needs it, is `docs/PROTOCOL.md`; the decisions
//! taken beyond it, and the map of the parts, are in `docs/architecture.md`.

#![forbid(unsafe_code)]

pub mod actions;
pub mod agent;
pub(crate) mod backoff;
pub mod clock;
pub mod config;
pub mod disks;
pub mod episodes;
pub mod events;
pub mod gpus;
pub mod jobs;
pub mod kernel_log;
pub mod logging;
pub mod maintenance;
pub mod monitor;
pub mod net;
pub mod os;
pub mod outbox;
pub mod privileged;
pub mod privileged_client;
pub mod probes;
pub mod protocol;
pub mod queries;
pub mod recovery;
pub mod runner;
pub mod session;
pub mod status;
pub mod update;

/// The Rust target triple this binary was built for (`x86_64-unknown-linux-musl` for the
/// shipped x86_64 build, `x86_64-unknown-linux-gnu` for a plain `cargo build`): an update
/// offered for another target is refused (PROTOCOL.md §9).
pub const TARGET: &str = env!("RIG_AGENT_TARGET");

/// What marks the version slot in the binary's read-only data.
const VERSION_MARK: &[u8] = b"RIGAGENT_VERSION_SLOT=";
/// The version's room in the slot; the rest is NUL.
const VERSION_ROOM: usize = 32;

/// The version slot: [`VERSION_MARK`], then the version, NUL-padded to [`VERSION_ROOM`]
/// bytes. It is the seam of the update tests (`tests/common/release.rs`): they make "another
/// version" of this very binary by patching the slot in a copy (`0.1.0` → `0.2.0`) and
/// signing that copy, instead of building a second agent. It changes nothing a signature
/// does not cover: a patched binary is just an unsigned one.
#[used]
static VERSION_SLOT: [u8; VERSION_MARK.len() + VERSION_ROOM] = version_slot(env!("CARGO_PKG_VERSION"));

const fn version_slot(v: &str) -> [u8; VERSION_MARK.len() + VERSION_ROOM] {
    let mut slot = [0u8; VERSION_MARK.len() + VERSION_ROOM];
    let (mark, v) = (VERSION_MARK, v.as_bytes());
    assert!(v.len() < VERSION_ROOM, "the version does not fit its slot");
    let mut i = 0;
    while i < mark.len() {
        slot[i] = mark[i];
        i += 1;
    }
    let mut j = 0;
    while j < v.len() {
        slot[mark.len() + j] = v[j];
        j += 1;
    }
    slot
}

/// The agent's version, as `--version`, the login, `get_agent_info` and the update checks
/// report it. Read from [`VERSION_SLOT`] through `black_box`, so that the compiler cannot
/// fold it into a constant and a patched slot is what runs; a slot that is not a version
/// (NUL only, not UTF-8, odd bytes) reads as the version cargo built.
pub fn version() -> &'static str {
    let slot: &'static [u8] = std::hint::black_box(&VERSION_SLOT[VERSION_MARK.len()..]);
    let end = slot.iter().position(|b| *b == 0).unwrap_or(slot.len());
    match std::str::from_utf8(&slot[..end]) {
        Ok(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b".-+".contains(&b)) => v,
        _ => env!("CARGO_PKG_VERSION"),
    }
}

/// Exit codes of the binary.
pub mod exit {
    /// Clean stop (SIGTERM/SIGINT), or a command that succeeded.
    pub const OK: i32 = 0;
    /// Anything else fatal.
    pub const FAILURE: i32 = 1;
    /// EX_USAGE: the command line is wrong.
    pub const USAGE: i32 = 64;
    /// EX_UNAVAILABLE: `rig-agent maintenance` found no running agent for its config.
    pub const UNAVAILABLE: i32 = 69;
    /// EX_CONFIG: the config is wrong; the unit does not restart on it.
    pub const CONFIG: i32 = 78;
}
