//! Recognises the kernel log lines that mean a disk is failing, and what they name.
//! Pure: a message in, a [`KernelError`] out; `events::attribution` finds the disk.

/// What a kernel line names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A block device: a disk (`sda`, `nvme0n1`, `loop0`), a partition (`sda1`) or a
    /// stacked device (`dm-0`, `md0`).
    Block(String),
    /// An NVMe controller (`nvme0`): every namespace on it.
    NvmeController(String),
    /// A libata port (`ata3`): the disk behind it, found through sysfs.
    AtaPort(String),
    /// A SCSI address `host:channel:target:lun`, found through sysfs.
    ScsiAddress(String),
}

/// Which kind of line it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The block layer failed a request (`I/O error, dev X, sector …`, and the older
    /// `blk_update_request:` / `print_req_error:` forms, and other `… error, dev X` statuses).
    BlockRequest,
    /// `critical medium error, dev X`: the medium itself.
    CriticalMedium,
    /// `Buffer I/O error on dev X`: the page cache could not read or write.
    BufferIo,
    /// `EXT4-fs error (device X)`.
    Ext4,
    /// `XFS (X): … error` / corruption.
    Xfs,
    /// `nvme nvmeN: … timeout`.
    NvmeTimeout,
    /// `nvme nvmeN: … reset`.
    NvmeReset,
    /// `nvmeNnM: Read(…) @ LBA …, … Error (sct …)`: a command the drive failed.
    NvmeCommand,
    /// `ataN.MM: exception` / `failed command` / `error: {`.
    Ata,
    /// `sd H:C:T:L: [X] … FAILED Result` / `Medium Error` / `rejecting I/O to offline device`.
    Scsi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    pub kind: Kind,
    pub subject: Subject,
}

/// Longest device name believed; longer is not a kernel device name.
const MAX_NAME: usize = 32;

fn name(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'!' | b':'));
    ok.then(|| s.to_string())
}

/// The part of `s` before the first of `ends` (or all of it).
fn until<'a>(s: &'a str, ends: &[char]) -> &'a str {
    s.find(ends).map_or(s, |i| &s[..i])
}

fn block(kind: Kind, s: &str) -> Option<KernelError> {
    // Block device names start with a letter (sda, nvme0n1, mmcblk0, loop3, dm-0); "388"
    // in a garbled line is not one (found by the kernel fuzz target).
    if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    Some(KernelError { kind, subject: Subject::Block(name(s)?) })
}

/// The status words of `blk_status_to_str` (block/blk-core.c) that precede `error, dev X`.
const BLOCK_STATUS: [&str; 15] = [
    "I/O",
    "critical medium",
    "critical target",
    "critical nexus",
    "critical space allocation",
    "timeout",
    "recoverable transport",
    "operation not supported",
    "protection",
    "device resource",
    "zone resource",
    "zone open resource",
    "zone active resource",
    "no space",
    "invalid",
];

/// The disk-failure meaning of a kernel message, if it has one.
pub fn recognise(message: &str) -> Option<KernelError> {
    let m = message.trim_end();
    // Block layer: "<status> error, dev X, sector N op …", optionally after a function
    // name ("blk_update_request: ", "print_req_error: ").
    if let Some(i) = m.find(" error, dev ") {
        let status = &m[..i];
        let status =
            ["blk_update_request: ", "print_req_error: "].iter().find_map(|p| status.strip_prefix(p)).unwrap_or(status);
        // Only the block layer's own status words (blk_errors[] in block/blk-core.c): any
        // other line with " error, dev " in it (a btrfs label chosen by whoever formatted
        // a USB stick, say) must not blame a disk.
        if !BLOCK_STATUS.contains(&status) {
            return None;
        }
        let rest = &m[i + " error, dev ".len()..];
        let kind = if status.ends_with("critical medium") { Kind::CriticalMedium } else { Kind::BlockRequest };
        return block(kind, until(rest, &[',', ' ']));
    }
    if let Some(rest) =
        m.strip_prefix("Buffer I/O error on dev ").or_else(|| m.strip_prefix("Buffer I/O error on device "))
    {
        return block(Kind::BufferIo, until(rest, &[',', ' ']));
    }
    if let Some(rest) = m.strip_prefix("EXT4-fs error (device ") {
        return block(Kind::Ext4, until(rest, &[')']));
    }
    if let Some(rest) = m.strip_prefix("XFS (") {
        let (dev, what) = rest.split_once("): ")?;
        let lower = what.to_ascii_lowercase();
        if lower.contains("error") || lower.contains("corruption") {
            return block(Kind::Xfs, dev);
        }
        return None;
    }
    if let Some(rest) = m.strip_prefix("nvme ") {
        let (ctrl, what) = rest.split_once(": ")?;
        if !ctrl.starts_with("nvme") {
            return None;
        }
        let lower = what.to_ascii_lowercase();
        let kind = if lower.contains("timeout") {
            Kind::NvmeTimeout
        } else if lower.contains("reset") {
            Kind::NvmeReset
        } else {
            return None;
        };
        return Some(KernelError { kind, subject: Subject::NvmeController(name(ctrl)?) });
    }
    if m.starts_with("nvme")
        && let Some((ns, what)) = m.split_once(": ")
        && what.contains(" @ LBA ")
        && what.contains("(sct ")
    {
        return block(Kind::NvmeCommand, ns);
    }
    if let Some(rest) = m.strip_prefix("ata")
        && let Some((port, what)) = rest.split_once(": ")
        && (what.starts_with("exception Emask") || what.starts_with("failed command:") || what.starts_with("error: {"))
    {
        let number = until(port, &['.']);
        if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
            return Some(KernelError { kind: Kind::Ata, subject: Subject::AtaPort(format!("ata{number}")) });
        }
        return None;
    }
    if let Some(rest) = m.strip_prefix("sd ") {
        let (addr, what) = rest.split_once(": ")?;
        const BAD: [&str; 6] = [
            "FAILED Result",
            "Medium Error",
            "Hardware Error",
            "Unrecovered read error",
            "rejecting I/O to offline device",
            "timing out command",
        ];
        if !BAD.iter().any(|b| what.contains(b)) {
            return None;
        }
        // "[sdb] tag#0 …" names the disk; otherwise the address does, through sysfs.
        if let Some(dev) = what.strip_prefix('[').map(|w| until(w, &[']'])) {
            return block(Kind::Scsi, dev);
        }
        return Some(KernelError { kind: Kind::Scsi, subject: Subject::ScsiAddress(name(addr)?) });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_are_not_disk_errors_are_ignored() {
        for m in [
            "EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.",
            "XFS (sdb1): Mounting V5 Filesystem",
            "nvme nvme0: 8/0/0 default/read/poll queues",
            "ata3: SATA link up 6.0 Gbps (SStatus 133 SControl 300)",
            "sd 2:0:0:0: [sdb] 7814037168 512-byte logical blocks: (4.00 TB/3.64 TiB)",
            "loop0: detected capacity change from 0 to 2048",
            "usb 1-1: new high-speed USB device number 2 using xhci_hcd",
        ] {
            assert_eq!(recognise(m), None, "{m}");
        }
    }

    #[test]
    fn a_name_that_cannot_be_a_device_is_refused() {
        assert_eq!(recognise("I/O error, dev ../../etc, sector 0"), None);
        assert_eq!(recognise("Buffer I/O error on dev 388 (Read) Qpage"), None);
        assert_eq!(recognise(&format!("I/O error, dev {}, sector 0", "a".repeat(40))), None);
    }
}
