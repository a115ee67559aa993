//! Bulk throughput in three shapes (one stream; parallel streams on one connection; many clients, each with
//! its own endpoint and connection, at once), the modes interleaved round by round, with the CPU time both
//! ends spent per GiB moved.
//!
//! Every connection is made, settled on its mode's path and warmed up (32 MiB, so congestion windows and
//! path MTU discovery are past their start) before the first measured round. In each round every mode runs
//! once, starting with a different mode each round, so slow phases of a noisy machine fall on all modes
//! alike. A round moves `size` bytes in total, split evenly over the streams or clients, and its rate is
//! that total over the time from opening the first stream until the last server's byte count arrived.
//!
//! CPU time is this process's (both ends of every connection run here) plus, for the relay-only mode, the
//! relay process's, from `/proc/PID/stat` around each round; the figures are seconds per GiB moved.
//! Path counters of the magic socket are checked around each round: a direct round must send nothing
//! through the relay, a relay-only round nothing over direct UDP. The senders' QUIC view (packets sent and
//! declared lost, congestion events; smoothed RTT and congestion window sampled every 20 ms) is kept with
//! each figure, since it tells why a path is as fast as it is.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::{
    sync::oneshot,
    task::{JoinHandle, JoinSet},
};

use crate::{
    Result,
    setup::{Bed, Mode, Side, push},
    sys::{cpu_seconds, median},
};

/// Bytes moved on each connection before the first measured round.
const WARM_UP: u64 = 32 * 1024 * 1024;
const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// How the bytes of a round are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One stream on one connection.
    Single,
    /// This many streams at once on one connection.
    Streams(usize),
    /// This many clients at once, each its own endpoint, connection and stream.
    Clients(usize),
}

impl Shape {
    /// A short description for the table, with the per-stream size.
    pub(crate) fn describe(self, size: u64) -> String {
        let per = |n: usize| crate::human_size(size / u64::try_from(n.max(1)).unwrap_or(1));
        match self {
            Self::Single => format!("1 stream of {}", crate::human_size(size)),
            Self::Streams(n) => format!("{n} streams x {}", per(n)),
            Self::Clients(n) => format!("{n} clients x {}", per(n)),
        }
    }

    fn clients(self) -> usize {
        match self {
            Self::Clients(n) => n.max(1),
            _ => 1,
        }
    }

    /// `(connection index, bytes)` of each stream of a round.
    fn jobs(self, size: u64) -> Vec<(usize, u64)> {
        let n = match self {
            Self::Single => 1,
            Self::Streams(n) | Self::Clients(n) => n.max(1),
        };
        let count = u64::try_from(n).unwrap_or(1);
        let (each, extra) = (size / count, size % count);
        (0..n)
            .map(|i| {
                let conn = if matches!(self, Self::Clients(_)) {
                    i
                } else {
                    0
                };
                (conn, each + if i == 0 { extra } else { 0 })
            })
            .collect()
    }
}

/// One mode's figures for one shape.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ModeThroughput {
    /// The mode.
    pub(crate) mode: Mode,
    /// The rate of each round, MiB/s.
    pub(crate) rounds_mib_per_s: Vec<f64>,
    /// The median rate, MiB/s.
    pub(crate) mib_per_s: f64,
    /// CPU seconds of this process (both ends) per GiB moved, over all rounds.
    pub(crate) cpu_s_per_gib: f64,
    /// CPU seconds of the relay process per GiB moved (relay-only mode).
    pub(crate) relay_cpu_s_per_gib: Option<f64>,
    /// QUIC datagrams the magic sockets could not hand to the relay client (its queue full), all rounds.
    pub(crate) relay_send_dropped: u64,
    /// Datagrams that took the wrong path for the mode, all rounds (should be 0).
    pub(crate) wrong_path_datagrams: u64,
    /// The senders' QUIC view, all rounds: packets sent, packets declared lost, congestion events.
    pub(crate) quic_sent_packets: u64,
    /// Packets the senders declared lost.
    pub(crate) quic_lost_packets: u64,
    /// Congestion events (window reductions) at the senders.
    pub(crate) quic_congestion_events: u64,
    /// Median of the first sender's smoothed RTT, sampled every 20 ms during the rounds, ms.
    pub(crate) rtt_ms: f64,
    /// Median of the first sender's congestion window, sampled likewise, KiB.
    pub(crate) cwnd_kib: f64,
}

