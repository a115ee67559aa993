//! Prometheus metrics of the relay, and the small HTTP server that exposes them on their own address.
//!
//! All names carry the `iroh_relay_` prefix; counters end in `_total` (OpenMetrics text format):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `accepts_total` | counter | TCP connections accepted on the relay listener |
//! | `http_requests_total{route}` | counter | HTTP requests by route (`relay`, `ping`, `generate_204`, `healthz`, `other`) |
//! | `upgrades_total` | counter | successful `/relay` upgrades (101 sent) |
//! | `handshake_failures_total{reason}` | counter | connections that did not become clients, by reason |
//! | `pending_handshakes` | gauge | connections accepted but not logged in now (TLS, HTTP request, login) |
//! | `handshakes_refused_total{cap}` | counter | connections closed at accept because `max_pending` (`total`) or `max_pending_per_source` (`per_source`) was reached |
//! | `clients` | gauge | clients logged in now |
//! | `logins_total` | counter | successful logins |
//! | `replaced_total` | counter | connections replaced by a newer one of the same node |
//! | `disconnects_total{reason}` | counter | client connections ended, by reason |
//! | `relayed_datagrams_total` | counter | datagrams written to their destination (a GSO batch counts each datagram) |
//! | `relayed_bytes_total` | counter | datagram payload bytes written to their destination |
//! | `dropped_datagrams_total{reason}` | counter | datagrams dropped: `queue_full`, `unknown_destination`, `rate_limited` |
//! | `rate_limited_total` | counter | rate-limit notices sent to clients (at most one per client per second) |
//! | `peer_gone_total` | counter | PeerGone frames queued |
//! | `discovery_publishes_total{result}` | counter | record PUTs: `stored`, `not_newer`, `bad_request`, `too_large`, `rate_limited`, `error` |
//! | `discovery_fetches_total{result}` | counter | record GETs: `found`, `not_found`, `bad_request` |
//! | `discovery_records` | gauge | records stored |
//! | `discovery_evicted_total` | counter | records evicted for age |
//! | `dns_queries_total{rcode}` | counter | DNS queries answered, by response code: `noerror`, `nxdomain`, `refused`, `formerr`, `notimp`, `servfail`, `other` |
//! | `stun_requests_total{result}` | counter | STUN datagrams on both STUN sockets: `answered`, `error` (an error response sent), `refused` (over the per-source rate limit), `malformed`, `ignored` |

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError, atomic::AtomicU64},
};

use iroh_stun::server::{ServerStats, StatsHandle};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tracing::{debug, warn};

/// A metric label naming a reason or route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// A metric label naming which cap refused a connection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapLabel {
    cap: &'static str,
}

/// A metric label naming an HTTP route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// The destination's send queue was full.
    QueueFull,
    /// No client with the destination node id is connected.
    UnknownDestination,
    /// The sender exceeded its rate limit.
    RateLimited,
}

/// The relay's counters. Cloning a counter shares it, so hot paths hold their own handles.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) accepts: Counter,
    http_requests: Family<RouteLabel, Counter>,
    pub(crate) upgrades: Counter,
    handshake_failures: Family<ReasonLabel, Counter>,
    pub(crate) clients: Gauge,
    pub(crate) logins: Counter,
    pub(crate) replaced: Counter,
    disconnects: Family<ReasonLabel, Counter>,
    pub(crate) relayed_datagrams: Counter,
    pub(crate) relayed_bytes: Counter,
    dropped_queue_full: Counter,
    dropped_unknown_destination: Counter,
    dropped_rate_limited: Counter,
    pub(crate) rate_limited: Counter,
    pub(crate) peer_gone: Counter,
    discovery_publishes: Family<ResultLabel, Counter>,
    discovery_fetches: Family<ResultLabel, Counter>,
    pub(crate) discovery_records: Gauge,
    pub(crate) discovery_evicted: Counter,
    dns_queries: Family<RcodeLabel, Counter>,
    pub(crate) pending_handshakes: Gauge,
    handshakes_refused: Family<CapLabel, Counter>,
    stun_requests: Family<ResultLabel, Counter>,
    /// The STUN servers' counters, and what of them was last added to `stun_requests`.
    stun: Mutex<Vec<(StatsHandle, ServerStats)>>,
}

