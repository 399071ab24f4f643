//! GPUs: every NVIDIA and AMD display controller on the PCI bus (`bus/pci/devices`), and
//! their readings: NVIDIA through `nvidia-smi --query-gpu … --format=csv,noheader,nounits` (the
//! driver's own tool; NVML without it would mean linking the driver's library), AMD through
//! sysfs (`class/drm/card*/device` and its hwmon), which amdgpu fills without any tool.
//!
//! nvidia-smi runs in a child process of its own process group, killed as a group when it
//! runs over `probes.nvidia_smi_timeout` (a GPU that has fallen off the bus can hang it in
//! the driver), and its answer is reused for `probes.nvidia_smi_interval`, so that a burst
//! of queries runs it once.

use serde_json::{Value, json};

mod amd;
mod nvidia;
mod pci;
pub use amd::*;
pub use nvidia::*;
pub use pci::*;

/// Longest outside text (nvidia-smi's words) put in a log line or an answer.
const TEXT_CAP: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// The PCI vendor id (`0x10de`, `0x1002`, as sysfs writes it) of a GPU vendor.
    pub fn from_pci(id: &str) -> Option<Vendor> {
        match id.trim().trim_start_matches("0x").to_ascii_lowercase().as_str() {
            "10de" => Some(Vendor::Nvidia),
            "1002" => Some(Vendor::Amd),
            _ => None,
        }
    }

    /// The inverse of [`Vendor::as_str`].
    pub fn parse(s: &str) -> Option<Vendor> {
        [Vendor::Nvidia, Vendor::Amd].into_iter().find(|v| v.as_str() == s)
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
    /// NVIDIA's GPU UUID (`GPU-…`); `None` for AMD.
    pub uuid: Option<String>,
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
            uuid: None,
        }
    }

    pub(crate) fn to_json(&self) -> Value {
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
            "uuid": self.uuid,
        })
    }
}

/// `text` from outside (nvidia-smi's words), escaped and capped for a log line or an answer.
fn tame(text: &str) -> String {
    crate::protocol::escape::escape_to(text.trim(), TEXT_CAP)
}

// ---------------------------------------------------------------------------------------
// NVIDIA

#[cfg(test)]
mod tests;
