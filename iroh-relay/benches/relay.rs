//! Relay benchmark: runs the built `iroh-relay` binary in its own process (release build under `cargo bench`)
//! and measures, on loopback:
//!
//! - relayed throughput between two raw clients, plain HTTP and TLS, with 1200-byte datagrams (one per frame)
//!   and with 64 KiB GSO batches of 1200-byte segments: payload Gbit/s and datagrams/s as received. The sender
//!   keeps at most a window of bytes in flight (sent but not yet received) so the figure is the sustained
//!   forwarding rate, not the rate at which the relay can drop;
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
use iroh_relay::protos::frame::{Datagrams, Ecn, Frame, MAX_PAYLOAD};
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

/// Relays `batch` from one client to another for `secs` seconds, keeping at most [`WINDOW`] in flight.
async fn throughput(transport: &Transport, batch: Datagrams, secs: f64) -> Throughput {
    let mut sender = TestClient::connect(transport, SecretKey::generate()).await;
    let mut receiver = TestClient::connect(transport, SecretKey::generate()).await;
    let dst = receiver.node_id();
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
                match tokio::time::timeout(Duration::from_secs(2), receiver.reader.read_frame())
                    .await
                {
                    Ok(Ok(Some(Frame::RecvDatagrams { datagrams, .. }))) => {
                        received.fetch_add(datagrams.contents.len() as u64, Ordering::Relaxed);
                        progress.notify_one();
                    }
                    Ok(Ok(Some(Frame::Ping(data)))) => {
                        let _ = receiver.writer.send(&Frame::Pong(data)).await;
                    }
                    Ok(Ok(Some(_))) => {}
                    Ok(_) => break,
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
            sender.writer.queue(&frame).await.expect("send");
            sent += per_frame_bytes;
            queued += per_frame_bytes;
        }
        sender.writer.flush().await.expect("flush");
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
        if tasks.len() >= 64 {
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
                let result = throughput(&transport, batch.clone(), secs).await;
                println!(
                    "throughput {mode:5} {name:18}: {:6.2} Gbit/s {:>10.0} datagrams/s",
                    result.gbit_per_s, result.datagrams_per_s
                );
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
