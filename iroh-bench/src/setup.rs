//! The three ways of moving bytes that are compared, set up alike so that a ratio between them is the cost of
//! the magic socket (direct) or of the relay path (relay-only) and nothing else:
//!
//! | mode | socket | path |
//! |---|---|---|
//! | [`Mode::Raw`] | one UDP socket on 127.0.0.1, 7 MiB buffers requested, no QUIC-bit greasing | loopback UDP |
//! | [`Mode::Direct`] | iroh `Endpoint` bound to 127.0.0.1 only (no IPv6), home relay connected | loopback UDP, confirmed direct |
//! | [`Mode::Relay`] | the same `Endpoint`, all direct UDP blocked by the test filter | TLS to the relay and back |
//!
//! All three use the same quinn `TransportConfig` (the Endpoint's, `iroh_net::endpoint::default_transport_config`),
//! except for the flow-control windows: the Endpoint starts a connection's windows at 256 KiB and grows them
//! to what the path needs, up to 16 MiB (`iroh_net::endpoint::windows`); raw quinn has no such tuner, so
//! it gets the caps as fixed windows (8 MiB per stream, 16 MiB per connection and for sending), the best
//! it can do here. They use the same TLS: rustls with ring, ed25519 raw public keys authenticating both ends, from `iroh_net::tls`. The iroh
//! endpoints in both modes have the relay configured (as deployed endpoints do), so the only difference
//! between the direct and relay-only figures is the path.
//!
//! Every server answers each bidirectional stream, once it has read it to its end, with the number of bytes
//! it read (8 bytes, little endian), which the sender checks.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{Arc, LazyLock, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use iroh_base::{NodeAddr, SecretKey};
use iroh_net::{
    endpoint::{ConnectionType, Endpoint, RelayMode, SocketStats},
    tls,
};
use quinn::{EndpointConfig, TokioRuntime, TransportConfig};
use serde::Serialize;

use crate::{Result, relay_proc::RelayInfo};

/// The protocol every benchmark connection speaks.
pub(crate) const ALPN: &[u8] = b"iroh-bench/0";
/// The socket buffer size the magic socket asks for (`iroh_net::magicsock::udp::SOCKET_BUFFER_SIZE`, which
/// is crate-private), asked for on the raw quinn socket too.
pub(crate) const SOCKET_BUFFER: usize = 7 * 1024 * 1024;
/// The size of one write: a slice of a shared buffer, so the sender copies nothing.
const CHUNK: usize = 1024 * 1024;
/// How long an endpoint may take to reach its relay, or a connection to reach its expected path.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

/// One way of moving bytes between two QUIC endpoints on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    /// Raw quinn over one UDP socket: the baseline.
    Raw,
    /// The iroh `Endpoint` over a confirmed direct UDP path.
    Direct,
    /// The iroh `Endpoint` with direct UDP blocked: every packet through the relay, over TLS.
    Relay,
}

impl Mode {
    /// Every mode, in table order.
    pub(crate) const ALL: [Self; 3] = [Self::Raw, Self::Direct, Self::Relay];

    /// The column heading.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Raw => "raw quinn",
            Self::Direct => "endpoint direct",
            Self::Relay => "endpoint relay-only",
        }
    }
}

/// `--stream-window`: a stream receive window for every mode instead of the Endpoint's default.
static STREAM_WINDOW: OnceLock<u32> = OnceLock::new();

/// Sets the stream receive window of every connection made from now on (and the connection and send
/// windows to twice it, the Endpoint's default ratio). Only the first call counts.
pub(crate) fn set_stream_window(bytes: u32) {
    STREAM_WINDOW.get_or_init(|| bytes);
}

/// `--congestion`: a congestion controller for every mode instead of the Endpoint's default.
static CONGESTION: OnceLock<iroh_net::congestion::CongestionControl> = OnceLock::new();

/// Sets the congestion controller of every connection made from now on. Only the first call counts.
pub(crate) fn set_congestion(cc: iroh_net::congestion::CongestionControl) {
    CONGESTION.get_or_init(|| cc);
}

/// The transport config of every connection in every mode: the Endpoint's default
/// ([`iroh_net::endpoint::default_transport_config`]), plus `--stream-window` and `--congestion` if
/// given.
pub(crate) fn transport() -> TransportConfig {
    let mut config = iroh_net::endpoint::default_transport_config();
    if let Some(cc) = CONGESTION.get() {
        config.congestion_controller_factory(cc.factory());
    }
    if let Some(&window) = STREAM_WINDOW.get() {
        config.stream_receive_window(window.into());
        config.send_window(u64::from(window) * 2);
        config.receive_window(
            (u64::from(window) * 2)
                .try_into()
                .unwrap_or(quinn::VarInt::MAX),
        );
    }
    config
}

fn loopback() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)
}

/// A raw quinn endpoint on 127.0.0.1 with the magic socket's buffer sizes and endpoint config.
pub(crate) fn raw_endpoint(server: Option<quinn::ServerConfig>) -> Result<quinn::Endpoint> {
    raw_endpoint_on(SocketAddr::V4(loopback()), server)
}

