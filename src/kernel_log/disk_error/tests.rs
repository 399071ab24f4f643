use super::*;
use crate::kernel_log::record::parse;
use crate::kernel_log::task_report::{AFTER_A_TASK_NAME, forged_records};

/// A kernel record (facility 0, level 3) with this message and dictionary.
fn kernel(message: &str, dictionary: &[&str]) -> Record {
    let mut text = format!("3,100,1000,-;{message}\n");
    for entry in dictionary {
        text += &format!(" {entry}\n");
    }
    parse(&text).unwrap()
}

fn seen(message: &str, dictionary: &[&str]) -> Option<(Kind, Subject)> {
    recognise(&kernel(message, dictionary)).map(|e| (e.kind, e.subject))
}

fn block(name: &str) -> Subject {
    Subject::Block(name.into())
}

const SCSI_2000: [&str; 2] = ["SUBSYSTEM=scsi", "DEVICE=+scsi:2:0:0:0"];
const NVME_0: [&str; 2] = ["SUBSYSTEM=nvme", "DEVICE=c241:0"];

/// Real kernel lines, each with the code that prints it; all must still be recognised.
#[test]
fn every_real_disk_failure_format_is_recognised() {
    let sdb = || Subject::Scsi { address: "2:0:0:0".into(), disk: Some("sdb".into()) };
    let nvme0 = || Subject::NvmeController("nvme0".into());
    let ata = |port: &str, device| Subject::AtaDevice { port: port.into(), device };
    #[rustfmt::skip]
    let table: Vec<(&str, &str, &[&str], Kind, Subject)> = vec![
        // block/blk-mq.c blk_print_req_error, read off this kernel (6.18) for a loop device
        // over a FUSE file that fails reads with EIO; no dictionary.
        ("block/blk-mq.c", "I/O error, dev loop0, sector 65536 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2", &[], Kind::BlockRequest, block("loop0")),
        ("block/blk-mq.c", "critical medium error, dev sdb, sector 976151552 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 2", &[], Kind::CriticalMedium, block("sdb")),
        ("block/blk-mq.c", "timeout error, dev sdc, sector 2048 op 0x1:(WRITE) flags 0x8800 phys_seg 1 prio class 2", &[], Kind::BlockRequest, block("sdc")),
        ("block/blk-mq.c", "critical target error, dev sdd, sector 0 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2", &[], Kind::BlockRequest, block("sdd")),
        ("block/blk-mq.c", "protection error, dev nvme0n1, sector 8 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2", &[], Kind::BlockRequest, block("nvme0n1")),
        ("block/blk-mq.c", "device offline error, dev sde, sector 8 op 0x2:(FLUSH) flags 0x800 phys_seg 0 prio class 2", &[], Kind::BlockRequest, block("sde")),
        // block/blk-core.c print_req_error with its caller's name (4.19 to 5.x), and older.
        ("block/blk-core.c 5.x", "blk_update_request: I/O error, dev sdc, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0", &[], Kind::BlockRequest, block("sdc")),
        ("block/blk-core.c 4.14", "print_req_error: I/O error, dev sdc, sector 4096", &[], Kind::BlockRequest, block("sdc")),
        ("block/blk-core.c 4.17", "print_req_error: critical medium error, dev sdc, sector 4096 op 0x0 flags 0x0", &[], Kind::CriticalMedium, block("sdc")),
        ("block/blk-core.c 3.x", "end_request: I/O error, dev sdc, sector 2048", &[], Kind::BlockRequest, block("sdc")),
        ("block/blk-core.c, a dictionary naming the same device", "I/O error, dev sda, sector 8 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", &["SUBSYSTEM=block", "DEVICE=b8:0"], Kind::BlockRequest, block("sda")),
        // fs/buffer.c buffer_io_error.
        ("fs/buffer.c", "Buffer I/O error on dev sda1, logical block 12, async page read", &[], Kind::BufferIo, block("sda1")),
        ("fs/buffer.c", "Buffer I/O error on dev nvme0n1p2, logical block 0, lost async page write", &[], Kind::BufferIo, block("nvme0n1p2")),
        ("fs/buffer.c 3.x", "Buffer I/O error on device sdc1, logical block 0", &[], Kind::BufferIo, block("sdc1")),
        // fs/ext4/super.c __ext4_error, __ext4_error_inode, __ext4_std_error.
        ("fs/ext4/super.c", "EXT4-fs error (device mmcblk0p2): ext4_find_entry:1683: inode #2: comm ls: reading directory lblock 0", &[], Kind::Ext4, block("mmcblk0p2")),
        ("fs/ext4/super.c", "EXT4-fs error (device sda1): ext4_journal_check_start:83: comm kworker/u8:2: Detected aborted journal", &[], Kind::Ext4, block("sda1")),
        ("fs/ext4/super.c", "EXT4-fs error (device vda3) in ext4_reserve_inode_write:5727: IO failure", &[], Kind::Ext4, block("vda3")),
        // fs/xfs: xfs_buf.c xfs_buf_ioerror_alert (and its 4.x form), xfs_log.c,
        // xfs_fsops.c xfs_do_force_shutdown (and the older words), xfs_error.c.
        ("fs/xfs/xfs_buf.c", "XFS (sdd1): metadata I/O error in \"xfs_imap_to_bp+0x61/0xb0 [xfs]\" at daddr 0x1c0 len 32 error 5", &[], Kind::Xfs, block("sdd1")),
        ("fs/xfs/xfs_buf.c 4.x", "XFS (sdd1): metadata I/O error: block 0x1c0 (\"xfs_trans_read_buf_map\") error 5 numblks 8", &[], Kind::Xfs, block("sdd1")),
        ("fs/xfs/xfs_log.c", "XFS (sdb1): log I/O error -5", &[], Kind::Xfs, block("sdb1")),
        ("fs/xfs/xfs_fsops.c", "XFS (sdb1): Log I/O Error (0x2) detected at xlog_ioend_work+0x6e/0x70 [xfs] (fs/xfs/xfs_log.c:1392).  Shutting down filesystem.", &[], Kind::Xfs, block("sdb1")),
        ("fs/xfs/xfs_fsops.c", "XFS (dm-1): Metadata I/O Error (0x1) detected at xfs_trans_read_buf_map+0x1f2/0x2f0 [xfs] (fs/xfs/xfs_trans_buf.c:296).  Shutting down filesystem.", &[], Kind::Xfs, block("dm-1")),
        ("fs/xfs/xfs_fsops.c 4.x", "XFS (sdb1): Log I/O Error Detected.  Shutting down filesystem", &[], Kind::Xfs, block("sdb1")),
        ("fs/xfs/xfs_fsops.c 4.x", "XFS (sdb1): I/O Error Detected. Shutting down filesystem", &[], Kind::Xfs, block("sdb1")),
        ("fs/xfs/xfs_error.c", "XFS (dm-0): Corruption detected. Unmount and run xfs_repair", &[], Kind::Xfs, block("dm-0")),
        ("fs/xfs/xfs_error.c", "XFS (sdb1): Metadata corruption detected at xfs_dinode_verify+0xa5/0x7e0 [xfs], inode 0x83 dinode", &[], Kind::Xfs, block("sdb1")),
        ("fs/xfs/xfs_error.c", "XFS (sdb1): Metadata CRC error detected at xfs_agf_read_verify+0xd0/0x100 [xfs], xfs_agf block 0x1", &[], Kind::Xfs, block("sdb1")),
        // drivers/nvme/host/pci.c through dev_warn on the controller (SUBSYSTEM=nvme).
        ("drivers/nvme/host/pci.c nvme_timeout", "nvme nvme0: I/O 388 (Read) QID 3 timeout, aborting", &NVME_0, Kind::NvmeTimeout, nvme0()),
        ("drivers/nvme/host/pci.c nvme_timeout", "nvme nvme0: I/O 388 QID 3 timeout, reset controller", &NVME_0, Kind::NvmeTimeout, nvme0()),
        ("drivers/nvme/host/pci.c nvme_timeout", "nvme nvme0: I/O 12 QID 0 timeout, disable controller", &NVME_0, Kind::NvmeTimeout, nvme0()),
        ("drivers/nvme/host/pci.c 6.10", "nvme nvme0: I/O tag 322 (9142) opcode 0x2 (I/O Cmd) QID 5 timeout, aborting req_op:READ(0) size:4096", &NVME_0, Kind::NvmeTimeout, nvme0()),
        ("drivers/nvme/host/pci.c nvme_timeout", "nvme nvme0: controller is down; will reset: CSTS=0xffffffff, PCI_STATUS=0xffff", &NVME_0, Kind::NvmeReset, nvme0()),
        ("drivers/nvme/host/pci.c nvme_reset_work", "nvme nvme0: Device not ready; aborting reset, CSTS=0x1", &NVME_0, Kind::NvmeReset, nvme0()),
        ("drivers/nvme/host/pci.c nvme_remove_dead_ctrl", "nvme nvme0: Removing after probe failure status: -19", &NVME_0, Kind::NvmeReset, nvme0()),
        // drivers/nvme/host/core.c nvme_log_error: media and data errors only.
        ("drivers/nvme/host/core.c", "nvme0n1: Read(0x2) @ LBA 1953525168, 8 blocks, Unrecovered Read Error (sct 0x2 / sc 0x81) DNR ", &[], Kind::NvmeCommand, block("nvme0n1")),
        ("drivers/nvme/host/core.c", "nvme0n1: Write(0x1) @ LBA 2048, 8 blocks, Write Fault (sct 0x2 / sc 0x80) ", &[], Kind::NvmeCommand, block("nvme0n1")),
        ("drivers/nvme/host/core.c", "nvme1n1: Read(0x2) @ LBA 0, 1 blocks, Data Transfer Error (sct 0x0 / sc 0x4) ", &[], Kind::NvmeCommand, block("nvme1n1")),
        // drivers/ata/libata-eh.c ata_eh_link_report through ata_dev_err ("ataN.MM: ").
        ("drivers/ata/libata-eh.c", "ata3.00: error: { UNC }", &[], Kind::Ata, ata("ata3", 0)),
        ("drivers/ata/libata-eh.c", "ata5.02: error: { UNC AMNF }", &[], Kind::Ata, ata("ata5", 2)),
        ("drivers/ata/libata-eh.c", "ata3.00: cmd 60/08:a0:00:e4:2e/00:00:3a:00:00/40 tag 20 ncq dma 4096 in\\x0a         res 41/40:00:00:e4:2e/00:00:3a:00:00/40 Emask 0x409 (media error) <F>", &[], Kind::Ata, ata("ata3", 0)),
        ("drivers/ata/libata-eh.c", "ata1.00: cmd 60/00:00:00:08:00/01:00:00:00:00/40 tag 3 ncq dma 131072 in\\x0a         res 40/00:01:00:00:00/00:00:00:00:00/00 Emask 0x4 (timeout)", &[], Kind::Ata, ata("ata1", 0)),
        // drivers/scsi: sd_printk, scmd_printk, scsi_logging.c, scsi_lib.c, all through
        // dev_printk on the SCSI device (SUBSYSTEM=scsi, DEVICE=+scsi:H:C:T:L).
        ("drivers/scsi/scsi_logging.c scsi_print_sense", "sd 2:0:0:0: [sdb] tag#20 Sense Key : Medium Error [current] ", &SCSI_2000, Kind::Scsi, sdb()),
        ("drivers/scsi/scsi_logging.c scsi_print_sense", "sd 2:0:0:0: [sdb] tag#20 Add. Sense: Unrecovered read error - auto reallocate failed", &SCSI_2000, Kind::Scsi, sdb()),
        ("drivers/scsi/scsi_logging.c 4.x", "sd 2:0:0:0: [sdb]  Sense Key : Hardware Error [current] ", &SCSI_2000, Kind::Scsi, sdb()),
        ("drivers/scsi/scsi_logging.c scsi_print_result", "sd 2:0:0:0: [sdb] tag#0 FAILED Result: hostbyte=DID_TIME_OUT driverbyte=DRIVER_OK cmd_age=30s", &SCSI_2000, Kind::Scsi, sdb()),
        ("drivers/scsi/scsi_logging.c 4.x", "sd 2:0:0:0: [sdb] FAILED Result: hostbyte=DID_OK driverbyte=DRIVER_TIMEOUT", &SCSI_2000, Kind::Scsi, sdb()),
        ("drivers/scsi/scsi_lib.c scsi_timeout", "sd 2:0:0:0: [sdb] tag#3 timing out command, waited 180s", &SCSI_2000, Kind::Scsi, sdb()),
        ("drivers/scsi/scsi_lib.c", "sd 3:0:0:0: rejecting I/O to offline device", &["SUBSYSTEM=scsi", "DEVICE=+scsi:3:0:0:0"], Kind::Scsi, Subject::Scsi { address: "3:0:0:0".into(), disk: None }),
    ];
    for (source, message, dictionary, kind, subject) in table {
        assert_eq!(seen(message, dictionary), Some((kind, subject)), "{source}: {message}");
    }
}

