//! The heart of the workspace: dial a node by its public key and get a direct, encrypted QUIC connection.
//!
//! Built so far, the leaf modules the rest stands on:
//!
//! - [`tls`] (feature `quic`, on by default): rustls configs for quinn that authenticate both ends by their
//!   ed25519 node keys, as RFC 7250 raw public keys; the dialled NodeId travels in the server name.
//! - [`disco`]: the sealed ping / pong / call-me-maybe packets that find and confirm direct paths, with their
//!   codec (parse/encode pairs over byte slices, never panicking).
//! - [`magicsock`]: so far its pure parts, [`magicsock::demux::classify`] (QUIC, disco or STUN: the one
//!   place that decides) and [`magicsock::mapped::MappedAddrs`] (the made-up IPv6 address quinn sees for
//!   each node).
//! - [`paths`]: path selection as a sans-IO core: per remote node the candidate direct paths, trust, when to
//!   ping and send call-me-maybe, and where each packet goes (direct, relay, or both while a path is
//!   unconfirmed), tested under a virtual clock with simulated latency and loss.
//! - [`net_report`]: a sans-IO core that learns our public addresses by STUN through the relays, measures
//!   relay latency, picks the home relay and schedules refreshes well under NAT mapping timeouts; plus the
//!   local interface addresses.
//!
//! Still to come (see `DESIGN.md` sections 1, 2 and 5): the magic socket itself (the `quinn::AsyncUdpSocket`
//! that drives these cores and sends each packet over the path they choose), discovery, and `Endpoint` with
//! its builder, `connect` / `accept` and watchers.
//!
//! # Features
//!
//! - `quic` (default): everything that links quinn and rustls. Without it, only [`disco`] and
//!   [`magicsock`]'s pure parts are built, which is what the fuzz targets use (`default-features = false`)
//!   so that they stay small. Code that needs quinn or rustls must stay behind this feature.
#![forbid(unsafe_code)]
#![cfg_attr(iroh_docsrs, feature(doc_cfg))]

pub mod disco;
pub mod magicsock;
pub mod net_report;
pub mod paths;
#[cfg(feature = "quic")]
#[cfg_attr(iroh_docsrs, doc(cfg(feature = "quic")))]
pub mod tls;
