//! The relay client against the real relay server, in one process: datagrams both ways over plain HTTP
//! and TLS, ping RTT, PeerGone, reconnecting after a server restart, a refused bearer token, and a lagging
//! receiver held to its receive buffer.
#![cfg(all(feature = "client", feature = "server"))]
// Helpers outside `#[test]` functions are test code too.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use iroh_base::{NodeId, SecretKey};
use iroh_relay::{
    client::{
        Client, ClientBuilder, ConnectError, ConnectOptions, ConnectionError, ConnectionState,
        ReceivedEvent, connect_once,
    },
    protos::frame::{Datagrams, Ecn, StatusCode},
    server::{Server, ServerConfig, TlsConfig},
};
use tokio::sync::watch;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn timed<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out")
}

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 32])
}

fn builder(server: &Server, secret_key: SecretKey) -> ClientBuilder {
    ClientBuilder::new(server.relay_url(), secret_key)
        .extra_roots(server.certificates())
        .backoff(Duration::from_millis(20), Duration::from_millis(300))
        .connect_timeout(Duration::from_secs(5))
}

async fn connected(state: &mut watch::Receiver<ConnectionState>) {
    state.wait_for(ConnectionState::is_connected).await.unwrap();
}

/// The next datagram batch, skipping other events.
async fn next_datagrams(client: &mut Client) -> (NodeId, Datagrams) {
    loop {
        if let ReceivedEvent::Datagrams { src, datagrams } =
            client.recv().await.expect("client closed")
        {
            return (src, datagrams);
        }
    }
}

/// Sends from `a` to `b` until `b` receives (the first datagrams may race `b`'s login), then checks a batch.
async fn exchange(a: &mut Client, b: &mut Client, b_id: NodeId, a_id: NodeId) {
    let hello = Datagrams::single(&b"hello"[..]);
    loop {
        a.send(b_id, hello.clone()).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(200), next_datagrams(b)).await {
            Ok((src, datagrams)) => {
                assert_eq!(src, a_id);
                assert_eq!(datagrams, hello);
                break;
            }
            Err(_) => continue,
        }
    }
    // A GSO batch with ECN arrives intact.
    let batch = Datagrams {
        ecn: Ecn::Ect0,
        segment_size: std::num::NonZeroU16::new(1200),
        contents: bytes::Bytes::from((0..3000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>()),
    };
    a.send(b_id, batch.clone()).await.unwrap();
    let (src, got) = next_datagrams(b).await;
    assert_eq!(src, a_id);
    // Skip leftover hellos.
    let got = if got.contents == "hello" {
        loop {
            let (_, next) = next_datagrams(b).await;
            if next.contents != "hello" {
                break next;
            }
        }
    } else {
        got
    };
    assert_eq!(got, batch);
}

