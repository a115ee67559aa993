//! The time from `connect` to the first direct path when the dialler knows only the peer's relay URL: the
//! relay carries the handshake, holepunching runs beside it, and the connection moves to the direct path.
//!
//! Run with `cargo bench -p iroh-net --bench endpoint` (optionally followed by `-- ROUNDS`, default 10).
//! Throughput, CPU per GiB, connect time and memory against raw quinn are `iroh-bench`'s job
//! (`cargo run --release -p iroh-bench -- all`), which runs each side on a runtime of its own; this bench
//! measures a latency, so both endpoints share one runtime here.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use iroh_base::NodeAddr;
use iroh_net::endpoint::{ConnectionType, Endpoint, RelayMap, RelayMode, RelayNode};
use iroh_relay::server::{Server, ServerConfig, TlsConfig};

const ALPN: &[u8] = b"bench";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
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
    let rounds = std::env::args()
        .skip(1)
        .find(|a| a != "--bench")
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(time_to_direct(rounds));
}
