//! The whole idea in one process: a relay on loopback (also serving discovery), two endpoints, the first
//! publishes its address, the second dials it knowing only its NodeId (found over DNS), the connection
//! starts through the relay, holepunching moves it to a direct path, 64 MiB cross it, and a short timeline
//! is printed.
//!
//! Run: `cargo run --release --example demo` (`-- --size-mib 256` for a longer transfer).
//! Exits non-zero unless the connection went direct and the data arrived intact.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use iroh::{
    ConnectionType, Endpoint, RelayMode, SecretKey,
    discovery::{dns::DnsDiscovery, pkarr::PkarrPublisher},
    iroh_net::endpoint::{RelayMap, RelayNode},
};
use iroh_relay::server::{DiscoveryConfig, Server, ServerConfig, discovery::DEV_ORIGIN};

/// The ALPN of the demo's one protocol: the dialler sends bytes, the listener answers with their hash.
const ALPN: &[u8] = b"iroh-demo/hash/1";

#[derive(Parser, Debug)]
#[command(about = "A relay, two endpoints, a holepunch and a transfer, in one process")]
struct Args {
    /// How many MiB to move once the connection is direct.
    #[arg(long, default_value_t = 64)]
    size_mib: u64,
    /// How long to wait for the connection to turn direct.
    #[arg(long, default_value_t = 10)]
    direct_timeout_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let start = Instant::now();

    // 1. A relay on a free loopback port: plain HTTP plus STUN, and discovery (publish endpoint on the
    //    relay's listener, DNS on a free port for the origin `iroh.test`), as `iroh-relay --dev` runs it.
    let discovery = DiscoveryConfig::new(DEV_ORIGIN, Some("127.0.0.1:0".parse()?));
    let relay = Server::spawn(ServerConfig::dev().with_discovery(Some(discovery)))
        .await
        .context("starting the relay")?;
    let dns = relay.dns_addr().context("the relay serves DNS")?;
    let publish_url = relay
        .discovery_url()
        .context("the relay serves discovery")?;
    let relay_url = relay.relay_url();
    let stun_port = relay.stun_addr().context("the dev relay runs STUN")?.port();
    let relay_map = RelayMap::new(vec![RelayNode::with_stun_port(
        relay_url.clone(),
        stun_port,
    )])?;
    println!("relay       {relay_url} (STUN on port {stun_port}, DNS on {dns})");

    // 2. Two endpoints using it: the listener publishes its address, the dialler looks nodes up in DNS.
    let listener_key = SecretKey::generate();
    let publisher = PkarrPublisher::new(listener_key.clone(), publish_url);
    let published = publisher.status_handle();
    let listener = Endpoint::builder()
        .secret_key(listener_key)
        .alpns(vec![ALPN.to_vec()])
        .relay_mode(RelayMode::Custom(relay_map.clone()))
        .add_discovery(publisher)
        .bind()
        .await?;
    let dialler = Endpoint::builder()
        .relay_mode(RelayMode::Custom(relay_map))
        .add_discovery(DnsDiscovery::with_name_server(DEV_ORIGIN.parse()?, dns)?)
        .bind()
        .await?;
    // The listener is reachable through the relay once it is logged in there.
    let mut home = listener.home_relay();
    tokio::time::timeout(Duration::from_secs(10), home.wait_for(Option::is_some))
        .await
        .context("the listener did not reach its relay")??;
    println!(
        "listener    {} (home relay after {} ms)",
        listener.node_id().fmt_short(),
        ms(start.elapsed())
    );

    // Its record (relay and direct addresses, signed with its key) is on the discovery server.
    let deadline = Instant::now() + Duration::from_secs(10);
    let record = loop {
        if let Some(data) = published.get().published.filter(|d| d.relay_url.is_some()) {
            break data;
        }
        ensure!(
            Instant::now() < deadline,
            "the listener's address was not published"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!(
        "published   relay and {} direct addresses after {} ms",
        record.direct_addresses.len(),
        ms(start.elapsed())
    );

    let server = tokio::spawn(serve_hashes(listener.clone()));

    // 3. Dial by NodeId alone: discovery finds the relay and the addresses.
    let mut conn_type = dialler.conn_type(listener.node_id());
    let dial_start = Instant::now();
    let connection = dialler.connect(listener.node_id(), ALPN).await?;
    let connected_after = dial_start.elapsed();
    println!(
        "connected   after {} ms via {}",
        ms(connected_after),
        *conn_type.borrow()
    );

    // 4. Holepunching: wait for the connection type to turn direct.
    let direct = tokio::time::timeout(
        Duration::from_secs(args.direct_timeout_secs),
        conn_type.wait_for(|t| matches!(t, ConnectionType::Direct(_))),
    )
    .await;
    let Ok(Ok(direct_path)) = direct.map(|r| r.map(|path| path.clone())) else {
        bail!(
            "the connection did not go direct within {} s: {}",
            args.direct_timeout_secs,
            *conn_type.borrow()
        );
    };
    println!(
        "direct      after {} ms: {direct_path}",
        ms(dial_start.elapsed())
    );

    // 5. Move the data and compare hashes.
    let size = args.size_mib * 1024 * 1024;
    let (mut send, mut recv) = connection.open_bi().await?;
    let transfer_start = Instant::now();
    let mut hasher = blake3::Hasher::new();
    let mut chunk = vec![0u8; 1024 * 1024];
    let mut sent = 0u64;
    let mut seed = 0x5eed_u64;
    while sent < size {
        fill_pseudo_random(&mut chunk, &mut seed);
        send.write_all(&chunk).await?;
        hasher.update(&chunk);
        sent += chunk.len() as u64;
    }
    send.finish()?;
    let answer = recv.read_to_end(64).await?;
    let elapsed = transfer_start.elapsed();
    ensure!(
        answer == hasher.finalize().as_bytes(),
        "hash mismatch: the data was corrupted"
    );
    let mib_s = size as f64 / 1024.0 / 1024.0 / elapsed.as_secs_f64();
    println!(
        "transfer    {} MiB in {} ms: {mib_s:.0} MiB/s ({:.2} Gbit/s), hash ok",
        args.size_mib,
        ms(elapsed),
        mib_s * 8.0 * 1.048_576 / 1000.0
    );
    let final_type = conn_type.borrow().clone();
    println!("path        {final_type}");
    ensure!(
        matches!(final_type, ConnectionType::Direct(_)),
        "the transfer did not end on a direct path"
    );

    connection.close(0u32.into(), b"done");
    dialler.close().await;
    listener.close().await;
    server.abort();
    relay.shutdown().await;
    println!("done        in {} ms", ms(start.elapsed()));
    Ok(())
}

/// Accepts connections and answers each bidirectional stream with the BLAKE3 hash of what it received.
async fn serve_hashes(endpoint: Endpoint) -> anyhow::Result<()> {
    while let Some(incoming) = endpoint.accept().await {
        let connection = incoming.await?;
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                let mut hasher = blake3::Hasher::new();
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(Some(n)) = recv.read(&mut buf).await {
                    hasher.update(&buf[..n]);
                }
                let _ = send.write_all(hasher.finalize().as_bytes()).await;
                let _ = send.finish();
            }
        });
    }
    Ok(())
}

/// Fills `buf` with cheap pseudo-random bytes (xorshift), so the transfer is not all zeros.
fn fill_pseudo_random(buf: &mut [u8], state: &mut u64) {
    for word in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let bytes = state.to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}
