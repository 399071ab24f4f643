//! When each unacknowledged outbox message goes (again) to the gateway. After every login
//! the backlog goes out in creation order in a bounded window: at most [`WINDOW`] messages
//! unacknowledged on the connection, the next one as each ack arrives, so that thousands of
//! waiting warnings never fill the output buffer (and make the agent call the gateway "not
//! reading"). A message of the window not acknowledged within `warning.resend_after` is sent
//! again. Pure and driven by the `now` it is given; every operation is O(log n) in the
//! window, independent of the backlog.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Messages sent and not yet acknowledged on one connection, at most.
pub const WINDOW: usize = 64;

#[derive(Debug)]
pub struct Resend {
    after: Duration,
    window: usize,
    /// Creation numbers below this were sent on this connection (or are gone).
    cursor: u64,
    /// When each message of the window was last sent.
    sent: HashMap<u64, Instant>,
    /// The same, ordered by time: the front is the next resend.
    by_time: BTreeSet<(Instant, u64)>,
    /// Messages the gateway refused, out of the window (so that refusals cannot hold up the
    /// backlog), with when they were refused; each comes back `after` later when there is room.
    parked: BTreeSet<(Instant, u64)>,
    parked_at: HashMap<u64, Instant>,
}

impl Resend {
    pub fn new(after: Duration) -> Resend {
        Resend::with_window(after, WINDOW)
    }

    pub fn with_window(after: Duration, window: usize) -> Resend {
        Resend {
            after,
            window: window.max(1),
            cursor: 0,
            sent: HashMap::new(),
            by_time: BTreeSet::new(),
            parked: BTreeSet::new(),
            parked_at: HashMap::new(),
        }
    }

    pub fn set_after(&mut self, after: Duration) {
        self.after = after;
    }

    /// A new connection: everything is due again, from the oldest.
    pub fn reset(&mut self) {
        self.cursor = 0;
        self.sent.clear();
        self.by_time.clear();
        self.parked.clear();
        self.parked_at.clear();
    }

    /// `seq` was acknowledged (or is gone from the outbox): it leaves the window, making
    /// room for the next.
    pub fn acked(&mut self, seq: u64) {
        if let Some(t) = self.sent.remove(&seq) {
            self.by_time.remove(&(t, seq));
        }
        if let Some(t) = self.parked_at.remove(&seq) {
            self.parked.remove(&(t, seq));
        }
    }

    /// The gateway refused `seq` at `now`: it stays in the outbox and is sent again
    /// `after` later, but leaves the window meanwhile, making room for the next.
    pub fn refused(&mut self, seq: u64, now: Instant) {
        if let Some(t) = self.sent.remove(&seq) {
            self.by_time.remove(&(t, seq));
            self.parked.insert((now, seq));
            self.parked_at.insert(seq, now);
        }
    }

    /// How many messages are sent and unacknowledged on this connection.
    pub fn in_flight(&self) -> usize {
        self.sent.len()
    }

