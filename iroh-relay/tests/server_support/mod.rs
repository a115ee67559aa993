//! A raw relay test client for the server tests: tokio TCP (plus tokio-rustls), a hand-written HTTP/1.1
//! upgrade request, then `io::FrameReader`/`FrameWriter` and `protos::handshake::ClientHandshake`. It does not
//! use the crate's real client, so the server is tested on its own.
#![allow(dead_code)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::BytesMut;
use iroh_base::{NodeId, SecretKey};
use iroh_relay::{
    io::{FrameReader, FrameWriter},
    protos::{
        RELAY_PATH, UPGRADE_PROTOCOL,
        frame::{Datagrams, DenyReason, Frame},
        handshake::{ClientEvent, ClientHandshake, HandshakeError},
    },
    server::{Server, ServerConfig, TlsConfig},
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

/// Every test's time limit.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a test waits for one expected frame.
pub(crate) const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream, plain or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
/// A boxed byte stream.
pub(crate) type Stream = Box<dyn Io>;

/// Runs `test` under [`TEST_TIMEOUT`].
pub(crate) async fn timed<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out")
}

/// Logs to the test output when RUST_LOG is set.
pub(crate) fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Plain or TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Plain HTTP.
    Plain,
    /// TLS with a self-signed certificate.
    Tls,
}

/// Spawns a server from `config`, with TLS if `mode` says so.
pub(crate) async fn spawn(mode: Mode, config: ServerConfig) -> Server {
    init_logging();
    let config = match mode {
        Mode::Plain => config,
        Mode::Tls => config.with_tls(TlsConfig::self_signed_localhost()),
    };
    Server::spawn(config).await.expect("server starts")
}

/// How to reach a server: its address and, for TLS, a connector trusting its certificate.
#[derive(Clone)]
pub(crate) struct Transport {
    pub(crate) addr: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Transport {
    /// For `server`, trusting its certificates if it has any.
    pub(crate) fn for_server(server: &Server) -> Self {
        Self::with_roots(server.relay_addr(), server.certificates())
    }

    /// For a relay at `addr`: plain HTTP without `roots`, else TLS trusting them (server name `localhost`).
    pub(crate) fn with_roots(addr: SocketAddr, roots: Vec<CertificateDer<'static>>) -> Self {
        let tls = (!roots.is_empty()).then(|| {
            let mut store = rustls::RootCertStore::empty();
            for cert in roots {
                store.add(cert).expect("certificate is usable as a root");
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(store)
            .with_no_client_auth();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        });
        Self { addr, tls }
    }

    /// A new connection, TLS handshake done.
    pub(crate) async fn connect(&self) -> Stream {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("TCP connect");
        tcp.set_nodelay(true).expect("nodelay");
        match &self.tls {
            None => Box::new(tcp),
            Some(connector) => {
                let name = ServerName::try_from("localhost").expect("server name");
                Box::new(connector.connect(name, tcp).await.expect("TLS handshake"))
            }
        }
    }
}

/// Sends `GET /relay` with the upgrade headers plus `extra_headers` (each ending in `\r\n`) and reads the
/// response head. Returns the status code.
pub(crate) async fn upgrade(stream: &mut Stream, extra_headers: &str) -> u16 {
    let request = format!(
        "GET {RELAY_PATH} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE_PROTOCOL}\r\n{extra_headers}\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let head = read_head(stream).await;
    status_of(&head)
}

/// Reads an HTTP response head byte by byte (so nothing after it is consumed).
pub(crate) async fn read_head(stream: &mut Stream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = stream.read_u8().await.expect("response head");
        head.push(byte);
        assert!(head.len() < 16 * 1024, "response head too long");
    }
    String::from_utf8(head).expect("UTF-8 head")
}

/// The status code of a response head.
pub(crate) fn status_of(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}

/// Why a login did not succeed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LoginError {
    /// The HTTP upgrade was refused with this status.
    Http(u16),
    /// The server denied the login.
    Denied(DenyReason),
    /// Something else went wrong.
    Other(String),
}

/// A relay connection after the upgrade.
pub(crate) struct TestClient {
    pub(crate) key: SecretKey,
    pub(crate) reader: FrameReader<ReadHalf<Stream>>,
    pub(crate) writer: FrameWriter<WriteHalf<Stream>>,
}

impl TestClient {
    /// Connects and logs in as `key`; panics on failure.
    pub(crate) async fn connect(transport: &Transport, key: SecretKey) -> Self {
        Self::try_connect(transport, key, "")
            .await
            .expect("login succeeds")
    }

    /// Connects with a fresh key.
    pub(crate) async fn connect_new(transport: &Transport) -> Self {
        Self::connect(transport, SecretKey::generate()).await
    }

