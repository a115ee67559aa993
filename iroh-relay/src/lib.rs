//! The relay: what makes every connection work from its first packet, whatever the NATs in between.
//!
//! A relay server forwards datagrams between nodes that are connected to it, addressed by [`NodeId`] only.
//! Nodes use it until holepunching finds a direct path, and whenever no direct path exists.
//!
//! Built so far:
//! - [`protos`]: the relay protocol, version 1: frames as parse/encode pairs and the login handshake as
//!   sans-IO state machines.
//! - [`io`]: reading and writing frames on an async byte stream.
//!
//! Still to come (see `DESIGN.md` section 4): the async client (connect to an `http`/`https` relay URL,
//! authenticate, send and receive datagram batches, keepalive, RTT, reconnect with backoff); the server as a
//! library behind a `server` feature (HTTP/1.1 upgrade, routing, per-client queues and rate limits, access
//! control, metrics, STUN through `iroh-stun`); and the `iroh-relay` binary operators deploy.
//!
//! [`NodeId`]: iroh_base::NodeId
#![forbid(unsafe_code)]

pub mod io;
pub mod protos;
