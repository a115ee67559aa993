//! Relay clients: opened on demand (the home relay at start, a peer's relay when a plan names it), closed
//! when idle, and one receiving task ("relay actor") per client.
//!
//! A relay actor hands relayed QUIC from a node whose relay the path core knows straight to quinn; disco,
//! and QUIC from a node not yet known, go to the main actor in arrival order (so a call-me-maybe is handled
//! before the QUIC packet that follows it, and the reply to that packet has a way back).

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use iroh_base::{NodeId, RelayUrl};
use iroh_relay::{
    client::{ClientBuilder, ClientReceiver, ReceivedEvent},
    protos::frame::Datagrams,
};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, trace};

use super::{super::demux::PacketKind, Actor, ActorMsg, deliver_relayed};
use crate::{
    magicsock::{demux::classify, routes::RelaySlot, socket::MagicSock},
    paths::SendAddr,
};

/// A relay other than the home relay, unused for this long, is closed (the default).
pub(crate) const DEFAULT_RELAY_IDLE: Duration = Duration::from_secs(60);
/// How long closing a relay client may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// An open relay client, as the actor keeps it.
#[derive(Debug)]
pub(super) struct RelayConn {
    pub(super) slot: Arc<RelaySlot>,
    task: JoinHandle<()>,
    idle_since: Instant,
    /// Whether the client was connected at its last state change.
    pub(super) connected: bool,
}

impl Actor {
    /// The client for `url`, opened if needed; `None` when relays are disabled.
    pub(super) fn ensure_relay(&mut self, url: &RelayUrl) -> Option<Arc<RelaySlot>> {
        self.relay_map.as_ref()?;
        if let Some(conn) = self.relays.get(url) {
            return Some(Arc::clone(&conn.slot));
        }
        let client = ClientBuilder::new(url.clone(), self.secret_key.clone())
            .insecure_skip_cert_verify(self.relay_tls.insecure_skip_verify)
            .extra_roots(self.relay_tls.extra_roots.clone())
            .transport(self.relay_tls.transport)
            .build();
        let (sender, receiver) = client.split();
        let slot = Arc::new(RelaySlot::new(sender));
        let span = tracing::debug_span!("relay_actor", url = %url);
        let task = tokio::spawn(
            relay_actor(
                url.clone(),
                receiver,
                Arc::clone(&slot),
                Arc::clone(&self.sock),
            )
            .instrument(span),
        );
        debug!(%url, "relay client opened");
        self.sock
            .routes_mut()
            .relays
            .insert(url.clone(), Arc::clone(&slot));
        self.relays.insert(
            url.clone(),
            RelayConn {
                slot: Arc::clone(&slot),
                task,
                idle_since: Instant::now(),
                connected: false,
            },
        );
        Some(slot)
    }

    /// Makes `url` the home relay: opened, told it is preferred, published.
    pub(super) fn set_home(&mut self, url: RelayUrl) {
        if self.home.as_ref() == Some(&url) {
            return;
        }
        if let Some(old) = self.home.take()
            && let Some(conn) = self.relays.get(&old)
        {
            conn.slot.sender.note_preferred(false);
        }
        let connected = match self.ensure_relay(&url) {
            Some(slot) => {
                slot.sender.note_preferred(true);
                slot.sender.state().borrow().is_connected()
            }
            None => false,
        };
        debug!(%url, connected, "home relay chosen");
        self.home = Some(url);
        if connected {
            self.publish_home();
        }
    }

    /// Publishes the home relay (once its connection is up: before that, peers could not reach us there).
    pub(super) fn publish_home(&self) {
        let Some(url) = &self.home else {
            return;
        };
        let changed = self.watchers.home_relay.send_if_modified(|current| {
            let changed = current.as_ref() != Some(url);
            *current = Some(url.clone());
            changed
        });
        if changed {
            debug!(target: "iroh::_events::home_relay", url = %url);
        }
    }

