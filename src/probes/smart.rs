//! SMART health through `smartctl --json -H -A <device>`: run in a child process that is
//! killed when it runs over `disks.smart_timeout`, each result cached for
//! `disks.smart_interval` so that neither queries nor scans wake the disks more often.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::os::child;
use crate::privileged_client::wire::{MAX_OUTPUT, SmartAnswer};
use crate::probes::indicators::Indicators;

/// What the agent reports of a disk's SMART data; fields smartctl did not give are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smart {
    pub passed: Option<bool>,
    pub temperature_celsius: Option<i64>,
    pub power_on_hours: Option<u64>,
    pub reallocated_sectors: Option<u64>,
    pub pending_sectors: Option<u64>,
    /// Predictive indicators: the Backblaze five and the NVMe health fields.
    pub indicators: Indicators,
}

impl Smart {
    pub fn to_json(&self) -> Value {
        json!({
            "passed": self.passed,
            "temperature_celsius": self.temperature_celsius,
            "power_on_hours": self.power_on_hours,
            "reallocated_sectors": self.reallocated_sectors,
            "pending_sectors": self.pending_sectors,
            "indicators": self.indicators.to_json(),
        })
    }
}

/// Why there is no SMART result. Each is logged and the disk's `smart` is `null`; none is
/// fatal, and none is retried before the cache entry expires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmartError {
    #[error("SMART is disabled (disks.smartctl = \"\")")]
    Disabled,
    #[error("{0} not found; install smartmontools or set disks.smartctl")]
    NotInstalled(String),
    #[error("cannot run {0}")]
    Spawn(String),
    #[error("smartctl on {device} ran over {timeout:?} and was killed")]
    TimedOut { device: String, timeout: Duration },
    /// The last smartctl on this disk was killed at the timeout but has not ended (stuck
    /// in the kernel on a dying disk); no other is started until it does. Check the disk.
    #[error("smartctl on {device} still stuck since {secs} s ago (killed, not ended; not started again)")]
    StillStuck { device: String, secs: u64 },
    /// `why` is escaped: it may quote smartctl's messages.
    #[error("smartctl on {device} gave no usable answer: {why}")]
    Unusable { device: String, why: String },
    /// The privileged half (rig-agent-privileged) did not answer; retried within seconds.
    #[error("SMART unavailable: {0}; check `systemctl status rig-agent-privileged`")]
    PrivilegedUnreachable(String),
    /// The privileged half refused the request (the rule's word); see its log.
    #[error("the privileged half refused SMART for {device} ({word})")]
    Refused { device: String, word: String },
}

/// How soon a disk is asked again after the privileged half did not answer: it is
/// restarted by systemd within seconds, and SMART should come back as soon as it is.
const UNREACHABLE_RETRY: Duration = Duration::from_secs(2);

/// A result and when it was taken; failures are cached too, so a hung disk is not asked
/// again on every query.
type Cached = (Instant, Result<Smart, SmartError>);

pub struct SmartReader {
    settings: Mutex<Settings>,
    cache: Mutex<HashMap<String, Cached>>,
    missing_logged: AtomicBool,
    /// `paths.privileged_socket`, where the privileged half runs smartctl with the rights
    /// this process gave up; `None` runs smartctl here.
    privileged: Option<std::path::PathBuf>,
    /// Said once: no socket there, smartctl runs here instead.
    absent_logged: AtomicBool,
    /// Said once per outage: the privileged half does not answer.
    unreachable_logged: AtomicBool,
    /// smartctl runs killed at the timeout and not ended yet, by device.
    stuck: child::StuckRuns,
}

/// `disks.smartctl`, `disks.smart_timeout`, `disks.smart_interval`; changed by a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    binary: String,
    timeout: Duration,
    max_age: Duration,
}

impl SmartReader {
    pub fn new(binary: &str, timeout: Duration, max_age: Duration) -> SmartReader {
        SmartReader {
            settings: Mutex::new(Settings { binary: binary.to_string(), timeout, max_age }),
            cache: Mutex::new(HashMap::new()),
            missing_logged: AtomicBool::new(false),
            privileged: None,
            absent_logged: AtomicBool::new(false),
            unreachable_logged: AtomicBool::new(false),
            stuck: child::StuckRuns::default(),
        }
    }

