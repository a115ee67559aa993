//! The model-based controller on a simulated path, with a virtual clock: a bulk sender paced as quinn paces
//! (1.25 x window / smoothed RTT), a bottleneck with a drop-tail queue, random or bursty loss after it, a
//! propagation delay each way, a receiver that acknowledges every `ack_every` packets (or after the 25 ms
//! maximum ack delay), and loss detection by packet threshold (3), as RFC 9002 does it.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    reason = "simulated rates, sizes and quantiles are small and positive"
)]

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;

const MTU: u64 = 1200;

#[test]
fn names_round_trip() {
    for cc in CongestionControl::ALL {
        assert_eq!(cc.name().parse::<CongestionControl>(), Ok(cc));
        assert_eq!(cc.to_string(), cc.name());
    }
    assert_eq!("newreno".parse(), Ok(CongestionControl::NewReno));
    assert!("reno".parse::<CongestionControl>().is_err());
}

/// A simulated path; [`Sim::set_path`] changes it mid-run.
#[derive(Debug, Clone)]
struct Path {
    /// Bottleneck rate, bytes per second.
    rate: f64,
    /// One-way propagation delay.
    delay: Duration,
    /// Drop-tail queue in front of the bottleneck, bytes.
    queue: u64,
    /// Random loss after the bottleneck.
    loss: f64,
    /// Gilbert-Elliott bursts instead: (enter bad, leave bad, loss when bad), per packet.
    burst: Option<(f64, f64, f64)>,
    /// Acknowledge every this many packets (or after 25 ms).
    ack_every: usize,
    /// Acknowledgements reach the sender only at multiples of this (a host that handles its receive
    /// queue in batches, interrupt coalescing, GRO).
    ack_batching: Option<Duration>,
}

impl Path {
    fn new(mbit: f64, rtt_ms: u64, queue_ms: u64) -> Self {
        let rate = mbit * 1e6 / 8.0;
        Self {
            rate,
            delay: Duration::from_millis(rtt_ms) / 2,
            queue: (rate * queue_ms as f64 / 1000.0) as u64,
            loss: 0.0,
            burst: None,
            ack_every: 2,
            ack_batching: None,
        }
    }

    fn loss(mut self, percent: f64) -> Self {
        self.loss = percent / 100.0;
        self
    }

    fn bdp(&self) -> f64 {
        self.rate * self.delay.as_secs_f64() * 2.0
    }
}

#[derive(Debug)]
enum Event {
    /// Packet `pn` leaves the bottleneck (and is lost after it, or not).
    Depart(u64),
    /// Packet `pn` reaches the receiver.
    Arrive(u64),
    /// The receiver's delayed-ack timer.
    AckTimer,
    /// An acknowledgement of these packets reaches the sender.
    Ack(Vec<u64>),
    /// The sender may send (pacing).
    Send,
    /// The sender's loss timer: packets unacknowledged for too long are lost (RFC 9002's time threshold
    /// and probe timeout, simplified).
    Tick,
}

/// How often [`Event::Tick`] runs.
const TICK: Duration = Duration::from_millis(5);

/// What a run measured (from `measure_from` on).
#[derive(Debug, Default)]
struct Outcome {
    acked_bytes: u64,
    rtts: Vec<Duration>,
    queue_drops: u64,
    link_losses: u64,
    sent: u64,
}

struct Sim {
    start: Instant,
    now: Instant,
    path: Path,
    model: Model,
    events: BTreeMap<(Instant, u64), Event>,
    seq: u64,
    rng: StdRng,
    bad: bool,
    /// Sent, not yet acknowledged or declared lost: pn -> send time.
    in_flight: BTreeMap<u64, Instant>,
    next_pn: u64,
    link_free: Instant,
    backlog: u64,
    arrived: Vec<u64>,
    srtt: Option<Duration>,
    next_send: Instant,
    send_armed: bool,
    measure_from: Instant,
    out: Outcome,
}

