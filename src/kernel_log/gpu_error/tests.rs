use super::*;
use crate::kernel_log::record::parse;
use crate::kernel_log::task_report::{AFTER_A_TASK_NAME, forged_records};

/// A kernel record at `level` with this message and dictionary.
fn kernel(level: u8, message: &str, dictionary: &[&str]) -> Record {
    let mut text = format!("{level},100,1000,-;{message}\n");
    for entry in dictionary {
        text += &format!(" {entry}\n");
    }
    parse(&text).unwrap()
}

/// NVIDIA's records: the default level (warning), no dictionary, and the continuation flag
/// `nv_printf`'s `KERN_CONT` leaves on them.
fn nvrm(message: &str) -> Option<GpuError> {
    recognise(&parse(&format!("4,100,1000,c;{message}\n")).unwrap())
}

fn amd(level: u8, address: &str, message: &str) -> Option<GpuError> {
    recognise(&kernel(level, message, &["SUBSYSTEM=pci", &format!("DEVICE=+pci:{address}")]))
}

fn pci(address: &str, kind: Kind) -> Option<GpuError> {
    Some(GpuError { gpu: GpuRef::Pci(address.into()), kind })
}

/// Real lines, each with where it comes from; all must still be recognised.
#[test]
fn every_real_gpu_failure_format_is_recognised() {
    #[rustfmt::skip]
    let nvidia: [(&str, &str, Option<GpuError>); 9] = [
        // src/nvidia/src/kernel/gpu/rc/kernel_rc.c, XID_PRINT_WITH_ATTR without a process:
        // the driver prints no pid or name when no process owned the channel (a line as
        // reported from a 6.19 kernel with an RTX 5080).
        ("kernel_rc.c", "NVRM: Xid (PCI:0000:2b:00): 79, GPU has fallen off the bus.", pci("0000:2b:00.0", Kind::Xid(79))),
        // With the process that owned the channel (the layout NVIDIA's Xid catalogue shows).
        ("kernel_rc.c", "NVRM: Xid (PCI:0000:01:00): 79, pid=1712, name=t-rex, GPU has fallen off the bus.", pci("0000:01:00.0", Kind::Xid(79))),
        ("kernel_rc.c", "NVRM: Xid (PCI:0000:10:1c): 63, pid=1896, Row Remapper: New row marked for remapping, reset gpu to activate.", pci("0000:10:1c.0", Kind::Xid(63))),
        ("kernel_rc.c", "NVRM: Xid (PCI:0000:3B:00): 13, pid=2244, name=python3, Graphics SM Warp Exception on (GPC 0, TPC 1, SM 0): Out Of Range Address", pci("0000:3b:00.0", Kind::Xid(13))),
        // src/nvidia/src/kernel/gpu/arch/ampere/kern_gpu_error_cont_ga100.c, the MIG forms.
        ("kern_gpu_error_cont_ga100.c", "NVRM: Xid (PCI:0000:01:00 GPU-I:05): 94, pid=7194, Contained: CE User Channel (0x9). RST: No, D-RST: No", pci("0000:01:00.0", Kind::Xid(94))),
        ("kern_gpu_error_cont_ga100.c", "NVRM: Xid (PCI:0000:01:00 GPU-I:05 GPU-CI:01): 95, pid=7062, Uncontained: LTC TAG (0x2, 0x1). RST: Yes, D-RST: No", pci("0000:01:00.0", Kind::Xid(95))),
        // Drivers of the 3xx era, before the `PCI:` prefix.
        ("nvidia 340", "NVRM: Xid (0000:02:00): 31, Ch 00000002, engmask 00000101, intr 10000000", pci("0000:02:00.0", Kind::Xid(31))),
        // src/nvidia/arch/nvalloc/unix/src/osinit.c osHandleGpuLost, through NV_DEV_PRINTF.
        ("osinit.c", "NVRM: GPU 0000:2b:00.0: GPU has fallen off the bus.", pci("0000:2b:00.0", Kind::FellOffBus)),
        // src/nvidia/arch/nvalloc/unix/src/osapi.c, at probe, one printf over three lines.
        ("osapi.c", "NVRM: The NVIDIA GPU 0000:01:00.0\\x0aNVRM: (PCI ID: 10de:2204) installed in this system has\\x0aNVRM: fallen off the bus and is not responding to commands.", pci("0000:01:00.0", Kind::FellOffBus)),
    ];
    for (source, message, want) in nvidia {
        assert_eq!(nvrm(message), want, "{source}: {message}");
    }
    #[rustfmt::skip]
    let amdgpu: [(&str, u8, &str, &str, Option<GpuError>); 9] = [
        // drivers/gpu/drm/amd/amdgpu/amdgpu_job.c amdgpu_job_timedout through dev_err, with
        // amdgpu's dev_fmt prefix (6.10 and later; a public report from a Radeon 7900).
        ("amdgpu_job.c", 3, "0000:09:00.0", "amdgpu 0000:09:00.0: amdgpu: ring gfx timeout, signaled seq=1705630, emitted seq=1705633", pci("0000:09:00.0", Kind::RingTimeout)),
        ("amdgpu_job.c", 3, "0000:03:00.0", "amdgpu 0000:03:00.0: amdgpu: ring gfx_0.0.0 timeout, but soft recovered", pci("0000:03:00.0", Kind::RingTimeout)),
        // Through DRM_DEV_ERROR (drm_dev_printk names the caller) and drm_err.
        ("amdgpu_job.c", 3, "0000:03:00.0", "amdgpu 0000:03:00.0: [drm:amdgpu_job_timedout [amdgpu]] *ERROR* ring gfx timeout, signaled seq=3, emitted seq=5", pci("0000:03:00.0", Kind::RingTimeout)),
        ("amdgpu_job.c", 3, "0000:03:00.0", "amdgpu 0000:03:00.0: [drm] *ERROR* ring sdma0 timeout, signaled seq=6047, emitted seq=6049", pci("0000:03:00.0", Kind::RingTimeout)),
        // drivers/gpu/drm/amd/amdgpu/amdgpu_device.c amdgpu_device_gpu_recover, dev_info.
        ("amdgpu_device.c", 6, "0000:29:00.0", "amdgpu 0000:29:00.0: amdgpu: GPU reset begin!", pci("0000:29:00.0", Kind::Reset)),
        ("amdgpu_device.c 6.12", 6, "0000:09:00.0", "amdgpu 0000:09:00.0: amdgpu: GPU reset begin!. Source:  1", pci("0000:09:00.0", Kind::Reset)),
        ("amdgpu_device.c", 6, "0000:09:00.0", "amdgpu 0000:09:00.0: amdgpu: GPU reset(1) succeeded!", pci("0000:09:00.0", Kind::Reset)),
        ("amdgpu_device.c 5.x", 6, "0000:03:00.0", "amdgpu 0000:03:00.0: GPU reset(2) failed", pci("0000:03:00.0", Kind::Reset)),
        // amdgpu_ring.c, the per-queue reset of 6.12 and later.
        ("amdgpu_ring.c", 3, "0000:66:00.0", "amdgpu 0000:66:00.0: amdgpu: Ring gfx_0.0.0 reset failed", pci("0000:66:00.0", Kind::Reset)),
    ];
    for (source, level, address, message, want) in amdgpu {
        assert_eq!(amd(level, address, message), want, "{source}: {message}");
    }
    // amdgpu_job.c before 6.10: DRM_ERROR at KERN_ERR, naming no device.
    let unnamed =
        "[drm:amdgpu_job_timedout [amdgpu]] *ERROR* ring gfx_0.0.0 timeout, signaled seq=5980329, emitted seq=5980331";
    assert_eq!(recognise(&kernel(3, unnamed, &[])), Some(GpuError { gpu: GpuRef::OnlyAmd, kind: Kind::RingTimeout }));
}

