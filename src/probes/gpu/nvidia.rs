//! NVIDIA GPUs through nvidia-smi: the query, its parser, and the reader that runs it in
//! a child process with a timeout and reuses its answer for an interval.

use super::{Gpu, GpuState, Vendor, tame};
use crate::os::child;
use crate::probes::units;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The fields asked of nvidia-smi, in the order [`parse_nvidia`] reads them.
pub const NVIDIA_QUERY: &str = "index,name,pci.bus_id,temperature.gpu,fan.speed,power.draw,power.limit,\
utilization.gpu,memory.total,memory.used,clocks.gr,clocks.mem,uuid";

/// How much of nvidia-smi's output is read: a line per GPU is about 100 bytes.
pub(super) const NVIDIA_OUTPUT_CAP: usize = 256 << 10;

/// Why nvidia-smi gave no GPU list. None is fatal; each is reported in `nvidia_smi` of the
/// answer and logged when it first happens (a missing binary once for the agent's life).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvidiaError {
    /// Nothing to do: the operator turned it off.
    #[error("nvidia-smi is disabled (probes.nvidia_smi = \"\")")]
    Disabled,
    /// A rig without NVIDIA's driver; set `probes.nvidia_smi` if it lives outside `PATH`.
    #[error("{0} not found: no NVIDIA GPUs are reported (set probes.nvidia_smi if it is installed elsewhere)")]
    NotInstalled(String),
    /// The binary exists but cannot be started (permissions, wrong architecture).
    #[error("cannot run {0}")]
    Spawn(String),
    /// The driver hung (a GPU fallen off the bus can do that); it is asked again after
    /// `probes.nvidia_smi_interval`.
    #[error("nvidia-smi ran over {0:?} and was killed with its process group")]
    TimedOut(Duration),
    /// The last nvidia-smi was killed but has not ended (stuck in the driver, D state)
    /// these many seconds; no other is started until it does. Check the GPUs (Xid in dmesg).
    #[error("nvidia-smi still stuck since {0} s ago (killed, not ended; not started again)")]
    StillStuck(u64),
    /// nvidia-smi answered with no GPU line (driver not loaded, say); its words are given.
    #[error("nvidia-smi failed: {0}")]
    Failed(String),
}

impl NvidiaError {
    pub fn status(&self) -> &'static str {
        match self {
            NvidiaError::Disabled => "disabled",
            NvidiaError::NotInstalled(_) => "not_installed",
            NvidiaError::Spawn(_) => "spawn_failed",
            NvidiaError::TimedOut(_) => "timed_out",
            NvidiaError::StillStuck(_) => "stuck",
            NvidiaError::Failed(_) => "failed",
        }
    }
}

/// `[N/A]`, `[Not Supported]`, `[Unknown Error]`, `[GPU requires reset]`: all `None`.
pub(super) fn field<T: std::str::FromStr>(s: &str) -> Option<T> {
    let s = s.trim();
    if s.starts_with('[') || s.eq_ignore_ascii_case("N/A") {
        return None;
    }
    s.parse().ok()
}

/// The fields of [`NVIDIA_QUERY`] after the name.
const FIXED: usize = 11;

/// NVIDIA's GPU UUID (`GPU-5e1f0c2a-8b3d-4e7f-9a1b-2c3d4e5f6a7b`); anything else is `None`.
fn uuid(s: &str) -> Option<String> {
    let hex = s.strip_prefix("GPU-")?;
    let ok = hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then(|| s.to_ascii_lowercase().replacen("gpu-", "GPU-", 1))
}

/// nvidia-smi writes the PCI domain with 8 digits and upper case (`00000000:0A:00.0`);
/// sysfs, lspci and its own error lines use 4 and lower case.
pub fn normalize_bus_id(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    match s.split_once(':') {
        Some((domain, rest)) if domain.len() == 8 && domain.starts_with("0000") => format!("{}:{rest}", &domain[4..]),
        _ => s,
    }
}

