use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use proptest::prelude::*;

use super::{
    MappingProtocol, Protocol,
    client::{self, Config, Event, Gateway, MapperCore},
    natpmp, pcp,
};

// ---- codecs ----

#[test]
fn natpmp_bytes_are_the_rfc_layout() {
    // RFC 6886 §3.3: version 0, opcode 1 (UDP), reserved, internal port, suggested port, lifetime.
    let map = natpmp::Request::Map {
        protocol: Protocol::Udp,
        internal_port: 8080,
        external_port: 8081,
        lifetime: 7200,
    };
    assert_eq!(
        map.to_vec(),
        [0, 1, 0, 0, 0x1f, 0x90, 0x1f, 0x91, 0, 0, 0x1c, 0x20]
    );
    assert_eq!(natpmp::Request::ExternalAddress.to_vec(), [0, 0]);
    // §3.2 answer: version, 128, result 0, epoch 1000, 198.51.100.7.
    let answer = [0, 128, 0, 0, 0, 0, 0x03, 0xe8, 198, 51, 100, 7];
    assert_eq!(
        natpmp::Response::parse(&answer),
        Ok(natpmp::Response::ExternalAddress {
            epoch: 1000,
            addr: Ipv4Addr::new(198, 51, 100, 7)
        })
    );
    // A refusal is read from its first eight bytes; the rest is undefined (§3.5).
    let refused = [0, 129, 0, 2, 0, 0, 0, 5];
    assert_eq!(
        natpmp::Response::parse(&refused),
        Ok(natpmp::Response::Failed {
            epoch: 5,
            opcode: 1,
            code: natpmp::ResultCode::NotAuthorized
        })
    );
    assert_eq!(
        natpmp::Response::parse(&[0, 1, 0, 0, 0, 0, 0, 0]),
        Err(natpmp::NatPmpError::NotResponse)
    );
    assert_eq!(
        natpmp::Response::parse(&[0, 129, 0, 0, 0, 0, 0, 0, 1]),
        Err(natpmp::NatPmpError::Truncated)
    );
}

#[test]
fn pcp_bytes_are_the_rfc_layout() {
    let nonce = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    let request = pcp::Request {
        lifetime: 7200,
        client_ip: Ipv4Addr::new(10, 0, 0, 2).into(),
        opcode: pcp::Opcode::Map(pcp::Map {
            nonce,
            protocol: Protocol::Udp,
            internal_port: 4000,
            external_port: 0,
            external_ip: Ipv4Addr::UNSPECIFIED.into(),
        }),
    };
    let bytes = request.to_vec();
    let mut expected = vec![2, 1, 0, 0, 0, 0, 0x1c, 0x20];
    expected.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2]);
    expected.extend(nonce);
    expected.extend([17, 0, 0, 0, 0x0f, 0xa0, 0, 0]);
    expected.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), request.encoded_len());
    assert_eq!(pcp::Request::parse(&bytes), Ok(request));
    // An answer with an option after the body (code 2, 4 bytes of data) is read; a bad option length,
    // a length not a multiple of four and an over-long message are refused.
    let mut answer = pcp::Response {
        result: pcp::ResultCode::Success,
        lifetime: 3600,
        epoch: 77,
        opcode: request.opcode,
    }
    .to_vec();
    assert_eq!(&answer[..4], [2, 0x81, 0, 0]);
    answer.extend([2, 0, 0, 4, 9, 9, 9, 9]);
    assert!(pcp::Response::parse(&answer).is_ok());
    let mut bad_option = answer.clone();
    bad_option.extend([2, 0, 0, 8, 1, 1, 1, 1]);
    assert_eq!(
        pcp::Response::parse(&bad_option),
        Err(pcp::PcpError::Truncated)
    );
    assert_eq!(
        pcp::Response::parse(&answer[..answer.len() - 1]),
        Err(pcp::PcpError::Length(answer.len() - 1))
    );
    assert_eq!(
        pcp::Response::parse(&[2u8; 1104]),
        Err(pcp::PcpError::Length(1104))
    );
    // A refusal without its body (a server that did not read it) still parses.
    let mut bare = vec![2, 0x81, 0, 3, 0, 0, 0, 30, 0, 0, 0, 9];
    bare.extend([0; 12]);
    let parsed = pcp::Response::parse(&bare).unwrap();
    assert_eq!(parsed.result, pcp::ResultCode::MalformedRequest);
    assert!(parsed.result.is_long_lived());
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>()
            .prop_map(|b| IpAddr::V6(Ipv6Addr::from(b)))
            .prop_filter("not v4-mapped", |ip| match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().is_none(),
                IpAddr::V4(_) => true,
            }),
    ]
}

