//! The magic socket: one UDP-like socket for quinn that reaches every remote node over its best path.
//!
//! Built so far, the two pure pieces the socket rests on:
//!
//! - [`demux`]: [`classify`](demux::classify), the one place that tells QUIC, disco and STUN packets apart on
//!   the shared socket (and in relayed datagrams). No other code guesses a packet's kind.
//! - [`mapped`]: [`MappedAddrs`](mapped::MappedAddrs), the table that gives quinn one stable, made-up IPv6
//!   socket address per remote node, so that quinn's idea of "the peer's address" survives path changes.
//!
//! Still to come (DESIGN.md sections 1 and 2): the `quinn::AsyncUdpSocket` handle itself (no logic, no
//! locks: it reads shared data and sends to the actor), the actor that owns the UDP sockets and the sans-IO
//! path state, and the relay actors.

pub mod demux;
pub mod mapped;
