//! The registry of connected clients, and routing by [`NodeId`].
//!
//! # Why not a routing actor
//!
//! DESIGN.md sketches a routing actor as sole owner of the `NodeId -> client` map, with every datagram passing
//! through it. That puts a channel hop, a task wake-up and a single-core bottleneck on every relayed frame,
//! which the forwarding target (>= 2 Gbit/s with TLS on two cores) cannot afford. Instead:
//!
//! - [`Clients`] owns the map behind a [`RwLock`] that is only ever held for a hash-map operation (never
//!   across `.await`). Writes happen at login and logout; reads only on a routing-cache miss.
//! - Each client's reader keeps a [`Router`]: a private cache from destination to the destination's
//!   [`ClientShared`]. The hot path is a cache hit followed by [`ClientShared::push`], one short mutex on the
//!   destination's queue; no global lock, no hop.
//! - Invalidation is by closing: when a client leaves or is replaced, its queue is closed, so the next push
//!   from any cached route fails with [`PushError::Closed`] and the router looks the destination up again
//!   (finding the replacement, or nobody). Negative entries ("nobody by that id") are tagged with the
//!   registry's generation, bumped on each login, so a node that logs in later is found.
//!
//! Each piece of mutable state still has one owner: the map belongs to [`Clients`], each queue to its
//! [`ClientShared`] (drained only by that client's writer), each routing cache to one reader.
//!
//! # PeerGone
//!
//! A router looking up a destination notes its own node in the destination's `senders` set (under the map's
//! read lock, so this cannot race with the destination leaving, which takes the write lock). When a client
//! leaves for good, every node in its `senders` that is still connected gets `PeerGone`. A replacement
//! connection inherits the set. A sender whose first datagram goes to an unknown node gets `PeerGone` once.
//!
//! Lock order: the map, then a client's `senders`, then a client's queue. No lock is held across `.await`.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use iroh_base::NodeId;
use tokio::sync::Notify;

use super::metrics::Metrics;
use crate::protos::frame::{Datagrams, Frame};

/// Destinations a router remembers before it starts over (a client spraying datagrams at random node ids
/// must not grow server memory).
const MAX_ROUTES: usize = 1024;

/// Locks `mutex`, ignoring poisoning: every critical section here leaves the data consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a client connection is being closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// A newer connection logged in with the same node id.
    Replaced,
    /// The server is shutting down.
    Shutdown,
    /// The connection ended (set when it is unregistered, so cached routes to it fail over).
    Disconnected,
}

/// Why [`ClientShared::push`] did not queue a frame.
#[derive(Debug)]
pub(crate) enum PushError {
    /// The queue is full; the frame was dropped.
    Full,
    /// The connection is closing; the frame is handed back.
    Closed(Frame),
}

/// The frames waiting for one client's writer.
#[derive(Debug)]
struct Outbox {
    frames: VecDeque<Frame>,
    close: Option<CloseReason>,
}

/// What the registry, the routers of other clients and a client's own tasks share about one connection.
#[derive(Debug)]
pub(crate) struct ClientShared {
    /// The node this connection logged in as.
    pub(crate) node_id: NodeId,
    /// Distinguishes connections of the same node.
    pub(crate) conn_id: u64,
    queue_limit: usize,
    /// The most bytes queued or taken but not yet written ([`ClientShared::written`]).
    queue_bytes_limit: usize,
    /// Encoded bytes of the frames queued, or taken by the writer and not yet written.
    queued_bytes: AtomicUsize,
    outbox: Mutex<Outbox>,
    /// Wakes the writer; notified when the queue goes from empty to non-empty, and on close.
    wake: Notify,
    /// Nodes that routed datagrams to this one (told `PeerGone` when it leaves).
    senders: Mutex<HashSet<NodeId>>,
    /// Whether the client said this relay is its home relay.
    preferred: AtomicBool,
}

impl ClientShared {
    fn new(node_id: NodeId, conn_id: u64, queue: QueueLimits) -> Self {
        Self {
            node_id,
            conn_id,
            queue_limit: queue.frames,
            queue_bytes_limit: queue.bytes,
            queued_bytes: AtomicUsize::new(0),
            outbox: Mutex::new(Outbox {
                frames: VecDeque::new(),
                close: None,
            }),
            wake: Notify::new(),
            senders: Mutex::new(HashSet::new()),
            preferred: AtomicBool::new(false),
        }
    }

