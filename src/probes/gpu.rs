//! GPUs: NVIDIA through `nvidia-smi --query-gpu … --format=csv,noheader,nounits` (the
//! driver's own tool; NVML without it would mean linking the driver's library), AMD through
//! sysfs (`class/drm/card*/device` and its hwmon), which amdgpu fills without any tool.
//!
//! nvidia-smi runs in a child process of its own process group, killed as a group when it
//! runs over `probes.nvidia_smi_timeout` (a GPU that has fallen off the bus can hang it in
//! the driver), and its answer is reused for `probes.nvidia_smi_interval`, so that a burst
//! of queries runs it once.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{entries, read_attr};
use crate::os::child;

/// The fields asked of nvidia-smi, in the order [`parse_nvidia`] reads them.
pub const NVIDIA_QUERY: &str = "index,name,pci.bus_id,temperature.gpu,fan.speed,power.draw,power.limit,\
utilization.gpu,memory.total,memory.used,clocks.gr,clocks.mem";

/// How much of nvidia-smi's output is read: a line per GPU is about 100 bytes.
const NVIDIA_OUTPUT_CAP: usize = 256 << 10;

/// Longest outside text (nvidia-smi's words) put in a log line or an answer.
const TEXT_CAP: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Nvidia,
    Amd,
}

impl Vendor {
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Nvidia => "nvidia",
            Vendor::Amd => "amd",
        }
    }
}

/// Whether the GPU answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuState {
    Ok,
    /// The driver lost it ("GPU is lost", fallen off the bus): it needs a reboot.
    Lost,
    /// The driver could not read it for another reason (given in `error`).
    Error,
}

impl GpuState {
    pub fn as_str(self) -> &'static str {
        match self {
            GpuState::Ok => "ok",
            GpuState::Lost => "lost",
            GpuState::Error => "error",
        }
    }
}

/// One GPU as the agent reports it; what the vendor's interface does not give is `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    /// nvidia-smi's index, or the DRM card number (`card1` is 1) for AMD.
    pub index: Option<u32>,
    pub vendor: Vendor,
    pub name: Option<String>,
    /// PCI address as sysfs and lspci write it: `0000:03:00.0`.
    pub bus_id: Option<String>,
    pub state: GpuState,
    pub error: Option<String>,
    /// The edge sensor (NVIDIA's only one, AMD's `edge`).
    pub temperature_celsius: Option<f64>,
    pub junction_celsius: Option<f64>,
    pub memory_temperature_celsius: Option<f64>,
    pub fan_percent: Option<f64>,
    pub fan_rpm: Option<u64>,
    pub power_watts: Option<f64>,
    pub power_limit_watts: Option<f64>,
    pub utilization_percent: Option<f64>,
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    pub core_clock_mhz: Option<u64>,
    pub memory_clock_mhz: Option<u64>,
}

impl Gpu {
    fn empty(vendor: Vendor, state: GpuState) -> Gpu {
        Gpu {
            index: None,
            vendor,
            name: None,
            bus_id: None,
            state,
            error: None,
            temperature_celsius: None,
            junction_celsius: None,
            memory_temperature_celsius: None,
            fan_percent: None,
            fan_rpm: None,
            power_watts: None,
            power_limit_watts: None,
            utilization_percent: None,
            memory_total_bytes: None,
            memory_used_bytes: None,
            core_clock_mhz: None,
            memory_clock_mhz: None,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "index": self.index,
            "vendor": self.vendor.as_str(),
            "name": self.name,
            "bus_id": self.bus_id,
            "state": self.state.as_str(),
            "error": self.error,
            "temperature_celsius": self.temperature_celsius,
            "junction_celsius": self.junction_celsius,
            "memory_temperature_celsius": self.memory_temperature_celsius,
            "fan_percent": self.fan_percent,
            "fan_rpm": self.fan_rpm,
            "power_watts": self.power_watts,
            "power_limit_watts": self.power_limit_watts,
            "utilization_percent": self.utilization_percent,
            "memory_total_bytes": self.memory_total_bytes,
            "memory_used_bytes": self.memory_used_bytes,
            "clocks_mhz": {"core": self.core_clock_mhz, "memory": self.memory_clock_mhz},
        })
    }
}

/// `text` from outside (nvidia-smi's words), escaped and capped for a log line or an answer.
fn tame(text: &str) -> String {
    crate::protocol::escape::escape_to(text.trim(), TEXT_CAP)
}

// ---------------------------------------------------------------------------------------
// NVIDIA

