//! Predictive disk health: what precedes a failure while SMART's overall verdict
//! still says PASSED. Backblaze's experience over tens of thousands of drives: the raw
//! values of SMART 5, 187, 188, 197 and 198 rising; for NVMe `critical_warning`,
//! `media_errors` rising, `available_spare` below its threshold, `percentage_used` ≥ 100.
//! Also filesystem error counters rising and degraded md arrays. Pure rules over what was
//! read and what the inventory remembers; [`crate::probes::counters`] reads sysfs and
//! [`crate::probes::indicators`] parses smartctl's answer.

use crate::disks::inventory::{Inventory, SmartBaseline};
use crate::episodes::condition::Condition;
use crate::episodes::reason::Reason;
use crate::probes::counters::MdArray;
use crate::probes::indicators::{ATA_WATCHED, Indicators};

/// Whether a baseline taken from the disk with serial `baseline` holds for a disk now
/// showing `now`: only two known, different serials are two disks.
fn same_disk(baseline: Option<&str>, now: Option<&str>) -> bool {
    match (baseline, now) {
        (Some(b), Some(n)) => b == n,
        _ => true,
    }
}

fn counter_label(name: &str) -> String {
    match ATA_WATCHED.iter().find(|(id, _)| id.to_string() == name) {
        Some((id, what)) => format!("SMART {id} ({what})"),
        None => format!("NVMe {name}"),
    }
}

/// What one scan saw of one present, monitored disk, beyond [`crate::disks::rules::Seen`].
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub disk: String,
    pub serial: Option<String>,
    /// The last SMART answer, when there is one.
    pub smart: Option<Indicators>,
    /// `/sys/fs/ext4/<dev>/errors_count` of the disk and its partitions.
    pub fs_errors: Vec<(String, u64)>,
}

