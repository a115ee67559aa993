//! Path selection as a sans-IO core: for every remote node, the known direct paths, the relay, trust, when
//! to ping, when to send call-me-maybe, and where each packet goes.
//!
//! [`Paths`] never reads the clock, draws no randomness of its own choosing (it is seeded) and touches no
//! socket. Its driver (the magic socket's actor) feeds it:
//!
//! - what it learns: [`Paths::add_node_addr`], [`Paths::set_own_addrs`], received disco messages
//!   ([`Paths::handle_ping`], [`Paths::handle_pong`], [`Paths::handle_call_me_maybe`]), traffic
//!   ([`Paths::note_activity`], [`Paths::handle_udp_recv`]);
//! - the passing of time: [`Paths::handle_timeout`] at [`Paths::poll_timeout`].
//!
//! After every input the driver drains [`Paths::poll_transmit`] (disco messages to seal and send) and
//! [`Paths::poll_event`] (send plans to publish for the socket, observed addresses) until both return `None`,
//! then re-arms its one timer at [`Paths::poll_timeout`]. `poll_timeout(now)` returns the next instant
//! strictly after `now` at which something changes; when the timer armed for it fires, the driver calls
//! [`Paths::handle_timeout`] unconditionally (asking `poll_timeout` again at that instant would already
//! look past it).
//!
//! Holepunching: while a node is active and has no trusted direct path, the core runs holepunch rounds: it
//! sends call-me-maybe through the relay and pings every candidate address again and again for a second
//! (every 25 ms for half a second, then every 100 ms), as ICE paces its checks, because a NAT that filters
//! by address drops our first pings until the peer's pings have opened it. The other side answers a
//! call-me-maybe with a round of its own (pings *and* a call-me-maybe back), so both sides keep probing
//! after both filters are open. Rounds repeat after 5 s, backing off to a minute for a node that never
//! goes direct; a network change or a new candidate starts the backoff over. The first pong makes a path
//! trusted and the best one; a lower-latency path replaces it (IPv6 preferred when close). A trusted path
//! carries traffic alone while traffic or pongs show it alive (see the `node` module); when it goes quiet
//! the plan falls back to relay plus direct, then relay.
//!
//! Port prediction: between a node behind a hard NAT (a new random port for every destination: "symmetric")
//! and one behind an easy NAT (one port for every destination) that filters by port, no round can work:
//! neither knows a port of the other that lets it in. The driver tells the core what the net report found
//! ([`Paths::set_nat`]) and call-me-maybe messages carry it ([`crate::disco::NatHint`]). When a round has
//! found nothing for [`PathConfig::prediction_after`], the hard side asks its driver for
//! [`PREDICTION_SOCKETS`] extra sockets that each ping the easy side's reflexive address
//! ([`PathEvent::OpenPredictionSockets`]), each opening a mapping at a random port of the hard NAT, and then
//! sends `Predict` through the relay; the easy side probes random ports of the hard side's IP, [`SPRAY_RATE`]
//! per second for at most [`SPRAY_DURATION`] ([`SPRAY_MAX`] probes), and the first probe answered from a
//! probed port is a trusted path. With 256 mappings among 64,512 ports, 1,500 probes find one 99.7% of the
//! time, after about 175 at the median. Probes are sealed pings, sent only to an IP that is already one of
//! the node's candidates and public, for a node active through the relay that said it is hard, one spray
//! per node per [`SPRAY_COOLDOWN`], at most [`MAX_SPRAYS`] at once and [`SPRAY_BUDGET`] a minute. Two hard NATs stay relayed: with both sides' ports random, a hit
//! would take hundreds of sockets on both.

mod node;
mod types;

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use iroh_base::{NodeAddr, NodeId, RelayUrl};
use rand::{SeedableRng, rngs::StdRng};

