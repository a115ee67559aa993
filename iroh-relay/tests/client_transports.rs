//! The WebSocket transport beside the relay protocol's own upgrade: clients of either kind exchange
//! datagrams over plain HTTP and TLS, a client falls back to the other transport when a middlebox refuses its
//! upgrade (and keeps the one that worked), and the server's answers to malformed WebSocket upgrades.
#![cfg(all(feature = "client", feature = "server"))]
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // Test patterns cut bytes on purpose.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use iroh_base::{NodeId, SecretKey};
use iroh_relay::{
    client::{Client, ClientBuilder, ConnectionState, ReceivedEvent, Transport},
    protos::frame::Datagrams,
    server::{Server, ServerConfig, TlsConfig},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const TEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn timed<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out")
}

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 32])
}

fn client(server: &Server, url: iroh_base::RelayUrl, n: u8, transport: Transport) -> Client {
    ClientBuilder::new(url, key(n))
        .extra_roots(server.certificates())
        .transport(transport)
        .backoff(Duration::from_millis(20), Duration::from_millis(300))
        .connect_timeout(Duration::from_secs(5))
        .build()
}

async fn connected(client: &Client) {
    client
        .state()
        .wait_for(ConnectionState::is_connected)
        .await
        .unwrap();
}

/// Sends numbered datagrams from `a` to `b` until one arrives, then 200 more of up to 60 KB that must all
/// arrive intact and in order.
async fn exchange(a: &mut Client, b: &mut Client, b_id: NodeId) {
    loop {
        a.send(b_id, Datagrams::single(&b"hello"[..]))
            .await
            .unwrap();
        if let Ok(Some(ReceivedEvent::Datagrams { .. })) =
            tokio::time::timeout(Duration::from_millis(200), b.recv()).await
        {
            break;
        }
    }
    for i in 0..200u32 {
        let len = 1 + (i as usize * 307) % 60_000;
        let payload: Vec<u8> = (0..len).map(|j| (j as u32 ^ i) as u8).collect();
        a.send(b_id, Datagrams::single(payload)).await.unwrap();
    }
    let mut i = 0u32;
    while i < 200 {
        let Some(ReceivedEvent::Datagrams { datagrams, .. }) = b.recv().await else {
            continue;
        };
        if datagrams.contents == "hello" {
            continue;
        }
        let len = 1 + (i as usize * 307) % 60_000;
        let expected: Vec<u8> = (0..len).map(|j| (j as u32 ^ i) as u8).collect();
        assert_eq!(datagrams.contents, expected, "datagram {i}");
        i += 1;
    }
}

async fn both_ways(config: ServerConfig, ta: Transport, tb: Transport) {
    let server = Server::spawn(config).await.unwrap();
    let mut a = client(&server, server.relay_url(), 1, ta);
    let mut b = client(&server, server.relay_url(), 2, tb);
    connected(&a).await;
    connected(&b).await;
    exchange(&mut a, &mut b, key(2).public()).await;
    exchange(&mut b, &mut a, key(1).public()).await;
    assert!(a.ping().await.unwrap() < Duration::from_secs(1));
    a.close().await;
    b.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_over_plain_http() {
    timed(both_ways(
        ServerConfig::dev(),
        Transport::WebSocket,
        Transport::WebSocket,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_over_tls() {
    let config = ServerConfig::dev().with_tls(TlsConfig::self_signed_localhost());
    timed(both_ways(
        config,
        Transport::WebSocket,
        Transport::WebSocket,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_relay_upgrade_clients_talk_to_each_other() {
    let config = ServerConfig::dev().with_tls(TlsConfig::self_signed_localhost());
    timed(both_ways(config, Transport::Relay, Transport::WebSocket)).await;
}

/// A middlebox in front of the relay that answers `refuse_status` to upgrades naming `refused` (and passes
/// everything else through), counting the refusals.
async fn middlebox(relay: SocketAddr, refused: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refusals = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&refusals);
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    match inbound.read_u8().await {
                        Ok(byte) => head.push(byte),
                        Err(_) => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if text.contains(&format!("upgrade: {refused}")) {
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = inbound
                        .write_all(b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let mut outbound = TcpStream::connect(relay).await.unwrap();
                outbound.write_all(&head).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (addr, refusals)
}

async fn falls_back(configured: Transport, refused: &'static str) {
    let server = Server::spawn(ServerConfig::dev()).await.unwrap();
    let (front, refusals) = middlebox(server.relay_addr(), refused).await;
    let url: iroh_base::RelayUrl = format!("http://{front}").parse().unwrap();
    let mut a = client(&server, url.clone(), 1, configured);
    let mut b = client(&server, url, 2, configured);
    connected(&a).await;
    connected(&b).await;
    exchange(&mut a, &mut b, key(2).public()).await;
    assert_eq!(refusals.load(Ordering::SeqCst), 2, "one refusal per client");
    // A reconnect (after a relay restart) goes straight to the transport that worked: no more refusals.
    let addr = server.relay_addr();
    server.shutdown().await;
    let server = Server::spawn(ServerConfig::dev().with_relay_bind(addr))
        .await
        .unwrap();
    exchange(&mut b, &mut a, key(1).public()).await;
    assert_eq!(
        refusals.load(Ordering::SeqCst),
        2,
        "the fallback is remembered"
    );
    a.close().await;
    b.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_falls_back_to_the_relay_upgrade() {
    timed(falls_back(Transport::WebSocket, "websocket")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_upgrade_falls_back_to_websocket() {
    timed(falls_back(Transport::Relay, "iroh-relay-v1")).await;
}

/// Sends a raw request and returns the response head.
async fn raw(addr: SocketAddr, headers: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /relay HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{headers}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

#[tokio::test]
async fn malformed_websocket_upgrades_are_refused() {
    timed(async {
        let server = Server::spawn(ServerConfig::dev()).await.unwrap();
        let addr = server.relay_addr();
        let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let ours = "Sec-WebSocket-Protocol: iroh-relay-v2, iroh-relay-v1\r\n";
        let ok = raw(addr, &format!("Sec-WebSocket-Version: 13\r\n{key}{ours}")).await;
        assert!(ok.starts_with("http/1.1 101"), "{ok}");
        assert!(
            ok.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{ok}"
        );
        assert!(
            ok.contains("sec-websocket-protocol: iroh-relay-v1\r\n"),
            "{ok}"
        );
        let old = raw(addr, &format!("Sec-WebSocket-Version: 8\r\n{key}{ours}")).await;
        assert!(old.starts_with("http/1.1 426"), "{old}");
        assert!(old.contains("sec-websocket-version: 13"), "{old}");
        let other = raw(
            addr,
            &format!("Sec-WebSocket-Version: 13\r\n{key}Sec-WebSocket-Protocol: chat\r\n"),
        )
        .await;
        assert!(other.starts_with("http/1.1 400"), "{other}");
        let none = raw(addr, &format!("Sec-WebSocket-Version: 13\r\n{key}")).await;
        assert!(none.starts_with("http/1.1 400"), "{none}");
        let keyless = raw(addr, &format!("Sec-WebSocket-Version: 13\r\n{ours}")).await;
        assert!(keyless.starts_with("http/1.1 400"), "{keyless}");
        server.shutdown().await;
    })
    .await;
}
