//! Which monitored disk a kernel record is about, through sysfs under a root path (tests
//! build the tree): a partition to its disk, a stacked device (`dm-0`) to the one disk
//! under it, an NVMe controller to the namespaces of its subsystem, an ATA device to the
//! disk at its SCSI address under its port, a SCSI address to the disk behind it; by name
//! alone when sysfs no longer knows the device (it is gone).
//!
//! A warning sends a technician to a disk, so when the record cannot say which disk, none
//! is blamed rather than several: an array or volume over several disks (the failing
//! member logs its own errors under its own name), a record whose dictionary's device
//! number is another device's.

use std::fs;
use std::path::{Path, PathBuf};

use crate::kernel_log::disk_error::{DiskError, Subject};
use crate::os::sysfs::{entries, read_attr};

/// How deep stacked devices are followed (dm over md over partitions).
const MAX_DEPTH: usize = 4;

#[derive(Debug, Clone)]
pub struct Attribution {
    sysfs: PathBuf,
}

impl Attribution {
    pub fn new(sysfs: &Path) -> Attribution {
        Attribution { sysfs: sysfs.to_path_buf() }
    }

    fn block(&self) -> PathBuf {
        self.sysfs.join("block")
    }

    /// The `/sys/block` names of the disks `error` is about, sorted, without repeats.
    /// Empty when nothing matches (a port with no disk behind it), or when the record
    /// cannot say which one disk it is about.
    pub fn disks(&self, error: &DiskError) -> Vec<String> {
        if !self.number_agrees(error) {
            return Vec::new();
        }
        let mut out = match &error.subject {
            Subject::Block(name) => self.of_block(&self.multipath_head(name), 0),
            Subject::NvmeController(ctrl) => {
                let mut v = self.under_component(ctrl);
                // With NVMe multipath a namespace hangs off its subsystem and is named by
                // the subsystem's number, which need not be the controller's (nvme2's
                // namespace can be nvme1n1): the subsystem that links this controller.
                let subsystems = self.sysfs.join("class/nvme-subsystem");
                for subsystem in entries(&subsystems) {
                    if subsystems.join(&subsystem).join(ctrl).exists() {
                        v.extend(self.under_component(&subsystem));
                    }
                }
                v
            }
            Subject::AtaDevice { port, device } => {
                // ataN.MM is the SCSI device (channel, target) = (0, MM) on the port's own
                // link, or (MM, 0) behind a port multiplier: not every disk on the port.
                let own = |d: &String| {
                    self.scsi_address(d).is_some_and(|(c, t)| (c, t) == (0, *device) || (c, t) == (*device, 0))
                };
                self.under_component(port).into_iter().filter(own).collect()
            }
            // The address the dictionary vouched for; the name when sysfs has lost it.
            Subject::Scsi { address, disk } => {
                let v = self.under_component(address);
                match disk {
                    Some(disk) if v.is_empty() => self.of_block(disk, 0),
                    _ => v,
                }
            }
        };
        out.sort();
        out.dedup();
        if matches!(error.subject, Subject::Block(_)) && out.len() > 1 {
            return Vec::new();
        }
        out
    }

    /// Whether the device number of the record's dictionary, if any, is the named
    /// device's in sysfs (when sysfs still has it).
    fn number_agrees(&self, error: &DiskError) -> bool {
        let Some(number) = error.number else { return true };
        let dev = match (&error.subject, number.block) {
            (Subject::Block(name), true) => self.block_dir(name).map(|d| d.join("dev")),
            (Subject::NvmeController(ctrl), false) => Some(self.sysfs.join("class/nvme").join(ctrl).join("dev")),
            _ => return false,
        };
        dev.and_then(|d| read_attr(&d)).is_none_or(|d| d == number.sysfs())
    }

    /// The namespace an NVMe multipath path device (`nvme0c1n1`: subsystem 0, controller
    /// 1, namespace 1) carries, `nvme0n1`, when sysfs has it; else `name`. The kernel logs a
    /// failed command under the path's name, a hidden disk with no device node; the disk
    /// the operator knows, and monitors, is the namespace.
    fn multipath_head(&self, name: &str) -> String {
        let path = name.strip_prefix("nvme").and_then(|rest| {
            let (subsystem, rest) = rest.split_once('c')?;
            let (_controller, namespace) = rest.split_once('n')?;
            [subsystem, _controller, namespace]
                .iter()
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| format!("nvme{subsystem}n{namespace}"))
        });
        match path {
            Some(head) if self.block().join(&head).is_dir() => head,
            _ => name.to_string(),
        }
    }

    /// `/sys/block/<name>`, or `/sys/block/<disk>/<name>` for a partition.
    fn block_dir(&self, name: &str) -> Option<PathBuf> {
        let dir = self.block().join(name);
        if dir.is_dir() {
            return Some(dir);
        }
        entries(&self.block())
            .into_iter()
            .map(|d| self.block().join(d).join(name))
            .find(|p| p.join("partition").is_file())
    }

    fn of_block(&self, name: &str, depth: usize) -> Vec<String> {
        let dir = self.block().join(name);
        if dir.is_dir() {
            let slaves = entries(&dir.join("slaves"));
            if slaves.is_empty() || depth >= MAX_DEPTH {
                return vec![name.to_string()];
            }
            return slaves.iter().flat_map(|s| self.of_block(s, depth + 1)).collect();
        }
        // A partition: /sys/block/<disk>/<name>/partition.
        if let Some(disk) =
            entries(&self.block()).into_iter().find(|d| self.block().join(d).join(name).join("partition").is_file())
        {
            return vec![disk];
        }
        vec![disk_of_partition_name(name).to_string()]
    }

    /// Disks whose sysfs device path passes through a directory called `component`
    /// (`ata3`, `2:0:0:0`, `nvme0`, `nvme-subsys1`).
    fn under_component(&self, component: &str) -> Vec<String> {
        entries(&self.block())
            .into_iter()
            .filter(|d| {
                fs::canonicalize(self.block().join(d)).is_ok_and(|p| p.components().any(|c| c.as_os_str() == component))
            })
            .collect()
    }

    /// (channel, target) of the SCSI device `disk` is on: the `H:C:T:L` in its sysfs path.
    fn scsi_address(&self, disk: &str) -> Option<(u32, u32)> {
        let path = fs::canonicalize(self.block().join(disk)).ok()?;
        path.components().rev().find_map(|c| {
            let parts: Vec<u32> = c.as_os_str().to_str()?.split(':').map(|n| n.parse().ok()).collect::<Option<_>>()?;
            match parts[..] {
                [_, channel, target, _] => Some((channel, target)),
                _ => None,
            }
        })
    }
}

/// The disk a partition name belongs to, by the kernel's naming rules: `sda1`→`sda`,
/// `nvme0n1p2`→`nvme0n1`, `mmcblk0p1`→`mmcblk0`, `loop0p1`→`loop0`; a disk name is
/// returned as it is. Used when sysfs no longer has the device.
pub fn disk_of_partition_name(name: &str) -> &str {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
    // No digits to strip, or nothing but digits: not a partition name.
    if trimmed.len() == name.len() || trimmed.is_empty() {
        return name;
    }
    // Disks whose own name ends in a number take "p<N>" for partitions.
    for base in ["nvme", "mmcblk", "loop", "nbd", "md"] {
        if name.starts_with(base) {
            return trimmed.strip_suffix('p').filter(|d| d.ends_with(|c: char| c.is_ascii_digit())).unwrap_or(name);
        }
    }
    // sda1, vda3, xvdb2, hda1.
    trimmed
}

#[cfg(test)]
mod tests;
