//! The multicast DNS responder and querier of our service as one state machine, [`MdnsCore`].
//!
//! Fed `(now, input)`: the interfaces (with their prefixes), what we publish, received packets, lookups
//! of a node, timeouts. Returns [`Transmit`]s (a packet for one interface, to the group or unicast), the
//! next timeout and [`MdnsEvent`]s. What it does, by RFC 6762 section:
//!
//! - **Announcing** (§8.3): [`super::BURST`] times a second apart on an interface after a start, a change of
//!   what we publish or the interface's arrival; no probing, since names come from keys (another node
//!   claiming ours is a forgery, and renaming would make us unfindable). Unique records carry the
//!   cache-flush bit, so a changed address set replaces the old one everywhere.
//! - **Answering** (§6): questions about our names only. Answers to a question about our unique records
//!   go at once, answers with shared records (the service PTR) after 20-120 ms; a record set is
//!   multicast at most once a second per interface (later answers wait for the second to pass). A
//!   question with the QU bit is answered by unicast when the set was multicast within a quarter of its
//!   TTL (§5.4), else by multicast. Known answers suppress the PTR (§7.1). A query from a port other than
//!   the mDNS port is a legacy unicast query: answered at once by unicast, id and questions echoed, TTLs
//!   at most 10 s (§6.7). Goodbyes with TTL 0 on shutdown or withdrawal (§10.1).
//! - **Querying** (§5.2): the service browse 20-120 ms after start (or a new interface), then 1 s, 2 s,
//!   4 s, ... apart up to an hour, with our known answers; a lookup of one node asks its instance's SRV and
//!   TXT at once as a one-shot query from an ephemeral port (§5.1: answered at once by unicast to that
//!   port, so the answer reaches this process even when others on the host share port 5353, §15.1),
//!   then 1 s, 2 s, ... later from the mDNS port until its deadline. A lookup of a
//!   node heard more than [`super::wire::HOST_TTL`] ago verifies it: if it does not answer, it is
//!   forgotten (§10.4's "cache flush on failure indication").
//! - **Hearing**: responses from the mDNS port only (§11), from a source on one of the interfaces'
//!   prefixes (or IPv6 link-local); a node's TXT gives its relay and addresses (or, without addresses,
//!   its SRV port with its A/AAAA records), bounded by [`super::HeardPeers`]; a PTR naming a node we do
//!   not know makes us ask it (a bounded number of such lookups at a time). A goodbye forgets the node
//!   [`super::GOODBYE_GRACE`] later.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use iroh_base::{NodeAddr, NodeId, RelayUrl};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tracing::{debug, trace};

pub use super::types::{Config, Interface, Stats, Transmit};
use super::{
    AnnounceSchedule, HeardPeers, MdnsEvent, publishable,
    wire::{self, Asked, Asking, HOST_TTL, Message, OurRecords, PTR_TTL, PeerFacts, Sets, Ttl},
};

/// The IPv4 mDNS group.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
/// The IPv6 mDNS group (link-local scope).
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb);
/// The shortest gap between two multicasts of one record set on one interface (§6).
pub const MULTICAST_GAP: Duration = Duration::from_secs(1);
/// The random delay before answers with shared records (§6: 20-120 ms) and before the first browse.
pub const SHARED_DELAY_MS: (u64, u64) = (20, 120);
/// The longest gap between browse queries (§5.2: an hour).
pub const MAX_BROWSE_GAP: Duration = Duration::from_secs(3600);
/// The most lookups at once that a PTR of an unknown node can start (more are dropped).
pub const MAX_LOOKUPS: usize = 64;
/// How long a lookup started by a PTR alone lasts.
pub const PTR_LOOKUP_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug)]
struct IfaceState {
    iface: Interface,
    announce: AnnounceSchedule,
    /// Last multicast of each set: ptr, instance, host, enumerate.
    last_multicast: [Option<Instant>; 4],
    /// A multicast answer waiting for its delay or for the rate limit.
    pending: Option<(Instant, Sets)>,
}

#[derive(Debug)]
struct Lookup {
    next: Instant,
    sent: u32,
    until: Instant,
    /// Verifying a node heard long ago: forget it unless it answers.
    verify: bool,
    started: Instant,
}

