//! The GPUs on the PCI bus (`sysfs/bus/pci/devices/<address>/{class,vendor}`): every
//! display controller (class 0x03xxxx) of NVIDIA or AMD, whether or not its driver or its
//! vendor's tool answers. What enumerates here is what the GPU inventory compares with.

use super::Vendor;
use crate::os::sysfs::{entries, read_attr};
use std::path::Path;

/// One GPU function on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciGpu {
    /// `0000:03:00.0`, as sysfs names it.
    pub bus_id: String,
    pub vendor: Vendor,
}

/// The PCI base class of display controllers (VGA, 3D, other).
const DISPLAY: u32 = 0x03;

/// The NVIDIA and AMD display controllers under `sysfs/bus/pci/devices`, by address; `None`
/// when that directory is not there (a board without PCI, a test tree without one), so
/// that "no PCI bus to look at" is never taken for "every GPU gone".
pub fn read_pci_gpus(sysfs: &Path) -> Option<Vec<PciGpu>> {
    let devices = sysfs.join("bus/pci/devices");
    if !devices.is_dir() {
        return None;
    }
    let mut out: Vec<PciGpu> = entries(&devices)
        .into_iter()
        .filter(|a| pci_address(a))
        .filter_map(|a| {
            let dir = devices.join(&a);
            let class = read_attr(&dir.join("class"))?;
            let class = u32::from_str_radix(class.trim_start_matches("0x"), 16).ok()?;
            let vendor = Vendor::from_pci(&read_attr(&dir.join("vendor"))?)?;
            (class >> 16 == DISPLAY).then_some(PciGpu { bus_id: a.to_ascii_lowercase(), vendor })
        })
        .collect();
    out.sort_by(|a, b| a.bus_id.cmp(&b.bus_id));
    Some(out)
}

/// `dddd:bb:dd.f` in hexadecimal: the only names `bus/pci/devices` holds.
pub fn pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && [4, 7, 10].iter().all(|&i| b[i] == if i == 10 { b'.' } else { b':' })
        && b.iter().enumerate().all(|(i, c)| [4, 7, 10].contains(&i) || c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nvidia_and_amd_display_controllers_are_gpus() {
        let d = tempfile::tempdir().unwrap();
        let put = |addr: &str, class: &str, vendor: &str| {
            let dir = d.path().join("bus/pci/devices").join(addr);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("class"), format!("{class}\n")).unwrap();
            std::fs::write(dir.join("vendor"), format!("{vendor}\n")).unwrap();
        };
        put("0000:01:00.0", "0x030000", "0x10de");
        put("0000:01:00.1", "0x040300", "0x10de"); // its HDMI audio function
        put("0000:03:00.0", "0x030000", "0x1002");
        put("0000:00:02.0", "0x030000", "0x8086"); // the board's Intel iGPU
        put("0000:05:00.0", "0x030200", "0x10de"); // a 3D controller (a CMP card)
        put("0000:00:1f.0", "0x060100", "0x8086");
        let got = read_pci_gpus(d.path()).unwrap();
        let want = [("0000:01:00.0", Vendor::Nvidia), ("0000:03:00.0", Vendor::Amd), ("0000:05:00.0", Vendor::Nvidia)];
        assert_eq!(got.iter().map(|g| (g.bus_id.as_str(), g.vendor)).collect::<Vec<_>>(), want);
        assert_eq!(read_pci_gpus(&d.path().join("nothing")), None);
    }

    #[test]
    fn a_pci_address_is_domain_bus_device_and_function_in_hex() {
        assert!(pci_address("0000:03:00.0"));
        assert!(!pci_address("0000:03:00"));
        assert!(!pci_address("../03:00.00"));
        assert!(!pci_address("0000:0g:00.0"));
    }
}
