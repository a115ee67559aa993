//! The relay server on its own: datagrams per second and Gbit/s through it over TLS, and its resident
//! memory per idle client.
//!
//! Throughput: two `iroh_relay::client::Client`s (the client the magic socket uses) log in to the relay
//! process; one sends datagram frames to the other for a fixed time after a warm-up. The sender keeps at
//! most [`WINDOW`] bytes in flight (sent, not yet received), so the figure is the sustained forwarding rate
//! without drops, not the rate at which the relay can discard. Three cases: single 1200-byte datagrams (one
//! per frame, what a QUIC packet without GSO is), batches of ten 1452-byte segments (what the magic socket
//! sends for one quinn transmit on loopback) and 64 KiB batches of 1200-byte segments (the largest frame).
//! The relay process's CPU time per GiB relayed is read from `/proc/PID/stat`.
//!
//! Memory: a fresh relay process (so nothing freed by earlier measures hides the clients' cost); one client
//! logs in first so lazily initialised state is not charged to the others; then `n` clients log in with
//! `iroh_relay::client::connect_once` and stay idle for two seconds; the figure is the growth of the relay's
//! `VmRSS` divided by `n`.

use std::{
    num::NonZeroU16,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use iroh_base::SecretKey;
use iroh_relay::{
    client::{Client, ClientBuilder, ConnectOptions, ReceivedEvent, connect_once},
    protos::frame::{Datagrams, Ecn, MAX_PAYLOAD},
};
use serde::Serialize;
use tokio::{sync::Notify, task::JoinSet};

use crate::{
    Result,
    relay_proc::{RelayInfo, RelayProcess},
    sys::{cpu_seconds, rss_kib},
};

/// Bytes the sender may have in flight.
const WINDOW: u64 = 4 * 1024 * 1024;
/// A typical QUIC packet.
const DATAGRAM: u16 = 1200;
/// The QUIC datagram size on loopback once path MTU discovery is done.
const QUIC_SEGMENT: u16 = 1452;
/// The most segments quinn puts in one GSO transmit.
const QUINN_GSO_SEGMENTS: usize = 10;
/// How long the flow runs before the measurement starts.
const WARM_UP: Duration = Duration::from_millis(500);
/// How long the idle clients sit before the relay's memory is read.
const IDLE: Duration = Duration::from_secs(2);
/// Logins in flight at once while the idle clients connect.
const LOGIN_CONCURRENCY: usize = 64;

/// The relay's throughput for one kind of frame.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RelayThroughput {
    /// What was sent.
    pub(crate) case: String,
    /// Payload bits per second received, 10^9.
    pub(crate) gbit_per_s: f64,
    /// Datagrams per second received.
    pub(crate) datagrams_per_s: f64,
    /// The relay process's CPU seconds per GiB of payload relayed.
    pub(crate) relay_cpu_s_per_gib: f64,
}

/// The relay's memory per idle client.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RelayMemory {
    /// Idle clients connected.
    pub(crate) clients: usize,
    /// Relay `VmRSS` before they connected, KiB.
    pub(crate) rss_before_kib: u64,
    /// Relay `VmRSS` with them idle, KiB.
    pub(crate) rss_after_kib: u64,
    /// The growth per client, KiB.
    pub(crate) kib_per_client: f64,
}

async fn client(relay: &RelayInfo, key: SecretKey) -> Result<Client> {
    let client = ClientBuilder::new(relay.url.clone(), key)
        .extra_roots(relay.roots())
        .build();
    tokio::time::timeout(
        Duration::from_secs(10),
        client.state().wait_for(|s| s.is_connected()),
    )
    .await
    .map_err(|_| "relay client did not connect")??;
    Ok(client)
}

/// Relays single datagrams and GSO batches for `secs` seconds each.
pub(crate) async fn throughput(
    server: &tokio::runtime::Handle,
    relay: &RelayInfo,
    pid: u32,
    secs: f64,
) -> Result<Vec<RelayThroughput>> {
    let single = Datagrams::single(Bytes::from(vec![0xabu8; usize::from(DATAGRAM)]));
    let batch = |segment: u16, count: usize| Datagrams {
        ecn: Ecn::Ect0,
        segment_size: NonZeroU16::new(segment),
        contents: Bytes::from(vec![0xcdu8; usize::from(segment) * count]),
    };
    let full = batch(DATAGRAM, MAX_PAYLOAD / usize::from(DATAGRAM));
    // What the magic socket hands the relay client for one quinn transmit: quinn sends at most 10
    // segments per GSO transmit, of 1452 bytes once path MTU discovery is done on loopback.
    let quinn = batch(QUIC_SEGMENT, QUINN_GSO_SEGMENTS);
    let mut results = Vec::new();
    for (case, datagrams) in [
        ("1200 B datagrams, one per frame", single),
        ("10 x 1452 B batches (one quinn GSO transmit)", quinn),
        ("64 KiB GSO batches of 1200 B", full),
    ] {
        let result = flow(server, relay, pid, datagrams, secs, case).await?;
        eprintln!(
            "  relay {case}: {:.2} Gbit/s, {:.0} datagrams/s",
            result.gbit_per_s, result.datagrams_per_s
        );
        results.push(result);
    }
    Ok(results)
}