fn arb_protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(Protocol::Udp), Just(Protocol::Tcp)]
}

fn arb_pcp_opcode() -> impl Strategy<Value = pcp::Opcode> {
    prop_oneof![
        Just(pcp::Opcode::Announce),
        (
            any::<[u8; 12]>(),
            arb_protocol(),
            any::<u16>(),
            any::<u16>(),
            arb_ip()
        )
            .prop_map(
                |(nonce, protocol, internal_port, external_port, external_ip)| {
                    pcp::Opcode::Map(pcp::Map {
                        nonce,
                        protocol,
                        internal_port,
                        external_port,
                        external_ip,
                    })
                }
            ),
    ]
}

proptest! {
    #[test]
    fn natpmp_round_trips(protocol in arb_protocol(), a in any::<u16>(), b in any::<u16>(),
                          lifetime in any::<u32>(), epoch in any::<u32>(), ip in any::<[u8; 4]>()) {
        for request in [natpmp::Request::ExternalAddress, natpmp::Request::Map {
            protocol, internal_port: a, external_port: b, lifetime }] {
            let bytes = request.to_vec();
            prop_assert_eq!(bytes.len(), request.encoded_len());
            prop_assert_eq!(natpmp::Request::parse(&bytes), Ok(request));
        }
        for response in [
            natpmp::Response::ExternalAddress { epoch, addr: Ipv4Addr::from(ip) },
            natpmp::Response::Mapped { epoch, protocol, internal_port: a, external_port: b, lifetime },
            natpmp::Response::Failed { epoch, opcode: 1, code: natpmp::ResultCode::OutOfResources },
        ] {
            let bytes = response.to_vec();
            prop_assert_eq!(bytes.len(), response.encoded_len());
            prop_assert_eq!(natpmp::Response::parse(&bytes), Ok(response));
        }
    }

    #[test]
    fn pcp_round_trips(opcode in arb_pcp_opcode(), lifetime in any::<u32>(), epoch in any::<u32>(),
                       client_ip in arb_ip(), code in 0u8..20) {
        let request = pcp::Request { lifetime, client_ip, opcode };
        let bytes = request.to_vec();
        prop_assert_eq!(bytes.len(), request.encoded_len());
        prop_assert_eq!(pcp::Request::parse(&bytes), Ok(request));
        let mut bytes =
            pcp::Response { result: pcp::ResultCode::Success, lifetime, epoch, opcode }.to_vec();
        bytes[3] = code;
        let response = pcp::Response::parse(&bytes).unwrap();
        prop_assert_eq!((response.lifetime, response.epoch, response.opcode), (lifetime, epoch, opcode));
        prop_assert_eq!(response.to_vec(), bytes);
    }

    #[test]
    fn any_bytes_are_harmless(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        // Whatever reads re-encodes to something that reads the same.
        if let Ok(r) = natpmp::Request::parse(&bytes) {
            prop_assert_eq!(natpmp::Request::parse(&r.to_vec()), Ok(r));
        }
        if let Ok(r) = natpmp::Response::parse(&bytes) {
            prop_assert_eq!(natpmp::Response::parse(&r.to_vec()), Ok(r));
        }
        if let Ok(r) = pcp::Request::parse(&bytes) {
            prop_assert_eq!(pcp::Request::parse(&r.to_vec()), Ok(r));
        }
        if let Ok(r) = pcp::Response::parse(&bytes) {
            prop_assert_eq!(pcp::Response::parse(&r.to_vec()), Ok(r));
        }
        let mut core = MapperCore::new(Config::new(4000), 1);
        let t0 = Instant::now();
        core.set_gateway(t0, Some(GATEWAY));
        core.handle_packet(t0, SERVER, &bytes);
        core.handle_timeout(t0 + Duration::from_secs(1));
    }
}

// ---- the client against a simulated gateway ----

const GATEWAY: Gateway = Gateway {
    ip: Ipv4Addr::new(10, 0, 0, 1),
    local_ip: Ipv4Addr::new(10, 0, 0, 2),
};
const SERVER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 5351));
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const PORT: u16 = 4000;