/// Applies the predictive rules. A first sight (or another serial at that name: the disk
/// was replaced) records the baseline and warns about nothing: a disk that came with 8
/// reallocated sectors is not failing for that; one that goes to 9 is, until its counters
/// are back at the baseline (they are not, in practice: one warning per disk).
///
/// A SMART counter that reads lower than its baseline never lowers it: these counters do
/// not heal, so a lower reading is a bad read (a flaky USB bridge answering 0 once), and
/// taking it as the new baseline would turn the next good reading into a false "rose from
/// 0 to 8". Only a different serial starts over; a reading without a serial (or a baseline
/// taken without one) cannot tell a replaced disk, so it keeps the baseline. ext4's count,
/// which `fsck` does clear, is the exception: there a lower value lowers the baseline.
pub fn evaluate(inv: &mut Inventory, observed: &[Observed], arrays: &[MdArray]) -> Vec<Condition> {
    let mut out = Vec::new();
    for o in observed {
        // Only disks the scan remembered (a disk with a size) carry a baseline.
        let Some(r) = inv.disks.get_mut(&o.disk) else { continue };
        if let Some(ind) = &o.smart {
            let mut reasons = Vec::new();
            let now = ind.counters();
            match &mut r.smart_baseline {
                Some(b) if same_disk(b.serial.as_deref(), o.serial.as_deref()) => {
                    if b.serial.is_none() {
                        b.serial.clone_from(&o.serial);
                    }
                    for (k, v) in &now {
                        match b.counters.get(k).copied() {
                            Some(base) if *v > base => {
                                reasons.push(format!("{} rose from {base} to {v}", counter_label(k)))
                            }
                            // Lower: a bad read, not a healed disk (see above).
                            Some(_) => {}
                            None => {
                                b.counters.insert(k.clone(), *v);
                            }
                        }
                    }
                }
                _ => r.smart_baseline = Some(SmartBaseline { serial: o.serial.clone(), counters: now }),
            }
            if let Some(n) = ind.nvme {
                if let Some(w) = n.critical_warning.filter(|w| *w != 0) {
                    reasons.push(format!("NVMe critical_warning is {w:#04x}"));
                }
                if let (Some(s), Some(t)) = (n.available_spare, n.available_spare_threshold)
                    && s < t
                {
                    reasons.push(format!("NVMe available_spare {s}% is below its threshold {t}%"));
                }
                if let Some(u) = n.percentage_used.filter(|u| *u >= 100) {
                    reasons.push(format!("NVMe percentage_used is {u}%"));
                }
            }
            if !reasons.is_empty() {
                out.push(Condition {
                    subject: o.disk.clone(),
                    reason: Reason::SmartDegrading,
                    detail: reasons.join("; "),
                });
            }
        }
        let mut risen = Vec::new();
        for (fs, count) in &o.fs_errors {
            match r.fs_errors.get(fs).copied() {
                Some(base) if *count > base => risen.push(format!("ext4 on {fs} counts {count} errors (was {base})")),
                Some(base) if *count == base => {}
                _ => {
                    r.fs_errors.insert(fs.clone(), *count);
                }
            }
        }
        // Partitions gone (repartitioned, unmounted for good) are forgotten.
        r.fs_errors.retain(|fs, _| o.fs_errors.iter().any(|(f, _)| f == fs));
        if !risen.is_empty() {
            out.push(Condition { subject: o.disk.clone(), reason: Reason::FsErrors, detail: risen.join("; ") });
        }
    }
    for a in arrays.iter().filter(|a| a.degraded > 0) {
        let failed =
            if a.failed.is_empty() { "none marked faulty (members missing)".into() } else { a.failed.join(", ") };
        out.push(Condition {
            subject: a.name.clone(),
            reason: Reason::RaidDegraded,
            detail: format!(
                "md array {} is degraded ({} of {} devices missing); failed members: {failed}",
                a.name,
                a.degraded,
                a.raid_disks.map_or("?".into(), |n| n.to_string())
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::disks::inventory::Remembered;
    use crate::probes::indicators::NvmeHealth;

    fn inv_with(disk: &str) -> Inventory {
        let mut inv = Inventory::default();
        inv.disks.insert(disk.into(), Remembered { serial: Some("S1".into()), ..Remembered::default() });
        inv
    }

    fn ata(pairs: &[(u64, u64)]) -> Observed {
        Observed {
            disk: "sda".into(),
            serial: Some("S1".into()),
            smart: Some(Indicators { ata: pairs.iter().copied().collect(), nvme: None }),
            fs_errors: Vec::new(),
        }
    }

    fn reasons(c: &[Condition]) -> Vec<(&str, Reason)> {
        c.iter().map(|c| (c.subject.as_str(), c.reason)).collect()
    }

    #[test]
    fn a_disk_that_came_with_reallocated_sectors_is_a_baseline_and_one_more_is_degrading() {
        let mut inv = inv_with("sda");
        assert!(evaluate(&mut inv, &[ata(&[(5, 8), (197, 0)])], &[]).is_empty(), "first sight");
        assert!(evaluate(&mut inv, &[ata(&[(5, 8), (197, 0)])], &[]).is_empty());
        let c = evaluate(&mut inv, &[ata(&[(5, 9), (197, 0)])], &[]);
        assert_eq!(reasons(&c), [("sda", Reason::SmartDegrading)]);
        assert_eq!(c[0].detail, "SMART 5 (reallocated sectors) rose from 8 to 9");
        assert_eq!(evaluate(&mut inv, &[ata(&[(5, 9), (197, 0)])], &[]).len(), 1, "the episode holds");
    }

    #[test]
    fn a_new_serial_at_the_same_name_starts_a_new_baseline() {
        let mut inv = inv_with("sda");
        evaluate(&mut inv, &[ata(&[(5, 0)])], &[]);
        let mut swapped = ata(&[(5, 40)]);
        swapped.serial = Some("S2".into());
        assert!(evaluate(&mut inv, &[swapped], &[]).is_empty(), "another disk, first sight");
        // And a lower count on a newer disk is its own baseline, not a bad read.
        let mut newer = ata(&[(5, 2)]);
        newer.serial = Some("S3".into());
        assert!(evaluate(&mut inv, &[newer.clone()], &[]).is_empty());
        newer.smart = Some(Indicators { ata: BTreeMap::from([(5, 3)]), nvme: None });
        assert_eq!(evaluate(&mut inv, &[newer], &[])[0].detail, "SMART 5 (reallocated sectors) rose from 2 to 3");
    }

    #[test]
    fn one_low_reading_of_a_counter_never_lowers_its_baseline() {
        // Scan by scan, as the monitor sees a disk behind a flaky USB bridge: 8, then a
        // bad read of 0, then 8 again. Nothing changed on the disk.
        let mut inv = inv_with("sda");
        for (scan, reading) in [8, 0, 8, 0, 0, 8, 8].into_iter().enumerate() {
            let c = evaluate(&mut inv, &[ata(&[(5, reading), (197, 0)])], &[]);
            assert!(c.is_empty(), "scan {scan}, reading {reading}: {c:?}");
        }
        assert_eq!(inv.disks["sda"].smart_baseline.as_ref().unwrap().counters["5"], 8);
        // A real rise is still one.
        let c = evaluate(&mut inv, &[ata(&[(5, 9), (197, 0)])], &[]);
        assert_eq!(c[0].detail, "SMART 5 (reallocated sectors) rose from 8 to 9");
    }

    #[test]
    fn a_reading_without_a_serial_keeps_the_baseline_of_the_disk_at_that_name() {
        let mut inv = inv_with("sda");
        evaluate(&mut inv, &[ata(&[(5, 8)])], &[]);
        let mut unknown = ata(&[(5, 0)]);
        unknown.serial = None;
        assert!(evaluate(&mut inv, &[unknown], &[]).is_empty());
        assert!(evaluate(&mut inv, &[ata(&[(5, 8)])], &[]).is_empty(), "still the first baseline");
        // A baseline taken without a serial learns it once one is read.
        let mut inv = inv_with("sda");
        let mut first = ata(&[(5, 8)]);
        first.serial = None;
        evaluate(&mut inv, &[first], &[]);
        assert!(evaluate(&mut inv, &[ata(&[(5, 8)])], &[]).is_empty());
        assert_eq!(inv.disks["sda"].smart_baseline.as_ref().unwrap().serial.as_deref(), Some("S1"));
    }

    #[test]
    fn nvme_indicators_trip_without_a_baseline_and_media_errors_must_rise() {
        let mut inv = inv_with("nvme0n1");
        let nvme = |h: NvmeHealth| Observed {
            disk: "nvme0n1".into(),
            serial: Some("S1".into()),
            smart: Some(Indicators { ata: BTreeMap::new(), nvme: Some(h) }),
            fs_errors: Vec::new(),
        };
        let ok = NvmeHealth {
            critical_warning: Some(0),
            media_errors: Some(3),
            available_spare: Some(100),
            available_spare_threshold: Some(10),
            percentage_used: Some(12),
        };
        assert!(evaluate(&mut inv, &[nvme(ok)], &[]).is_empty(), "3 media errors at first sight are a baseline");
        let c = evaluate(&mut inv, &[nvme(NvmeHealth { media_errors: Some(4), ..ok })], &[]);
        assert_eq!(c[0].detail, "NVMe media_errors rose from 3 to 4");
        let mut inv = inv_with("nvme0n1");
        let bad = NvmeHealth { critical_warning: Some(4), available_spare: Some(5), percentage_used: Some(100), ..ok };
        let c = evaluate(&mut inv, &[nvme(bad)], &[]);
        assert_eq!(
            c[0].detail,
            "NVMe critical_warning is 0x04; NVMe available_spare 5% is below its threshold 10%; NVMe percentage_used is 100%"
        );
    }

    #[test]
    fn ext4_error_counts_rising_are_fs_errors_and_a_reset_lowers_the_baseline() {
        let mut inv = inv_with("sda");
        let fs = |n| Observed { disk: "sda".into(), fs_errors: vec![("sda1".into(), n)], ..Observed::default() };
        assert!(evaluate(&mut inv, &[fs(2)], &[]).is_empty(), "first sight");
        let c = evaluate(&mut inv, &[fs(3)], &[]);
        assert_eq!(reasons(&c), [("sda", Reason::FsErrors)]);
        assert_eq!(c[0].detail, "ext4 on sda1 counts 3 errors (was 2)");
        assert!(evaluate(&mut inv, &[fs(0)], &[]).is_empty(), "fsck cleared it");
        assert_eq!(evaluate(&mut inv, &[fs(1)], &[]).len(), 1);
    }

    #[test]
    fn a_degraded_array_names_its_failed_members() {
        let mut inv = Inventory::default();
        let md = |degraded, failed: &[&str]| MdArray {
            name: "md0".into(),
            degraded,
            raid_disks: Some(2),
            failed: failed.iter().map(|s| s.to_string()).collect(),
            members: vec!["sda1".into(), "sdb1".into()],
        };
        assert!(evaluate(&mut inv, &[], &[md(0, &[])]).is_empty());
        let c = evaluate(&mut inv, &[], &[md(1, &["sdb1"])]);
        assert_eq!(reasons(&c), [("md0", Reason::RaidDegraded)]);
        assert_eq!(c[0].detail, "md array md0 is degraded (1 of 2 devices missing); failed members: sdb1");
    }
}