#[derive(Debug)]
struct Browse {
    next: Option<Instant>,
    gap: Duration,
}

/// The responder and querier: see the [module docs](self).
#[derive(Debug)]
pub struct MdnsCore {
    node: NodeId,
    config: Config,
    rng: StdRng,
    ifaces: BTreeMap<u32, IfaceState>,
    /// What we publish (relay, publishable addresses).
    ours: Option<(Option<RelayUrl>, Vec<SocketAddr>)>,
    heard: HeardPeers,
    browse: Browse,
    lookups: HashMap<NodeId, Lookup>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MdnsEvent>,
    stats: Stats,
    /// After [`MdnsCore::shutdown`]: nothing more is announced, asked or answered.
    shut: bool,
}

fn set_index(sets: Sets) -> impl Iterator<Item = usize> {
    [sets.ptr, sets.instance, sets.host, sets.enumerate]
        .into_iter()
        .enumerate()
        .filter_map(|(i, on)| on.then_some(i))
}

fn set_of(index: usize) -> Sets {
    Sets {
        ptr: index == 0,
        instance: index == 1,
        host: index == 2,
        enumerate: index == 3,
    }
}

fn set_ttl(index: usize) -> u32 {
    if index == 1 || index == 2 {
        HOST_TTL
    } else {
        PTR_TTL
    }
}

impl MdnsCore {
    /// A core for our node `node`; `seed` drives the random delays (tests pass a fixed one).
    pub fn new(node: NodeId, config: Config, seed: u64) -> Self {
        let heard = HeardPeers::new(config.max_peers);
        Self {
            node,
            config,
            rng: StdRng::seed_from_u64(seed),
            ifaces: BTreeMap::new(),
            ours: None,
            heard,
            browse: Browse {
                next: None,
                gap: Duration::ZERO,
            },
            lookups: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            shut: false,
        }
    }

    /// Our node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// What was heard.
    pub fn heard(&self) -> &HeardPeers {
        &self.heard
    }

    /// What was sent so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The interfaces in use.
    pub fn interfaces(&self) -> impl Iterator<Item = &Interface> {
        self.ifaces.values().map(|s| &s.iface)
    }

    fn jitter(&mut self) -> Duration {
        Duration::from_millis(self.rng.gen_range(SHARED_DELAY_MS.0..=SHARED_DELAY_MS.1))
    }

    fn restart_browse(&mut self, now: Instant) {
        let at = now + self.jitter();
        self.browse.next = Some(self.browse.next.map_or(at, |next| next.min(at)));
        self.browse.gap = Duration::from_secs(1);
    }

    /// The interfaces to run on now. New ones (or ones whose addresses changed) get an announcement
    /// burst and a new browse; gone ones are forgotten (no goodbye can go out on them).
    pub fn set_interfaces(&mut self, now: Instant, ifaces: Vec<Interface>) {
        if self.shut {
            return;
        }
        let mut fresh = false;
        let mut next = BTreeMap::new();
        for iface in ifaces {
            let state = match self.ifaces.remove(&iface.index) {
                Some(mut old) if old.iface == iface => {
                    old.iface = iface;
                    old
                }
                old => {
                    fresh = true;
                    let mut announce = AnnounceSchedule::new();
                    if self.announcing() {
                        announce.changed();
                    }
                    IfaceState {
                        iface,
                        announce,
                        last_multicast: old.map_or([None; 4], |o| o.last_multicast),
                        pending: None,
                    }
                }
            };
            next.insert(state.iface.index, state);
        }
        self.ifaces = next;
        if fresh {
            self.restart_browse(now);
            // A lookup asks again at once, one-shot: the node may be on the new interface (one that
            // came up just after the lookup started must not cost a retry interval).
            for lookup in self.lookups.values_mut() {
                lookup.next = now;
                lookup.sent = 0;
            }
        }
        if self.ifaces.is_empty() {
            self.browse.next = None;
        }
    }

    fn announcing(&self) -> bool {
        self.config.advertise && self.ours.is_some()
    }

