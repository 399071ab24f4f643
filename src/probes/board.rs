//! The controller board's own health: eMMC wear as the card reports it (JEDEC JESD84-B51
//! EXT_CSD fields, through `sysfs/block/mmcblk*/device/{life_time,pre_eol_info}`), power
//! and throttling from the Raspberry Pi firmware's `get_throttled` node and the
//! `rpi_volt` hwmon alarm, and x86 thermal throttle counters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::os::sysfs::{entries, read_attr};

/// One of the two life time estimates (EXT_CSD `DEVICE_LIFE_TIME_EST_TYP_A`/`_B`, bytes
/// 268/269): the share of the device's rated erase cycles used, in steps of 10 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifeTime {
    /// The raw code, 0x01..=0x0B.
    pub code: u8,
    /// 0x01 is 0–10 % used, 0x0A 90–100 %; 0x0B (past its rated life) is 100 and up.
    pub used_percent_min: u8,
    /// `None` for 0x0B: past the rated life, the card does not say by how much.
    pub used_percent_max: Option<u8>,
}

impl LifeTime {
    /// 0x00 is "not defined" and 0x0C.. are reserved: `None`, not a guess.
    pub fn decode(code: u8) -> Option<LifeTime> {
        match code {
            1..=10 => Some(LifeTime { code, used_percent_min: (code - 1) * 10, used_percent_max: Some(code * 10) }),
            11 => Some(LifeTime { code, used_percent_min: 100, used_percent_max: None }),
            _ => None,
        }
    }

    pub fn exceeded(&self) -> bool {
        self.code == 11
    }

    fn to_json(self) -> Value {
        json!({"code": self.code, "used_percent_min": self.used_percent_min,
               "used_percent_max": self.used_percent_max, "exceeded": self.exceeded()})
    }
}

/// EXT_CSD `PRE_EOL_INFO` (byte 267): how much of the reserved blocks is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreEol {
    /// 0x01.
    Normal,
    /// 0x02: 80 % of the reserved blocks used.
    Warning,
    /// 0x03: 90 % used; replace the card.
    Urgent,
}

impl PreEol {
    pub fn decode(code: u8) -> Option<PreEol> {
        match code {
            1 => Some(PreEol::Normal),
            2 => Some(PreEol::Warning),
            3 => Some(PreEol::Urgent),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PreEol::Normal => "normal",
            PreEol::Warning => "warning",
            PreEol::Urgent => "urgent",
        }
    }
}

/// An MMC block device. SD cards (`type` SD) have no wear fields: theirs are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mmc {
    pub name: String,
    /// `device/type`: `MMC` (eMMC), `SD`, `SDIO`.
    pub kind: Option<String>,
    /// `device/name`, the card's product name.
    pub model: Option<String>,
    pub life_time_a: Option<LifeTime>,
    pub life_time_b: Option<LifeTime>,
    pub pre_eol: Option<PreEol>,
}

impl Mmc {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name, "type": self.kind, "model": self.model,
            "life_time_a": self.life_time_a.map(LifeTime::to_json),
            "life_time_b": self.life_time_b.map(LifeTime::to_json),
            "pre_eol": self.pre_eol.map(PreEol::as_str),
        })
    }
}

/// A hex byte as the mmc driver prints it (`0x01`).
fn hex_byte(s: &str) -> Option<u8> {
    let s = s.trim();
    u8::from_str_radix(s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s), 16).ok()
}

/// `device/life_time`: "0x01 0x02", type A then type B.
pub fn parse_life_time(text: &str) -> (Option<LifeTime>, Option<LifeTime>) {
    let mut it = text.split_whitespace().map(|w| hex_byte(w).and_then(LifeTime::decode));
    (it.next().flatten(), it.next().flatten())
}

/// `device/pre_eol_info`: "0x01".
pub fn parse_pre_eol(text: &str) -> Option<PreEol> {
    hex_byte(text).and_then(PreEol::decode)
}

/// Every whole MMC device (`mmcblk0`, not its `boot0`/`rpmb` areas or partitions).
pub fn read_mmc(sysfs: &Path) -> Vec<Mmc> {
    let block = sysfs.join("block");
    entries(&block)
        .into_iter()
        .filter(|n| n.strip_prefix("mmcblk").is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())))
        .map(|name| {
            let dev = block.join(&name).join("device");
            let (a, b) = read_attr(&dev.join("life_time")).map(|t| parse_life_time(&t)).unwrap_or((None, None));
            Mmc {
                kind: read_attr(&dev.join("type")),
                model: read_attr(&dev.join("name")),
                life_time_a: a,
                life_time_b: b,
                pre_eol: read_attr(&dev.join("pre_eol_info")).and_then(|t| parse_pre_eol(&t)),
                name,
            }
        })
        .collect()
}

/// The Raspberry Pi firmware's throttle flags (`vcgencmd get_throttled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled(pub u32);

impl Throttled {
    /// Bits 0–3 are now, 16–19 the same since boot.
    const FLAGS: [(&'static str, u32); 8] = [
        ("under_voltage_now", 0),
        ("frequency_capped_now", 1),
        ("throttled_now", 2),
        ("soft_temp_limit_now", 3),
        ("under_voltage_occurred", 16),
        ("frequency_capped_occurred", 17),
        ("throttled_occurred", 18),
        ("soft_temp_limit_occurred", 19),
    ];

    pub fn flag(&self, bit: u32) -> bool {
        self.0 & (1 << bit) != 0
    }

    pub fn to_json(self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("raw".into(), json!(format!("{:#x}", self.0)));
        for (name, bit) in Self::FLAGS {
            m.insert(name.into(), json!(self.flag(bit)));
        }
        Value::Object(m)
    }
}

/// `get_throttled` prints the mask in hex without `0x` ("50005").
pub fn parse_throttled(text: &str) -> Option<Throttled> {
    let t = text.trim();
    u32::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).ok().map(Throttled)
}

