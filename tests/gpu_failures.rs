//! A GPU in trouble reaches the gateway like a dead disk: a `type` 3 warning, once per
//! episode and reason, durable and acknowledged, surviving restarts; with
//! `warning.send_cleared`, its end follows as `warning_cleared`. End to end against the
//! real binary: kernel records in the drivers' real formats appended to the file
//! `paths.kmsg` names, a fake `nvidia-smi` (a script printing a file the test rewrites),
//! and a copy of the fixture sysfs with the GPUs on its PCI bus.
//!
//! Where each record's format comes from (the recogniser's unit tests carry more):
//! - `NVRM: Xid (PCI:0000:01:00): 79, pid=…, name=…, GPU has fallen off the bus.`:
//!   NVIDIA/open-gpu-kernel-modules src/nvidia/src/kernel/gpu/rc/kernel_rc.c,
//!   `XID_PRINT_WITH_ATTR`, and the layout of NVIDIA's Xid catalogue; printed through
//!   `nv_printf` (default level, continuation flag, no dictionary).
//! - Xid 13 and 31 (application), 48 (double-bit ECC): the same printer; codes and their
//!   meaning from NVIDIA's Xid catalogue.
//! - `amdgpu 0000:03:00.0: amdgpu: ring gfx timeout, signaled seq=…, emitted seq=…` and
//!   `… GPU reset begin!` / `GPU reset(1) succeeded!`: drivers/gpu/drm/amd/amdgpu/
//!   amdgpu_job.c `amdgpu_job_timedout` and amdgpu_device.c `amdgpu_device_gpu_recover`,
//!   through `dev_err`/`dev_info` (the dictionary names the PCI device).

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const A: &str = "0000:01:00.0";
const B: &str = "0000:02:00.0";
const AMD: &str = "0000:03:00.0";

/// nvidia-smi's CSV line for a working RTX 3090 (the fields of the agent's query).
fn smi_line(index: u32, bus: &str, uuid: &str) -> String {
    format!(
        "{index}, NVIDIA GeForce RTX 3090, 0000{}, 61, 70, 300.00, 350.00, 100, 24576, 20000, 1695, 9751, {uuid}\n",
        bus.to_uppercase()
    )
}

/// What nvidia-smi 510 prints for a GPU its driver lost (tests/fixtures/nvidia-smi).
fn smi_lost(bus: &str) -> String {
    format!(
        "Unable to determine the device handle for GPU {bus}: GPU is lost.  Reboot the system to recover this GPU\n"
    )
}

struct GpuRig {
    dir: tempfile::TempDir,
    rig: PathBuf,
    kmsg: PathBuf,
    smi_answer: PathBuf,
    smi: PathBuf,
    pki: Pki,
    gw: Gateway,
    conn: usize,
    seq: u64,
}

impl GpuRig {
    /// The fixture rig with two NVIDIA GPUs (A, B) and an AMD one on its PCI bus, and
    /// nvidia-smi listing A and B working.
    fn new() -> GpuRig {
        let dir = tempfile::tempdir().unwrap();
        let rig = rig_copy(dir.path());
        for (bus, vendor) in [(A, "0x10de"), (B, "0x10de"), (AMD, "0x1002")] {
            pci_device(&rig, bus, vendor);
        }
        let kmsg = dir.path().join("kmsg.log");
        fs::write(&kmsg, "4,1,100,c;NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus.\n").unwrap();
        let smi_answer = dir.path().join("smi.txt");
        let smi = dir.path().join("nvidia-smi");
        fs::write(&smi, format!("#!/bin/sh\ncat {:?}\n", smi_answer.display().to_string())).unwrap();
        fs::set_permissions(&smi, fs::Permissions::from_mode(0o755)).unwrap();
        let pki = Pki::new(&["localhost"]);
        let gw = Gateway::start(&pki, Script::default());
        let r = GpuRig { dir, rig, kmsg, smi_answer, smi, pki, gw, conn: 0, seq: 1000 };
        r.answer(&(smi_line(0, A, "GPU-aaaaaaaa-0001") + &smi_line(1, B, "GPU-bbbbbbbb-0002")));
        r
    }

