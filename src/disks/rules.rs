//! The disk-failure rules of PROTOCOL.md §7, as pure functions over what a scan saw and
//! what the inventory remembers. No IO: the monitor reads, these decide.

use crate::disks::inventory::{Episode, Inventory, Remembered};
use crate::probes::disks::{Disk, StateVerdict};

use crate::disks::reason::Reason;

/// What one scan saw of one monitored disk that is present in `/sys/block`.
#[derive(Debug, Clone)]
pub struct Seen {
    pub disk: Disk,
    /// SMART's overall verdict, when known.
    pub smart_passed: Option<bool>,
    /// Mounts of the disk or its partitions: (mountpoint, read-only now).
    pub mounts: Vec<(String, bool)>,
}

/// A failure condition that holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub disk: String,
    pub reason: Reason,
    /// What was seen, for the warning's `detail` and the log.
    pub detail: String,
}

/// Applies the rules to a scan: returns the conditions that hold now, and updates what the
/// inventory remembers (identity, error counter, which filesystems were read-write).
pub fn evaluate(inv: &mut Inventory, seen: &[Seen], ioerr_threshold: u64) -> Vec<Condition> {
    let mut out = Vec::new();
    let cond = |disk: &str, reason, detail: String| Condition { disk: disk.to_string(), reason, detail };
    for name in inv.disks.keys() {
        if !seen.iter().any(|s| &s.disk.name == name) {
            out.push(cond(name, Reason::Missing, format!("block device {name} disappeared")));
        }
    }
    for s in seen {
        let d = &s.disk;
        let known = inv.disks.get(&d.name).cloned();
        if d.size_bytes == Some(0) {
            // A reader with no card says 0 from the start; only a disk that had a size and
            // lost it has failed.
            if known.as_ref().and_then(|k| k.size_bytes).is_some_and(|b| b > 0) {
                out.push(cond(&d.name, Reason::Missing, format!("size of {} dropped to 0", d.name)));
            }
            continue;
        }
        let state = d.state.as_deref().unwrap_or_default().trim();
        let unsettled_before = known.as_ref().and_then(|k| k.unsettled_state.clone());
        match d.state_verdict() {
            Some(StateVerdict::Offline) => {
                out.push(cond(&d.name, Reason::Offline, format!("device/state of {} is \"{state}\"", d.name)));
            }
            // A controller reset passes within a scan interval on a healthy disk; one that
            // is still unsettled a scan later is not coming back by itself.
            Some(StateVerdict::Transient) => {
                if let Some(before) = &unsettled_before {
                    out.push(cond(
                        &d.name,
                        Reason::Offline,
                        format!("device/state of {} is \"{state}\", and was \"{before}\" a scan ago", d.name),
                    ));
                }
            }
            Some(StateVerdict::Healthy) | None => {}
        }
        if let (Some(now), Some(before)) = (d.ioerr_count, known.as_ref().and_then(|k| k.ioerr_count))
            && now >= before.saturating_add(ioerr_threshold)
        {
            out.push(cond(
                &d.name,
                Reason::IoErrors,
                format!("device/ioerr_cnt of {} rose from {before:#x} to {now:#x}", d.name),
            ));
        }
        if s.smart_passed == Some(false) {
            out.push(cond(
                &d.name,
                Reason::SmartFailed,
                format!("SMART overall health check of {} failed", d.device()),
            ));
        }
        let was_rw = known.as_ref().map(|k| k.rw_mounts.clone()).unwrap_or_default();
        for (mountpoint, ro) in &s.mounts {
            if *ro && was_rw.contains(mountpoint) {
                out.push(cond(
                    &d.name,
                    Reason::Readonly,
                    format!("filesystem on {mountpoint} ({}) turned read-only", d.name),
                ));
                break;
            }
        }
        // Remember this scan for the next one.
        let r = remember(known, s, state);
        if r.size_bytes.is_some_and(|b| b > 0) {
            inv.disks.insert(d.name.clone(), r);
        }
    }
    out
}

