//! [`MagicSock`]: the handle given to quinn as its `AsyncUdpSocket`.
//!
//! It holds no state of its own beyond what the actor publishes (the [`Routes`]) and the channels:
//!
//! - **send** (`try_send`): the destination is a mapped address (a node: look up its plan, send over UDP
//!   and/or the relay) or an alias (an unconfirmed source: straight to its UDP address). Undeliverable
//!   packets are dropped and counted; the only error ever returned is `WouldBlock` (any other error would
//!   make quinn close the connection).
//! - **receive** (`poll_recv`): first the packets the actor and relay actors deliver (relayed QUIC,
//!   resolved unknown sources), then both UDP sockets. Every segment of a GRO batch is classified; disco
//!   and STUN segments go to the actor and are cut out of the batch. A QUIC batch from a known source gets
//!   its node's mapped address; from an unknown source it goes to the actor *through the same queue as
//!   disco*, so the actor sees it after the disco ping that usually precedes it and can name its node.

use std::{
    fmt, io,
    net::{Ipv6Addr, SocketAddr, SocketAddrV6},
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use iroh_base::NodeId;
use quinn::{
    AsyncUdpSocket, UdpPoller,
    udp::{EcnCodepoint, RecvMeta, Transmit},
};
use tokio::sync::mpsc;
use tracing::trace;

use super::{
    actor::ActorMsg,
    alias::{AliasAddrs, may_open_connection},
    batch::{relay_batches, take_non_quic},
    demux::PacketKind,
    mapped::MappedAddrs,
    metrics::{Metrics, add, inc},
    routes::{AddrOwner, Epoch, NodeRoute, Routes},
    udp::{ExtraId, UdpSockets},
};
use crate::paths::SendAddr;

/// A packet for quinn that did not come straight from a UDP socket: relayed QUIC, or a batch whose source
/// the actor resolved.
#[derive(Debug)]
pub(crate) struct Delivered {
    /// The made-up source address quinn sees.
    pub(crate) src: SocketAddr,
    /// One datagram, or several of `stride` bytes (the last possibly shorter).
    pub(crate) contents: Bytes,
    pub(crate) stride: usize,
    pub(crate) ecn: Option<EcnCodepoint>,
}

/// A test hook: addresses for which it returns true get no direct traffic (QUIC and disco), in either
/// direction. STUN is not affected.
pub type DirectFilter = Arc<dyn Fn(SocketAddr) -> bool + Send + Sync>;

/// How many failed receives in a row `poll_recv` absorbs before reporting one to quinn.
const MAX_RECV_ERRORS: usize = 8;

/// The magic socket; see the [module docs](self).
pub(crate) struct MagicSock {
    pub(crate) udp: UdpSockets,
    pub(crate) mapped: MappedAddrs,
    pub(crate) aliases: AliasAddrs,
    pub(crate) routes: RwLock<Routes>,
    /// The origin of the traffic stamps in `routes`.
    pub(crate) epoch: Epoch,
    pub(crate) metrics: Metrics,
    pub(crate) actor_tx: mpsc::Sender<ActorMsg>,
    pub(crate) deliver_tx: mpsc::Sender<Delivered>,
    /// Only quinn's endpoint driver receives, so this lock is never contended.
    deliver_rx: Mutex<mpsc::Receiver<Delivered>>,
    filter_on: AtomicBool,
    filter: RwLock<Option<DirectFilter>>,
}

impl fmt::Debug for MagicSock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MagicSock")
            .field("udp", &self.udp)
            .finish_non_exhaustive()
    }
}

impl MagicSock {
    pub(crate) fn new(
        udp: UdpSockets,
        actor_tx: mpsc::Sender<ActorMsg>,
        delivery_capacity: usize,
    ) -> Self {
        let (deliver_tx, deliver_rx) = mpsc::channel(delivery_capacity);
        Self {
            udp,
            mapped: MappedAddrs::new(),
            aliases: AliasAddrs::new(),
            routes: RwLock::new(Routes::default()),
            epoch: Epoch::new(),
            metrics: Metrics::default(),
            actor_tx,
            deliver_tx,
            deliver_rx: Mutex::new(deliver_rx),
            filter_on: AtomicBool::new(false),
            filter: RwLock::new(None),
        }
    }

