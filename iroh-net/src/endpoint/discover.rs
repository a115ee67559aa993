//! The Endpoint's side of discovery: publishing our addressing when it changes, and finding a node's
//! addresses while dialling it.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

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

/// The first re-resolve of a dial that has not connected yet; each later one waits twice as long.
const FIRST_REFRESH: Duration = Duration::from_millis(500);
/// How long the first publish waits for the home relay (so that the first record names it).
pub(super) const FIRST_PUBLISH_WAIT: Duration = Duration::from_secs(3);

/// Ends the re-resolving of [`refresh_while_dialling`] when dropped (the dial is over).
#[derive(Debug)]
pub(super) struct DialGuard {
    _done: oneshot::Sender<()>,
}

/// While a dial runs, resolves `node` again past caches after [`FIRST_REFRESH`], then at doubling
/// intervals, until `deadline` or until the guard is dropped: what an earlier answer gave may be stale
/// (a record published before the node knew its relay, a node that moved).
pub(super) fn refresh_while_dialling(
    discovery: &Arc<ConcurrentDiscovery>,
    actor_tx: &mpsc::Sender<ActorMsg>,
    node: NodeId,
    deadline: Instant,
) -> DialGuard {
    let (done, mut ended) = oneshot::channel::<()>();
    let discovery = Arc::clone(discovery);
    let actor_tx = actor_tx.clone();
    let task = async move {
        let mut wait = FIRST_REFRESH;
        loop {
            let at = Instant::now() + wait;
            if at >= deadline {
                return;
            }
            tokio::select! {
                _ = &mut ended => return,
                () = tokio::time::sleep_until(at.into()) => {}
            }
            let Some(mut stream) = discovery.resolve_fresh(node) else {
                return;
            };
            debug!(after = ?wait, "dial not connected yet; resolving again");
            let drain = async {
                while let Some(next) = stream.next().await {
                    if let Ok(item) = next {
                        let source = Source::Discovery(item.provenance);
                        if register(&actor_tx, item.node_addr, source).await.is_err() {
                            return;
                        }
                    }
                }
            };
            tokio::select! {
                _ = &mut ended => return,
                () = drain => {}
            }
            wait *= 2;
        }
    };
    let span = tracing::debug_span!("discovery_refresh", node = %node.fmt_short());
    tokio::spawn(task.instrument(span));
    DialGuard { _done: done }
}

/// Publishes our addressing through `discovery` whenever the home relay or the direct addresses change,
/// until `shutdown`.
///
/// With relays on (`wait_for_relay`), the first publish waits until the home relay is known, at most
/// [`FIRST_PUBLISH_WAIT`]: a first record without it would send early dialers to direct addresses only,
/// which a NAT may not let through.
pub(super) async fn publish_loop(
    discovery: Arc<ConcurrentDiscovery>,
    watchers: Arc<Watchers>,
    wait_for_relay: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut home = watchers.home_relay.subscribe();
    let mut direct = watchers.direct_addrs.subscribe();
    drop(watchers);
    if wait_for_relay {
        let waited = tokio::time::timeout(FIRST_PUBLISH_WAIT, home.wait_for(Option::is_some));
        tokio::select! {
            _ = waited => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
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
