//! Flow-control windows sized to what each connection's path needs.
//!
//! A QUIC connection's receive window is what a peer may make this end buffer for it, and its send window
//! is what this end buffers of its own unacknowledged data. Fixed windows large enough for a fast path
//! (a relayed loopback path needs about 2 MB, a 1 Gbit/s path at 100 ms needs 12.5 MB) are memory every
//! connection may pin: 16 MiB per connection is 16 GiB for 1,000 connections whose readers stop reading.
//! So the Endpoint starts every connection with small windows ([`WindowTuning::initial_receive`],
//! [`WindowTuning::initial_send`]) and grows them as the path shows it needs more:
//!
//! - **receive**: when the application reads and data arrived faster than half the window per round trip
//!   (the window is about to be what limits the sender), the window grows to twice itself or four times
//!   what arrived per round trip, whichever is more, up to [`WindowTuning::max_receive`]. Round trips
//!   count as at least 4 ms here: on loopback or a LAN the window must also cover the reader being a
//!   few milliseconds late. A reader that stops reading receives nothing beyond the window and gives no
//!   credit back, so its connection never grows: memory stays bounded by the initial window. After a
//!   long quiet spell the window halves again (credit already granted stays granted; the window only
//!   limits new grants). The window also goes to its cap when the application reads (credit goes back
//!   to the peer) and the peer still reports it is blocked by the connection window: a reader that reads
//!   streams one at a time while the peer writes them all at once would otherwise starve, the window
//!   filled by the streams it has not reached yet.
//! - **send**: four times the congestion window, between the initial and [`WindowTuning::max_send`]: one
//!   window in flight, about one more held for retransmission while losses are repaired (a lossy path
//!   at 100 ms with only twice the congestion window ran 12% below raw quinn), and room for the
//!   congestion window to grow.
//!
//! The connection window bounds what unread streams may hold together. An application that reads
//! streams strictly one after another while the peer writes many large streams at once may still starve
//! (a window filled entirely by streams it has not reached gives no credit back and looks like a reader
//! that stopped; with the window at its cap the streams ahead may still hold all of it). Such an
//! application needs a window as large as what the peer writes ahead (set
//! [`WindowTuning::max_receive`], or turn tuning off with `Builder::window_tuning(None)` and set
//! `receive_window` in the transport config), or should read its streams concurrently.
//!
//! [`Tuner`] is the sans-IO core, fed samples of a connection's counters; the Endpoint runs one small task
//! per connection that samples every few round trips (every second when nothing changes) and applies what
//! the core decides. Stream receive windows are transport parameters fixed at the handshake, so they stay
//! at the transport config's value; the connection window is what bounds a connection's memory.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How the Endpoint sizes each connection's flow-control windows (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WindowTuning {
    /// The connection receive window a connection starts with, bytes.
    pub initial_receive: u64,
    /// The most the connection receive window grows to, bytes.
    pub max_receive: u64,
    /// The send window a connection starts with, bytes.
    pub initial_send: u64,
    /// The most the send window grows to, bytes.
    pub max_send: u64,
}

impl Default for WindowTuning {
    /// Start at 256 KiB (enough for 50 Mbit/s at 40 ms without growing) and grow to 16 MiB (a relayed
    /// path on loopback, or about 1.3 Gbit/s at 100 ms).
    fn default() -> Self {
        Self {
            initial_receive: 256 * 1024,
            max_receive: 16 * 1024 * 1024,
            initial_send: 256 * 1024,
            max_send: 16 * 1024 * 1024,
        }
    }
}

/// One sample of a connection's counters.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Bytes received in UDP datagrams so far.
    pub rx_bytes: u64,
    /// Bytes sent in UDP datagrams so far.
    pub tx_bytes: u64,
    /// The congestion window, bytes.
    pub cwnd: u64,
    /// The smoothed round trip.
    pub rtt: Duration,
    /// DATA_BLOCKED frames received so far: the peer had data to send and no connection credit.
    pub peer_blocked: u64,
    /// MAX_DATA frames sent so far: credit given back, mostly because the application read.
    pub credit_updates: u64,
}

/// What [`Tuner::on_sample`] decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decision {
    /// Set the connection receive window to this.
    pub receive: Option<u64>,
    /// Set the send window to this.
    pub send: Option<u64>,
}

/// The shortest and longest time between samples.
const MIN_TICK: Duration = Duration::from_millis(20);
const IDLE_TICK: Duration = Duration::from_secs(1);
/// The least round trip the receive window is planned for: on loopback or a LAN the window must also
/// cover the receiving application being a few milliseconds late to read, or the sender stalls.
const MIN_RTT: Duration = Duration::from_millis(4);
/// Quiet samples in a row (nothing near the window received) before the receive window halves.
const SHRINK_AFTER: u32 = 30;

