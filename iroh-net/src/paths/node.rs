//! The path state of one remote node.
//!
//! ```text
//!              activity, no trusted path                 pong on a candidate
//!   (idle) ----------------------------> holepunching ----------------------> direct (trusted best path)
//!     ^      ping all candidates,            |   ^                               |   |
//!     |      call-me-maybe via relay         |   | every holepunch interval      |   | heartbeat ping every
//!     |      plan: mixed or relay            |   +-- while active                |   | heartbeat interval;
//!     |                                      |                                   |   | upgrade: ping all
//!     +------ no activity for session timeout (heartbeats stop) <---------------+   | candidates now and then
//!                                            ^                                       |
//!                                            +---- trust expires, or a heartbeat ----+
//!                                                  ping goes unanswered (suspect):
//!                                                  plan falls back to mixed/relay
//! ```
//!
//! A path is *trusted* once a pong came back on it, for the trust duration after its last sign of life (a
//! pong, or authenticated traffic arriving on it), unless a ping sent after that sign of life has gone
//! unanswered for longer than the suspect timeout. Only a trusted path carries traffic alone; otherwise
//! the relay carries it too.
//!
//! Liveness comes from traffic first: while QUIC arrives on a path, lost pings and pongs do not matter.
//! An unanswered ping on a trusted path is followed by more (every probe interval) until one is answered,
//! traffic arrives, or the suspect timeout passes. While we send on a trusted path and nothing comes back
//! for the silence timeout, the path is probed at once: a dead path falls back to the relay within the
//! silence and suspect timeouts (well under a second), not at the next heartbeat.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::{Duration, Instant},
};

use iroh_base::{NodeId, RelayUrl};

use rand::RngCore;

mod holepunch;
pub(super) mod predict;

use self::predict::{OwnNat, Prediction};
use super::{
    PathConfig,
    types::{
        ConnectionType, DiscoTransmit, NodeInfo, PathEvent, PathInfo, SendAddr, SendPlan, Source,
        TxId,
    },
};

/// What node-level operations need from the table: settings, randomness for transaction ids, our own
/// addresses and NAT for call-me-maybe, and the queues of transmits and events.
pub(super) struct Ctx<'a> {
    pub(super) config: &'a PathConfig,
    pub(super) rng: &'a mut dyn RngCore,
    pub(super) own_addrs: &'a [SocketAddr],
    pub(super) nat: &'a OwnNat,
    pub(super) out: &'a mut Vec<DiscoTransmit>,
    pub(super) events: &'a mut Vec<PathEvent>,
}

/// A candidate direct path.
#[derive(Debug, Clone, Default)]
pub(super) struct PathState {
    /// Where we learned the address, and when we last heard of it from there.
    sources: BTreeMap<Source, Instant>,
    /// When we last sent a ping to it.
    last_ping_sent: Option<Instant>,
    /// The oldest ping sent since the last pong that is still unanswered.
    unanswered_since: Option<Instant>,
    /// When the last pong arrived, and the round trip it measured.
    last_pong: Option<(Instant, Duration)>,
    /// When the node last pinged us from this address.
    last_ping_received: Option<Instant>,
    /// When authenticated traffic (QUIC, as the driver reports it) last arrived on this path.
    last_recv: Option<Instant>,
    /// A ping sent after the last pong (or ever, without one) expired unanswered. Such a path gets no
    /// traffic alongside the relay on the strength of a ping in flight: a path that keeps failing (a
    /// symmetric NAT, blocked UDP) must not double every packet at each holepunch round.
    failed: bool,
}

impl PathState {
    fn latency(&self) -> Option<Duration> {
        self.last_pong.map(|(_, latency)| latency)
    }

    /// The last sign of life: a pong, or traffic once a pong has been seen.
    fn alive_at(&self) -> Option<Instant> {
        let (pong_at, _) = self.last_pong?;
        Some(self.last_recv.map_or(pong_at, |recv| recv.max(pong_at)))
    }

    /// When the path stops being trusted, if it is trusted at `now`.
    pub(super) fn trusted_until(&self, now: Instant, config: &PathConfig) -> Option<Instant> {
        let (_, latency) = self.last_pong?;
        let mut until = self.alive_at()? + config.trust_duration;
        if let Some(sent) = self.unanswered_since {
            until = until.min(sent + config.suspect_after(latency));
        }
        (until > now).then_some(until)
    }