    fn answer(&self, text: &str) {
        let tmp = self.dir.path().join("smi.tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(tmp, &self.smi_answer).unwrap();
    }

    fn config(&self, warning: &str) -> PathBuf {
        let mut c = AgentConfig::new(self.gw.url(), &self.pki.ca_file);
        // nvidia-smi is asked every scan: 300 ms here, so its answers matter at once.
        c.disks = "smartctl = \"\"\nscan_interval = \"300ms\"\nio_error_quiet = \"1h\"\n".into();
        c.paths_extra = format!("{}kmsg = {:?}\n", rig_paths(&self.rig), self.kmsg.display().to_string());
        c.warning = warning.into();
        c.sections =
            format!("[probes]\nnvidia_smi = {:?}\nnvidia_smi_interval = \"200ms\"\n", self.smi.display().to_string());
        c.write(self.dir.path())
    }

    /// Appends kernel records: (level, flags, message, dictionary lines).
    fn log(&mut self, records: &[(u8, &str, &str, &[&str])]) {
        let mut text = String::new();
        for (level, flags, message, dictionary) in records {
            self.seq += 1;
            text += &format!("{level},{},{},{flags};{message}\n", self.seq, self.seq * 1000);
            for d in *dictionary {
                text += &format!(" {d}\n");
            }
        }
        OpenOptions::new().append(true).open(&self.kmsg).unwrap().write_all(text.as_bytes()).unwrap();
    }

    /// An NVIDIA record, as `nv_printf` leaves it.
    fn nvrm(&mut self, message: &str) {
        self.log(&[(4, "c", message, &[])]);
    }

    fn inventory(&self) -> String {
        fs::read_to_string(self.dir.path().join("state/gpus.json")).unwrap_or_default()
    }

    /// Starts the binary, waits for its login, its first scan (the fixture's sdb is
    /// offline) and for nvidia-smi's GPUs in the GPU inventory.
    fn start(&mut self, warning: &str) -> Reaped {
        let child = spawn_agent(&self.config(warning), &[]);
        self.conn = self.gw.wait_login(10 * SEC).0;
        if self.gw.warnings_seen("/dev/sdb").is_empty() {
            self.gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
        }
        wait_until(10 * SEC, "nvidia-smi's GPUs in the inventory", || self.inventory().contains("GPU-bbbbbbbb-0002"));
        child
    }

    fn ask(&mut self, act: &str) -> Value {
        self.gw.send_json(self.conn, json!({"act": act, "act_code": "q", "client_id": "c", "reqtype": "post"}));
        match self.gw.wait_for(10 * SEC, act, |e| matches!(e, Event::Received { msg, .. } if msg["act_code"] == "q")) {
            Event::Received { msg, .. } => msg,
            _ => unreachable!(),
        }
    }

    /// `get_gpu_info`'s entry for the GPU at `bus`.
    fn gpu_info(&mut self, bus: &str) -> Value {
        let answer = self.ask("get_gpu_info");
        let gpus = answer["data"]["gpus"].as_array().cloned().unwrap_or_default();
        gpus.into_iter().find(|g| g["bus_id"] == bus).unwrap_or_else(|| panic!("no {bus} in {answer}"))
    }

    /// A disk's kernel error, read after everything logged before it: once its warning is
    /// here, the records before it have been taken in.
    fn sentinel(&mut self) {
        self.log(&[(3, "-", "I/O error, dev nvme0n1, sector 0 op 0x0:(READ)", &[])]);
        self.gw.wait_warning(10 * SEC, "/dev/nvme0n1", "io_errors");
    }
}

/// `bus/pci/devices/<bus>` of a display controller of `vendor`.
fn pci_device(rig: &std::path::Path, bus: &str, vendor: &str) {
    let dir = rig.join("sys/bus/pci/devices").join(bus);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("class"), "0x030000\n").unwrap();
    fs::write(dir.join("vendor"), format!("{vendor}\n")).unwrap();
}