/// A metric label naming an outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// A metric label naming a DNS response code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RcodeLabel {
    rcode: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("iroh_relay");
        let accepts = Counter::default();
        registry.register(
            "accepts",
            "TCP connections accepted on the relay listener",
            accepts.clone(),
        );
        let http_requests = Family::<RouteLabel, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route",
            http_requests.clone(),
        );
        let upgrades = Counter::default();
        registry.register(
            "upgrades",
            "Successful /relay protocol upgrades",
            upgrades.clone(),
        );
        let handshake_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "handshake_failures",
            "Connections that did not become clients, by reason",
            handshake_failures.clone(),
        );
        let clients = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register("clients", "Clients logged in now", clients.clone());
        let logins = Counter::default();
        registry.register("logins", "Successful logins", logins.clone());
        let replaced = Counter::default();
        registry.register(
            "replaced",
            "Connections replaced by a newer connection of the same node",
            replaced.clone(),
        );
        let disconnects = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "disconnects",
            "Client connections ended, by reason",
            disconnects.clone(),
        );
        let relayed_datagrams = Counter::default();
        registry.register(
            "relayed_datagrams",
            "Datagrams written to their destination",
            relayed_datagrams.clone(),
        );
        let relayed_bytes = Counter::default();
        registry.register(
            "relayed_bytes",
            "Datagram payload bytes written to their destination",
            relayed_bytes.clone(),
        );
        let dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "dropped_datagrams",
            "Datagrams dropped, by reason",
            dropped.clone(),
        );
        let drop_counter = |reason| dropped.get_or_create(&ReasonLabel { reason }).clone();
        let dropped_queue_full = drop_counter("queue_full");
        let dropped_unknown_destination = drop_counter("unknown_destination");
        let dropped_rate_limited = drop_counter("rate_limited");
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited",
            "Rate-limit notices sent to clients",
            rate_limited.clone(),
        );
        let peer_gone = Counter::default();
        registry.register("peer_gone", "PeerGone frames queued", peer_gone.clone());
        let discovery_publishes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "discovery_publishes",
            "Discovery record PUTs, by result",
            discovery_publishes.clone(),
        );
        let discovery_fetches = Family::<ResultLabel, Counter>::default();
        registry.register(
            "discovery_fetches",
            "Discovery record GETs, by result",
            discovery_fetches.clone(),
        );
        let discovery_records = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "discovery_records",
            "Discovery records stored",
            discovery_records.clone(),
        );
        let discovery_evicted = Counter::default();
        registry.register(
            "discovery_evicted",
            "Discovery records evicted for age",
            discovery_evicted.clone(),
        );
        let dns_queries = Family::<RcodeLabel, Counter>::default();
        registry.register(
            "dns_queries",
            "DNS queries answered, by response code",
            dns_queries.clone(),
        );
        let pending_handshakes = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "pending_handshakes",
            "Connections accepted but not logged in now",
            pending_handshakes.clone(),
        );
        let handshakes_refused = Family::<CapLabel, Counter>::default();
        registry.register(
            "handshakes_refused",
            "Connections closed at accept because a cap on unfinished handshakes was reached",
            handshakes_refused.clone(),
        );
        let stun_requests = Family::<ResultLabel, Counter>::default();
        registry.register(
            "stun_requests",
            "STUN datagrams received, by result",
            stun_requests.clone(),
        );
        Self {
            registry,
            pending_handshakes,
            handshakes_refused,
            stun_requests,
            stun: Mutex::new(Vec::new()),
            accepts,
            http_requests,
            upgrades,
            handshake_failures,
            clients,
            logins,
            replaced,
            disconnects,
            relayed_datagrams,
            relayed_bytes,
            dropped_queue_full,
            dropped_unknown_destination,
            dropped_rate_limited,
            rate_limited,
            peer_gone,
            discovery_publishes,
            discovery_fetches,
            discovery_records,
            discovery_evicted,
            dns_queries,
        }
    }

    /// Counts a discovery record PUT.
    pub(crate) fn discovery_publish(&self, result: &'static str) {
        self.discovery_publishes
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts a discovery record GET.
    pub(crate) fn discovery_fetch(&self, result: &'static str) {
        self.discovery_fetches
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts an answered DNS query.
    pub(crate) fn dns_query(&self, rcode: &'static str) {
        self.dns_queries.get_or_create(&RcodeLabel { rcode }).inc();
    }

    /// Counts a connection that did not become a client.
    pub(crate) fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a connection refused at accept by the cap named `cap`.
    pub(crate) fn handshake_refused(&self, cap: &'static str) {
        self.handshakes_refused
            .get_or_create(&CapLabel { cap })
            .inc();
    }

    /// Exports the counters of these STUN servers as `stun_requests_total`.
    pub(crate) fn watch_stun(&self, servers: Vec<StatsHandle>) {
        let mut stun = self.stun.lock().unwrap_or_else(PoisonError::into_inner);
        stun.extend(servers.into_iter().map(|s| (s, ServerStats::default())));
        drop(stun);
        for result in ["answered", "error", "refused", "malformed", "ignored"] {
            self.stun_requests
                .get_or_create(&ResultLabel { result })
                .inc_by(0);
        }
    }

    /// Adds what the STUN servers counted since the last call to `stun_requests`.
    fn sync_stun(&self) {
        let mut stun = self.stun.lock().unwrap_or_else(PoisonError::into_inner);
        for (handle, seen) in stun.iter_mut() {
            let now = handle.stats();
            for (result, new, old) in [
                ("answered", now.requests_answered, seen.requests_answered),
                ("error", now.errors_answered, seen.errors_answered),
                (
                    "refused",
                    now.refused_rate_limited,
                    seen.refused_rate_limited,
                ),
                ("malformed", now.dropped_malformed, seen.dropped_malformed),
                ("ignored", now.ignored, seen.ignored),
            ] {
                self.stun_requests
                    .get_or_create(&ResultLabel { result })
                    .inc_by(new.saturating_sub(old));
            }
            *seen = now;
        }
    }

    /// Counts an ended client connection.
    pub(crate) fn disconnected(&self, reason: &'static str) {
        self.disconnects
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts an HTTP request.
    pub(crate) fn http_request(&self, route: &'static str) {
        self.http_requests
            .get_or_create(&RouteLabel { route })
            .inc();
    }

    /// The counter of datagrams dropped for `reason`.
    pub(crate) fn dropped(&self, reason: DropReason) -> &Counter<u64, AtomicU64> {
        match reason {
            DropReason::QueueFull => &self.dropped_queue_full,
            DropReason::UnknownDestination => &self.dropped_unknown_destination,
            DropReason::RateLimited => &self.dropped_rate_limited,
        }
    }

    /// Everything in the OpenMetrics text format.
    pub(crate) fn encode(&self) -> String {
        self.sync_stun();
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            warn!(%error, "cannot encode metrics");
        }
        text
    }
}

/// How long a metrics client has to send its request.
const METRICS_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The content type of the OpenMetrics text format.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `listener` until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = super::stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let metrics = Arc::clone(&metrics);
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                            std::future::ready(Ok::<_, Infallible>(respond(&metrics, &request)))
                        });
                        let served = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(METRICS_HEADER_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        if let Err(error) = served {
                            debug!(%peer, %error, "metrics connection failed");
                        }
                    });
                }
                Err(error) => {
                    warn!(%error, "cannot accept a metrics connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
    connections.shutdown().await;
}

fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    if request.uri().path() != "/metrics" {
        *response.status_mut() = StatusCode::NOT_FOUND;
    } else if request.method() != Method::GET && request.method() != Method::HEAD {
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    } else {
        *response.body_mut() = Full::new(Bytes::from(metrics.encode()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
        );
    }
    response
}

/// Binds the metrics listener; the address is reported in errors.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, super::ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| super::ServerError::Bind {
            what: "metrics",
            addr,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_family() {
        let metrics = Metrics::new();
        metrics.accepts.inc();
        metrics.handshake_failed("timeout");
        metrics.dropped(DropReason::QueueFull).inc_by(3);
        metrics.clients.set(2);
        let text = metrics.encode();
        assert!(text.contains("iroh_relay_accepts_total 1"), "{text}");
        assert!(
            text.contains("iroh_relay_handshake_failures_total{reason=\"timeout\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("iroh_relay_dropped_datagrams_total{reason=\"queue_full\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("iroh_relay_dropped_datagrams_total{reason=\"rate_limited\"} 0"),
            "{text}"
        );
        assert!(text.contains("iroh_relay_clients 2"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
