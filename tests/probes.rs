//! Every query is answered from the rig's own files and tools, as the expected documents
//! say, and bounded in time: disks, network, sensors, system, GPUs, fans and board health
//! from fixture trees laid out like real /sys, /proc and /etc; this machine's own answers
//! agreeing with `ip`, `lsblk`, `uname`, `df` and /proc; smartctl and nvidia-smi (fakes
//! really spawned, some printing recorded answers) cached, killed with their children at
//! their timeout, never waited on by a reload; a missing tool or an empty machine answers
//! with nothing rather than a failure; and `probe ACT` of the real binary prints the same.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rig_agent::config::Config;
use rig_agent::probes::gpu::NVIDIA_QUERY;
use rig_agent::probes::mounts;
use rig_agent::probes::network::Addresses;
use rig_agent::probes::smart::{SmartError, SmartReader};
use rig_agent::protocol::{Inbound, decode};
use rig_agent::queries::Catalogue;
use rig_agent::queries::answers::Probes;
use rig_agent::status::AgentStatus;
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The fixture rig: disks, network, sensors.
fn fixture() -> PathBuf {
    fixtures().join("rig")
}

fn expected(name: &str) -> Value {
    serde_json::from_str(&fs::read_to_string(fixtures().join("expected").join(name)).unwrap()).unwrap()
}

/// A config file in `dir` whose probe roots are `root` (sys, proc and the root filesystem;
/// `None`: this machine's), with `disks` as its `[disks]` lines and `probes` as its
/// `[probes]` lines; its path.
fn write_config(dir: &Path, root: Option<&Path>, disks: &str, probes: &str) -> PathBuf {
    let token = dir.join("token");
    fs::write(&token, "t\n").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let paths = root.map(rig_paths).unwrap_or_default();
    let text = format!(
        "[device]\nhardware_id = \"rig-fixture\"\ntoken_file = \"token\"\n[gateway]\nurls = [\"wss://gw.invalid/ws\"]\n\
         [disks]\n{disks}\n[paths]\nstate_dir = {:?}\n{paths}[probes]\n{probes}\n",
        dir.join("state").display().to_string()
    );
    let path = dir.join("rig-agent.toml");
    fs::write(&path, text).unwrap();
    path
}

/// The config [`write_config`] writes, with no `[probes]` lines, as the agent resolves it.
fn config(dir: &Path, root: Option<&Path>, disks_extra: &str) -> Config {
    Config::load(&write_config(dir, root, disks_extra, "")).unwrap_or_else(|e| panic!("{e}"))
}

fn fixture_probes(dir: &Path) -> Probes {
    Probes::from_config(&config(dir, Some(&fixture()), "smartctl = \"\""))
}

#[test]
fn disk_info_from_a_fixture_tree_matches_the_expected_json() {
    let dir = tempfile::tempdir().unwrap();
    let root = fixture();
    let mut got = fixture_probes(dir.path()).disk_info().unwrap();
    // Filesystem usage comes from statvfs of the mountpoint under rootfs: check it is that,
    // then compare the rest to the expected document.
    for disk in got["disks"].as_array_mut().unwrap() {
        for m in disk["mounts"].as_array_mut().unwrap() {
            let mp = m["mountpoint"].as_str().unwrap().to_string();
            let want = mounts::usage(
                &rig_agent::probes::Roots::host(),
                &root.join(mp.trim_start_matches('/')).display().to_string(),
            )
            .expect("statvfs of the fixture mountpoint");
            assert_eq!(m["total_bytes"], json!(want.total_bytes), "{mp}");
            assert!(m["used_bytes"].is_u64() && m["available_bytes"].is_u64(), "{m}");
            let o = m.as_object_mut().unwrap();
            for k in ["total_bytes", "used_bytes", "available_bytes"] {
                o.remove(k);
            }
        }
    }
    assert_eq!(got, expected("get_disk_info.json"), "got:\n{}", serde_json::to_string_pretty(&got).unwrap());
}

#[test]
fn network_info_from_a_fixture_tree_matches_the_expected_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut addrs = Addresses::new();
    addrs.insert("eth0".into(), (vec!["172.17.0.2/16".into()], vec!["fe80::42:acff:fe11:2/64".into()]));
    addrs.insert("lo".into(), (vec!["127.0.0.1/8".into()], vec!["::1/128".into()]));
    let got = fixture_probes(dir.path()).interfaces_json(&addrs);
    assert_eq!(got, expected("get_network_info.json"), "got:\n{}", serde_json::to_string_pretty(&got).unwrap());
}