    fn strongest_source(&self) -> Option<Source> {
        self.sources.keys().next().copied()
    }
}

/// A ping we sent and await the pong of.
#[derive(Debug, Clone, Copy)]
struct SentPing {
    addr: SocketAddr,
    at: Instant,
}

/// Everything we know about reaching one remote node.
#[derive(Debug)]
pub(super) struct NodeState {
    node_id: NodeId,
    relay_url: Option<RelayUrl>,
    relay_source: Option<Source>,
    paths: BTreeMap<SocketAddr, PathState>,
    /// The direct path we prefer; traffic uses it alone while it is trusted.
    best: Option<SocketAddr>,
    pings: HashMap<TxId, SentPing>,
    last_activity: Option<Instant>,
    last_holepunch: Option<Instant>,
    /// The running holepunch round's start.
    round_started: Option<Instant>,
    /// Rounds in a row that ended without a trusted path (the backoff).
    failed_rounds: u32,
    /// When we last sent the node a call-me-maybe.
    last_call_me_maybe: Option<Instant>,
    /// A candidate arrived since the last round: the next round starts at once, the backoff over.
    fresh_candidate: bool,
    /// Whether a direct path was ever trusted (then rounds do not back off).
    was_direct: bool,
    last_full_ping: Option<Instant>,
    /// When we last sent QUIC to the node over its direct path, as the driver reports it.
    last_sent: Option<Instant>,
    /// The plan last reported, to report changes only.
    plan: SendPlan,
    /// Port prediction (see the `predict` module).
    predict: Prediction,
}

impl NodeState {
    pub(super) fn new(node_id: NodeId) -> Self {
        Self {
            node_id,
            relay_url: None,
            relay_source: None,
            paths: BTreeMap::new(),
            best: None,
            pings: HashMap::new(),
            last_activity: None,
            last_holepunch: None,
            round_started: None,
            failed_rounds: 0,
            last_call_me_maybe: None,
            fresh_candidate: false,
            was_direct: false,
            last_full_ping: None,
            last_sent: None,
            plan: SendPlan::default(),
            predict: Prediction::default(),
        }
    }

    pub(super) fn relay_url(&self) -> Option<&RelayUrl> {
        self.relay_url.as_ref()
    }

    pub(super) fn set_relay_url(&mut self, url: RelayUrl, source: Source) {
        self.relay_url = Some(url);
        self.relay_source = Some(source);
    }

    /// Adds or refreshes a candidate address. Returns whether it is new.
    pub(super) fn add_candidate(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        source: Source,
        config: &PathConfig,
    ) -> bool {
        let is_new = !self.paths.contains_key(&addr);
        if is_new && self.paths.len() >= config.max_paths {
            self.evict_weakest(now, config);
        }
        if is_new {
            self.fresh_candidate = true;
            self.failed_rounds = 0;
        }
        self.paths
            .entry(addr)
            .or_default()
            .sources
            .insert(source, now);
        is_new
    }

