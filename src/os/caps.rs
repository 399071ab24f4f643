//! The agent's (the network half's) capability drop, done at the very start of `main` while
//! it is still the only thread (capsets and the group list are per thread in the kernel;
//! threads made later inherit them). Defense in depth: the unit already grants nothing;
//! this makes the same true when someone runs the binary by hand as root or under an older
//! unit.

use rustix::process::getgroups;
use rustix::thread::{
    CapabilitySet, CapabilitySets, capabilities, clear_ambient_capability_set, remove_capability_from_bounding_set,
    set_capabilities, set_no_new_privs, set_thread_groups,
};

/// A step of the drop that failed; the agent must not go on to talk to the network, so
/// `main` exits (it is a kernel refusing to lower privileges, not a config matter).
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    #[error("cannot read this process's capabilities: {0}")]
    Read(rustix::io::Errno),
    #[error("cannot clear the supplementary groups: {0}")]
    Groups(rustix::io::Errno),
    #[error("cannot clear the ambient capabilities: {0}")]
    Ambient(rustix::io::Errno),
    #[error("cannot clear the capability sets: {0}")]
    Capset(rustix::io::Errno),
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(rustix::io::Errno),
    #[error("capabilities remain after the drop: {0:?}")]
    Remaining(CapabilitySets),
}

/// What the drop could not take away, for one log line once logging is up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Capabilities the process held before (0 under the packaged unit).
    pub had: u64,
    /// Supplementary groups kept because the process had no CAP_SETGID to clear them
    /// (the unit, not the binary, decides those; the packaged one grants none).
    pub groups_kept: Vec<u32>,
}

/// Clears the supplementary groups (when CAP_SETGID allows), the bounding set (when
/// CAP_SETPCAP allows), the ambient, effective, permitted and inheritable sets, and sets
/// no_new_privs so that no execve (not even of a set-uid binary or as uid 0) gives any
/// back. Call before any thread exists.
pub fn drop_all() -> Result<Dropped, DropError> {
    let before = capabilities(None).map_err(DropError::Read)?;
    if before.permitted.contains(CapabilitySet::SETGID) || before.effective.contains(CapabilitySet::SETGID) {
        set_thread_groups(&[]).map_err(DropError::Groups)?;
    }
    if before.effective.contains(CapabilitySet::SETPCAP) {
        // Best effort: bits the running kernel does not know give EINVAL.
        for cap in CapabilitySet::all().iter() {
            let _ = remove_capability_from_bounding_set(cap);
        }
    }
    match clear_ambient_capability_set() {
        // Kernels before 4.3 have no ambient set, so nothing to clear.
        Ok(()) | Err(rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(DropError::Ambient(e)),
    }
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    // Only when there is something to clear: the packaged unit starts the agent with no
    // capability at all and its seccomp filter (~@privileged) refuses capset with EPERM,
    // which made every start fail. capget is allowed, and the check below proves the result.
    if capabilities(None).map_err(DropError::Read)? != none {
        set_capabilities(None, none).map_err(DropError::Capset)?;
    }
    set_no_new_privs(true).map_err(DropError::NoNewPrivs)?;
    let after = capabilities(None).map_err(DropError::Read)?;
    if after != none {
        return Err(DropError::Remaining(after));
    }
    let groups_kept = getgroups().unwrap_or_default().into_iter().map(|g| g.as_raw()).collect();
    Ok(Dropped { had: (before.permitted | before.effective).bits(), groups_kept })
}
