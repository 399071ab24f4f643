//! What a restarted monitor takes over: the inventories as last saved, the warnings and
//! `warning_cleared` messages still in the spool, and the tombstones of acknowledged ones,
//! so that a crash at any point between detecting a failure (or its end) and saving it as
//! reported yields neither a lost message nor a second one for the same episode.

use std::collections::HashSet;

use super::messages::Names;
use crate::disks::inventory::Inventory;
use crate::episodes::episode::{Closing, Episode};
use crate::episodes::ledger::Ledger;
use crate::episodes::reason::Reason;
use crate::episodes::subject::SubjectKind;
use crate::gpus::inventory::GpuInventory;
use crate::outbox::spool::{Kind, Spool};
use crate::protocol::{self, Identity, Timestamp};

fn ledger<'a>(disks: &'a mut Inventory, gpus: &'a mut GpuInventory, kind: SubjectKind) -> &'a mut Ledger {
    match kind {
        SubjectKind::Disk => &mut disks.episodes,
        SubjectKind::Gpu => &mut gpus.episodes,
    }
}

/// Brings the inventories (as loaded) in line with `spool` (as opened): a warning still
/// waiting, or acknowledged with no episode saved, becomes a reported episode; an
/// unreported episode whose warning was acknowledged is marked reported; one whose warning
/// was never durably spooled nor acknowledged is raised again, with the same `act_id` and
/// time (`now` stands for a time that cannot be read); the same for the `warning_cleared` of a closing episode, always after its warning.
/// Returns whether the inventories now differ from what is saved (the first scan saves).
pub(crate) fn take_over(
    disks: &mut Inventory,
    gpus: &mut GpuInventory,
    spool: &Spool,
    id: &Identity,
    maintenance: bool,
    now: Timestamp,
) -> bool {
    // Sets, not a scan of the episodes per entry: the spool may hold thousands.
    let mut known: HashSet<(String, Reason)> = HashSet::new();
    let mut warned: HashSet<String> = HashSet::new();
    for l in [&disks.episodes, &gpus.episodes] {
        known.extend(l.open.iter().map(|e| (e.subject.clone(), e.reason)));
        warned.extend(l.warnings().into_iter().map(str::to_string));
    }
    let unacked = spool.unacked();
    // A warning whose end is already spooled belongs to a closed episode, not an open one.
    let mut cleared_spooled: Vec<(String, Closing)> = Vec::new();
    for entry in unacked.iter().filter(|e| e.kind == Kind::WarningCleared) {
        if let Some(c) = protocol::decode_cleared(&entry.text) {
            warned.insert(c.ref_act_id.clone());
            let time = c.parts.time.unwrap_or(now);
            let placeholder = Episode {
                subject: c.parts.subject,
                reason: Reason::Missing,
                act_id: c.ref_act_id.clone(),
                since: time,
                detail: String::new(),
                reported: true,
            };
            let closing = Closing {
                episode: placeholder,
                act_id: entry.act_id.clone(),
                time,
                detail: c.parts.detail,
                reported: true,
            };
            cleared_spooled.push((c.ref_act_id, closing));
        }
    }
    let mut unsaved = false;
    for entry in unacked.iter().filter(|e| e.kind == Kind::Warning) {
        let Some(w) = protocol::decode_warning(&entry.text) else { continue };
        // Only this agent writes the spool: a reason it does not know is not its warning.
        let Ok(reason) = w.reason.parse::<Reason>() else { continue };
        if warned.contains(&entry.act_id) {
            continue;
        }
        if known.insert((w.subject.clone(), reason)) {
            let since = w.time.unwrap_or(now);
            let e = Episode {
                subject: w.subject,
                reason,
                act_id: entry.act_id.clone(),
                since,
                detail: w.detail,
                reported: true,
            };
            ledger(disks, gpus, reason.kind()).open.push(e);
        }
    }
    // Acknowledged before any save recorded its episode at all: the warning is written,
    // sent and acknowledged while the scan's save of the inventory is still in its fsync,
    // and a kill -9 then leaves only the tombstone. Without this episode the next scan
    // would take the failure for a new one and warn again under a new act_id.
    let mut keep: HashSet<String> = HashSet::new();
    for (act_id, text) in spool.take_acked_at_open() {
        let Some(w) = protocol::decode_warning(&text) else { continue };
        let Ok(reason) = w.reason.parse::<Reason>() else { continue };
        if protocol::decode_cleared(&text).is_some() || warned.contains(&act_id) {
            continue;
        }
        if known.insert((w.subject.clone(), reason)) {
            let since = w.time.unwrap_or(now);
            keep.insert(act_id.clone());
            let e = Episode { subject: w.subject, reason, act_id, since, detail: w.detail, reported: true };
            ledger(disks, gpus, reason.kind()).open.push(e);
            unsaved = true;
        }
    }
    // A `warning_cleared` spooled before the save that would have recorded its episode as
    // closing: the episode is closing now, its message reported.
    for (warning, cleared) in cleared_spooled {
        for l in [&mut disks.episodes, &mut gpus.episodes] {
            if let Some(i) = l.open.iter().position(|e| e.act_id == warning) {
                let episode = l.open.remove(i);
                l.closing.push(Closing { episode, ..cleared.clone() });
                unsaved = true;
            }
        }
    }
    // As saved: until the next save, acks of these leave a tombstone (and the tombstones
    // just turned into episodes stay until that save records them).
    for l in [&disks.episodes, &gpus.episodes] {
        keep.extend(l.unreported().map(str::to_string));
        keep.extend(l.closing.iter().filter(|c| !c.episode.reported).map(|c| c.episode.act_id.clone()));
    }
    spool.purge_tombstones(keep);
    // Acknowledged (its tombstone is in the spool) before this was saved as reported: it
    // was delivered, only the record of it is late. Saved at the first scan.
    for l in [&mut disks.episodes, &mut gpus.episodes] {
        let episodes = l.open.iter_mut().chain(l.closing.iter_mut().map(|c| &mut c.episode));
        for e in episodes.filter(|e| !e.reported && spool.acked_before(&e.act_id)) {
            e.reported = true;
            unsaved = true;
        }
        for c in l.closing.iter_mut().filter(|c| !c.reported && spool.acked_before(&c.act_id)) {
            c.reported = true;
            unsaved = true;
        }
    }
    raise_again(disks, gpus, spool, id, maintenance);
    unsaved
}