/// Real lines of healthy disks (or of a cable, a path, a kernel bug): never a warning.
#[test]
fn lines_that_are_not_a_failing_disk_are_ignored() {
    #[rustfmt::skip]
    let table: [(&str, &[&str]); 27] = [
        ("loop0: detected capacity change from 0 to 131072", &[]),
        ("EXT4-fs (sda1): mounted filesystem 8f1c5c2e-1b1a-4a4e-9d55-5a0f4f7b2a11 r/w with ordered data mode. Quota mode: none.", &[]),
        ("XFS (sdb1): Mounting V5 Filesystem 3b8f2a90-0d1c-4c0b-8d2e-2d7c6b8e9f10", &[]),
        ("XFS (sdb1): Ending clean mount", &[]),
        ("XFS (sdb1): Please unmount the filesystem and rectify the problem(s)", &[]),
        // A kernel bug, not the disk.
        ("XFS (sdb1): Corruption of in-memory data (0x8) detected at xfs_trans_cancel+0x12e/0x150 [xfs] (fs/xfs/xfs_trans.c:1097).  Shutting down filesystem.", &[]),
        ("nvme nvme0: 8/0/0 default/read/poll queues", &NVME_0),
        // The command had completed; only its interrupt was lost.
        ("nvme nvme0: I/O 5 QID 2 timeout, completion polled", &NVME_0),
        ("nvme nvme0: Abort status: 0x0", &NVME_0),
        // A tool asking for a log page the drive does not have (an admin command).
        ("nvme0: Get Log Page(0x2), Invalid Field in Command (sct 0x0 / sc 0x2) DNR ", &[]),
        // A drive without write-zeroes: a refused optional command, twice.
        ("nvme0n1: Write Zeroes(0x8) @ LBA 0, 2048 blocks, Invalid Field in Command (sct 0x0 / sc 0x2) DNR ", &[]),
        ("operation not supported error, dev nvme0n1, sector 0 op 0x9:(WRITE_ZEROES) flags 0x800 phys_seg 0 prio class 2", &[]),
        // A USB bridge refusing UNMAP for a discard.
        ("critical target error, dev sdb, sector 2048 op 0x3:(DISCARD) flags 0x800 phys_seg 1 prio class 0", &[]),
        // Another host's reservation; a path of a multipath device.
        ("critical nexus error, dev sdc, sector 0 op 0x1:(WRITE) flags 0x8800 phys_seg 1 prio class 2", &[]),
        ("recoverable transport error, dev sdd, sector 8 op 0x0:(READ) flags 0x4000 phys_seg 1 prio class 2", &[]),
        ("ata3: SATA link up 6.0 Gbps (SStatus 133 SControl 300)", &[]),
        // A disk plugged in: the error handler's report heads every event.
        ("ata3: exception Emask 0x10 SAct 0x0 SErr 0x4050000 action 0xe frozen", &[]),
        ("ata3.00: exception Emask 0x0 SAct 0x100000 SErr 0x0 action 0x0", &[]),
        ("ata3.00: failed command: READ FPDMA QUEUED", &[]),
        // A bad cable: interface CRC errors.
        ("ata3.00: error: { ICRC ABRT }", &[]),
        ("ata3.00: cmd 61/08:a0:00:e4:2e/00:00:3a:00:00/40 tag 20 ncq dma 4096 out\\x0a         res 51/84:00:00:e4:2e/00:00:3a:00:00/40 Emask 0x10 (ATA bus error)", &[]),
        ("sd 2:0:0:0: [sdb] 7814037168 512-byte logical blocks: (4.00 TB/3.64 TiB)", &SCSI_2000),
        // A command the disk does not support: it completed with sense data.
        ("sd 2:0:0:0: [sdb] tag#0 FAILED Result: hostbyte=DID_OK driverbyte=DRIVER_OK cmd_age=0s", &SCSI_2000),
        ("sd 2:0:0:0: [sdb] tag#0 Sense Key : Illegal Request [current] ", &SCSI_2000),
        ("sd 2:0:0:0: [sdb] tag#0 Add. Sense: Invalid field in cdb", &SCSI_2000),
        ("sd 2:0:0:0: [sdb] tag#0 CDB: Write same(16) 93 08 00 00 00 00 00 00 08 00 00 00 00 08 00 00", &SCSI_2000),
        ("usb 1-1: new high-speed USB device number 2 using xhci_hcd", &[]),
    ];
    for (message, dictionary) in table {
        assert_eq!(seen(message, dictionary), None, "{message}");
    }
}

