//! AMD GPUs through sysfs (`class/drm/card*/device` and its hwmon), which amdgpu fills
//! without any tool.

use super::{Gpu, GpuState, Vendor};
use crate::os::sysfs::{entries, read_attr};
use crate::probes::units;
use std::path::Path;

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
                .and_then(|v| crate::probes::sensors::parse_millidegrees(&v))
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
                    .and_then(units::hz_to_mhz)
            })
            .or_else(|| {
                std::fs::read_to_string(dev.join(dpm))
                    .ok()
                    .and_then(|t| parse_dpm_current(&t))
                    .and_then(|m| units::within_u64(m, &units::MHZ))
            })
        };
        let fan_percent = match (hw("pwm1").and_then(|v| v.parse::<f64>().ok()), hw("pwm1_max")) {
            (Some(pwm), max) => {
                let max = max.and_then(|m| m.parse::<f64>().ok()).unwrap_or(255.0);
                // A duty above the maximum (or below 0) is no percentage.
                (max > 0.0).then(|| (pwm / max * 1000.0).round() / 10.0).and_then(units::percent)
            }
            (None, _) => None,
        };
        let microwatts = |f: &str| hw(f).and_then(|v| v.parse::<u64>().ok()).and_then(units::microwatts);
        out.push(Gpu {
            index: Some(n),
            name: read_attr(&dev.join("product_name")),
            bus_id,
            // amdgpu's hwmon names the sensors; a card with one unlabelled sensor has only temp1.
            temperature_celsius: temp("edge")
                .or_else(|| hw("temp1_input").and_then(|v| crate::probes::sensors::parse_millidegrees(&v))),
            junction_celsius: temp("junction"),
            memory_temperature_celsius: temp("mem"),
            fan_percent,
            fan_rpm: hw("fan1_input").and_then(|v| crate::probes::fans::parse_rpm(&v)),
            // Older kernels give the average, newer ones (RDNA3) only the current draw.
            power_watts: microwatts("power1_average").or_else(|| microwatts("power1_input")),
            power_limit_watts: microwatts("power1_cap"),
            utilization_percent: read_attr(&dev.join("gpu_busy_percent"))
                .and_then(|v| v.parse().ok())
                .and_then(units::percent),
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