impl Sim {
    fn new(path: Path, seed: u64) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            path,
            model: Model::new(start, 10 * MTU, MTU as u16),
            events: BTreeMap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed),
            bad: false,
            in_flight: BTreeMap::new(),
            next_pn: 0,
            link_free: start,
            backlog: 0,
            arrived: Vec::new(),
            srtt: None,
            next_send: start,
            send_armed: false,
            measure_from: start,
            out: Outcome::default(),
        }
    }

    fn set_path(&mut self, path: Path) {
        self.path = path;
    }

    fn at(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.events.insert((at, self.seq), event);
    }

    fn in_flight_bytes(&self) -> u64 {
        self.in_flight.len() as u64 * MTU
    }

    /// Sends what the window and the pacer allow, and arms the pacer for the rest.
    fn try_send(&mut self) {
        while self.in_flight_bytes() + MTU <= self.model.window() {
            if self.now < self.next_send {
                if !self.send_armed {
                    self.send_armed = true;
                    self.at(self.next_send, Event::Send);
                }
                return;
            }
            let pn = self.next_pn;
            self.next_pn += 1;
            self.in_flight.insert(pn, self.now);
            self.model.on_sent(self.now);
            if self.now >= self.measure_from {
                self.out.sent += 1;
            }
            if let Some(srtt) = self.srtt {
                let rate = 1.25 * self.model.window() as f64 / srtt.as_secs_f64();
                self.next_send =
                    self.now.max(self.next_send) + Duration::from_secs_f64(MTU as f64 / rate);
            }
            if self.backlog + MTU > self.path.queue {
                if self.now >= self.measure_from {
                    self.out.queue_drops += 1;
                }
                continue;
            }
            self.backlog += MTU;
            let depart =
                self.now.max(self.link_free) + Duration::from_secs_f64(MTU as f64 / self.path.rate);
            self.link_free = depart;
            self.at(depart, Event::Depart(pn));
        }
    }

    fn lost_on_link(&mut self) -> bool {
        let loss = match self.path.burst {
            None => self.path.loss,
            Some((enter, leave, bad_loss)) => {
                let flip = if self.bad { leave } else { enter };
                if self.rng.gen_bool(flip) {
                    self.bad = !self.bad;
                }
                if self.bad { bad_loss } else { 0.0 }
            }
        };
        self.rng.gen_bool(loss)
    }

    /// Runs until `secs` after the start; figures count from `measure_from_secs` on.
    fn run(&mut self, secs: f64, measure_from_secs: f64) -> &Outcome {
        let end = self.start + Duration::from_secs_f64(secs);
        let from = self.start + Duration::from_secs_f64(measure_from_secs);
        if from > self.measure_from {
            self.measure_from = from;
            self.out = Outcome::default();
        }
        if !self.events.values().any(|e| matches!(e, Event::Tick)) {
            self.at(self.now + TICK, Event::Tick);
        }
        self.try_send();
        while let Some(entry) = self.events.first_entry() {
            if entry.key().0 > end {
                break;
            }
            let ((at, _), event) = entry.remove_entry();
            self.now = at;
            self.handle(event);
        }
        self.now = end;
        self.out.rtts.sort();
        &self.out
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Depart(pn) => {
                self.backlog -= MTU;
                if self.lost_on_link() {
                    self.out.link_losses += 1;
                } else {
                    self.at(self.now + self.path.delay, Event::Arrive(pn));
                }
            }
            Event::Arrive(pn) => {
                self.arrived.push(pn);
                if self.arrived.len() >= self.path.ack_every {
                    self.send_ack();
                } else if self.arrived.len() == 1 {
                    self.at(self.now + Duration::from_millis(25), Event::AckTimer);
                }
            }
            Event::AckTimer => {
                if !self.arrived.is_empty() {
                    self.send_ack();
                }
            }
            Event::Ack(pns) => self.on_ack(&pns),
            Event::Send => {
                self.send_armed = false;
                self.try_send();
            }
            Event::Tick => {
                self.at(self.now + TICK, Event::Tick);
                let srtt = self.srtt.unwrap_or(Duration::from_millis(333));
                let limit = srtt * 3 / 2 + Duration::from_millis(25);
                let lost: Vec<(u64, Instant)> = self
                    .in_flight
                    .iter()
                    .filter(|(_, sent)| self.now.saturating_duration_since(**sent) > limit)
                    .map(|(pn, sent)| (*pn, *sent))
                    .collect();
                self.declare_lost(&lost);
                if !lost.is_empty() {
                    self.try_send();
                }
            }
        }
    }

    fn declare_lost(&mut self, lost: &[(u64, Instant)]) {
        if let Some(&(_, last_sent)) = lost.last() {
            for (pn, _) in lost {
                self.in_flight.remove(pn);
            }
            let now = self.now;
            self.model
                .on_congestion(now, last_sent, false, lost.len() as u64 * MTU);
        }
    }

    fn send_ack(&mut self) {
        let pns = std::mem::take(&mut self.arrived);
        let mut at = self.now + self.path.delay;
        if let Some(batch) = self.path.ack_batching {
            let since = at.saturating_duration_since(self.start).as_nanos();
            let step = batch.as_nanos().max(1);
            let ceil = since.div_ceil(step) * step;
            at = self.start + Duration::from_nanos(u64::try_from(ceil).unwrap_or(u64::MAX));
        }
        self.at(at, Event::Ack(pns));
    }

    fn on_ack(&mut self, pns: &[u64]) {
        let now = self.now;
        let mut largest = None;
        for pn in pns {
            let Some(sent) = self.in_flight.remove(pn) else {
                continue;
            };
            let rtt = now - sent;
            self.srtt = Some(self.srtt.map_or(rtt, |s| (s * 7 + rtt) / 8));
            self.model.on_ack(now, sent, MTU, false);
            if sent >= self.measure_from {
                self.out.acked_bytes += MTU;
                self.out.rtts.push(rtt);
            }
            largest = largest.max(Some(*pn));
        }
        if let Some(largest) = largest {
            // Packet threshold: three newer packets acknowledged.
            let lost: Vec<(u64, Instant)> = self
                .in_flight
                .range(..largest.saturating_sub(2))
                .map(|(pn, sent)| (*pn, *sent))
                .collect();
            self.declare_lost(&lost);
            let in_flight = self.in_flight_bytes();
            self.model.on_end_acks(now, in_flight, false);
        }
        self.try_send();
    }

    fn goodput_mbit(&self) -> f64 {
        let secs = self
            .now
            .saturating_duration_since(self.measure_from)
            .as_secs_f64();
        self.out.acked_bytes as f64 * 8.0 / secs / 1e6
    }

    fn rtt_quantile(&self, q: f64) -> Duration {
        let rtts = &self.out.rtts;
        let i = ((rtts.len().saturating_sub(1)) as f64 * q).round() as usize;
        rtts.get(i).copied().unwrap_or_default()
    }
}