#[test]
fn an_xid_79_is_one_gpu_lost_warning_naming_the_gpu_and_application_xids_are_only_counted() {
    let _g = Guard::new(60 * SEC);
    let mut r = GpuRig::new();
    let mut child = r.start("");
    // A crashed miner first: counted, never warned.
    for _ in 0..3 {
        r.nvrm("NVRM: Xid (PCI:0000:01:00): 13, pid=1712, name=t-rex, Graphics SM Warp Exception on (GPC 0, TPC 1, SM 0): Out Of Range Address");
    }
    r.nvrm("NVRM: Xid (PCI:0000:01:00): 31, pid=1712, name=t-rex, Ch 00000010, intr 00000000. MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_0 faulted @ 0x7f1c_3e000000. Fault is of type FAULT_PDE ACCESS_TYPE_READ");
    // The same process imitating the driver (facility user): never the kernel's.
    r.log(&[(12, "-", "NVRM: Xid (PCI:0000:02:00): 79, GPU has fallen off the bus.", &[])]);
    // As with a real driver, nvidia-smi no longer lists the lost GPU as working: it fails
    // (it often hangs), then says the GPU is lost. A working answer from a run started
    // after the Xid would rightly end the episode (on a loaded machine the checks below
    // came after such a run).
    fs::remove_file(&r.smi_answer).unwrap();
    for _ in 0..50 {
        r.nvrm("NVRM: Xid (PCI:0000:01:00): 79, pid=1712, name=t-rex, GPU has fallen off the bus.");
    }
    let w = r.gw.wait_gpu(10 * SEC, "warning", A, "gpu_lost");
    r.answer(&(smi_lost(A) + &smi_line(1, B, "GPU-bbbbbbbb-0002")));
    assert_eq!(w["type"], 3);
    assert_eq!(w["message"], "GPU[0000:01:00.0]显卡故障");
    assert_eq!(
        (&w["index"], &w["model"], &w["uuid"]),
        (&json!(0), &json!("NVIDIA GeForce RTX 3090"), &json!("GPU-aaaaaaaa-0001"))
    );
    assert_eq!(
        w["detail"],
        "kernel: NVRM: Xid (PCI:0000:01:00): 79, pid=1712, name=t-rex, GPU has fallen off the bus."
    );
    assert!(w["time"].is_u64() && w.get("maintenance").is_none(), "{w}");
    r.sentinel();
    // Every record counted, those the rate limit held back included.
    let until = Instant::now() + 10 * SEC;
    loop {
        let info = r.gpu_info(A);
        if info["xids"] == json!({"13": 3, "31": 1, "79": 50}) {
            assert_eq!(info["failing"], "gpu_lost");
            break;
        }
        assert!(Instant::now() < until, "xid counts: {info}");
        std::thread::sleep(ms(100));
    }
    assert_eq!(r.gw.gpu_seen("warning", A).len(), 1, "{:?}", r.gw.gpu_seen("warning", A));
    assert!(r.gw.gpu_seen("warning", B).is_empty(), "the forged record and the old one were ignored");
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn a_flood_of_xids_for_two_gpus_is_two_warnings() {
    let _g = Guard::new(90 * SEC);
    let mut r = GpuRig::new();
    let mut child = r.start("");
    let mut flood = String::new();
    for i in 0..10_000u64 {
        let gpu = if i % 2 == 0 { "01" } else { "02" };
        flood += &format!(
            "4,{},{},c;NVRM: Xid (PCI:0000:{gpu}:00): 48, pid=2204, name=lolMiner, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.\n",
            r.seq + 1 + i,
            (r.seq + 1 + i) * 1000
        );
    }
    r.seq += 10_000;
    OpenOptions::new().append(true).open(&r.kmsg).unwrap().write_all(flood.as_bytes()).unwrap();
    r.sentinel();
    for bus in [A, B] {
        let seen = r.gw.gpu_seen("warning", bus);
        assert_eq!(seen.len(), 1, "{bus}: {seen:?}");
        assert_eq!(seen[0]["reason"], "gpu_xid");
        assert!(seen[0]["detail"].as_str().unwrap().contains("): 48, "), "{}", seen[0]);
    }
    let until = Instant::now() + 10 * SEC;
    while r.gpu_info(B)["xids"]["48"] != 5000 {
        assert!(Instant::now() < until, "{}", r.gpu_info(B));
        std::thread::sleep(ms(100));
    }
    assert_eq!(stop_agent(&mut child).0, Some(0));
}

#[test]
fn an_amdgpu_ring_timeout_and_its_reset_are_one_gpu_reset_warning() {
    let _g = Guard::new(60 * SEC);
    let mut r = GpuRig::new();
    let mut child = r.start("");
    let dict: &[&str] = &["SUBSYSTEM=pci", "DEVICE=+pci:0000:03:00.0"];
    r.log(&[
        (3, "-", "amdgpu 0000:03:00.0: amdgpu: ring gfx timeout, signaled seq=1705630, emitted seq=1705633", dict),
        (6, "-", "amdgpu 0000:03:00.0: amdgpu: GPU reset begin!", dict),
        (6, "-", "amdgpu 0000:03:00.0: amdgpu: GPU reset(1) succeeded!", dict),
        // Without the dictionary dev_printk always attaches: not the driver's.
        (3, "-", "amdgpu 0000:01:00.0: amdgpu: ring gfx timeout, signaled seq=1, emitted seq=2", &[]),
    ]);
    let w = r.gw.wait_gpu(10 * SEC, "warning", AMD, "gpu_reset");
    assert_eq!(w["message"], "GPU[0000:03:00.0]显卡故障");
    assert_eq!(
        w["detail"],
        "kernel: amdgpu 0000:03:00.0: amdgpu: ring gfx timeout, signaled seq=1705630, emitted seq=1705633"
    );
    r.sentinel();
    assert_eq!(r.gw.gpu_seen("warning", AMD).len(), 1);
    assert!(r.gw.gpu_seen("warning", A).is_empty());
    assert_eq!(stop_agent(&mut child).0, Some(0));
}

#[test]
fn a_gpu_gone_since_the_last_run_is_warned_within_15_s_of_start() {
    let _g = Guard::new(60 * SEC);
    let mut r = GpuRig::new();
    let state = r.dir.path().join("state");
    fs::create_dir_all(&state).unwrap();
    let known = json!({"version": 1, "episodes": [], "gpus": {
        "0000:05:00.0": {"vendor": "nvidia", "model": "NVIDIA CMP 170HX", "uuid": "GPU-cccccccc-0005", "index": 2},
        (A): {"vendor": "nvidia", "model": "NVIDIA GeForce RTX 3090", "uuid": "GPU-aaaaaaaa-0001", "index": 0}}});
    fs::write(state.join("gpus.json"), known.to_string()).unwrap();
    let started = Instant::now();
    let mut child = spawn_agent(&r.config(""), &[]);
    r.conn = r.gw.wait_login(10 * SEC).0;
    let w = r.gw.wait_gpu(15 * SEC, "warning", "0000:05:00.0", "gpu_missing");
    assert!(started.elapsed() <= Duration::from_secs(15), "{:?}", started.elapsed());
    assert_eq!(
        (&w["model"], &w["uuid"], &w["index"]),
        (&json!("NVIDIA CMP 170HX"), &json!("GPU-cccccccc-0005"), &json!(2))
    );
    assert_eq!(w["detail"], "GPU 0000:05:00.0 (NVIDIA CMP 170HX) is no longer on the PCI bus");
    assert!(r.gw.gpu_seen("warning", A).is_empty(), "A is still on the bus");
    assert_eq!(stop_agent(&mut child).0, Some(0));
}

/// nvidia-smi says B is lost: one `gpu_lost`. The agent restarts with B still lost: the
/// acknowledged episode is not warned again. B answers again: its `warning_cleared`
/// refers to the warning of before the restart.
#[test]
fn a_gpu_nvidia_smi_lost_is_warned_once_across_a_restart_and_its_return_is_cleared() {
    let _g = Guard::new(90 * SEC);
    let mut r = GpuRig::new();
    let cleared = "send_cleared = true\n";
    let mut child = r.start(cleared);
    r.answer(&(smi_line(0, A, "GPU-aaaaaaaa-0001") + &smi_lost(B)));
    let w = r.gw.wait_gpu(10 * SEC, "warning", B, "gpu_lost");
    assert_eq!(w["detail"], "nvidia-smi: GPU is lost.  Reboot the system to recover this GPU");
    assert_eq!(w["model"], "NVIDIA GeForce RTX 3090", "named as the inventory knew it");
    wait_until(10 * SEC, "the episode saved as reported", || r.inventory().contains("\"reported\":true"));
    let (code, log) = stop_agent(&mut child);
    assert_eq!(code, Some(0), "{log}");

    let mut child = spawn_agent(&r.config(cleared), &[]);
    r.conn = r.gw.wait_login(10 * SEC).0;
    r.gw.soak(3 * SEC);
    assert_eq!(r.gw.gpu_seen("warning", B).len(), 1, "acknowledged before the restart: not again");
    assert!(r.gw.gpu_seen("warning_cleared", B).is_empty(), "still lost after the restart");
    r.answer(&(smi_line(0, A, "GPU-aaaaaaaa-0001") + &smi_line(1, B, "GPU-bbbbbbbb-0002")));
    let c = r.gw.wait_gpu(10 * SEC, "warning_cleared", B, "gpu_lost");
    assert_eq!(c["ref_act_id"], w["act_id"]);
    assert_eq!(c["type"], 3);
    assert_ne!(c["act_id"], w["act_id"]);
    wait_until(10 * SEC, "the closed episode gone from the inventory", || {
        let inv = r.inventory();
        !inv.contains(w["act_id"].as_str().unwrap())
    });
    r.gw.soak(ms(500));
    assert_eq!(r.gw.gpu_seen("warning_cleared", B).len(), 1);
    assert_eq!(stop_agent(&mut child).0, Some(0));
}

#[test]
fn without_send_cleared_an_episode_ends_silently_and_gpus_warn_false_warns_nothing() {
    let _g = Guard::new(60 * SEC);
    let mut r = GpuRig::new();
    let mut child = r.start("");
    r.answer(&(smi_line(0, A, "GPU-aaaaaaaa-0001") + &smi_lost(B)));
    r.gw.wait_gpu(10 * SEC, "warning", B, "gpu_lost");
    r.answer(&(smi_line(0, A, "GPU-aaaaaaaa-0001") + &smi_line(1, B, "GPU-bbbbbbbb-0002")));
    wait_until(10 * SEC, "the episode closed", || !r.inventory().contains("gpu_lost"));
    assert!(r.gw.gpu_seen("warning_cleared", B).is_empty());
    assert_eq!(stop_agent(&mut child).0, Some(0));

    let text = fs::read_to_string(r.config("")).unwrap() + "\n[gpus]\nwarn = false\n";
    let cfg = r.dir.path().join("off.toml");
    fs::write(&cfg, text).unwrap();
    let mut child = spawn_agent(&cfg, &[]);
    r.conn = r.gw.wait_login(10 * SEC).0;
    r.nvrm("NVRM: Xid (PCI:0000:01:00): 79, pid=1712, name=t-rex, GPU has fallen off the bus.");
    r.sentinel();
    assert!(r.gw.gpu_seen("warning", A).is_empty(), "gpus.warn = false");
    assert_eq!(stop_agent(&mut child).0, Some(0));
}

/// A real PCI uevent: the kernel synthesises `remove` and `add` for a device of this
/// machine (`echo remove > /sys/bus/pci/devices/<addr>/uevent`, as udevadm trigger does),
/// which the fixture sysfs shows as an NVIDIA GPU. Without nvidia-smi, the bus is all the
/// agent has: removed is `gpu_lost`, added back and on the bus ends it.
#[test]
fn a_gpu_removed_from_the_pci_bus_is_gpu_lost_and_its_return_is_cleared() {
    let _g = Guard::new(60 * SEC);
    let mut r = GpuRig::new();
    let real = fs::read_dir("/sys/bus/pci/devices")
        .expect("this machine has a PCI bus")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .min()
        .expect("a PCI device");
    pci_device(&r.rig, &real, "0x10de");
    let text = fs::read_to_string(r.config("send_cleared = true\n")).unwrap();
    let text = text.replace(&format!("nvidia_smi = {:?}", r.smi.display().to_string()), "nvidia_smi = \"\"");
    let cfg = r.dir.path().join("no-smi.toml");
    fs::write(&cfg, text).unwrap();
    let mut child = spawn_agent(&cfg, &[]);
    r.conn = r.gw.wait_login(10 * SEC).0;
    r.gw.wait_warning(10 * SEC, "/dev/sdb", "offline");
    wait_until(10 * SEC, "the GPU in the inventory", || r.inventory().contains(&real));
    let uevent = format!("/sys/bus/pci/devices/{real}/uevent");
    fs::write(&uevent, "remove").unwrap();
    let w = r.gw.wait_gpu(10 * SEC, "warning", &real, "gpu_lost");
    assert_eq!(w["detail"], format!("PCI device {real} was removed from the bus"));
    fs::write(&uevent, "add").unwrap();
    let c = r.gw.wait_gpu(10 * SEC, "warning_cleared", &real, "gpu_lost");
    assert_eq!(c["ref_act_id"], w["act_id"]);
    assert_eq!(r.gw.gpu_seen("warning", &real).len(), 1);
    assert_eq!(stop_agent(&mut child).0, Some(0));
}
