//! Dial any node by its public key and get a direct, encrypted QUIC connection.
//!
//! A node is identified by its ed25519 public key, its [`NodeId`]. An [`Endpoint`] dials a node given its
//! [`NodeAddr`] (the `NodeId`, a home relay URL and any known direct addresses): packets flow through the
//! relay from the first moment, so the connection always works, and holepunching moves it to a direct UDP
//! path as soon as one exists, falling back to the relay when that path dies, without the application's
//! streams noticing. TLS binds the connection to both nodes' keys. With [`discovery`] services (signed
//! records published to a discovery server and resolved over DNS, multicast DNS on the local network, or
//! an address book) a bare `NodeId` is enough to dial.
//!
//! This crate is the one applications depend on: it re-exports what they need from [`iroh_base`] and
//! [`iroh_net`], and adds a [`Router`](router::Router) that serves several protocols on one endpoint by ALPN.
//!
//! # Example
//!
//! An echo protocol served by a router, and a client dialling it by its `NodeAddr`:
//!
//! ```
//! use iroh::{Connection, Endpoint, RelayMode, router::{HandlerError, ProtocolHandler, Router}};
//!
//! const ALPN: &[u8] = b"example/echo/1";
//!
//! #[derive(Debug)]
//! struct Echo;
//!
//! impl ProtocolHandler for Echo {
//!     async fn accept(&self, connection: Connection) -> Result<(), HandlerError> {
//!         let (mut send, mut recv) = connection.accept_bi().await?;
//!         let data = recv.read_to_end(1024).await?;
//!         send.write_all(&data).await?;
//!         send.finish()?;
//!         connection.closed().await;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Relays are disabled to keep the example self-contained; on the internet, keep the default.
//! let server = Endpoint::builder().relay_mode(RelayMode::Disabled).bind().await?;
//! let router = Router::builder(server).accept(ALPN, Echo).spawn()?;
//! let server_addr = router.endpoint().node_addr();
//!
//! let client = Endpoint::builder().relay_mode(RelayMode::Disabled).bind().await?;
//! let connection = client.connect(server_addr, ALPN).await?;
//! assert_eq!(connection.remote_node_id(), router.endpoint().node_id());
//! let (mut send, mut recv) = connection.open_bi().await?;
//! send.write_all(b"hello").await?;
//! send.finish()?;
//! assert_eq!(recv.read_to_end(1024).await?, b"hello");
//! connection.close(0u32.into(), b"done");
//!
//! client.close().await;
//! router.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod router;

pub use iroh_base::{
    self, KeyParsingError, NodeAddr, NodeId, NodeTicket, PublicKey, RelayUrl, RelayUrlParseError,
    SecretKey, Signature, TicketParseError,
};
pub use iroh_net::{
    self,
    congestion::CongestionControl,
    discovery,
    endpoint::{
        AcceptError, BindError, Builder as EndpointBuilder, ConnectError, Connection, Endpoint,
        Incoming, RelayMode, RelayTransport, RemoteInfo, WindowTuning, default_transport_config,
    },
    paths::ConnectionType,
    portmap::{self, MappingProtocol, client::Mapping, service::PortMapConfig},
    quinn,
};

/// The README's code blocks, compiled as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
