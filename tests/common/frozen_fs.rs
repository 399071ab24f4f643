//! An ext4 filesystem on a loop device that a test can freeze (`fsfreeze`): writes to it
//! block in D state, as on a stalled SD card or behind a hung driver. Root only.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// An ext4 filesystem on a loop device, mounted at `dir/state` (the test configs' state
/// dir), so that it can be frozen (`fsfreeze`) as a stalled SD card would be.
pub struct StateFs {
    pub mnt: PathBuf,
}

impl StateFs {
    pub fn new(dir: &Path) -> StateFs {
        StateFs::at(dir, "state")
    }

    /// Mounted at `dir/name`, its image beside it.
    pub fn at(dir: &Path, name: &str) -> StateFs {
        let img = dir.join(format!("{name}.img"));
        let mnt = dir.join(name);
        fs::create_dir_all(&mnt).unwrap();
        sh("truncate", &["-s", "32M", img.to_str().unwrap()]);
        sh("mkfs.ext4", &["-q", "-F", img.to_str().unwrap()]);
        sh("mount", &["-o", "loop", img.to_str().unwrap(), mnt.to_str().unwrap()]);
        StateFs { mnt }
    }

    pub fn freeze(&self) {
        sh("fsfreeze", &["-f", self.mnt.to_str().unwrap()]);
    }

    pub fn thaw(&self) {
        let _ = Command::new("fsfreeze").args(["-u", self.mnt.to_str().unwrap()]).output();
    }
}

impl Drop for StateFs {
    /// Unmounted (and its loop device freed) even while a killed child that was stuck on it
    /// is still ending after the thaw: `umount` is busy until then. A single try left the
    /// mount and its loop device behind after every run of a hung-child test.
    fn drop(&mut self) {
        self.thaw();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if Command::new("umount").arg(&self.mnt).output().is_ok_and(|o| o.status.success()) {
                return;
            }
            if std::time::Instant::now() >= until {
                // Detached now, freed by the kernel once the last user is gone.
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).output();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