async fn two_clients_exchange_both_ways(config: ServerConfig) {
    let server = Server::spawn(config).await.unwrap();
    let mut a = builder(&server, key(1)).build();
    let mut b = builder(&server, key(2)).build();
    connected(&mut a.state()).await;
    connected(&mut b.state()).await;
    exchange(&mut a, &mut b, key(2).public(), key(1).public()).await;
    exchange(&mut b, &mut a, key(1).public(), key(2).public()).await;
    let rtt = a.ping().await.unwrap();
    assert!(rtt < Duration::from_secs(1), "{rtt:?}");
    a.close().await;
    b.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_exchange_datagrams_over_plain_http() {
    timed(two_clients_exchange_both_ways(ServerConfig::dev())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_exchange_datagrams_over_tls() {
    timed(async {
        let config = ServerConfig::dev().with_tls(TlsConfig::self_signed_localhost());
        two_clients_exchange_both_ways(config).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_trusting_the_certificate_fails() {
    timed(async {
        let config = ServerConfig::dev().with_tls(TlsConfig::self_signed_localhost());
        let server = Server::spawn(config).await.unwrap();
        let error = connect_once(&ConnectOptions::new(server.relay_url(), key(1)))
            .await
            .unwrap_err();
        assert!(matches!(error, ConnectError::Tls(_)), "{error:?}");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_measures_rtt() {
    timed(async {
        let server = Server::spawn(ServerConfig::dev()).await.unwrap();
        let client = builder(&server, key(1)).build();
        connected(&mut client.state()).await;
        for _ in 0..5 {
            let rtt = client.ping().await.unwrap();
            assert!(
                rtt > Duration::ZERO && rtt < Duration::from_secs(1),
                "{rtt:?}"
            );
        }
        client.close().await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departed_peer_is_reported_gone() {
    timed(async {
        let server = Server::spawn(ServerConfig::dev()).await.unwrap();
        let mut a = builder(&server, key(1)).build();
        let mut b = builder(&server, key(2)).build();
        connected(&mut a.state()).await;
        connected(&mut b.state()).await;
        exchange(&mut a, &mut b, key(2).public(), key(1).public()).await;
        b.close().await;
        loop {
            match a.recv().await.unwrap() {
                ReceivedEvent::PeerGone(node) => break assert_eq!(node, key(2).public()),
                _ => continue,
            }
        }
        a.close().await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reconnect_after_a_server_restart() {
    timed(async {
        let server = Server::spawn(ServerConfig::dev()).await.unwrap();
        let addr = server.relay_addr();
        let mut a = builder(&server, key(1)).build();
        let mut b = builder(&server, key(2)).build();
        let (mut a_state, mut b_state) = (a.state(), b.state());
        connected(&mut a_state).await;
        connected(&mut b_state).await;
        exchange(&mut a, &mut b, key(2).public(), key(1).public()).await;

        server.shutdown().await;
        // The server says why it goes away before closing.
        loop {
            match a.recv().await.unwrap() {
                ReceivedEvent::Status { code, .. } => {
                    break assert_eq!(code, StatusCode::Restarting);
                }
                _ => continue,
            }
        }
        a_state
            .wait_for(|s| matches!(s, ConnectionState::Disconnected { .. }))
            .await
            .unwrap();

        let server = Server::spawn(ServerConfig::dev().with_relay_bind(addr))
            .await
            .unwrap();
        connected(&mut a_state).await;
        connected(&mut b_state).await;
        exchange(&mut a, &mut b, key(2).public(), key(1).public()).await;
        exchange(&mut b, &mut a, key(1).public(), key(2).public()).await;
        a.close().await;
        b.close().await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_bearer_token_is_unauthorized() {
    timed(async {
        let config = ServerConfig::dev().with_bearer_token("open sesame");
        let server = Server::spawn(config).await.unwrap();

        let wrong = ConnectOptions::new(server.relay_url(), key(1)).bearer_token("open barley");
        let error = connect_once(&wrong).await.unwrap_err();
        assert!(
            matches!(error, ConnectError::Unauthorized { .. }),
            "{error:?}"
        );

        // The reconnecting client reports it through its state, and does not hammer the server.
        let client = builder(&server, key(1)).bearer_token("open barley").build();
        let mut state = client.state();
        let lost = state
            .wait_for(|s| matches!(s, ConnectionState::Disconnected { .. }))
            .await
            .unwrap()
            .clone();
        let ConnectionState::Disconnected { last_error } = lost else {
            unreachable!()
        };
        assert!(
            matches!(
                &*last_error,
                ConnectionError::Connect(ConnectError::Unauthorized { .. })
            ),
            "{last_error:?}"
        );
        client.close().await;

        let right = builder(&server, key(1)).bearer_token("open sesame").build();
        connected(&mut right.state()).await;
        right.close().await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_receiver_queues_at_most_its_buffer_and_stays_connected() {
    timed(async {
        const BATCH: usize = 10 * 1024;
        const BUFFER: usize = 64 * 1024;
        let server = Server::spawn(ServerConfig::dev()).await.unwrap();
        let (a_id, b_id) = (key(1).public(), key(2).public());
        // `a`'s send queue holds one batch: each `send` returns only once the batch before it is in the
        // driver's write buffer, ahead of anything queued after (such as a ping).
        let mut a = builder(&server, key(1))
            .send_buffer(BATCH)
            .send_queue_len(1)
            .build();
        let mut b = builder(&server, key(2)).recv_buffer(BUFFER).build();
        connected(&mut a.state()).await;
        connected(&mut b.state()).await;
        exchange(&mut a, &mut b, b_id, a_id).await;
        // Drain what the exchange left behind (extra hellos).
        while let Ok(event) = tokio::time::timeout(Duration::from_millis(100), b.recv()).await {
            event.unwrap();
        }

        // `b` reads nothing while 100 batches (1000 KiB) come in.
        for i in 0..100u8 {
            let batch = Datagrams::single(bytes::Bytes::from(vec![i; BATCH]));
            a.send(b_id, batch).await.unwrap();
        }
        // One more batch, to a node that is not there: once it is queued, the last batch for `b` is in
        // `a`'s write buffer, so `a`'s ping goes out after it. The server handles `a`'s frames in order,
        // so once it answers the ping it has routed every batch to `b`'s queue; once it answers `b`'s ping,
        // `b`'s driver has read all of them (the pong follows them on `b`'s stream).
        a.send(key(3).public(), Datagrams::single(vec![0u8; BATCH]))
            .await
            .unwrap();
        a.ping().await.unwrap();
        b.ping().await.unwrap();

        let mut got = Vec::new();
        while let Ok(event) = tokio::time::timeout(Duration::from_millis(200), b.recv()).await {
            if let ReceivedEvent::Datagrams { src, datagrams } = event.unwrap() {
                assert_eq!(src, a_id);
                got.push(datagrams.contents);
            }
        }
        // The first batches that fit the buffer, intact and in order; the rest dropped.
        assert_eq!(got.len(), BUFFER / BATCH, "batches queued while lagging");
        for (i, contents) in got.iter().enumerate() {
            assert_eq!(contents.len(), BATCH);
            assert!(
                contents.iter().all(|&byte| usize::from(byte) == i),
                "batch {i}"
            );
        }
        // The budget was given back: the connection carries datagrams as before.
        exchange(&mut a, &mut b, b_id, a_id).await;
        a.close().await;
        b.close().await;
        server.shutdown().await;
    })
    .await;
}