/// Parses nvidia-smi's answer to [`NVIDIA_QUERY`]: one CSV line per GPU, and for a GPU the
/// driver cannot reach a line "Unable to determine the device handle for GPU 0000:03:00.0:
/// GPU is lost. Reboot …", which becomes a GPU in state `lost` (or `error`). "No devices
/// were found" is an empty list. Any other answer without a GPU line is an error carrying
/// nvidia-smi's first line.
pub fn parse_nvidia(text: &str) -> Result<Vec<Gpu>, String> {
    let mut gpus = Vec::new();
    let mut other = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("Unable to determine the device handle for GPU") {
            let rest = rest.trim_start();
            // "0000:03:00.0: GPU is lost. Reboot …": the address has colons of its own.
            let (bus, why) = match rest.match_indices(": ").next() {
                Some((i, _)) => (&rest[..i], rest[i + 2..].trim()),
                None => (rest.trim_end_matches(':'), ""),
            };
            let lost = why.to_ascii_lowercase().contains("gpu is lost");
            let mut g = Gpu::empty(Vendor::Nvidia, if lost { GpuState::Lost } else { GpuState::Error });
            g.bus_id = (!bus.is_empty()).then(|| normalize_bus_id(bus));
            g.error = Some(tame(if why.is_empty() { line } else { why }));
            gpus.push(g);
            continue;
        }
        if line.eq_ignore_ascii_case("No devices were found") {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let Some(index) = f.first().and_then(|i| i.parse::<u32>().ok()).filter(|_| f.len() >= 2 + FIXED) else {
            other.get_or_insert(line);
            continue;
        };
        // A name with a comma in it would shift the fields: the last ones are fixed.
        let tail = &f[f.len() - FIXED..];
        let name = f[1..f.len() - FIXED].join(",");
        // Each value is checked against what a GPU can report: a wrapped product or an
        // impossible reading is null, never passed on.
        let mib = |s: &str| field::<u64>(s).and_then(|m| units::bytes(m, units::MIB));
        let real = |s: &str, check: fn(f64) -> Option<f64>| field::<f64>(s).and_then(check);
        let mhz = |s: &str| field::<u64>(s).and_then(|m| units::within_u64(m, &units::MHZ));
        gpus.push(Gpu {
            index: Some(index),
            name: (!name.is_empty()).then_some(name),
            bus_id: Some(normalize_bus_id(tail[0])),
            temperature_celsius: real(tail[1], units::celsius),
            fan_percent: real(tail[2], units::percent),
            power_watts: real(tail[3], units::watts),
            power_limit_watts: real(tail[4], units::watts),
            utilization_percent: real(tail[5], units::percent),
            memory_total_bytes: mib(tail[6]),
            memory_used_bytes: mib(tail[7]),
            core_clock_mhz: mhz(tail[8]),
            memory_clock_mhz: mhz(tail[9]),
            uuid: uuid(tail[10]),
            ..Gpu::empty(Vendor::Nvidia, GpuState::Ok)
        });
    }
    match other {
        Some(line) if gpus.is_empty() => Err(tame(line)),
        _ => Ok(gpus),
    }
}

/// `probes.nvidia_smi`, `probes.nvidia_smi_timeout`, `probes.nvidia_smi_interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvidiaSettings {
    pub binary: String,
    pub timeout: Duration,
    pub max_age: Duration,
}

/// An answer, when it was taken and with which settings: one taken with other settings
/// (before a reload) is not reused.
type Cached = (Instant, NvidiaSettings, Result<Vec<Gpu>, NvidiaError>);

pub struct NvidiaReader {
    settings: Mutex<NvidiaSettings>,
    /// Held while nvidia-smi runs, so that queries arriving meanwhile share its answer.
    cache: Mutex<Option<Cached>>,
    missing_logged: AtomicBool,
    last_logged: Mutex<Option<String>>,
    /// nvidia-smi runs killed at the timeout and not ended yet, by binary.
    stuck: child::StuckRuns,
}

impl NvidiaReader {
    pub fn new(settings: NvidiaSettings) -> NvidiaReader {
        NvidiaReader {
            settings: Mutex::new(settings),
            cache: Mutex::new(None),
            missing_logged: AtomicBool::new(false),
            last_logged: Mutex::new(None),
            stuck: child::StuckRuns::default(),
        }
    }

