//! Per-client limits, and the receive rate limiter: a byte token bucket as a pure struct fed `now`.
//!
//! ```text
//!   level (bytes) ^
//!        burst -- +------\        /------      refills at `bytes_per_second`, never above `burst`;
//!                 |       \      /             a frame passes if its size fits in the level and is
//!                 |        \____/              taken out, otherwise it is dropped (the level stays)
//!                 +-----------------------> time
//! ```
//!
//! The bucket never reads the clock: the driver passes `now` with every frame, so tests run on virtual time.

use std::time::{Duration, Instant};

use crate::protos::{
    frame::{HEADER_LEN, MAX_FRAME_BODY},
    handshake::SERVER_HANDSHAKE_TIMEOUT,
};

/// The largest encoded frame; a burst below this could never admit a full datagram batch.
pub(crate) const MAX_FRAME_LEN: u64 = (HEADER_LEN + MAX_FRAME_BODY) as u64;

/// The longest any duration of [`Limits`] may be: a week. A larger value (a typo, or `1e19` seconds)
/// is refused when the limits are validated rather than overflowing a timer on every connection later.
pub const MAX_LIMIT_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a set of [`Limits`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// `send_queue_len` is 0.
    #[error("send_queue_len must be at least 1")]
    EmptySendQueue,
    /// A duration is zero.
    #[error("{name} must be more than zero")]
    ZeroDuration {
        /// The limit's name.
        name: &'static str,
    },
    /// A duration is longer than [`MAX_LIMIT_DURATION`].
    #[error("{name} of {value:?} is longer than the most allowed ({MAX_LIMIT_DURATION:?})")]
    TooLong {
        /// The limit's name.
        name: &'static str,
        /// The value given.
        value: Duration,
    },
    /// The rate limit's rate is zero.
    #[error("rate limit bytes_per_second must be more than zero")]
    ZeroRate,
    /// `max_clients` is 0, which would deny every login.
    #[error("max_clients must be at least 1 (leave it out for no cap)")]
    ZeroMaxClients,
    /// A count that must be at least 1 is 0.
    #[error("{name} must be at least 1")]
    ZeroCount {
        /// The limit's name.
        name: &'static str,
    },
    /// `send_queue_bytes` is below one maximum-size frame, so a full datagram batch could never be queued.
    #[error("send_queue_bytes of {0} is below one maximum-size frame ({MAX_FRAME_LEN} bytes)")]
    SendQueueTooSmall(usize),
}

/// How often at most a rate-limited client is told so with a `Status RateLimited` frame.
pub(crate) const RATE_LIMIT_NOTICE_INTERVAL: Duration = Duration::from_secs(1);

/// Nano-bytes per byte: the bucket counts in units of 10^-9 bytes so refills are exact integers.
const NANO: u128 = 1_000_000_000;

/// A receive rate limit for each client: a token bucket over the bytes of the frames it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate in bytes per second.
    pub bytes_per_second: u64,
    /// Bucket size in bytes: how much a client may send at once after being quiet. Raised to at least one
    /// maximum-size frame (65,576 bytes), since a smaller bucket could never admit a full datagram batch.
    pub burst_bytes: u64,
}

impl RateLimit {
    /// A limit of `bytes_per_second` with bursts of up to `burst_bytes`.
    pub fn new(bytes_per_second: u64, burst_bytes: u64) -> Self {
        Self {
            bytes_per_second,
            burst_bytes,
        }
    }
}

/// Limits applied to each client connection.
///
/// `Limits::default()` gives: no rate limit, a send queue of 256 frames and 4 MiB, a 5 s write timeout, a
/// keepalive ping every 30 s, a 90 s idle timeout, the protocol's 10 s handshake timeout, no cap on clients,
/// and at most 2,048 connections still in their handshake (TLS, HTTP request, login), 64 of them from one
/// source (an IPv4 address, or an IPv6 /64).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Receive rate limit per client; `None` for unlimited. Frames beyond it are dropped and the client is
    /// told (a `Status RateLimited` frame, at most once a second).
    pub rate_limit: Option<RateLimit>,
    /// Frames queued for one client before further frames to it are dropped (and counted). Each queued frame
    /// holds at most one datagram batch (64 KiB).
    pub send_queue_len: usize,
    /// Bytes queued for one client before further frames to it are dropped (and counted), so a receiver
    /// that stops reading pins at most this much (plus its 256 KiB write buffer) however large the frames
    /// sent to it. At least one maximum-size frame (65,576 bytes).
    pub send_queue_bytes: usize,
    /// How long one write to a client (at most 256 KiB) may take before the connection is closed.
    pub write_timeout: Duration,
    /// How often the server pings a connected client; also how often idle connections give back buffers.
    pub keepalive_interval: Duration,
    /// A client that sends nothing at all (not even the Pong to our pings) for this long is disconnected.
    pub idle_timeout: Duration,
    /// How long a new connection has for the TLS handshake, the HTTP upgrade request and the relay login
    /// (each step gets this much).
    pub handshake_timeout: Duration,
    /// The most clients connected at once; further logins are denied. `None` for no cap.
    pub max_clients: Option<usize>,
    /// The most connections in their handshake at once (accepted, but not yet logged in: the TLS handshake,
    /// the HTTP request, the relay login; also plain HTTP requests such as `/ping`). Further connections are
    /// closed as soon as they are accepted, and counted. Each costs at most about 32 KiB with TLS (the HTTP
    /// request head is limited to 8 KiB, and a login frame to 1 KiB).
    pub max_pending: usize,
    /// The most connections in their handshake from one source at once: an IPv4 address, or an IPv6 /64
    /// (one host usually owns a whole /64). Keeps a single host from taking every slot of
    /// [`Limits::max_pending`] (or every file descriptor) with connections that never finish.
    pub max_pending_per_source: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate_limit: None,
            send_queue_len: 256,
            write_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            handshake_timeout: SERVER_HANDSHAKE_TIMEOUT,
            max_clients: None,
            send_queue_bytes: 4 * 1024 * 1024,
            max_pending: 2048,
            max_pending_per_source: 64,
        }
    }
}

