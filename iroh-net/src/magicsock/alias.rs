//! Aliases: made-up addresses for UDP sources that sent a QUIC Initial before any disco message told us
//! which node they belong to.
//!
//! quinn needs *some* address for such a packet, and the real one would bypass the per-node mapping (quinn
//! must never see a real address: a made-up one is how the socket knows a transmit is meant for it). So the
//! source gets an alias in the same unique-local range as the node addresses ([`super::mapped`]), under its
//! own subnet; sending to an alias goes straight to the raw UDP address.
//!
//! Entries are never removed while the socket lives (quinn may hold an alias for as long as a connection
//! lasts), so the table is bounded: past [`MAX_ALIASES`] no new alias is made and such packets are dropped.
//! Only datagrams that can open a connection (a QUIC Initial, at least 1200 bytes) get one, which keeps
//! garbage from filling the table cheaply.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{PoisonError, RwLock},
};

use super::mapped::{addr_in, interface_id_in, next_prefix};

/// The most aliases one socket hands out.
pub(crate) const MAX_ALIASES: usize = 4096;

/// The two-way table between raw UDP sources and their aliases.
#[derive(Debug)]
pub(crate) struct AliasAddrs {
    prefix: [u8; 8],
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Index `i` holds the raw address of interface id `i + 1`.
    raw: Vec<SocketAddr>,
    by_raw: HashMap<SocketAddr, u64>,
}

impl AliasAddrs {
    pub(crate) fn new() -> Self {
        Self {
            prefix: next_prefix(),
            inner: RwLock::new(Inner::default()),
        }
    }

    /// The alias of `raw`, making one if it has none; `None` when the table is full.
    pub(crate) fn get_or_insert(&self, raw: SocketAddr) -> Option<SocketAddr> {
        // Poisoning: a panic under the write lock can only leave a raw address without its reverse entry,
        // which is harmless; so a poisoned lock is still used.
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = inner.by_raw.get(&raw) {
            return Some(addr_in(&self.prefix, *id));
        }
        if inner.raw.len() >= MAX_ALIASES {
            return None;
        }
        inner.raw.push(raw);
        let id = inner.raw.len() as u64;
        inner.by_raw.insert(raw, id);
        Some(addr_in(&self.prefix, id))
    }

    /// The raw address behind an alias.
    pub(crate) fn raw_for(&self, alias: &SocketAddr) -> Option<SocketAddr> {
        let id = interface_id_in(&self.prefix, alias)?;
        let index = usize::try_from(id.checked_sub(1)?).ok()?;
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.raw.get(index).copied()
    }

    /// Whether `addr` is in the alias range (no lock taken).
    pub(crate) fn is_alias(&self, addr: &SocketAddr) -> bool {
        interface_id_in(&self.prefix, addr).is_some()
    }
}

/// Whether a datagram from an unknown source may be given an alias: a QUIC version 1 Initial padded to the
/// 1200 bytes RFC 9000 requires ("A client MUST expand the payload of all UDP datagrams carrying Initial
/// packets to at least the smallest allowed maximum datagram size of 1200 bytes", section 14.1).
pub(crate) fn may_open_connection(datagram: &[u8]) -> bool {
    const MIN_INITIAL_DATAGRAM: usize = 1200;
    // Long header (form bit and fixed bit set), packet type 0 (Initial) in bits 0x30.
    datagram.len() >= MIN_INITIAL_DATAGRAM
        && datagram.first().is_some_and(|b| b & 0xf0 == 0xc0)
        && datagram.get(1..5) == Some(&1u32.to_be_bytes()[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_stable_reversible_and_bounded() {
        let table = AliasAddrs::new();
        let raw_a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let raw_b: SocketAddr = "[2001:db8::1]:2000".parse().unwrap();
        let a = table.get_or_insert(raw_a).unwrap();
        let b = table.get_or_insert(raw_b).unwrap();
        assert_ne!(a, b);
        assert_eq!(table.get_or_insert(raw_a), Some(a));
        assert!(table.is_alias(&a) && table.is_alias(&b));
        assert!(!table.is_alias(&raw_a));
        assert_eq!(table.raw_for(&a), Some(raw_a));
        assert_eq!(table.raw_for(&b), Some(raw_b));
        // Another table (another endpoint, or the node table) never shares the range.
        let other = AliasAddrs::new();
        assert!(!other.is_alias(&a));
        assert_eq!(other.raw_for(&a), None);

        for port in 0..MAX_ALIASES {
            let raw = SocketAddr::from(([198, 51, 100, 1], u16::try_from(port).unwrap()));
            other.get_or_insert(raw);
        }
        assert_eq!(other.get_or_insert(raw_a), None, "full");
    }

    #[test]
    fn only_padded_v1_initials_may_open_connections() {
        let mut initial = vec![0u8; 1200];
        initial[0] = 0xc3;
        initial[1..5].copy_from_slice(&1u32.to_be_bytes());
        assert!(may_open_connection(&initial));
        assert!(!may_open_connection(&initial[..1199]), "not padded");
        let mut handshake = initial.clone();
        handshake[0] = 0xe3;
        assert!(!may_open_connection(&handshake), "Handshake packet");
        let mut short = initial.clone();
        short[0] = 0x43;
        assert!(!may_open_connection(&short), "short header");
        let mut other_version = initial;
        other_version[4] = 2;
        assert!(!may_open_connection(&other_version), "not version 1");
        assert!(!may_open_connection(&[]));
    }
}
