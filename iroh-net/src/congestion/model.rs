//! The model-based congestion controller: a window sized from a model of the path (its bottleneck bandwidth
//! and its round-trip propagation time, measured from acknowledgements, as BBR does), not from losses.
//!
//! Why our own: quinn's loss-based controllers (CUBIC, NewReno) take every random loss for congestion, so a
//! path with 2% random loss collapses to a few percent of its rate; quinn's BBR keeps its rate on lossy
//! paths but holds about twice the bandwidth-delay product in flight plus its ack-aggregation allowance,
//! and since quinn paces at 1.25 x window / RTT whatever the controller's model says, that fills a router's
//! buffer: the round trip under load measured 3.7 x the idle one on a 100 ms buffer (BENCHMARKS.md). This
//! controller works with quinn's window-only interface instead of against it: the window *is* the model's
//! product times a small gain, so the standing queue is a fifth of the BDP.
//!
//! ```text
//!            bandwidth stops growing by 25%          in flight <= BDP
//!  Startup ---------------------------------> Drain -----------------> ProbeBw: gain cycle, one min RTT each
//!  (gain 2.89)    for 3 rounds, or a round's         (gain 1)           [1.25 probe, 0.75 drain, 1.2 x 6]
//!                 fastest packet queued                                              |        ^
//!                                                      min RTT not seen for   |        | 200 ms and a round at
//!                                                      MIN_RTT_WINDOW         v        | the reduced window
//!                                                                          ProbeRtt (gain 0.5)
//! ```
//!
//! - **Delivery rate**: every acknowledgement of a packet gives a sample: bytes delivered since that packet
//!   was sent, over the longer of its send and acknowledgement intervals (the BBR rate-sample
//!   algorithm). The bottleneck bandwidth is the maximum sample over the last 10 round trips; samples taken
//!   while the application sent less than it could only count when they raise the estimate.
//! - **Round trip**: the propagation time is the least round trip seen (a packet's acknowledgement time
//!   minus its send time); a sample within 5% of it refreshes it, and when none has for
//!   [`MIN_RTT_WINDOW`] the controller drains the queue (ProbeRtt) to measure again. This is also how it
//!   follows a path change to a longer round trip (the magic socket moving from a relay to a direct path
//!   or back: quinn sees one path).
//! - **Window**: gain x bandwidth x propagation time, plus the most data acknowledged in a burst beyond
//!   what the bandwidth explains over the last 10 round trips (receivers and hosts batch acknowledgements;
//!   on fast local links that term dominates). The window grows by at most what was acknowledged, and
//!   falls at once.
//! - **Loss**: isolated losses change nothing: a random loss is not congestion, and a congested queue shows
//!   as a longer round trip and a flat delivery rate, which the model already sees. A round trip that loses
//!   more than [`HIGH_LOSS`] of its data is taken as real congestion (another flow took the bandwidth, or a
//!   policer): the bandwidth estimate falls to what that round actually delivered. Persistent congestion
//!   (quinn's signal that everything sent over a long period was lost) starts over from the initial window.
//!
//! The core ([`Model`]) is sans-IO, fed `(now, input)`, so that the tests drive it on a simulated link with
//! a virtual clock; [`ModelController`] adapts it to `quinn::congestion::Controller`.

use std::{
    any::Any,
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};

