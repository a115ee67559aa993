//! The per-source request limit of the [`Server`](super::Server): a token bucket per source, as a pure
//! struct fed `now` (no clock, no I/O), so tests run on virtual time.
//!
//! A Binding response is two to three times the size of its request. Where sources can be spoofed, an
//! unlimited server is a reflection amplifier: the limit caps what one claimed source can make it send.
//!
//! A source is an IPv4 address, or an IPv6 /64 (one host usually owns a whole /64, so per-address buckets
//! would be no limit at all). At most [`MAX_TRACKED_SOURCES`] sources are tracked; when that many are, the
//! ones whose buckets have refilled (idle ones) are forgotten, at most once a second, and while none can be
//! a new source is answered without being tracked: a flood of made-up sources must not shut out real
//! clients (it could, if new sources were refused), and it gets no more than the server gave before limits.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant},
};

/// The most sources tracked at once (about 3 MiB of state at the worst).
pub const MAX_TRACKED_SOURCES: usize = 65_536;

/// The shortest time between two sweeps of idle sources when the table is full.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Micro-requests per request: buckets count in units of 10^-6 requests so refills are exact integers.
const MICRO: u64 = 1_000_000;

/// How many requests a [`Server`](super::Server) answers for one source.
///
/// The default, 20 a second with bursts of 40, leaves room for many clients behind one NAT (a client sends a
/// handful of requests every half minute) while capping what a spoofed source can reflect at about 4 KB/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second per source.
    pub requests_per_second: u32,
    /// Requests a source may send at once after being quiet (at least 1).
    pub burst: u32,
}

impl RateLimit {
    /// `requests_per_second` with bursts of up to `burst` (raised to at least 1 for each).
    pub fn new(requests_per_second: u32, burst: u32) -> Self {
        Self {
            requests_per_second: requests_per_second.max(1),
            burst: burst.max(1),
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new(20, 40)
    }
}

/// One source's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Micro-requests available at `updated`.
    level: u64,
    updated: Instant,
}

/// The buckets of every tracked source.
#[derive(Debug)]
pub(crate) struct SourceLimiter {
    limit: RateLimit,
    capacity: u64,
    buckets: HashMap<Source, Bucket>,
    last_sweep: Option<Instant>,
}

/// A source: an IPv4 address, or the first 64 bits of an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => Self::V6(prefix64(v6)),
            },
        }
    }
}

fn prefix64(ip: Ipv6Addr) -> [u8; 8] {
    let mut prefix = [0; 8];
    prefix.copy_from_slice(&ip.octets()[..8]);
    prefix
}

impl SourceLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        // The fields are public: a zero written directly would never refill.
        let limit = RateLimit::new(limit.requests_per_second, limit.burst);
        Self {
            limit,
            capacity: u64::from(limit.burst.max(1)) * MICRO,
            buckets: HashMap::new(),
            last_sweep: None,
        }
    }

    /// Whether a request from `ip` received at `now` may be answered; takes one request from its bucket if so.
    pub(crate) fn admit(&mut self, now: Instant, ip: IpAddr) -> bool {
        let source = Source::of(ip);
        if !self.buckets.contains_key(&source) && self.buckets.len() >= MAX_TRACKED_SOURCES {
            self.sweep(now);
            if self.buckets.len() >= MAX_TRACKED_SOURCES {
                return true;
            }
        }
        let (capacity, rate) = (self.capacity, u64::from(self.limit.requests_per_second));
        let bucket = self.buckets.entry(source).or_insert(Bucket {
            level: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated);
        // Micro-requests refilled: rate per second is rate micro-requests per microsecond.
        let refill = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .saturating_mul(rate);
        bucket.level = bucket.level.saturating_add(refill).min(capacity);
        if elapsed > Duration::ZERO {
            bucket.updated = now;
        }
        if bucket.level >= MICRO {
            bucket.level -= MICRO;
            true
        } else {
            false
        }
    }

    /// Forgets the sources whose buckets are full again, at most once per [`SWEEP_INTERVAL`].
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(now);
        let (capacity, rate) = (self.capacity, u64::from(self.limit.requests_per_second));
        self.buckets.retain(|_, bucket| {
            let elapsed = now.saturating_duration_since(bucket.updated);
            let refill = u64::try_from(elapsed.as_micros())
                .unwrap_or(u64::MAX)
                .saturating_mul(rate);
            bucket.level.saturating_add(refill) < capacity
        });
    }

    /// How many sources are tracked.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn v4(last: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + last))
    }

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(RateLimit::new(20, 40));
        let passed = (0..100).filter(|_| limiter.admit(t0, v4(1))).count();
        assert_eq!(passed, 40);
        // Another source has its own bucket.
        assert!(limiter.admit(t0, v4(2)));
        // 20 a second: one every 50 ms, and partial refills are kept.
        assert!(!limiter.admit(t0 + Duration::from_millis(49), v4(1)));
        assert!(limiter.admit(t0 + Duration::from_millis(50), v4(1)));
        assert!(!limiter.admit(t0 + Duration::from_millis(99), v4(1)));
        assert!(limiter.admit(t0 + Duration::from_millis(100), v4(1)));
        // Over ten seconds a flooding source gets the burst plus the rate, no more.
        let mut passed = 0;
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_secs(1) + Duration::from_millis(ms);
            passed += (0..5).filter(|_| limiter.admit(now, v4(3))).count();
        }
        assert!((239..=241).contains(&passed), "{passed}");
    }

    #[test]
    fn ipv6_sources_are_slash_64s_and_mapped_v4_is_v4() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(RateLimit::new(1, 2));
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::7".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.admit(t0, a));
        assert!(limiter.admit(t0, b));
        assert!(!limiter.admit(t0, a), "the /64 shares one bucket");
        assert!(limiter.admit(t0, other));
        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        assert!(limiter.admit(t0, mapped));
        assert!(limiter.admit(t0, mapped));
        assert!(
            !limiter.admit(t0, v4(9)),
            "mapped and plain IPv4 are one source"
        );
    }

    #[test]
    fn table_is_bounded_and_idle_sources_are_forgotten() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(RateLimit::new(20, 40));
        let max = u32::try_from(MAX_TRACKED_SOURCES).unwrap();
        for i in 0..max {
            assert!(limiter.admit(t0, v4(i)));
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED_SOURCES);
        // Full of busy sources: a new one is answered untracked (a flood of made-up sources must not shut
        // real clients out), the tracked ones still limited.
        let new = v4(max + 1);
        assert!(limiter.admit(t0, new));
        assert_eq!(limiter.tracked(), MAX_TRACKED_SOURCES);
        assert!(limiter.admit(t0, v4(5)));
        assert!(limiter.admit(t0 + Duration::from_millis(500), new));
        // Once their buckets refill (one request in 50 ms), the idle ones are forgotten.
        let later = t0 + Duration::from_secs(2);
        assert!(limiter.admit(later, new));
        assert!(limiter.tracked() < 10, "{}", limiter.tracked());
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut limiter = SourceLimiter::new(RateLimit::new(1, 1));
        assert!(limiter.admit(t0, v4(1)));
        assert!(!limiter.admit(t0 - Duration::from_secs(5), v4(1)));
        assert!(limiter.admit(t0 + Duration::from_secs(1), v4(1)));
    }
}
