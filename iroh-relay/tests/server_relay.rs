//! Relaying between raw test clients through a real server on loopback, plain and TLS: datagrams and GSO
//! batches, impersonation attempts, protocol garbage, unknown frames, oversize frames, PeerGone, duplicate
//! node ids, rate limits, slow receivers, timeouts.
#![cfg(feature = "server")]
// Shared test helpers live outside `#[test]` functions, where clippy's test allowance does not reach.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::{num::NonZeroU16, time::Duration};

use iroh_base::SecretKey;
use iroh_relay::{
    protos::{
        frame::{Datagrams, DenyReason, Ecn, Frame, MAX_FRAME_BODY, StatusCode},
        handshake::auth_message,
    },
    server::{Limits, RateLimit, ServerConfig},
};
use server_support::*;
use tokio::io::AsyncWriteExt;

async fn both_ways(mode: Mode) {
    let server = spawn(mode, ServerConfig::dev()).await;
    let transport = Transport::for_server(&server);
    let mut a = TestClient::connect_new(&transport).await;
    let mut b = TestClient::connect_new(&transport).await;

    a.send(b.node_id(), b"hello b").await;
    let (src, datagrams) = b.recv().await;
    assert_eq!(src, a.node_id());
    assert_eq!(&datagrams.contents[..], b"hello b");
    assert_eq!(datagrams.segment_size, None);
    assert_eq!(datagrams.ecn, Ecn::NotEct);

    // A GSO batch: three full segments and a short one, ECN marked.
    let contents: Vec<u8> = (0..3 * 1200 + 500).map(|i| (i % 251) as u8).collect();
    let batch = Datagrams {
        ecn: Ecn::Ect0,
        segment_size: NonZeroU16::new(1200),
        contents: contents.clone().into(),
    };
    b.send_datagrams(a.node_id(), batch.clone()).await;
    let (src, received) = a.recv().await;
    assert_eq!(src, b.node_id());
    assert_eq!(received, batch);
    assert_eq!(received.iter().count(), 4);

    // The largest batch the protocol allows, with CE.
    let big = Datagrams {
        ecn: Ecn::Ce,
        segment_size: NonZeroU16::new(1452),
        contents: vec![7u8; 64 * 1024].into(),
    };
    a.send_datagrams(b.node_id(), big.clone()).await;
    assert_eq!(b.recv().await, (a.node_id(), big));

    // Ping is answered with the same bytes.
    a.send_frame(&Frame::Ping(*b"12345678")).await;
    assert_eq!(a.next_frame().await, Some(Frame::Pong(*b"12345678")));
    server.shutdown().await;
}

#[tokio::test]
async fn two_clients_exchange_datagrams_plain() {
    timed(both_ways(Mode::Plain)).await;
}

#[tokio::test]
async fn two_clients_exchange_datagrams_tls() {
    timed(both_ways(Mode::Tls)).await;
}