/// Startup's gain, 2/ln 2: the window doubles every round trip, as in slow start.
const STARTUP_GAIN: f64 = 2.885;
/// ProbeBw's gains, one phase per propagation round trip: probe for more bandwidth, drain what the probe
/// queued, then cruise with a fifth of the BDP as headroom for delay jitter.
const CYCLE_GAINS: [f64; 8] = [1.25, 0.75, 1.1, 1.1, 1.1, 1.1, 1.1, 1.1];
/// ProbeRtt's gain: half the BDP in flight drains the queue in about one round trip.
const PROBE_RTT_GAIN: f64 = 0.5;
/// How long ProbeRtt holds its window once in flight has fallen to it.
const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
/// How long the propagation round trip stays valid without a sample near it.
pub const MIN_RTT_WINDOW: Duration = Duration::from_secs(5);
/// Round trips the bandwidth and ack-aggregation filters remember.
const FILTER_ROUNDS: u64 = FILTER_SLOTS as u64;
const FILTER_SLOTS: usize = 10;
/// The shortest round trip the filters count: they remember at least ten of these.
const MIN_EPOCH: Duration = Duration::from_millis(10);
/// The share of a round trip's data that, lost, counts as congestion.
pub const HIGH_LOSS: f64 = 0.15;
/// A round's loss only counts as congestion with at least this many packets lost.
const HIGH_LOSS_MIN_PACKETS: u64 = 8;
/// On a congested round the in-flight ceiling becomes this share of the window (never below the BDP).
const CEILING_BETA: f64 = 0.85;
/// After each round without congestion the ceiling rises by this factor.
const CEILING_GROWTH: f64 = 1.02;
/// Startup also ends when even the fastest packet of a round waited in a queue this long, relative to the
/// propagation round trip (the queue stood for the whole round: the pipe is full).
const STARTUP_QUEUE_RTT: f64 = 1.5;
/// Startup ends after this many round trips without 25% more bandwidth.
const FULL_BW_ROUNDS: u32 = 3;
/// Send instants remembered for rate samples, at most (one per instant with packets in flight).
const MAX_SENT_RECORDS: usize = 1 << 16;
/// A round-trip sample within this share of the minimum refreshes it.
const MIN_RTT_TOLERANCE: f64 = 1.05;
/// The least round trip the model plans with. Below it (loopback, a LAN) the measured minimum says more
/// about the hosts' scheduling than the path: a window of bandwidth x 50 us stalls the sender whenever the
/// receiver's thread is late by a millisecond, while a millisecond of queue costs nobody anything.
const MIN_MODEL_RTT: Duration = Duration::from_millis(1);

/// Settings of [`ModelController`].
#[derive(Debug, Clone)]
pub struct ModelConfig {
    initial_window: u64,
}

impl ModelConfig {
    /// The window before anything is measured, in bytes (default: 10 packets of 1200 bytes, RFC 9002's).
    pub fn initial_window(&mut self, bytes: u64) -> &mut Self {
        self.initial_window = bytes;
        self
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            initial_window: 10 * 1200,
        }
    }
}

impl ControllerFactory for ModelConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(ModelController {
            model: Model::new(now, self.initial_window, current_mtu),
            config: self,
        })
    }
}

/// The model-based controller, as quinn uses it (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct ModelController {
    config: Arc<ModelConfig>,
    model: Model,
}

impl ModelController {
    /// The model behind it.
    pub fn model(&self) -> &Model {
        &self.model
    }
}

