//! Which disk each recognised kernel record is about: recorded kernel logs
//! (tests/fixtures/kmsg) against a sysfs tree built like the real one, and the kernel's
//! partition naming rules for devices sysfs no longer has.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;
use crate::kernel_log::disk_error::{self, Kind};
use crate::kernel_log::record::Record;
use crate::kernel_log::record::{Splitter, parse};

#[test]
fn partition_names_map_to_their_disk_by_the_kernels_rules() {
    for (p, d) in [
        ("sda1", "sda"),
        ("sda", "sda"),
        ("388", "388"),
        ("sdab12", "sdab"),
        ("vda3", "vda"),
        ("xvdb2", "xvdb"),
        ("nvme0n1p2", "nvme0n1"),
        ("nvme0n1", "nvme0n1"),
        ("mmcblk0p1", "mmcblk0"),
        ("mmcblk0", "mmcblk0"),
        ("loop0", "loop0"),
        ("loop0p1", "loop0"),
        ("md127", "md127"),
    ] {
        assert_eq!(disk_of_partition_name(p), d, "{p}");
    }
}

fn records(file: &str) -> Vec<Record> {
    let text = fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kmsg").join(file)).unwrap();
    let mut s = Splitter::default();
    let mut out = s.feed(&text);
    out.extend(s.flush());
    out
}

/// Disk `name` at sysfs device path `dev` (under `devices/`) with partitions `parts`,
/// linked from `block/` as the kernel does; its directory.
fn add_disk(r: &Path, dev: &str, name: &str, parts: &[&str]) -> std::path::PathBuf {
    let dir = r.join("devices").join(dev).join("block").join(name);
    fs::create_dir_all(&dir).unwrap();
    for p in parts {
        fs::create_dir_all(dir.join(p)).unwrap();
        fs::write(dir.join(p).join("partition"), "1\n").unwrap();
    }
    fs::create_dir_all(r.join("block")).unwrap();
    symlink(Path::new("..").join("devices").join(dev).join("block").join(name), r.join("block").join(name)).unwrap();
    dir
}

/// A sysfs with the disks the fixtures name: SATA disks behind ata3/ata4, two NVMe
/// controllers, an SD card, a virtio disk, a loop device and a dm device over sdd1.
fn sysfs() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let disk = |dev: &str, name: &str, parts: &[&str]| add_disk(r, dev, name, parts);
    disk("pci0000:00/0000:00:17.0/ata3/host2/target2:0:0/2:0:0:0", "sdb", &[]);
    disk("pci0000:00/0000:00:17.0/ata4/host3/target3:0:0/3:0:0:0", "sdc", &["sdc1"]);
    disk("pci0000:00/0000:00:17.0/ata5/host4/target4:0:0/4:0:0:0", "sdd", &["sdd1"]);
    disk("pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0", "nvme0n1", &["nvme0n1p2"]);
    disk("pci0000:00/0000:00:1d.1/0000:3e:00.0/nvme/nvme1", "nvme1n1", &[]);
    disk("platform/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa", "mmcblk0", &["mmcblk0p2"]);
    disk("pci0000:00/0000:00:04.0/virtio2", "vda", &["vda3"]);
    disk("virtual", "loop0", &[]);
    let dm = disk("virtual", "dm-0", &[]);
    fs::create_dir_all(dm.join("slaves")).unwrap();
    symlink("../../../../../devices/virtual/block/sdd/sdd1", dm.join("slaves/sdd1")).unwrap();
    root
}

/// (sequence number, kind, disks) of every kernel record in `file` that is a disk error.
fn errors(file: &str, attribution: &Attribution) -> Vec<(u64, Kind, Vec<String>)> {
    records(file)
        .iter()
        .filter_map(|r| disk_error::recognise(r).map(|e| (r.seq, e.kind, attribution.disks(&e))))
        .collect()
}