#[test]
fn temperatures_from_a_fixture_tree_match_the_expected_json() {
    let dir = tempfile::tempdir().unwrap();
    let got = fixture_probes(dir.path()).temperature();
    assert_eq!(got, expected("get_temperature.json"), "got:\n{}", serde_json::to_string_pretty(&got).unwrap());
}

#[test]
fn baseinfo_and_status_read_names_versions_disks_and_processes_under_the_roots() {
    let dir = tempfile::tempdir().unwrap();
    let p = fixture_probes(dir.path());
    let b = p.system_baseinfo();
    assert_eq!(b["hostname"], "rig-fixture-01");
    assert_eq!(b["kernel"], "6.1.0-18-arm64");
    assert_eq!(b["os"], json!({"name": "Debian GNU/Linux", "version": "12"}));
    // nvme0n1 and sda; sdb's size is malformed and counts as unknown, not as zero.
    assert_eq!(b["disks"], json!({"count": 3, "total_bytes": 1_000_204_886_016u64 + 4_000_787_030_016}));
    assert_eq!(b["network"]["primary_interface"], "eth0");
    assert_eq!(b["network"]["primary_mac"], "02:42:ac:11:00:02");
    assert_eq!(b["hardware_id"], "rig-fixture");
    assert_eq!(b["agent"]["version"], env!("CARGO_PKG_VERSION"));
    let s = p.system_status();
    assert_eq!(s["processes"], 3, "numeric entries of the fixture procfs");
}

#[test]
fn an_unreadable_sysfs_answers_code_3_naming_the_probe() {
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Some(empty.path()), "smartctl = \"\"");
    let c = Catalogue::standard(Arc::new(Probes::from_config(&cfg)), Arc::new(AgentStatus::new(cfg.file.clone())));
    for act in ["get_disk_info", "get_network_info"] {
        let Ok(Inbound::Query(q)) = decode(&json!({"act": act}).to_string()) else { panic!() };
        let r = c.run(&q).unwrap_err();
        assert_eq!(r.code, 3);
        assert!(r.description.contains(act), "{r:?}");
    }
    // No hwmon is a machine without sensors, not a failure.
    let Ok(Inbound::Query(q)) = decode(r#"{"act":"get_temperature"}"#) else { panic!() };
    assert_eq!(c.run(&q).unwrap(), json!({"sensors": []}));
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn on_the_real_machine_baseinfo_agrees_with_uname_proc_and_nproc() {
    let dir = tempfile::tempdir().unwrap();
    let p = Probes::from_config(&config(dir.path(), None, "smartctl = \"\""));
    let b = p.system_baseinfo();
    assert_eq!(b["hostname"], fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim());
    assert_eq!(b["kernel"], sh("uname -r"));
    assert_eq!(b["arch"], sh("uname -m"));
    assert_eq!(b["cpu"]["logical_cores"], sh("nproc --all").parse::<u64>().unwrap());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(b["memory"]["total_bytes"], total_kib * 1024);
    let stat = fs::read_to_string("/proc/stat").unwrap();
    let btime: u64 = stat.lines().find(|l| l.starts_with("btime ")).unwrap()[6..].trim().parse().unwrap();
    let boot = b["boot_time"].as_u64().unwrap();
    assert!(boot.abs_diff(btime) <= 1, "boot_time {boot} vs btime {btime}");
    let uptime: f64 = fs::read_to_string("/proc/uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!((b["uptime_secs"].as_f64().unwrap() - uptime).abs() <= 2.0);
}

#[test]
fn on_the_real_machine_interfaces_and_ipv4_match_ip_addr() {
    let dir = tempfile::tempdir().unwrap();
    let p = Probes::from_config(&config(dir.path(), None, "smartctl = \"\""));
    let got = p.network_info().unwrap();
    let ip: Value = serde_json::from_str(&sh("ip -j addr")).unwrap();
    let mut want: Vec<(String, Vec<String>, String)> = ip
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let mut v4: Vec<String> = i["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["family"] == "inet")
                .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
                .collect();
            v4.sort();
            (i["ifname"].as_str().unwrap().to_string(), v4, i["address"].as_str().unwrap_or("").to_string())
        })
        .collect();
    want.sort();
    let mut have: Vec<(String, Vec<String>, String)> = got["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let v4 = i["ipv4"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
            (i["name"].as_str().unwrap().to_string(), v4, i["mac"].as_str().unwrap_or("").to_string())
        })
        .collect();
    have.sort();
    assert_eq!(have, want);
}

