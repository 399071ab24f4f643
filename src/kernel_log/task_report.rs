//! What a process can put into a kernel record: the kernel's reports about a task begin
//! with the task's name, which the process chooses (15 bytes, `prctl(PR_SET_NAME)`), and
//! some end with text it chooses too (the file a segfault happened in). Every recogniser
//! of driver records refuses these shapes, and needs the driver's own severity where the
//! driver logs without a dictionary.

use super::scan::Scan;

/// A task name is at most this many bytes (`TASK_COMM_LEN` less its NUL).
const TASK_NAME: usize = 15;

/// The mildest level the printk-format rules' drivers log their failures at: KERN_WARNING.
/// They use KERN_ERR (block layer, buffer heads, NVMe command errors, libata, amdgpu's
/// DRM_ERROR), KERN_CRIT (ext4), KERN_ALERT (XFS) or the default level, which is warning
/// (NVIDIA's `nv_printf`, which prints with KERN_CONT and no level); the reports about a
/// task that begin with its name (a segfault, a trap, a fault on ARM) are KERN_INFO, so a
/// name shaped like a driver's line gets nowhere there either. (SCSI sense lines and
/// amdgpu's `dev_info` lines are KERN_INFO, but carry the dictionary.)
pub(super) const MILDEST_PRINTK_LEVEL: u8 = 4;

/// Whether the record has the shape of a report about a task, whose name (and sometimes
/// more) a process chooses: `<name>[<pid>]` or `<name> (<pid>)` right after at most a task
/// name's bytes (segfaults, traps, general protection faults, drop_caches, stack depth),
/// or `<name> invoked oom-killer`. Such a record is never a driver's, whatever it contains.
pub(super) fn names_a_task(m: &str) -> bool {
    if m.contains(" invoked oom-killer:") {
        return true;
    }
    // mm/page_alloc.c `warn_alloc`: `<name>: page allocation failure: …` or `<name>:
    // vmalloc error: …`, to which kernel/cgroup/cpuset.c appends the task's cpuset
    // cgroup's name, which the process chooses as well.
    if [": page allocation failure: ", ": vmalloc error: "].iter().any(|w| m.find(w).is_some_and(|i| i <= TASK_NAME)) {
        return true;
    }
    // Every opening bracket a task name's bytes (and a space) can reach: the name itself
    // may hold brackets too.
    m.bytes().take(TASK_NAME + 2).enumerate().any(|(i, b)| {
        let close = match b {
            b'[' => "]",
            b'(' => ")",
            _ => return false,
        };
        let mut s = Scan(&m[i + 1..]);
        s.number().is_some() && s.lit(close).is_some() && (s.rest().is_empty() || s.rest().starts_with([':', ' ']))
    })
}

/// Shared by the recognisers' forgery tests.
#[cfg(test)]
/// What the kernel prints right after a task's name, the process choosing the name (at
/// most 15 bytes) and, where one is printed, the name of the file it faulted in
/// (`{file}`): arch/x86/mm/fault.c `show_signal_msg`, arch/x86/kernel/traps.c (with and
/// without the `traps: ` prefix of newer kernels), arch/arm64/kernel/traps.c,
/// arch/arm/mm/fault.c, mm/oom_kill.c `dump_header`, fs/drop_caches.c.
pub(super) const AFTER_A_TASK_NAME: [&str; 10] = [
    "[28266]: segfault at 0 ip 000055bc57f79180 sp 00007ffe74b3c5e0 error 6 in {file}[1180,55bc57f79000+1000] likely on CPU 0 (core 0, socket 0)",
    "[28266] trap invalid opcode ip:55f0a7c3e139 sp:7ffd44c0b6c0 error:0 in {file}[55f0a7c3e000+1000]",
    "[28266] general protection fault ip:7f3e2b1c0f6a sp:7ffc9a1e8c30 error:0 in {file}[7f3e2b0a3000+16d000]",
    "[28266]: unhandled exception: DABT (lower EL), ESR 0x0000000092000046, level 2 translation fault in {file}[400000+1000]",
    ": unhandled page fault (11) at 0x00000000, code 0x005",
    " invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
    " (28266): drop_caches: 3",
    "[28266] bad frame in rt_sigreturn frame:00007ffd ip:55f0 sp:7ffd orax:ffffffffffffffff in {file}[55f0+1000]",
    // mm/page_alloc.c `warn_alloc`, with kernel/cgroup/cpuset.c's cgroup name (`{file}`).
    ": page allocation failure: order:4, mode:0x40dc0(GFP_KERNEL|__GFP_COMP|__GFP_ZERO), nodemask=(null),cpuset={file},mems_allowed=0",
    ": vmalloc error: size 8388608, failed to allocate pages, mode:0xdc0(GFP_KERNEL|__GFP_ZERO), nodemask=(null),cpuset={file},mems_allowed=0",
];

/// Every record a process can have the kernel write with a name from `names` (each at most
/// a task name's bytes) and a file from `files`, after each of [`AFTER_A_TASK_NAME`], at
/// the levels such reports and driver failures use, with each of `flags`.
#[cfg(test)]
pub(super) fn forged_records(names: &[&str], files: &[&str], flags: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        assert!(name.len() <= TASK_NAME, "{name:?} is longer than a task name");
        for after in AFTER_A_TASK_NAME {
            for file in files {
                let message = format!("{name}{}", after.replace("{file}", file));
                for prio in ["6", "3", "4"] {
                    for f in flags {
                        out.push(format!("{prio},7,8,{f};{message}\n"));
                    }
                }
            }
        }
    }
    out
}
