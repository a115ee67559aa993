//! A virtual-time harness: a [`NetReporter`] and fake STUN servers that answer its requests after a fixed
//! round trip. Time jumps from one timer or delivery to the next; nothing sleeps.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use iroh_stun::Message;

use super::super::*;

/// How a fake STUN server behaves.
#[derive(Debug, Clone, Copy)]
pub(super) struct FakeServer {
    /// Round trip: the response arrives this long after the request was sent.
    pub(super) rtt: Duration,
    /// The address the server says it saw us at.
    pub(super) observed: SocketAddr,
    /// Requests to drop before answering (`u32::MAX`: never answer).
    pub(super) drop_first: u32,
    /// The OTHER-ADDRESS (RFC 5780) its success responses carry, if any.
    pub(super) other: Option<SocketAddr>,
}

impl FakeServer {
    pub(super) fn new(rtt_ms: u64, observed: &str) -> Self {
        Self {
            rtt: Duration::from_millis(rtt_ms),
            observed: observed.parse().unwrap(),
            drop_first: 0,
            other: None,
        }
    }

    pub(super) fn silent() -> Self {
        Self {
            drop_first: u32::MAX,
            ..Self::new(1, "192.0.2.1:1")
        }
    }
}

/// A request as sent: when and where.
#[derive(Debug, Clone)]
pub(super) struct Sent {
    pub(super) at: Duration,
    pub(super) dst: SocketAddr,
    pub(super) contents: Vec<u8>,
}

pub(super) struct Sim {
    pub(super) r: NetReporter,
    pub(super) start: Instant,
    pub(super) now: Instant,
    pub(super) servers: HashMap<SocketAddr, FakeServer>,
    received: HashMap<SocketAddr, u32>,
    /// Responses on their way: (arrival, from, bytes).
    in_flight: Vec<(Instant, SocketAddr, Vec<u8>)>,
    pub(super) sent: Vec<Sent>,
    /// Events with the virtual time they came out at.
    pub(super) events: Vec<(Duration, NetReportEvent)>,
    /// Started on every `ReportDue`, if set.
    pub(super) auto_targets: Option<Vec<ProbeTarget>>,
    /// Relay latency samples fed at the start of each auto-started report.
    pub(super) auto_pings: Vec<(RelayUrl, Duration)>,
}

impl Sim {
    pub(super) fn new(config: NetReportConfig) -> Self {
        let start = Instant::now();
        Self {
            r: NetReporter::new(config, 7),
            start,
            now: start,
            servers: HashMap::new(),
            received: HashMap::new(),
            in_flight: Vec::new(),
            sent: Vec::new(),
            events: Vec::new(),
            auto_targets: None,
            auto_pings: Vec::new(),
        }
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub(super) fn server(&mut self, addr: &str, server: FakeServer) -> SocketAddr {
        let addr: SocketAddr = addr.parse().unwrap();
        self.servers.insert(addr, server);
        addr
    }

    /// Starts a report now and processes its first transmits.
    pub(super) fn start(&mut self, targets: Vec<ProbeTarget>) {
        self.r.start_report(self.now, targets);
        self.drain();
    }

    /// Takes transmits (answering them) and events.
    pub(super) fn drain(&mut self) {
        while let Some(transmit) = self.r.poll_transmit() {
            self.sent.push(Sent {
                at: self.elapsed(),
                dst: transmit.dst,
                contents: transmit.contents.clone(),
            });
            let Some(server) = self.servers.get(&transmit.dst).copied() else {
                continue;
            };
            let count = self.received.entry(transmit.dst).or_insert(0);
            *count += 1;
            if *count <= server.drop_first {
                continue;
            }
            let response = answer_with(&transmit.contents, server.observed, server.other);
            self.in_flight
                .push((self.now + server.rtt, transmit.dst, response));
        }
        let mut due = false;
        while let Some(event) = self.r.poll_event() {
            due |= matches!(event, NetReportEvent::ReportDue(_));
            self.events.push((self.elapsed(), event));
        }
        if due && let Some(targets) = self.auto_targets.clone() {
            self.r.start_report(self.now, targets);
            for (url, rtt) in self.auto_pings.clone() {
                self.r.handle_relay_latency(self.now, &url, rtt);
            }
            self.drain();
        }
    }

    /// Runs until `for_` has passed (virtual time).
    pub(super) fn run_for(&mut self, for_: Duration) {
        let until = self.now + for_;
        self.drain();
        loop {
            let next_delivery = self.in_flight.iter().map(|(at, ..)| *at).min();
            let next = match (self.r.poll_timeout(), next_delivery) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(next) => next,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            let (arrived, later): (Vec<_>, Vec<_>) =
                self.in_flight.drain(..).partition(|(at, ..)| *at <= now);
            self.in_flight = later;
            for (_, from, bytes) in arrived {
                assert!(self.r.handle_stun(now, from, &bytes), "response consumed");
                self.drain();
            }
            if self.r.poll_timeout().is_some_and(|t| t <= now) {
                self.r.handle_timeout(now);
            }
            self.drain();
        }
        self.now = until;
    }

    /// Runs until the next report is ready, at most `limit`; returns it.
    pub(super) fn next_report(&mut self, limit: Duration) -> Report {
        let before = self.reports().len();
        let step = Duration::from_millis(1);
        let mut waited = Duration::ZERO;
        while self.reports().len() == before {
            assert!(waited < limit, "no report within {limit:?}");
            self.run_for(step);
            waited += step;
        }
        self.reports()[before].1.clone()
    }

    /// The reports so far, with the virtual time they came out at.
    pub(super) fn reports(&self) -> Vec<(Duration, Report)> {
        self.events
            .iter()
            .filter_map(|(at, e)| match e {
                NetReportEvent::ReportReady(report) => Some((*at, report.clone())),
                NetReportEvent::ReportDue(_) => None,
            })
            .collect()
    }

    /// The times of the `ReportDue` events, with their reasons.
    pub(super) fn dues(&self) -> Vec<(Duration, ReportReason)> {
        self.events
            .iter()
            .filter_map(|(at, e)| match e {
                NetReportEvent::ReportDue(reason) => Some((*at, reason.clone())),
                NetReportEvent::ReportReady(_) => None,
            })
            .collect()
    }

    /// The times requests went to `dst`.
    pub(super) fn sent_to(&self, dst: SocketAddr) -> Vec<Duration> {
        self.sent
            .iter()
            .filter(|s| s.dst == dst)
            .map(|s| s.at)
            .collect()
    }
}

/// A STUN server's success response to `request`.
pub(super) fn answer(request: &[u8], observed: SocketAddr) -> Vec<u8> {
    answer_with(request, observed, None)
}

/// [`answer`], with an OTHER-ADDRESS if given.
pub(super) fn answer_with(
    request: &[u8],
    observed: SocketAddr,
    other: Option<SocketAddr>,
) -> Vec<u8> {
    let request = Message::parse(request).expect("a well-formed request");
    let mut response = Message::binding_success(request.transaction_id(), observed);
    if let Some(other) = other {
        response
            .push_attribute(iroh_stun::Attribute::OtherAddress(other))
            .expect("an address fits");
    }
    response.with_fingerprint(true).to_bytes()
}
