//! Durable writes of small state files (the spool's entries, the disk inventory, the
//! kernel log cursor, the action journal): temp name, fsync, atomic rename, fsync of the
//! directory, so a power cut leaves either the old file or the whole new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Temp name, write, fsync, rename, fsync the directory: after this returns the file
/// survives a power cut, and a crash at any point leaves either nothing or the whole file.
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    write_durably_with(dir, name, bytes, || {})
}

pub(crate) fn write_durably_with(dir: &Path, name: &str, bytes: &[u8], before_sync: impl Fn()) -> io::Result<()> {
    let tmp = dir.join(format!(".tmp-{name}"));
    let result = (|| {
        // Whatever is at the temp name (a leftover, a FIFO, a symlink planted there) goes
        // first; the new file is created fresh, never opened through a link or blocking.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
            .open(&tmp)?;
        f.write_all(bytes)?;
        before_sync();
        f.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
