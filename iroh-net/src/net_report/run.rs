//! One report in flight: a STUN client transaction per (relay, STUN address), their outcomes, and the
//! summary of those outcomes into a [`Report`].
//!
//! ```text
//!   Probe:  [Pending] --success--> [Answered { reflexive, rtt }]
//!              |    \--error response--> [Refused]   (UDP works, no address)
//!              \--timeout / bad response / run deadline--> [Failed]
//! ```

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use iroh_base::RelayUrl;
use iroh_stun::{ClientTransaction, Event, Input, TransactionConfig, TransactionId};
use rand::RngCore;
use tracing::{debug, trace};

use super::types::{ProbeTarget, Report, ReportReason, Transmit};

/// How long a report waits for the answer of a server's alternate address (RFC 5780 OTHER-ADDRESS), on top
/// of twice the round trip its first address answered in.
const ALTERNATE_WAIT: Duration = Duration::from_millis(250);

/// What became of one STUN transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Still retransmitting or waiting.
    Pending,
    /// A success response: the server saw us at `reflexive`.
    Answered {
        reflexive: SocketAddr,
        rtt: Duration,
    },
    /// An error response: the server is reachable over UDP but gave no address.
    Refused,
    /// Timed out, or the response was unusable.
    Failed,
}

/// One STUN transaction of a run.
#[derive(Debug)]
struct Probe {
    /// Index of the relay in [`Run::targets`].
    target: usize,
    transaction: ClientTransaction,
    /// When the first request went out (for the RTT after retransmissions).
    first_sent: Option<Instant>,
    outcome: Outcome,
    /// The transaction id for a probe of the server's alternate address (RFC 5780 OTHER-ADDRESS), if its
    /// answer names one; `None` for a probe of an alternate address (which spawns no further probe).
    alt_id: Option<[u8; 12]>,
    /// For a probe of an alternate address: how long the report waits for it. Its port may well be
    /// firewalled, and the report must not then always run to its budget.
    wait_until: Option<Instant>,
}

impl Probe {
    fn is_ipv4(&self) -> bool {
        self.transaction.server().ip().to_canonical().is_ipv4()
    }
}

/// A report in progress.
#[derive(Debug)]
pub(super) struct Run {
    reason: ReportReason,
    started: Instant,
    deadline: Instant,
    /// The relays probed, in the order the driver gave them (which breaks latency ties).
    targets: Vec<RelayUrl>,
    probes: Vec<Probe>,
    /// The lowest relay latency sample per relay received while this run was in progress.
    pings: BTreeMap<RelayUrl, Duration>,
    stun: TransactionConfig,
}

impl Run {
    /// Starts a run: one transaction per STUN address of each target (duplicate targets are merged), with
    /// transaction ids from `rng`. Nothing is sent until [`Run::drain_transmits`].
    pub(super) fn new(
        now: Instant,
        reason: ReportReason,
        targets: Vec<ProbeTarget>,
        stun: TransactionConfig,
        budget: Duration,
        rng: &mut impl RngCore,
    ) -> Self {
        let mut urls: Vec<RelayUrl> = Vec::new();
        let mut probes: Vec<Probe> = Vec::new();
        for target in targets {
            let index = match urls.iter().position(|url| *url == target.url) {
                Some(index) => index,
                None => {
                    urls.push(target.url);
                    urls.len() - 1
                }
            };
            for server in target.stun_addrs {
                let duplicate = probes
                    .iter()
                    .any(|p| p.target == index && p.transaction.server() == server);
                if duplicate {
                    continue;
                }
                let mut id = [0u8; 12];
                rng.fill_bytes(&mut id);
                let mut alt_id = [0u8; 12];
                rng.fill_bytes(&mut alt_id);
                let transaction = ClientTransaction::with_transaction_id(
                    now,
                    server,
                    stun,
                    TransactionId::from(id),
                );
                probes.push(Probe {
                    target: index,
                    transaction,
                    first_sent: None,
                    outcome: Outcome::Pending,
                    alt_id: Some(alt_id),
                    wait_until: None,
                });
            }
        }
        debug!(%reason, relays = urls.len(), probes = probes.len(), "net report started");
        Self {
            reason,
            started: now,
            deadline: now.checked_add(budget).unwrap_or(now),
            targets: urls,
            probes,
            pings: BTreeMap::new(),
            stun,
        }
    }

    /// When the run started.
    pub(super) fn started(&self) -> Instant {
        self.started
    }

    /// Why the run started.
    pub(super) fn reason(&self) -> &ReportReason {
        &self.reason
    }

