//! `[recovery]`: the automatic recovery ladders, one per warning reason
//! (`[recovery.gpu_lost]`), each a list of the rig's own actions with a wait between steps
//! and a budget. Read here; checked against `[actions]` by [`check_steps`] once both are
//! read, so every refusal names the step's line.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::error::{Found, quoted};
use crate::config::keys;
use crate::config::section::{Section, Spot};
use crate::config::{ConfigError, actions::ActionsConfig};
use crate::episodes::reason::Reason;

/// The longest ladder.
pub const MAX_STEPS: usize = 8;
/// The largest budget: more steps than this in one window is a loop, not a recovery.
pub const MAX_BUDGET: u32 = 100;
/// The budget's window: a minute to 30 days.
pub const MIN_WINDOW: Duration = Duration::from_secs(60);
pub const MAX_WINDOW: Duration = Duration::from_secs(30 * 86_400);
/// `wait_between`: a second to a day; default 3 minutes.
pub const MIN_WAIT: Duration = Duration::from_secs(1);
pub const MAX_WAIT: Duration = Duration::from_secs(86_400);
pub const DEFAULT_WAIT: Duration = Duration::from_secs(180);

/// At most `steps` steps (of any kind, over every ladder of the rig) in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub steps: u32,
    pub per: Duration,
}

/// One reason's ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder {
    /// Names from `[actions]`, taken in order.
    pub steps: Vec<String>,
    /// The next step only after this long, and only if the episode is still open.
    pub wait_between: Duration,
    pub budget: Budget,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// Default false: no step is ever taken.
    pub enabled: bool,
    /// Default false; true reports the steps it would take, running none.
    pub dry_run: bool,
    pub ladders: BTreeMap<Reason, Ladder>,
}

/// Where each ladder's `steps` is, for [`check_steps`].
pub(crate) type StepSpots = BTreeMap<Reason, Spot>;

impl RecoveryConfig {
    /// `[recovery]` as `check` shows it.
    pub(crate) fn render(&self) -> String {
        let d = crate::config::duration::format_duration;
        let mut out = format!("\n[recovery]\nenabled = {}\ndry_run = {}\n", self.enabled, self.dry_run);
        for (reason, l) in &self.ladders {
            let steps: Vec<String> = l.steps.iter().map(|s| format!("{s:?}")).collect();
            out += &format!(
                "[recovery.{reason}]\nsteps = [{}]\nwait_between = \"{}\"\nbudget = \"{} per {}\"\n",
                steps.join(", "),
                d(l.wait_between),
                l.budget.steps,
                d(l.budget.per)
            );
        }
        out
    }
}

/// Parses `"3 per 6h"`.
pub fn parse_budget(text: &str) -> Result<Budget, String> {
    let fix = "write it as \"N per DURATION\", e.g. \"3 per 6h\"";
    let (n, per) = text.split_once(" per ").ok_or_else(|| format!("{} is not a budget; {fix}", quoted(text)))?;
    let steps: u32 = n.trim().parse().map_err(|_| format!("{} is not a whole number of steps; {fix}", quoted(n)))?;
    if steps == 0 || steps > MAX_BUDGET {
        return Err(format!("{steps} steps: a budget allows 1 to {MAX_BUDGET} steps"));
    }
    let per = crate::config::duration::parse_duration(per).map_err(|e| format!("{}; {fix}", e.0))?;
    if per < MIN_WINDOW || per > MAX_WINDOW {
        return Err(format!("a budget's window is 1m to 30d, not {}", crate::config::duration::format_duration(per)));
    }
    Ok(Budget { steps, per })
}

