//! [`NodeAddr`]: everything needed to reach a node.

use std::{collections::BTreeSet, net::SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{NodeId, RelayUrl};

/// How to reach a node: its [`NodeId`], its home relay if known, and the direct UDP addresses it is known to
/// have.
///
/// Only the `NodeId` is required: with a relay URL a connection works at once through the relay; direct
/// addresses let it start direct. Addresses are kept sorted and without duplicates.
///
/// ```
/// use iroh_base::{NodeAddr, SecretKey};
///
/// let node_id = SecretKey::generate().public();
/// let addr = NodeAddr::new(node_id)
///     .with_relay_url("https://relay.example.org".parse()?)
///     .with_direct_addresses(["192.0.2.1:1234".parse()?, "[2001:db8::1]:1234".parse()?]);
/// assert_eq!(addr.direct_addresses.len(), 2);
/// assert!(!addr.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeAddr {
    /// The node's identity.
    pub node_id: NodeId,
    /// The node's home relay, through which it can always be reached.
    pub relay_url: Option<RelayUrl>,
    /// UDP addresses the node may be reachable on directly.
    pub direct_addresses: BTreeSet<SocketAddr>,
}

impl NodeAddr {
    /// An address with only the `NodeId`: reaching the node then needs discovery.
    pub fn new(node_id: NodeId) -> Self {
        Self {
            node_id,
            relay_url: None,
            direct_addresses: BTreeSet::new(),
        }
    }

    /// An address from all its parts.
    pub fn from_parts(
        node_id: NodeId,
        relay_url: Option<RelayUrl>,
        direct_addresses: impl IntoIterator<Item = SocketAddr>,
    ) -> Self {
        Self {
            node_id,
            relay_url,
            direct_addresses: direct_addresses.into_iter().collect(),
        }
    }

    /// Sets the home relay.
    #[must_use]
    pub fn with_relay_url(mut self, relay_url: RelayUrl) -> Self {
        self.relay_url = Some(relay_url);
        self
    }

    /// Adds direct addresses.
    #[must_use]
    pub fn with_direct_addresses(
        mut self,
        addresses: impl IntoIterator<Item = SocketAddr>,
    ) -> Self {
        self.direct_addresses.extend(addresses);
        self
    }

    /// Whether the address says nothing beyond the `NodeId` (no relay and no direct address).
    pub fn is_empty(&self) -> bool {
        self.relay_url.is_none() && self.direct_addresses.is_empty()
    }
}

impl From<NodeId> for NodeAddr {
    fn from(node_id: NodeId) -> Self {
        Self::new(node_id)
    }
}