    /// What we publish: our relay and direct addresses (only the [`publishable`] ones are used). With
    /// neither left, our records are withdrawn (goodbyes).
    pub fn publish(&mut self, relay: Option<RelayUrl>, addrs: &[SocketAddr]) {
        if self.shut {
            return;
        }
        let addrs = publishable(addrs.iter().copied());
        let next = (!addrs.is_empty() || relay.is_some()).then_some((relay, addrs));
        if next == self.ours {
            return;
        }
        if next.is_none() {
            self.goodbyes();
        }
        self.ours = next;
        let announcing = self.announcing();
        for state in self.ifaces.values_mut() {
            if announcing {
                state.announce.changed();
            } else {
                state.announce.stopped();
                state.pending = None;
            }
        }
    }

    /// Our records as announced on `iface`: the A/AAAA records are our addresses on its prefixes (all of
    /// them if none is).
    fn records(&self, iface: &Interface) -> Option<OurRecords> {
        let (relay, addrs) = self.ours.as_ref()?;
        let mut ips: Vec<IpAddr> = addrs
            .iter()
            .map(SocketAddr::ip)
            .filter(|ip| iface.on_link(*ip))
            .collect();
        if ips.is_empty() {
            ips = addrs.iter().map(SocketAddr::ip).collect();
        }
        ips.sort();
        ips.dedup();
        Some(OurRecords {
            node: self.node,
            relay: relay.clone(),
            addrs: addrs.clone(),
            ips,
        })
    }

    fn group(&self, v6: bool) -> SocketAddr {
        if v6 {
            SocketAddr::new(GROUP_V6.into(), self.config.port)
        } else {
            SocketAddr::new(GROUP_V4.into(), self.config.port)
        }
    }

    /// Queues `payload` to the group on every family `iface` can carry.
    fn multicast(&mut self, index: u32, payload: &[u8]) -> u64 {
        self.multicast_from(index, payload, false)
    }

    fn multicast_from(&mut self, index: u32, payload: &[u8], oneshot: bool) -> u64 {
        let Some(state) = self.ifaces.get(&index) else {
            return 0;
        };
        let mut dsts = Vec::new();
        if state.iface.ipv4().is_some() {
            dsts.push(self.group(false));
        }
        if state.iface.has_ipv6() {
            dsts.push(self.group(true));
        }
        let n = dsts.len() as u64;
        for dst in dsts {
            self.transmits.push_back(Transmit {
                iface: index,
                dst,
                payload: payload.to_vec(),
                oneshot,
            });
        }
        n
    }

    /// Goodbyes for all our records on every interface.
    fn goodbyes(&mut self) {
        if !self.announcing() {
            return;
        }
        let sets = Sets {
            enumerate: false,
            ..Sets::ALL
        };
        let indexes: Vec<u32> = self.ifaces.keys().copied().collect();
        for index in indexes {
            let Some(records) = self.records(&self.ifaces[&index].iface) else {
                continue;
            };
            match wire::build_response(&records, sets, Ttl::Goodbye, None) {
                Ok(payload) => {
                    self.multicast(index, &payload);
                }
                Err(error) => debug!(%error, "cannot build goodbyes"),
            }
        }
    }

    /// We stop: goodbyes for our records go out (poll them), and nothing more is announced.
    pub fn shutdown(&mut self) {
        self.goodbyes();
        self.ours = None;
        for state in self.ifaces.values_mut() {
            state.announce.stopped();
            state.pending = None;
        }
        self.browse.next = None;
        self.lookups.clear();
        self.shut = true;
    }

    /// Looks `node` up for up to `wait`: asks the network unless it is known and was heard within
    /// [`HOST_TTL`]; if known but older, asks again and forgets it when it does not answer. Returns
    /// whether a query was started.
    pub fn lookup(&mut self, now: Instant, node: NodeId, wait: Duration) -> bool {
        if node == self.node || self.ifaces.is_empty() || self.shut {
            return false;
        }
        let known = self.heard.get(now, &node);
        if let Some(heard) = &known
            && now.saturating_duration_since(heard.heard_at) < Duration::from_secs(HOST_TTL.into())
        {
            return false;
        }
        let until = now.checked_add(wait).unwrap_or(now);
        let lookup = self.lookups.entry(node).or_insert(Lookup {
            next: now,
            sent: 0,
            until,
            verify: known.is_some(),
            started: now,
        });
        lookup.until = lookup.until.max(until);
        true
    }

