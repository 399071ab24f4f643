//! When each unacknowledged warning goes (again) to the gateway: at once after every login
//! in creation order, then every `warning.resend_after` until acknowledged. Pure: driven by
//! the `now` it is given.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::spool::Entry;

#[derive(Debug)]
pub struct Resend {
    after: Duration,
    /// When each warning was last sent on the current connection.
    sent: HashMap<String, Instant>,
}

impl Resend {
    pub fn new(after: Duration) -> Resend {
        Resend { after, sent: HashMap::new() }
    }

    pub fn set_after(&mut self, after: Duration) {
        self.after = after;
    }

    /// A new connection: everything is due again.
    pub fn reset(&mut self) {
        self.sent.clear();
    }

    /// The warnings to send now, in creation order, marked as sent at `now`.
    pub fn due<'a>(&mut self, now: Instant, unacked: &'a [Entry]) -> Vec<&'a Entry> {
        let due: Vec<&Entry> =
            unacked.iter().filter(|e| self.sent.get(&e.act_id).is_none_or(|t| now >= *t + self.after)).collect();
        for e in &due {
            self.sent.insert(e.act_id.clone(), now);
        }
        self.sent.retain(|id, _| unacked.iter().any(|e| &e.act_id == id));
        due
    }

    /// When the next resend falls due, if any warning is waiting.
    pub fn next_due(&self, unacked: &[Entry]) -> Option<Instant> {
        unacked.iter().filter_map(|e| self.sent.get(&e.act_id).map(|t| *t + self.after)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> Entry {
        Entry { seq, act_id: format!("a-{seq}"), text: format!("w{seq}"), on_disk: true }
    }

    #[test]
    fn all_warnings_go_at_once_in_order_then_again_after_resend_after() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Resend::new(ms(60_000));
        let list = vec![entry(1), entry(2)];
        let ids = |v: Vec<&Entry>| v.iter().map(|e| e.act_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(r.due(t0, &list)), ["a-1", "a-2"]);
        assert!(r.due(t0 + ms(59_999), &list).is_empty());
        assert_eq!(r.next_due(&list), Some(t0 + ms(60_000)));
        assert_eq!(ids(r.due(t0 + ms(60_000), &list)), ["a-1", "a-2"]);
    }

    #[test]
    fn a_new_warning_goes_at_once_and_a_reconnect_resends_everything() {
        let t0 = Instant::now();
        let mut r = Resend::new(Duration::from_secs(60));
        let mut list = vec![entry(1)];
        r.due(t0, &list);
        list.push(entry(2));
        assert_eq!(r.due(t0, &list).len(), 1, "only the new one");
        r.reset();
        assert_eq!(r.due(t0, &list).len(), 2, "after a new login, all of them");
    }

    #[test]
    fn acknowledged_warnings_are_forgotten() {
        let t0 = Instant::now();
        let mut r = Resend::new(Duration::from_secs(60));
        r.due(t0, &[entry(1), entry(2)]);
        r.due(t0, &[entry(2)]);
        assert_eq!(r.sent.len(), 1);
        assert_eq!(r.next_due(&[]), None);
    }
}
