//! The PCP / NAT-PMP client: a sans-IO state machine that keeps one UDP mapping of our port on the
//! gateway.
//!
//! Fed `(now, input)`: the gateway (and our address toward it), packets from it, timeouts, a network
//! change, shutdown. It returns [`Transmit`]s to the gateway, [`MapperCore::poll_timeout`] and [`Event`]s.
//!
//! - **Probe.** A PCP MAP request and a NAT-PMP external-address request go out together (a PCP server
//!   answers both; a NAT-PMP-only one answers the PCP request with "unsupported version"), sent again
//!   after [`PROBE_GAPS`]. A PCP success maps at once; with NAT-PMP the mapping request follows the
//!   external address (its answer has no address). No answer at all: [`Event::Unavailable`] and a retry
//!   after [`BACKOFF_FIRST`], doubling to [`BACKOFF_MAX`], so a gateway that never answers costs at
//!   most [`PROBE_GAPS`]`.len() + 1` packets of each protocol per backoff period.
//! - **Keep.** The mapping is renewed at half its lifetime (retries [`RENEW_FIRST_GAP`] apart, doubling
//!   to [`RENEW_MAX_GAP`], until it runs out); between renewals a cheap request (PCP ANNOUNCE or NAT-PMP external address) every
//!   [`EPOCH_CHECK`] reads the gateway's epoch. An epoch that went back (RFC 6887 §8.5, RFC 6886 §3.6:
//!   the gateway restarted and forgot its mappings) or a new external address maps again at once.
//! - **Close.** [`MapperCore::shutdown`] deletes the mapping (lifetime 0), sent twice 250 ms apart
//!   unless acknowledged.

use std::{
    collections::VecDeque,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tracing::debug;

use super::{
    MappingProtocol, Protocol,
    natpmp::{self, NatPmpError},
    pcp::{self, PcpError},
};

/// The gaps between the sends of a probe (and of a NAT-PMP mapping request): four sends over 1.75 s,
/// then it has failed.
pub const PROBE_GAPS: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
];
/// How long a probe that got no answer to its last send waits before it fails.
pub const PROBE_LAST_WAIT: Duration = Duration::from_millis(2000);
/// The first pause after a failed probe.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(120);
/// The longest pause between probes.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30 * 60);
/// How often a kept mapping's gateway is asked for its epoch (one small packet).
pub const EPOCH_CHECK: Duration = Duration::from_secs(120);
/// The lifetime asked for by default (RFC 6886 §3.3 recommends two hours).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(7200);
/// The shortest lifetime a granted mapping is kept for (a gateway granting less is renewed this often).
pub const MIN_LIFETIME: Duration = Duration::from_secs(10);
/// The first gap between renewal attempts that got no answer (doubling up to [`RENEW_MAX_GAP`]).
pub const RENEW_FIRST_GAP: Duration = Duration::from_secs(5);
/// The longest gap between renewal attempts.
pub const RENEW_MAX_GAP: Duration = Duration::from_secs(64);
/// The gap between the two sends of a delete.
pub const DELETE_GAP: Duration = Duration::from_millis(250);

/// What to map.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our UDP port (the magic socket's).
    pub internal_port: u16,
    /// Lifetime to ask for (at least [`MIN_LIFETIME`]: 0 would delete).
    pub lifetime: Duration,
    /// Speak PCP.
    pub pcp: bool,
    /// Speak NAT-PMP.
    pub natpmp: bool,
}

impl Config {
    /// Both protocols, the default lifetime.
    pub fn new(internal_port: u16) -> Self {
        Self {
            internal_port,
            lifetime: DEFAULT_LIFETIME,
            pcp: true,
            natpmp: true,
        }
    }
}

/// The gateway to ask, and our address toward it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    /// The default route's next hop.
    pub ip: Ipv4Addr,
    /// Our address on that network (PCP requests carry it).
    pub local_ip: Ipv4Addr,
}

/// A packet to send to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where.
    pub dst: SocketAddr,
    /// What.
    pub payload: Vec<u8>,
}

/// A mapping the gateway granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// Which protocol made it.
    pub protocol: MappingProtocol,
    /// The public address that reaches our port.
    pub external: SocketAddrV4,
    /// How long it was granted for.
    pub lifetime: Duration,
    /// The gateway.
    pub gateway: Ipv4Addr,
}