impl Controller for ModelController {
    fn on_sent(&mut self, now: Instant, _bytes: u64, _last_packet_number: u64) {
        self.model.on_sent(now);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        _rtt: &quinn_proto::RttEstimator,
    ) {
        self.model.on_ack(now, sent, bytes, app_limited);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        _largest_packet_num_acked: Option<u64>,
    ) {
        self.model.on_end_acks(now, in_flight, app_limited);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.model
            .on_congestion(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.model.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.model.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = ControllerMetrics::default();
        metrics.congestion_window = self.model.window();
        metrics.pacing_rate = Some(self.model.bandwidth().saturating_mul(8));
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        self.config.initial_window
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// The controller's state; see the [module docs](self) for the diagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Doubling, until the bandwidth stops growing.
    Startup,
    /// Letting the queue Startup built drain.
    Drain,
    /// The steady state: a gain cycle of probing, draining and cruising.
    ProbeBw {
        /// Index into the gain cycle.
        phase: usize,
        /// When the phase began.
        since: Instant,
    },
    /// Holding a small window to measure the propagation round trip again.
    ProbeRtt {
        /// When it ends, once in flight has fallen to the window.
        until: Option<Instant>,
        /// Whether Startup had found the bandwidth (where to go after).
        full_bw: bool,
    },
}

/// What was true when packets were sent at one instant.
#[derive(Debug, Clone, Copy)]
struct SentRecord {
    sent: Instant,
    /// Bytes delivered (acknowledged) in total when they were sent.
    delivered: u64,
    /// When that total was last increased.
    delivered_time: Instant,
    /// The send time of the packet most recently acknowledged then.
    first_sent: Instant,
}

/// The maximum of per-round samples over the last [`FILTER_ROUNDS`] rounds.
#[derive(Debug, Clone, Default)]
struct RoundMax {
    /// (round, largest sample of that round), one slot per round modulo the window.
    slots: [(u64, u64); FILTER_SLOTS],
}

impl RoundMax {
    fn update(&mut self, round: u64, value: u64) {
        let slot = &mut self.slots[usize::try_from(round % FILTER_ROUNDS).unwrap_or(0)];
        if slot.0 != round {
            *slot = (round, value);
        } else {
            slot.1 = slot.1.max(value);
        }
    }

    fn get(&self, round: u64) -> u64 {
        self.slots
            .iter()
            .filter(|(r, _)| *r + FILTER_ROUNDS > round && *r <= round)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0)
    }
}

/// The sans-IO core of [`ModelController`]: feed it every send, acknowledgement and loss with its instant,
/// and read [`Model::window`].
#[derive(Debug, Clone)]
pub struct Model {
    mode: Mode,
    cwnd: u64,
    initial_window: u64,
    mtu: u16,
    min_cwnd: u64,
    /// Bytes acknowledged in total, when that last changed, and the send time of the packet that did.
    delivered: u64,
    delivered_time: Instant,
    first_sent: Instant,
    sent: VecDeque<SentRecord>,
    /// Round trips: a round ends when a packet sent after it began is acknowledged.
    round: u64,
    round_start: Instant,
    /// The filters' clock: the round count, but advancing at most once per [`MIN_EPOCH`], so that on a
    /// sub-millisecond path the filters still remember a useful stretch of time.
    epoch: u64,
    epoch_time: Instant,
    round_acked: u64,
    round_lost: u64,
    bw: RoundMax,
    extra_acked: RoundMax,
    epoch_start: Instant,
    epoch_acked: u64,
    min_rtt: Option<Duration>,
    min_rtt_stamp: Instant,
    full_bw: u64,
    full_bw_count: u32,
    full_bw_reached: bool,
    /// The least round-trip sample of the current round.
    round_min_rtt: Option<Duration>,
    /// The most the window may be outside the probe phase, learned from congested rounds.
    inflight_hi: Option<u64>,
    /// This batch of acknowledgements: bytes, the newest rate-sample record, whether a round ended.
    batch_acked: u64,
    batch_sample: Option<SentRecord>,
    batch_app_limited: bool,
    batch_round_end: bool,
}

impl Model {
    /// A fresh model at `now`, with `initial_window` bytes allowed in flight and datagrams of `mtu` bytes.
    pub fn new(now: Instant, initial_window: u64, mtu: u16) -> Self {
        let min_cwnd = 4 * u64::from(mtu);
        Self {
            mode: Mode::Startup,
            cwnd: initial_window.max(min_cwnd),
            initial_window,
            mtu,
            min_cwnd,
            delivered: 0,
            delivered_time: now,
            first_sent: now,
            sent: VecDeque::new(),
            round: 0,
            round_start: now,
            epoch: 0,
            epoch_time: now,
            round_acked: 0,
            round_lost: 0,
            bw: RoundMax::default(),
            extra_acked: RoundMax::default(),
            epoch_start: now,
            epoch_acked: 0,
            min_rtt: None,
            min_rtt_stamp: now,
            full_bw: 0,
            full_bw_count: 0,
            full_bw_reached: false,
            round_min_rtt: None,
            inflight_hi: None,
            batch_acked: 0,
            batch_sample: None,
            batch_app_limited: false,
            batch_round_end: false,
        }
    }

    /// Bytes that may be in flight.
    pub fn window(&self) -> u64 {
        self.cwnd
    }

