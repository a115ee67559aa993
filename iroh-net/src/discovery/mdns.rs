//! Local-network discovery (mDNS / DNS-SD, RFC 6762 and 6763): the parts that do not touch the network.
//!
//! Nodes advertise the service type [`SERVICE_TYPE`] with their z-base-32 NodeId as the instance name and
//! their addressing in TXT: `relay=<url>` and one key per direct address, `a0=<ip:port>`, `a1=...` (TXT keys
//! are unique in DNS-SD, so a repeated `addr=` key would keep only the first). This module holds:
//!
//! - [`publishable`]: which of our direct addresses a peer on the LAN can use (no loopback, link-local,
//!   unspecified or multicast addresses), at most [`MAX_ADDRS`];
//! - [`encode_txt`] / [`decode_txt`]: the TXT pair, every malformed value a typed [`TxtError`];
//! - [`HeardPeers`]: what was heard from other nodes, bounded in count (a flood of fake announcements
//!   cannot grow it without limit) and in time (TTLs clamped); only "try this address" hints, the TLS
//!   handshake still proves the key;
//! - [`AnnounceSchedule`]: a schedule of repeated announcements (three a second apart after a start or a
//!   change, then at most one a minute), for responders that announce on their own. [`MdnsDiscovery`]
//!   does not need it: its daemon announces twice on a change and then answers the queries with which
//!   peers refresh our records before their TTLs run out.
//!
//! All of it is sans-IO, fed `now`. The service that puts it on the network is [`MdnsDiscovery`] (in
//! [`service`]).

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    str::FromStr,
    time::{Duration, Instant},
};

use iroh_base::{NodeId, RelayUrl};

pub mod service;

pub use self::service::{MdnsBuilder, MdnsDiscovery, MdnsError, MdnsEvent};

/// The DNS-SD service type nodes advertise.
pub const SERVICE_TYPE: &str = "_iroh._udp.local.";
/// The most direct addresses one announcement carries.
pub const MAX_ADDRS: usize = 16;
/// The TXT key of the home relay.
pub const RELAY_KEY: &str = "relay";
/// The shortest and longest TTLs taken from what is heard.
pub const TTL_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(4500));
/// The most peers [`HeardPeers`] holds by default.
pub const DEFAULT_MAX_PEERS: usize = 1024;
/// Announcements right after a start or a change, [`BURST_GAP`] apart.
pub const BURST: u32 = 3;
/// The gap between the first announcements.
pub const BURST_GAP: Duration = Duration::from_secs(1);
/// The gap between later announcements.
pub const STEADY_GAP: Duration = Duration::from_secs(60);

/// Whether a peer on the local network can use `addr`: not loopback, link-local (`fe80::/10`,
/// `169.254.0.0/16`), unspecified or multicast.
pub fn is_publishable(addr: &SocketAddr) -> bool {
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let usable = match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_unicast_link_local()),
    };
    usable && !ip.is_unspecified() && !ip.is_multicast() && addr.port() != 0
}

/// The addresses of `addrs` worth announcing, in order, at most [`MAX_ADDRS`].
pub fn publishable(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    addrs
        .into_iter()
        .filter(is_publishable)
        .take(MAX_ADDRS)
        .collect()
}

/// The TXT properties of an announcement: `relay` (if any), then `a0`, `a1`, ... for the addresses.
pub fn encode_txt(relay: Option<&RelayUrl>, addrs: &[SocketAddr]) -> Vec<(String, String)> {
    let mut txt: Vec<(String, String)> = relay
        .map(|url| (RELAY_KEY.to_owned(), url.to_string()))
        .into_iter()
        .collect();
    txt.extend(
        addrs
            .iter()
            .take(MAX_ADDRS)
            .enumerate()
            .map(|(i, addr)| (format!("a{i}"), addr.to_string())),
    );
    txt
}

/// Reads the relay and the addresses from TXT properties (`key`, `value`); unknown keys are ignored.
pub fn decode_txt<'a>(
    txt: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(Option<RelayUrl>, BTreeSet<SocketAddr>), TxtError> {
    let mut relay = None;
    let mut addrs = BTreeSet::new();
    for (key, value) in txt {
        if key.eq_ignore_ascii_case(RELAY_KEY) {
            relay = Some(RelayUrl::from_str(value).map_err(|_| TxtError::Relay)?);
        } else if let Some(index) = key.strip_prefix(['a', 'A'])
            && !index.is_empty()
            && index.bytes().all(|b| b.is_ascii_digit())
        {
            if addrs.len() >= MAX_ADDRS {
                return Err(TxtError::TooManyAddrs);
            }
            let addr = SocketAddr::from_str(value).map_err(|_| TxtError::Addr {
                value: value.chars().take(64).collect(),
            })?;
            addrs.insert(addr);
        }
    }
    Ok((relay, addrs))
}

