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
/// A `warning_cleared` still waiting in the spool, or acknowledged (its tombstone), closes
/// its episode with that end reported: one end per episode, whenever the agent was killed.
/// Returns whether the inventories now differ from what is saved (the first scan saves),
/// and the episodes saved as open that it found ended.
pub(crate) fn take_over(
    disks: &mut Inventory,
    gpus: &mut GpuInventory,
    spool: &Spool,
    id: &Identity,
    maintenance: bool,
    now: Timestamp,
) -> TakenOver {
    // Sets, not a scan of the episodes per entry: the spool may hold thousands.
    let mut known: HashSet<(String, Reason)> = HashSet::new();
    let mut warned: HashSet<String> = HashSet::new();
    for l in [&disks.episodes, &gpus.episodes] {
        known.extend(l.open.iter().map(|e| (e.subject.clone(), e.reason)));
        warned.extend(l.warnings().into_iter().map(str::to_string));
    }
    let unacked = spool.unacked();
    let acked = spool.take_acked_at_open();
    // Every end the spool holds, still waiting or acknowledged (its tombstone): its episode
    // closed and its `warning_cleared` reported, whatever the saved inventory says. The
    // warning it ends belongs to a closed episode, never an open one.
    let waiting = unacked.iter().filter(|e| e.kind == Kind::WarningCleared).map(|e| (e.act_id.as_str(), &*e.text));
    let ends: Vec<Closing> = waiting
        .chain(acked.iter().map(|(a, t)| (a.as_str(), t.as_str())))
        .filter_map(|(a, t)| end(a, t, now))
        .collect();
    warned.extend(ends.iter().map(|c| c.episode.act_id.clone()));
    let mut unsaved = false;
    // The act_ids whose acks must leave a tombstone until the next save (see below).
    let mut keep: HashSet<String> = HashSet::new();
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
            // Only in memory: the first scan must save it, and until then the ack of its
            // warning (sent again now) leaves a tombstone. Otherwise an ack followed by
            // any restart, a clean one included, forgot the episode, and the next start
            // warned again under a new act_id.
            keep.insert(entry.act_id.clone());
            unsaved = true;
        }
    }
    // Acknowledged before any save recorded its episode at all: the warning is written,
    // sent and acknowledged while the scan's save of the inventory is still in its fsync,
    // and a kill -9 then leaves only the tombstone. Without this episode the next scan
    // would take the failure for a new one and warn again under a new act_id.
    for (act_id, text) in acked {
        if protocol::decode_cleared(&text).is_some() || warned.contains(&act_id) {
            continue;
        }
        let Some(w) = protocol::decode_warning(&text) else { continue };
        let Ok(reason) = w.reason.parse::<Reason>() else { continue };
        if known.insert((w.subject.clone(), reason)) {
            let since = w.time.unwrap_or(now);
            keep.insert(act_id.clone());
            let e = Episode { subject: w.subject, reason, act_id, since, detail: w.detail, reported: true };
            ledger(disks, gpus, reason.kind()).open.push(e);
            unsaved = true;
        }
    }
    // An end spooled, or even acknowledged, before the save that would have recorded its
    // episode as closing (the ack can be faster than that save's fsync): the episode is
    // closing now, its end reported, so the next scan does not end it a second time.
    // Until that save, an ack of a waiting end leaves a tombstone and the tombstone of an
    // acknowledged one stays: a kill -9 before it finds the end again.
    let mut ended = Vec::new();
    for cleared in ends {
        keep.insert(cleared.act_id.clone());
        unsaved |= record_end(ledger(disks, gpus, cleared.episode.kind()), spool, cleared, &mut ended);
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
    TakenOver { unsaved, ended }
}

/// What [`take_over`] found.
pub(crate) struct TakenOver {
    /// The inventories differ from what is saved: the first scan saves.
    pub unsaved: bool,
    /// Episodes saved as open whose end the spool holds: closed before the last stop, so
    /// never resumed; whoever subscribes hears them closed (a kill -9 may have come before
    /// it took in the end).
    pub ended: Vec<Closing>,
}

