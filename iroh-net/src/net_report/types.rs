//! The vocabulary of net report: the configured relays, what a report probes, what it asks the driver to
//! send, and what it finds.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use iroh_base::RelayUrl;

/// A relay server as configured: its URL and the UDP port its STUN server listens on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelayNode {
    /// The relay's URL; its host is also the STUN server's host.
    pub url: RelayUrl,
    /// The STUN port on the relay's host, or `None` if this relay answers no STUN (it is then measured by
    /// relay pings only).
    pub stun_port: Option<u16>,
}

impl RelayNode {
    /// A relay that answers STUN on the default port, [`iroh_stun::DEFAULT_PORT`] (3478).
    pub fn new(url: RelayUrl) -> Self {
        Self {
            url,
            stun_port: Some(iroh_stun::DEFAULT_PORT),
        }
    }

    /// A relay that answers STUN on `port`.
    pub fn with_stun_port(url: RelayUrl, port: u16) -> Self {
        Self {
            url,
            stun_port: Some(port),
        }
    }

    /// A relay without STUN.
    pub fn without_stun(url: RelayUrl) -> Self {
        Self {
            url,
            stun_port: None,
        }
    }

    /// The probe target for this relay, given the IP addresses its host resolved to (the driver's job).
    ///
    /// Each address is combined with the STUN port; a relay without STUN gets a target without addresses
    /// (measured by relay pings only). Duplicate addresses are dropped.
    pub fn probe_target(&self, resolved: &[IpAddr]) -> ProbeTarget {
        let mut stun_addrs = Vec::new();
        if let Some(port) = self.stun_port {
            for ip in resolved {
                let addr = SocketAddr::new(*ip, port);
                if !stun_addrs.contains(&addr) {
                    stun_addrs.push(addr);
                }
            }
        }
        ProbeTarget {
            url: self.url.clone(),
            stun_addrs,
        }
    }
}

/// Why a [`RelayMap`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayMapError {
    /// No relay was given (caller misuse): an endpoint needs at least one.
    #[error("a relay map needs at least one relay")]
    Empty,
    /// The same URL was given twice (caller misuse).
    #[error("relay {0} is listed twice")]
    Duplicate(RelayUrl),
}

/// The configured relays: a non-empty list, in the order given, without duplicate URLs.
///
/// The order matters only as a tie-breaker: net report prefers the lowest latency, and among equal latencies
/// the relay listed first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayMap {
    nodes: Vec<RelayNode>,
}

impl RelayMap {
    /// A map of these relays. Fails if the list is empty or names one URL twice.
    pub fn new(nodes: Vec<RelayNode>) -> Result<Self, RelayMapError> {
        if nodes.is_empty() {
            return Err(RelayMapError::Empty);
        }
        for (i, node) in nodes.iter().enumerate() {
            if nodes[..i].iter().any(|other| other.url == node.url) {
                return Err(RelayMapError::Duplicate(node.url.clone()));
            }
        }
        Ok(Self { nodes })
    }

    /// A map of one relay.
    pub fn from_node(node: RelayNode) -> Self {
        Self { nodes: vec![node] }
    }

    /// The relays, in the order given.
    pub fn nodes(&self) -> &[RelayNode] {
        &self.nodes
    }

    /// The relay with this URL.
    pub fn get(&self, url: &RelayUrl) -> Option<&RelayNode> {
        self.nodes.iter().find(|node| &node.url == url)
    }

    /// Whether this URL is configured.
    pub fn contains(&self, url: &RelayUrl) -> bool {
        self.get(url).is_some()
    }

    /// The URLs, in the order given.
    pub fn urls(&self) -> impl Iterator<Item = &RelayUrl> {
        self.nodes.iter().map(|node| &node.url)
    }
}

/// One relay to measure in a report: its URL and the resolved addresses of its STUN server (IPv4 and/or
/// IPv6; none if it has no STUN or its name did not resolve).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeTarget {
    /// The relay.
    pub url: RelayUrl,
    /// Where to send STUN Binding requests, one transaction per address.
    pub stun_addrs: Vec<SocketAddr>,
}

