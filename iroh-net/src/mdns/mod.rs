//! Multicast DNS service discovery (RFC 6762 and 6763) of nodes on the local network, sans-IO.
//!
//! Nodes advertise the service type [`SERVICE_TYPE`] with their z-base-32 NodeId as the instance name and
//! their addressing in TXT: `relay=<url>` and one key per direct address, `a0=<ip:port>`, `a1=...` (TXT keys
//! are unique in DNS-SD, so a repeated `addr=` key would keep only the first). This module holds:
//!
//! - [`publishable`]: which of our direct addresses a peer on the LAN can use (no loopback, link-local,
//!   unspecified or multicast addresses), at most [`MAX_ADDRS`];
//! - [`encode_txt`] / [`decode_txt`]: the TXT pair, every malformed value a typed [`TxtError`];
//! - [`wire`]: our messages over `simple-dns`'s codec;
//! - [`HeardPeers`]: what was heard from other nodes, compact (a NodeId, a packed address list, two
//!   times and an interned relay per node: under a hundred bytes), bounded in count (a flood of fake
//!   announcements cannot grow it without limit) and in time (TTLs clamped); only "try this address"
//!   hints, the TLS handshake still proves the key;
//! - [`AnnounceSchedule`]: the announcements after a start or a change;
//! - [`MdnsCore`] (in [`proto`]): responder and querier as one state machine fed `(now, input)`, returning
//!   packets to send, a timeout and events.
//!
//! Nothing here touches the network; the tokio service around it is
//! `iroh_net::discovery::mdns::MdnsDiscovery` (feature `quic`).

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    str::FromStr,
    time::{Duration, Instant},
};

use iroh_base::{NodeAddr, NodeId, RelayUrl};

pub mod proto;
mod types;
pub mod wire;

pub use self::proto::{Config, Interface, MdnsCore, Stats, Transmit};

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
/// Announcements right after a start or a change, [`BURST_GAP`] apart (RFC 6762 §8.3: at least two).
/// None after that: peers that want our records ask for them.
pub const BURST: u32 = 3;
/// The gap between the announcements of a burst.
pub const BURST_GAP: Duration = Duration::from_secs(1);
/// How long a node that said goodbye (TTL 0) stays (RFC 6762 §10.1: a second, in case another
/// responder corrects it).
pub const GOODBYE_GRACE: Duration = Duration::from_secs(1);

