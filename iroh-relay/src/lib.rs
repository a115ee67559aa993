//! The relay: what makes every connection work from its first packet, whatever the NATs in between.
//!
//! A relay server forwards datagrams between nodes that are connected to it, addressed by [`NodeId`] only
//! (never by IP address: it is no open proxy). Nodes use it until holepunching finds a direct path, and
//! whenever no direct path exists. The protocol is described in [`protos`].
//!
//! - [`protos`]: the relay protocol, version 1: frames as parse/encode pairs and the login handshake as
//!   sans-IO state machines.
//! - [`io`]: reading and writing frames on an async byte stream.
//! - `client` (feature `client`, on by default): connect to an `http`/`https` relay URL, authenticate, send
//!   and receive datagram batches, keepalive, RTT, reconnect with backoff, a connection-state watcher.
//! - `server` (feature `server`, on by default): the relay server as a library: HTTP/1.1 upgrade over TLS or
//!   plain HTTP, routing by node id, per-client queues, rate limits and timeouts, access control, Prometheus
//!   metrics, STUN through `iroh-stun`, graceful shutdown; and its TOML configuration file.
//! - The `iroh-relay` binary operators deploy (`--dev` or `--config FILE.toml`; see the crate README).
//!
//! Depend on it with `default-features = false` to get only the protocol codec.
//!
//! # Example
//!
//! Two nodes exchange a datagram through a relay running in the same process:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use iroh_base::SecretKey;
//! use iroh_relay::{
//!     client::{ClientBuilder, ReceivedEvent},
//!     protos::frame::Datagrams,
//!     server::{Server, ServerConfig},
//! };
//!
//! // A relay on a free local port, plain HTTP (use TLS on the internet).
//! let server = Server::spawn(ServerConfig::dev()).await?;
//!
//! let (alice, bob) = (SecretKey::generate(), SecretKey::generate());
//! let alice_client = ClientBuilder::new(server.relay_url(), alice.clone()).build();
//! let mut bob_client = ClientBuilder::new(server.relay_url(), bob.clone()).build();
//! // Wait until bob is logged in, so the relay knows where to deliver.
//! let mut state = bob_client.state();
//! state.wait_for(|s| s.is_connected()).await?;
//!
//! alice_client.send(bob.public(), Datagrams::single(&b"hello"[..])).await?;
//! match bob_client.recv().await {
//!     Some(ReceivedEvent::Datagrams { src, datagrams }) => {
//!         assert_eq!(src, alice.public());
//!         assert_eq!(&datagrams.contents[..], b"hello");
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//!
//! alice_client.close().await;
//! bob_client.close().await;
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`NodeId`]: iroh_base::NodeId
#![forbid(unsafe_code)]

#[cfg(feature = "client")]
#[cfg_attr(iroh_docsrs, doc(cfg(feature = "client")))]
pub mod client;
pub mod io;
pub mod protos;
#[cfg(feature = "server")]
#[cfg_attr(iroh_docsrs, doc(cfg(feature = "server")))]
pub mod server;
#[cfg(any(feature = "client", feature = "server"))]
mod ws;
