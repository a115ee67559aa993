//! The heart of the workspace: dial a node by its public key and get a direct, encrypted QUIC connection.
//!
//! Two endpoints that know only each other's [`NodeAddr`](iroh_base::NodeAddr) (or only the NodeId, with
//! [`discovery`]) get a QUIC connection at once (through a relay, or straight to a direct address), move to a direct UDP path as soon as
//! holepunching finds one, and return to the relay when that path dies, while the application's streams
//! carry on untouched.
//!
//! Modules, bottom up:
//!
//! - [`disco`]: the sealed ping / pong / call-me-maybe packets that find and confirm direct paths, with their
//!   codec (parse/encode pairs over byte slices, never panicking).
//! - [`paths`]: path selection as a sans-IO core: per remote node its candidate addresses, trust,
//!   holepunch scheduling and the send plan (direct, relay, or both).
//! - [`net_report`]: our public addresses (STUN through the relays), relay latencies and the home relay, as
//!   a sans-IO core, plus our local interface addresses.
//! - [`tls`] (feature `quic`): rustls configs for quinn that authenticate both ends by their ed25519 node
//!   keys, as RFC 7250 raw public keys; the dialled NodeId travels in the server name.
//! - [`magicsock`]: [`magicsock::demux::classify`] (QUIC, disco or STUN: the one place that decides),
//!   [`magicsock::mapped::MappedAddrs`] (the made-up IPv6 address quinn sees for each node) and, with
//!   feature `quic`, the magic socket itself: the `quinn::AsyncUdpSocket` over two UDP sockets and the
//!   relay clients, driven by an actor that owns the path and net report cores.
//! - [`endpoint`] (feature `quic`): [`Endpoint`](endpoint::Endpoint) with its builder, `connect` /
//!   `accept`, [`Connection`](endpoint::Connection) (remote NodeId and ALPN), and watchers of the home
//!   relay, our direct addresses and the connection type per remote node; [`endpoint::windows`] sizes
//!   each connection's flow-control windows to what its path needs (small for a reader that stalls).
//! - [`discovery`] (feature `quic`): dialling by NodeId alone. The [`discovery::Discovery`] trait (publish
//!   our addressing, resolve a NodeId into addresses), services combined concurrently, a static address
//!   book, DNS TXT records through hickory, and signed pkarr records published to and fetched from a
//!   discovery server over HTTP (the one in `iroh-relay`, or any pkarr relay).
//! - [`congestion`] (feature `quic`): the congestion controllers an Endpoint can use, and its default,
//!   [`congestion::model`]: a model-based controller (delivery rate and minimum RTT) that does not back off
//!   on isolated random loss, so a lossy direct path is not slower than the relay it replaces.
//!
//! Paths stay trusted while authenticated traffic (QUIC included, not only disco pongs) arrives on them; a
//! path that goes silent while we send on it is probed at once and dropped for the relay within about a
//! second. Holepunching probes every candidate every 25 ms for its first half second, answers a
//! call-me-maybe with pings and a call-me-maybe of its own, and backs off for peers that never go direct.
//!
//! # Structured events
//!
//! Besides ordinary logs, these `tracing` events (level DEBUG, no message, fields only) mark notable
//! happenings, for tools to filter on the target:
//!
//! | target | fields | when |
//! |---|---|---|
//! | `iroh::_events::conn_type` | `node`, `conn_type` | the send plan to a node changed: `direct(addr)`, `relay(url)`, `mixed(addr, url)` or `none` |
//! | `iroh::_events::home_relay` | `url` | our home relay changed |
//! | `iroh::_events::direct_addrs` | `addrs` | our own direct addresses changed |
//! | `iroh::_events::network_changed` | `added`, `removed` | the local interface addresses changed (checked every second): a net report, a probe of every relay connection and a holepunch round for every active node follow |
//! | `iroh::_events::magicsock::alias` | `src`, `alias` | QUIC from a source no disco message had named reached quinn under an alias |
//! | `iroh::_events::net_report::ready` | `reason`, `global_v4`, `global_v6`, `udp_v4`, `udp_v6`, `mapping_varies_v4`, `preferred_relay` | a net report completed |
//! | `iroh::_events::net_report::home_relay` | `from`, `to` | net report's preferred relay changed |
//! | `iroh::_events::relay_client::connected` / `disconnected` | `url` (, `error`) | a relay connection came up or went down (from `iroh-relay`) |
//! | `iroh::_events::discovery::published` | `service`, `relay`, `addrs` | a discovery service published our addressing |
//! | `iroh::_events::predict::sockets` | `node`, `dst`, `opened`, `extra_sockets`, `error` | port prediction, hard side: extra sockets opened towards `node`'s reflexive address `dst` (each pinged it once) |
//! | `iroh::_events::predict::won` | `node`, `remote` | port prediction, hard side: a probe from `remote` reached an extra socket, which carries everything to it from now on |
//! | `iroh::_events::predict::spray` | `node`, `probes`, `hit` | port prediction, easy side: a spray of probes ended, with the address that answered, if one did |
//!
//! # Features
//!
//! - `quic` (default): everything that links quinn, rustls and tokio: [`tls`], the magic socket, the
//!   [`endpoint`]. Without it, only the codecs and sans-IO cores ([`disco`], [`paths`], [`net_report`],
//!   [`magicsock`]'s pure parts) are built, which is what the fuzz targets use (`default-features = false`)
//!   so that they stay small. Code that needs quinn or rustls must stay behind this feature.
#![forbid(unsafe_code)]
#![cfg_attr(iroh_docsrs, feature(doc_cfg))]

#[cfg(feature = "quic")]
#[cfg_attr(iroh_docsrs, doc(cfg(feature = "quic")))]
pub mod congestion;
pub mod disco;
#[cfg(feature = "quic")]
#[cfg_attr(iroh_docsrs, doc(cfg(feature = "quic")))]
pub mod discovery;
#[cfg(feature = "quic")]
#[cfg_attr(iroh_docsrs, doc(cfg(feature = "quic")))]
pub mod endpoint;
pub mod magicsock;
pub mod mdns;
pub mod net_report;
pub mod paths;
pub mod portmap;
#[cfg(feature = "quic")]
#[cfg_attr(iroh_docsrs, doc(cfg(feature = "quic")))]
pub mod tls;

/// The QUIC implementation the endpoint runs on, for its stream, error and configuration types.
#[cfg(feature = "quic")]
#[cfg_attr(iroh_docsrs, doc(cfg(feature = "quic")))]
pub use quinn;