/// A change in what is known of the local network.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MdnsEvent {
    /// A node announced (or changed) its addressing.
    Discovered(NodeAddr),
    /// A node said goodbye, its records ran out, or it did not answer when asked again.
    Expired(NodeId),
}

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
    // RFC 6763 section 6.4: of a key given more than once, only the first counts. (Only our keys are
    // remembered, at most MAX_ADDRS + 1 of them: others are skipped.)
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in txt {
        let ours = key.eq_ignore_ascii_case(RELAY_KEY)
            || key
                .strip_prefix(['a', 'A'])
                .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
        if !ours || seen.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            continue;
        }
        seen.push(key);
        if key.eq_ignore_ascii_case(RELAY_KEY) {
            relay = Some(RelayUrl::from_str(value).map_err(|_| TxtError::Relay)?);
        } else {
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

/// One node's entry: 40 bytes next to its 32-byte key, plus the packed addresses (7 bytes per IPv4
/// address, 19 per IPv6).
#[derive(Debug)]
struct Entry {
    addrs: Box<[u8]>,
    /// Milliseconds since the table's epoch.
    heard_ms: u64,
    expires_ms: u64,
    /// Index into the relay list, or [`NO_RELAY`].
    relay: u32,
}

const NO_RELAY: u32 = u32::MAX;

/// The most entries a table reserves room for up front (a larger bound grows as needed).
const RESERVE_MAX: usize = 4096;

/// What was heard from other nodes: see the [module docs](self).
#[derive(Debug)]
pub struct HeardPeers {
    epoch: Instant,
    /// Sorted by key, reserved at the bound (up to [`RESERVE_MAX`]): no hash-table slack and no growth
    /// steps, so a peer costs its 72 bytes and its addresses, and only the part in use is ever touched.
    peers: Vec<(NodeId, Entry)>,
    /// Relay URLs in use and how many entries name each (most nodes of a LAN share a relay or two).
    relays: Vec<Option<(RelayUrl, usize)>>,
    max_peers: usize,
    /// The earliest `expires_ms` (maybe of an entry gone since: only ever early).
    next_expiry: Option<u64>,
    /// Nodes dropped to make room, until [`HeardPeers::take_dropped`].
    dropped: Vec<NodeId>,
}

impl HeardPeers {
    /// A table of at most `max_peers` nodes.
    pub fn new(max_peers: usize) -> Self {
        Self {
            epoch: Instant::now(),
            peers: Vec::with_capacity(max_peers.clamp(1, RESERVE_MAX)),
            relays: Vec::new(),
            max_peers: max_peers.max(1),
            next_expiry: None,
            dropped: Vec::new(),
        }
    }

    fn find(&self, node: &NodeId) -> Result<usize, usize> {
        self.peers.binary_search_by(|(key, _)| key.cmp(node))
    }

    fn entry(&self, node: &NodeId) -> Option<&Entry> {
        self.find(node).ok().map(|i| &self.peers[i].1)
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch
            .checked_add(Duration::from_millis(ms))
            .unwrap_or(self.epoch)
    }

    fn intern(&mut self, relay: Option<RelayUrl>) -> u32 {
        let Some(url) = relay else { return NO_RELAY };
        if let Some(i) = self
            .relays
            .iter()
            .position(|r| r.as_ref().is_some_and(|(u, _)| *u == url))
        {
            if let Some((_, count)) = &mut self.relays[i] {
                *count += 1;
            }
            return u32::try_from(i).unwrap_or(NO_RELAY);
        }
        let slot = match self.relays.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.relays.push(None);
                self.relays.len() - 1
            }
        };
        self.relays[slot] = Some((url, 1));
        u32::try_from(slot).unwrap_or(NO_RELAY)
    }

    fn release(&mut self, relay: u32) {
        if let Some(slot) = self.relays.get_mut(relay as usize)
            && let Some((_, count)) = slot
        {
            *count -= 1;
            if *count == 0 {
                *slot = None;
            }
        }
        while self.relays.last().is_some_and(Option::is_none) {
            self.relays.pop();
        }
    }

    fn relay(&self, relay: u32) -> Option<RelayUrl> {
        self.relays
            .get(relay as usize)
            .and_then(|slot| slot.as_ref().map(|(url, _)| url.clone()))
    }

    fn view(&self, entry: &Entry) -> Heard {
        Heard {
            relay: self.relay(entry.relay),
            addrs: unpack(&entry.addrs),
            heard_at: self.at(entry.heard_ms),
            expires_at: self.at(entry.expires_ms),
        }
    }

    /// An announcement of `node` with `ttl`: replaces what was known of it. When the table is full, the
    /// expired entries go, then the one heard longest ago. Returns whether the relay or the addresses
    /// differ from what was known (or the node is new). (A TTL of 0 is a goodbye: call
    /// [`HeardPeers::goodbye`] instead; here it is clamped to the shortest TTL.)
    pub fn heard(
        &mut self,
        now: Instant,
        node: NodeId,
        relay: Option<RelayUrl>,
        addrs: &BTreeSet<SocketAddr>,
        ttl: Duration,
    ) -> bool {
        let ttl = ttl.clamp(TTL_RANGE.0, TTL_RANGE.1);
        let now_ms = self.ms(now);
        let expires_ms = self.ms(now.checked_add(ttl).unwrap_or(now));
        let packed = pack(addrs);
        if let Ok(i) = self.find(&node) {
            let entry = &self.peers[i].1;
            let same_relay = self.relay(entry.relay) == relay;
            if same_relay && *entry.addrs == *packed {
                let entry = &mut self.peers[i].1;
                entry.heard_ms = now_ms;
                entry.expires_ms = expires_ms;
                self.next_expiry = Some(self.next_expiry.map_or(expires_ms, |e| e.min(expires_ms)));
                return false;
            }
            self.gone(&node);
        }
        if self.peers.len() >= self.max_peers {
            let expired = self.expire(now);
            self.dropped.extend(expired);
            if self.peers.len() >= self.max_peers
                && let Some(oldest) = self
                    .peers
                    .iter()
                    .min_by_key(|(_, e)| e.heard_ms)
                    .map(|(node, _)| *node)
            {
                self.gone(&oldest);
                self.dropped.push(oldest);
            }
        }
        let relay = self.intern(relay);
        let entry = Entry {
            addrs: packed,
            heard_ms: now_ms,
            expires_ms,
            relay,
        };
        match self.find(&node) {
            Ok(i) => self.peers[i].1 = entry,
            Err(i) => self.peers.insert(i, (node, entry)),
        }
        self.next_expiry = Some(self.next_expiry.map_or(expires_ms, |e| e.min(expires_ms)));
        true
    }

    /// The nodes [`HeardPeers::heard`] dropped to make room (expired ones, else the one heard longest
    /// ago) since the last call.
    pub fn take_dropped(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut self.dropped)
    }

    /// A goodbye (TTL 0) from `node`: it goes [`GOODBYE_GRACE`] from now, unless heard again.
    pub fn goodbye(&mut self, now: Instant, node: &NodeId) {
        let at = self.ms(now.checked_add(GOODBYE_GRACE).unwrap_or(now));
        if let Ok(i) = self.find(node) {
            let entry = &mut self.peers[i].1;
            entry.expires_ms = entry.expires_ms.min(at);
            self.next_expiry = Some(self.next_expiry.map_or(at, |e| e.min(at)));
        }
    }

    /// Forgets `node` at once; returns whether it was known.
    pub fn gone(&mut self, node: &NodeId) -> bool {
        match self.find(node) {
            Ok(i) => {
                let (_, entry) = self.peers.remove(i);
                self.release(entry.relay);
                true
            }
            Err(_) => false,
        }
    }

    /// What is known of `node`, unless it ran out.
    pub fn get(&self, now: Instant, node: &NodeId) -> Option<Heard> {
        let now_ms = self.ms(now);
        self.entry(node)
            .filter(|e| e.expires_ms > now_ms)
            .map(|e| self.view(e))
    }

    /// The entries that have not run out.
    pub fn iter(&self, now: Instant) -> impl Iterator<Item = (NodeId, Heard)> + '_ {
        let now_ms = self.ms(now);
        self.peers
            .iter()
            .filter(move |(_, e)| e.expires_ms > now_ms)
            .map(|(node, e)| (*node, self.view(e)))
    }

    /// The entries that have not run out, with the seconds each has left.
    pub fn remaining(&self, now: Instant) -> impl Iterator<Item = (NodeId, u32)> + '_ {
        let now_ms = self.ms(now);
        self.peers.iter().filter_map(move |(node, e)| {
            let left = e.expires_ms.checked_sub(now_ms).filter(|l| *l > 0)?;
            Some((*node, u32::try_from(left / 1000).unwrap_or(u32::MAX)))
        })
    }

    /// When the next entry runs out (maybe earlier: it is a hint for a timer).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.next_expiry.map(|ms| self.at(ms))
    }

    /// Drops what ran out; returns the nodes dropped.
    pub fn expire(&mut self, now: Instant) -> Vec<NodeId> {
        let now_ms = self.ms(now);
        if self.next_expiry.is_some_and(|e| e > now_ms) {
            return Vec::new();
        }
        let mut gone = Vec::new();
        let mut released = Vec::new();
        self.peers.retain(|(node, e)| {
            let keep = e.expires_ms > now_ms;
            if !keep {
                gone.push(*node);
                released.push(e.relay);
            }
            keep
        });
        for relay in released {
            self.release(relay);
        }
        self.next_expiry = self.peers.iter().map(|(_, e)| e.expires_ms).min();
        gone
    }

    /// How many nodes it holds (expired ones included until [`HeardPeers::expire`]).
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The heap bytes in use, roughly: the entries and the packed address lists (of the room reserved
    /// for entries, only what is in use: the rest is never written, so it costs no resident memory).
    pub fn heap_bytes(&self) -> usize {
        self.peers.len() * size_of::<(NodeId, Entry)>()
            + self.peers.iter().map(|(_, e)| e.addrs.len()).sum::<usize>()
            + self.relays.capacity() * size_of::<Option<(RelayUrl, usize)>>()
    }
}

