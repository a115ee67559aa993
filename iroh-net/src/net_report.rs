//! Net report: what the network looks like from here. Our public addresses as STUN servers see them, whether
//! UDP works, whether the NAT maps differently per destination, the latency to each relay, and which relay
//! should be home.
//!
//! # Shape
//!
//! [`NetReporter`] is a sans-IO core (DESIGN.md section 2): it never reads the clock, touches a socket,
//! resolves a name or spawns; its randomness (STUN transaction ids, schedule jitter) comes from a seed. Its
//! driver is the magic socket's actor, because STUN must go out on the very UDP sockets QUIC uses: the public
//! address a STUN server sees is then the NAT mapping QUIC traffic gets. The socket's demultiplexer hands
//! every STUN packet (`iroh_stun::is_stun`) to [`NetReporter::handle_stun`].
//!
//! ```text
//!   driver (magic socket actor)                           NetReporter
//!   ---------------------------                           -----------
//!   poll_event -> ReportDue(reason)         <----  due: at start, every report_interval, on request_report
//!   resolve relay hosts (DNS), then
//!   start_report(now, targets)              ---->  one STUN transaction per (relay, STUN address), and
//!                                                   one more per answer that names an OTHER-ADDRESS
//!   poll_transmit -> send on the UDP socket <----  Binding requests and retransmissions
//!   STUN packet received: handle_stun       ---->  responses matched by transaction id and source
//!   relay ping answered: handle_relay_latency ->   latency measured over the relay connection
//!   timer at poll_timeout: handle_timeout   ---->  retransmit, give up, end the report, schedule the next
//!   poll_event -> ReportReady(report)       <----  all probes done (and every relay has a latency) or the
//!                                                   budget (report_timeout) elapsed: partial results are fine
//! ```
//!
//! # Drain contract
//!
//! After [`NetReporter::new`] and after every call to a `start_*`, `request_*` or `handle_*` method, the
//! driver:
//!
//! 1. sends every [`NetReporter::poll_transmit`] until it returns `None`;
//! 2. takes every [`NetReporter::poll_event`] until it returns `None`;
//! 3. arms its one timer to [`NetReporter::poll_timeout`] (`None`: no timer needed) and calls
//!    [`NetReporter::handle_timeout`] when it fires.
//!
//! # Scheduling
//!
//! ```text
//!           new() / handle_timeout at `next` / request_report
//!   [Idle { next }] ------------------------------------------> [Due { reason }]  (emits ReportDue once)
//!        ^                                                            |
//!        |  report done: next = start + report_interval - jitter     | start_report
//!        |  (or straight to Due if a request came in meanwhile)      v
//!        +------------------------------------------------------ [Running]
//! ```
//!
//! The first report is due at once. Then one runs every [`NetReportConfig::report_interval`] (20 s by default,
//! minus up to a tenth of random jitter), measured from the start of the previous one, so the NAT mappings
//! to the STUN servers never go 30 s without traffic. [`NetReporter::request_report`] makes one due sooner:
//! the driver calls it when the network changes or a relay connection fails. Requests coalesce: while a
//! report is due, nothing more is queued; while one runs, one more is queued to follow it.
//!
//! # Measuring latency
//!
//! A relay's latency in a report is the lowest of its STUN round trips in that report and of the latency
//! samples the driver measured over the relay connection (relay protocol ping, or an HTTPS `/ping`) and fed to
//! [`NetReporter::handle_relay_latency`], during the report or within
//! [`NetReportConfig::relay_latency_max_age`] before it. A relay without STUN is therefore measured by pings
//! alone; a good moment for the driver to ping its relays is when it gets [`NetReportEvent::ReportDue`].
//!
//! # Choosing the home relay
//!
//! The candidate relays are those with a latency in the report, leaving out relays whose connection failed
//! ([`ReportReason::RelayFailed`]) and that have not answered a relay ping since, unless that leaves none.
//! The best candidate has the lowest latency (ties: the first in the driver's target order). The current home
//! relay (the previous report's preferred relay) stays preferred while it is a candidate, unless the best is
//! *clearly* better: its latency below two thirds of the home relay's. That keeps jitter from flapping the
//! home relay, which would cost every peer a new relay connection. No candidate: `preferred_relay` is `None`,
//! and the home relay is kept for the next report's hysteresis.
//!
//! # Own addresses
//!
//! [`local_addrs`] (feature `quic`: it asks the OS, through the `if-addrs` crate) lists the interface
//! addresses our sockets can be reached at, with the bound ports; [`addrs_for_ips`] is its pure policy
//! (loopback only when it is all there is, see [`LoopbackPolicy`]; no IPv6 link-local, unspecified or
//! multicast addresses). [`own_addrs`] puts the public addresses of the last [`Report`] in front of them: the
//! candidate addresses the endpoint publishes and sends in call-me-maybe. The driver recomputes them after
//! each report and on network change.
//!
//! # Structured events
//!
//! DEBUG events with fields only, for tools:
//! - `iroh::_events::net_report::ready` `{ reason, global_v4, global_v6, udp_v4, udp_v6, mapping_varies_v4,
//!   preferred_relay }`: a report completed.
//! - `iroh::_events::net_report::home_relay` `{ from, to }`: the preferred relay changed.

