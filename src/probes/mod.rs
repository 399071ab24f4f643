//! Hardware probes. Each reader takes its root (`paths.sysfs`, `paths.procfs`,
//! `paths.rootfs`) so tests and containers can point it elsewhere, and keeps parsing (pure
//! functions over text) apart from reading. A file that is missing or malformed makes its
//! one field `None` (JSON `null`), never a guess.

pub(crate) mod board;
pub(crate) mod counters;
pub mod disks;
pub(crate) mod fans;
pub mod gpu;
pub mod indicators;
pub mod mounts;
pub mod network;
pub(crate) mod sensors;
pub mod smart;
pub(crate) mod system;
pub mod units;

use std::path::PathBuf;

use crate::config::PathsConfig;

/// Where the probes read the machine from.
#[derive(Debug, Clone)]
pub struct Roots {
    pub sysfs: PathBuf,
    pub procfs: PathBuf,
    pub rootfs: PathBuf,
}

impl Roots {
    pub fn from_config(paths: &PathsConfig) -> Roots {
        Roots { sysfs: paths.sysfs.clone(), procfs: paths.procfs.clone(), rootfs: paths.rootfs.clone() }
    }

    /// The real machine.
    pub fn host() -> Roots {
        Roots { sysfs: "/sys".into(), procfs: "/proc".into(), rootfs: "/".into() }
    }

    /// `path` (absolute, as the kernel names it) under `rootfs`.
    pub(crate) fn in_rootfs(&self, path: &str) -> PathBuf {
        self.rootfs.join(path.trim_start_matches('/'))
    }
}

/// Shell-style glob with `*` and `?`, as `disks.include` uses on `/sys/block` names.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_the_shell() {
        assert!(glob_match("sd*", "sda"));
        assert!(glob_match("sd*", "sd"));
        assert!(glob_match("nvme*", "nvme0n1"));
        assert!(glob_match("sd?", "sdb"));
        assert!(!glob_match("sd?", "sdaa"));
        assert!(!glob_match("sd*", "loop0"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("mmcblk*", "mmcblk0"));
        assert!(!glob_match("vd*", "xvda"));
    }
}