async fn impersonation(mode: Mode) {
    let server = spawn(mode, ServerConfig::dev()).await;
    let transport = Transport::for_server(&server);
    let victim = SecretKey::generate();
    let attacker = SecretKey::generate();

    // 1. Claiming the victim's id with the attacker's signature.
    let (mut conn, status) = TestClient::upgraded(&transport, attacker.clone(), "").await;
    assert_eq!(status, 101);
    let Some(Frame::ServerChallenge { version, nonce }) = conn.next_frame().await else {
        panic!("no challenge");
    };
    conn.send_frame(&Frame::ClientAuth {
        version,
        node_id: victim.public(),
        signature: attacker.sign(&auth_message(&nonce)),
    })
    .await;
    assert!(matches!(
        conn.next_frame().await,
        Some(Frame::ServerDenied {
            reason: DenyReason::BadSignature,
            ..
        })
    ));
    assert!(conn.closed().await);

    // 2. Replaying a ClientAuth captured on one connection on another.
    let (mut first, _) = TestClient::upgraded(&transport, victim.clone(), "").await;
    let Some(Frame::ServerChallenge { nonce, .. }) = first.next_frame().await else {
        panic!("no challenge");
    };
    let captured = Frame::ClientAuth {
        version: 1,
        node_id: victim.public(),
        signature: victim.sign(&auth_message(&nonce)),
    };
    first.send_frame(&captured).await;
    assert_eq!(first.next_frame().await, Some(Frame::ServerAccepted));
    drop(first);

    let (mut replay, _) = TestClient::upgraded(&transport, attacker.clone(), "").await;
    let Some(Frame::ServerChallenge { .. }) = replay.next_frame().await else {
        panic!("no challenge");
    };
    replay.send_frame(&captured).await;
    assert!(matches!(
        replay.next_frame().await,
        Some(Frame::ServerDenied {
            reason: DenyReason::BadSignature,
            ..
        })
    ));
    assert!(replay.closed().await);

    // Nobody is logged in as the victim: a datagram to it is answered with PeerGone.
    let mut other = TestClient::connect_new(&transport).await;
    other.send(victim.public(), b"anyone?").await;
    assert_eq!(
        other.next_frame().await,
        Some(Frame::PeerGone(victim.public()))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn impersonation_fails_plain() {
    timed(impersonation(Mode::Plain)).await;
}

#[tokio::test]
async fn impersonation_fails_tls() {
    timed(impersonation(Mode::Tls)).await;
}

async fn exchange(a: &mut TestClient, b: &mut TestClient) {
    a.send(b.node_id(), b"ping").await;
    assert_eq!(b.recv().await.0, a.node_id());
    b.send(a.node_id(), b"pong").await;
    assert_eq!(a.recv().await.0, b.node_id());
}

async fn oversize(mode: Mode) {
    let server = spawn(mode, ServerConfig::dev()).await;
    let transport = Transport::for_server(&server);
    let mut a = TestClient::connect_new(&transport).await;
    let mut b = TestClient::connect_new(&transport).await;
    let mut c = TestClient::connect_new(&transport).await;
    let len = u32::try_from(MAX_FRAME_BODY + 1).unwrap();
    let mut header = vec![5u8];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0u8; 1024]);
    c.writer.get_mut().write_all(&header).await.unwrap();
    c.writer.get_mut().flush().await.unwrap();
    assert!(c.closed().await, "oversize frame must close the connection");
    exchange(&mut a, &mut b).await;
    server.shutdown().await;
}

#[tokio::test]
async fn oversize_frame_closes_only_that_connection_plain() {
    timed(oversize(Mode::Plain)).await;
}

#[tokio::test]
async fn oversize_frame_closes_only_that_connection_tls() {
    timed(oversize(Mode::Tls)).await;
}