#[test]
fn on_the_real_machine_disks_and_sizes_match_lsblk() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), None, "smartctl = \"\"");
    let p = Probes::from_config(&cfg);
    let got = p.disk_info().unwrap();
    let lsblk: Value = serde_json::from_str(&sh("lsblk -J -b -d -o NAME,SIZE")).unwrap();
    let glob = |n: &str| cfg.disks.include.iter().any(|g| rig_agent::probes::glob_match(g, n));
    let mut want: Vec<(String, u64)> = lsblk["blockdevices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| glob(d["name"].as_str().unwrap()))
        .map(|d| (d["name"].as_str().unwrap().to_string(), d["size"].as_u64().unwrap()))
        .collect();
    want.sort();
    let mut have: Vec<(String, u64)> = got["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].as_str().unwrap().to_string(), d["size_bytes"].as_u64().unwrap()))
        .collect();
    have.sort();
    assert_eq!(have, want);
}

/// A fake smartctl: a shell script printing `json` (or doing `body`), counting its runs.
fn fake_smartctl(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let count = dir.join(format!("{name}.runs"));
    fs::write(&path, format!("#!/bin/sh\necho run >> {:?}\n{body}\n", count.display().to_string())).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn runs(dir: &Path, name: &str) -> usize {
    fs::read_to_string(dir.join(format!("{name}.runs"))).map(|s| s.lines().count()).unwrap_or(0)
}

const PASSED: &str = r#"cat <<'EOF'
{"smart_status":{"passed":true},"temperature":{"current":36},"power_on_time":{"hours":1234},
 "ata_smart_attributes":{"table":[{"id":5,"raw":{"value":0}},{"id":197,"raw":{"value":1}}]}}
EOF"#;

#[test]
fn smartctl_answers_are_parsed_and_cached_for_smart_interval() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_smartctl(dir.path(), "ok", PASSED);
    let r = SmartReader::new(bin.to_str().unwrap(), Duration::from_secs(5), Duration::from_secs(3600));
    let s = r.read("/dev/sda").unwrap();
    assert_eq!(
        (s.passed, s.temperature_celsius, s.power_on_hours, s.pending_sectors),
        (Some(true), Some(36), Some(1234), Some(1))
    );
    r.read("/dev/sda").unwrap();
    r.read("/dev/sda").unwrap();
    assert_eq!(runs(dir.path(), "ok"), 1, "cached within smart_interval");
    r.read("/dev/sdb").unwrap();
    assert_eq!(runs(dir.path(), "ok"), 2, "each disk has its own entry");
    let short = SmartReader::new(bin.to_str().unwrap(), Duration::from_secs(5), Duration::from_millis(1));
    short.read("/dev/sda").unwrap();
    std::thread::sleep(Duration::from_millis(5));
    short.read("/dev/sda").unwrap();
    assert_eq!(runs(dir.path(), "ok"), 4, "run again once the entry is older than smart_interval");
}

#[test]
fn a_failing_disk_is_reported_as_not_passed() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_smartctl(
        dir.path(),
        "failed",
        "echo '{\"smart_status\":{\"passed\":false},\"temperature\":{\"current\":60}}'\nexit 8",
    );
    let r = SmartReader::new(bin.to_str().unwrap(), Duration::from_secs(5), Duration::from_secs(60));
    assert_eq!(r.read("/dev/sda").unwrap().passed, Some(false));
}

