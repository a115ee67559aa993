//! What the socket saw of QUIC traffic, handed to the path core: when QUIC last arrived from each direct
//! address (a path is alive while it does) and when the socket last sent to each node directly (a trusted
//! path we send on that stays silent is probed). The socket records both in atomics in the routes
//! ([`crate::magicsock::routes::Stamp`]); the actor reads them before every path timeout and when the
//! socket reports a silent path, so the core judges liveness on what really happened.

use std::time::Instant;

use iroh_base::NodeId;

use super::Actor;
use crate::magicsock::routes::AddrOwner;

impl Actor {
    /// Feeds the core every node's traffic stamps, and lets the socket report silent paths again.
    pub(super) fn sync_traffic(&mut self, now: Instant) {
        self.sync(now, None);
    }

    /// [`Actor::sync_traffic`] for one node (the socket found its direct path silent).
    pub(super) fn sync_node_traffic(&mut self, now: Instant, node: NodeId) {
        self.sync(now, Some(node));
    }

    fn sync(&mut self, now: Instant, only: Option<NodeId>) {
        let epoch = self.sock.epoch;
        let mut received = std::mem::take(&mut self.traffic_scratch.0);
        let mut sent = std::mem::take(&mut self.traffic_scratch.1);
        {
            let routes = self.sock.routes();
            for (addr, entry) in &routes.by_addr {
                let node = match entry.owner {
                    AddrOwner::Node(node)
                    | AddrOwner::Alias {
                        node: Some(node), ..
                    } => node,
                    AddrOwner::Alias { node: None, .. } => continue,
                };
                if only.is_some_and(|only| only != node) {
                    continue;
                }
                if let Some(at) = entry.last_recv.get(&epoch) {
                    received.push((node, *addr, at));
                }
            }
            for (node, route) in &routes.nodes {
                if only.is_some_and(|only| only != *node) {
                    continue;
                }
                if only.is_none() {
                    route
                        .silent
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(at) = route.last_sent.get(&epoch) {
                    sent.push((*node, at));
                }
            }
        }
        for (node, addr, at) in received.drain(..) {
            self.paths.note_received(now, node, addr, at);
        }
        for (node, at) in sent.drain(..) {
            self.paths.note_sent(now, node, at);
        }
        self.traffic_scratch = (received, sent);
    }
}
