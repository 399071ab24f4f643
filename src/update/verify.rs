//! Whether a build file is what the rig trusts: its sha256 is the offer's, and a minisign
//! signature by one of the rig's own keys (from its root-owned config) covers it, with the
//! signed trusted comment `version=<v> target=<triple>`. One pass over the file for both
//! hashes. Only prehashed signatures (`ED`, what minisign makes by default): a legacy one
//! (`Ed`, `minisign -l`) hashes nothing itself and would need the whole file in memory.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use minisign_verify::{Error as SigError, PublicKey, Signature};

use crate::protocol::escape::escape;

/// What must hold of a build.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub version: &'a str,
    pub target: &'a str,
    pub sha256: &'a [u8; 32],
    /// The whole `.minisig` text.
    pub signature: &'a str,
    /// The rig's keys (base64 lines of `.pub` files).
    pub keys: &'a [String],
    /// The file may hold no more than this.
    pub max_bytes: u64,
}

/// Why a build is not trusted, or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A check failed: reported as `refused`, the text says which.
    #[error("{0}")]
    Refused(String),
    /// The file could not be read: the rig's fault, reported as `failed`.
    #[error("cannot read the build: {0}")]
    Io(#[from] io::Error),
}

fn refused(s: impl Into<String>) -> VerifyError {
    VerifyError::Refused(s.into())
}

/// Checks `path` against `expect`; `Ok` only if every check passes.
pub fn check_file(path: &Path, expect: Expect<'_>) -> Result<(), VerifyError> {
    let sig = Signature::decode(expect.signature)
        .map_err(|e| refused(format!("the signature is not a minisign signature ({e})")))?;
    let wanted = format!("version={} target={}", expect.version, expect.target);
    let mut found_key = false;
    let mut last_err = None;
    for key in expect.keys {
        let Ok(pk) = PublicKey::from_base64(key.trim()) else { continue };
        let mut stream = match pk.verify_stream(&sig) {
            Ok(s) => s,
            Err(SigError::UnexpectedKeyId) => continue,
            Err(SigError::UnsupportedLegacyMode) => {
                return Err(refused("a legacy (non-prehashed) signature; sign with the default minisign -S"));
            }
            Err(e) => return Err(refused(format!("signature: {e}"))),
        };
        found_key = true;
        let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
        read_through(path, expect.max_bytes, |chunk| {
            sha.update(chunk);
            stream.update(chunk);
        })
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => refused(format!("the build is {e}")),
            _ => VerifyError::Io(e),
        })?;
        if sha.finish().as_ref() != expect.sha256 {
            return Err(refused("sha256 does not match the offer's"));
        }
        match stream.finalize() {
            Ok(()) => {}
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        }
        if sig.trusted_comment() != wanted {
            return Err(refused(format!(
                "the signed trusted comment is \"{}\", not \"{wanted}\"",
                escape(&sig.trusted_comment().chars().take(200).collect::<String>())
            )));
        }
        return Ok(());
    }
    if !found_key {
        return Err(refused("the signature is by a key this rig does not trust (not in update.keys)"));
    }
    Err(refused(format!(
        "bad signature: the build or its trusted comment is not what the key signed ({})",
        last_err.map_or_else(|| "no key verified it".into(), |e| e.to_string())
    )))
}

/// The sha256 of a file, hex; an error if it cannot be read or is larger than `max`.
pub fn sha256_of(path: &Path, max: u64) -> io::Result<String> {
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    read_through(path, max, |chunk| sha.update(chunk))?;
    Ok(crate::update::offer::hex(sha.finish().as_ref()))
}

/// Feeds the file at `path` to `each` in chunks; `InvalidData` once it passes `max` bytes,
/// or when it is not a regular file. A build is a file the update wrote itself: a link there
/// is not followed, and a FIFO is opened without waiting (a blocking open waited for a
/// writer forever, and the launcher checks the installed build at every start).
fn read_through(path: &Path, max: u64, mut each: impl FnMut(&[u8])) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)
        .map_err(|e| match e.raw_os_error().map(rustix::io::Errno::from_raw_os_error) {
            Some(rustix::io::Errno::LOOP) => io::Error::new(io::ErrorKind::InvalidData, "a symbolic link"),
            _ => e,
        })?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        total += n as u64;
        if total > max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than update.max_bytes ({max})")));
        }
        each(&buf[..n]);
    }
}
