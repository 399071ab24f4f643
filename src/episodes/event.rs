//! What the monitor tells the rest of the agent about its episodes: one event when an
//! episode opens, when one open before a restart is taken over, and when one closes. The
//! monitor thread publishes them; whoever subscribed (the wiring in `agent.rs`) reads them
//! on its own thread, never the socket thread's.

use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender};

use crate::episodes::episode::Episode;
use crate::episodes::reason::Reason;
use crate::episodes::subject::SubjectKind;

/// What happened to the episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new failure: its warning was just raised (spooled, or about to be offered).
    Opened,
    /// An episode open before the agent restarted (a reboot into the same failure), taken
    /// over from the state directory at start: the same `act_id` as when it opened.
    Resumed,
    /// Its condition cleared (the disk or GPU is back, replaced, quiet for long enough),
    /// or the config no longer covers its subject.
    Closed,
}

/// One episode's change. `act_id` is the episode's identity for its whole life: the
/// `act_id` of its warning (and the `ref_act_id` of its `warning_cleared`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpisodeEvent {
    pub change: Change,
    pub act_id: String,
    pub kind: SubjectKind,
    /// As the warning names it: `/dev/sdl` for a disk, `0000:01:00.0` for a GPU.
    pub subject: String,
    pub reason: Reason,
    /// The warning's `detail` (Opened, Resumed) or why it ended (Closed).
    pub detail: String,
    /// Unix seconds: when it opened (Opened, Resumed) or closed (Closed).
    pub time: u64,
}

impl EpisodeEvent {
    /// The event for `e`: opened or resumed with its own detail and time, or closed at
    /// `time` for the reason `detail`.
    pub fn of(change: Change, e: &Episode, detail: &str, time: u64) -> EpisodeEvent {
        let subject = match e.kind() {
            SubjectKind::Disk => format!("/dev/{}", e.subject),
            SubjectKind::Gpu => e.subject.clone(),
        };
        EpisodeEvent {
            change,
            act_id: e.act_id.clone(),
            kind: e.kind(),
            subject,
            reason: e.reason,
            detail: detail.to_string(),
            time,
        }
    }
}

/// The subscribers to episode events, and the episodes open now: a subscriber that comes
/// after the monitor started (or after an episode opened) is first handed each open one,
/// as it was last published, so it never misses an episode it must act on.
#[derive(Debug, Default)]
pub struct Feed {
    inner: Mutex<Subscribers>,
}

#[derive(Debug, Default)]
struct Subscribers {
    senders: Vec<Sender<EpisodeEvent>>,
    /// The last Opened or Resumed event of each open episode, in the order they came.
    /// Bounded by the episodes, one per subject and reason.
    open: Vec<EpisodeEvent>,
}

impl Feed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver of the open episodes' events, then of every event published from now on,
    /// in order. Unbounded: episodes are few (one per failure, not per kernel line), and a
    /// subscriber that lags must still get each one. Dropping the receiver unsubscribes.
    pub fn subscribe(&self) -> Receiver<EpisodeEvent> {
        let (tx, rx) = mpsc::channel();
        let mut s = self.lock();
        for e in &s.open {
            let _ = tx.send(e.clone());
        }
        s.senders.push(tx);
        rx
    }

    /// Hands `e` to every subscriber still listening.
    pub fn publish(&self, e: &EpisodeEvent) {
        let mut s = self.lock();
        s.open.retain(|o| o.act_id != e.act_id);
        if e.change != Change::Closed {
            s.open.push(e.clone());
        }
        s.senders.retain(|tx| tx.send(e.clone()).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscriber_hears_each_event_in_order_and_a_dropped_one_is_forgotten() {
        let feed = Feed::default();
        let (a, b) = (feed.subscribe(), feed.subscribe());
        let e = Episode {
            subject: "0000:01:00.0".into(),
            reason: Reason::GpuLost,
            act_id: "9f3a61c2-31".into(),
            since: crate::protocol::Timestamp::exact(5),
            detail: "kernel: NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus.".into(),
            reported: false,
        };
        feed.publish(&EpisodeEvent::of(Change::Opened, &e, &e.detail, e.since.secs));
        drop(b);
        feed.publish(&EpisodeEvent::of(Change::Closed, &e, "nvidia-smi lists it again", 9));
        let got: Vec<EpisodeEvent> = a.try_iter().collect();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].change, got[0].kind, got[0].subject.as_str()),
            (Change::Opened, SubjectKind::Gpu, "0000:01:00.0")
        );
        assert_eq!((got[1].change, got[1].time, got[1].act_id.as_str()), (Change::Closed, 9, "9f3a61c2-31"));
        assert_eq!(feed.lock().senders.len(), 1);
        let disk = Episode { subject: "sdl".into(), reason: Reason::Missing, ..e };
        // A late subscriber hears of the episodes open now, and not of those that ended.
        let disk_opened = EpisodeEvent::of(Change::Opened, &disk, "gone", 7);
        feed.publish(&disk_opened);
        let late: Vec<EpisodeEvent> = feed.subscribe().try_iter().collect();
        assert_eq!(late, [disk_opened]);
        assert_eq!(EpisodeEvent::of(Change::Resumed, &disk, "", 0).subject, "/dev/sdl");
    }
}
