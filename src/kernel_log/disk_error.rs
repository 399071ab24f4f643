//! Recognises the kernel log records that mean a disk is failing, and what they name.
//! Pure: a record in, a [`DiskError`] out; `events::attribution` finds the disk in sysfs.
//!
//! A warning sends a technician with a spare disk, so a record is believed only when it is
//! the kernel's own report, in the exact format the driver prints, anchored at the start
//! of the message:
//!
//! - Facility 0 only: a process writing to `/dev/kmsg` is never the kernel.
//! - Facility 0 is not proof of origin. Some kernel records *begin* with text a process
//!   chooses: its task name (15 bytes, `prctl(PR_SET_NAME)`), as in the segfault report
//!   `<name>[<pid>]: segfault at … in <file name>[…]`, traps, OOM kills and the like, where
//!   even the tail is the attacker's (a file named `timeout`). Each rule therefore matches
//!   its driver's whole prefix *and* the driver's own words right after the device, past
//!   the first 15 bytes, and a record shaped like a task's report (`name[pid]`,
//!   `name (pid)` at its start, `… invoked oom-killer`) is never a disk's.
//! - The printk-format rules also need their driver's severity (warning or worse): the
//!   reports that begin with a task's name are informational.
//! - Where the driver logs through `dev_printk` (SCSI disks, NVMe controllers), the kernel
//!   attaches a dictionary (`SUBSYSTEM=`, `DEVICE=`) that no process can add to a record:
//!   a record in that format without it, or whose `DEVICE` names another device, is not
//!   believed. A `DEVICE` on any other record must name the same block device (its number
//!   is checked against sysfs by the attribution).
//! - Only failures: a disk refusing an optional command (discard, write-zeroes), a
//!   reservation conflict, a lost path or a bad cable is not a failing disk, and a
//!   healthy disk must not be warned about.
//!
//! The sources of each format are named in the table of real lines in the tests below.

use super::record::Record;
use super::scan::Scan;
use super::task_report::{MILDEST_PRINTK_LEVEL, names_a_task};

/// What a kernel record names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A block device: a disk (`sda`, `nvme0n1`, `loop0`), a partition (`sda1`) or a
    /// stacked device (`dm-0`, `md0`).
    Block(String),
    /// An NVMe controller (`nvme0`): the namespaces on it.
    NvmeController(String),
    /// A libata device `ataN.MM`: the disk at device `MM` of port `ataN` (a port
    /// multiplier's link, or a PATA slave).
    AtaDevice { port: String, device: u32 },
    /// A SCSI device `host:channel:target:lun` (the record's dictionary agrees), and the
    /// disk name the record gives (`[sdb]`), when it gives one.
    Scsi { address: String, disk: Option<String> },
}

/// Which kind of record it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The block layer failed a read, write or flush (`I/O error, dev X, sector …`, the
    /// older `blk_update_request:` / `print_req_error:` / `end_request:` forms, and the
    /// other failure statuses: timeout, critical target, protection, device offline).
    BlockRequest,
    /// `critical medium error, dev X`: the medium itself.
    CriticalMedium,
    /// `Buffer I/O error on dev X`: the page cache could not read or write.
    BufferIo,
    /// `EXT4-fs error (device X): …`.
    Ext4,
    /// `XFS (X): ` and one of XFS's I/O-error, corruption or shutdown-for-I/O-error reports.
    Xfs,
    /// `nvme nvmeN: I/O … QID … timeout, …`.
    NvmeTimeout,
    /// `nvme nvmeN: controller is down; will reset: …` and the like.
    NvmeReset,
    /// `nvmeNnM: Read(0x2) @ LBA …, … (sct 0x2 / sc 0x81)`: a media or data-transfer error.
    NvmeCommand,
    /// `ataN.MM: error: { UNC }` or a command's `Emask … (media error)` / `(timeout)`.
    Ata,
    /// `sd H:C:T:L: [X] …` medium or hardware error sense, a failed command that did not
    /// merely complete with sense, a command timed out, I/O rejected to an offline device.
    Scsi,
}