    /// Queues `frame` for this client without ever waiting: a full queue (in frames, or in bytes not yet
    /// written) drops it.
    pub(crate) fn push(&self, frame: Frame) -> Result<(), PushError> {
        let len = frame.encoded_len();
        let was_empty = {
            let mut outbox = lock(&self.outbox);
            if outbox.close.is_some() {
                return Err(PushError::Closed(frame));
            }
            if outbox.frames.len() >= self.queue_limit
                || self.queued_bytes.load(Ordering::Relaxed) + len > self.queue_bytes_limit
            {
                return Err(PushError::Full);
            }
            self.queued_bytes.fetch_add(len, Ordering::Relaxed);
            let was_empty = outbox.frames.is_empty();
            outbox.frames.push_back(frame);
            was_empty
        };
        // A non-empty queue already has a wake-up pending: the writer drains everything it finds.
        if was_empty {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Starts closing: queued frames are discarded, further pushes fail, and the writer is woken to tell the
    /// client why. The first reason wins.
    pub(crate) fn close(&self, reason: CloseReason) {
        {
            let mut outbox = lock(&self.outbox);
            if outbox.close.is_none() {
                outbox.close = Some(reason);
            }
            outbox.frames = VecDeque::new();
        }
        self.queued_bytes.store(0, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// The writer has written `frame` (taken with [`ClientShared::take`]) to its buffer: its bytes no longer
    /// count against the queue.
    pub(crate) fn written(&self, frame: &Frame) {
        let len = frame.encoded_len();
        // Saturating: a close in between reset the count.
        let _ = self
            .queued_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(len))
            });
    }

    /// Bytes queued or taken and not yet written.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Moves every queued frame into the empty `batch` (swapping buffers, so nothing is allocated in steady
    /// state), or returns the close reason if closing.
    pub(crate) fn take(&self, batch: &mut VecDeque<Frame>) -> Option<CloseReason> {
        let mut outbox = lock(&self.outbox);
        if let Some(reason) = outbox.close {
            return Some(reason);
        }
        std::mem::swap(&mut outbox.frames, batch);
        None
    }

    /// Waits until frames are queued or the connection is closing (possibly spuriously).
    pub(crate) async fn notified(&self) {
        self.wake.notified().await;
    }

    /// Gives back the queue's memory if it is empty (for idle connections).
    pub(crate) fn shrink(&self) {
        let mut outbox = lock(&self.outbox);
        if outbox.frames.is_empty() {
            outbox.frames = VecDeque::new();
        }
    }

    /// Records the client's NotePreferred.
    pub(crate) fn set_preferred(&self, preferred: bool) {
        self.preferred.store(preferred, Ordering::Relaxed);
    }
}

/// Why a login could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegisterError {
    /// `max_clients` are connected.
    Full,
    /// The server is shutting down.
    ShuttingDown,
}

/// The registry: sole owner of the `NodeId -> connection` map.
#[derive(Debug)]
pub(crate) struct Clients {
    map: RwLock<HashMap<NodeId, Arc<ClientShared>>>,
    /// Bumped on every login; tags negative routing-cache entries.
    generation: AtomicU64,
    next_conn_id: AtomicU64,
    shutting_down: AtomicBool,
    queue: QueueLimits,
    max_clients: Option<usize>,
    metrics: Arc<Metrics>,
}

/// The bounds of each client's send queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    /// Frames queued.
    pub(crate) frames: usize,
    /// Bytes queued or taken by the writer and not yet written.
    pub(crate) bytes: usize,
}