/// A gateway speaking what it is told to, from our own codecs.
struct FakeGateway {
    pcp: bool,
    natpmp: bool,
    /// Drop PCP requests instead of answering "unsupported version".
    silent_to_pcp: bool,
    /// When its epoch began.
    started: Instant,
    /// Granted at most this.
    max_lifetime: u32,
    /// internal port -> (external port, nonce)
    mappings: HashMap<u16, (u16, [u8; 12])>,
    answering: bool,
    /// Refuse PCP changes to a mapping from another nonce (RFC 6887 §11.3).
    check_nonces: bool,
    /// NAT-PMP mapping requests refused with "network failure" before one succeeds.
    natpmp_failures: u32,
    /// The address it maps to.
    external: Ipv4Addr,
}

impl FakeGateway {
    fn new(now: Instant, pcp: bool, natpmp: bool) -> Self {
        Self {
            pcp,
            natpmp,
            silent_to_pcp: false,
            started: now,
            max_lifetime: 3600,
            mappings: HashMap::new(),
            answering: true,
            check_nonces: false,
            natpmp_failures: 0,
            external: EXTERNAL,
        }
    }

    fn epoch(&self, now: Instant) -> u32 {
        u32::try_from(now.duration_since(self.started).as_secs()).unwrap()
    }

    fn restart(&mut self, now: Instant) {
        self.started = now;
        self.mappings.clear();
    }

    fn answer(&mut self, now: Instant, bytes: &[u8]) -> Option<Vec<u8>> {
        if !self.answering {
            return None;
        }
        let epoch = self.epoch(now);
        match bytes.first()? {
            0 if self.natpmp => {
                let response = match natpmp::Request::parse(bytes).ok()? {
                    natpmp::Request::ExternalAddress => natpmp::Response::ExternalAddress {
                        epoch,
                        addr: self.external,
                    },
                    natpmp::Request::Map { lifetime, .. }
                        if lifetime > 0 && self.natpmp_failures > 0 =>
                    {
                        self.natpmp_failures -= 1;
                        natpmp::Response::Failed {
                            epoch,
                            opcode: 1,
                            code: natpmp::ResultCode::NetworkFailure,
                        }
                    }
                    natpmp::Request::Map {
                        protocol,
                        internal_port,
                        lifetime,
                        ..
                    } => {
                        let lifetime = lifetime.min(self.max_lifetime);
                        let external_port = if lifetime == 0 {
                            self.mappings.remove(&internal_port);
                            0
                        } else {
                            self.mappings
                                .entry(internal_port)
                                .or_insert((50_000, [0; 12]))
                                .0
                        };
                        natpmp::Response::Mapped {
                            epoch,
                            protocol,
                            internal_port,
                            external_port,
                            lifetime,
                        }
                    }
                };
                Some(response.to_vec())
            }
            2 if self.pcp => {
                let request = pcp::Request::parse(bytes).ok()?;
                let (result, lifetime, opcode) = match request.opcode {
                    pcp::Opcode::Announce => (pcp::ResultCode::Success, 0, request.opcode),
                    pcp::Opcode::Map(map)
                        if self.check_nonces
                            && self
                                .mappings
                                .get(&map.internal_port)
                                .is_some_and(|(_, nonce)| *nonce != map.nonce) =>
                    {
                        (pcp::ResultCode::NotAuthorized, 0, request.opcode)
                    }
                    pcp::Opcode::Map(mut map) => {
                        let lifetime = request.lifetime.min(self.max_lifetime);
                        if lifetime == 0 {
                            self.mappings.remove(&map.internal_port);
                        } else {
                            let entry = self
                                .mappings
                                .entry(map.internal_port)
                                .or_insert((50_001, map.nonce));
                            map.external_port = entry.0;
                        }
                        map.external_ip = self.external.into();
                        (pcp::ResultCode::Success, lifetime, pcp::Opcode::Map(map))
                    }
                };
                Some(
                    pcp::Response {
                        result,
                        lifetime,
                        epoch,
                        opcode,
                    }
                    .to_vec(),
                )
            }
            2 if self.natpmp && !self.silent_to_pcp => Some(
                natpmp::Response::Failed {
                    epoch,
                    opcode: bytes.get(1).copied().unwrap_or(0) & 0x7f,
                    code: natpmp::ResultCode::UnsupportedVersion,
                }
                .to_vec(),
            ),
            _ => None,
        }
    }
}

struct Lab {
    now: Instant,
    core: MapperCore,
    gateway: FakeGateway,
    sent: Vec<(Instant, Vec<u8>)>,
    events: Vec<(Instant, Event)>,
}

