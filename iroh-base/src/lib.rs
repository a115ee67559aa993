//! The vocabulary every crate of the workspace speaks: keys, node addresses, relay URLs and tickets.
//!
//! A node is identified by its ed25519 public key, its [`NodeId`]. To reach a node you need a [`NodeAddr`]:
//! its `NodeId`, optionally its home relay ([`RelayUrl`]) and any direct UDP addresses it is known to have.
//! A [`NodeTicket`] packs a `NodeAddr` into one string that people can copy and paste.
//!
//! ```
//! use iroh_base::{NodeAddr, NodeTicket, RelayUrl, SecretKey};
//!
//! let secret = SecretKey::generate();
//! let node_id = secret.public();
//! let relay: RelayUrl = "https://relay.example.org".parse()?;
//! let addr = NodeAddr::new(node_id)
//!     .with_relay_url(relay)
//!     .with_direct_addresses(["192.0.2.7:4433".parse()?]);
//!
//! let ticket = NodeTicket::new(addr.clone()).to_string();
//! let back: NodeTicket = ticket.parse()?;
//! assert_eq!(back.node_addr(), &addr);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Everything here is plain data with no I/O. Every type has `Display` and `FromStr` that round-trip, and
//! serde support: as strings in human-readable formats (JSON, TOML) and as compact bytes in binary ones
//! (postcard). Every malformed input is rejected with its own typed error.
//!
//! The [`sealed`] module turns a pair of node keys into a [`SharedSecret`] that seals and opens the small
//! messages nodes exchange to punch holes through NATs.
#![forbid(unsafe_code)]

mod encoding;
mod key;
mod node_addr;
mod relay_url;
pub mod sealed;
mod ticket;

pub use key::{
    KeyParsingError, NodeId, PUBLIC_KEY_LENGTH, PublicKey, SECRET_KEY_LENGTH, SIGNATURE_LENGTH,
    SecretKey, Signature, SignatureError,
};
pub use node_addr::NodeAddr;
pub use relay_url::{RelayUrl, RelayUrlParseError};
pub use sealed::{OpenError, SharedSecret};
pub use ticket::{NODE_TICKET_PREFIX, NodeTicket, TicketParseError};
