//! The [`Endpoint`]: dial a node by its [`NodeAddr`], accept connections, and watch how they run.
//!
//! ```no_run
//! # async fn demo(peer: iroh_base::NodeAddr) -> Result<(), Box<dyn std::error::Error>> {
//! use iroh_net::endpoint::{Endpoint, RelayMode};
//!
//! let relay = "https://relay.example.org".parse()?;
//! let endpoint = Endpoint::builder()
//!     .alpns(vec![b"my-proto/1".to_vec()])
//!     .relay_mode(RelayMode::custom([relay])?)
//!     .bind()
//!     .await?;
//! println!("dial me at {:?}", endpoint.node_addr());
//! let conn = endpoint.connect(peer, b"my-proto/1").await?;
//! let mut send = conn.open_uni().await?;
//! send.write_all(b"hello").await?;
//! send.finish()?;
//! endpoint.close().await;
//! # Ok(()) }
//! ```
//!
//! An endpoint is one `quinn::Endpoint` over the magic socket ([`crate::magicsock`]). A connection starts
//! at once over whatever path is known (the relay, a direct address, or both), moves to a direct path as
//! soon as holepunching confirms one, and falls back to the relay when that path dies; quinn sees one
//! stable address per node throughout, so streams are not disturbed.
//!
//! Identity is TLS with raw public keys ([`crate::tls`]): dialling checks the remote proves the NodeId
//! dialled ([`ConnectError::WrongNodeId`] otherwise, after one round trip), and every [`Connection`] knows
//! its remote NodeId and ALPN.

mod connection;
mod discover;
pub mod windows;

use std::{
    collections::BTreeSet,
    fmt,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use iroh_base::{NodeAddr, NodeId, RelayUrl, SecretKey};
use iroh_relay::client::CertificateDer;
use quinn::TransportConfig;
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tracing::Instrument;

pub use self::{
    connection::{AcceptError, ConnectError, Connection, Incoming},
    windows::WindowTuning,
};
use crate::{
    discovery::{ConcurrentDiscovery, Discovery},
    magicsock::{
        actor::{Actor, ActorConfig, ActorMsg, DEFAULT_RELAY_IDLE, RelayTls, Watchers},
        socket::MagicSock,
        udp::UdpSockets,
    },
    tls,
};
pub use crate::{
    magicsock::{BindError, DirectFilter, SocketStats},
    net_report::{NetReportConfig, RelayMap, RelayMapError, RelayNode},
    paths::{ConnectionType, PathConfig, PathInfo, Source},
    portmap::{MappingProtocol, client::Mapping, service::PortMapConfig},
};
/// Which HTTP upgrade relay connections ask for first (see [`Builder::relay_transport`]).
pub use iroh_relay::client::Transport as RelayTransport;

/// Messages the actor's inbox holds.
const ACTOR_INBOX: usize = 1024;
/// Packets waiting for quinn that did not come straight from a socket (relayed, resolved).
const DELIVERY_QUEUE: usize = 1024;
/// How long [`Endpoint::close`] waits for connections to close, and then for the actor to stop.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// The default of [`Builder::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The QUIC keep-alive interval of the default transport config: connections stay active (and their
/// paths confirmed) while open, even when idle.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// The stream receive window of the default transport config (quinn's own is 1.25 MB).
pub const DEFAULT_STREAM_RECEIVE_WINDOW: u32 = 8 * 1024 * 1024;
/// The most the connection receive window (all streams together) and the send window grow to under the
/// default [`WindowTuning`] (quinn's own fixed windows are unbounded and 10 MB).
pub const DEFAULT_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// The transport config an [`Endpoint`] uses unless [`Builder::transport_config`] gives another: quinn's
/// defaults, with
/// - a keep-alive every [`DEFAULT_KEEP_ALIVE`], so idle connections keep their paths confirmed;
/// - a stream receive window of [`DEFAULT_STREAM_RECEIVE_WINDOW`]: quinn's 1.25 MB caps one stream at
///   the window per round trip, which a relayed path (TCP and TLS twice, a few ms under load) or a long
///   one (1.25 MB per 100 ms is 100 Mbit/s) hits well before the link's rate;
/// - the congestion controller [`CongestionControl::DEFAULT`](crate::congestion::CongestionControl::DEFAULT);
/// - a connection receive window and send window of [`WindowTuning::default`]'s initial 256 KiB, which the
///   Endpoint grows per connection to what its path needs, up to [`DEFAULT_CONNECTION_WINDOW`] (see
///   [`windows`]): what one peer can make this end buffer for a connection is bounded, and bounded small
///   unless the connection moves data fast (quinn's default leaves the connection window unbounded, so
///   200 unread streams could hold 250 MB).
///
/// The windows are limits, not allocations: memory is used only for data in flight or unread.
pub fn default_transport_config() -> TransportConfig {
    let tuning = WindowTuning::default();
    let mut config = TransportConfig::default();
    config
        .keep_alive_interval(Some(DEFAULT_KEEP_ALIVE))
        .stream_receive_window(DEFAULT_STREAM_RECEIVE_WINDOW.into())
        .receive_window(
            quinn::VarInt::from_u64(tuning.initial_receive).unwrap_or(quinn::VarInt::MAX),
        )
        .send_window(tuning.initial_send)
        .congestion_controller_factory(crate::congestion::CongestionControl::DEFAULT.factory());
    config
}

/// Which relays an endpoint uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RelayMode {
    /// No relays: only direct UDP paths. The default, since there is no public relay built in.
    #[default]
    Disabled,
    /// These relays: the home relay is the one with the lowest latency (the first listed until the first
    /// net report); peers' relays are also used on demand.
    Custom(RelayMap),
}