/// The end of an episode that a spooled or acknowledged `warning_cleared` (`act_id`,
/// `text`) tells, as the closing ledger keeps it: reported, its episode as far as the
/// message tells it. `None` for text that is not such a message of this agent.
fn end(act_id: &str, text: &str, now: Timestamp) -> Option<Closing> {
    let c = protocol::decode_cleared(text)?;
    let reason = c.parts.reason.parse::<Reason>().ok()?;
    let time = c.parts.time.unwrap_or(now);
    let episode = Episode {
        subject: c.parts.subject,
        reason,
        act_id: c.ref_act_id,
        since: time,
        detail: String::new(),
        reported: true,
    };
    Some(Closing { episode, act_id: act_id.to_string(), time, detail: c.parts.detail, reported: true })
}

/// Records in `l` that the end `cleared` is reported: the open episode it ends becomes
/// closing, a closing one is marked reported (never sent again, whatever `act_id` it was
/// given); one the ledger does not hold becomes closing while its warning still waits in
/// the spool, so that a later start does not take that warning for an open episode.
/// Returns whether the ledger changed; an open episode it closes is added to `ended`.
fn record_end(l: &mut Ledger, spool: &Spool, cleared: Closing, ended: &mut Vec<Closing>) -> bool {
    let warning = &cleared.episode.act_id;
    if let Some(i) = l.open.iter().position(|e| &e.act_id == warning) {
        // As saved: whether its warning still needs raising again is the spool's to say.
        let episode = l.open.remove(i);
        let closing = Closing { episode, ..cleared };
        ended.push(closing.clone());
        l.closing.push(closing);
        return true;
    }
    if let Some(c) = l.closing.iter_mut().find(|c| &c.episode.act_id == warning) {
        return !std::mem::replace(&mut c.reported, true);
    }
    if spool.contains(warning) {
        l.closing.push(cleared);
        return true;
    }
    false
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
        take_over(disks, gpus, spool, &id(), false, Timestamp::exact(1)).unsaved
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

    /// The take-over's episode rebuilt from a waiting warning is not in disks.json: once the
    /// gateway acknowledges that warning (no tombstone: the episode counts as reported), only
    /// a save records the episode. Unless the first scan saves, a later start warns again.
    #[test]
    fn a_warning_found_only_in_the_spool_makes_the_first_scan_save_its_episode() {
        let d = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(d.path()).unwrap();
        let disk = Named::Disk { device: "/dev/sdc", serial: None };
        let stamp = Stamp { time: Timestamp::exact(1_700_000_001), maintenance: false };
        spool.push(&protocol::encode_warning(&id(), "a-9", &disk, "offline", "state offline", &stamp));
        assert!(spool.settle(Duration::from_secs(10)));
        drop(spool);
        let (spool, _) = Spool::open(d.path()).unwrap();
        let mut inv = Inventory::default();
        let unsaved = take(&mut inv, &mut GpuInventory::default(), &spool);
        assert_eq!(inv.episodes.open.len(), 1);
        assert!(unsaved, "the inventory now holds an episode disks.json does not, and nothing will save it");
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

    /// The `warning_cleared` a-8 of sdb's offline episode a-7, as the agent encodes it.
    fn cleared() -> serde_json::Value {
        let disk = Named::Disk { device: "/dev/sdb", serial: None };
        let stamp = Stamp { time: Timestamp::exact(1_700_000_100), maintenance: false };
        protocol::encode_cleared(
            &id(),
            "a-8",
            "a-7",
            &disk,
            "offline",
            "disk /dev/sdb: offline no longer holds",
            &stamp,
        )
    }

    /// A state directory whose spool holds `tombstones` (act_id and message) as a kill -9
    /// leaves them: acknowledged before the inventory recorded them.
    fn with_tombstones(tombstones: &[serde_json::Value]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(d.path()).unwrap();
        spool.purge_tombstones(tombstones.iter().map(|t| t["act_id"].as_str().unwrap().to_string()).collect());
        for t in tombstones {
            spool.push(t);
            assert!(spool.settle(Duration::from_secs(10)));
            assert!(spool.ack(t["act_id"].as_str().unwrap()).is_some());
        }
        assert!(spool.settle(Duration::from_secs(10)));
        d
    }

    #[test]
    fn an_acknowledged_end_closes_its_open_episode_as_reported_and_is_not_sent_again() {
        let d = with_tombstones(&[cleared()]);
        let (spool, _) = Spool::open(d.path()).unwrap();
        assert!(spool.acked_before("a-8"));
        let mut inv = Inventory::default();
        inv.episodes.open.push(episode("sdb", "a-7", true));
        let taken = take_over(&mut inv, &mut GpuInventory::default(), &spool, &id(), false, Timestamp::exact(1));
        assert!(taken.unsaved, "the first scan must save it");
        assert_eq!(taken.ended, inv.episodes.closing, "subscribers hear it closed, never resumed");
        assert!(inv.episodes.open.is_empty(), "an open episode would be ended a second time");
        assert_eq!(inv.episodes.closing.len(), 1);
        let c = &inv.episodes.closing[0];
        assert_eq!((c.episode.act_id.as_str(), c.act_id.as_str(), c.reported), ("a-7", "a-8", true));
        assert_eq!(c.time, Timestamp::exact(1_700_000_100));
        assert!(spool.settle(Duration::from_secs(10)));
        assert!(spool.unacked().is_empty(), "nothing sent again");
        // Until the save records it, a kill -9 must still find the end acknowledged.
        assert!(spool.acked_before("a-8"));
        drop(spool);
        let (spool, _) = Spool::open(d.path()).unwrap();
        assert!(spool.acked_before("a-8"));
    }

    #[test]
    fn an_acknowledged_end_marks_its_closing_episode_reported_whatever_act_id_it_holds() {
        for held in ["a-8", "a-99"] {
            let d = with_tombstones(&[cleared()]);
            let (spool, _) = Spool::open(d.path()).unwrap();
            let mut inv = Inventory::default();
            inv.episodes.closing.push(Closing {
                episode: episode("sdb", "a-7", true),
                act_id: held.into(),
                time: Timestamp::exact(1_700_000_100),
                detail: "disk /dev/sdb: offline no longer holds".into(),
                reported: false,
            });
            assert!(take(&mut inv, &mut GpuInventory::default(), &spool));
            assert!(inv.episodes.open.is_empty());
            assert_eq!(inv.episodes.closing.len(), 1);
            assert!(inv.episodes.closing[0].reported, "{held}");
            assert!(spool.settle(Duration::from_secs(10)));
            assert!(spool.unacked().is_empty(), "{held}: the end is not sent again");
        }
    }

    #[test]
    fn an_acknowledged_end_keeps_the_tombstone_of_its_warning_from_opening_the_episode() {
        // Neither the warning nor its end was ever saved: both were acknowledged first.
        let disk = Named::Disk { device: "/dev/sdb", serial: None };
        let stamp = Stamp { time: Timestamp::exact(1_700_000_000), maintenance: false };
        let warning = protocol::encode_warning(&id(), "a-7", &disk, "offline", "state offline", &stamp);
        let d = with_tombstones(&[warning, cleared()]);
        let (spool, _) = Spool::open(d.path()).unwrap();
        let mut inv = Inventory::default();
        take(&mut inv, &mut GpuInventory::default(), &spool);
        assert_eq!(inv.episodes, Ledger::default(), "the episode ended: nothing to end again");
        assert!(spool.settle(Duration::from_secs(10)));
        assert!(spool.unacked().is_empty());
    }

    #[test]
    fn an_acknowledged_end_whose_warning_still_waits_keeps_the_episode_closing() {
        let d = with_tombstones(&[cleared()]);
        let (spool, _) = Spool::open(d.path()).unwrap();
        let disk = Named::Disk { device: "/dev/sdb", serial: None };
        let stamp = Stamp { time: Timestamp::exact(1_700_000_000), maintenance: false };
        spool.push(&protocol::encode_warning(&id(), "a-7", &disk, "offline", "state offline", &stamp));
        assert!(spool.settle(Duration::from_secs(10)));
        let mut inv = Inventory::default();
        assert!(take(&mut inv, &mut GpuInventory::default(), &spool));
        assert!(inv.episodes.open.is_empty(), "the waiting warning is of an episode that ended");
        assert_eq!(inv.episodes.closing.len(), 1);
        let c = &inv.episodes.closing[0];
        assert_eq!((c.episode.act_id.as_str(), c.act_id.as_str(), c.reported), ("a-7", "a-8", true));
        assert_eq!(spool.unacked().len(), 1, "only the warning, as it was");
    }
}
