//! Why a disk or a GPU is failing, as PROTOCOL.md §7 and §9 name it in a warning's
//! `reason`, in `get_disk_info` and in the state files. One enum so the wire strings are
//! written once; each reason belongs to one kind of subject ([`Reason::kind`]).

use std::fmt;
use std::str::FromStr;

use crate::episodes::subject::SubjectKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Gone from `/sys/block`, or present with a size of 0.
    Missing,
    /// The kernel's device state says offline.
    Offline,
    /// The kernel's I/O error counter rose past the threshold, or the kernel log said so.
    IoErrors,
    /// SMART's overall verdict is failed.
    SmartFailed,
    /// A filesystem that was read-write is now read-only.
    Readonly,
    /// SMART's pre-failure attributes are getting worse (predictive).
    SmartDegrading,
    /// The filesystem's error counters rose (predictive).
    FsErrors,
    /// An md array lost a member (predictive).
    RaidDegraded,
    /// The GPU fell off the bus: NVIDIA Xid 79 or "GPU has fallen off the bus", nvidia-smi
    /// reports it lost or cannot reach it, or it was removed from the PCI bus.
    GpuLost,
    /// A GPU of the rig's GPU inventory no longer enumerates.
    GpuMissing,
    /// An NVIDIA Xid that means hardware trouble (`kernel_log::xid`).
    GpuXid,
    /// The driver had to reset the GPU (an amdgpu ring timeout or reset, NVIDIA recovery).
    GpuReset,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::Missing,
        Reason::Offline,
        Reason::IoErrors,
        Reason::SmartFailed,
        Reason::Readonly,
        Reason::SmartDegrading,
        Reason::FsErrors,
        Reason::RaidDegraded,
        Reason::GpuLost,
        Reason::GpuMissing,
        Reason::GpuXid,
        Reason::GpuReset,
    ];

    /// The wire string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Offline => "offline",
            Reason::IoErrors => "io_errors",
            Reason::SmartFailed => "smart_failed",
            Reason::Readonly => "readonly",
            Reason::SmartDegrading => "smart_degrading",
            Reason::FsErrors => "fs_errors",
            Reason::RaidDegraded => "raid_degraded",
            Reason::GpuLost => "gpu_lost",
            Reason::GpuMissing => "gpu_missing",
            Reason::GpuXid => "gpu_xid",
            Reason::GpuReset => "gpu_reset",
        }
    }

    /// What a failure of this reason is about.
    pub const fn kind(self) -> SubjectKind {
        match self {
            Reason::Missing
            | Reason::Offline
            | Reason::IoErrors
            | Reason::SmartFailed
            | Reason::Readonly
            | Reason::SmartDegrading
            | Reason::FsErrors
            | Reason::RaidDegraded => SubjectKind::Disk,
            Reason::GpuLost | Reason::GpuMissing | Reason::GpuXid | Reason::GpuReset => SubjectKind::Gpu,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the wire reasons (a file written by something else).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure reason")]
pub struct UnknownReason;

impl FromStr for Reason {
    type Err = UnknownReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s).ok_or(UnknownReason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_from_its_wire_string() {
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(r));
        }
        assert_eq!("Offline".parse::<Reason>(), Err(UnknownReason));
    }

    #[test]
    fn gpu_reasons_are_about_gpus_and_the_others_about_disks() {
        for r in Reason::ALL {
            let gpu = r.as_str().starts_with("gpu_");
            assert_eq!(r.kind() == SubjectKind::Gpu, gpu, "{r}");
        }
    }
}