#[test]
fn a_hanging_smartctl_is_killed_at_smart_timeout() {
    let _g = Guard::new(20 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_smartctl(dir.path(), "hang", "exec sleep 30");
    let r = SmartReader::new(bin.to_str().unwrap(), Duration::from_millis(300), Duration::from_secs(60));
    let t = Instant::now();
    let e = r.read("/dev/sda").unwrap_err();
    assert!(matches!(e, SmartError::TimedOut { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    // The failure is cached too: a hung disk is not asked again on every query.
    let t = Instant::now();
    assert!(r.read("/dev/sda").is_err());
    assert!(t.elapsed() < Duration::from_millis(100));
    assert_eq!(runs(dir.path(), "hang"), 1);
}

#[test]
fn a_smartctl_whose_child_keeps_stdout_open_is_cut_off_at_smart_timeout_and_other_disks_do_not_wait() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    // On sda and sdb smartctl forks a child that inherits stdout and outlives it, then
    // hangs itself; nvme0n1 answers at once.
    let bin = fake_smartctl(
        dir.path(),
        "forks",
        r#"case "$4" in
  /dev/nvme0n1) echo '{"smart_status":{"passed":true},"nvme_smart_health_information_log":{"temperature":38,"power_on_hours":77}}' ;;
  *) sleep 30 & sleep 30 ;;
esac"#,
    );
    let cfg = config(
        dir.path(),
        Some(&fixture()),
        &format!("smartctl = {:?}\nsmart_timeout = \"1s\"", bin.display().to_string()),
    );
    let probes = Probes::from_config(&cfg);
    let t = Instant::now();
    let got = probes.disk_info().unwrap();
    let took = t.elapsed();
    let disk = |n: &str| got["disks"].as_array().unwrap().iter().find(|d| d["name"] == n).unwrap().clone();
    assert_eq!(disk("sda")["smart"], Value::Null);
    assert_eq!(disk("sdb")["smart"], Value::Null);
    assert_eq!(disk("nvme0n1")["smart"]["power_on_hours"], 77);
    // Bound with slack: smart_timeout (1 s) + 1 s, not 30 s (the grandchild's sleep) nor
    // 2 s (the two hung disks one after the other).
    assert!(took < Duration::from_secs(2), "get_disk_info took {took:?} with smart_timeout = 1s");
    assert!(
        matches!(probes.smart.read("/dev/sda"), Err(SmartError::TimedOut { .. })),
        "the hang is reported as a timeout"
    );
}

#[test]
fn garbage_from_smartctl_and_a_missing_binary_give_no_smart_data_and_no_crash() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_smartctl(dir.path(), "garbage", "echo 'Segmentation fault'; exit 139");
    let r = SmartReader::new(bin.to_str().unwrap(), Duration::from_secs(5), Duration::from_secs(60));
    assert!(matches!(r.read("/dev/sda"), Err(SmartError::Unusable { .. })));
    let r = SmartReader::new("/nonexistent/smartctl", Duration::from_secs(5), Duration::from_secs(60));
    assert!(matches!(r.read("/dev/sda"), Err(SmartError::NotInstalled(_))));
    assert!(matches!(SmartReader::new("", SEC, SEC).read("/dev/sda"), Err(SmartError::Disabled)));
}

#[test]
fn disk_info_carries_smart_data_and_a_failed_check_marks_the_disk_failed() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_smartctl(
        dir.path(),
        "mixed",
        r#"case "$4" in
  /dev/sda) echo '{"smart_status":{"passed":false},"temperature":{"current":41}}'; exit 8 ;;
  *) echo '{"smart_status":{"passed":true},"nvme_smart_health_information_log":{"temperature":38,"power_on_hours":77}}' ;;
esac"#,
    );
    let cfg = config(dir.path(), Some(&fixture()), &format!("smartctl = {:?}", bin.display().to_string()));
    let got = Probes::from_config(&cfg).disk_info().unwrap();
    let disk = |n: &str| got["disks"].as_array().unwrap().iter().find(|d| d["name"] == n).unwrap().clone();
    assert_eq!(disk("sda")["health"], "failed");
    assert_eq!(disk("sda")["reason"], "smart_failed");
    assert_eq!(disk("sda")["smart"]["temperature_celsius"], 41);
    assert_eq!(disk("nvme0n1")["health"], "ok", "a passed check is evidence enough");
    assert_eq!(disk("nvme0n1")["smart"]["power_on_hours"], 77);
    assert_eq!(disk("nvme0n1")["smart"]["reallocated_sectors"], Value::Null);
}

