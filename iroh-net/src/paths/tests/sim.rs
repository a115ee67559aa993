//! A two-node network simulator under a virtual clock, for path selection tests.
//!
//! Node A and node B each run a [`Paths`] core. Disco messages between them travel over a simulated UDP
//! path (one-way latency, seeded random loss, a switch to cut it) or through a relay (slower, lossless).
//! With [`Sim::quic`] on, active sides also exchange QUIC packets every [`QUIC_TICK`] over their send plan,
//! reported to the cores as the magic socket's driver would (`note_sent`, `note_received`). Time advances
//! straight to the next delivery, timeout or tick.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use iroh_base::{NodeAddr, NodeId, RelayUrl, SecretKey};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::super::*;

/// Network conditions.
#[derive(Debug, Clone)]
pub(super) struct SimConfig {
    pub(super) udp_latency: Duration,
    pub(super) relay_latency: Duration,
    pub(super) loss: f64,
    pub(super) seed: u64,
    /// A is behind an endpoint-dependent (symmetric) NAT: its packets to B leave from
    /// [`Sim::a_addr_for_b`], which nobody advertises, and its advertised address ([`Sim::a_addr`], the
    /// one STUN saw) takes nothing from B. The mapping to B takes B's packets once A has sent to B.
    pub(super) a_symmetric: bool,
    /// B is behind an address-restricted NAT (endpoint-independent mapping, address-dependent filtering):
    /// nothing from A's IP gets in until B has sent something to that IP.
    pub(super) b_address_restricted: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            udp_latency: Duration::from_millis(10),
            relay_latency: Duration::from_millis(30),
            loss: 0.0,
            seed: 7,
            a_symmetric: false,
            b_address_restricted: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Msg {
    Ping(TxId),
    Pong(TxId, Option<SocketAddr>),
    CallMeMaybe(Vec<SocketAddr>),
    /// A QUIC packet over the direct path.
    Quic,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    to_a: bool,
    via_relay: bool,
    /// The UDP source the receiver sees.
    from: SocketAddr,
    msg: Msg,
}

/// How often each active side notes traffic (as an application sending data would).
const TRAFFIC_TICK: Duration = Duration::from_millis(100);
/// How often each active side sends a QUIC packet when [`Sim::quic`] is on.
pub(super) const QUIC_TICK: Duration = Duration::from_millis(10);

pub(super) struct Sim {
    pub(super) now: Instant,
    start: Instant,
    pub(super) a: Paths,
    pub(super) b: Paths,
    pub(super) a_id: NodeId,
    pub(super) b_id: NodeId,
    relay: RelayUrl,
    config: SimConfig,
    udp_up: bool,
    queue: BinaryHeap<Reverse<(Instant, u64, Delivery)>>,
    seq: u64,
    rng: StdRng,
    active: (bool, bool),
    next_tick: Instant,
    quic: bool,
    next_quic: Instant,
    /// A's plan changed from direct to something else this many times.
    pub(super) a_fallbacks: usize,
    a_was_direct: bool,
    pub(super) pings_sent: usize,
    /// Pings sent by A alone.
    pub(super) a_pings_sent: usize,
    pub(super) a_plan_changes: usize,
    pub(super) trace: Vec<String>,
    /// NAT state: A has sent to B from its mapping for B; B has sent to A's IP.
    a_opened: bool,
    b_opened: bool,
}

impl Sim {
    pub(super) fn new(config: SimConfig) -> Self {
        let now = Instant::now();
        let mut a = Paths::new(PathConfig::default(), config.seed);
        let mut b = Paths::new(PathConfig::default(), config.seed + 1);
        let a_addr = SocketAddr::from((Ipv4Addr::new(198, 18, 0, 1), 1111));
        let b_addr = SocketAddr::from((Ipv4Addr::new(198, 18, 0, 2), 2222));
        a.set_own_addrs(now, vec![a_addr]);
        b.set_own_addrs(now, vec![b_addr]);
        Self {
            now,
            start: now,
            a,
            b,
            a_id: SecretKey::from_bytes(&[1; 32]).public(),
            b_id: SecretKey::from_bytes(&[2; 32]).public(),
            relay: "https://relay.example.org".parse().expect("valid url"),
            rng: StdRng::seed_from_u64(config.seed),
            config,
            udp_up: true,
            queue: BinaryHeap::new(),
            seq: 0,
            active: (false, false),
            next_tick: now,
            quic: false,
            next_quic: now,
            a_fallbacks: 0,
            a_was_direct: false,
            pings_sent: 0,
            a_pings_sent: 0,
            a_plan_changes: 0,
            trace: Vec::new(),
            a_opened: false,
            b_opened: false,
        }
    }

