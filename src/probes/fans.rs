//! Fans from `/sys/class/hwmon/hwmon*/fan*_{input,label,min,max,alarm}`.

use std::path::Path;

use serde_json::{Value, json};

use crate::os::sysfs::{entries, read_attr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fan {
    /// The hwmon chip's `name` (`nct6798`, `amdgpu`, `pwmfan`).
    pub chip: Option<String>,
    /// The PCI address of the device the chip belongs to (a GPU's own fan), from the
    /// hwmon's parent device; `None` for board chips.
    pub bus_id: Option<String>,
    /// `fan<N>_label`, or `fan<N>` when the driver gives no label.
    pub label: String,
    /// `None` when the input cannot be read; 0 is a stopped fan (or an empty header: the
    /// chip cannot tell the two apart).
    pub rpm: Option<u64>,
    pub min_rpm: Option<u64>,
    pub max_rpm: Option<u64>,
    /// The chip's own alarm (speed under `min`), where it has one.
    pub alarm: Option<bool>,
}

impl Fan {
    pub fn to_json(&self) -> Value {
        json!({
            "chip": self.chip, "bus_id": self.bus_id, "label": self.label, "rpm": self.rpm,
            "min_rpm": self.min_rpm, "max_rpm": self.max_rpm, "alarm": self.alarm,
        })
    }
}

/// Every `fan*_input` of every hwmon chip. Unlike temperatures, an unreadable input is
/// listed (with `rpm: null`): a fan that vanished is worth seeing.
pub fn read(sysfs: &Path) -> Vec<Fan> {
    let hwmon = sysfs.join("class/hwmon");
    let mut out = Vec::new();
    for chip_dir in entries(&hwmon) {
        let dir = hwmon.join(&chip_dir);
        let chip = read_attr(&dir.join("name"));
        // class/hwmon/hwmonN links to <device>/hwmon/hwmonN.
        let bus_id = std::fs::canonicalize(&dir)
            .ok()
            .and_then(|d| d.parent()?.parent().map(|p| p.join("uevent")))
            .and_then(|u| std::fs::read_to_string(u).ok())
            .and_then(|u| super::gpu::uevent_value(&u, "PCI_SLOT_NAME"))
            .map(|s| s.to_ascii_lowercase());
        let mut inputs: Vec<String> =
            entries(&dir).into_iter().filter(|f| f.starts_with("fan") && f.ends_with("_input")).collect();
        // fan2 before fan10.
        inputs.sort_by_key(|f| f[3..f.len() - 6].parse::<u32>().unwrap_or(u32::MAX));
        for input in inputs {
            let base = input.trim_end_matches("_input");
            let num = |suffix: &str| read_attr(&dir.join(format!("{base}_{suffix}"))).and_then(|s| parse_rpm(&s));
            out.push(Fan {
                chip: chip.clone(),
                bus_id: bus_id.clone(),
                label: read_attr(&dir.join(format!("{base}_label"))).unwrap_or_else(|| base.to_string()),
                rpm: num("input"),
                // 0 is how chips say "no limit set" (nct6775, it87), not a speed.
                min_rpm: num("min").filter(|m| *m > 0),
                max_rpm: num("max").filter(|m| *m > 0),
                alarm: read_attr(&dir.join(format!("{base}_alarm"))).and_then(|s| match s.as_str() {
                    "0" => Some(false),
                    "1" => Some(true),
                    _ => None,
                }),
            });
        }
    }
    out
}

/// hwmon gives revolutions per minute as an unsigned integer; a speed no fan turns at is a
/// count the chip could not take, not a reading.
pub fn parse_rpm(text: &str) -> Option<u64> {
    text.trim().parse().ok().and_then(|r| super::units::within_u64(r, &super::units::RPM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_is_an_unsigned_integer() {
        assert_eq!(parse_rpm("1250\n"), Some(1250));
        assert_eq!(parse_rpm("0"), Some(0));
        assert_eq!(parse_rpm("-1"), None);
        assert_eq!(parse_rpm(""), None);
        assert_eq!(parse_rpm("65535"), None, "a count the chip could not take");
        assert_eq!(parse_rpm("99999999999999999999"), None);
    }
}
