//! Health counters sysfs keeps outside `/sys/block/<disk>`: ext4's per-filesystem error
//! count (`/sys/fs/ext4/<dev>/errors_count`) and md arrays' `md/degraded` with their
//! members' states.

use std::path::Path;

use crate::os::sysfs::{entries, read_attr};

/// `errors_count` of every ext4 filesystem on `devs` (a disk's own name and its
/// partitions'), as (dev, count).
pub fn ext4_errors(sysfs: &Path, devs: &[&str]) -> Vec<(String, u64)> {
    devs.iter()
        .filter_map(|d| {
            let n = read_attr(&sysfs.join("fs/ext4").join(d).join("errors_count"))?.parse().ok()?;
            Some((d.to_string(), n))
        })
        .collect()
}

/// One md array as `/sys/block/mdX/md` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdArray {
    pub name: String,
    /// `md/degraded`: how many member slots are missing or failed.
    pub degraded: u64,
    pub raid_disks: Option<u64>,
    /// Members whose `state` says `faulty`.
    pub failed: Vec<String>,
    /// Every member (`md/dev-<name>`).
    pub members: Vec<String>,
}

/// The md arrays with a `degraded` attribute (RAID levels with redundancy).
pub fn md_arrays(sysfs: &Path) -> Vec<MdArray> {
    entries(&sysfs.join("block"))
        .into_iter()
        .filter(|n| n.starts_with("md"))
        .filter_map(|name| {
            let md = sysfs.join("block").join(&name).join("md");
            let degraded = read_attr(&md.join("degraded"))?.parse().ok()?;
            let members: Vec<String> =
                entries(&md).into_iter().filter_map(|e| e.strip_prefix("dev-").map(str::to_string)).collect();
            let failed = members
                .iter()
                .filter(|m| read_attr(&md.join(format!("dev-{m}")).join("state")).is_some_and(|s| s.contains("faulty")))
                .cloned()
                .collect();
            Some(MdArray {
                degraded,
                raid_disks: read_attr(&md.join("raid_disks")).and_then(|s| s.parse().ok()),
                failed,
                members,
                name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn ext4_counts_and_md_members_are_read_from_sysfs() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path();
        fs::create_dir_all(s.join("fs/ext4/sda1")).unwrap();
        fs::write(s.join("fs/ext4/sda1/errors_count"), "3\n").unwrap();
        assert_eq!(ext4_errors(s, &["sda", "sda1", "sda2"]), [("sda1".to_string(), 3)]);
        let md = s.join("block/md0/md");
        for (m, state) in [("sda1", "in_sync"), ("sdb1", "faulty")] {
            fs::create_dir_all(md.join(format!("dev-{m}"))).unwrap();
            fs::write(md.join(format!("dev-{m}/state")), format!("{state}\n")).unwrap();
        }
        fs::write(md.join("degraded"), "1\n").unwrap();
        fs::write(md.join("raid_disks"), "2\n").unwrap();
        fs::create_dir_all(s.join("block/md1")).unwrap(); // raid0: no md/degraded
        assert_eq!(
            md_arrays(s),
            [MdArray {
                name: "md0".into(),
                degraded: 1,
                raid_disks: Some(2),
                failed: vec!["sdb1".into()],
                members: vec!["sda1".into(), "sdb1".into()]
            }]
        );
    }
}
