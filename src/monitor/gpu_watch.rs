//! The monitor's view of the GPUs: what the kernel log and PCI uevents said of them
//! between scans, and the conditions a scan finds (`gpus::rules` for lost and missing
//! GPUs, the storms of hardware Xids and driver resets). The episodes themselves are the
//! monitor's, kept with the disks' by the same machinery.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::episodes::condition::Condition;
use crate::episodes::reason::Reason;
use crate::events::storm::Storms;
use crate::gpus::health::GpuHealth;
use crate::gpus::inventory::GpuInventory;
use crate::gpus::rules::{self, Ends, Held, NvidiaSeen, Seen};
use crate::kernel_log::gpu_error::{GpuRef, Kind};
use crate::kernel_log::xid::{self, XidClass};
use crate::probes::gpu::{self, Vendor};

pub(super) struct GpuWatch {
    pub inv: GpuInventory,
    pub health: Arc<GpuHealth>,
    /// `gpus.warn`: when off, GPUs are still remembered and their Xids counted, but no
    /// condition is raised.
    pub warn: bool,
    sysfs: PathBuf,
    held: Held,
    /// Hardware Xid storms by bus id: one `gpu_xid` episode each.
    xids: Storms,
    /// Driver reset storms (ring timeouts, resets, NVIDIA's recovery Xid) by bus id.
    resets: Storms,
    /// nvidia-smi's last answer (taken off this thread, see the monitor's helper).
    pub nvidia: NvidiaSeen,
}

impl GpuWatch {
    pub fn new(inv: GpuInventory, health: Arc<GpuHealth>, warn: bool, sysfs: PathBuf, quiet: Duration) -> GpuWatch {
        let mut w = GpuWatch {
            inv,
            health,
            warn,
            sysfs,
            held: Held::default(),
            xids: Storms::new(quiet),
            resets: Storms::new(quiet),
            nvidia: NvidiaSeen::Silent,
        };
        // Episodes open before a restart stay open until what ends them is seen: a
        // restart (a reboot into the same failure) alone never ends one.
        let now = Instant::now();
        for e in &w.inv.episodes.open {
            match e.reason {
                Reason::GpuLost => w.held.hold(&e.subject, &e.detail, Ends::Restart, now),
                Reason::GpuXid => w.xids.resume(&e.subject, "Xids before the agent restarted", now),
                Reason::GpuReset => w.resets.resume(&e.subject, "resets before the agent restarted", now),
                _ => {}
            }
        }
        w
    }

    pub fn set_quiet(&mut self, quiet: Duration) {
        self.xids.set_quiet(quiet);
        self.resets.set_quiet(quiet);
    }

    /// The bus id a record names, if it is a GPU of the inventory: an unnamed amdgpu
    /// record is the rig's only AMD GPU, or nobody's on a rig with several.
    fn resolve(&self, gpu: &GpuRef) -> Option<String> {
        match gpu {
            GpuRef::Pci(bus) => self.inv.gpus.contains_key(bus).then(|| bus.clone()),
            GpuRef::OnlyAmd => {
                let mut amd = self.inv.gpus.iter().filter(|(_, g)| g.vendor == Vendor::Amd);
                match (amd.next(), amd.next()) {
                    (Some((bus, _)), None) => Some(bus.clone()),
                    _ => None,
                }
            }
        }
    }

    /// Takes in `lines` kernel records of one GPU and kind (`line` the first, escaped and
    /// capped); true when it opens a condition (scan now).
    pub fn take_record(&mut self, gpu: &GpuRef, kind: Kind, line: &str, lines: u64, now: Instant) -> bool {
        // A record naming an address the inventory does not hold is believed only once
        // the bus shows a GPU there: kernel records cannot grow the inventory.
        let bus = match self.resolve(gpu) {
            Some(bus) => bus,
            None => {
                let GpuRef::Pci(bus) = gpu else { return false };
                let on_bus = gpu::read_pci_gpus(&self.sysfs).is_some_and(|g| g.iter().any(|g| &g.bus_id == bus));
                if !on_bus {
                    log::debug!("GPU record for {bus}, which is not a GPU on this rig: ignored");
                    return false;
                }
                bus.clone()
            }
        };
        if let Kind::Xid(code) = kind {
            self.health.count_xid(&bus, code, lines);
        }
        if !self.warn {
            return false;
        }
        let detail = format!("kernel: {line}");
        match kind {
            Kind::Xid(code) => match xid::class(code) {
                XidClass::FellOffBus => self.lose(&bus, &detail, Ends::Answers, now),
                XidClass::Hardware => self.xids.note(&bus, &detail, now),
                XidClass::Recovery => self.resets.note(&bus, &detail, now),
                XidClass::Application | XidClass::Unclassified => false,
            },
            Kind::FellOffBus => self.lose(&bus, &detail, Ends::Answers, now),
            Kind::RingTimeout | Kind::Reset => self.resets.note(&bus, &detail, now),
        }
    }

