//! The driver of port prediction's hard side (see [`crate::paths`]): opening the extra sockets an attempt
//! asks for, pinging from each, routing a node's address through the socket its probe reached, and closing
//! what is left.
//!
//! Sockets of an attempt close when a probe reaches one of them (all but that one), after
//! [`PREDICTION_SOCKET_LIFETIME`], on a new attempt towards the same node, and on a network change. A
//! socket that won stays as long as its route: until a later win for the same node replaces it, the
//! network changes, or [`MAX_WINNERS`] newer ones push it out (the oldest closes first).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    time::Instant,
};

use iroh_base::NodeId;
use tracing::{debug, trace};

use super::Actor;
use crate::magicsock::metrics::{add, inc};
use crate::{
    disco::{self, Message, TxId},
    magicsock::udp::ExtraId,
    paths::PREDICTION_SOCKET_LIFETIME,
};

/// The most sockets kept for won predictions; past it the oldest closes (its node falls back to the
/// relay and holepunches again).
pub(super) const MAX_WINNERS: usize = 32;

/// The most attempts with open sockets at once: one, so an attempt holds at most 512 extra descriptors
/// (two per socket) for at most its lifetime; a node asking meanwhile tries again at a round after the
/// prediction interval.
pub(super) const MAX_ATTEMPTS: usize = 1;

/// One attempt's open sockets.
#[derive(Debug)]
struct Attempt {
    sockets: Vec<ExtraId>,
    expires: Instant,
}

/// The extra sockets of port prediction, by node.
#[derive(Debug, Default)]
pub(super) struct Predictions {
    attempts: HashMap<NodeId, Attempt>,
    /// Sockets that won, oldest first: (node, socket, the node's address routed through it).
    winners: VecDeque<(NodeId, ExtraId, SocketAddr)>,
}

impl Predictions {
    /// When the next attempt expires.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.attempts.values().map(|a| a.expires).min()
    }
}

impl Actor {
    /// Opens up to `count` extra sockets for an attempt towards `node` and pings `dst` from each, then
    /// tells the path core how many opened.
    pub(super) fn open_prediction_sockets(
        &mut self,
        now: Instant,
        node: NodeId,
        dst: SocketAddr,
        count: usize,
    ) {
        if let Some(old) = self.predictions.attempts.remove(&node) {
            self.sock.udp.close_extras(&old.sockets);
        }
        if self.predictions.attempts.len() >= MAX_ATTEMPTS {
            trace!(node = %node.fmt_short(), "prediction attempts at their limit");
            self.paths.prediction_sockets_ready(now, node, 0);
            return;
        }
        let node_id = self.node_id;
        let Some(secret) = self.secret(node) else {
            self.paths.prediction_sockets_ready(now, node, 0);
            return;
        };
        let pings: Vec<Vec<u8>> = (0..count)
            .map(|_| {
                let ping = Message::Ping(disco::Ping {
                    tx_id: TxId::random(),
                });
                disco::seal(&ping, &node_id, secret)
            })
            .collect();
        // Out of descriptors, typically, stops the opening: go with what opened.
        let (sockets, failure) = self.sock.udp.open_extras(count);
        for (id, packet) in sockets.iter().zip(pings) {
            if let Err(error) = self.sock.udp.send_extra(*id, dst, &packet) {
                trace!(%dst, %error, "prediction ping failed");
            }
        }
        debug!(
            target: "iroh::_events::predict::sockets",
            node = %node.fmt_short(),
            %dst,
            opened = sockets.len(),
            extra_sockets = self.sock.udp.extra_count(),
            error = failure.map(|e| e.to_string()),
        );
        let opened = sockets.len();
        add(&self.sock.metrics.predict_sockets, opened as u64);
        if opened > 0 {
            self.predictions.attempts.insert(
                node,
                Attempt {
                    sockets,
                    expires: now + PREDICTION_SOCKET_LIFETIME,
                },
            );
        }
        self.paths.prediction_sockets_ready(now, node, opened);
    }

    /// An authenticated disco message from `node` arrived from `src` on extra socket `via`: if it is one
    /// of the node's attempt, everything to `src` goes through it from now on and the others close.
    pub(super) fn prediction_hit(&mut self, node: NodeId, src: SocketAddr, via: ExtraId) {
        let Some(attempt) = self.predictions.attempts.get(&node) else {
            return;
        };
        if !attempt.sockets.contains(&via) {
            return;
        }
        let Some(attempt) = self.predictions.attempts.remove(&node) else {
            return;
        };
        let others: Vec<ExtraId> = attempt
            .sockets
            .into_iter()
            .filter(|id| *id != via)
            .collect();
        self.sock.udp.close_extras(&others);
        if !self.sock.udp.route_via(via, src) {
            return;
        }
        debug!(
            target: "iroh::_events::predict::won",
            node = %node.fmt_short(),
            remote = %src,
        );
        inc(&self.sock.metrics.predict_hits);
        // An earlier win for this node (its path died and was predicted again) is no longer used.
        let (old, kept): (VecDeque<_>, VecDeque<_>) = self
            .predictions
            .winners
            .drain(..)
            .partition(|(n, _, _)| *n == node);
        self.predictions.winners = kept;
        let old: Vec<ExtraId> = old.into_iter().map(|(_, id, _)| id).collect();
        if !old.is_empty() {
            self.sock.udp.close_extras(&old);
        }
        self.predictions.winners.push_back((node, via, src));
        while self.predictions.winners.len() > MAX_WINNERS {
            if let Some((_, id, _)) = self.predictions.winners.pop_front() {
                self.sock.udp.close_extras(&[id]);
            }
        }
    }

    /// Easy side: a spray ended (counted and logged).
    pub(super) fn spray_ended(&mut self, node: NodeId, probes: usize, hit: Option<SocketAddr>) {
        add(&self.sock.metrics.predict_probes, probes as u64);
        if hit.is_some() {
            inc(&self.sock.metrics.predict_hits);
        }
        debug!(
            target: "iroh::_events::predict::spray",
            node = %node.fmt_short(),
            probes,
            hit = hit.map(|a| a.to_string()),
        );
    }

    /// Closes the sockets of attempts that found nothing in time.
    pub(super) fn expire_predictions(&mut self, now: Instant) {
        let expired: Vec<NodeId> = self
            .predictions
            .attempts
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(node, _)| *node)
            .collect();
        for node in expired {
            if let Some(attempt) = self.predictions.attempts.remove(&node) {
                trace!(node = %node.fmt_short(), "prediction attempt expired");
                self.sock.udp.close_extras(&attempt.sockets);
            }
        }
    }

    /// Closes every extra socket (the network changed: their mappings mean nothing now).
    pub(super) fn close_predictions(&mut self) {
        let mut ids: Vec<ExtraId> = self
            .predictions
            .attempts
            .drain()
            .flat_map(|(_, a)| a.sockets)
            .collect();
        ids.extend(self.predictions.winners.drain(..).map(|(_, id, _)| id));
        if !ids.is_empty() {
            self.sock.udp.close_extras(&ids);
        }
    }
}