    /// Asks the privileged half at `socket` instead of running smartctl here; with no
    /// socket at that path, runs it here and says so once.
    pub fn with_privileged_socket(mut self, socket: Option<std::path::PathBuf>) -> SmartReader {
        self.privileged = socket;
        self
    }

    /// New settings from a reloaded config; a changed binary starts from an empty cache.
    pub fn reconfigure(&self, binary: &str, timeout: Duration, max_age: Duration) {
        let new = Settings { binary: binary.to_string(), timeout, max_age };
        let mut s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        if s.binary != new.binary {
            self.lock().clear();
            self.missing_logged.store(false, Ordering::Relaxed);
        }
        *s = new;
    }

    fn settings(&self) -> Settings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The SMART data of `device` (`/dev/sda`), from the cache when fresh enough.
    pub fn read(&self, device: &str) -> Result<Smart, SmartError> {
        // The settings first: `reconfigure` (the runner thread, on SIGHUP) takes the settings
        // lock and then the cache's, so taking them the other way round could deadlock it.
        let max_age = self.settings().max_age;
        let previous = match self.lock().get(device) {
            Some((at, result)) if at.elapsed() < max_age => return result.clone(),
            Some((_, result)) => Some(result.clone()),
            None => None,
        };
        let result = self.run(device);
        let mut at = Instant::now();
        match &result {
            Ok(_) | Err(SmartError::Disabled) => {}
            // Logged once by `run`; asked again soon, not after smart_interval.
            Err(SmartError::PrivilegedUnreachable(_)) => {
                let max_age = self.settings().max_age;
                at = at.checked_sub(max_age.saturating_sub(UNREACHABLE_RETRY)).unwrap_or(at);
            }
            // A missing binary is one fact about the machine, not one per disk and query.
            Err(e @ SmartError::NotInstalled(_)) => {
                if !self.missing_logged.swap(true, Ordering::Relaxed) {
                    log::warn!("{e}; SMART data will be null");
                }
            }
            // A disk smartctl cannot read (virtio, a USB bridge) fails the same way every
            // smart_interval: warn when its result changes, not each time.
            Err(e) if previous.as_ref() == Some(&result) => log::debug!("{e} (as before)"),
            // Warned when it timed out; the seconds change each time.
            Err(e @ SmartError::StillStuck { .. }) => log::debug!("{e}"),
            Err(e) => log::warn!("{e}"),
        }
        self.lock().insert(device.to_string(), (at, result.clone()));
        result
    }

    /// [`SmartReader::read`] of several disks at once, one thread each: a disk whose
    /// smartctl hangs until `smart_timeout` does not make the others wait behind it.
    pub fn read_many(&self, devices: &[String]) -> Vec<Result<Smart, SmartError>> {
        thread::scope(|scope| {
            let running: Vec<_> = devices.iter().map(|d| scope.spawn(move || self.read(d))).collect();
            running
                .into_iter()
                .zip(devices)
                .map(|(h, d)| {
                    h.join().unwrap_or_else(|_| {
                        Err(SmartError::Unusable { device: d.clone(), why: "reading it panicked".into() })
                    })
                })
                .collect()
        })
    }

    /// The cached result for `device`, however old, without running anything; the disk
    /// monitor uses this so that a scan never waits for smartctl.
    pub fn peek(&self, device: &str) -> Option<Result<Smart, SmartError>> {
        self.lock().get(device).map(|(_, r)| r.clone())
    }

    /// Drops the cached result of `device` (the disk at that name was replaced: the answer
    /// is the old disk's), so that the next read asks smartctl again.
    pub fn forget(&self, device: &str) {
        self.lock().remove(device);
    }