/// A device number from a record's dictionary (`DEVICE=b8:0`, `DEVICE=c241:0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevNumber {
    /// `b`: a block device; otherwise a character device (an NVMe controller).
    pub block: bool,
    pub major: u32,
    pub minor: u32,
}

impl DevNumber {
    /// `b8:0` / `c241:0`.
    fn parse(s: &str) -> Option<DevNumber> {
        let (block, rest) = match s.as_bytes().first()? {
            b'b' => (true, &s[1..]),
            b'c' => (false, &s[1..]),
            _ => return None,
        };
        let (major, minor) = rest.split_once(':')?;
        Some(DevNumber { block, major: decimal(major)?, minor: decimal(minor)? })
    }

    /// As sysfs writes it in a `dev` file: `8:0`.
    pub fn sysfs(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskError {
    pub kind: Kind,
    pub subject: Subject,
    /// The device number the record's dictionary gives, for the attribution to check
    /// against sysfs: a record whose number is another device's is not believed.
    pub number: Option<DevNumber>,
}

/// Longest device name believed; longer is not a kernel device name.
const MAX_NAME: usize = 32;
fn decimal(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A block device name as the kernel makes them: a letter, then letters, digits and
/// `-_.!` (`sda1`, `nvme0n1p2`, `dm-0`, `cciss!c0d0`); never `/`, `:`, `..` or a space,
/// so it names one entry of `/sys/block` and nothing beside it.
fn block_name(s: &str) -> Option<String> {
    let ok = s.len() <= MAX_NAME
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && !s.contains("..")
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'!'));
    ok.then(|| s.to_string())
}

/// The disk-failure meaning of a kernel record, if it has one.
pub fn recognise(r: &Record) -> Option<DiskError> {
    if !r.from_kernel() {
        return None;
    }
    let m = r.message.trim_end();
    if names_a_task(m) {
        return None;
    }
    let number = r.device.as_deref().and_then(DevNumber::parse);
    // dev_printk formats: the dictionary must be there and agree.
    if let Some((kind, subject)) = scsi(m) {
        let Subject::Scsi { address, .. } = &subject else { return None };
        let agrees = r.subsystem.as_deref() == Some("scsi")
            && r.device.as_deref().and_then(|d| d.strip_prefix("+scsi:")) == Some(address.as_str());
        return agrees.then_some(DiskError { kind, subject, number: None });
    }
    if let Some((kind, subject)) = nvme_controller(m) {
        let agrees = r.subsystem.as_deref() == Some("nvme") && number.is_some_and(|n| !n.block);
        return agrees.then_some(DiskError { kind, subject, number });
    }
    // printk formats: at their drivers' severity, with no dictionary or one naming this
    // block device.
    if r.level > MILDEST_PRINTK_LEVEL {
        return None;
    }
    let (kind, subject) = block_request(m)
        .or_else(|| buffer_io(m))
        .or_else(|| ext4(m))
        .or_else(|| xfs(m))
        .or_else(|| nvme_command(m))
        .or_else(|| ata(m))?;
    let dictionary_agrees = match (&subject, r.subsystem.as_deref(), r.device.as_deref()) {
        (_, None | Some("block"), None) => true,
        (Subject::Block(name), None | Some("block"), Some(device)) => {
            number.is_some_and(|n| n.block) || device.strip_prefix("+block:") == Some(name.as_str())
        }
        _ => false,
    };
    dictionary_agrees.then_some(DiskError { kind, subject, number: number.filter(|n| n.block) })
}

/// The statuses of `blk_status_to_str` (block/blk-core.c, `blk_errors[]`) that mean the
/// disk failed a request. Not: "operation not supported" (a disk without discard or
/// write-zeroes), "critical space allocation" (thin provisioning), "recoverable transport"
/// (a path or a cable), "critical nexus" / "reservation conflict" (another host's
/// reservation), "kernel resource", "device resource", "nonblocking retry", "dm internal
/// retry", zone limits, "invalid", "duration limit exceeded" (a command duration limit,
/// which the kernel reports apart from hardware errors for that reason).
const FAILED_STATUS: [&str; 6] =
    ["I/O", "critical medium", "critical target", "timeout", "protection", "device offline"];

/// `REQ_OP_READ`, `REQ_OP_WRITE`, `REQ_OP_FLUSH`: a failure of these is the disk's. A
/// discard (3), secure erase (5), write-same (7) or write-zeroes (9) a disk refuses is not.
const DATA_OPS: [u64; 3] = [0, 1, 2];

/// `[<caller>: ]<status> error, dev <disk>, sector <n>[ op 0x<op>:(<OP>) …]`
/// (block/blk-core.c `blk_print_req_error`; before 5.x `print_req_error` with the caller's
/// name, `blk_update_request:` or `end_request:` on older kernels).
fn block_request(m: &str) -> Option<(Kind, Subject)> {
    let mut s = Scan(m);
    let _ = s.opt("blk_update_request: ") || s.opt("print_req_error: ") || s.opt("end_request: ");
    let (status, rest) = s.rest().split_once(" error, dev ")?;
    if !FAILED_STATUS.contains(&status) {
        return None;
    }
    let mut s = Scan(rest);
    let name = block_name(s.until(&[',', ' ']))?;
    s.lit(", sector ")?;
    s.number()?;
    if s.opt(" op ") && !DATA_OPS.contains(&s.hex()?) {
        return None;
    }
    let kind = if status == "critical medium" { Kind::CriticalMedium } else { Kind::BlockRequest };
    Some((kind, Subject::Block(name)))
}

/// `Buffer I/O error on dev <dev>, logical block <n>…` (fs/buffer.c `buffer_io_error`;
/// `on device` before 4.x).
fn buffer_io(m: &str) -> Option<(Kind, Subject)> {
    let mut s = Scan(m);
    s.lit("Buffer I/O error on dev")?;
    if !(s.opt("ice ") || s.opt(" ")) {
        return None;
    }
    let name = block_name(s.until(&[',', ' ']))?;
    s.lit(", logical block ")?;
    s.number()?;
    Some((Kind::BufferIo, Subject::Block(name)))
}

/// `EXT4-fs error (device <dev>): <function>:<line>: …` or `… (device <dev>) in
/// <function>:<line>: …` (fs/ext4/super.c `__ext4_error`, `__ext4_error_inode`,
/// `__ext4_error_file`, `__ext4_std_error`).
fn ext4(m: &str) -> Option<(Kind, Subject)> {
    let mut s = Scan(m);
    s.lit("EXT4-fs error (device ")?;
    let name = block_name(s.until(&[')']))?;
    s.lit(")")?;
    if !(s.opt(": ") || s.opt(" in ")) {
        return None;
    }
    let function = s.until(&[':']);
    if function.is_empty() || !function.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    s.lit(":")?;
    s.number()?;
    Some((Kind::Ext4, Subject::Block(name)))
}

/// What XFS says right after `XFS (<dev>): ` when the disk failed it (fs/xfs/xfs_buf.c
/// `xfs_buf_ioerror_alert`, xfs_log.c, xfs_error.c `xfs_corruption_error` and
/// `xfs_buf_verifier_error`, xfs_fsops.c `xfs_do_force_shutdown`, old and new forms).
/// Mount messages, "Corruption of in-memory data" (a kernel bug, not the disk), an
/// administrator's shutdown and the like are not among them.
const XFS_FAILURES: [&str; 10] = [
    "metadata I/O error in \"",
    "metadata I/O error: block 0x",
    "log I/O error ",
    "Log I/O Error (0x",
    "Metadata I/O Error (0x",
    "Log I/O Error Detected.",
    "I/O Error Detected. Shutting down filesystem",
    "Metadata corruption detected at ",
    "Metadata CRC error detected at ",
    "Corruption detected. Unmount and run xfs_repair",
];

/// `XFS (<dev>): <one of XFS_FAILURES>…` (fs/xfs/xfs_message.c `__xfs_printk`).
fn xfs(m: &str) -> Option<(Kind, Subject)> {
    let mut s = Scan(m);
    s.lit("XFS (")?;
    let name = block_name(s.until(&[')']))?;
    s.lit("): ")?;
    XFS_FAILURES.iter().any(|f| s.rest().starts_with(f)).then_some((Kind::Xfs, Subject::Block(name)))
}

/// `nvme nvmeN: …` from drivers/nvme/host/pci.c (`nvme_timeout`, `nvme_should_reset`'s
/// caller, `nvme_reset_work`, `nvme_remove_dead_ctrl`), through `dev_warn` on the
/// controller: `I/O <n> [(<op>)] QID <n> timeout, aborting | reset controller | disable
/// controller` (and the later `I/O tag <n> (<cid>) opcode … QID <n> timeout, …`), the
/// controller going down, failing to reset or being removed. Not "timeout, completion
/// polled": the command had completed, only its interrupt was lost.
fn nvme_controller(m: &str) -> Option<(Kind, Subject)> {
    let mut s = Scan(m);
    s.lit("nvme nvme")?;
    let instance = s.number()?;
    s.lit(": ")?;
    let subject = Subject::NvmeController(format!("nvme{instance}"));
    const RESETS: [&str; 5] = [
        "controller is down; will reset: CSTS=0x",
        "Device not ready; aborting reset, CSTS=0x",
        "Removing after probe failure status: ",
        "Disabling device after reset failure: ",
        "Failed status: 0x",
    ];
    if RESETS.iter().any(|r| s.rest().starts_with(r)) {
        return Some((Kind::NvmeReset, subject));
    }
    s.lit("I/O ")?;
    let _ = s.opt("tag ");
    s.number()?;
    let (_, tail) = s.rest().split_once(" QID ")?;
    let mut s = Scan(tail);
    s.number()?;
    s.lit(" timeout, ")?;
    ["aborting", "reset controller", "disable controller"]
        .iter()
        .any(|a| s.rest().starts_with(a))
        .then_some((Kind::NvmeTimeout, subject))
}

/// `<nvmeNnM>: <Op>(0x<op>) @ LBA <n>, <n> blocks, <status> (sct 0x<t> / sc 0x<c>)…`
/// (drivers/nvme/host/core.c `nvme_log_error`), for the statuses that mean the media or
/// the data failed: Data Transfer Error and Internal Error (generic, sct 0), Write Fault,
/// Unrecovered Read Error and the end-to-end protection checks (media, sct 2). Not an
/// invalid field or opcode (a command the drive does not support), a compare failure,
/// access denied, a deallocated block, a path error (sct 3) or a reservation conflict.
fn nvme_command(m: &str) -> Option<(Kind, Subject)> {
    let mut s = Scan(m);
    let name = s.until(&[':']);
    let mut n = Scan(name);
    n.lit("nvme")?;
    n.number()?;
    if n.opt("c") {
        n.number()?;
    }
    n.lit("n")?;
    n.number()?;
    if !n.rest().is_empty() {
        return None;
    }
    s.lit(": ")?;
    let op = s.until(&['(']);
    if op.is_empty() || !op.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ') {
        return None;
    }
    s.lit("(")?;
    s.hex()?;
    s.lit(") @ LBA ")?;
    s.number()?;
    s.lit(", ")?;
    s.number()?;
    s.lit(" blocks, ")?;
    let (_, codes) = s.rest().split_once(" (sct ")?;
    let mut s = Scan(codes);
    let sct = s.hex()?;
    s.lit(" / sc ")?;
    let sc = s.hex()?;
    s.lit(")")?;
    let failed = match sct {
        0 => matches!(sc, 0x04 | 0x06),
        2 => matches!(sc, 0x80..=0x84),
        _ => false,
    };
    failed.then(|| (Kind::NvmeCommand, Subject::Block(name.to_string())))
}