async fn flow(
    server: &tokio::runtime::Handle,
    relay: &RelayInfo,
    pid: u32,
    datagrams: Datagrams,
    secs: f64,
    case: &str,
) -> Result<RelayThroughput> {
    let sender = client(relay, SecretKey::generate()).await?;
    let receiver_key = SecretKey::generate();
    let dst = receiver_key.public();
    // The receiver runs on the accepting side's runtime, as the servers of the endpoint measures do.
    let mut receiver = {
        let relay = relay.clone();
        server
            .spawn(async move { client(&relay, receiver_key).await })
            .await??
    };
    let frame_bytes = u64::try_from(datagrams.contents.len())?;
    let frame_datagrams = u64::try_from(datagrams.iter().count())?;
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let done = Arc::new(AtomicBool::new(false));
    let recv_task = {
        let (received, progress, done) = (received.clone(), progress.clone(), done.clone());
        server.spawn(async move {
            while !done.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(500), receiver.recv()).await {
                    Ok(Some(ReceivedEvent::Datagrams { datagrams, .. })) => {
                        let len = u64::try_from(datagrams.contents.len()).unwrap_or(0);
                        received.fetch_add(len, Ordering::Relaxed);
                        progress.notify_one();
                    }
                    Ok(Some(_)) | Err(_) => {}
                    Ok(None) => break,
                }
            }
            receiver.close().await;
        })
    };
    let mut sent = 0u64;
    let warm_until = Instant::now() + WARM_UP;
    let end = warm_until + Duration::from_secs_f64(secs);
    let mut start: Option<(Instant, u64, f64)> = None;
    loop {
        let now = Instant::now();
        if start.is_none() && now >= warm_until {
            start = Some((
                now,
                received.load(Ordering::Relaxed),
                cpu_seconds(Some(pid))?,
            ));
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
        sender.send(dst, datagrams.clone()).await?;
        sent += frame_bytes;
    }
    let (started, received_at_start, cpu_at_start) = start.ok_or("no measurement window")?;
    let elapsed = started.elapsed().as_secs_f64();
    let bytes = received.load(Ordering::Relaxed) - received_at_start;
    let relay_cpu = cpu_seconds(Some(pid))? - cpu_at_start;
    done.store(true, Ordering::Relaxed);
    sender.close().await;
    recv_task.await?;
    let frames = bytes / frame_bytes;
    Ok(RelayThroughput {
        case: case.to_owned(),
        gbit_per_s: bytes as f64 * 8.0 / elapsed / 1e9,
        datagrams_per_s: (frames * frame_datagrams) as f64 / elapsed,
        relay_cpu_s_per_gib: relay_cpu / (bytes as f64 / (1024.0 * 1024.0 * 1024.0)),
    })
}

/// Starts a fresh relay process and measures its memory growth for `clients` idle clients.
pub(crate) async fn memory(clients: usize, threads: Option<usize>) -> Result<RelayMemory> {
    let relay = tokio::task::block_in_place(|| RelayProcess::start(threads))?;
    let result = memory_of(&relay, clients).await;
    tokio::task::block_in_place(|| relay.stop());
    result
}

async fn memory_of(relay: &RelayProcess, clients: usize) -> Result<RelayMemory> {
    let options =
        |key| ConnectOptions::new(relay.info.url.clone(), key).extra_roots(relay.info.roots());
    let warm = connect_once(&options(SecretKey::generate())).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before_kib = rss_kib(Some(relay.pid()))?;
    let mut idle = Vec::with_capacity(clients);
    let mut logins = JoinSet::new();
    for _ in 0..clients {
        let options = options(SecretKey::generate());
        logins.spawn(async move { connect_once(&options).await });
        if logins.len() >= LOGIN_CONCURRENCY
            && let Some(done) = logins.join_next().await
        {
            idle.push(done??);
        }
    }
    while let Some(done) = logins.join_next().await {
        idle.push(done??);
    }
    tokio::time::sleep(IDLE).await;
    let rss_after_kib = rss_kib(Some(relay.pid()))?;
    drop((warm, idle));
    Ok(RelayMemory {
        clients,
        rss_before_kib,
        rss_after_kib,
        kib_per_client: rss_after_kib.saturating_sub(rss_before_kib) as f64
            / crate::sys::len_f64(clients.max(1)),
    })
}