impl RelayMode {
    /// Relays at these URLs, each answering STUN on the default port.
    pub fn custom(urls: impl IntoIterator<Item = RelayUrl>) -> Result<Self, RelayMapError> {
        let nodes = urls.into_iter().map(RelayNode::new).collect();
        Ok(Self::Custom(RelayMap::new(nodes)?))
    }
}

/// What [`Endpoint::remote_info`] tells about a remote node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteInfo {
    /// The node.
    pub node_id: NodeId,
    /// Its relay, if known.
    pub relay_url: Option<RelayUrl>,
    /// Where the relay URL came from: the application, a discovery service (by name), the node itself.
    pub relay_source: Option<Source>,
    /// How packets to it go now.
    pub conn_type: ConnectionType,
    /// The round-trip time of the direct path in use (or of the best path that answered), if any.
    pub latency: Option<Duration>,
    /// Every known direct path, with its latency and state.
    pub paths: Vec<PathInfo>,
    /// How long ago traffic to or from it was last noted.
    pub last_activity: Option<Duration>,
}

impl RemoteInfo {
    fn from_node_info(info: crate::paths::NodeInfo) -> Self {
        let in_use = match &info.conn_type {
            ConnectionType::Direct(addr) | ConnectionType::Mixed(addr, _) => Some(*addr),
            _ => None,
        };
        let latency = info
            .paths
            .iter()
            .find(|p| Some(p.addr) == in_use)
            .and_then(|p| p.latency)
            .or_else(|| info.paths.iter().filter_map(|p| p.latency).min());
        Self {
            node_id: info.node_id,
            relay_url: info.relay_url,
            relay_source: info.relay_source,
            conn_type: info.conn_type,
            latency,
            paths: info.paths,
            last_activity: info.last_activity_age,
        }
    }
}

/// Configures and binds an [`Endpoint`].
pub struct Builder {
    secret_key: Option<SecretKey>,
    alpns: Vec<Vec<u8>>,
    relay_mode: RelayMode,
    bind_v4: SocketAddrV4,
    bind_v6: Option<SocketAddrV6>,
    transport: Option<Arc<TransportConfig>>,
    relay_tls: RelayTls,
    path_config: PathConfig,
    net_report: NetReportConfig,
    connect_timeout: Duration,
    keylog: bool,
    relay_idle: Duration,
    window_tuning: Option<WindowTuning>,
    discovery: ConcurrentDiscovery,
    port_mapping: PortMapConfig,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("alpns", &self.alpns)
            .field("relay_mode", &self.relay_mode)
            .field("bind_v4", &self.bind_v4)
            .field("bind_v6", &self.bind_v6)
            .field("discovery", &self.discovery.names())
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            secret_key: None,
            alpns: Vec::new(),
            relay_mode: RelayMode::Disabled,
            bind_v4: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            bind_v6: Some(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)),
            transport: None,
            relay_tls: RelayTls::default(),
            path_config: PathConfig::default(),
            net_report: NetReportConfig::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            keylog: false,
            relay_idle: DEFAULT_RELAY_IDLE,
            window_tuning: Some(WindowTuning::default()),
            discovery: ConcurrentDiscovery::new(),
            port_mapping: PortMapConfig::default(),
        }
    }
}

