//! The recovery ladder's decisions, from (state, event, now): no IO, no clock of its own.
//! Times are Unix milliseconds.
//!
//! - An episode whose reason has a ladder is tracked from when it opens (or is taken over
//!   at start): its first step is due at once, each next one `wait_between` after the
//!   last, and only while the episode is open (a closed episode is forgotten).
//! - A step is taken only within the ladder's budget: at most N steps of any kind, on any
//!   ladder, in the last DURATION (wall times, so the count survives reboots; a step whose
//!   time reads as in the future, after the clock was set back, still counts).
//! - When a step is due and the steps are used up, or the budget is spent, the episode is
//!   given up: reported once, never acted on again.
//! - While the ladders are paused nothing is due: the ladder waits, takes no step and
//!   counts none, and resumes when the pause ends if the episode is still open. The driver
//!   pauses them in maintenance, and while an agent update is under way or a new version
//!   is on trial.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::config::recovery::RecoveryConfig;
use crate::episodes::event::{Change, EpisodeEvent};
use crate::episodes::reason::Reason;

/// Episodes tracked at once, at most; more are not tracked (logged by the driver).
pub const MAX_EPISODES: usize = 256;

/// Durations of the config (at most 30 days) in milliseconds.
fn ms(d: std::time::Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// One episode's place on its ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub reason: Reason,
    pub subject: String,
    /// The index of the next step.
    pub next: usize,
    /// Unix milliseconds when the next step (or giving up) is due.
    pub due: u64,
    pub gave_up: bool,
}

/// What the driver keeps in the state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Unix milliseconds of every step taken within the longest budget window.
    pub taken: Vec<u64>,
    /// By the warning's `act_id`.
    pub episodes: BTreeMap<String, Track>,
}

/// What is due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Take step `index` (`name`) of the episode `act_id`; `budget_left` is what remains
    /// once it is taken.
    Step { act_id: String, index: usize, name: String, budget_left: u32 },
    /// Stop acting on `act_id`: `why` says whether the steps are used up or the budget spent.
    GiveUp { act_id: String, why: &'static str, budget_left: u32 },
}

impl State {
    /// Takes in an episode's change; true when the state changed.
    pub fn on_event(&mut self, e: &EpisodeEvent, cfg: &RecoveryConfig, now: u64) -> bool {
        match e.change {
            Change::Opened | Change::Resumed => {
                if !cfg.ladders.contains_key(&e.reason)
                    || self.episodes.contains_key(&e.act_id)
                    || self.episodes.len() >= MAX_EPISODES
                {
                    return false;
                }
                let track = Track { reason: e.reason, subject: e.subject.clone(), next: 0, due: now, gave_up: false };
                self.episodes.insert(e.act_id.clone(), track);
                true
            }
            Change::Closed => self.episodes.remove(&e.act_id).is_some(),
        }
    }

    /// Steps counted against a window of `per_ms` ending at `now`.
    fn used(&self, per_ms: u64, now: u64) -> u32 {
        // Saturating: a time read back from a damaged file may be any number.
        self.taken.iter().filter(|t| t.saturating_add(per_ms) > now).count() as u32
    }

    /// The first thing due at `now`, if any. Nothing is due while `paused` (maintenance,
    /// an agent update under way or on trial).
    pub fn due(&self, cfg: &RecoveryConfig, now: u64, paused: bool) -> Option<Due> {
        if !cfg.enabled || paused {
            return None;
        }
        self.episodes.iter().filter(|(_, t)| !t.gave_up && t.due <= now).find_map(|(act_id, t)| {
            let ladder = cfg.ladders.get(&t.reason)?;
            let used = self.used(ms(ladder.budget.per), now);
            let left = ladder.budget.steps.saturating_sub(used);
            let act_id = act_id.clone();
            Some(match ladder.steps.get(t.next) {
                None => Due::GiveUp { act_id, why: "steps used up", budget_left: left },
                Some(_) if left == 0 => Due::GiveUp { act_id, why: "budget spent", budget_left: 0 },
                Some(name) => Due::Step { act_id, index: t.next, name: name.clone(), budget_left: left - 1 },
            })
        })
    }