/// Spools again what was neither durably spooled nor acknowledged: every warning first,
/// then the `warning_cleared` messages, so each end follows its start.
fn raise_again(disks: &Inventory, gpus: &GpuInventory, spool: &Spool, id: &Identity, maintenance: bool) {
    let names = Names { disks, gpus };
    let lost = |act_id: &str| spool.durability(act_id).is_none();
    for l in [&disks.episodes, &gpus.episodes] {
        let episodes = l.open.iter().chain(l.closing.iter().map(|c| &c.episode));
        for e in episodes.filter(|e| !e.reported && lost(&e.act_id)) {
            log::error!(
                "{} {} failed ({}) before the last stop and its warning {} was neither spooled nor \
                 acknowledged; raising it again",
                e.kind(),
                e.subject,
                e.reason,
                e.act_id
            );
            spool.push(&names.warning(id, e, maintenance));
        }
    }
    for l in [&disks.episodes, &gpus.episodes] {
        for c in l.closing.iter().filter(|c| !c.reported && lost(&c.act_id)) {
            log::info!(
                "{} {}: the end of {} ({}) was neither spooled nor acknowledged; sending it again",
                c.episode.kind(),
                c.episode.subject,
                c.episode.reason,
                c.act_id
            );
            spool.push(&names.cleared(id, c, maintenance));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outbox::spool::Durability;
    use crate::protocol::{Named, Stamp};

    fn id() -> Identity {
        Identity { hardware_id: "rig-1".into(), name: "rig-1".into() }
    }

    fn episode(disk: &str, act_id: &str, reported: bool) -> Episode {
        Episode {
            subject: disk.into(),
            reason: Reason::Offline,
            act_id: act_id.into(),
            since: Timestamp::exact(1_700_000_000),
            detail: "state offline".into(),
            reported,
        }
    }

    fn take(disks: &mut Inventory, gpus: &mut GpuInventory, spool: &Spool) -> bool {
        take_over(disks, gpus, spool, &id(), false, Timestamp::exact(1))
    }

    #[test]
    fn an_episode_whose_warning_never_reached_the_spool_is_raised_again_with_its_act_id_and_time() {
        let d = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(d.path()).unwrap();
        let mut inv = Inventory::default();
        inv.episodes.open.push(episode("sdb", "a-7", false));
        take(&mut inv, &mut GpuInventory::default(), &spool);
        assert!(spool.settle(Duration::from_secs(10)));
        let again = spool.unacked();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].act_id, "a-7");
        let w = protocol::decode_warning(&again[0].text).unwrap();
        assert_eq!((w.subject.as_str(), w.time), ("sdb", Some(Timestamp::exact(1_700_000_000))));
        assert_eq!(spool.durability("a-7"), Some(Durability::OnDisk));
    }

    #[test]
    fn a_warning_still_in_the_spool_becomes_its_episode_and_is_not_raised_twice() {
        let d = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(d.path()).unwrap();
        let disk = Named::Disk { device: "/dev/sdc", serial: None };
        let stamp = Stamp { time: Timestamp::exact(1_700_000_001), maintenance: false };
        spool.push(&protocol::encode_warning(&id(), "a-9", &disk, "offline", "state offline", &stamp));
        let gpu = Named::Gpu { bus: "0000:01:00.0", index: None, model: None, uuid: None };
        spool.push(&protocol::encode_warning(&id(), "a-10", &gpu, "gpu_lost", "fell off", &stamp));
        assert!(spool.settle(Duration::from_secs(10)));
        drop(spool);
        let (spool, _) = Spool::open(d.path()).unwrap();
        let (mut inv, mut gpus) = (Inventory::default(), GpuInventory::default());
        take(&mut inv, &mut gpus, &spool);
        assert_eq!(
            inv.episodes.open,
            [Episode { since: Timestamp::exact(1_700_000_001), ..episode("sdc", "a-9", true) }]
        );
        assert_eq!(gpus.episodes.open.len(), 1);
        assert_eq!(
            (gpus.episodes.open[0].subject.as_str(), gpus.episodes.open[0].reason),
            ("0000:01:00.0", Reason::GpuLost)
        );
        assert_eq!(spool.unacked().len(), 2, "the spooled ones only");
    }

    #[test]
    fn an_end_never_spooled_is_sent_again_after_its_warning_and_a_spooled_end_closes_its_episode() {
        let d = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(d.path()).unwrap();
        let mut inv = Inventory::default();
        // Warned and closed in the same scan, then killed before either was written.
        inv.episodes.closing.push(Closing {
            episode: episode("sdb", "a-7", false),
            act_id: "a-8".into(),
            time: Timestamp::exact(1_700_000_100),
            detail: "device/state of sdb is \"running\" again".into(),
            reported: false,
        });
        take(&mut inv, &mut GpuInventory::default(), &spool);
        assert!(spool.settle(Duration::from_secs(10)));
        let sent: Vec<(String, String)> =
            spool.unacked().into_iter().map(|e| (e.act_id, e.kind.act().to_string())).collect();
        assert_eq!(sent, [("a-7".into(), "warning".into()), ("a-8".into(), "warning_cleared".into())]);
        drop(spool);
        // The same spool, but an inventory saved before the episode closed: the spooled
        // end makes it closing, never an open episode that would be ended a second time.
        let (spool, _) = Spool::open(d.path()).unwrap();
        let mut inv = Inventory::default();
        inv.episodes.open.push(episode("sdb", "a-7", true));
        assert!(take(&mut inv, &mut GpuInventory::default(), &spool));
        assert!(inv.episodes.open.is_empty());
        assert_eq!(inv.episodes.closing.len(), 1);
        assert_eq!((inv.episodes.closing[0].act_id.as_str(), inv.episodes.closing[0].reported), ("a-8", true));
        assert_eq!(spool.unacked().len(), 2, "nothing spooled twice");
    }
}