impl Clients {
    pub(crate) fn new(
        queue: QueueLimits,
        max_clients: Option<usize>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            next_conn_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            queue,
            max_clients,
            metrics,
        }
    }

    /// Registers a verified login, replacing (and closing) an older connection of the same node.
    pub(crate) fn register(&self, node_id: NodeId) -> Result<Arc<ClientShared>, RegisterError> {
        let conn_id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let client = Arc::new(ClientShared::new(node_id, conn_id, self.queue));
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(RegisterError::ShuttingDown);
        }
        if let Some(max) = self.max_clients
            && map.len() >= max
            && !map.contains_key(&node_id)
        {
            return Err(RegisterError::Full);
        }
        if let Some(old) = map.insert(node_id, Arc::clone(&client)) {
            // The node did not go away, so nobody gets PeerGone; the new connection inherits who sent to it.
            let senders = std::mem::take(&mut *lock(&old.senders));
            *lock(&client.senders) = senders;
            old.close(CloseReason::Replaced);
            self.metrics.replaced.inc();
        }
        self.generation.fetch_add(1, Ordering::Release);
        self.metrics.clients.set(gauge_value(map.len()));
        self.metrics.logins.inc();
        Ok(client)
    }

    /// Removes `client` if it is still the registered connection of its node, and tells the nodes that had
    /// sent to it that it is gone.
    pub(crate) fn unregister(&self, client: &Arc<ClientShared>) {
        client.close(CloseReason::Disconnected);
        let notify: Vec<Arc<ClientShared>> = {
            let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
            match map.get(&client.node_id) {
                Some(current) if Arc::ptr_eq(current, client) => {}
                // Replaced earlier: the replacement took over the senders.
                _ => return,
            }
            map.remove(&client.node_id);
            self.metrics.clients.set(gauge_value(map.len()));
            let senders = std::mem::take(&mut *lock(&client.senders));
            if self.shutting_down.load(Ordering::Relaxed) {
                return;
            }
            senders
                .iter()
                .filter_map(|sender| map.get(sender).map(Arc::clone))
                .collect()
        };
        for sender in notify {
            if sender.push(Frame::PeerGone(client.node_id)).is_ok() {
                self.metrics.peer_gone.inc();
            }
        }
    }

    /// The connection of `dst`, noting `src` as one of its senders.
    fn route(&self, dst: &NodeId, src: NodeId) -> Option<Arc<ClientShared>> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        let target = map.get(dst)?;
        lock(&target.senders).insert(src);
        Some(Arc::clone(target))
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Refuses further logins and closes every connection with `reason`.
    pub(crate) fn close_all(&self, reason: CloseReason) {
        let clients: Vec<Arc<ClientShared>> = {
            let map = self.map.write().unwrap_or_else(PoisonError::into_inner);
            self.shutting_down.store(true, Ordering::Relaxed);
            map.values().map(Arc::clone).collect()
        };
        for client in clients {
            client.close(reason);
        }
    }

    /// How many clients are registered.
    pub(crate) fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn gauge_value(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

/// What happened to a datagram frame handed to [`Router::forward`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forwarded {
    /// Queued for the destination.
    Queued,
    /// Dropped: the destination's queue is full.
    QueueFull,
    /// Dropped: nobody by that node id is connected. `tell` if the sender should get `PeerGone`.
    UnknownDestination {
        /// Whether to tell the sender (the first time it sends to this absent node).
        tell: bool,
    },
}

#[derive(Debug)]
enum Route {
    Live(Arc<ClientShared>),
    Absent { generation: u64 },
}

/// One reader's routing cache (see the module docs).
#[derive(Debug)]
pub(crate) struct Router {
    src: NodeId,
    routes: HashMap<NodeId, Route>,
}

impl Router {
    /// A router for datagrams sent by `src`.
    pub(crate) fn new(src: NodeId) -> Self {
        Self {
            src,
            routes: HashMap::new(),
        }
    }