    fn lose(&mut self, bus: &str, detail: &str, ends: Ends, now: Instant) -> bool {
        let new = !self.held.is_held(bus);
        self.held.hold(bus, detail, ends, now);
        new
    }

    /// A PCI device removed from the bus or added to it; true when it changes a GPU's
    /// standing (scan now).
    pub fn take_pci(&mut self, slot: &str, added: bool, now: Instant) -> bool {
        if !self.inv.gpus.contains_key(slot) {
            return false;
        }
        if added {
            self.held.added(slot);
            return true;
        }
        self.warn && self.lose(slot, &format!("PCI device {slot} was removed from the bus"), Ends::BackOnBus, now)
    }

    /// The GPU conditions standing now, the inventory updated with what the bus and the
    /// vendors' views show.
    pub fn conditions(&mut self, now: Instant) -> Vec<Condition> {
        let seen = Seen {
            pci: gpu::read_pci_gpus(&self.sysfs),
            nvidia: self.nvidia.clone(),
            amd: gpu::read_amd(&self.sysfs),
            now,
        };
        let mut out = rules::evaluate(&mut self.inv, &mut self.held, &seen);
        for (storms, reason) in [(&mut self.xids, Reason::GpuXid), (&mut self.resets, Reason::GpuReset)] {
            for (bus, first, _) in storms.open(now) {
                out.push(Condition { subject: bus, reason, detail: first });
            }
        }
        if !self.warn {
            out.clear();
        }
        out
    }

    /// Whether the inventory holds an NVIDIA GPU (nvidia-smi has something to say).
    pub fn has_nvidia(&self) -> bool {
        self.inv.gpus.values().any(|g| g.vendor == Vendor::Nvidia)
    }

    /// Whether a GPU is held lost: every nvidia-smi answer may be the one that ends it.
    pub fn lost_held(&self) -> bool {
        self.inv.gpus.keys().any(|bus| self.held.is_held(bus))
    }

    /// When a storm ends if no record comes: the monitor looks again then.
    pub fn next_end(&self) -> Option<Instant> {
        match (self.xids.next_end(), self.resets.next_end()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episodes::episode::Episode;
    use crate::gpus::inventory::KnownGpu;

    /// A rig with one NVIDIA GPU on its bus at 0000:01:00.0, and the inventory as saved
    /// with `open` episodes of it.
    fn rig(open: &[Reason]) -> (tempfile::TempDir, GpuWatch) {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("bus/pci/devices/0000:01:00.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("class"), "0x030000\n").unwrap();
        std::fs::write(dev.join("vendor"), "0x10de\n").unwrap();
        let mut inv = GpuInventory::default();
        inv.remember("0000:01:00.0", KnownGpu { vendor: Vendor::Nvidia, model: None, uuid: None, index: None });
        for (i, reason) in open.iter().enumerate() {
            inv.episodes.open.push(Episode {
                subject: "0000:01:00.0".into(),
                reason: *reason,
                act_id: format!("a-{i}"),
                since: crate::protocol::Timestamp::exact(1),
                detail: "before".into(),
                reported: true,
            });
        }
        let w = GpuWatch::new(inv, Arc::default(), true, d.path().to_path_buf(), Duration::from_secs(600));
        (d, w)
    }

    #[test]
    fn episodes_open_before_a_restart_still_hold_at_the_first_scan_after_it() {
        let (_d, mut w) = rig(&[Reason::GpuLost, Reason::GpuXid, Reason::GpuReset]);
        let mut held: Vec<Reason> = w.conditions(Instant::now()).iter().map(|c| c.reason).collect();
        held.sort();
        assert_eq!(held, [Reason::GpuLost, Reason::GpuXid, Reason::GpuReset], "a restart alone ends nothing");
    }

    #[test]
    fn records_for_an_address_that_is_no_gpu_here_raise_nothing_and_grow_nothing() {
        let (_d, mut w) = rig(&[]);
        let now = Instant::now();
        for i in 0..1000u32 {
            let bus = format!("0001:{:02x}:{:02x}.0", i / 32 % 256, i % 32);
            assert!(!w.take_record(&GpuRef::Pci(bus), Kind::Xid(79), "x", 1, now));
        }
        assert!(w.conditions(now).is_empty());
        assert_eq!(w.inv.gpus.len(), 1);
        // The rig's own GPU: one episode for a storm of its hardware Xids.
        let gpu = GpuRef::Pci("0000:01:00.0".into());
        assert!(w.take_record(&gpu, Kind::Xid(48), "first", 1, now));
        for _ in 0..1000 {
            assert!(!w.take_record(&gpu, Kind::Xid(48), "again", 1, now));
        }
        let c = w.conditions(now);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].reason, c[0].detail.as_str()), (Reason::GpuXid, "kernel: first"));
        assert_eq!(w.health.xids("0000:01:00.0")[&48], 1001);
    }
}
