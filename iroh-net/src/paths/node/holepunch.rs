//! Holepunch rounds of one node: paced probing of every candidate for [`PathConfig::holepunch_round`],
//! call-me-maybe in both directions, and the backoff between rounds.
//!
//! ```text
//!   round start: call-me-maybe via relay, ping every candidate
//!   |<-- every 25 ms (fast_probe_interval) -->|<-- every 100 ms (slow) -->| round over: next round after
//!   0                                       500 ms                       1 s   5 s, 10 s, 20 s, ... 60 s
//!   a pong at any point: trusted path, the round and the backoff end
//! ```

use std::{net::SocketAddr, time::Instant};

use super::{Ctx, NodeState};
use crate::paths::PathConfig;

impl NodeState {
    /// Holepunching while the node has no trusted path: paces the running round, ends it when its time is
    /// up, and starts the next one when the backoff says so (at once for a new candidate).
    pub(in crate::paths) fn maintain_round(&mut self, now: Instant, cx: &mut Ctx<'_>) {
        let config = cx.config;
        if let Some(started) = self.round_started {
            if now < started + config.holepunch_round {
                self.pace_round(now, started, cx);
                self.maybe_predict(now, started, cx);
                return;
            }
            self.round_started = None;
            self.failed_rounds = self.failed_rounds.saturating_add(1);
        }
        let due = self.fresh_candidate
            || self
                .last_holepunch
                .is_none_or(|at| now >= at + self.round_backoff(config));
        if due {
            self.start_round(now, cx);
        }
    }

    /// The wait after a round before the next: the holepunch interval, doubled for each round in a row
    /// that found nothing, at most the maximum. A node that was direct before does not back off: its path
    /// died (an outage, a network change on its side) and is likely to come back.
    pub(in crate::paths) fn round_backoff(&self, config: &PathConfig) -> std::time::Duration {
        if self.was_direct {
            return config.holepunch_interval;
        }
        let doublings = self.failed_rounds.saturating_sub(1).min(16);
        config
            .holepunch_interval
            .saturating_mul(1 << doublings)
            .min(config.max_holepunch_interval)
    }

    /// Starts a round: every candidate pinged, our addresses sent through the relay.
    pub(in crate::paths) fn start_round(&mut self, now: Instant, cx: &mut Ctx<'_>) {
        self.fresh_candidate = false;
        self.round_started = Some(now);
        self.holepunch_round(now, true, cx);
    }

    /// Pings every candidate whose last ping is a probe interval old.
    fn pace_round(&mut self, now: Instant, started: Instant, cx: &mut Ctx<'_>) {
        let interval = probe_interval(now, started, cx.config);
        let due: Vec<SocketAddr> = self
            .paths
            .iter()
            .filter(|(_, path)| path.last_ping_sent.is_none_or(|at| now >= at + interval))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in due {
            self.send_ping(now, addr, true, cx);
        }
        if self.fresh_candidate {
            // Joined mid-round: pinged above, and the backoff starts over.
            self.fresh_candidate = false;
        }
    }

    /// Answers a call-me-maybe (its addresses already added as candidates): without a trusted path, with
    /// a round of our own, or by pinging the new addresses at once within the running one, and with a
    /// call-me-maybe back unless we sent one within a round's length (two sides answering each other must
    /// not loop).
    pub(in crate::paths) fn answer_call_me_maybe(
        &mut self,
        now: Instant,
        addrs: &[SocketAddr],
        cx: &mut Ctx<'_>,
    ) {
        let config = cx.config;
        if self.trusted_best(now, config).is_some() {
            for addr in addrs {
                let trusted = self
                    .paths
                    .get(addr)
                    .and_then(|p| p.trusted_until(now, config))
                    .is_some();
                if !trusted {
                    self.ping(now, *addr, cx);
                }
            }
            return;
        }
        let recently_asked = self
            .last_call_me_maybe
            .is_some_and(|at| now < at + config.holepunch_round);
        match self.round_started {
            Some(started) if now < started + config.holepunch_round => {
                for addr in addrs {
                    self.send_ping(now, *addr, true, cx);
                }
                if !recently_asked {
                    self.send_call_me_maybe(now, cx);
                }
            }
            _ => {
                self.fresh_candidate = false;
                self.round_started = Some(now);
                self.prune(now, config);
                self.last_holepunch = Some(now);
                let all: Vec<SocketAddr> = self.paths.keys().copied().collect();
                for addr in all {
                    self.send_ping(now, addr, true, cx);
                }
                if !recently_asked {
                    self.send_call_me_maybe(now, cx);
                }
            }
        }
    }

    /// When the round or the backoff next needs the node's attention.
    pub(in crate::paths) fn next_round_timeout(
        &self,
        now: Instant,
        config: &PathConfig,
    ) -> Option<Instant> {
        match self.round_started {
            Some(started) if now < started + config.holepunch_round => {
                let interval = probe_interval(now, started, config);
                let next_ping = self
                    .paths
                    .values()
                    .filter_map(|path| path.last_ping_sent)
                    .map(|at| at + interval)
                    .min();
                let end = started + config.holepunch_round;
                let predict = self
                    .next_predict_timeout(started, config)
                    .filter(|at| *at > now);
                Some(
                    [next_ping, predict]
                        .into_iter()
                        .flatten()
                        .fold(end, Instant::min),
                )
            }
            Some(started) => Some(started + config.holepunch_round),
            None => self
                .last_holepunch
                .map(|at| at + self.round_backoff(config)),
        }
    }
}

/// The probe interval `now`, in a round that started at `started`.
fn probe_interval(now: Instant, started: Instant, config: &PathConfig) -> std::time::Duration {
    if now < started + config.fast_probe_for {
        config.fast_probe_interval
    } else {
        config.slow_probe_interval
    }
}
