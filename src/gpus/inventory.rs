//! What the monitor remembers of the rig's GPUs across restarts, in `<state_dir>/gpus.json`:
//! every NVIDIA and AMD GPU it has seen, by PCI bus id, with its model, UUID and index (so
//! one gone while the agent was down is still reported, and a warning names it), and the
//! GPUs' failure episodes (so an acknowledged one is not reported again).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::episodes::ledger::Ledger;
use crate::os::durable::write_durably;
use crate::os::state_file;
use crate::probes::gpu::{Vendor, pci_address};

const FILE: &str = "gpus.json";

/// The largest inventory read back: a few hundred bytes per GPU.
const FILE_CAP: u64 = 1 << 20;

/// The longest model or UUID believed from the file (nvidia-smi's names are under 64).
const MAX_TEXT: usize = 256;

/// GPUs remembered at most: a rig has a few dozen at the very most. Past this a GPU is not
/// added (kernel records naming addresses that never enumerate cannot grow the file).
pub const MAX_GPUS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownGpu {
    pub vendor: Vendor,
    /// nvidia-smi's name, or amdgpu's `product_name`.
    pub model: Option<String>,
    /// NVIDIA's GPU UUID; another at the same address is another GPU.
    pub uuid: Option<String>,
    /// nvidia-smi's index, or the DRM card number for AMD.
    pub index: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuInventory {
    /// By PCI bus id (`0000:01:00.0`).
    pub gpus: BTreeMap<String, KnownGpu>,
    /// The GPUs' failure episodes, open and closing.
    pub episodes: Ledger,
}

impl GpuInventory {
    /// Loads the inventory; a missing file is an empty inventory. A corrupt one is moved
    /// aside (`gpus.json.corrupt`) and the message for an error-level log line is returned
    /// with an empty inventory: the agent goes on.
    pub fn load(state_dir: &Path) -> (GpuInventory, Option<String>) {
        let (inv, problem) = state_file::load(state_dir, FILE, FILE_CAP, "GPU inventory", GpuInventory::from_json);
        (inv.unwrap_or_default(), problem)
    }

    /// Writes the inventory durably (temp, fsync, rename).
    pub(crate) fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        write_durably(state_dir, FILE, self.to_json().to_string().as_bytes())
    }

    /// Takes in what a scan or a kernel record says of the GPU at `bus`: added when new
    /// (and while under [`MAX_GPUS`]), its model, UUID and index kept when nothing newer is
    /// known. Returns whether it is another GPU than the one remembered there (its UUID
    /// differs): the old one's failures are not the new one's.
    pub fn remember(&mut self, bus: &str, seen: KnownGpu) -> bool {
        if !self.gpus.contains_key(bus) && self.gpus.len() >= MAX_GPUS {
            return false;
        }
        let known = self.gpus.entry(bus.to_string()).or_insert_with(|| KnownGpu {
            vendor: seen.vendor,
            model: None,
            uuid: None,
            index: None,
        });
        let replaced = matches!((&known.uuid, &seen.uuid), (Some(was), Some(now)) if was != now);
        known.vendor = seen.vendor;
        known.model = seen.model.or(known.model.take());
        known.uuid = seen.uuid.or(known.uuid.take());
        known.index = seen.index.or(known.index);
        replaced
    }

    pub(crate) fn to_json(&self) -> Value {
        let gpus: serde_json::Map<String, Value> = self
            .gpus
            .iter()
            .map(|(bus, g)| {
                (bus.clone(), json!({"vendor": g.vendor.as_str(), "model": g.model, "uuid": g.uuid, "index": g.index}))
            })
            .collect();
        let mut v = json!({"version": 1, "gpus": gpus});
        self.episodes.put(&mut v);
        v
    }

    pub(crate) fn from_json(v: &Value) -> Option<GpuInventory> {
        if v["version"].as_u64()? != 1 {
            return None;
        }
        let s = |x: &Value| x.as_str().map(str::to_string);
        let mut gpus = BTreeMap::new();
        for (bus, g) in v["gpus"].as_object()? {
            // Only what this agent writes: a PCI address, and text no longer than a GPU's
            // name or UUID. Anything else is not believed (the file is moved aside).
            let short = |x: &Value| x.as_str().is_none_or(|t| t.len() <= MAX_TEXT);
            if !pci_address(bus) || !short(&g["model"]) || !short(&g["uuid"]) {
                return None;
            }
            let index = match &g["index"] {
                Value::Null => None,
                i => Some(u32::try_from(i.as_u64()?).ok()?),
            };
            let known = KnownGpu {
                vendor: Vendor::parse(g["vendor"].as_str()?)?,
                model: s(&g["model"]),
                uuid: s(&g["uuid"]),
                index,
            };
            gpus.insert(bus.clone(), known);
        }
        let episodes = Ledger::get(v)?;
        let subjects = episodes.open.iter().chain(episodes.closing.iter().map(|c| &c.episode));
        if !subjects.into_iter().all(|e| pci_address(&e.subject)) {
            return None;
        }
        Some(GpuInventory { gpus, episodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episodes::episode::Episode;
    use crate::episodes::reason::Reason;

    fn rtx(uuid: &str) -> KnownGpu {
        KnownGpu {
            vendor: Vendor::Nvidia,
            model: Some("NVIDIA GeForce RTX 3090".into()),
            uuid: Some(uuid.into()),
            index: Some(0),
        }
    }

    #[test]
    fn the_inventory_round_trips_through_its_file_and_a_corrupt_one_is_moved_aside() {
        let d = tempfile::tempdir().unwrap();
        let mut inv = GpuInventory::default();
        inv.remember("0000:01:00.0", rtx("GPU-1"));
        inv.remember("0000:03:00.0", KnownGpu { vendor: Vendor::Amd, model: None, uuid: None, index: Some(1) });
        inv.episodes.open.push(Episode {
            subject: "0000:01:00.0".into(),
            reason: Reason::GpuLost,
            act_id: "9f3a61c2-31".into(),
            since: crate::protocol::Timestamp::exact(1_764_000_000),
            detail: "NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus.".into(),
            reported: true,
        });
        inv.save(d.path()).unwrap();
        assert_eq!(GpuInventory::load(d.path()), (inv, None));
        std::fs::write(d.path().join(FILE), "{\"version\":1,\"gpus\":").unwrap();
        let (inv, problem) = GpuInventory::load(d.path());
        assert_eq!(inv, GpuInventory::default());
        assert!(problem.unwrap().starts_with("GPU inventory "));
        assert!(d.path().join("gpus.json.corrupt").exists());
    }

    #[test]
    fn an_oversized_inventory_or_one_that_is_not_a_file_is_moved_aside_and_reported() {
        let d = tempfile::tempdir().unwrap();
        // Valid JSON, but past the cap: never read whole.
        let big =
            format!("{{\"version\":1,\"gpus\":{{}},\"episodes\":[],\"pad\":\"{}\"}}", "x".repeat(FILE_CAP as usize));
        std::fs::write(d.path().join(FILE), big).unwrap();
        let (inv, problem) = GpuInventory::load(d.path());
        assert_eq!(inv, GpuInventory::default());
        assert!(problem.unwrap().starts_with("GPU inventory"));
        assert!(d.path().join("gpus.json.corrupt").exists());
        std::fs::remove_file(d.path().join("gpus.json.corrupt")).unwrap();
        // A link to somewhere else is not followed.
        std::os::unix::fs::symlink("/etc/hostname", d.path().join(FILE)).unwrap();
        let (inv, problem) = GpuInventory::load(d.path());
        assert_eq!(inv, GpuInventory::default());
        assert!(problem.is_some());
        // An entry of another kind's episode, or an unknown vendor: not this agent's file.
        for bad in [
            r#"{"version":1,"gpus":{},"episodes":[{"disk":"sda","reason":"gpu_lost","act_id":"a","since":1}]}"#,
            r#"{"version":1,"gpus":{"0000:01:00.0":{"vendor":"intel"}},"episodes":[]}"#,
            r#"{"version":2,"gpus":{},"episodes":[]}"#,
            "{\"version\":1,\"gpus\":{\"0000:01:00.0\\u001b[2J\":{\"vendor\":\"nvidia\"}},\"episodes\":[]}",
            r#"{"version":1,"gpus":{"../../etc":{"vendor":"nvidia"}},"episodes":[]}"#,
            r#"{"version":1,"gpus":{},"episodes":[{"gpu":"GPU[x]","reason":"gpu_lost","act_id":"a","since":1}]}"#,
            &format!(
                r#"{{"version":1,"gpus":{{"0000:01:00.0":{{"vendor":"nvidia","model":"{}"}}}},"episodes":[]}}"#,
                "m".repeat(300)
            ),
        ] {
            std::fs::remove_file(d.path().join(FILE)).ok();
            std::fs::write(d.path().join(FILE), bad).unwrap();
            assert_eq!(GpuInventory::load(d.path()).0, GpuInventory::default(), "{bad}");
        }
    }

    #[test]
    fn what_is_known_of_a_gpu_is_kept_and_another_uuid_is_another_gpu() {
        let mut inv = GpuInventory::default();
        assert!(!inv.remember("0000:01:00.0", rtx("GPU-1")));
        // Seen on the bus only (nvidia-smi not answering): nothing known is forgotten.
        let bare = KnownGpu { vendor: Vendor::Nvidia, model: None, uuid: None, index: None };
        assert!(!inv.remember("0000:01:00.0", bare));
        assert_eq!(inv.gpus["0000:01:00.0"], rtx("GPU-1"));
        assert!(inv.remember("0000:01:00.0", rtx("GPU-2")), "a card swapped into the slot");
        assert_eq!(inv.gpus["0000:01:00.0"].uuid.as_deref(), Some("GPU-2"));
    }

    #[test]
    fn the_inventory_holds_at_most_so_many_gpus() {
        let mut inv = GpuInventory::default();
        for i in 0..MAX_GPUS + 10 {
            inv.remember(&format!("0000:{i:02x}:00.0"), rtx("GPU-x"));
        }
        assert_eq!(inv.gpus.len(), MAX_GPUS);
    }
}
