//! The reconnect schedule of PROTOCOL.md §5: the n-th consecutive failure waits a random time
//! in `[cap/2, cap]`, `cap = min(max, initial * 2^(n-1))`. The jitter spreads a fleet of rigs
//! after a gateway restart; the halving floor keeps a rig from retrying at once.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
    rng: Jitter,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff { initial, max, failures: 0, rng: Jitter::new(seed) }
    }

    /// New bounds from a reloaded config; the failure count is kept.
    pub fn set_bounds(&mut self, initial: Duration, max: Duration) {
        (self.initial, self.max) = (initial, max);
    }

    /// Consecutive failures since the last reset (the tests' view).
    #[cfg(test)]
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The cap for the n-th consecutive failure (n ≥ 1).
    pub fn cap(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// Records a failure; returns the wait before the next attempt, in `[cap/2, cap]`.
    pub fn after_failure(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let cap = self.cap(self.failures);
        cap / 2 + self.rng.fraction_of(cap - cap / 2)
    }

    /// Records a rejected login: the wait is at least `max` (plus up to half of it as jitter),
    /// so that a wrong token never hammers the gateway.
    pub fn after_rejection(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.max + self.rng.fraction_of(self.max / 2)
    }

    /// A login succeeded and its first heartbeat was answered.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// xorshift64*: enough to spread reconnects, seeded per process from the CSPRNG.
#[derive(Debug, Clone)]
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Jitter {
        Jitter(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, span]`.
    fn fraction_of(&mut self, span: Duration) -> Duration {
        let nanos = span.as_nanos().min(u64::MAX as u128) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next() % (nanos + 1))
    }
}

/// A seed for the jitter from the system CSPRNG (two rigs booted together must not share it).
pub fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    let random = rustls::crypto::ring::default_provider().secure_random;
    if random.fill(&mut b).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32;
    }
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn caps_double_from_initial_up_to_max() {
        let b = Backoff::new(1000 * MS, 60_000 * MS, 1);
        let caps: Vec<u64> = (1..=8).map(|n| b.cap(n).as_secs()).collect();
        assert_eq!(caps, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.cap(1000), 60_000 * MS, "no overflow after many failures");
    }

    #[test]
    fn every_wait_lies_in_half_cap_to_cap() {
        for seed in 0..50 {
            let mut b = Backoff::new(50 * MS, 400 * MS, seed);
            for n in 1..=10 {
                let cap = b.cap(n);
                let w = b.after_failure();
                assert!(w >= cap / 2 && w <= cap, "n={n} wait={w:?} cap={cap:?}");
            }
        }
    }

    #[test]
    fn waits_are_spread_not_identical() {
        let waits: Vec<Duration> = (0..100).map(|s| Backoff::new(MS * 1000, MS * 60_000, s).after_failure()).collect();
        let lo = waits.iter().min().unwrap();
        let hi = waits.iter().max().unwrap();
        assert!(*hi - *lo > 300 * MS, "a fleet must spread over the window: {lo:?}..{hi:?}");
    }

    #[test]
    fn a_rejected_login_waits_at_least_max() {
        for seed in 0..50 {
            let mut b = Backoff::new(MS * 10, MS * 300, seed);
            let w = b.after_rejection();
            assert!(w >= 300 * MS && w <= 450 * MS, "{w:?}");
        }
    }

    #[test]
    fn reset_starts_the_schedule_again() {
        let mut b = Backoff::new(100 * MS, 10_000 * MS, 7);
        for _ in 0..5 {
            b.after_failure();
        }
        assert_eq!(b.failures(), 5);
        b.reset();
        assert!(b.after_failure() <= 100 * MS);
    }
}
