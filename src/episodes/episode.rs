//! One failure episode of a disk or a GPU, as the state files keep it: open from its
//! warning until its condition clears, then (with `warning.send_cleared`) closing until its
//! `warning_cleared` is durably spooled or acknowledged.

use serde_json::{Value, json};

use crate::episodes::reason::Reason;
use crate::episodes::subject::SubjectKind;
use crate::protocol::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// What failed: a disk's kernel name (`sdl`) or a GPU's PCI bus id (`0000:01:00.0`),
    /// as the reason's kind says.
    pub subject: String,
    pub reason: Reason,
    /// The warning raised when the episode opened.
    pub act_id: String,
    /// When it opened (Unix seconds, and whether the clock was wrong then).
    pub since: Timestamp,
    /// The warning's `detail`, to raise it again with the same text.
    pub detail: String,
    /// Its warning was durably in the spool, or acknowledged: it needs no raising again.
    pub reported: bool,
}

impl Episode {
    pub fn kind(&self) -> SubjectKind {
        self.reason.kind()
    }

    /// As the state files keep it: the subject under `disk` or `gpu`, as in its warning.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"reason": self.reason.as_str(), "act_id": self.act_id, "since": self.since.secs,
                           "detail": self.detail, "reported": self.reported});
        v[self.kind().as_str()] = self.subject.clone().into();
        if self.since.suspect {
            v["since_suspect"] = true.into();
        }
        v
    }

    /// The inverse of [`Episode::to_json`]; `None` for an entry that is not one, or whose
    /// subject is under the other kind's key.
    pub fn from_json(e: &Value) -> Option<Episode> {
        let s = |x: &Value| x.as_str().map(str::to_string);
        let reason: Reason = s(&e["reason"])?.parse().ok()?;
        Some(Episode {
            subject: s(&e[reason.kind().as_str()])?,
            reason,
            act_id: s(&e["act_id"])?,
            // Absent before the agent knew its clock could be wrong: a trusted time.
            since: Timestamp { secs: e["since"].as_u64()?, suspect: e["since_suspect"] == true },
            detail: s(&e["detail"]).unwrap_or_default(),
            // Files of earlier versions knew only reported episodes.
            reported: e["reported"].as_bool().unwrap_or(true),
        })
    }
}

/// An episode that ended while `warning.send_cleared` was on: kept until its
/// `warning_cleared` is durably spooled or acknowledged, so a crash in between sends it
/// again with the same `act_id` and never loses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    /// The episode as it was open; its `act_id` is the cleared message's `ref_act_id`.
    pub episode: Episode,
    /// The `warning_cleared` message's own `act_id`.
    pub act_id: String,
    /// When the episode ended.
    pub time: Timestamp,
    /// Why it ended, the cleared message's `detail`.
    pub detail: String,
    /// The cleared message was durably in the spool, or acknowledged.
    pub reported: bool,
}

impl Closing {
    pub fn to_json(&self) -> Value {
        let mut v = self.episode.to_json();
        v["cleared"] =
            json!({"act_id": self.act_id, "time": self.time.secs, "detail": self.detail, "reported": self.reported});
        if self.time.suspect {
            v["cleared"]["time_suspect"] = true.into();
        }
        v
    }

    pub fn from_json(e: &Value) -> Option<Closing> {
        let c = &e["cleared"];
        Some(Closing {
            episode: Episode::from_json(e)?,
            act_id: c["act_id"].as_str()?.to_string(),
            time: Timestamp { secs: c["time"].as_u64()?, suspect: c["time_suspect"] == true },
            detail: c["detail"].as_str().unwrap_or_default().to_string(),
            reported: c["reported"].as_bool()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn episode(subject: &str, reason: Reason) -> Episode {
        Episode {
            subject: subject.into(),
            reason,
            act_id: "9f3a61c2-12".into(),
            since: Timestamp::exact(1_764_000_000),
            detail: "seen".into(),
            reported: false,
        }
    }

    #[test]
    fn an_episode_keeps_its_subject_under_the_key_of_its_kind() {
        let disk = episode("sdl", Reason::Missing);
        assert_eq!(disk.to_json()["disk"], "sdl");
        assert_eq!(Episode::from_json(&disk.to_json()), Some(disk));
        let gpu = episode("0000:01:00.0", Reason::GpuLost);
        assert_eq!(gpu.to_json()["gpu"], "0000:01:00.0");
        assert_eq!(gpu.to_json().get("disk"), None);
        assert_eq!(Episode::from_json(&gpu.to_json()), Some(gpu));
        // A GPU reason under a disk's key is not an episode this agent wrote.
        let odd = json!({"disk": "sdl", "reason": "gpu_lost", "act_id": "a-1", "since": 5});
        assert_eq!(Episode::from_json(&odd), None);
    }

    #[test]
    fn a_closing_episode_round_trips_with_its_cleared_message() {
        let c = Closing {
            episode: episode("sdl", Reason::Offline),
            act_id: "9f3a61c2-13".into(),
            time: Timestamp { secs: 1_764_000_100, suspect: true },
            detail: "device/state of sdl is \"running\" again".into(),
            reported: true,
        };
        assert_eq!(Closing::from_json(&c.to_json()), Some(c));
    }
}
