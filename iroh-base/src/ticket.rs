//! [`NodeTicket`]: a [`NodeAddr`] as one copy-pasteable string.
//!
//! Format: the prefix `node`, then RFC 4648 base32 (lower case, no padding) of
//!
//! ```text
//! version: u8 = 0 | postcard(TicketV0 { node_id: [u8; 32], relay_url: Option<String>,
//!                                       direct_addresses: Vec<SocketAddr> })
//! ```
//!
//! The version byte comes first, outside postcard, so that a reader can tell a ticket from a newer version
//! (which it reports as [`TicketParseError::UnsupportedVersion`]) from a corrupted one.
//!
//! IPv6 flow labels and scope ids are not carried: a scope id names an interface of the machine that wrote
//! it and means nothing to the reader.

use std::{fmt, net::SocketAddr, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    KeyParsingError, NodeAddr, NodeId, RelayUrl, RelayUrlParseError,
    encoding::{BASE32_LOWER, deserialize_from_str},
};

/// The text every node ticket starts with.
pub const NODE_TICKET_PREFIX: &str = "node";
/// The ticket version this crate writes and reads.
const VERSION: u8 = 0;

/// A [`NodeAddr`] packed into a string that starts with `node`, for people to copy and paste.
///
/// ```
/// use iroh_base::{NodeAddr, NodeTicket, SecretKey, TicketParseError};
///
/// let addr = NodeAddr::new(SecretKey::generate().public())
///     .with_relay_url("https://relay.example.org".parse()?);
/// let text = NodeTicket::new(addr.clone()).to_string();
/// assert!(text.starts_with("node"));
/// assert_eq!(text.parse::<NodeTicket>()?.node_addr(), &addr);
///
/// assert!(matches!(
///     "blob123".parse::<NodeTicket>(),
///     Err(TicketParseError::WrongPrefix)
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeTicket {
    node_addr: NodeAddr,
}

/// Why a string is not a node ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketParseError {
    /// The string does not start with `node`.
    #[error("not a node ticket: it must start with {NODE_TICKET_PREFIX:?}")]
    WrongPrefix,
    /// The text after the prefix is not base32.
    #[error("invalid base32 at position {position}")]
    InvalidBase32 {
        /// Position of the fault within the text after the prefix.
        position: usize,
    },
    /// Nothing after the prefix.
    #[error("ticket is empty")]
    Empty,
    /// A ticket of a version this crate does not know (probably from a newer release).
    #[error("unsupported ticket version {0}")]
    UnsupportedVersion(u8),
    /// The payload does not decode.
    #[error("malformed ticket payload: {0}")]
    Malformed(#[from] postcard::Error),
    /// Bytes left over after the payload.
    #[error("{0} unexpected bytes after the ticket payload")]
    TrailingBytes(usize),
    /// The node id in the ticket is not a valid public key.
    #[error("invalid node id in ticket: {0}")]
    InvalidNodeId(#[from] KeyParsingError),
    /// The relay URL in the ticket is not valid.
    #[error("invalid relay URL in ticket: {0}")]
    InvalidRelayUrl(#[from] RelayUrlParseError),
}

/// The wire form of version 0.
#[derive(Serialize, Deserialize)]
struct TicketV0 {
    node_id: [u8; 32],
    relay_url: Option<String>,
    direct_addresses: Vec<SocketAddr>,
}

impl NodeTicket {
    /// A ticket for `node_addr`.
    pub fn new(node_addr: NodeAddr) -> Self {
        Self { node_addr }
    }

    /// The address inside.
    pub fn node_addr(&self) -> &NodeAddr {
        &self.node_addr
    }

    /// The node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_addr.node_id
    }

    /// The binary payload: version byte and postcard body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = TicketV0 {
            node_id: *self.node_addr.node_id.as_bytes(),
            relay_url: self.node_addr.relay_url.as_ref().map(|url| url.to_string()),
            direct_addresses: self.node_addr.direct_addresses.iter().copied().collect(),
        };
        let mut out = vec![VERSION];
        // Serializing into a Vec fails only when out of memory, which aborts anyway; every field of
        // `TicketV0` is plain data that postcard encodes.
        match postcard::to_extend(&wire, out) {
            Ok(bytes) => out = bytes,
            Err(err) => unreachable!("postcard cannot fail to encode a ticket: {err}"),
        }
        out
    }

    /// Reads the binary payload written by [`NodeTicket::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TicketParseError> {
        let (&version, body) = bytes.split_first().ok_or(TicketParseError::Empty)?;
        if version != VERSION {
            return Err(TicketParseError::UnsupportedVersion(version));
        }
        let (wire, rest) = postcard::take_from_bytes::<TicketV0>(body)?;
        if !rest.is_empty() {
            return Err(TicketParseError::TrailingBytes(rest.len()));
        }
        let node_id = NodeId::from_bytes(&wire.node_id)?;
        let relay_url = wire.relay_url.map(|s| s.parse::<RelayUrl>()).transpose()?;
        Ok(Self {
            node_addr: NodeAddr::from_parts(node_id, relay_url, wire.direct_addresses),
        })
    }
}

impl From<NodeAddr> for NodeTicket {
    fn from(node_addr: NodeAddr) -> Self {
        Self::new(node_addr)
    }
}

impl From<NodeTicket> for NodeAddr {
    fn from(ticket: NodeTicket) -> Self {
        ticket.node_addr
    }
}

impl fmt::Display for NodeTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NODE_TICKET_PREFIX)?;
        f.write_str(&BASE32_LOWER.encode(&self.to_bytes()))
    }
}

impl FromStr for NodeTicket {
    type Err = TicketParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let body = s
            .strip_prefix(NODE_TICKET_PREFIX)
            .ok_or(TicketParseError::WrongPrefix)?;
        if body.is_empty() {
            return Err(TicketParseError::Empty);
        }
        let bytes = BASE32_LOWER.decode(body.as_bytes()).map_err(|err| {
            TicketParseError::InvalidBase32 {
                position: err.position,
            }
        })?;
        Self::from_bytes(&bytes)
    }
}

impl Serialize for NodeTicket {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_bytes(&self.to_bytes())
        }
    }
}

impl<'de> Deserialize<'de> for NodeTicket {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserialize_from_str(deserializer)
        } else {
            let bytes: Vec<u8> = serde_bytes_vec(deserializer)?;
            Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
        }
    }
}

/// Reads a byte string (as written by `serialize_bytes`).
fn serde_bytes_vec<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    struct BytesVisitor;

    impl serde::de::Visitor<'_> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }

    deserializer.deserialize_byte_buf(BytesVisitor)
}

#[cfg(test)]
mod tests;