impl Limits {
    /// Sets the receive rate limit.
    pub fn with_rate_limit(mut self, rate_limit: Option<RateLimit>) -> Self {
        self.rate_limit = rate_limit;
        self
    }

    /// Checks that every duration and size makes sense.
    pub(crate) fn validate(&self) -> Result<(), LimitsError> {
        if self.send_queue_len == 0 {
            return Err(LimitsError::EmptySendQueue);
        }
        if (self.send_queue_bytes as u64) < MAX_FRAME_LEN {
            return Err(LimitsError::SendQueueTooSmall(self.send_queue_bytes));
        }
        for (name, value) in [
            ("max_pending", self.max_pending),
            ("max_pending_per_source", self.max_pending_per_source),
        ] {
            if value == 0 {
                return Err(LimitsError::ZeroCount { name });
            }
        }
        for (name, value) in [
            ("write_timeout", self.write_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("idle_timeout", self.idle_timeout),
            ("handshake_timeout", self.handshake_timeout),
        ] {
            if value.is_zero() {
                return Err(LimitsError::ZeroDuration { name });
            }
            if value > MAX_LIMIT_DURATION {
                return Err(LimitsError::TooLong { name, value });
            }
        }
        if let Some(limit) = self.rate_limit
            && limit.bytes_per_second == 0
        {
            return Err(LimitsError::ZeroRate);
        }
        if self.max_clients == Some(0) {
            return Err(LimitsError::ZeroMaxClients);
        }
        Ok(())
    }
}

/// What [`TokenBucket::admit`] decides about one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Within the limit: handle the frame.
    Pass,
    /// Over the limit: drop the frame; if `notify`, tell the client it is being rate limited.
    Drop {
        /// Whether this drop should be reported to the client (at most once per
        /// [`RATE_LIMIT_NOTICE_INTERVAL`]).
        notify: bool,
    },
}