/// Why nvidia-smi gave no GPU list. None is fatal; each is reported in `nvidia_smi` of the
/// answer and logged when it first happens (a missing binary once for the agent's life).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvidiaError {
    /// Nothing to do: the operator turned it off.
    #[error("nvidia-smi is disabled (probes.nvidia_smi = \"\")")]
    Disabled,
    /// A rig without NVIDIA's driver; set `probes.nvidia_smi` if it lives outside `PATH`.
    #[error("{0} not found: no NVIDIA GPUs are reported (set probes.nvidia_smi if it is installed elsewhere)")]
    NotInstalled(String),
    /// The binary exists but cannot be started (permissions, wrong architecture).
    #[error("cannot run {0}")]
    Spawn(String),
    /// The driver hung (a GPU fallen off the bus can do that); it is asked again after
    /// `probes.nvidia_smi_interval`.
    #[error("nvidia-smi ran over {0:?} and was killed with its process group")]
    TimedOut(Duration),
    /// nvidia-smi answered with no GPU line (driver not loaded, say); its words are given.
    #[error("nvidia-smi failed: {0}")]
    Failed(String),
}

impl NvidiaError {
    pub fn status(&self) -> &'static str {
        match self {
            NvidiaError::Disabled => "disabled",
            NvidiaError::NotInstalled(_) => "not_installed",
            NvidiaError::Spawn(_) => "spawn_failed",
            NvidiaError::TimedOut(_) => "timed_out",
            NvidiaError::Failed(_) => "failed",
        }
    }
}

/// `[N/A]`, `[Not Supported]`, `[Unknown Error]`, `[GPU requires reset]`: all `None`.
fn field<T: std::str::FromStr>(s: &str) -> Option<T> {
    let s = s.trim();
    if s.starts_with('[') || s.eq_ignore_ascii_case("N/A") {
        return None;
    }
    s.parse().ok()
}

/// nvidia-smi writes the PCI domain with 8 digits and upper case (`00000000:0A:00.0`);
/// sysfs, lspci and its own error lines use 4 and lower case.
pub fn normalize_bus_id(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    match s.split_once(':') {
        Some((domain, rest)) if domain.len() == 8 && domain.starts_with("0000") => format!("{}:{rest}", &domain[4..]),
        _ => s,
    }
}

/// Parses nvidia-smi's answer to [`NVIDIA_QUERY`]: one CSV line per GPU, and for a GPU the
/// driver cannot reach a line "Unable to determine the device handle for GPU 0000:03:00.0:
/// GPU is lost. Reboot …", which becomes a GPU in state `lost` (or `error`). "No devices
/// were found" is an empty list. Any other answer without a GPU line is an error carrying
/// nvidia-smi's first line.
pub fn parse_nvidia(text: &str) -> Result<Vec<Gpu>, String> {
    let mut gpus = Vec::new();
    let mut other = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("Unable to determine the device handle for GPU") {
            let rest = rest.trim_start();
            // "0000:03:00.0: GPU is lost. Reboot …": the address has colons of its own.
            let (bus, why) = match rest.match_indices(": ").next() {
                Some((i, _)) => (&rest[..i], rest[i + 2..].trim()),
                None => (rest.trim_end_matches(':'), ""),
            };
            let lost = why.to_ascii_lowercase().contains("gpu is lost");
            let mut g = Gpu::empty(Vendor::Nvidia, if lost { GpuState::Lost } else { GpuState::Error });
            g.bus_id = (!bus.is_empty()).then(|| normalize_bus_id(bus));
            g.error = Some(tame(if why.is_empty() { line } else { why }));
            gpus.push(g);
            continue;
        }
        if line.eq_ignore_ascii_case("No devices were found") {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let Some(index) = f.first().and_then(|i| i.parse::<u32>().ok()).filter(|_| f.len() >= 12) else {
            other.get_or_insert(line);
            continue;
        };
        // A name with a comma in it would shift the fields: the last ten are fixed.
        let tail = &f[f.len() - 10..];
        let name = f[1..f.len() - 10].join(",");
        let mib = |s: &str| field::<u64>(s).map(|m| m * (1 << 20));
        gpus.push(Gpu {
            index: Some(index),
            name: (!name.is_empty()).then_some(name),
            bus_id: Some(normalize_bus_id(tail[0])),
            temperature_celsius: field(tail[1]),
            fan_percent: field(tail[2]),
            power_watts: field(tail[3]),
            power_limit_watts: field(tail[4]),
            utilization_percent: field(tail[5]),
            memory_total_bytes: mib(tail[6]),
            memory_used_bytes: mib(tail[7]),
            core_clock_mhz: field(tail[8]),
            memory_clock_mhz: field(tail[9]),
            ..Gpu::empty(Vendor::Nvidia, GpuState::Ok)
        });
    }
    match other {
        Some(line) if gpus.is_empty() => Err(tame(line)),
        _ => Ok(gpus),
    }
}