    /// Reads the routes. A panic while the actor held the write lock leaves the maps consistent (each
    /// update is a single insert or remove), so poisoning is ignored.
    pub(crate) fn routes(&self) -> std::sync::RwLockReadGuard<'_, Routes> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the routes (the actor only).
    pub(crate) fn routes_mut(&self) -> std::sync::RwLockWriteGuard<'_, Routes> {
        self.routes.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_direct_filter(&self, filter: Option<DirectFilter>) {
        let on = filter.is_some();
        *self.filter.write().unwrap_or_else(PoisonError::into_inner) = filter;
        self.filter_on.store(on, Ordering::Release);
    }

    /// Whether the test filter blocks direct traffic with `addr`.
    pub(crate) fn blocked(&self, addr: SocketAddr) -> bool {
        if !self.filter_on.load(Ordering::Acquire) {
            return false;
        }
        let filter = self.filter.read().unwrap_or_else(PoisonError::into_inner);
        filter.as_ref().is_some_and(|f| f(addr))
    }

    /// Hands a packet to the actor without waiting; counts it if the queue is full.
    pub(crate) fn to_actor(&self, msg: ActorMsg) {
        if self.actor_tx.try_send(msg).is_err() {
            inc(&self.metrics.recv_queue_full);
        }
    }

    /// Hands a packet to quinn without waiting; counts it if the queue is full.
    pub(crate) fn deliver(&self, packet: Delivered) {
        if self.deliver_tx.try_send(packet).is_err() {
            inc(&self.metrics.recv_queue_full);
        }
    }

    fn send_udp(&self, dst: SocketAddr, transmit: &Transmit<'_>, alone: bool) -> io::Result<()> {
        if self.blocked(dst) {
            inc(&self.metrics.send_udp_dropped);
            return Ok(());
        }
        match self.udp.send(dst, transmit) {
            Ok(()) => {
                add(&self.metrics.send_udp, segments(transmit));
                Ok(())
            }
            // Only a packet that has no other way out waits for the socket; quinn retries it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && alone => Err(e),
            Err(error) => {
                trace!(%dst, %error, "UDP send failed, datagram dropped");
                inc(&self.metrics.send_udp_dropped);
                Ok(())
            }
        }
    }

    fn send_to_node(&self, node: NodeId, transmit: &Transmit<'_>) -> io::Result<()> {
        let (udp, relay, relay_wanted) = {
            let routes = self.routes();
            let Some(route) = routes.nodes.get(&node) else {
                drop(routes);
                inc(&self.metrics.send_no_route);
                return Ok(());
            };
            if !route.activity.swap(true, Ordering::Relaxed)
                && self.actor_tx.try_send(ActorMsg::Activity(node)).is_err()
            {
                // Tell the actor next time, then.
                route.activity.store(false, Ordering::Relaxed);
            }
            let relay = route
                .plan
                .relay
                .as_ref()
                .and_then(|url| routes.relays.get(url).cloned());
            if let Some(addr) = route.plan.udp {
                self.stamp_sent(node, addr, route, &routes);
            }
            (route.plan.udp, relay, route.plan.relay.is_some())
        };
        if let Some(slot) = &relay {
            slot.mark_used();
            for batch in relay_batches(transmit.contents, transmit.segment_size, transmit.ecn) {
                let count = batch.segment_size.map_or(1, |s| {
                    batch.contents.len().div_ceil(usize::from(s.get())) as u64
                });
                match slot.sender.try_send(node, batch) {
                    Ok(()) => add(&self.metrics.send_relay, count),
                    Err(_) => add(&self.metrics.send_relay_dropped, count),
                }
            }
        } else if relay_wanted {
            // The plan names a relay whose client is not open (yet, or any more): the activity note
            // above makes the actor open it.
            add(&self.metrics.send_relay_dropped, segments(transmit));
        }
        match udp {
            Some(addr) => self.send_udp(addr, transmit, !relay_wanted),
            None => {
                if !relay_wanted {
                    add(&self.metrics.send_no_route, segments(transmit));
                }
                Ok(())
            }
        }
    }