pub use self::node::predict::{
    MAX_SPRAYS, PREDICTION_INTERVAL, PREDICTION_SOCKET_LIFETIME, PREDICTION_SOCKETS, SPRAY_BUDGET,
    SPRAY_COOLDOWN, SPRAY_DURATION, SPRAY_MAX, SPRAY_RATE, SPRAY_TICK,
};
use self::node::{Ctx, NodeState, predict::OwnNat};
pub use self::types::{
    ConnectionType, DiscoTransmit, NodeInfo, PathEvent, PathInfo, SendAddr, SendPlan, Source, TxId,
};

/// Timing and limits of path selection. The defaults suit the internet; tests shorten or vary them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PathConfig {
    /// How long a pong keeps a path trusted.
    pub trust_duration: Duration,
    /// How often an active node's best path is pinged, which also keeps NAT mappings open (well under 30 s).
    pub heartbeat_interval: Duration,
    /// How long after a holepunch round the next one starts while an active node has no trusted path;
    /// doubled after each round that found nothing, up to [`PathConfig::max_holepunch_interval`].
    pub holepunch_interval: Duration,
    /// The longest wait between holepunch rounds for a node that never goes direct (the backoff starts over
    /// on a network change or a new candidate).
    pub max_holepunch_interval: Duration,
    /// How long a holepunch round probes its candidates. A NAT that filters by address drops our first
    /// pings until the peer's own pings have opened it, so a round keeps probing rather than pinging once.
    pub holepunch_round: Duration,
    /// During the first [`PathConfig::fast_probe_for`] of a round every candidate is pinged this often.
    pub fast_probe_interval: Duration,
    /// How long a round probes at [`PathConfig::fast_probe_interval`]; the rest of it at
    /// [`PathConfig::slow_probe_interval`].
    pub fast_probe_for: Duration,
    /// The probe interval for the rest of a round.
    pub slow_probe_interval: Duration,
    /// Behind a hard NAT, towards a peer behind an easy one, a round that has found nothing for this
    /// long starts port prediction (see the `predict` section above). Ordinary holepunching succeeds
    /// within a few round trips when it can; between these two NATs it cannot.
    pub prediction_after: Duration,
    /// How often all candidates are pinged while a trusted path exists, to find a better one.
    pub upgrade_interval: Duration,
    /// How long a ping waits for its pong.
    pub ping_timeout: Duration,
    /// The least time between two pings to one address.
    pub min_ping_interval: Duration,
    /// A ping unanswered for this long, at least, makes a trusted path suspect (see
    /// [`PathConfig::suspect_after`]).
    pub min_suspect_timeout: Duration,
    /// After trust ends, how long direct sending continues alongside the relay.
    pub stale_grace: Duration,
    /// While we send over a trusted path, this long without receiving anything on it (at least; see
    /// [`PathConfig::silence_after`]) starts probing it.
    pub min_silence: Duration,
    /// The least time between two probes of a path whose last ping is unanswered (see
    /// [`PathConfig::probe_interval`]).
    pub min_probe_interval: Duration,
    /// A node with no traffic for this long is idle: no heartbeats, no holepunching.
    pub session_active_timeout: Duration,
    /// Candidates nobody mentioned and that did not answer for this long are forgotten.
    pub candidate_ttl: Duration,
    /// The most candidate addresses kept per node.
    pub max_paths: usize,
}

impl Default for PathConfig {
    fn default() -> Self {
        Self {
            trust_duration: Duration::from_millis(6500),
            heartbeat_interval: Duration::from_secs(2),
            holepunch_interval: Duration::from_secs(5),
            max_holepunch_interval: Duration::from_secs(60),
            holepunch_round: Duration::from_secs(1),
            fast_probe_interval: Duration::from_millis(25),
            fast_probe_for: Duration::from_millis(500),
            slow_probe_interval: Duration::from_millis(100),
            prediction_after: Duration::from_millis(300),
            upgrade_interval: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(5),
            min_ping_interval: Duration::from_millis(500),
            min_suspect_timeout: Duration::from_millis(400),
            stale_grace: Duration::from_secs(15),
            min_silence: Duration::from_millis(200),
            min_probe_interval: Duration::from_millis(100),
            session_active_timeout: Duration::from_secs(45),
            candidate_ttl: Duration::from_secs(600),
            max_paths: 32,
        }
    }
}

