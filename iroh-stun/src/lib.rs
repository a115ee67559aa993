//! STUN (RFC 8489), Binding method only, over UDP, IPv4 and IPv6.
//!
//! Layers, from the wire up:
//!
//! - [`message`] and [`attr`]: the codec. [`Message::parse`] / [`Message::encode`] / [`Message::encoded_len`],
//!   one length check up front and no panic on any input; XOR-MAPPED-ADDRESS, MAPPED-ADDRESS, SOFTWARE,
//!   ERROR-CODE, UNKNOWN-ATTRIBUTES and FINGERPRINT are interpreted, everything else is kept raw. [`is_stun`] is
//!   the cheap demultiplexing test.
//! - [`transaction`]: a sans-IO client transaction (RFC 8489 section 6.2.1 retransmissions), driven with
//!   `handle_*` / `poll_*` calls and injected time.
//! - [`server`]: [`server::respond`], the sans-IO answer to one datagram, and [`Server`], a tokio task serving it
//!   on a UDP socket.
//! - [`client`]: [`query_reflexive_addr`], a tokio driver for the client transaction.
//!
//! Not implemented: authentication (MESSAGE-INTEGRITY and friends are kept as raw attributes, and a server
//! answers requests carrying them with 420), TCP/TLS transports, and methods other than Binding.
//!
//! # Example
//!
//! ```
//! use iroh_stun::{Message, TransactionId, is_stun, server};
//!
//! // A client builds a Binding request...
//! let request = Message::binding_request(TransactionId::random()).with_fingerprint(true);
//! let bytes = request.to_bytes();
//! assert!(is_stun(&bytes));
//!
//! // ...a server answers it with the address the request came from...
//! let client_addr = "192.0.2.1:32853".parse()?;
//! let response = server::respond(client_addr, &bytes, Some("example"))?
//!     .ok_or("a Binding request is always answered")?;
//!
//! // ...and the client reads its reflexive address back.
//! let parsed = Message::parse(&response.to_bytes())?;
//! assert_eq!(parsed.transaction_id(), request.transaction_id());
//! assert_eq!(parsed.xor_mapped_address(), Some(client_addr));
//! assert_eq!(parsed.software(), Some("example"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Over the network, [`Server::bind`] serves STUN and [`query_reflexive_addr`] asks a server:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use iroh_stun::{Server, TransactionConfig, query_reflexive_addr};
//!
//! let server = Server::bind("127.0.0.1:0".parse()?).await?;
//! let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
//! let reflexive = query_reflexive_addr(&socket, server.local_addr(), TransactionConfig::default()).await?;
//! assert_eq!(reflexive.addr, socket.local_addr()?);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod attr;
pub mod client;
pub mod error;
pub mod message;
pub mod server;
pub mod transaction;
mod wire;

pub use attr::Attribute;
pub use client::{QueryError, Reflexive, query_reflexive_addr};
pub use error::{EncodeError, ParseError};
pub use message::{
    Class, DEFAULT_PORT, MAGIC_COOKIE, Message, Method, TransactionId, is_stun, peek_transaction_id,
};
pub use server::{Server, ServerConfig, ServerStats, respond, respond_with_config};
pub use transaction::{ClientTransaction, Event, Input, TransactionConfig, Transmit};
