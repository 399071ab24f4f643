//! The one place smartctl is run: by the privileged half for the network half, and by the
//! agent itself where no privileged half is installed. Both therefore kill it at the same
//! deadline, cap its output the same way, and never start a second run on a disk whose
//! last one is stuck in the kernel.

use std::process::Command;
use std::time::Duration;

use crate::os::child::{self, Groups, StuckRuns};
use crate::privileged_client::wire::{MAX_OUTPUT, SmartAnswer};

/// `binary --json -H -A /dev/<name>` in its own process group, killed whole at `timeout`
/// (pipes a forked child keeps open, or a process stuck on a dying disk, are never waited
/// for past it); not started while the last run on `name` is still stuck. `binary` is
/// `disks.smartctl`: "" means SMART is off.
pub(crate) fn run(binary: &str, name: &str, timeout: Duration, stuck: &StuckRuns) -> SmartAnswer {
    run_in(binary, name, timeout, stuck, &Groups::default())
}

/// As [`run`], its process group in `groups` while it runs, for a caller that kills what
/// is still running when it stops ([`Groups::kill_all`]).
pub(crate) fn run_in(binary: &str, name: &str, timeout: Duration, stuck: &StuckRuns, groups: &Groups) -> SmartAnswer {
    if binary.is_empty() {
        return SmartAnswer::Disabled;
    }
    if let Some(for_) = stuck.stuck_for(name) {
        return SmartAnswer::StillStuck(for_.as_secs());
    }
    let mut cmd = Command::new(binary);
    cmd.args(["--json", "-H", "-A", &format!("/dev/{name}")]);
    let outcome = child::run_with(cmd, timeout, MAX_OUTPUT, child::Options::default(), groups);
    if let Ok(out) = &outcome {
        stuck.note(name, out);
    }
    match outcome {
        Err(e) if e.is_not_found() => SmartAnswer::NotInstalled,
        Err(e) => SmartAnswer::Spawn(e.source.to_string()),
        Ok(out) if out.timed_out || out.status.is_none() => SmartAnswer::TimedOut,
        // Only the tail of the output is kept: it would read as broken JSON.
        Ok(out) if out.truncated => SmartAnswer::Oversized,
        Ok(out) => SmartAnswer::Output { exit: out.status.and_then(|s| s.code()), stdout: out.stdout },
    }
}
