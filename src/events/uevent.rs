//! One kernel uevent datagram from `NETLINK_KOBJECT_UEVENT`:
//! `ACTION@DEVPATH\0KEY=VALUE\0…`. udevd's re-broadcasts (`libudev\0` + binary header, on
//! group 2) are not kernel events and are refused.

/// Longest datagram looked at; the kernel's own buffer is 2 KiB (UEVENT_BUFFER_SIZE).
pub const MAX_DATAGRAM: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Add,
    Remove,
    Change,
    /// `move`, `online`, `offline`, `bind`, `unbind`: nothing a disk scan needs at once.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevType {
    Disk,
    Partition,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub action: Action,
    pub devpath: String,
    pub subsystem: Option<String>,
    /// `DEVNAME` (`sda1`), without `/dev/`.
    pub devname: Option<String>,
    pub devtype: DevType,
    pub seqnum: Option<u64>,
    /// `PCI_SLOT_NAME` (`0000:03:00.0`) of a PCI device's event.
    pub pci_slot: Option<String>,
}

impl Uevent {
    /// The block device this event is about (`sda`, `sda1`, `loop0`), when it is a block
    /// disk or partition event.
    pub fn block_device(&self) -> Option<&str> {
        if self.subsystem.as_deref() != Some("block") || self.devtype == DevType::Other {
            return None;
        }
        let name = self.devname.as_deref().or_else(|| self.devpath.rsplit('/').next())?;
        let name = name.strip_prefix("/dev/").unwrap_or(name);
        (!name.is_empty() && name.len() <= 32 && !name.contains("..")).then_some(name)
    }

    /// The PCI address (`0000:03:00.0`, lower case) this event is about, when it is a PCI
    /// device's and the address has the kernel's form.
    pub fn pci_device(&self) -> Option<String> {
        if self.subsystem.as_deref() != Some("pci") {
            return None;
        }
        let slot = self.pci_slot.as_deref().or_else(|| self.devpath.rsplit('/').next())?;
        crate::probes::gpu::pci_address(slot).then(|| slot.to_ascii_lowercase())
    }
}

/// Parses a datagram; `None` when it is not a kernel uevent.
pub fn parse(datagram: &[u8]) -> Option<Uevent> {
    let datagram = &datagram[..datagram.len().min(MAX_DATAGRAM)];
    let mut fields = datagram.split(|&b| b == 0).map(String::from_utf8_lossy);
    let head = fields.next()?;
    let (action, devpath) = head.split_once('@')?;
    let mut ev = Uevent {
        action: match action {
            "add" => Action::Add,
            "remove" => Action::Remove,
            "change" => Action::Change,
            _ => Action::Other,
        },
        devpath: devpath.to_string(),
        subsystem: None,
        devname: None,
        devtype: DevType::Other,
        seqnum: None,
        pci_slot: None,
    };
    for f in fields {
        let Some((k, v)) = f.split_once('=') else { continue };
        match k {
            "SUBSYSTEM" => ev.subsystem = Some(v.to_string()),
            "DEVNAME" => ev.devname = Some(v.to_string()),
            "DEVTYPE" => {
                ev.devtype = match v {
                    "disk" => DevType::Disk,
                    "partition" => DevType::Partition,
                    _ => DevType::Other,
                }
            }
            "SEQNUM" => ev.seqnum = v.parse().ok(),
            "PCI_SLOT_NAME" => ev.pci_slot = Some(v.to_string()),
            _ => {}
        }
    }
    Some(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_detach_is_a_block_disk_change() {
        let d = b"change@/devices/virtual/block/loop0\0ACTION=change\0DEVPATH=/devices/virtual/block/loop0\0\
SUBSYSTEM=block\0MAJOR=7\0MINOR=0\0DEVNAME=loop0\0DEVTYPE=disk\0DISKSEQ=9\0SEQNUM=4711\0";
        let e = parse(d).unwrap();
        assert_eq!(e.action, Action::Change);
        assert_eq!(e.devtype, DevType::Disk);
        assert_eq!(e.seqnum, Some(4711));
        assert_eq!(e.block_device(), Some("loop0"));
    }

    #[test]
    fn a_partition_removal_names_the_partition() {
        let d = b"remove@/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdc/sdc1\0\
ACTION=remove\0SUBSYSTEM=block\0DEVNAME=sdc1\0DEVTYPE=partition\0PARTN=1\0SEQNUM=5000\0";
        let e = parse(d).unwrap();
        assert_eq!(e.action, Action::Remove);
        assert_eq!(e.block_device(), Some("sdc1"));
    }

    #[test]
    fn a_pci_removal_names_the_device_and_is_no_block_event() {
        // What `echo remove > /sys/bus/pci/devices/0000:03:00.0/uevent` and a real removal
        // send (drivers/pci/pci-driver.c pci_uevent), read off this kernel (6.18).
        let d = b"remove@/devices/pci0000:00/0000:00:01.1/0000:03:00.0\0ACTION=remove\0\
DEVPATH=/devices/pci0000:00/0000:00:01.1/0000:03:00.0\0SUBSYSTEM=pci\0PCI_CLASS=30000\0PCI_ID=1002:73FF\0\
PCI_SUBSYS_ID=1DA2:E448\0PCI_SLOT_NAME=0000:03:00.0\0MODALIAS=pci:v00001002d000073FFsv00001DA2sd0000E448bc03sc00i00\0\
SEQNUM=6120\0";
        let e = parse(d).unwrap();
        assert_eq!(e.action, Action::Remove);
        assert_eq!(e.pci_device().as_deref(), Some("0000:03:00.0"));
        assert_eq!(e.block_device(), None);
        let forged = b"remove@/devices/x\0SUBSYSTEM=pci\0PCI_SLOT_NAME=../../etc\0";
        assert_eq!(parse(forged).unwrap().pci_device(), None);
    }

    #[test]
    fn other_subsystems_and_udevs_rebroadcasts_are_not_block_events() {
        let d = b"add@/devices/virtual/net/veth0\0ACTION=add\0SUBSYSTEM=net\0INTERFACE=veth0\0SEQNUM=1\0";
        assert_eq!(parse(d).unwrap().block_device(), None);
        assert_eq!(parse(b"libudev\0\xfe\xed\xca\xfe\x28\0\0\0"), None);
        assert_eq!(parse(b""), None);
    }
}
