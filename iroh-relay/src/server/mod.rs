//! The relay server: forwards datagrams between the nodes connected to it, addressed by [`NodeId`] only
//! (never by IP address: it is no open proxy), and answers STUN on UDP.
//!
//! ```no_run
//! # async fn run() -> Result<(), iroh_relay::server::ServerError> {
//! use iroh_relay::server::{Server, ServerConfig, TlsConfig};
//!
//! let server = Server::spawn(ServerConfig::dev().with_tls(TlsConfig::self_signed_localhost())).await?;
//! println!("relay at {}", server.relay_url());
//! // Clients in tests trust `server.certificates()`.
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! ```text
//!   Server::spawn
//!     |-- http::accept_loop (relay listener; one task per connection, in a JoinSet)
//!     |      TLS (tls) -> hyper HTTP/1.1 (http: /relay, /ping, /generate_204, /healthz)
//!     |      /relay upgrade -> client::serve: login (protos::handshake + access), then the session
//!     |                               reader -> limits::TokenBucket -> clients::Router -> queues
//!     |                               writer <- own queue (coalesced) + keepalive pings
//!     |-- clients::Clients (the NodeId -> connection map; see its docs for why routing is not an actor)
//!     |-- metrics::serve (GET /metrics, Prometheus text, own listener)
//!     '-- iroh_stun::Server (STUN on UDP)
//! ```
//!
//! Module by module: [`limits`](Limits) (per-client limits and the sans-IO token bucket), `access`
//! ([`AccessControl`], bearer token), `tls` ([`TlsConfig`]), `http`, `client`, `clients`, `metrics`, and
//! [`config`] (the TOML file of the `iroh-relay` binary).
//!
//! # Structured events
//!
//! DEBUG events with fields only, for tools:
//! - `iroh::_events::relay::client::connected` `{ node, conn }`: a client logged in.
//! - `iroh::_events::relay::client::disconnected` `{ node, conn, reason }`: its connection ended.
//!
//! # Shutdown
//!
//! [`Server::shutdown`] stops accepting, sends every client `Status Restarting` and closes its connection,
//! waits up to [`ServerConfig::shutdown_timeout`] for connections to end, aborts the rest, and stops STUN and
//! metrics.
//!
//! [`NodeId`]: iroh_base::NodeId

use std::{net::SocketAddr, sync::Arc, time::Duration};

use iroh_base::RelayUrl;
use rustls::pki_types::CertificateDer;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tracing::{debug, info};

mod access;
mod client;
mod clients;
pub mod config;
pub mod discovery;
mod http;
mod limits;
mod metrics;
mod pending;
mod tls;

pub use access::AccessControl;
pub use discovery::DiscoveryConfig;
pub use http::{
    CHALLENGE_HEADER, GENERATE_204_PATH, HEALTHZ_PATH, MAX_CHALLENGE_LEN, MAX_REQUEST_HEAD,
    PING_PATH, RESPONSE_HEADER,
};
pub use iroh_stun::server::RateLimit as StunRateLimit;
pub use limits::{Limits, LimitsError, MAX_LIMIT_DURATION, RateLimit};
pub use tls::{TlsConfig, TlsError};

use self::{
    clients::{Clients, CloseReason},
    metrics::Metrics,
};

/// The SOFTWARE attribute the STUN server sends.
const STUN_SOFTWARE: &str = "iroh-relay";