    /// Records step `index` of `act_id` as taken at `now`: counted, and the next one due
    /// after `wait_between`. Steps older than the longest window are dropped.
    pub fn took(&mut self, cfg: &RecoveryConfig, act_id: &str, now: u64) {
        let longest = cfg.ladders.values().map(|l| ms(l.budget.per)).max().unwrap_or(0);
        self.taken.retain(|t| t.saturating_add(longest) > now);
        self.taken.push(now);
        if let Some(t) = self.episodes.get_mut(act_id) {
            let wait = cfg.ladders.get(&t.reason).map_or(0, |l| ms(l.wait_between).max(1));
            t.next += 1;
            t.due = now + wait;
        }
    }

    /// Records that `act_id` was given up.
    pub fn gave_up(&mut self, act_id: &str) {
        if let Some(t) = self.episodes.get_mut(act_id) {
            t.gave_up = true;
        }
    }

    /// When something is next due (Unix milliseconds), for the driver's sleep.
    pub fn next_due(&self) -> Option<u64> {
        self.episodes.values().filter(|t| !t.gave_up).map(|t| t.due).min()
    }

    pub fn to_json(&self) -> Value {
        let episodes: serde_json::Map<String, Value> = self
            .episodes
            .iter()
            .map(|(id, t)| {
                let v = json!({"reason": t.reason.as_str(), "subject": t.subject, "next": t.next, "due": t.due,
                    "gave_up": t.gave_up});
                (id.clone(), v)
            })
            .collect();
        json!({"taken": self.taken, "episodes": episodes})
    }

