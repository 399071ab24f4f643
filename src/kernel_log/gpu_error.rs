//! Recognises the kernel log records that mean a GPU is in trouble, and which GPU. Pure: a
//! record in, a [`GpuError`] out; the monitor decides what it means for an episode.
//!
//! The forgery rules of `disk_error` hold here too (facility 0 only; a record shaped like a
//! report about a task is never a GPU's; each rule matches its driver's whole prefix, from
//! the start of the message, and the driver's own words after the device):
//!
//! - NVIDIA's driver prints through `nv_printf`, a `printk` with `KERN_CONT` and no level:
//!   the record has the default level (warning) and no dictionary. A record in its format
//!   at a milder level, or with a dictionary, is not believed. Every rule needs the PCI
//!   address in the driver's own digits before any text a process chooses (the `name=` of
//!   an Xid, which is the faulting process's name, comes after the code).
//! - amdgpu prints through `dev_printk` on the PCI device: the kernel attaches
//!   `SUBSYSTEM=pci` and `DEVICE=+pci:<address>`, which no process can add, and the address
//!   in the message must be the dictionary's. Older kernels printed the ring timeout with
//!   `DRM_ERROR`, naming no device: that record is believed at its severity (error) and is
//!   about "the only AMD GPU" ([`GpuRef::OnlyAmd`]), which the monitor resolves, or drops
//!   on a rig with several.
//!
//! The sources of each format are named in the table of real lines in the tests.

use super::record::Record;
use super::scan::Scan;
use super::task_report::{MILDEST_PRINTK_LEVEL, names_a_task};

/// Which GPU a record is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GpuRef {
    /// The PCI address as sysfs writes it: `0000:01:00.0`, lower case.
    Pci(String),
    /// An amdgpu record that names no device: the rig's one AMD GPU, if it has one.
    OnlyAmd,
}

/// What the driver reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `NVRM: Xid (PCI:…): <code>, …`; what the code means is `xid::class`.
    Xid(u32),
    /// NVIDIA's "GPU has fallen off the bus" outside an Xid.
    FellOffBus,
    /// An amdgpu ring (a hardware queue) timed out.
    RingTimeout,
    /// amdgpu reset the GPU (began, succeeded or failed).
    Reset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuError {
    pub gpu: GpuRef,
    pub kind: Kind,
}

/// The GPU meaning of a kernel record, if it has one.
pub fn recognise(r: &Record) -> Option<GpuError> {
    if !r.from_kernel() {
        return None;
    }
    let m = r.message.trim_end();
    if names_a_task(m) {
        return None;
    }
    if let Some((address, kind)) = amdgpu_device(m) {
        let agrees = r.subsystem.as_deref() == Some("pci")
            && r.device.as_deref().and_then(|d| d.strip_prefix("+pci:")) == Some(address.as_str());
        return agrees.then_some(GpuError { gpu: GpuRef::Pci(address), kind });
    }
    // printk formats: at their drivers' severity, and never with a dictionary.
    if r.level > MILDEST_PRINTK_LEVEL || r.subsystem.is_some() || r.device.is_some() {
        return None;
    }
    if let Some(kind) = amdgpu_unnamed(m) {
        return Some(GpuError { gpu: GpuRef::OnlyAmd, kind });
    }
    let (address, kind) = nvrm(m)?;
    Some(GpuError { gpu: GpuRef::Pci(address), kind })
}

/// Exactly `n` hexadecimal digits, lower-cased.
fn hex_digits(s: &mut Scan, n: usize) -> Option<String> {
    let digits = s.0.get(..n).filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))?;
    s.0 = &s.0[n..];
    Some(digits.to_ascii_lowercase())
}

/// `dddd:bb:dd`: NVIDIA's short form, domain, bus and device.
fn domain_bus_device(s: &mut Scan) -> Option<String> {
    let domain = hex_digits(s, 4)?;
    s.lit(":")?;
    let bus = hex_digits(s, 2)?;
    s.lit(":")?;
    let device = hex_digits(s, 2)?;
    Some(format!("{domain}:{bus}:{device}"))
}

/// `dddd:bb:dd.f`: the full PCI address.
fn pci_address(s: &mut Scan) -> Option<String> {
    let short = domain_bus_device(s)?;
    s.lit(".")?;
    let function = s.0.get(..1).filter(|f| f.bytes().all(|b| (b'0'..=b'7').contains(&b)))?.to_string();
    s.0 = &s.0[1..];
    Some(format!("{short}.{function}"))
}

