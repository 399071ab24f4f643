//! The messages of PROTOCOL.md, encoded and decoded. No IO.

pub mod escape;

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};

/// `from` on everything the agent sends.
pub(crate) const FROM_DEVICE: &str = "device";

/// Answer codes of PROTOCOL.md §6.
pub mod code {
    pub const OK: i64 = 0;
    pub(crate) const UNKNOWN_ACT: i64 = 1;
    pub(crate) const BAD_REQUEST: i64 = 2;
    pub(crate) const PROBE_FAILED: i64 = 3;
    /// §8: actions are disabled on this rig, or the action is not in its allow-list.
    pub(crate) const NOT_ALLOWED: i64 = 4;
    /// §8: the action is running, or its `min_interval` has not passed.
    pub(crate) const NOT_NOW: i64 = 5;
    /// §9: the offer's own fields are refused before any download.
    pub(crate) const REFUSED: i64 = 6;
}

/// Generates `act_id`s: `<8 hex chars chosen at start-up>-<counter>`, unique for the life of
/// the process. Shared by the session (login, heartbeats) and the warning spool.
#[derive(Debug)]
pub struct ActIds {
    prefix: String,
    next: AtomicU64,
}

impl ActIds {
    /// A fresh random prefix from the system's CSPRNG (through the ring provider rustls uses,
    /// so no extra crate), so two runs of the agent never share ids.
    pub fn new() -> ActIds {
        let mut bytes = [0u8; 4];
        let random = rustls::crypto::ring::default_provider().secure_random;
        if random.fill(&mut bytes).is_err() {
            // No CSPRNG: time and pid still make a restart's ids differ from the last run's.
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            bytes = (t.subsec_nanos() ^ std::process::id().rotate_left(16)).to_be_bytes();
        }
        ActIds::with_prefix(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    pub fn with_prefix(prefix: &str) -> ActIds {
        ActIds { prefix: prefix.to_string(), next: AtomicU64::new(1) }
    }

    pub fn next(&self) -> String {
        format!("{}-{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for ActIds {
    fn default() -> Self {
        ActIds::new()
    }
}

/// Who the rig is, as the login and every message say it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub hardware_id: String,
    pub name: String,
}

/// The login message. It holds the token: never log it.
pub(crate) fn encode_login(id: &Identity, act_id: &str, token: &str) -> String {
    json!({
        "from": FROM_DEVICE,
        "act": "start",
        "reqtype": "post",
        "act_id": act_id,
        // §2: `act_code` and `client_id` are strings on every agent message, "" on the ones
        // the agent originates; a typed gateway decodes every message with one struct.
        "act_code": "",
        "client_id": "",
        "hardware_id": id.hardware_id,
        "name": id.name,
        "token": token,
        "version": format!("rig-agent {}", crate::version()),
    })
    .to_string()
}

pub(crate) fn encode_heartbeat(id: &Identity, act_id: &str) -> String {
    json!({
        "from": FROM_DEVICE,
        "act": "heartbeat",
        "reqtype": "post",
        "act_id": act_id,
        "act_code": "",
        "client_id": "",
        "hardware_id": id.hardware_id,
    })
    .to_string()
}

/// When something happened, as a warning's `time` says it: Unix seconds of the agent's
/// corrected clock, and whether the system clock was found wrong then (the time is then the
/// agent's floor, a lower bound of the real time, and the message carries `time_suspect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub secs: u64,
    pub suspect: bool,
}

impl Timestamp {
    /// A time taken from a trusted record (the same warning raised again).
    pub fn exact(secs: u64) -> Timestamp {
        Timestamp { secs, suspect: false }
    }
}

/// The parts of a spooled warning the monitor needs to restore its episodes after a
/// restart: the inverse of [`encode_warning`] for those fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpooledWarning {
    /// A disk's kernel name (`sda`, without `/dev/`) or a GPU's bus id, as the warning's
    /// `disk` or `gpu` names it; the reason says which.
    pub subject: String,
    /// The wire reason, as written.
    pub reason: String,
    /// Unix seconds and `time_suspect`, when present.
    pub time: Option<Timestamp>,
    pub detail: String,
}

/// Decodes a spooled warning; `None` for text that is not a JSON object.
pub(crate) fn decode_warning(text: &str) -> Option<SpooledWarning> {
    let w = serde_json::from_str::<Value>(text).ok()?;
    let subject = match (w["disk"].as_str(), w["gpu"].as_str()) {
        (Some(disk), _) => disk.trim_start_matches("/dev/"),
        (None, Some(gpu)) => gpu,
        (None, None) => "",
    };
    w.is_object().then(|| SpooledWarning {
        subject: subject.to_string(),
        reason: w["reason"].as_str().unwrap_or_default().to_string(),
        time: w["time"].as_u64().map(|secs| Timestamp { secs, suspect: w["time_suspect"] == true }),
        detail: w["detail"].as_str().unwrap_or_default().to_string(),
    })
}

/// When a warning (or its `warning_cleared`) was made and in what state the rig was: the
/// fields every such message carries besides what it says of its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// When, and whether the clock was wrong then.
    pub time: Timestamp,
    /// The rig was in maintenance: the message carries `"maintenance": true` (and no such
    /// key otherwise, so a v1 warning is unchanged).
    pub maintenance: bool,
}

