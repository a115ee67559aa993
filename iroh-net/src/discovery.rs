//! Discovery: finding a node's addresses from its [`NodeId`] alone, and publishing our own.
//!
//! A [`Discovery`] service does two things, both optional:
//! - **publish** our current addressing ([`NodeData`]: home relay and direct addresses) whenever it
//!   changes, so that others can find us;
//! - **resolve** a [`NodeId`] into a stream of [`DiscoveryItem`]s, each a [`NodeAddr`] tagged with the
//!   service it came from.
//!
//! The [`Endpoint`](crate::endpoint::Endpoint) runs every service given to
//! [`Builder::discovery`](crate::endpoint::Builder::discovery) /
//! [`Builder::add_discovery`](crate::endpoint::Builder::add_discovery): all of them publish, and
//! [`Endpoint::connect`](crate::endpoint::Endpoint::connect) with no usable address resolves through all of
//! them at once, connecting with the first usable answer while later answers still add addresses. With
//! addresses that might be stale it resolves in the background. Results are only hints: the TLS
//! handshake still proves the node holds its key, so a lying service can delay a connection but never
//! redirect it.
//!
//! Services:
//! - [`static_provider::StaticProvider`]: an in-memory address book the application fills;
//! - [`dns::DnsDiscovery`]: TXT records at `_iroh.<z-base-32 NodeId>.<origin>` through hickory-resolver;
//! - [`pkarr::PkarrPublisher`] and [`pkarr::PkarrResolver`]: signed records (the pkarr format of
//!   [`iroh_relay::protos::discovery`]) published to, and fetched from, a publish endpoint over HTTP: the
//!   discovery server of `iroh-relay`, which also answers the DNS queries;
//! - [`mdns::MdnsDiscovery`]: nodes on the same local network, with no relay or server, over multicast
//!   DNS service discovery (RFC 6762/6763, service type `_iroh._udp.local`).
//!
//! ```no_run
//! # async fn demo(peer: iroh_base::NodeId) -> Result<(), Box<dyn std::error::Error>> {
//! use iroh_net::{
//!     discovery::{dns::DnsDiscovery, pkarr::PkarrPublisher},
//!     endpoint::Endpoint,
//! };
//!
//! let secret_key = iroh_base::SecretKey::generate();
//! let endpoint = Endpoint::builder()
//!     .secret_key(secret_key.clone())
//!     .add_discovery(PkarrPublisher::new(secret_key, "https://dns.example.org".parse()?))
//!     .add_discovery(DnsDiscovery::new("dns.example.org".parse()?)?)
//!     .bind()
//!     .await?;
//! let conn = endpoint.connect(peer, b"my-proto/1").await?;
//! # Ok(()) }
//! ```

pub mod dns;
pub mod mdns;
pub mod pkarr;
pub mod schedule;
pub mod static_provider;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeSet,
    fmt,
    net::SocketAddr,
    pin::Pin,
    time::{Duration, Instant},
};

use futures_util::{Stream, stream};
use iroh_base::{NodeAddr, NodeId, RelayUrl};

pub use self::schedule::{PublishConfig, PublishSchedule};

/// A boxed error from a library whose types this crate does not expose (hickory).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a resolve yields: addresses as they are found, or why a service found none.
pub type DiscoveryStream =
    Pin<Box<dyn Stream<Item = Result<DiscoveryItem, DiscoveryError>> + Send>>;

/// Our own addressing, as published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeData {
    /// Our home relay.
    pub relay_url: Option<RelayUrl>,
    /// Our direct addresses.
    pub direct_addresses: BTreeSet<SocketAddr>,
}

impl NodeData {
    /// Addressing with this relay and these direct addresses.
    pub fn new(
        relay_url: Option<RelayUrl>,
        direct_addresses: impl IntoIterator<Item = SocketAddr>,
    ) -> Self {
        Self {
            relay_url,
            direct_addresses: direct_addresses.into_iter().collect(),
        }
    }

    /// Whether there is nothing to publish.
    pub fn is_empty(&self) -> bool {
        self.relay_url.is_none() && self.direct_addresses.is_empty()
    }
}

/// One answer of a resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryItem {
    /// The addresses found.
    pub node_addr: NodeAddr,
    /// The service that found them ([`Discovery::name`]), shown in
    /// [`RemoteInfo`](crate::endpoint::RemoteInfo) as the addresses' source.
    pub provenance: &'static str,
    /// When the node published them, in microseconds since the Unix epoch, if the service knows.
    pub last_updated: Option<u64>,
}

impl DiscoveryItem {
    /// An item from the facts of a record.
    pub fn from_record(
        record: &iroh_relay::protos::discovery::NodeRecord,
        provenance: &'static str,
        last_updated: Option<u64>,
    ) -> Self {
        Self {
            node_addr: NodeAddr::from_parts(
                record.node_id(),
                record.relay_url().cloned(),
                record.direct_addresses().iter().copied(),
            ),
            provenance,
            last_updated,
        }
    }
}

