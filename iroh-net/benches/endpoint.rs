//! The Endpoint next to raw quinn on loopback, in the same run: bulk throughput over a direct path and
//! handshake time (both with the same transport config, socket buffer sizes and raw-public-key TLS), and
//! the time from `connect` to the first direct path when the dialler knows only the peer's relay.
//!
//! Run with `cargo bench -p iroh-net --bench endpoint` (optionally followed by `-- MIB ROUNDS`, default 256
//! MiB and 5 rounds). Both ends of every pair share one tokio runtime with two worker threads on this
//! machine's cores, so the figures include the CPU of both sides.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::Arc,
    time::{Duration, Instant},
};

use iroh_base::{NodeAddr, SecretKey};
use iroh_net::{
    endpoint::{ConnectionType, Endpoint, RelayMap, RelayMode, RelayNode},
    tls,
};
use iroh_relay::server::{Server, ServerConfig, TlsConfig};
use quinn::{EndpointConfig, TokioRuntime, TransportConfig};

const ALPN: &[u8] = b"bench";
/// The buffer size the magic socket asks for (see `magicsock::udp`).
const SOCKET_BUFFER: usize = 7 * 1024 * 1024;

fn transport() -> Arc<TransportConfig> {
    let mut config = TransportConfig::default();
    config.keep_alive_interval(Some(iroh_net::endpoint::DEFAULT_KEEP_ALIVE));
    Arc::new(config)
}

fn loopback() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)
}

/// Two iroh endpoints on 127.0.0.1 (no IPv6, no relay): B accepts, A dials.
async fn iroh_pair() -> (Endpoint, Endpoint) {
    let make = || async {
        let mut transport = TransportConfig::default();
        transport.keep_alive_interval(Some(iroh_net::endpoint::DEFAULT_KEEP_ALIVE));
        Endpoint::builder()
            .alpns(vec![ALPN.to_vec()])
            .bind_addr_v4(loopback())
            .bind_addr_v6(None)
            .transport_config(transport)
            .bind()
            .await
            .unwrap()
    };
    (make().await, make().await)
}

/// A raw quinn endpoint on 127.0.0.1 with the same socket buffers as the magic socket.
fn raw_endpoint(server: Option<quinn::ServerConfig>) -> quinn::Endpoint {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    socket.set_recv_buffer_size(SOCKET_BUFFER).ok();
    socket.set_send_buffer_size(SOCKET_BUFFER).ok();
    socket.bind(&SocketAddr::V4(loopback()).into()).unwrap();
    let mut config = EndpointConfig::default();
    config.grease_quic_bit(false);
    quinn::Endpoint::new(config, server, socket.into(), Arc::new(TokioRuntime)).unwrap()
}

struct RawPair {
    server: quinn::Endpoint,
    client: quinn::Endpoint,
    server_key: SecretKey,
    client_key: SecretKey,
}

fn raw_pair() -> RawPair {
    let (server_key, client_key) = (SecretKey::generate(), SecretKey::generate());
    let crypto = tls::make_server_config(&server_key, vec![ALPN.to_vec()], false).unwrap();
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server_config.transport_config(transport());
    RawPair {
        server: raw_endpoint(Some(server_config)),
        client: raw_endpoint(None),
        server_key,
        client_key,
    }
}

impl RawPair {
    async fn connect(&self) -> quinn::Connection {
        let crypto = tls::make_client_config(
            &self.client_key,
            self.server_key.public(),
            vec![ALPN.to_vec()],
            false,
        )
        .unwrap();
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport());
        let addr = self.server.local_addr().unwrap();
        self.client
            .connect_with(config, addr, &tls::server_name(&self.server_key.public()))
            .unwrap()
            .await
            .unwrap()
    }
}

/// Reads every stream of `conn` to its end and answers each with one byte.
fn sink(conn: quinn::Connection) {
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                while let Ok(Some(_)) = recv.read_chunk(usize::MAX, false).await {}
                send.write_all(b"k").await.ok();
                send.finish().ok();
            });
        }
    });
}

/// Accepts every connection of an iroh endpoint into [`sink`].
fn serve_iroh(endpoint: Endpoint) {
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            if let Ok(conn) = incoming.accept().await {
                sink(conn.into_quinn());
            }
        }
    });
}

/// Accepts every connection of a raw quinn endpoint into [`sink`].
fn serve_raw(endpoint: quinn::Endpoint) {
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            if let Ok(conn) = incoming.await {
                sink(conn);
            }
        }
    });
}

