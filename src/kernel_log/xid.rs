//! What an NVIDIA Xid code means for the rig: the one table the agent keeps of them.
//!
//! Source: NVIDIA's Xid catalogue ("Xid Errors", docs.nvidia.com/deploy/xid-errors, its
//! catalogue of codes with their immediate action) and the codes' names in the driver,
//! `src/common/sdk/nvidia/inc/nverror.h` of NVIDIA/open-gpu-kernel-modules (595.45.04).
//!
//! A warning sends someone to the rig, so only codes the catalogue attributes to the GPU
//! itself (memory, its micro-controllers, its links, its firmware) or to its loss warn;
//! a code the catalogue resolves by restarting the application is a crashed or misbehaving
//! program (a miner with a bad overclock included) and is only counted, per GPU, in
//! `get_gpu_info`. So is every code not in the table: a new driver's codes are counted
//! until someone classifies them here.

/// What a code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XidClass {
    /// The GPU fell off the bus: `gpu_lost`.
    FellOffBus,
    /// The GPU itself is in trouble: `gpu_xid`.
    Hardware,
    /// The driver says the GPU needs a reset or has been recovered: `gpu_reset`.
    Recovery,
    /// An application's fault (the catalogue's "restart the application"): counted only.
    Application,
    /// Not in the table: counted only.
    Unclassified,
}

/// The classified codes: (code, class, the driver's name for it).
#[rustfmt::skip]
pub const XIDS: &[(u32, XidClass, &str)] = &[
    // Restart the application: the program's channel faulted, the GPU is fine.
    (8, XidClass::Application, "ROBUST_CHANNEL_FIFO_ERROR_IDLE_TIMEOUT: GPU stopped processing"),
    (13, XidClass::Application, "ROBUST_CHANNEL_GR_EXCEPTION: graphics engine exception"),
    (31, XidClass::Application, "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT: GPU memory page fault"),
    (32, XidClass::Application, "ROBUST_CHANNEL_PBDMA_ERROR: invalid or corrupted push buffer stream"),
    (43, XidClass::Application, "ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR: GPU stopped processing"),
    (45, XidClass::Application, "ROBUST_CHANNEL_PREEMPTIVE_REMOVAL: preemptive cleanup after earlier errors"),
    (68, XidClass::Application, "ROBUST_CHANNEL_NVDEC0_ERROR: video decoder exception"),
    (69, XidClass::Application, "ROBUST_CHANNEL_GR_CLASS_ERROR: graphics engine class error"),
    // The GPU's memory.
    (48, XidClass::Hardware, "ROBUST_CHANNEL_GPU_ECC_DBE: double-bit ECC error"),
    (58, XidClass::Hardware, "FB_MEMORY_ERROR: unstable video memory interface"),
    (63, XidClass::Hardware, "INFOROM_PAGE_RETIREMENT_EVENT: ECC page retirement or row remapping event"),
    (64, XidClass::Hardware, "INFOROM_PAGE_RETIREMENT_FAILURE: ECC page retirement or row remapping failure"),
    (92, XidClass::Hardware, "EXCESSIVE_SBE_INTERRUPTS: high single-bit ECC error rate"),
    (94, XidClass::Hardware, "ROBUST_CHANNEL_CONTAINED_ERROR: contained memory error"),
    (95, XidClass::Hardware, "ROBUST_CHANNEL_UNCONTAINED_ERROR: uncontained memory error"),
    (140, XidClass::Hardware, "UNRECOVERABLE_ECC_ERROR_ESCAPE: unrecovered ECC error"),
    (171, XidClass::Hardware, "UNCORRECTABLE_DRAM_ERROR: uncorrectable DRAM error"),
    (172, XidClass::Hardware, "UNCORRECTABLE_SRAM_ERROR: uncorrectable SRAM error"),
    // Its micro-controllers, firmware and InfoROM.
    (61, XidClass::Hardware, "PMU_BREAKPOINT: internal micro-controller breakpoint"),
    (62, XidClass::Hardware, "PMU_HALT_ERROR: internal micro-controller halt"),
    (119, XidClass::Hardware, "GSP_RPC_TIMEOUT: GSP firmware did not answer"),
    (120, XidClass::Hardware, "GSP_ERROR: GSP firmware error"),
    (143, XidClass::Hardware, "GPU_INIT_ERROR: GPU initialisation failure"),
    (169, XidClass::Hardware, "SEC2_HALT_ERROR: security micro-controller halt"),
    // Its links.
    (74, XidClass::Hardware, "NVLINK_ERROR: NVLink error"),
    (167, XidClass::Hardware, "PCIE_FATAL_TIMEOUT: PCIe fatal timeout"),
    // Lost.
    (79, XidClass::FellOffBus, "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS: GPU has fallen off the bus"),
    // The driver's recovery.
    (154, XidClass::Recovery, "GPU_RECOVERY_ACTION_CHANGED: the GPU needs a reset or a reboot to recover"),
];

/// The class of `code`.
pub fn class(code: u32) -> XidClass {
    XIDS.iter().find(|(c, _, _)| *c == code).map_or(XidClass::Unclassified, |(_, class, _)| *class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocols_codes_are_classified_as_it_says() {
        for code in [13, 31, 43, 45] {
            assert_eq!(class(code), XidClass::Application, "{code}");
        }
        for code in [48, 61, 62, 63, 64, 74, 92, 94, 95, 119, 120] {
            assert_eq!(class(code), XidClass::Hardware, "{code}");
        }
        assert_eq!(class(79), XidClass::FellOffBus);
        assert_eq!(class(999), XidClass::Unclassified);
    }

    #[test]
    fn each_code_is_in_the_table_once() {
        let mut codes: Vec<u32> = XIDS.iter().map(|(c, _, _)| *c).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), XIDS.len());
    }
}
