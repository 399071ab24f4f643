//! Kernel input: any bytes as a `/dev/kmsg` stream, one kernel record, or a
//! uevent datagram must parse to something or nothing, never panic; what is recognised
//! names a device that cannot leave /sys/block (a GPU by a PCI address that cannot leave
//! /sys/bus/pci), and quoted text stays capped and escaped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rig_agent::events::attribution::disk_of_partition_name;
use rig_agent::kernel_log::disk_error::{self, Subject};
use rig_agent::kernel_log::gpu_error::{self, GpuRef};
use rig_agent::kernel_log::record::{self, MAX_MESSAGE, Splitter};
use rig_agent::events::{QUOTE_CHARS, uevent};
use rig_agent::protocol::escape::escape_to;

fuzz_target!(|data: &[u8]| {
    let mut s = Splitter::default();
    let mut records = s.feed(data);
    records.extend(s.flush());
    records.extend(record::parse(&String::from_utf8_lossy(data)));
    for r in records {
        assert!(r.message.len() <= MAX_MESSAGE);
        let quoted = escape_to(&r.message, QUOTE_CHARS);
        assert!(quoted.chars().filter(|c| c.is_control()).count() == 0);
        if let Some(e) = disk_error::recognise(&r) {
            let n = match e.subject {
                Subject::Block(n) | Subject::NvmeController(n) | Subject::Scsi { disk: Some(n), .. } => n,
                Subject::AtaDevice { port, .. } => port,
                Subject::Scsi { address, disk: None } => address,
            };
            assert!(!n.is_empty() && !n.contains('/') && !n.contains(".."));
            assert!(!disk_of_partition_name(&n).is_empty());
        }
        if let Some(GpuRef::Pci(bus)) = gpu_error::recognise(&r).map(|g| g.gpu) {
            assert!(bus.len() == 12 && !bus.contains('/') && !bus.contains(".."), "{bus:?}");
            assert!(bus.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.'), "{bus:?}");
        }
    }
    if let Some(ev) = uevent::parse(data)
        && let Some(dev) = ev.block_device()
    {
        assert!(!dev.is_empty() && !dev.contains(".."));
    }
});