/// Sends `bytes` on a new stream and waits for the receiver's answer; returns the rate in MiB/s.
async fn push(conn: &quinn::Connection, bytes: usize) -> f64 {
    let buf = bytes::Bytes::from(vec![0xabu8; 1024 * 1024]);
    let start = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len());
        send.write_chunk(buf.slice(..n)).await.unwrap();
        left -= n;
    }
    send.finish().unwrap();
    recv.read_to_end(8).await.unwrap();
    bytes as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn throughput(mib: usize, rounds: usize) {
    let (a, b) = iroh_pair().await;
    serve_iroh(b.clone());
    let iroh_conn = a.connect(b.node_addr(), ALPN).await.unwrap();
    let raw = raw_pair();
    serve_raw(raw.server.clone());
    let raw_conn = raw.connect().await;
    // Warm up both (congestion windows, MTU discovery).
    push(&iroh_conn, 32 << 20).await;
    push(&raw_conn, 32 << 20).await;
    let (mut iroh_rates, mut raw_rates) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        iroh_rates.push(push(&iroh_conn, mib << 20).await);
        raw_rates.push(push(&raw_conn, mib << 20).await);
    }
    let (iroh, raw_rate) = (median(iroh_rates.clone()), median(raw_rates.clone()));
    println!("throughput, direct, {mib} MiB per round, {rounds} rounds (median; all rounds):");
    println!("  iroh Endpoint : {iroh:8.1} MiB/s  {iroh_rates:.0?}");
    println!("  raw quinn     : {raw_rate:8.1} MiB/s  {raw_rates:.0?}");
    println!("  ratio         : {:.2}", iroh / raw_rate);
    println!(
        "  iroh socket buffers granted: {:?}",
        a.socket_buffer_sizes()
    );
    println!("  iroh counters (dialler): {:?}", a.stats());
    iroh_conn.close(0u32.into(), b"");
    raw_conn.close(0u32.into(), b"");
    a.close().await;
    b.close().await;
}

async fn handshakes(rounds: usize) {
    let (a, b) = iroh_pair().await;
    serve_iroh(b.clone());
    let raw = raw_pair();
    serve_raw(raw.server.clone());
    let (mut iroh_times, mut raw_times) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let start = Instant::now();
        let conn = a.connect(b.node_addr(), ALPN).await.unwrap();
        iroh_times.push(ms(start.elapsed()));
        conn.close(0u32.into(), b"");
        let start = Instant::now();
        let conn = raw.connect().await;
        raw_times.push(ms(start.elapsed()));
        conn.close(0u32.into(), b"");
    }
    println!("handshake, direct, {rounds} rounds (median):");
    println!("  iroh Endpoint : {:6.2} ms", median(iroh_times));
    println!("  raw quinn     : {:6.2} ms", median(raw_times));
    a.close().await;
    b.close().await;
}

async fn time_to_direct(rounds: usize) {
    let server = Server::spawn(ServerConfig::dev().with_tls(TlsConfig::self_signed_localhost()))
        .await
        .unwrap();
    let map = RelayMap::from_node(RelayNode::with_stun_port(
        server.relay_url(),
        server.stun_addr().unwrap().port(),
    ));
    let (mut handshake, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let make = || async {
            let endpoint = Endpoint::builder()
                .alpns(vec![ALPN.to_vec()])
                .relay_mode(RelayMode::Custom(map.clone()))
                .relay_extra_roots(server.certificates())
                .bind()
                .await
                .unwrap();
            endpoint
                .home_relay()
                .wait_for(Option::is_some)
                .await
                .unwrap();
            endpoint
        };
        let (a, b) = (make().await, make().await);
        let b2 = b.clone();
        let accept = tokio::spawn(async move { b2.accept().await?.accept().await.ok() });
        let addr = NodeAddr::new(b.node_id()).with_relay_url(server.relay_url());
        let mut conn_type = a.conn_type(b.node_id());
        let start = Instant::now();
        let conn = a.connect(addr, ALPN).await.unwrap();
        handshake.push(ms(start.elapsed()));
        conn_type
            .wait_for(|t| matches!(t, ConnectionType::Direct(_)))
            .await
            .unwrap();
        direct.push(ms(start.elapsed()));
        accept.await.ok();
        conn.close(0u32.into(), b"");
        a.close().await;
        b.close().await;
    }
    println!("relay first, {rounds} rounds (dialler knows only the relay URL):");
    println!(
        "  connect -> handshake done : median {:6.2} ms  {handshake:.1?}",
        median(handshake.clone())
    );
    println!(
        "  connect -> first Direct   : median {:6.2} ms  {direct:.1?}",
        median(direct.clone())
    );
    server.shutdown().await;
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mib = args.first().and_then(|a| a.parse().ok()).unwrap_or(256);
    let rounds = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        throughput(mib, rounds).await;
        handshakes(20).await;
        time_to_direct(10).await;
    });
}
