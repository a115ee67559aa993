//! An address book the application fills: addresses learned out of band (a ticket, a config file, the
//! application's own signalling), kept in memory and handed out when a node is dialled by its id alone.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{Arc, PoisonError, RwLock},
};

use futures_util::stream;
use iroh_base::{NodeAddr, NodeId, RelayUrl};

use super::{Discovery, DiscoveryItem, DiscoveryStream};
use iroh_relay::protos::discovery::now_micros;

/// The [`Discovery::name`] of a [`StaticProvider`].
pub const NAME: &str = "static";

/// An in-memory address book as a [`Discovery`] service. Cheap to clone: clones share the book, so the
/// application keeps one to add to after handing another to the endpoint builder.
///
/// ```
/// use iroh_base::{NodeAddr, SecretKey};
/// use iroh_net::discovery::static_provider::StaticProvider;
///
/// let book = StaticProvider::new();
/// let peer = SecretKey::generate().public();
/// book.add_node_addr(NodeAddr::new(peer).with_direct_addresses(["192.0.2.7:4433".parse().unwrap()]));
/// assert_eq!(book.get(&peer).unwrap().direct_addresses.len(), 1);
/// // Endpoint::builder().add_discovery(book.clone()) ... endpoint.connect(peer, alpn)
/// ```
#[derive(Debug, Clone, Default)]
pub struct StaticProvider {
    nodes: Arc<RwLock<BTreeMap<NodeId, Entry>>>,
}

#[derive(Debug, Clone)]
struct Entry {
    relay_url: Option<RelayUrl>,
    direct_addresses: BTreeSet<SocketAddr>,
    updated: u64,
}

impl StaticProvider {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// A book holding these addresses.
    pub fn from_node_addrs(addrs: impl IntoIterator<Item = NodeAddr>) -> Self {
        let book = Self::new();
        for addr in addrs {
            book.add_node_addr(addr);
        }
        book
    }

    /// Adds `addr` to what the book knows about its node: its relay (if given) replaces the one known,
    /// its direct addresses join the known ones.
    pub fn add_node_addr(&self, addr: NodeAddr) {
        let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        let entry = nodes.entry(addr.node_id).or_insert_with(|| Entry {
            relay_url: None,
            direct_addresses: BTreeSet::new(),
            updated: 0,
        });
        if addr.relay_url.is_some() {
            entry.relay_url = addr.relay_url;
        }
        entry.direct_addresses.extend(addr.direct_addresses);
        entry.updated = now_micros();
    }

    /// Replaces what the book knows about `addr`'s node with `addr`.
    pub fn set_node_addr(&self, addr: NodeAddr) {
        let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        nodes.insert(
            addr.node_id,
            Entry {
                relay_url: addr.relay_url,
                direct_addresses: addr.direct_addresses,
                updated: now_micros(),
            },
        );
    }

    /// Forgets a node; returns what was known.
    pub fn remove(&self, node: &NodeId) -> Option<NodeAddr> {
        let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        nodes.remove(node).map(|e| to_addr(*node, e))
    }

    /// What the book knows about `node`.
    pub fn get(&self, node: &NodeId) -> Option<NodeAddr> {
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        nodes.get(node).cloned().map(|e| to_addr(*node, e))
    }

    /// How many nodes it knows.
    pub fn len(&self) -> usize {
        self.nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether it knows no node.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn to_addr(node: NodeId, entry: Entry) -> NodeAddr {
    NodeAddr::from_parts(node, entry.relay_url, entry.direct_addresses)
}

impl Discovery for StaticProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn resolve(&self, node: NodeId) -> Option<DiscoveryStream> {
        let entry = {
            let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
            nodes.get(&node).cloned()?
        };
        let item = DiscoveryItem {
            last_updated: Some(entry.updated),
            node_addr: to_addr(node, entry),
            provenance: NAME,
        };
        Some(Box::pin(stream::iter([Ok(item)])))
    }
}
