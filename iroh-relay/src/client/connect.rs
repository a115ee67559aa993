//! Making one connection: DNS, TCP, TLS, the HTTP/1.1 upgrade and the login handshake.
//!
//! ```text
//!  resolve host ──> TCP ──> TLS (https only) ──> GET /relay, Upgrade: iroh-relay-v1 ──> 101
//!      │                                                 (401, 403, other: typed errors)
//!      └─ IP literal: no DNS; `localhost`: loopback, no DNS
//!  ──> ServerChallenge / ClientAuth / ServerAccepted ──> frames
//! ```
//!
//! Bytes the server sends right after its `101` (usually the challenge, often in the same TCP segment) are
//! kept: hyper hands them back with the upgraded stream and they seed the frame reader.

use std::{
    fmt, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use hickory_resolver::TokioResolver;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use iroh_base::{NodeId, RelayUrl, SecretKey};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf},
    net::TcpStream,
};
use tracing::debug;
use url::Host;

use super::{ConnectError, SendError, tls};
use crate::{
    io::{FrameReader, FrameWriter, ReadError},
    protos::{
        RELAY_PATH, UPGRADE_PROTOCOL,
        frame::{Datagrams, Frame},
        handshake::{ClientEvent, ClientHandshake},
    },
};

/// The default bound on a whole connect: DNS, TCP, TLS, HTTP and the handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TCP attempt runs alone before the next one starts beside it (RFC 8305's "Connection Attempt
/// Delay", which recommends 250 ms).
const TCP_ATTEMPT_DELAY: Duration = Duration::from_millis(250);
/// How much of an error response's body is kept for the error message.
const ERROR_BODY_LIMIT: usize = 512;
/// How long to wait for an error response's body.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(1);