/// Where the firmware node is: `devices/platform/soc/soc:firmware` on the Pi 3/4 kernels,
/// directly under `devices/platform` (or under another bus node) on others. Two levels
/// are looked at, no more.
pub fn find_throttled(sysfs: &Path) -> Option<PathBuf> {
    let platform = sysfs.join("devices/platform");
    let mut dirs = vec![platform.clone()];
    dirs.extend(entries(&platform).into_iter().filter(|e| !e.contains("firmware")).map(|e| platform.join(e)));
    dirs.iter().find_map(|d| {
        entries(d)
            .into_iter()
            .filter(|e| e.ends_with("firmware"))
            .map(|e| d.join(e).join("get_throttled"))
            .find(|p| p.is_file())
    })
}

/// The `rpi_volt` hwmon chip's under-voltage alarm (`in0_lcrit_alarm`), where it exists.
pub fn rpi_under_voltage(sysfs: &Path) -> Option<bool> {
    let hwmon = sysfs.join("class/hwmon");
    entries(&hwmon).into_iter().map(|h| hwmon.join(h)).find_map(|d| {
        (read_attr(&d.join("name")).as_deref() == Some("rpi_volt"))
            .then(|| read_attr(&d.join("in0_lcrit_alarm")))
            .flatten()
            .map(|v| v == "1")
    })
}

/// x86 thermal throttle events since boot: per core summed over cores, per package summed
/// over packages (every CPU of a package shows the package's count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThermalThrottle {
    pub core_events: u64,
    pub package_events: Option<u64>,
}

/// `None` on machines without the counters (ARM boards, VMs).
pub fn read_thermal_throttle(sysfs: &Path) -> Option<ThermalThrottle> {
    let cpus = sysfs.join("devices/system/cpu");
    let mut core = None::<u64>;
    let mut packages: BTreeMap<String, u64> = BTreeMap::new();
    for cpu in entries(&cpus) {
        if !cpu.strip_prefix("cpu").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let tt = cpus.join(&cpu).join("thermal_throttle");
        if let Some(n) = read_attr(&tt.join("core_throttle_count")).and_then(|s| s.parse::<u64>().ok()) {
            *core.get_or_insert(0) += n;
        }
        if let Some(n) = read_attr(&tt.join("package_throttle_count")).and_then(|s| s.parse::<u64>().ok()) {
            let pkg = read_attr(&cpus.join(&cpu).join("topology/physical_package_id")).unwrap_or_else(|| cpu.clone());
            packages.insert(pkg, n);
        }
    }
    let package_events = (!packages.is_empty()).then(|| packages.values().sum());
    core.map(|core_events| ThermalThrottle { core_events, package_events })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn life_time_codes_decode_to_ten_percent_steps_as_jedec_defines() {
        assert_eq!(LifeTime::decode(0), None, "0x00: not defined");
        let first = LifeTime::decode(1).unwrap();
        assert_eq!((first.used_percent_min, first.used_percent_max), (0, Some(10)));
        let ninth = LifeTime::decode(0x0a).unwrap();
        assert_eq!((ninth.used_percent_min, ninth.used_percent_max, ninth.exceeded()), (90, Some(100), false));
        let past = LifeTime::decode(0x0b).unwrap();
        assert_eq!((past.used_percent_min, past.used_percent_max, past.exceeded()), (100, None, true));
        assert_eq!(LifeTime::decode(0x0c), None, "reserved");
    }

    #[test]
    fn life_time_gives_type_a_then_type_b() {
        let (a, b) = parse_life_time("0x01 0x03\n");
        assert_eq!(a.map(|l| l.code), Some(1));
        assert_eq!(b.map(|l| (l.used_percent_min, l.used_percent_max)), Some((20, Some(30))));
        assert_eq!(parse_life_time("0x00 0x0b"), (None, LifeTime::decode(11)));
        assert_eq!(parse_life_time("garbage"), (None, None));
    }

    #[test]
    fn pre_eol_codes_are_normal_warning_urgent() {
        assert_eq!(parse_pre_eol("0x01"), Some(PreEol::Normal));
        assert_eq!(parse_pre_eol("0x02\n"), Some(PreEol::Warning));
        assert_eq!(parse_pre_eol("0x03"), Some(PreEol::Urgent));
        assert_eq!(parse_pre_eol("0x00"), None);
        assert_eq!(parse_pre_eol("0x04"), None);
    }

    #[test]
    fn get_throttled_bits_are_now_and_since_boot() {
        let t = parse_throttled("50005\n").unwrap();
        let v = t.to_json();
        assert_eq!(v["raw"], "0x50005");
        assert_eq!(v["under_voltage_now"], true);
        assert_eq!(v["frequency_capped_now"], false);
        assert_eq!(v["throttled_now"], true);
        assert_eq!(v["under_voltage_occurred"], true);
        assert_eq!(v["throttled_occurred"], true);
        assert_eq!(v["frequency_capped_occurred"], false);
        assert_eq!(parse_throttled("0x0").unwrap(), Throttled(0));
        assert_eq!(parse_throttled("zz"), None);
    }
}