/// [`raw_endpoint`] bound to `bind` (IPv4).
pub(crate) fn raw_endpoint_on(
    bind: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_recv_buffer_size(SOCKET_BUFFER).ok();
    socket.set_send_buffer_size(SOCKET_BUFFER).ok();
    socket.bind(&bind.into())?;
    let mut config = EndpointConfig::default();
    // As the Endpoint does (disco and STUN need the fixed bit).
    config.grease_quic_bit(false);
    Ok(quinn::Endpoint::new(
        config,
        server,
        socket.into(),
        Arc::new(TokioRuntime),
    )?)
}

/// The transport config of raw quinn: [`transport`] with fixed windows at the Endpoint's caps (raw quinn
/// has no window tuner), unless `--stream-window` set them.
pub(crate) fn raw_transport() -> TransportConfig {
    let mut config = transport();
    if STREAM_WINDOW.get().is_none() {
        let window = iroh_net::endpoint::DEFAULT_CONNECTION_WINDOW;
        config.receive_window(window.into());
        config.send_window(window.into());
    }
    config
}

/// The raw quinn server config for `key`: iroh's TLS and [`raw_transport`].
pub(crate) fn raw_server_config(key: &SecretKey) -> Result<quinn::ServerConfig> {
    let crypto = tls::make_server_config(key, vec![ALPN.to_vec()], false)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(raw_transport()));
    Ok(config)
}

/// An iroh endpoint on 127.0.0.1 accepting [`ALPN`], using `relay` (once connected to it) if given.
pub(crate) async fn iroh_endpoint(relay: Option<&RelayInfo>) -> Result<Endpoint> {
    let mut builder = Endpoint::builder()
        .alpns(vec![ALPN.to_vec()])
        .bind_addr_v4(loopback())
        .bind_addr_v6(None)
        .transport_config(transport());
    if STREAM_WINDOW.get().is_some() {
        // Fixed windows for every mode, as asked.
        builder = builder.window_tuning(None);
    }
    if let Some(relay) = relay {
        builder = builder
            .relay_mode(RelayMode::Custom(relay.map()))
            .relay_extra_roots(relay.roots());
    }
    let endpoint = builder.bind().await?;
    if relay.is_some() {
        tokio::time::timeout(
            SETTLE_TIMEOUT,
            endpoint.home_relay().wait_for(Option::is_some),
        )
        .await
        .map_err(|_| "the endpoint did not reach its relay")??;
    }
    Ok(endpoint)
}

/// The accepting side of one mode, serving every connection with [`sink`].
#[derive(Debug, Clone)]
pub(crate) struct Bed {
    mode: Mode,
    server: Side,
    relay: Option<RelayInfo>,
}

/// One endpoint of either kind (clones are handles to the same endpoint).
#[derive(Debug, Clone)]
pub(crate) enum Side {
    /// Raw quinn, with the key it proves.
    Raw {
        /// The endpoint.
        endpoint: quinn::Endpoint,
        /// Its TLS identity (boxed: a secret key is large next to an endpoint handle).
        key: Box<SecretKey>,
    },
    /// An iroh endpoint.
    Iroh(Endpoint),
}

impl Side {
    /// The magic socket's counters (`None` for raw quinn).
    pub(crate) fn stats(&self) -> Option<SocketStats> {
        match self {
            Self::Raw { .. } => None,
            Self::Iroh(endpoint) => Some(endpoint.stats()),
        }
    }

    /// Closes gracefully.
    pub(crate) async fn close(&self) {
        match self {
            Self::Raw { endpoint, .. } => {
                endpoint.close(0u32.into(), b"");
                tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle())
                    .await
                    .ok();
            }
            Self::Iroh(endpoint) => endpoint.close().await,
        }
    }
}

/// Blocks every direct UDP packet of `endpoint`, both ways: relay-only.
fn block_direct(endpoint: &Endpoint) {
    endpoint.set_direct_filter(Some(Arc::new(|_: SocketAddr| true)));
}

impl Bed {
    /// The server of `mode`, made on the runtime of `server` so that its endpoint driver, its connections
    /// and its stream handlers all run there; the iroh modes need the relay.
    pub(crate) async fn new(
        server: &tokio::runtime::Handle,
        mode: Mode,
        relay: Option<RelayInfo>,
    ) -> Result<Self> {
        server.spawn(Self::make(mode, relay)).await?
    }

    async fn make(mode: Mode, relay: Option<RelayInfo>) -> Result<Self> {
        let server = match mode {
            Mode::Raw => {
                let key = Box::new(SecretKey::generate());
                let endpoint = raw_endpoint(Some(raw_server_config(&key)?))?;
                serve_raw(endpoint.clone());
                Side::Raw { endpoint, key }
            }
            Mode::Direct | Mode::Relay => {
                let relay = relay.as_ref().ok_or("the endpoint modes need the relay")?;
                let endpoint = iroh_endpoint(Some(relay)).await?;
                if mode == Mode::Relay {
                    block_direct(&endpoint);
                }
                serve_iroh(endpoint.clone());
                Side::Iroh(endpoint)
            }
        };
        Ok(Self {
            mode,
            server,
            relay,
        })
    }