    /// The state a file holds, or why it is not one.
    pub fn from_json(v: &Value) -> Result<State, String> {
        let taken = v["taken"].as_array().ok_or("`taken` is not a list")?;
        let taken = taken.iter().map(|t| t.as_u64().ok_or("a step time is not a number")).collect::<Result<_, _>>()?;
        let mut episodes = BTreeMap::new();
        for (id, t) in v["episodes"].as_object().ok_or("`episodes` is not an object")? {
            let track = Track {
                reason: t["reason"].as_str().and_then(|r| r.parse().ok()).ok_or("an unknown reason")?,
                subject: t["subject"].as_str().ok_or("a subject is not a string")?.to_string(),
                next: t["next"].as_u64().ok_or("`next` is not a number")? as usize,
                due: t["due"].as_u64().ok_or("`due` is not a number")?,
                gave_up: t["gave_up"].as_bool().ok_or("`gave_up` is not true or false")?,
            };
            episodes.insert(id.clone(), track);
        }
        Ok(State { taken, episodes })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::recovery::{Budget, Ladder};
    use crate::episodes::subject::SubjectKind;

    /// A ladder for `gpu_lost`; `wait` and `per` in milliseconds, as the state's times.
    fn cfg(steps: &[&str], wait: u64, budget: u32, per: u64) -> RecoveryConfig {
        let ladder = Ladder {
            steps: steps.iter().map(|s| s.to_string()).collect(),
            wait_between: Duration::from_millis(wait),
            budget: Budget { steps: budget, per: Duration::from_millis(per) },
        };
        RecoveryConfig { enabled: true, dry_run: false, ladders: [(Reason::GpuLost, ladder)].into() }
    }

    fn event(change: Change, act_id: &str) -> EpisodeEvent {
        EpisodeEvent {
            change,
            act_id: act_id.into(),
            kind: SubjectKind::Gpu,
            subject: "0000:01:00.0".into(),
            reason: Reason::GpuLost,
            detail: String::new(),
            time: 0,
        }
    }

    fn step(act_id: &str, index: usize, name: &str, budget_left: u32) -> Option<Due> {
        Some(Due::Step { act_id: act_id.into(), index, name: name.into(), budget_left })
    }

    #[test]
    fn the_first_step_is_due_when_the_episode_opens_and_the_next_after_the_wait() {
        let c = cfg(&["restart_miner", "reboot"], 180, 3, 6 * 3600);
        let mut s = State::default();
        assert!(s.on_event(&event(Change::Opened, "w-1"), &c, 1000));
        assert_eq!(s.due(&c, 1000, false), step("w-1", 0, "restart_miner", 2));
        s.took(&c, "w-1", 1000);
        assert_eq!(s.due(&c, 1179, false), None);
        assert_eq!(s.next_due(), Some(1180));
        assert_eq!(s.due(&c, 1180, false), step("w-1", 1, "reboot", 1));
        s.took(&c, "w-1", 1180);
        // Used up, still open after the wait: given up once.
        assert_eq!(s.due(&c, 1359, false), None);
        assert_eq!(
            s.due(&c, 1360, false),
            Some(Due::GiveUp { act_id: "w-1".into(), why: "steps used up", budget_left: 1 })
        );
        s.gave_up("w-1");
        assert_eq!(s.due(&c, 99_999, false), None);
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn a_closed_episode_takes_no_further_step() {
        let c = cfg(&["restart_miner", "reboot"], 180, 3, 3600);
        let mut s = State::default();
        s.on_event(&event(Change::Opened, "w-1"), &c, 0);
        s.took(&c, "w-1", 0);
        assert!(s.on_event(&event(Change::Closed, "w-1"), &c, 10));
        assert_eq!(s.due(&c, 1000, false), None);
    }

    #[test]
    fn the_budget_counts_steps_of_every_episode_in_its_window_and_gives_up_when_spent() {
        let c = cfg(&["restart_miner", "reboot", "reboot"], 60, 2, 3600);
        let mut s = State::default();
        s.on_event(&event(Change::Opened, "a"), &c, 0);
        s.took(&c, "a", 0);
        s.on_event(&event(Change::Opened, "b"), &c, 10);
        assert_eq!(s.due(&c, 10, false), step("b", 0, "restart_miner", 0));
        s.took(&c, "b", 10);
        assert_eq!(s.due(&c, 60, false), Some(Due::GiveUp { act_id: "a".into(), why: "budget spent", budget_left: 0 }));
        // Once the window has passed the first step, the budget has room again.
        let mut fresh = s.clone();
        fresh.episodes.remove("a");
        assert_eq!(fresh.due(&c, 3600, false), step("b", 1, "reboot", 0));
        // A clock set back: steps in the "future" still count.
        assert_eq!(fresh.used(3600, 0), 2);
    }

    #[test]
    fn a_step_time_read_back_as_any_number_counts_against_the_budget_without_overflowing() {
        let c = cfg(&["restart_miner", "reboot"], 60, 2, 3600);
        let mut s = State::from_json(&json!({"taken": [u64::MAX], "episodes": {}})).unwrap();
        s.on_event(&event(Change::Opened, "w"), &c, 1000);
        assert_eq!(s.due(&c, 1000, false), step("w", 0, "restart_miner", 0));
        s.took(&c, "w", 1000);
        assert_eq!(s.taken, [u64::MAX, 1000]);
        assert_eq!(
            s.due(&c, 1060, false),
            Some(Due::GiveUp { act_id: "w".into(), why: "budget spent", budget_left: 0 })
        );
    }

    #[test]
    fn nothing_is_due_in_maintenance_or_when_recovery_is_off_and_it_resumes_after() {
        let mut c = cfg(&["restart_miner"], 60, 3, 3600);
        let mut s = State::default();
        s.on_event(&event(Change::Opened, "w"), &c, 0);
        assert_eq!(s.due(&c, 5, true), None);
        assert_eq!(s.due(&c, 500, false), step("w", 0, "restart_miner", 2));
        c.enabled = false;
        assert_eq!(s.due(&c, 500, false), None);
    }

    #[test]
    fn a_resumed_episode_keeps_its_place_and_the_state_reads_back() {
        let c = cfg(&["restart_miner", "reboot"], 180, 3, 3600);
        let mut s = State::default();
        s.on_event(&event(Change::Opened, "w"), &c, 0);
        s.took(&c, "w", 0);
        let mut back = State::from_json(&s.to_json()).unwrap();
        assert_eq!(back, s);
        assert!(!back.on_event(&event(Change::Resumed, "w"), &c, 50));
        assert_eq!(back.due(&c, 180, false), step("w", 1, "reboot", 1));
        assert!(State::from_json(&json!({"taken": ["x"], "episodes": {}})).is_err());
    }
}