/// `probes.nvidia_smi`, `probes.nvidia_smi_timeout`, `probes.nvidia_smi_interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvidiaSettings {
    pub binary: String,
    pub timeout: Duration,
    pub max_age: Duration,
}

/// An answer, when it was taken and with which settings: one taken with other settings
/// (before a reload) is not reused.
type Cached = (Instant, NvidiaSettings, Result<Vec<Gpu>, NvidiaError>);

pub struct NvidiaReader {
    settings: Mutex<NvidiaSettings>,
    /// Held while nvidia-smi runs, so that queries arriving meanwhile share its answer.
    cache: Mutex<Option<Cached>>,
    missing_logged: AtomicBool,
    last_logged: Mutex<Option<String>>,
}

impl NvidiaReader {
    pub fn new(settings: NvidiaSettings) -> NvidiaReader {
        NvidiaReader {
            settings: Mutex::new(settings),
            cache: Mutex::new(None),
            missing_logged: AtomicBool::new(false),
            last_logged: Mutex::new(None),
        }
    }

    /// New settings from a reloaded config. Called on the runner thread, so it never waits
    /// for the cache (held while nvidia-smi runs): an answer taken with other settings is
    /// simply not reused.
    pub fn reconfigure(&self, new: NvidiaSettings) {
        let mut s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        if s.binary != new.binary {
            self.missing_logged.store(false, Ordering::Relaxed);
        }
        *s = new;
    }

    fn settings(&self) -> NvidiaSettings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The NVIDIA GPUs, from the cache when younger than `nvidia_smi_interval`.
    pub fn read(&self) -> Result<Vec<Gpu>, NvidiaError> {
        let settings = self.settings();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, taken_with, result)) = cache.as_ref()
            && at.elapsed() < settings.max_age
            && *taken_with == settings
        {
            return result.clone();
        }
        let result = run(&settings);
        let _ = self.log(&result);
        *cache = Some((Instant::now(), settings, result.clone()));
        result
    }

    /// A missing binary once for the agent's life; other failures when they first happen
    /// and again after a success, not on every query. Returns whether it logged.
    fn log(&self, result: &Result<Vec<Gpu>, NvidiaError>) -> bool {
        let mut last = self.last_logged.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) | Err(NvidiaError::Disabled) => {
                *last = None;
                false
            }
            Err(e @ NvidiaError::NotInstalled(_)) => {
                let first = !self.missing_logged.swap(true, Ordering::Relaxed);
                if first {
                    // A rig of AMD cards has no nvidia-smi: a fact, not a warning.
                    log::info!("{e}");
                }
                first
            }
            Err(e) => {
                let text = e.to_string();
                let new = last.as_deref() != Some(&text);
                if new {
                    log::warn!("{text}");
                    *last = Some(text);
                }
                new
            }
        }
    }
}

