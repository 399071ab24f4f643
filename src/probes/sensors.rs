//! Temperatures from `/sys/class/hwmon/hwmon*/temp*_{input,label,crit}`.

use std::path::Path;

use serde_json::{Value, json};

use crate::os::sysfs::{entries, read_attr};

#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    /// The hwmon chip's `name` (`coretemp`, `nvme`, `cpu_thermal`).
    pub chip: Option<String>,
    /// `temp<N>_label`, or `temp<N>` when the driver gives no label.
    pub label: String,
    pub celsius: f64,
    pub critical_celsius: Option<f64>,
}

impl Sensor {
    pub fn to_json(&self) -> Value {
        json!({"chip": self.chip, "label": self.label, "celsius": self.celsius, "critical_celsius": self.critical_celsius})
    }
}

/// Every readable temperature input; one that cannot be read (sensor asleep, driver error)
/// is left out rather than reported as a number it is not.
pub fn read(sysfs: &Path) -> Vec<Sensor> {
    let hwmon = sysfs.join("class/hwmon");
    let mut out = Vec::new();
    for chip_dir in entries(&hwmon) {
        let dir = hwmon.join(&chip_dir);
        let chip = read_attr(&dir.join("name"));
        for input in entries(&dir).iter().filter(|f| f.starts_with("temp") && f.ends_with("_input")) {
            let base = input.trim_end_matches("_input");
            let Some(celsius) = read_attr(&dir.join(input)).and_then(|s| parse_millidegrees(&s)) else { continue };
            out.push(Sensor {
                chip: chip.clone(),
                label: read_attr(&dir.join(format!("{base}_label"))).unwrap_or_else(|| base.to_string()),
                celsius,
                critical_celsius: read_attr(&dir.join(format!("{base}_crit"))).and_then(|s| parse_millidegrees(&s)),
            });
        }
    }
    out
}

/// hwmon reports millidegrees Celsius as an integer; one outside what a sensor can read is
/// a fault, not a temperature.
pub fn parse_millidegrees(text: &str) -> Option<f64> {
    text.trim().parse::<i64>().ok().and_then(super::units::millidegrees)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millidegrees_become_degrees() {
        assert_eq!(parse_millidegrees("45500\n"), Some(45.5));
        assert_eq!(parse_millidegrees("-2000"), Some(-2.0));
        assert_eq!(parse_millidegrees("N/A"), None);
        assert_eq!(parse_millidegrees("9223372036854775807"), None);
        assert_eq!(parse_millidegrees("255000"), None, "a driver's no-reading marker");
    }
}