/// Everything a [`Server`] needs. Fields are public; the `with_*` methods chain.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where the relay (HTTP or HTTPS) listens.
    pub relay_bind: SocketAddr,
    /// TLS for the relay listener; `None` serves plain HTTP (development only).
    pub tls: Option<TlsConfig>,
    /// The host name in [`Server::relay_url`]; by default the first self-signed host name, else the
    /// listener's IP address (`127.0.0.1` for an unspecified one).
    pub hostname: Option<String>,
    /// Which nodes may log in.
    pub access: AccessControl,
    /// If set, upgrade requests must carry `Authorization: Bearer <token>` or get `401`.
    pub bearer_token: Option<String>,
    /// Per-client limits.
    pub limits: Limits,
    /// Where STUN listens (UDP); `None` for no STUN.
    pub stun_bind: Option<SocketAddr>,
    /// A second STUN socket (UDP), named in every answer as OTHER-ADDRESS (RFC 5780) and naming the first
    /// back: a client that asks both from one socket learns whether its NAT maps by destination (a
    /// "symmetric" NAT, for which it then tries port prediction) even when this is its only relay. `None`
    /// for none; needs [`ServerConfig::stun_bind`]. Usually the STUN port plus one on the same IP.
    pub stun_alt_bind: Option<SocketAddr>,
    /// The STUN requests answered per source (an IPv4 address or IPv6 /64), on each STUN socket; more are
    /// dropped and counted (`stun_requests_total{result="refused"}`), so a spoofed source cannot use the
    /// relay as a reflector. Default 20 a second, bursts of 40; `None` for no limit.
    pub stun_rate_limit: Option<StunRateLimit>,
    /// Where Prometheus metrics are served (`GET /metrics`); `None` for none.
    pub metrics_bind: Option<SocketAddr>,
    /// How long [`Server::shutdown`] waits for connections to close before aborting them.
    pub shutdown_timeout: Duration,
    /// The discovery service (publish endpoint on the relay listener, DNS, record store); `None` for none.
    pub discovery: Option<DiscoveryConfig>,
    /// Whether `/relay` is served; false for a discovery-only server (then `/relay` is `404`).
    pub relay_enabled: bool,
}

impl ServerConfig {
    /// A relay on `relay_bind`: plain HTTP, no STUN, no metrics, everyone allowed, default [`Limits`].
    pub fn new(relay_bind: SocketAddr) -> Self {
        Self {
            relay_bind,
            tls: None,
            hostname: None,
            access: AccessControl::Everyone,
            bearer_token: None,
            limits: Limits::default(),
            stun_bind: None,
            stun_alt_bind: None,
            stun_rate_limit: Some(StunRateLimit::default()),
            metrics_bind: None,
            shutdown_timeout: Duration::from_secs(5),
            discovery: None,
            relay_enabled: true,
        }
    }

    /// For development and tests: plain HTTP on `127.0.0.1:0` and STUN on `127.0.0.1:0` (ports chosen by the
    /// system), no metrics. Every local endpoint shares the source 127.0.0.1, so there is no STUN rate limit
    /// and the per-source cap on unfinished handshakes is the total one.
    pub fn dev() -> Self {
        let mut config = Self::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.stun_bind = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.stun_rate_limit = None;
        config.limits.max_pending_per_source = config.limits.max_pending;
        config
    }

    /// Sets where the relay listens.
    pub fn with_relay_bind(mut self, addr: SocketAddr) -> Self {
        self.relay_bind = addr;
        self
    }

    /// Serves the relay over TLS.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the host name used in the relay URL.
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Sets who may log in.
    pub fn with_access(mut self, access: AccessControl) -> Self {
        self.access = access;
        self
    }

    /// Requires `Authorization: Bearer <token>` on upgrade requests.
    pub fn with_bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Sets the per-client limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets (or with `None` disables) the STUN listener.
    pub fn with_stun_bind(mut self, addr: Option<SocketAddr>) -> Self {
        self.stun_bind = addr;
        self
    }

    /// Sets (or with `None` disables) the second STUN socket (see [`ServerConfig::stun_alt_bind`]).
    pub fn with_stun_alt_bind(mut self, addr: Option<SocketAddr>) -> Self {
        self.stun_alt_bind = addr;
        self
    }

    /// Sets (or with `None` removes) the per-source STUN limit.
    pub fn with_stun_rate_limit(mut self, limit: Option<StunRateLimit>) -> Self {
        self.stun_rate_limit = limit;
        self
    }

    /// Sets (or with `None` disables) the metrics listener.
    pub fn with_metrics_bind(mut self, addr: Option<SocketAddr>) -> Self {
        self.metrics_bind = addr;
        self
    }

    /// Sets (or with `None` disables) the discovery service.
    pub fn with_discovery(mut self, discovery: Option<DiscoveryConfig>) -> Self {
        self.discovery = discovery;
        self
    }

    /// Sets how long shutdown waits for connections.
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }
}

