//! Relay benchmark: runs the built `iroh-relay` binary in its own process (release build under `cargo bench`)
//! and measures, on loopback:
//!
//! - relayed throughput between two raw clients, plain HTTP and TLS, with 1200-byte datagrams (one per frame)
//!   and with 64 KiB GSO batches of 1200-byte segments: payload Gbit/s and datagrams/s as received. The sender
//!   keeps at most a window of bytes in flight (sent but not yet received) so the figure is the sustained
//!   forwarding rate, not the rate at which the relay can drop;
//! - the same through the crate's client (`connect_once`) over TLS with each transport, the relay protocol's
//!   own upgrade and WebSocket, and their ratio;
//! - the relay's resident memory per idle client: VmRSS of the relay process before and after 1,000 clients
//!   log in and sit idle.
//!
//! Run: `cargo bench -p iroh-relay --bench relay` (optionally `-- --secs 10` for longer runs, `-- --quick`
//! for a short smoke run). The clients share the machine with the relay, so on a small machine the figures
//! include the clients' own TLS and syscall costs.
#![cfg(feature = "server")]
#![allow(clippy::print_stdout)] // A benchmark's job is to print its figures.

#[path = "../tests/server_support/mod.rs"]
#[allow(unreachable_pub, unused_imports)]
mod server_support;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    num::NonZeroU16,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use iroh_base::SecretKey;
use iroh_relay::{
    client::{
        ConnectOptions, ConnectionReader, ConnectionWriter, Transport as ClientTransport,
        connect_once,
    },
    protos::frame::{Datagrams, Ecn, Frame, MAX_PAYLOAD},
};
use rustls::pki_types::CertificateDer;
use server_support::{TestClient, Transport};
use tokio::sync::Notify;

const BIN: &str = env!("CARGO_BIN_EXE_iroh-relay");
/// Bytes the sender may have in flight.
const WINDOW: u64 = 4 * 1024 * 1024;
/// The datagram size: a typical QUIC packet.
const DATAGRAM: u16 = 1200;
const IDLE_CLIENTS: usize = 1000;

/// The relay binary running in its own process.
struct Relay {
    child: Child,
    addr: SocketAddr,
    roots: Vec<CertificateDer<'static>>,
}

