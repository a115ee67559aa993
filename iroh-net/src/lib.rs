//! The heart of the workspace: dial a node by its public key and get a direct, encrypted QUIC connection.
//!
//! This crate is not built yet. It will hold (see `DESIGN.md` sections 1, 2, 5 and 6):
//!
//! - the magic socket, the `quinn::AsyncUdpSocket` that sends each QUIC packet over the best path to the
//!   remote node: a direct UDP address, the relay, or both while a new path is being confirmed;
//! - disco, the sealed ping / pong / call-me-maybe messages that punch holes through NATs;
//! - per-node path selection as a sans-IO state machine driven by virtual time in tests;
//! - net report (STUN through `iroh-stun`, relay latency, the home relay) and discovery;
//! - `Endpoint`, its builder, `connect` / `accept`, and watchers for paths and relays.
#![forbid(unsafe_code)]
