//! The cap on connections still in their handshake: accepted, but not yet logged in as relay clients.
//!
//! Such a connection has proven nothing yet (no TLS, no bearer token, no signature), so it must cost little
//! and be few: at most [`Limits::max_pending`](super::Limits::max_pending) in total and
//! [`Limits::max_pending_per_source`](super::Limits::max_pending_per_source) from one source (an IPv4
//! address, or an IPv6 /64). A connection over either cap is closed as soon as it is accepted, before any
//! byte of it is read, so a host holding thousands of half-open connections costs the relay one slot table
//! entry and leaves file descriptors for everyone else.
//!
//! A [`PendingSlot`] is taken at accept and given back when the login completes or the connection ends.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

use prometheus_client::metrics::gauge::Gauge;

/// A source of connections: an IPv4 address, or the first 64 bits of an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Self::V6(prefix)
            }
        }
    }
}

/// Why a connection was refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// [`Limits::max_pending`](super::Limits::max_pending) connections are in their handshake.
    Total,
    /// Its source has [`Limits::max_pending_per_source`](super::Limits::max_pending_per_source) already.
    PerSource,
}

impl Refused {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::PerSource => "per_source",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_source: HashMap<Source, usize>,
    /// The `pending_handshakes` metric, kept equal to `total`.
    gauge: Gauge,
}

/// The table of connections in their handshake.
#[derive(Debug)]
pub(crate) struct Pending {
    max_total: usize,
    max_per_source: usize,
    counts: Arc<Mutex<Counts>>,
}

impl Pending {
    pub(crate) fn new(max_total: usize, max_per_source: usize, gauge: Gauge) -> Self {
        Self {
            max_total,
            max_per_source,
            counts: Arc::new(Mutex::new(Counts {
                gauge,
                ..Counts::default()
            })),
        }
    }

    /// A slot for a connection from `ip`, or why there is none.
    pub(crate) fn try_take(&self, ip: IpAddr) -> Result<PendingSlot, Refused> {
        let source = Source::of(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.max_total {
            return Err(Refused::Total);
        }
        let count = counts.per_source.entry(source).or_insert(0);
        if *count >= self.max_per_source {
            return Err(Refused::PerSource);
        }
        *count += 1;
        counts.total += 1;
        counts.gauge.inc();
        Ok(PendingSlot {
            counts: Arc::clone(&self.counts),
            source,
        })
    }

    /// How many connections are in their handshake now.
    pub(crate) fn len(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// One connection's place in [`Pending`]; given back on drop.
#[derive(Debug)]
pub(crate) struct PendingSlot {
    counts: Arc<Mutex<Counts>>,
    source: Source,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        counts.gauge.dec();
        if let Some(count) = counts.per_source.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.per_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn caps_per_source_and_in_total() {
        let pending = Pending::new(5, 2, Gauge::default());
        let a1 = pending.try_take(ip("10.0.0.1")).unwrap();
        let _a2 = pending.try_take(ip("10.0.0.1")).unwrap();
        assert_eq!(
            pending.try_take(ip("10.0.0.1")).unwrap_err(),
            Refused::PerSource
        );
        // An IPv4-mapped address is the same source.
        assert_eq!(
            pending.try_take(ip("::ffff:10.0.0.1")).unwrap_err(),
            Refused::PerSource
        );
        drop(a1);
        let _a3 = pending.try_take(ip("10.0.0.1")).unwrap();
        // One IPv6 /64 is one source.
        let _b1 = pending.try_take(ip("2001:db8::1")).unwrap();
        let _b2 = pending.try_take(ip("2001:db8::ffff:2")).unwrap();
        assert_eq!(
            pending.try_take(ip("2001:db8::3")).unwrap_err(),
            Refused::PerSource
        );
        let c = pending.try_take(ip("2001:db8:0:1::1")).unwrap();
        assert_eq!(pending.len(), 5);
        assert_eq!(
            pending.try_take(ip("10.9.9.9")).unwrap_err(),
            Refused::Total
        );
        drop(c);
        assert!(pending.try_take(ip("10.9.9.9")).is_ok());
    }

    #[test]
    fn slots_are_given_back_and_sources_forgotten() {
        let gauge = Gauge::default();
        let pending = Pending::new(100, 100, gauge.clone());
        let slots: Vec<_> = (0..50)
            .map(|i| pending.try_take(ip(&format!("10.0.0.{i}"))).unwrap())
            .collect();
        assert_eq!(pending.len(), 50);
        assert_eq!(gauge.get(), 50);
        drop(slots);
        assert_eq!(pending.len(), 0);
        assert_eq!(gauge.get(), 0);
        let counts = pending.counts.lock().unwrap();
        assert!(counts.per_source.is_empty());
    }
}