    /// Connects and logs in as `key`, sending `extra_headers` with the upgrade request.
    pub(crate) async fn try_connect(
        transport: &Transport,
        key: SecretKey,
        extra_headers: &str,
    ) -> Result<Self, LoginError> {
        let (mut client, status) = Self::upgraded(transport, key, extra_headers).await;
        if status != 101 {
            return Err(LoginError::Http(status));
        }
        client.login().await?;
        Ok(client)
    }

    /// Connects and upgrades, without logging in.
    pub(crate) async fn upgraded(
        transport: &Transport,
        key: SecretKey,
        extra_headers: &str,
    ) -> (Self, u16) {
        let mut stream = transport.connect().await;
        let status = upgrade(&mut stream, extra_headers).await;
        let (read, write) = tokio::io::split(stream);
        let client = Self {
            key,
            reader: FrameReader::with_buffer(read, BytesMut::new()),
            writer: FrameWriter::new(write),
        };
        (client, status)
    }

    /// Runs the client handshake.
    pub(crate) async fn login(&mut self) -> Result<(), LoginError> {
        let now = std::time::Instant::now();
        let mut handshake = ClientHandshake::new(now, self.key.clone(), FRAME_TIMEOUT);
        loop {
            while let Some(frame) = handshake.poll_transmit() {
                self.writer.send(&frame).await.map_err(other)?;
            }
            match handshake.poll_event() {
                Some(ClientEvent::Accepted) => return Ok(()),
                Some(ClientEvent::Failed(HandshakeError::Denied { reason, .. })) => {
                    return Err(LoginError::Denied(reason));
                }
                Some(ClientEvent::Failed(error)) => return Err(other(error)),
                None => {}
            }
            let frame = tokio::time::timeout(FRAME_TIMEOUT, self.reader.read_frame())
                .await
                .map_err(other)?
                .map_err(other)?
                .ok_or_else(|| LoginError::Other("closed during login".into()))?;
            handshake.handle_frame(std::time::Instant::now(), frame);
        }
    }

    /// This client's node id.
    pub(crate) fn node_id(&self) -> NodeId {
        self.key.public()
    }

    /// Sends one frame.
    pub(crate) async fn send_frame(&mut self, frame: &Frame) {
        self.writer.send(frame).await.expect("send frame");
    }

    /// Sends one datagram to `dst`.
    pub(crate) async fn send(&mut self, dst: NodeId, payload: &[u8]) {
        self.send_datagrams(dst, Datagrams::single(payload.to_vec()))
            .await;
    }

    /// Sends a datagram batch to `dst`.
    pub(crate) async fn send_datagrams(&mut self, dst: NodeId, datagrams: Datagrams) {
        self.send_frame(&Frame::SendDatagrams { dst, datagrams })
            .await;
    }

    /// The next frame other than the server's keepalive pings (which are answered), within
    /// [`FRAME_TIMEOUT`]; `None` when the connection ended (cleanly or not).
    pub(crate) async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let frame = tokio::time::timeout(FRAME_TIMEOUT, self.reader.read_frame())
                .await
                .expect("a frame in time");
            match frame {
                Ok(Some(Frame::Ping(data))) => {
                    let _ = self.writer.send(&Frame::Pong(data)).await;
                }
                Ok(Some(frame)) => return Some(frame),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next frame, which must be RecvDatagrams.
    pub(crate) async fn recv(&mut self) -> (NodeId, Datagrams) {
        match self.next_frame().await {
            Some(Frame::RecvDatagrams { src, datagrams }) => (src, datagrams),
            other => panic!("expected RecvDatagrams, got {other:?}"),
        }
    }

    /// Whether the server closes the connection within [`FRAME_TIMEOUT`], skipping frames until then.
    pub(crate) async fn closed(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.reader.read_frame()).await {
                Err(_) => return false,
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None) | Err(_)) => return true,
            }
        }
    }
}

fn other(error: impl std::fmt::Display) -> LoginError {
    LoginError::Other(error.to_string())
}

/// A one-shot HTTP/1.1 request (`Connection: close`); returns the status, the head, and the body.
pub(crate) async fn http_request(
    transport: &Transport,
    method: &str,
    path: &str,
    extra_headers: &str,
) -> (u16, String, Vec<u8>) {
    let mut stream = transport.connect().await;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra_headers}\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    // A TLS peer may close without close_notify after `Connection: close`; what was read counts.
    let _ = stream.read_to_end(&mut response).await;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8(response[..split + 4].to_vec()).expect("UTF-8 head");
    let body = response[split + 4..].to_vec();
    (status_of(&head), head, body)
}

/// The value of header `name` in a response head (case-insensitive), if present.
pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// GET `path` on a plain HTTP listener (the metrics one).
pub(crate) async fn http_get_plain(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream: Stream = Box::new(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    let status = status_of(&response);
    (status, response)
}