/// Real lines of working GPUs, or of GPUs the agent does not judge by them: never a GPU error.
#[test]
fn lines_that_are_not_a_gpu_in_trouble_are_ignored() {
    for message in [
        "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  535.54.03  Tue Jun  6 22:20:39 UTC 2023",
        "NVRM: GPU at PCI:0000:2b:00: GPU-0b11d014-1685-04bd-26ed-5fc0bc1c44ae",
        "NVRM: GPU 0000:2b:00.0: GPU serial number is 1324021012345.",
        "NVRM: Xid (PCI:0000:2b:00): seventy-nine, GPU has fallen off the bus.",
        "NVRM: Xid (PCI:0000:2b:00 GPU-I:x): 79, GPU has fallen off the bus.",
        "NVRM: Xid (PCI:00:2b:00): 79, GPU has fallen off the bus.",
        "nvidia 0000:01:00.0: enabling device (0000 -> 0003)",
    ] {
        assert_eq!(nvrm(message), None, "{message}");
    }
    for message in [
        "amdgpu 0000:03:00.0: amdgpu: GPU recovery disabled.",
        "amdgpu 0000:03:00.0: amdgpu: SMU is initialized successfully!",
        "amdgpu 0000:03:00.0: [drm] *ERROR* ring gfx test failed (-110)",
        "amdgpu 0000:03:00.0: amdgpu:  Process llama-mtmd-cli pid 299886 thread llama-mtmd-cli pid 299886",
    ] {
        assert_eq!(amd(6, "0000:03:00.0", message), None, "{message}");
    }
    assert_eq!(
        recognise(&kernel(3, "[drm:amdgpu_job_timedout [amdgpu]] *ERROR* Process information: process x pid 1", &[])),
        None
    );
}