mod addrs;
mod run;
mod types;

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use iroh_base::RelayUrl;
use iroh_stun::{TransactionConfig, TransactionId};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tracing::{debug, trace};

pub use self::addrs::{LoopbackPolicy, addrs_for_ips, own_addrs};
#[cfg(feature = "quic")]
pub use self::addrs::{local_addrs, local_addrs_with};
use self::run::Run;
pub use self::types::{
    NetReportEvent, ProbeTarget, RelayMap, RelayMapError, RelayNode, Report, ReportReason, Transmit,
};

/// Timing of net reports. The defaults suit the internet; tests shorten or vary them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetReportConfig {
    /// Retransmissions of each STUN probe. Default: RTO 100 ms, 5 requests (at 0, 100, 300, 700 and
    /// 1500 ms), then 10 x 100 ms of waiting: a probe gives up 2.5 s after it started. Much shorter than the
    /// RFC's defaults, because a report wants an answer soon, and the next report is never far away.
    pub stun: TransactionConfig,
    /// The budget of one report: when it has elapsed, the report completes with what it has. Default: 3 s.
    pub report_timeout: Duration,
    /// How often a report runs, from the start of one to the start of the next, minus up to a tenth of
    /// random jitter. Keep it well under 30 s so NAT mappings stay open. Default: 20 s.
    pub report_interval: Duration,
    /// How long a relay latency sample from [`NetReporter::handle_relay_latency`] counts in reports.
    /// Default: 30 s.
    pub relay_latency_max_age: Duration,
}

impl Default for NetReportConfig {
    fn default() -> Self {
        Self {
            stun: TransactionConfig {
                rto: Duration::from_millis(100),
                max_transmits: 5,
                last_wait_multiplier: 10,
            },
            report_timeout: Duration::from_secs(3),
            report_interval: Duration::from_secs(20),
            relay_latency_max_age: Duration::from_secs(30),
        }
    }
}

/// Where the reporter is in its cycle (see the [module docs](self#scheduling)).
#[derive(Debug)]
enum State {
    /// Between reports: the next is due at `next`.
    Idle { next: Instant },
    /// A report is due and the driver was told; waiting for [`NetReporter::start_report`].
    Due { reason: ReportReason },
    /// A report is running.
    Running(Box<Run>),
}

/// A relay latency sample from the driver.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    rtt: Duration,
}

/// The sans-IO net report core. See the [module docs](self) for how to drive it.
#[derive(Debug)]
pub struct NetReporter {
    config: NetReportConfig,
    rng: StdRng,
    state: State,
    /// A request that arrived while a report was running: the next one is due as soon as it ends.
    queued: Option<ReportReason>,
    /// The latest relay latency sample per relay.
    samples: BTreeMap<RelayUrl, Sample>,
    /// Relays whose connection failed, until a latency sample shows it works again.
    failed: BTreeSet<RelayUrl>,
    /// The preferred relay of the last report that had one.
    home: Option<RelayUrl>,
    last_report: Option<Report>,
    /// Transactions of the last finished (or abandoned) report, whose late responses are absorbed.
    retired: Vec<(TransactionId, SocketAddr)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<NetReportEvent>,
}

impl NetReporter {
    /// A reporter whose first report is due at once ([`NetReportEvent::ReportDue`] with
    /// [`ReportReason::Startup`] is waiting in [`NetReporter::poll_event`]).
    ///
    /// `seed` seeds the STUN transaction ids and the schedule jitter: use a random seed outside tests
    /// (`rand::random()`), since an off-path attacker who could guess the ids could feed us a false address.
    pub fn new(config: NetReportConfig, seed: u64) -> Self {
        let reason = ReportReason::Startup;
        Self {
            config,
            rng: StdRng::seed_from_u64(seed),
            state: State::Due {
                reason: reason.clone(),
            },
            queued: None,
            samples: BTreeMap::new(),
            failed: BTreeSet::new(),
            home: None,
            last_report: None,
            retired: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::from([NetReportEvent::ReportDue(reason)]),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &NetReportConfig {
        &self.config
    }

    /// Why a report is due, if one is due and has not been started (see [`NetReportEvent::ReportDue`]).
    pub fn wants_report(&self) -> Option<&ReportReason> {
        match &self.state {
            State::Due { reason } => Some(reason),
            State::Idle { .. } | State::Running(_) => None,
        }
    }

    /// Whether a report is running.
    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running(_))
    }