/// A way to publish our addressing and to find other nodes': see the [module docs](self).
///
/// Implementations must not block: [`Discovery::publish`] hands the data to a task of its own, and
/// [`Discovery::resolve`] returns a stream that does its I/O when polled.
pub trait Discovery: fmt::Debug + Send + Sync + 'static {
    /// A short name for errors and address sources: `"dns"`, `"pkarr"`, `"static"`, ...
    fn name(&self) -> &'static str;

    /// Publishes our addressing; called whenever it changes. Publishing nothing is the default.
    fn publish(&self, data: &NodeData) {
        let _ = data;
    }

    /// Starts finding `node`'s addresses, or `None` if this service does not resolve (or knows
    /// already that it has nothing: an empty address book).
    fn resolve(&self, node: NodeId) -> Option<DiscoveryStream> {
        let _ = node;
        None
    }

    /// Like [`Discovery::resolve`], but past any cache: the endpoint calls it when what an earlier
    /// resolve gave has not led to a connection (the node may have moved since it was cached).
    fn resolve_fresh(&self, node: NodeId) -> Option<DiscoveryStream> {
        self.resolve(node)
    }
}

impl<T: Discovery + ?Sized> Discovery for std::sync::Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn publish(&self, data: &NodeData) {
        (**self).publish(data);
    }

    fn resolve(&self, node: NodeId) -> Option<DiscoveryStream> {
        (**self).resolve(node)
    }

    fn resolve_fresh(&self, node: NodeId) -> Option<DiscoveryStream> {
        (**self).resolve_fresh(node)
    }
}

/// Several services as one: all publish, and resolves run concurrently, their answers interleaved as
/// they arrive.
#[derive(Debug, Default)]
pub struct ConcurrentDiscovery {
    services: Vec<Box<dyn Discovery>>,
}

impl ConcurrentDiscovery {
    /// No services yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a service.
    pub fn add(&mut self, service: impl Discovery) {
        self.services.push(Box::new(service));
    }

    /// Whether there are no services.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The services' names, in the order they were added.
    pub fn names(&self) -> Vec<&'static str> {
        self.services.iter().map(|s| s.name()).collect()
    }
}

impl Discovery for ConcurrentDiscovery {
    fn name(&self) -> &'static str {
        "concurrent"
    }

    fn publish(&self, data: &NodeData) {
        for service in &self.services {
            service.publish(data);
        }
    }

    fn resolve(&self, node: NodeId) -> Option<DiscoveryStream> {
        merge(self.services.iter().filter_map(|s| s.resolve(node)))
    }

    fn resolve_fresh(&self, node: NodeId) -> Option<DiscoveryStream> {
        merge(self.services.iter().filter_map(|s| s.resolve_fresh(node)))
    }
}

/// The streams interleaved as their items come, or `None` without any.
fn merge(streams: impl Iterator<Item = DiscoveryStream>) -> Option<DiscoveryStream> {
    let streams: Vec<DiscoveryStream> = streams.collect();
    if streams.is_empty() {
        return None;
    }
    Some(Box::pin(stream::select_all(streams)))
}

/// Why a service found no address for a node: which service, what went wrong, and how long it took.
///
/// Displayed as `dns: NXDOMAIN after 120 ms`.
#[derive(Debug, thiserror::Error)]
#[error("{service}: {kind} after {} ms", elapsed.as_millis())]
pub struct DiscoveryError {
    /// The service ([`Discovery::name`]).
    pub service: &'static str,
    /// How long it took to fail.
    pub elapsed: Duration,
    /// What went wrong.
    #[source]
    pub kind: DiscoveryErrorKind,
}

impl DiscoveryError {
    /// An error of `service`, timed from `started`.
    pub fn new(service: &'static str, started: Instant, kind: DiscoveryErrorKind) -> Self {
        Self {
            service,
            elapsed: started.elapsed(),
            kind,
        }
    }
}

/// What went wrong in a [`DiscoveryError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryErrorKind {
    /// The service has nothing for the node: `NXDOMAIN`, no TXT records, `404`.
    #[error("{0}")]
    NotFound(&'static str),
    /// A DNS lookup failed (no answer, a server failure).
    #[error("DNS: {0}")]
    Dns(#[source] BoxError),
    /// An HTTP lookup failed.
    #[error("{0}")]
    Pkarr(#[source] iroh_relay::client::pkarr::PkarrError),
    /// The record found does not parse.
    #[error("bad record: {0}")]
    Record(#[source] iroh_relay::protos::discovery::RecordError),
    /// The record is about another node, or has no addresses.
    #[error("the record has no address")]
    Empty,
    /// Local-network discovery found nothing.
    #[error("{0}")]
    Mdns(#[source] mdns::MdnsError),
}

/// A list of discovery errors as one line: `dns: NXDOMAIN after 120 ms; pkarr: no record (404) after 3 ms`.
#[derive(Debug)]
pub struct DiscoveryErrors(pub Vec<DiscoveryError>);

impl fmt::Display for DiscoveryErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no discovery service answered");
        }
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}