    /// Whether a lookup of `node` is running.
    pub fn looking_up(&self, node: &NodeId) -> bool {
        self.lookups.contains_key(node)
    }

    /// A packet from `src` (its IPv6 scope id names the interface for link-local sources).
    pub fn handle_packet(&mut self, now: Instant, src: SocketAddr, bytes: &[u8]) {
        let Some(index) = self.iface_of(src) else {
            self.stats.off_link += 1;
            trace!(%src, "ignoring a packet from off the link");
            return;
        };
        let message = match wire::parse(bytes) {
            Ok(message) => message,
            Err(error) => {
                self.stats.malformed += 1;
                trace!(%src, %error, "ignoring a packet");
                return;
            }
        };
        match message {
            Message::Query(query) => self.on_query(now, index, src, &query),
            Message::Response(peers) => {
                if src.port() != self.config.port {
                    self.stats.off_link += 1;
                    return;
                }
                for (node, facts) in peers {
                    self.on_facts(now, node, facts);
                }
            }
        }
    }

    fn iface_of(&self, src: SocketAddr) -> Option<u32> {
        if let SocketAddr::V6(v6) = src
            && v6.ip().is_unicast_link_local()
        {
            return self
                .ifaces
                .contains_key(&v6.scope_id())
                .then_some(v6.scope_id());
        }
        let ip = match src.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.ifaces
            .values()
            .find(|s| s.iface.on_link(ip))
            .map(|s| s.iface.index)
    }

    fn on_query(&mut self, now: Instant, index: u32, src: SocketAddr, query: &wire::Query) {
        if !self.announcing() {
            return;
        }
        let me = self.node;
        let mut asked = Sets::default();
        let mut unicast = Sets::default();
        let mut echoed: Vec<Asking> = Vec::new();
        for q in &query.questions {
            let set = match q.asked {
                Asked::Browse => set_of(0),
                Asked::Enumerate => set_of(3),
                Asked::Instance(n) if n == me => set_of(1),
                Asked::Host(n) if n == me => set_of(2),
                _ => continue,
            };
            asked = asked.union(set);
            if q.unicast {
                unicast = unicast.union(set);
            }
            echoed.push(*q);
        }
        if query
            .known
            .iter()
            .any(|(node, ttl)| *node == me && *ttl >= PTR_TTL / 2)
        {
            asked.ptr = false;
            unicast.ptr = false;
        }
        if !asked.any() {
            return;
        }
        let Some(records) = self.ifaces.get(&index).and_then(|s| self.records(&s.iface)) else {
            return;
        };
        if src.port() != self.config.port {
            // Legacy unicast (§6.7).
            let answer =
                wire::build_response(&records, asked, Ttl::Legacy, Some((query.id, &echoed)));
            self.unicast(index, src, answer);
            return;
        }
        // QU: unicast what was multicast recently enough; multicast the rest.
        let state = &self.ifaces[&index];
        let mut direct = Sets::default();
        for i in set_index(unicast) {
            let quarter = Duration::from_secs(u64::from(set_ttl(i) / 4));
            if state.last_multicast[i].is_some_and(|t| now.saturating_duration_since(t) < quarter) {
                direct = direct.union(set_of(i));
            }
        }
        if direct.any() {
            let answer = wire::build_response(&records, direct, Ttl::Normal, None);
            self.unicast(index, src, answer);
        }
        let rest = asked.minus(direct);
        if rest.any() {
            let delay = if rest.shared() {
                self.jitter()
            } else {
                Duration::ZERO
            };
            let state = self.ifaces.get_mut(&index).expect("checked");
            let due = now + delay;
            state.pending = Some(match state.pending {
                Some((at, sets)) => (at.min(due), sets.union(rest)),
                None => (due, rest),
            });
        }
    }

