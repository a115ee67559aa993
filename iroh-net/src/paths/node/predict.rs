//! Port prediction for a node behind a hard NAT (one that maps every destination to another random port,
//! "symmetric"), when the other side's NAT is easy (one public port for every destination) but filters.
//!
//! Neither side can reach the other by the usual holepunching: the hard side's port towards the easy side
//! is unknown (its STUN-learned one belongs to another destination), and the easy side's filter drops the
//! hard side's pings from it. So, by the birthday paradox:
//!
//! ```text
//!   hard side                                   relay               easy side
//!   round without a pong for prediction_after
//!   OpenPredictionSockets event: the driver opens PREDICTION_SOCKETS sockets, each pings the easy side's
//!   reflexive address once (dropped by its filter, but each opens a mapping on the hard NAT, at a random
//!   port, that takes packets from that address)
//!   prediction_sockets_ready -> Predict { our public IP } ------------------> validated, then pings with
//!                                                                             one transaction id to random
//!                                                                             ports of that IP, SPRAY_RATE
//!                                                                             per second, at most
//!                                                                             SPRAY_MAX / SPRAY_DURATION
//!   a ping arrives on one of the sockets: the driver sends to the easy side through it from now on; the
//!   pong goes back through the opening the ping made  ---------------------> pong with the spray's id from
//!                                                                             a probed port: a trusted path
//! ```
//!
//! With 256 mappings among 64,512 ports, 1,500 probes hit one with probability 1 - (1 - 256/64512)^1500 =
//! 99.7%, after about 175 probes (0.35 s) at the median. Every probe is a sealed disco ping, so nothing but
//! the two nodes can use the openings. The easy side sprays only for a node it is talking to through the
//! relay and that said it is hard, towards an IP that is one of that node's candidates and public (not
//! loopback, private, shared or link-local: see [`sprayable`]), at most once per node per
//! [`SPRAY_COOLDOWN`], [`MAX_SPRAYS`] nodes at a time, and [`SPRAY_BUDGET`] sprays per minute in all. A
//! peer can still name any public IP as its own and so aim one spray at it; those limits bound what that
//! costs (at most 9,000 probes a minute from one endpoint, each a sealed ping no one else can read). Two
//! hard NATs cannot meet this way (both sides' ports random: the hit rate would need hundreds of sockets on
//! both sides), so a hard side asks only a peer that says it is easy.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use super::{Ctx, NodeState, SentPing};
use crate::{
    disco::NatHint,
    paths::{
        PathConfig,
        types::{DiscoTransmit, PathEvent, SendAddr, Source, TxId},
    },
};

/// How many extra sockets the hard side opens for one prediction attempt.
pub const PREDICTION_SOCKETS: usize = 256;
/// How many probes per second the easy side sends to the hard side's IP.
pub const SPRAY_RATE: u32 = 500;
/// The longest a spray lasts.
pub const SPRAY_DURATION: Duration = Duration::from_secs(3);
/// The most probes of one spray (the rate times the duration).
pub const SPRAY_MAX: usize = 1500;
/// How often a spray sends its next batch of probes (the rate is kept over each batch).
pub const SPRAY_TICK: Duration = Duration::from_millis(10);
/// The least time between two sprays towards one node.
pub const SPRAY_COOLDOWN: Duration = Duration::from_secs(5);
/// The most nodes sprayed at once.
pub const MAX_SPRAYS: usize = 4;
/// The most sprays started per minute, over all nodes.
pub const SPRAY_BUDGET: usize = 6;
/// The least time between two prediction attempts of the hard side towards one node.
pub const PREDICTION_INTERVAL: Duration = Duration::from_secs(10);
/// How long the hard side keeps the extra sockets of an attempt open waiting for a probe: the spray's
/// duration and two seconds for the relay and the round trips.
pub const PREDICTION_SOCKET_LIFETIME: Duration = Duration::from_secs(5);
/// The ports a NAT maps to (and so the ports sprayed): 1024 and up.
const FIRST_PORT: u16 = 1024;

/// Whether `ip` may be probed or pinged for prediction: IPv4 outside the ranges no NAT's public side
/// uses (loopback, unspecified, link-local, multicast, broadcast, the private and shared ranges of
/// RFC 1918 and RFC 6598). A peer cannot point our probes at our own networks.
pub(in crate::paths) fn sprayable(ip: IpAddr) -> bool {
    let IpAddr::V4(v4) = ip.to_canonical() else {
        return false;
    };
    let [a, b, ..] = v4.octets();
    let shared = a == 100 && (64..128).contains(&b);
    !(v4.is_loopback()
        || v4.is_unspecified()
        || v4.is_link_local()
        || v4.is_multicast()
        || v4.is_broadcast()
        || v4.is_private()
        || shared
        || a == 0)
}