impl Lab {
    fn new(pcp: bool, natpmp: bool) -> Self {
        Self::with(pcp, natpmp, |_| {})
    }

    fn with(pcp: bool, natpmp: bool, tweak: impl FnOnce(&mut FakeGateway)) -> Self {
        let now = Instant::now();
        let mut gateway = FakeGateway::new(now, pcp, natpmp);
        tweak(&mut gateway);
        let mut core = MapperCore::new(Config::new(PORT), 7);
        core.set_gateway(now, Some(GATEWAY));
        let mut lab = Self {
            now,
            core,
            gateway,
            sent: Vec::new(),
            events: Vec::new(),
        };
        lab.exchange();
        lab
    }

    /// Delivers what the core sends (answers arrive 1 ms later, within the same step).
    fn exchange(&mut self) {
        loop {
            let mut any = false;
            while let Some(t) = self.core.poll_transmit() {
                any = true;
                assert_eq!(t.dst, SERVER);
                self.sent.push((self.now, t.payload.clone()));
                if let Some(answer) = self.gateway.answer(self.now, &t.payload) {
                    self.core.handle_packet(self.now, SERVER, &answer);
                }
            }
            while let Some(e) = self.core.poll_event() {
                self.events.push((self.now, e));
            }
            if !any {
                return;
            }
        }
    }

    fn run_until(&mut self, until: Instant) {
        loop {
            self.exchange();
            match self.core.poll_timeout() {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    self.core.handle_timeout(self.now);
                }
                _ => {
                    self.now = until;
                    self.exchange();
                    return;
                }
            }
        }
    }

    fn mapped(&self) -> Vec<client::Mapping> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Mapped(m) => Some(*m),
                _ => None,
            })
            .collect()
    }

    fn sent_between(&self, from: Instant, to: Instant) -> usize {
        self.sent
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .count()
    }
}

#[test]
fn a_pcp_gateway_maps_at_once_renews_and_deletes() {
    let mut lab = Lab::new(true, true);
    let t0 = lab.now;
    let mapped = lab.mapped();
    assert_eq!(mapped.len(), 1, "{:?}", lab.events);
    assert_eq!(mapped[0].protocol, MappingProtocol::Pcp);
    assert_eq!(mapped[0].external, SocketAddrV4::new(EXTERNAL, 50_001));
    assert_eq!(mapped[0].lifetime, Duration::from_secs(3600));
    // Renewed at half the lifetime granted, with no new event; a few packets an hour in all.
    lab.run_until(t0 + Duration::from_secs(3 * 3600));
    assert_eq!(lab.mapped().len(), 1);
    assert!(lab.core.mapping().is_some());
    let renewals = lab
        .sent
        .iter()
        .filter(|(_, p)| p[0] == 2 && p[1] == 1)
        .count();
    assert_eq!(renewals, 1 + 6, "a MAP at start and one each half hour");
    assert!(lab.sent.len() < 3 * 60, "{} packets in 3 h", lab.sent.len());
    // Close: a delete (lifetime 0, same nonce), acknowledged.
    lab.core.shutdown(lab.now);
    lab.exchange();
    let last = pcp::Request::parse(&lab.sent.last().unwrap().1).unwrap();
    assert_eq!(last.lifetime, 0);
    assert!(lab.core.is_idle());
    assert!(lab.gateway.mappings.is_empty());
}

#[test]
fn a_natpmp_only_gateway_maps_by_natpmp() {
    for silent in [false, true] {
        let mut lab = Lab::with(false, true, |g| g.silent_to_pcp = silent);
        let now = lab.now;
        lab.run_until(now + Duration::from_secs(5));
        let mapped = lab.mapped();
        assert_eq!(mapped.len(), 1, "silent to PCP: {silent}: {:?}", lab.events);
        assert_eq!(mapped[0].protocol, MappingProtocol::NatPmp);
        assert_eq!(mapped[0].external, SocketAddrV4::new(EXTERNAL, 50_000));
        let at = lab.events[0].0 - now;
        // At once when the gateway says "unsupported version"; at the first resend when it says nothing.
        let limit = if silent { 300 } else { 1 };
        assert!(at <= Duration::from_millis(limit), "{silent}: after {at:?}");
        lab.core.shutdown(lab.now);
        lab.exchange();
        assert!(lab.gateway.mappings.is_empty(), "deleted by NAT-PMP");
        assert!(lab.core.is_idle());
    }
}

