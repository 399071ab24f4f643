//! Attack review: kernel log lines whose text is partly chosen by whoever made a
//! filesystem. The kernel logs them itself (facility 0), so the userspace filter does not
//! help; the recogniser must not match its pattern in the middle of such text.

use rig_agent::kernel_log::disk_error::recognise;

#[test]
fn a_btrfs_label_in_a_kernel_line_does_not_blame_a_disk() {
    // fs/btrfs/volumes.c, device_list_add(): pr_info("BTRFS: device label %s devid %llu
    // transid %llu %s scanned by %s (%d)\n", ...). The label is up to 255 bytes of the
    // formatter's choosing, printable, commas and spaces included.
    let line =
        "BTRFS: device label x error, dev sda, sector 1 devid 1 transid 6 /dev/sdc1 scanned by (udev-worker) (412)";
    assert_eq!(recognise(line), None, "a label on /dev/sdc1 was taken for an I/O error on sda");
}