impl ProbeTarget {
    /// A target whose STUN server could not be resolved (or that has none): measured by relay pings only.
    pub fn unresolved(url: RelayUrl) -> Self {
        Self {
            url,
            stun_addrs: Vec::new(),
        }
    }
}

/// A STUN request the driver must send, from the socket QUIC uses for `dst`'s address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The STUN server.
    pub dst: SocketAddr,
    /// The encoded Binding request.
    pub contents: Vec<u8>,
}

/// Why a report runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReportReason {
    /// The first report, right after start.
    Startup,
    /// The periodic refresh that keeps NAT mappings and latencies fresh.
    Periodic,
    /// The network changed (interfaces, addresses, default route): earlier measurements are stale.
    NetworkChanged,
    /// The connection to this relay failed or was lost. Until a new relay latency sample arrives for it
    /// ([`NetReporter::handle_relay_latency`](super::NetReporter::handle_relay_latency)), it is chosen as
    /// preferred relay only if no other relay answered.
    RelayFailed(RelayUrl),
    /// The driver asked for another reason.
    Other(&'static str),
}

impl fmt::Display for ReportReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Startup => f.write_str("startup"),
            Self::Periodic => f.write_str("periodic"),
            Self::NetworkChanged => f.write_str("network changed"),
            Self::RelayFailed(url) => write!(f, "relay {url} failed"),
            Self::Other(why) => f.write_str(why),
        }
    }
}

/// What one report found out about our network. Partial results are normal: a relay that did not answer in
/// time is simply missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Our public IPv4 address and port as STUN servers saw it (for the socket QUIC uses). When servers
    /// disagree (see [`Report::mapping_varies_by_dest_v4`]), the address most of them saw, ties going to the
    /// fastest server.
    pub global_v4: Option<SocketAddr>,
    /// Our public IPv6 address and port, chosen like [`Report::global_v4`].
    pub global_v6: Option<SocketAddr>,
    /// Whether two STUN servers saw different IPv4 mappings (an endpoint-dependent, "symmetric", NAT: peers
    /// will see yet other ports, so the global address alone will not get them through). `None` unless at
    /// least two IPv4 servers at different addresses answered. A server whose answer names a second socket
    /// (RFC 5780 OTHER-ADDRESS, the relay's `stun_alt_bind`) is also asked there, from the same socket, so
    /// one such relay is enough for a verdict.
    pub mapping_varies_by_dest_v4: Option<bool>,
    /// Like [`Report::mapping_varies_by_dest_v4`], for IPv6.
    pub mapping_varies_by_dest_v6: Option<bool>,
    /// Latency per relay that answered: the best of its STUN round trips in this report and of the recent
    /// latency samples the driver measured over the relay connection. Only relays probed in this report.
    pub relay_latency: BTreeMap<RelayUrl, Duration>,
    /// The relay to use as home: the lowest latency, with hysteresis (see the
    /// [module docs](super#choosing-the-home-relay)). `None` if no relay has a latency.
    pub preferred_relay: Option<RelayUrl>,
    /// Whether some IPv4 STUN server answered.
    pub udp_works_v4: bool,
    /// Whether some IPv6 STUN server answered.
    pub udp_works_v6: bool,
    /// Why this report ran.
    pub reason: ReportReason,
    /// When the report completed.
    pub captured_at: Instant,
}

impl Report {
    /// Whether UDP reached some STUN server (IPv4 or IPv6).
    pub fn udp_works(&self) -> bool {
        self.udp_works_v4 || self.udp_works_v6
    }

    /// The public addresses learned by STUN: IPv4 first, then IPv6.
    pub fn global_addrs(&self) -> impl Iterator<Item = SocketAddr> {
        self.global_v4.into_iter().chain(self.global_v6)
    }
}

/// What [`NetReporter`](super::NetReporter) tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetReportEvent {
    /// A report is due: resolve the relays' STUN hosts and call
    /// [`NetReporter::start_report`](super::NetReporter::start_report), with unresolved targets if
    /// resolution fails.
    ReportDue(ReportReason),
    /// A report completed.
    ReportReady(Report),
}
