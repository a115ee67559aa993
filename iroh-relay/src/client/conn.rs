//! The sans-IO core of one established connection: keepalive, liveness and pings.
//!
//! ```text
//!  silence from the server (time since anything was last received)
//!  0 ............... interval ..................... interval + ping_timeout
//!  |   all well      | send a liveness Ping (once)   | dead: end the connection
//!
//!  silence towards the server (time since we last sent anything)
//!  0 ............... interval
//!  |   all well      | send KeepAlive (keeps the server and the NATs and proxies on the way from timing out)
//! ```
//!
//! Any frame from the server counts as a sign of life, so a busy connection never sends probes; the probe is a
//! Ping because the server must answer it, which a KeepAlive does not require. The driver can also ask for a
//! probe at once ([`ConnCore::probe_now`], after a network change): until the server answers that probe,
//! a ping timeout of silence (rather than an interval) is fatal. Frames that were already on their way
//! keep a busy connection alive but do not answer the probe: only its pong does. User pings
//! ([`ConnCore::send_ping`]) carry random bytes chosen by the driver and are matched to their pongs by them.
//!
//! Drain contract, as for every core here: after any `handle_*` or `send_ping` call, drain
//! [`ConnCore::poll_transmit`] and [`ConnCore::poll_event`] until both return `None`, then arm one timer at
//! [`ConnCore::poll_timeout`]. The core never reads the clock, never spawns, never touches a socket.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use tracing::debug;

use super::ReceivedEvent;
use crate::protos::frame::{Frame, PING_LEN};

/// The most user pings waiting for their pongs at once; more are refused rather than queued.
pub(crate) const MAX_PINGS_IN_FLIGHT: usize = 16;

/// What the core reports to its driver. `T` identifies a user ping (the driver's reply channel).
#[derive(Debug)]
pub(crate) enum CoreEvent<T> {
    /// Something for the application.
    Received(ReceivedEvent),
    /// A user ping was answered after `rtt`.
    Pong {
        /// The ping's token.
        token: T,
        /// Round-trip time.
        rtt: Duration,
    },
    /// A user ping got no answer within the ping timeout.
    PingTimeout(T),
    /// A probe went unanswered: nothing arrived for the ping timeout after a probe sent after `interval`
    /// of silence, or, while a requested probe awaits its pong, for the ping timeout. The connection is
    /// dead; the core does nothing more.
    Dead {
        /// How long the server has been silent.
        silent_for: Duration,
    },
}

#[derive(Debug)]
struct PendingPing<T> {
    data: [u8; PING_LEN],
    sent: Instant,
    token: T,
}

/// Keepalive, liveness and ping state of one connection (see the module docs).
#[derive(Debug)]
pub(crate) struct ConnCore<T> {
    interval: Duration,
    ping_timeout: Duration,
    last_recv: Instant,
    last_send: Instant,
    /// When the liveness probe that is out was sent (after `interval` of silence); cleared by anything
    /// received.
    probe_sent: Option<Instant>,
    /// A probe sent on request ([`ConnCore::probe_now`]) and when: cleared only by its pong.
    check: Option<([u8; PING_LEN], Instant)>,
    probes_sent: u64,
    pings: Vec<PendingPing<T>>,
    transmits: VecDeque<Frame>,
    events: VecDeque<CoreEvent<T>>,
    dead: bool,
}

impl<T> ConnCore<T> {
    /// The core of a connection established at `now`.
    pub(crate) fn new(now: Instant, interval: Duration, ping_timeout: Duration) -> Self {
        Self {
            interval,
            ping_timeout,
            last_recv: now,
            last_send: now,
            probe_sent: None,
            check: None,
            probes_sent: 0,
            pings: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            dead: false,
        }
    }

    /// Feeds a frame received from the server.
    pub(crate) fn handle_frame(&mut self, now: Instant, frame: Frame) {
        if self.dead {
            return;
        }
        self.last_recv = now;
        self.probe_sent = None;
        match frame {
            Frame::RecvDatagrams { src, datagrams } => {
                self.event(ReceivedEvent::Datagrams { src, datagrams });
            }
            Frame::PeerGone(node_id) => self.event(ReceivedEvent::PeerGone(node_id)),
            Frame::Status { code, message } => self.event(ReceivedEvent::Status { code, message }),
            Frame::Ping(data) => self.queue(now, Frame::Pong(data)),
            Frame::Pong(data) => {
                if self.check.is_some_and(|(check, _)| check == data) {
                    self.check = None;
                }
                // Pongs to liveness probes (or to pings that already timed out) match nothing: their
                // arrival has already counted as a sign of life.
                if let Some(index) = self.pings.iter().position(|p| p.data == data) {
                    let ping = self.pings.swap_remove(index);
                    self.events.push_back(CoreEvent::Pong {
                        token: ping.token,
                        rtt: now.saturating_duration_since(ping.sent),
                    });
                }
            }
            Frame::KeepAlive => {}
            Frame::Unknown { typ, .. } => debug!(typ, "skipping a frame of unknown type"),
            other => debug!(
                typ = other.typ(),
                "ignoring a frame the server should not send"
            ),
        }
    }

