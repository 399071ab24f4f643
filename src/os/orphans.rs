//! The descendants of the programs the agent runs that outlive them.
//!
//! Each run has its own process group, killed at its end; but a descendant that left the
//! group (`setsid`, a daemonising double fork) is out of that kill's reach, and once its
//! parent exits the kernel hands it to init, where nothing ends it: not the run's timeout,
//! not the agent's stop. So the agent makes itself a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`, [`adopt`]): such orphans are handed to the agent instead, which
//! can then find them (its children that are not a run it started) and end them, and reap
//! them, so none lingers as a zombie either.
//!
//! Which run an orphan came from cannot be read from it. The rule: an orphan is killed once
//! no run that could have started it is going, that is when it started before every run
//! still going (a run's descendants all start after the run). It therefore ends with the run
//! it came from, or, when runs overlap, with the last of them; and every orphan ends when the
//! agent stops ([`end_all`]). Runs register themselves while they spawn ([`Spawning`]), so
//! that a sweep never takes a run's own child for an orphan.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions, kill_process, waitpid};

/// Set once [`adopt`] succeeded: only then are the agent's other children orphans.
static ADOPTING: AtomicBool = AtomicBool::new(false);

/// The runs going now: their child's pid and its start time (clock ticks since boot).
static RUNS: Mutex<Vec<(i32, u64)>> = Mutex::new(Vec::new());

/// How long a sweep waits for the orphans it killed to end (and for their own children,
/// handed over as they die, to show up), so that what a run left is gone when it returns.
const SETTLE: Duration = Duration::from_millis(300);

fn runs() -> MutexGuard<'static, Vec<(i32, u64)>> {
    RUNS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes this process the subreaper of everything it starts. For the agent's own process
/// only (`rig-agent` run as a service): a process that shares itself with other code that
/// starts children (a test harness) must not, since its other children would count as
/// orphans. An error means orphans go to init as before; the caller says so.
pub fn adopt() -> io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    ADOPTING.store(true, Ordering::SeqCst);
    Ok(())
}

fn adopting() -> bool {
    ADOPTING.load(Ordering::SeqCst)
}

/// Held across a run's spawn: no sweep runs meanwhile, so the new child cannot be taken for
/// an orphan before it is registered ([`Spawning::started`]). Holds nothing in a process
/// that does not adopt orphans.
pub(crate) struct Spawning(Option<MutexGuard<'static, Vec<(i32, u64)>>>);

impl Spawning {
    pub(crate) fn begin() -> Spawning {
        Spawning(adopting().then(runs))
    }

    /// Registers the run whose child is `pid`, until [`run_ended`].
    pub(crate) fn started(self, pid: Pid) {
        if let Some(mut runs) = self.0 {
            let pid = pid.as_raw_nonzero().get();
            // Its start bounds which orphans may be its own; unreadable (it cannot be, the
            // child is not reaped yet), 0 keeps every orphan alive while it runs.
            let start = read_stat(pid).map_or(0, |s| s.start);
            runs.push((pid, start));
        }
    }
}

/// The run whose child was `pid` is over (its child reaped): the orphans no run going
/// could have started are killed and reaped.
pub(crate) fn run_ended(pid: Pid) {
    if !adopting() {
        return;
    }
    let pid = pid.as_raw_nonzero().get();
    runs().retain(|(p, _)| *p != pid);
    settle(Instant::now() + SETTLE, false);
}

/// Kills every orphan, and waits up to `limit` for the runs still going (killed by the
/// caller) to end and hand over theirs: when the agent stops. Returns how many it killed.
pub fn end_all(limit: Duration) -> usize {
    if !adopting() {
        return 0;
    }
    settle(Instant::now() + limit, true)
}

/// Sweeps until nothing is left to kill (and, `all`, no run is going), or `until`.
fn settle(until: Instant, all: bool) -> usize {
    let mut killed = 0;
    loop {
        let (n, alive, going) = sweep(all);
        killed += n;
        if (alive == 0 && !(all && going)) || Instant::now() >= until {
            return killed;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One pass: kills the orphans that may be killed (every one, `all`), reaps those that
/// ended. Returns how many it killed, how many orphans are still alive, and whether a run
/// is going.
fn sweep(all: bool) -> (usize, usize, bool) {
    // Held throughout: no run spawns (and so reuses an orphan's pid) and no other sweep
    // reaps between the listing and the kill.
    let runs = runs();
    let going: Vec<u64> = if all { Vec::new() } else { runs.iter().map(|(_, start)| *start).collect() };
    let (mut killed, mut alive) = (0, 0);
    for pid in children() {
        if runs.iter().any(|(p, _)| *p == pid) {
            continue;
        }
        let Some(stat) = read_stat(pid) else { continue };
        let Some(p) = Pid::from_raw(pid) else { continue };
        if stat.state == 'Z' {
            let _ = waitpid(Some(p), WaitOptions::NOHANG);
            continue;
        }
        alive += 1;
        if may_kill(stat.start, &going) && kill_process(p, Signal::KILL).is_ok() {
            killed += 1;
        }
    }
    (killed, alive, !runs.is_empty())
}

/// Whether an orphan started at `start` may be killed while runs started at `going` are
/// going: only if it is older than all of them, so none of them can have started it.
pub(crate) fn may_kill(start: u64, going: &[u64]) -> bool {
    going.iter().all(|g| start < *g)
}

/// What a sweep needs of `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub state: char,
    pub ppid: i32,
    /// Clock ticks since boot.
    pub start: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name, in parentheses, may hold spaces
/// and parentheses of its own: the fields are counted after its last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat { state: f.first()?.chars().next()?, ppid: f.get(1)?.parse().ok()?, start: f.get(19)?.parse().ok()? })
}

fn read_stat(pid: i32) -> Option<Stat> {
    // A stat line is under 1 KiB; procfs files are not regular files, so read it plainly.
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The agent's children: the kernel's list per thread (`/proc/self/task/*/children`), or,
/// on a kernel built without it, every process whose parent is the agent.
fn children() -> Vec<i32> {
    let mut out = Vec::new();
    let mut listed = false;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            listed = true;
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    if !listed {
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let pids = std::fs::read_dir("/proc").into_iter().flatten().flatten();
        let mut parents: HashMap<i32, i32> = HashMap::new();
        for e in pids {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok())
                && let Some(s) = read_stat(pid)
            {
                parents.insert(pid, s.ppid);
            }
        }
        out.extend(parents.into_iter().filter(|(_, ppid)| *ppid == me).map(|(pid, _)| pid));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orphan_is_killed_only_when_it_is_older_than_every_run_going() {
        assert!(may_kill(100, &[]), "no run going: every orphan");
        assert!(may_kill(100, &[150, 200]));
        assert!(!may_kill(150, &[150]), "the same tick: it may be that run's");
        assert!(!may_kill(180, &[150, 200]), "it may be the run of 150's");
    }

    #[test]
    fn stat_lines_are_read_after_the_last_parenthesis_of_the_name() {
        let line = "4242 (a (weird) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(Stat { state: 'S', ppid: 17, start: 987_654 }));
        assert_eq!(parse_stat("4242 (sh) Z 1"), None, "cut short");
        let me = std::fs::read_to_string("/proc/self/stat").unwrap();
        let s = parse_stat(&me).unwrap();
        assert_eq!(s.ppid, rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get()));
    }
}