impl Default for HeardPeers {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PEERS)
    }
}

/// Addresses packed: per address a tag (4 or 6), the IP and the port (big-endian).
fn pack(addrs: &BTreeSet<SocketAddr>) -> Box<[u8]> {
    let mut out = Vec::with_capacity(addrs.iter().map(|a| if a.is_ipv4() { 7 } else { 19 }).sum());
    for addr in addrs {
        match addr {
            SocketAddr::V4(v4) => {
                out.push(4);
                out.extend_from_slice(&v4.ip().octets());
            }
            SocketAddr::V6(v6) => {
                out.push(6);
                out.extend_from_slice(&v6.ip().octets());
            }
        }
        out.extend_from_slice(&addr.port().to_be_bytes());
    }
    out.into_boxed_slice()
}

fn unpack(mut bytes: &[u8]) -> BTreeSet<SocketAddr> {
    let mut addrs = BTreeSet::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        let len = if tag == 4 { 4 } else { 16 };
        let Some((ip, rest)) = rest.split_at_checked(len) else {
            break;
        };
        let Some((port, rest)) = rest.split_at_checked(2) else {
            break;
        };
        let port = u16::from_be_bytes([port[0], port[1]]);
        let addr = if let Ok(v4) = <[u8; 4]>::try_from(ip) {
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(v4), port))
        } else if let Ok(v6) = <[u8; 16]>::try_from(ip) {
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(v6), port, 0, 0))
        } else {
            break;
        };
        addrs.insert(addr);
        bytes = rest;
    }
    addrs
}

/// When to announce on one interface: [`BURST`] announcements [`BURST_GAP`] apart after a start or a
/// change, never two closer than that, and none after the burst.
#[derive(Debug, Clone, Default)]
pub struct AnnounceSchedule {
    /// Announcements left in the current burst.
    left: u32,
    last: Option<Instant>,
}

impl AnnounceSchedule {
    /// Nothing to announce yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// What we announce changed (or we started): a new burst.
    pub fn changed(&mut self) {
        self.left = BURST;
    }

    /// We stopped announcing (a goodbye went out).
    pub fn stopped(&mut self) {
        self.left = 0;
    }

    /// When the next announcement is due (`now` if at once), if any.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if self.left == 0 {
            return None;
        }
        Some(
            self.last
                .and_then(|last| last.checked_add(BURST_GAP))
                .map_or(now, |due| due.max(now)),
        )
    }

    /// Whether to announce at `now`; if so, counts it.
    pub fn poll_announce(&mut self, now: Instant) -> bool {
        let due = self.poll_timeout(now).is_some_and(|at| at <= now);
        if due {
            self.left -= 1;
            self.last = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests;
