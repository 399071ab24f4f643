//! Block devices from `/sys/block`: the monitored disks, their identity, size, state and
//! error counter, and their partitions.

use std::path::Path;

use super::glob_match;
use crate::os::sysfs::{entries, first_attr, read_attr};

/// One disk as sysfs shows it now. Every field the kernel did not give is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `/sys/block` name: `sda`, `nvme0n1`, `mmcblk0`.
    pub name: String,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub size_bytes: Option<u64>,
    pub rotational: Option<bool>,
    /// `device/state`: the SCSI device's (`running`, `offline`, …) or the NVMe
    /// controller's (`live`, `resetting`, `dead`, …); judged by [`Disk::state_verdict`].
    pub state: Option<String>,
    /// `device/ioerr_cnt`, a hex counter (SCSI/SATA only).
    pub ioerr_count: Option<u64>,
    /// `major:minor`, to find the disk's mounts.
    pub dev: Option<String>,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub dev: Option<String>,
}

impl Disk {
    pub fn device(&self) -> String {
        format!("/dev/{}", self.name)
    }

    /// How the disk is attached, which decides what its `device/state` words mean. NVMe
    /// namespaces are always named `nvme<ctrl>n<ns>` by the kernel.
    pub(crate) fn transport(&self) -> Transport {
        if self.name.starts_with("nvme") { Transport::Nvme } else { Transport::Scsi }
    }

    /// What `device/state` says about the disk; `None` when it has none (virtio, MMC).
    pub(crate) fn state_verdict(&self) -> Option<StateVerdict> {
        self.state.as_deref().map(|s| judge_state(self.transport(), s))
    }

    /// `major:minor` numbers of the disk and its partitions.
    pub(crate) fn devs(&self) -> impl Iterator<Item = &str> {
        self.dev.iter().chain(self.partitions.iter().filter_map(|p| p.dev.as_ref())).map(String::as_str)
    }
}

/// The bus a disk is on, as far as `device/state` is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// SCSI, SATA through libata, USB storage: `device` is a SCSI device.
    Scsi,
    /// `device` is the NVMe controller.
    Nvme,
}

/// A disk's `device/state`, judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateVerdict {
    /// `running` (SCSI), `live` (NVMe).
    Healthy,
    /// The kernel has given up on the device, or is removing it.
    Offline,
    /// On its way somewhere (an NVMe controller reset or reconnect, a new controller):
    /// a failure only if it lasts.
    Transient,
}

/// The kernel's words per transport. SCSI (`scsi_device_state`): only `running` serves IO;
/// `offline`, `transport-offline`, `blocked`, `cancel`, `deleted`… all mean it does not.
/// NVMe (`nvme_ctrl_state`): `live` serves IO; `dead`, `deleting` and `deleting (no IO)`
/// mean it is gone; `new`, `resetting` and `connecting` pass by themselves on a healthy
/// controller, and an unknown word is treated the same way (raised only if it stays).
pub(crate) fn judge_state(transport: Transport, state: &str) -> StateVerdict {
    let state = state.trim();
    match transport {
        Transport::Scsi if state == "running" => StateVerdict::Healthy,
        Transport::Scsi => StateVerdict::Offline,
        Transport::Nvme => match state {
            "live" => StateVerdict::Healthy,
            "dead" | "deleting" | "deleting (no IO)" => StateVerdict::Offline,
            _ => StateVerdict::Transient,
        },
    }
}

/// The `/sys/block` names matching `include` and not `exclude`, sorted.
pub fn monitored(sysfs: &Path, include: &[String], exclude: &[String]) -> Vec<String> {
    entries(&sysfs.join("block"))
        .into_iter()
        .filter(|n| include.iter().any(|g| glob_match(g, n)) && !exclude.iter().any(|g| glob_match(g, n)))
        .collect()
}

/// Reads one disk; `None` when `/sys/block/<name>` does not exist (the disk is gone).
pub fn read(sysfs: &Path, name: &str) -> Option<Disk> {
    let dir = sysfs.join("block").join(name);
    if !dir.is_dir() {
        return None;
    }
    let dev_dir = dir.join("device");
    // NVMe namespaces and virtio disks keep identity one level up, on the controller.
    let model = join_vendor(
        first_attr(&dev_dir, &["vendor"]),
        first_attr(&dir, &["device/model", "device/device/model", "device/name"]),
    );
    let serial = first_attr(&dir, &["serial", "device/serial", "device/device/serial"])
        .or_else(|| std::fs::read(dev_dir.join("vpd_pg80")).ok().and_then(|b| parse_vpd_serial(&b)));
    let partitions = entries(&dir)
        .into_iter()
        .filter(|p| dir.join(p).join("partition").is_file())
        .map(|p| Partition { dev: read_attr(&dir.join(&p).join("dev")), name: p })
        .collect();
    Some(Disk {
        name: name.to_string(),
        model,
        serial,
        size_bytes: read_attr(&dir.join("size")).and_then(|s| parse_sectors(&s)),
        rotational: read_attr(&dir.join("queue/rotational")).and_then(|s| parse_flag(&s)),
        state: read_attr(&dev_dir.join("state")),
        ioerr_count: read_attr(&dev_dir.join("ioerr_cnt")).and_then(|s| parse_hex(&s)),
        dev: read_attr(&dir.join("dev")),
        partitions,
    })
}