    /// Whether `device` has a result younger than `smart_interval`.
    pub fn is_fresh(&self, device: &str) -> bool {
        let s = self.settings();
        s.binary.is_empty() || self.lock().get(device).is_some_and(|(at, _)| at.elapsed() < s.max_age)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs smartctl now, bypassing the cache.
    pub fn run(&self, device: &str) -> Result<Smart, SmartError> {
        let Settings { binary, timeout, .. } = self.settings();
        if binary.is_empty() {
            return Err(SmartError::Disabled);
        }
        if let Some(socket) = &self.privileged {
            // `None`: no privileged half installed here, so smartctl runs in this process.
            if let Some(result) = self.ask_privileged(socket, device, timeout) {
                return result;
            }
        }
        let name = device.strip_prefix("/dev/").unwrap_or(device);
        let answer = crate::privileged_client::smartctl::run(&binary, name, timeout, &self.stuck);
        self.interpret(answer, device, timeout)
    }

    /// smartctl's answer through the privileged half; `None` when there is none at
    /// `socket` (said once), so the caller runs smartctl itself.
    fn ask_privileged(
        &self,
        socket: &std::path::Path,
        device: &str,
        timeout: Duration,
    ) -> Option<Result<Smart, SmartError>> {
        use crate::privileged_client::{self, ClientError};
        let name = device.strip_prefix("/dev/").unwrap_or(device);
        // The privileged half kills smartctl at the same timeout; the slack covers the hop.
        let answer = match privileged_client::smart(socket, name, timeout + Duration::from_secs(2)) {
            Err(e @ ClientError::Absent(_)) => {
                if !self.absent_logged.swap(true, Ordering::Relaxed) {
                    log::info!(
                        "{}: running smartctl in this process, without capabilities (install the \
                         rig-agent-privileged unit, or run `rig-agent privileged`, for full SMART)",
                        crate::protocol::escape::escape(&e.to_string())
                    );
                }
                return None;
            }
            Err(e) => {
                let e = crate::protocol::escape::escape(&e.to_string());
                if !self.unreachable_logged.swap(true, Ordering::Relaxed) {
                    log::warn!("{e}; SMART data is null until it is back (retrying every {UNREACHABLE_RETRY:?})");
                }
                return Some(Err(SmartError::PrivilegedUnreachable(e)));
            }
            Ok(answer) => answer,
        };
        if self.unreachable_logged.swap(false, Ordering::Relaxed) {
            log::info!("privileged half answers again; SMART data is back");
        }
        Some(self.interpret(answer, device, timeout))
    }

    /// What smartctl's answer (run here or by the privileged half) says of `device`.
    fn interpret(&self, answer: SmartAnswer, device: &str, timeout: Duration) -> Result<Smart, SmartError> {
        let device = device.to_string();
        match answer {
            SmartAnswer::Oversized => {
                Err(SmartError::Unusable { device, why: format!("more than {MAX_OUTPUT} bytes of output") })
            }
            // The reason may be smartctl's `messages`, which quote the disk or its bridge
            // and may hold any character: escaped here, as all outside text, since it is
            // logged (a newline in it started a journal entry of its own).
            SmartAnswer::Output { exit, stdout } => parse(&String::from_utf8_lossy(&stdout), exit)
                .map_err(|why| SmartError::Unusable { device, why: crate::protocol::escape::escape(&why) }),
            SmartAnswer::TimedOut => Err(SmartError::TimedOut { device, timeout }),
            SmartAnswer::StillStuck(secs) => Err(SmartError::StillStuck { device, secs }),
            SmartAnswer::Disabled => Err(SmartError::Disabled),
            SmartAnswer::NotInstalled => Err(SmartError::NotInstalled(self.settings().binary)),
            SmartAnswer::Spawn(why) => Err(SmartError::Spawn(crate::protocol::escape::escape(&why))),
            SmartAnswer::Refused(word) => {
                Err(SmartError::Refused { device, word: crate::protocol::escape::escape(&word) })
            }
        }
    }
}

/// Parses smartctl's JSON. `exit` is smartctl's exit status, a bit mask: bits 0 and 1 mean
/// it could not talk to the disk at all; the higher bits report disk trouble and still come
/// with a full answer.
pub fn parse(text: &str, exit: Option<i32>) -> Result<Smart, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let messages = || {
        v["smartctl"]["messages"]
            .as_array()
            .map(|m| m.iter().filter_map(|x| x["string"].as_str()).collect::<Vec<_>>().join("; "))
            .filter(|s| !s.is_empty())
    };
    if exit.is_some_and(|c| c & 0b11 != 0) {
        return Err(messages().unwrap_or_else(|| format!("smartctl exit status {}", exit.unwrap_or(-1))));
    }
    let nvme = &v["nvme_smart_health_information_log"];
    let attr = |id: u64| {
        v["ata_smart_attributes"]["table"]
            .as_array()?
            .iter()
            .find(|a| a["id"].as_u64() == Some(id))
            .and_then(|a| a["raw"]["value"].as_u64())
    };
    let smart = Smart {
        passed: v["smart_status"]["passed"].as_bool(),
        // A drive's firmware can say anything: one no sensor reads is not passed on.
        temperature_celsius: v["temperature"]["current"]
            .as_i64()
            .or_else(|| nvme["temperature"].as_i64())
            .filter(|t| super::units::celsius(*t as f64).is_some()),
        power_on_hours: v["power_on_time"]["hours"].as_u64().or_else(|| nvme["power_on_hours"].as_u64()),
        reallocated_sectors: attr(5),
        pending_sectors: attr(197),
        indicators: Indicators::from_smartctl(&v),
    };
    if smart
        == (Smart {
            passed: None,
            temperature_celsius: None,
            power_on_hours: None,
            reallocated_sectors: None,
            pending_sectors: None,
            indicators: Indicators::default(),
        })
    {
        return Err(messages().unwrap_or_else(|| "no SMART data in the answer".into()));
    }
    Ok(smart)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATA: &str = r#"{"smartctl":{"exit_status":0},"smart_status":{"passed":true},
        "temperature":{"current":34},"power_on_time":{"hours":20123},
        "ata_smart_attributes":{"table":[{"id":5,"name":"Reallocated_Sector_Ct","raw":{"value":8}},
        {"id":197,"name":"Current_Pending_Sector","raw":{"value":2}}]}}"#;

    const NVME: &str = r#"{"smart_status":{"passed":false},
        "nvme_smart_health_information_log":{"temperature":51,"power_on_hours":999,"media_errors":3}}"#;

    #[test]
    fn an_ata_answer_gives_health_temperature_hours_and_sector_counts() {
        let s = parse(ATA, Some(0)).unwrap();
        assert_eq!(
            s,
            Smart {
                passed: Some(true),
                temperature_celsius: Some(34),
                power_on_hours: Some(20123),
                reallocated_sectors: Some(8),
                pending_sectors: Some(2),
                indicators: Indicators { ata: [(5, 8), (197, 2)].into_iter().collect(), nvme: None },
            }
        );
    }

    #[test]
    fn an_nvme_answer_uses_the_health_log_and_has_no_sector_counts() {
        let s = parse(NVME, Some(8)).unwrap();
        assert_eq!(s.passed, Some(false));
        assert_eq!(s.temperature_celsius, Some(51));
        assert_eq!(s.power_on_hours, Some(999));
        assert_eq!(s.reallocated_sectors, None);
    }

    #[test]
    fn a_temperature_no_sensor_reads_is_none() {
        let s = parse(r#"{"smart_status":{"passed":true},"temperature":{"current":9223372036854775807}}"#, Some(0));
        assert_eq!(s.unwrap().temperature_celsius, None);
        let s = parse(r#"{"smart_status":{"passed":true},"temperature":{"current":-273}}"#, Some(0));
        assert_eq!(s.unwrap().temperature_celsius, None);
    }

    #[test]
    fn a_failing_disk_exit_status_still_parses() {
        // Bit 3: "SMART status check returned DISK FAILING".
        assert_eq!(parse(ATA, Some(8)).unwrap().passed, Some(true));
    }

    #[test]
    fn open_failures_and_garbage_are_errors_with_smartctls_words() {
        let e = parse(
            r#"{"smartctl":{"messages":[{"string":"Smartctl open device: /dev/sdz failed: No such device"}]}}"#,
            Some(2),
        );
        assert!(e.unwrap_err().contains("No such device"));
        assert!(parse("Segmentation fault", Some(139)).unwrap_err().contains("not JSON"));
        assert!(parse("{}", Some(0)).is_err());
    }

    /// The same rule whether smartctl runs here or in the privileged half: an answer over
    /// the cap is unusable, said as such, and not parsed from its tail.
    #[test]
    fn a_smartctl_printing_more_than_the_cap_is_unusable_not_parsed() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("smartctl");
        let tail = r#"{"smart_status":{"passed":true}}"#;
        std::fs::write(&bin, format!("#!/bin/sh\nhead -c {} /dev/zero | tr '\\0' ' '\necho '{tail}'\n", MAX_OUTPUT))
            .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let reader = SmartReader::new(bin.to_str().unwrap(), Duration::from_secs(10), Duration::from_secs(60));
        match reader.run("/dev/sda") {
            Err(SmartError::Unusable { why, .. }) => assert!(why.contains("bytes of output"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Under the cap the same script's answer parses.
        std::fs::write(&bin, format!("#!/bin/sh\necho '{tail}'\n")).unwrap();
        assert_eq!(reader.run("/dev/sda").unwrap().passed, Some(true));
    }
}