    fn unicast(&mut self, index: u32, dst: SocketAddr, answer: Result<Vec<u8>, wire::WireError>) {
        match answer {
            Ok(payload) => {
                self.stats.unicast_answers += 1;
                self.transmits.push_back(Transmit {
                    iface: index,
                    dst,
                    payload,
                    oneshot: false,
                });
            }
            Err(error) => debug!(%error, "cannot build an answer"),
        }
    }

    fn on_facts(&mut self, now: Instant, node: NodeId, facts: PeerFacts) {
        if node == self.node {
            return;
        }
        let goodbye = facts.ptr_ttl == Some(0) || facts.txt.as_ref().is_some_and(|(t, _)| *t == 0);
        if goodbye {
            if self.heard.get(now, &node).is_some() {
                debug!(node = %node.fmt_short(), "local peer says goodbye");
                self.heard.goodbye(now, &node);
            }
            return;
        }
        match facts.txt {
            Some((ttl, Ok((relay, addrs)))) => {
                // Only what a peer on the link can use (a hostile TXT may name anything).
                let mut addrs: std::collections::BTreeSet<SocketAddr> =
                    addrs.into_iter().filter(super::is_publishable).collect();
                if addrs.is_empty()
                    && let Some((_, port)) = facts.srv
                {
                    addrs = publishable(facts.ips.iter().map(|(_, ip)| SocketAddr::new(*ip, port)))
                        .into_iter()
                        .collect();
                }
                if addrs.is_empty() && relay.is_none() {
                    return;
                }
                self.lookups.remove(&node);
                // Answers to our one-shot queries carry TTLs capped for legacy resolvers (§6.7),
                // not the records' own: keep such a peer as long as a host record.
                let ttl = if ttl <= wire::LEGACY_TTL {
                    HOST_TTL
                } else {
                    ttl
                };
                let ttl = Duration::from_secs(ttl.into());
                let changed = self.heard.heard(now, node, relay.clone(), &addrs, ttl);
                // Room made for it (the table was full): those are gone for subscribers too.
                for dropped in self.heard.take_dropped() {
                    self.events.push_back(MdnsEvent::Expired(dropped));
                }
                if changed {
                    let addr = NodeAddr::from_parts(node, relay, addrs);
                    debug!(node = %node.fmt_short(), ?addr, "local peer heard");
                    self.events.push_back(MdnsEvent::Discovered(addr));
                }
            }
            Some((_, Err(error))) => {
                debug!(node = %node.fmt_short(), %error, "ignoring a malformed announcement");
            }
            None => {
                // A PTR (or SRV/addresses) without the TXT: ask for the rest if it is new to us.
                if facts.ptr_ttl.is_some()
                    && self.heard.get(now, &node).is_none()
                    && !self.lookups.contains_key(&node)
                    && self.lookups.len() < MAX_LOOKUPS
                {
                    self.lookup(now, node, PTR_LOOKUP_WAIT);
                }
            }
        }
    }