/// Runs `path` for `secs`, measuring from `from` on: (goodput Mbit/s, median RTT, p90 RTT).
fn steady(path: Path, secs: f64, from: f64, seed: u64) -> (f64, Duration, Duration, Sim) {
    let mut sim = Sim::new(path, seed);
    sim.run(secs, from);
    (
        sim.goodput_mbit(),
        sim.rtt_quantile(0.5),
        sim.rtt_quantile(0.9),
        sim,
    )
}

#[test]
fn fills_a_clean_link_with_a_short_queue() {
    for (mbit, rtt) in [(50.0, 40), (50.0, 100), (10.0, 40), (200.0, 20)] {
        let (goodput, p50, p90, mut sim) = steady(Path::new(mbit, rtt, 100), 10.0, 3.0, 1);
        let base = Duration::from_millis(rtt);
        assert!(
            goodput > 0.9 * mbit,
            "{mbit} Mbit/s, {rtt} ms: {goodput:.1}"
        );
        // The standing queue is a fifth of the BDP; probes add a little.
        assert!(p50 < base * 3 / 2, "{mbit}/{rtt}: median RTT {p50:?}");
        assert!(p90 < base * 2, "{mbit}/{rtt}: p90 RTT {p90:?}");
        // Startup may overshoot the queue once; after it, nothing overflows.
        sim.run(13.0, 11.0);
        assert_eq!(
            sim.out.queue_drops, 0,
            "{mbit}/{rtt}: it overflowed the queue"
        );
        assert!(matches!(
            sim.model.mode(),
            Mode::ProbeBw { .. } | Mode::ProbeRtt { .. }
        ));
        let bdp = sim.model.bdp().expect("measured") as f64;
        let real = sim.path.bdp();
        assert!(
            (bdp - real).abs() < real * 0.15,
            "model BDP {bdp} vs {real}"
        );
    }
}

