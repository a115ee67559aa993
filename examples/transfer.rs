//! Moves bytes between two nodes and reports how: the provider serves data, the fetcher dials it by ticket,
//! checks the BLAKE3 hash, and reports the bytes, duration, throughput, final path and time to direct.
//!
//! Run: `cargo run --release --example transfer -- provide --size 100000000 [--relay-url URL]`, then the
//! fetch command it prints. `--json` prints machine-readable lines instead of a progress bar (the NAT tests in
//! `cargo xtask netsim` drive it that way); `--relay-only` filters all direct paths, `--direct-only` disables
//! the relay. `fetch --duration-secs S` stops after S seconds instead of at the end (a goodput measurement;
//! every byte received is still checked, against the content the provider generates). `--congestion
//! cubic|new-reno|bbr` picks the congestion controller (on either side; the sender's is what counts).
//!
//! Dialling by NodeId: `provide --discovery-url URL` publishes the provider's address to a discovery server
//! (`iroh-relay --dev` runs one), and `fetch --node-id ID --dns-server IP:PORT` (or `--discovery-url URL`)
//! finds it by its NodeId alone.
//!
//! JSON lines: the provider first prints `{"ticket": "node...", "node_id": "..."}`; the fetcher prints
//! `{"event": "path", "path": "direct"|"relay", "elapsed_ms": N}` whenever the path changes, and at the end
//! `{"bytes", "duration_ms", "throughput_mbps", "final_path", "time_to_direct_ms", "hash_ok"}` plus what
//! QUIC saw: `rtt_ms` (smoothed, at the end), `lost_packets` and `congestion_events` (of the provider's
//! data, as the fetcher's acknowledgements let it count them: the fetcher's own counts are of its
//! acknowledgements), `path_changes`, and `prediction_packets` (port prediction's sockets opened and probes
//! sprayed on the fetcher's side). With `--json` the provider prints `{"event": "served",
//! "prediction_packets": N}` (its own side's) after each fetch it served.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use iroh::{
    CongestionControl, ConnectionType, Endpoint, NodeAddr, NodeId, NodeTicket, PortMapConfig,
    RelayMode, RelayUrl, SecretKey, default_transport_config,
    discovery::pkarr::PublishStatusHandle,
};
use serde_json::json;

/// The transfer protocol: the fetcher opens a stream; the provider sends the size (u64, big endian), the
/// bytes, and their BLAKE3 hash.
const ALPN: &[u8] = b"iroh-example/transfer/1";

#[derive(Parser, Debug)]
#[command(about = "Serve or fetch bytes between two nodes and report the path they took")]
struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// Serve `--size` bytes to everyone who fetches.
    Provide {
        /// How many bytes to serve.
        #[arg(long, default_value_t = 100 * 1024 * 1024)]
        size: u64,
        #[command(flatten)]
        opts: Opts,
    },
    /// Fetch from the node of a ticket, or of a NodeId that discovery finds.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["ticket", "node_id"])))]
    Fetch {
        /// The provider's ticket.
        #[arg(long)]
        ticket: Option<NodeTicket>,
        /// The provider's NodeId alone (needs `--dns-server`, `--dns-origin` or `--discovery-url`).
        #[arg(long)]
        node_id: Option<NodeId>,
        /// Stop after this many seconds rather than at the end of the data.
        #[arg(long)]
        duration_secs: Option<f64>,
        #[command(flatten)]
        opts: Opts,
    },
}

#[derive(clap::Args, Debug)]
struct Opts {
    /// The relay to use as home relay (STUN on port 3478 of the same host).
    #[arg(long)]
    relay_url: Option<RelayUrl>,
    /// Accept the relay's certificate without checking it (test relays with self-signed certificates).
    #[arg(long)]
    relay_insecure: bool,
    /// Send nothing directly: all traffic through the relay.
    #[arg(long, conflicts_with = "direct_only")]
    relay_only: bool,
    /// Use no relay: direct paths only.
    #[arg(long)]
    direct_only: bool,
    /// Print JSON lines for scripts instead of a progress bar.
    #[arg(long)]
    json: bool,
    /// The congestion controller: cubic, new-reno or bbr (default: the Endpoint's).
    #[arg(long)]
    congestion: Option<CongestionControl>,
    /// Ask the router for no port mapping (UPnP, PCP, NAT-PMP).
    #[arg(long)]
    no_port_mapping: bool,
    /// Port mapping lifetime asked for, in seconds (default two hours; short ones for tests).
    #[arg(long, hide = true)]
    port_mapping_lifetime_secs: Option<u64>,
    #[command(flatten)]
    discovery: common::DiscoveryArgs,
}

