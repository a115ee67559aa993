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

use std::{fmt, io, time::Duration};

use bytes::Bytes;
use hickory_resolver::TokioResolver;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use iroh_base::{NodeId, RelayUrl, SecretKey};
use rustls::pki_types::CertificateDer;
use tokio::io::{ReadHalf, WriteHalf};
use tracing::debug;

use super::{
    ConnectError, SendError,
    dial::{Dialer, HttpStream},
    transport::{RelayStream, Transport},
};
use crate::{
    io::{FrameReader, FrameWriter, ReadError},
    protos::{
        RELAY_PATH, UPGRADE_PROTOCOL, WEBSOCKET_PROTOCOL,
        frame::{Datagrams, Frame},
        handshake::{ClientEvent, ClientHandshake},
    },
    ws::{self, MAX_MESSAGE, MessageLimit, Rewind, WsBytes},
};

/// The default bound on a whole connect: DNS, TCP, TLS, HTTP and the handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
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
    transport: Transport,
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
            .field("transport", &self.transport)
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
            transport: Transport::default(),
        }
    }

    /// The upgrade tried first (the other follows at once when this one is clearly refused; see
    /// [`Transport`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
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
    dialer: Dialer,
    /// The transport tried first: the configured one until the other worked after a refusal.
    transport: Transport,
}

impl Connector {
    pub(crate) fn new(options: ConnectOptions) -> Self {
        let dialer = Dialer::new(
            options.extra_roots.clone(),
            options.insecure_skip_cert_verify,
            options.dns_resolver.clone(),
        );
        let transport = options.transport;
        Self {
            options,
            dialer,
            transport,
        }
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
        let token = self.options.bearer_token.as_deref();
        let stream = self.dialer.dial(url.as_url()).await?;
        let stream = match upgrade(stream, &url, token, self.transport).await {
            Ok(stream) => stream,
            Err(error) if is_upgrade_refusal(&error) => {
                let other = self.transport.other();
                debug!(%url, %error, ?other, "the relay refused the upgrade, trying the other transport");
                let stream = self.dialer.dial(url.as_url()).await?;
                let stream = upgrade(stream, &url, token, other).await?;
                self.transport = other;
                stream
            }
            Err(error) => return Err(error),
        };
        let (read, write) = tokio::io::split(stream);
        let mut reader = FrameReader::new(read);
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
}

/// Whether an upgrade failed in a way the other transport may not: the server (or a proxy before it) does
/// not take this kind of upgrade on this path.
fn is_upgrade_refusal(error: &ConnectError) -> bool {
    match error {
        ConnectError::HttpStatus { status, .. } => {
            matches!(status.as_u16(), 400 | 404 | 405 | 426 | 501)
        }
        ConnectError::WrongProtocol { .. } => true,
        _ => false,
    }
}

/// Sends `GET /relay` asking to upgrade to `transport` and returns the stream frames then travel on (with
/// the bytes hyper read past the response in front).
async fn upgrade(
    stream: HttpStream,
    url: &RelayUrl,
    bearer_token: Option<&str>,
    transport: Transport,
) -> Result<RelayStream, ConnectError> {
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
        .header(http::header::CONNECTION, "Upgrade");
    let ws_key = match transport {
        Transport::Relay => {
            request = request.header(http::header::UPGRADE, UPGRADE_PROTOCOL);
            None
        }
        Transport::WebSocket => {
            let key = data_encoding::BASE64.encode(&rand::random::<[u8; 16]>());
            request = request
                .header(http::header::UPGRADE, "websocket")
                .header(http::header::SEC_WEBSOCKET_VERSION, ws::WS_VERSION)
                .header(http::header::SEC_WEBSOCKET_KEY, &key)
                .header(http::header::SEC_WEBSOCKET_PROTOCOL, WEBSOCKET_PROTOCOL);
            Some(key)
        }
    };
    request = request.header(
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
    let expected = match transport {
        Transport::Relay => UPGRADE_PROTOCOL,
        Transport::WebSocket => "websocket",
    };
    let headers = response.headers();
    let protocol = headers.get(http::header::UPGRADE);
    if !protocol.is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(expected.as_bytes())) {
        return Err(ConnectError::WrongProtocol {
            asked: expected,
            got: protocol.map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned()),
        });
    }
    if let Some(key) = &ws_key {
        let accept = headers.get(http::header::SEC_WEBSOCKET_ACCEPT);
        if accept.is_none_or(|a| a.as_bytes() != ws::accept_key(key.as_bytes()).as_bytes()) {
            return Err(ConnectError::Http(
                "the server's Sec-WebSocket-Accept does not match our key".into(),
            ));
        }
        let picked = headers.get(http::header::SEC_WEBSOCKET_PROTOCOL);
        if picked.is_none_or(|p| p.as_bytes() != WEBSOCKET_PROTOCOL.as_bytes()) {
            return Err(ConnectError::WrongProtocol {
                asked: WEBSOCKET_PROTOCOL,
                got: picked.map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned()),
            });
        }
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(http_error)?;
    let parts = upgraded
        .downcast::<TokioIo<HttpStream>>()
        .map_err(|_| ConnectError::Http("the upgraded stream has an unexpected type".into()))?;
    let (stream, read_buf) = (parts.io.into_inner(), parts.read_buf);
    Ok(match transport {
        Transport::Relay => RelayStream::Relay(Rewind::new(stream, read_buf)),
        Transport::WebSocket => {
            let limit = MessageLimit::new(MAX_MESSAGE);
            RelayStream::WebSocket(Box::new(WsBytes::client(stream, read_buf, limit)))
        }
    })
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

    /// Encodes a frame into the write buffer (written out once the buffer is full); [`Self::flush`] sends
    /// what is queued. For callers that send bursts: one write for many frames.
    pub async fn queue(&mut self, frame: &Frame) -> io::Result<()> {
        self.frames.queue(frame).await
    }

    /// Writes everything queued and flushes the stream.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.frames.flush().await
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

/// Aborts a spawned task when dropped.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