    /// Where A's packets to B come from when A is behind a symmetric NAT.
    pub(super) fn a_addr_for_b(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(198, 18, 0, 1), 1112))
    }

    /// Whether a UDP packet from A (or B) to `dst` gets through, and the source the receiver sees: the one
    /// place the simulated NATs, the switch and the loss apply.
    fn udp_route(&mut self, from_a: bool, dst: SocketAddr) -> Option<SocketAddr> {
        let lost = self.config.loss > 0.0 && self.rng.gen_bool(self.config.loss);
        if from_a {
            if dst != self.b_addr() {
                return None;
            }
            self.a_opened = true;
            let blocked = self.config.b_address_restricted && !self.b_opened;
            let from = if self.config.a_symmetric {
                self.a_addr_for_b()
            } else {
                self.a_addr()
            };
            (!blocked && self.udp_up && !lost).then_some(from)
        } else {
            if dst.ip() == self.a_addr().ip() {
                self.b_opened = true;
            }
            let reaches = if self.config.a_symmetric {
                dst == self.a_addr_for_b() && self.a_opened
            } else {
                dst == self.a_addr()
            };
            (reaches && self.udp_up && !lost).then_some(self.b_addr())
        }
    }

    pub(super) fn a_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(198, 18, 0, 1), 1111))
    }

    pub(super) fn b_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(198, 18, 0, 2), 2222))
    }

    /// Gives A a `NodeAddr` for B with its relay and/or its address.
    pub(super) fn a_knows_b(&mut self, relay: bool, addr: bool) {
        let mut node_addr = NodeAddr::new(self.b_id);
        if relay {
            node_addr = node_addr.with_relay_url(self.relay.clone());
        }
        if addr {
            node_addr = node_addr.with_direct_addresses([self.b_addr()]);
        }
        self.a.add_node_addr(self.now, &node_addr, Source::App);
        self.pump();
    }

    /// Gives A another direct address for B (as discovery would), with traffic for B right after.
    pub(super) fn a_learns(&mut self, addr: SocketAddr) {
        let node_addr = NodeAddr::new(self.b_id).with_direct_addresses([addr]);
        self.a.add_node_addr(self.now, &node_addr, Source::App);
        self.a.note_activity(self.now, self.b_id);
        self.pump();
    }

    /// Whether A and B are sending traffic to each other.
    pub(super) fn activity(&mut self, a: bool, b: bool) {
        self.active = (a, b);
        self.next_tick = self.now;
    }

    /// Whether active sides exchange QUIC packets (as a transfer's data and acknowledgements would).
    pub(super) fn quic(&mut self, on: bool) {
        self.quic = on;
        self.next_quic = self.now;
    }

    pub(super) fn set_udp(&mut self, up: bool) {
        self.udp_up = up;
    }

    pub(super) fn a_conn(&self) -> ConnectionType {
        self.a.conn_type(self.now, &self.b_id)
    }

    pub(super) fn b_conn(&self) -> ConnectionType {
        self.b.conn_type(self.now, &self.a_id)
    }

    pub(super) fn a_conn_uses_relay(&self) -> bool {
        self.a.send_plan(self.now, &self.b_id).relay.is_some()
    }

    pub(super) fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.step(end) {}
        self.now = end;
    }

    /// Runs until `done` holds (checked after every step), at most `limit`; returns how long it took.
    pub(super) fn run_until(
        &mut self,
        limit: Duration,
        done: impl Fn(&Self) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        let end = start + limit;
        loop {
            if done(self) {
                return Some(self.now - start);
            }
            if !self.step(end) {
                self.now = end;
                return done(self).then(|| self.now - start);
            }
        }
    }

    /// Advances to the next thing that happens before `end`; false if nothing does. Timers behave as a
    /// driver's do: armed at `poll_timeout`, and firing `handle_timeout` when their instant comes.
    fn step(&mut self, end: Instant) -> bool {
        let a_timer = self.a.poll_timeout(self.now);
        let b_timer = self.b.poll_timeout(self.now);
        let next = [
            self.queue.peek().map(|Reverse((at, _, _))| *at),
            a_timer,
            b_timer,
            (self.active.0 || self.active.1).then_some(self.next_tick),
            (self.quic && (self.active.0 || self.active.1)).then_some(self.next_quic),
        ]
        .into_iter()
        .flatten()
        .min()
        .filter(|at| *at <= end);
        let Some(at) = next else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.now;

        while self
            .queue
            .peek()
            .is_some_and(|Reverse((at, _, _))| *at <= now)
        {
            let Some(Reverse((_, _, delivery))) = self.queue.pop() else {
                break;
            };
            self.deliver(delivery);
        }
        if a_timer.is_some_and(|t| t <= now) {
            self.a.handle_timeout(now);
        }
        if b_timer.is_some_and(|t| t <= now) {
            self.b.handle_timeout(now);
        }
        if (self.active.0 || self.active.1) && self.next_tick <= now {
            if self.active.0 {
                self.a.note_activity(now, self.b_id);
            }
            if self.active.1 {
                self.b.note_activity(now, self.a_id);
            }
            self.next_tick = now + TRAFFIC_TICK;
        }
        if self.quic && self.next_quic <= now {
            for from_a in [true, false] {
                if (from_a && self.active.0) || (!from_a && self.active.1) {
                    self.send_quic(from_a);
                }
            }
            self.next_quic = now + QUIC_TICK;
        }
        self.pump();
        true
    }

    /// One QUIC packet from A (or B) over its plan's direct path, if it has one.
    fn send_quic(&mut self, from_a: bool) {
        let now = self.now;
        let (core, peer) = if from_a {
            (&mut self.a, self.b_id)
        } else {
            (&mut self.b, self.a_id)
        };
        let Some(addr) = core.send_plan(now, &peer).udp else {
            return;
        };
        core.note_sent(now, peer, now);
        let Some(from) = self.udp_route(from_a, addr) else {
            return;
        };
        self.seq += 1;
        self.queue.push(Reverse((
            now + self.config.udp_latency,
            self.seq,
            Delivery {
                to_a: !from_a,
                via_relay: false,
                from,
                msg: Msg::Quic,
            },
        )));
    }

    fn deliver(&mut self, delivery: Delivery) {
        let now = self.now;
        let sender_addr = delivery.from;
        let (core, sender) = if delivery.to_a {
            (&mut self.a, self.b_id)
        } else {
            (&mut self.b, self.a_id)
        };
        let from = if delivery.via_relay {
            SendAddr::Relay(self.relay.clone())
        } else {
            SendAddr::Udp(sender_addr)
        };
        if delivery.msg != Msg::Quic {
            self.trace.push(format!(
                "{:?} to {} via {}: {:?}",
                now - self.start,
                if delivery.to_a { "A" } else { "B" },
                if delivery.via_relay { "relay" } else { "udp" },
                delivery.msg
            ));
        }
        match delivery.msg {
            Msg::Ping(tx_id) => core.handle_ping(now, sender, &from, tx_id),
            Msg::Pong(tx_id, observed) => core.handle_pong(now, sender, &from, tx_id, observed),
            Msg::CallMeMaybe(addrs) => {
                core.handle_call_me_maybe(
                    now,
                    sender,
                    &self.relay.clone(),
                    &addrs,
                    crate::disco::NatHint::default(),
                );
            }
            Msg::Quic => core.note_received(now, sender, sender_addr, now),
        }
    }

    /// Drains both cores' transmits into the network and their events into the counters.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                self.send(true, t);
                moved = true;
            }
            while let Some(t) = self.b.poll_transmit() {
                self.send(false, t);
                moved = true;
            }
            while let Some(event) = self.a.poll_event() {
                if let PathEvent::PlanChanged { plan, .. } = &event {
                    self.a_plan_changes += 1;
                    let direct = matches!(plan.conn_type(), ConnectionType::Direct(_));
                    if self.a_was_direct && !direct {
                        self.a_fallbacks += 1;
                    }
                    self.a_was_direct = direct;
                    self.trace.push(format!(
                        "{:?} A plan {}",
                        self.now - self.start,
                        plan.conn_type()
                    ));
                }
            }
            while self.b.poll_event().is_some() {}
            if !moved {
                break;
            }
        }
    }

    fn send(&mut self, from_a: bool, transmit: DiscoTransmit) {
        let (dst, msg) = match transmit {
            DiscoTransmit::Ping { dst, tx_id, .. } => {
                self.trace.push(format!(
                    "{:?} {} pings {dst}",
                    self.now - self.start,
                    if from_a { "A" } else { "B" }
                ));
                self.pings_sent += 1;
                self.a_pings_sent += usize::from(from_a);
                (dst, Msg::Ping(tx_id))
            }
            DiscoTransmit::Pong {
                dst,
                tx_id,
                observed,
                ..
            } => (dst, Msg::Pong(tx_id, observed)),
            DiscoTransmit::CallMeMaybe { relay, addrs, .. } => {
                (SendAddr::Relay(relay), Msg::CallMeMaybe(addrs))
            }
            // This simulator's nodes know nothing of their NATs, so they never predict (the `predict`
            // tests have a model of their own).
            DiscoTransmit::Predict { .. } => return,
        };
        let relay_from = SocketAddr::from(([0, 0, 0, 0], 0));
        let (via_relay, latency, from) = match dst {
            SendAddr::Relay(_) => (true, self.config.relay_latency, relay_from),
            SendAddr::Udp(addr) => {
                let Some(from) = self.udp_route(from_a, addr) else {
                    return;
                };
                (false, self.config.udp_latency, from)
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((
            self.now + latency,
            self.seq,
            Delivery {
                to_a: !from_a,
                via_relay,
                from,
                msg,
            },
        )));
    }
}