/// One shape's figures for every mode.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ShapeThroughput {
    /// What was moved.
    pub(crate) shape: String,
    /// Per mode, in the order measured.
    pub(crate) modes: Vec<ModeThroughput>,
}

/// A mode's connections for one shape.
struct Lane<'a> {
    bed: &'a Bed,
    diallers: Vec<Side>,
    conns: Vec<crate::setup::BenchConn>,
    rates: Vec<f64>,
    cpu: f64,
    relay_cpu: f64,
    bytes: u64,
    relay_dropped: u64,
    wrong_path: u64,
    /// Sent, lost, congestion events.
    quic: (u64, u64, u64),
    rtt_ms: Vec<f64>,
    cwnd_kib: Vec<f64>,
}

impl<'a> Lane<'a> {
    async fn open(bed: &'a Bed, clients: usize) -> Result<Self> {
        // Clients connect at once: settling on the relay-only path takes seconds (until the direct
        // candidates have failed), and there is no reason to wait for that one client at a time.
        let mut opening = JoinSet::new();
        for _ in 0..clients {
            let bed = bed.clone();
            opening.spawn(async move {
                let dialler = bed.dialler().await?;
                let conn = bed.connect(&dialler).await?;
                bed.settle(&dialler).await?;
                push(&conn, WARM_UP).await?;
                Result::<_>::Ok((dialler, conn))
            });
        }
        let (mut diallers, mut conns) = (Vec::new(), Vec::new());
        while let Some(opened) = opening.join_next().await {
            let (dialler, conn) = opened??;
            diallers.push(dialler);
            conns.push(conn);
        }
        Ok(Self {
            bed,
            diallers,
            conns,
            rates: Vec::new(),
            cpu: 0.0,
            relay_cpu: 0.0,
            bytes: 0,
            relay_dropped: 0,
            wrong_path: 0,
            quic: (0, 0, 0),
            rtt_ms: Vec::new(),
            cwnd_kib: Vec::new(),
        })
    }

    /// `(sent over UDP, sent to the relay, dropped before the relay)` summed over both ends.
    fn counters(&self) -> (u64, u64, u64) {
        let mut sums = (0, 0, 0);
        for side in self.diallers.iter().chain([self.bed.server()]) {
            if let Some(stats) = side.stats() {
                sums.0 += stats.send_udp;
                sums.1 += stats.send_relay;
                sums.2 += stats.send_relay_dropped;
            }
        }
        sums
    }

    /// `(sent packets, lost packets, congestion events)` over the diallers' connections (the senders).
    fn quic_counters(&self) -> (u64, u64, u64) {
        self.conns.iter().fold((0, 0, 0), |sums, conn| {
            let path = conn.stats().path;
            (
                sums.0 + path.sent_packets,
                sums.1 + path.lost_packets,
                sums.2 + path.congestion_events,
            )
        })
    }