/// What we know about our own NAT, from the net report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(in crate::paths) struct OwnNat {
    /// Whether our IPv4 mapping varies by destination (`None`: not measured).
    pub(in crate::paths) mapping_varies: Option<bool>,
    /// Our public IPv4 address as STUN saw it.
    pub(in crate::paths) public_v4: Option<SocketAddr>,
}

impl OwnNat {
    /// What call-me-maybe messages say about us: hard when measured so; our public address as the
    /// reflexive one only when it was measured to be the same towards every destination.
    pub(in crate::paths) fn hint(&self) -> NatHint {
        NatHint {
            mapping_varies: self.mapping_varies == Some(true),
            reflexive: self
                .public_v4
                .filter(|_| self.mapping_varies == Some(false)),
        }
    }

    fn is_hard(&self) -> bool {
        self.mapping_varies == Some(true)
    }
}

/// A running spray of probes.
#[derive(Debug)]
struct Spray {
    ip: IpAddr,
    tx_id: TxId,
    started: Instant,
    last_tick: Instant,
    /// The ports probed, and when.
    sent: HashMap<u16, Instant>,
}

/// The prediction state of one node.
#[derive(Debug, Default)]
pub(super) struct Prediction {
    /// What the node last said about its NAT.
    peer: NatHint,
    /// Hard side: when we last asked the driver for sockets, and whether we still await them.
    asked_at: Option<Instant>,
    awaiting_sockets: bool,
    /// Easy side: the running spray and when the last one started.
    spray: Option<Spray>,
    last_spray: Option<Instant>,
}

impl NodeState {
    /// Notes what the node says about its NAT.
    pub(in crate::paths) fn set_peer_nat(&mut self, hint: NatHint) {
        self.predict.peer = hint;
    }

    /// Whether a spray towards this node is running.
    pub(in crate::paths) fn spraying(&self) -> bool {
        self.predict.spray.is_some()
    }

    /// Hard side, within a round that has found nothing: once its fast phase is over, asks the driver for
    /// prediction sockets if both NATs are right for it.
    pub(in crate::paths) fn maybe_predict(
        &mut self,
        now: Instant,
        started: Instant,
        cx: &mut Ctx<'_>,
    ) {
        let config = cx.config;
        let Some(reflexive) = self.predict.peer.reflexive else {
            return;
        };
        let asked_this_round = self.predict.asked_at.is_some_and(|at| at >= started);
        let too_soon = self
            .predict
            .asked_at
            .is_some_and(|at| now < at + PREDICTION_INTERVAL);
        if !cx.nat.is_hard()
            || cx.nat.public_v4.is_none()
            || self.predict.peer.mapping_varies
            || !sprayable(reflexive.ip())
            || self.relay_url.is_none()
            || now < started + config.prediction_after
            || asked_this_round
            || too_soon
        {
            return;
        }
        self.predict.asked_at = Some(now);
        self.predict.awaiting_sockets = true;
        cx.events.push(PathEvent::OpenPredictionSockets {
            node: self.node_id,
            dst: reflexive,
            count: PREDICTION_SOCKETS,
        });
    }

    /// Hard side: the driver opened `opened` sockets and pinged from each; tells the node to spray.
    pub(in crate::paths) fn prediction_sockets_ready(&mut self, opened: usize, cx: &mut Ctx<'_>) {
        if !std::mem::take(&mut self.predict.awaiting_sockets) || opened == 0 {
            return;
        }
        if let (Some(relay), Some(public)) = (&self.relay_url, cx.nat.public_v4) {
            cx.out.push(DiscoTransmit::Predict {
                node: self.node_id,
                relay: relay.clone(),
                ip: public.ip(),
            });
        }
    }

    /// Easy side: a `Predict` from the node (through the relay). Starts a spray if it is one we should
    /// make; returns whether it started.
    pub(in crate::paths) fn handle_predict(
        &mut self,
        now: Instant,
        ip: IpAddr,
        cx: &mut Ctx<'_>,
    ) -> bool {
        let config = cx.config;
        let known_ip = self.paths.keys().any(|addr| addr.ip().to_canonical() == ip);
        let cooling = self
            .predict
            .last_spray
            .is_some_and(|at| now < at + SPRAY_COOLDOWN);
        if cx.nat.mapping_varies != Some(false)
            || !self.predict.peer.mapping_varies
            || !sprayable(ip)
            || !known_ip
            || !self.is_active(now, config)
            || self.trusted_best(now, config).is_some()
            || self.predict.spray.is_some()
            || cooling
        {
            return false;
        }
        self.predict.last_spray = Some(now);
        self.predict.spray = Some(Spray {
            ip,
            tx_id: TxId::random_from(&mut cx.rng),
            started: now,
            last_tick: now,
            sent: HashMap::with_capacity(SPRAY_MAX),
        });
        self.pace_spray(now, cx);
        true
    }

