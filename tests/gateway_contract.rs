//! The wire contract as a strictly typed gateway sees it: a gateway written from
//! docs/PROTOCOL.md the way a Go gateway on gorilla/websocket is (default `Upgrader`, which
//! selects no subprotocol; every agent message decoded into typed structs). Each agent
//! message is decoded into a struct whose fields have exactly the §2/§6/§7/§8 types and that
//! refuses unknown fields, so a number where a string belongs, a field the contract does not
//! name, or a missing one fails the test, as it would lose the message at such a gateway.

// The structs' fields are the contract: each is decoded with its type, not all are read.
#![allow(dead_code)]

mod common;

use std::fs;
use std::io::Write;
use std::time::Instant;

use common::*;
use rig_agent::queries::STANDARD_ACTS;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tungstenite::Message;

// ---- The gateway's structs: what it decodes every agent message into. ----

/// The envelope every agent message carries (§2), read first to pick the struct.
#[derive(Deserialize)]
struct Envelope {
    act: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    from: String,
    act: String,
    reqtype: String,
    act_id: String,
    act_code: String,
    client_id: String,
    hardware_id: String,
    name: String,
    token: String,
    version: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Heartbeat {
    from: String,
    act: String,
    reqtype: String,
    act_id: String,
    act_code: String,
    client_id: String,
    hardware_id: String,
}

/// A warning as §7 and §9 shape it: a disk's (`type` 2) or a GPU's (`type` 3), with
/// `maintenance` and `time_suspect` present only when true.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Warning {
    from: String,
    act: String,
    reqtype: String,
    act_id: String,
    act_code: String,
    client_id: String,
    hardware_id: String,
    name: String,
    #[serde(rename = "type")]
    kind: i64,
    message: String,
    disk: Option<String>,
    /// §7: `null` when the disk reports no serial, never "".
    serial: Option<String>,
    gpu: Option<String>,
    index: Option<u32>,
    model: Option<String>,
    uuid: Option<String>,
    reason: String,
    detail: String,
    time: u64,
    maintenance: Option<bool>,
    time_suspect: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionResult {
    from: String,
    act: String,
    reqtype: String,
    act_id: String,
    act_code: String,
    client_id: String,
    hardware_id: String,
    run_id: String,
    data: RunData,
}

/// An answer to a query (§6), `data` typed per act.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer<D> {
    from: String,
    act: String,
    reqtype: String,
    act_code: String,
    client_id: String,
    hardware_id: String,
    code: i64,
    description: String,
    data: Option<D>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaseInfo {
    hostname: Option<String>,
    os: OsInfo,
    kernel: Option<String>,
    arch: Option<String>,
    cpu: CpuInfo,
    memory: MemoryTotals,
    swap: SwapFree,
    disks: DiskTotals,
    network: Primary,
    boot_time: Option<u64>,
    uptime_secs: Option<u64>,
    agent: AgentVersion,
    hardware_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OsInfo {
    name: Option<String>,
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CpuInfo {
    model: Option<String>,
    logical_cores: Option<u64>,
    physical_cores: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoryTotals {
    total_bytes: Option<u64>,
    available_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwapFree {
    total_bytes: Option<u64>,
    free_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskTotals {
    count: u64,
    total_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Primary {
    primary_interface: Option<String>,
    primary_ipv4: Option<String>,
    primary_mac: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentVersion {
    version: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemStatus {
    cpu_usage_percent: Option<f64>,
    load_avg: LoadAvg,
    memory: MemoryUse,
    swap: SwapUse,
    processes: Option<u64>,
    uptime_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadAvg {
    one: Option<f64>,
    five: Option<f64>,
    fifteen: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoryUse {
    total_bytes: Option<u64>,
    used_bytes: Option<u64>,
    available_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwapUse {
    total_bytes: Option<u64>,
    used_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskInfo {
    disks: Vec<DiskEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskEntry {
    name: String,
    device: String,
    model: Option<String>,
    serial: Option<String>,
    size_bytes: Option<u64>,
    rotational: Option<bool>,
    state: Option<String>,
    ioerr_count: Option<u64>,
    health: String,
    reason: Option<String>,
    smart: Option<SmartInfo>,
    /// §6: why `smart` is null when SMART could not be read for that disk.
    #[serde(default)]
    smart_error: Option<String>,
    mounts: Vec<MountEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmartInfo {
    passed: Option<bool>,
    temperature_celsius: Option<f64>,
    power_on_hours: Option<u64>,
    reallocated_sectors: Option<u64>,
    pending_sectors: Option<u64>,
    indicators: Indicators,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Indicators {
    ata: std::collections::BTreeMap<String, u64>,
    nvme: Option<NvmeIndicators>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NvmeIndicators {
    critical_warning: Option<u64>,
    media_errors: Option<u64>,
    available_spare: Option<u64>,
    available_spare_threshold: Option<u64>,
    percentage_used: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MountEntry {
    mountpoint: String,
    fstype: String,
    readonly: bool,
    total_bytes: Option<u64>,
    used_bytes: Option<u64>,
    available_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkInfo {
    interfaces: Vec<Interface>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Interface {
    name: String,
    mac: Option<String>,
    ipv4: Vec<String>,
    ipv6: Vec<String>,
    up: Option<bool>,
    speed_mbps: Option<u64>,
    rx_bytes: Option<u64>,
    tx_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Temperatures {
    sensors: Vec<Sensor>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sensor {
    chip: Option<String>,
    label: String,
    celsius: f64,
    critical_celsius: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentInfo {
    version: String,
    started_at: u64,
    connected_at: Option<u64>,
    reconnects: u64,
    gateway_url: Option<String>,
    warnings_pending: u64,
    config_file: String,
    event_sources: EventSources,
    actions: Vec<String>,
    maintenance: Maintenance,
    clock: Clock,
    update: UpdateInfo,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Maintenance {
    on: bool,
    until: Option<u64>,
    by: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Clock {
    system_time: u64,
    floor: u64,
    suspect: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateInfo {
    enabled: bool,
    state: String,
    last: Option<UpdateLast>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateLast {
    update_id: String,
    outcome: String,
    from_version: String,
    to_version: String,
    detail: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSources {
    scan: String,
    kmsg: Option<String>,
    uevents: Option<String>,
    kmsg_lost_records: Option<u64>,
    uevents_dropped: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuInfo {
    gpus: Vec<Gpu>,
    nvidia_smi: NvidiaSmi,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Gpu {
    index: Option<u64>,
    vendor: String,
    name: Option<String>,
    bus_id: String,
    state: String,
    error: Option<String>,
    temperature_celsius: Option<f64>,
    junction_celsius: Option<f64>,
    memory_temperature_celsius: Option<f64>,
    fan_percent: Option<f64>,
    fan_rpm: Option<u64>,
    power_watts: Option<f64>,
    power_limit_watts: Option<f64>,
    utilization_percent: Option<f64>,
    memory_total_bytes: Option<u64>,
    memory_used_bytes: Option<u64>,
    clocks_mhz: Clocks,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Clocks {
    core: Option<u64>,
    memory: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NvidiaSmi {
    status: String,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fans {
    fans: Vec<Fan>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fan {
    chip: Option<String>,
    bus_id: Option<String>,
    label: String,
    rpm: Option<u64>,
    min_rpm: Option<u64>,
    max_rpm: Option<u64>,
    alarm: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardHealth {
    mmc: Vec<Mmc>,
    root_fs: RootFs,
    throttled: Option<Throttled>,
    under_voltage_alarm: Option<bool>,
    thermal_throttle: Option<ThermalThrottle>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mmc {
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    model: Option<String>,
    life_time_a: Option<LifeTime>,
    life_time_b: Option<LifeTime>,
    pre_eol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LifeTime {
    code: u64,
    used_percent_min: u64,
    used_percent_max: Option<u64>,
    exceeded: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RootFs {
    fstype: Option<String>,
    readonly: Option<bool>,
    total_bytes: Option<u64>,
    used_bytes: Option<u64>,
    available_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Throttled {
    raw: String,
    under_voltage_now: bool,
    frequency_capped_now: bool,
    throttled_now: bool,
    soft_temp_limit_now: bool,
    under_voltage_occurred: bool,
    frequency_capped_occurred: bool,
    throttled_occurred: bool,
    soft_temp_limit_occurred: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThermalThrottle {
    core_events: u64,
    package_events: Option<u64>,
}

/// `run_action`'s data: a post run's outcome, as `action_result` carries it (§8).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunData {
    action: String,
    exit_code: Option<i64>,
    timed_out: bool,
    duration_ms: Option<u64>,
    stdout: String,
    stderr: String,
    truncated: bool,
    interrupted: bool,
    /// Only when the command could not be started.
    #[serde(default)]
    error: Option<String>,
}

/// A `write` run accepted (§8).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunAccepted {
    action: String,
    run_id: String,
}

/// Every agent message the gateway understands, decoded.
#[derive(Debug)]
enum FromAgent {
    Login(Login),
    Heartbeat(Heartbeat),
    Warning(Warning),
    ActionResult(ActionResult),
    /// An answer to a query; the envelope typed, `data` typed per act and kept as decoded.
    Answer(Answer<()>, String),
}

fn strict<T: DeserializeOwned>(v: &Value) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("{e} in {v}"))
}

/// An answer decoded with the `data` struct of its act (and without data for errors).
fn answer_as<D: DeserializeOwned + std::fmt::Debug>(v: &Value) -> Result<(Answer<()>, String), String> {
    let a: Answer<D> = strict(v)?;
    match (a.code, &a.data) {
        (0, None) => return Err(format!("a code-0 answer without data: {v}")),
        (c, Some(_)) if c != 0 => return Err(format!("an error answer with data: {v}")),
        _ => {}
    }
    let shown = format!("{:?}", a.data);
    let Answer { from, act, reqtype, act_code, client_id, hardware_id, code, description, .. } = a;
    Ok((Answer { from, act, reqtype, act_code, client_id, hardware_id, code, description, data: None }, shown))
}

/// What a Go gateway does with a frame: the envelope, then the struct for that `act`.
fn decode(v: &Value) -> Result<FromAgent, String> {
    let env: Envelope = serde_json::from_value(v.clone()).map_err(|e| format!("no envelope ({e}): {v}"))?;
    Ok(match env.act.as_str() {
        "start" => FromAgent::Login(strict(v)?),
        "heartbeat" => FromAgent::Heartbeat(strict(v)?),
        "warning" => FromAgent::Warning(strict(v)?),
        "action_result" => FromAgent::ActionResult(strict(v)?),
        // Answers: errors carry no data, so any act decodes them; data is typed per act.
        _ if v["code"] != 0 => {
            let (a, shown) = answer_as::<Value>(v)?;
            FromAgent::Answer(a, shown)
        }
        "get_system_baseinfo" => answer_as::<BaseInfo>(v).map(|(a, s)| FromAgent::Answer(a, s))?,
        "get_system_status" => answer_as::<SystemStatus>(v).map(|(a, s)| FromAgent::Answer(a, s))?,
        "get_disk_info" => answer_as::<DiskInfo>(v).map(|(a, s)| FromAgent::Answer(a, s))?,
        "get_network_info" => answer_as::<NetworkInfo>(v).map(|(a, s)| FromAgent::Answer(a, s))?,
        "get_temperature" => answer_as::<Temperatures>(v).map(|(a, s)| FromAgent::Answer(a, s))?,
        "get_agent_info" => answer_as::<AgentInfo>(v).map(|(a, s)| FromAgent::Answer(a, s))?,
        "get_gpu_info" => answer_as::<GpuInfo>(v).map(|(a, s)| FromAgent::Answer(a, s))?,
        "get_fans" => answer_as::<Fans>(v).map(|(a, s)| FromAgent::Answer(a, s))?,
        "get_board_health" => answer_as::<BoardHealth>(v).map(|(a, s)| FromAgent::Answer(a, s))?,
        "run_action" if v["reqtype"] == "write" => answer_as::<RunAccepted>(v).map(|(a, s)| FromAgent::Answer(a, s))?,
        "run_action" => answer_as::<RunData>(v).map(|(a, s)| FromAgent::Answer(a, s))?,
        other => return Err(format!("a code-0 answer to an act the gateway never asked: {other}: {v}")),
    })
}

/// Every field the contract fixes to one value on every agent message (§2).
fn check_envelope(from: &str, hardware_id: &str, reqtype: &str, what: &str) {
    assert_eq!(from, "device", "{what}");
    assert_eq!(hardware_id, HARDWARE_ID, "{what}");
    assert!(reqtype == "post" || reqtype == "write", "{what}: reqtype {reqtype:?}");
}

// ---- The scenario. ----

/// The queries a gateway sends: the whole catalogue, a `write` and a `post` action, and
/// queries the agent must refuse, each with its act_code, and the code its answer has.
fn queries() -> Vec<(Value, &'static str, i64)> {
    // The agent's own list: an act added to it without a struct here fails `decode`.
    let mut q: Vec<(Value, &'static str, i64)> = STANDARD_ACTS
        .iter()
        .copied()
        .map(|act| (json!({"from":"html","act":act,"reqtype":"post","act_code":act,"client_id":"c-42"}), act, 0))
        .collect();
    q.extend([
        (json!({"from":"html","act":"get_bogus","reqtype":"post","act_code":"unknown","client_id":"c"}), "unknown", 1),
        // A number where §2 says string: answered code 2, echoed as the string "42".
        (json!({"from":"html","act":"get_agent_info","reqtype":"post","act_code":42,"client_id":"c"}), "42", 2),
        (json!({"from":"html","act":"get_agent_info","reqtype":"write","act_code":"nul","client_id":null}), "nul", 2),
        (
            json!({"from":"html","act":"run_action","reqtype":"post","act_code":"no-such","client_id":"c",
                "action":"nope"}),
            "no-such",
            4,
        ),
        (
            json!({"from":"html","act":"run_action","reqtype":"post","act_code":"run-post","client_id":"c",
                "action":"hello"}),
            "run-post",
            0,
        ),
        (
            json!({"from":"html","act":"run_action","reqtype":"write","act_code":"run-write","client_id":"c-7",
                "action":"echo"}),
            "run-write",
            0,
        ),
    ]);
    q
}

struct Setup {
    dir: tempfile::TempDir,
    rig: std::path::PathBuf,
    pki: Pki,
    gw: Gateway,
}

fn setup(script: Script) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let rig = rig_copy(dir.path());
    let pki = Pki::new(&["localhost"]);
    let gw = Gateway::start(&pki, script);
    Setup { dir, rig, pki, gw }
}

fn agent_config(s: &Setup, subprotocol: Option<&str>) -> AgentConfig {
    let mut c = AgentConfig::new(s.gw.url(), &s.pki.ca_file);
    c.disks = "smartctl = \"\"\nscan_interval = \"100ms\"\n".into();
    c.paths_extra = rig_paths(&s.rig);
    if let Some(p) = subprotocol {
        c.gateway_extra = format!("subprotocol = {p:?}\n");
    }
    c.sections = "[actions]\nenabled = true\n\
                  [actions.hello]\ncommand = [\"/bin/echo\", \"hello\"]\n\
                  [actions.echo]\ncommand = [\"/bin/echo\", \"bytes\"]\n"
        .into();
    c
}

/// The whole contract once: log in, every query, warnings (one with no serial), a write
/// action's result, a binary frame; every message the agent sent decoded strictly.
fn every_message_decodes(subprotocol: Option<&str>) {
    let mut s = setup(Script::default());
    let port = s.gw.addr.port().to_string();
    let _agent = Agent::start(&agent_config(&s, subprotocol).write(s.dir.path()));
    let up = s.gw.wait_for(10 * SEC, "upgrade", |e| matches!(e, Event::Upgraded { .. }));
    let Event::Upgraded { protocol, .. } = up else { unreachable!() };
    assert_eq!(protocol.as_deref(), subprotocol, "the subprotocol offered");
    let (conn, _) = s.gw.wait_login(10 * SEC);
    // The fixture's sdb has no serial and is offline from the start.
    s.gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    fs::remove_dir_all(s.rig.join("sys/block/sda")).unwrap();
    s.gw.wait_warning(10 * SEC, "/dev/sda", "missing");
    let queries = queries();
    for (q, _, _) in &queries {
        s.gw.send_json(conn, q.clone());
    }
    s.gw.send(conn, Message::Binary(vec![0x00, 0xff, b'{', 0xc3].into()));
    let (mut answered, mut result) = (std::collections::HashSet::new(), false);
    s.gw.wait_for(20 * SEC, "every answer and the action result", |e| {
        if let Event::Received { msg, .. } = e {
            result |= msg["act"] == "action_result";
            if msg["act"] != "heartbeat" {
                answered.insert(msg["act_code"].as_str().map_or(msg["act_code"].to_string(), str::to_string));
            }
        }
        result && queries.iter().all(|(_, code, _)| answered.contains(*code))
    });
    s.gw.wait_for(5 * SEC, "a heartbeat after the queries", |e| e.act() == Some("heartbeat"));

    let mut decoded = Vec::new();
    for e in &s.gw.seen {
        if let Event::Received { msg, .. } = e {
            decoded.push(decode(msg).unwrap_or_else(|why| panic!("a typed gateway cannot decode: {why}")));
        }
    }
    let mut seen_answers = std::collections::HashMap::new();
    let (mut logins, mut heartbeats, mut results, mut no_serial) = (0, 0, 0, false);
    for m in &decoded {
        match m {
            FromAgent::Login(l) => {
                check_envelope(&l.from, &l.hardware_id, &l.reqtype, "login");
                assert_eq!((l.act.as_str(), l.act_code.as_str(), l.client_id.as_str()), ("start", "", ""));
                assert!(!l.act_id.is_empty() && l.token == TOKEN && !l.name.is_empty());
                assert!(l.version.starts_with("rig-agent "), "{}", l.version);
                logins += 1;
            }
            FromAgent::Heartbeat(h) => {
                check_envelope(&h.from, &h.hardware_id, &h.reqtype, "heartbeat");
                assert_eq!((h.act.as_str(), h.act_code.as_str(), h.client_id.as_str()), ("heartbeat", "", ""));
                assert!(!h.act_id.is_empty());
                heartbeats += 1;
            }
            FromAgent::Warning(w) => {
                check_envelope(&w.from, &w.hardware_id, &w.reqtype, "warning");
                assert_eq!((w.act.as_str(), w.act_code.as_str(), w.client_id.as_str()), ("warning", "", ""));
                let disk = w.disk.as_deref().unwrap_or_else(|| panic!("a v1 warning names a disk: {w:?}"));
                assert_eq!((w.kind, w.message.as_str()), (2, format!("Disk[{disk}]硬盘损坏").as_str()));
                assert!(w.gpu.is_none() && w.index.is_none() && w.model.is_none() && w.uuid.is_none(), "{w:?}");
                assert!(w.maintenance.is_none() && w.time_suspect.is_none(), "v1 keys only: {w:?}");
                assert!(!w.act_id.is_empty() && !w.name.is_empty() && !w.reason.is_empty() && !w.detail.is_empty());
                assert!(w.time > 1_700_000_000);
                no_serial |= disk == "/dev/sdb" && w.serial.is_none();
            }
            FromAgent::ActionResult(r) => {
                check_envelope(&r.from, &r.hardware_id, &r.reqtype, "action_result");
                assert_eq!(
                    (r.act.as_str(), r.act_code.as_str(), r.client_id.as_str()),
                    ("action_result", "run-write", "c-7")
                );
                assert_eq!((r.act_id.as_str(), r.data.action.as_str()), (r.run_id.as_str(), "echo"));
                assert_eq!((r.data.exit_code, r.data.stdout.as_str()), (Some(0), "bytes\n"));
                assert!(!r.data.timed_out && !r.data.truncated && !r.data.interrupted && r.data.stderr.is_empty());
                assert!(r.data.duration_ms.is_some() && r.data.error.is_none());
                results += 1;
            }
            FromAgent::Answer(a, data) => {
                check_envelope(&a.from, &a.hardware_id, &a.reqtype, &a.act);
                assert!(!a.description.is_empty(), "{a:?}");
                seen_answers.insert(a.act_code.clone(), (a.code, a.client_id.clone(), data.clone()));
            }
        }
    }
    assert_eq!(logins, 1);
    assert!(heartbeats >= 1, "heartbeats go on");
    assert_eq!(results, 1, "one action_result, acknowledged once");
    assert!(no_serial, "the warning about a disk without a serial says serial: null");
    for (q, code, want) in &queries {
        let (got, client_id, data) = seen_answers.get(*code).unwrap_or_else(|| panic!("no answer to {q}"));
        assert_eq!(got, want, "answer to {q}: {data}");
        let sent_client = q["client_id"].as_str().unwrap_or("");
        assert_eq!(client_id, sent_client, "client_id echoed as a string");
    }
    // get_disk_info lists the vanished disk as missing, the one without a serial as null.
    let disks = &seen_answers["get_disk_info"].2;
    assert!(disks.contains("name: \"sda\"") && disks.contains("health: \"missing\""), "{disks}");

    // What the rig's log says about this gateway: the subprotocol outcome once, the
    // action result's acknowledgement under its own name, the binary frame's bytes.
    let no_sub = warnings_with(&port).into_iter().filter(|l| l.contains("selected no subprotocol")).count();
    assert_eq!(no_sub, usize::from(subprotocol.is_some()), "{:?}", warnings_with(&port));
    assert!(warnings_with("upgrade refused").iter().all(|l| !l.contains(&port)));
    let run_id = decoded.iter().find_map(|m| match m {
        FromAgent::ActionResult(r) => Some(r.run_id.clone()),
        _ => None,
    });
    let acked = format!("action_result {} acknowledged by the gateway", run_id.unwrap());
    wait_until(5 * SEC, "the acknowledgement logged", || !logged_with(&acked).is_empty());
    assert!(
        !warnings_with("dropped a binary frame of 4 bytes (the protocol is JSON text): \\x00\\xff{\\xc3").is_empty()
    );
}

#[test]
fn a_strictly_typed_gateway_decodes_every_agent_message_without_a_subprotocol() {
    let _g = Guard::new(60 * SEC);
    every_message_decodes(None);
}

#[test]
fn a_gateway_that_selects_no_subprotocol_gets_a_login_and_every_message_decodes() {
    let _g = Guard::new(60 * SEC);
    every_message_decodes(Some("rig.v1"));
}

#[test]
fn a_gateway_that_selects_the_offered_subprotocol_gets_a_login_and_nothing_is_said() {
    let _g = Guard::new(30 * SEC);
    let mut s = setup(Script { select_subprotocol: Some("rig.v1".into()), ..Script::default() });
    let port = s.gw.addr.port().to_string();
    let _agent = Agent::start(&agent_config(&s, Some("rig.v0, rig.v1")).write(s.dir.path()));
    s.gw.wait_login(10 * SEC);
    s.gw.wait_act(5 * SEC, "heartbeat");
    assert!(warnings_with(&port).iter().all(|l| !l.contains("subprotocol")), "{:?}", warnings_with(&port));
}

#[test]
fn a_gateway_that_selects_a_subprotocol_not_offered_is_refused_with_a_message_saying_so() {
    let _g = Guard::new(30 * SEC);
    let mut s = setup(Script { select_subprotocol: Some("chat".into()), ..Script::default() });
    let port = s.gw.addr.port().to_string();
    let _agent = Agent::start(&agent_config(&s, Some("rig.v1")).write(s.dir.path()));
    // Two upgrades answered: the agent retries, and never sends a login on either.
    for _ in 0..2 {
        s.gw.wait_for(10 * SEC, "an upgrade", |e| matches!(e, Event::Upgraded { .. }));
    }
    let want = "WebSocket upgrade refused: the gateway selected subprotocol \"chat\", which the agent did not \
                offer (it offered \"rig.v1\")";
    wait_until(10 * SEC, "the refusal logged", || warnings_with(&port).iter().any(|l| l.contains(want)));
    assert!(s.gw.seen.iter().all(|e| e.act() != Some("start")), "a login was sent: {:?}", s.gw.seen);
}

#[test]
fn a_gateway_that_pings_but_never_answers_heartbeats_is_left_after_heartbeat_timeout_and_the_log_says_why() {
    let _g = Guard::new(60 * SEC);
    let mut s = setup(Script { answer_heartbeats: false, ..Script::default() });
    let port = s.gw.addr.port().to_string();
    let mut c = agent_config(&s, Some("rig.v1"));
    // Pings every 2 s arrive well within heartbeat.timeout: frames never stop.
    (c.heartbeat_interval, c.heartbeat_timeout) = ("1s", "3s");
    let _agent = Agent::start(&c.write(s.dir.path()));
    let (conn, _) = s.gw.wait_login(10 * SEC);
    let (_, _, first_heartbeat) = s.gw.wait_act(5 * SEC, "heartbeat");
    let mut next_ping = Instant::now();
    let closed = loop {
        if Instant::now() >= next_ping {
            s.gw.send(conn, Message::Ping(b"gorilla".to_vec().into()));
            next_ping += 2 * SEC;
        }
        match s.gw.next_event(ms(100)) {
            Some(Event::Closed { conn: c, code, at }) if c == conn => break (code, at),
            Some(Event::Gone { conn: c, .. }) if c == conn => panic!("dropped without a close: {:?}", s.gw.seen),
            _ => {}
        }
        assert!(Instant::now() < first_heartbeat + 20 * SEC, "still connected 20 s after an unanswered heartbeat");
    };
    assert_eq!(closed.0, Some(1000));
    // Both times are when this gateway read the frames: the heartbeat's may lag its sending
    // by a scheduling delay, which the close does not have to wait again.
    let after = closed.1 - first_heartbeat;
    assert!(after >= ms(2900), "closed {after:?} after the first heartbeat, before heartbeat.timeout");
    let (again, _) = s.gw.wait_login(10 * SEC);
    assert_ne!(again, conn, "logged in again on a new connection");
    let said = warnings_with(&port);
    assert!(
        said.iter().any(|l| l.contains("no heartbeat answered for") && l.contains("the gateway's application is gone")),
        "{said:?}"
    );
}

// ---- v1.2 (§9): the messages a rig sends once its config turns them on. ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarningCleared {
    from: String,
    act: String,
    reqtype: String,
    act_id: String,
    ref_act_id: String,
    act_code: String,
    client_id: String,
    hardware_id: String,
    #[serde(rename = "type")]
    kind: i64,
    disk: Option<String>,
    gpu: Option<String>,
    reason: String,
    detail: String,
    time: u64,
    maintenance: Option<bool>,
    time_suspect: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recovery {
    from: String,
    act: String,
    reqtype: String,
    act_id: String,
    ref_act_id: String,
    act_code: String,
    client_id: String,
    hardware_id: String,
    data: RecoveryData,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoveryData {
    step: String,
    dry_run: Option<bool>,
    /// An action's result as `action_result` carries it, a refusal, or null in a dry run;
    /// absent when the ladder gives up.
    result: Option<Value>,
    why: Option<String>,
    budget_left: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateResult {
    from: String,
    act: String,
    reqtype: String,
    act_id: String,
    act_code: String,
    client_id: String,
    hardware_id: String,
    update_id: String,
    data: UpdateOutcome,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateOutcome {
    outcome: String,
    from_version: String,
    to_version: String,
    detail: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateAccepted {
    update_id: String,
    from_version: String,
    to_version: String,
}

/// What the v1.2 acts and messages decode into, beside [`decode`]'s.
enum FromAgentV12 {
    Cleared(WarningCleared),
    Recovery(Recovery),
    UpdateResult(UpdateResult),
    Other(FromAgent),
}

fn decode_v12(v: &Value) -> Result<FromAgentV12, String> {
    let env: Envelope = serde_json::from_value(v.clone()).map_err(|e| format!("no envelope ({e}): {v}"))?;
    Ok(match env.act.as_str() {
        "warning_cleared" => FromAgentV12::Cleared(strict(v)?),
        "recovery" => FromAgentV12::Recovery(strict(v)?),
        "update_result" => FromAgentV12::UpdateResult(strict(v)?),
        "set_maintenance" if v["code"] == 0 => {
            FromAgentV12::Other(answer_as::<Maintenance>(v).map(|(a, s)| FromAgent::Answer(a, s))?)
        }
        "update_agent" if v["code"] == 0 => {
            FromAgentV12::Other(answer_as::<UpdateAccepted>(v).map(|(a, s)| FromAgent::Answer(a, s))?)
        }
        _ => FromAgentV12::Other(decode(v)?),
    })
}

/// A minisign public key (the base64 line of a `.pub` file); nothing is signed with it here.
const UPDATE_KEY: &str = "RWQluyckVB15nlYpgNXxtNaUp7e8ukzyGuj0kMFbgn+a2arrcb4/oJ71";
const GPU: &str = "0000:01:00.0";

/// Every v1.2 message once, decoded by the same strict gateway: a GPU warning made in
/// maintenance, `set_maintenance` answered, the dry-run `recovery` step taken once
/// maintenance ends, a disk episode's `warning_cleared`, and an update offer answered and
/// its `update_result` (the mirror is down: `refused`).
#[test]
fn a_strictly_typed_gateway_decodes_every_v1_2_message() {
    let _g = Guard::new(90 * SEC);
    let mut s = setup(Script::default());
    let pci = s.rig.join("sys/bus/pci/devices").join(GPU);
    fs::create_dir_all(&pci).unwrap();
    fs::write(pci.join("class"), "0x030000\n").unwrap();
    fs::write(pci.join("vendor"), "0x10de\n").unwrap();
    let kmsg = s.dir.path().join("kmsg.log");
    fs::write(&kmsg, "").unwrap();
    let update_dir = s.dir.path().join("update");
    fs::create_dir(&update_dir).unwrap();
    let mut c = agent_config(&s, None);
    c.paths_extra = format!(
        "{}kmsg = {:?}\nupdate_dir = {:?}\n",
        rig_paths(&s.rig),
        kmsg.display().to_string(),
        update_dir.display().to_string()
    );
    c.warning = "send_cleared = true\n".into();
    c.sections += &format!(
        "[probes]\nnvidia_smi = \"\"\n[maintenance]\nremote = true\n\
         [recovery]\nenabled = true\ndry_run = true\n\
         [recovery.gpu_lost]\nsteps = [\"hello\"]\nbudget = \"3 per 1h\"\n\
         [update]\nenabled = true\nkeys = [{UPDATE_KEY:?}]\n"
    );
    let _agent = Agent::start(&c.write(s.dir.path()));
    let (conn, _) = s.gw.wait_login(10 * SEC);
    s.gw.wait_warning(10 * SEC, "/dev/sdb", "offline");

    s.gw.send_json(
        conn,
        json!({"from":"html","act":"set_maintenance","reqtype":"post","act_code":"m-on",
        "client_id":"c-42","on":true,"minutes":60}),
    );
    s.gw.wait_act(10 * SEC, "set_maintenance");
    let record = "4,1,1000,c;NVRM: Xid (PCI:0000:01:00): 79, pid=1712, name=t-rex, GPU has fallen off the bus.\n";
    fs::OpenOptions::new().append(true).open(&kmsg).unwrap().write_all(record.as_bytes()).unwrap();
    let w = s.gw.wait_gpu(10 * SEC, "warning", GPU, "gpu_lost");
    assert_eq!(w["maintenance"], true, "{w}");
    s.gw.send_json(
        conn,
        json!({"from":"html","act":"set_maintenance","reqtype":"post","act_code":"m-off",
        "client_id":"c-42","on":false}),
    );
    s.gw.wait_act(10 * SEC, "recovery");

    let sda = s.rig.join("sys/block/sda");
    let away = s.rig.join("sda.away");
    fs::rename(&sda, &away).unwrap();
    s.gw.wait_warning(10 * SEC, "/dev/sda", "missing");
    fs::rename(&away, &sda).unwrap();
    s.gw.wait_act(10 * SEC, "warning_cleared");

    // A mirror nobody listens on: the offer is taken, the download fails, the outcome says so.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    s.gw.send_json(
        conn,
        json!({"from":"html","act":"update_agent","reqtype":"write","act_code":"u1",
        "client_id":"c-7","version":"9.0.0","target":rig_agent::TARGET,
        "url":format!("http://127.0.0.1:{port}/rig-agent"),"size":1000,"sha256":"ab".repeat(32),
        "signature":"untrusted comment: x\nRW...\ntrusted comment: y\nzz\n"}),
    );
    s.gw.wait_act(30 * SEC, "update_result");
    s.gw.wait_act(5 * SEC, "heartbeat");

    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for e in &s.gw.seen {
        let Event::Received { msg, .. } = e else { continue };
        let m = decode_v12(msg).unwrap_or_else(|why| panic!("a typed gateway cannot decode: {why}"));
        let kind = match m {
            FromAgentV12::Other(FromAgent::Warning(w)) => {
                check_envelope(&w.from, &w.hardware_id, &w.reqtype, "warning");
                assert_eq!((w.act_code.as_str(), w.client_id.as_str()), ("", ""));
                assert!(w.maintenance != Some(false) && w.time_suspect.is_none(), "present only when true");
                match (w.kind, &w.disk, &w.gpu) {
                    (2, Some(d), None) => assert_eq!(w.message, format!("Disk[{d}]硬盘损坏")),
                    (3, None, Some(g)) => {
                        assert_eq!(w.message, format!("GPU[{g}]显卡故障"));
                        assert_eq!((w.maintenance, w.index, w.uuid.as_deref()), (Some(true), None, None));
                    }
                    _ => panic!("a warning names one disk (type 2) or one GPU (type 3): {msg}"),
                }
                if w.kind == 3 { "gpu warning" } else { "disk warning" }
            }
            FromAgentV12::Cleared(c) => {
                check_envelope(&c.from, &c.hardware_id, &c.reqtype, "warning_cleared");
                assert_eq!((c.kind, c.disk.as_deref(), c.gpu.as_deref()), (2, Some("/dev/sda"), None));
                assert!(!c.ref_act_id.is_empty() && c.ref_act_id != c.act_id && c.reason == "missing");
                "warning_cleared"
            }
            FromAgentV12::Recovery(r) => {
                check_envelope(&r.from, &r.hardware_id, &r.reqtype, "recovery");
                assert_eq!((r.act_code.as_str(), r.client_id.as_str()), ("", ""));
                assert_eq!((r.data.step.as_str(), r.data.dry_run, r.data.budget_left), ("hello", Some(true), 2));
                assert_eq!(msg["data"].get("result"), Some(&Value::Null), "a dry run's result is null: {msg}");
                "recovery"
            }
            FromAgentV12::UpdateResult(u) => {
                check_envelope(&u.from, &u.hardware_id, &u.reqtype, "update_result");
                assert_eq!(
                    (u.act_code.as_str(), u.client_id.as_str(), u.act_id.as_str()),
                    ("u1", "c-7", u.update_id.as_str())
                );
                assert_eq!((u.data.outcome.as_str(), u.data.to_version.as_str()), ("refused", "9.0.0"), "{msg}");
                "update_result"
            }
            FromAgentV12::Other(FromAgent::Answer(a, _)) if a.act == "set_maintenance" || a.act == "update_agent" => {
                assert_eq!(a.code, 0, "{msg}");
                "answer"
            }
            FromAgentV12::Other(_) => "v1",
        };
        *kinds.entry(kind).or_default() += 1;
    }
    for kind in ["gpu warning", "disk warning", "warning_cleared", "recovery", "update_result"] {
        assert!(kinds.get(kind).is_some_and(|n| *n >= 1), "no {kind} decoded: {kinds:?}");
    }
    assert_eq!(kinds.get("answer"), Some(&3), "set_maintenance twice, update_agent once: {kinds:?}");
}
