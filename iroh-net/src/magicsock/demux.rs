//! Demultiplexing: what kind of packet arrived on the shared socket (or in a relayed datagram).
//!
//! QUIC, disco and STUN share one UDP socket, and QUIC and disco share the relay. [`classify`] is the one
//! place that tells them apart, by their first bytes alone; nothing else guesses.
//!
//! ```text
//! first byte   00xxxxxx          01xxxxxx       10xxxxxx                  11xxxxxx
//!              STUN if is_stun   QUIC short     disco if the 6-byte       QUIC long
//!              (cookie, length)  header         magic matches             header
//!              else QUIC                        else QUIC
//! ```
//!
//! The ranges are disjoint because our endpoints keep QUIC's fixed bit set (see [`crate::disco`] for the
//! argument and the RFC text). Whatever is not STUN or disco goes to quinn, which drops what it cannot
//! parse, including empty datagrams; so a malformed STUN or disco packet is never lost to a wrong guess,
//! only handed to a parser that rejects it.

use crate::disco;

/// The protocols that share the magic socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// A STUN message (RFC 8489): a net-report probe or its answer.
    Stun,
    /// A disco packet: a sealed ping, pong or call-me-maybe.
    Disco,
    /// Anything else, handed to quinn.
    Quic,
}

/// Classifies a datagram by its first bytes. Cheap and allocation-free: it runs on every packet.
pub fn classify(packet: &[u8]) -> PacketKind {
    match packet.first().map(|b| b >> 6) {
        Some(0b00) if iroh_stun::is_stun(packet) => PacketKind::Stun,
        Some(0b10) if disco::looks_like_disco(packet) => PacketKind::Disco,
        _ => PacketKind::Quic,
    }
}

#[cfg(test)]
mod tests;