#[test]
fn device_states_from_sysfs_are_judged_per_transport_and_a_reset_is_raised_only_if_it_lasts() {
    use rig_agent::disks::inventory::Inventory;
    use rig_agent::disks::rules::{self, Seen};
    use rig_agent::episodes::reason::Reason;
    use rig_agent::probes::disks;
    let sysfs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/device-states/sys");
    let seen: Vec<Seen> = disks::monitored(&sysfs, &["*".to_string()], &[])
        .iter()
        .map(|n| Seen { disk: disks::read(&sysfs, n).unwrap(), smart_passed: None, mounts: Vec::new() })
        .collect();
    let offline = |inv: &mut Inventory| {
        let mut v: Vec<String> = rules::evaluate(inv, &seen, 1)
            .into_iter()
            .inspect(|c| assert_eq!(c.reason, Reason::Offline))
            .map(|c| c.subject)
            .collect();
        v.sort();
        v
    };
    let mut inv = Inventory::default();
    // First scan: SCSI offline and blocked, NVMe dead and deleting; not sde (running),
    // nvme1n1 (live), nor the controllers that are resetting, connecting or new.
    assert_eq!(offline(&mut inv), ["nvme2n1", "nvme3n1", "sdc", "sdd"]);
    // A scan later they are still unsettled: now they are raised too.
    assert_eq!(offline(&mut inv), ["nvme2n1", "nvme3n1", "nvme4n1", "nvme5n1", "nvme6n1", "sdc", "sdd"]);
}

/// The standard query catalogue on probes rooted at `root`, with `probes` as the config's
/// `[probes]` lines (SMART off).
fn catalogue(dir: &Path, root: &Path, probes: &str) -> Catalogue {
    let cfg = Config::load(&write_config(dir, Some(root), "smartctl = \"\"", probes)).unwrap_or_else(|e| panic!("{e}"));
    Catalogue::standard(Arc::new(Probes::from_config(&cfg)), Arc::new(AgentStatus::new(cfg.file.clone())))
}

fn ask(c: &Catalogue, act: &str) -> Value {
    let Ok(Inbound::Query(q)) = decode(&json!({ "act": act }).to_string()) else { panic!() };
    c.run(&q).unwrap_or_else(|r| panic!("{act}: {r:?}"))
}

