//! `iroh-bench quic-peer`: raw quinn between two hosts, the baseline that `cargo xtask netsim`'s loss ladder
//! measures the Endpoint against over the same simulated path.
//!
//! ```text
//! iroh-bench quic-peer serve --bind 0.0.0.0:4433 [--congestion bbr]
//!     prints {"node_id": "...", "addr": "..."} once listening, then serves until killed
//! iroh-bench quic-peer fetch --to 198.18.1.1:4433 --node-id ID --duration-secs 10 [--congestion bbr]
//!     prints {"bytes", "duration_ms", "throughput_mbps", "final_path": "direct", "time_to_direct_ms",
//!             "hash_ok", "rtt_ms", "lost_packets", "congestion_events", "path_changes": 0}
//! ```
//!
//! Same transport config (fixed windows at the Endpoint's caps) and TLS as the benchmark's raw mode
//! ([`crate::setup`]), with the congestion
//! controller chosen on the command line (the sender's counts: the server sends). The server writes an
//! endless stream in which byte `i` is `i % 251` on every bidirectional stream until the fetcher stops it;
//! the fetcher checks every byte it reads and reports `hash_ok` false on the first wrong one.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use iroh_base::{PublicKey, SecretKey};
use iroh_net::{congestion::CongestionControl, tls};
use serde_json::json;

use crate::{
    Result,
    setup::{ALPN, raw_endpoint_on, raw_transport},
};

/// The content's period: a prime, so that it does not line up with chunk or packet sizes.
const PERIOD: usize = 251;
/// One write: a whole number of periods, so writing it again and again continues the pattern.
const CHUNK_PERIODS: usize = 4096;

/// What `quic-peer` does.
#[derive(Debug, Clone, PartialEq, clap::Subcommand)]
pub(crate) enum Role {
    /// Listen and serve the endless pattern on every stream.
    Serve {
        /// Where to listen.
        #[arg(long)]
        bind: SocketAddr,
        /// Congestion controller (default: the Endpoint's).
        #[arg(long)]
        congestion: Option<CongestionControl>,
    },
    /// Read from a server for a while and report.
    Fetch {
        /// The server's address.
        #[arg(long)]
        to: SocketAddr,
        /// The server's key, as it printed it.
        #[arg(long)]
        node_id: PublicKey,
        /// How long to read.
        #[arg(long)]
        duration_secs: f64,
        /// Congestion controller (default: the Endpoint's).
        #[arg(long)]
        congestion: Option<CongestionControl>,
    },
}

/// Runs `role` on a runtime of its own.
pub(crate) fn main(role: &Role) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match role {
            Role::Serve { bind, congestion } => serve(*bind, *congestion).await,
            Role::Fetch {
                to,
                node_id,
                duration_secs,
                congestion,
            } => {
                fetch(
                    *to,
                    *node_id,
                    Duration::from_secs_f64(*duration_secs),
                    *congestion,
                )
                .await
            }
        }
    })
}

fn transport_with(congestion: Option<CongestionControl>) -> Arc<quinn::TransportConfig> {
    let mut config = raw_transport();
    if let Some(cc) = congestion {
        config.congestion_controller_factory(cc.factory());
    }
    Arc::new(config)
}

fn pattern() -> Bytes {
    (0..PERIOD * CHUNK_PERIODS)
        .map(|i| u8::try_from(i % PERIOD).unwrap_or_default())
        .collect::<Vec<u8>>()
        .into()
}

async fn serve(bind: SocketAddr, congestion: Option<CongestionControl>) -> Result<()> {
    let key = SecretKey::generate();
    let crypto = tls::make_server_config(&key, vec![ALPN.to_vec()], false)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_with(congestion));
    let endpoint = raw_endpoint_on(bind, Some(config))?;
    println!(
        "{}",
        json!({ "node_id": key.public().to_string(), "addr": endpoint.local_addr()?.to_string() })
    );
    let data = pattern();
    while let Some(incoming) = endpoint.accept().await {
        let data = data.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, _recv)) = conn.accept_bi().await {
                let data = data.clone();
                tokio::spawn(async move {
                    // Until the fetcher stops the stream or goes away.
                    while send.write_chunk(data.clone()).await.is_ok() {}
                });
            }
        });
    }
    Ok(())
}

async fn fetch(
    to: SocketAddr,
    node_id: PublicKey,
    duration: Duration,
    congestion: Option<CongestionControl>,
) -> Result<()> {
    let start = Instant::now();
    let endpoint = raw_endpoint_on(SocketAddr::from(([0, 0, 0, 0], 0)), None)?;
    let own = SecretKey::generate();
    let crypto = tls::make_client_config(&own, node_id, vec![ALPN.to_vec()], false)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_with(congestion));
    let conn = endpoint
        .connect_with(config, to, &tls::server_name(&node_id))?
        .await?;
    let connected = start.elapsed();
    let (mut send, mut recv) = conn.open_bi().await?;
    send.finish()?;
    let expected = pattern();
    let stop_at = tokio::time::Instant::from_std(start + duration);
    let mut received = 0u64;
    let mut content_ok = true;
    loop {
        let chunk = match tokio::time::timeout_at(stop_at, recv.read_chunk(64 * 1024, true)).await {
            Err(_) => break,
            Ok(chunk) => chunk?.ok_or("the server ended the stream")?,
        };
        let offset = usize::try_from(received % PERIOD as u64)?;
        let want = expected
            .get(offset..offset + chunk.bytes.len())
            .ok_or("a chunk longer than the pattern buffer")?;
        content_ok &= chunk.bytes == want;
        received += u64::try_from(chunk.bytes.len())?;
    }
    recv.stop(0u32.into()).ok();
    let elapsed = start.elapsed();
    let stats = conn.stats();
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    #[allow(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
    let throughput_mbps = received as f64 * 8.0 / duration_ms / 1000.0;
    println!(
        "{}",
        json!({
            "bytes": received,
            "duration_ms": duration_ms,
            "throughput_mbps": throughput_mbps,
            "final_path": "direct",
            "time_to_direct_ms": connected.as_secs_f64() * 1000.0,
            "hash_ok": content_ok,
            "rtt_ms": conn.rtt().as_secs_f64() * 1000.0,
            "lost_packets": stats.path.lost_packets,
            "congestion_events": stats.path.congestion_events,
            "path_changes": 0,
        })
    );
    conn.close(0u32.into(), b"done");
    tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle())
        .await
        .ok();
    Ok(())
}
