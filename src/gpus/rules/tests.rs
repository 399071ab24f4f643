use std::time::Duration;

use super::*;
use crate::probes::gpu::parse_nvidia;

const A: &str = "0000:01:00.0";
const B: &str = "0000:03:00.0";

fn on_bus(buses: &[&str]) -> Option<Vec<PciGpu>> {
    Some(buses.iter().map(|b| PciGpu { bus_id: b.to_string(), vendor: Vendor::Nvidia }).collect())
}

/// nvidia-smi's answer listing `working` GPUs and `lost` ones, from a run started at `at`.
fn smi(at: Instant, working: &[&str], lost: &[&str]) -> NvidiaSeen {
    let mut text = String::new();
    for (i, b) in working.iter().enumerate() {
        text += &format!(
            "{i}, NVIDIA GeForce RTX 3090, {b}, 60, 70, 300.00, 350.00, 100, 24576, 20000, 1695, 9751, GPU-{i}\n"
        );
    }
    for b in lost {
        text += &format!(
            "Unable to determine the device handle for GPU {b}: GPU is lost.  Reboot the system to recover this GPU\n"
        );
    }
    NvidiaSeen::Listed(at, parse_nvidia(&text).unwrap())
}

fn seen(at: Instant, pci: Option<Vec<PciGpu>>, nvidia: NvidiaSeen) -> Seen {
    Seen { pci, nvidia, amd: Vec::new(), now: at }
}

fn reasons(c: &[Condition]) -> Vec<(&str, Reason)> {
    c.iter().map(|c| (c.subject.as_str(), c.reason)).collect()
}

#[test]
fn gpus_seen_are_remembered_with_their_model_uuid_and_index_and_raise_nothing() {
    let t = Instant::now();
    let (mut inv, mut held) = (GpuInventory::default(), Held::default());
    assert!(evaluate(&mut inv, &mut held, &seen(t, on_bus(&[A, B]), smi(t, &[A, B], &[]))).is_empty());
    assert_eq!(inv.gpus[A].model.as_deref(), Some("NVIDIA GeForce RTX 3090"));
    assert_eq!((inv.gpus[B].uuid.as_deref(), inv.gpus[B].index), (Some("GPU-1"), Some(1)));
}

#[test]
fn a_gpu_that_leaves_the_bus_is_missing_until_it_is_back() {
    let t = Instant::now();
    let (mut inv, mut held) = (GpuInventory::default(), Held::default());
    evaluate(&mut inv, &mut held, &seen(t, on_bus(&[A, B]), smi(t, &[A, B], &[])));
    let c = evaluate(&mut inv, &mut held, &seen(t, on_bus(&[A]), NvidiaSeen::Silent));
    assert_eq!(reasons(&c), [(B, Reason::GpuMissing)]);
    assert_eq!(c[0].detail, "GPU 0000:03:00.0 (NVIDIA GeForce RTX 3090) is no longer on the PCI bus");
    assert!(evaluate(&mut inv, &mut held, &seen(t, on_bus(&[A, B]), NvidiaSeen::Silent)).is_empty());
}

#[test]
fn without_a_pci_bus_nvidia_smi_judges_and_a_silent_one_judges_nothing() {
    let t = Instant::now();
    let (mut inv, mut held) = (GpuInventory::default(), Held::default());
    evaluate(&mut inv, &mut held, &seen(t, None, smi(t, &[A, B], &[])));
    assert!(evaluate(&mut inv, &mut held, &seen(t, None, NvidiaSeen::Silent)).is_empty(), "a hung nvidia-smi");
    assert!(evaluate(&mut inv, &mut held, &seen(t, None, NvidiaSeen::Off)).is_empty());
    let c = evaluate(&mut inv, &mut held, &seen(t, None, smi(t, &[A], &[])));
    assert_eq!(reasons(&c), [(B, Reason::GpuMissing)]);
    assert!(c[0].detail.ends_with("is no longer listed by nvidia-smi"), "{c:?}");
}

#[test]
fn nvidia_smi_saying_a_gpu_is_lost_holds_it_lost_until_a_later_run_lists_it_working() {
    let t0 = Instant::now();
    let t = |s| t0 + Duration::from_secs(s);
    let (mut inv, mut held) = (GpuInventory::default(), Held::default());
    evaluate(&mut inv, &mut held, &seen(t(0), on_bus(&[A, B]), smi(t(0), &[A, B], &[])));
    let c = evaluate(&mut inv, &mut held, &seen(t(10), on_bus(&[A, B]), smi(t(9), &[A], &[B])));
    assert_eq!(reasons(&c), [(B, Reason::GpuLost)]);
    assert_eq!(c[0].detail, "nvidia-smi: GPU is lost.  Reboot the system to recover this GPU");
    // nvidia-smi hangs in the dying driver: still lost.
    assert_eq!(
        reasons(&evaluate(&mut inv, &mut held, &seen(t(20), on_bus(&[A, B]), NvidiaSeen::Silent))),
        [(B, Reason::GpuLost)]
    );
    // The run that saw it lost, or an older one, does not end it.
    let stale = evaluate(&mut inv, &mut held, &seen(t(30), on_bus(&[A, B]), smi(t(5), &[A, B], &[])));
    assert_eq!(reasons(&stale), [(B, Reason::GpuLost)]);
    assert!(evaluate(&mut inv, &mut held, &seen(t(40), on_bus(&[A, B]), smi(t(35), &[A, B], &[]))).is_empty());
}