    /// New settings from a reloaded config. Called on the runner thread, so it never waits
    /// for the cache (held while nvidia-smi runs): an answer taken with other settings is
    /// simply not reused.
    pub fn reconfigure(&self, new: NvidiaSettings) {
        let mut s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        if s.binary != new.binary {
            self.missing_logged.store(false, Ordering::Relaxed);
        }
        *s = new;
    }

    fn settings(&self) -> NvidiaSettings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The NVIDIA GPUs, from the cache when younger than `nvidia_smi_interval`.
    pub fn read(&self) -> Result<Vec<Gpu>, NvidiaError> {
        self.read_timed().1
    }

    /// [`NvidiaReader::read`] with the instant the run that answered started: the GPU
    /// monitor believes a lost GPU is back only from a run started after it was lost.
    pub fn read_timed(&self) -> (Instant, Result<Vec<Gpu>, NvidiaError>) {
        let settings = self.settings();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, taken_with, result)) = cache.as_ref()
            && at.elapsed() < settings.max_age
            && *taken_with == settings
        {
            return (*at, result.clone());
        }
        let started = Instant::now();
        // One stuck nvidia-smi at most: another would hang in the same driver call.
        let result = match self.stuck.stuck_for(&settings.binary) {
            Some(stuck) => Err(NvidiaError::StillStuck(stuck.as_secs())),
            None => run_noting(&settings, &self.stuck),
        };
        let _ = self.log(&result);
        *cache = Some((started, settings, result.clone()));
        (started, result)
    }

    /// A missing binary once for the agent's life; other failures when they first happen
    /// and again after a success, not on every query. Returns whether it logged.
    pub(super) fn log(&self, result: &Result<Vec<Gpu>, NvidiaError>) -> bool {
        let mut last = self.last_logged.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) | Err(NvidiaError::Disabled) => {
                *last = None;
                false
            }
            Err(e @ NvidiaError::NotInstalled(_)) => {
                let first = !self.missing_logged.swap(true, Ordering::Relaxed);
                if first {
                    // A rig of AMD cards has no nvidia-smi: a fact, not a warning.
                    log::info!("{e}");
                }
                first
            }
            // Warned when it timed out; the seconds change each time.
            Err(NvidiaError::StillStuck(_)) => false,
            Err(e) => {
                let text = e.to_string();
                let new = last.as_deref() != Some(&text);
                if new {
                    log::warn!("{text}");
                    *last = Some(text);
                }
                new
            }
        }
    }
}

/// Runs nvidia-smi now, bypassing the cache.
pub fn run(s: &NvidiaSettings) -> Result<Vec<Gpu>, NvidiaError> {
    run_noting(s, &child::StuckRuns::default())
}

/// [`run`], keeping a run killed but not ended in `stuck` under the binary's name.
fn run_noting(s: &NvidiaSettings, stuck: &child::StuckRuns) -> Result<Vec<Gpu>, NvidiaError> {
    if s.binary.is_empty() {
        return Err(NvidiaError::Disabled);
    }
    let query = format!("--query-gpu={NVIDIA_QUERY}");
    let args = [query.as_str(), "--format=csv,noheader,nounits"];
    let mut cmd = Command::new(&s.binary);
    cmd.args(args);
    // The shared runner: its own process group, killed whole at the timeout, and never a
    // wait on pipes a stuck driver call or a wrapper's children hold.
    let outcome = child::run(cmd, s.timeout, NVIDIA_OUTPUT_CAP);
    if let Ok(o) = &outcome {
        stuck.note(&s.binary, o);
    }
    let (out, err) = match outcome {
        Ok(o) if o.timed_out => return Err(NvidiaError::TimedOut(s.timeout)),
        Ok(o) => (o.stdout, o.stderr),
        Err(e) if e.is_not_found() => return Err(NvidiaError::NotInstalled(tame(&s.binary))),
        Err(e) => return Err(NvidiaError::Spawn(tame(&format!("{}: {}", s.binary, e.source)))),
    };
    // The "device handle" lines go to stdout or stderr depending on the driver version.
    let text = format!("{}\n{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
    parse_nvidia(&text).map_err(NvidiaError::Failed)
}

// ---------------------------------------------------------------------------------------
// AMD