/// A byte token bucket. Starts full.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    /// Current level in nano-bytes.
    level: u128,
    /// Capacity in nano-bytes.
    capacity: u128,
    /// Refill in nano-bytes per nanosecond, which is bytes per second.
    rate: u128,
    last_refill: Instant,
    last_notice: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket for `limit` at `now`.
    pub(crate) fn new(now: Instant, limit: RateLimit) -> Self {
        let capacity = u128::from(limit.burst_bytes.max(MAX_FRAME_LEN)) * NANO;
        Self {
            level: capacity,
            capacity,
            rate: u128::from(limit.bytes_per_second),
            last_refill: now,
            last_notice: None,
        }
    }

    /// Decides whether a frame of `bytes` received at `now` is within the limit, taking its cost if so.
    pub(crate) fn admit(&mut self, now: Instant, bytes: usize) -> Admission {
        self.refill(now);
        let cost = (bytes as u128).saturating_mul(NANO);
        if cost <= self.level {
            self.level -= cost;
            return Admission::Pass;
        }
        let notify = self
            .last_notice
            .is_none_or(|last| now.saturating_duration_since(last) >= RATE_LIMIT_NOTICE_INTERVAL);
        if notify {
            self.last_notice = Some(now);
        }
        Admission::Drop { notify }
    }

    /// Whole bytes currently available.
    #[cfg(test)]
    pub(crate) fn available(&self) -> u128 {
        self.level / NANO
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_refill).as_nanos();
        if elapsed == 0 {
            return;
        }
        self.level = self
            .level
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.capacity);
        self.last_refill = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn starts_full_and_drains() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(t0, RateLimit::new(1000, 100_000));
        assert_eq!(bucket.available(), 100_000);
        assert_eq!(bucket.admit(t0, 60_000), Admission::Pass);
        assert_eq!(bucket.admit(t0, 40_000), Admission::Pass);
        assert_eq!(bucket.available(), 0);
        assert_eq!(bucket.admit(t0, 1), Admission::Drop { notify: true });
    }

    #[test]
    fn refills_exactly_with_virtual_time() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(t0, RateLimit::new(1000, 100_000));
        assert_eq!(bucket.admit(t0, 100_000), Admission::Pass);
        // 1000 bytes per second is one byte per millisecond: after 1.5 ms there is one whole byte, and the
        // half byte is not lost.
        let t = t0 + 3 * MS / 2;
        assert_eq!(bucket.admit(t, 2), Admission::Drop { notify: true });
        assert_eq!(bucket.admit(t, 1), Admission::Pass);
        let t = t + MS / 2;
        assert_eq!(bucket.admit(t, 1), Admission::Pass);
        assert_eq!(bucket.available(), 0);
        // Never above the burst.
        let t = t + Duration::from_secs(3600);
        assert_eq!(bucket.available(), 0);
        assert_eq!(bucket.admit(t, 0), Admission::Pass);
        assert_eq!(bucket.available(), 100_000);
    }

    #[test]
    fn sustained_rate_is_respected() {
        let t0 = Instant::now();
        let limit = RateLimit::new(100_000, MAX_FRAME_LEN);
        let mut bucket = TokenBucket::new(t0, limit);
        let mut passed = 0u64;
        // Offer 1200-byte frames every 100 us (12 MB/s) for 10 virtual seconds.
        for i in 0..100_000u32 {
            let now = t0 + Duration::from_micros(100) * i;
            if bucket.admit(now, 1200) == Admission::Pass {
                passed += 1200;
            }
        }
        let allowed = MAX_FRAME_LEN + 100_000 * 10;
        assert!(passed <= allowed, "{passed} > {allowed}");
        assert!(passed + 1200 >= allowed - 100_000 / 100, "{passed} too low");
    }

    #[test]
    fn burst_is_at_least_one_max_frame() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(t0, RateLimit::new(10, 1));
        assert_eq!(
            bucket.admit(t0, usize::try_from(MAX_FRAME_LEN).unwrap()),
            Admission::Pass
        );
    }

    #[test]
    fn notices_are_rate_limited() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(t0, RateLimit::new(1, 0));
        let big = usize::try_from(MAX_FRAME_LEN).unwrap();
        assert_eq!(bucket.admit(t0, big), Admission::Pass);
        assert_eq!(bucket.admit(t0, big), Admission::Drop { notify: true });
        assert_eq!(
            bucket.admit(t0 + 500 * MS, big),
            Admission::Drop { notify: false }
        );
        assert_eq!(
            bucket.admit(t0 + 999 * MS, big),
            Admission::Drop { notify: false }
        );
        assert_eq!(
            bucket.admit(t0 + 1000 * MS, big),
            Admission::Drop { notify: true }
        );
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(t0, RateLimit::new(1000, 100_000));
        assert_eq!(bucket.admit(t0, 100_000), Admission::Pass);
        assert_eq!(
            bucket.admit(t0 - Duration::from_secs(5), 1),
            Admission::Drop { notify: true }
        );
        assert_eq!(bucket.admit(t0 + MS, 1), Admission::Pass);
    }

    #[test]
    fn validation() {
        assert!(Limits::default().validate().is_ok());
        let limits = Limits {
            send_queue_len: 0,
            ..Limits::default()
        };
        assert!(limits.validate().is_err());
        let limits = Limits {
            write_timeout: Duration::ZERO,
            ..Limits::default()
        };
        assert!(limits.validate().is_err());
        let limits = Limits::default().with_rate_limit(Some(RateLimit::new(0, 10)));
        assert_eq!(limits.validate(), Err(LimitsError::ZeroRate));
        // Issue 16: a huge duration was accepted, and every connection then panicked adding it to an
        // Instant; `max_clients = 0` denied every login.
        for (name, limits) in [
            (
                "keepalive_interval",
                Limits {
                    keepalive_interval: Duration::MAX,
                    ..Limits::default()
                },
            ),
            (
                "handshake_timeout",
                Limits {
                    handshake_timeout: MAX_LIMIT_DURATION + Duration::from_nanos(1),
                    ..Limits::default()
                },
            ),
        ] {
            assert!(
                matches!(limits.validate(), Err(LimitsError::TooLong { name: n, .. }) if n == name),
                "{name}"
            );
        }
        let week = Limits {
            idle_timeout: MAX_LIMIT_DURATION,
            ..Limits::default()
        };
        assert_eq!(week.validate(), Ok(()));
        let none = Limits {
            max_clients: Some(0),
            ..Limits::default()
        };
        assert_eq!(none.validate(), Err(LimitsError::ZeroMaxClients));
        let tiny = Limits {
            send_queue_bytes: 65_575,
            ..Limits::default()
        };
        assert_eq!(tiny.validate(), Err(LimitsError::SendQueueTooSmall(65_575)));
        let closed = Limits {
            max_pending_per_source: 0,
            ..Limits::default()
        };
        assert_eq!(
            closed.validate(),
            Err(LimitsError::ZeroCount {
                name: "max_pending_per_source"
            })
        );
    }
}