impl PathConfig {
    /// How long a ping on a trusted path with this latency may go unanswered before the path is suspect:
    /// three round trips, at least [`PathConfig::min_suspect_timeout`].
    pub fn suspect_after(&self, latency: Duration) -> Duration {
        (latency * 3).max(self.min_suspect_timeout)
    }

    /// How long a trusted path with this round trip may stay silent (nothing received on it) while we send
    /// on it before it is probed: two round trips (an acknowledgement takes one, plus the peer's ack
    /// delay), at least [`PathConfig::min_silence`].
    pub fn silence_after(&self, latency: Duration) -> Duration {
        (latency * 2).max(self.min_silence)
    }

    /// How often an unanswered trusted path is pinged again until it answers or turns suspect: a little
    /// more than a round trip, at least [`PathConfig::min_probe_interval`]. Several probes fit in the
    /// suspect timeout, so one lost ping or pong does not make a working path suspect.
    pub fn probe_interval(&self, latency: Duration) -> Duration {
        (latency + latency / 4).max(self.min_probe_interval)
    }

    /// Whether a path with `latency` should replace the current best path with `current` latency.
    ///
    /// Within one address family the newcomer must be clearly faster: by a tenth and by at least
    /// [`MIN_LATENCY_GAIN`], so that jitter (which on a LAN or loopback is as large as the latency itself)
    /// does not flap between paths. IPv6 is preferred when close: an IPv6 path within a tenth, or within
    /// [`MIN_LATENCY_GAIN`], of an IPv4 one replaces it, and an IPv4 path must be a fifth faster and
    /// [`MIN_LATENCY_GAIN`] faster to replace an IPv6 one. No two paths can each replace the other.
    pub fn is_better(
        &self,
        addr: SocketAddr,
        latency: Duration,
        current_addr: SocketAddr,
        current: Duration,
    ) -> bool {
        let clearly_faster = |ratio_num: u128, ratio_den: u128| {
            latency.as_nanos() * ratio_den < current.as_nanos() * ratio_num
                && latency + MIN_LATENCY_GAIN < current
        };
        match (addr.is_ipv6(), current_addr.is_ipv6()) {
            (true, false) => {
                latency.as_nanos() * 10 < current.as_nanos() * 11
                    || latency < current + MIN_LATENCY_GAIN
            }
            (false, true) => clearly_faster(8, 10),
            _ => clearly_faster(9, 10),
        }
    }
}

/// The least latency improvement that makes a path replace the best one (see [`PathConfig::is_better`]).
pub const MIN_LATENCY_GAIN: Duration = Duration::from_millis(1);

/// The path tables of all remote nodes.
#[derive(Debug)]
pub struct Paths {
    config: PathConfig,
    nodes: HashMap<NodeId, NodeState>,
    by_addr: HashMap<SocketAddr, NodeId>,
    own_addrs: Vec<SocketAddr>,
    nat: OwnNat,
    rng: StdRng,
    transmits: VecDeque<DiscoTransmit>,
    events: VecDeque<PathEvent>,
    scratch: Vec<DiscoTransmit>,
    scratch_events: Vec<PathEvent>,
    /// When the sprays of the last minute started (at most [`SPRAY_BUDGET`]).
    spray_starts: VecDeque<Instant>,
}