impl Builder {
    /// Uses this discovery service alone, replacing any added before (see [`crate::discovery`]).
    pub fn discovery(mut self, service: impl Discovery) -> Self {
        self.discovery = ConcurrentDiscovery::new();
        self.discovery.add(service);
        self
    }

    /// Adds a discovery service: every service publishes our addressing, and dialling a node with no
    /// usable address resolves it through all of them at once (see [`crate::discovery`]).
    pub fn add_discovery(mut self, service: impl Discovery) -> Self {
        self.discovery.add(service);
        self
    }

    /// Removes every discovery service (the default: none).
    pub fn clear_discovery(mut self) -> Self {
        self.discovery = ConcurrentDiscovery::new();
        self
    }

    /// The node's secret key, its identity. Default: a new random key.
    pub fn secret_key(mut self, secret_key: SecretKey) -> Self {
        self.secret_key = Some(secret_key);
        self
    }

    /// The protocols this endpoint accepts, in order of preference. Without any, it can dial but accepts
    /// no connections.
    pub fn alpns(mut self, alpns: Vec<Vec<u8>>) -> Self {
        self.alpns = alpns;
        self
    }

    /// Which relays to use. Default: [`RelayMode::Disabled`].
    pub fn relay_mode(mut self, relay_mode: RelayMode) -> Self {
        self.relay_mode = relay_mode;
        self
    }

    /// Where the IPv4 socket binds. Default `0.0.0.0:0` (every interface, a port chosen by the system).
    /// A fixed port that is taken makes [`Builder::bind`] fail with [`BindError::AddrInUse`].
    pub fn bind_addr_v4(mut self, addr: SocketAddrV4) -> Self {
        self.bind_v4 = addr;
        self
    }

    /// Where the IPv6 socket binds, or `None` for no IPv6. Default `[::]:0`. On a system without IPv6 the
    /// endpoint runs on IPv4 alone; a fixed port that is taken is [`BindError::AddrInUse`].
    pub fn bind_addr_v6(mut self, addr: Option<SocketAddrV6>) -> Self {
        self.bind_v6 = addr;
        self
    }

    /// quinn's transport settings for every connection. Default: [`default_transport_config`].
    pub fn transport_config(mut self, config: TransportConfig) -> Self {
        self.transport = Some(Arc::new(config));
        self
    }

    /// **Insecure**, for tests with relays that have self-signed certificates: relay connections skip
    /// certificate verification. Prefer [`Builder::relay_extra_roots`].
    pub fn insecure_skip_relay_cert_verify(mut self, skip: bool) -> Self {
        self.relay_tls.insecure_skip_verify = skip;
        self
    }

    /// Certificates to trust for relay connections besides the web PKI roots (a test relay's self-signed
    /// certificate, a private CA).
    pub fn relay_extra_roots(mut self, roots: Vec<CertificateDer<'static>>) -> Self {
        self.relay_tls.extra_roots = roots;
        self
    }

    /// The HTTP upgrade relay connections try first: the relay protocol's own (the default) or a WebSocket,
    /// for networks where only WebSocket gets through to the relay. Either falls back to the other when the
    /// relay (or a proxy in front of it) clearly refuses it.
    pub fn relay_transport(mut self, transport: RelayTransport) -> Self {
        self.relay_tls.transport = transport;
        self
    }

    /// Path selection timing (mostly for tests). Default: [`PathConfig::default`].
    pub fn path_config(mut self, config: PathConfig) -> Self {
        self.path_config = config;
        self
    }

    /// Net report timing (mostly for tests). Default: [`NetReportConfig::default`].
    pub fn net_report_config(mut self, config: NetReportConfig) -> Self {
        self.net_report = config;
        self
    }

    /// How long [`Endpoint::connect`] waits for the handshake. Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a relay connection other than the home relay may carry nothing before it is closed.
    /// Default: one minute. (For tests.)
    #[doc(hidden)]
    pub fn relay_idle_timeout(mut self, timeout: Duration) -> Self {
        self.relay_idle = timeout;
        self
    }

    /// How each connection's receive and send windows are sized (see [`windows`]): they start small and
    /// grow with what the connection's path needs. Default: [`WindowTuning::default`]. With `None`, the
    /// windows of the transport config stay as they are for the connection's life (give a
    /// [`Builder::transport_config`] with the windows you want: the default transport config's are the
    /// small initial ones).
    pub fn window_tuning(mut self, tuning: Option<WindowTuning>) -> Self {
        self.window_tuning = tuning;
        self
    }