impl Relay {
    fn start(dir: &Path, tls: bool) -> Self {
        let mut config = String::from("relay_bind = \"127.0.0.1:0\"\n");
        let mut roots = Vec::new();
        if tls {
            let certified =
                rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
            std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("write cert");
            std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem())
                .expect("write key");
            config.push_str(
                "[tls]\nmode = \"files\"\ncert_path = \"cert.pem\"\nkey_path = \"key.pem\"\n",
            );
            roots.push(certified.cert.der().clone());
        }
        let path = dir.join(if tls { "tls.toml" } else { "plain.toml" });
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn,iroh_relay=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("relay binary starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("relay logs its URL")
                .expect("read relay log");
            if let Some(rest) = line.split("relay URL: ").nth(1) {
                let url: iroh_base::RelayUrl = rest
                    .split_whitespace()
                    .next()
                    .expect("URL")
                    .parse()
                    .expect("valid URL");
                break url.port().expect("port");
            }
        };
        // Keep draining the log so the relay never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            roots,
        }
    }

    fn transport(&self) -> Transport {
        Transport::with_roots(self.addr, self.roots.clone())
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("relay status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("VmRSS")
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

struct Throughput {
    gbit_per_s: f64,
    datagrams_per_s: f64,
}

/// The sending end of a throughput run: the raw test client, or the crate's client over either transport.
enum Sender {
    Raw(Box<TestClient>),
    Client(ConnectionWriter),
}

impl Sender {
    async fn queue(&mut self, frame: &Frame) {
        match self {
            Self::Raw(client) => client.writer.queue(frame).await.expect("send"),
            Self::Client(writer) => writer.queue(frame).await.expect("send"),
        }
    }

    async fn flush(&mut self) {
        match self {
            Self::Raw(client) => client.writer.flush().await.expect("flush"),
            Self::Client(writer) => writer.flush().await.expect("flush"),
        }
    }
}

/// The receiving end of a throughput run.
enum Receiver {
    Raw(Box<TestClient>),
    Client(ConnectionReader, ConnectionWriter),
}

impl Receiver {
    async fn next(&mut self) -> Option<Frame> {
        match self {
            Self::Raw(client) => client.reader.read_frame().await.ok().flatten(),
            Self::Client(reader, _) => reader.recv().await.ok().flatten(),
        }
    }

    async fn pong(&mut self, data: [u8; 8]) {
        let _ = match self {
            Self::Raw(client) => client.writer.send(&Frame::Pong(data)).await,
            Self::Client(_, writer) => writer.send(&Frame::Pong(data)).await,
        };
    }
}

/// Two raw test clients.
async fn raw_pair(transport: &Transport) -> (Sender, Receiver, iroh_base::NodeId) {
    let sender = TestClient::connect(transport, SecretKey::generate()).await;
    let receiver = TestClient::connect(transport, SecretKey::generate()).await;
    let dst = receiver.node_id();
    (
        Sender::Raw(Box::new(sender)),
        Receiver::Raw(Box::new(receiver)),
        dst,
    )
}

/// Two of the crate's clients (one connection each, no reconnects) over `kind`.
async fn client_pair(
    relay: &Relay,
    kind: ClientTransport,
) -> (Sender, Receiver, iroh_base::NodeId) {
    let url: iroh_base::RelayUrl = format!("https://localhost:{}", relay.addr.port())
        .parse()
        .expect("url");
    let connect = |key: SecretKey| {
        let options = ConnectOptions::new(url.clone(), key)
            .extra_roots(relay.roots.clone())
            .transport(kind);
        async move { connect_once(&options).await.expect("connect") }
    };
    let (_, sender) = connect(SecretKey::generate()).await.split();
    let key = SecretKey::generate();
    let dst = key.public();
    let (reader, writer) = connect(key).await.split();
    (
        Sender::Client(sender),
        Receiver::Client(reader, writer),
        dst,
    )
}

/// Relays `batch` from `sender` to `receiver` (node `dst`) for `secs` seconds, keeping at most [`WINDOW`]
/// in flight.
async fn throughput(
    (mut sender, mut receiver, dst): (Sender, Receiver, iroh_base::NodeId),
    batch: Datagrams,
    secs: f64,
) -> Throughput {
    let per_frame_bytes = batch.contents.len() as u64;
    let per_frame_datagrams = batch.iter().count() as u64;
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let done = Arc::new(AtomicBool::new(false));

    let recv_task = {
        let received = received.clone();
        let progress = progress.clone();
        let done = done.clone();
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_secs(2), receiver.next()).await {
                    Ok(Some(Frame::RecvDatagrams { datagrams, .. })) => {
                        received.fetch_add(datagrams.contents.len() as u64, Ordering::Relaxed);
                        progress.notify_one();
                    }
                    Ok(Some(Frame::Ping(data))) => receiver.pong(data).await,
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
        })
    };

    let frame = Frame::SendDatagrams {
        dst,
        datagrams: batch,
    };
    let mut sent = 0u64;
    // Warm up for half a second, then measure.
    let warmup = Instant::now() + Duration::from_millis(500);
    let mut start: Option<(Instant, u64)> = None;
    let end = warmup + Duration::from_secs_f64(secs);
    loop {
        let now = Instant::now();
        if start.is_none() && now >= warmup {
            start = Some((now, received.load(Ordering::Relaxed)));
        }
        if now >= end {
            break;
        }
        while sent.saturating_sub(received.load(Ordering::Relaxed)) >= WINDOW {
            let wait = progress.notified();
            if sent.saturating_sub(received.load(Ordering::Relaxed)) < WINDOW {
                break;
            }
            if tokio::time::timeout(Duration::from_millis(200), wait)
                .await
                .is_err()
            {
                // Something was dropped: forget it rather than stall.
                sent = received.load(Ordering::Relaxed);
            }
        }
        // Queue up to a quarter window, then flush.
        let mut queued = 0;
        while queued < WINDOW / 4 && sent.saturating_sub(received.load(Ordering::Relaxed)) < WINDOW
        {
            sender.queue(&frame).await;
            sent += per_frame_bytes;
            queued += per_frame_bytes;
        }
        sender.flush().await;
    }
    let (started, received_at_start) = start.expect("measured");
    let elapsed = started.elapsed().as_secs_f64();
    let bytes = received.load(Ordering::Relaxed) - received_at_start;
    done.store(true, Ordering::Relaxed);
    drop(sender);
    let _ = recv_task.await;
    Throughput {
        gbit_per_s: bytes as f64 * 8.0 / elapsed / 1e9,
        datagrams_per_s: (bytes / per_frame_bytes * per_frame_datagrams) as f64 / elapsed,
    }
}

