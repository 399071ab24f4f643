//! "Another version" of the agent, signed: a copy of the binary under test with its
//! version slot patched (`RIGAGENT_VERSION_SLOT=0.1.0` → `0.2.0`, see `rig_agent::version`),
//! signed with a key pair made per run by Debian's `minisign` tool, as an operator does.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const MARK: &[u8] = b"RIGAGENT_VERSION_SLOT=";
const ROOM: usize = 32;

/// A minisign key pair in `dir`.
pub struct Key {
    pub public: String,
    secret: PathBuf,
}

impl Key {
    pub fn new(dir: &Path, name: &str) -> Key {
        let (p, s) = (dir.join(format!("{name}.pub")), dir.join(format!("{name}.key")));
        let out = Command::new("minisign")
            .args(["-G", "-W", "-f", "-p"])
            .arg(&p)
            .arg("-s")
            .arg(&s)
            .output()
            .expect("minisign (apt-get install -y minisign) to make a key");
        assert!(out.status.success(), "minisign -G: {}", String::from_utf8_lossy(&out.stderr));
        let public = fs::read_to_string(&p).unwrap().lines().nth(1).unwrap().trim().to_string();
        Key { public, secret: s }
    }

    /// Signs `file` (prehashed, the default) with `comment` as the trusted comment; the
    /// `.minisig` text.
    pub fn sign(&self, file: &Path, comment: &str) -> String {
        self.sign_with(file, comment, &[])
    }

    /// A legacy (not prehashed) signature, `minisign -S -l`.
    pub fn sign_legacy(&self, file: &Path, comment: &str) -> String {
        self.sign_with(file, comment, &["-l"])
    }

    fn sign_with(&self, file: &Path, comment: &str, flags: &[&str]) -> String {
        let sig = file.with_extension("minisig");
        let out = Command::new("minisign")
            .arg("-S")
            .args(flags)
            .arg("-s")
            .arg(&self.secret)
            .arg("-m")
            .arg(file)
            .arg("-x")
            .arg(&sig)
            .args(["-t", comment])
            .output()
            .unwrap();
        assert!(out.status.success(), "minisign -S {flags:?}: {}", String::from_utf8_lossy(&out.stderr));
        fs::read_to_string(sig).unwrap()
    }
}

/// A copy of `binary` at `to` that says it is `version`.
pub fn patched(binary: &Path, to: &Path, version: &str) -> PathBuf {
    let mut bytes = fs::read(binary).unwrap();
    let at = bytes.windows(MARK.len()).position(|w| w == MARK).expect("the version slot in the binary") + MARK.len();
    assert!(version.len() < ROOM);
    let slot = &mut bytes[at..at + ROOM];
    slot.fill(0);
    slot[..version.len()].copy_from_slice(version.as_bytes());
    fs::write(to, bytes).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).unwrap();
    to.to_path_buf()
}

/// An executable script at `to` (a "build" that passes the smoke test and then misbehaves).
pub fn script_build(to: &Path, body: &str) -> PathBuf {
    fs::write(to, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).unwrap();
    to.to_path_buf()
}

/// The sha256 of a file, hex.
pub fn sha256_hex(file: &Path) -> String {
    let out = Command::new("sha256sum").arg(file).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

/// The trusted comment a build for this rig carries.
pub fn comment(version: &str) -> String {
    format!("version={version} target={}", rig_agent::TARGET)
}
