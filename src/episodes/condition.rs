//! A failure condition standing now, and how the conditions of a scan open and close
//! episodes: one episode per subject and reason, whatever the subject is.

use crate::episodes::episode::Episode;
use crate::episodes::reason::Reason;

/// A failure condition that holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// A disk's kernel name or a GPU's bus id, as [`Episode::subject`].
    pub subject: String,
    pub reason: Reason,
    /// What was seen, for the warning's `detail` and the log.
    pub detail: String,
}

/// Matches the conditions against the open episodes: one episode per subject and reason.
/// Returns the conditions that open a new episode (each needs a warning) and the episodes
/// that ended because their condition cleared. Episodes of conditions that still hold are
/// left as they are, so a failure is reported once, not once per scan.
pub fn reconcile(episodes: &mut Vec<Episode>, conditions: &[Condition]) -> (Vec<Condition>, Vec<Episode>) {
    let holds = |e: &Episode| conditions.iter().any(|c| c.subject == e.subject && c.reason == e.reason);
    let (kept, closed): (Vec<Episode>, Vec<Episode>) = episodes.drain(..).partition(|e| holds(e));
    *episodes = kept;
    let new = conditions
        .iter()
        .filter(|c| !episodes.iter().any(|e| e.subject == c.subject && e.reason == c.reason))
        .cloned()
        .collect();
    (new, closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_episode_per_subject_and_reason_until_the_condition_clears() {
        let c = |d: &str, r: Reason| Condition { subject: d.into(), reason: r, detail: String::new() };
        let mut eps = Vec::new();
        let (new, closed) = reconcile(&mut eps, &[c("sda", Reason::Missing), c("sdb", Reason::Offline)]);
        assert_eq!(new.len(), 2);
        assert!(closed.is_empty());
        for n in new {
            eps.push(Episode {
                subject: n.subject,
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

    #[test]
    fn a_gpu_and_a_disk_episode_never_stand_for_each_other() {
        let mut eps = Vec::new();
        let gpu = Condition { subject: "0000:01:00.0".into(), reason: Reason::GpuLost, detail: String::new() };
        let disk = Condition { subject: "sda".into(), reason: Reason::IoErrors, detail: String::new() };
        let (new, _) = reconcile(&mut eps, &[gpu.clone(), disk.clone()]);
        assert_eq!(new, [gpu, disk]);
    }
}
