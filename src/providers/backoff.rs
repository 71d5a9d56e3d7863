//! Retry delays: exponential growth with full jitter, a floor and a cap.
//!
//! Full jitter (a uniform draw between zero and the exponential bound) spreads the retries of
//! many pods that failed together, so a provider coming back from an outage is not hit by a
//! synchronised wave. The floor bounds the request rate even when the draw lands near zero
//! many times in a row: one agent never retries more often than once per `floor`.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    floor: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// `floor` is both the first bound and the minimum delay; `cap` the largest delay.
    pub fn new(floor: Duration, cap: Duration) -> Backoff {
        Backoff { floor, cap: cap.max(floor), attempt: 0 }
    }

    /// The delay before the next attempt; grows the bound for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let bound = self.bound();
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(0..=millis)).max(self.floor)
    }

    /// The upper bound of the next delay (exposed for tests and logs).
    pub fn bound(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        self.floor.saturating_mul(factor).min(self.cap)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_between_floor_and_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..200 {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_secs(2), "{d:?}");
        }
        assert_eq!(b.bound(), Duration::from_secs(2));
    }

    #[test]
    fn bound_doubles_until_the_cap_and_reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let bounds: Vec<_> = (0..5)
            .map(|_| {
                let x = b.bound();
                b.next_delay();
                x.as_millis()
            })
            .collect();
        assert_eq!(bounds, vec![100, 200, 400, 700, 700]);
        b.reset();
        assert_eq!(b.bound(), Duration::from_millis(100));
        assert_eq!(b.attempts(), 0);
    }

    #[test]
    fn jitter_actually_spreads() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(10));
        for _ in 0..10 {
            b.next_delay();
        }
        let draws: std::collections::BTreeSet<_> = (0..50).map(|_| b.next_delay()).collect();
        assert!(draws.len() > 10, "full jitter should give many distinct delays: {draws:?}");
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..10_000 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }
}