    async fn round(&mut self, shape: Shape, size: u64, relay_pid: Option<u32>) -> Result<()> {
        let relay_pid = relay_pid.filter(|_| self.bed.mode() == Mode::Relay);
        let before = self.counters();
        let relay_cpu_before = relay_pid.map(|p| cpu_seconds(Some(p))).transpose()?;
        let cpu_before = cpu_seconds(None)?;
        let path_before = self.quic_counters();
        let (stop, sampler) = sample_path((*self.conns[0]).clone());
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for (index, bytes) in shape.jobs(size) {
            let conn = self.conns[index].clone();
            tasks.spawn(async move { push(&conn, bytes).await });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let elapsed = start.elapsed().as_secs_f64();
        self.cpu += cpu_seconds(None)? - cpu_before;
        stop.send(()).ok();
        let (rtts, cwnds) = sampler.await?;
        self.rtt_ms.extend(rtts);
        self.cwnd_kib.extend(cwnds);
        let path_after = self.quic_counters();
        self.quic.0 += path_after.0 - path_before.0;
        self.quic.1 += path_after.1 - path_before.1;
        self.quic.2 += path_after.2 - path_before.2;
        if let (Some(pid), Some(before)) = (relay_pid, relay_cpu_before) {
            self.relay_cpu += cpu_seconds(Some(pid))? - before;
        }
        let after = self.counters();
        self.relay_dropped += after.2 - before.2;
        self.wrong_path += match self.bed.mode() {
            Mode::Raw => 0,
            Mode::Direct => after.1 - before.1,
            Mode::Relay => after.0 - before.0,
        };
        self.bytes += size;
        self.rates.push(size as f64 / MIB / elapsed);
        Ok(())
    }

    async fn finish(self) -> ModeThroughput {
        for conn in &self.conns {
            conn.close(0u32.into(), b"done");
        }
        let mut closing = JoinSet::new();
        for dialler in self.diallers {
            closing.spawn(async move { dialler.close().await });
        }
        closing.join_all().await;
        let gib = self.bytes as f64 / GIB;
        let mode = self.bed.mode();
        ModeThroughput {
            mode,
            mib_per_s: median(&self.rates),
            rounds_mib_per_s: self.rates,
            cpu_s_per_gib: self.cpu / gib,
            relay_cpu_s_per_gib: (mode == Mode::Relay).then_some(self.relay_cpu / gib),
            relay_send_dropped: self.relay_dropped,
            wrong_path_datagrams: self.wrong_path,
            quic_sent_packets: self.quic.0,
            quic_lost_packets: self.quic.1,
            quic_congestion_events: self.quic.2,
            rtt_ms: median(&self.rtt_ms),
            cwnd_kib: median(&self.cwnd_kib),
        }
    }
}

/// RTT and congestion window samples.
type Samples = (Vec<f64>, Vec<f64>);

/// Samples `conn`'s smoothed RTT (ms) and congestion window (KiB) every 20 ms until told to stop.
fn sample_path(conn: quinn::Connection) -> (oneshot::Sender<()>, JoinHandle<Samples>) {
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let (mut rtts, mut cwnds) = (Vec::new(), Vec::new());
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {
                    let path = conn.stats().path;
                    rtts.push(path.rtt.as_secs_f64() * 1e3);
                    cwnds.push(path.cwnd as f64 / 1024.0);
                }
            }
        }
        (rtts, cwnds)
    });
    (stop, task)
}

/// Measures `shape` on every bed, `rounds` rounds of `size` bytes, interleaved.
pub(crate) async fn measure(
    beds: &[Bed],
    shape: Shape,
    size: u64,
    rounds: usize,
    relay_pid: Option<u32>,
) -> Result<ShapeThroughput> {
    let mut lanes = Vec::new();
    for bed in beds {
        lanes.push(Lane::open(bed, shape.clients()).await?);
    }
    for round in 0..rounds {
        for offset in 0..lanes.len() {
            let index = (round + offset) % lanes.len();
            let lane = &mut lanes[index];
            lane.round(shape, size, relay_pid).await?;
            eprintln!(
                "  {} round {}: {} {:.1} MiB/s",
                shape.describe(size),
                round + 1,
                lane.bed.mode().label(),
                lane.rates.last().copied().unwrap_or(f64::NAN)
            );
        }
    }
    let mut modes = Vec::new();
    for lane in lanes {
        modes.push(lane.finish().await);
    }
    Ok(ShapeThroughput {
        shape: shape.describe(size),
        modes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_cover_the_size() {
        for shape in [Shape::Single, Shape::Streams(4), Shape::Clients(10)] {
            let jobs = shape.jobs(1_000_003);
            assert_eq!(jobs.iter().map(|j| j.1).sum::<u64>(), 1_000_003);
            let conns = jobs.iter().map(|j| j.0).max().unwrap() + 1;
            assert_eq!(conns, shape.clients());
        }
    }
}