    /// Notes a direct send to `node` over `addr`; if the path's trusted but nothing came back from `addr`
    /// for its silence timeout, tells the actor (once, until it clears the flag).
    fn stamp_sent(&self, node: NodeId, addr: SocketAddr, route: &NodeRoute, routes: &Routes) {
        let now = self.epoch.nanos(Instant::now());
        route.last_sent.set(now);
        let Some(silence) = route.silence_after else {
            return;
        };
        let received = routes
            .by_addr
            .get(&addr)
            .map_or(0, |entry| entry.last_recv.nanos());
        let quiet = u128::from(now.saturating_sub(received)) > silence.as_nanos();
        if quiet
            && !route.silent.swap(true, Ordering::Relaxed)
            && self.actor_tx.try_send(ActorMsg::Silent(node)).is_err()
        {
            route.silent.store(false, Ordering::Relaxed);
        }
    }

    /// Processes the `n` entries a UDP socket just wrote into `bufs`/`metas`: takes disco and STUN out,
    /// maps sources, drops what quinn must not see. Returns how many entries remain, compacted to the
    /// front.
    fn process_udp(
        &self,
        bufs: &mut [io::IoSliceMut<'_>],
        metas: &mut [RecvMeta],
        n: usize,
        via: Option<ExtraId>,
    ) -> usize {
        let mut kept = 0;
        let mut now: Option<Instant> = None;
        for i in 0..n {
            let meta = metas[i];
            let src = SocketAddr::new(meta.addr.ip().to_canonical(), meta.addr.port());
            let len = take_non_quic(&mut bufs[i], meta.len, meta.stride, |kind, segment| {
                let packet = Bytes::copy_from_slice(segment);
                match kind {
                    PacketKind::Disco => {
                        if self.blocked(src) {
                            inc(&self.metrics.recv_filtered);
                        } else {
                            inc(&self.metrics.disco_recv);
                            self.to_actor(ActorMsg::Disco {
                                src: SendAddr::Udp(src),
                                relay_src: None,
                                via,
                                packet,
                            });
                        }
                    }
                    PacketKind::Stun => {
                        inc(&self.metrics.stun_recv);
                        self.to_actor(ActorMsg::Stun { src, packet });
                    }
                    PacketKind::Quic => {}
                }
            });
            if len == 0 {
                continue;
            }
            if self.blocked(src) {
                inc(&self.metrics.recv_filtered);
                continue;
            }
            let owner = {
                let routes = self.routes();
                routes.by_addr.get(&src).map(|entry| {
                    if matches!(
                        entry.owner,
                        AddrOwner::Node(_) | AddrOwner::Alias { node: Some(_), .. }
                    ) {
                        let at = *now.get_or_insert_with(Instant::now);
                        entry.last_recv.set(self.epoch.nanos(at));
                    }
                    entry.owner
                })
            };
            let mapped = match owner {
                Some(AddrOwner::Node(node)) => self.mapped.get_or_insert(node),
                Some(AddrOwner::Alias {
                    alias,
                    node,
                    sticky_until,
                }) => match node {
                    Some(node) if *now.get_or_insert_with(Instant::now) >= sticky_until => {
                        self.mapped.get_or_insert(node)
                    }
                    _ => alias,
                },
                None => {
                    let first = &bufs[i][..len.min(meta.stride.max(1))];
                    if may_open_connection(first) {
                        self.to_actor(ActorMsg::UnknownQuic {
                            src,
                            packet: Delivered {
                                src,
                                contents: Bytes::copy_from_slice(&bufs[i][..len]),
                                stride: meta.stride,
                                ecn: meta.ecn,
                            },
                        });
                    } else {
                        inc(&self.metrics.recv_unknown_dropped);
                    }
                    continue;
                }
            };
            let stride = if meta.stride == 0 { len } else { meta.stride };
            add(&self.metrics.recv_udp, len.div_ceil(stride) as u64);
            if kept != i {
                let (head, tail) = bufs.split_at_mut(i);
                head[kept][..len].copy_from_slice(&tail[0][..len]);
            }
            metas[kept] = RecvMeta {
                addr: mapped,
                len,
                stride: meta.stride,
                ecn: meta.ecn,
                dst_ip: None,
            };
            kept += 1;
        }
        kept
    }
}

/// How many datagrams a transmit carries.
fn segments(transmit: &Transmit<'_>) -> u64 {
    transmit
        .segment_size
        .filter(|s| *s > 0)
        .map_or(1, |s| transmit.contents.len().div_ceil(s) as u64)
}

impl AsyncUdpSocket for MagicSock {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(self.udp.poller())
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let dst = transmit.destination;
        if let Some(node) = self.mapped.node_for(&dst) {
            return self.send_to_node(node, transmit);
        }
        if self.aliases.is_alias(&dst)
            && let Some(raw) = self.aliases.raw_for(&dst)
        {
            return self.send_udp(raw, transmit, true);
        }
        trace!(%dst, "transmit to an address that is not ours, dropped");
        inc(&self.metrics.send_no_route);
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
        metas: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.len().min(metas.len());
        let mut filled = 0;
        {
            let mut rx = self
                .deliver_rx
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            while filled < total {
                let Poll::Ready(Some(packet)) = rx.poll_recv(cx) else {
                    break;
                };
                let buf = &mut bufs[filled];
                let len = packet.contents.len();
                if len > buf.len() {
                    inc(&self.metrics.recv_queue_full);
                    continue;
                }
                buf[..len].copy_from_slice(&packet.contents);
                metas[filled] = RecvMeta {
                    addr: packet.src,
                    len,
                    stride: if packet.stride == 0 {
                        len
                    } else {
                        packet.stride
                    },
                    ecn: packet.ecn,
                    dst_ip: None,
                };
                filled += 1;
            }
        }
        for index in 0..2 {
            let mut errors = 0;
            while filled < total {
                let Some(poll) = self.udp.poll_recv(
                    index,
                    cx,
                    &mut bufs[filled..total],
                    &mut metas[filled..total],
                ) else {
                    break;
                };
                match poll {
                    Poll::Pending => break,
                    Poll::Ready(Ok(n)) => {
                        filled += self.process_udp(
                            &mut bufs[filled..total],
                            &mut metas[filled..total],
                            n,
                            None,
                        );
                    }
                    Poll::Ready(Err(error)) => {
                        errors += 1;
                        trace!(%error, "UDP receive failed");
                        if errors >= MAX_RECV_ERRORS {
                            if filled > 0 {
                                break;
                            }
                            // quinn ignores this kind and polls again.
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::ConnectionReset,
                                error,
                            )));
                        }
                    }
                }
            }
        }
        // Port prediction's extra sockets: a probe, then a connection's packets, may come on any.
        self.udp.note_recv_waker(cx.waker());
        let extras = self.udp.extras_snapshot().unwrap_or_default();
        for (id, sock) in extras.iter() {
            let id = *id;
            while filled < total {
                match sock.poll_recv(cx, &mut bufs[filled..total], &mut metas[filled..total]) {
                    Poll::Ready(Ok(n)) => {
                        filled += self.process_udp(
                            &mut bufs[filled..total],
                            &mut metas[filled..total],
                            n,
                            Some(id),
                        );
                    }
                    Poll::Ready(Err(error)) => {
                        trace!(%error, "UDP receive on an extra socket failed");
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        if filled > 0 {
            Poll::Ready(Ok(filled))
        } else {
            Poll::Pending
        }
    }

    /// An IPv6 address, always: quinn must accept the made-up IPv6 addresses of remote nodes.
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.udp.local_v6().unwrap_or_else(|| {
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::UNSPECIFIED,
                self.udp.local_v4().port(),
                0,
                0,
            ))
        }))
    }

    fn max_transmit_segments(&self) -> usize {
        self.udp.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.udp.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.udp.may_fragment()
    }
}
