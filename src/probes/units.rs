//! The probes' unit conversions and plausibility ranges, in one place. Release builds do
//! not check integer overflow (a product that overflows wraps silently), so every product
//! here is `checked_*`: a value that overflows, is not a finite number, or lies outside what
//! the hardware can report is `None` (JSON `null`), never a wrapped or made-up number. Debug
//! and release builds therefore give the same answer for the same input.

use std::ops::RangeInclusive;

/// Temperatures a sensor on a working machine can read, in °C. Outside it is a sensor
/// fault or a driver's "no reading" marker (-128, 255, 0x7fffffff millidegrees).
pub const CELSIUS: RangeInclusive<f64> = -60.0..=200.0;
/// A share of something: utilisation, fan duty.
pub const PERCENT: RangeInclusive<f64> = 0.0..=100.0;
/// Power of one device in watts: the largest GPUs draw under 1 kW.
pub const WATTS: RangeInclusive<f64> = 0.0..=10_000.0;
/// Fan speed in rpm: the fastest small server fans turn at about 30 000; chips report
/// 65 535 or more for a count they could not take.
pub const RPM: RangeInclusive<u64> = 0..=50_000;
/// Clock frequencies in MHz (100 GHz is far beyond any chip).
pub const MHZ: RangeInclusive<u64> = 0..=100_000;

/// Bytes per MiB, as nvidia-smi's `nounits` memory fields count.
pub const MIB: u64 = 1 << 20;
/// Bytes per sector as sysfs `size` counts them, whatever the disk's own sector size.
pub const SECTOR: u64 = 512;

/// `count` units of `unit` bytes each; `None` when the product does not fit in a u64.
pub fn bytes(count: u64, unit: u64) -> Option<u64> {
    count.checked_mul(unit)
}

/// `total - part`, `None` when `part` is larger (an inconsistent reading, not 0).
pub fn difference(total: u64, part: u64) -> Option<u64> {
    total.checked_sub(part)
}

/// The sum of `values`, `None` when it overflows.
pub fn sum(values: impl IntoIterator<Item = u64>) -> Option<u64> {
    values.into_iter().try_fold(0u64, u64::checked_add)
}

/// `value` when it lies in `range` (a NaN or an infinity never does).
pub fn within(value: f64, range: &RangeInclusive<f64>) -> Option<f64> {
    range.contains(&value).then_some(value)
}

/// `value` when it lies in `range`.
pub fn within_u64(value: u64, range: &RangeInclusive<u64>) -> Option<u64> {
    range.contains(&value).then_some(value)
}

/// A temperature in °C, if plausible.
pub fn celsius(value: f64) -> Option<f64> {
    within(value, &CELSIUS)
}

/// A percentage, if it is one.
pub fn percent(value: f64) -> Option<f64> {
    within(value, &PERCENT)
}

/// Power in watts, if plausible.
pub fn watts(value: f64) -> Option<f64> {
    within(value, &WATTS)
}

/// hwmon's millidegrees Celsius (an integer) in °C, if plausible.
pub fn millidegrees(value: i64) -> Option<f64> {
    // i64 to f64 is exact to 2^53 and only rounds beyond, far outside the range.
    celsius(value as f64 / 1000.0)
}

/// hwmon's microwatts in watts, if plausible.
pub fn microwatts(value: u64) -> Option<f64> {
    watts(value as f64 / 1e6)
}

/// Hertz in whole MHz, if plausible.
pub fn hz_to_mhz(value: u64) -> Option<u64> {
    within_u64(value / 1_000_000, &MHZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_that_do_not_fit_are_none_instead_of_wrapping() {
        assert_eq!(bytes(10240, MIB), Some(10_737_418_240));
        // 2^44 MiB is 2^64 bytes: in a release build the plain product is 0.
        assert_eq!(bytes(17_592_186_044_416, MIB), None);
        assert_eq!(bytes(u64::MAX, MIB), None);
        assert_eq!(bytes(u64::MAX / SECTOR + 1, SECTOR), None);
        assert_eq!(bytes(u64::MAX / SECTOR, SECTOR), Some(u64::MAX / SECTOR * SECTOR));
        assert_eq!(bytes(0, u64::MAX), Some(0));
    }

    #[test]
    fn differences_and_sums_that_do_not_fit_are_none() {
        assert_eq!(difference(10, 4), Some(6));
        assert_eq!(difference(4, 10), None, "more free than total is not 0 used");
        assert_eq!(sum([1, 2, 3]), Some(6));
        assert_eq!(sum([u64::MAX, 1]), None);
        assert_eq!(sum([]), Some(0));
    }

    #[test]
    fn readings_outside_what_hardware_gives_are_none() {
        assert_eq!(percent(101.0), None);
        assert_eq!(percent(-5.0), None);
        assert_eq!(percent(100.0), Some(100.0));
        assert_eq!(percent(f64::NAN), None);
        assert_eq!(percent(f64::INFINITY), None);
        assert_eq!(celsius(64.0), Some(64.0));
        assert_eq!(celsius(255.0), None);
        assert_eq!(celsius(-128.0), None);
        assert_eq!(watts(219.53), Some(219.53));
        assert_eq!(watts(-1.0), None);
        assert_eq!(watts(1e300), None);
    }

    #[test]
    fn hwmon_units_are_converted_and_checked() {
        assert_eq!(millidegrees(45_500), Some(45.5));
        assert_eq!(millidegrees(-2_000), Some(-2.0));
        assert_eq!(millidegrees(i64::MAX), None);
        assert_eq!(millidegrees(i64::MIN), None);
        assert_eq!(millidegrees(255_000), None);
        assert_eq!(microwatts(220_000_000), Some(220.0));
        assert_eq!(microwatts(u64::MAX), None);
        assert_eq!(hz_to_mhz(1_800_000_000), Some(1800));
        assert_eq!(hz_to_mhz(u64::MAX), None);
        assert_eq!(within_u64(65_535, &RPM), None);
        assert_eq!(within_u64(1_250, &RPM), Some(1_250));
    }
}