/// Why a [`Server`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A listening socket could not be bound (the port is busy, or needs privileges).
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Which listener: `relay`, `STUN` or `metrics`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The TLS setup failed (unreadable files, a bad key, certificate generation).
    #[error("TLS setup failed: {0}")]
    Tls(#[from] TlsError),
    /// `stun_alt_bind` is set without `stun_bind`.
    #[error("stun_alt_bind needs stun_bind")]
    StunAltWithoutStun,
    /// The STUN server's settings cannot be used.
    #[error("invalid STUN settings: {0}")]
    Stun(#[from] iroh_stun::EncodeError),
    /// The host name and port do not make a relay URL.
    #[error("relay URL {text:?}: {source}")]
    RelayUrl {
        /// The URL tried.
        text: String,
        /// Why it is not one.
        #[source]
        source: iroh_base::RelayUrlParseError,
    },
    /// The discovery settings cannot be used.
    #[error("invalid discovery settings: {0}")]
    Discovery(#[from] discovery::DiscoveryConfigError),
    /// The discovery record store could not be opened.
    #[error("discovery store: {0}")]
    DiscoveryStore(#[source] discovery::StoreError),
    /// The limits cannot be used.
    #[error("invalid limits: {0}")]
    Limits(#[from] LimitsError),
    /// Some other I/O failure while starting.
    #[error("I/O error while starting: {0}")]
    Io(#[from] std::io::Error),
}

/// What the connection tasks share.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) access: AccessControl,
    pub(crate) bearer_token: Option<String>,
    pub(crate) limits: Limits,
    pub(crate) clients: Clients,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) discovery: Option<Arc<discovery::Shared>>,
    pub(crate) relay_enabled: bool,
    pub(crate) pending: pending::Pending,
}

/// A running relay server.
///
/// Call [`Server::shutdown`] to stop it gracefully. Dropping it stops accepting connections, and those still
/// open are aborted after the shutdown timeout without being told.
#[derive(Debug)]
pub struct Server {
    relay_url: RelayUrl,
    relay_addr: SocketAddr,
    stun: Option<iroh_stun::Server>,
    stun_alt: Option<iroh_stun::Server>,
    metrics_addr: Option<SocketAddr>,
    certificates: Vec<CertificateDer<'static>>,
    ctx: Arc<Ctx>,
    stop: watch::Sender<bool>,
    relay_task: JoinHandle<()>,
    metrics_task: Option<JoinHandle<()>>,
    discovery: Option<discovery::Discovery>,
}

impl Server {
    /// Binds every listener, then serves in background tasks. Must be called within a multi-threaded tokio
    /// runtime (a current-thread one works, but forwards on one core).
    pub async fn spawn(config: ServerConfig) -> Result<Self, ServerError> {
        config.limits.validate()?;
        let tls = config.tls.as_ref().map(tls::build).transpose()?;
        let listener = TcpListener::bind(config.relay_bind)
            .await
            .map_err(|source| ServerError::Bind {
                what: "relay",
                addr: config.relay_bind,
                source,
            })?;
        let relay_addr = listener.local_addr()?;
        let relay_url = relay_url(&config, tls.as_ref(), relay_addr)?;

        let (stun, stun_alt) = spawn_stun(
            config.stun_bind,
            config.stun_alt_bind,
            config.stun_rate_limit,
        )
        .await?;
        let metrics_listener = match config.metrics_bind {
            Some(addr) => Some(metrics::bind(addr).await?),
            None => None,
        };
        let metrics_addr = metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;

        let metrics = Arc::new(Metrics::new());
        metrics.watch_stun(
            [stun.as_ref(), stun_alt.as_ref()]
                .into_iter()
                .flatten()
                .map(iroh_stun::Server::stats_handle)
                .collect(),
        );
        let (stop, stop_rx) = watch::channel(false);
        let discovery = match &config.discovery {
            Some(discovery) => Some(
                discovery::Discovery::spawn(discovery, Arc::clone(&metrics), stop_rx.clone())
                    .await?,
            ),
            None => None,
        };
        let ctx = Arc::new(Ctx {
            clients: Clients::new(
                clients::QueueLimits {
                    frames: config.limits.send_queue_len,
                    bytes: config.limits.send_queue_bytes,
                },
                config.limits.max_clients,
                Arc::clone(&metrics),
            ),
            pending: pending::Pending::new(
                config.limits.max_pending,
                config.limits.max_pending_per_source,
                metrics.pending_handshakes.clone(),
            ),
            access: config.access,
            bearer_token: config.bearer_token,
            limits: config.limits,
            metrics: Arc::clone(&metrics),
            discovery: discovery.as_ref().map(|d| Arc::clone(&d.shared)),
            relay_enabled: config.relay_enabled,
        });
        let (acceptor, certificates) = match tls {
            Some(tls) => (Some(tls.acceptor), tls.certificates),
            None => (None, Vec::new()),
        };
        let relay_task = tokio::spawn(http::accept_loop(
            listener,
            acceptor,
            Arc::clone(&ctx),
            stop_rx.clone(),
            config.shutdown_timeout,
        ));
        let metrics_task = metrics_listener
            .map(|listener| tokio::spawn(metrics::serve(listener, metrics, stop_rx)));
        info!(
            %relay_url,
            stun = ?stun.as_ref().map(iroh_stun::Server::local_addr),
            stun_alt = ?stun_alt.as_ref().map(iroh_stun::Server::local_addr),
            metrics = ?metrics_addr,
            dns = ?discovery.as_ref().and_then(discovery::Discovery::dns_addr),
            "relay server started"
        );
        Ok(Self {
            relay_url,
            relay_addr,
            stun,
            stun_alt,
            metrics_addr,
            certificates,
            ctx,
            stop,
            relay_task,
            metrics_task,
            discovery,
        })
    }

    /// The URL clients connect to: `http://IP:PORT` without TLS, `https://HOST:PORT` with it.
    pub fn relay_url(&self) -> RelayUrl {
        self.relay_url.clone()
    }

    /// The address the relay listener is bound to.
    pub fn relay_addr(&self) -> SocketAddr {
        self.relay_addr
    }

    /// The address the STUN server is bound to, if it runs.
    pub fn stun_addr(&self) -> Option<SocketAddr> {
        self.stun.as_ref().map(iroh_stun::Server::local_addr)
    }

    /// The address the second STUN socket is bound to, if it runs (see [`ServerConfig::stun_alt_bind`]).
    pub fn stun_alt_addr(&self) -> Option<SocketAddr> {
        self.stun_alt.as_ref().map(iroh_stun::Server::local_addr)
    }

    /// The address the discovery DNS server is bound to (UDP and TCP), if it runs.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.discovery
            .as_ref()
            .and_then(discovery::Discovery::dns_addr)
    }

    /// The DNS origin discovery serves, if it runs.
    pub fn discovery_origin(&self) -> Option<&str> {
        self.discovery.as_ref().map(|d| d.origin.as_str())
    }

    /// The base URL of the discovery publish endpoint (the relay listener's), if discovery runs:
    /// records live at `<base>pkarr/<id>`.
    pub fn discovery_url(&self) -> Option<url::Url> {
        self.discovery.as_ref()?;
        let mut url = self.relay_url.as_url().clone();
        url.set_path("/");
        Some(url)
    }

    /// The address metrics are served on, if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The certificate chain the relay presents, for clients (in tests) to trust: the self-signed
    /// certificate, or the chain loaded from files. Empty without TLS, and for a ready rustls configuration.
    pub fn certificates(&self) -> Vec<CertificateDer<'static>> {
        self.certificates.clone()
    }

    /// How many clients are logged in now.
    pub fn num_clients(&self) -> usize {
        self.ctx.clients.len()
    }

    /// How many connections are in their handshake now: accepted, not yet logged in (see
    /// [`Limits::max_pending`]).
    pub fn num_pending(&self) -> usize {
        self.ctx.pending.len()
    }

    /// Shuts down gracefully: stops accepting, tells every client `Status Restarting` and closes it, waits up
    /// to the configured shutdown timeout for connections to end, aborts the rest, and stops STUN and
    /// metrics.
    pub async fn shutdown(self) {
        let Self {
            stop,
            ctx,
            relay_task,
            metrics_task,
            stun,
            stun_alt,
            discovery,
            ..
        } = self;
        info!("relay server shutting down");
        // Wakes the accept loops and connections still in HTTP or the login; none can register after
        // `close_all` below.
        stop.send_replace(true);
        ctx.clients.close_all(CloseReason::Shutdown);
        if let Err(error) = relay_task.await {
            debug!(%error, "relay accept task ended abnormally");
        }
        if let Some(task) = metrics_task
            && let Err(error) = task.await
        {
            debug!(%error, "metrics task ended abnormally");
        }
        for stun in [stun, stun_alt].into_iter().flatten() {
            stun.shutdown().await;
        }
        // The connections are gone; the context goes too, so the discovery store can close.
        drop(ctx);
        if let Some(discovery) = discovery {
            discovery.shutdown().await;
        }
        info!("relay server stopped");
    }
}

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here rather than in the caller's `select!`.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Binds and starts the STUN sockets: the main one, and the second one if asked for, each naming the other
/// as OTHER-ADDRESS (RFC 5780).
async fn spawn_stun(
    main: Option<SocketAddr>,
    alt: Option<SocketAddr>,
    limit: Option<StunRateLimit>,
) -> Result<(Option<iroh_stun::Server>, Option<iroh_stun::Server>), ServerError> {
    let bind = |addr: SocketAddr, what: &'static str| async move {
        tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { what, addr, source })
    };
    let config = || {
        iroh_stun::ServerConfig::default()
            .with_rate_limit(limit)
            .with_software(STUN_SOFTWARE)
            .map_err(ServerError::Stun)
    };
    let Some(main) = main else {
        if alt.is_some() {
            return Err(ServerError::StunAltWithoutStun);
        }
        return Ok((None, None));
    };
    let main = bind(main, "STUN").await?;
    let Some(alt) = alt else {
        return Ok((Some(iroh_stun::Server::spawn(main, config()?)?), None));
    };
    let alt = bind(alt, "second STUN").await?;
    let (main_addr, alt_addr) = (main.local_addr()?, alt.local_addr()?);
    let main = iroh_stun::Server::spawn(main, config()?.with_other_address(alt_addr))?;
    let alt = iroh_stun::Server::spawn(alt, config()?.with_other_address(main_addr))?;
    Ok((Some(main), Some(alt)))
}

