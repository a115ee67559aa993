//! The discovery server: nodes publish their signed records over HTTP, and anyone resolves them over DNS
//! (or HTTP), so that a node can be dialled by its NodeId alone.
//!
//! - **Publish endpoint**, on the relay's HTTP listener: `PUT /pkarr/<z-base-32 NodeId>` with a pkarr relay
//!   payload (`signature | timestamp | DNS packet`, see [`crate::protos::discovery`]) verifies the
//!   signature and stores the record if it is newer than the stored one; `GET` on the same path returns
//!   the stored payload. Answers: `204` stored; `200` with the payload; `400` a bad key, signature or
//!   packet, or a timestamp more than [`DiscoveryConfig::max_future_skew`] ahead; `404` nothing stored;
//!   `405` another method; `409` not newer than the stored record; `413` a body over 1,072 bytes (a DNS
//!   packet over 1,000); `429` over the per-IP rate limit (with `Retry-After`).
//! - **DNS** (module `dns`): authoritative for [`DiscoveryConfig::origin`] on UDP and TCP, answering
//!   `TXT _iroh.<id>.<origin>` from the store and refusing every other zone.
//! - **Store**: an embedded redb database ([`DiscoveryConfig::db_path`]; in memory without one), so a
//!   restart loses nothing; records not republished within [`DiscoveryConfig::evict_after`] are evicted.
//!
//! Metrics (in the relay's registry): `discovery_publishes_total{result}`,
//! `discovery_fetches_total{result}`, `discovery_records`, `discovery_evicted_total`,
//! `dns_queries_total{rcode}`.

mod cache;
mod dns;
mod limiter;
mod store;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hickory_server::proto::rr::Name;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use iroh_base::NodeId;
use tokio::{
    net::{TcpListener, UdpSocket},
    sync::watch,
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use self::{
    cache::AnswerCache,
    dns::{DnsServer, ZoneHandler},
    limiter::IpLimiter,
    store::{PutOutcome, Store},
};
pub use self::{limiter::RequestRate, store::StoreError};
use super::{ServerError, metrics::Metrics};
use crate::protos::discovery::{
    MAX_SIGNED_RECORD_LEN, PKARR_CONTENT_TYPE, PKARR_PATH, SignedRecord, now_micros,
};

/// The origin of `iroh-relay --dev`.
pub const DEV_ORIGIN: &str = "iroh.test";
/// The DNS address of `iroh-relay --dev`.
pub const DEV_DNS_BIND: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5300);
/// The largest PUT body: a relay payload with a 1,000-byte DNS packet.
pub const MAX_PUT_BODY: usize = MAX_SIGNED_RECORD_LEN - iroh_base::PUBLIC_KEY_LENGTH;
/// The default of [`DiscoveryConfig::dns_cache_records`]: a million nodes' answers, about 200 MB.
pub const DEFAULT_DNS_CACHE_RECORDS: usize = 1_000_000;
/// The most client IPs (IPv6 /64s) whose rate limits are tracked at once.
const MAX_TRACKED_SOURCES: usize = 100_000;
/// How long shutdown waits for the last users of the store to let go.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long reading a PUT body may take.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// The discovery part of a [`ServerConfig`](super::ServerConfig): see the [module docs](self).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// The DNS zone records are served under (`dns.example.org`: records at
    /// `_iroh.<id>.dns.example.org`).
    pub origin: String,
    /// Where DNS listens (UDP and TCP on the same address); `None` serves only HTTP.
    pub dns_bind: Option<SocketAddr>,
    /// The record database file; `None` keeps records in memory (lost on restart).
    pub db_path: Option<PathBuf>,
    /// Publishes per client IP (IPv6: per /64).
    pub publish_rate: RequestRate,
    /// How far in the future a record's timestamp may be (publishers' clocks are not exact).
    pub max_future_skew: Duration,
    /// Records not republished for this long are evicted.
    pub evict_after: Duration,
    /// How often eviction runs.
    pub evict_interval: Duration,
    /// The most nodes whose DNS answers are kept in memory in front of the database (about 200 bytes
    /// each); 0 for none.
    pub dns_cache_records: usize,
}

