//! The HTTP routes beside `/relay`, the metrics endpoint, STUN, and graceful shutdown, against a real server.
#![cfg(feature = "server")]
// Shared test helpers live outside `#[test]` functions, where clippy's test allowance does not reach.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::net::SocketAddr;

use iroh_relay::{
    protos::frame::{Frame, StatusCode},
    server::{MAX_CHALLENGE_LEN, ServerConfig},
};
use server_support::*;

async fn routes(mode: Mode) {
    let server = spawn(mode, ServerConfig::dev()).await;
    let transport = Transport::for_server(&server);
    let expected_scheme = match mode {
        Mode::Plain => "http",
        Mode::Tls => "https",
    };
    assert_eq!(server.relay_url().scheme(), expected_scheme);
    assert_eq!(server.relay_url().port(), Some(server.relay_addr().port()));

    let (status, head, body) = http_request(&transport, "GET", "/ping", "").await;
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert_eq!(header(&head, "content-length"), Some("0"));

    let (status, _, body) = http_request(&transport, "GET", "/healthz", "").await;
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));

    let (status, head, body) = http_request(&transport, "GET", "/generate_204", "").await;
    assert_eq!(status, 204);
    assert!(body.is_empty());
    assert_eq!(header(&head, "x-iroh-response"), None);

    let challenge = "abc-XYZ_09.tail";
    let (status, head, _) = http_request(
        &transport,
        "GET",
        "/generate_204",
        &format!("X-Iroh-Challenge: {challenge}\r\n"),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(header(&head, "x-iroh-response"), Some(challenge));

    let longest = "a".repeat(MAX_CHALLENGE_LEN);
    let (status, head, _) = http_request(
        &transport,
        "GET",
        "/generate_204",
        &format!("X-Iroh-Challenge: {longest}\r\n"),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(header(&head, "x-iroh-response"), Some(longest.as_str()));

    for bad in [
        "a".repeat(MAX_CHALLENGE_LEN + 1),
        "has space".into(),
        "slash/y".into(),
        "semi;colon".into(),
    ] {
        let (status, head, _) = http_request(
            &transport,
            "GET",
            "/generate_204",
            &format!("X-Iroh-Challenge: {bad}\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{bad:?}");
        assert_eq!(header(&head, "x-iroh-response"), None);
    }

    let (status, _, _) = http_request(&transport, "GET", "/nothing-here", "").await;
    assert_eq!(status, 404);
    let (status, head, _) =
        http_request(&transport, "POST", "/ping", "Content-Length: 0\r\n").await;
    assert_eq!(status, 405);
    assert_eq!(header(&head, "allow"), Some("GET, HEAD"));
    // Issue 16: HEAD /relay got 405 with `Allow: GET, HEAD`; only GET upgrades.
    for method in ["HEAD", "POST"] {
        let (status, head, _) =
            http_request(&transport, method, "/relay", "Content-Length: 0\r\n").await;
        assert_eq!(status, 405, "{method}");
        assert_eq!(header(&head, "allow"), Some("GET"), "{method}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn routes_plain() {
    timed(routes(Mode::Plain)).await;
}

#[tokio::test]
async fn routes_tls() {
    timed(routes(Mode::Tls)).await;
}

/// The value of an unlabelled metric line `name value`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test]
async fn metrics_after_traffic() {
    timed(async {
        let config =
            ServerConfig::dev().with_metrics_bind(Some(SocketAddr::from(([127, 0, 0, 1], 0))));
        let server = spawn(Mode::Plain, config).await;
        let metrics_addr = server.metrics_addr().expect("metrics listener");
        let transport = Transport::for_server(&server);
        let mut a = TestClient::connect_new(&transport).await;
        let mut b = TestClient::connect_new(&transport).await;
        for _ in 0..3 {
            a.send(b.node_id(), &[1u8; 100]).await;
            b.recv().await;
        }
        // A GSO batch of 4 datagrams.
        a.send_datagrams(
            b.node_id(),
            iroh_relay::protos::frame::Datagrams {
                ecn: iroh_relay::protos::frame::Ecn::NotEct,
                segment_size: std::num::NonZeroU16::new(100),
                contents: vec![2u8; 400].into(),
            },
        )
        .await;
        b.recv().await;
        let nobody = iroh_base::SecretKey::generate().public();
        a.send(nobody, b"lost").await;
        assert_eq!(a.next_frame().await, Some(Frame::PeerGone(nobody)));
        let _ = http_request(&transport, "GET", "/relay", "").await; // 426
        let _ = http_request(&transport, "GET", "/ping", "").await;

        let (status, text) = http_get_plain(metrics_addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            header(&text, "content-type")
                .is_some_and(|v| v.starts_with("application/openmetrics-text")),
            "{text}"
        );
        assert_eq!(metric(&text, "iroh_relay_clients"), 2);
        assert_eq!(metric(&text, "iroh_relay_relayed_datagrams_total"), 7);
        assert_eq!(metric(&text, "iroh_relay_relayed_bytes_total"), 700);
        assert_eq!(metric(&text, "iroh_relay_logins_total"), 2);
        assert_eq!(metric(&text, "iroh_relay_upgrades_total"), 2);
        assert_eq!(metric(&text, "iroh_relay_accepts_total"), 4);
        assert_eq!(metric(&text, "iroh_relay_peer_gone_total"), 1);
        assert_eq!(
            metric(
                &text,
                "iroh_relay_dropped_datagrams_total{reason=\"unknown_destination\"}"
            ),
            1
        );
        assert_eq!(
            metric(
                &text,
                "iroh_relay_dropped_datagrams_total{reason=\"queue_full\"}"
            ),
            0
        );
        assert_eq!(
            metric(
                &text,
                "iroh_relay_handshake_failures_total{reason=\"bad_upgrade\"}"
            ),
            1
        );
        assert_eq!(
            metric(&text, "iroh_relay_http_requests_total{route=\"ping\"}"),
            1
        );
        assert!(text.contains("iroh_relay_rate_limited_total 0"), "{text}");

        let (status, _) = http_get_plain(metrics_addr, "/other").await;
        assert_eq!(status, 404);
        drop(b);
        // The departure is counted.
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            let (_, text) = http_get_plain(metrics_addr, "/metrics").await;
            if metric(&text, "iroh_relay_clients") == 1 {
                assert!(
                    text.contains("iroh_relay_disconnects_total{reason=\"client_closed\"} 1"),
                    "{text}"
                );
                break;
            }
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn stun_answers() {
    timed(async {
        let server = spawn(Mode::Plain, ServerConfig::dev()).await;
        let stun_addr = server.stun_addr().expect("STUN runs in dev mode");
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let reflexive = iroh_stun::query_reflexive_addr(
            &socket,
            stun_addr,
            iroh_stun::TransactionConfig::default(),
        )
        .await
        .unwrap();
        assert_eq!(reflexive.addr, socket.local_addr().unwrap());
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn second_stun_socket_and_the_first_name_each_other() {
    timed(async {
        let config =
            ServerConfig::dev().with_stun_alt_bind(Some(SocketAddr::from(([127, 0, 0, 1], 0))));
        let server = spawn(Mode::Plain, config).await;
        let main = server.stun_addr().expect("STUN runs");
        let alt = server.stun_alt_addr().expect("the second STUN socket runs");
        assert_ne!(main, alt);
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for (asked, named) in [(main, alt), (alt, main)] {
            let reflexive = iroh_stun::query_reflexive_addr(
                &socket,
                asked,
                iroh_stun::TransactionConfig::default(),
            )
            .await
            .unwrap();
            assert_eq!(reflexive.addr, socket.local_addr().unwrap());
            assert_eq!(reflexive.other, Some(named), "asked {asked}");
        }
        server.shutdown().await;
        // Without the second socket, answers name none.
        let server = spawn(Mode::Plain, ServerConfig::dev()).await;
        let plain = iroh_stun::query_reflexive_addr(
            &socket,
            server.stun_addr().unwrap(),
            iroh_stun::TransactionConfig::default(),
        )
        .await
        .unwrap();
        assert_eq!(plain.other, None);
        assert_eq!(server.stun_alt_addr(), None);
        server.shutdown().await;
    })
    .await;
}

async fn graceful_shutdown(mode: Mode) {
    let server = spawn(mode, ServerConfig::dev()).await;
    let transport = Transport::for_server(&server);
    let mut a = TestClient::connect_new(&transport).await;
    let mut b = TestClient::connect_new(&transport).await;
    let addr = server.relay_addr();
    let shutdown = tokio::spawn(server.shutdown());
    for client in [&mut a, &mut b] {
        assert!(matches!(
            client.next_frame().await,
            Some(Frame::Status {
                code: StatusCode::Restarting,
                ..
            })
        ));
        // Then an orderly end of stream.
        assert_eq!(client.reader.read_frame().await.unwrap(), None);
    }
    drop((a, b));
    shutdown.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}

#[tokio::test]
async fn graceful_shutdown_sends_restarting_plain() {
    timed(graceful_shutdown(Mode::Plain)).await;
}

#[tokio::test]
async fn graceful_shutdown_sends_restarting_tls() {
    timed(graceful_shutdown(Mode::Tls)).await;
}

#[tokio::test]
async fn shutdown_is_bounded_with_stuck_connections() {
    timed(async {
        let config =
            ServerConfig::dev().with_shutdown_timeout(std::time::Duration::from_millis(500));
        let server = spawn(Mode::Plain, config).await;
        let transport = Transport::for_server(&server);
        // One client that never reads, one connection stuck before its request, one in the login.
        let _client = TestClient::connect_new(&transport).await;
        let _idle = transport.connect().await;
        let (_login, _) =
            TestClient::upgraded(&transport, iroh_base::SecretKey::generate(), "").await;
        let started = std::time::Instant::now();
        server.shutdown().await;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    })
    .await;
}
