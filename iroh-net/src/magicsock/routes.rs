//! The routing table the actor publishes for the socket's hot path: each node's send plan, which node a
//! UDP source belongs to, and the open relay clients.
//!
//! Written only by the actor (rarely: when a plan changes, an address is learned, a relay opens or
//! closes), read on every transmit and every received batch. One `RwLock` around the three maps, held only
//! for hash lookups, never across a system call that could block or an `.await`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use iroh_base::{NodeId, RelayUrl};
use iroh_relay::client::ClientSender;

use crate::paths::SendPlan;

/// Where a node's packets go, as the socket sees it.
#[derive(Debug)]
pub(crate) struct NodeRoute {
    /// The current plan from the path core.
    pub(crate) plan: SendPlan,
    /// Whether the path core knows the node's relay (then QUIC from it through a relay can go straight to
    /// quinn: the reply has a way back).
    pub(crate) relay_known: bool,
    /// Set by the socket when it sends to the node, cleared by the actor about a second after it heard of
    /// it: the actor learns of activity at most once a second per node.
    pub(crate) activity: AtomicBool,
}

impl NodeRoute {
    pub(crate) fn new(plan: SendPlan, relay_known: bool) -> Self {
        Self {
            plan,
            relay_known,
            activity: AtomicBool::new(false),
        }
    }
}

/// Who a UDP source address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddrOwner {
    /// A node: its packets reach quinn from the node's mapped address.
    Node(NodeId),
    /// A source that opened a connection under an alias. Packets keep that alias until `sticky_until`
    /// (quinn drops packets from another address while a handshake runs), then, once the node is known,
    /// move to the node's mapped address (quinn migrates the connection).
    Alias {
        alias: SocketAddr,
        node: Option<NodeId>,
        sticky_until: Instant,
    },
}

/// An open relay client, as the socket uses it.
#[derive(Debug)]
pub(crate) struct RelaySlot {
    pub(crate) sender: ClientSender,
    /// Set whenever a datagram goes through or comes from this relay; the actor's idle sweep clears it.
    pub(crate) used: AtomicBool,
}

impl RelaySlot {
    pub(crate) fn new(sender: ClientSender) -> Self {
        Self {
            sender,
            used: AtomicBool::new(true),
        }
    }

    pub(crate) fn mark_used(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }
}

/// The three maps; see the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub(crate) nodes: HashMap<NodeId, NodeRoute>,
    pub(crate) by_addr: HashMap<SocketAddr, AddrOwner>,
    pub(crate) relays: HashMap<RelayUrl, Arc<RelaySlot>>,
}

impl Routes {
    /// Notes that UDP source `addr` belongs to `node`, keeping a young alias in place.
    pub(crate) fn set_owner(&mut self, addr: SocketAddr, node: NodeId) {
        match self.by_addr.get_mut(&addr) {
            Some(AddrOwner::Alias { node: owner, .. }) => *owner = Some(node),
            Some(AddrOwner::Node(owner)) => *owner = node,
            None => {
                self.by_addr.insert(addr, AddrOwner::Node(node));
            }
        }
    }
}
