//! Our client against our server over loopback sockets, IPv4 and IPv6, and the server's behaviour on bad input
//! and shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use iroh_stun::server::Answered;
use iroh_stun::{
    Message, QueryError, Server, ServerConfig, TransactionConfig, TransactionId,
    query_reflexive_addr,
};
use tokio::net::UdpSocket;
use tokio::time::timeout;

/// Upper bound for each test; they take milliseconds when things work.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

fn fast_config() -> TransactionConfig {
    TransactionConfig {
        rto: Duration::from_millis(50),
        max_transmits: 3,
        last_wait_multiplier: 4,
    }
}

async fn query_loopback(ip: &str) {
    let server = Server::bind(format!("{ip}:0").parse().unwrap())
        .await
        .unwrap();
    let mut answered = server.subscribe();
    let socket = UdpSocket::bind(format!("{ip}:0")).await.unwrap();
    let reflexive =
        query_reflexive_addr(&socket, server.local_addr(), TransactionConfig::default())
            .await
            .unwrap();
    assert_eq!(reflexive.addr, socket.local_addr().unwrap());
    assert!(reflexive.rtt.is_some(), "loopback needs no retransmission");
    assert_eq!(
        answered.recv().await.unwrap(),
        Answered {
            peer: socket.local_addr().unwrap(),
            error_code: None
        }
    );
    let stats = server.stats();
    assert_eq!(stats.requests_answered, 1);
    assert_eq!(stats.errors_answered, 0);
    assert_eq!(stats.dropped_malformed, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn client_and_server_ipv4() {
    timeout(TEST_TIMEOUT, query_loopback("127.0.0.1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn client_and_server_ipv6() {
    timeout(TEST_TIMEOUT, query_loopback("[::1]"))
        .await
        .unwrap();
}

#[tokio::test]
async fn dual_stack_server_answers_ipv4_peer_in_ipv4_form() {
    timeout(TEST_TIMEOUT, async {
        // A socket bound to [::] receives IPv4 peers as IPv4-mapped IPv6 addresses (where the system allows
        // dual-stack sockets, as Linux does by default).
        let server = Server::bind("[::]:0".parse().unwrap()).await.unwrap();
        let port = server.local_addr().port();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let reflexive = query_reflexive_addr(
            &socket,
            SocketAddr::from(([127, 0, 0, 1], port)),
            TransactionConfig::default(),
        )
        .await
        .unwrap();
        assert_eq!(reflexive.addr, socket.local_addr().unwrap());
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn server_sends_configured_software_and_counts_errors() {
    timeout(TEST_TIMEOUT, async {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let config = ServerConfig::default()
            .with_software("iroh-stun test")
            .unwrap();
        let server = Server::spawn(socket, config).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 1500];

        // A Binding request carrying MESSAGE-INTEGRITY: 420 with UNKNOWN-ATTRIBUTES.
        let mut request = Message::binding_request(TransactionId::random());
        request
            .push_attribute(iroh_stun::Attribute::Other {
                typ: iroh_stun::attr::MESSAGE_INTEGRITY,
                value: vec![0; 20],
            })
            .unwrap();
        client
            .send_to(&request.to_bytes(), server.local_addr())
            .await
            .unwrap();
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(from, server.local_addr());
        let response = Message::parse(&buf[..n]).unwrap();
        assert_eq!(response.transaction_id(), request.transaction_id());
        assert_eq!(response.error_code(), Some((420, "Unknown Attribute")));
        assert_eq!(
            response.unknown_attributes(),
            Some(&[iroh_stun::attr::MESSAGE_INTEGRITY][..])
        );
        assert_eq!(response.software(), Some("iroh-stun test"));
        assert!(response.fingerprint());

        // A plain request: success with SOFTWARE.
        let request = Message::binding_request(TransactionId::random());
        client
            .send_to(&request.to_bytes(), server.local_addr())
            .await
            .unwrap();
        let (n, _) = client.recv_from(&mut buf).await.unwrap();
        let response = Message::parse(&buf[..n]).unwrap();
        assert_eq!(
            response.xor_mapped_address(),
            Some(client.local_addr().unwrap())
        );
        assert_eq!(response.software(), Some("iroh-stun test"));

        let stats = server.stats();
        assert_eq!(stats.requests_answered, 1);
        assert_eq!(stats.errors_answered, 1);
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn server_survives_garbage_and_counts_it() {
    timeout(TEST_TIMEOUT, async {
        let server = Server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let txid = TransactionId::random();
        let mut bad_fingerprint = Message::binding_request(txid)
            .with_fingerprint(true)
            .to_bytes();
        let last = bad_fingerprint.len() - 1;
        bad_fingerprint[last] ^= 1;
        let garbage: [&[u8]; 5] = [
            b"",
            b"definitely not stun, but long enough to look at",
            &[0u8; 20],
            &bad_fingerprint,
            &[0xFF; 1400],
        ];
        for packet in garbage {
            client.send_to(packet, server.local_addr()).await.unwrap();
        }
        // Well-formed but unanswered: an indication and a success response.
        let indication = Message::new(
            iroh_stun::Class::Indication,
            iroh_stun::Method::BINDING,
            txid,
        );
        let response = Message::binding_success(txid, "1.2.3.4:5".parse().unwrap());
        for msg in [indication, response] {
            client
                .send_to(&msg.to_bytes(), server.local_addr())
                .await
                .unwrap();
        }
        // The server still answers afterwards (datagrams on loopback arrive in order).
        let reflexive = query_reflexive_addr(&client, server.local_addr(), fast_config())
            .await
            .unwrap();
        assert_eq!(reflexive.addr, client.local_addr().unwrap());
        let stats = server.stats();
        assert_eq!(stats.dropped_malformed, 5);
        assert_eq!(stats.ignored, 2);
        assert_eq!(stats.requests_answered, 1);
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn shutdown_closes_the_socket() {
    timeout(TEST_TIMEOUT, async {
        let server = Server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr();
        server.shutdown().await;
        // The port is free again: the task ended and dropped the socket.
        let rebound = UdpSocket::bind(addr)
            .await
            .expect("socket closed by shutdown");
        drop(rebound);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    timeout(TEST_TIMEOUT, async {
        let server = Server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr();
        drop(server);
        // The task notices on its next poll; give it a moment, then the port must be free.
        let mut attempts = 0;
        loop {
            match UdpSocket::bind(addr).await {
                Ok(_) => break,
                Err(e) if attempts < 100 => {
                    attempts += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("port still bound after dropping the server: {e}"),
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn query_times_out_without_a_server() {
    timeout(TEST_TIMEOUT, async {
        // A bound socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let started = tokio::time::Instant::now();
        let err = query_reflexive_addr(&client, silent.local_addr().unwrap(), fast_config())
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::TimedOut), "{err:?}");
        // 50 + 100 ms of retransmissions, then 4 x 50 ms.
        assert!(started.elapsed() >= Duration::from_millis(350));
        // All three requests arrived.
        let mut buf = [0u8; 100];
        for _ in 0..3 {
            let (n, _) = silent.recv_from(&mut buf).await.unwrap();
            assert!(iroh_stun::is_stun(&buf[..n]));
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn query_ignores_unrelated_datagrams_and_reports_error_responses() {
    timeout(TEST_TIMEOUT, async {
        // A fake server: first some noise, then an error response to the real request.
        let fake = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let fake_addr = fake.local_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let intruder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let fake_task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let (n, from) = fake.recv_from(&mut buf).await.unwrap();
            let request = Message::parse(&buf[..n]).unwrap();
            let txid = request.transaction_id();
            // From the wrong address, with the right id: ignored.
            let success = Message::binding_success(txid, "9.9.9.9:9".parse().unwrap()).to_bytes();
            intruder.send_to(&success, from).await.unwrap();
            // From the server, with another id, and non-STUN: ignored.
            let other =
                Message::binding_success(TransactionId::random(), "9.9.9.9:9".parse().unwrap());
            fake.send_to(&other.to_bytes(), from).await.unwrap();
            fake.send_to(b"hello there, not a stun message", from)
                .await
                .unwrap();
            let error = Message::binding_error(txid, 500, "Server Error").unwrap();
            fake.send_to(&error.to_bytes(), from).await.unwrap();
        });
        let err = query_reflexive_addr(&client, fake_addr, TransactionConfig::default())
            .await
            .unwrap_err();
        match err {
            QueryError::ErrorResponse { code, reason } => {
                assert_eq!(code, 500);
                assert_eq!(reason, "Server Error");
            }
            other => panic!("expected an error response, got {other:?}"),
        }
        fake_task.await.unwrap();
    })
    .await
    .unwrap();
}

/// Issue 16: a flood of Binding requests from one source was answered in full (each answer two to three
/// times the request: a reflector). Now a source gets its burst and then its rate, and others are served.
#[tokio::test]
async fn flooding_source_is_rate_limited_and_others_are_served() {
    timeout(TEST_TIMEOUT, async {
        let config =
            ServerConfig::default().with_rate_limit(Some(iroh_stun::server::RateLimit::new(5, 10)));
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = Server::spawn(socket, config).unwrap();
        let flooder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let request = Message::binding_request(TransactionId::random()).to_bytes();
        for _ in 0..200 {
            flooder
                .send_to(&request, server.local_addr())
                .await
                .unwrap();
        }
        // Another source (127.0.0.2 is loopback too) is answered while the first is refused.
        let other = UdpSocket::bind("127.0.0.2:0").await.unwrap();
        let reflexive = query_reflexive_addr(&other, server.local_addr(), fast_config())
            .await
            .unwrap();
        assert_eq!(reflexive.addr, other.local_addr().unwrap());
        // Every flood datagram has been seen once the other source's answer is in (one task, in order).
        let stats = server.stats();
        assert!(
            (10..=12).contains(&stats.requests_answered),
            "answered {} of the flood's 200, burst 10 at 5/s: {stats:?}",
            stats.requests_answered - 1
        );
        assert_eq!(
            stats.requests_answered + stats.refused_rate_limited,
            201,
            "{stats:?}"
        );
        let mut answers = 0;
        let mut buf = [0u8; 1500];
        while let Ok(Ok(_)) = timeout(Duration::from_millis(100), flooder.recv_from(&mut buf)).await
        {
            answers += 1;
        }
        assert!(
            (10..=11).contains(&answers),
            "{answers} answers reached the flooder"
        );
        server.shutdown().await;
    })
    .await
    .unwrap();
}
