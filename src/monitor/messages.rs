//! The messages the monitor spools for its episodes: a warning when one opens and, with
//! `warning.send_cleared`, a `warning_cleared` when one ends. One place for both kinds of
//! subject, so a disk's and a GPU's messages differ only in how they name it.

use serde_json::Value;

use crate::disks::inventory::Inventory;
use crate::episodes::episode::{Closing, Episode};
use crate::episodes::subject::SubjectKind;
use crate::gpus::inventory::GpuInventory;
use crate::protocol::{self, Identity, Named, Stamp};

/// What the monitor knows of its subjects, to name them in a message.
pub(super) struct Names<'a> {
    pub disks: &'a Inventory,
    pub gpus: &'a GpuInventory,
}

impl Names<'_> {
    /// `f` with the episode's subject as its message names it.
    fn with<T>(&self, e: &Episode, f: impl FnOnce(&Named) -> T) -> T {
        match e.kind() {
            SubjectKind::Disk => {
                let device = format!("/dev/{}", e.subject);
                let serial = self.disks.disks.get(&e.subject).and_then(|r| r.serial.as_deref());
                f(&Named::Disk { device: &device, serial })
            }
            SubjectKind::Gpu => {
                let known = self.gpus.gpus.get(&e.subject);
                f(&Named::Gpu {
                    bus: &e.subject,
                    index: known.and_then(|g| g.index),
                    model: known.and_then(|g| g.model.as_deref()),
                    uuid: known.and_then(|g| g.uuid.as_deref()),
                })
            }
        }
    }

    /// The warning of `e`, made at `e.since`.
    pub fn warning(&self, id: &Identity, e: &Episode, maintenance: bool) -> Value {
        let stamp = Stamp { time: e.since, maintenance };
        self.with(e, |n| protocol::encode_warning(id, &e.act_id, n, e.reason.as_str(), &e.detail, &stamp))
    }

    /// The `warning_cleared` of `c`, made at `c.time`.
    pub fn cleared(&self, id: &Identity, c: &Closing, maintenance: bool) -> Value {
        let e = &c.episode;
        let stamp = Stamp { time: c.time, maintenance };
        self.with(e, |n| protocol::encode_cleared(id, &c.act_id, &e.act_id, n, e.reason.as_str(), &c.detail, &stamp))
    }
}