    pub(super) fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.paths.keys().copied()
    }

    /// Traffic arrived over `addr` at `at`. Returns whether anything changed.
    pub(super) fn note_received(&mut self, addr: SocketAddr, at: Instant) -> bool {
        let Some(path) = self.paths.get_mut(&addr) else {
            return false;
        };
        if path.last_pong.is_none() || path.last_recv.is_some_and(|r| r >= at) {
            return false;
        }
        path.last_recv = Some(at);
        // Alive after the ping went out: that ping's pong no longer matters. A ping sent later still counts
        // (with its own send time unknown here, the last one stands in, which is later: more lenient).
        if path.unanswered_since.is_some_and(|since| since <= at) {
            path.unanswered_since = path.last_ping_sent.filter(|sent| *sent > at);
        }
        true
    }

    /// We sent over the direct path at `at`; probes the best path if it has gone silent.
    pub(super) fn note_sent(&mut self, now: Instant, at: Instant, cx: &mut Ctx<'_>) {
        if self.last_sent.is_none_or(|sent| sent < at) {
            self.last_sent = Some(at);
        }
        self.check_silence(now, cx);
    }

    /// How long the trusted best path may stay silent while we send on it.
    pub(super) fn silence_after(&self, now: Instant, config: &PathConfig) -> Option<Duration> {
        let best = self.trusted_best(now, config)?;
        let latency = self.paths.get(&best)?.latency()?;
        Some(config.silence_after(latency))
    }

    /// The instant from which the trusted best path counts as silent: when it was last alive, plus the
    /// silence timeout, if we sent on it after it was last alive (and it is not being probed already).
    fn silent_from(&self, now: Instant, config: &PathConfig) -> Option<(SocketAddr, Instant)> {
        let best = self.trusted_best(now, config)?;
        let path = self.paths.get(&best)?;
        let alive = path.alive_at()?;
        let latency = path.latency()?;
        if path.unanswered_since.is_some() || self.last_sent.is_none_or(|sent| sent <= alive) {
            return None;
        }
        Some((best, alive + config.silence_after(latency)))
    }

    fn check_silence(&mut self, now: Instant, cx: &mut Ctx<'_>) {
        if let Some((best, from)) = self.silent_from(now, cx.config)
            && now >= from
            && self.last_sent.is_some_and(|sent| sent >= from)
        {
            self.send_ping(now, best, true, cx);
        }
    }

    /// Notes that traffic for this node was sent or received. Starts holepunching if the node has no
    /// trusted path and none was attempted recently.
    pub(super) fn note_activity(&mut self, now: Instant, cx: &mut Ctx<'_>) {
        self.last_activity = Some(now);
        self.maintain(now, cx);
    }

    /// Records a ping from the node and answers it.
    pub(super) fn handle_ping(
        &mut self,
        now: Instant,
        from: &SendAddr,
        tx_id: TxId,
        cx: &mut Ctx<'_>,
    ) {
        let config = cx.config;
        let observed = match from {
            SendAddr::Udp(addr) => {
                self.add_candidate(now, *addr, Source::PeerReflexive, config);
                Some(*addr)
            }
            SendAddr::Relay(url) => {
                if self.relay_url.is_none() {
                    self.relay_url = Some(url.clone());
                    self.relay_source = Some(Source::PeerReflexive);
                }
                None
            }
        };
        cx.out.push(DiscoTransmit::Pong {
            node: self.node_id,
            dst: from.clone(),
            tx_id,
            observed,
        });
        // The node is trying to reach us: ping back on a path we cannot vouch for yet, so that we confirm it
        // from our side too (its pings open its NAT for ours). Disco alone does not make the session
        // active (only traffic does, through `note_activity`): otherwise two idle nodes would keep each
        // other pinging forever.
        if let SendAddr::Udp(addr) = from
            && let Some(path) = self.paths.get_mut(addr)
        {
            let trusted = path.trusted_until(now, config).is_some();
            // Our last ping to this address may have been dropped by the node's NAT, which its ping has just
            // opened: unless we pinged since the node's previous ping, ping back now, ignoring the usual
            // spacing between pings (the node's own pings pace this).
            let previous = path.last_ping_received.replace(now);
            let pinged_since = matches!(
                (path.last_ping_sent, previous),
                (Some(sent), Some(received)) if sent >= received
            );
            if !trusted {
                self.send_ping(now, *addr, !pinged_since, cx);
            }
        }
    }

    /// Matches a pong to its ping. Returns `None` for a pong that answers no ping of ours (late, or forged
    /// by replay).
    pub(super) fn handle_pong(
        &mut self,
        now: Instant,
        from: &SendAddr,
        tx_id: TxId,
        config: &PathConfig,
    ) -> Option<()> {
        let ping = self.pings.remove(&tx_id)?;
        let latency = now.saturating_duration_since(ping.at);
        let path = self.paths.get_mut(&ping.addr)?;
        path.last_pong = Some((now, latency));
        path.unanswered_since = None;
        path.failed = false;
        // A pong from another address than the one pinged: the node's replies leave from there (its NAT
        // maps differently per destination). The pinged path works for sending; also learn the new one.
        if let SendAddr::Udp(src) = from
            && *src != ping.addr
        {
            self.add_candidate(now, *src, Source::PeerReflexive, config);
        }
        self.choose_best(now, ping.addr, latency, config);
        self.round_started = None;
        self.failed_rounds = 0;
        self.was_direct = true;
        Some(())
    }

    /// Adds the addresses of a call-me-maybe (and notes its NAT hint) and pings them all now.
    pub(super) fn handle_call_me_maybe(
        &mut self,
        now: Instant,
        relay: &RelayUrl,
        addrs: &[SocketAddr],
        nat: crate::disco::NatHint,
        cx: &mut Ctx<'_>,
    ) {
        let config = cx.config;
        self.set_peer_nat(nat);
        if self.relay_url.is_none() {
            self.relay_url = Some(relay.clone());
            self.relay_source = Some(Source::CallMeMaybe);
        }
        for addr in addrs {
            self.add_candidate(now, *addr, Source::CallMeMaybe, config);
        }
        self.answer_call_me_maybe(now, addrs, cx);
    }

    /// Periodic work: holepunching while there is no trusted path, heartbeats on the best path, upgrades,
    /// expiry of old pings. Called on activity and on timeouts.
    pub(super) fn maintain(&mut self, now: Instant, cx: &mut Ctx<'_>) {
        let config = cx.config;
        self.expire_pings(now, config);
        self.pace_spray(now, cx);
        if !self.is_active(now, config) {
            return;
        }
        let best_trusted = self.trusted_best(now, config);
        match best_trusted {
            None => self.maintain_round(now, cx),
            Some(best) => {
                if self
                    .last_full_ping
                    .is_none_or(|at| now >= at + config.upgrade_interval)
                {
                    self.holepunch(now, cx);
                } else {
                    let path = self.paths.get(&best);
                    let heartbeat_due = path.is_some_and(|p| {
                        p.unanswered_since.is_none()
                            && p.last_ping_sent
                                .is_none_or(|at| now >= at + config.heartbeat_interval)
                    });
                    let probe_due = path.is_some_and(|p| {
                        p.unanswered_since.is_some()
                            && p.last_ping_sent.is_some_and(|at| {
                                now >= at + config.probe_interval(p.latency().unwrap_or_default())
                            })
                    });
                    if heartbeat_due {
                        self.ping(now, best, cx);
                    } else if probe_due {
                        self.send_ping(now, best, true, cx);
                    } else {
                        self.check_silence(now, cx);
                    }
                }
            }
        }
    }

    /// Starts a holepunch round now if the node is active and has no trusted path (our addresses changed:
    /// the node must hear of them).
    pub(super) fn holepunch_now(&mut self, now: Instant, cx: &mut Ctx<'_>) {
        if self.is_active(now, cx.config) && self.trusted_best(now, cx.config).is_none() {
            self.failed_rounds = 0;
            self.start_round(now, cx);
        }
    }

    /// After a network change: pings out before it are forgotten (their pongs prove nothing about the new
    /// network), and if the node is active a holepunch round starts now, even over a trusted path and
    /// however recently its candidates were pinged (unless a round went out within the minimum ping
    /// interval: a flapping interface must not turn into a ping storm).
    pub(super) fn network_changed(&mut self, now: Instant, cx: &mut Ctx<'_>) {
        self.pings.clear();
        // A spray's probes left from the old network: their answers prove nothing now.
        self.end_spray(None, cx);
        self.failed_rounds = 0;
        if self.is_active(now, cx.config) {
            let force = self
                .last_full_ping
                .is_none_or(|at| now >= at + cx.config.min_ping_interval);
            if self.trusted_best(now, cx.config).is_none() && force {
                self.start_round(now, cx);
            } else {
                self.holepunch_round(now, force, cx);
            }
        }
    }

    /// Pings every candidate and asks the node, through its relay, to ping ours.
    fn holepunch(&mut self, now: Instant, cx: &mut Ctx<'_>) {
        self.holepunch_round(now, false, cx);
    }

    /// [`NodeState::holepunch`]; with `force`, pings even addresses pinged within the minimum interval.
    pub(super) fn holepunch_round(&mut self, now: Instant, force: bool, cx: &mut Ctx<'_>) {
        self.prune(now, cx.config);
        self.last_holepunch = Some(now);
        self.last_full_ping = Some(now);
        let addrs: Vec<SocketAddr> = self.paths.keys().copied().collect();
        for addr in addrs {
            self.send_ping(now, addr, force, cx);
        }
        self.send_call_me_maybe(now, cx);
    }

    /// Asks the node, through its relay, to ping our addresses.
    pub(super) fn send_call_me_maybe(&mut self, now: Instant, cx: &mut Ctx<'_>) {
        if let Some(relay) = &self.relay_url
            && !cx.own_addrs.is_empty()
        {
            self.last_call_me_maybe = Some(now);
            cx.out.push(DiscoTransmit::CallMeMaybe {
                node: self.node_id,
                relay: relay.clone(),
                addrs: cx.own_addrs.to_vec(),
                nat: cx.nat.hint(),
            });
        }
    }

    /// Queues a ping to `addr` unless one went there very recently.
    pub(super) fn ping(&mut self, now: Instant, addr: SocketAddr, cx: &mut Ctx<'_>) {
        self.send_ping(now, addr, false, cx);
    }

    /// Queues a ping to `addr`; unless `force`, not if one went there within the minimum ping interval.
    pub(super) fn send_ping(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        force: bool,
        cx: &mut Ctx<'_>,
    ) {
        let Some(path) = self.paths.get_mut(&addr) else {
            return;
        };
        if !force
            && path
                .last_ping_sent
                .is_some_and(|at| now < at + cx.config.min_ping_interval)
        {
            return;
        }
        path.last_ping_sent = Some(now);
        if path.unanswered_since.is_none() {
            path.unanswered_since = Some(now);
        }
        let tx_id = TxId::random_from(&mut cx.rng);
        self.pings.insert(tx_id, SentPing { addr, at: now });
        cx.out.push(DiscoTransmit::Ping {
            node: self.node_id,
            dst: SendAddr::Udp(addr),
            tx_id,
        });
    }

    fn expire_pings(&mut self, now: Instant, config: &PathConfig) {
        let paths = &mut self.paths;
        self.pings.retain(|_, ping| {
            let alive = now < ping.at + config.ping_timeout;
            if !alive && let Some(path) = paths.get_mut(&ping.addr) {
                path.failed = true;
            }
            alive
        });
    }

    fn choose_best(
        &mut self,
        now: Instant,
        candidate: SocketAddr,
        latency: Duration,
        config: &PathConfig,
    ) {
        let replace = match self.best {
            None => true,
            Some(best) if best == candidate => false,
            Some(best) => match self.paths.get(&best) {
                Some(path) if path.trusted_until(now, config).is_some() => {
                    let current = path.latency().unwrap_or(Duration::MAX);
                    config.is_better(candidate, latency, best, current)
                }
                _ => true,
            },
        };
        if replace {
            self.best = Some(candidate);
        }
    }

    pub(super) fn trusted_best(&self, now: Instant, config: &PathConfig) -> Option<SocketAddr> {
        let best = self.best?;
        self.paths.get(&best)?.trusted_until(now, config)?;
        Some(best)
    }

    fn is_active(&self, now: Instant, config: &PathConfig) -> bool {
        self.last_activity
            .is_some_and(|at| now < at + config.session_active_timeout)
    }

    /// Where packets go at `now`.
    pub(super) fn send_plan(&self, now: Instant, config: &PathConfig) -> SendPlan {
        if let Some(best) = self.trusted_best(now, config) {
            return SendPlan {
                udp: Some(best),
                relay: None,
            };
        }
        let guess = self.udp_guess();
        match &self.relay_url {
            None => SendPlan {
                udp: guess,
                relay: None,
            },
            Some(relay) => {
                // Alongside the relay, send direct while that has a chance: a ping to the address is in
                // flight, or the path worked until recently.
                let worth_trying = guess.filter(|addr| {
                    self.paths.get(addr).is_some_and(|path| {
                        let ping_in_flight = !path.failed
                            && path.last_ping_sent.is_some_and(|at| {
                                now < at + config.ping_timeout
                                    && path.last_pong.is_none_or(|(pong_at, _)| pong_at < at)
                            });
                        let recently_good = path
                            .last_pong
                            .is_some_and(|(at, _)| now < at + config.stale_grace);
                        ping_in_flight || recently_good
                    })
                });
                SendPlan {
                    udp: worth_trying,
                    relay: Some(relay.clone()),
                }
            }
        }
    }

    /// The direct address most likely to work when none is trusted: the last best path, else the candidate
    /// with the strongest evidence (a pong, then the best source), IPv6 first among equals.
    fn udp_guess(&self) -> Option<SocketAddr> {
        if let Some(best) = self.best {
            return Some(best);
        }
        self.paths
            .iter()
            .min_by_key(|(addr, path)| {
                (
                    path.last_pong.is_none(),
                    path.strongest_source(),
                    addr.is_ipv4(),
                    **addr,
                )
            })
            .map(|(addr, _)| *addr)
    }

    /// Recomputes the plan; returns it if it changed since last reported.
    pub(super) fn update_plan(&mut self, now: Instant, config: &PathConfig) -> Option<SendPlan> {
        let plan = self.send_plan(now, config);
        if plan == self.plan {
            return None;
        }
        self.plan = plan.clone();
        Some(plan)
    }

    /// The earliest moment something changes without input: a plan change (trust expiry, suspect timeout,
    /// end of a ping's flight or of the stale grace), a due holepunch or heartbeat, or a ping expiring.
    pub(super) fn next_timeout(&self, now: Instant, config: &PathConfig) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| {
            if t > now {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for path in self.paths.values() {
            if let Some(until) = path.trusted_until(now, config) {
                consider(until);
            }
            if let Some(at) = path.last_ping_sent {
                consider(at + config.ping_timeout);
            }
            if let Some((at, _)) = path.last_pong {
                consider(at + config.stale_grace);
            }
        }
        for ping in self.pings.values() {
            consider(ping.at + config.ping_timeout);
        }
        if let Some(at) = self.next_spray_timeout() {
            consider(at);
        }
        if self.is_active(now, config) {
            if let Some(at) = self.last_activity {
                consider(at + config.session_active_timeout);
            }
            match self.trusted_best(now, config) {
                None => {
                    if let Some(at) = self.next_round_timeout(now, config) {
                        consider(at);
                    }
                }
                Some(best) => {
                    if let Some(at) = self.last_full_ping {
                        consider(at + config.upgrade_interval);
                    }
                    if let Some(path) = self.paths.get(&best)
                        && let Some(at) = path.last_ping_sent
                    {
                        consider(at + config.heartbeat_interval);
                        if path.unanswered_since.is_some() {
                            let latency = path.latency().unwrap_or_default();
                            consider(at + config.probe_interval(latency));
                        }
                    }
                    if let Some((_, from)) = self.silent_from(now, config) {
                        consider(from);
                    }
                }
            }
        }
        next
    }

    /// Drops candidates nobody has mentioned for a long time and that never answered recently. Addresses
    /// the application gave are kept.
    pub(super) fn prune(&mut self, now: Instant, config: &PathConfig) {
        let best = self.best;
        self.paths.retain(|addr, path| {
            let keep_source = path.sources.contains_key(&Source::App);
            let mentioned = path
                .sources
                .values()
                .any(|at| now < *at + config.candidate_ttl);
            let answered = path
                .last_pong
                .is_some_and(|(at, _)| now < at + config.candidate_ttl);
            Some(*addr) == best || keep_source || mentioned || answered
        });
    }

    fn evict_weakest(&mut self, now: Instant, config: &PathConfig) {
        let best = self.best;
        let weakest = self
            .paths
            .iter()
            .filter(|(addr, path)| {
                Some(**addr) != best && path.trusted_until(now, config).is_none()
            })
            .min_by_key(|(_, path)| {
                (
                    path.last_pong.map(|(at, _)| at),
                    path.sources.values().max().copied(),
                )
            })
            .map(|(addr, _)| *addr);
        if let Some(addr) = weakest {
            self.paths.remove(&addr);
        }
    }

    pub(super) fn info(&self, now: Instant, config: &PathConfig) -> NodeInfo {
        NodeInfo {
            node_id: self.node_id,
            relay_url: self.relay_url.clone(),
            relay_source: self.relay_source,
            paths: self
                .paths
                .iter()
                .map(|(addr, path)| PathInfo {
                    addr: *addr,
                    sources: path.sources.keys().copied().collect(),
                    latency: path.latency(),
                    last_pong_age: path
                        .last_pong
                        .map(|(at, _)| now.saturating_duration_since(at)),
                    trusted: path.trusted_until(now, config).is_some(),
                })
                .collect(),
            conn_type: self.send_plan(now, config).conn_type(),
            last_activity_age: self
                .last_activity
                .map(|at| now.saturating_duration_since(at)),
        }
    }

    pub(super) fn conn_type(&self, now: Instant, config: &PathConfig) -> ConnectionType {
        self.send_plan(now, config).conn_type()
    }
}
