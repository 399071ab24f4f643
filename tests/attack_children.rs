//! Attack review: outside programs that cannot be killed. nvidia-smi hangs in D state when
//! a GPU falls off the bus (Xid 79); SIGKILL does not end it until the driver call returns.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::storage::LoopFs;
use rig_agent::probes::gpu::{NvidiaReader, NvidiaSettings};

/// The thread count is the whole test process's: the two tests must not run at once.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn threads() -> usize {
    fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn a_hung_nvidia_smi_is_not_started_again_while_the_last_one_is_still_stuck() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let hang = LoopFs::new(dir.path(), "gpu", 32 << 20, &[]);
    let fake = dir.path().join("nvidia-smi");
    // Blocks uninterruptibly (D state) on the frozen filesystem, as a hung driver call does.
    fs::write(&fake, format!("#!/bin/sh\necho x >> {:?}\n", hang.mnt.join("f").display().to_string())).unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    hang.freeze();
    let reader = NvidiaReader::new(NvidiaSettings {
        binary: fake.display().to_string(),
        timeout: Duration::from_millis(200),
        max_age: Duration::from_millis(1),
    });
    let before = threads();
    // Ten get_gpu_info queries, one per nvidia_smi_interval.
    for _ in 0..10 {
        assert!(reader.read().is_err());
        std::thread::sleep(Duration::from_millis(20));
    }
    let grown = threads().saturating_sub(before);
    hang.thaw();
    assert!(grown <= 3, "{grown} threads left behind by 10 runs of one hung nvidia-smi");
}

#[test]
fn a_hung_smartctl_is_not_started_again_while_the_last_one_is_still_stuck() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let hang = LoopFs::new(dir.path(), "disk", 32 << 20, &[]);
    let fake = dir.path().join("smartctl");
    fs::write(&fake, format!("#!/bin/sh\necho x >> {:?}\n", hang.mnt.join("f").display().to_string())).unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    hang.freeze();
    let reader = rig_agent::probes::smart::SmartReader::new(
        &fake.display().to_string(),
        Duration::from_millis(200),
        Duration::from_millis(1),
    );
    let before = threads();
    for _ in 0..10 {
        assert!(reader.read("/dev/sdz").is_err());
        std::thread::sleep(Duration::from_millis(20));
    }
    let grown = threads().saturating_sub(before);
    hang.thaw();
    assert!(grown <= 3, "{grown} threads left behind by 10 runs of one hung smartctl");
}
