//! Small state files written off the caller's thread (the socket loop's helpers must not
//! wait on an fsync): each [`DeferredWriter::put`] replaces what is waiting for that file,
//! and one `state-write` thread writes the latest content durably. A hung or failing disk
//! costs that thread, and at most one waiting content per file, never the caller.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

use crate::os::durable::write_durably;

/// Writes the latest content of each file, later, on its own thread. Clones share it; the
/// thread ends once every clone is gone and nothing waits.
#[derive(Clone, Default)]
pub struct DeferredWriter {
    latest: Arc<Mutex<BTreeMap<PathBuf, Vec<u8>>>>,
    tx: Arc<Mutex<Option<Sender<PathBuf>>>>,
}

impl std::fmt::Debug for DeferredWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeferredWriter")
    }
}

impl DeferredWriter {
    /// `bytes` is to become the file `path` (in a directory that exists): written durably
    /// (temp name, fsync, rename), replacing whatever was waiting for it.
    pub fn put(&self, path: PathBuf, bytes: Vec<u8>) {
        let fresh = self.latest.lock().unwrap_or_else(|p| p.into_inner()).insert(path.clone(), bytes).is_none();
        if !fresh {
            return; // the thread has not taken the older content yet: it will take this one
        }
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.is_none() {
            *tx = self.spawn();
        }
        if let Some(t) = tx.as_ref() {
            let _ = t.send(path);
        }
    }

    fn spawn(&self) -> Option<Sender<PathBuf>> {
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let latest = Arc::clone(&self.latest);
        let spawned = std::thread::Builder::new().name("state-write".into()).spawn(move || {
            let mut failing = std::collections::BTreeSet::new();
            for path in rx {
                let Some(bytes) = latest.lock().unwrap_or_else(|p| p.into_inner()).remove(&path) else { continue };
                let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
                    continue;
                };
                match write_durably(dir, name, &bytes) {
                    Ok(()) => {
                        if failing.remove(&path) {
                            log::info!("{} is written again", path.display());
                        }
                    }
                    // Said once per file until it works again: these files help, nothing is
                    // lost without them (the next write tries again).
                    Err(e) if failing.insert(path.clone()) => {
                        log::warn!("cannot write {} ({e}); the agent goes on without it", path.display())
                    }
                    Err(e) => log::debug!("cannot write {} ({e})", path.display()),
                }
            }
        });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                log::warn!("cannot start the state-write thread ({e}); small state files are not kept");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_latest_content_of_each_file_is_written() {
        let d = tempfile::tempdir().unwrap();
        let w = DeferredWriter::default();
        for i in 0..50 {
            w.put(d.path().join("a"), format!("{i}").into_bytes());
        }
        w.put(d.path().join("b"), b"b".to_vec());
        let until = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(d.path().join("a")).ok().as_deref() != Some("49") {
            assert!(Instant::now() < until, "the last content was not written");
            std::thread::sleep(Duration::from_millis(5));
        }
        while !d.path().join("b").exists() {
            assert!(Instant::now() < until);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
