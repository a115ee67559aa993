//! The relay protocol, version 1: the wire format ([`frame`]) and the login handshake ([`handshake`]);
//! and the signed discovery records a relay's discovery service stores and serves ([`discovery`]).
//!
//! Transport: TCP, then TLS for `https` relay URLs (plain for `http`, meant for development), then an
//! HTTP/1.1 `GET /relay` with `Connection: Upgrade` and `Upgrade: iroh-relay-v1`, answered by
//! `101 Switching Protocols`. From then on the stream carries [`frame::Frame`]s.
//!
//! Or, where only WebSocket gets through, the same `GET /relay` as a WebSocket upgrade (RFC 6455:
//! `Upgrade: websocket`, `Sec-WebSocket-Version: 13`, a `Sec-WebSocket-Key`) offering
//! `Sec-WebSocket-Protocol: iroh-relay-v1` ([`WEBSOCKET_PROTOCOL`]; a later version would be offered beside
//! it and the server picks one). Each frame then travels as one binary message; the handshake and the
//! frames are the same.

pub mod discovery;
pub mod frame;
pub mod handshake;

/// The HTTP path of the relay protocol.
pub const RELAY_PATH: &str = "/relay";
/// The value of the HTTP `Upgrade` header that asks for the relay protocol.
pub const UPGRADE_PROTOCOL: &str = "iroh-relay-v1";
/// The `Sec-WebSocket-Protocol` a WebSocket client offers and the server picks for this protocol version.
pub const WEBSOCKET_PROTOCOL: &str = "iroh-relay-v1";