async fn garbage(mode: Mode) {
    let server = spawn(mode, ServerConfig::dev()).await;
    let transport = Transport::for_server(&server);

    // Not TLS on the TLS port: the TLS handshake fails and only that connection is closed.
    if mode == Mode::Tls {
        let mut raw = tokio::net::TcpStream::connect(transport.addr)
            .await
            .unwrap();
        raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        let read = tokio::time::timeout(
            FRAME_TIMEOUT,
            tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut response),
        )
        .await
        .expect("closed in time");
        assert!(
            !String::from_utf8_lossy(&response).contains("200"),
            "{read:?}"
        );
    }

    // Not HTTP at all: hyper answers 400 or just closes.
    let mut stream = transport.connect().await;
    stream
        .write_all(b"\x00\x01\x02 this is not HTTP\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 400"),
        "{response}"
    );

    // HTTP, but the wrong protocol or no upgrade: 426 naming ours.
    for headers in [
        "Connection: Upgrade\r\nUpgrade: h2c\r\n",
        "Connection: keep-alive\r\n",
        "",
    ] {
        let (status, head, _) = http_request(&transport, "GET", "/relay", headers).await;
        assert_eq!(status, 426, "{headers:?}");
        assert_eq!(header(&head, "upgrade"), Some("iroh-relay-v1, websocket"));
    }
    // A WebSocket upgrade without the version: 426 naming version 13.
    let ws = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
    let (status, head, _) = http_request(&transport, "GET", "/relay", ws).await;
    assert_eq!(status, 426);
    assert_eq!(header(&head, "upgrade"), Some("websocket"));
    assert_eq!(header(&head, "sec-websocket-version"), Some("13"));
    let (status, _, _) = http_request(&transport, "POST", "/relay", "").await;
    assert_eq!(status, 405);

    // Garbage instead of ClientAuth.
    let (mut conn, _) = TestClient::upgraded(&transport, SecretKey::generate(), "").await;
    assert!(matches!(
        conn.next_frame().await,
        Some(Frame::ServerChallenge { .. })
    ));
    conn.writer.get_mut().write_all(&[0xff; 64]).await.unwrap();
    conn.writer.get_mut().flush().await.unwrap();
    assert!(conn.closed().await);

    // A well-formed but wrong frame instead of ClientAuth.
    let (mut conn, _) = TestClient::upgraded(&transport, SecretKey::generate(), "").await;
    assert!(matches!(
        conn.next_frame().await,
        Some(Frame::ServerChallenge { .. })
    ));
    conn.send_frame(&Frame::KeepAlive).await;
    assert!(matches!(
        conn.next_frame().await,
        Some(Frame::ServerDenied {
            reason: DenyReason::ProtocolViolation,
            ..
        })
    ));
    assert!(conn.closed().await);

    // Garbage after the login: a datagram frame whose body is too short to hold a node id.
    let mut a = TestClient::connect_new(&transport).await;
    let mut b = TestClient::connect_new(&transport).await;
    let mut c = TestClient::connect_new(&transport).await;
    c.writer
        .get_mut()
        .write_all(&[5, 0, 0, 0, 3, 1, 2, 3])
        .await
        .unwrap();
    c.writer.get_mut().flush().await.unwrap();
    assert!(c.closed().await);
    // A frame only servers send.
    let mut d = TestClient::connect_new(&transport).await;
    d.send_frame(&Frame::ServerAccepted).await;
    assert!(d.closed().await);

    exchange(&mut a, &mut b).await;
    assert_eq!(server.num_clients(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_gets_a_clean_close_plain() {
    timed(garbage(Mode::Plain)).await;
}

#[tokio::test]
async fn garbage_gets_a_clean_close_tls() {
    timed(garbage(Mode::Tls)).await;
}

#[tokio::test]
async fn unknown_frame_types_are_skipped() {
    timed(async {
        let server = spawn(Mode::Plain, ServerConfig::dev()).await;
        let transport = Transport::for_server(&server);
        let mut a = TestClient::connect_new(&transport).await;
        let mut b = TestClient::connect_new(&transport).await;
        for typ in [0u8, 13, 99, 255] {
            a.send_frame(&Frame::Unknown {
                typ,
                body: vec![typ; 100].into(),
            })
            .await;
        }
        a.send(b.node_id(), b"still here").await;
        let (src, datagrams) = b.recv().await;
        assert_eq!(src, a.node_id());
        assert_eq!(&datagrams.contents[..], b"still here");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn peer_gone_is_delivered() {
    timed(async {
        let server = spawn(Mode::Plain, ServerConfig::dev()).await;
        let transport = Transport::for_server(&server);
        let mut a = TestClient::connect_new(&transport).await;
        let b = TestClient::connect_new(&transport).await;
        let mut c = TestClient::connect_new(&transport).await;
        let b_id = b.node_id();
        a.send(b_id, b"hi").await;
        // Make sure the datagram went through before b leaves.
        a.send_frame(&Frame::Ping([1; 8])).await;
        assert_eq!(a.next_frame().await, Some(Frame::Pong([1; 8])));
        drop(b);
        assert_eq!(a.next_frame().await, Some(Frame::PeerGone(b_id)));
        // c never sent to b, so c hears nothing about it; a datagram to a node never seen gets PeerGone.
        let nobody = SecretKey::generate().public();
        c.send(nobody, b"hello?").await;
        assert_eq!(c.next_frame().await, Some(Frame::PeerGone(nobody)));
        // Only once while it stays away.
        c.send(nobody, b"hello??").await;
        c.send_frame(&Frame::Ping([2; 8])).await;
        assert_eq!(c.next_frame().await, Some(Frame::Pong([2; 8])));
        server.shutdown().await;
    })
    .await;
}

async fn duplicate(mode: Mode) {
    let server = spawn(mode, ServerConfig::dev()).await;
    let transport = Transport::for_server(&server);
    let mut a = TestClient::connect_new(&transport).await;
    let key = SecretKey::generate();
    let mut old = TestClient::connect(&transport, key.clone()).await;
    a.send(key.public(), b"to old").await;
    assert_eq!(&old.recv().await.1.contents[..], b"to old");

    let mut new = TestClient::connect(&transport, key.clone()).await;
    assert!(matches!(
        old.next_frame().await,
        Some(Frame::Status {
            code: StatusCode::SameNodeConnectedElsewhere,
            ..
        })
    ));
    assert!(old.closed().await);
    a.send(key.public(), b"to new").await;
    assert_eq!(&new.recv().await.1.contents[..], b"to new");
    // The replaced connection leaving is not the node leaving: a gets no PeerGone.
    a.send_frame(&Frame::Ping([3; 8])).await;
    assert_eq!(a.next_frame().await, Some(Frame::Pong([3; 8])));
    assert_eq!(server.num_clients(), 2);
    // The new connection inherited a as a sender.
    drop(new);
    assert_eq!(a.next_frame().await, Some(Frame::PeerGone(key.public())));
    server.shutdown().await;
}

#[tokio::test]
async fn duplicate_node_id_replaces_old_connection_plain() {
    timed(duplicate(Mode::Plain)).await;
}

#[tokio::test]
async fn duplicate_node_id_replaces_old_connection_tls() {
    timed(duplicate(Mode::Tls)).await;
}

async fn rate_limited(mode: Mode) {
    let limits = Limits::default().with_rate_limit(Some(RateLimit::new(100_000, 100_000)));
    let server = spawn(mode, ServerConfig::dev().with_limits(limits)).await;
    let transport = Transport::for_server(&server);
    let mut a = TestClient::connect_new(&transport).await;
    let mut b = TestClient::connect_new(&transport).await;
    let mut c = TestClient::connect_new(&transport).await;
    let mut d = TestClient::connect_new(&transport).await;

    // 50 datagrams of 10 KB at once: about 10 fit the burst.
    let started = std::time::Instant::now();
    for i in 0..50u8 {
        a.writer
            .queue(&Frame::SendDatagrams {
                dst: b.node_id(),
                datagrams: Datagrams::single(vec![i; 10_000]),
            })
            .await
            .unwrap();
    }
    a.writer.flush().await.unwrap();
    assert!(matches!(
        a.next_frame().await,
        Some(Frame::Status {
            code: StatusCode::RateLimited,
            ..
        })
    ));
    // Others are served meanwhile.
    exchange(&mut c, &mut d).await;
    // b gets what fit: the burst plus what refilled meanwhile, in order.
    a.send_frame(&Frame::Ping([9; 8])).await;
    assert_eq!(a.next_frame().await, Some(Frame::Pong([9; 8])));
    let elapsed = started.elapsed().as_secs_f64();
    let mut received = 0;
    loop {
        b.send_frame(&Frame::Ping([received; 8])).await;
        match b.next_frame().await {
            Some(Frame::RecvDatagrams { .. }) => received += 1,
            Some(Frame::Pong(_)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let allowed = (100_000.0 + 100_000.0 * elapsed) / 10_040.0 + 1.0;
    assert!(received >= 9, "only {received} datagrams passed");
    assert!(
        f64::from(received) <= allowed,
        "{received} passed, at most {allowed} allowed"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn rate_limited_client_is_told_and_dropped_plain() {
    timed(rate_limited(Mode::Plain)).await;
}

#[tokio::test]
async fn rate_limited_client_is_told_and_dropped_tls() {
    timed(rate_limited(Mode::Tls)).await;
}

/// Issue 16: only datagrams and pings were charged to the rate limit, so a flood of keepalives or of
/// frames of unknown types held a server core busy and was never told off.
#[tokio::test]
async fn keepalive_and_unknown_floods_are_rate_limited() {
    timed(async {
        let limits = Limits::default().with_rate_limit(Some(RateLimit::new(100_000, 100_000)));
        let server = spawn(Mode::Plain, ServerConfig::dev().with_limits(limits)).await;
        let transport = Transport::for_server(&server);
        for unknown in [false, true] {
            let mut a = TestClient::connect_new(&transport).await;
            // 300 KB of frames that carry nothing: three times the burst.
            for i in 0..60_000u32 {
                let frame = if unknown && i % 1000 == 0 {
                    Frame::Unknown {
                        typ: 200,
                        body: vec![0u8; 5_000].into(),
                    }
                } else {
                    Frame::KeepAlive
                };
                a.writer.queue(&frame).await.unwrap();
            }
            a.writer.flush().await.unwrap();
            assert!(
                matches!(
                    a.next_frame().await,
                    Some(Frame::Status {
                        code: StatusCode::RateLimited,
                        ..
                    })
                ),
                "unknown frames: {unknown}"
            );
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn slow_receiver_blocks_nobody() {
    timed(async {
        let mut limits = Limits::default();
        limits.send_queue_len = 16;
        limits.write_timeout = Duration::from_millis(500);
        let server = spawn(Mode::Plain, ServerConfig::dev().with_limits(limits)).await;
        let transport = Transport::for_server(&server);
        let mut a = TestClient::connect_new(&transport).await;
        let mut c = TestClient::connect_new(&transport).await;
        // b logs in, then never reads again.
        let b = TestClient::connect_new(&transport).await;
        let batch = Datagrams::single(vec![0u8; 60_000]);
        // Far more than b's socket buffers and queue hold.
        for _ in 0..400 {
            a.writer
                .queue(&Frame::SendDatagrams {
                    dst: b.node_id(),
                    datagrams: batch.clone(),
                })
                .await
                .unwrap();
        }
        a.writer.flush().await.unwrap();
        // a is still served, and c too.
        exchange(&mut a, &mut c).await;
        // b's connection is eventually closed by the write timeout.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while server.num_clients() != 2 {
            assert!(tokio::time::Instant::now() < deadline, "b never dropped");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(b);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn handshake_keepalive_and_idle_timeouts() {
    timed(async {
        let mut limits = Limits::default();
        limits.handshake_timeout = Duration::from_millis(300);
        limits.keepalive_interval = Duration::from_millis(200);
        limits.idle_timeout = Duration::from_millis(1500);
        let server = spawn(Mode::Plain, ServerConfig::dev().with_limits(limits)).await;
        let transport = Transport::for_server(&server);

        // Never answering the challenge.
        let (mut silent, _) = TestClient::upgraded(&transport, SecretKey::generate(), "").await;
        assert!(matches!(
            silent.next_frame().await,
            Some(Frame::ServerChallenge { .. })
        ));
        assert!(silent.closed().await);

        // Never sending the HTTP request at all.
        let mut stream = transport.connect().await;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut buf),
        )
        .await;
        assert!(read.is_ok(), "connection without a request must be closed");

        // A logged-in client is pinged; it stays while it answers, and is dropped when it stops.
        let mut client = TestClient::connect_new(&transport).await;
        let mut pings = 0;
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < until {
            let frame = tokio::time::timeout(FRAME_TIMEOUT, client.reader.read_frame())
                .await
                .unwrap()
                .unwrap();
            match frame {
                Some(Frame::Ping(data)) => {
                    pings += 1;
                    client.send_frame(&Frame::Pong(data)).await;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(pings >= 5, "{pings} pings");
        assert_eq!(server.num_clients(), 1);
        // `closed` reads without answering pings.
        assert!(client.closed().await);
        assert_eq!(server.num_clients(), 0);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_exchange_datagrams() {
    timed(async {
        const CLIENTS: usize = 1000;
        // Each client is two sockets on loopback (ours and the server's).
        let limit = open_files_limit();
        assert!(
            limit >= 2 * CLIENTS as u64 + 200,
            "this test needs about {} open files; the soft limit is {limit} (raise it with `ulimit -n`)",
            2 * CLIENTS + 200
        );
        let server = spawn(Mode::Plain, ServerConfig::dev()).await;
        let transport = Transport::for_server(&server);
        let keys: Vec<SecretKey> = (0..CLIENTS).map(|_| SecretKey::generate()).collect();
        let started = std::time::Instant::now();
        let all_connected = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, key) in keys.iter().enumerate() {
            let transport = transport.clone();
            let key = key.clone();
            // Pairs: i talks to i ^ 1.
            let peer = keys[i ^ 1].public();
            let all_connected = all_connected.clone();
            tasks.spawn(async move {
                let mut client = TestClient::connect(&transport, key).await;
                all_connected.wait().await;
                client.send(peer, &i.to_be_bytes()).await;
                let (src, datagrams) = client.recv().await;
                assert_eq!(src, peer);
                assert_eq!(&datagrams.contents[..], &(i ^ 1).to_be_bytes());
                client
            });
        }
        let mut clients = Vec::new();
        while let Some(client) = tasks.join_next().await {
            clients.push(client.expect("client task"));
        }
        assert_eq!(server.num_clients(), CLIENTS);
        println!("{CLIENTS} clients connected and exchanged in {:?}", started.elapsed());
        drop(clients);
        server.shutdown().await;
    })
    .await;
}

/// The soft limit on open files, from `/proc/self/limits`.
fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(u64::MAX)
}
