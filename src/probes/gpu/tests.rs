use super::*;
use std::time::Duration;

#[test]
fn a_csv_line_gives_every_field_with_mib_as_bytes_and_the_bus_id_as_sysfs_writes_it() {
    let g = parse_nvidia(
        "0, NVIDIA GeForce RTX 3080, 00000000:0A:00.0, 64, 72, 219.53, 320.00, 100, 10240, 5120, 1710, 9501, GPU-5E1F0C2A-8b3d-4e7f-9a1b-2c3d4e5f6a7b\n",
    )
    .unwrap();
    assert_eq!(g.len(), 1);
    let g = &g[0];
    assert_eq!(g.index, Some(0));
    assert_eq!(g.name.as_deref(), Some("NVIDIA GeForce RTX 3080"));
    assert_eq!(g.bus_id.as_deref(), Some("0000:0a:00.0"));
    assert_eq!((g.temperature_celsius, g.fan_percent), (Some(64.0), Some(72.0)));
    assert_eq!((g.power_watts, g.power_limit_watts), (Some(219.53), Some(320.0)));
    assert_eq!(g.utilization_percent, Some(100.0));
    assert_eq!((g.memory_total_bytes, g.memory_used_bytes), (Some(10240 << 20), Some(5120 << 20)));
    assert_eq!((g.core_clock_mhz, g.memory_clock_mhz), (Some(1710), Some(9501)));
    assert_eq!(g.state, GpuState::Ok);
    assert_eq!(
        g.uuid.as_deref(),
        Some("GPU-5e1f0c2a-8b3d-4e7f-9a1b-2c3d4e5f6a7b"),
        "lower case, as the kernel log writes it"
    );
}

#[test]
fn not_available_and_not_supported_fields_are_none() {
    let g = parse_nvidia(
        "1, Tesla P40, 00000000:04:00.0, 38, [N/A], [Not Supported], [N/A], 0, 22919, 0, [Unknown Error], 405, [N/A]\n",
    )
    .unwrap();
    let g = &g[0];
    assert_eq!(g.temperature_celsius, Some(38.0));
    assert_eq!((g.fan_percent, g.power_watts, g.power_limit_watts), (None, None, None));
    assert_eq!(g.core_clock_mhz, None);
    assert_eq!(g.memory_clock_mhz, Some(405));
    assert_eq!(g.uuid, None);
}

#[test]
fn a_gpu_fallen_off_the_bus_is_listed_as_lost_beside_the_others() {
    let g = parse_nvidia(
            "0, NVIDIA GeForce RTX 3070, 00000000:01:00.0, 58, 60, 130.10, 220.00, 99, 8192, 4200, 1500, 7000, GPU-1\n\
             Unable to determine the device handle for GPU 0000:03:00.0: GPU is lost.  Reboot the system to recover this GPU\n",
        )
        .unwrap();
    assert_eq!(g.len(), 2);
    assert_eq!(g[1].state, GpuState::Lost);
    assert_eq!(g[1].bus_id.as_deref(), Some("0000:03:00.0"));
    assert!(g[1].error.as_deref().unwrap().starts_with("GPU is lost"), "{:?}", g[1].error);
    assert_eq!((g[1].index, g[1].temperature_celsius), (None, None), "nothing made up for a lost GPU");
    let e = parse_nvidia("Unable to determine the device handle for GPU 0000:05:00.0: Unknown Error\n").unwrap();
    assert_eq!(e[0].state, GpuState::Error);
}

#[test]
fn no_devices_is_an_empty_list_and_a_driver_failure_is_an_error_in_its_own_words() {
    assert_eq!(parse_nvidia("No devices were found\n").unwrap(), vec![]);
    assert_eq!(parse_nvidia("").unwrap(), vec![]);
    let e = parse_nvidia(
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest \
             NVIDIA driver is installed and running.\n",
    )
    .unwrap_err();
    assert!(e.starts_with("NVIDIA-SMI has failed"), "{e}");
    assert!(e.chars().count() <= TEXT_CAP + 1, "capped");
}

#[test]
fn a_name_with_a_comma_keeps_the_fields_after_it_in_place() {
    let g = parse_nvidia("0, Odd, Name, 00000000:01:00.0, 50, 30, 100.00, 200.00, 5, 4096, 100, 1000, 2000, GPU-1")
        .unwrap();
    assert_eq!(g[0].name.as_deref(), Some("Odd,Name"));
    assert_eq!(g[0].temperature_celsius, Some(50.0));
}