impl Paths {
    /// An empty table. `seed` seeds the transaction ids of pings (use a random seed outside tests).
    pub fn new(config: PathConfig, seed: u64) -> Self {
        Self {
            config,
            nodes: HashMap::new(),
            by_addr: HashMap::new(),
            own_addrs: Vec::new(),
            nat: OwnNat::default(),
            rng: StdRng::seed_from_u64(seed),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            scratch: Vec::new(),
            scratch_events: Vec::new(),
            spray_starts: VecDeque::new(),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &PathConfig {
        &self.config
    }

    /// Learns a node's relay and direct addresses, as given by the application or discovery.
    pub fn add_node_addr(&mut self, now: Instant, addr: &NodeAddr, source: Source) {
        let node = self
            .nodes
            .entry(addr.node_id)
            .or_insert_with(|| NodeState::new(addr.node_id));
        if let Some(url) = &addr.relay_url {
            node.set_relay_url(url.clone(), source);
        }
        let mut new_addrs = Vec::new();
        for direct in &addr.direct_addresses {
            if node.add_candidate(now, *direct, source, &self.config) {
                new_addrs.push(*direct);
            }
        }
        for direct in new_addrs {
            self.by_addr.insert(direct, addr.node_id);
        }
        self.finish(now, addr.node_id);
    }

    /// Sets our own candidate addresses (local interfaces and STUN-learned public ones), sent in
    /// call-me-maybe messages.
    ///
    /// When they change, every active node without a trusted direct path gets a holepunch round at once:
    /// typically our public address was just learned, and a node behind a filtering NAT can only reach us
    /// once we have told it that address and it has pinged it.
    pub fn set_own_addrs(&mut self, now: Instant, addrs: Vec<SocketAddr>) {
        if addrs == self.own_addrs {
            return;
        }
        self.own_addrs = addrs;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for node in ids {
            self.with_node(node, |state, cx| state.holepunch_now(now, cx));
            self.finish(now, node);
        }
    }

    /// What the net report found about our NAT: whether our IPv4 mapping varies by destination (`None`:
    /// not measured) and our public IPv4 address. Call-me-maybe messages say so from now on, and port
    /// prediction uses it: behind a hard NAT we ask easy peers to spray; behind an easy one we spray for
    /// hard peers that ask.
    pub fn set_nat(&mut self, mapping_varies: Option<bool>, public_v4: Option<SocketAddr>) {
        self.nat = OwnNat {
            mapping_varies,
            public_v4: public_v4.filter(SocketAddr::is_ipv4),
        };
    }

    /// Port prediction, hard side: the driver opened `opened` of the sockets an
    /// [`PathEvent::OpenPredictionSockets`] asked for and pinged from each. Unless none opened, `node` is
    /// told through its relay to probe our ports.
    pub fn prediction_sockets_ready(&mut self, now: Instant, node: NodeId, opened: usize) {
        if !self.nodes.contains_key(&node) {
            return;
        }
        self.with_node(node, |state, cx| state.prediction_sockets_ready(opened, cx));
        self.finish(now, node);
    }

    /// Port prediction, easy side: an authenticated `Predict` from `node` through the relay: our ports
    /// are open towards you, probe `ip`. Sprays when it is sound (see the `predict` module's rules), at
    /// most [`MAX_SPRAYS`] nodes at a time and [`SPRAY_BUDGET`] sprays a minute; otherwise ignored.
    pub fn handle_predict(&mut self, now: Instant, node: NodeId, ip: std::net::IpAddr) {
        while self
            .spray_starts
            .front()
            .is_some_and(|at| now >= *at + Duration::from_secs(60))
        {
            self.spray_starts.pop_front();
        }
        let running = self.nodes.values().filter(|n| n.spraying()).count();
        if running >= MAX_SPRAYS
            || self.spray_starts.len() >= SPRAY_BUDGET
            || !self.nodes.contains_key(&node)
        {
            return;
        }
        let mut started = false;
        self.with_node(node, |state, cx| {
            started = state.handle_predict(now, ip.to_canonical(), cx);
        });
        if started {
            self.spray_starts.push_back(now);
        }
        self.finish(now, node);
    }

    /// The network changed (interfaces or addresses came or went) and `own_addrs` are our addresses now
    /// (as [`Paths::set_own_addrs`] takes them, but without its holepunching: this does its own). Any path
    /// may be dead now, and new ones may work. Every active node gets a holepunch round at once, trusted
    /// path or not: its candidates are pinged (a best path that no longer answers becomes suspect within
    /// its suspect timeout, and traffic falls back to the relay) and it is sent our addresses. Pongs to
    /// pings sent before the change no longer count. Idle nodes are left alone until they are active
    /// again.
    pub fn network_changed(&mut self, now: Instant, own_addrs: Vec<SocketAddr>) {
        self.own_addrs = own_addrs;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for node in ids {
            self.with_node(node, |state, cx| state.network_changed(now, cx));
            self.finish(now, node);
        }
    }

    /// Notes that traffic for `node` is being sent or received, which keeps its session active and starts
    /// holepunching when it has no trusted direct path.
    pub fn note_activity(&mut self, now: Instant, node: NodeId) {
        self.with_node(node, |state, cx| state.note_activity(now, cx));
        self.finish(now, node);
    }

    /// Authenticated traffic (QUIC the socket delivered, not only disco) arrived from `node` over `addr` at
    /// `at`: the path is alive then. A trusted path stays trusted while traffic arrives, whatever happens to
    /// single pings and pongs; a path that never answered a ping is not made trusted by this.
    pub fn note_received(&mut self, now: Instant, node: NodeId, addr: SocketAddr, at: Instant) {
        let Some(state) = self.nodes.get_mut(&node) else {
            return;
        };
        if state.note_received(addr, at) {
            self.finish(now, node);
        }
    }

    /// We sent QUIC to `node` over its direct path, last at `at`. If nothing has come back over that path
    /// for [`PathConfig::silence_after`] since, it is probed at once (a path that died shows no other way
    /// while we keep sending): several pings, one per [`PathConfig::probe_interval`], and if none is
    /// answered (and no traffic arrives) within the suspect timeout the relay takes over.
    pub fn note_sent(&mut self, now: Instant, node: NodeId, at: Instant) {
        if !self.nodes.contains_key(&node) {
            return;
        }
        self.with_node(node, |state, cx| state.note_sent(now, at, cx));
        self.finish(now, node);
    }

    /// The node a UDP source address belongs to, noting the traffic as activity.
    pub fn handle_udp_recv(&mut self, now: Instant, from: SocketAddr) -> Option<NodeId> {
        let node = *self.by_addr.get(&from)?;
        self.note_activity(now, node);
        Some(node)
    }

    /// The node a UDP address belongs to, if any, without side effects.
    pub fn node_for_addr(&self, addr: &SocketAddr) -> Option<NodeId> {
        self.by_addr.get(addr).copied()
    }

    /// Handles an authenticated ping from `node` that arrived over `from`.
    pub fn handle_ping(&mut self, now: Instant, node: NodeId, from: &SendAddr, tx_id: TxId) {
        self.with_node(node, |state, cx| state.handle_ping(now, from, tx_id, cx));
        if let SendAddr::Udp(addr) = *from {
            // The latest authenticated sender from an address owns it.
            self.by_addr.insert(addr, node);
        }
        self.finish(now, node);
    }

    /// Handles an authenticated pong from `node` that arrived over `from`, reporting `observed` as the
    /// address it saw our ping come from.
    pub fn handle_pong(
        &mut self,
        now: Instant,
        node: NodeId,
        from: &SendAddr,
        tx_id: TxId,
        observed: Option<SocketAddr>,
    ) {
        let Some(state) = self.nodes.get_mut(&node) else {
            return;
        };
        if state.handle_pong(now, from, tx_id, &self.config).is_none() {
            // Perhaps the answer to a probe of a spray.
            let mut hit = false;
            self.with_node(node, |state, cx| {
                hit = state.handle_spray_pong(now, from, tx_id, cx).is_some();
            });
            if !hit {
                self.scratch.clear();
                self.scratch_events.clear();
                return;
            }
        }
        if let SendAddr::Udp(addr) = *from {
            self.by_addr.insert(addr, node);
        }
        if let Some(addr) = observed {
            self.events
                .push_back(PathEvent::ObservedOwnAddr { node, addr });
        }
        self.finish(now, node);
    }

    /// Handles an authenticated call-me-maybe from `node`, received through `relay`, with what it says
    /// about its NAT.
    pub fn handle_call_me_maybe(
        &mut self,
        now: Instant,
        node: NodeId,
        relay: &RelayUrl,
        addrs: &[SocketAddr],
        nat: crate::disco::NatHint,
    ) {
        self.with_node(node, |state, cx| {
            state.handle_call_me_maybe(now, relay, addrs, nat, cx);
        });
        for addr in addrs {
            self.by_addr.entry(*addr).or_insert(node);
        }
        self.finish(now, node);
    }

    /// Does what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for node in ids {
            self.with_node(node, |state, cx| state.maintain(now, cx));
            self.finish(now, node);
        }
    }

