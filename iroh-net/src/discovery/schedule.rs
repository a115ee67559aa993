//! When to publish: a sans-IO schedule fed `(now, input)`, driven by the publishers' tasks.
//!
//! - A change of our addressing is published after [`PublishConfig::debounce`] (a burst of changes, as
//!   at start-up while net report learns addresses, becomes one publish of the latest data, at most
//!   `debounce` after the first change).
//! - A published record is published again after [`PublishConfig::republish`], before its TTL runs out.
//! - A failed publish is retried with exponential backoff, from [`PublishConfig::backoff_min`] doubling
//!   to [`PublishConfig::backoff_max`], each delay scaled by a random factor in `[0.5, 1)` that the
//!   caller supplies (so that nodes do not retry in lockstep after a server restart).
//! - One publish runs at a time; data that changed meanwhile is published when it ends.
//! - Empty data (no relay, no address) is never published.

use std::time::{Duration, Instant};

use super::NodeData;

/// The timing of a [`PublishSchedule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishConfig {
    /// How long after a change the data is published.
    pub debounce: Duration,
    /// How long after a successful publish the same data is published again.
    pub republish: Duration,
    /// The first retry delay after a failure.
    pub backoff_min: Duration,
    /// The largest retry delay.
    pub backoff_max: Duration,
}

impl PublishConfig {
    /// The defaults for records of `ttl`: debounce 20 ms, republish at three quarters of the TTL,
    /// backoff from 1 s to 5 min (and at most the republish interval).
    pub fn for_ttl(ttl: Duration) -> Self {
        let republish = ttl.mul_f64(0.75).max(Duration::from_secs(1));
        Self {
            debounce: Duration::from_millis(20),
            republish,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300).min(republish),
        }
    }
}

/// The publish schedule: see the [module docs](self).
#[derive(Debug)]
pub struct PublishSchedule {
    config: PublishConfig,
    wanted: NodeData,
    published: Option<NodeData>,
    due: Option<Instant>,
    in_flight: Option<NodeData>,
    failures: u32,
}

impl PublishSchedule {
    /// A schedule with nothing to publish yet.
    pub fn new(config: PublishConfig) -> Self {
        Self {
            config,
            wanted: NodeData::default(),
            published: None,
            due: None,
            in_flight: None,
            failures: 0,
        }
    }

    /// Our addressing is now `data`.
    pub fn set_data(&mut self, now: Instant, data: NodeData) {
        if data == self.wanted {
            return;
        }
        self.wanted = data;
        if self.wanted.is_empty() {
            self.due = None;
            return;
        }
        if self.in_flight.is_some() {
            // `on_result` schedules it.
            return;
        }
        let at = now + self.config.debounce;
        // Keep an earlier deadline (a burst publishes `debounce` after its first change), but not a
        // backoff: new data is worth trying soon even after failures.
        if self.failures > 0 || self.due.is_none_or(|due| due > at) {
            self.due = Some(at);
        }
    }

    /// When [`PublishSchedule::poll_publish`] next has something, if ever (nothing while one runs).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight.is_some() {
            return None;
        }
        self.due
    }

    /// The data to publish now, if it is time; the caller publishes it and reports with
    /// [`PublishSchedule::on_result`].
    pub fn poll_publish(&mut self, now: Instant) -> Option<NodeData> {
        if self.in_flight.is_some() || self.wanted.is_empty() {
            return None;
        }
        if self.due.is_none_or(|due| due > now) {
            return None;
        }
        self.due = None;
        self.in_flight = Some(self.wanted.clone());
        self.in_flight.clone()
    }

    /// The publish from [`PublishSchedule::poll_publish`] ended. `jitter` in `[0, 1)` scales a retry
    /// delay to between half and all of its nominal value.
    pub fn on_result(&mut self, now: Instant, ok: bool, jitter: f64) {
        let Some(sent) = self.in_flight.take() else {
            return;
        };
        if ok {
            self.failures = 0;
            let changed = sent != self.wanted;
            self.published = Some(sent);
            self.due = if self.wanted.is_empty() {
                None
            } else if changed {
                Some(now + self.config.debounce)
            } else {
                Some(now + self.config.republish)
            };
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let factor = 2f64.powi(i32::try_from(self.failures - 1).unwrap_or(i32::MAX).min(30));
        let nominal = self
            .config
            .backoff_min
            .mul_f64(factor)
            .min(self.config.backoff_max);
        let delay = nominal.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        self.due = (!self.wanted.is_empty()).then_some(now + delay);
    }

    /// What was last published successfully.
    pub fn published(&self) -> Option<&NodeData> {
        self.published.as_ref()
    }

    /// Failed publishes in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}