/// Task names that begin like a driver's line for a disk the agent monitors.
const NAMES: [&str; 19] = [
    "XFS (sda): ",
    "XFS (nvme0n1): ",
    "XFS (mmcblk0): ",
    "XFS (sda): meta",
    "nvme nvme0: ",
    "nvme nvme0: I/O",
    "nvme0n1: ",
    "nvme0n1: Read(0",
    "ata1: error: {",
    "ata1.00: error:",
    "ata1.00: cmd 60",
    "ata1.0: cmd 60/",
    "sd 0:0:0:0: x",
    "sd 0:0:0:0: [s",
    "I/O error, dev ",
    "EXT4-fs error (",
    "Buffer I/O erro",
    "x(",
    "[1]",
];

/// File names that carry the rest of a driver's words.
const FILES: [&str; 8] = [
    "timeout",
    "Medium Error",
    "x @ LBA 0, 8 blocks, Unrecovered Read Error (sct 0x2 / sc 0x81)",
    " error, dev sda, sector 0",
    "error: { UNC }",
    "Emask 0x4 (timeout)",
    "FAILED Result: hostbyte=DID_TIME_OUT",
    "metadata I/O error in \"x\"",
];

/// mm/page_alloc.c `warn_alloc` logs, at KERN_WARNING and with no dictionary, `<task
/// name>: page allocation failure: order:…, mode:…, nodemask=…` (or `vmalloc error: …`)
/// and, through kernel/cgroup/cpuset.c `cpuset_print_current_mems_allowed` (`pr_cont`,
/// the same record), `,cpuset=<the task's cpuset cgroup's name>,mems_allowed=…`. Both the
/// task name at the start (15 bytes: `ata1.0: cmd 60/`) and the cgroup's name at the end
/// (any bytes but `/` and a newline, in a delegated subtree or a container's) are the
/// process's choice. Such a record is a report about a task, never a disk's, whatever the
/// two say (and the ata rule reads libata's error mask only in its place).
#[test]
fn a_page_allocation_failure_report_of_a_task_named_like_an_ata_command_never_blames_a_disk() {
    let whats = [
        "page allocation failure: order:4, mode:0x40dc0(GFP_KERNEL|__GFP_COMP|__GFP_ZERO), nodemask=(null)",
        "vmalloc error: size 8388608, failed to allocate pages, mode:0xdc0(GFP_KERNEL|__GFP_ZERO), nodemask=(null)",
    ];
    for cgroup in ["x Emask 0x1 (media error)", "x Emask 0x4 (timeout)"] {
        for what in whats {
            let m = format!("ata1.0: cmd 60/: {what},cpuset={cgroup},mems_allowed=0");
            assert!("ata1.0: cmd 60/".len() <= 15);
            let r = parse(&format!("4,7,8,-;{m}\n")).unwrap();
            assert_eq!(recognise(&r), None, "{m}");
        }
    }
}