/// `ataN.MM: error: { … }` naming an uncorrectable or address-mark error (UNC, AMNF), or
/// `ataN.MM: cmd …/… tag N …\x0a res … Emask 0x… (media error|timeout)`
/// (drivers/ata/libata-eh.c `ata_eh_link_report`, through `ata_dev_err`, include/linux/
/// libata.h). Not an interface CRC error or an abort alone (a cable, or a command the disk
/// does not support), not `exception Emask` (it heads every error-handler report, a disk
/// plugged in included), not a port's link-level lines.
fn ata(m: &str) -> Option<(Kind, Subject)> {
    let mut s = Scan(m);
    s.lit("ata")?;
    let port = s.number()?;
    s.lit(".")?;
    // `ata%u.%02u`: always two digits (`ata1.0: cmd 60/` is a task name's 15 bytes).
    let device = s.digits(2)?;
    s.lit(": ")?;
    let subject = Subject::AtaDevice { port: format!("ata{port}"), device: u32::try_from(device).ok()? };
    if s.opt("error: { ") {
        let flags = s.until(&['}']);
        s.lit("}")?;
        return flags.split(' ').any(|f| matches!(f, "UNC" | "AMNF")).then_some((Kind::Ata, subject));
    }
    // libata-eh.c `ata_eh_link_report`: the command's taskfile and tag, then on the same
    // record's second line (a newline, which /dev/kmsg shows as `\x0a` and which no
    // process-chosen text in a record can hold: kmsg escapes a backslash too) the result
    // taskfile and the error mask with its description. Each part in its place: the
    // description is never looked for anywhere in the record.
    s.lit("cmd ")?;
    s.taskfile()?;
    s.lit(" tag ")?;
    let (_, result) = s.rest().split_once("\\x0a         res ")?;
    let mut s = Scan(result);
    s.taskfile()?;
    s.lit(" Emask ")?;
    s.hex()?;
    (s.opt(" (media error)") || s.opt(" (timeout)")).then_some((Kind::Ata, subject))
}