    /// The transaction ids and servers of all probes, so that late responses can still be recognised.
    pub(super) fn transaction_ids(&self) -> impl Iterator<Item = (TransactionId, SocketAddr)> + '_ {
        self.probes
            .iter()
            .map(|p| (p.transaction.transaction_id(), p.transaction.server()))
    }

    /// Moves every due request into `out`.
    pub(super) fn drain_transmits(&mut self, now: Instant, out: &mut VecDeque<Transmit>) {
        for probe in &mut self.probes {
            while let Some(transmit) = probe.transaction.poll_transmit(now) {
                probe.first_sent.get_or_insert(now);
                out.push_back(Transmit {
                    dst: transmit.destination,
                    contents: transmit.contents.to_vec(),
                });
            }
        }
    }

    /// Offers a STUN packet to the run's transactions; true if one of them took it.
    pub(super) fn handle_stun(&mut self, now: Instant, from: SocketAddr, packet: &[u8]) -> bool {
        let Some(id) = iroh_stun::peek_transaction_id(packet) else {
            return false;
        };
        let Some(index) = self
            .probes
            .iter()
            .position(|p| p.transaction.transaction_id() == id)
        else {
            return false;
        };
        let probe = &mut self.probes[index];
        match probe.transaction.handle_input(now, from, packet) {
            Input::NotForUs => false,
            Input::Consumed => {
                if let Some((_, server, id)) = Self::settle(probe, now, &self.targets) {
                    self.probe_alternate(now, (index, server, id));
                }
                true
            }
        }
    }

    /// Adds a probe of a server's alternate address (RFC 5780 OTHER-ADDRESS) from the same socket, so that
    /// a single relay is enough to tell whether our NAT maps by destination: the two answers count as two
    /// servers for [`Report::mapping_varies_by_dest_v4`]. Once per server and run, same family only, and
    /// never after the deadline.
    fn probe_alternate(
        &mut self,
        now: Instant,
        (index, server, id): (usize, SocketAddr, [u8; 12]),
    ) {
        if now >= self.deadline
            || server.is_ipv4() != self.probes[index].transaction.server().is_ipv4()
            || self.probes.iter().any(|p| p.transaction.server() == server)
        {
            return;
        }
        let target = self.probes[index].target;
        let rtt = match self.probes[index].outcome {
            Outcome::Answered { rtt, .. } => rtt,
            _ => Duration::ZERO,
        };
        let wait_until = now + ALTERNATE_WAIT + rtt.saturating_mul(2);
        trace!(%server, relay = %self.targets[target], "probing the STUN server's other address");
        let transaction =
            ClientTransaction::with_transaction_id(now, server, self.stun, TransactionId::from(id));
        self.probes.push(Probe {
            target,
            transaction,
            first_sent: None,
            outcome: Outcome::Pending,
            alt_id: None,
            wait_until: Some(wait_until),
        });
    }

    /// Advances the transactions' timers; past the deadline, every pending probe fails.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        let mut alternates = Vec::new();
        for (index, probe) in self.probes.iter_mut().enumerate() {
            probe.transaction.handle_timeout(now);
            if let Some((_, server, id)) = Self::settle(probe, now, &self.targets) {
                alternates.push((index, server, id));
            }
            let alternate_late = probe.wait_until.is_some_and(|until| now >= until);
            if alternate_late && probe.outcome == Outcome::Pending {
                trace!(server = %probe.transaction.server(), "alternate STUN address unanswered");
                probe.outcome = Outcome::Failed;
            }
            if now >= self.deadline && probe.outcome == Outcome::Pending {
                trace!(
                    server = %probe.transaction.server(),
                    "STUN probe still unanswered at the report deadline"
                );
                probe.outcome = Outcome::Failed;
            }
        }
        for alternate in alternates {
            self.probe_alternate(now, alternate);
        }
    }

    /// Records a relay latency sample measured by the driver during the run.
    pub(super) fn note_relay_latency(&mut self, url: &RelayUrl, rtt: Duration) {
        if let Some(url) = self.targets.iter().find(|t| *t == url) {
            let best = self.pings.entry(url.clone()).or_insert(rtt);
            *best = (*best).min(rtt);
        }
    }

    /// When [`Run::handle_timeout`] must next run: the earliest transaction timer, or the deadline.
    pub(super) fn poll_timeout(&self) -> Instant {
        self.probes
            .iter()
            .filter(|p| p.outcome == Outcome::Pending)
            .flat_map(|p| [p.transaction.poll_timeout(), p.wait_until])
            .flatten()
            .fold(self.deadline, Instant::min)
    }

    /// Whether the run is over at `now`: the deadline passed, or every probe has ended and every relay has a
    /// latency (from its STUN probes, a sample during the run, or a recent one per `has_recent_sample`).
    pub(super) fn is_complete(
        &self,
        now: Instant,
        has_recent_sample: impl Fn(&RelayUrl) -> bool,
    ) -> bool {
        if now >= self.deadline {
            return true;
        }
        if self.probes.iter().any(|p| p.outcome == Outcome::Pending) {
            return false;
        }
        let latencies = self.stun_latencies();
        self.targets.iter().all(|url| {
            latencies.contains_key(url) || self.pings.contains_key(url) || has_recent_sample(url)
        })
    }

    /// Summarises the run. `recent` gives the latest relay latency sample still fresh enough for a relay;
    /// `preferred` chooses the home relay from the latencies (in the driver's relay order).
    pub(super) fn into_report(
        self,
        now: Instant,
        recent: impl Fn(&RelayUrl) -> Option<Duration>,
        preferred: impl FnOnce(&BTreeMap<RelayUrl, Duration>, &[RelayUrl]) -> Option<RelayUrl>,
    ) -> Report {
        let mut relay_latency = self.stun_latencies();
        for url in &self.targets {
            let ping = match (self.pings.get(url).copied(), recent(url)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(ping) = ping {
                let best = relay_latency.entry(url.clone()).or_insert(ping);
                *best = (*best).min(ping);
            }
        }
        let preferred_relay = preferred(&relay_latency, &self.targets);
        let (v4, v6): (Vec<&Probe>, Vec<&Probe>) = self.probes.iter().partition(|p| p.is_ipv4());
        let answered = |probes: &[&Probe]| {
            probes
                .iter()
                .any(|p| matches!(p.outcome, Outcome::Answered { .. } | Outcome::Refused))
        };
        Report {
            global_v4: global_addr(&v4),
            global_v6: global_addr(&v6),
            mapping_varies_by_dest_v4: mapping_varies(&v4),
            mapping_varies_by_dest_v6: mapping_varies(&v6),
            relay_latency,
            preferred_relay,
            udp_works_v4: answered(&v4),
            udp_works_v6: answered(&v6),
            reason: self.reason,
            captured_at: now,
        }
    }

    /// The lowest STUN round trip per relay in this run.
    fn stun_latencies(&self) -> BTreeMap<RelayUrl, Duration> {
        let mut out: BTreeMap<RelayUrl, Duration> = BTreeMap::new();
        for probe in &self.probes {
            if let Outcome::Answered { rtt, .. } = probe.outcome {
                let url = &self.targets[probe.target];
                let best = out.entry(url.clone()).or_insert(rtt);
                *best = (*best).min(rtt);
            }
        }
        out
    }

    /// Takes the transaction's event, if it has ended, into the probe's outcome. Returns the alternate
    /// address to probe next (with the transaction id kept for it), if the answer named one; the index is
    /// filled in by the caller.
    fn settle(
        probe: &mut Probe,
        now: Instant,
        targets: &[RelayUrl],
    ) -> Option<(usize, SocketAddr, [u8; 12])> {
        let event = probe.transaction.poll_event()?;
        let mut alternate = None;
        let relay = &targets[probe.target];
        let server = probe.transaction.server();
        probe.outcome = match event {
            Event::Success {
                reflexive,
                rtt,
                other,
            } => {
                if let (Some(other), Some(id)) = (other, probe.alt_id.take()) {
                    alternate = Some((0, other, id));
                }
                // Karn's rule leaves no sample after a retransmission. The time since the first request is
                // then an upper bound: exact when the first request was not lost, and otherwise it only makes
                // a lossy relay look slower, never faster.
                let first = probe.first_sent.unwrap_or(now);
                let rtt = rtt.unwrap_or_else(|| now.saturating_duration_since(first));
                debug!(%relay, %server, %reflexive, ?rtt, "STUN probe answered");
                Outcome::Answered { reflexive, rtt }
            }
            Event::Error { code, reason } => {
                debug!(%relay, %server, code, reason, "STUN probe got an error response");
                Outcome::Refused
            }
            Event::BadResponse(error) => {
                debug!(%relay, %server, %error, "STUN probe got an unusable response");
                Outcome::Failed
            }
            Event::TimedOut => {
                debug!(%relay, %server, "STUN probe timed out");
                Outcome::Failed
            }
        };
        alternate
    }
}

