//! The magic socket: one UDP-like socket for quinn that reaches every remote node over its best path.
//!
//! quinn sees each remote node as one stable, made-up IPv6 address ([`mapped`]); the socket sends each
//! packet over the path the node's send plan names: a direct UDP address, its relay, or both while a new
//! direct path is being confirmed. Path selection itself is the sans-IO [`crate::paths`] core; this module
//! is its driver and the IO around it.
//!
//! ```text
//!                 quinn::Endpoint
//!                       |  AsyncUdpSocket (try_send / poll_recv)
//!   MagicSock (socket)  |  reads Routes, sends, classifies; no logic beyond lookups
//!     |   |      \---------------------- deliveries (relayed QUIC, resolved unknown sources)
//!     |   |                                   ^
//!     |   +-- inbox (disco, STUN, unknown QUIC, activity) --> Actor: Paths + NetReporter + disco keys
//!     |                                                         |  publishes Routes, opens relays
//!   UDP v4 + v6 (quinn-udp: GSO, GRO)             relay actors (one per relay in use, iroh-relay client)
//! ```
//!
//! Pieces:
//!
//! - [`demux`]: [`classify`](demux::classify), the one place that tells QUIC, disco and STUN packets apart
//!   on the shared socket (and in relayed datagrams). No other code guesses a packet's kind.
//! - [`mapped`]: [`MappedAddrs`](mapped::MappedAddrs), the table that gives quinn one stable, made-up IPv6
//!   socket address per remote node, so that quinn's idea of "the peer's address" survives path changes.
//! - `socket` (feature `quic`): the `quinn::AsyncUdpSocket` handle. Sends never fail towards quinn
//!   (undeliverable packets are dropped and counted, see [`SocketStats`]); received QUIC from a source no
//!   disco message has confirmed goes through the actor in arrival order behind the disco that usually
//!   precedes it, and if still unknown reaches quinn under an *alias* (see `alias`), so a direct dial needs
//!   no fixed delay.
//! - `actor`: the task that owns the path and net report cores and the relay clients, with `relays` (one
//!   receiving task per relay client; idle ones are closed after a minute) and `report` (STUN on our own
//!   sockets, home relay, own addresses).
//! - `udp` (the two UDP sockets with large buffers), `routes` (what the actor publishes for the socket),
//!   `batch` (GRO/GSO batch helpers), `metrics`.

pub mod demux;
pub mod mapped;

#[cfg(feature = "quic")]
pub(crate) mod actor;
#[cfg(feature = "quic")]
mod alias;
#[cfg(feature = "quic")]
mod batch;
#[cfg(feature = "quic")]
mod metrics;
#[cfg(feature = "quic")]
mod routes;
#[cfg(feature = "quic")]
pub(crate) mod socket;
#[cfg(feature = "quic")]
pub(crate) mod udp;

#[cfg(feature = "quic")]
#[cfg_attr(iroh_docsrs, doc(cfg(feature = "quic")))]
pub use self::{metrics::SocketStats, socket::DirectFilter, udp::BindError};
