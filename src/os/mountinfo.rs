//! Mounted filesystems from `/proc/self/mountinfo`: device (`major:minor`), mountpoint,
//! type and the filesystem's own read-only flag. The config's look at the state directory
//! and the disk probes both read it.

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the mounted block device.
    pub dev: String,
    pub mountpoint: String,
    pub fstype: String,
    pub readonly: bool,
}

/// All mounts; empty when mountinfo cannot be read.
pub fn read(procfs: &Path) -> Vec<Mount> {
    std::fs::read_to_string(procfs.join("self/mountinfo")).map(|t| parse_mountinfo(&t)).unwrap_or_default()
}

/// Parses mountinfo(5): `id parent major:minor root mountpoint options [optional…] - fstype
/// source super-options`. A line that does not have that shape is skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            if sep < 6 || fields.len() < sep + 3 {
                return None;
            }
            Some(Mount {
                dev: fields[2].to_string(),
                mountpoint: unescape(fields[4]),
                fstype: fields[sep + 1].to_string(),
                // The filesystem's own (superblock) flag, not this mount's: under systemd's
                // ProtectSystem=strict every mount in the agent's namespace is read-only,
                // while the filesystem is not. A remount after errors, or by an admin, sets
                // the superblock flag, which every namespace sees.
                readonly: fields.get(sep + 3).is_some_and(|o| o.split(',').any(|o| o == "ro")),
            })
        })
        .collect()
}

/// Whether the filesystem holding `path` (absolute, symlinks resolved) is read-only at the
/// superblock, from the longest mountpoint above it; `None` when no mount covers it. A
/// read-only *mount* of a writable filesystem (systemd's sandbox) gives `Some(false)`.
pub(crate) fn filesystem_readonly(mounts: &[Mount], path: &Path) -> Option<bool> {
    mounts.iter().filter(|m| path.starts_with(&m.mountpoint)).max_by_key(|m| m.mountpoint.len()).map(|m| m.readonly)
}

/// mountinfo writes space, tab, newline and backslash in paths as `\040`-style octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
31 27 8:2 / /mnt/data\\040disk ro,relatime shared:5 - xfs /dev/sda2 rw
33 27 8:3 / /backup rw,relatime - ext4 /dev/sda3 ro
32 27 259:1 / /srv rw,relatime - ext4 /dev/nvme0n1p1 ro,errors=remount-ro
garbage line
";

    #[test]
    fn mountinfo_gives_device_mountpoint_type_and_readonly() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 5);
        assert_eq!(m[1], Mount { dev: "8:1".into(), mountpoint: "/".into(), fstype: "ext4".into(), readonly: false });
        assert_eq!(m[2].mountpoint, "/mnt/data disk");
        assert!(!m[2].readonly, "a read-only view of a writable filesystem (ProtectSystem=strict) is not read-only");
        assert!(m[3].readonly, "superblock ro (remounted after errors)");
        assert!(m[4].readonly);
    }

    #[test]
    fn octal_escapes_are_decoded() {
        assert_eq!(unescape("/a\\040b\\011c\\134d"), "/a b\tc\\d");
        assert_eq!(unescape("/trailing\\04"), "/trailing\\04");
    }

    #[test]
    fn the_filesystem_of_a_path_is_the_longest_mountpoint_above_it() {
        let mounts = parse_mountinfo(
            "1 0 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n\
             2 1 8:17 / /var/lib ro,relatime - ext4 /dev/sdb1 rw\n\
             3 1 179:1 / /var/lib/rig-agent rw,relatime - ext4 /dev/mmcblk0p1 ro,errors=remount-ro\n",
        );
        let ro = |p: &str| filesystem_readonly(&mounts, Path::new(p));
        assert_eq!(ro("/var/lib/rig-agent/spool"), Some(true), "the SD card went read-only");
        assert_eq!(ro("/var/lib/other"), Some(false), "a read-only mount of a writable filesystem");
        assert_eq!(ro("/var/library"), Some(false), "whole components only: this is under /");
        assert_eq!(filesystem_readonly(&[], Path::new("/x")), None);
    }
}