    /// The last completed report.
    pub fn last_report(&self) -> Option<&Report> {
        self.last_report.as_ref()
    }

    /// The current home relay: the preferred relay of the last report that had one.
    pub fn home_relay(&self) -> Option<&RelayUrl> {
        self.home.as_ref()
    }

    /// Asks for a report sooner than scheduled.
    ///
    /// [`ReportReason::NetworkChanged`] also forgets all relay latency samples (they measured the old
    /// network); [`ReportReason::RelayFailed`] forgets that relay's sample and keeps it from being chosen as
    /// preferred (see the [module docs](self#choosing-the-home-relay)) until a new sample arrives.
    pub fn request_report(&mut self, now: Instant, reason: ReportReason) {
        match &reason {
            ReportReason::NetworkChanged => self.samples.clear(),
            ReportReason::RelayFailed(url) => {
                self.samples.remove(url);
                self.failed.insert(url.clone());
            }
            _ => {}
        }
        match &self.state {
            State::Idle { .. } => {
                debug!(%reason, "net report requested");
                self.make_due(reason);
            }
            State::Due { reason: due } => {
                trace!(%reason, %due, "net report requested, one is already due");
            }
            State::Running(run) => {
                if self.queued.is_none() {
                    let running_for = now.saturating_duration_since(run.started());
                    debug!(%reason, ?running_for, "net report requested during a report: queued");
                    self.queued = Some(reason);
                }
            }
        }
    }

    /// Starts a report on these relays (their STUN addresses resolved by the driver; a relay without
    /// addresses is measured by relay pings alone).
    ///
    /// Normally called after [`NetReportEvent::ReportDue`], but the driver may start one at any time; a report
    /// already running is then abandoned without a [`NetReportEvent::ReportReady`].
    pub fn start_report(&mut self, now: Instant, targets: Vec<ProbeTarget>) {
        let reason = match std::mem::replace(&mut self.state, State::Idle { next: now }) {
            State::Due { reason } => reason,
            State::Idle { .. } => ReportReason::Other("started by the driver"),
            State::Running(old) => {
                debug!(reason = %old.reason(), "net report abandoned for a new one");
                self.retired = old.transaction_ids().collect();
                // The new report answers a request that was waiting for the old one to end.
                self.queued
                    .take()
                    .unwrap_or(ReportReason::Other("started by the driver"))
            }
        };
        let mut run = Run::new(
            now,
            reason,
            targets,
            self.config.stun,
            self.config.report_timeout,
            &mut self.rng,
        );
        run.drain_transmits(now, &mut self.transmits);
        self.state = State::Running(Box::new(run));
        self.check_complete(now);
    }

    /// Offers a STUN packet received on our socket from `from`. Returns whether it was for us (a response to
    /// one of our requests, even a malformed or late one); if not, the driver may give it to someone else.
    pub fn handle_stun(&mut self, now: Instant, from: SocketAddr, packet: &[u8]) -> bool {
        if !iroh_stun::is_stun(packet) {
            return false;
        }
        if let State::Running(run) = &mut self.state
            && run.handle_stun(now, from, packet)
        {
            run.drain_transmits(now, &mut self.transmits);
            self.check_complete(now);
            return true;
        }
        let Some(id) = iroh_stun::peek_transaction_id(packet) else {
            return false;
        };
        let late = self
            .retired
            .iter()
            .any(|(tx, server)| *tx == id && same_addr(*server, from));
        if late {
            trace!(%from, "late STUN response of an earlier report absorbed");
        }
        late
    }

    /// Feeds a latency measured over the connection to relay `url` (relay protocol ping, HTTPS `/ping`, ...).
    /// It also shows the relay works again after [`ReportReason::RelayFailed`].
    pub fn handle_relay_latency(&mut self, now: Instant, url: &RelayUrl, rtt: Duration) {
        trace!(%url, ?rtt, "relay latency sample");
        self.samples.insert(url.clone(), Sample { at: now, rtt });
        self.failed.remove(url);
        if let State::Running(run) = &mut self.state {
            run.note_relay_latency(url, rtt);
            self.check_complete(now);
        }
    }