fn v(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn a_loop_device_over_a_failing_file_is_blamed_and_a_userspace_imitation_is_not() {
    let root = sysfs();
    let a = Attribution::new(root.path());
    assert_eq!(
        errors("loop-eio.log", &a),
        [(1803, Kind::BlockRequest, v(&["loop0"])), (1804, Kind::BufferIo, v(&["loop0"]))],
        "record 1805 was written by a process (facility user), not the kernel"
    );
}

/// The error handler's header (4410), its list of failed commands (4412) and a command
/// that completed with sense data (4417) say that something happened, not that the medium
/// failed; the media error, the sense key and the block layer's verdict do.
#[test]
fn sata_medium_errors_reach_the_disk_through_the_ata_device_and_the_scsi_address() {
    let root = sysfs();
    let a = Attribution::new(root.path());
    assert_eq!(
        errors("sata-medium.log", &a),
        [
            (4413, Kind::Ata, v(&["sdb"])),
            (4415, Kind::Ata, v(&["sdb"])),
            (4418, Kind::Scsi, v(&["sdb"])),
            (4419, Kind::Scsi, v(&["sdb"])),
            (4421, Kind::CriticalMedium, v(&["sdb"])),
        ]
    );
}

#[test]
fn older_kernels_block_layer_lines_and_a_scsi_address_alone_are_attributed() {
    let root = sysfs();
    let a = Attribution::new(root.path());
    assert_eq!(
        errors("old-kernel.log", &a),
        [
            (2210, Kind::BlockRequest, v(&["sdc"])),
            (2211, Kind::BufferIo, v(&["sdc"])),
            (2212, Kind::BlockRequest, v(&["sdc"])),
            (2213, Kind::Scsi, v(&["sdc"])),
        ]
    );
}

#[test]
fn filesystem_errors_on_partitions_and_stacked_devices_reach_the_disks_under_them() {
    let root = sysfs();
    let a = Attribution::new(root.path());
    assert_eq!(
        errors("filesystems.log", &a),
        [
            (902, Kind::Ext4, v(&["mmcblk0"])),
            (903, Kind::Ext4, v(&["vda"])),
            (905, Kind::Xfs, v(&["sdd"])),
            (906, Kind::Xfs, v(&["sdd"])),
        ]
    );
}

#[test]
fn nvme_controller_lines_reach_its_namespaces() {
    let root = sysfs();
    let a = Attribution::new(root.path());
    assert_eq!(
        errors("nvme.log", &a),
        [
            (3002, Kind::NvmeTimeout, v(&["nvme0n1"])),
            (3003, Kind::NvmeTimeout, v(&["nvme0n1"])),
            (3004, Kind::NvmeReset, v(&["nvme1n1"])),
            (3005, Kind::NvmeCommand, v(&["nvme0n1"])),
            (3006, Kind::BlockRequest, v(&["nvme0n1"])),
            (3007, Kind::BufferIo, v(&["nvme0n1"])),
        ]
    );
}

#[test]
fn a_device_sysfs_no_longer_has_is_named_by_the_kernels_partition_rules() {
    let empty = tempfile::tempdir().unwrap();
    let a = Attribution::new(empty.path());
    assert_eq!(errors("nvme.log", &a)[5].2, v(&["nvme0n1"]), "nvme0n1p2 gone from sysfs");
    assert_eq!(errors("filesystems.log", &a)[0].2, v(&["mmcblk0"]));
    assert!(errors("sata-medium.log", &a)[0].2.is_empty(), "a port with no disk behind it blames nothing");
}

/// The disks the kernel record `message` (with its dictionary) is attributed to.
fn blamed(a: &Attribution, message: &str, dictionary: &[&str]) -> Vec<String> {
    let mut text = format!("3,1,1,-;{message}\n");
    for entry in dictionary {
        text += &format!(" {entry}\n");
    }
    let r = parse(&text).unwrap();
    let e = disk_error::recognise(&r).unwrap_or_else(|| panic!("not recognised: {message}"));
    a.disks(&e)
}

/// A port multiplier on ata5 with three disks (links 0 to 2 are SCSI channels 0 to 2).
/// An error of device ata5.02 is that disk's, not its neighbours'.
#[test]
fn an_ata_device_behind_a_port_multiplier_blames_only_its_own_disk() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for (channel, name) in ["sde", "sdf", "sdg"].iter().enumerate() {
        add_disk(r, &format!("pci0000:00/0000:00:17.0/ata5/host4/target4:{channel}:0/4:{channel}:0:0"), name, &[]);
    }
    // And a PATA pair on ata1: master (target 0) and slave (target 1).
    add_disk(r, "pci0000:00/0000:00:1f.1/ata1/host0/target0:0:0/0:0:0:0", "sda", &[]);
    add_disk(r, "pci0000:00/0000:00:1f.1/ata1/host0/target0:0:1/0:0:1:0", "sdb", &[]);
    let a = Attribution::new(r);
    assert_eq!(blamed(&a, "ata5.02: error: { UNC }", &[]), v(&["sdg"]));
    let media = "cmd 60/08:a0:00:e4:2e/00:00:3a:00:00/40 tag 20 ncq dma 4096 in\\x0a         res 41/40:00:00:e4:2e/00:00:3a:00:00/40 Emask 0x409 (media error) <F>";
    assert_eq!(blamed(&a, &format!("ata5.00: {media}"), &[]), v(&["sde"]));
    assert_eq!(blamed(&a, "ata1.01: error: { UNC }", &[]), v(&["sdb"]));
    assert_eq!(blamed(&a, "ata1.00: error: { UNC }", &[]), v(&["sda"]));
}