/// What the core tells its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A new mapping, or a changed external address.
    Mapped(Mapping),
    /// The mapping is gone (not renewed in time, gateway changed, or the gateway forgot it).
    Lost(Mapping),
    /// The gateway answered neither protocol (or refused both): no mapping from here for now.
    Unavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No gateway, or shut down and done.
    Idle,
    /// PCP MAP and NAT-PMP external address out, waiting.
    Probing { sent: usize, next: Instant },
    /// NAT-PMP mapping request out.
    NatPmpMapping { sent: usize, next: Instant },
    /// Holding a mapping.
    Mapped {
        mapping: Mapping,
        renew_at: Instant,
        renew_gap: Duration,
        expires: Instant,
        check_at: Instant,
    },
    /// After a failed probe.
    Waiting { until: Instant },
    /// Deleting the mapping.
    Closing {
        protocol: MappingProtocol,
        sent: usize,
        next: Instant,
    },
}

#[derive(Debug, Clone, Copy)]
struct Epoch {
    value: u32,
    at: Instant,
}

/// The client: see the [module docs](self).
#[derive(Debug)]
pub struct MapperCore {
    config: Config,
    gateway: Option<Gateway>,
    phase: Phase,
    nonce: [u8; 12],
    /// PCP not refused (nor switched off).
    pcp_ok: bool,
    /// NAT-PMP not refused (nor switched off).
    natpmp_ok: bool,
    /// The external address NAT-PMP reported.
    natpmp_external: Option<Ipv4Addr>,
    epoch: Option<Epoch>,
    backoff: Duration,
    /// When the last probe began.
    last_probe: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl MapperCore {
    /// A client that does nothing until it is given a gateway.
    pub fn new(mut config: Config, seed: u64) -> Self {
        // Lifetime 0 would be a delete: at least the shortest kept.
        config.lifetime = config.lifetime.max(MIN_LIFETIME);
        let nonce = StdRng::seed_from_u64(seed).r#gen();
        Self {
            pcp_ok: config.pcp,
            natpmp_ok: config.natpmp,
            config,
            gateway: None,
            phase: Phase::Idle,
            nonce,
            natpmp_external: None,
            epoch: None,
            backoff: BACKOFF_FIRST,
            last_probe: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The gateway to use (`None`: no default route). A different one starts over: the old mapping is
    /// lost, the new gateway probed at once.
    pub fn set_gateway(&mut self, now: Instant, gateway: Option<Gateway>) {
        if gateway == self.gateway || matches!(self.phase, Phase::Closing { .. }) {
            return;
        }
        if let Phase::Mapped { mapping, .. } = self.phase {
            self.events.push_back(Event::Lost(mapping));
        }
        self.gateway = gateway;
        self.pcp_ok = self.config.pcp;
        self.natpmp_ok = self.config.natpmp;
        self.natpmp_external = None;
        self.epoch = None;
        self.backoff = BACKOFF_FIRST;
        // The nonce stays: a mapping made before a route blip belongs to it, and a PCP server refuses
        // changes to a mapping from another nonce (RFC 6887 §11.3).
        self.phase = Phase::Idle;
        if gateway.is_some() {
            self.start_probe(now);
        }
    }

    /// The network changed but the gateway may be the same: renew (or probe) at once rather than at the
    /// next timer.
    ///
    /// A core that is waiting after a failed probe probes again only if the last probe began at least
    /// [`BACKOFF_FIRST`] ago (interfaces that change every few seconds must not make a silent gateway
    /// cost more), and one that gave up on both protocols tries them again (the refusal may have been
    /// the old network's).
    pub fn network_changed(&mut self, now: Instant) {
        let probed_lately = self
            .last_probe
            .is_some_and(|at| now.saturating_duration_since(at) < BACKOFF_FIRST);
        match &mut self.phase {
            Phase::Mapped { renew_at, .. } => *renew_at = now,
            Phase::Waiting { .. } if !probed_lately => self.start_probe(now),
            Phase::Idle if self.gateway.is_some() && !probed_lately => {
                self.pcp_ok = self.config.pcp;
                self.natpmp_ok = self.config.natpmp;
                self.start_probe(now);
            }
            _ => {}
        }
        self.drive(now);
    }

    /// The mapping held now, if any.
    pub fn mapping(&self) -> Option<Mapping> {
        match self.phase {
            Phase::Mapped { mapping, .. } => Some(mapping),
            _ => None,
        }
    }

    /// Deletes the mapping (if any) and stops.
    pub fn shutdown(&mut self, now: Instant) {
        match self.phase {
            Phase::Mapped { mapping, .. } => {
                self.phase = Phase::Closing {
                    protocol: mapping.protocol,
                    sent: 0,
                    next: now,
                };
                self.drive(now);
            }
            // A MAP request is out: it may have made a mapping (with our lifetime); delete it.
            Phase::Probing { sent, .. } if sent > 0 && self.pcp_ok => {
                self.phase = Phase::Closing {
                    protocol: MappingProtocol::Pcp,
                    sent: 0,
                    next: now,
                };
                self.drive(now);
            }
            Phase::NatPmpMapping { sent, .. } if sent > 0 => {
                self.phase = Phase::Closing {
                    protocol: MappingProtocol::NatPmp,
                    sent: 0,
                    next: now,
                };
                self.drive(now);
            }
            Phase::Closing { .. } => {}
            _ => self.phase = Phase::Idle,
        }
    }

    /// Whether nothing is left to send (after [`MapperCore::shutdown`]: the delete is done).
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle && self.transmits.is_empty()
    }

    /// When [`MapperCore::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Idle => None,
            Phase::Probing { next, .. }
            | Phase::NatPmpMapping { next, .. }
            | Phase::Closing { next, .. } => Some(next),
            Phase::Mapped {
                renew_at,
                expires,
                check_at,
                ..
            } => Some(renew_at.min(expires).min(check_at)),
            Phase::Waiting { until } => Some(until),
        }
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drive(now);
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn start_probe(&mut self, now: Instant) {
        if !self.pcp_ok && !self.natpmp_ok {
            self.phase = Phase::Idle;
            return;
        }
        // What NAT-PMP said last time may be stale: this probe asks again.
        self.natpmp_external = None;
        self.last_probe = Some(now);
        self.phase = Phase::Probing { sent: 0, next: now };
        self.drive(now);
    }

    fn give_up(&mut self, now: Instant) {
        debug!(backoff = ?self.backoff, "no port mapping from the gateway");
        self.events.push_back(Event::Unavailable);
        self.phase = Phase::Waiting {
            until: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Sends what is due at `now` and moves the phase on.
    fn drive(&mut self, now: Instant) {
        let Some(gateway) = self.gateway else {
            return;
        };
        match self.phase {
            Phase::Idle => {}
            Phase::Probing { sent, next } if now >= next => {
                if sent > 0 && self.natpmp_external.is_some() && self.natpmp_ok {
                    // NAT-PMP answered and PCP did not (yet): map with NAT-PMP.
                    self.phase = Phase::NatPmpMapping { sent: 0, next: now };
                    return self.drive(now);
                }
                if sent > PROBE_GAPS.len() {
                    return self.give_up(now);
                }
                if self.pcp_ok {
                    self.send_pcp_map(gateway, self.config.lifetime, ANY);
                }
                if self.natpmp_ok {
                    self.send(natpmp::Request::ExternalAddress.to_vec(), gateway);
                }
                self.phase = Phase::Probing {
                    sent: sent + 1,
                    next: now + PROBE_GAPS.get(sent).copied().unwrap_or(PROBE_LAST_WAIT),
                };
            }
            Phase::NatPmpMapping { sent, next } if now >= next => {
                if sent > PROBE_GAPS.len() {
                    return self.give_up(now);
                }
                self.send_natpmp_map(gateway, self.config.lifetime, self.config.internal_port);
                self.phase = Phase::NatPmpMapping {
                    sent: sent + 1,
                    next: now + PROBE_GAPS.get(sent).copied().unwrap_or(PROBE_LAST_WAIT),
                };
            }
            Phase::Mapped {
                mapping,
                renew_at,
                renew_gap,
                expires,
                check_at,
            } => {
                if now >= expires {
                    debug!(external = %mapping.external, "port mapping ran out without a renewal");
                    self.events.push_back(Event::Lost(mapping));
                    return self.give_up(now);
                }
                let mut next_check = check_at;
                let mut next_renew = (renew_at, renew_gap);
                if now >= renew_at {
                    self.send_renewal(gateway, mapping);
                    next_renew = (
                        (now + renew_gap).min(expires),
                        (renew_gap * 2).min(RENEW_MAX_GAP),
                    );
                    next_check = now + EPOCH_CHECK;
                } else if now >= check_at {
                    match mapping.protocol {
                        MappingProtocol::Pcp => self.send(
                            pcp::Request {
                                lifetime: 0,
                                client_ip: gateway.local_ip.into(),
                                opcode: pcp::Opcode::Announce,
                            }
                            .to_vec(),
                            gateway,
                        ),
                        _ => self.send(natpmp::Request::ExternalAddress.to_vec(), gateway),
                    }
                    next_check = now + EPOCH_CHECK;
                }
                self.phase = Phase::Mapped {
                    mapping,
                    renew_at: next_renew.0,
                    renew_gap: next_renew.1,
                    expires,
                    check_at: next_check,
                };
            }
            Phase::Waiting { until } if now >= until => self.start_probe(now),
            Phase::Closing {
                protocol,
                sent,
                next,
            } if now >= next => {
                if sent >= 2 {
                    self.phase = Phase::Idle;
                    return;
                }
                match protocol {
                    MappingProtocol::Pcp => self.send_pcp_map(gateway, Duration::ZERO, ANY),
                    _ => self.send_natpmp_map(gateway, Duration::ZERO, 0),
                }
                self.phase = Phase::Closing {
                    protocol,
                    sent: sent + 1,
                    next: now + DELETE_GAP,
                };
            }
            _ => {}
        }
    }

    fn send(&mut self, payload: Vec<u8>, gateway: Gateway) {
        self.transmits.push_back(Transmit {
            dst: SocketAddr::new(gateway.ip.into(), natpmp::SERVER_PORT),
            payload,
        });
    }

    fn send_pcp_map(&mut self, gateway: Gateway, lifetime: Duration, external: SocketAddrV4) {
        let request = pcp::Request {
            lifetime: secs(lifetime),
            client_ip: gateway.local_ip.into(),
            opcode: pcp::Opcode::Map(pcp::Map {
                nonce: self.nonce,
                protocol: Protocol::Udp,
                internal_port: self.config.internal_port,
                external_port: external.port(),
                external_ip: (*external.ip()).into(),
            }),
        };
        self.send(request.to_vec(), gateway);
    }

    fn send_natpmp_map(&mut self, gateway: Gateway, lifetime: Duration, external_port: u16) {
        let request = natpmp::Request::Map {
            protocol: Protocol::Udp,
            internal_port: self.config.internal_port,
            external_port,
            lifetime: secs(lifetime),
        };
        self.send(request.to_vec(), gateway);
    }

    fn send_renewal(&mut self, gateway: Gateway, mapping: Mapping) {
        match mapping.protocol {
            MappingProtocol::Pcp => {
                // RFC 6887 §11.2.1: a renewal suggests what was assigned.
                self.send_pcp_map(gateway, self.config.lifetime, mapping.external);
            }
            _ => self.send_natpmp_map(gateway, self.config.lifetime, mapping.external.port()),
        }
    }

    /// The gateway's port 5351 is closed (an ICMP port unreachable came back on a socket connected to
    /// it): neither protocol is there. A probe gives up at once instead of after its last resend (what
    /// lets UPnP start early on a router that speaks only UPnP); a held mapping is kept (renewals retry).
    pub fn handle_unreachable(&mut self, now: Instant) {
        if matches!(
            self.phase,
            Phase::Probing { .. } | Phase::NatPmpMapping { .. }
        ) {
            debug!("the gateway's PCP / NAT-PMP port is closed");
            self.give_up(now);
        }
    }

    /// A packet from `from`. Only the gateway's port 5351 is listened to.
    pub fn handle_packet(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Some(gateway) = self.gateway else { return };
        if from.ip() != gateway.ip || from.port() != natpmp::SERVER_PORT {
            return;
        }
        match bytes.first() {
            Some(&natpmp::VERSION) => match natpmp::Response::parse(bytes) {
                Ok(response) => self.on_natpmp(now, gateway, response),
                Err(NatPmpError::NotResponse) => {}
                Err(error) => debug!(%error, "ignoring a NAT-PMP packet from the gateway"),
            },
            Some(&pcp::VERSION) => match pcp::Response::parse(bytes) {
                Ok(response) => self.on_pcp(now, gateway, response),
                Err(PcpError::NotResponse) => {}
                Err(error) => debug!(%error, "ignoring a PCP packet from the gateway"),
            },
            _ => debug!(
                len = bytes.len(),
                "ignoring a packet of another version from the gateway"
            ),
        }
    }

    /// Checks the gateway's epoch; `true` if it went back (the gateway lost its mappings).
    /// Checks the gateway's epoch `value` (seconds since its state began) against the last one; `true`
    /// if the gateway lost its state since. PCP (RFC 6887 §8.5): the two clocks' deltas may differ by a
    /// sixteenth and 2 s, either way (ours running ahead also catches a host that slept: `Instant` stops
    /// in suspend, the gateway's mappings ran out meanwhile). NAT-PMP (RFC 6886 §3.6): the gateway's
    /// delta may not fall below 7/8 of ours, minus 2 s.
    fn epoch_went_back(&mut self, now: Instant, value: u32, pcp: bool) -> bool {
        let lost = self.epoch.is_some_and(|prev| {
            if value < prev.value {
                return true;
            }
            let client = now.saturating_duration_since(prev.at).as_secs_f64();
            let server = f64::from(value - prev.value);
            if pcp {
                server + 2.0 < client - client / 16.0 || client + 2.0 < server - server / 16.0
            } else {
                server + 2.0 < client * 7.0 / 8.0
            }
        });
        self.epoch = Some(Epoch { value, at: now });
        lost
    }

    fn remap_now(&mut self, now: Instant) {
        if let Phase::Mapped { renew_at, .. } = &mut self.phase {
            debug!("the gateway restarted: mapping again");
            *renew_at = now;
            self.drive(now);
        }
    }

    fn on_natpmp(&mut self, now: Instant, gateway: Gateway, response: natpmp::Response) {
        if self.epoch_went_back(now, response.epoch(), false) {
            self.remap_now(now);
        }
        match response {
            natpmp::Response::ExternalAddress { addr, .. } => {
                let changed = self.natpmp_external.is_some_and(|old| old != addr);
                self.natpmp_external = Some(addr);
                match self.phase {
                    Phase::Probing { .. } if !self.pcp_ok => {
                        self.phase = Phase::NatPmpMapping { sent: 0, next: now };
                        self.drive(now);
                    }
                    Phase::Mapped { mapping, .. }
                        if mapping.protocol == MappingProtocol::NatPmp && changed =>
                    {
                        self.remap_now(now);
                    }
                    _ => {}
                }
            }
            natpmp::Response::Mapped {
                protocol: Protocol::Udp,
                internal_port,
                external_port,
                lifetime,
                ..
            } if internal_port == self.config.internal_port => {
                if lifetime == 0 {
                    if matches!(self.phase, Phase::Closing { .. }) {
                        self.phase = Phase::Idle;
                    }
                    return;
                }
                let Some(ip) = self.natpmp_external else {
                    return;
                };
                let ours = match self.phase {
                    Phase::NatPmpMapping { .. } => true,
                    Phase::Mapped { mapping, .. } => mapping.protocol == MappingProtocol::NatPmp,
                    _ => false,
                };
                if ours {
                    let external = SocketAddrV4::new(ip, external_port);
                    self.granted(now, gateway, MappingProtocol::NatPmp, external, lifetime);
                }
            }
            natpmp::Response::Failed { opcode, code, .. } => {
                if code == natpmp::ResultCode::UnsupportedVersion {
                    // A NAT-PMP-only gateway's answer to our PCP request.
                    return self.pcp_refused(now, "the gateway speaks NAT-PMP only");
                }
                debug!(opcode, ?code, "NAT-PMP request refused");
                // Refusals that last switch NAT-PMP off for this gateway; the others (no uplink yet, out
                // of ports) are retried after the backoff.
                if matches!(
                    code,
                    natpmp::ResultCode::NotAuthorized | natpmp::ResultCode::UnsupportedOpcode
                ) {
                    self.natpmp_ok = false;
                }
                match self.phase {
                    Phase::NatPmpMapping { .. } => self.give_up(now),
                    Phase::Probing { .. } if !self.pcp_ok => self.give_up(now),
                    _ => {}
                }
            }
            natpmp::Response::Mapped { .. } => {}
        }
    }

    fn pcp_refused(&mut self, now: Instant, why: &str) {
        debug!(why, "no PCP");
        self.pcp_ok = false;
        if let Phase::Probing { .. } = self.phase {
            if self.natpmp_ok && self.natpmp_external.is_some() {
                self.phase = Phase::NatPmpMapping { sent: 0, next: now };
                self.drive(now);
            } else if !self.natpmp_ok {
                self.give_up(now);
            }
        }
    }

    fn on_pcp(&mut self, now: Instant, gateway: Gateway, response: pcp::Response) {
        if self.epoch_went_back(now, response.epoch, true) {
            self.remap_now(now);
        }
        if let pcp::Opcode::Map(map) = response.opcode {
            let ours = map.nonce == self.nonce
                && map.internal_port == self.config.internal_port
                && map.protocol == Protocol::Udp;
            let bodyless_failure =
                map.nonce == [0; 12] && response.result != pcp::ResultCode::Success;
            if !ours && !bodyless_failure {
                return;
            }
            match response.result {
                pcp::ResultCode::Success if response.lifetime == 0 => {
                    if matches!(self.phase, Phase::Closing { .. }) {
                        self.phase = Phase::Idle;
                    }
                }
                pcp::ResultCode::Success => {
                    let std::net::IpAddr::V4(ip) = map.external_ip else {
                        return self.pcp_refused(now, "an IPv6 external address for IPv4");
                    };
                    let wanted = match self.phase {
                        Phase::Probing { .. } => true,
                        Phase::Mapped { mapping, .. } => mapping.protocol == MappingProtocol::Pcp,
                        _ => false,
                    };
                    if wanted {
                        let external = SocketAddrV4::new(ip, map.external_port);
                        self.granted(
                            now,
                            gateway,
                            MappingProtocol::Pcp,
                            external,
                            response.lifetime,
                        );
                    }
                }
                code if code.is_long_lived() => {
                    self.pcp_refused(now, "the gateway refused PCP");
                }
                code => {
                    debug!(
                        ?code,
                        lifetime = response.lifetime,
                        "PCP mapping refused for now"
                    );
                    if let Phase::Probing { .. } = self.phase
                        && !(self.natpmp_ok && self.natpmp_external.is_some())
                    {
                        self.give_up(now);
                    }
                }
            }
        }
    }

    fn granted(
        &mut self,
        now: Instant,
        gateway: Gateway,
        protocol: MappingProtocol,
        external: SocketAddrV4,
        lifetime: u32,
    ) {
        if !is_usable_external(external) {
            // A gateway behind another NAT (or confused) hands out an address no peer can reach: not
            // worth publishing, and not worth asking again soon.
            debug!(protocol = protocol.name(), %external, "the mapped address is not public");
            return self.give_up(now);
        }
        let lifetime = Duration::from_secs(lifetime.into()).max(MIN_LIFETIME);
        let mapping = Mapping {
            protocol,
            external,
            lifetime,
            gateway: gateway.ip,
        };
        let before = self.mapping();
        if before.map(|m| (m.protocol, m.external)) != Some((protocol, external)) {
            debug!(protocol = protocol.name(), %external, ?lifetime, "port mapped");
            if let Some(old) = before {
                self.events.push_back(Event::Lost(old));
            }
            self.events.push_back(Event::Mapped(mapping));
        }
        self.backoff = BACKOFF_FIRST;
        self.phase = Phase::Mapped {
            mapping,
            renew_at: now + lifetime / 2,
            renew_gap: RENEW_FIRST_GAP,
            expires: now + lifetime,
            check_at: now + EPOCH_CHECK.min(lifetime / 4),
        };
    }
}

/// "Any address and port" in a PCP request.
const ANY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);

/// Whether a mapped external address is worth publishing: a port, and an address peers elsewhere can
/// reach (not unspecified, loopback, private, shared/CGNAT 100.64.0.0/10, link-local, multicast or
/// broadcast).
pub fn is_usable_external(addr: SocketAddrV4) -> bool {
    let ip = addr.ip();
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b);
    addr.port() != 0
        && !(ip.is_unspecified()
            || ip.is_loopback()
            || ip.is_private()
            || ip.is_link_local()
            || ip.is_multicast()
            || ip.is_broadcast()
            || shared)
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