#[test]
fn random_loss_does_not_slow_it() {
    for percent in [1.0, 2.0, 5.0, 10.0] {
        for rtt in [40, 100] {
            let (goodput, p50, _, _) =
                steady(Path::new(50.0, rtt, 100).loss(percent), 10.0, 3.0, 2);
            let delivered = 50.0 * (1.0 - percent / 100.0);
            assert!(
                goodput > 0.85 * delivered,
                "{percent}% at {rtt} ms: {goodput:.1} Mbit/s"
            );
            assert!(
                p50 < Duration::from_millis(rtt) * 3 / 2,
                "{percent}%: {p50:?}"
            );
        }
    }
}

#[test]
fn bursty_loss_does_not_slow_it() {
    let mut path = Path::new(50.0, 40, 100);
    path.burst = Some((0.01, 0.25, 0.5));
    let (goodput, _, _, sim) = steady(path, 10.0, 3.0, 3);
    assert!(sim.out.link_losses > 100, "bursts happened");
    assert!(goodput > 0.85 * 50.0 * 0.98, "{goodput:.1}");
}

#[test]
fn a_shallow_buffer_is_not_flooded() {
    // 5 ms of buffer: under the probe's quarter of a BDP. Packets are lost at the probes (as with BBR),
    // but the cruising window fits the queue, so it does not overflow all the time.
    let (goodput, _, _, sim) = steady(Path::new(50.0, 40, 5), 10.0, 3.0, 4);
    assert!(goodput > 0.8 * 50.0, "{goodput:.1}");
    let drop_rate = sim.out.queue_drops as f64 / sim.out.sent as f64;
    assert!(
        drop_rate < 0.05,
        "{:.2}% dropped at the queue",
        drop_rate * 100.0
    );
}

#[test]
fn follows_the_rate_down_and_up() {
    let mut sim = Sim::new(Path::new(50.0, 40, 100), 5);
    sim.run(5.0, 2.0);
    assert!(sim.goodput_mbit() > 45.0);
    // The bottleneck halves (another flow, a worse Wi-Fi rate): the queue must not stay full.
    sim.set_path(Path::new(25.0, 40, 100));
    sim.run(12.0, 8.0);
    let after = sim.goodput_mbit();
    assert!(after > 22.0, "{after:.1}");
    assert!(
        sim.rtt_quantile(0.5) < Duration::from_millis(60),
        "median {:?} after the drop",
        sim.rtt_quantile(0.5)
    );
    // And back up: probing finds the bandwidth again within a few seconds.
    sim.set_path(Path::new(50.0, 40, 100));
    sim.run(20.0, 16.0);
    assert!(sim.goodput_mbit() > 45.0, "{:.1}", sim.goodput_mbit());
}

#[test]
fn follows_a_path_change_to_a_longer_round_trip() {
    // The magic socket moves the connection from a 10 ms path to a 60 ms one; quinn sees one path, so the
    // model's propagation time is too short until it measures again.
    let mut sim = Sim::new(Path::new(50.0, 10, 100), 6);
    sim.run(4.0, 1.0);
    assert!(sim.goodput_mbit() > 45.0);
    sim.set_path(Path::new(50.0, 60, 100));
    sim.run(
        4.0 + MIN_RTT_WINDOW.as_secs_f64() + 3.0,
        4.0 + MIN_RTT_WINDOW.as_secs_f64() + 1.0,
    );
    assert!(sim.goodput_mbit() > 40.0, "{:.1}", sim.goodput_mbit());
    let rtt = sim.model.min_rtt().expect("measured");
    assert!(
        rtt >= Duration::from_millis(60) && rtt < Duration::from_millis(70),
        "{rtt:?}"
    );
    // And to a shorter one: taken at once.
    sim.set_path(Path::new(50.0, 20, 100));
    sim.run(18.0, 16.0);
    assert!(sim.model.min_rtt().expect("measured") < Duration::from_millis(25));
    assert!(sim.goodput_mbit() > 45.0, "{:.1}", sim.goodput_mbit());
}

