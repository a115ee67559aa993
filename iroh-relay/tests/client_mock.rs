//! The relay client against a small in-test server: a TCP listener, a hand-rolled HTTP upgrade, the frame
//! reader/writer and the sans-IO server handshake. The mock is also how the error paths are reached: HTTP
//! error statuses, a server that never answers, one that denies the login, one that closes right after
//! accepting, one that stops answering.
#![cfg(feature = "client")]
// The mock server's helpers are test code too, outside the `#[test]` functions clippy recognizes.
#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    num::NonZeroU16,
    time::{Duration, Instant},
};

use bytes::Bytes;
use iroh_base::{NodeId, RelayUrl, SecretKey};
use iroh_relay::{
    client::{
        ClientBuilder, ConnectError, ConnectOptions, ConnectionError, ConnectionState, PingError,
        ReceivedEvent, SendError, connect_once,
    },
    io::{FrameReader, FrameWriter},
    protos::{
        frame::{Datagrams, DenyReason, Ecn, Frame, MAX_PAYLOAD, StatusCode},
        handshake::{HandshakeError, SERVER_HANDSHAKE_TIMEOUT, ServerEvent, ServerHandshake},
    },
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, watch},
    task::JoinSet,
};

const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a test body under [`TEST_TIMEOUT`].
async fn timed<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out")
}

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 32])
}

/// How the mock server behaves.
#[derive(Debug, Clone, Default)]
struct Behavior {
    /// Answer the upgrade request with this status and body instead.
    status: Option<(u16, &'static str)>,
    /// Require `Authorization: Bearer <token>`, else 401.
    token: Option<&'static str>,
    /// Accept TCP, then never answer.
    silent: bool,
    /// Deny the login.
    deny: bool,
    /// Close right after accepting the login.
    close_after_accept: bool,
    /// After the login, read but never write (no pongs, nothing).
    mute: bool,
    /// After the login, never read.
    no_read: bool,
    /// Write the 101 and the challenge separately (by default they go in one write).
    split_101: bool,
}

/// A logged-in connection to the mock, as the test sees it.
struct MockConn {
    node_id: NodeId,
    request: String,
    /// Frames the client sent; `None` when its stream ended.
    from_client: mpsc::UnboundedReceiver<Option<Frame>>,
    /// Frames to send to the client; `None` closes the connection.
    to_client: mpsc::UnboundedSender<Option<Frame>>,
}

impl MockConn {
    /// The next frame from the client other than keepalives and pongs; `None` at its end.
    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            match self.from_client.recv().await.flatten()? {
                Frame::KeepAlive | Frame::Pong(_) => continue,
                frame => return Some(frame),
            }
        }
    }

    fn send(&self, frame: Frame) {
        self.to_client.send(Some(frame)).unwrap();
    }

    fn close(&self) {
        self.to_client.send(None).ok();
    }
}

struct Mock {
    addr: SocketAddr,
    accepted: mpsc::UnboundedReceiver<MockConn>,
    /// Dropping it aborts the accept loop and, with its JoinSet, every connection.
    _tasks: tokio::task::JoinHandle<()>,
    tls: Option<rustls::pki_types::CertificateDer<'static>>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self._tasks.abort();
    }
}

impl Mock {
    async fn spawn(behavior: Behavior) -> Self {
        Self::spawn_on("127.0.0.1:0".parse().unwrap(), behavior, false).await
    }

    async fn spawn_on(addr: SocketAddr, behavior: Behavior, tls: bool) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted_tx, accepted) = mpsc::unbounded_channel();
        let (acceptor, cert) = if tls {
            let (acceptor, cert) = tls_acceptor();
            (Some(acceptor), Some(cert))
        } else {
            (None, None)
        };
        let tasks = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let behavior = behavior.clone();
                let accepted_tx = accepted_tx.clone();
                match acceptor.clone() {
                    Some(acceptor) => connections.spawn(async move {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            serve(tls, behavior, accepted_tx).await;
                        }
                    }),
                    None => connections.spawn(serve(tcp, behavior, accepted_tx)),
                };
            }
        });
        Self {
            addr,
            accepted,
            _tasks: tasks,
            tls: cert,
        }
    }

    fn url(&self) -> RelayUrl {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://localhost:{}", self.addr.port())
            .parse()
            .unwrap()
    }

    fn ip_url(&self) -> RelayUrl {
        format!("http://{}", self.addr).parse().unwrap()
    }

    async fn next_conn(&mut self) -> MockConn {
        self.accepted.recv().await.expect("mock server stopped")
    }
}

#[cfg(feature = "server")]
fn tls_acceptor() -> (
    tokio_rustls::TlsAcceptor,
    rustls::pki_types::CertificateDer<'static>,
) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())
        .unwrap();
    (
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
        cert,
    )
}

