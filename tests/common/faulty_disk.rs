//! A disk that fails like a real one: a FUSE file whose reads in a byte range return EIO,
//! attached to a loop device. Reading the bad range gives real kernel I/O errors
//! (`I/O error, dev loopN, sector …`) and `losetup -d` a real `change` uevent. Root only
//! (mount of /dev/fuse, losetup); CI runs as root. Shared by tests/kernel_events.rs and
//! examples/event_latency.rs through `#[path]`.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner, MountOption, OpenFlags,
    ReplyAttr, ReplyData, ReplyEntry, ReplyOpen, Request,
};

const IMAGE: &str = "disk.img";

struct EioFile {
    size: u64,
    bad: Range<u64>,
}

impl EioFile {
    fn attr(&self, ino: u64) -> FileAttr {
        let dir = ino == 1;
        FileAttr {
            ino: INodeNo(ino),
            size: if dir { 0 } else { self.size },
            blocks: if dir { 0 } else { self.size / 512 },
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: if dir { FileType::Directory } else { FileType::RegularFile },
            perm: if dir { 0o755 } else { 0o444 },
            nlink: if dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }
}

const TTL: Duration = Duration::from_secs(60);

impl Filesystem for EioFile {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if u64::from(parent) == 1 && name == IMAGE {
            reply.entry(&TTL, &self.attr(2), fuser::Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match u64::from(ino) {
            i @ (1 | 2) => reply.attr(&TTL, &self.attr(i)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // No page cache: every read of the loop device reaches `read`, every time.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let end = (offset + u64::from(size)).min(self.size);
        if offset < self.bad.end && end > self.bad.start {
            reply.error(Errno::EIO);
        } else {
            reply.data(&vec![0; end.saturating_sub(offset) as usize]);
        }
    }
}

/// Runs a command; its trimmed stdout, or why it failed.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The FUSE mount and the loop device over it; both go away on drop.
pub struct FaultyDisk {
    /// `loop3`
    pub name: String,
    attached: bool,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl FaultyDisk {
    /// `size` bytes whose reads in `bad` fail with EIO, on a loop device. `None`, after
    /// saying why the test is skipped, when not root or without FUSE or loop devices.
    pub fn new(dir: &Path, size: u64, bad: Range<u64>) -> Option<FaultyDisk> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root for FUSE and losetup (CI runs as root)");
            return None;
        }
        let mountpoint = dir.join("fuse");
        std::fs::create_dir_all(&mountpoint).unwrap();
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![MountOption::RO, MountOption::FSName("rig-agent-eio".into())];
        let session = match fuser::spawn_mount(EioFile { size, bad }, &mountpoint, &cfg) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipped: cannot mount FUSE on {} ({e})", mountpoint.display());
                return None;
            }
        };
        let image = mountpoint.join(IMAGE);
        let dev = match run("losetup", &["--find", "--show", "--read-only", image.to_str().unwrap()]) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("skipped: {e}");
                return None;
            }
        };
        let name = dev.trim_start_matches("/dev/").to_string();
        Some(FaultyDisk { name, attached: true, mountpoint, session: Some(session) })
    }

    pub fn device(&self) -> String {
        format!("/dev/{}", self.name)
    }

    /// Reads `count` 4 KiB blocks from block `skip` with O_DIRECT; false when the read failed.
    pub fn read(&self, skip: u64, count: u64) -> bool {
        run(
            "dd",
            &[
                &format!("if={}", self.device()),
                "of=/dev/null",
                "bs=4096",
                &format!("skip={skip}"),
                &format!("count={count}"),
                "iflag=direct",
            ],
        )
        .is_ok()
    }

    /// `losetup -d`: the kernel sends a `change` uevent and the size drops to 0.
    pub fn detach(&mut self) {
        if std::mem::take(&mut self.attached) {
            run("losetup", &["-d", &self.device()]).unwrap();
        }
    }
}

impl Drop for FaultyDisk {
    fn drop(&mut self) {
        self.detach();
        // Dropping the session unmounts; a lazy unmount covers a loop device still closing.
        drop(self.session.take());
        let _ = Command::new("umount").arg("-l").arg(&self.mountpoint).stderr(std::process::Stdio::null()).status();
    }
}
