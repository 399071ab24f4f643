//! What a rig's storage does to the agent, for real: an ext4 filesystem on a loop device
//! that a test can freeze (`fsfreeze`: writes block in D state, as on a stalled SD card or
//! behind a hung driver), fill to the last block, or remount read-only (as ext4 does after an
//! error); and mounts (a tmpfs, a read-only bind) that go away with the test. Root only
//! (losetup, mount); CI runs as root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs a command; panics with its output when it fails. Its stdout, trimmed.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `mount ARGS…`; panics with mount's words when it fails.
pub fn mount(args: &[&str]) {
    run("mount", args);
}

/// Unmounts its path when dropped, so that a failing test leaves no mount behind.
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

/// An ext4 filesystem on a loop device, mounted read-write; unmounted and detached on drop.
pub struct LoopFs {
    /// `/dev/loopN`
    pub dev: String,
    pub mnt: PathBuf,
}

impl LoopFs {
    /// `size` bytes of ext4 (made with `mkfs_options`) in an image in `dir`, mounted on
    /// `dir/name`.
    pub fn new(dir: &Path, name: &str, size: u64, mkfs_options: &[&str]) -> LoopFs {
        let img = dir.join(format!("{name}.img"));
        fs::File::create(&img).unwrap().set_len(size).unwrap();
        let dev = run("losetup", &["--find", "--show", img.to_str().unwrap()]);
        let mnt = dir.join(name);
        fs::create_dir_all(&mnt).unwrap();
        let lfs = LoopFs { dev, mnt };
        run("mkfs.ext4", &[&["-q", "-F"], mkfs_options, &[lfs.dev.as_str()]].concat());
        mount(&[&lfs.dev, lfs.mnt.to_str().unwrap()]);
        lfs
    }

    /// 32 MiB mounted at `dir/state`, the test configs' state directory.
    pub fn state(dir: &Path) -> LoopFs {
        LoopFs::new(dir, "state", 32 << 20, &[])
    }

    /// Writes to it block until [`LoopFs::thaw`].
    pub fn freeze(&self) {
        run("fsfreeze", &["-f", self.mnt.to_str().unwrap()]);
    }

    pub fn thaw(&self) {
        let _ = Command::new("fsfreeze").args(["-u", self.mnt.to_str().unwrap()]).output();
    }

    /// `mount -o remount,ro` (`mode` "ro") or back (`"rw"`), tried again while a write of the
    /// agent's is under way ("mount point is busy" until that file is closed).
    pub fn remount(&self, mode: &str) {
        let until = Instant::now() + Duration::from_secs(5);
        let opts = format!("remount,{mode}");
        loop {
            let out = Command::new("mount").args(["-o", &opts, self.mnt.to_str().unwrap()]).output().unwrap();
            if out.status.success() {
                return;
            }
            assert!(Instant::now() < until, "mount -o {opts}: {}", String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fills every block (make it with `-m 0`, no blocks reserved for root); a small file of
    /// slack is kept apart so that [`LoopFs::make_room`] is quick.
    pub fn fill(&self) {
        for (name, bs) in [("filler", "64k"), ("filler2", "1k")] {
            let _ = Command::new("dd")
                .args(["if=/dev/zero", &format!("of={}/{name}", self.mnt.display()), &format!("bs={bs}")])
                .output();
        }
        assert!(fs::write(self.mnt.join("probe"), [0u8; 1024]).is_err(), "{} should be full", self.mnt.display());
    }

    /// Frees what [`LoopFs::fill`] took.
    pub fn make_room(&self) {
        fs::remove_file(self.mnt.join("filler")).unwrap();
        fs::remove_file(self.mnt.join("filler2")).unwrap();
    }
}

impl Drop for LoopFs {
    /// Unmounted and detached even while a killed child that was stuck on it is still ending
    /// after the thaw: `umount` is busy until then. A single try left the mount and its loop
    /// device behind after every run of a hung-child test.
    fn drop(&mut self) {
        self.thaw();
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            if Command::new("umount").arg(&self.mnt).output().is_ok_and(|o| o.status.success()) {
                break;
            }
            if Instant::now() >= until {
                // Detached now, freed by the kernel once the last user is gone.
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).output();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // After a lazy unmount the device is still busy: the kernel frees it with the mount.
        let _ = Command::new("losetup").args(["-d", &self.dev]).output();
    }
}