/// The URL clients use to reach the relay listener.
fn relay_url(
    config: &ServerConfig,
    tls: Option<&tls::Tls>,
    addr: SocketAddr,
) -> Result<RelayUrl, ServerError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let port = addr.port();
    let host = config
        .hostname
        .clone()
        .or_else(|| tls.and_then(|tls| tls.hostname.clone()));
    let text = match host {
        Some(host) if host.parse::<std::net::Ipv6Addr>().is_ok() => {
            format!("{scheme}://[{host}]:{port}")
        }
        Some(host) => format!("{scheme}://{host}:{port}"),
        None => {
            let ip = match addr.ip() {
                ip if !ip.is_unspecified() => ip,
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            };
            format!("{scheme}://{}", SocketAddr::new(ip, port))
        }
    };
    text.parse()
        .map_err(|source| ServerError::RelayUrl { text, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls() {
        let config = ServerConfig::dev();
        let addr: SocketAddr = "127.0.0.1:3340".parse().unwrap();
        assert_eq!(
            relay_url(&config, None, addr).unwrap().to_string(),
            "http://127.0.0.1:3340/"
        );
        let addr: SocketAddr = "[::]:3340".parse().unwrap();
        assert_eq!(
            relay_url(&config, None, addr).unwrap().to_string(),
            "http://[::1]:3340/"
        );
        let tls = tls::build(&TlsConfig::self_signed_localhost()).unwrap();
        assert_eq!(
            relay_url(&config, Some(&tls), addr).unwrap().to_string(),
            "https://localhost:3340/"
        );
        let config = config.with_hostname("relay.example.org");
        assert_eq!(
            relay_url(&config, Some(&tls), addr).unwrap().to_string(),
            "https://relay.example.org:3340/"
        );
    }
}