    /// The next time [`MdnsCore::handle_timeout`] has something to do.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let ifaces = self.ifaces.values().flat_map(|s| {
            [s.announce.poll_timeout(now), s.pending.map(|(at, _)| at)]
                .into_iter()
                .flatten()
        });
        let lookups = self.lookups.values().map(|l| l.next.min(l.until));
        ifaces
            .chain(lookups)
            .chain(self.browse.next)
            .chain(self.heard.next_expiry())
            .min()
    }

    /// Does what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.announce_due(now);
        self.answer_due(now);
        self.browse_due(now);
        self.lookups_due(now);
        for node in self.heard.expire(now) {
            debug!(node = %node.fmt_short(), "local peer gone");
            self.events.push_back(MdnsEvent::Expired(node));
        }
    }

    fn announce_due(&mut self, now: Instant) {
        let indexes: Vec<u32> = self.ifaces.keys().copied().collect();
        for index in indexes {
            let state = self.ifaces.get_mut(&index).expect("listed");
            if !state.announce.poll_announce(now) {
                continue;
            }
            let Some(records) = self.records(&self.ifaces[&index].iface) else {
                continue;
            };
            match wire::build_response(&records, Sets::ALL, Ttl::Normal, None) {
                Ok(payload) => {
                    let sent = self.multicast(index, &payload);
                    self.stats.announcements += sent;
                    let state = self.ifaces.get_mut(&index).expect("listed");
                    state.last_multicast = [Some(now); 4];
                }
                Err(error) => debug!(%error, "cannot build an announcement"),
            }
        }
    }

    fn answer_due(&mut self, now: Instant) {
        let indexes: Vec<u32> = self.ifaces.keys().copied().collect();
        for index in indexes {
            let state = self.ifaces.get_mut(&index).expect("listed");
            let Some((at, sets)) = state.pending else {
                continue;
            };
            if at > now {
                continue;
            }
            // Sets multicast less than a second ago wait for the second to pass.
            let mut ready = Sets::default();
            let mut later: Option<Instant> = None;
            for i in set_index(sets) {
                match state.last_multicast[i].map(|t| t + MULTICAST_GAP) {
                    Some(free) if free > now => {
                        later = Some(later.map_or(free, |l| l.min(free)));
                    }
                    _ => ready = ready.union(set_of(i)),
                }
            }
            let waiting = sets.minus(ready);
            state.pending = later.map(|at| (at, waiting));
            if !ready.any() {
                continue;
            }
            for i in set_index(ready) {
                state.last_multicast[i] = Some(now);
            }
            let Some(records) = self.records(&self.ifaces[&index].iface) else {
                continue;
            };
            match wire::build_response(&records, ready, Ttl::Normal, None) {
                Ok(payload) => {
                    let sent = self.multicast(index, &payload);
                    self.stats.multicast_answers += sent;
                }
                Err(error) => debug!(%error, "cannot build an answer"),
            }
        }
    }

    fn browse_due(&mut self, now: Instant) {
        let Some(at) = self.browse.next else { return };
        if at > now {
            return;
        }
        self.browse.next = Some(now + self.browse.gap);
        self.browse.gap = (self.browse.gap * 2).min(MAX_BROWSE_GAP);
        let mut known: Vec<(NodeId, u32)> = Vec::new();
        if self.announcing() {
            known.push((self.node, PTR_TTL));
        }
        known.extend(
            self.heard
                .remaining(now)
                .filter(|(_, left)| *left > PTR_TTL / 2),
        );
        match wire::build_query(&[Asked::Browse], false, &known) {
            Ok(payload) => self.query_all(&payload, false),
            Err(error) => debug!(%error, "cannot build a query"),
        }
    }

    fn query_all(&mut self, payload: &[u8], oneshot: bool) {
        let indexes: Vec<u32> = self.ifaces.keys().copied().collect();
        for index in indexes {
            let sent = self.multicast_from(index, payload, oneshot);
            self.stats.queries += sent;
        }
    }

    fn lookups_due(&mut self, now: Instant) {
        let mut ask = Vec::new();
        let mut failed = Vec::new();
        for (node, lookup) in &mut self.lookups {
            if lookup.until <= now {
                failed.push((*node, lookup.verify, lookup.started));
                continue;
            }
            if lookup.next <= now {
                ask.push((*node, lookup.sent == 0));
                lookup.sent += 1;
                let gap = Duration::from_secs(1 << lookup.sent.min(10).saturating_sub(1));
                lookup.next = now + gap;
            }
        }
        for (node, verify, started) in failed {
            self.lookups.remove(&node);
            let stale = self
                .heard
                .get(now, &node)
                .is_some_and(|heard| heard.heard_at <= started);
            if verify && stale {
                debug!(node = %node.fmt_short(), "local peer did not answer when asked again");
                self.heard.gone(&node);
                self.events.push_back(MdnsEvent::Expired(node));
            }
        }
        // First queries go one-shot (answered at once, by unicast to this process); retries from the
        // mDNS port (answered by multicast, which also refreshes everyone else's caches).
        for first in [true, false] {
            let nodes: Vec<Asked> = ask
                .iter()
                .filter(|(_, f)| *f == first)
                .map(|(n, _)| Asked::Instance(*n))
                .collect();
            for chunk in nodes.chunks(8) {
                match wire::build_query(chunk, false, &[]) {
                    Ok(payload) => self.query_all(&payload, first),
                    Err(error) => debug!(%error, "cannot build a query"),
                }
            }
        }
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<MdnsEvent> {
        self.events.pop_front()
    }
}