/// Runs nvidia-smi now, bypassing the cache.
pub fn run(s: &NvidiaSettings) -> Result<Vec<Gpu>, NvidiaError> {
    if s.binary.is_empty() {
        return Err(NvidiaError::Disabled);
    }
    let query = format!("--query-gpu={NVIDIA_QUERY}");
    let args = [query.as_str(), "--format=csv,noheader,nounits"];
    let mut cmd = Command::new(&s.binary);
    cmd.args(args);
    // The shared runner: its own process group, killed whole at the timeout, and never a
    // wait on pipes a stuck driver call or a wrapper's children hold.
    let (out, err) = match child::run(cmd, s.timeout, NVIDIA_OUTPUT_CAP) {
        Ok(o) if o.timed_out => return Err(NvidiaError::TimedOut(s.timeout)),
        Ok(o) => (o.stdout, o.stderr),
        Err(e) if e.is_not_found() => return Err(NvidiaError::NotInstalled(tame(&s.binary))),
        Err(e) => return Err(NvidiaError::Spawn(tame(&format!("{}: {}", s.binary, e.source)))),
    };
    // The "device handle" lines go to stdout or stderr depending on the driver version.
    let text = format!("{}\n{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
    parse_nvidia(&text).map_err(NvidiaError::Failed)
}

// ---------------------------------------------------------------------------------------
// AMD

/// Every AMD GPU (PCI vendor 0x1002) under `sysfs/class/drm/card<N>/device`. Connectors
/// (`card0-DP-1`) and other vendors' cards are skipped; NVIDIA's come from nvidia-smi.
pub fn read_amd(sysfs: &Path) -> Vec<Gpu> {
    let drm = sysfs.join("class/drm");
    let mut out: Vec<Gpu> = Vec::new();
    for card in entries(&drm) {
        let Some(n) = card.strip_prefix("card").and_then(|n| n.parse::<u32>().ok()) else { continue };
        let dev = drm.join(&card).join("device");
        let uevent = std::fs::read_to_string(dev.join("uevent")).unwrap_or_default();
        let pci_id = uevent_value(&uevent, "PCI_ID").map(|s| s.to_ascii_lowercase());
        let vendor = pci_id
            .as_deref()
            .and_then(|id| id.split(':').next())
            .map(str::to_string)
            .or_else(|| read_attr(&dev.join("vendor")).map(|v| v.trim_start_matches("0x").to_ascii_lowercase()));
        if vendor.as_deref() != Some("1002") {
            continue;
        }
        let bus_id = uevent_value(&uevent, "PCI_SLOT_NAME").map(|s| s.to_ascii_lowercase()).or_else(|| {
            std::fs::canonicalize(&dev).ok().and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        });
        if bus_id.is_some() && out.iter().any(|g| g.bus_id == bus_id) {
            continue;
        }
        let hwmon = entries(&dev.join("hwmon")).first().map(|h| dev.join("hwmon").join(h));
        let hw = |f: &str| hwmon.as_ref().and_then(|h| read_attr(&h.join(f)));
        let temp = |label: &str| {
            let h = hwmon.as_ref()?;
            entries(h)
                .iter()
                .filter(|f| f.starts_with("temp") && f.ends_with("_label"))
                .find(|f| read_attr(&h.join(f)).as_deref() == Some(label))
                .and_then(|f| read_attr(&h.join(f.replace("_label", "_input"))))
                .and_then(|v| super::sensors::parse_millidegrees(&v))
        };
        let freq_mhz = |label: &str, dpm: &str| {
            let h = hwmon.as_ref();
            h.and_then(|h| {
                entries(h)
                    .iter()
                    .filter(|f| f.starts_with("freq") && f.ends_with("_label"))
                    .find(|f| read_attr(&h.join(f)).as_deref() == Some(label))
                    .and_then(|f| read_attr(&h.join(f.replace("_label", "_input"))))
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(|hz| hz / 1_000_000)
            })
            .or_else(|| std::fs::read_to_string(dev.join(dpm)).ok().and_then(|t| parse_dpm_current(&t)))
        };
        let fan_percent = match (hw("pwm1").and_then(|v| v.parse::<f64>().ok()), hw("pwm1_max")) {
            (Some(pwm), max) => {
                let max = max.and_then(|m| m.parse::<f64>().ok()).unwrap_or(255.0);
                (max > 0.0).then(|| (pwm / max * 1000.0).round() / 10.0)
            }
            (None, _) => None,
        };
        let microwatts = |f: &str| hw(f).and_then(|v| v.parse::<u64>().ok()).map(|uw| uw as f64 / 1e6);
        out.push(Gpu {
            index: Some(n),
            name: read_attr(&dev.join("product_name")),
            bus_id,
            // amdgpu's hwmon names the sensors; a card with one unlabelled sensor has only temp1.
            temperature_celsius: temp("edge")
                .or_else(|| hw("temp1_input").and_then(|v| super::sensors::parse_millidegrees(&v))),
            junction_celsius: temp("junction"),
            memory_temperature_celsius: temp("mem"),
            fan_percent,
            fan_rpm: hw("fan1_input").and_then(|v| v.parse().ok()),
            // Older kernels give the average, newer ones (RDNA3) only the current draw.
            power_watts: microwatts("power1_average").or_else(|| microwatts("power1_input")),
            power_limit_watts: microwatts("power1_cap"),
            utilization_percent: read_attr(&dev.join("gpu_busy_percent")).and_then(|v| v.parse().ok()),
            memory_total_bytes: read_attr(&dev.join("mem_info_vram_total")).and_then(|v| v.parse().ok()),
            memory_used_bytes: read_attr(&dev.join("mem_info_vram_used")).and_then(|v| v.parse().ok()),
            core_clock_mhz: freq_mhz("sclk", "pp_dpm_sclk"),
            memory_clock_mhz: freq_mhz("mclk", "pp_dpm_mclk"),
            ..Gpu::empty(Vendor::Amd, GpuState::Ok)
        });
    }
    out
}

/// `KEY=value` of a uevent file.
pub fn uevent_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(|v| v.trim().to_string())
}

/// The level marked `*` in `pp_dpm_sclk`/`pp_dpm_mclk` ("1: 1000Mhz *"), in MHz.
pub fn parse_dpm_current(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.trim_end().ends_with('*'))?;
    let (_, rest) = line.split_once(':')?;
    let digits: String = rest.trim().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests;