/// A fake nvidia-smi: checks it was asked the query the parser reads, counts its runs, then
/// does `body`.
fn fake_nvidia_smi(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("nvidia-smi");
    let script = format!(
        "#!/bin/sh\necho run >> {runs:?}\n\
         [ \"$1\" = \"--query-gpu={NVIDIA_QUERY}\" ] && [ \"$2\" = \"--format=csv,noheader,nounits\" ] || \
         {{ echo \"unexpected arguments: $*\" >&2; exit 2; }}\n{body}\n",
        runs = dir.join("nvidia-smi.runs").display().to_string()
    );
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A fake nvidia-smi printing the recorded answer `name` under tests/fixtures/nvidia-smi,
/// with the exit status the real one gives for it.
fn recorded(dir: &Path, name: &str, exit: i32) -> String {
    let file = fixtures().join("nvidia-smi").join(name);
    let bin = fake_nvidia_smi(dir, &format!("cat {:?}\nexit {exit}", file.display().to_string()));
    format!("nvidia_smi = {:?}", bin.display().to_string())
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

#[test]
fn gpu_info_lists_nvidia_gpus_from_nvidia_smi_then_amd_ones_from_sysfs_as_expected() {
    let dir = tempfile::tempdir().unwrap();
    let c = catalogue(dir.path(), &fixtures().join("gpu-rig"), &recorded(dir.path(), "lost_510.47.03.txt", 15));
    let got = ask(&c, "get_gpu_info");
    assert_eq!(got, expected("get_gpu_info.json"), "got:\n{}", pretty(&got));
}

#[test]
fn every_recorded_nvidia_smi_answer_gives_its_gpus_with_na_fields_as_null() {
    let cases: [(&str, i32, usize); 7] = [
        ("rtx30_535.54.03.txt", 0, 6),
        ("p106_450.102.04.txt", 0, 4),
        ("cmp_470.82.00.txt", 0, 3),
        ("t4_525.85.12.txt", 0, 2),
        ("lost_510.47.03.txt", 15, 3),
        ("no_devices.txt", 6, 0),
        ("no_driver.txt", 9, 0),
    ];
    let empty = tempfile::tempdir().unwrap();
    for (name, exit, count) in cases {
        let dir = tempfile::tempdir().unwrap();
        let got = ask(&catalogue(dir.path(), empty.path(), &recorded(dir.path(), name, exit)), "get_gpu_info");
        let gpus = got["gpus"].as_array().unwrap();
        assert_eq!(gpus.len(), count, "{name}: {}", pretty(&got));
        for g in gpus {
            assert_eq!(g["vendor"], "nvidia", "{name}");
            assert!(g["bus_id"].as_str().unwrap().starts_with("0000:"), "{name}: {g}");
        }
        let by_bus = |b: &str| gpus.iter().find(|g| g["bus_id"] == b).unwrap_or_else(|| panic!("{name}: no {b}"));
        match name {
            "rtx30_535.54.03.txt" => {
                let g = by_bus("0000:0a:00.0");
                assert_eq!(g["name"], "NVIDIA GeForce RTX 3060 Ti");
                assert_eq!(g["memory_total_bytes"], 8192u64 << 20);
                assert_eq!(g["clocks_mhz"], json!({"core": 1275, "memory": 7501}));
            }
            "p106_450.102.04.txt" => assert_eq!(by_bus("0000:06:00.0")["power_watts"], 87.95),
            "cmp_470.82.00.txt" => {
                let g = by_bus("0000:01:00.0");
                assert_eq!((&g["power_limit_watts"], &g["clocks_mhz"]["memory"]), (&Value::Null, &Value::Null));
                assert_eq!(g["power_watts"], 195.21);
            }
            "t4_525.85.12.txt" => {
                let g = by_bus("0000:d8:00.0");
                assert_eq!(g["fan_percent"], Value::Null, "a passive card has no fan");
                assert_eq!((&g["power_watts"], &g["utilization_percent"]), (&Value::Null, &Value::Null));
                assert_eq!(g["temperature_celsius"], 71.0);
            }
            "lost_510.47.03.txt" => {
                let g = by_bus("0000:03:00.0");
                assert_eq!(g["state"], "lost");
                assert_eq!(g["temperature_celsius"], Value::Null);
            }
            _ => {}
        }
        let status = &got["nvidia_smi"]["status"];
        if name == "no_driver.txt" {
            assert_eq!(status, "failed");
            assert!(got["nvidia_smi"]["error"].as_str().unwrap().contains("couldn't communicate"), "{got}");
        } else {
            assert_eq!(status, "ok", "{name}: {got}");
        }
    }
}

#[test]
fn a_burst_of_gpu_queries_runs_nvidia_smi_once_until_the_answer_is_older_than_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let bin = recorded(dir.path(), "rtx30_535.54.03.txt", 0);
    let c = catalogue(dir.path(), empty.path(), &format!("{bin}\nnvidia_smi_interval = \"300ms\""));
    for _ in 0..5 {
        assert_eq!(ask(&c, "get_gpu_info")["gpus"].as_array().unwrap().len(), 6);
    }
    assert_eq!(runs(dir.path(), "nvidia-smi"), 1);
    std::thread::sleep(Duration::from_millis(350));
    ask(&c, "get_gpu_info");
    assert_eq!(runs(dir.path(), "nvidia-smi"), 2, "run again once the answer is older than nvidia_smi_interval");
}

#[test]
fn a_hanging_nvidia_smi_is_killed_with_its_children_at_the_timeout() {
    let _g = Guard::new(20 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    // A child of the script keeps stdout open: killing only the script would leave the
    // reader waiting for it (30 s).
    let pids = dir.path().join("pids");
    let bin = fake_nvidia_smi(dir.path(), &format!("sleep 30 &\necho $! > {:?}\nwait", pids.display().to_string()));
    let c = catalogue(
        dir.path(),
        empty.path(),
        &format!("nvidia_smi = {:?}\nnvidia_smi_timeout = \"300ms\"", bin.display().to_string()),
    );
    let t = Instant::now();
    let got = ask(&c, "get_gpu_info");
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    assert_eq!(got["nvidia_smi"]["status"], "timed_out", "{got}");
    assert_eq!(got["gpus"], json!([]));
    let pid = fs::read_to_string(&pids).unwrap().trim().to_string();
    // The orphan is reaped by init soon after the kill; give it a moment.
    let gone = (0..100).any(|_| {
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        let dead =
            state.as_deref().is_none_or(|s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')));
        if !dead {
            std::thread::sleep(Duration::from_millis(20));
        }
        dead
    });
    assert!(gone, "the script's child {pid} outlived the timeout");
    // Cached as a failure too: a hung driver is not asked again by the next query.
    let t = Instant::now();
    ask(&c, "get_gpu_info");
    assert!(t.elapsed() < Duration::from_millis(200));
    assert_eq!(runs(dir.path(), "nvidia-smi"), 1);
}

#[test]
fn no_nvidia_smi_and_no_drm_cards_answer_an_empty_gpu_list() {
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let c = catalogue(dir.path(), empty.path(), "nvidia_smi = \"/nonexistent/nvidia-smi\"");
    let got = ask(&c, "get_gpu_info");
    assert_eq!(got, json!({"gpus": [], "nvidia_smi": {"status": "not_installed", "error": null}}));
    // Through PATH, as the default: a name no directory of PATH has.
    let c = catalogue(dir.path(), empty.path(), "nvidia_smi = \"nvidia-smi-not-on-this-rig\"");
    assert_eq!(ask(&c, "get_gpu_info")["nvidia_smi"]["status"], "not_installed");
    let c = catalogue(dir.path(), empty.path(), "nvidia_smi = \"\"");
    assert_eq!(ask(&c, "get_gpu_info"), json!({"gpus": [], "nvidia_smi": {"status": "disabled", "error": null}}));
}

#[test]
fn fans_from_a_fixture_tree_match_the_expected_json() {
    let dir = tempfile::tempdir().unwrap();
    let got = ask(&catalogue(dir.path(), &fixtures().join("gpu-rig"), "nvidia_smi = \"\""), "get_fans");
    assert_eq!(got, expected("get_fans.json"), "got:\n{}", pretty(&got));
}

/// `root_fs` sizes come from statvfs of the fixture directory: checked for consistency,
/// then taken out before comparing with the expected document.
fn without_root_fs_sizes(mut v: Value) -> Value {
    let fs = v["root_fs"].as_object_mut().unwrap();
    let (total, used, avail) = (
        fs["total_bytes"].as_u64().unwrap(),
        fs["used_bytes"].as_u64().unwrap(),
        fs["available_bytes"].as_u64().unwrap(),
    );
    assert!(total > 0 && used <= total && avail <= total, "{v}");
    for k in ["total_bytes", "used_bytes", "available_bytes"] {
        v["root_fs"].as_object_mut().unwrap().remove(k);
    }
    v
}

#[test]
fn a_pi_board_reports_emmc_wear_a_read_only_root_and_under_voltage() {
    let dir = tempfile::tempdir().unwrap();
    let got = ask(&catalogue(dir.path(), &fixtures().join("pi-board"), "nvidia_smi = \"\""), "get_board_health");
    assert_eq!(without_root_fs_sizes(got.clone()), expected("get_board_health.pi.json"), "got:\n{}", pretty(&got));
}

#[test]
fn an_x86_rig_reports_thermal_throttle_counts_and_no_pi_fields() {
    let dir = tempfile::tempdir().unwrap();
    let got = ask(&catalogue(dir.path(), &fixtures().join("gpu-rig"), "nvidia_smi = \"\""), "get_board_health");
    assert_eq!(without_root_fs_sizes(got.clone()), expected("get_board_health.x86.json"), "got:\n{}", pretty(&got));
}

#[test]
fn an_empty_machine_answers_every_new_act_with_nothing_rather_than_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let c = catalogue(dir.path(), empty.path(), "nvidia_smi = \"\"");
    assert_eq!(ask(&c, "get_fans"), json!({"fans": []}));
    let b = ask(&c, "get_board_health");
    assert_eq!(b["mmc"], json!([]));
    assert_eq!(
        (&b["throttled"], &b["under_voltage_alarm"], &b["thermal_throttle"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    assert_eq!(b["root_fs"]["readonly"], Value::Null, "no mountinfo: unknown, not writable");
}

#[test]
fn on_the_real_machine_the_root_filesystem_agrees_with_df_and_mountinfo() {
    let dir = tempfile::tempdir().unwrap();
    let c = catalogue(dir.path(), Path::new("/"), "nvidia_smi = \"\"");
    // catalogue() roots sysfs/procfs under the root given: "/" gives /sys and /proc.
    let b = ask(&c, "get_board_health");
    let out = std::process::Command::new("df").args(["-B1", "--output=size", "/"]).output().unwrap();
    let size: u64 = String::from_utf8(out.stdout).unwrap().lines().nth(1).unwrap().trim().parse().unwrap();
    assert_eq!(b["root_fs"]["total_bytes"], size);
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = mi.lines().rfind(|l| l.split(' ').nth(4) == Some("/")).unwrap();
    let sb_ro = root.rsplit(' ').next().unwrap().split(',').any(|o| o == "ro");
    assert_eq!(b["root_fs"]["readonly"], sb_ro, "{root}");
}

#[test]
fn probe_prints_each_new_act_from_the_real_binary() {
    let _g = Guard::new(60 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let nvidia = recorded(dir.path(), "rtx30_535.54.03.txt", 0);
    let config = write_config(dir.path(), Some(&fixtures().join("gpu-rig")), "smartctl = \"\"", &nvidia);
    for (act, key, count) in [("get_gpu_info", "gpus", 8), ("get_fans", "fans", 6), ("get_board_health", "mmc", 0)] {
        let out = agent_command().arg("--config").arg(&config).args(["probe", act]).output().unwrap();
        assert!(out.status.success(), "{act}: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{act}: {e}"));
        assert_eq!(v[key].as_array().map(Vec::len), Some(count), "{act}: {}", pretty(&v));
    }
}

#[test]
fn a_reload_never_waits_for_a_running_nvidia_smi_and_the_next_query_uses_the_new_binary() {
    let _g = Guard::new(20 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let hang = fake_nvidia_smi(dir.path(), "exec sleep 30");
    let slow = format!("nvidia_smi = {:?}\nnvidia_smi_timeout = \"1500ms\"", hang.display().to_string());
    let cfg = Config::load(&write_config(dir.path(), Some(empty.path()), "smartctl = \"\"", &slow)).unwrap();
    let probes = Arc::new(Probes::from_config(&cfg));
    let asking = {
        let p = Arc::clone(&probes);
        std::thread::spawn(move || p.gpu_info())
    };
    std::thread::sleep(Duration::from_millis(300));
    let other = tempfile::tempdir().unwrap();
    let good = recorded(other.path(), "p106_450.102.04.txt", 0);
    let reloaded = Config::load(&write_config(other.path(), Some(empty.path()), "smartctl = \"\"", &good)).unwrap();
    // The reload hook runs on the socket thread: it must not wait out nvidia-smi's timeout.
    let t = Instant::now();
    probes.reconfigure(&reloaded);
    assert!(t.elapsed() < Duration::from_millis(100), "reconfigure waited {:?}", t.elapsed());
    assert_eq!(asking.join().unwrap()["nvidia_smi"]["status"], "timed_out");
    let now = probes.gpu_info();
    assert_eq!(now["gpus"].as_array().unwrap().len(), 4, "the answer of the old binary is not reused: {now}");
}

#[test]
fn get_gpu_info_of_the_real_binary_gives_null_for_values_that_overflow_or_no_gpu_reports() {
    let _g = Guard::new(30 * SEC);
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    // 2^44 MiB used (2^64 bytes: 0 in a release build that multiplies blindly), 2^64-1 MiB
    // total, a fan at -5 %, 101 % busy: none of it a reading a GPU gives.
    let line = "0, NVIDIA GeForce RTX 3080, 00000000:0A:00.0, 64, -5, 219.53, 320.00, 101, 18446744073709551615, \
                17592186044416, 1710, 9501, GPU-0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9";
    let bin = fake_nvidia_smi(dir.path(), &format!("echo '{line}'"));
    let config = write_config(
        dir.path(),
        Some(empty.path()),
        "smartctl = \"\"",
        &format!("nvidia_smi = {:?}", bin.display().to_string()),
    );
    let out = agent_command().arg("--config").arg(&config).args(["probe", "get_gpu_info"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let g = &v["gpus"][0];
    for key in ["memory_total_bytes", "memory_used_bytes", "fan_percent", "utilization_percent"] {
        assert_eq!(g[key], Value::Null, "{key}: {}", pretty(&v));
    }
    // What nvidia-smi did give is kept.
    assert_eq!((g["temperature_celsius"].as_f64(), g["power_watts"].as_f64()), (Some(64.0), Some(219.53)));
    assert_eq!(g["clocks_mhz"], json!({"core": 1710, "memory": 9501}));
}