/// What the inventory keeps of disk `s` after this scan, from what it knew (`known`) before.
fn remember(known: Option<Remembered>, s: &Seen, state: &str) -> Remembered {
    let d = &s.disk;
    let mut r = known.unwrap_or_default();
    r.serial = d.serial.clone().or(r.serial);
    r.model = d.model.clone().or(r.model);
    r.size_bytes = d.size_bytes.or(r.size_bytes);
    r.ioerr_count = d.ioerr_count;
    r.unsettled_state = (d.state_verdict() == Some(StateVerdict::Transient)).then(|| state.to_string());
    let mounted: Vec<&String> = s.mounts.iter().map(|(m, _)| m).collect();
    // A filesystem unmounted on purpose forgets it was read-write; one still mounted
    // read-only stays remembered as read-write, so the episode lasts until it is rw again.
    r.rw_mounts.retain(|m| mounted.contains(&m));
    for (m, ro) in &s.mounts {
        if !ro && !r.rw_mounts.contains(m) {
            r.rw_mounts.push(m.clone());
        }
    }
    r.rw_mounts.sort();
    r
}

/// Adds `io_errors` for the disks with an open kernel error storm (disk, first kernel
/// line, lines seen), unless the scan already found `io_errors` for that disk: one
/// condition per disk and reason.
pub(crate) fn add_kernel_io_errors(conditions: &mut Vec<Condition>, storms: &[(String, String, u64)]) {
    for (disk, line, _) in storms {
        if !conditions.iter().any(|c| &c.disk == disk && c.reason == Reason::IoErrors) {
            conditions.push(Condition {
                disk: disk.clone(),
                reason: Reason::IoErrors,
                detail: format!("kernel: {line}"),
            });
        }
    }
}