    /// The messages to send now, marked as sent at `now`: first the window's messages whose
    /// resend is due (oldest first), then new ones while the window has room.
    /// `unsent(from, max)` lists up to `max` creation numbers from `from` on that are ready
    /// to send, in order (the outbox's `sendable_from`).
    pub fn due(&mut self, now: Instant, unsent: impl FnOnce(u64, usize) -> Vec<u64>) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(&(t, seq)) = self.by_time.first() {
            if now < t + self.after {
                break;
            }
            self.by_time.pop_first();
            out.push(seq);
        }
        for &seq in &out {
            self.by_time.insert((now, seq));
            self.sent.insert(seq, now);
        }
        while self.sent.len() < self.window
            && let Some(&(t, seq)) = self.parked.first()
            && now >= t + self.after
        {
            self.parked.pop_first();
            self.parked_at.remove(&seq);
            self.sent.insert(seq, now);
            self.by_time.insert((now, seq));
            out.push(seq);
        }
        let room = self.window.saturating_sub(self.sent.len());
        if room > 0 {
            for seq in unsent(self.cursor, room) {
                self.cursor = self.cursor.max(seq + 1);
                if self.sent.insert(seq, now).is_none() {
                    self.by_time.insert((now, seq));
                    out.push(seq);
                }
            }
        }
        out
    }

    /// When the next resend falls due, if any message is waiting for its ack.
    pub fn next_due(&self) -> Option<Instant> {
        // A parked message waits for room too; an ack wakes the loop when room is made.
        let parked = self.parked.first().filter(|_| self.sent.len() < self.window);
        [self.by_time.first(), parked].into_iter().flatten().map(|(t, _)| *t + self.after).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake outbox: the creation numbers waiting, all ready to send.
    fn from(waiting: &[u64]) -> impl FnOnce(u64, usize) -> Vec<u64> + '_ {
        move |start, max| waiting.iter().copied().filter(|s| *s >= start).take(max).collect()
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn all_warnings_go_at_once_in_order_then_again_after_resend_after() {
        let t0 = Instant::now();
        let mut r = Resend::new(MS(60_000));
        let list = [1, 2];
        assert_eq!(r.due(t0, from(&list)), [1, 2]);
        assert!(r.due(t0 + MS(59_999), from(&list)).is_empty());
        assert_eq!(r.next_due(), Some(t0 + MS(60_000)));
        assert_eq!(r.due(t0 + MS(60_000), from(&list)), [1, 2]);
    }

    #[test]
    fn a_new_warning_goes_at_once_and_a_reconnect_resends_everything() {
        let t0 = Instant::now();
        let mut r = Resend::new(Duration::from_secs(60));
        r.due(t0, from(&[1]));
        assert_eq!(r.due(t0, from(&[1, 2])), [2], "only the new one");
        r.reset();
        assert_eq!(r.due(t0, from(&[1, 2])), [1, 2], "after a new login, all of them");
    }

    #[test]
    fn acknowledged_warnings_are_forgotten() {
        let t0 = Instant::now();
        let mut r = Resend::new(Duration::from_secs(60));
        r.due(t0, from(&[1, 2]));
        r.acked(1);
        assert_eq!(r.in_flight(), 1);
        r.acked(2);
        assert_eq!(r.next_due(), None);
        assert!(r.due(t0 + MS(120_000), from(&[])).is_empty());
    }

    #[test]
    fn a_backlog_goes_out_in_windows_the_next_as_acks_arrive() {
        let t0 = Instant::now();
        let mut r = Resend::with_window(MS(1000), 3);
        let backlog: Vec<u64> = (1..=8).collect();
        assert_eq!(r.due(t0, from(&backlog)), [1, 2, 3], "one window");
        assert!(r.due(t0 + MS(10), from(&backlog)).is_empty(), "nothing more until an ack");
        r.acked(2);
        assert_eq!(r.due(t0 + MS(20), from(&backlog)), [4], "one ack, one more");
        r.acked(1);
        r.acked(3);
        assert_eq!(r.due(t0 + MS(30), from(&backlog)), [5, 6]);
        // Nobody acks: the window is resent on its timer, and nothing new goes out.
        assert_eq!(r.next_due(), Some(t0 + MS(1020)));
        assert_eq!(r.due(t0 + MS(1020), from(&backlog)), [4]);
        assert_eq!(r.due(t0 + MS(1030), from(&backlog)), [5, 6]);
        assert_eq!(r.in_flight(), 3);
        r.acked(4);
        r.acked(5);
        r.acked(6);
        assert_eq!(r.due(t0 + MS(1040), from(&backlog)), [7, 8]);
        assert!(r.due(t0 + MS(1050), from(&backlog)).is_empty());
    }

    #[test]
    fn refused_messages_leave_the_window_and_come_back_after_resend_after() {
        let t0 = Instant::now();
        let mut r = Resend::with_window(MS(1000), 2);
        let backlog = [1, 2, 3, 4, 5];
        assert_eq!(r.due(t0, from(&backlog)), [1, 2]);
        r.refused(1, t0 + MS(10));
        r.refused(2, t0 + MS(10));
        assert_eq!(r.due(t0 + MS(20), from(&backlog)), [3, 4], "refusals do not hold up the backlog");
        assert_eq!(r.next_due(), Some(t0 + MS(1020)));
        r.acked(3);
        assert_eq!(r.next_due(), Some(t0 + MS(1010)), "a parked one is due once there is room");
        assert_eq!(r.due(t0 + MS(1010), from(&backlog)), [1], "back in the window, before new ones");
        r.acked(1);
        r.acked(4);
        assert_eq!(r.due(t0 + MS(1011), from(&backlog)), [2, 5]);
    }

    #[test]
    fn resends_come_before_new_messages_in_a_round() {
        let t0 = Instant::now();
        let mut r = Resend::with_window(MS(100), 2);
        r.due(t0, from(&[1, 2]));
        r.acked(1);
        assert_eq!(r.due(t0 + MS(100), from(&[2, 3])), [2, 3]);
    }

    #[test]
    fn a_message_not_yet_ready_holds_back_the_ones_after_it() {
        // The outbox stops its list at a message still being written; the window resumes
        // from there once it is ready, so creation order is kept.
        let t0 = Instant::now();
        let mut r = Resend::new(MS(1000));
        assert_eq!(r.due(t0, from(&[1])), [1]);
        assert_eq!(r.due(t0, from(&[1, 2, 3])), [2, 3]);
    }

    #[test]
    fn twenty_thousand_waiting_messages_cost_one_window_per_round() {
        // Bookkeeping is bounded by the window, not the backlog: the fake outbox is asked
        // for at most a window's worth, and the resend scan only looks at what is due.
        let t0 = Instant::now();
        let mut r = Resend::new(MS(1000));
        let backlog: Vec<u64> = (1..=20_000).collect();
        let mut asked = 0;
        let sent = r.due(t0, |s, max| {
            asked = max;
            from(&backlog)(s, max)
        });
        assert_eq!((sent.len(), asked), (WINDOW, WINDOW));
        let mut total = sent.len();
        let mut now = t0;
        while total < backlog.len() {
            for s in r.sent.keys().copied().collect::<Vec<_>>() {
                r.acked(s);
            }
            now += MS(1);
            total += r.due(now, from(&backlog)).len();
        }
        assert_eq!(total, 20_000);
        assert_eq!(r.in_flight(), 20_000 % WINDOW, "the last, partial window");
    }
}
