//! Reading a small file that a broken rig may have replaced with something else: a FIFO
//! (an open would wait for a writer forever), a device or a link to one (`/dev/zero` reads
//! without end), or a huge file. Every file the agent reads whole (config, token, PEM
//! files, spool entries, `disks.json`) goes through [`read`]: opened with `O_NONBLOCK`
//! (a FIFO opens at once instead of hanging), checked with fstat to be a regular file, and
//! read with a size cap.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};

/// Whether a symbolic link at the path itself is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Operator-chosen files (config, token, certificates): links are how secrets are often
    /// installed (`/run/secrets/...`), and the target is still checked to be a regular file.
    Follow,
    /// Files the agent itself writes in its state directory: it never writes a link, so one
    /// there is damage or mischief and is refused.
    Refuse,
}

/// What the path turned out to be when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    Fifo,
    Socket,
    CharacterDevice,
    BlockDevice,
    Symlink,
    Unknown,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Directory => "a directory",
            Kind::Fifo => "a FIFO (named pipe)",
            Kind::Socket => "a socket",
            Kind::CharacterDevice => "a character device",
            Kind::BlockDevice => "a block device",
            Kind::Symlink => "a symbolic link",
            Kind::Unknown => "not a regular file",
        })
    }
}

/// Why a file could not be read. Each message names the path, what is wrong and the fix;
/// the caller refuses the file (config: exit 78; state files: move it aside and go on).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Missing, unreadable, or a failing disk: the caller decides (a missing state file is
    /// often just "nothing yet").
    #[error("cannot open {} ({}); check that it exists and the agent's user may read it", path.display(), reason(source))]
    Open { path: PathBuf, source: io::Error },
    /// A FIFO, device, directory or (with [`Links::Refuse`]) a symbolic link.
    #[error("{} is {kind}, not a regular file; replace it with a regular file", path.display())]
    NotRegular { path: PathBuf, kind: Kind },
    /// Larger than the cap this file may have.
    #[error("{} is {size} bytes, more than the {cap}-byte cap for this file; replace it with the right, smaller file", path.display())]
    TooLarge { path: PathBuf, size: u64, cap: u64 },
    /// The read failed part-way (an IO error on the disk).
    #[error("cannot read {} ({}); check the disk it is on", path.display(), reason(source))]
    Read { path: PathBuf, source: io::Error },
    #[error("{} is not UTF-8 text; write it as plain text", path.display())]
    NotText { path: PathBuf },
}

impl ReadError {
    /// The file is simply not there (often "nothing saved yet", not an error).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Open { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// A file's bytes and its permission bits (from the same open, so a check of the mode
/// cannot be about another file than the one read).
#[derive(Debug)]
pub struct Contents {
    pub bytes: Vec<u8>,
    /// `st_mode & 0o7777`.
    pub mode: u32,
}

impl Contents {
    pub fn into_string(self, path: &Path) -> Result<String, ReadError> {
        String::from_utf8(self.bytes).map_err(|_| ReadError::NotText { path: path.to_path_buf() })
    }
}

/// Reads the whole of `path` if it is a regular file of at most `cap` bytes.
pub fn read(path: &Path, cap: u64, links: Links) -> Result<Contents, ReadError> {
    let mut flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    if links == Links::Refuse {
        flags |= OFlags::NOFOLLOW;
    }
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| {
        // O_NOFOLLOW on a link fails with ELOOP; say what it is rather than "too many links".
        if e == rustix::io::Errno::LOOP && links == Links::Refuse {
            ReadError::NotRegular { path: path.to_path_buf(), kind: Kind::Symlink }
        } else {
            ReadError::Open { path: path.to_path_buf(), source: e.into() }
        }
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| ReadError::Open { path: path.to_path_buf(), source: e.into() })?;
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => None,
        FileType::Directory => Some(Kind::Directory),
        FileType::Fifo => Some(Kind::Fifo),
        FileType::Socket => Some(Kind::Socket),
        FileType::CharacterDevice => Some(Kind::CharacterDevice),
        FileType::BlockDevice => Some(Kind::BlockDevice),
        FileType::Symlink => Some(Kind::Symlink),
        FileType::Unknown => Some(Kind::Unknown),
    };
    if let Some(kind) = kind {
        return Err(ReadError::NotRegular { path: path.to_path_buf(), kind });
    }
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    if size > cap {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), size, cap });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // One byte past the cap tells a file that grew since fstat from one that is exactly full.
    File::from(fd)
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ReadError::Read { path: path.to_path_buf(), source: e })?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), size: bytes.len() as u64, cap });
    }
    Ok(Contents { bytes, mode: stat.st_mode & 0o7777 })
}

/// As [`read`], as UTF-8 text.
pub fn read_string(path: &Path, cap: u64, links: Links) -> Result<String, ReadError> {
    read(path, cap, links)?.into_string(path)
}

/// `io::Error` without the "(os error 13)" tail, for operator messages.
fn reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fifo(path: &Path) {
        rustix::fs::mknodat(rustix::fs::CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
    }

    #[test]
    fn a_regular_file_is_read_whole_with_its_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, "hello\n").unwrap();
        let c = read(&p, 6, Links::Refuse).unwrap();
        assert_eq!(c.bytes, b"hello\n");
        assert_eq!(c.mode & 0o777, fs::metadata(&p).unwrap().permissions().mode_bits());
    }

    trait ModeBits {
        fn mode_bits(&self) -> u32;
    }
    impl ModeBits for fs::Permissions {
        fn mode_bits(&self) -> u32 {
            use std::os::unix::fs::PermissionsExt;
            self.mode() & 0o777
        }
    }

    #[test]
    fn a_fifo_is_refused_at_once_instead_of_waiting_for_a_writer() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pipe");
        fifo(&p);
        for links in [Links::Follow, Links::Refuse] {
            let e = read(&p, 100, links).unwrap_err();
            assert!(matches!(e, ReadError::NotRegular { kind: Kind::Fifo, .. }), "{e}");
            assert!(e.to_string().contains("FIFO") && e.to_string().contains("pipe"), "{e}");
        }
    }

    #[test]
    fn a_link_to_dev_zero_is_refused_whether_followed_or_not() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        let e = read(&p, 1 << 20, Links::Refuse).unwrap_err();
        assert!(matches!(e, ReadError::NotRegular { kind: Kind::Symlink, .. }), "{e}");
        let e = read(&p, 1 << 20, Links::Follow).unwrap_err();
        assert!(matches!(e, ReadError::NotRegular { kind: Kind::CharacterDevice, .. }), "{e}");
    }

    #[test]
    fn a_file_over_the_cap_is_refused_naming_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big");
        fs::write(&p, vec![b'x'; 101]).unwrap();
        let e = read(&p, 100, Links::Follow).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { size: 101, cap: 100, .. }), "{e}");
        assert!(e.to_string().contains("100-byte cap"), "{e}");
        assert_eq!(read(&p, 101, Links::Follow).unwrap().bytes.len(), 101);
    }

    #[test]
    fn a_missing_file_says_so() {
        let d = tempfile::tempdir().unwrap();
        let e = read(&d.path().join("none"), 10, Links::Refuse).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let e = read(d.path(), 10, Links::Refuse).unwrap_err();
        assert!(matches!(e, ReadError::NotRegular { kind: Kind::Directory, .. }), "{e}");
    }
}