/// NVMe multipath names a namespace by its subsystem's number, not its controller's:
/// after hot swaps, controller nvme2 is in subsystem 1 (namespace nvme1n1) and controller
/// nvme1 in subsystem 2 (namespace nvme2n1). A timeout on nvme2 is nvme1n1's.
#[test]
fn an_nvme_controller_blames_the_namespaces_of_its_own_subsystem_whatever_their_numbers() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for (subsystem, ctrl) in [(0, 0), (1, 2), (2, 1)] {
        let subsys = r.join(format!("devices/virtual/nvme-subsystem/nvme-subsys{subsystem}"));
        let ctrl_dir = r.join(format!("devices/pci0000:00/0000:00:1d.{ctrl}/0000:3{ctrl}:00.0/nvme/nvme{ctrl}"));
        fs::create_dir_all(&ctrl_dir).unwrap();
        fs::write(ctrl_dir.join("dev"), format!("241:{ctrl}\n")).unwrap();
        add_disk(r, &format!("virtual/nvme-subsystem/nvme-subsys{subsystem}"), &format!("nvme{subsystem}n1"), &[]);
        // The namespace head sits in the subsystem's directory, beside a link to the controller.
        let head = subsys.join("block").join(format!("nvme{subsystem}n1"));
        fs::rename(&head, subsys.join(format!("nvme{subsystem}n1"))).unwrap();
        fs::remove_file(r.join("block").join(format!("nvme{subsystem}n1"))).unwrap();
        symlink(
            format!("../devices/virtual/nvme-subsystem/nvme-subsys{subsystem}/nvme{subsystem}n1"),
            r.join("block").join(format!("nvme{subsystem}n1")),
        )
        .unwrap();
        symlink(&ctrl_dir, subsys.join(format!("nvme{ctrl}"))).unwrap();
        fs::create_dir_all(r.join("class/nvme-subsystem")).unwrap();
        symlink(&subsys, r.join(format!("class/nvme-subsystem/nvme-subsys{subsystem}"))).unwrap();
        fs::create_dir_all(r.join("class/nvme")).unwrap();
        symlink(&ctrl_dir, r.join(format!("class/nvme/nvme{ctrl}"))).unwrap();
    }
    let a = Attribution::new(r);
    let timeout = |ctrl: u32| format!("nvme nvme{ctrl}: I/O 12 QID 3 timeout, reset controller");
    let dictionary = |ctrl: u32| ["SUBSYSTEM=nvme".to_string(), format!("DEVICE=c241:{ctrl}")];
    for (ctrl, namespace) in [(0, "nvme0n1"), (2, "nvme1n1"), (1, "nvme2n1")] {
        let d = dictionary(ctrl);
        assert_eq!(blamed(&a, &timeout(ctrl), &[&d[0], &d[1]]), v(&[namespace]), "nvme{ctrl}");
    }
    // The dictionary's number is the controller's own, as sysfs has it; another's is not believed.
    assert!(blamed(&a, &timeout(2), &["SUBSYSTEM=nvme", "DEVICE=c241:1"]).is_empty());
}