    /// The mode.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// A new dialling endpoint for this mode.
    pub(crate) async fn dialler(&self) -> Result<Side> {
        Ok(match self.mode {
            Mode::Raw => Side::Raw {
                endpoint: raw_endpoint(None)?,
                key: Box::new(SecretKey::generate()),
            },
            Mode::Direct | Mode::Relay => {
                let endpoint = iroh_endpoint(self.relay.as_ref()).await?;
                if self.mode == Mode::Relay {
                    block_direct(&endpoint);
                }
                Side::Iroh(endpoint)
            }
        })
    }

    /// A new connection from `dialler` to the server (handshake complete).
    pub(crate) async fn connect(&self, dialler: &Side) -> Result<BenchConn> {
        match (&self.server, dialler) {
            (
                Side::Raw { endpoint, key },
                Side::Raw {
                    endpoint: client,
                    key: own,
                },
            ) => {
                let crypto =
                    tls::make_client_config(own, key.public(), vec![ALPN.to_vec()], false)?;
                let mut config = quinn::ClientConfig::new(Arc::new(crypto));
                config.transport_config(Arc::new(raw_transport()));
                let conn = client
                    .connect_with(
                        config,
                        endpoint.local_addr()?,
                        &tls::server_name(&key.public()),
                    )?
                    .await?;
                Ok(BenchConn::Raw(conn))
            }
            (Side::Iroh(server), Side::Iroh(client)) => {
                let mut addr = NodeAddr::new(server.node_id());
                if let Some(relay) = &self.relay {
                    addr = addr.with_relay_url(relay.url.clone());
                }
                if self.mode == Mode::Direct {
                    addr = addr.with_direct_addresses(server.bound_sockets());
                }
                Ok(BenchConn::Iroh(client.connect(addr, ALPN).await?))
            }
            _ => Err("dialler and server of different kinds".into()),
        }
    }

    /// Waits until `dialler`'s packets to the server take the mode's path: a confirmed direct path for
    /// [`Mode::Direct`], the relay alone for [`Mode::Relay`].
    pub(crate) async fn settle(&self, dialler: &Side) -> Result<()> {
        let (Side::Iroh(server), Side::Iroh(client)) = (&self.server, dialler) else {
            return Ok(());
        };
        let want_direct = self.mode == Mode::Direct;
        let mut watch = client.conn_type(server.node_id());
        let reached = tokio::time::timeout(
            SETTLE_TIMEOUT,
            watch.wait_for(|t| match t {
                ConnectionType::Direct(_) => want_direct,
                ConnectionType::Relay(_) => !want_direct,
                _ => false,
            }),
        )
        .await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!(
                "{}: the connection stayed {:?}",
                self.mode.label(),
                *client.conn_type(server.node_id()).borrow()
            )
            .into()),
        }
    }

    /// The server's side.
    pub(crate) fn server(&self) -> &Side {
        &self.server
    }

    /// Closes the server.
    pub(crate) async fn close(self) {
        self.server.close().await;
    }
}

/// A connection of either kind. An Endpoint's stays an [`iroh_net::endpoint::Connection`], whose window
/// tuning runs only while it lives.
#[derive(Debug, Clone)]
pub(crate) enum BenchConn {
    /// Raw quinn.
    Raw(quinn::Connection),
    /// Through an Endpoint.
    Iroh(iroh_net::endpoint::Connection),
}

impl std::ops::Deref for BenchConn {
    type Target = quinn::Connection;

    fn deref(&self) -> &quinn::Connection {
        match self {
            Self::Raw(conn) => conn,
            Self::Iroh(conn) => conn,
        }
    }
}

/// Reads every bidirectional stream of `conn` to its end and answers with the byte count.
fn sink(conn: BenchConn) {
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                let mut count = 0u64;
                while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, false).await {
                    count += u64::try_from(chunk.bytes.len()).unwrap_or(u64::MAX);
                }
                send.write_all(&count.to_le_bytes()).await.ok();
                send.finish().ok();
            });
        }
    });
}

fn serve_iroh(endpoint: Endpoint) {
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                if let Ok(conn) = incoming.accept().await {
                    sink(BenchConn::Iroh(conn));
                }
            });
        }
    });
}

fn serve_raw(endpoint: quinn::Endpoint) {
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await {
                    sink(BenchConn::Raw(conn));
                }
            });
        }
    });
}

/// Sends `bytes` on a new stream and waits for the server's count, which must match.
pub(crate) async fn push(conn: &quinn::Connection, bytes: u64) -> Result<()> {
    static DATA: LazyLock<Bytes> = LazyLock::new(|| Bytes::from(vec![0xab; CHUNK]));
    let data = DATA.clone();
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK));
        send.write_chunk(data.slice(..n)).await?;
        left -= u64::try_from(n)?;
    }
    send.finish()?;
    let answer = recv.read_to_end(8).await?;
    let count = <[u8; 8]>::try_from(answer.as_slice())
        .map(u64::from_le_bytes)
        .map_err(|_| "short answer")?;
    if count != bytes {
        return Err(format!("the server read {count} bytes of {bytes}").into());
    }
    Ok(())
}
