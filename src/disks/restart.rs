//! What a restarted monitor takes over: the inventory as last saved, the warnings still in
//! the spool, and the tombstones of acknowledged ones, so that a crash at any point between
//! detecting a failure and saving it as reported yields neither a lost warning nor a
//! second one for the same failure.

use std::collections::HashSet;

use crate::disks::inventory::{Episode, Inventory};
use crate::disks::reason::Reason;
use crate::outbox::spool::{Kind, Spool};
use crate::protocol::{self, Identity, Timestamp};

/// Brings `inv` (as loaded) in line with `spool` (as opened): a warning still waiting, or
/// acknowledged with no episode saved, becomes a reported episode; an unreported episode
/// whose warning was acknowledged is marked reported; one whose warning was never durably
/// spooled nor acknowledged is raised again, with the same `act_id` and time (`now` stands
/// for a warning whose time cannot be read). Returns
/// whether `inv` now differs from what is saved (the first scan saves it).
pub(crate) fn take_over(inv: &mut Inventory, spool: &Spool, id: &Identity, now: Timestamp) -> bool {
    // A set, not a scan of the episodes per entry: the spool may hold thousands.
    let mut known: HashSet<(String, Reason)> = inv.episodes.iter().map(|e| (e.disk.clone(), e.reason)).collect();
    for entry in spool.unacked() {
        if entry.kind != Kind::Warning {
            continue;
        }
        let Some(w) = protocol::decode_warning(&entry.text) else { continue };
        // Only this agent writes the spool: a reason it does not know is not its warning.
        let Ok(reason) = w.reason.parse::<Reason>() else { continue };
        if known.insert((w.disk.clone(), reason)) {
            let since = w.time.unwrap_or(now);
            inv.episodes.push(Episode {
                disk: w.disk,
                reason,
                act_id: entry.act_id,
                since,
                detail: w.detail,
                reported: true,
            });
        }
    }
    // Acknowledged before any save recorded its episode at all: the warning is written,
    // sent and acknowledged while the scan's save of disks.json is still in its fsync,
    // and a kill -9 then leaves only the tombstone. Without this episode the next scan
    // would take the failure for a new one and warn again under a new act_id.
    let mut unsaved = false;
    let mut keep: HashSet<String> = HashSet::new();
    for (act_id, text) in spool.take_acked_at_open() {
        let Some(w) = protocol::decode_warning(&text) else { continue };
        let Ok(reason) = w.reason.parse::<Reason>() else { continue };
        if known.insert((w.disk.clone(), reason)) {
            let since = w.time.unwrap_or(now);
            keep.insert(act_id.clone());
            inv.episodes.push(Episode { disk: w.disk, reason, act_id, since, detail: w.detail, reported: true });
            unsaved = true;
        }
    }
    // As saved: until the next save, acks of these leave a tombstone (and the tombstones
    // just turned into episodes stay until that save records them).
    keep.extend(inv.episodes.iter().filter(|e| !e.reported).map(|e| e.act_id.clone()));
    spool.purge_tombstones(keep);
    // Acknowledged (its tombstone is in the spool) before this episode was saved as
    // reported: it was delivered, only the record of it is late. Saved at the first scan.
    for e in inv.episodes.iter_mut().filter(|e| !e.reported && spool.acked_before(&e.act_id)) {
        e.reported = true;
        unsaved = true;
    }
    for e in inv.episodes.iter().filter(|e| !e.reported && spool.durability(&e.act_id).is_none()) {
        let device = format!("/dev/{}", e.disk);
        let serial = inv.disks.get(&e.disk).and_then(|r| r.serial.clone());
        log::error!(
            "disk {device} failed ({}) before the last stop and its warning {} was neither spooled nor \
             acknowledged; raising it again",
            e.reason,
            e.act_id
        );
        let warning =
            protocol::encode_warning(id, &e.act_id, &device, serial.as_deref(), e.reason.as_str(), &e.detail, e.since);
        spool.push(&warning);
    }
    unsaved
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outbox::spool::Durability;

    fn id() -> Identity {
        Identity { hardware_id: "rig-1".into(), name: "rig-1".into() }
    }

    fn episode(disk: &str, act_id: &str, reported: bool) -> Episode {
        Episode {
            disk: disk.into(),
            reason: Reason::Offline,
            act_id: act_id.into(),
            since: Timestamp::exact(1_700_000_000),
            detail: "state offline".into(),
            reported,
        }
    }

    #[test]
    fn an_episode_whose_warning_never_reached_the_spool_is_raised_again_with_its_act_id_and_time() {
        let d = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(d.path()).unwrap();
        let mut inv = Inventory { episodes: vec![episode("sdb", "a-7", false)], ..Inventory::default() };
        take_over(&mut inv, &spool, &id(), Timestamp::exact(1));
        assert!(spool.settle(Duration::from_secs(10)));
        let again = spool.unacked();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].act_id, "a-7");
        let w = protocol::decode_warning(&again[0].text).unwrap();
        assert_eq!((w.disk.as_str(), w.time), ("sdb", Some(Timestamp::exact(1_700_000_000))));
        assert_eq!(spool.durability("a-7"), Some(Durability::OnDisk));
    }

    #[test]
    fn a_warning_still_in_the_spool_becomes_its_episode_and_is_not_raised_twice() {
        let d = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(d.path()).unwrap();
        let w = protocol::encode_warning(
            &id(),
            "a-9",
            "/dev/sdc",
            None,
            "offline",
            "state offline",
            Timestamp::exact(1_700_000_001),
        );
        spool.push(&w);
        assert!(spool.settle(Duration::from_secs(10)));
        drop(spool);
        let (spool, _) = Spool::open(d.path()).unwrap();
        let mut inv = Inventory::default();
        take_over(&mut inv, &spool, &id(), Timestamp::exact(1));
        assert_eq!(inv.episodes, [Episode { since: Timestamp::exact(1_700_000_001), ..episode("sdc", "a-9", true) }]);
        assert_eq!(spool.unacked().len(), 1, "the spooled one only");
    }
}
