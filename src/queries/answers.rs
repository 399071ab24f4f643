//! The `data` of each query of PROTOCOL.md §6, assembled from the readers with the exact
//! field names and units (bytes, Unix seconds, °C). A value the machine does not give is
//! `null`.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::config::Config;
use crate::disks::health::{DiskHealth, Health};
use crate::episodes::reason::Reason;
use crate::gpus::health::GpuHealth;
use crate::os::mountinfo::{self, Mount};
use crate::os::sysfs::{entries, read_attr};
use crate::probes::disks::{self, Disk, StateVerdict};
use crate::probes::gpu::{self, NvidiaError, NvidiaReader, NvidiaSettings};
use crate::probes::network::{self, Addresses};
use crate::probes::smart::{Smart, SmartError, SmartReader};
use crate::probes::system::{self, SystemProbe};
use crate::probes::{Roots, board, fans, mounts, sensors, units};
use crate::protocol::Refusal;

pub struct Probes {
    roots: Roots,
    /// What a reload may change: the disk filter and the rig's id.
    reloadable: Mutex<Reloadable>,
    system: Mutex<SystemProbe>,
    pub smart: Arc<SmartReader>,
    pub nvidia: Arc<NvidiaReader>,
    /// The disk monitor's verdicts (open episodes, disks gone).
    pub health: Arc<DiskHealth>,
    /// The monitor's GPU verdicts and Xid counts.
    pub gpu_health: Arc<GpuHealth>,
}

/// The settings of [`Probes`] that a reload changes in place.
#[derive(Debug, Clone)]
struct Reloadable {
    /// `disks.include` / `disks.exclude` globs.
    include: Vec<String>,
    exclude: Vec<String>,
    hardware_id: String,
}

impl From<&Config> for Reloadable {
    fn from(cfg: &Config) -> Self {
        Reloadable {
            include: cfg.disks.include.clone(),
            exclude: cfg.disks.exclude.clone(),
            hardware_id: cfg.device.hardware_id.clone(),
        }
    }
}

impl Probes {
    pub fn from_config(cfg: &Config) -> Probes {
        let roots = Roots::from_config(&cfg.paths);
        let d = &cfg.disks;
        Probes {
            system: Mutex::new(SystemProbe::new(roots.clone())),
            roots,
            reloadable: Mutex::new(Reloadable::from(cfg)),
            smart: Arc::new(
                SmartReader::new(&d.smartctl, d.smart_timeout, d.smart_interval)
                    .with_privileged_socket(cfg.paths.privileged_socket.clone()),
            ),
            nvidia: Arc::new(NvidiaReader::new(nvidia_settings(cfg))),
            health: Arc::new(DiskHealth::default()),
            gpu_health: Arc::new(GpuHealth::default()),
        }
    }

    /// Takes in a reloaded config's disk filter, SMART settings and identity.
    pub fn reconfigure(&self, cfg: &Config) {
        let d = &cfg.disks;
        *self.reloadable.lock().unwrap_or_else(|p| p.into_inner()) = Reloadable::from(cfg);
        self.smart.reconfigure(&d.smartctl, d.smart_timeout, d.smart_interval);
        self.nvidia.reconfigure(nvidia_settings(cfg));
    }