#[test]
fn a_forged_segfault_record_never_blames_a_disk() {
    let records = forged_records(&NAMES, &FILES, &["-"]);
    for text in &records {
        assert_eq!(recognise(&parse(text).unwrap()), None, "{text}");
    }
    assert_eq!(records.len(), NAMES.len() * AFTER_A_TASK_NAME.len() * FILES.len() * 3);
    // The reported one, as the kernel logged it.
    let reported = "XFS (vda): [28266]: segfault at 0 ip 00007f9946774219 sp 00007fff3bad72a8 error 4 in libc.so.6[156219,7f9946644000+156000] likely on CPU 0 (core 0, socket 0)";
    assert_eq!(seen(reported, &[]), None);
}

/// A kernel message of the form "<task name>: <text the task chose>" at KERN_INFO, as
/// some reports about a task are, must not pass for a driver's error even where its text
/// has the driver's whole shape: the drivers without a dictionary log failures at warning
/// level or worse.
#[test]
fn a_printk_rule_needs_its_drivers_severity() {
    let lines = [
        "nvme0n1: Read(0x2) @ LBA 0, 8 blocks, Unrecovered Read Error (sct 0x2 / sc 0x81) DNR ",
        "ata1.00: error: { UNC }",
        "I/O error, dev sda, sector 8 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2",
        "XFS (sda): metadata I/O error in \"x\" at daddr 0x1 len 1 error 5",
    ];
    for line in lines {
        for (prio, believed) in [(1, true), (2, true), (3, true), (4, true), (5, false), (6, false), (7, false)] {
            let r = parse(&format!("{prio},7,8,-;{line}\n")).unwrap();
            assert_eq!(recognise(&r).is_some(), believed, "level {prio}: {line}");
        }
    }
    // SCSI sense lines are informational, and believed for their dictionary.
    assert!(seen("sd 2:0:0:0: [sdb] tag#1 Sense Key : Medium Error [current] ", &SCSI_2000).is_some());
    let info = parse(
        "6,7,8,-;sd 2:0:0:0: [sdb] tag#1 Sense Key : Medium Error [current] \n SUBSYSTEM=scsi\n DEVICE=+scsi:2:0:0:0\n",
    );
    assert!(recognise(&info.unwrap()).is_some());
}