#[test]
fn a_silent_gateway_costs_a_few_packets_a_minute() {
    let mut lab = Lab::new(false, false);
    let t0 = lab.now;
    lab.run_until(t0 + Duration::from_secs(10));
    assert_eq!(lab.sent.len(), 8, "four sends of two requests");
    assert!(matches!(lab.events.as_slice(), [(_, Event::Unavailable)]));
    lab.run_until(t0 + Duration::from_secs(6 * 3600));
    for minute in 0..360u32 {
        let from = t0 + Duration::from_secs(60 * u64::from(minute));
        let n = lab.sent_between(from, from + Duration::from_secs(60));
        assert!(n <= 8, "{n} packets in minute {minute}");
    }
    // After the backoff grew to its cap: 8 packets per 30 minutes.
    let late = lab.sent_between(
        t0 + Duration::from_secs(4 * 3600),
        t0 + Duration::from_secs(6 * 3600),
    );
    assert!(late <= 8 * 5, "{late} packets in the last two hours");
    // A network change probes again at once, unless a probe began less than 2 minutes ago: interfaces
    // that change every second cost a silent gateway nothing more.
    let last_probe = lab.sent.last().unwrap().0;
    let probe_start = lab
        .sent
        .iter()
        .rev()
        .map(|(t, _)| *t)
        .take_while(|t| *t + Duration::from_secs(10) > last_probe)
        .last()
        .unwrap();
    lab.now = probe_start + Duration::from_secs(60);
    let before = lab.sent.len();
    for second in 0..30 {
        lab.core
            .network_changed(lab.now + Duration::from_secs(second));
        lab.exchange();
    }
    assert_eq!(
        lab.sent.len(),
        before,
        "no probe on changes right after one"
    );
    lab.now = probe_start + client::BACKOFF_FIRST;
    lab.core.network_changed(lab.now);
    lab.exchange();
    assert_eq!(
        lab.sent.len(),
        before + 2,
        "a probe at once once 2 minutes passed"
    );
    // Shut down mid-probe: the PCP request may have made a mapping, so a delete goes out (twice, as
    // nothing answers).
    lab.core.shutdown(lab.now);
    lab.run_until(lab.now + Duration::from_secs(1));
    let deletes: Vec<pcp::Request> = lab.sent[before + 2..]
        .iter()
        .filter_map(|(_, p)| pcp::Request::parse(p).ok())
        .collect();
    assert_eq!(deletes.len(), 2);
    assert!(deletes.iter().all(|d| d.lifetime == 0));
    assert!(lab.core.is_idle());
}

#[test]
fn a_route_blip_keeps_the_nonce_and_the_mapping() {
    let mut lab = Lab::new(true, false);
    let first = lab.mapped()[0];
    lab.gateway.check_nonces = true;
    lab.core.set_gateway(lab.now, None);
    lab.core.set_gateway(lab.now, Some(GATEWAY));
    lab.exchange();
    let mapped = lab.mapped();
    assert_eq!(mapped.len(), 2, "{:?}", lab.events);
    assert_eq!(
        mapped[1].external, first.external,
        "the same mapping, same nonce"
    );
    assert_eq!(mapped[1].protocol, MappingProtocol::Pcp);
}

#[test]
fn a_short_lived_natpmp_refusal_is_retried() {
    let mut lab = Lab::with(false, true, |g| g.natpmp_failures = 1);
    let t0 = lab.now;
    assert!(lab.mapped().is_empty());
    assert!(lab.events.iter().any(|(_, e)| *e == Event::Unavailable));
    lab.run_until(t0 + client::BACKOFF_FIRST + Duration::from_secs(5));
    let mapped = lab.mapped();
    assert_eq!(mapped.len(), 1, "{:?}", lab.events);
    assert_eq!(mapped[0].protocol, MappingProtocol::NatPmp);
}

#[test]
fn a_private_external_address_is_not_published() {
    for external in [Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(100, 64, 0, 9)] {
        let lab = Lab::with(true, true, |g| g.external = external);
        assert!(lab.mapped().is_empty(), "{external}");
        assert!(lab.core.mapping().is_none());
        assert!(lab.events.iter().any(|(_, e)| *e == Event::Unavailable));
    }
    assert!(client::is_usable_external(
        "198.51.100.7:4000".parse().unwrap()
    ));
    assert!(!client::is_usable_external(
        "198.51.100.7:0".parse().unwrap()
    ));
}