/// NVIDIA's records (`nv_printf`, every one prefixed `NVRM: `):
/// - `NVRM: Xid (PCI:<dddd:bb:dd>[ GPU-I:<n>[ GPU-CI:<n>]]): <code>, [pid=…, name=…, ]<text>`
///   (src/nvidia/src/kernel/gpu/rc/kernel_rc.c, `XID_PRINT_WITH_ATTR`), and drivers before
///   the `PCI:` prefix, `NVRM: Xid (<dddd:bb:dd>): <code>, …`. A GPU is function 0 of its
///   slot, so the address is `<dddd:bb:dd>.0`.
/// - `NVRM: GPU <dddd:bb:dd.f>: GPU has fallen off the bus.` (src/nvidia/arch/nvalloc/
///   unix/src/osinit.c `osHandleGpuLost`, through `NV_DEV_PRINTF`).
/// - `NVRM: The NVIDIA GPU <dddd:bb:dd.f>\x0aNVRM: (PCI ID: …) installed in this system
///   has\x0aNVRM: fallen off the bus and is not responding to commands.` (osapi.c, at
///   probe: the GPU was already lost when the driver loaded).
fn nvrm(m: &str) -> Option<(String, Kind)> {
    let mut s = Scan(m);
    s.lit("NVRM: ")?;
    if s.opt("Xid (") {
        let _ = s.opt("PCI:");
        let short = domain_bus_device(&mut s)?;
        // MIG attribution, then the end of the address.
        let (attribution, rest) = s.rest().split_once("): ")?;
        let migrated = attribution.is_empty()
            || attribution.strip_prefix(" GPU-I:").is_some_and(|a| {
                let (gi, ci) = a.split_once(" GPU-CI:").unwrap_or((a, "0"));
                [gi, ci].iter().all(|n| !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()))
            });
        if !migrated {
            return None;
        }
        let mut s = Scan(rest);
        let code = u32::try_from(s.number()?).ok()?;
        s.lit(",")?;
        return Some((format!("{short}.0"), Kind::Xid(code)));
    }
    if s.opt("GPU ") {
        let address = pci_address(&mut s)?;
        s.lit(": GPU has fallen off the bus.")?;
        return Some((address, Kind::FellOffBus));
    }
    s.lit("The NVIDIA GPU ")?;
    let address = pci_address(&mut s)?;
    s.lit("\\x0aNVRM: (PCI ID: ")?;
    let (_, tail) = s.rest().split_once(") installed in this system has\\x0aNVRM: ")?;
    tail.starts_with("fallen off the bus and is not responding to commands.").then_some((address, Kind::FellOffBus))
}

/// What amdgpu says after its prefixes about a ring timeout or a reset.
fn amdgpu_words(s: &str) -> Option<Kind> {
    let mut s = Scan(s);
    if s.opt("ring ") {
        let ring = s.until(&[' ']);
        let named = !ring.is_empty() && ring.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        return (named && s.opt(" timeout, ")).then_some(Kind::RingTimeout);
    }
    if s.opt("Ring ") {
        let ring = s.until(&[' ']);
        let named = !ring.is_empty() && ring.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        return (named && s.opt(" reset ")).then_some(Kind::Reset);
    }
    const RESETS: [&str; 3] = ["GPU reset begin!", "GPU reset succeeded, trying to resume", "GPU Recovery Failed: "];
    if RESETS.iter().any(|r| s.rest().starts_with(r)) {
        return Some(Kind::Reset);
    }
    s.lit("GPU reset(")?;
    s.number()?;
    s.lit(") ")?;
    (s.opt("succeeded!") || s.opt("failed")).then_some(Kind::Reset)
}

/// `amdgpu <dddd:bb:dd.f>: [amdgpu: ][[drm] |[drm:<function> [amdgpu]] ][*ERROR* ]<words>`:
/// `dev_err`/`dev_info` on the PCI device (drivers/gpu/drm/amd/amdgpu/amdgpu_job.c
/// `amdgpu_job_timedout`, amdgpu_device.c `amdgpu_device_gpu_recover` and its reset
/// helpers), with amdgpu's `dev_fmt` prefix `amdgpu: ` of later kernels, or through
/// `drm_err`/`DRM_DEV_ERROR` (`[drm] *ERROR* `, `[drm:amdgpu_job_timedout [amdgpu]] *ERROR* `).
fn amdgpu_device(m: &str) -> Option<(String, Kind)> {
    let mut s = Scan(m);
    s.lit("amdgpu ")?;
    let address = pci_address(&mut s)?;
    s.lit(": ")?;
    let _ = s.opt("amdgpu: ");
    if !s.opt("[drm] ") && s.opt("[drm:") {
        let function = s.until(&[' ', ']']);
        if function.is_empty() || !function.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        s.lit(" [amdgpu]] ")?;
    }
    let _ = s.opt("*ERROR* ");
    Some((address, amdgpu_words(s.rest())?))
}

/// `[drm:amdgpu_job_timedout [amdgpu]] *ERROR* ring <name> timeout, …`: `DRM_ERROR` in
/// amdgpu_job.c before it named the device (kernels up to 6.9).
fn amdgpu_unnamed(m: &str) -> Option<Kind> {
    let rest = m.strip_prefix("[drm:amdgpu_job_timedout [amdgpu]] *ERROR* ")?;
    (amdgpu_words(rest)? == Kind::RingTimeout).then_some(Kind::RingTimeout)
}

#[cfg(test)]
mod tests;
