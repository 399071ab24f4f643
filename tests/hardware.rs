//! The rig's own hardware through the real query path: `get_gpu_info` (AMD sysfs trees and
//! a fake nvidia-smi, really spawned, printing recorded answers), `get_fans` and
//! `get_board_health` against fixture trees, and `probe ACT` of the real binary.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rig_agent::config::Config;
use rig_agent::probes::gpu::NVIDIA_QUERY;
use rig_agent::protocol::{Inbound, decode};
use rig_agent::queries::Catalogue;
use rig_agent::queries::answers::Probes;
use rig_agent::status::AgentStatus;
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected(name: &str) -> Value {
    serde_json::from_str(&fs::read_to_string(fixtures().join("expected").join(name)).unwrap()).unwrap()
}

/// A config file in `dir` with probe roots under `root` and `probes` as its `[probes]`
/// section; returns its path.
fn write_config(dir: &Path, root: &Path, probes: &str) -> PathBuf {
    let token = dir.join("token");
    fs::write(&token, "t\n").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let q = |p: PathBuf| format!("{:?}", p.display().to_string());
    let text = format!(
        "[device]\nhardware_id = \"rig-hw\"\ntoken_file = \"token\"\n[gateway]\nurls = [\"wss://gw.invalid/ws\"]\n\
         [disks]\nsmartctl = \"\"\n[paths]\nstate_dir = {}\nsysfs = {}\nprocfs = {}\nrootfs = {}\n[probes]\n{probes}\n",
        q(dir.join("state")),
        q(root.join("sys")),
        q(root.join("proc")),
        q(root.to_path_buf()),
    );
    let path = dir.join("rig-agent.toml");
    fs::write(&path, text).unwrap();
    path
}

fn catalogue(dir: &Path, root: &Path, probes: &str) -> Catalogue {
    let cfg = Config::load(&write_config(dir, root, probes)).unwrap_or_else(|e| panic!("{e}"));
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

fn runs(dir: &Path) -> usize {
    fs::read_to_string(dir.join("nvidia-smi.runs")).map(|s| s.lines().count()).unwrap_or(0)
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
    assert_eq!(runs(dir.path()), 1);
    std::thread::sleep(Duration::from_millis(350));
    ask(&c, "get_gpu_info");
    assert_eq!(runs(dir.path()), 2, "run again once the answer is older than nvidia_smi_interval");
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
    assert_eq!(runs(dir.path()), 1);
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
    let config = write_config(dir.path(), &fixtures().join("gpu-rig"), &nvidia);
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
    let cfg = Config::load(&write_config(dir.path(), empty.path(), &slow)).unwrap();
    let probes = Arc::new(Probes::from_config(&cfg));
    let asking = {
        let p = Arc::clone(&probes);
        std::thread::spawn(move || p.gpu_info())
    };
    std::thread::sleep(Duration::from_millis(300));
    let other = tempfile::tempdir().unwrap();
    let good = recorded(other.path(), "p106_450.102.04.txt", 0);
    let reloaded = Config::load(&write_config(other.path(), empty.path(), &good)).unwrap();
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
                17592186044416, 1710, 9501";
    let bin = fake_nvidia_smi(dir.path(), &format!("echo '{line}'"));
    let config = write_config(dir.path(), empty.path(), &format!("nvidia_smi = {:?}", bin.display().to_string()));
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