    /// The driver wrote a frame of its own (datagrams, NotePreferred) at `now`.
    pub(crate) fn on_sent(&mut self, now: Instant) {
        self.last_send = now;
    }

    /// Sends a ping with payload `data` (random bytes), reporting its pong or timeout with `token`. Gives
    /// `token` back if [`MAX_PINGS_IN_FLIGHT`] pings are already waiting.
    pub(crate) fn send_ping(
        &mut self,
        now: Instant,
        data: [u8; PING_LEN],
        token: T,
    ) -> Result<(), T> {
        if self.dead || self.pings.len() >= MAX_PINGS_IN_FLIGHT {
            return Err(token);
        }
        self.pings.push(PendingPing {
            data,
            sent: now,
            token,
        });
        self.queue(now, Frame::Ping(data));
        Ok(())
    }

    /// Acts on the deadlines that have passed at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.dead {
            return;
        }
        let mut index = 0;
        while let Some(ping) = self.pings.get(index) {
            if now >= ping.sent + self.ping_timeout {
                let ping = self.pings.swap_remove(index);
                self.events.push_back(CoreEvent::PingTimeout(ping.token));
            } else {
                index += 1;
            }
        }
        let silent_for = now.saturating_duration_since(self.last_recv);
        if self
            .probe_sent
            .is_some_and(|sent| now >= sent + self.ping_timeout)
            || self
                .check_deadline()
                .is_some_and(|deadline| now >= deadline)
        {
            self.dead = true;
            self.transmits.clear();
            self.events.push_back(CoreEvent::Dead { silent_for });
            return;
        }
        if silent_for >= self.interval && self.probe_sent.is_none() {
            debug!(?silent_for, "relay silent, probing with a ping");
            self.probe(now);
        }
        if now >= self.last_send + self.interval {
            self.queue(now, Frame::KeepAlive);
        }
    }

    /// Probes the connection now (unless a probe is already out): if nothing at all arrives within the ping
    /// timeout, the connection is dead. For when it may have died silently, as after a network change.
    pub(crate) fn probe_now(&mut self, now: Instant) {
        if !self.dead && self.check.is_none() {
            debug!("probing the relay connection on request");
            let data = self.next_probe_data();
            self.check = Some((data, now));
            self.queue(now, Frame::Ping(data));
        }
    }

    fn probe(&mut self, now: Instant) {
        self.probe_sent = Some(now);
        // Probes need no secrecy: any answer counts (and a requested probe's pong is matched by content).
        let data = self.next_probe_data();
        self.queue(now, Frame::Ping(data));
    }

    fn next_probe_data(&mut self) -> [u8; PING_LEN] {
        self.probes_sent += 1;
        self.probes_sent.to_be_bytes()
    }

    /// While a requested probe awaits its pong: the moment silence becomes fatal.
    fn check_deadline(&self) -> Option<Instant> {
        let (_, sent) = self.check?;
        Some(self.last_recv.max(sent) + self.ping_timeout)
    }

    /// When [`ConnCore::handle_timeout`] must be called next; `None` once the connection is dead.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.dead {
            return None;
        }
        let liveness = match self.probe_sent {
            Some(sent) => sent + self.ping_timeout,
            None => self.last_recv + self.interval,
        };
        let liveness = self
            .check_deadline()
            .map_or(liveness, |deadline| deadline.min(liveness));
        let pings = self.pings.iter().map(|p| p.sent + self.ping_timeout);
        pings
            .chain([liveness, self.last_send + self.interval])
            .min()
    }

    /// The next frame to send to the server.
    pub(crate) fn poll_transmit(&mut self) -> Option<Frame> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub(crate) fn poll_event(&mut self) -> Option<CoreEvent<T>> {
        self.events.pop_front()
    }

    /// The tokens of the pings still waiting, for a driver whose connection ended.
    pub(crate) fn take_pings(&mut self) -> impl Iterator<Item = T> + '_ {
        self.pings.drain(..).map(|p| p.token)
    }

    fn queue(&mut self, now: Instant, frame: Frame) {
        self.last_send = now;
        self.transmits.push_back(frame);
    }

    fn event(&mut self, event: ReceivedEvent) {
        self.events.push_back(CoreEvent::Received(event));
    }
}

#[cfg(test)]
mod tests;
