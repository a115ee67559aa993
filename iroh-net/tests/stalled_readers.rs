//! 1,000 connections whose readers stop reading: what a peer can make this end buffer stays bounded by
//! the initial connection window (the Endpoint grows a connection's windows only while data is consumed
//! fast), so memory grows by well under a megabyte per connection, where fixed 16 MiB windows would let
//! each connection pin 16 MiB.
//!
//! Both ends run in this process (its own test binary, so no other test shares the process). Prints the
//! figures; `cargo test --release -p iroh-net --test stalled_readers -- --nocapture` gives the ones in
//! BENCHMARKS.md.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use iroh_net::endpoint::{Endpoint, WindowTuning};

const ALPN: &[u8] = b"stalled/1";
const CONNECTIONS: usize = 1000;
/// What each sender tries to write: far more than any window lets through unread.
const WRITE: usize = 4 * 1024 * 1024;
/// The data written, shared by all senders: in zero-filled static memory, whose pages take no memory until
/// written (quinn copies into its send buffer only what the windows let it take).
static DATA: [u8; WRITE] = [0; WRITE];

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("a kB field")
}

async fn endpoint(alpns: Vec<Vec<u8>>) -> Endpoint {
    Endpoint::builder()
        .alpns(alpns)
        .bind_addr_v4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .bind_addr_v6(None)
        .bind()
        .await
        .expect("bind")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_readers_hold_bounded_memory() {
    tokio::time::timeout(Duration::from_secs(300), async {
        let server = endpoint(vec![ALPN.to_vec()]).await;
        let client = endpoint(vec![]).await;
        let addr = server.node_addr();
        // Accept everything and hold each stream without reading it.
        let held = tokio::spawn({
            let server = server.clone();
            async move {
                let mut held = Vec::new();
                while held.len() < CONNECTIONS {
                    let Some(incoming) = server.accept().await else {
                        break;
                    };
                    let conn = incoming.await.expect("accept");
                    let stream = conn.accept_uni().await.expect("a stream");
                    held.push((conn, stream));
                }
                held
            }
        });
        let before = status_kib("VmRSS");
        let started = Instant::now();
        let mut conns = Vec::new();
        let mut writers = Vec::new();
        let mut connecting = tokio::task::JoinSet::new();
        for i in 0..CONNECTIONS {
            let (client, addr) = (client.clone(), addr.clone());
            connecting.spawn(async move { client.connect(addr, ALPN).await.expect("connect") });
            // A hundred handshakes at a time.
            if connecting.len() >= 100 || i + 1 == CONNECTIONS {
                while let Some(conn) = connecting.join_next().await {
                    let conn = conn.expect("connect task");
                    let mut send = conn.open_uni().await.expect("open");
                    writers.push(tokio::spawn(async move {
                        // Blocks once the window is full: nobody reads.
                        let _ = send.write_all(&DATA).await;
                        send
                    }));
                    conns.push(conn);
                }
            }
        }
        let held = held.await.expect("acceptor");
        // Wait until no more data arrives (keep-alives and pings still do, a few hundred bytes per
        // connection): every window is full.
        let received = |held: &[(iroh_net::endpoint::Connection, _)]| -> u64 {
            held.iter().map(|(c, _)| c.stats().udp_rx.bytes).sum()
        };
        let mut last = received(&held);
        let settle = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = received(&held);
            let grew = now - last;
            last = now;
            if grew < 1024 * CONNECTIONS as u64 || settle.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        let after = status_kib("VmRSS");
        let peak = status_kib("VmHWM");
        let per_connection = after.saturating_sub(before) / CONNECTIONS as u64;
        let window = WindowTuning::default().initial_receive;
        println!(
            "{CONNECTIONS} connections set up and stalled in {:.1} s",
            settle.duration_since(started).as_secs_f64()
        );
        println!(
            "{CONNECTIONS} stalled connections: RSS {before} -> {after} KiB (peak {peak} KiB), \
             {per_connection} KiB per connection (both ends), {} KiB received per connection",
            last / CONNECTIONS as u64 / 1024
        );
        // The windows filled: each reader holds about a window of unread data...
        assert!(
            last / CONNECTIONS as u64 >= window * 3 / 4,
            "{} bytes per connection",
            last / CONNECTIONS as u64
        );
        // ... and no more: a receive window, the sender's buffered send window, and overhead.
        let bound_kib = (window + WindowTuning::default().initial_send) / 1024 + 256;
        assert!(
            per_connection <= bound_kib,
            "{per_connection} KiB per connection (bound {bound_kib} KiB)"
        );
        for writer in writers {
            writer.abort();
        }
        drop(held);
        drop(conns);
        client.close().await;
        server.close().await;
    })
    .await
    .expect("within the timeout");
}