#[cfg(not(feature = "server"))]
fn tls_acceptor() -> (
    tokio_rustls::TlsAcceptor,
    rustls::pki_types::CertificateDer<'static>,
) {
    unreachable!("TLS tests need rcgen, which comes with the server feature")
}

/// Reads an HTTP request head, byte by byte (the client sends nothing after it before the answer).
async fn read_request(stream: &mut (impl AsyncRead + Unpin)) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.ok()?);
        assert!(head.len() < 8192, "request head too long");
    }
    String::from_utf8(head).ok()
}

fn header<'a>(request: &'a str, name: &str) -> Option<&'a str> {
    request.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

async fn serve<S>(mut stream: S, behavior: Behavior, accepted: mpsc::UnboundedSender<MockConn>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    if behavior.silent {
        std::future::pending::<()>().await;
    }
    let refuse = |code: u16, body: &str| {
        format!(
            "HTTP/1.1 {code} Nope\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if let Some((code, body)) = behavior.status {
        stream.write_all(refuse(code, body).as_bytes()).await.ok();
        return;
    }
    if let Some(token) = behavior.token
        && header(&request, "authorization") != Some(&format!("Bearer {token}"))
    {
        stream
            .write_all(refuse(401, "bad token").as_bytes())
            .await
            .ok();
        return;
    }
    let mut handshake =
        ServerHandshake::new(Instant::now(), rand::random(), SERVER_HANDSHAKE_TIMEOUT);
    let challenge = handshake.poll_transmit().unwrap().to_bytes();
    let mut head =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: iroh-relay-v1\r\n\r\n"
            .to_vec();
    if behavior.split_101 {
        stream.write_all(&head).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream.write_all(&challenge).await.unwrap();
    } else {
        // The challenge rides in the same segment as the 101: the client must keep those bytes.
        head.extend_from_slice(&challenge);
        stream.write_all(&head).await.unwrap();
    }
    stream.flush().await.unwrap();

    let (read, write) = tokio::io::split(stream);
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    let node_id = loop {
        let Ok(Some(frame)) = reader.read_frame().await else {
            return;
        };
        handshake.handle_frame(Instant::now(), &frame);
        let verdict = handshake.poll_event();
        match verdict {
            Some(ServerEvent::Verified(_)) if behavior.deny => {
                handshake.deny(DenyReason::NotAllowed, "not on the list");
            }
            Some(ServerEvent::Verified(_)) => handshake.accept(),
            Some(ServerEvent::Failed(_)) | None => {}
        }
        while let Some(frame) = handshake.poll_transmit() {
            writer.send(&frame).await.unwrap();
        }
        match (verdict, handshake.accepted()) {
            (_, Some(node_id)) => break node_id,
            (Some(_), None) => {
                writer.shutdown().await.ok();
                return;
            }
            (None, None) => {}
        }
    };
    let (from_client_tx, from_client) = mpsc::unbounded_channel();
    let (to_client, mut to_client_rx) = mpsc::unbounded_channel();
    accepted
        .send(MockConn {
            node_id,
            request,
            from_client,
            to_client,
        })
        .ok();
    if behavior.close_after_accept {
        writer.shutdown().await.ok();
        return;
    }
    let mut injecting = true;
    loop {
        tokio::select! {
            frame = reader.read_frame(), if !behavior.no_read => {
                let Ok(Some(frame)) = frame else {
                    from_client_tx.send(None).ok();
                    return;
                };
                if !behavior.mute {
                    match &frame {
                        // The client may be gone already: write errors end nothing here.
                        Frame::Ping(data) => writer.send(&Frame::Pong(*data)).await.unwrap_or(()),
                        Frame::SendDatagrams { dst, datagrams } => {
                            // Echo, as if `dst` had answered.
                            let echo = Frame::RecvDatagrams { src: *dst, datagrams: datagrams.clone() };
                            writer.send(&echo).await.unwrap_or(());
                        }
                        _ => {}
                    }
                }
                from_client_tx.send(Some(frame)).ok();
            }
            frame = to_client_rx.recv(), if injecting => match frame {
                Some(Some(frame)) => writer.send(&frame).await.unwrap_or(()),
                Some(None) => {
                    writer.shutdown().await.ok();
                    return;
                }
                None => injecting = false,
            },
        }
    }
}

/// Waits until the watched state satisfies `f`, returning it.
async fn wait_for(
    state: &mut watch::Receiver<ConnectionState>,
    f: impl Fn(&ConnectionState) -> bool,
) -> ConnectionState {
    state.wait_for(|s| f(s)).await.unwrap().clone()
}

fn fast_client(url: RelayUrl, secret_key: SecretKey) -> ClientBuilder {
    ClientBuilder::new(url, secret_key)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect_timeout(Duration::from_secs(5))
}

// ---- connect_once ----

#[tokio::test]
async fn connect_once_logs_in_and_exchanges_frames() {
    timed(async {
        let mut mock = Mock::spawn(Behavior::default()).await;
        let options = ConnectOptions::new(mock.url(), key(1)).bearer_token("sesame");
        let (mut reader, mut writer) = connect_once(&options).await.unwrap().split();
        let mut conn = mock.next_conn().await;
        assert_eq!(conn.node_id, key(1).public());
        // The upgrade request as the protocol wants it.
        assert!(
            conn.request.starts_with("GET /relay HTTP/1.1\r\n"),
            "{}",
            conn.request
        );
        assert_eq!(header(&conn.request, "upgrade"), Some("iroh-relay-v1"));
        assert_eq!(header(&conn.request, "connection"), Some("Upgrade"));
        assert_eq!(
            header(&conn.request, "authorization"),
            Some("Bearer sesame")
        );
        assert_eq!(
            header(&conn.request, "host"),
            Some(format!("localhost:{}", mock.addr.port()).as_str())
        );

        // A GSO batch with ECN, echoed back with the source set.
        let peer = key(2).public();
        let batch = Datagrams {
            ecn: Ecn::Ce,
            segment_size: NonZeroU16::new(100),
            contents: Bytes::from(vec![7u8; 250]),
        };
        writer.send_datagrams(peer, batch.clone()).await.unwrap();
        assert_eq!(
            reader.recv().await.unwrap(),
            Some(Frame::RecvDatagrams {
                src: peer,
                datagrams: batch.clone()
            })
        );
        assert_eq!(
            conn.next_frame().await,
            Some(Frame::SendDatagrams {
                dst: peer,
                datagrams: batch
            })
        );
        // Raw frames both ways: the caller answers pings at this level.
        conn.send(Frame::Ping([3; 8]));
        assert_eq!(reader.recv().await.unwrap(), Some(Frame::Ping([3; 8])));
        // An invalid batch is refused before it is sent.
        let too_big = Datagrams::single(vec![0u8; MAX_PAYLOAD + 1]);
        assert!(matches!(
            writer.send_datagrams(peer, too_big).await,
            Err(SendError::Invalid(_))
        ));
        writer.close().await.unwrap();
        assert_eq!(conn.next_frame().await, None);
    })
    .await;
}

#[tokio::test]
async fn challenge_sent_separately_from_the_101_also_works() {
    timed(async {
        let mut mock = Mock::spawn(Behavior {
            split_101: true,
            ..Default::default()
        })
        .await;
        let options = ConnectOptions::new(mock.ip_url(), key(1));
        let connection = connect_once(&options).await.unwrap();
        assert_eq!(mock.next_conn().await.node_id, key(1).public());
        drop(connection);
    })
    .await;
}

#[tokio::test]
async fn http_statuses_map_to_typed_errors() {
    timed(async {
        async fn connect(mock: &Mock) -> Result<iroh_relay::client::Connection, ConnectError> {
            connect_once(&ConnectOptions::new(mock.url(), key(1))).await
        }
        let mock = Mock::spawn(Behavior {
            status: Some((401, "who are you")),
            ..Default::default()
        })
        .await;
        match connect(&mock).await {
            Err(ConnectError::Unauthorized { message }) => assert_eq!(message, "who are you"),
            other => panic!("{other:?}"),
        }
        let mock = Mock::spawn(Behavior {
            status: Some((403, "go away")),
            ..Default::default()
        })
        .await;
        assert!(matches!(
            connect(&mock).await,
            Err(ConnectError::Forbidden { .. })
        ));
        let mock = Mock::spawn(Behavior {
            status: Some((500, "oops")),
            ..Default::default()
        })
        .await;
        match connect(&mock).await {
            Err(ConnectError::HttpStatus { status, message }) => {
                assert_eq!(status.as_u16(), 500);
                assert_eq!(message, "oops");
            }
            other => panic!("{other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn a_bearer_token_is_checked() {
    timed(async {
        let mut mock = Mock::spawn(Behavior {
            token: Some("right"),
            ..Default::default()
        })
        .await;
        let wrong = ConnectOptions::new(mock.url(), key(1)).bearer_token("wrong");
        let error = connect_once(&wrong).await.unwrap_err();
        assert!(
            matches!(error, ConnectError::Unauthorized { .. }),
            "{error:?}"
        );
        assert!(error.is_refusal());
        let none = ConnectOptions::new(mock.url(), key(1));
        assert!(matches!(
            connect_once(&none).await,
            Err(ConnectError::Unauthorized { .. })
        ));
        let right = ConnectOptions::new(mock.url(), key(1)).bearer_token("right");
        let _connection = connect_once(&right).await.unwrap();
        assert_eq!(mock.next_conn().await.node_id, key(1).public());
    })
    .await;
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    timed(async {
        let mock = Mock::spawn(Behavior {
            silent: true,
            ..Default::default()
        })
        .await;
        let options =
            ConnectOptions::new(mock.url(), key(1)).connect_timeout(Duration::from_millis(300));
        let started = Instant::now();
        let error = connect_once(&options).await.unwrap_err();
        assert!(matches!(error, ConnectError::Timeout(_)), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await;
}

#[tokio::test]
async fn a_denied_login_is_a_handshake_error() {
    timed(async {
        let mock = Mock::spawn(Behavior {
            deny: true,
            ..Default::default()
        })
        .await;
        let error = connect_once(&ConnectOptions::new(mock.url(), key(1)))
            .await
            .unwrap_err();
        match &error {
            ConnectError::Handshake(HandshakeError::Denied { reason, message }) => {
                assert_eq!(*reason, DenyReason::NotAllowed);
                assert_eq!(message, "not on the list");
            }
            other => panic!("{other:?}"),
        }
        assert!(error.is_refusal());
    })
    .await;
}

#[tokio::test]
async fn nothing_listening_is_a_tcp_error() {
    timed(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url: RelayUrl = format!("http://{addr}").parse().unwrap();
        let error = connect_once(&ConnectOptions::new(url, key(1)))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ConnectError::Tcp { addr: a, .. } if a == addr),
            "{error:?}"
        );
    })
    .await;
}

#[cfg(feature = "server")]
#[tokio::test]
async fn tls_trusts_extra_roots_or_nothing_when_told() {
    timed(async {
        let mut mock =
            Mock::spawn_on("127.0.0.1:0".parse().unwrap(), Behavior::default(), true).await;
        let cert = mock.tls.clone().unwrap();
        // The self-signed certificate is not trusted by default.
        let error = connect_once(&ConnectOptions::new(mock.url(), key(1)))
            .await
            .unwrap_err();
        assert!(matches!(error, ConnectError::Tls(_)), "{error:?}");
        // Trusted as an extra root.
        let trusted = ConnectOptions::new(mock.url(), key(1)).extra_roots(vec![cert]);
        let (mut reader, mut writer) = connect_once(&trusted).await.unwrap().split();
        let _conn = mock.next_conn().await;
        let peer = key(2).public();
        writer
            .send_datagrams(peer, Datagrams::single(&b"over tls"[..]))
            .await
            .unwrap();
        assert!(matches!(
            reader.recv().await.unwrap(),
            Some(Frame::RecvDatagrams { src, .. }) if src == peer
        ));
        // Or not verified at all.
        let insecure = ConnectOptions::new(mock.url(), key(1)).insecure_skip_cert_verify(true);
        let _connection = connect_once(&insecure).await.unwrap();
        let _conn = mock.next_conn().await;
        // The certificate names `localhost`, not 127.0.0.1.
        let by_ip: RelayUrl = format!("https://{}", mock.addr).parse().unwrap();
        let trusted =
            ConnectOptions::new(by_ip, key(1)).extra_roots(vec![mock.tls.clone().unwrap()]);
        assert!(matches!(
            connect_once(&trusted).await,
            Err(ConnectError::Tls(_))
        ));
    })
    .await;
}

// ---- Client ----

#[tokio::test]
async fn client_sends_receives_and_pings() {
    timed(async {
        let mut mock = Mock::spawn(Behavior::default()).await;
        let mut client = fast_client(mock.url(), key(1)).build();
        assert_eq!(client.url(), &mock.url());
        let mut state = client.state();
        let mut conn = mock.next_conn().await;
        wait_for(&mut state, ConnectionState::is_connected).await;

        let peer = key(2).public();
        for i in 0..10u8 {
            client
                .send(peer, Datagrams::single(vec![i; 1200]))
                .await
                .unwrap();
        }
        for i in 0..10u8 {
            match client.recv().await.unwrap() {
                ReceivedEvent::Datagrams { src, datagrams } => {
                    assert_eq!(src, peer);
                    assert_eq!(datagrams.contents, vec![i; 1200]);
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(
                conn.next_frame().await,
                Some(Frame::SendDatagrams { .. })
            ));
        }
        let rtt = client.ping().await.unwrap();
        assert!(rtt < Duration::from_secs(1), "{rtt:?}");
        assert!(matches!(conn.next_frame().await, Some(Frame::Ping(_))));

        // Server frames surface as events; server pings are answered.
        conn.send(Frame::PeerGone(peer));
        conn.send(Frame::Status {
            code: StatusCode::RateLimited,
            message: "slow down".into(),
        });
        assert_eq!(client.recv().await, Some(ReceivedEvent::PeerGone(peer)));
        assert_eq!(
            client.recv().await,
            Some(ReceivedEvent::Status {
                code: StatusCode::RateLimited,
                message: "slow down".into()
            })
        );
        conn.send(Frame::Ping([9; 8]));
        loop {
            match conn.from_client.recv().await.flatten() {
                Some(Frame::Pong(data)) => break assert_eq!(data, [9; 8]),
                Some(_) => {}
                None => panic!("connection ended"),
            }
        }

        // Invalid batches are refused up front.
        assert!(matches!(
            client.try_send(peer, Datagrams::single(vec![0; MAX_PAYLOAD + 1])),
            Err(SendError::Invalid(_))
        ));
        client.close().await;
        assert!(matches!(*state.borrow(), ConnectionState::Closed));
    })
    .await;
}

#[tokio::test]
async fn note_preferred_is_sent_and_repeated_after_a_reconnect() {
    timed(async {
        let mut mock = Mock::spawn(Behavior::default()).await;
        let client = fast_client(mock.url(), key(1)).build();
        let mut conn = mock.next_conn().await;
        client.note_preferred(true);
        assert_eq!(conn.next_frame().await, Some(Frame::NotePreferred(true)));
        client.note_preferred(true); // unchanged: nothing sent
        client.note_preferred(false);
        assert_eq!(conn.next_frame().await, Some(Frame::NotePreferred(false)));
        client.note_preferred(true);
        assert_eq!(conn.next_frame().await, Some(Frame::NotePreferred(true)));

        // The server drops the connection; the new one is told again.
        conn.close();
        let mut conn = mock.next_conn().await;
        assert_eq!(conn.next_frame().await, Some(Frame::NotePreferred(true)));
        client.close().await;
        assert_eq!(conn.next_frame().await, None, "closed gracefully");
    })
    .await;
}

#[tokio::test]
async fn a_server_closing_after_accept_makes_the_client_reconnect() {
    timed(async {
        let mut mock = Mock::spawn(Behavior {
            close_after_accept: true,
            ..Default::default()
        })
        .await;
        let client = fast_client(mock.url(), key(1)).build();
        let mut state = client.state();
        // Each loss is reported with its reason, and the client logs in again, and again.
        for _ in 0..3 {
            let _conn = mock.next_conn().await;
            let lost = wait_for(&mut state, |s| {
                matches!(s, ConnectionState::Disconnected { .. })
            })
            .await;
            let ConnectionState::Disconnected { last_error } = lost else {
                unreachable!()
            };
            assert!(
                matches!(
                    *last_error,
                    ConnectionError::ClosedByServer | ConnectionError::Read(_)
                ),
                "{last_error:?}"
            );
            // Pings fail at once while waiting to reconnect.
            if matches!(*state.borrow(), ConnectionState::Disconnected { .. }) {
                let ping = client.ping().await;
                assert!(
                    matches!(
                        ping,
                        Err(PingError::NotConnected | PingError::ConnectionLost)
                    ),
                    "{ping:?}"
                );
            }
            wait_for(&mut state, |s| matches!(s, ConnectionState::Connecting)).await;
        }
        client.close().await;
    })
    .await;
}

/// A client connected to a server that reads everything and never answers.
async fn client_of_a_mute_server(
    keepalive: Duration,
    ping_timeout: Duration,
) -> (
    Mock,
    MockConn,
    iroh_relay::client::Client,
    watch::Receiver<ConnectionState>,
) {
    let mut mock = Mock::spawn(Behavior {
        mute: true,
        ..Default::default()
    })
    .await;
    let client = fast_client(mock.url(), key(1))
        .keepalive_interval(keepalive)
        .ping_timeout(ping_timeout)
        .build();
    let mut state = client.state();
    let conn = mock.next_conn().await;
    wait_for(&mut state, ConnectionState::is_connected).await;
    (mock, conn, client, state)
}

/// Waits for the client to give up on the mute server; checks that it probed with a ping first and that it
/// connects again. Returns how long the server had been silent when the client gave up.
async fn gives_up_after_a_probe_and_reconnects(
    mock: &mut Mock,
    mut conn: MockConn,
    state: &mut watch::Receiver<ConnectionState>,
) -> Duration {
    let lost = wait_for(state, |s| matches!(s, ConnectionState::Disconnected { .. })).await;
    let ConnectionState::Disconnected { last_error } = lost else {
        unreachable!()
    };
    let ConnectionError::Timeout(silent) = *last_error else {
        panic!("{last_error:?}");
    };
    let mut probed = false;
    while let Some(frame) = conn.from_client.recv().await.flatten() {
        probed |= matches!(frame, Frame::Ping(_));
    }
    assert!(probed, "no probe ping before giving up");
    let _conn = mock.next_conn().await;
    wait_for(state, ConnectionState::is_connected).await;
    silent
}

#[tokio::test]
async fn a_silent_server_is_detected_and_pings_time_out() {
    timed(async {
        let (mut mock, conn, client, mut state) =
            client_of_a_mute_server(Duration::from_millis(300), Duration::from_millis(200)).await;
        let started = Instant::now();
        assert_eq!(
            client.ping().await,
            Err(PingError::Timeout(Duration::from_millis(200)))
        );
        let silent = gives_up_after_a_probe_and_reconnects(&mut mock, conn, &mut state).await;
        // An interval of silence, then the probe's timeout.
        assert!(silent >= Duration::from_millis(500), "{silent:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn check_connection_finds_a_silent_server_within_the_ping_timeout() {
    timed(async {
        // A long keepalive interval: without the check, the silence would go unnoticed for a minute.
        let (mut mock, conn, client, mut state) =
            client_of_a_mute_server(Duration::from_secs(60), Duration::from_millis(200)).await;
        let started = Instant::now();
        client.check_connection();
        let silent = gives_up_after_a_probe_and_reconnects(&mut mock, conn, &mut state).await;
        assert!(silent >= Duration::from_millis(200), "{silent:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn an_idle_client_sends_keepalives_and_probes_a_quiet_server() {
    timed(async {
        let mut mock = Mock::spawn(Behavior::default()).await;
        let client = fast_client(mock.url(), key(1))
            .keepalive_interval(Duration::from_millis(100))
            .build();
        let mut state = client.state();
        let mut conn = mock.next_conn().await;
        // A server that talks (here: keepalives every 30 ms) is alive; the idle client sends keepalives
        // (not probes: a busy machine may still delay the server past an interval now and then).
        let mut keepalives = 0;
        while keepalives < 3 {
            conn.send(Frame::KeepAlive);
            let frame =
                tokio::time::timeout(Duration::from_millis(30), conn.from_client.recv()).await;
            match frame {
                Ok(Some(Some(Frame::KeepAlive))) => keepalives += 1,
                Ok(None | Some(None)) => panic!("connection ended"),
                _ => {}
            }
        }
        // A quiet server is probed with pings instead (they keep the connection alive too); answered,
        // the connection stays up.
        let mut probes = 0;
        while probes < 3 {
            if let Some(Frame::Ping(_)) = conn.from_client.recv().await.flatten() {
                probes += 1;
            }
        }
        assert!(state.borrow_and_update().is_connected());
        assert!(!state.has_changed().unwrap());
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_denied_client_keeps_retrying_slowly() {
    timed(async {
        let mock = Mock::spawn(Behavior {
            deny: true,
            ..Default::default()
        })
        .await;
        let client = ClientBuilder::new(mock.url(), key(1))
            .backoff(Duration::from_millis(10), Duration::from_secs(60))
            .build();
        let mut state = client.state();
        let lost = wait_for(&mut state, |s| {
            matches!(s, ConnectionState::Disconnected { .. })
        })
        .await;
        let ConnectionState::Disconnected { last_error } = lost else {
            unreachable!()
        };
        assert!(
            matches!(
                &*last_error,
                ConnectionError::Connect(ConnectError::Handshake(HandshakeError::Denied { .. }))
            ),
            "{last_error:?}"
        );
        // A refusal waits the longest backoff (30..60 s here), not the 10 ms minimum.
        let retried = tokio::time::timeout(
            Duration::from_millis(500),
            wait_for(&mut state, |s| matches!(s, ConnectionState::Connecting)),
        )
        .await;
        assert!(retried.is_err(), "retried too soon");
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn datagrams_queued_while_disconnected_keep_the_newest() {
    timed(async {
        // Reserve a port with nothing listening yet.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url: RelayUrl = format!("http://{addr}").parse().unwrap();
        let client = fast_client(url, key(1)).send_queue_len(4).build();
        let mut state = client.state();
        wait_for(&mut state, |s| {
            matches!(s, ConnectionState::Disconnected { .. })
        })
        .await;
        let peer = key(2).public();
        // Sending never stalls while disconnected: the oldest are dropped.
        for i in 0..100u8 {
            client.send(peer, Datagrams::single(vec![i])).await.unwrap();
        }
        let mut mock = Mock::spawn_on(addr, Behavior::default(), false).await;
        let mut conn = mock.next_conn().await;
        let mut got = Vec::new();
        while got.last() != Some(&99) {
            match conn.next_frame().await {
                Some(Frame::SendDatagrams { datagrams, .. }) => got.push(datagrams.contents[0]),
                other => panic!("{other:?}"),
            }
        }
        assert!(got.len() <= 8, "at most two queues' worth: {got:?}");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_stalled_server_fills_the_queue() {
    timed(async {
        let mut mock = Mock::spawn(Behavior {
            no_read: true,
            ..Default::default()
        })
        .await;
        let client = fast_client(mock.url(), key(1)).send_queue_len(4).build();
        let mut state = client.state();
        let _conn = mock.next_conn().await;
        wait_for(&mut state, ConnectionState::is_connected).await;
        let peer = key(2).public();
        let batch = Datagrams::single(vec![0u8; MAX_PAYLOAD]);
        let mut full = false;
        // The socket buffers take some megabytes; then the write buffer, then the queue fill up.
        for _ in 0..2000 {
            match client.try_send(peer, batch.clone()) {
                Ok(()) => tokio::task::yield_now().await,
                Err(SendError::QueueFull) => {
                    full = true;
                    break;
                }
                Err(other) => panic!("{other:?}"),
            }
        }
        assert!(full, "the queue never filled");
        // `send` waits for room instead of failing.
        let waiting =
            tokio::time::timeout(Duration::from_millis(200), client.send(peer, batch.clone()))
                .await;
        assert!(waiting.is_err(), "send did not wait");
        // Closing gives up on the stuck flush after a bounded time.
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn datagrams_queued_while_disconnected_stay_within_the_send_buffer() {
    timed(async {
        const BATCH: usize = 1000;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url: RelayUrl = format!("http://{addr}").parse().unwrap();
        // Many batches allowed, few bytes: the byte bound is the one that holds.
        let client = fast_client(url, key(1)).send_buffer(3 * BATCH).build();
        let mut state = client.state();
        wait_for(&mut state, |s| {
            matches!(s, ConnectionState::Disconnected { .. })
        })
        .await;
        let peer = key(2).public();
        for i in 0..100u8 {
            let batch = Datagrams::single(vec![i; BATCH]);
            client.send(peer, batch).await.unwrap();
        }
        let mut mock = Mock::spawn_on(addr, Behavior::default(), false).await;
        let mut conn = mock.next_conn().await;
        let mut got = Vec::new();
        while got.last() != Some(&99) {
            match conn.next_frame().await {
                Some(Frame::SendDatagrams { datagrams, .. }) => {
                    assert_eq!(datagrams.contents.len(), BATCH);
                    got.push(datagrams.contents[0]);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(got.len() <= 6, "at most two buffers' worth: {got:?}");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_stalled_server_fills_the_send_buffer_in_bytes() {
    timed(async {
        let mut mock = Mock::spawn(Behavior {
            no_read: true,
            ..Default::default()
        })
        .await;
        // Room for four full batches and 100 bytes more; the batch count is no limit here.
        let client = fast_client(mock.url(), key(1))
            .send_buffer(4 * MAX_PAYLOAD + 100)
            .build();
        let mut state = client.state();
        let _conn = mock.next_conn().await;
        wait_for(&mut state, ConnectionState::is_connected).await;
        let peer = key(2).public();
        let batch = Datagrams::single(vec![0u8; MAX_PAYLOAD]);
        let mut full = false;
        for _ in 0..2000 {
            match client.try_send(peer, batch.clone()) {
                Ok(()) => tokio::task::yield_now().await,
                Err(SendError::QueueFull) => {
                    full = true;
                    break;
                }
                Err(other) => panic!("{other:?}"),
            }
        }
        assert!(full, "the queue never filled");
        // What is left of the buffer still takes a small batch, and then nothing more.
        client
            .try_send(peer, Datagrams::single(vec![1u8; 100]))
            .unwrap();
        assert!(matches!(
            client.try_send(peer, Datagrams::single(vec![1u8; 1])),
            Err(SendError::QueueFull)
        ));
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn close_flushes_and_then_everything_is_closed() {
    timed(async {
        let mut mock = Mock::spawn(Behavior::default()).await;
        let (sender, mut receiver) = fast_client(mock.url(), key(1)).build().split();
        let mut conn = mock.next_conn().await;
        wait_for(&mut sender.state(), ConnectionState::is_connected).await;
        let peer = key(2).public();
        for i in 0..20u8 {
            sender.send(peer, Datagrams::single(vec![i])).await.unwrap();
        }
        let other = sender.clone();
        sender.close().await;
        for i in 0..20u8 {
            match conn.next_frame().await {
                Some(Frame::SendDatagrams { datagrams, .. }) => {
                    assert_eq!(datagrams.contents[0], i);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(conn.next_frame().await, None);
        assert!(matches!(*other.state().borrow(), ConnectionState::Closed));
        assert!(matches!(
            other.send(peer, Datagrams::single(vec![1])).await,
            Err(SendError::Closed)
        ));
        assert!(matches!(
            other.try_send(peer, Datagrams::single(vec![1])),
            Err(SendError::Closed)
        ));
        assert_eq!(other.ping().await, Err(PingError::Closed));
        other.close().await; // closing twice is fine
        // The receiver drains and ends.
        while receiver.recv().await.is_some() {}
    })
    .await;
}

#[tokio::test]
async fn dropping_every_handle_closes_the_client() {
    timed(async {
        let mut mock = Mock::spawn(Behavior::default()).await;
        let client = fast_client(mock.url(), key(1)).build();
        let mut conn = mock.next_conn().await;
        drop(client);
        assert_eq!(conn.next_frame().await, None);
    })
    .await;
}

#[tokio::test]
async fn the_client_reconnects_to_a_restarted_server() {
    timed(async {
        let mut mock = Mock::spawn(Behavior::default()).await;
        let addr = mock.addr;
        let mut client = fast_client(mock.url(), key(1)).build();
        let mut state = client.state();
        let _conn = mock.next_conn().await;
        wait_for(&mut state, ConnectionState::is_connected).await;
        let peer = key(2).public();
        client
            .send(peer, Datagrams::single(&b"before"[..]))
            .await
            .unwrap();
        assert!(matches!(
            client.recv().await,
            Some(ReceivedEvent::Datagrams { .. })
        ));

        drop(mock);
        wait_for(&mut state, |s| !s.is_connected()).await;
        let mut mock = Mock::spawn_on(addr, Behavior::default(), false).await;
        let _conn = mock.next_conn().await;
        wait_for(&mut state, ConnectionState::is_connected).await;
        client
            .send(peer, Datagrams::single(&b"after"[..]))
            .await
            .unwrap();
        loop {
            match client.recv().await.unwrap() {
                ReceivedEvent::Datagrams { datagrams, .. } if datagrams.contents == "after" => {
                    break;
                }
                _ => {}
            }
        }
        client.close().await;
    })
    .await;
}

// ---- DNS ----

/// A tiny DNS server on UDP: `A` queries for `relay.test` get 127.0.0.1, other names NXDOMAIN, other types
/// an empty answer.
async fn spawn_dns() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let query = &buf[..len];
            // The question: labels up to the root, then type and class.
            let mut end = 12;
            let mut labels = Vec::new();
            while query[end] != 0 {
                let label_len = usize::from(query[end]);
                labels.push(
                    String::from_utf8_lossy(&query[end + 1..end + 1 + label_len]).to_lowercase(),
                );
                end += 1 + label_len;
            }
            let qtype = u16::from_be_bytes([query[end + 1], query[end + 2]]);
            let question = &query[12..end + 5];
            let known = labels == ["relay", "test"];
            let answer = known && qtype == 1;
            let mut reply = Vec::new();
            reply.extend_from_slice(&query[..2]); // id
            reply.extend_from_slice(&[0x81, if known { 0x80 } else { 0x83 }]); // response, RD, RA, rcode
            reply.extend_from_slice(&[0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
            reply.extend_from_slice(question);
            if answer {
                reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
            }
            socket.send_to(&reply, from).await.ok();
        }
    });
    (addr, task)
}

fn test_resolver(dns: SocketAddr) -> hickory_resolver::TokioResolver {
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
    let mut udp = ConnectionConfig::udp();
    udp.port = dns.port();
    let server = NameServerConfig::new(dns.ip(), true, vec![udp]);
    hickory_resolver::TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![server]),
        Default::default(),
    )
    .build()
    .unwrap()
}

#[tokio::test]
async fn host_names_resolve_through_the_configured_resolver() {
    timed(async {
        let (dns, dns_task) = spawn_dns().await;
        let mut mock = Mock::spawn(Behavior::default()).await;
        let url: RelayUrl = format!("http://relay.test:{}", mock.addr.port())
            .parse()
            .unwrap();
        let options = ConnectOptions::new(url, key(1)).dns_resolver(test_resolver(dns));
        let _connection = connect_once(&options).await.unwrap();
        let conn = mock.next_conn().await;
        assert_eq!(
            header(&conn.request, "host"),
            Some(format!("relay.test:{}", mock.addr.port()).as_str())
        );

        let unknown: RelayUrl = "http://nowhere.test:1".parse().unwrap();
        let options = ConnectOptions::new(unknown, key(1)).dns_resolver(test_resolver(dns));
        let error = connect_once(&options).await.unwrap_err();
        assert!(
            matches!(&error, ConnectError::Dns { host, .. } if host == "nowhere.test"),
            "{error:?}"
        );
        dns_task.abort();
    })
    .await;
}