/// The reflexive addresses the probes of one family learned, with their round trips.
fn answers<'a>(
    probes: &'a [&'a Probe],
) -> impl Iterator<Item = (SocketAddr, SocketAddr, Duration)> + 'a {
    probes.iter().filter_map(|p| match p.outcome {
        Outcome::Answered { reflexive, rtt } => Some((p.transaction.server(), reflexive, rtt)),
        _ => None,
    })
}

/// The address most servers saw; among equally common ones, the one the fastest server saw.
fn global_addr(probes: &[&Probe]) -> Option<SocketAddr> {
    // (reflexive address) -> (servers that saw it, fastest round trip)
    let mut seen: Vec<(SocketAddr, usize, Duration)> = Vec::new();
    for (_, reflexive, rtt) in answers(probes) {
        match seen.iter_mut().find(|(addr, ..)| *addr == reflexive) {
            Some((_, count, fastest)) => {
                *count += 1;
                *fastest = (*fastest).min(rtt);
            }
            None => seen.push((reflexive, 1, rtt)),
        }
    }
    seen.into_iter()
        .min_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)))
        .map(|(addr, ..)| addr)
}

/// Whether different servers saw different mappings; `None` with answers from fewer than two servers.
fn mapping_varies(probes: &[&Probe]) -> Option<bool> {
    let mut servers: Vec<SocketAddr> = Vec::new();
    let mut mappings: Vec<SocketAddr> = Vec::new();
    for (server, reflexive, _) in answers(probes) {
        if !servers.contains(&server) {
            servers.push(server);
        }
        if !mappings.contains(&reflexive) {
            mappings.push(reflexive);
        }
    }
    (servers.len() >= 2).then_some(mappings.len() > 1)
}