    /// How often relays are checked for idleness: a quarter of the idle time, within 100 ms and 10 s.
    pub(super) fn relay_sweep_interval(&self) -> Duration {
        (self.relay_idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// Closes relays (other than home) that carried nothing for a while.
    pub(super) fn sweep_relays(&mut self, now: Instant) {
        let mut idle = Vec::new();
        for (url, conn) in &mut self.relays {
            if conn.slot.used.swap(false, Ordering::Relaxed) {
                conn.idle_since = now;
            } else if self.home.as_ref() != Some(url)
                && now.saturating_duration_since(conn.idle_since) >= self.relay_idle
            {
                idle.push(url.clone());
            }
        }
        for url in idle {
            if let Some(conn) = self.relays.remove(&url) {
                debug!(%url, "relay client idle, closing");
                self.sock.routes_mut().relays.remove(&url);
                let sender = conn.slot.sender.clone();
                // The relay actor ends when the client is closed.
                tokio::spawn(async move { sender.close().await });
            }
        }
    }

    /// Closes every relay client, waiting a bounded time for each.
    pub(super) async fn close_all_relays(&mut self) {
        let conns: Vec<RelayConn> = self.relays.drain().map(|(_, conn)| conn).collect();
        self.sock.routes_mut().relays.clear();
        let closing = conns.iter().map(|conn| {
            let sender = conn.slot.sender.clone();
            async move {
                tokio::time::timeout(CLOSE_TIMEOUT, sender.close())
                    .await
                    .ok();
            }
        });
        for close in closing {
            close.await;
        }
        for conn in conns {
            conn.task.abort();
        }
    }
}

/// Receives from one relay client until it is closed.
async fn relay_actor(
    url: RelayUrl,
    mut receiver: ClientReceiver,
    slot: Arc<RelaySlot>,
    sock: Arc<MagicSock>,
) {
    let mut state = slot.sender.state();
    let mut watching = true;
    loop {
        tokio::select! {
            event = receiver.recv() => match event {
                None => break,
                Some(ReceivedEvent::Datagrams { src, datagrams }) => {
                    slot.mark_used();
                    handle_datagrams(&sock, &url, src, datagrams);
                }
                Some(ReceivedEvent::PeerGone(node)) => {
                    trace!(node = %node.fmt_short(), "peer gone from relay");
                }
                Some(event) => debug!(?event, "relay event"),
            },
            changed = state.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                    continue;
                }
                let connected = state.borrow_and_update().is_connected();
                sock.to_actor(ActorMsg::RelayState { url: url.clone(), connected });
            }
        }
    }
    trace!("relay actor ended");
}

/// Sorts one relayed batch: QUIC to quinn (or to the actor for unknown nodes), disco to the actor.
fn handle_datagrams(sock: &MagicSock, url: &RelayUrl, src: NodeId, datagrams: Datagrams) {
    let all_quic = datagrams
        .iter()
        .all(|datagram| classify(&datagram) == PacketKind::Quic);
    if all_quic {
        quic(sock, url, src, datagrams);
        return;
    }
    for datagram in datagrams.iter() {
        match classify(&datagram) {
            PacketKind::Disco => {
                crate::magicsock::metrics::inc(&sock.metrics.disco_recv);
                sock.to_actor(ActorMsg::Disco {
                    src: SendAddr::Relay(url.clone()),
                    relay_src: Some(src),
                    via: None,
                    packet: datagram,
                });
            }
            PacketKind::Quic => quic(
                sock,
                url,
                src,
                Datagrams {
                    ecn: datagrams.ecn,
                    segment_size: None,
                    contents: datagram,
                },
            ),
            PacketKind::Stun => trace!("STUN through a relay, ignored"),
        }
    }
}

fn quic(sock: &MagicSock, url: &RelayUrl, src: NodeId, datagrams: Datagrams) {
    let known = sock
        .routes()
        .nodes
        .get(&src)
        .is_some_and(|route| route.relay_known);
    if known {
        deliver_relayed(sock, src, datagrams);
    } else {
        sock.to_actor(ActorMsg::RelayQuic {
            url: url.clone(),
            src,
            datagrams,
        });
    }
}
