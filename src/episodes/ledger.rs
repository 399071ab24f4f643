//! The episodes of one kind of subject, as its inventory file keeps them: the open ones,
//! and the closed ones whose `warning_cleared` is still on its way.

use std::collections::HashSet;

use serde_json::Value;

use crate::episodes::episode::{Closing, Episode};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// One per subject and reason.
    pub open: Vec<Episode>,
    /// Ended with `warning.send_cleared` on; each goes once its `warning_cleared` is durably
    /// spooled or acknowledged and its warning has left the spool.
    pub closing: Vec<Closing>,
}

impl Ledger {
    /// The act_ids whose messages are not yet recorded as spooled: the warnings of open
    /// episodes and the cleared messages of closing ones. Their acks must leave a tombstone.
    pub fn unreported(&self) -> impl Iterator<Item = &str> {
        let open = self.open.iter().filter(|e| !e.reported).map(|e| e.act_id.as_str());
        open.chain(self.closing.iter().filter(|c| !c.reported).map(|c| c.act_id.as_str()))
    }

    /// Whether a warning of this act_id belongs to an episode already closing (its cleared
    /// message is on its way, or was sent).
    pub fn closing_of(&self, warning: &str) -> Option<&Closing> {
        self.closing.iter().find(|c| c.episode.act_id == warning)
    }

    /// Writes `episodes` and `closing` into the inventory's JSON object `v`.
    pub fn put(&self, v: &mut Value) {
        v["episodes"] = self.open.iter().map(Episode::to_json).collect();
        v["closing"] = self.closing.iter().map(Closing::to_json).collect();
    }

    /// Reads `episodes` and `closing` back; `None` when either is not as written. Files of
    /// earlier versions have no `closing`: nothing was.
    pub fn get(v: &Value) -> Option<Ledger> {
        let open = v["episodes"].as_array()?.iter().map(Episode::from_json).collect::<Option<Vec<_>>>()?;
        let closing = match v.get("closing") {
            None => Vec::new(),
            Some(c) => c.as_array()?.iter().map(Closing::from_json).collect::<Option<Vec<_>>>()?,
        };
        Some(Ledger { open, closing })
    }

    /// The act_ids of every episode, open or closing, for a quick lookup.
    pub fn warnings(&self) -> HashSet<&str> {
        self.open
            .iter()
            .map(|e| e.act_id.as_str())
            .chain(self.closing.iter().map(|c| c.episode.act_id.as_str()))
            .collect()
    }
}