#[test]
fn a_gateway_clock_that_jumped_ahead_is_mapped_again() {
    // Our Instant stops while the host sleeps; the gateway's epoch does not, and it let the mapping
    // run out meanwhile. A PCP epoch far ahead of our clock means: map again (RFC 6887 §8.5).
    let mut lab = Lab::new(true, false);
    let t0 = lab.now;
    lab.run_until(t0 + Duration::from_secs(300));
    lab.gateway.started -= Duration::from_secs(4 * 3600);
    lab.gateway.mappings.clear();
    lab.run_until(lab.now + client::EPOCH_CHECK + Duration::from_secs(1));
    assert!(lab.gateway.mappings.contains_key(&PORT), "mapped again");
}

#[test]
fn a_gateway_restart_is_noticed_by_its_epoch_and_mapped_again() {
    let mut lab = Lab::new(true, true);
    let t0 = lab.now;
    lab.run_until(t0 + Duration::from_secs(600));
    // The gateway restarts: its mappings are gone and its epoch starts over.
    lab.gateway.restart(lab.now);
    lab.gateway.mappings.clear();
    let restarted = lab.now;
    lab.run_until(restarted + client::EPOCH_CHECK + Duration::from_secs(1));
    assert_eq!(
        lab.gateway.mappings.get(&PORT).map(|m| m.0),
        Some(50_001),
        "mapped again within one epoch check"
    );
    assert!(lab.core.mapping().is_some());
}

#[test]
fn an_unanswered_renewal_loses_the_mapping_and_a_new_gateway_starts_over() {
    let mut lab = Lab::new(true, true);
    let t0 = lab.now;
    lab.gateway.answering = false;
    lab.run_until(t0 + Duration::from_secs(3601));
    assert!(
        lab.events
            .iter()
            .any(|(at, e)| matches!(e, Event::Lost(_)) && *at == t0 + Duration::from_secs(3600)),
        "{:?}",
        lab.events
    );
    assert!(lab.core.mapping().is_none());
    // Renewal retries between half and full lifetime stay a few a minute.
    for minute in 30..60u64 {
        let from = t0 + Duration::from_secs(60 * minute);
        assert!(lab.sent_between(from, from + Duration::from_secs(60)) <= 4);
    }
    // Another gateway: probed at once; the old one's mapping is not reported twice.
    lab.gateway.answering = true;
    lab.events.clear();
    let other = Gateway {
        ip: Ipv4Addr::new(10, 0, 0, 1),
        local_ip: Ipv4Addr::new(10, 0, 0, 3),
    };
    lab.core.set_gateway(lab.now, Some(other));
    lab.exchange();
    assert_eq!(lab.mapped().len(), 1);
    assert!(!lab.events.iter().any(|(_, e)| matches!(e, Event::Lost(_))));
}

#[test]
fn packets_from_elsewhere_are_ignored() {
    let mut lab = Lab::new(false, false);
    let answer = natpmp::Response::ExternalAddress {
        epoch: 1,
        addr: EXTERNAL,
    }
    .to_vec();
    for from in [
        "10.0.0.9:5351".parse().unwrap(),
        "10.0.0.1:5350".parse().unwrap(),
    ] {
        lab.core.handle_packet(lab.now, from, &answer);
    }
    lab.run_until(lab.now + Duration::from_secs(1));
    assert!(
        lab.sent
            .iter()
            .all(|(_, p)| p.len() != 12 || p[0] != 0 || p[1] != 1)
    );
}

#[cfg(feature = "quic")]
#[test]
fn the_default_gateway_is_read_from_the_route_table() {
    use super::service::parse_route_table;
    let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth1\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
        eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
        eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
    assert_eq!(
        parse_route_table(table),
        Some(Ipv4Addr::new(192, 0, 2, 1)),
        "lowest metric"
    );
    let no_default = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
        eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
    assert_eq!(parse_route_table(no_default), None);
    assert_eq!(parse_route_table("garbage\n\n1 2 3"), None);
    // A default route that is down (flags without UP) does not count.
    let down = "h\neth0\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\n";
    assert_eq!(parse_route_table(down), None);
}

#[test]
fn a_closed_port_ends_the_probe_at_once() {
    let mut lab = Lab::new(false, false);
    let t0 = lab.now;
    assert_eq!(lab.sent.len(), 2);
    lab.core.handle_unreachable(t0);
    lab.exchange();
    assert!(matches!(lab.events.as_slice(), [(at, Event::Unavailable)] if *at == t0));
    lab.run_until(t0 + Duration::from_secs(60));
    assert_eq!(lab.sent.len(), 2, "no resends to a closed port");
}