/// RSS growth of the relay per idle client, in KiB.
async fn rss_per_idle_client(relay: &Relay) -> (u64, u64, f64) {
    let transport = relay.transport();
    // One client first so lazily-initialised state (TLS, tables) is not charged to the others.
    let warm = TestClient::connect(&transport, SecretKey::generate()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = relay.rss_kib();
    let mut clients = Vec::with_capacity(IDLE_CLIENTS);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IDLE_CLIENTS {
        let transport = transport.clone();
        tasks.spawn(async move { TestClient::connect(&transport, SecretKey::generate()).await });
        // Fewer at once than the relay's 64 unfinished handshakes per source (`max_pending_per_source`).
        if tasks.len() >= 32 {
            clients.push(tasks.join_next().await.expect("task").expect("client"));
        }
    }
    while let Some(client) = tasks.join_next().await {
        clients.push(client.expect("client"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = relay.rss_kib();
    drop((warm, clients));
    (
        before,
        after,
        (after.saturating_sub(before)) as f64 / IDLE_CLIENTS as f64,
    )
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iroh-relay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let secs = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 1.0 } else { 5.0 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = scratch_dir();
    let single = Datagrams::single(Bytes::from(vec![0xabu8; usize::from(DATAGRAM)]));
    let gso = Datagrams {
        ecn: Ecn::Ect0,
        segment_size: NonZeroU16::new(DATAGRAM),
        contents: Bytes::from(vec![0xcdu8; MAX_PAYLOAD]),
    };
    println!(
        "relay benchmark: {secs} s per run, window {} KiB",
        WINDOW / 1024
    );
    for tls in [false, true] {
        let mode = if tls { "TLS" } else { "plain" };
        let relay = Relay::start(&dir, tls);
        runtime.block_on(async {
            let transport = relay.transport();
            for (name, batch) in [("1200 B datagrams", &single), ("64 KiB GSO batches", &gso)] {
                let result = throughput(raw_pair(&transport).await, batch.clone(), secs).await;
                println!(
                    "throughput {mode:5} {name:18}: {:6.2} Gbit/s {:>10.0} datagrams/s",
                    result.gbit_per_s, result.datagrams_per_s
                );
            }
            if tls {
                // The crate's client over each transport, same relay, same run.
                // Three rounds, alternating, and the medians: a shared 2-core machine drifts by more than
                // the difference being measured.
                for (name, batch) in [("1200 B datagrams", &single), ("64 KiB GSO batches", &gso)] {
                    let mut gbit = [Vec::new(), Vec::new()];
                    for _ in 0..3 {
                        for (i, kind) in [ClientTransport::Relay, ClientTransport::WebSocket]
                            .into_iter()
                            .enumerate()
                        {
                            let pair = client_pair(&relay, kind).await;
                            gbit[i].push(throughput(pair, batch.clone(), secs).await.gbit_per_s);
                        }
                    }
                    let [relayed, ws] = gbit.map(|mut runs| {
                        runs.sort_by(f64::total_cmp);
                        runs[1]
                    });
                    println!(
                        "client     TLS   {name:18}: relay upgrade {relayed:5.2} Gbit/s, WebSocket {ws:5.2} Gbit/s (medians of 3) = {:.2}x",
                        ws / relayed
                    );
                }
            }
        });
        relay.stop();
        if !quick {
            // A fresh relay, so memory freed by the throughput runs does not hide the clients' cost.
            let relay = Relay::start(&dir, tls);
            let (before, after, per_client) = runtime.block_on(rss_per_idle_client(&relay));
            println!(
                "memory     {mode:5} {IDLE_CLIENTS} idle clients: relay RSS {before} KiB -> {after} KiB = {per_client:.1} KiB per client"
            );
            relay.stop();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