    /// Which protocols may ask the home router for a port mapping (UPnP IGD, PCP, NAT-PMP; default all,
    /// [`PortMapConfig::disabled`] for none). Mapping starts once the net report shows a NAT in front of
    /// us; the mapped address joins our direct addresses (see [`Endpoint::port_mapping`]) and is deleted
    /// when the endpoint closes. See [`crate::portmap`].
    pub fn port_mapping(mut self, config: PortMapConfig) -> Self {
        self.port_mapping = config;
        self
    }

    /// Writes TLS secrets to the file named by `SSLKEYLOGFILE`, for Wireshark. Never in production.
    pub fn keylog(mut self, keylog: bool) -> Self {
        self.keylog = keylog;
        self
    }

    /// Binds the sockets and starts the endpoint. Our own addresses are known when it returns; the home
    /// relay is connecting.
    ///
    /// Must be called within a tokio runtime.
    pub async fn bind(self) -> Result<Endpoint, BindError> {
        let secret_key = self.secret_key.unwrap_or_else(SecretKey::generate);
        let udp = UdpSockets::bind(self.bind_v4, self.bind_v6)?;
        let (actor_tx, actor_rx) = mpsc::channel(ACTOR_INBOX);
        let sock = Arc::new(MagicSock::new(udp, actor_tx, DELIVERY_QUEUE));
        let transport = self
            .transport
            .unwrap_or_else(|| Arc::new(default_transport_config()));
        let server_config = server_config(&secret_key, self.alpns, &transport, self.keylog)?;
        let mut endpoint_config = quinn::EndpointConfig::default();
        // Disco and STUN rely on QUIC's fixed bit being set (see `crate::disco`).
        endpoint_config.grease_quic_bit(false);

        let node_id = secret_key.public();
        let watchers = Arc::new(Watchers::new());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let relays_on = !matches!(self.relay_mode, RelayMode::Disabled);
        let relay_map = match self.relay_mode {
            RelayMode::Disabled => None,
            RelayMode::Custom(map) => Some(map),
        };
        let actor = Actor::new(
            ActorConfig {
                secret_key: secret_key.clone(),
                relay_map,
                relay_tls: self.relay_tls,
                path_config: self.path_config,
                net_report: self.net_report,
                relay_idle: self.relay_idle,
                port_mapping: self.port_mapping,
            },
            Arc::clone(&sock),
            actor_rx,
            shutdown_rx,
            Arc::clone(&watchers),
        );
        let span = tracing::debug_span!("magicsock", me = %node_id.fmt_short());
        let actor = tokio::spawn(actor.run().instrument(span.clone()));
        let discovery = (!self.discovery.is_empty()).then(|| Arc::new(self.discovery));
        if let Some(discovery) = &discovery {
            let publish = discover::publish_loop(
                Arc::clone(discovery),
                Arc::clone(&watchers),
                relays_on,
                shutdown.subscribe(),
            );
            tokio::spawn(publish.instrument(span));
        }
        let quinn = match quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            server_config,
            Arc::clone(&sock) as Arc<dyn quinn::AsyncUdpSocket>,
            Arc::new(quinn::TokioRuntime),
        ) {
            Ok(quinn) => quinn,
            Err(error) => {
                shutdown.send_replace(true);
                return Err(BindError::Quic(error));
            }
        };
        Ok(Endpoint {
            inner: Arc::new(Inner {
                quinn,
                sock,
                secret_key,
                transport,
                keylog: self.keylog,
                connect_timeout: self.connect_timeout,
                window_tuning: self.window_tuning,
                discovery,
                watchers,
                shutdown,
                closed: AtomicBool::new(false),
                actor: Mutex::new(Some(actor)),
            }),
        })
    }
}

/// The QUIC server config for these ALPNs, or `None` (accept nothing) without any.
fn server_config(
    secret_key: &SecretKey,
    alpns: Vec<Vec<u8>>,
    transport: &Arc<TransportConfig>,
    keylog: bool,
) -> Result<Option<quinn::ServerConfig>, BindError> {
    if alpns.is_empty() {
        return Ok(None);
    }
    let crypto = tls::make_server_config(secret_key, alpns, keylog)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::clone(transport));
    // A client first heard from under an alias moves to its node's address later.
    config.migration(true);
    Ok(Some(config))
}

/// A node's endpoint: see the [module docs](self). Cheap to clone; dropping the last clone stops it
/// (without the graceful close of [`Endpoint::close`]).
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

