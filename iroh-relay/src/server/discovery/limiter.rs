//! Per-client-IP request limits for the publish endpoint: a token bucket per source, fed `now`.
//!
//! IPv6 sources are limited by their /64 (one subscriber usually holds a whole /64, so per-address limits
//! would be no limit). The table of buckets is bounded: when full, buckets that have refilled completely
//! (clients that have been quiet) are dropped first, and if none has, the request is refused, so a flood
//! from ever-new sources cannot grow memory without limit.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

/// Requests per second and burst, per source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestRate {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

impl Default for RequestRate {
    /// Two publishes a second, ten at once: far above what a node needs (one per address change and one
    /// every few minutes), low enough that one source cannot fill the store quickly.
    fn default() -> Self {
        Self {
            per_second: 2.0,
            burst: 10,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The buckets: see the [module docs](self).
#[derive(Debug)]
pub(crate) struct IpLimiter {
    rate: RequestRate,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket>,
}

impl IpLimiter {
    pub(crate) fn new(rate: RequestRate, max_sources: usize) -> Self {
        Self {
            rate,
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Whether a request from `ip` at `now` is within its limit (taking one token if so).
    pub(crate) fn check(&mut self, now: Instant, ip: IpAddr) -> bool {
        let key = source_key(ip);
        let burst = f64::from(self.rate.burst.max(1));
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_sources {
            self.evict_full(now, burst);
            if self.buckets.len() >= self.max_sources {
                return false;
            }
        }
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last);
        bucket.tokens = (bucket.tokens + elapsed.as_secs_f64() * self.rate.per_second).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops the buckets that would be full by `now` (their sources are back to a fresh start anyway).
    fn evict_full(&mut self, now: Instant, burst: f64) {
        let per_second = self.rate.per_second;
        self.buckets.retain(|_, bucket| {
            let elapsed = now.saturating_duration_since(bucket.last);
            bucket.tokens + elapsed.as_secs_f64() * per_second < burst
        });
    }

    /// How many sources are tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }

    /// How long a source that used its whole burst waits for one request.
    pub(crate) fn retry_after(&self) -> Duration {
        Duration::from_secs_f64((1.0 / self.rate.per_second.max(1e-3)).min(3600.0))
    }
}

/// IPv4 addresses as they are; IPv6 by /64 (IPv4-mapped ones as IPv4).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut limiter = IpLimiter::new(
            RequestRate {
                per_second: 2.0,
                burst: 3,
            },
            100,
        );
        let a = ip("192.0.2.1");
        assert!((0..3).all(|_| limiter.check(t0, a)));
        assert!(!limiter.check(t0, a), "burst used up");
        assert!(
            limiter.check(t0, ip("192.0.2.2")),
            "others are not affected"
        );
        assert!(!limiter.check(t0 + SEC / 4, a));
        assert!(
            limiter.check(t0 + SEC / 2, a),
            "one token after half a second"
        );
        // A long pause refills only up to the burst.
        let later = t0 + 100 * SEC;
        assert!((0..3).all(|_| limiter.check(later, a)));
        assert!(!limiter.check(later, a));
        assert_eq!(limiter.retry_after(), SEC / 2);
    }

    #[test]
    fn ipv6_sources_share_their_64() {
        let t0 = Instant::now();
        let mut limiter = IpLimiter::new(
            RequestRate {
                per_second: 1.0,
                burst: 1,
            },
            100,
        );
        assert!(limiter.check(t0, ip("2001:db8:1:2::1")));
        assert!(!limiter.check(t0, ip("2001:db8:1:2:ffff::9")), "same /64");
        assert!(limiter.check(t0, ip("2001:db8:1:3::1")), "another /64");
        assert!(limiter.check(t0, ip("::ffff:192.0.2.9")));
        assert!(
            !limiter.check(t0, ip("192.0.2.9")),
            "mapped is the same IPv4"
        );
    }

    #[test]
    fn the_table_is_bounded_and_quiet_sources_make_room() {
        let t0 = Instant::now();
        let mut limiter = IpLimiter::new(
            RequestRate {
                per_second: 1.0,
                burst: 2,
            },
            3,
        );
        for i in 1..=3 {
            assert!(limiter.check(t0, ip(&format!("192.0.2.{i}"))));
        }
        // Full, and nobody has refilled yet: a new source is refused, known ones still served.
        assert!(!limiter.check(t0, ip("198.51.100.1")));
        assert!(limiter.check(t0, ip("192.0.2.1")));
        assert_eq!(limiter.len(), 3);
        // Two seconds later every bucket is full again: room for newcomers.
        assert!(limiter.check(t0 + 2 * SEC, ip("198.51.100.1")));
        assert!(limiter.len() <= 3);
    }
}
