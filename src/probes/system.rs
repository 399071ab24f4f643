//! CPU, memory, swap, load, uptime and OS facts. sysinfo reads CPU, memory, load and
//! uptime (refreshing only the part a query needs); names and versions come from files
//! under the configured roots.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sysinfo::{CpuRefreshKind, MINIMUM_CPU_UPDATE_INTERVAL, System};

use super::Roots;
use crate::os::bounded_read::{Links, read_string};
use crate::os::sysfs::{entries, read_attr};

/// One long-lived sysinfo `System`: CPU usage is the difference between two samples, so
/// the previous sample is kept rather than taken again (a query never sleeps).
pub struct SystemProbe {
    roots: Roots,
    sys: Option<System>,
    cpu_sampled_at: Option<Instant>,
    cpu_usage: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cpu {
    pub model: Option<String>,
    pub logical_cores: Option<usize>,
    pub physical_cores: Option<usize>,
}

impl SystemProbe {
    pub fn new(roots: Roots) -> SystemProbe {
        let sys = System::new().ok().map(|mut s| {
            s.refresh_cpu_list(CpuRefreshKind::nothing());
            s
        });
        let mut probe = SystemProbe { roots, sys, cpu_sampled_at: None, cpu_usage: None };
        probe.sample_cpu();
        probe
    }

    fn sample_cpu(&mut self) {
        if let Some(sys) = &mut self.sys {
            sys.refresh_cpu_usage();
            if self.cpu_sampled_at.is_some() {
                self.cpu_usage = Some(f64::from(sys.global_cpu_usage()));
            }
            self.cpu_sampled_at = Some(Instant::now());
        }
    }

    /// CPU use in percent since the previous sample (the previous call, or start-up). Within
    /// 200 ms of that sample the last figure is given again; `None` until two samples exist.
    pub fn cpu_usage_percent(&mut self) -> Option<f64> {
        let due = self
            .cpu_sampled_at
            .is_none_or(|t| t.elapsed() >= MINIMUM_CPU_UPDATE_INTERVAL.max(Duration::from_millis(200)));
        if due {
            self.sample_cpu();
        }
        self.cpu_usage.map(|u| (u * 10.0).round() / 10.0)
    }

    pub fn cpu(&self) -> Cpu {
        let cpus = self.sys.as_ref().map(|s| s.cpus());
        Cpu {
            model: cpus.and_then(|c| c.first()).map(|c| c.brand().trim().to_string()).filter(|b| !b.is_empty()),
            logical_cores: cpus.map(<[_]>::len).filter(|n| *n > 0),
            physical_cores: System::physical_core_count().ok(),
        }
    }

    /// Memory and swap, refreshing only those.
    pub fn memory(&mut self) -> Option<Memory> {
        let sys = self.sys.as_mut()?;
        sys.refresh_memory();
        Some(Memory {
            total_bytes: sys.total_memory(),
            available_bytes: sys.available_memory(),
            swap_total_bytes: sys.total_swap(),
            swap_free_bytes: sys.free_swap(),
        })
    }

    pub fn hostname(&self) -> Option<String> {
        read_attr(&self.roots.procfs.join("sys/kernel/hostname"))
    }

    /// `uname -r`.
    pub fn kernel(&self) -> Option<String> {
        read_attr(&self.roots.procfs.join("sys/kernel/osrelease"))
    }

    /// (`NAME`, `VERSION_ID`) of os-release(5) under the root filesystem.
    pub fn os(&self) -> (Option<String>, Option<String>) {
        let text = ["etc/os-release", "usr/lib/os-release"]
            .iter()
            // A broken root filesystem must not hang or flood the query worker either.
            .find_map(|p| read_string(&self.roots.rootfs.join(p), 64 << 10, Links::Follow).ok())
            .unwrap_or_default();
        let mut fields = parse_os_release(&text);
        let version = fields.remove("VERSION_ID").or_else(|| fields.remove("VERSION"));
        (fields.remove("NAME"), version)
    }

    /// Processes running now: the numeric entries of procfs (no process-list refresh).
    pub fn processes(&self) -> Option<usize> {
        let n = entries(&self.roots.procfs).iter().filter(|e| e.bytes().all(|b| b.is_ascii_digit())).count();
        (n > 0).then_some(n)
    }
}

/// `uname -m`.
pub fn arch() -> Option<String> {
    Some(System::cpu_arch()).filter(|a| !a.is_empty())
}

pub fn uptime_secs() -> Option<u64> {
    System::uptime().ok()
}

pub fn boot_time() -> Option<u64> {
    System::boot_time().ok()
}

pub fn load_average() -> Option<(f64, f64, f64)> {
    System::load_average().ok().map(|l| (l.one, l.five, l.fifteen))
}

/// `KEY=value` lines, values unquoted as os-release(5) allows.
pub fn parse_os_release(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            if k.is_empty() || k.starts_with('#') {
                return None;
            }
            let v = v.trim();
            let v = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(v);
            let v = v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')).unwrap_or(v);
            Some((k.to_string(), v.replace("\\\"", "\"")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_values_are_unquoted() {
        let f = parse_os_release("NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n# c\nPRETTY_NAME='x y'\n");
        assert_eq!(f["NAME"], "Debian GNU/Linux");
        assert_eq!(f["VERSION_ID"], "12");
        assert_eq!(f["ID"], "debian");
        assert_eq!(f["PRETTY_NAME"], "x y");
    }

    #[test]
    fn cpu_usage_needs_two_samples_and_never_sleeps() {
        let mut p = SystemProbe::new(Roots::host());
        let t = Instant::now();
        let first = p.cpu_usage_percent();
        assert!(t.elapsed() < Duration::from_millis(100), "a query must not sleep");
        assert_eq!(first, None, "one sample is not a usage figure");
        std::thread::sleep(Duration::from_millis(250));
        let u = p.cpu_usage_percent().expect("two samples");
        assert!((0.0..=100.0).contains(&u), "{u}");
    }
}