    fn reloadable(&self) -> Reloadable {
        self.reloadable.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn system(&self) -> std::sync::MutexGuard<'_, SystemProbe> {
        self.system.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The monitored disks as sysfs shows them now.
    pub fn disks(&self) -> Vec<Disk> {
        let Reloadable { include, exclude, .. } = self.reloadable();
        disks::monitored(&self.roots.sysfs, &include, &exclude)
            .iter()
            .filter_map(|name| disks::read(&self.roots.sysfs, name))
            .collect()
    }

    pub fn system_baseinfo(&self) -> Value {
        let mut sys = self.system();
        let (os_name, os_version) = sys.os();
        let cpu = sys.cpu();
        let mem = sys.memory();
        let disks = self.disks();
        // Only the default route's interface: its first IPv4 address and its MAC.
        let primary = network::default_route(&self.roots.procfs);
        let (primary_ipv4, primary_mac) = match &primary {
            None => (None, None),
            Some(p) => {
                let addresses = network::kernel_addresses();
                let ipv4 = addresses
                    .get(p)
                    .and_then(|(v4, _)| v4.first())
                    .map(|c| c.split('/').next().unwrap_or(c).to_string());
                (ipv4, read_attr(&self.roots.sysfs.join("class/net").join(p).join("address")))
            }
        };
        json!({
            "hostname": sys.hostname(),
            "os": {"name": os_name, "version": os_version},
            "kernel": sys.kernel(),
            "arch": system::arch(),
            "cpu": {"model": cpu.model, "logical_cores": cpu.logical_cores, "physical_cores": cpu.physical_cores},
            "memory": {"total_bytes": mem.map(|m| m.total_bytes), "available_bytes": mem.map(|m| m.available_bytes)},
            "swap": {"total_bytes": mem.map(|m| m.swap_total_bytes), "free_bytes": mem.map(|m| m.swap_free_bytes)},
            "disks": {"count": disks.len(), "total_bytes": units::sum(disks.iter().filter_map(|d| d.size_bytes))},
            "network": {
                "primary_interface": primary,
                "primary_ipv4": primary_ipv4,
                "primary_mac": primary_mac,
            },
            "boot_time": system::boot_time(),
            "uptime_secs": system::uptime_secs(),
            "agent": {"version": crate::version()},
            "hardware_id": self.reloadable().hardware_id,
        })
    }

    pub fn system_status(&self) -> Value {
        let mut sys = self.system();
        let mem = sys.memory();
        let load = system::load_average();
        json!({
            "cpu_usage_percent": sys.cpu_usage_percent(),
            "load_avg": {"one": load.map(|l| l.0), "five": load.map(|l| l.1), "fifteen": load.map(|l| l.2)},
            "memory": {
                "total_bytes": mem.map(|m| m.total_bytes),
                "used_bytes": mem.and_then(|m| units::difference(m.total_bytes, m.available_bytes)),
                "available_bytes": mem.map(|m| m.available_bytes),
            },
            "swap": {
                "total_bytes": mem.map(|m| m.swap_total_bytes),
                "used_bytes": mem.and_then(|m| units::difference(m.swap_total_bytes, m.swap_free_bytes)),
            },
            "processes": sys.processes(),
            "uptime_secs": system::uptime_secs(),
        })
    }

    pub fn disk_info(&self) -> Result<Value, Refusal> {
        let block = self.roots.sysfs.join("block");
        if std::fs::read_dir(&block).is_err() {
            return Err(Refusal::probe_failed(format!("get_disk_info: cannot read {}", block.display())));
        }
        let mounts = mountinfo::read(&self.roots.procfs);
        let disks = self.disks();
        // All disks' SMART at once: one hung smartctl costs smart_timeout, not one per disk.
        let smart = self.smart.read_many(&disks.iter().map(Disk::device).collect::<Vec<_>>());
        let mut list: Vec<Value> = disks
            .iter()
            .zip(smart)
            .map(|(d, smart)| {
                // Why `smart` is null when the privileged half could not give it.
                let why = match &smart {
                    Err(
                        e @ (SmartError::PrivilegedUnreachable(_)
                        | SmartError::Refused { .. }
                        | SmartError::StillStuck { .. }),
                    ) => Some(e.to_string()),
                    _ => None,
                };
                let mut disk = self.disk_json(d, smart.ok(), &mounts);
                if let Some(why) = why {
                    disk["smart_error"] = crate::protocol::escape::escape(&why).into();
                }
                disk
            })
            .collect();
        // Disks known from earlier scans that are gone are listed too.
        for (name, r) in self.health.missing() {
            list.push(json!({
                "name": name, "device": format!("/dev/{name}"), "model": r.model, "serial": r.serial,
                "size_bytes": r.size_bytes, "rotational": null, "state": null, "ioerr_count": null,
                "health": Health::Missing.as_str(), "reason": Reason::Missing.as_str(), "smart": null, "mounts": [],
            }));
        }
        Ok(json!({ "disks": list }))
    }

    fn disk_json(&self, d: &Disk, smart: Option<Smart>, mounts: &[Mount]) -> Value {
        // The monitor's open episode decides; without one, what one look shows.
        let (health, reason) = match self.health.failing(&d.name) {
            Some(reason) => (Health::of_failure(reason), Some(reason)),
            None => assess(d, smart.as_ref().and_then(|s| s.passed)),
        };
        let devs: Vec<&str> = d.devs().collect();
        let mounts: Vec<Value> = mounts
            .iter()
            .filter(|m| devs.contains(&m.dev.as_str()))
            .map(|m| {
                let u = mounts::usage(&self.roots, &m.mountpoint);
                json!({
                    "mountpoint": m.mountpoint, "fstype": m.fstype, "readonly": m.readonly,
                    "total_bytes": u.and_then(|u| u.total_bytes), "used_bytes": u.and_then(|u| u.used_bytes),
                    "available_bytes": u.and_then(|u| u.available_bytes),
                })
            })
            .collect();
        json!({
            "name": d.name, "device": d.device(), "model": d.model, "serial": d.serial,
            "size_bytes": d.size_bytes, "rotational": d.rotational, "state": d.state,
            "ioerr_count": d.ioerr_count, "health": health.as_str(), "reason": reason.map(Reason::as_str),
            "smart": smart.map(|s| s.to_json()), "mounts": mounts,
        })
    }

    pub fn network_info(&self) -> Result<Value, Refusal> {
        let net = self.roots.sysfs.join("class/net");
        if entries(&net).is_empty() {
            return Err(Refusal::probe_failed(format!("get_network_info: cannot read {}", net.display())));
        }
        Ok(self.interfaces_json(&network::kernel_addresses()))
    }

    /// The `data` of `get_network_info` for given addresses (the kernel's, or a test's).
    pub fn interfaces_json(&self, addresses: &Addresses) -> Value {
        let list: Vec<Value> = network::read(&self.roots.sysfs, addresses).iter().map(|i| i.to_json()).collect();
        json!({ "interfaces": list })
    }

    pub fn temperature(&self) -> Value {
        let list: Vec<Value> = sensors::read(&self.roots.sysfs).iter().map(|s| s.to_json()).collect();
        json!({ "sensors": list })
    }

    /// NVIDIA GPUs from nvidia-smi (cached briefly), then AMD ones from sysfs. How
    /// nvidia-smi fared is in `nvidia_smi`, so "no NVIDIA GPU" and "nvidia-smi hung" differ.
    pub fn gpu_info(&self) -> Value {
        let nvidia = self.nvidia.read();
        let mut gpus: Vec<Value> =
            nvidia.as_ref().map(|g| g.iter().map(gpu::Gpu::to_json).collect()).unwrap_or_default();
        gpus.extend(gpu::read_amd(&self.roots.sysfs).iter().map(gpu::Gpu::to_json));
        // What the monitor knows of each: its open failure episode, and the Xid records the
        // kernel logged for it since the agent started (application Xids included, which
        // are never warned), by code.
        for g in &mut gpus {
            let Some(bus) = g["bus_id"].as_str().map(str::to_string) else { continue };
            g["failing"] = self.gpu_health.failing(&bus).map(|r| r.as_str()).into();
            let xids: serde_json::Map<String, Value> =
                self.gpu_health.xids(&bus).into_iter().map(|(code, n)| (code.to_string(), n.into())).collect();
            g["xids"] = xids.into();
        }
        let (status, error) = match &nvidia {
            Ok(_) => ("ok", None),
            Err(e @ (NvidiaError::Disabled | NvidiaError::NotInstalled(_))) => (e.status(), None),
            Err(e) => (e.status(), Some(crate::protocol::escape::escape(&e.to_string()))),
        };
        json!({ "gpus": gpus, "nvidia_smi": {"status": status, "error": error} })
    }

    pub fn fans(&self) -> Value {
        let list: Vec<Value> = fans::read(&self.roots.sysfs).iter().map(|f| f.to_json()).collect();
        json!({ "fans": list })
    }

    /// The controller board: its MMC storage's wear, the root filesystem, power and
    /// throttling. Each part is `null` (or an empty list) where the board does not say.
    pub fn board_health(&self) -> Value {
        let sysfs = &self.roots.sysfs;
        let mounts = mountinfo::read(&self.roots.procfs);
        let root = std::path::Path::new("/");
        let root_mount = mounts.iter().rev().find(|m| m.mountpoint == "/");
        let usage = mounts::usage(&self.roots, "/");
        let throttled =
            board::find_throttled(sysfs).and_then(|p| read_attr(&p)).and_then(|t| board::parse_throttled(&t));
        let thermal = board::read_thermal_throttle(sysfs);
        json!({
            "mmc": board::read_mmc(sysfs).iter().map(board::Mmc::to_json).collect::<Vec<_>>(),
            "root_fs": {
                "fstype": root_mount.map(|m| m.fstype.clone()),
                "readonly": mountinfo::filesystem_readonly(&mounts, root),
                "total_bytes": usage.and_then(|u| u.total_bytes),
                "used_bytes": usage.and_then(|u| u.used_bytes),
                "available_bytes": usage.and_then(|u| u.available_bytes),
            },
            "throttled": throttled.map(board::Throttled::to_json),
            "under_voltage_alarm": board::rpi_under_voltage(sysfs),
            "thermal_throttle": thermal.map(|t| json!({"core_events": t.core_events, "package_events": t.package_events})),
        })
    }
}

fn nvidia_settings(cfg: &Config) -> NvidiaSettings {
    let p = &cfg.probes;
    NvidiaSettings { binary: p.nvidia_smi.clone(), timeout: p.nvidia_smi_timeout, max_age: p.nvidia_smi_interval }
}

/// Health from what can be seen in one look: a disk that reports size 0 is `missing` (gone,
/// its node lingering); one whose device state is offline for its transport, or fails
/// SMART, is `failed`; one with a healthy state or a passed SMART check is `ok`; with
/// neither (a virtio disk, an NVMe controller in the middle of a reset) it is `unknown`.
/// The disk monitor adds what needs history (disappeared disks, rising error counts,
/// filesystems turned read-only).
pub fn assess(d: &Disk, smart_passed: Option<bool>) -> (Health, Option<Reason>) {
    let failed = |reason| (Health::of_failure(reason), Some(reason));
    if d.size_bytes == Some(0) {
        failed(Reason::Missing)
    } else if d.state_verdict() == Some(StateVerdict::Offline) {
        failed(Reason::Offline)
    } else if smart_passed == Some(false) {
        failed(Reason::SmartFailed)
    } else if d.state_verdict() == Some(StateVerdict::Healthy) || smart_passed == Some(true) {
        (Health::Ok, None)
    } else {
        (Health::Unknown, None)
    }
}