    /// The state.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The bottleneck bandwidth estimate, bytes per second (0 before the first sample).
    pub fn bandwidth(&self) -> u64 {
        self.bw.get(self.epoch)
    }

    /// The propagation round-trip estimate.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// The bandwidth-delay product estimate, bytes.
    pub fn bdp(&self) -> Option<u64> {
        let rtt = self.min_rtt?.max(MIN_MODEL_RTT);
        let bw = self.bandwidth();
        (bw > 0).then(|| mul_duration(bw, rtt))
    }

    /// Packets were sent at `now`.
    pub fn on_sent(&mut self, now: Instant) {
        if self.sent.is_empty() {
            // Nothing in flight that we know of: a restart after idle must not count the idle time as
            // delivery time.
            self.delivered_time = now;
            self.first_sent = now;
        }
        if self.sent.back().is_some_and(|r| r.sent >= now) {
            return;
        }
        if self.sent.len() >= MAX_SENT_RECORDS {
            self.sent.pop_front();
        }
        self.sent.push_back(SentRecord {
            sent: now,
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent: self.first_sent,
        });
    }

    /// A packet of `bytes` sent at `sent` was acknowledged at `now`; `app_limited` if the sender had run out
    /// of data before.
    pub fn on_ack(&mut self, now: Instant, sent: Instant, bytes: u64, app_limited: bool) {
        self.delivered += bytes;
        self.delivered_time = now;
        self.batch_acked += bytes;
        self.batch_app_limited = app_limited;
        self.observe_rtt(now, now.saturating_duration_since(sent));
        // Records of packets sent before this one were acknowledged or lost: no later sample needs them.
        while self.sent.front().is_some_and(|r| r.sent < sent) {
            self.sent.pop_front();
        }
        if let Some(record) = self.sent.front().filter(|r| r.sent == sent) {
            if self.batch_sample.is_none_or(|s| s.sent <= record.sent) {
                self.batch_sample = Some(*record);
            }
            self.first_sent = record.sent;
        }
        if sent >= self.round_start {
            self.batch_round_end = true;
        }
    }

    /// Packets sent up to `sent` were lost (`lost_bytes` of them; 0 for an ECN mark), found at `now`.
    pub fn on_congestion(&mut self, now: Instant, _sent: Instant, persistent: bool, lost: u64) {
        self.round_lost += lost;
        if persistent {
            // Everything sent over several PTOs was lost: the path may be a different one now.
            *self = Self::new(now, self.initial_window, self.mtu);
        }
    }

    /// A batch of acknowledgements ended; `in_flight` bytes remain unacknowledged.
    pub fn on_end_acks(&mut self, now: Instant, in_flight: u64, app_limited: bool) {
        let acked = std::mem::take(&mut self.batch_acked);
        let sample = self.batch_sample.take();
        let round_end = std::mem::take(&mut self.batch_round_end);
        let app_limited = app_limited || std::mem::take(&mut self.batch_app_limited);
        if acked == 0 {
            return;
        }
        if round_end {
            self.end_round();
            self.round_start = now;
            if now.saturating_duration_since(self.epoch_time) >= MIN_EPOCH {
                self.epoch += 1;
                self.epoch_time = now;
            }
        }
        if let Some(record) = sample {
            self.rate_sample(now, record, app_limited);
        }
        self.aggregation(now, acked);
        self.round_acked += acked;
        self.advance_mode(now, in_flight, round_end);
        self.set_window(acked);
    }

    /// The path's MTU changed.
    pub fn on_mtu_update(&mut self, mtu: u16) {
        self.mtu = mtu;
        self.min_cwnd = 4 * u64::from(mtu);
        self.cwnd = self.cwnd.max(self.min_cwnd);
    }