pub(crate) fn read_recovery(s: &Section, f: &mut Found) -> Option<(RecoveryConfig, StepSpots)> {
    let enabled = f.ok(s.bool_or("enabled", false));
    let dry_run = f.ok(s.bool_or("dry_run", false));
    let mut ladders = Some(BTreeMap::new());
    let mut spots = BTreeMap::new();
    for key in s.keys() {
        if keys::RECOVERY.contains(&key.as_str()) {
            continue;
        }
        let reason = key.parse::<Reason>();
        if !s.is_table(&key) || reason.is_err() {
            let known: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
            f.push(s.err_at(
                &key,
                "is not a warning reason",
                &format!("ladders are sections named for a reason: [recovery.<reason>], one of {}", known.join(", ")),
            ));
            ladders = None;
            continue;
        }
        let ladder = f.ok(s.table(&key)).and_then(|t| {
            spots.insert(reason.clone().ok()?, t.spot("steps"));
            read_ladder(&t, f)
        });
        match (ladder, ladders.as_mut(), reason) {
            (Some(l), Some(all), Ok(r)) => {
                all.insert(r, l);
            }
            _ => ladders = None,
        }
    }
    Some((RecoveryConfig { enabled: enabled?, dry_run: dry_run?, ladders: ladders? }, spots))
}

fn read_ladder(s: &Section, f: &mut Found) -> Option<Ladder> {
    s.deny(keys::LADDER, f);
    let example = "steps = [\"restart_miner\", \"reboot\"]";
    let steps = f.ok(s.str_list("steps")).and_then(|steps| match steps {
        None => {
            f.push(s.err_missing("steps", "is required and missing", &format!("add `{example}`")));
            None
        }
        Some(v) if v.is_empty() || v.len() > MAX_STEPS => {
            f.push(s.err_at("steps", &format!("has {} steps", v.len()), &format!("list 1 to {MAX_STEPS} actions")));
            None
        }
        Some(v) => Some(v),
    });
    let wait_between = f.ok(s.duration_or("wait_between", DEFAULT_WAIT, MIN_WAIT, MAX_WAIT));
    let budget = f.ok(s.str("budget")).and_then(|b| match b {
        None => {
            f.push(s.err_missing(
                "budget",
                "is required and missing: every ladder needs a budget, so a rig that reboots into the same \
                 failure does not loop",
                "add budget = \"3 per 6h\"",
            ));
            None
        }
        Some(text) => match parse_budget(&text) {
            Ok(b) => Some(b),
            Err(why) => {
                f.push(s.err_at("budget", &why, "e.g. budget = \"3 per 6h\""));
                None
            }
        },
    });
    Some(Ladder { steps: steps?, wait_between: wait_between?, budget: budget? })
}

/// Every step must be one of the rig's actions, and actions must be enabled where recovery
/// is: a ladder of actions that cannot run would only ever give up.
pub(crate) fn check_steps(r: &RecoveryConfig, spots: &StepSpots, actions: &ActionsConfig) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (reason, ladder) in &r.ladders {
        let Some(at) = spots.get(reason) else { continue };
        for step in &ladder.steps {
            if !actions.actions.contains_key(step) {
                let known: Vec<&str> = actions.actions.keys().map(String::as_str).collect();
                errors.push(at.err(
                    &format!("step \"{step}\" is not one of the rig's actions"),
                    &format!(
                        "add [actions.{step}] with its command, or use one of: {}",
                        if known.is_empty() { "(none defined)".into() } else { known.join(", ") }
                    ),
                ));
            }
        }
        if r.enabled && !actions.enabled && !ladder.steps.is_empty() {
            errors.push(at.err(
                "names actions, but [actions] enabled = false: no step could run",
                "set [actions] enabled = true, or [recovery] enabled = false",
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_a_positive_count_per_a_window_of_a_minute_to_30_days() {
        assert_eq!(parse_budget("3 per 6h"), Ok(Budget { steps: 3, per: Duration::from_secs(6 * 3600) }));
        for bad in ["0 per 6h", "3 per 0s", "3 per 30s", "3 per 31d", "3/6h", "three per 6h", "-1 per 6h", "101 per 1h"]
        {
            assert!(parse_budget(bad).is_err(), "{bad}");
        }
    }
}