struct Inner {
    quinn: quinn::Endpoint,
    sock: Arc<MagicSock>,
    secret_key: SecretKey,
    transport: Arc<TransportConfig>,
    keylog: bool,
    connect_timeout: Duration,
    window_tuning: Option<WindowTuning>,
    discovery: Option<Arc<ConcurrentDiscovery>>,
    watchers: Arc<Watchers>,
    /// Dropping it (with the last `Endpoint`) stops the actor too.
    shutdown: watch::Sender<bool>,
    closed: AtomicBool,
    actor: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("node_id", &self.secret_key.public())
            .field("sock", &self.sock)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Our NodeId.
    pub fn node_id(&self) -> NodeId {
        self.inner.secret_key.public()
    }

    /// Our secret key.
    pub fn secret_key(&self) -> &SecretKey {
        &self.inner.secret_key
    }

    /// How to reach us now: our home relay and our direct addresses.
    pub fn node_addr(&self) -> NodeAddr {
        let relay = self.inner.watchers.home_relay.borrow().clone();
        let direct = self.inner.watchers.direct_addrs.borrow().clone();
        NodeAddr::from_parts(self.node_id(), relay, direct)
    }

    /// A watcher of our home relay: set once its connection is up (peers can reach us there from then
    /// on), changed when net report finds a clearly faster relay.
    pub fn home_relay(&self) -> watch::Receiver<Option<RelayUrl>> {
        self.inner.watchers.home_relay.subscribe()
    }

    /// A watcher of our direct addresses: local interface addresses and the public ones STUN learned.
    pub fn direct_addresses(&self) -> watch::Receiver<BTreeSet<SocketAddr>> {
        self.inner.watchers.direct_addrs.subscribe()
    }

    /// A watcher of the port mapping our gateway granted (`None`: none), with the protocol that made it.
    /// Its external address is one of [`Endpoint::direct_addresses`] while it lasts.
    pub fn port_mapping(&self) -> watch::Receiver<Option<Mapping>> {
        self.inner.watchers.port_mapping.subscribe()
    }

    /// A watcher of how packets to `node` travel: direct, relay, both, or not at all.
    pub fn conn_type(&self, node: NodeId) -> watch::Receiver<ConnectionType> {
        self.inner.watchers.conn_type(node)
    }

