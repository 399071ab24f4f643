//! The GPU failure rules of PROTOCOL.md §9 for `gpu_lost` and `gpu_missing`, as pure
//! functions over what a scan saw and what the monitor holds: no IO, the monitor reads.
//! (`gpu_xid` and `gpu_reset` are kernel storms, which the monitor keeps as it keeps disks'
//! I/O-error storms.)
//!
//! A GPU is judged against the sources that can see it: the PCI bus first (every NVIDIA and
//! AMD display controller, whatever its driver says), then its vendor's own view (nvidia-smi
//! for NVIDIA, amdgpu's DRM cards for AMD). A source that did not answer judges nothing:
//! nvidia-smi hung in a dying driver is not "every NVIDIA GPU gone".
//!
//! A lost GPU stays lost until it answers again ([`Held`]): a kernel record is a moment,
//! and nvidia-smi often hangs once a GPU is lost, so neither the next quiet scan nor a
//! silent nvidia-smi ends the episode; nvidia-smi listing it as working does (a card back
//! from a PCI removal: seen gone, then back). A GPU lost while nvidia-smi is not installed
//! or turned off stays lost until the agent restarts (a reboot) and finds it on the bus.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::episodes::condition::Condition;
use crate::episodes::reason::Reason;
use crate::gpus::inventory::{GpuInventory, KnownGpu};
use crate::probes::gpu::{Gpu, GpuState, PciGpu, Vendor, pci_address};

/// What nvidia-smi gave the scan.
#[derive(Debug, Clone, PartialEq)]
pub enum NvidiaSeen {
    /// Its GPUs (lost ones included) from a run that started at this instant.
    Listed(Instant, Vec<Gpu>),
    /// It is turned off or not installed: it will not answer in this run.
    Off,
    /// No answer yet, or it failed, timed out or hangs: it judges nothing now.
    Silent,
}

/// What one scan saw of the GPUs.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// NVIDIA and AMD display controllers on the PCI bus; `None` without a bus to look at.
    pub pci: Option<Vec<PciGpu>>,
    pub nvidia: NvidiaSeen,
    /// The AMD cards amdgpu shows (`class/drm`).
    pub amd: Vec<Gpu>,
    /// When the scan read them.
    pub now: Instant,
}

/// Why a GPU is held lost, and what ends the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ends {
    /// The driver lost it (Xid 79, nvidia-smi's "GPU is lost"): nvidia-smi lists it as
    /// working in a run started after it was lost.
    Answers,
    /// It was removed from the bus: seen gone (or added again by the kernel), then back on
    /// the bus and not lost to its driver.
    BackOnBus,
    /// Lost before the agent restarted: on the bus and working, or on the bus where
    /// nvidia-smi cannot tell.
    Restart,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Hold {
    detail: String,
    since: Instant,
    ends: Ends,
    gone_seen: bool,
}

/// The GPUs held lost, by bus id: bounded by the inventory (only its GPUs are held).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    by_bus: BTreeMap<String, Hold>,
}

impl Held {
    /// Holds `bus` lost from `now` for `detail` until `ends` says; a GPU already held keeps
    /// what first lost it.
    pub fn hold(&mut self, bus: &str, detail: &str, ends: Ends, now: Instant) {
        self.by_bus.entry(bus.to_string()).or_insert(Hold {
            detail: detail.to_string(),
            since: now,
            ends,
            gone_seen: false,
        });
    }

    /// The kernel added the device at `bus` to the bus again (a PCI `add` uevent).
    pub fn added(&mut self, bus: &str) {
        if let Some(h) = self.by_bus.get_mut(bus) {
            h.gone_seen = true;
        }
    }

    pub fn is_held(&self, bus: &str) -> bool {
        self.by_bus.contains_key(bus)
    }

    /// Lets go of `bus`: it answers again, or it is another GPU.
    fn release(&mut self, bus: &str) {
        self.by_bus.remove(bus);
    }
}

/// How the GPU's own vendor view sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// Listed and working, by a look taken at this instant.
    Working(Instant),
    /// Listed as lost or unreachable, in nvidia-smi's words.
    Lost(String),
    /// Its tool answered without it.
    Unlisted,
    /// Its tool gave nothing to judge by now.
    Silent,
    /// Its tool is off or not installed.
    NoTool,
}