    fn observe_rtt(&mut self, now: Instant, sample: Duration) {
        if sample.is_zero() {
            return;
        }
        self.round_min_rtt = Some(self.round_min_rtt.map_or(sample, |m| m.min(sample)));
        let expired = now.saturating_duration_since(self.min_rtt_stamp) > MIN_RTT_WINDOW;
        match self.min_rtt {
            Some(min) if sample <= min => {
                self.min_rtt = Some(sample);
                self.min_rtt_stamp = now;
            }
            Some(min) if sample.as_secs_f64() <= min.as_secs_f64() * MIN_RTT_TOLERANCE => {
                self.min_rtt_stamp = now;
            }
            // Expired: only ProbeRtt replaces it (with the least sample it sees), unless nothing is known.
            Some(_) if !expired || !matches!(self.mode, Mode::ProbeRtt { .. }) => {}
            _ => {
                self.min_rtt = Some(sample);
                self.min_rtt_stamp = now;
            }
        }
    }

    fn end_round(&mut self) {
        let total = self.round_acked + self.round_lost;
        #[allow(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
        let loss = if total > 0 {
            self.round_lost as f64 / total as f64
        } else {
            0.0
        };
        // A few losses in a short round say nothing about a rate.
        let enough = self.round_lost >= HIGH_LOSS_MIN_PACKETS * u64::from(self.mtu);
        if loss > HIGH_LOSS && enough {
            // Real congestion (a queue overflowing, a policer): cap what is in flight outside the probes
            // just below where this happened; never below the BDP, which random loss of any rate must not
            // shrink (the bandwidth estimate holds through the probes).
            let floor = self.bdp().unwrap_or(self.min_cwnd);
            let cap = scale(self.cwnd, CEILING_BETA).max(floor);
            self.inflight_hi = Some(self.inflight_hi.map_or(cap, |hi| hi.min(cap)));
        } else if loss < HIGH_LOSS / 2.0
            && let Some(hi) = self.inflight_hi
        {
            let hi = scale(hi, CEILING_GROWTH).max(hi + u64::from(self.mtu));
            // Far above what the model wants: no ceiling any more.
            self.inflight_hi = (hi < 2 * self.target(CYCLE_GAINS[0])).then_some(hi);
        }
        if self.mode == Mode::Startup {
            let bw = self.bandwidth();
            let queued = match (self.round_min_rtt, self.min_rtt) {
                (Some(round), Some(min)) => {
                    round.as_secs_f64() > min.max(MIN_MODEL_RTT).as_secs_f64() * STARTUP_QUEUE_RTT
                }
                _ => false,
            };
            if bw >= self.full_bw + self.full_bw / 4 {
                self.full_bw = bw;
                self.full_bw_count = 0;
            } else if bw > 0 {
                self.full_bw_count += 1;
            }
            if self.full_bw_count >= FULL_BW_ROUNDS || (queued && bw > 0) {
                self.exit_startup();
            }
        }
        self.round += 1;
        self.round_acked = 0;
        self.round_lost = 0;
        self.round_min_rtt = None;
    }

    fn exit_startup(&mut self) {
        self.full_bw_reached = true;
        self.mode = Mode::Drain;
    }

    fn rate_sample(&mut self, now: Instant, record: SentRecord, app_limited: bool) {
        let send_elapsed = record.sent.saturating_duration_since(record.first_sent);
        let ack_elapsed = now.saturating_duration_since(record.delivered_time);
        let interval = send_elapsed.max(ack_elapsed);
        // Shorter than the round trip: too few packets to tell a rate (and a burst would look fast).
        if interval.is_zero() || self.min_rtt.is_some_and(|min| interval < min) {
            return;
        }
        let rate = div_duration(self.delivered - record.delivered, interval);
        if !app_limited || rate > self.bandwidth() {
            self.bw.update(self.epoch, rate);
        }
    }

    /// Tracks how much more was acknowledged in a burst than the bandwidth explains (RFC draft BBR's
    /// `extra_acked`).
    fn aggregation(&mut self, now: Instant, acked: u64) {
        let bw = self.bandwidth();
        let expected = mul_duration(bw, now.saturating_duration_since(self.epoch_start));
        if self.epoch_acked <= expected || bw == 0 {
            self.epoch_start = now;
            self.epoch_acked = 0;
        }
        self.epoch_acked += acked;
        let extra = self.epoch_acked.saturating_sub(expected).min(self.cwnd);
        self.extra_acked.update(self.epoch, extra);
    }

