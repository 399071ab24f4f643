//! Network interfaces: state, MAC, speed and counters from `/sys/class/net`, the default
//! route from `/proc/net/route`, addresses from the kernel (through sysinfo's getifaddrs,
//! as sysfs does not list them).

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::os::sysfs::{entries, read_attr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub up: Option<bool>,
    pub speed_mbps: Option<u64>,
    pub rx_bytes: Option<u64>,
    pub tx_bytes: Option<u64>,
    /// CIDR strings, as `ip addr` prints them: `192.0.2.5/24`.
    pub ipv4: Vec<String>,
    pub ipv6: Vec<String>,
}

impl Interface {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "name": self.name, "mac": self.mac, "ipv4": self.ipv4, "ipv6": self.ipv6, "up": self.up,
            "speed_mbps": self.speed_mbps, "rx_bytes": self.rx_bytes, "tx_bytes": self.tx_bytes,
        })
    }
}

/// Addresses per interface name: (IPv4 CIDRs, IPv6 CIDRs).
pub type Addresses = HashMap<String, (Vec<String>, Vec<String>)>;

/// Every interface of `/sys/class/net`, sorted by name, with `addresses` filled in.
pub fn read(sysfs: &Path, addresses: &Addresses) -> Vec<Interface> {
    let net = sysfs.join("class/net");
    entries(&net)
        .into_iter()
        .map(|name| {
            let dir = net.join(&name);
            let attr = |f: &str| read_attr(&dir.join(f));
            let (ipv4, ipv6) = addresses.get(&name).cloned().unwrap_or_default();
            Interface {
                mac: attr("address"),
                up: parse_up(attr("operstate").as_deref(), attr("flags").as_deref()),
                // Down links report -1 or refuse the read (EINVAL): both are "unknown".
                speed_mbps: attr("speed").and_then(|s| s.parse::<i64>().ok()).and_then(|s| u64::try_from(s).ok()),
                rx_bytes: attr("statistics/rx_bytes").and_then(|s| s.parse().ok()),
                tx_bytes: attr("statistics/tx_bytes").and_then(|s| s.parse().ok()),
                ipv4,
                ipv6,
                name,
            }
        })
        .collect()
}

/// `operstate` says `up` or `down` for real links; loopback and some virtual links say
/// `unknown`, and then the administrative IFF_UP flag decides.
pub(crate) fn parse_up(operstate: Option<&str>, flags: Option<&str>) -> Option<bool> {
    match operstate {
        Some("up") => Some(true),
        Some("down" | "lowerlayerdown" | "notpresent" | "dormant") => Some(false),
        _ => {
            let f = flags?;
            let bits = u64::from_str_radix(f.trim_start_matches("0x"), 16).ok()?;
            Some(bits & 0x1 != 0)
        }
    }
}

/// The interface of the default route (lowest metric), from `/proc/net/route`.
pub(crate) fn default_route(procfs: &Path) -> Option<String> {
    parse_route(&std::fs::read_to_string(procfs.join("net/route")).ok()?)
}

pub(crate) fn parse_route(text: &str) -> Option<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (iface, dest, flags, metric, mask) = (f.first()?, f.get(1)?, f.get(3)?, f.get(6)?, f.get(7)?);
            let up = u32::from_str_radix(flags, 16).ok()? & 0x1 != 0;
            (*dest == "00000000" && *mask == "00000000" && up)
                .then(|| (metric.parse::<u64>().unwrap_or(u64::MAX), *iface))
        })
        .min()
        .map(|(_, iface)| iface.to_string())
}

/// The kernel's addresses of every interface, through getifaddrs (sysinfo).
pub(crate) fn kernel_addresses() -> Addresses {
    let Ok(networks) = sysinfo::Networks::new_with_refreshed_list() else { return Addresses::new() };
    networks
        .iter()
        .map(|(name, data)| {
            let mut v4 = Vec::new();
            let mut v6 = Vec::new();
            for n in data.ip_networks() {
                let cidr = format!("{}/{}", n.addr, n.prefix);
                if n.addr.is_ipv4() { v4.push(cidr) } else { v6.push(cidr) }
            }
            v4.sort();
            v6.sort();
            (name.to_string_lossy().into_owned(), (v4, v6))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_with_the_lowest_metric_wins() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            wlan0\t00000000\t0102A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
            eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(parse_route(table).as_deref(), Some("eth0"));
        assert_eq!(parse_route("Iface\tDestination\n"), None);
    }

    #[test]
    fn operstate_decides_and_unknown_falls_back_to_the_up_flag() {
        assert_eq!(parse_up(Some("up"), None), Some(true));
        assert_eq!(parse_up(Some("down"), Some("0x1003")), Some(false));
        assert_eq!(parse_up(Some("unknown"), Some("0x9")), Some(true));
        assert_eq!(parse_up(Some("unknown"), Some("0x1002")), Some(false));
        assert_eq!(parse_up(None, None), None);
    }
}