/// The sans-IO window tuner of one connection.
#[derive(Debug, Clone)]
pub struct Tuner {
    config: WindowTuning,
    receive: u64,
    send: u64,
    last: Option<(Instant, Sample)>,
    quiet: u32,
    idle: bool,
    /// MAX_DATA frames our own window changes caused since the last sample.
    own_updates: u64,
}

impl Tuner {
    /// A tuner for a connection that starts with the initial windows of `config`.
    pub fn new(config: WindowTuning) -> Self {
        Self {
            receive: config.initial_receive.min(config.max_receive),
            send: config.initial_send.min(config.max_send),
            config,
            last: None,
            quiet: 0,
            idle: false,
            own_updates: 0,
        }
    }

    /// The receive window now.
    pub fn receive_window(&self) -> u64 {
        self.receive
    }

    /// The send window now.
    pub fn send_window(&self) -> u64 {
        self.send
    }

    /// Takes a sample at `now` and says which windows to change.
    pub fn on_sample(&mut self, now: Instant, sample: Sample) -> Decision {
        let mut decision = Decision::default();
        let Some((then, previous)) = self.last.replace((now, sample)) else {
            return decision;
        };
        let elapsed = now.saturating_duration_since(then);
        if elapsed.is_zero() {
            return decision;
        }
        let received = sample.rx_bytes.saturating_sub(previous.rx_bytes);
        let sent = sample.tx_bytes.saturating_sub(previous.tx_bytes);
        self.idle = received == 0 && sent == 0;
        let rtt = sample.rtt.max(MIN_RTT);
        // Bytes per round trip at the rate of this interval.
        let per_rtt = u64::try_from(u128::from(received) * rtt.as_nanos() / elapsed.as_nanos())
            .unwrap_or(u64::MAX);
        // The application read (credit went back beyond what our own growth announced) and the peer still
        // ran out of credit: the window, not the reader, is what holds the connection up. That is the
        // case of a reader that reads streams one by one while the peer writes them all at once: the
        // unread streams fill the window and the one being read starves.
        let reads = sample
            .credit_updates
            .saturating_sub(previous.credit_updates)
            .saturating_sub(std::mem::take(&mut self.own_updates));
        let starved = reads > 0 && sample.peer_blocked > previous.peer_blocked;
        // Only a reader that reads can need more: one that does not is sent a window's worth, however
        // fast, and then nothing.
        let fast = reads > 0 && per_rtt.saturating_mul(2) >= self.receive;
        if (fast || starved) && self.receive < self.config.max_receive {
            // Starvation goes straight to the cap: the reads that give credit back get smaller with every
            // round (the starving stream's share of each grant), too small for quinn to announce, so
            // there may be no second chance to see it.
            // A fast flow gets at least twice the window, and at once four times what it moved per
            // round trip: a transfer on a fast path reaches its window in one or two samples.
            self.receive = if starved {
                self.config.max_receive
            } else {
                (self.receive * 2)
                    .max(per_rtt.saturating_mul(4))
                    .min(self.config.max_receive)
            };
            decision.receive = Some(self.receive);
            self.own_updates = 1;
            self.quiet = 0;
        } else if per_rtt.saturating_mul(8) < self.receive {
            self.quiet += 1;
            if self.quiet >= SHRINK_AFTER && self.receive > self.config.initial_receive {
                self.receive = (self.receive / 2).max(self.config.initial_receive);
                decision.receive = Some(self.receive);
                self.quiet = 0;
            }
        } else {
            self.quiet = 0;
        }
        let send = sample.cwnd.saturating_mul(4).clamp(
            self.config.initial_send,
            self.config.max_send.max(self.config.initial_send),
        );
        // Only worthwhile changes: a quarter up, or down to half.
        if send > self.send + self.send / 4 || send < self.send / 2 {
            self.send = send;
            decision.send = Some(send);
        }
        decision
    }

    /// How long until the next sample: a few round trips while data flows and the windows may still
    /// grow, a second otherwise.
    pub fn next_tick(&self) -> Duration {
        let rtt = self.last.map_or(Duration::ZERO, |(_, s)| s.rtt);
        if self.idle || self.receive >= self.config.max_receive {
            IDLE_TICK
        } else {
            (rtt * 2).clamp(MIN_TICK, IDLE_TICK / 4)
        }
    }
}

