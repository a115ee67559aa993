//! The routing table the actor publishes for the socket's hot path: each node's send plan, which node a
//! UDP source belongs to, and the open relay clients.
//!
//! Written only by the actor (rarely: when a plan changes, an address is learned, a relay opens or
//! closes), read on every transmit and every received batch. One `RwLock` around the three maps, held only
//! for hash lookups, never across a system call that could block or an `.await`.
//!
//! The socket writes back through atomics under the read lock: when it last received QUIC from each
//! address and last sent to each node directly ([`Stamp`]s), which the actor reads to tell the path core
//! that a path is alive (and to notice one that went silent).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
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
    /// When the socket last sent to the node over UDP.
    pub(crate) last_sent: Stamp,
    /// While the plan's direct path is trusted: how long it may stay silent (nothing received from its
    /// address) while we send on it before the actor must hear of it; `None` otherwise.
    pub(crate) silence_after: Option<Duration>,
    /// Set by the socket when it told the actor the direct path went silent; cleared by the actor.
    pub(crate) silent: AtomicBool,
}

impl NodeRoute {
    pub(crate) fn new(plan: SendPlan, relay_known: bool) -> Self {
        Self {
            plan,
            relay_known,
            activity: AtomicBool::new(false),
            last_sent: Stamp::default(),
            silence_after: None,
            silent: AtomicBool::new(false),
        }
    }
}

/// An instant kept in an atomic: nanoseconds since the socket's epoch, 0 for never. Written with relaxed
/// ordering on the hot path; readers only need a recent value, not a synchronised one.
#[derive(Debug, Default)]
pub(crate) struct Stamp(AtomicU64);

impl Stamp {
    /// Records `now` (as [`Epoch::nanos`] gives it).
    pub(crate) fn set(&self, nanos: u64) {
        if self.0.load(Ordering::Relaxed) != nanos {
            self.0.store(nanos, Ordering::Relaxed);
        }
    }

    /// The recorded instant, if any.
    pub(crate) fn get(&self, epoch: &Epoch) -> Option<Instant> {
        epoch.instant(self.0.load(Ordering::Relaxed))
    }

    pub(crate) fn nanos(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The origin of [`Stamp`]s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epoch(Instant);

impl Epoch {
    pub(crate) fn new() -> Self {
        // One nanosecond before now, so that no stamp taken from now on is 0 ("never").
        let now = Instant::now();
        Self(now.checked_sub(Duration::from_nanos(1)).unwrap_or(now))
    }

    /// `at` as a stamp.
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.0).as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant(&self, nanos: u64) -> Option<Instant> {
        (nanos != 0).then(|| self.0 + Duration::from_nanos(nanos))
    }
}

/// A UDP source address's owner, and when QUIC last came from it.
#[derive(Debug)]
pub(crate) struct AddrEntry {
    pub(crate) owner: AddrOwner,
    pub(crate) last_recv: Stamp,
}

impl AddrEntry {
    pub(crate) fn new(owner: AddrOwner) -> Self {
        Self {
            owner,
            last_recv: Stamp::default(),
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
    pub(crate) by_addr: HashMap<SocketAddr, AddrEntry>,
    pub(crate) relays: HashMap<RelayUrl, Arc<RelaySlot>>,
}

impl Routes {
    /// Notes that UDP source `addr` belongs to `node`, keeping a young alias in place.
    pub(crate) fn set_owner(&mut self, addr: SocketAddr, node: NodeId) {
        match self.by_addr.get_mut(&addr).map(|entry| &mut entry.owner) {
            Some(AddrOwner::Alias { node: owner, .. }) => *owner = Some(node),
            Some(AddrOwner::Node(owner)) => *owner = node,
            None => {
                self.by_addr
                    .insert(addr, AddrEntry::new(AddrOwner::Node(node)));
            }
        }
    }

    /// Who `addr` belongs to.
    pub(crate) fn owner(&self, addr: &SocketAddr) -> Option<AddrOwner> {
        self.by_addr.get(addr).map(|entry| entry.owner)
    }
}