/// How to reach and log in to one relay: what [`connect_once`] needs, and the connection half of a
/// [`ClientBuilder`](super::ClientBuilder).
#[derive(Clone)]
pub struct ConnectOptions {
    url: RelayUrl,
    secret_key: SecretKey,
    bearer_token: Option<String>,
    extra_roots: Vec<CertificateDer<'static>>,
    insecure_skip_cert_verify: bool,
    connect_timeout: Duration,
    dns_resolver: Option<TokioResolver>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &self.url)
            .field("node_id", &self.secret_key.public())
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| ".."))
            .field("extra_roots", &self.extra_roots.len())
            .field("insecure_skip_cert_verify", &self.insecure_skip_cert_verify)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// Options to connect to `url` as the node of `secret_key`, with the defaults: no token, the webpki
    /// roots, [`DEFAULT_CONNECT_TIMEOUT`], the system's DNS configuration.
    pub fn new(url: RelayUrl, secret_key: SecretKey) -> Self {
        Self {
            url,
            secret_key,
            bearer_token: None,
            extra_roots: Vec::new(),
            insecure_skip_cert_verify: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            dns_resolver: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` with the upgrade request (relays with shared-token access).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Trusts these certificates as roots besides the webpki roots (a relay with a private CA, or a test
    /// server's self-signed certificate).
    pub fn extra_roots(mut self, roots: Vec<CertificateDer<'static>>) -> Self {
        self.extra_roots = roots;
        self
    }

    /// Skips verifying the server's certificate. **Insecure**: anyone on the path can impersonate the relay
    /// and read the traffic (which QUIC encrypts end to end, but the relay protocol does not). For tests only.
    pub fn insecure_skip_cert_verify(mut self, skip: bool) -> Self {
        self.insecure_skip_cert_verify = skip;
        self
    }

    /// Bounds a whole connect (DNS, TCP, TLS, HTTP, handshake).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Resolves host names with this resolver instead of one built from the system configuration (so that
    /// several clients share one cache).
    pub fn dns_resolver(mut self, resolver: TokioResolver) -> Self {
        self.dns_resolver = Some(resolver);
        self
    }

    /// The relay's URL.
    pub fn url(&self) -> &RelayUrl {
        &self.url
    }

    /// The node id this client logs in as.
    pub fn node_id(&self) -> NodeId {
        self.secret_key.public()
    }
}

/// Makes a single connection to the relay and logs in; it does not reconnect. For a connection that
/// keeps itself alive and comes back after failures use [`Client`](super::Client).
///
/// At this level the caller answers the server's [`Frame::Ping`]s and keeps the connection busy enough
/// (see [`ConnectionReader::recv`]).
pub async fn connect_once(options: &ConnectOptions) -> Result<Connection, ConnectError> {
    Connector::new(options.clone()).connect().await
}

/// Connects repeatedly with the same options, reusing the TLS configuration and the DNS resolver.
#[derive(Debug)]
pub(crate) struct Connector {
    options: ConnectOptions,
    tls: Option<Result<Arc<rustls::ClientConfig>, rustls::Error>>,
}

impl Connector {
    pub(crate) fn new(options: ConnectOptions) -> Self {
        Self { options, tls: None }
    }

    pub(crate) fn options(&self) -> &ConnectOptions {
        &self.options
    }

    /// One connect, bounded by the connect timeout.
    pub(crate) async fn connect(&mut self) -> Result<Connection, ConnectError> {
        let timeout = self.options.connect_timeout;
        tokio::time::timeout(timeout, self.connect_unbounded())
            .await
            .unwrap_or(Err(ConnectError::Timeout(timeout)))
    }

    async fn connect_unbounded(&mut self) -> Result<Connection, ConnectError> {
        let url = self.options.url.clone();
        let host = url.host().ok_or_else(|| ConnectError::Dns {
            host: String::new(),
            source: "the relay URL has no host".into(),
        })?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs = self.resolve(&host, port).await?;
        let tcp = connect_tcp(&addrs).await?;
        let stream = if url.is_tls() {
            let config = self
                .tls
                .get_or_insert_with(|| {
                    tls::client_config(
                        &self.options.extra_roots,
                        self.options.insecure_skip_cert_verify,
                    )
                })
                .clone()
                .map_err(|e| ConnectError::Tls(io::Error::other(e)))?;
            let name = server_name(&host)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(ConnectError::Tls)?;
            RelayStream::Tls(Box::new(tls))
        } else {
            RelayStream::Plain(tcp)
        };
        let (stream, read_buf) =
            upgrade(stream, &url, self.options.bearer_token.as_deref()).await?;
        let (read, write) = tokio::io::split(stream);
        let mut reader = FrameReader::with_buffer(read, BytesMut::from(read_buf));
        let mut writer = FrameWriter::new(write);
        login(
            &mut reader,
            &mut writer,
            &self.options.secret_key,
            self.options.connect_timeout,
        )
        .await?;
        debug!(%url, "logged in to the relay");
        Ok(Connection {
            reader: ConnectionReader { frames: reader },
            writer: ConnectionWriter { frames: writer },
        })
    }

    async fn resolve(
        &mut self,
        host: &Host<&str>,
        port: u16,
    ) -> Result<Vec<SocketAddr>, ConnectError> {
        let name = match *host {
            Host::Ipv4(ip) => return Ok(vec![SocketAddr::new(ip.into(), port)]),
            Host::Ipv6(ip) => return Ok(vec![SocketAddr::new(ip.into(), port)]),
            Host::Domain(name) => name,
        };
        if is_localhost(name) {
            return Ok(vec![
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
            ]);
        }
        let dns_error = |source: super::BoxError| ConnectError::Dns {
            host: name.to_owned(),
            source,
        };
        let resolver = match &self.options.dns_resolver {
            Some(resolver) => resolver.clone(),
            None => {
                let resolver = system_resolver().map_err(dns_error)?;
                self.options.dns_resolver = Some(resolver.clone());
                resolver
            }
        };
        let lookup = resolver
            .lookup_ip(name)
            .await
            .map_err(|e| dns_error(Box::new(e)))?;
        let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if addrs.is_empty() {
            return Err(dns_error("no addresses".into()));
        }
        debug!(host = name, ?addrs, "resolved relay host");
        Ok(addrs)
    }
}

/// `localhost` and its subdomains always mean this machine (RFC 6761, section 6.3): no DNS query.
fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// A resolver from the system configuration, or, where there is none (containers without
/// `/etc/resolv.conf`), one that asks Cloudflare's public servers.
fn system_resolver() -> Result<TokioResolver, super::BoxError> {
    match TokioResolver::builder_tokio() {
        Ok(builder) => Ok(builder.build()?),
        Err(error) => {
            debug!(%error, "no system DNS configuration, using public resolvers");
            let config = hickory_resolver::config::ResolverConfig::udp_and_tcp(
                &hickory_resolver::config::CLOUDFLARE,
            );
            Ok(TokioResolver::builder_with_config(config, Default::default()).build()?)
        }
    }
}

/// Connects to the first of `addrs` that answers, Happy Eyeballs style (RFC 8305 section 5): the addresses
/// are tried in order, a new attempt every [`TCP_ATTEMPT_DELAY`] (or at once when the running ones have
/// failed) while earlier ones keep running; the first to connect wins and the others are dropped. After
/// the last address comes one more attempt to the first: a lost SYN costs TCP a one-second retransmission
/// timeout, where a second SYN a quarter of a second later usually gets through (Chrome's "backup connect
/// job" does the same).
async fn connect_tcp(addrs: &[SocketAddr]) -> Result<TcpStream, ConnectError> {
    let plan: Vec<SocketAddr> = addrs.iter().chain(addrs.first()).copied().collect();
    let mut attempts = tokio::task::JoinSet::new();
    let mut next = 0;
    let mut last_error = None;
    loop {
        if attempts.is_empty() {
            let Some(&addr) = plan.get(next) else {
                break;
            };
            next += 1;
            attempts.spawn(async move { (addr, TcpStream::connect(addr).await) });
        }
        let more = next < plan.len();
        let done = tokio::select! {
            done = attempts.join_next() => done,
            () = tokio::time::sleep(TCP_ATTEMPT_DELAY), if more => {
                let addr = plan[next];
                next += 1;
                attempts.spawn(async move { (addr, TcpStream::connect(addr).await) });
                continue;
            }
        };
        match done {
            Some(Ok((_, Ok(stream)))) => {
                // Frames are coalesced by the writer; Nagle would only add latency.
                stream.set_nodelay(true).ok();
                return Ok(stream);
            }
            Some(Ok((addr, Err(source)))) => {
                debug!(%addr, %source, "TCP connect failed");
                last_error = Some(ConnectError::Tcp { addr, source });
            }
            // A panicked or cancelled attempt: nothing to report but that it failed.
            Some(Err(_)) | None => {}
        }
    }
    Err(last_error.unwrap_or_else(|| ConnectError::Dns {
        host: String::new(),
        source: "no addresses".into(),
    }))
}

fn server_name(host: &Host<&str>) -> Result<ServerName<'static>, ConnectError> {
    match *host {
        Host::Ipv4(ip) => Ok(ServerName::IpAddress(IpAddr::V4(ip).into())),
        Host::Ipv6(ip) => Ok(ServerName::IpAddress(IpAddr::V6(ip).into())),
        Host::Domain(name) => ServerName::try_from(name.to_owned())
            .map_err(|e| ConnectError::Tls(io::Error::new(io::ErrorKind::InvalidInput, e))),
    }
}

/// Sends `GET /relay` asking to upgrade and returns the upgraded stream with the bytes hyper read past
/// the response.
async fn upgrade(
    stream: RelayStream,
    url: &RelayUrl,
    bearer_token: Option<&str>,
) -> Result<(RelayStream, Bytes), ConnectError> {
    let http_error = |e: hyper::Error| ConnectError::Http(Box::new(e));
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
    // The connection future does the I/O; it completes once the upgrade has taken the stream over. The
    // guard stops it if we give up first.
    let _io = AbortOnDrop(tokio::spawn(connection.with_upgrades()));

    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let mut request = http::Request::builder()
        .method(http::Method::GET)
        .uri(RELAY_PATH)
        .header(http::header::HOST, authority)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, UPGRADE_PROTOCOL)
        .header(
            http::header::USER_AGENT,
            concat!("iroh-relay/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(token) = bearer_token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::new())
        .map_err(|e| ConnectError::Http(Box::new(e)))?;
    let response = sender.send_request(request).await.map_err(http_error)?;

    let status = response.status();
    if status != http::StatusCode::SWITCHING_PROTOCOLS {
        let message = error_body(response).await;
        debug!(%status, %message, "relay refused the upgrade");
        return Err(match status {
            http::StatusCode::UNAUTHORIZED => ConnectError::Unauthorized { message },
            http::StatusCode::FORBIDDEN => ConnectError::Forbidden { message },
            status => ConnectError::HttpStatus { status, message },
        });
    }
    let protocol = response.headers().get(http::header::UPGRADE);
    if !protocol.is_some_and(|p| {
        p.as_bytes()
            .eq_ignore_ascii_case(UPGRADE_PROTOCOL.as_bytes())
    }) {
        return Err(ConnectError::Http(
            format!("the server switched to {protocol:?}, not {UPGRADE_PROTOCOL}").into(),
        ));
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(http_error)?;
    let parts = upgraded
        .downcast::<TokioIo<RelayStream>>()
        .map_err(|_| ConnectError::Http("the upgraded stream has an unexpected type".into()))?;
    Ok((parts.io.into_inner(), parts.read_buf))
}

/// The start of an error response's body as text, or nothing if it does not come quickly.
async fn error_body(response: http::Response<hyper::body::Incoming>) -> String {
    let body = Limited::new(response.into_body(), ERROR_BODY_LIMIT);
    match tokio::time::timeout(ERROR_BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_owned(),
        _ => String::new(),
    }
}

/// Runs the client side of the handshake over the fresh stream.
async fn login(
    reader: &mut FrameReader<ReadHalf<RelayStream>>,
    writer: &mut FrameWriter<WriteHalf<RelayStream>>,
    secret_key: &SecretKey,
    timeout: Duration,
) -> Result<(), ConnectError> {
    let now = || tokio::time::Instant::now().into_std();
    let mut handshake = ClientHandshake::new(now(), secret_key.clone(), timeout);
    loop {
        let mut wrote = false;
        while let Some(frame) = handshake.poll_transmit() {
            writer.queue(&frame).await.map_err(ConnectError::Write)?;
            wrote = true;
        }
        if wrote {
            writer.flush().await.map_err(ConnectError::Write)?;
        }
        if let Some(event) = handshake.poll_event() {
            return match event {
                ClientEvent::Accepted => Ok(()),
                ClientEvent::Failed(error) => Err(error.into()),
            };
        }
        let Some(deadline) = handshake.poll_timeout() else {
            // Neither accepted nor failed, yet no deadline: cannot happen; treat it as the server's fault.
            return Err(ConnectError::ClosedDuringHandshake);
        };
        tokio::select! {
            frame = reader.read_frame() => match frame? {
                Some(frame) => handshake.handle_frame(now(), frame),
                None => return Err(ConnectError::ClosedDuringHandshake),
            },
            () = tokio::time::sleep_until(deadline.into()) => handshake.handle_timeout(now()),
        }
    }
}

/// One logged-in connection to a relay, from [`connect_once`]. It does not reconnect.
#[derive(Debug)]
pub struct Connection {
    reader: ConnectionReader,
    writer: ConnectionWriter,
}

impl Connection {
    /// Splits the connection so that one task can read while another writes.
    pub fn split(self) -> (ConnectionReader, ConnectionWriter) {
        (self.reader, self.writer)
    }
}

/// The receiving half of a [`Connection`].
#[derive(Debug)]
pub struct ConnectionReader {
    pub(crate) frames: FrameReader<ReadHalf<RelayStream>>,
}

impl ConnectionReader {
    /// The next frame from the server, or `Ok(None)` once it closed the connection. Cancel-safe.
    ///
    /// All frames come through, including [`Frame::Ping`]s, which the caller should answer with a
    /// [`Frame::Pong`] of the same bytes (the server may treat a client that does not as dead).
    pub async fn recv(&mut self) -> Result<Option<Frame>, ReadError> {
        self.frames.read_frame().await
    }
}

/// The sending half of a [`Connection`].
#[derive(Debug)]
pub struct ConnectionWriter {
    pub(crate) frames: FrameWriter<WriteHalf<RelayStream>>,
}

impl ConnectionWriter {
    /// Sends a batch of datagrams to `dst`, after checking that the server will accept it.
    pub async fn send_datagrams(
        &mut self,
        dst: NodeId,
        datagrams: Datagrams,
    ) -> Result<(), SendError> {
        let frame = Frame::SendDatagrams { dst, datagrams };
        frame.validate()?;
        self.frames.send(&frame).await?;
        Ok(())
    }

    /// Sends any frame as it is (a [`Frame::Pong`], a [`Frame::NotePreferred`], ...) and flushes.
    pub async fn send(&mut self, frame: &Frame) -> io::Result<()> {
        self.frames.send(frame).await
    }

    /// Flushes and shuts the stream down for writing (TLS close_notify, TCP FIN).
    pub async fn close(mut self) -> io::Result<()> {
        self.frames.shutdown().await
    }
}

/// The byte stream under the frames: TCP, or TLS over TCP.
#[derive(Debug)]
pub(crate) enum RelayStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for RelayStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RelayStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_names_never_reach_dns() {
        assert!(is_localhost("localhost"));
        assert!(is_localhost("LOCALHOST."));
        assert!(is_localhost("relay.localhost"));
        assert!(!is_localhost("localhost.example.org"));
        assert!(!is_localhost("notlocalhost"));
    }

    #[tokio::test]
    async fn ip_literals_and_localhost_resolve_without_a_resolver() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let key = SecretKey::from_bytes(&[1; 32]);
            let mut connector = Connector::new(ConnectOptions::new(
                "http://127.0.0.1:1".parse().unwrap(),
                key,
            ));
            let v4 = connector
                .resolve(&Host::Ipv4(Ipv4Addr::new(192, 0, 2, 1)), 80)
                .await;
            assert_eq!(v4.unwrap(), vec!["192.0.2.1:80".parse().unwrap()]);
            let v6 = connector
                .resolve(&Host::Ipv6(Ipv6Addr::LOCALHOST), 443)
                .await;
            assert_eq!(v6.unwrap(), vec!["[::1]:443".parse().unwrap()]);
            let local = connector.resolve(&Host::Domain("localhost"), 3340).await;
            assert_eq!(
                local.unwrap(),
                vec![
                    "127.0.0.1:3340".parse().unwrap(),
                    "[::1]:3340".parse().unwrap()
                ]
            );
            assert!(
                connector.options().dns_resolver.is_none(),
                "no resolver was built"
            );
        })
        .await
        .unwrap();
    }
}