/// A malformed TXT value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxtError {
    /// `relay=` is not a relay URL.
    #[error("bad relay URL")]
    Relay,
    /// An address key's value is not `ip:port`.
    #[error("bad direct address {value:?}")]
    Addr {
        /// The value (at most 64 characters of it).
        value: String,
    },
    /// More than [`MAX_ADDRS`] addresses.
    #[error("more than {MAX_ADDRS} addresses")]
    TooManyAddrs,
}

/// What was heard of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    /// Its relay, if it announced one.
    pub relay: Option<RelayUrl>,
    /// Its direct addresses.
    pub addrs: BTreeSet<SocketAddr>,
    /// When it was last heard.
    pub heard_at: Instant,
    /// When the announcement runs out.
    pub expires_at: Instant,
}

/// What was heard from other nodes: see the [module docs](self).
#[derive(Debug)]
pub struct HeardPeers {
    peers: HashMap<NodeId, Heard>,
    max_peers: usize,
}

impl HeardPeers {
    /// A table of at most `max_peers` nodes.
    pub fn new(max_peers: usize) -> Self {
        Self {
            peers: HashMap::new(),
            max_peers: max_peers.max(1),
        }
    }

    /// An announcement of `node` with `ttl`: replaces what was known of it. When the table is full, the
    /// expired entries go, then the one heard longest ago. (A TTL of 0 is a goodbye: call
    /// [`HeardPeers::gone`] instead; here it is clamped to the shortest TTL.)
    pub fn heard(
        &mut self,
        now: Instant,
        node: NodeId,
        relay: Option<RelayUrl>,
        addrs: BTreeSet<SocketAddr>,
        ttl: Duration,
    ) {
        let ttl = ttl.clamp(TTL_RANGE.0, TTL_RANGE.1);
        if !self.peers.contains_key(&node) && self.peers.len() >= self.max_peers {
            self.expire(now);
            if self.peers.len() >= self.max_peers
                && let Some(oldest) = self
                    .peers
                    .iter()
                    .min_by_key(|(_, heard)| heard.heard_at)
                    .map(|(node, _)| *node)
            {
                self.peers.remove(&oldest);
            }
        }
        self.peers.insert(
            node,
            Heard {
                relay,
                addrs,
                heard_at: now,
                expires_at: now + ttl,
            },
        );
    }

    /// A goodbye (TTL 0) from `node`.
    pub fn gone(&mut self, node: &NodeId) {
        self.peers.remove(node);
    }

    /// What is known of `node`, unless it ran out.
    pub fn get(&self, now: Instant, node: &NodeId) -> Option<&Heard> {
        self.peers.get(node).filter(|heard| heard.expires_at > now)
    }

    /// The entries that have not run out.
    pub fn iter(&self, now: Instant) -> impl Iterator<Item = (&NodeId, &Heard)> {
        self.peers
            .iter()
            .filter(move |(_, heard)| heard.expires_at > now)
    }

    /// Drops what ran out.
    pub fn expire(&mut self, now: Instant) {
        self.peers.retain(|_, heard| heard.expires_at > now);
    }

    /// How many nodes it holds (expired ones included until [`HeardPeers::expire`]).
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

impl Default for HeardPeers {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PEERS)
    }
}

/// When to announce on one interface: see the [module docs](self).
#[derive(Debug, Clone)]
pub struct AnnounceSchedule {
    /// Announcements since the last start or change.
    sent: u32,
    last: Option<Instant>,
    /// Whether something is to be announced at all.
    active: bool,
}

impl AnnounceSchedule {
    /// Nothing to announce yet.
    pub fn new() -> Self {
        Self {
            sent: 0,
            last: None,
            active: false,
        }
    }

    /// What we announce changed (or we started): a new burst, though never two announcements closer
    /// than [`BURST_GAP`].
    pub fn changed(&mut self) {
        self.sent = 0;
        self.active = true;
    }

    /// We stopped announcing (a goodbye went out).
    pub fn stopped(&mut self) {
        self.active = false;
    }

    /// When the next announcement is due (`now` if at once), if any.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if !self.active {
            return None;
        }
        Some(self.last.map_or(now, |last| last + self.gap()))
    }

    fn gap(&self) -> Duration {
        if self.sent < BURST {
            BURST_GAP
        } else {
            STEADY_GAP
        }
    }

    /// Whether to announce at `now`; if so, counts it.
    pub fn poll_announce(&mut self, now: Instant) -> bool {
        if !self.active {
            return false;
        }
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.gap());
        if due {
            self.sent = self.sent.saturating_add(1);
            self.last = Some(now);
        }
        due
    }
}

impl Default for AnnounceSchedule {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