impl DiscoveryConfig {
    /// Discovery for `origin`: DNS on `dns_bind`, records in memory, the default limits.
    pub fn new(origin: impl Into<String>, dns_bind: Option<SocketAddr>) -> Self {
        Self {
            origin: origin.into(),
            dns_bind,
            db_path: None,
            publish_rate: RequestRate::default(),
            max_future_skew: Duration::from_secs(600),
            evict_after: Duration::from_secs(24 * 3600),
            evict_interval: Duration::from_secs(600),
            dns_cache_records: DEFAULT_DNS_CACHE_RECORDS,
        }
    }

    /// What `iroh-relay --dev` serves: origin [`DEV_ORIGIN`], DNS on [`DEV_DNS_BIND`], in memory.
    pub fn dev() -> Self {
        Self::new(DEV_ORIGIN, Some(DEV_DNS_BIND))
    }

    /// Keeps records in the database file at `path`.
    pub fn with_db_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.db_path = Some(path.into());
        self
    }

    /// Sets where DNS listens (`None`: no DNS).
    pub fn with_dns_bind(mut self, addr: Option<SocketAddr>) -> Self {
        self.dns_bind = addr;
        self
    }

    /// Sets the per-IP publish rate.
    pub fn with_publish_rate(mut self, rate: RequestRate) -> Self {
        self.publish_rate = rate;
        self
    }

    /// Sets how long records live without a republish.
    pub fn with_evict_after(mut self, after: Duration) -> Self {
        self.evict_after = after;
        self
    }

    pub(crate) fn validate(&self) -> Result<Name, DiscoveryConfigError> {
        let text = self.origin.trim_end_matches('.');
        let mut origin =
            Name::from_ascii(text).map_err(|source| DiscoveryConfigError::InvalidOrigin {
                origin: self.origin.clone(),
                source,
            })?;
        if text.is_empty() || origin.num_labels() == 0 {
            return Err(DiscoveryConfigError::RootOrigin);
        }
        origin.set_fqdn(true);
        if !(self.publish_rate.per_second > 0.0 && self.publish_rate.per_second.is_finite()) {
            return Err(DiscoveryConfigError::PublishRate(
                self.publish_rate.per_second,
            ));
        }
        if self.publish_rate.burst == 0 {
            return Err(DiscoveryConfigError::ZeroBurst);
        }
        if self.evict_interval.is_zero() {
            return Err(DiscoveryConfigError::ZeroEvictInterval);
        }
        Ok(origin)
    }
}

/// Why a [`DiscoveryConfig`] cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryConfigError {
    /// The origin is not a DNS name.
    #[error("discovery origin {origin:?} is not a DNS name: {source}")]
    InvalidOrigin {
        /// The origin given.
        origin: String,
        /// Why.
        #[source]
        source: hickory_server::proto::ProtoError,
    },
    /// The origin is the DNS root.
    #[error("discovery origin must not be the root")]
    RootOrigin,
    /// The publish rate is not a positive number.
    #[error("discovery publish rate must be a positive number, not {0}")]
    PublishRate(f64),
    /// The publish burst is 0.
    #[error("discovery publish burst must be at least 1")]
    ZeroBurst,
    /// The eviction interval is zero.
    #[error("discovery eviction interval must not be zero")]
    ZeroEvictInterval,
}

/// What the HTTP handlers and the DNS server share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) answers: AnswerCache,
    limiter: Mutex<IpLimiter>,
    pub(crate) metrics: Arc<Metrics>,
    max_future_skew: Duration,
}

/// The running discovery service: the store, the DNS server and the eviction task.
#[derive(Debug)]
pub(crate) struct Discovery {
    pub(crate) shared: Arc<Shared>,
    dns: Option<DnsServer>,
    dns_addr: Option<SocketAddr>,
    evict_task: JoinHandle<()>,
    pub(crate) origin: String,
}