#[test]
fn a_gpu_the_kernel_lost_stays_lost_on_the_bus_until_nvidia_smi_lists_it_working() {
    let t0 = Instant::now();
    let t = |s| t0 + Duration::from_secs(s);
    let (mut inv, mut held) = (GpuInventory::default(), Held::default());
    evaluate(&mut inv, &mut held, &seen(t(0), on_bus(&[A]), smi(t(0), &[A], &[])));
    let xid = "NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus.";
    held.hold(A, xid, Ends::Answers, t(5));
    let c = evaluate(&mut inv, &mut held, &seen(t(6), on_bus(&[A]), NvidiaSeen::Silent));
    assert_eq!(reasons(&c), [(A, Reason::GpuLost)]);
    assert_eq!(c[0].detail, xid);
    assert_eq!(
        reasons(&evaluate(&mut inv, &mut held, &seen(t(7), on_bus(&[A]), NvidiaSeen::Off))),
        [(A, Reason::GpuLost)]
    );
    assert!(evaluate(&mut inv, &mut held, &seen(t(9), on_bus(&[A]), smi(t(8), &[A], &[]))).is_empty());
}

#[test]
fn a_gpu_removed_from_the_bus_is_one_lost_episode_not_also_missing_and_ends_when_it_is_back() {
    let t0 = Instant::now();
    let t = |s| t0 + Duration::from_secs(s);
    let amd =
        |buses: &[&str]| Some(buses.iter().map(|b| PciGpu { bus_id: b.to_string(), vendor: Vendor::Amd }).collect());
    let card = |b: &str| Gpu {
        bus_id: Some(b.into()),
        index: Some(0),
        ..parse_nvidia("0, x, 0000:00:00.0, 1, 1, 1, 1, 1, 1, 1, 1, 1, GPU-0").unwrap()[0].clone()
    };
    let look = |at, pci, amd_cards: Vec<Gpu>| Seen { pci, nvidia: NvidiaSeen::Off, amd: amd_cards, now: at };
    let (mut inv, mut held) = (GpuInventory::default(), Held::default());
    evaluate(&mut inv, &mut held, &look(t(0), amd(&[B]), vec![card(B)]));
    held.hold(B, "PCI device 0000:03:00.0 was removed", Ends::BackOnBus, t(1));
    // The uevent comes before sysfs lets go of the device: still there, still lost.
    assert_eq!(reasons(&evaluate(&mut inv, &mut held, &look(t(1), amd(&[B]), vec![card(B)]))), [(B, Reason::GpuLost)]);
    assert_eq!(reasons(&evaluate(&mut inv, &mut held, &look(t(2), amd(&[]), vec![]))), [(B, Reason::GpuLost)]);
    assert!(evaluate(&mut inv, &mut held, &look(t(3), amd(&[B]), vec![card(B)])).is_empty());
}

#[test]
fn a_gpu_lost_before_a_restart_ends_when_it_is_on_the_bus_and_working_again() {
    let t = Instant::now();
    let (mut inv, mut held) = (GpuInventory::default(), Held::default());
    evaluate(&mut inv, &mut held, &seen(t, on_bus(&[A]), smi(t, &[A], &[])));
    held.hold(A, "before the restart", Ends::Restart, t);
    // The first scan, before nvidia-smi answers: still lost, not flapping.
    assert_eq!(
        reasons(&evaluate(&mut inv, &mut held, &seen(t, on_bus(&[A]), NvidiaSeen::Silent))),
        [(A, Reason::GpuLost)]
    );
    assert!(evaluate(&mut inv, &mut held, &seen(t, on_bus(&[A]), smi(t, &[A], &[]))).is_empty());
    // Without nvidia-smi, the bus is all there is to go by.
    held.hold(A, "before the restart", Ends::Restart, t);
    assert!(evaluate(&mut inv, &mut held, &seen(t, on_bus(&[A]), NvidiaSeen::Off)).is_empty());
}

#[test]
fn another_gpu_in_the_slot_is_not_held_lost_for_the_old_one() {
    let t0 = Instant::now();
    let (mut inv, mut held) = (GpuInventory::default(), Held::default());
    evaluate(&mut inv, &mut held, &seen(t0, on_bus(&[A]), smi(t0, &[A], &[])));
    held.hold(A, "lost", Ends::Restart, t0);
    let other = match smi(t0, &[A], &[]) {
        NvidiaSeen::Listed(at, mut gpus) => {
            gpus[0].uuid = Some("GPU-other".into());
            NvidiaSeen::Listed(at, gpus)
        }
        s => s,
    };
    // Replaced while down: listed as working with another UUID, whatever the bus says.
    assert!(evaluate(&mut inv, &mut held, &seen(t0, on_bus(&[A]), other)).is_empty());
    assert!(!held.is_held(A));
}

#[test]
fn a_bus_id_that_is_not_a_pci_address_never_enters_the_inventory() {
    let t = Instant::now();
    let (mut inv, mut held) = (GpuInventory::default(), Held::default());
    let hostile = "0, NVIDIA GeForce RTX 3090, 0000:01:00.0\u{1b}[2J, 60, 70, 300.00, 350.00, 100, 24576, 20000, 1695, 9751, GPU-0\n\
                   1, NVIDIA GeForce RTX 3090, ../../../etc/passwd, 60, 70, 300.00, 350.00, 100, 24576, 20000, 1695, 9751, GPU-1\n\
                   2, NVIDIA GeForce RTX 3090, 0000:02:00.0, 60, 70, 300.00, 350.00, 100, 24576, 20000, 1695, 9751, GPU-2\n";
    let listed = NvidiaSeen::Listed(t, parse_nvidia(hostile).unwrap());
    assert!(evaluate(&mut inv, &mut held, &seen(t, None, listed)).is_empty());
    assert_eq!(inv.gpus.keys().collect::<Vec<_>>(), ["0000:02:00.0"]);
}