/// Keeps a connection's tuner running; the tuner stops (and lets go of the connection) when the last
/// clone of the [`Connection`](super::Connection) holding it is dropped, so that quinn's close on drop
/// still happens.
#[derive(Debug)]
pub(crate) struct TunerGuard(#[allow(dead_code, reason = "held for its drop")] oneshot::Sender<()>);

/// Starts tuning `conn`'s windows with `tuning`, if any, on the current runtime.
pub(crate) fn spawn(conn: &quinn::Connection, tuning: Option<WindowTuning>) -> Option<TunerGuard> {
    let tuning = tuning?;
    let (guard, dropped) = oneshot::channel();
    tokio::spawn(run(conn.clone(), Tuner::new(tuning), dropped));
    Some(TunerGuard(guard))
}

/// Runs `tuner` for `conn` until the connection closes or its guard is dropped: applies its initial
/// windows, then samples.
async fn run(conn: quinn::Connection, mut tuner: Tuner, mut dropped: oneshot::Receiver<()>) {
    conn.set_receive_window(varint(tuner.receive_window()));
    conn.set_send_window(tuner.send_window());
    tuner.on_sample(Instant::now(), sample(&conn));
    loop {
        tokio::select! {
            _ = conn.closed() => return,
            _ = &mut dropped => return,
            () = tokio::time::sleep(tuner.next_tick()) => {}
        }
        let decision = tuner.on_sample(Instant::now(), sample(&conn));
        if let Some(receive) = decision.receive {
            conn.set_receive_window(varint(receive));
        }
        if let Some(send) = decision.send {
            conn.set_send_window(send);
        }
    }
}

/// The tuner's view of `conn`'s counters now.
fn sample(conn: &quinn::Connection) -> Sample {
    let stats = conn.stats();
    Sample {
        rx_bytes: stats.udp_rx.bytes,
        tx_bytes: stats.udp_tx.bytes,
        cwnd: stats.path.cwnd,
        rtt: stats.path.rtt,
        peer_blocked: stats.frame_rx.data_blocked,
        credit_updates: stats.frame_tx.max_data,
    }
}

fn varint(bytes: u64) -> quinn::VarInt {
    quinn::VarInt::from_u64(bytes).unwrap_or(quinn::VarInt::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rx: u64, cwnd: u64, rtt_ms: u64) -> Sample {
        Sample {
            rx_bytes: rx,
            tx_bytes: 0,
            cwnd,
            rtt: Duration::from_millis(rtt_ms),
            peer_blocked: 0,
            // A reader that reads as fast as data arrives gives credit back every 32 KiB or so.
            credit_updates: rx / 32_768,
        }
    }

    /// A sample of a reader that reads nothing.
    fn stalled(rx: u64, rtt_ms: u64) -> Sample {
        Sample {
            credit_updates: 0,
            ..sample(rx, 12_000, rtt_ms)
        }
    }

    /// A sample with the flow-control frame counters.
    fn counted(rx: u64, peer_blocked: u64, credit_updates: u64, rtt_ms: u64) -> Sample {
        Sample {
            peer_blocked,
            credit_updates,
            ..sample(rx, 12_000, rtt_ms)
        }
    }

    #[test]
    fn a_reader_starved_by_unread_streams_grows_it() {
        let mut tuner = Tuner::new(WindowTuning::default());
        let mut now = Instant::now();
        let at = |rx, blocked, updates| counted(rx, blocked, updates, 1);
        tuner.on_sample(now, at(0, 0, 0));
        // The reader reads a little (one MAX_DATA), the peer is blocked again: grow.
        now += Duration::from_millis(100);
        assert_eq!(
            tuner.on_sample(now, at(300_000, 2, 1)).receive,
            Some(16 << 20)
        );
        // A reader that stopped: the peer stays blocked, no credit comes back, nothing grows.
        for _ in 0..10 {
            now += Duration::from_millis(100);
            assert_eq!(tuner.on_sample(now, at(600_000, 3, 2)).receive, None);
        }
    }

    #[test]
    fn a_fast_path_grows_the_receive_window_to_its_cap() {
        let config = WindowTuning::default();
        let mut tuner = Tuner::new(config);
        let start = Instant::now();
        let mut now = start;
        let mut rx = 0;
        tuner.on_sample(now, sample(rx, 12_000, 100));
        // 1 Gbit/s at 100 ms wants 12.5 MB in flight; the sender gets one window per round trip.
        while tuner.receive_window() < config.max_receive && now - start < Duration::from_secs(60) {
            let window = tuner.receive_window();
            let tick = tuner.next_tick();
            now += tick;
            let per_rtt = window.min(12_500_000);
            rx += per_rtt * u64::try_from(tick.as_millis()).unwrap_or(0) / 100;
            tuner.on_sample(now, sample(rx, 12_000, 100));
        }
        assert_eq!(tuner.receive_window(), config.max_receive);
        // A few samples, a sample every two round trips.
        assert!(
            now - start <= Duration::from_millis(1400),
            "{:?}",
            now - start
        );
    }

    #[test]
    fn the_window_s_own_growth_is_not_a_read() {
        let mut tuner = Tuner::new(WindowTuning::default());
        let mut now = Instant::now();
        let at = |rx, blocked, updates| counted(rx, blocked, updates, 10);
        tuner.on_sample(now, at(0, 0, 0));
        // Read as fast as it arrives: fast enough to double.
        now += Duration::from_millis(20);
        assert_eq!(
            tuner.on_sample(now, at(300_000, 0, 8)).receive,
            Some(600_000),
            "four times the 150 kB per round trip"
        );
        // The reader stopped. The growth sent one MAX_DATA and the peer filled it and is blocked.
        now += Duration::from_secs(1);
        assert_eq!(tuner.on_sample(now, at(600_000, 1, 9)).receive, None);
    }

    #[test]
    fn loopback_plans_for_a_late_reader() {
        // 800 MB/s at a 0.1 ms RTT: a window of rate x RTT (80 kB) would stall the sender whenever the
        // reader is a millisecond late.
        let mut tuner = Tuner::new(WindowTuning::default());
        let mut now = Instant::now();
        let at = |rx: u64| Sample {
            rtt: Duration::from_micros(100),
            ..sample(rx, 1_000_000, 0)
        };
        tuner.on_sample(now, at(0));
        now += MIN_TICK;
        tuner.on_sample(now, at(16_000_000));
        assert_eq!(
            tuner.receive_window(),
            12_800_000,
            "four times 800 MB/s x 4 ms"
        );
    }

    #[test]
    fn a_stalled_reader_never_grows_it() {
        let mut tuner = Tuner::new(WindowTuning::default());
        let mut now = Instant::now();
        tuner.on_sample(now, stalled(0, 20));
        // The peer sends one window as fast as it can, then nothing more arrives (no credit).
        now += Duration::from_millis(10);
        assert_eq!(tuner.on_sample(now, stalled(270_000, 20)).receive, None);
        for _ in 0..100 {
            now += tuner.next_tick();
            assert_eq!(tuner.on_sample(now, stalled(270_000, 20)).receive, None);
        }
        assert_eq!(tuner.receive_window(), 256 * 1024);
        assert_eq!(tuner.next_tick(), IDLE_TICK);
    }

    #[test]
    fn a_quiet_connection_gives_the_window_back_slowly() {
        let mut tuner = Tuner::new(WindowTuning::default());
        let mut now = Instant::now();
        let mut rx = 0;
        tuner.on_sample(now, sample(rx, 12_000, 10));
        for _ in 0..6 {
            now += Duration::from_millis(100);
            rx += tuner.receive_window() * 10;
            tuner.on_sample(now, sample(rx, 12_000, 10));
        }
        let grown = tuner.receive_window();
        assert!(grown >= 4 << 20, "{grown}");
        for _ in 0..SHRINK_AFTER - 1 {
            now += Duration::from_secs(1);
            assert_eq!(tuner.on_sample(now, sample(rx, 12_000, 10)).receive, None);
        }
        now += Duration::from_secs(1);
        assert_eq!(
            tuner.on_sample(now, sample(rx, 12_000, 10)).receive,
            Some(grown / 2)
        );
    }

    #[test]
    fn the_send_window_follows_the_congestion_window() {
        let mut tuner = Tuner::new(WindowTuning::default());
        let mut now = Instant::now();
        tuner.on_sample(now, sample(0, 12_000, 10));
        now += Duration::from_millis(100);
        assert_eq!(
            tuner.on_sample(now, sample(0, 12_000, 10)).send,
            None,
            "the floor"
        );
        now += Duration::from_millis(100);
        assert_eq!(
            tuner.on_sample(now, sample(0, 2_000_000, 10)).send,
            Some(8_000_000)
        );
        now += Duration::from_millis(100);
        assert_eq!(
            tuner.on_sample(now, sample(0, 2_100_000, 10)).send,
            None,
            "small changes wait"
        );
        now += Duration::from_millis(100);
        assert_eq!(
            tuner.on_sample(now, sample(0, 100_000_000, 10)).send,
            Some(16 * 1024 * 1024),
            "the cap"
        );
    }
}