/// The host bytes (drivers/scsi/scsi_logging.c `scsi_print_result`) of a command the disk
/// or its link failed: a timeout, a medium or target failure, an error, or a disk no longer
/// answering. Not `DID_OK` (the command completed with sense data: the sense line says
/// what), a bus reset, a busy bus, a requeue, a transport disruption or a reservation.
const FAILED_HOST_BYTES: [&str; 7] = [
    "DID_TIME_OUT",
    "DID_MEDIUM_ERROR",
    "DID_TARGET_FAILURE",
    "DID_ERROR",
    "DID_NO_CONNECT",
    "DID_BAD_TARGET",
    "DID_ABORT",
];

/// `sd H:C:T:L: [<disk>] [tag#N] …` (drivers/scsi/sd.h `sd_printk`, scsi_logging.c
/// `scmd_printk`, `scsi_print_result`, `scsi_print_sense`, scsi_lib.c), through
/// `dev_printk` on the SCSI device: a medium or hardware error sense key, an unrecovered
/// read, a failed command with a failing host byte (or the older `DRIVER_TIMEOUT`), a
/// command timed out, I/O rejected to an offline device. An illegal request (a command the
/// disk does not support) is not among them.
fn scsi(m: &str) -> Option<(Kind, Subject)> {
    let mut s = Scan(m);
    s.lit("sd ")?;
    let address = s.scsi_address()?;
    s.lit(": ")?;
    if s.rest().starts_with("rejecting I/O to offline device") {
        return Some((Kind::Scsi, Subject::Scsi { address, disk: None }));
    }
    s.lit("[")?;
    let disk = block_name(s.until(&[']']))?;
    s.lit("] ")?;
    // Older kernels wrote two spaces after the name.
    let _ = s.opt(" ");
    if s.opt("tag#") {
        s.number()?;
        s.lit(" ")?;
    }
    let failed = if s.opt("FAILED Result: hostbyte=") {
        let host = s.until(&[' ']);
        FAILED_HOST_BYTES.contains(&host) || s.rest().starts_with(" driverbyte=DRIVER_TIMEOUT")
    } else {
        [
            "Sense Key : Medium Error",
            "Sense Key : Hardware Error",
            "Add. Sense: Unrecovered read error",
            "timing out command, waited ",
        ]
        .iter()
        .any(|p| s.rest().starts_with(p))
    };
    failed.then_some((Kind::Scsi, Subject::Scsi { address, disk: Some(disk) }))
}

#[cfg(test)]
mod tests;