/// With NVMe multipath the kernel logs a failed command under the path device's name
/// (`nvme0c0n1`, hidden, no device node): the failure is the namespace's, `nvme0n1`.
#[test]
fn an_error_of_an_nvme_multipath_path_device_is_its_namespaces() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    add_disk(r, "virtual/nvme-subsystem/nvme-subsys0", "nvme0n1", &[]);
    add_disk(r, "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0", "nvme0c0n1", &[]);
    add_disk(r, "pci0000:00/0000:00:1d.1/0000:3e:00.0/nvme/nvme1", "nvme0c1n1", &[]);
    let a = Attribution::new(r);
    for line in [
        "nvme0c1n1: Read(0x2) @ LBA 8, 8 blocks, Unrecovered Read Error (sct 0x2 / sc 0x81) DNR ",
        "I/O error, dev nvme0c0n1, sector 8 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2",
    ] {
        assert_eq!(blamed(&a, line, &[]), v(&["nvme0n1"]), "{line}");
    }
}

/// An md array (or a volume) over two disks: an error on the array cannot say which disk
/// failed, and the failing member logs its own errors under its own name. A dm device
/// over one disk is that disk.
#[test]
fn an_error_on_an_array_over_several_disks_blames_none_of_them() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    add_disk(r, "pci0000:00/0000:00:17.0/ata3/host2/target2:0:0/2:0:0:0", "sda", &["sda1"]);
    add_disk(r, "pci0000:00/0000:00:17.0/ata4/host3/target3:0:0/3:0:0:0", "sdb", &["sdb1"]);
    let md = add_disk(r, "virtual", "md0", &[]);
    fs::create_dir_all(md.join("slaves")).unwrap();
    fs::create_dir_all(md.join("slaves/sda1")).unwrap();
    fs::create_dir_all(md.join("slaves/sdb1")).unwrap();
    let dm = add_disk(r, "virtual", "dm-0", &[]);
    fs::create_dir_all(dm.join("slaves/sdb1")).unwrap();
    let a = Attribution::new(r);
    assert!(blamed(&a, "Buffer I/O error on dev md0, logical block 0, async page read", &[]).is_empty());
    assert!(
        blamed(
            &a,
            "EXT4-fs error (device md0): ext4_find_entry:1683: inode #2: comm ls: reading directory lblock 0",
            &[]
        )
        .is_empty()
    );
    assert_eq!(blamed(&a, "XFS (dm-0): Corruption detected. Unmount and run xfs_repair", &[]), v(&["sdb"]));
    assert_eq!(
        blamed(&a, "I/O error, dev sda, sector 8 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2", &[]),
        v(&["sda"])
    );
}

/// A dictionary's device number must be the named device's, as sysfs has it.
#[test]
fn a_record_whose_device_number_is_another_devices_blames_nothing() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let sdc = add_disk(r, "pci0000:00/0000:00:17.0/ata4/host3/target3:0:0/3:0:0:0", "sdc", &["sdc1"]);
    fs::write(sdc.join("dev"), "8:32\n").unwrap();
    fs::write(sdc.join("sdc1/dev"), "8:33\n").unwrap();
    let a = Attribution::new(r);
    let line = "Buffer I/O error on dev sdc1, logical block 0, async page read";
    assert_eq!(blamed(&a, line, &["SUBSYSTEM=block", "DEVICE=b8:33"]), v(&["sdc"]));
    assert!(blamed(&a, line, &["SUBSYSTEM=block", "DEVICE=b8:0"]).is_empty());
    let io = "I/O error, dev sdc, sector 0 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2";
    assert_eq!(blamed(&a, io, &["DEVICE=b8:32"]), v(&["sdc"]));
    assert!(blamed(&a, io, &["DEVICE=b8:33"]).is_empty());
}