    fn advance_mode(&mut self, now: Instant, in_flight: u64, round_end: bool) {
        let bdp = self.bdp();
        match self.mode {
            Mode::Startup => {}
            Mode::Drain => {
                if bdp.is_none_or(|bdp| in_flight <= bdp) {
                    self.mode = Mode::ProbeBw {
                        phase: 2,
                        since: now,
                    };
                }
            }
            Mode::ProbeBw { phase, since } => {
                let min_rtt = self.min_rtt.unwrap_or_default();
                let elapsed = now.saturating_duration_since(since) > min_rtt;
                // The drain phase ends early once the probe's queue is gone.
                let drained = CYCLE_GAINS[phase] < 1.0 && bdp.is_some_and(|bdp| in_flight <= bdp);
                if elapsed || drained {
                    self.mode = Mode::ProbeBw {
                        phase: (phase + 1) % CYCLE_GAINS.len(),
                        since: now,
                    };
                }
            }
            Mode::ProbeRtt { until, full_bw } => match until {
                None => {
                    if in_flight <= self.target(PROBE_RTT_GAIN) {
                        self.mode = Mode::ProbeRtt {
                            until: Some(now + PROBE_RTT_TIME),
                            full_bw,
                        };
                    }
                }
                Some(until) if now >= until && round_end => {
                    self.min_rtt_stamp = now;
                    self.mode = if full_bw {
                        Mode::ProbeBw {
                            phase: 2,
                            since: now,
                        }
                    } else {
                        Mode::Startup
                    };
                }
                Some(_) => {}
            },
        }
        let expired = now.saturating_duration_since(self.min_rtt_stamp) > MIN_RTT_WINDOW;
        if expired && !matches!(self.mode, Mode::ProbeRtt { .. }) && self.min_rtt.is_some() {
            self.mode = Mode::ProbeRtt {
                until: None,
                full_bw: self.full_bw_reached,
            };
        }
    }

    fn gain(&self) -> f64 {
        match self.mode {
            Mode::Startup => STARTUP_GAIN,
            Mode::Drain => 1.0,
            Mode::ProbeBw { phase, .. } => CYCLE_GAINS[phase],
            Mode::ProbeRtt { .. } => PROBE_RTT_GAIN,
        }
    }

    /// `gain` x the BDP, at least the minimum window (the initial window while nothing is measured).
    fn target(&self, gain: f64) -> u64 {
        match self.bdp() {
            Some(bdp) => scale(bdp, gain).max(self.min_cwnd),
            None => self.initial_window.max(self.min_cwnd),
        }
    }

    fn set_window(&mut self, acked: u64) {
        let mut target = self.target(self.gain());
        if !matches!(self.mode, Mode::ProbeRtt { .. }) {
            target += self.extra_acked.get(self.epoch);
        }
        self.cwnd = match self.mode {
            // Startup never shrinks the window, and grows it as slow start would while the model lags.
            Mode::Startup if self.cwnd < target => self.cwnd + acked,
            Mode::Startup => self.cwnd,
            _ if target > self.cwnd => (self.cwnd + acked).min(target),
            _ => target,
        };
        let probing = matches!(self.mode, Mode::ProbeBw { phase: 0, .. });
        if let Some(hi) = self.inflight_hi
            && !probing
        {
            self.cwnd = self.cwnd.min(hi);
        }
        self.cwnd = self.cwnd.max(self.min_cwnd);
    }
}

fn mul_duration(rate: u64, d: Duration) -> u64 {
    u64::try_from(u128::from(rate) * d.as_nanos() / 1_000_000_000).unwrap_or(u64::MAX)
}

fn div_duration(bytes: u64, d: Duration) -> u64 {
    u64::try_from(u128::from(bytes) * 1_000_000_000 / d.as_nanos().max(1)).unwrap_or(u64::MAX)
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "windows are far below 2^52 bytes and gains positive"
)]
fn scale(bytes: u64, gain: f64) -> u64 {
    (bytes as f64 * gain) as u64
}