    /// Sends the probes due by `now`, or ends the spray when it is over (time, count, a trusted path, an
    /// idle node).
    pub(in crate::paths) fn pace_spray(&mut self, now: Instant, cx: &mut Ctx<'_>) {
        let config = cx.config;
        let over = match &self.predict.spray {
            None => return,
            Some(spray) => {
                now >= spray.started + SPRAY_DURATION
                    || spray.sent.len() >= SPRAY_MAX
                    || self.trusted_best(now, config).is_some()
                    || !self.is_active(now, config)
            }
        };
        if over {
            self.end_spray(None, cx);
            return;
        }
        let node = self.node_id;
        let Some(spray) = &mut self.predict.spray else {
            return;
        };
        let elapsed = now.saturating_duration_since(spray.started);
        // One tick's worth at once, then the rate.
        let allowed = (u128::from(SPRAY_RATE) * (elapsed + SPRAY_TICK).as_millis() / 1000)
            .min(SPRAY_MAX as u128) as usize;
        while spray.sent.len() < allowed {
            // Uniform over FIRST_PORT..=65535 (the rejection of a port already probed keeps it so).
            let port = u16::try_from(cx.rng.next_u32() >> 16).unwrap_or(0);
            if port < FIRST_PORT {
                continue;
            }
            if spray.sent.contains_key(&port) {
                continue;
            }
            spray.sent.insert(port, now);
            cx.out.push(DiscoTransmit::Ping {
                node,
                dst: SendAddr::Udp(SocketAddr::new(spray.ip, port)),
                tx_id: spray.tx_id,
            });
        }
        spray.last_tick = now;
    }

    pub(in crate::paths) fn end_spray(&mut self, hit: Option<SocketAddr>, cx: &mut Ctx<'_>) {
        if let Some(spray) = self.predict.spray.take() {
            cx.events.push(PathEvent::SprayEnded {
                node: self.node_id,
                probes: spray.sent.len(),
                hit,
            });
        }
    }

    /// A pong that answers no ping of ours: a probe of the running spray, if its id is the spray's and it
    /// comes from a probed port of the sprayed IP. Then that address is a trusted path (as if pinged on
    /// its own) and the spray ends.
    pub(in crate::paths) fn handle_spray_pong(
        &mut self,
        now: Instant,
        from: &SendAddr,
        tx_id: TxId,
        cx: &mut Ctx<'_>,
    ) -> Option<()> {
        let spray = self.predict.spray.as_ref()?;
        let SendAddr::Udp(src) = from else {
            return None;
        };
        if spray.tx_id != tx_id || src.ip().to_canonical() != spray.ip {
            return None;
        }
        let sent_at = *spray.sent.get(&src.port())?;
        self.add_candidate(now, *src, Source::PeerReflexive, cx.config);
        // Recorded as a ping of its own, so the ordinary pong path makes it trusted and best.
        self.pings.insert(
            tx_id,
            SentPing {
                addr: *src,
                at: sent_at,
            },
        );
        if let Some(path) = self.paths.get_mut(src) {
            path.last_ping_sent = Some(path.last_ping_sent.map_or(sent_at, |at| at.max(sent_at)));
        }
        self.handle_pong(now, from, tx_id, cx.config)?;
        self.end_spray(Some(*src), cx);
        Some(())
    }

    /// When the spray next needs attention.
    pub(in crate::paths) fn next_spray_timeout(&self) -> Option<Instant> {
        let spray = self.predict.spray.as_ref()?;
        Some((spray.last_tick + SPRAY_TICK).min(spray.started + SPRAY_DURATION))
    }

    /// When the hard side's next check for prediction is due within the running round.
    pub(in crate::paths) fn next_predict_timeout(
        &self,
        started: Instant,
        config: &PathConfig,
    ) -> Option<Instant> {
        (self.predict.peer.reflexive.is_some()
            && self.predict.asked_at.is_none_or(|at| at < started))
        .then_some(started + config.prediction_after)
    }
}
