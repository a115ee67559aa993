//! The Endpoint's side of discovery: publishing our addressing when it changes, and finding a node's
//! addresses while dialling it.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use futures_util::StreamExt;
use iroh_base::{NodeAddr, NodeId};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, debug};

use super::ConnectError;
use crate::{
    discovery::{ConcurrentDiscovery, Discovery, DiscoveryError, DiscoveryErrors, NodeData},
    magicsock::actor::{ActorMsg, Watchers},
    paths::Source,
};

/// Hands `addr` to the actor; the answer is the node's mapped address if some path to it is known.
pub(super) async fn register(
    actor_tx: &mpsc::Sender<ActorMsg>,
    addr: NodeAddr,
    source: Source,
) -> Result<Option<SocketAddr>, ConnectError> {
    let (reply, answer) = oneshot::channel();
    actor_tx
        .send(ActorMsg::AddNodeAddr {
            addr,
            source,
            reply,
        })
        .await
        .map_err(|_| ConnectError::Closed)?;
    answer.await.map_err(|_| ConnectError::Closed)
}

/// Resolves `node` through `discovery` until an answer gives a usable path (registered with the actor)
/// or `deadline`. Answers after the first keep being registered in the background until the stream
/// ends or `deadline`.
pub(super) async fn resolve_for_connect(
    discovery: &Arc<ConcurrentDiscovery>,
    actor_tx: &mpsc::Sender<ActorMsg>,
    node: NodeId,
    deadline: Instant,
) -> Result<SocketAddr, ConnectError> {
    let started = Instant::now();
    let Some(mut stream) = discovery.resolve(node) else {
        return Err(ConnectError::NoAddress(node));
    };
    let mut errors: Vec<DiscoveryError> = Vec::new();
    let search = async {
        while let Some(next) = stream.next().await {
            match next {
                Ok(item) => {
                    let source = Source::Discovery(item.provenance);
                    debug!(node = %node.fmt_short(), provenance = item.provenance, addr = ?item.node_addr, "discovered");
                    if let Some(mapped) = register(actor_tx, item.node_addr, source).await? {
                        return Ok(Some(mapped));
                    }
                }
                Err(error) => {
                    debug!(node = %node.fmt_short(), %error, "discovery found nothing");
                    errors.push(error);
                }
            }
        }
        Ok(None)
    };
    let found = tokio::time::timeout_at(deadline.into(), search).await;
    match found {
        Ok(Ok(Some(mapped))) => {
            spawn_rest(stream, actor_tx.clone(), node, deadline);
            Ok(mapped)
        }
        Ok(Ok(None)) => Err(ConnectError::Discovery {
            node,
            errors: DiscoveryErrors(errors),
            timed_out: None,
        }),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(ConnectError::Discovery {
            node,
            errors: DiscoveryErrors(errors),
            timed_out: Some(started.elapsed()),
        }),
    }
}

/// Resolves `node` in the background (its known addresses may be stale), registering what is found
/// until the answers end or `deadline`.
pub(super) fn resolve_in_background(
    discovery: &Arc<ConcurrentDiscovery>,
    actor_tx: &mpsc::Sender<ActorMsg>,
    node: NodeId,
    deadline: Instant,
) {
    if let Some(stream) = discovery.resolve(node) {
        spawn_rest(stream, actor_tx.clone(), node, deadline);
    }
}

fn spawn_rest(
    mut stream: crate::discovery::DiscoveryStream,
    actor_tx: mpsc::Sender<ActorMsg>,
    node: NodeId,
    deadline: Instant,
) {
    let task = async move {
        let drain = async {
            while let Some(next) = stream.next().await {
                match next {
                    Ok(item) => {
                        let source = Source::Discovery(item.provenance);
                        debug!(provenance = item.provenance, addr = ?item.node_addr, "discovered (background)");
                        if register(&actor_tx, item.node_addr, source).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => debug!(%error, "background discovery found nothing"),
                }
            }
        };
        tokio::time::timeout_at(deadline.into(), drain).await.ok();
    };
    let span = tracing::debug_span!("discovery", node = %node.fmt_short());
    tokio::spawn(task.instrument(span));
}

/// Publishes our addressing through `discovery` whenever the home relay or the direct addresses change,
/// until `shutdown`.
pub(super) async fn publish_loop(
    discovery: Arc<ConcurrentDiscovery>,
    watchers: Arc<Watchers>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut home = watchers.home_relay.subscribe();
    let mut direct = watchers.direct_addrs.subscribe();
    drop(watchers);
    let mut last = NodeData::default();
    loop {
        let data = NodeData {
            relay_url: home.borrow_and_update().clone(),
            direct_addresses: direct.borrow_and_update().clone(),
        };
        if data != last && !data.is_empty() {
            debug!(relay = ?data.relay_url, addrs = ?data.direct_addresses, "publishing our addressing");
            discovery.publish(&data);
            last = data;
        }
        tokio::select! {
            changed = home.changed() => if changed.is_err() { return },
            changed = direct.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