    /// Does what is due at `now`: retransmissions, ending a report, making the next one due.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.state {
            State::Idle { next } => {
                if now >= *next {
                    debug!("periodic net report due");
                    self.make_due(ReportReason::Periodic);
                }
            }
            State::Due { .. } => {}
            State::Running(run) => {
                run.handle_timeout(now);
                run.drain_transmits(now, &mut self.transmits);
                self.check_complete(now);
            }
        }
    }

    /// When [`NetReporter::handle_timeout`] should next be called: a STUN retransmission or the report
    /// deadline while a report runs, the next scheduled report between reports, `None` while a report is due
    /// but not started.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Idle { next } => Some(*next),
            State::Due { .. } => None,
            State::Running(run) => Some(run.poll_timeout()),
        }
    }

    /// The next STUN request to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<NetReportEvent> {
        self.events.pop_front()
    }

    fn make_due(&mut self, reason: ReportReason) {
        self.events
            .push_back(NetReportEvent::ReportDue(reason.clone()));
        self.state = State::Due { reason };
    }

    /// The latest sample for `url`, if it is fresh enough at `now`.
    fn recent_sample(&self, now: Instant, url: &RelayUrl) -> Option<Duration> {
        let sample = self.samples.get(url)?;
        (now.saturating_duration_since(sample.at) <= self.config.relay_latency_max_age)
            .then_some(sample.rtt)
    }

    /// Ends the running report if it is complete at `now`, and schedules what comes next.
    fn check_complete(&mut self, now: Instant) {
        let State::Running(run) = &self.state else {
            return;
        };
        if !run.is_complete(now, |url| self.recent_sample(now, url).is_some()) {
            return;
        }
        let State::Running(run) = std::mem::replace(&mut self.state, State::Idle { next: now })
        else {
            return;
        };
        let started = run.started();
        self.retired = run.transaction_ids().collect();
        let report = run.into_report(
            now,
            |url| self.recent_sample(now, url),
            |latency, order| choose_preferred(latency, order, self.home.as_ref(), &self.failed),
        );
        debug!(
            target: "iroh::_events::net_report::ready",
            reason = %report.reason,
            global_v4 = ?report.global_v4,
            global_v6 = ?report.global_v6,
            udp_v4 = report.udp_works_v4,
            udp_v6 = report.udp_works_v6,
            mapping_varies_v4 = ?report.mapping_varies_by_dest_v4,
            preferred_relay = ?report.preferred_relay.as_ref().map(ToString::to_string),
        );
        if let Some(preferred) = &report.preferred_relay
            && self.home.as_ref() != Some(preferred)
        {
            debug!(
                target: "iroh::_events::net_report::home_relay",
                from = ?self.home.as_ref().map(ToString::to_string),
                to = %preferred,
            );
            self.home = Some(preferred.clone());
        }
        self.last_report = Some(report.clone());
        self.events.push_back(NetReportEvent::ReportReady(report));
        if let Some(reason) = self.queued.take() {
            debug!(%reason, "queued net report due now");
            self.make_due(reason);
        } else {
            let next = started
                .checked_add(self.next_interval())
                .unwrap_or(now)
                .max(now);
            trace!(in_ = ?next.saturating_duration_since(now), "next net report scheduled");
            self.state = State::Idle { next };
        }
    }

    /// The report interval minus up to a tenth of it at random, so that nodes started together spread out.
    fn next_interval(&mut self) -> Duration {
        let interval = self.config.report_interval;
        let max_jitter = u64::try_from((interval / 10).as_millis()).unwrap_or(u64::MAX);
        interval.saturating_sub(Duration::from_millis(self.rng.gen_range(0..=max_jitter)))
    }
}

/// The home relay rule of the [module docs](self#choosing-the-home-relay).
fn choose_preferred(
    latency: &BTreeMap<RelayUrl, Duration>,
    order: &[RelayUrl],
    home: Option<&RelayUrl>,
    failed: &BTreeSet<RelayUrl>,
) -> Option<RelayUrl> {
    let measured = || {
        order
            .iter()
            .filter_map(|url| Some((url, *latency.get(url)?)))
    };
    let mut candidates: Vec<(&RelayUrl, Duration)> = measured()
        .filter(|(url, _)| !failed.contains(*url))
        .collect();
    if candidates.is_empty() {
        candidates = measured().collect();
    }
    // `min_by_key` keeps the first of equal minima: ties go to the driver's order.
    let (best, best_latency) = candidates.iter().min_by_key(|(_, latency)| *latency)?;
    let current = home.and_then(|home| candidates.iter().find(|(url, _)| *url == home));
    match current {
        Some((home, home_latency)) if !clearly_better(*best_latency, *home_latency) => {
            Some((*home).clone())
        }
        _ => Some((*best).clone()),
    }
}

/// Whether `candidate` beats `current` by enough to move the home relay: below two thirds of it.
fn clearly_better(candidate: Duration, current: Duration) -> bool {
    candidate.as_nanos() * 3 < current.as_nanos() * 2
}

/// Compares addresses as a dual-stack socket reports them (IPv4-mapped IPv6 equals IPv4).
fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

#[cfg(test)]
mod tests;