/// What a warning names: a disk (PROTOCOL.md §7) or a GPU (§9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Named<'a> {
    /// `device` is `/dev/sdl`; `serial` is `null` when the disk reports none.
    Disk { device: &'a str, serial: Option<&'a str> },
    /// `bus` is the PCI bus id (`0000:01:00.0`); the rest is `null` when unknown.
    Gpu { bus: &'a str, index: Option<u32>, model: Option<&'a str>, uuid: Option<&'a str> },
}

/// A failure warning: a disk's (`type` 2, `message` in the seed's exact shape
/// `Disk[<device>]硬盘损坏`) or a GPU's (`type` 3, `GPU[<bus id>]显卡故障`).
pub(crate) fn encode_warning(
    id: &Identity,
    act_id: &str,
    named: &Named,
    reason: &str,
    detail: &str,
    stamp: &Stamp,
) -> Value {
    let mut w = json!({
        "from": FROM_DEVICE,
        "act": "warning",
        "reqtype": "post",
        "act_id": act_id,
        "act_code": "",
        "client_id": "",
        "hardware_id": id.hardware_id,
        "name": id.name,
    });
    match *named {
        Named::Disk { device, serial } => {
            w["type"] = 2.into();
            w["message"] = format!("Disk[{device}]硬盘损坏").into();
            w["disk"] = device.into();
            w["serial"] = serial.into();
        }
        Named::Gpu { bus, index, model, uuid } => {
            w["type"] = 3.into();
            w["message"] = format!("GPU[{bus}]显卡故障").into();
            w["gpu"] = bus.into();
            w["index"] = index.into();
            w["model"] = model.into();
            w["uuid"] = uuid.into();
        }
    }
    w["reason"] = reason.into();
    w["detail"] = detail.into();
    stamp.put(&mut w);
    w
}

/// The end of a warned failure episode (PROTOCOL.md §9, `warning.send_cleared`): its own
/// `act_id`, the warning's as `ref_act_id`, and the subject as the warning named it
/// (`disk` for type 2, `gpu` for type 3).
pub(crate) fn encode_cleared(
    id: &Identity,
    act_id: &str,
    ref_act_id: &str,
    named: &Named,
    reason: &str,
    detail: &str,
    stamp: &Stamp,
) -> Value {
    let mut w = json!({
        "from": FROM_DEVICE,
        "act": "warning_cleared",
        "reqtype": "post",
        "act_id": act_id,
        "ref_act_id": ref_act_id,
        "act_code": "",
        "client_id": "",
        "hardware_id": id.hardware_id,
    });
    match *named {
        Named::Disk { device, .. } => {
            w["type"] = 2.into();
            w["disk"] = device.into();
        }
        Named::Gpu { bus, .. } => {
            w["type"] = 3.into();
            w["gpu"] = bus.into();
        }
    }
    w["reason"] = reason.into();
    w["detail"] = detail.into();
    stamp.put(&mut w);
    w
}

/// The parts of a spooled `warning_cleared` the monitor needs after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpooledCleared {
    /// The warning it ends.
    pub ref_act_id: String,
    /// Its subject, reason, time and detail, read as a warning's.
    pub parts: SpooledWarning,
}

/// Decodes a spooled `warning_cleared`; `None` for text that is not one.
pub(crate) fn decode_cleared(text: &str) -> Option<SpooledCleared> {
    let w = serde_json::from_str::<Value>(text).ok()?;
    let ref_act_id = w["ref_act_id"].as_str()?.to_string();
    Some(SpooledCleared { ref_act_id, parts: decode_warning(text)? })
}

impl Stamp {
    fn put(&self, w: &mut Value) {
        w["time"] = self.time.secs.into();
        // Only when the clock was wrong (PROTOCOL.md §9): a v1 warning keeps its exact shape.
        if self.time.suspect {
            w["time_suspect"] = true.into();
        }
        if self.maintenance {
            w["maintenance"] = true.into();
        }
    }
}

/// A gateway `return` to something the agent sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Return {
    /// The `act` being answered: `start`, `heartbeat`, `warning`.
    pub action: String,
    pub act_id: String,
    /// `None` when the gateway sent no usable code; treated as a refusal.
    pub code: Option<i64>,
    pub description: String,
}

impl Return {
    pub fn is_ok(&self) -> bool {
        self.code == Some(code::OK)
    }
}

/// What a query's answer echoes. Always strings, as §2 types them, whatever the query
/// carried: a gateway decoding answers into typed structs (`ActCode string`) must never
/// lose one because its query had a number there (see [`echo_text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryEcho {
    pub act: String,
    pub reqtype: String,
    pub act_code: String,
    pub client_id: String,
}