impl Opts {
    fn port_mapping(&self) -> PortMapConfig {
        if self.no_port_mapping {
            return PortMapConfig::disabled();
        }
        let mut config = PortMapConfig::default();
        if let Some(secs) = self.port_mapping_lifetime_secs {
            config.lifetime = Duration::from_secs(secs);
        }
        config
    }

    /// The endpoint, and the publisher's progress when it publishes (`--discovery-url`).
    async fn endpoint(
        &self,
        alpns: Vec<Vec<u8>>,
    ) -> anyhow::Result<(Endpoint, Option<PublishStatusHandle>)> {
        let relay_mode = match (&self.relay_url, self.direct_only) {
            (Some(url), false) => RelayMode::custom([url.clone()])?,
            _ => RelayMode::Disabled,
        };
        let mut transport = default_transport_config();
        if let Some(cc) = self.congestion {
            transport.congestion_controller_factory(cc.factory());
        }
        let secret_key = SecretKey::generate();
        let builder = Endpoint::builder()
            .secret_key(secret_key.clone())
            .alpns(alpns)
            .transport_config(transport)
            .relay_mode(relay_mode)
            .insecure_skip_relay_cert_verify(self.relay_insecure)
            .port_mapping(self.port_mapping());
        let (builder, published, _local) =
            self.discovery
                .apply(builder, &secret_key, self.relay_insecure)?;
        let endpoint = builder.bind().await?;
        if self.relay_only {
            endpoint.set_direct_filter(Some(Arc::new(|_| true)));
        }
        Ok((endpoint, published))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match Args::parse().role {
        Role::Provide { size, opts } => provide(size, opts).await,
        Role::Fetch {
            ticket,
            node_id,
            duration_secs,
            opts,
        } => {
            let target = match (ticket, node_id) {
                (Some(ticket), _) => ticket.node_addr().clone(),
                (None, Some(node)) if opts.discovery.is_enabled() => NodeAddr::new(node),
                (None, Some(_)) => anyhow::bail!(
                    "--node-id needs --local-discovery, --dns-server, --dns-origin or --discovery-url to find the node"
                ),
                (None, None) => anyhow::bail!("give --ticket or --node-id"),
            };
            fetch(target, duration_secs.map(Duration::from_secs_f64), opts).await
        }
    }
}

async fn provide(size: u64, opts: Opts) -> anyhow::Result<()> {
    let (endpoint, published) = opts.endpoint(vec![ALPN.to_vec()]).await?;
    let relay = opts.relay_url.is_some() && !opts.direct_only;
    if relay {
        tokio::time::timeout(
            Duration::from_secs(20),
            endpoint.home_relay().wait_for(Option::is_some),
        )
        .await
        .context("the relay did not answer")??;
    }
    if let Some(status) = &published {
        // Dialable by NodeId once this returns.
        common::wait_published(status, relay, Duration::from_secs(20)).await?;
    }
    let ticket = NodeTicket::new(endpoint.node_addr());
    if opts.json {
        println!(
            "{}",
            json!({ "ticket": ticket.to_string(), "node_id": endpoint.node_id().to_string() })
        );
        // Each change of the router's port mapping, for scripts (netsim's port-mapping checks).
        let mut mapping = endpoint.port_mapping();
        if mapping.borrow().is_some() {
            mapping.mark_changed();
        }
        tokio::spawn(async move {
            while mapping.changed().await.is_ok() {
                let now = *mapping.borrow_and_update();
                let line = match now {
                    Some(m) => json!({
                        "event": "port_mapping",
                        "protocol": m.protocol.name(),
                        "external": m.external.to_string(),
                        "lifetime_s": m.lifetime.as_secs(),
                    }),
                    None => json!({ "event": "port_mapping", "protocol": null }),
                };
                println!("{line}");
            }
        });
    } else {
        println!("serving {size} bytes as {}", endpoint.node_id());
        println!("fetch with: cargo run --release --example transfer -- fetch --ticket {ticket}");
        if opts.discovery.discovery_url.is_some() {
            println!(
                "or by node id: cargo run --release --example transfer -- fetch --node-id {} --relay-url URL --dns-server 127.0.0.1:5300",
                endpoint.node_id()
            );
        }
    }
    let serve = async {
        while let Some(incoming) = endpoint.accept().await {
            let endpoint = endpoint.clone();
            let json = opts.json;
            tokio::spawn(async move {
                let connection = match incoming.await {
                    Ok(connection) => connection,
                    Err(err) => return eprintln!("incoming connection failed: {err}"),
                };
                while let Ok((mut send, _recv)) = connection.accept_bi().await {
                    let mut hasher = blake3::Hasher::new();
                    let result: Result<(), iroh::quinn::WriteError> = async {
                        send.write_all(&size.to_be_bytes()).await?;
                        let mut chunk = vec![0u8; 256 * 1024];
                        let mut content = Content::default();
                        let mut left = size;
                        while left > 0 {
                            let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                            content.fill(&mut chunk[..n]);
                            hasher.update(&chunk[..n]);
                            send.write_all(&chunk[..n]).await?;
                            left -= n as u64;
                        }
                        send.write_all(hasher.finalize().as_bytes()).await?;
                        let _ = send.finish();
                        Ok(())
                    }
                    .await;
                    match result {
                        // A fetcher that had enough (`--duration-secs`) stops the stream.
                        Ok(()) | Err(iroh::quinn::WriteError::Stopped(_)) => {}
                        Err(err) => eprintln!("serving a fetch failed: {err}"),
                    }
                    if json {
                        let stats = endpoint.stats();
                        println!(
                            "{}",
                            json!({
                                "event": "served",
                                "prediction_packets": stats.predict_sockets + stats.predict_probes,
                            })
                        );
                    }
                }
            });
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = shutdown_signal() => {}
    }
    endpoint.close().await;
    Ok(())
}

async fn fetch(target: NodeAddr, duration: Option<Duration>, opts: Opts) -> anyhow::Result<()> {
    let start = Instant::now();
    let (endpoint, _) = opts.endpoint(Vec::new()).await?;
    let provider = target.node_id;
    let first_direct = Arc::new(OnceLock::new());
    let path_changes = Arc::new(AtomicU32::new(0));
    let watcher = tokio::spawn(watch_path(
        endpoint.clone(),
        provider,
        start,
        opts.json,
        (Arc::clone(&first_direct), Arc::clone(&path_changes)),
    ));

    let connection = endpoint.connect(target, ALPN).await?;
    // From the start (before the endpoint existed) to an authenticated connection: with only a NodeId,
    // this includes finding the node.
    let connected = start.elapsed();
    let (mut send, mut recv) = connection.open_bi().await?;
    // A new stream is invisible to the peer until something is sent on it: finishing our (empty) side
    // announces it, and the provider answers on its side.
    send.finish()?;
    let mut size_bytes = [0u8; 8];
    recv.read_exact(&mut size_bytes).await?;
    let size = u64::from_be_bytes(size_bytes);

    let progress = (!opts.json).then(|| {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut hasher = blake3::Hasher::new();
    let mut content = Content::default();
    let mut expected = vec![0u8; 256 * 1024];
    let mut buf = vec![0u8; 256 * 1024];
    let mut received = 0u64;
    let mut content_ok = true;
    let stop_at = duration.map(|d| tokio::time::Instant::from_std(start + d));
    while received < size {
        let want = usize::try_from((size - received).min(buf.len() as u64))?;
        let read = recv.read(&mut buf[..want]);
        let n = match stop_at {
            Some(at) => match tokio::time::timeout_at(at, read).await {
                Ok(read) => read?,
                Err(_) => break,
            },
            None => read.await?,
        };
        let Some(n) = n else {
            anyhow::bail!("the provider stopped after {received} of {size} bytes");
        };
        hasher.update(&buf[..n]);
        content.fill(&mut expected[..n]);
        content_ok &= buf[..n] == expected[..n];
        received += n as u64;
        if let Some(bar) = &progress {
            bar.set_position(received);
            bar.set_message(path_word(&endpoint.conn_type(provider).borrow()).to_owned());
        }
    }
    let hash_ok = if received == size {
        let mut hash = [0u8; 32];
        recv.read_exact(&mut hash).await?;
        content_ok && hasher.finalize().as_bytes() == &hash
    } else {
        // Stopped early: every byte received was checked against the content.
        recv.stop(0u32.into()).ok();
        content_ok
    };
    let duration = start.elapsed();
    if let Some(bar) = progress {
        bar.finish();
    }

    let final_path = path_word(&endpoint.conn_type(provider).borrow()).to_owned();
    watcher.abort();
    let time_to_direct = first_direct
        .get()
        .copied()
        .or_else(|| (final_path == "direct").then(|| start.elapsed()));
    let duration_ms = duration.as_secs_f64() * 1000.0;
    let throughput_mbps = received as f64 * 8.0 / duration_ms / 1000.0;
    let stats = connection.stats();
    let socket_stats = endpoint.stats();
    let prediction_packets = socket_stats.predict_sockets + socket_stats.predict_probes;
    if opts.json {
        println!(
            "{}",
            json!({
                "bytes": received,
                "duration_ms": duration_ms,
                "throughput_mbps": throughput_mbps,
                "final_path": final_path,
                "time_to_direct_ms": time_to_direct.map(|d| d.as_secs_f64() * 1000.0),
                "hash_ok": hash_ok,
                "connect_ms": connected.as_secs_f64() * 1000.0,
                "rtt_ms": connection.rtt().as_secs_f64() * 1000.0,
                "lost_packets": stats.path.lost_packets,
                "congestion_events": stats.path.congestion_events,
                "path_changes": path_changes.load(Ordering::Relaxed),
                "prediction_packets": prediction_packets,
            })
        );
    } else {
        println!(
            "{received} bytes in {duration_ms:.0} ms: {throughput_mbps:.1} Mbit/s, path {final_path}, \
             direct after {}, hash {}",
            time_to_direct.map_or("never".to_owned(), |d| format!("{} ms", d.as_millis())),
            if hash_ok { "ok" } else { "MISMATCH" }
        );
    }
    connection.close(0u32.into(), b"done");
    endpoint.close().await;
    anyhow::ensure!(hash_ok, "the data did not match its hash");
    Ok(())
}

/// Prints a path event on every change between direct and relay, and records when the path first went
/// direct.
async fn watch_path(
    endpoint: Endpoint,
    provider: NodeId,
    start: Instant,
    json: bool,
    (first_direct, changes): (Arc<OnceLock<Duration>>, Arc<AtomicU32>),
) {
    let mut conn_type = endpoint.conn_type(provider);
    let mut last = "";
    loop {
        let word = path_word(&conn_type.borrow_and_update());
        if word != last && !matches!(*conn_type.borrow(), ConnectionType::None) {
            if word == "direct" {
                let _ = first_direct.set(start.elapsed());
            }
            if !last.is_empty() {
                changes.fetch_add(1, Ordering::Relaxed);
            }
            if json {
                println!(
                    "{}",
                    json!({ "event": "path", "path": word, "elapsed_ms": start.elapsed().as_secs_f64() * 1000.0 })
                );
            }
            last = word;
        }
        if conn_type.changed().await.is_err() {
            return;
        }
    }
}

/// `direct` for a direct path, `relay` when the relay carries traffic (alone or alongside a new path).
fn path_word(conn_type: &ConnectionType) -> &'static str {
    match conn_type {
        ConnectionType::Direct(_) => "direct",
        _ => "relay",
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// The bytes the provider serves: a cheap pseudo-random stream (xorshift64), the same for every fetch, so
/// that the fetcher can check each byte as it arrives, whatever sizes the reads come in.
struct Content {
    state: u64,
    /// The current 8-byte word, and how much of it is used.
    word: [u8; 8],
    used: usize,
}

impl Default for Content {
    fn default() -> Self {
        Self {
            state: 0x7a5f,
            word: [0; 8],
            used: 8,
        }
    }
}

impl Content {
    /// Fills `buf` with the next `buf.len()` bytes of the stream.
    fn fill(&mut self, buf: &mut [u8]) {
        // What is left of the current word, then whole words, then the start of the next one.
        let head = (8 - self.used).min(buf.len());
        let (first, rest) = buf.split_at_mut(head);
        first.copy_from_slice(&self.word[self.used..self.used + head]);
        self.used += head;
        let mut words = rest.chunks_exact_mut(8);
        for word in &mut words {
            word.copy_from_slice(&self.next_word());
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            self.word = self.next_word();
            tail.copy_from_slice(&self.word[..tail.len()]);
            self.used = tail.len();
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state.to_le_bytes()
    }
}
