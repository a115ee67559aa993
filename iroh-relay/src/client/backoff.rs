//! Reconnect delays: exponential backoff with jitter and a cap, as a pure state machine.
//!
//! ```text
//!   failure n (counting from 0):  base = min(min_delay * 2^n, max_delay)
//!                                 delay = uniform in [base / 2, base]      (jitter: spreads a crowd out)
//!   a connection that lasted at least `stable_after` resets n to 0
//!   a refusal (401, 403, denied login) jumps straight to max_delay
//! ```
//!
//! Jitter matters when a relay restarts: every client loses its connection at the same moment, and without
//! it they would all come back in lockstep. The struct never reads the clock or a random source; the driver
//! passes `now` and an RNG, so tests are deterministic.

use std::time::{Duration, Instant};

use rand::Rng;

/// The reconnect schedule of one client.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    stable_after: Duration,
    /// Consecutive failures since the last stable connection.
    failures: u32,
    /// When the current connection was established, if there is one.
    connected_at: Option<Instant>,
}

impl Backoff {
    /// A schedule from `min` up to `max` (`max` is raised to `min` if smaller); a connection that lasts
    /// `stable_after` resets it.
    pub(crate) fn new(min: Duration, max: Duration, stable_after: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            stable_after,
            failures: 0,
            connected_at: None,
        }
    }

    /// A connection was established at `now`.
    pub(crate) fn on_connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// A connection attempt failed, or a connection ended, at `now`: how long to wait before the next
    /// attempt. `refused` marks a refusal by the server, which waits the longest delay at once.
    pub(crate) fn next_delay(
        &mut self,
        now: Instant,
        refused: bool,
        rng: &mut impl Rng,
    ) -> Duration {
        if let Some(since) = self.connected_at.take()
            && now.saturating_duration_since(since) >= self.stable_after
        {
            self.failures = 0;
        }
        let base = if refused {
            self.max
        } else {
            self.base_delay(self.failures)
        };
        self.failures = self.failures.saturating_add(1);
        base.mul_f64(rng.gen_range(0.5..=1.0))
    }

    /// The delay before jitter after `failures` consecutive failures.
    fn base_delay(&self, failures: u32) -> Duration {
        // 2^20 times any sensible minimum is past any sensible maximum; stop doubling there.
        let factor = 1u32 << failures.min(20);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// Consecutive failures counted so far.
    #[cfg(test)]
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);
    const STABLE: Duration = Duration::from_secs(5);

    #[test]
    fn delays_double_within_jitter_bounds_up_to_the_cap() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut backoff = Backoff::new(MIN, MAX, STABLE);
        let now = Instant::now();
        let mut base = MIN;
        for _ in 0..20 {
            let delay = backoff.next_delay(now, false, &mut rng);
            assert!(
                delay >= base / 2 && delay <= base,
                "{delay:?} vs base {base:?}"
            );
            base = (base * 2).min(MAX);
        }
        // Far past the cap, and the failure count saturates instead of overflowing.
        for _ in 0..100 {
            assert!(backoff.next_delay(now, false, &mut rng) <= MAX);
        }
    }

    #[test]
    fn jitter_spreads_clients_apart() {
        let now = Instant::now();
        let delays: Vec<Duration> = (0..10)
            .map(|seed| {
                let mut backoff = Backoff::new(MIN, MAX, STABLE);
                backoff.next_delay(now, false, &mut StdRng::seed_from_u64(seed))
            })
            .collect();
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 5, "{delays:?}");
    }

    #[test]
    fn a_stable_connection_resets_the_schedule_and_a_flapping_one_does_not() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut backoff = Backoff::new(MIN, MAX, STABLE);
        let mut now = Instant::now();
        for _ in 0..6 {
            backoff.next_delay(now, false, &mut rng);
        }
        assert_eq!(backoff.failures(), 6);

        // Connected, but lost after one second: not stable, the schedule keeps growing.
        backoff.on_connected(now);
        now += Duration::from_secs(1);
        let delay = backoff.next_delay(now, false, &mut rng);
        assert!(delay >= MIN * 32, "{delay:?}");
        assert_eq!(backoff.failures(), 7);

        // Connected for longer than `stable_after`: back to the minimum.
        backoff.on_connected(now);
        now += STABLE;
        let delay = backoff.next_delay(now, false, &mut rng);
        assert!(delay <= MIN, "{delay:?}");
        assert_eq!(backoff.failures(), 1);
    }

    #[test]
    fn a_refusal_waits_the_longest_delay() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut backoff = Backoff::new(MIN, MAX, STABLE);
        let delay = backoff.next_delay(Instant::now(), true, &mut rng);
        assert!(delay >= MAX / 2 && delay <= MAX, "{delay:?}");
    }

    #[test]
    fn a_max_below_min_is_raised() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut backoff = Backoff::new(MIN, Duration::ZERO, STABLE);
        let delay = backoff.next_delay(Instant::now(), false, &mut rng);
        assert!(delay <= MIN && delay >= MIN / 2);
    }
}