impl Discovery {
    /// Opens the store, binds DNS and starts evicting.
    pub(crate) async fn spawn(
        config: &DiscoveryConfig,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, ServerError> {
        let origin = config.validate()?;
        let db_path = config.db_path.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(db_path.as_deref()))
            .await
            .map_err(|e| ServerError::Io(std::io::Error::other(e)))?
            .map_err(ServerError::DiscoveryStore)?;
        let count = store.len().unwrap_or(0);
        metrics
            .discovery_records
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        let shared = Arc::new(Shared {
            store,
            answers: AnswerCache::new(config.dns_cache_records),
            limiter: Mutex::new(IpLimiter::new(config.publish_rate, MAX_TRACKED_SOURCES)),
            metrics,
            max_future_skew: config.max_future_skew,
        });
        let (dns, dns_addr) = match config.dns_bind {
            Some(addr) => {
                let (udp, tcp) = bind_dns(addr).await?;
                let bound = udp.local_addr()?;
                let handler = ZoneHandler::new(Arc::clone(&shared), &origin);
                (Some(DnsServer::spawn(handler, udp, tcp)), Some(bound))
            }
            None => (None, None),
        };
        let evict_task = tokio::spawn(evict_loop(
            Arc::clone(&shared),
            config.evict_after,
            config.evict_interval,
            stop,
        ));
        info!(origin = %origin, dns = ?dns_addr, records = count, db = ?config.db_path, "discovery started");
        Ok(Self {
            shared,
            dns,
            dns_addr,
            evict_task,
            origin: origin.to_string().trim_end_matches('.').to_owned(),
        })
    }

    /// Where DNS is bound.
    pub(crate) fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns_addr
    }

    /// Stops DNS and eviction, then closes the store once nothing else uses it (the relay's
    /// connections are gone by then), so that the database file can be opened again at once.
    pub(crate) async fn shutdown(self) {
        let Self {
            shared,
            dns,
            evict_task,
            ..
        } = self;
        evict_task.abort();
        evict_task.await.ok();
        if let Some(dns) = dns {
            dns.shutdown().await;
        }
        let mut shared = shared;
        let deadline = Instant::now() + CLOSE_WAIT;
        let shared = loop {
            match Arc::try_unwrap(shared) {
                Ok(shared) => break Some(shared),
                Err(still_shared) if Instant::now() < deadline => {
                    shared = still_shared;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => {
                    warn!("discovery store still in use at shutdown; it closes when released");
                    break None;
                }
            }
        };
        if let Some(shared) = shared {
            tokio::task::spawn_blocking(move || shared.store.close())
                .await
                .ok();
        }
    }
}

/// UDP and TCP on the same address. With port 0 the system picks the UDP port, and TCP may find it taken
/// by another program's TCP socket: then it tries other ports, a few times.
async fn bind_dns(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), ServerError> {
    let bind_error = |what, source| ServerError::Bind { what, addr, source };
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| bind_error("DNS (UDP)", e))?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) => last = Some(error),
        }
    }
    Err(bind_error(
        "DNS (TCP)",
        last.unwrap_or_else(|| std::io::Error::other("no attempt")),
    ))
}

async fn evict_loop(
    shared: Arc<Shared>,
    evict_after: Duration,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let age = u64::try_from(evict_after.as_micros()).unwrap_or(u64::MAX);
        let cutoff = now_micros().saturating_sub(age);
        let store = shared.store.clone();
        let evicted = tokio::task::spawn_blocking(move || store.evict_older_than(cutoff)).await;
        match evicted {
            Ok(Ok(evicted)) => {
                if evicted > 0 {
                    shared.answers.clear();
                    info!(evicted, "evicted discovery records not republished in time");
                    shared.metrics.discovery_evicted.inc_by(evicted);
                    // Counted up by each new record's publish, down here: never a stale total.
                    shared
                        .metrics
                        .discovery_records
                        .dec_by(i64::try_from(evicted).unwrap_or(i64::MAX));
                }
            }
            Ok(Err(error)) => warn!(%error, "discovery eviction failed"),
            Err(error) => warn!(%error, "discovery eviction task failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = super::stopped(&mut stop) => return,
        }
    }
}

type Body = Full<Bytes>;

