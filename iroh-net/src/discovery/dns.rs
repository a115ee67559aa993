//! Resolving nodes through DNS: TXT records at `_iroh.<z-base-32 NodeId>.<origin>`, as the discovery
//! server of `iroh-relay` serves them for the records nodes publish to it.
//!
//! The answers are not signed (DNS carries the facts, not the pkarr signature): they are hints the TLS
//! handshake checks. The resolver is hickory's, asking either the system's name servers (for an origin
//! delegated to a discovery server) or one given server (`127.0.0.1:5300` for `iroh-relay --dev`). It
//! caches answers within their TTL, at most [`MAX_CACHE_TTL`], so a node that moves is found again soon.

use std::{net::SocketAddr, str::FromStr, sync::Arc, time::Duration};

use futures_util::stream;
use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts},
    proto::rr::{Name, RData},
};
use iroh_base::NodeId;
use iroh_relay::protos::discovery::{IROH_TXT_LABEL, NodeRecord};
use tokio::time::Instant;

use super::{
    BoxError, Discovery, DiscoveryError, DiscoveryErrorKind, DiscoveryItem, DiscoveryStream,
};

/// The [`Discovery::name`] of a [`DnsDiscovery`].
pub const NAME: &str = "dns";
/// The longest our resolver caches an answer, whatever its TTL.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(30);
/// How long one query waits for an answer before retrying (hickory retries once).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Finds nodes through DNS TXT records under an origin: see the [module docs](self).
#[derive(Debug, Clone)]
pub struct DnsDiscovery {
    origin: Arc<str>,
    resolver: TokioResolver,
    /// The same servers, no cache: for [`Discovery::resolve_fresh`].
    fresh: TokioResolver,
}

impl DnsDiscovery {
    /// Queries the system's name servers for records under `origin` (for example `dns.example.org`).
    ///
    /// Falls back to asking `127.0.0.1:53` if the system has no DNS configuration.
    pub fn new(origin: DnsOrigin) -> Result<Self, ResolverError> {
        match TokioResolver::builder_tokio() {
            Ok(mut builder) => {
                tune(builder.options_mut());
                let resolver = builder.build().map_err(|e| ResolverError(Box::new(e)))?;
                let mut fresh =
                    TokioResolver::builder_tokio().map_err(|e| ResolverError(Box::new(e)))?;
                tune(fresh.options_mut());
                fresh.options_mut().cache_size = 0;
                Ok(Self {
                    origin: origin.0,
                    resolver,
                    fresh: fresh.build().map_err(|e| ResolverError(Box::new(e)))?,
                })
            }
            Err(error) => {
                tracing::debug!(%error, "no system DNS configuration; asking 127.0.0.1:53");
                Self::with_name_server(origin, SocketAddr::from(([127, 0, 0, 1], 53)))
            }
        }
    }

    /// Queries only `server` (UDP, and TCP for long answers) for records under `origin`.
    pub fn with_name_server(origin: DnsOrigin, server: SocketAddr) -> Result<Self, ResolverError> {
        let mut udp = ConnectionConfig::udp();
        udp.port = server.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = server.port();
        let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
        name_server.connections = vec![udp, tcp];
        let config = ResolverConfig::from_name_servers(vec![name_server]);
        let build = |cache: bool| {
            let mut builder =
                TokioResolver::builder_with_config(config.clone(), Default::default());
            tune(builder.options_mut());
            if !cache {
                builder.options_mut().cache_size = 0;
            }
            builder.build().map_err(|e| ResolverError(Box::new(e)))
        };
        Ok(Self {
            origin: origin.0,
            resolver: build(true)?,
            fresh: build(false)?,
        })
    }

    /// The origin under which it looks.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The name queried for `node`: `_iroh.<z-base-32 id>.<origin>.`
    pub fn query_name(&self, node: NodeId) -> String {
        format!("{IROH_TXT_LABEL}.{node}.{}.", self.origin)
    }

    /// Looks `node` up once (answering from the cache if it can).
    pub async fn lookup(&self, node: NodeId) -> Result<DiscoveryItem, DiscoveryError> {
        self.lookup_with(&self.resolver, node).await
    }

    async fn lookup_with(
        &self,
        resolver: &TokioResolver,
        node: NodeId,
    ) -> Result<DiscoveryItem, DiscoveryError> {
        let started = Instant::now().into_std();
        let fail = |kind| DiscoveryError::new(NAME, started, kind);
        let name = Name::from_str(&self.query_name(node))
            .map_err(|e| fail(DiscoveryErrorKind::Dns(Box::new(e))))?;
        let lookup = match resolver.txt_lookup(name).await {
            Ok(lookup) => lookup,
            Err(error) if error.is_nx_domain() => {
                return Err(fail(DiscoveryErrorKind::NotFound("NXDOMAIN")));
            }
            Err(error) if error.is_no_records_found() => {
                return Err(fail(DiscoveryErrorKind::NotFound("no TXT records")));
            }
            Err(error) => return Err(fail(DiscoveryErrorKind::Dns(Box::new(error) as BoxError))),
        };
        let mut ttl = None::<u32>;
        let mut strings: Vec<&[u8]> = Vec::new();
        for record in lookup.answers() {
            if let RData::TXT(txt) = &record.data {
                ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
                strings.extend(txt.txt_data.iter().map(|s| &s[..]));
            }
        }
        let Some(ttl) = ttl else {
            return Err(fail(DiscoveryErrorKind::NotFound("no TXT records")));
        };
        let record = NodeRecord::from_txt_strings(node, ttl, strings)
            .map_err(|e| fail(DiscoveryErrorKind::Record(e)))?;
        if record.is_empty() {
            return Err(fail(DiscoveryErrorKind::Empty));
        }
        Ok(DiscoveryItem::from_record(&record, NAME, None))
    }
}

fn tune(options: &mut ResolverOpts) {
    options.timeout = QUERY_TIMEOUT;
    options.attempts = 1;
    options.positive_max_ttl = Some(MAX_CACHE_TTL);
    // Negative answers are cached briefly: a node that publishes a moment after a failed dial is found.
    options.negative_max_ttl = Some(Duration::from_secs(1));
    options.cache_size = 1024;
}

impl Discovery for DnsDiscovery {
    fn name(&self) -> &'static str {
        NAME
    }

    fn resolve(&self, node: NodeId) -> Option<DiscoveryStream> {
        let this = self.clone();
        Some(Box::pin(stream::once(
            async move { this.lookup(node).await },
        )))
    }

    fn resolve_fresh(&self, node: NodeId) -> Option<DiscoveryStream> {
        let this = self.clone();
        Some(Box::pin(stream::once(async move {
            this.lookup_with(&this.fresh, node).await
        })))
    }
}

/// A DNS origin (zone) such as `dns.example.org` or `iroh.test`: lower case, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsOrigin(Arc<str>);

impl DnsOrigin {
    /// The origin as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DnsOrigin {
    type Err = DnsOriginError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim_end_matches('.').to_ascii_lowercase();
        if trimmed.is_empty() || trimmed.len() > 200 {
            return Err(DnsOriginError(s.chars().take(64).collect()));
        }
        let labels_ok = trimmed.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if !labels_ok {
            return Err(DnsOriginError(s.chars().take(64).collect()));
        }
        Ok(Self(trimmed.into()))
    }
}

impl std::fmt::Display for DnsOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A DNS origin that is not a valid domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a DNS origin: {0:?}")]
pub struct DnsOriginError(String);

/// The DNS resolver could not be built (hickory's reason inside).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the DNS resolver: {0}")]
pub struct ResolverError(#[source] BoxError);