    /// Queues `datagrams` for `dst` as a RecvDatagrams frame from this router's node.
    pub(crate) fn forward(
        &mut self,
        clients: &Clients,
        dst: NodeId,
        datagrams: Datagrams,
    ) -> Forwarded {
        let mut frame = Frame::RecvDatagrams {
            src: self.src,
            datagrams,
        };
        // If we had a live route, the destination's departure (if that is what closed it) told us already.
        let mut known_gone = false;
        match self.routes.get(&dst) {
            Some(Route::Live(target)) => match target.push(frame) {
                Ok(()) => return Forwarded::Queued,
                Err(PushError::Full) => return Forwarded::QueueFull,
                Err(PushError::Closed(back)) => {
                    frame = back;
                    known_gone = true;
                }
            },
            Some(Route::Absent { generation }) => {
                if *generation == clients.generation() {
                    return Forwarded::UnknownDestination { tell: false };
                }
                known_gone = true;
            }
            None => {}
        }
        // Slow path: ask the registry. Read the generation first so that a login racing with the lookup
        // makes the negative entry stale rather than lost.
        let generation = clients.generation();
        if self.routes.len() >= MAX_ROUTES && !self.routes.contains_key(&dst) {
            self.routes.clear();
        }
        match clients.route(&dst, self.src) {
            Some(target) => {
                let result = target.push(frame);
                self.routes.insert(dst, Route::Live(target));
                match result {
                    Ok(()) => Forwarded::Queued,
                    Err(PushError::Full) => Forwarded::QueueFull,
                    // Closing right now: it is leaving (and will tell us) or being replaced.
                    Err(PushError::Closed(_)) => Forwarded::UnknownDestination { tell: false },
                }
            }
            None => {
                self.routes.insert(dst, Route::Absent { generation });
                Forwarded::UnknownDestination { tell: !known_gone }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use iroh_base::SecretKey;

    use super::*;
    use crate::protos::frame::StatusCode;

    fn node(n: u8) -> NodeId {
        SecretKey::from_bytes(&[n; 32]).public()
    }

    fn clients(queue: usize, max: Option<usize>) -> Clients {
        let queue = QueueLimits {
            frames: queue,
            bytes: usize::MAX / 2,
        };
        Clients::new(queue, max, Arc::new(Metrics::new()))
    }

    fn drain(client: &ClientShared) -> Vec<Frame> {
        let mut batch = VecDeque::new();
        assert_eq!(client.take(&mut batch), None);
        batch.into()
    }

    fn datagram(byte: u8) -> Datagrams {
        Datagrams::single(vec![byte; 10])
    }

    #[test]
    fn routes_and_caches() {
        let clients = clients(8, None);
        let a = clients.register(node(1)).unwrap();
        let b = clients.register(node(2)).unwrap();
        let mut router = Router::new(a.node_id);
        assert_eq!(
            router.forward(&clients, b.node_id, datagram(1)),
            Forwarded::Queued
        );
        assert_eq!(
            router.forward(&clients, b.node_id, datagram(2)),
            Forwarded::Queued
        );
        let frames = drain(&b);
        assert_eq!(frames.len(), 2);
        assert!(matches!(&frames[0], Frame::RecvDatagrams { src, .. } if *src == a.node_id));
        assert!(lock(&b.senders).contains(&a.node_id));
    }

    #[test]
    fn full_queue_drops() {
        let clients = clients(2, None);
        let a = clients.register(node(1)).unwrap();
        let b = clients.register(node(2)).unwrap();
        let mut router = Router::new(a.node_id);
        assert_eq!(
            router.forward(&clients, b.node_id, datagram(1)),
            Forwarded::Queued
        );
        assert_eq!(
            router.forward(&clients, b.node_id, datagram(2)),
            Forwarded::Queued
        );
        assert_eq!(
            router.forward(&clients, b.node_id, datagram(3)),
            Forwarded::QueueFull
        );
        let frames = drain(&b);
        assert_eq!(frames.len(), 2);
        for frame in &frames {
            b.written(frame);
        }
        assert_eq!(
            router.forward(&clients, b.node_id, datagram(4)),
            Forwarded::Queued
        );
    }

    /// Issue 16: the queue was counted in frames only, so a receiver that stopped reading pinned 256 frames
    /// of up to 64 KiB each (about 18 MB) until its write timeout. Bytes are bounded too, and frames taken
    /// by the writer count until it has written them.
    #[test]
    fn queue_is_bounded_in_bytes_until_written() {
        let queue = QueueLimits {
            frames: 256,
            bytes: 200_000,
        };
        let clients = Clients::new(queue, None, Arc::new(Metrics::new()));
        let a = clients.register(node(1)).unwrap();
        let b = clients.register(node(2)).unwrap();
        let mut router = Router::new(a.node_id);
        let big = || Datagrams::single(vec![7; 60_000]);
        let queued = (0..256)
            .filter(|_| router.forward(&clients, b.node_id, big()) == Forwarded::Queued)
            .count();
        assert_eq!(queued, 3, "three 60 KB frames fit in 200,000 bytes");
        assert!(b.queued_bytes() <= 200_000);
        // Taken but not written: still counted, so a stalled writer holds no more than the limit.
        let frames = drain(&b);
        assert_eq!(frames.len(), 3);
        assert_eq!(
            router.forward(&clients, b.node_id, big()),
            Forwarded::QueueFull
        );
        b.written(&frames[0]);
        assert_eq!(
            router.forward(&clients, b.node_id, big()),
            Forwarded::Queued
        );
        // Small frames still pass beside the big ones up to the byte limit.
        assert_eq!(
            router.forward(&clients, b.node_id, datagram(1)),
            Forwarded::Queued
        );
    }

    #[test]
    fn unknown_destination_told_once_then_found_after_login() {
        let clients = clients(8, None);
        let a = clients.register(node(1)).unwrap();
        let mut router = Router::new(a.node_id);
        assert_eq!(
            router.forward(&clients, node(2), datagram(1)),
            Forwarded::UnknownDestination { tell: true }
        );
        assert_eq!(
            router.forward(&clients, node(2), datagram(1)),
            Forwarded::UnknownDestination { tell: false }
        );
        // Another login makes the negative entry stale; still absent, still not told twice.
        let _c = clients.register(node(3)).unwrap();
        assert_eq!(
            router.forward(&clients, node(2), datagram(1)),
            Forwarded::UnknownDestination { tell: false }
        );
        let b = clients.register(node(2)).unwrap();
        assert_eq!(
            router.forward(&clients, node(2), datagram(1)),
            Forwarded::Queued
        );
        assert_eq!(drain(&b).len(), 1);
    }

    #[test]
    fn departure_sends_peer_gone_to_senders() {
        let clients = clients(8, None);
        let a = clients.register(node(1)).unwrap();
        let b = clients.register(node(2)).unwrap();
        let c = clients.register(node(3)).unwrap();
        let mut router = Router::new(a.node_id);
        router.forward(&clients, b.node_id, datagram(1));
        clients.unregister(&b);
        assert_eq!(drain(&a), vec![Frame::PeerGone(b.node_id)]);
        assert!(drain(&c).is_empty(), "c never sent to b");
        // The cached route fails over to a lookup, which finds nobody; the router does not tell again.
        assert_eq!(
            router.forward(&clients, b.node_id, datagram(1)),
            Forwarded::UnknownDestination { tell: false }
        );
        assert!(drain(&a).is_empty());
        assert_eq!(clients.len(), 2);
    }

    #[test]
    fn replacement_closes_old_and_reroutes() {
        let clients = clients(8, None);
        let a = clients.register(node(1)).unwrap();
        let b1 = clients.register(node(2)).unwrap();
        let mut router = Router::new(a.node_id);
        router.forward(&clients, b1.node_id, datagram(1));
        let b2 = clients.register(node(2)).unwrap();
        let mut batch = VecDeque::new();
        assert_eq!(b1.take(&mut batch), Some(CloseReason::Replaced));
        assert_eq!(
            router.forward(&clients, node(2), datagram(2)),
            Forwarded::Queued
        );
        assert_eq!(drain(&b2).len(), 1);
        // The old connection leaving does not unregister the new one, and tells nobody.
        clients.unregister(&b1);
        assert_eq!(clients.len(), 2);
        assert!(drain(&a).is_empty());
        // The new one inherited a as a sender.
        clients.unregister(&b2);
        assert_eq!(drain(&a), vec![Frame::PeerGone(node(2))]);
    }

    #[test]
    fn max_clients_and_shutdown() {
        let clients = clients(8, Some(1));
        let a = clients.register(node(1)).unwrap();
        assert_eq!(clients.register(node(2)).unwrap_err(), RegisterError::Full);
        // Replacing is not growing.
        let _a2 = clients.register(node(1)).unwrap();
        clients.close_all(CloseReason::Shutdown);
        let mut batch = VecDeque::new();
        // `a` was replaced first; the first reason wins.
        assert_eq!(a.take(&mut batch), Some(CloseReason::Replaced));
        assert_eq!(
            clients.register(node(3)).unwrap_err(),
            RegisterError::ShuttingDown
        );
        assert!(
            a.push(Frame::Status {
                code: StatusCode::Healthy,
                message: String::new()
            })
            .is_err()
        );
    }
}
