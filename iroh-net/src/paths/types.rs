//! The vocabulary of the path core: where an address came from, where packets go, what the core asks its
//! driver to send, and what it reports.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use iroh_base::{NodeId, RelayUrl};

pub use crate::disco::TxId;

/// Where a candidate address of a remote node came from. Ordered from the strongest evidence to the weakest;
/// the order decides which unconfirmed candidate to try first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Source {
    /// An authenticated ping arrived from this address (a peer-reflexive address, RFC 8445 terms): the
    /// node is sending from here right now.
    PeerReflexive,
    /// The application passed it in a `NodeAddr`.
    App,
    /// A discovery service found it; the name is the service's (`"dns"`, `"pkarr"`, `"static"`, ...).
    Discovery(&'static str),
    /// The node listed it in a call-me-maybe message.
    CallMeMaybe,
}

/// How a packet reaches a node, or came from one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SendAddr {
    /// Directly over UDP.
    Udp(SocketAddr),
    /// Through a relay server.
    Relay(RelayUrl),
}

impl fmt::Display for SendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Udp(addr) => write!(f, "udp:{addr}"),
            Self::Relay(url) => write!(f, "relay:{url}"),
        }
    }
}

/// Where QUIC packets to a node go right now. Both set means both: while a direct path is unconfirmed,
/// packets go both ways so nothing stalls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SendPlan {
    /// Send over UDP to this address.
    pub udp: Option<SocketAddr>,
    /// Send through this relay.
    pub relay: Option<RelayUrl>,
}

impl SendPlan {
    /// The connection type this plan amounts to.
    pub fn conn_type(&self) -> ConnectionType {
        match (&self.udp, &self.relay) {
            (Some(addr), None) => ConnectionType::Direct(*addr),
            (None, Some(url)) => ConnectionType::Relay(url.clone()),
            (Some(addr), Some(url)) => ConnectionType::Mixed(*addr, url.clone()),
            (None, None) => ConnectionType::None,
        }
    }
}

/// How the connection to a remote node runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConnectionType {
    /// Over a confirmed direct UDP path.
    Direct(SocketAddr),
    /// Through a relay only.
    Relay(RelayUrl),
    /// Both: a direct path is being tried or re-confirmed while the relay carries the traffic too.
    Mixed(SocketAddr, RelayUrl),
    /// No way to reach the node is known.
    None,
}

impl fmt::Display for ConnectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct(addr) => write!(f, "direct({addr})"),
            Self::Relay(url) => write!(f, "relay({url})"),
            Self::Mixed(addr, url) => write!(f, "mixed({addr}, {url})"),
            Self::None => f.write_str("none"),
        }
    }
}

/// A disco message the core asks its driver to seal and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoTransmit {
    /// Send a ping to `dst`.
    Ping {
        /// The node to ping.
        node: NodeId,
        /// Where to send it.
        dst: SendAddr,
        /// Its transaction id.
        tx_id: TxId,
    },
    /// Answer a ping.
    Pong {
        /// The node that pinged.
        node: NodeId,
        /// Where the ping came from, which is where the pong goes.
        dst: SendAddr,
        /// The ping's transaction id.
        tx_id: TxId,
        /// The address the ping came from, as we saw it (for UDP pings).
        observed: Option<SocketAddr>,
    },
    /// Tell the node, through its relay, to ping us on these addresses now.
    CallMeMaybe {
        /// The node to tell.
        node: NodeId,
        /// Its relay.
        relay: RelayUrl,
        /// Our candidate addresses.
        addrs: Vec<SocketAddr>,
        /// What we know of our NAT.
        nat: crate::disco::NatHint,
    },
    /// Tell the node, through its relay, that our prediction sockets are open: it should probe random
    /// ports of `ip` (see port prediction in [`crate::paths`]).
    Predict {
        /// The node to tell.
        node: NodeId,
        /// Its relay.
        relay: RelayUrl,
        /// Our public IP.
        ip: IpAddr,
    },
}

/// What the core reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathEvent {
    /// The send plan for a node changed: republish it for the socket.
    PlanChanged {
        /// The node.
        node: NodeId,
        /// The new plan.
        plan: SendPlan,
    },
    /// A pong told us how a node sees one of our addresses (our reflexive address towards it).
    ObservedOwnAddr {
        /// The node that saw us.
        node: NodeId,
        /// The address it saw.
        addr: SocketAddr,
    },
    /// Port prediction, hard side: open `count` extra UDP sockets and send one ping (any transaction id)
    /// from each to `dst`, then call [`Paths::prediction_sockets_ready`](crate::paths::Paths::prediction_sockets_ready).
    /// Keep them open for [`PREDICTION_SOCKET_LIFETIME`](crate::paths::PREDICTION_SOCKET_LIFETIME); the
    /// first on which an authenticated disco message from `node` arrives carries everything to `node`'s
    /// address from then on, and the others close.
    OpenPredictionSockets {
        /// The node on the other side.
        node: NodeId,
        /// Its reflexive address, where the pings go.
        dst: SocketAddr,
        /// How many sockets.
        count: usize,
    },
    /// Port prediction, easy side: a spray of probes ended.
    SprayEnded {
        /// The node sprayed.
        node: NodeId,
        /// How many probes went out.
        probes: usize,
        /// The address that answered, if one did.
        hit: Option<SocketAddr>,
    },
}

/// One known path to a node, for `remote_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The UDP address.
    pub addr: SocketAddr,
    /// Where we learned it, strongest first.
    pub sources: Vec<Source>,
    /// Round-trip time of the last pong, if any.
    pub latency: Option<Duration>,
    /// How long ago the last pong arrived.
    pub last_pong_age: Option<Duration>,
    /// Whether the path is confirmed right now.
    pub trusted: bool,
}

/// What the core knows about a remote node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node.
    pub node_id: NodeId,
    /// Its relay, if known.
    pub relay_url: Option<RelayUrl>,
    /// Where the relay URL came from.
    pub relay_source: Option<Source>,
    /// Its direct paths.
    pub paths: Vec<PathInfo>,
    /// How packets go now.
    pub conn_type: ConnectionType,
    /// How long ago we last sent or received anything for it.
    pub last_activity_age: Option<Duration>,
}
