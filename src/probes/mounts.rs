//! The usage of mounted filesystems (statvfs(2)), for the mounts `os::mountinfo` lists.

use super::Roots;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Each is `None` when its product does not fit in 64 bits, or (used) when the
    /// filesystem reports more free blocks than it has.
    pub total_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
}

/// Filesystem usage of a mountpoint, as `df` computes it; `None` when statvfs fails.
pub fn usage(roots: &Roots, mountpoint: &str) -> Option<Usage> {
    let st = rustix::fs::statvfs(roots.in_rootfs(mountpoint)).ok()?;
    let frsize = if st.f_frsize > 0 { st.f_frsize } else { st.f_bsize };
    Some(usage_of(st.f_blocks, st.f_bfree, st.f_bavail, frsize))
}

/// statvfs's block counts in bytes. Saturating would report a made-up 16 EiB (or 0 used);
/// a value that does not fit is `None`.
pub(crate) fn usage_of(blocks: u64, free: u64, available: u64, block_size: u64) -> Usage {
    use super::units::{bytes, difference};
    Usage {
        total_bytes: bytes(blocks, block_size),
        used_bytes: difference(blocks, free).and_then(|used| bytes(used, block_size)),
        available_bytes: bytes(available, block_size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_the_real_root_matches_statvfs_arithmetic() {
        let u = usage(&Roots::host(), "/").expect("statvfs /");
        let total = u.total_bytes.unwrap();
        assert!(total > 0);
        assert!(u.used_bytes.unwrap() <= total);
        assert!(u.available_bytes.unwrap() <= total);
    }

    #[test]
    fn block_counts_that_overflow_or_contradict_each_other_are_none() {
        let u = usage_of(100, 40, 30, 4096);
        assert_eq!((u.total_bytes, u.used_bytes, u.available_bytes), (Some(409_600), Some(245_760), Some(122_880)));
        let huge = usage_of(u64::MAX / 2, 0, u64::MAX / 2, 4096);
        assert_eq!((huge.total_bytes, huge.used_bytes, huge.available_bytes), (None, None, None));
        assert_eq!(usage_of(10, 20, 5, 4096).used_bytes, None, "more free blocks than blocks");
    }
}