    /// What is known about `node`: its paths with their latencies, its relay, its last activity.
    pub async fn remote_info(&self, node: NodeId) -> Option<RemoteInfo> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .sock
            .actor_tx
            .send(ActorMsg::RemoteInfo { node, reply })
            .await
            .ok()?;
        answer.await.ok()?.map(RemoteInfo::from_node_info)
    }

    /// Learns a node's addresses without dialling it (as [`Endpoint::connect`] does first).
    pub async fn add_node_addr(&self, addr: NodeAddr) -> Result<(), ConnectError> {
        let node = addr.node_id;
        if node == self.node_id() {
            return Err(ConnectError::SelfConnect);
        }
        self.register(addr)
            .await?
            .map(|_| ())
            .ok_or(ConnectError::NoAddress(node))
    }

    async fn register(&self, addr: NodeAddr) -> Result<Option<SocketAddr>, ConnectError> {
        discover::register(&self.inner.sock.actor_tx, addr, Source::App).await
    }

    /// Connects to a node for protocol `alpn`.
    ///
    /// `addr` is a [`NodeAddr`] or a bare [`NodeId`]. The connection starts at once over the paths the
    /// address gives (and those already known); the first disco pings are sent before quinn's first
    /// packet, so a direct address is confirmed within about one round trip.
    ///
    /// With no usable address (a bare NodeId of a node not met before), the endpoint's discovery
    /// services resolve it, all at once, and the connection starts with the first answer that gives a
    /// path; later answers still add addresses. Everything, discovery included, stays within the connect
    /// timeout. When addresses are known but no direct path to the node is confirmed (they may be stale),
    /// discovery runs in the background beside the dial.
    pub async fn connect(
        &self,
        addr: impl Into<NodeAddr>,
        alpn: &[u8],
    ) -> Result<Connection, ConnectError> {
        let addr = addr.into();
        let node = addr.node_id;
        if node == self.node_id() {
            return Err(ConnectError::SelfConnect);
        }
        if self.is_closed() {
            return Err(ConnectError::Closed);
        }
        let timeout = self.inner.connect_timeout;
        let deadline = Instant::now() + timeout;
        let actor_tx = &self.inner.sock.actor_tx;
        let mapped = match (self.register(addr).await?, &self.inner.discovery) {
            (Some(mapped), Some(discovery)) => {
                if !self.direct_confirmed(node) {
                    discover::resolve_in_background(discovery, actor_tx, node, deadline);
                }
                mapped
            }
            (Some(mapped), None) => mapped,
            (None, Some(discovery)) => {
                discover::resolve_for_connect(discovery, actor_tx, node, deadline).await?
            }
            (None, None) => return Err(ConnectError::NoAddress(node)),
        };
        // Dropped when this returns: until then, discovery is asked again if nothing connects.
        let _refresh =
            self.inner.discovery.as_ref().map(|discovery| {
                discover::refresh_while_dialling(discovery, actor_tx, node, deadline)
            });
        let crypto = tls::make_client_config(
            &self.inner.secret_key,
            node,
            vec![alpn.to_vec()],
            self.inner.keylog,
        )?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::clone(&self.inner.transport));
        let connecting = self
            .inner
            .quinn
            .connect_with(config, mapped, &tls::server_name(&node))
            .map_err(ConnectError::from_start)?;
        let conn = match tokio::time::timeout_at(deadline.into(), connecting).await {
            Err(_) => return Err(ConnectError::Timeout(timeout)),
            Ok(Err(error)) => {
                return Err(ConnectError::from_connection(error, node, alpn, timeout));
            }
            Ok(Ok(conn)) => conn,
        };
        let conn = Connection::new(conn)?;
        if conn.remote_node_id() != node {
            // The client verifier makes this impossible; kept as a last line of defence.
            conn.close(0u32.into(), b"wrong node");
            return Err(ConnectError::WrongNodeId { expected: node });
        }
        Ok(conn.tune_windows(self.inner.window_tuning))
    }

    /// Whether a direct path to `node` is in use now.
    fn direct_confirmed(&self, node: NodeId) -> bool {
        matches!(
            *self.inner.watchers.conn_type(node).borrow(),
            ConnectionType::Direct(_) | ConnectionType::Mixed(..)
        )
    }

    /// Replaces the protocols this endpoint accepts (those given to [`Builder::alpns`]); with none, it
    /// accepts no new connections. Connections already open are not affected.
    pub fn set_alpns(&self, alpns: Vec<Vec<u8>>) -> Result<(), BindError> {
        let config = server_config(
            &self.inner.secret_key,
            alpns,
            &self.inner.transport,
            self.inner.keylog,
        )?;
        self.inner.quinn.set_server_config(config);
        Ok(())
    }

    /// The next incoming connection attempt; `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<Incoming> {
        let tuning = self.inner.window_tuning;
        self.inner
            .quinn
            .accept()
            .await
            .map(|incoming| Incoming::new(incoming, tuning))
    }

    /// The local addresses of our UDP sockets (IPv4, then IPv6 if bound).
    pub fn bound_sockets(&self) -> Vec<SocketAddr> {
        let udp = &self.inner.sock.udp;
        std::iter::once(udp.local_v4())
            .chain(udp.local_v6())
            .collect()
    }

    /// The socket buffer sizes the kernel granted: `(socket, receive, send)` for each UDP socket.
    pub fn socket_buffer_sizes(&self) -> Vec<(SocketAddr, usize, usize)> {
        self.inner.sock.udp.buffer_sizes()
    }

    /// The magic socket's counters: packets sent and received by path, and everything dropped.
    pub fn stats(&self) -> SocketStats {
        self.inner.sock.metrics.snapshot()
    }

    /// The underlying quinn endpoint.
    pub fn quinn(&self) -> &quinn::Endpoint {
        &self.inner.quinn
    }

    /// **Test hook.** Drops direct UDP traffic (QUIC and disco, both directions) with every address for
    /// which `filter` returns true, as a firewall would; `None` removes the filter. STUN is not affected.
    /// Used to test relay-only paths and a direct path that dies.
    #[doc(hidden)]
    pub fn set_direct_filter(&self, filter: Option<DirectFilter>) {
        self.inner.sock.set_direct_filter(filter);
    }

    /// Whether [`Endpoint::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Closes gracefully: closes every connection (telling the peers), waits a bounded time for them to
    /// finish, then stops the actor and the relay clients.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.quinn.close(0u32.into(), b"endpoint closing");
        tokio::time::timeout(CLOSE_TIMEOUT, self.inner.quinn.wait_idle())
            .await
            .ok();
        self.inner.shutdown.send_replace(true);
        let actor = self
            .inner
            .actor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(actor) = actor {
            tokio::time::timeout(CLOSE_TIMEOUT, actor).await.ok();
        }
    }
}
