//! What a connection that has not logged in may cost the server (issue 16): a bounded request head, a cap on
//! unfinished handshakes in total and per source, and no full-size frame buffer before the login.
#![cfg(feature = "server")]
// Shared test helpers live outside `#[test]` functions, where clippy's test allowance does not reach.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::{net::SocketAddr, time::Duration};

use iroh_relay::{
    protos::frame::{Frame, HEADER_LEN, MAX_FRAME_BODY},
    server::{Limits, MAX_REQUEST_HEAD, ServerConfig},
};
use server_support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// How long a closed connection may take to show as closed.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Whether the server closes `stream` (EOF or reset) within [`CLOSE_WAIT`], discarding what it sends.
async fn closed_soon<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(CLOSE_WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    read.await.is_ok()
}

/// A TCP connection from `source` (any loopback address) to `to`.
async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Issue 16: hyper's default buffer let an unfinished request head grow to about 400 KB per connection
/// (1,000 connections took 390 MB). A head longer than [`MAX_REQUEST_HEAD`] now gets `431` and a close.
async fn oversized_request_head(mode: Mode) {
    let server = spawn(mode, ServerConfig::dev()).await;
    let transport = Transport::for_server(&server);
    let mut stream = transport.connect().await;
    // More than the limit, never finished: one write, well inside the socket buffers.
    let mut head = String::from("GET /relay HTTP/1.1\r\nHost: localhost\r\n");
    let mut i = 0;
    while head.len() < MAX_REQUEST_HEAD + 4096 {
        head.push_str(&format!("X-Pad-{i}: {}\r\n", "a".repeat(1000)));
        i += 1;
    }
    stream.write_all(head.as_bytes()).await.unwrap();
    let status = Some(status_of(&read_head(&mut stream).await));
    assert_eq!(status, Some(431), "an oversized head is refused");
    assert!(closed_soon(&mut stream).await, "and the connection closed");
    // A normal request still works.
    let (status, _, _) = http_request(&transport, "GET", "/ping", "").await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_request_head_gets_431_plain() {
    timed(oversized_request_head(Mode::Plain)).await;
}

#[tokio::test]
async fn oversized_request_head_gets_431_tls() {
    timed(oversized_request_head(Mode::Tls)).await;
}

/// Issue 16: nothing capped connections that never finish their handshake, so one host could hold every
/// file descriptor. Over the per-source cap a connection is closed at once; other sources are served; the
/// slots come back when connections end.
#[tokio::test]
async fn unfinished_handshakes_are_capped_per_source_and_in_total() {
    timed(async {
        let mut limits = Limits::default();
        limits.max_pending = 5;
        limits.max_pending_per_source = 3;
        let server = spawn(
            Mode::Plain,
            ServerConfig::dev()
                .with_limits(limits)
                .with_metrics_bind(Some("127.0.0.1:0".parse().unwrap())),
        )
        .await;
        let addr = server.relay_addr();
        let mut slow = Vec::new();
        for _ in 0..3 {
            let mut stream = connect_from([127, 0, 0, 2], addr).await;
            stream.write_all(b"GET /relay HTTP/1.1\r\n").await.unwrap();
            slow.push(stream);
        }
        wait_until(|| server.num_pending() == 3).await;
        let mut refused = connect_from([127, 0, 0, 2], addr).await;
        assert!(
            closed_soon(&mut refused).await,
            "a fourth from one source is closed"
        );
        // Another source logs in and gets plain HTTP answers.
        let transport = Transport::for_server(&server);
        let client = TestClient::connect_new(&transport).await;
        let (status, _, _) = http_request(&transport, "GET", "/ping", "").await;
        assert_eq!(status, 200);
        // Two more from a third source fill the total of 5; then everyone is refused.
        let mut third = Vec::new();
        for _ in 0..2 {
            let mut stream = connect_from([127, 0, 0, 3], addr).await;
            stream.write_all(b"GET /ping HTTP/1.1\r\n").await.unwrap();
            third.push(stream);
        }
        wait_until(|| server.num_pending() == 5).await;
        let mut refused = connect_from([127, 0, 0, 4], addr).await;
        assert!(closed_soon(&mut refused).await, "over the total cap");
        // Slots come back when the connections go.
        drop(slow);
        drop(third);
        wait_until(|| server.num_pending() == 0).await;
        let (status, _, _) = http_request(&transport, "GET", "/ping", "").await;
        assert_eq!(status, 200);
        let metrics = Transport::with_roots(server.metrics_addr().unwrap(), Vec::new());
        let (_, _, body) = http_request(&metrics, "GET", "/metrics", "").await;
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.contains("iroh_relay_handshakes_refused_total{cap=\"per_source\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("iroh_relay_handshakes_refused_total{cap=\"total\"} 1"),
            "{text}"
        );
        assert!(text.contains("iroh_relay_pending_handshakes 0"), "{text}");
        drop(client);
        server.shutdown().await;
    })
    .await;
}

/// Issue 16: a connection that had upgraded but not logged in could announce a maximum-size frame, and the
/// server reserved 64 KiB for it (5,000 such connections took 375 MB). Before the login a frame longer than
/// the login frame is refused at its header.
#[tokio::test]
async fn large_frame_before_login_is_refused_at_its_header() {
    timed(async {
        let mut limits = Limits::default();
        limits.handshake_timeout = Duration::from_secs(60);
        let server = spawn(Mode::Plain, ServerConfig::dev().with_limits(limits)).await;
        let transport = Transport::for_server(&server);
        let mut stream = transport.connect().await;
        assert_eq!(upgrade(&mut stream, "").await, 101);
        // The header of a full-size SendDatagrams frame, and a little of its body.
        let mut header = vec![0u8; HEADER_LEN];
        header[0] = Frame::SendDatagrams {
            dst: iroh_base::SecretKey::generate().public(),
            datagrams: iroh_relay::protos::frame::Datagrams::single(vec![0; 1]),
        }
        .typ();
        header[1..5].copy_from_slice(&u32::try_from(MAX_FRAME_BODY).unwrap().to_be_bytes());
        stream.write_all(&header).await.unwrap();
        stream.write_all(&[0; 100]).await.unwrap();
        assert!(
            closed_soon(&mut stream).await,
            "closed at once, not after the 60 s handshake timeout"
        );
        wait_until(|| server.num_pending() == 0).await;
        server.shutdown().await;
    })
    .await;
}

/// Polls `done` every 10 ms for up to 10 s.
async fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 10 s");
}