/// amdgpu logs through dev_printk, which always attaches the dictionary: without it, or
/// naming another device, the record is not believed.
#[test]
fn an_amdgpu_record_without_its_dictionary_or_naming_another_device_is_not_believed() {
    let line = "amdgpu 0000:03:00.0: amdgpu: GPU reset begin!";
    assert!(amd(6, "0000:03:00.0", line).is_some());
    assert_eq!(recognise(&kernel(3, line, &[])), None);
    assert_eq!(amd(6, "0000:04:00.0", line), None);
    assert_eq!(recognise(&kernel(6, line, &["SUBSYSTEM=drm", "DEVICE=+pci:0000:03:00.0"])), None);
}

/// NVIDIA's records have no dictionary and the default level: at a milder level (as the
/// reports that begin with a task's name are) or with a dictionary they are not believed.
#[test]
fn an_nvidia_record_needs_its_drivers_severity_and_no_dictionary() {
    let line = "NVRM: Xid (PCI:0000:01:00): 79, pid=1712, name=t-rex, GPU has fallen off the bus.";
    for (level, believed) in [(1, true), (2, true), (3, true), (4, true), (5, false), (6, false), (7, false)] {
        assert_eq!(recognise(&kernel(level, line, &[])).is_some(), believed, "level {level}");
    }
    assert_eq!(recognise(&kernel(4, line, &["SUBSYSTEM=pci", "DEVICE=+pci:0000:01:00.0"])), None);
}

#[test]
fn a_record_written_by_a_process_is_never_the_kernels() {
    // `echo "NVRM: Xid …" > /dev/kmsg` by root: facility user.
    let r = parse("12,5,6,-;NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus.\n").unwrap();
    assert_eq!(recognise(&r), None);
}

/// Task names that begin like a GPU driver's line (at most 15 bytes).
const NAMES: [&str; 8] = [
    "NVRM: Xid (PCI:",
    "NVRM: Xid (000",
    "NVRM: GPU 0000:",
    "NVRM: The NVIDI",
    "amdgpu 0000:03:",
    "[drm:amdgpu_job",
    "GPU reset begin",
    "ring gfx timeou",
];

/// File names that carry the rest of a driver's words.
const FILES: [&str; 5] = [
    "0000:01:00): 79, GPU has fallen off the bus.",
    "01:00.0: GPU has fallen off the bus.",
    "03:00.0: amdgpu: GPU reset begin!",
    "ring gfx timeout, signaled seq=1, emitted seq=2",
    "79, pid=1, name=x, GPU has fallen off the bus.",
];

#[test]
fn a_forged_segfault_record_never_names_a_gpu() {
    // NVIDIA's records carry the continuation flag: forged ones with it too.
    let records = forged_records(&NAMES, &FILES, &["-", "c"]);
    for text in &records {
        assert_eq!(recognise(&parse(text).unwrap()), None, "{text}");
    }
    assert_eq!(records.len(), NAMES.len() * AFTER_A_TASK_NAME.len() * FILES.len() * 6);
}

#[test]
fn an_address_that_cannot_be_a_pci_address_is_refused() {
    for m in [
        "NVRM: GPU 0000:2b:00.9: GPU has fallen off the bus.",
        "NVRM: GPU ../../..: GPU has fallen off the bus.",
        "NVRM: Xid (PCI:0000:2b:0g): 79, GPU has fallen off the bus.",
        "NVRM: Xid (PCI:0000:2b:00",
    ] {
        assert_eq!(nvrm(m), None, "{m}");
    }
    assert_eq!(amd(6, "0000:03:00", "amdgpu 0000:03:00: amdgpu: GPU reset begin!"), None);
}