fn answer(known: &KnownGpu, bus: &str, seen: &Seen) -> Answer {
    match known.vendor {
        Vendor::Nvidia => match &seen.nvidia {
            NvidiaSeen::Off => Answer::NoTool,
            NvidiaSeen::Silent => Answer::Silent,
            NvidiaSeen::Listed(at, gpus) => match gpus.iter().find(|g| g.bus_id.as_deref() == Some(bus)) {
                None => Answer::Unlisted,
                Some(g) if g.state == GpuState::Ok => Answer::Working(*at),
                Some(g) => Answer::Lost(g.error.clone().unwrap_or_else(|| g.state.as_str().to_string())),
            },
        },
        Vendor::Amd if seen.amd.iter().any(|g| g.bus_id.as_deref() == Some(bus)) => Answer::Working(seen.now),
        Vendor::Amd => Answer::Unlisted,
    }
}

/// Whether the GPU enumerates: on the PCI bus when there is one to look at, else listed by
/// its vendor's view; `None` when nothing can tell.
fn present(bus: &str, seen: &Seen, answer: &Answer) -> Option<bool> {
    match (&seen.pci, answer) {
        (Some(pci), _) => Some(pci.iter().any(|g| g.bus_id == bus)),
        (None, Answer::Working(_) | Answer::Lost(_)) => Some(true),
        (None, Answer::Unlisted) => Some(false),
        (None, Answer::Silent | Answer::NoTool) => None,
    }
}

/// Takes in what a scan saw into the inventory: every GPU on the bus or in a vendor's
/// view is remembered with what is known of it. A GPU replaced by another (another UUID at
/// the address) is no longer held lost.
fn remember(inv: &mut GpuInventory, held: &mut Held, seen: &Seen) {
    let mut seen_now: Vec<(String, KnownGpu)> = Vec::new();
    for g in seen.pci.iter().flatten() {
        seen_now.push((g.bus_id.clone(), KnownGpu { vendor: g.vendor, model: None, uuid: None, index: None }));
    }
    let listed = match &seen.nvidia {
        NvidiaSeen::Listed(_, gpus) => gpus.as_slice(),
        _ => &[],
    };
    for g in listed.iter().chain(&seen.amd) {
        // Only an address in the kernel's form names a GPU: nvidia-smi's words (or a
        // wrapper's) never become a key of the inventory, a warning's `gpu` or a log line.
        if let Some(bus) = g.bus_id.as_ref().filter(|b| pci_address(b)) {
            seen_now.push((
                bus.clone(),
                KnownGpu { vendor: g.vendor, model: g.name.clone(), uuid: g.uuid.clone(), index: g.index },
            ));
        }
    }
    for (bus, known) in seen_now {
        if inv.remember(&bus, known) {
            held.release(&bus);
        }
    }
}

/// Applies the rules to a scan: returns the `gpu_lost` and `gpu_missing` conditions that
/// hold now, and updates the inventory and what is held lost.
pub fn evaluate(inv: &mut GpuInventory, held: &mut Held, seen: &Seen) -> Vec<Condition> {
    remember(inv, held, seen);
    held.by_bus.retain(|bus, _| inv.gpus.contains_key(bus));
    let mut out = Vec::new();
    for (bus, known) in &inv.gpus {
        let answer = answer(known, bus, seen);
        let present = present(bus, seen, &answer);
        if let Answer::Lost(words) = &answer {
            held.hold(bus, &format!("nvidia-smi: {words}"), Ends::Answers, seen.now);
        }
        if let Some(h) = held.by_bus.get_mut(bus) {
            h.gone_seen |= present == Some(false);
            let back = match h.ends {
                Ends::Answers => matches!(answer, Answer::Working(at) if at > h.since),
                Ends::BackOnBus => {
                    h.gone_seen && present == Some(true) && matches!(answer, Answer::Working(_) | Answer::NoTool)
                }
                Ends::Restart => match answer {
                    Answer::Working(_) => present != Some(false),
                    Answer::NoTool => present == Some(true),
                    _ => false,
                },
            };
            if back {
                held.release(bus);
            }
        }
        let name = |what: &str| match &known.model {
            Some(m) => format!("GPU {bus} ({m}) {what}"),
            None => format!("GPU {bus} {what}"),
        };
        match held.by_bus.get(bus) {
            Some(h) => out.push(Condition { subject: bus.clone(), reason: Reason::GpuLost, detail: h.detail.clone() }),
            // A lost GPU that also left the bus is one episode, not two.
            None if present == Some(false) => {
                let detail = match (&seen.pci, known.vendor) {
                    (Some(_), _) => name("is no longer on the PCI bus"),
                    (None, Vendor::Nvidia) => name("is no longer listed by nvidia-smi"),
                    (None, Vendor::Amd) => name("no longer has an amdgpu card"),
                };
                out.push(Condition { subject: bus.clone(), reason: Reason::GpuMissing, detail });
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