    /// When [`Paths::handle_timeout`] should next be called.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        self.nodes
            .values()
            .filter_map(|node| node.next_timeout(now, &self.config))
            .min()
    }

    /// The next disco message to send.
    pub fn poll_transmit(&mut self) -> Option<DiscoTransmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PathEvent> {
        self.events.pop_front()
    }

    /// How long `node`'s trusted direct path may stay silent while we send on it, if it has one (the
    /// driver's socket checks this on its transmits: see [`Paths::note_sent`]).
    pub fn silence_after(&self, now: Instant, node: &NodeId) -> Option<Duration> {
        self.nodes.get(node)?.silence_after(now, &self.config)
    }

    /// Where packets to `node` go at `now`.
    pub fn send_plan(&self, now: Instant, node: &NodeId) -> SendPlan {
        self.nodes
            .get(node)
            .map(|state| state.send_plan(now, &self.config))
            .unwrap_or_default()
    }

    /// The connection type to `node` at `now`.
    pub fn conn_type(&self, now: Instant, node: &NodeId) -> ConnectionType {
        self.nodes.get(node).map_or(ConnectionType::None, |state| {
            state.conn_type(now, &self.config)
        })
    }

    /// What is known about `node`.
    pub fn node_info(&self, now: Instant, node: &NodeId) -> Option<NodeInfo> {
        Some(self.nodes.get(node)?.info(now, &self.config))
    }

    /// Whether `node` is known: added with an address, dialled, or heard from with a disco message that
    /// opened.
    pub fn knows(&self, node: &NodeId) -> bool {
        self.nodes.contains_key(node)
    }

    /// The relay of `node`, if known.
    pub fn relay_url(&self, node: &NodeId) -> Option<&RelayUrl> {
        self.nodes.get(node)?.relay_url()
    }

    /// Runs `f` on the state of `node` (created if new) with a context that collects its transmits; the
    /// caller then calls [`Paths::finish`].
    fn with_node(&mut self, node: NodeId, f: impl FnOnce(&mut NodeState, &mut Ctx<'_>)) {
        let mut out = std::mem::take(&mut self.scratch);
        let mut events = std::mem::take(&mut self.scratch_events);
        let state = self
            .nodes
            .entry(node)
            .or_insert_with(|| NodeState::new(node));
        let mut cx = Ctx {
            config: &self.config,
            rng: &mut self.rng,
            own_addrs: &self.own_addrs,
            nat: &self.nat,
            out: &mut out,
            events: &mut events,
        };
        f(state, &mut cx);
        self.scratch = out;
        self.scratch_events = events;
    }

    /// Moves what a node operation produced into the queues and reports a plan change.
    fn finish(&mut self, now: Instant, node: NodeId) {
        self.transmits.extend(self.scratch.drain(..));
        self.events.extend(self.scratch_events.drain(..));
        if let Some(state) = self.nodes.get_mut(&node) {
            // Addresses the node gained (a pong from a new address, say) become known for demultiplexing.
            for addr in state.addrs() {
                self.by_addr.entry(addr).or_insert(node);
            }
            if let Some(plan) = state.update_plan(now, &self.config) {
                self.events.push_back(PathEvent::PlanChanged { node, plan });
            }
        }
    }
}

#[cfg(test)]
mod tests;