/// Serves `/pkarr/<id>` (`path` is the part after `/pkarr/`).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: IpAddr,
    method: Method,
    path: String,
    body: Incoming,
    content_length: Option<u64>,
) -> Response<Body> {
    let metrics = &shared.metrics;
    let node = match path.parse::<NodeId>() {
        Ok(node) if method == Method::GET || method == Method::PUT => node,
        Ok(_) => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET or PUT\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, PUT"));
            return response;
        }
        Err(_) => {
            let which = if method == Method::PUT {
                "publish"
            } else {
                "fetch"
            };
            count(metrics, which, "bad_request");
            return text(StatusCode::BAD_REQUEST, "not a z-base-32 node id\n");
        }
    };
    if method == Method::GET {
        return fetch(&shared, node);
    }
    let admitted = shared
        .limiter
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .check(Instant::now(), peer);
    if !admitted {
        metrics.discovery_publish("rate_limited");
        let retry = shared
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retry_after();
        let mut response = text(StatusCode::TOO_MANY_REQUESTS, "too many publishes\n");
        if let Ok(value) = HeaderValue::from_str(&retry.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    if content_length.is_some_and(|len| len > MAX_PUT_BODY as u64) {
        metrics.discovery_publish("too_large");
        return text(StatusCode::PAYLOAD_TOO_LARGE, "record too large\n");
    }
    let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_PUT_BODY).collect());
    let payload = match collected.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            metrics.discovery_publish("too_large");
            return text(StatusCode::PAYLOAD_TOO_LARGE, "record too large\n");
        }
        Ok(Err(error)) => {
            debug!(%peer, %error, "cannot read a publish body");
            metrics.discovery_publish("bad_request");
            return text(StatusCode::BAD_REQUEST, "cannot read the body\n");
        }
        Err(_) => {
            metrics.discovery_publish("bad_request");
            return text(StatusCode::REQUEST_TIMEOUT, "body too slow\n");
        }
    };
    publish(&shared, node, &payload).await
}

fn count(metrics: &Metrics, which: &str, result: &'static str) {
    if which == "publish" {
        metrics.discovery_publish(result);
    } else {
        metrics.discovery_fetch(result);
    }
}

async fn publish(shared: &Shared, node: NodeId, payload: &[u8]) -> Response<Body> {
    let metrics = &shared.metrics;
    let record = match SignedRecord::from_relay_payload(node, payload) {
        Ok(record) => record,
        Err(error) => {
            metrics.discovery_publish("bad_request");
            return text(
                StatusCode::BAD_REQUEST,
                &format!("invalid record: {error}\n"),
            );
        }
    };
    let skew = u64::try_from(shared.max_future_skew.as_micros()).unwrap_or(u64::MAX);
    if record.timestamp() > now_micros().saturating_add(skew) {
        metrics.discovery_publish("bad_request");
        return text(
            StatusCode::BAD_REQUEST,
            "the record's timestamp is in the future\n",
        );
    }
    match shared.store.put(record).await {
        Ok(PutOutcome::Stored { new }) => {
            shared.answers.forget(node.as_bytes());
            metrics.discovery_publish("stored");
            if new {
                metrics.discovery_records.inc();
            }
            debug!(node = %node.fmt_short(), "record stored");
            let mut response = Response::new(Body::default());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        Ok(PutOutcome::NotNewer) => {
            metrics.discovery_publish("not_newer");
            text(StatusCode::CONFLICT, "not newer than the stored record\n")
        }
        Err(error) => {
            metrics.discovery_publish("error");
            warn!(%error, "cannot store a record");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot store the record\n",
            )
        }
    }
}

fn fetch(shared: &Shared, node: NodeId) -> Response<Body> {
    let metrics = &shared.metrics;
    match shared.store.get(&node) {
        Ok(Some(record)) => {
            metrics.discovery_fetch("found");
            let mut response = Response::new(Full::new(record.to_relay_payload()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(PKARR_CONTENT_TYPE),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Ok(None) => {
            metrics.discovery_fetch("not_found");
            text(StatusCode::NOT_FOUND, "no record\n")
        }
        Err(error) => {
            warn!(%error, "cannot read a record");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the record\n",
            )
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The path prefix of the publish endpoint, with its slashes: `/pkarr/`.
pub(crate) fn route_prefix() -> String {
    format!("/{PKARR_PATH}/")
}