/// `size` counts 512-byte sectors whatever the disk's own sector size.
pub(crate) fn parse_sectors(text: &str) -> Option<u64> {
    super::units::bytes(text.trim().parse::<u64>().ok()?, super::units::SECTOR)
}

pub(crate) fn parse_flag(text: &str) -> Option<bool> {
    match text.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// `ioerr_cnt` is printed as `0x1a`.
pub(crate) fn parse_hex(text: &str) -> Option<u64> {
    let t = text.trim();
    u64::from_str_radix(t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t), 16).ok()
}

/// SCSI VPD page 0x80 (unit serial number): 4-byte header, then the serial, space-padded.
pub(crate) fn parse_vpd_serial(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x80 {
        return None;
    }
    let len = u16::from_be_bytes([page[2], page[3]]) as usize;
    let body = page.get(4..4 + len).unwrap_or(&page[4..]);
    let s = String::from_utf8_lossy(body).trim_matches(|c: char| c.is_whitespace() || c == '\0').to_string();
    (!s.is_empty()).then_some(s)
}

/// SAS disks say `SEAGATE` / `ST4000NM0023`; SATA disks say `ATA` / `WDC WD40EFRX`. The
/// vendor is worth keeping only when it is a real name not already in the model.
fn join_vendor(vendor: Option<String>, model: Option<String>) -> Option<String> {
    match (vendor, model) {
        (Some(v), Some(m)) if v != "ATA" && !m.starts_with(&v) => Some(format!("{v} {m}")),
        (_, m) => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_state_words_are_judged_per_transport() {
        use StateVerdict::*;
        let cases = [
            (Transport::Scsi, "running", Healthy),
            (Transport::Scsi, "offline", Offline),
            (Transport::Scsi, "blocked", Offline),
            (Transport::Scsi, "transport-offline", Offline),
            (Transport::Scsi, "live", Offline),
            (Transport::Nvme, "live", Healthy),
            (Transport::Nvme, "live\n", Healthy),
            (Transport::Nvme, "dead", Offline),
            (Transport::Nvme, "deleting", Offline),
            (Transport::Nvme, "deleting (no IO)", Offline),
            (Transport::Nvme, "resetting", Transient),
            (Transport::Nvme, "connecting", Transient),
            (Transport::Nvme, "new", Transient),
            (Transport::Nvme, "running", Transient),
        ];
        for (t, word, want) in cases {
            assert_eq!(judge_state(t, word), want, "{t:?} {word:?}");
        }
    }

    #[test]
    fn size_is_sectors_times_512_and_junk_is_none() {
        assert_eq!(parse_sectors("7814037168\n"), Some(4_000_787_030_016));
        assert_eq!(parse_sectors("0"), Some(0));
        assert_eq!(parse_sectors("lots"), None);
        assert_eq!(parse_sectors("-1"), None);
        assert_eq!(parse_sectors("99999999999999999999"), None);
    }

    #[test]
    fn ioerr_cnt_is_hex() {
        assert_eq!(parse_hex("0x1a"), Some(26));
        assert_eq!(parse_hex("0x0\n"), Some(0));
        assert_eq!(parse_hex("ff"), Some(255));
        assert_eq!(parse_hex("0xzz"), None);
    }

    #[test]
    fn flags_are_0_or_1() {
        assert_eq!(parse_flag("1\n"), Some(true));
        assert_eq!(parse_flag("0"), Some(false));
        assert_eq!(parse_flag("2"), None);
    }

    #[test]
    fn vpd_page_80_gives_the_serial() {
        let mut page = vec![0x00, 0x80, 0x00, 0x0c];
        page.extend_from_slice(b"  ZA1B2C3D  ");
        assert_eq!(parse_vpd_serial(&page).as_deref(), Some("ZA1B2C3D"));
        assert_eq!(parse_vpd_serial(&[0x00, 0x83, 0, 0]), None);
        assert_eq!(parse_vpd_serial(&[0x00, 0x80, 0, 4, b' ', b' ', 0, 0]), None);
    }

    #[test]
    fn vendor_is_joined_only_when_it_says_something() {
        let s = |x: &str| Some(x.to_string());
        assert_eq!(join_vendor(s("ATA"), s("WDC WD40EFRX")), s("WDC WD40EFRX"));
        assert_eq!(join_vendor(s("SEAGATE"), s("ST4000NM0023")), s("SEAGATE ST4000NM0023"));
        assert_eq!(join_vendor(s("WDC"), s("WDC X")), s("WDC X"));
        assert_eq!(join_vendor(s("SEAGATE"), None), None);
    }
}