/// Matches the conditions against the open episodes: one episode per disk and reason.
/// Returns the conditions that open a new episode (each needs a warning) and the episodes
/// that ended because their condition cleared. Episodes of conditions that still hold are
/// left as they are, so a failure is reported once, not once per scan.
pub(crate) fn reconcile(episodes: &mut Vec<Episode>, conditions: &[Condition]) -> (Vec<Condition>, Vec<Episode>) {
    let holds = |e: &Episode| conditions.iter().any(|c| c.disk == e.disk && c.reason == e.reason);
    let (kept, closed): (Vec<Episode>, Vec<Episode>) = episodes.drain(..).partition(|e| holds(e));
    *episodes = kept;
    let new = conditions
        .iter()
        .filter(|c| !episodes.iter().any(|e| e.disk == c.disk && e.reason == c.reason))
        .cloned()
        .collect();
    (new, closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str) -> Disk {
        Disk {
            name: name.into(),
            model: Some("M".into()),
            serial: Some(format!("SER-{name}")),
            size_bytes: Some(4_000_000_000),
            rotational: Some(true),
            state: Some("running".into()),
            ioerr_count: Some(2),
            dev: Some("8:0".into()),
            partitions: Vec::new(),
        }
    }

    fn seen(d: Disk) -> Seen {
        Seen { disk: d, smart_passed: Some(true), mounts: vec![("/data".into(), false)] }
    }

    fn reasons(c: &[Condition]) -> Vec<(&str, Reason)> {
        c.iter().map(|c| (c.disk.as_str(), c.reason)).collect()
    }

    #[test]
    fn a_healthy_disk_raises_nothing_and_is_remembered() {
        let mut inv = Inventory::default();
        assert!(evaluate(&mut inv, &[seen(disk("sda"))], 1).is_empty());
        let r = &inv.disks["sda"];
        assert_eq!(r.serial.as_deref(), Some("SER-sda"));
        assert_eq!(r.rw_mounts, ["/data"]);
        assert!(evaluate(&mut inv, &[seen(disk("sda"))], 1).is_empty());
    }

    #[test]
    fn a_known_disk_that_is_gone_or_has_size_zero_is_missing() {
        let mut inv = Inventory::default();
        evaluate(&mut inv, &[seen(disk("sda")), seen(disk("sdb"))], 1);
        let c = evaluate(&mut inv, &[seen(disk("sdb"))], 1);
        assert_eq!(reasons(&c), [("sda", Reason::Missing)]);
        assert_eq!(c[0].detail, "block device sda disappeared");
        let mut zero = disk("sdb");
        zero.size_bytes = Some(0);
        let c = evaluate(&mut inv, &[seen(zero)], 1);
        assert_eq!(reasons(&c), [("sda", Reason::Missing), ("sdb", Reason::Missing)]);
        assert!(inv.disks.contains_key("sdb"), "a disk at size 0 stays in the inventory");
    }

    #[test]
    fn a_disk_seen_first_with_size_zero_is_not_a_failure() {
        let mut inv = Inventory::default();
        let mut empty = disk("sdc");
        empty.size_bytes = Some(0);
        assert!(evaluate(&mut inv, &[seen(empty)], 1).is_empty());
        assert!(!inv.disks.contains_key("sdc"));
    }

    #[test]
    fn a_scsi_state_other_than_running_is_offline() {
        for word in ["offline", "blocked", "transport-offline"] {
            let mut inv = Inventory::default();
            let mut d = disk("sda");
            d.state = Some(word.into());
            assert_eq!(reasons(&evaluate(&mut inv, &[seen(d)], 1)), [("sda", Reason::Offline)], "{word}");
        }
    }

    fn nvme(state: &str) -> Seen {
        let mut d = disk("nvme0n1");
        d.state = Some(state.into());
        d.ioerr_count = None;
        seen(d)
    }

    #[test]
    fn a_live_nvme_controller_is_healthy() {
        let mut inv = Inventory::default();
        for _ in 0..3 {
            assert!(evaluate(&mut inv, &[nvme("live\n")], 1).is_empty());
        }
    }

    #[test]
    fn a_dead_or_deleting_nvme_controller_is_offline_at_once() {
        for word in ["dead", "deleting", "deleting (no IO)"] {
            let mut inv = Inventory::default();
            let c = evaluate(&mut inv, &[nvme(word)], 1);
            assert_eq!(reasons(&c), [("nvme0n1", Reason::Offline)], "{word}");
            assert!(c[0].detail.contains(word), "{c:?}");
        }
    }

    #[test]
    fn a_resetting_nvme_controller_is_raised_only_if_it_lasts_past_a_scan() {
        // A reset that settles within a scan: nothing.
        let mut inv = Inventory::default();
        assert!(evaluate(&mut inv, &[nvme("resetting")], 1).is_empty());
        assert!(evaluate(&mut inv, &[nvme("live")], 1).is_empty());
        assert!(evaluate(&mut inv, &[nvme("connecting")], 1).is_empty());
        assert!(evaluate(&mut inv, &[nvme("live")], 1).is_empty());
        // One still unsettled a scan later: offline, until it is live again.
        for word in ["resetting", "connecting", "new"] {
            let mut inv = Inventory::default();
            assert!(evaluate(&mut inv, &[nvme(word)], 1).is_empty(), "{word}");
            let c = evaluate(&mut inv, &[nvme("connecting")], 1);
            assert_eq!(reasons(&c), [("nvme0n1", Reason::Offline)], "{word}");
            assert!(c[0].detail.contains(&format!("was \"{word}\"")), "{c:?}");
            assert!(evaluate(&mut inv, &[nvme("live")], 1).is_empty());
        }
    }

    #[test]
    fn io_errors_fire_when_the_counter_rises_by_the_threshold_and_end_when_it_stops() {
        let mut inv = Inventory::default();
        let at = |n| {
            let mut d = disk("sda");
            d.ioerr_count = Some(n);
            seen(d)
        };
        assert!(evaluate(&mut inv, &[at(2)], 3).is_empty(), "first sight is a baseline");
        assert!(evaluate(&mut inv, &[at(4)], 3).is_empty(), "rose by 2 < 3");
        let c = evaluate(&mut inv, &[at(7)], 3);
        assert_eq!(reasons(&c), [("sda", Reason::IoErrors)]);
        assert_eq!(c[0].detail, "device/ioerr_cnt of sda rose from 0x4 to 0x7");
        assert!(evaluate(&mut inv, &[at(7)], 3).is_empty(), "stopped rising");
    }

    #[test]
    fn a_failed_smart_check_is_smart_failed() {
        let mut inv = Inventory::default();
        let mut s = seen(disk("sda"));
        s.smart_passed = Some(false);
        assert_eq!(reasons(&evaluate(&mut inv, &[s], 1)), [("sda", Reason::SmartFailed)]);
        let mut s = seen(disk("sda"));
        s.smart_passed = None;
        assert!(evaluate(&mut inv, &[s], 1).is_empty(), "unknown SMART is not a failure");
    }

    #[test]
    fn a_filesystem_that_was_rw_and_is_now_ro_is_readonly_until_rw_again() {
        let mut inv = Inventory::default();
        let with = |ro: bool| Seen { mounts: vec![("/data".into(), ro)], ..seen(disk("sda")) };
        assert!(evaluate(&mut inv, &[with(false)], 1).is_empty());
        assert_eq!(reasons(&evaluate(&mut inv, &[with(true)], 1)), [("sda", Reason::Readonly)]);
        assert_eq!(reasons(&evaluate(&mut inv, &[with(true)], 1)), [("sda", Reason::Readonly)], "still ro");
        assert!(evaluate(&mut inv, &[with(false)], 1).is_empty());
    }

    #[test]
    fn a_filesystem_mounted_ro_from_the_start_or_after_an_unmount_is_not_a_failure() {
        let mut inv = Inventory::default();
        let with = |m: Vec<(String, bool)>| Seen { mounts: m, ..seen(disk("sda")) };
        assert!(evaluate(&mut inv, &[with(vec![("/ro".into(), true)])], 1).is_empty());
        evaluate(&mut inv, &[with(vec![("/data".into(), false)])], 1);
        evaluate(&mut inv, &[with(vec![])], 1); // unmounted
        assert!(evaluate(&mut inv, &[with(vec![("/data".into(), true)])], 1).is_empty());
    }

    #[test]
    fn a_kernel_storm_is_io_errors_with_its_first_line_once_per_disk() {
        let mut inv = Inventory::default();
        let mut c = evaluate(&mut inv, &[seen(disk("sda"))], 1);
        let storms = [("sda".to_string(), "I/O error, dev sda, sector 8".to_string(), 9_999)];
        add_kernel_io_errors(&mut c, &storms);
        assert_eq!(reasons(&c), [("sda", Reason::IoErrors)]);
        assert_eq!(c[0].detail, "kernel: I/O error, dev sda, sector 8");
        add_kernel_io_errors(&mut c, &storms);
        assert_eq!(c.len(), 1, "the counter and the kernel log are the same episode");
    }

    #[test]
    fn one_episode_per_disk_and_reason_until_the_condition_clears() {
        let c = |d: &str, r: Reason| Condition { disk: d.into(), reason: r, detail: String::new() };
        let mut eps = Vec::new();
        let (new, closed) = reconcile(&mut eps, &[c("sda", Reason::Missing), c("sdb", Reason::Offline)]);
        assert_eq!(new.len(), 2);
        assert!(closed.is_empty());
        for n in new {
            eps.push(Episode {
                disk: n.disk,
                reason: n.reason,
                act_id: "x".into(),
                since: crate::protocol::Timestamp::exact(0),
                detail: n.detail,
                reported: true,
            });
        }
        let (new, closed) = reconcile(&mut eps, &[c("sda", Reason::Missing), c("sdb", Reason::Offline)]);
        assert!(new.is_empty() && closed.is_empty(), "no second warning for the same episode");
        let (new, closed) = reconcile(&mut eps, &[c("sda", Reason::Missing)]);
        assert!(new.is_empty());
        assert_eq!(closed.len(), 1);
        assert_eq!(eps.len(), 1);
        let (new, _) = reconcile(&mut eps, &[c("sda", Reason::Missing), c("sdb", Reason::Offline)]);
        assert_eq!(new.len(), 1, "a later failure is a new episode");
    }
}