#[test]
fn a_record_written_by_a_process_is_never_the_kernels() {
    // `echo "I/O error, dev sda, …" > /dev/kmsg` by root: facility user.
    let r = parse("12,5,6,-;I/O error, dev sda, sector 0 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0\n").unwrap();
    assert_eq!(recognise(&r), None);
}

/// SCSI disks and NVMe controllers log through dev_printk, which always attaches the
/// dictionary: without it, or naming another device, the record is not theirs.
#[test]
fn a_dev_printk_format_without_its_dictionary_or_with_another_device_is_not_believed() {
    let sense = "sd 2:0:0:0: [sdb] tag#20 Sense Key : Medium Error [current] ";
    assert!(seen(sense, &SCSI_2000).is_some());
    assert_eq!(seen(sense, &[]), None);
    assert_eq!(seen(sense, &["SUBSYSTEM=scsi", "DEVICE=+scsi:3:0:0:0"]), None);
    assert_eq!(seen(sense, &["SUBSYSTEM=block", "DEVICE=+scsi:2:0:0:0"]), None);
    let timeout = "nvme nvme0: I/O 388 QID 3 timeout, reset controller";
    assert!(seen(timeout, &NVME_0).is_some());
    assert_eq!(seen(timeout, &[]), None);
    assert_eq!(seen(timeout, &["SUBSYSTEM=nvme", "DEVICE=b259:0"]), None);
    // A printk format with a dictionary must name the same block device.
    let io = "I/O error, dev sda, sector 8 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0";
    assert_eq!(seen(io, &["DEVICE=+block:sdb"]), None);
    assert_eq!(seen(io, &["SUBSYSTEM=scsi", "DEVICE=b8:0"]), None);
    assert_eq!(seen(io, &["DEVICE=+block:sda"]), Some((Kind::BlockRequest, block("sda"))));
    let numbered = recognise(&kernel(io, &["DEVICE=b8:0"])).unwrap();
    assert_eq!(numbered.number, Some(DevNumber { block: true, major: 8, minor: 0 }));
}

#[test]
fn a_name_that_cannot_be_a_device_is_refused() {
    for m in [
        "I/O error, dev ../../etc, sector 0",
        "Buffer I/O error on dev 388 (Read) Qpage",
        "Buffer I/O error on dev 388, logical block 1",
        "I/O error, dev a:b, sector 0",
        "I/O error, dev nvme0..n1, sector 0",
    ] {
        assert_eq!(seen(m, &[]), None, "{m}");
    }
    assert_eq!(seen(&format!("I/O error, dev {}, sector 0", "a".repeat(40)), &[]), None);
}

#[test]
fn a_btrfs_label_in_a_kernel_line_does_not_blame_a_disk() {
    // fs/btrfs/volumes.c device_list_add(): the label is the formatter's choice.
    let line =
        "BTRFS: device label x error, dev sda, sector 1 devid 1 transid 6 /dev/sdc1 scanned by (udev-worker) (412)";
    assert_eq!(seen(line, &[]), None);
}