#[test]
fn a_missing_binary_is_logged_once_and_other_failures_when_they_change() {
    let r = NvidiaReader::new(NvidiaSettings {
        binary: "/nonexistent/nvidia-smi".into(),
        timeout: Duration::from_secs(1),
        max_age: Duration::ZERO,
    });
    let missing = r.read();
    assert!(matches!(missing, Err(NvidiaError::NotInstalled(_))), "{missing:?}");
    assert!(!r.log(&missing), "logged again");
    let hung = Err(NvidiaError::TimedOut(Duration::from_secs(1)));
    assert!(r.log(&hung));
    assert!(!r.log(&hung), "the same failure twice in a row is logged once");
    assert!(!r.log(&Ok(vec![])));
    assert!(r.log(&hung), "after a success it is news again");
    assert!(!r.log(&missing), "a missing binary stays said once");
}

#[test]
fn the_starred_dpm_level_is_the_current_clock() {
    assert_eq!(parse_dpm_current("0: 500Mhz\n1: 1300Mhz *\n2: 1750Mhz\n"), Some(1300));
    assert_eq!(parse_dpm_current("0: 500Mhz\n"), None);
    assert_eq!(parse_dpm_current("0: 96Mhz *\n1: 456Mhz\n"), Some(96));
}

#[test]
fn uevent_values_are_found_by_exact_key() {
    let u = "DRIVER=amdgpu\nPCI_CLASS=30000\nPCI_ID=1002:73BF\nPCI_SLOT_NAME=0000:03:00.0\n";
    assert_eq!(uevent_value(u, "PCI_ID").as_deref(), Some("1002:73BF"));
    assert_eq!(uevent_value(u, "PCI_SLOT_NAME").as_deref(), Some("0000:03:00.0"));
    assert_eq!(uevent_value(u, "PCI"), None);
}

#[test]
fn values_that_overflow_or_no_gpu_reports_are_null_in_every_build() {
    // 2^44 MiB is 2^64 bytes (a plain product wraps to 0 in a release build); 2^64-1 MiB
    // overflows too; a fan at -5 % and 101 % busy are not readings.
    let g = parse_nvidia(
        "0, RTX, 00000000:01:00.0, 300, -5, -1.00, inf, 101, 18446744073709551615, 17592186044416, 999999999, NaN, x\n",
    )
    .unwrap();
    let g = &g[0];
    assert_eq!((g.memory_total_bytes, g.memory_used_bytes), (None, None));
    assert_eq!((g.fan_percent, g.utilization_percent), (None, None));
    assert_eq!((g.temperature_celsius, g.power_watts, g.power_limit_watts), (None, None, None));
    assert_eq!((g.core_clock_mhz, g.memory_clock_mhz), (None, None));
    // The largest that fits is kept.
    let g = parse_nvidia("0, RTX, 00000000:01:00.0, 40, 0, 0.00, 0.00, 0, 17592186044415, 0, 0, 0, GPU-2\n").unwrap();
    assert_eq!(g[0].memory_total_bytes, Some(17_592_186_044_415 << 20));
    assert_eq!((g[0].fan_percent, g[0].utilization_percent), (Some(0.0), Some(0.0)));
}

#[test]
fn amd_readings_out_of_range_are_null() {
    let d = tempfile::tempdir().unwrap();
    let dev = d.path().join("class/drm/card0/device");
    let hw = dev.join("hwmon/hwmon3");
    std::fs::create_dir_all(&hw).unwrap();
    let put = |p: std::path::PathBuf, v: &str| std::fs::write(p, v).unwrap();
    put(dev.join("uevent"), "PCI_ID=1002:73BF\nPCI_SLOT_NAME=0000:03:00.0\n");
    put(dev.join("gpu_busy_percent"), "101\n");
    put(dev.join("mem_info_vram_used"), "1024\n");
    put(hw.join("pwm1"), "300\n");
    put(hw.join("pwm1_max"), "255\n");
    put(hw.join("fan1_input"), "4294967295\n");
    put(hw.join("power1_average"), "18446744073709551615\n");
    put(hw.join("temp1_input"), "9223372036854775807\n");
    let g = &read_amd(d.path())[0];
    assert_eq!((g.utilization_percent, g.fan_percent, g.fan_rpm), (None, None, None));
    assert_eq!((g.power_watts, g.temperature_celsius), (None, None));
    assert_eq!(g.memory_used_bytes, Some(1024));
}