#[test]
fn heavy_loss_backs_off_but_moves_data() {
    // Past HIGH_LOSS per round, loss counts as congestion: the window is capped near the BDP and the
    // bandwidth the model sees is what arrives. A quarter of everything lost is a broken network; the
    // controller must still move data steadily and keep the queue short.
    let (goodput, p50, _, _) = steady(Path::new(50.0, 40, 100).loss(25.0), 10.0, 4.0, 7);
    assert!(goodput > 2.0, "{goodput:.1}");
    assert!(p50 < Duration::from_millis(60), "{p50:?}");
}

#[test]
fn persistent_congestion_starts_over() {
    let mut sim = Sim::new(Path::new(50.0, 40, 100), 8);
    sim.run(3.0, 1.0);
    assert!(sim.model.window() > 100 * MTU);
    let now = sim.now;
    sim.model.on_congestion(now, now, true, 10 * MTU);
    assert_eq!(sim.model.window(), 10 * MTU);
    assert_eq!(sim.model.mode(), Mode::Startup);
    assert!(sim.model.min_rtt().is_none());
}

#[test]
fn acknowledgement_bursts_are_covered() {
    // A fast local link whose acknowledgements reach the sender in bursts every millisecond (as a host
    // handling its receive queue in batches would see them): the BDP alone (100 us x 1 Gbit/s = 12.5 KB)
    // would starve it.
    let mut path = Path::new(1000.0, 0, 10);
    path.delay = Duration::from_micros(50);
    path.ack_batching = Some(Duration::from_millis(1));
    let (goodput, _, _, _) = steady(path, 2.0, 0.5, 9);
    assert!(goodput > 800.0, "{goodput:.1}");
}

#[test]
fn never_below_the_minimum_window_and_no_panics_on_odd_input() {
    let start = Instant::now();
    let mut model = Model::new(start, 10 * MTU, MTU as u16);
    // Acks for packets never sent, from the future, zero bytes, times out of order.
    model.on_ack(start, start + Duration::from_secs(1), 0, false);
    model.on_end_acks(start, 0, false);
    model.on_ack(start + Duration::from_secs(1), start, MTU, true);
    model.on_end_acks(start, u64::MAX, true);
    model.on_congestion(start, start, false, u64::MAX / 2);
    model.on_end_acks(start + Duration::from_secs(2), 0, false);
    model.on_mtu_update(1500);
    assert!(model.window() >= 4 * 1500);
    for i in 0..10_000u64 {
        let t = start + Duration::from_micros(i * 37 % 5000);
        model.on_sent(t);
        model.on_ack(t, t, MTU, i % 3 == 0);
        model.on_end_acks(t, i * MTU, false);
        assert!(model.window() >= 4 * 1500);
    }
}

#[test]
#[ignore = "a trace for looking at the controller"]
fn trace() {
    let path = match std::env::var("TRACE").as_deref() {
        Ok("shallow") => Path::new(50.0, 40, 5),
        Ok("burst") => {
            let mut p = Path::new(1000.0, 0, 10);
            p.delay = Duration::from_micros(50);
            p.ack_batching = Some(Duration::from_millis(1));
            p
        }
        Ok("heavy") => Path::new(50.0, 40, 100).loss(33.0),
        _ => Path::new(50.0, 100, 100),
    };
    let mut sim = Sim::new(path, 1);
    for i in 1..=60 {
        let t = f64::from(i) * 0.1;
        let drops = sim.out.queue_drops;
        let lost = sim.out.link_losses;
        sim.run(t, 0.0);
        println!(
            "{t:4.1} {:?} cwnd {} bw {:.1} rtt {:?} inflight {} qdrops {} lost {} srtt {:?}",
            sim.model.mode(),
            sim.model.window(),
            sim.model.bandwidth() as f64 * 8e-6,
            sim.model.min_rtt(),
            sim.in_flight_bytes(),
            sim.out.queue_drops - drops,
            sim.out.link_losses - lost,
            sim.srtt
        );
    }
}
