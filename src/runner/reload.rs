//! Reload on SIGHUP: the config is read on a helper thread (it reads files and probes the
//! state directory, which must not block the socket), then applied here.

use super::Runner;
use crate::config::Config;
use crate::protocol::Identity;
use log::{error, info, warn};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reload {
    NotAsked,
    /// The new config was invalid; nothing changed.
    Refused,
    /// Taken in without touching the connection.
    Applied,
    /// Taken in; the connection must be made again.
    Reconnect,
}

impl Runner {
    /// Starts re-reading the config file (on the `reload` thread) if SIGHUP asked for it,
    /// and takes in the result once it is there. A valid config is taken in at once
    /// (timings, backoff, resend, probes, disk rules) and `true` returned when the
    /// connection must be made again for it (identity, token, URLs, TLS). An invalid one is
    /// refused with the message `check` would print; the agent keeps the running config.
    pub(super) fn reload_if_asked(&mut self) -> Reload {
        if self.shutdown.take_reload() {
            if self.reloading.is_some() {
                // Says so once: a load stuck on a hung filesystem would otherwise look like
                // SIGHUP being ignored.
                if !std::mem::replace(&mut self.reload_again, true) {
                    warn!("reload: the previous reload is still reading the config; this one follows it");
                }
            } else {
                self.start_reload();
            }
        }
        let Some(rx) = &self.reloading else { return Reload::NotAsked };
        let loaded = match rx.try_recv() {
            Err(mpsc::TryRecvError::Empty) => return Reload::NotAsked,
            Err(mpsc::TryRecvError::Disconnected) => Err(None),
            Ok(result) => result.map_err(Some),
        };
        self.reloading = None;
        if std::mem::take(&mut self.reload_again) {
            self.start_reload();
        }
        let file = self.cfg.file.clone();
        let new = match loaded {
            Ok(c) => c,
            Err(e) => {
                match e {
                    // One line per refusal, each naming file, line, key and fix as `check`.
                    Some(errors) => {
                        for e in errors.iter() {
                            error!("reload refused, still running with the previous config: {e}");
                        }
                    }
                    None => error!(
                        "reload refused: reading the config failed unexpectedly; still running with the previous config"
                    ),
                }
                return Reload::Refused;
            }
        };
        if self.cfg.paths_differ(&new) {
            warn!("reload: paths.* changed; restart the agent to use the new paths");
        }
        let reconnect = self.cfg.connection_differs(&new);
        self.backoff.set_bounds(new.reconnect.initial, new.reconnect.max);
        self.resend.set_after(new.warning.resend_after);
        (self.on_reload)(&new);
        self.id = Identity::from(&new.device);
        self.jobs.reconfigure(&new);
        self.cfg = Arc::new(new);
        if reconnect {
            info!("configuration reloaded from {}; connecting again with the new gateway settings", file.display());
            Reload::Reconnect
        } else {
            info!("configuration reloaded from {}", file.display());
            Reload::Applied
        }
    }

    /// Reads the config file on a helper thread; the result comes back through a channel
    /// and a wake-up. A read that hangs (a FUSE state directory) leaves that thread behind,
    /// and the runner keeps the running config; later SIGHUPs wait for it.
    pub(super) fn start_reload(&mut self) {
        let (tx, rx) = mpsc::channel();
        let file = self.cfg.file.clone();
        let waker = match self.waker.try_clone() {
            Ok(w) => w,
            Err(e) => {
                error!("reload refused: cannot start it ({e})");
                return;
            }
        };
        let spawned = thread::Builder::new().name("reload".into()).spawn(move || {
            let _ = tx.send(Config::load(&file));
            waker.wake();
        });
        match spawned {
            Ok(_) => self.reloading = Some(rx),
            Err(e) => error!("reload refused: cannot start its thread ({e})"),
        }
    }
}