/// A query from the gateway (any `act` other than `return`).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub echo: QueryEcho,
    /// Set when an envelope field has the wrong type: the answer is code 2 with this text.
    pub bad_request: Option<String>,
    /// The whole message, for queries that take parameters.
    pub body: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Return(Return),
    Query(Query),
}

/// Why an inbound text frame was dropped. Logged (rate-limited); the connection stays up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Junk {
    #[error("not JSON ({0})")]
    NotJson(String),
    #[error("JSON but not an object")]
    NotObject,
    #[error("no `act` field")]
    NoAct,
    #[error("`act` is not a string")]
    ActNotString,
}

pub fn decode(text: &str) -> Result<Inbound, Junk> {
    let value: Value = serde_json::from_str(text).map_err(|e| Junk::NotJson(e.to_string()))?;
    let Value::Object(body) = value else { return Err(Junk::NotObject) };
    let act = match body.get("act") {
        None => return Err(Junk::NoAct),
        Some(Value::String(a)) => a.clone(),
        Some(_) => return Err(Junk::ActNotString),
    };
    if act == "return" {
        return Ok(Inbound::Return(Return {
            action: string_field(&body, "action"),
            act_id: string_field(&body, "act_id"),
            code: match body.get("code") {
                Some(Value::Number(n)) => n.as_i64(),
                Some(Value::String(s)) => s.trim().parse().ok(),
                _ => None,
            },
            description: string_field(&body, "description"),
        }));
    }
    let mut problems = Vec::new();
    let mut field = |name: &'static str| {
        let (text, problem) = echo_text(name, body.get(name));
        problems.extend(problem);
        text
    };
    let echo = QueryEcho {
        act: field("act"),
        reqtype: field("reqtype"),
        act_code: field("act_code"),
        client_id: field("client_id"),
    };
    let bad_request = problems.into_iter().next();
    Ok(Inbound::Query(Query { echo, bad_request, body }))
}

/// The longest field an answer echoes, in bytes. Answers echo `act`, `reqtype`, `act_code`
/// and `client_id`; a gateway sending megabyte fields would otherwise have every answer
/// (and every answer held before login) carry them back.
pub(crate) const MAX_ECHO_BYTES: usize = 256;

/// An echoed field as the answer carries it, always a string, and why the query is a bad
/// request if it is one. A string is echoed as sent; a value of another type (a number
/// `42`) as its JSON text (`"42"`), so the gateway can still match the answer; a missing
/// field or `null` as `""`. Either is cut to [`MAX_ECHO_BYTES`] on a character boundary.
pub(crate) fn echo_text(name: &str, value: Option<&Value>) -> (String, Option<String>) {
    let (mut text, mut problem) = match value {
        None => (String::new(), None),
        Some(Value::String(s)) => (s.clone(), None),
        Some(Value::Null) => (String::new(), Some(format!("`{name}` must be a string"))),
        Some(other) => (other.to_string(), Some(format!("`{name}` must be a string"))),
    };
    if text.len() > MAX_ECHO_BYTES {
        let cut = (0..=MAX_ECHO_BYTES).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
        problem.get_or_insert_with(|| format!("`{name}` is longer than {MAX_ECHO_BYTES} bytes"));
    }
    (text, problem)
}

fn string_field(body: &Map<String, Value>, name: &str) -> String {
    match body.get(name) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// A query that was not answered with data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i64,
    pub description: String,
}

impl Refusal {
    pub(crate) fn unknown_act(act: &str) -> Refusal {
        Refusal { code: code::UNKNOWN_ACT, description: format!("unknown act \"{act}\"") }
    }
    pub(crate) fn bad_request(why: impl Into<String>) -> Refusal {
        Refusal { code: code::BAD_REQUEST, description: why.into() }
    }
    pub(crate) fn probe_failed(why: impl Into<String>) -> Refusal {
        Refusal { code: code::PROBE_FAILED, description: why.into() }
    }
}

/// The answer to a query: `act`, `reqtype`, `act_code`, `client_id` echoed; `data` only on
/// success.
pub(crate) fn encode_answer(id: &Identity, echo: &QueryEcho, outcome: Result<Value, Refusal>) -> String {
    let mut m = Map::new();
    m.insert("from".into(), FROM_DEVICE.into());
    m.insert("act".into(), echo.act.clone().into());
    m.insert("reqtype".into(), echo.reqtype.clone().into());
    m.insert("act_code".into(), echo.act_code.clone().into());
    m.insert("client_id".into(), echo.client_id.clone().into());
    m.insert("hardware_id".into(), id.hardware_id.clone().into());
    match outcome {
        Ok(data) => {
            m.insert("code".into(), code::OK.into());
            m.insert("description".into(), "ok".into());
            m.insert("data".into(), data);
        }
        Err(r) => {
            m.insert("code".into(), r.code.into());
            m.insert("description".into(), r.description.into());
        }
    }
    Value::Object(m).to_string()
}

#[cfg(test)]
mod tests;
