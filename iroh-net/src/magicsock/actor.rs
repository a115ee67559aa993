//! The magic socket's actor: one tokio task, the sole owner of the path core ([`Paths`]), the net report
//! core ([`NetReporter`]), the disco key cache and the relay clients.
//!
//! ```text
//!   inbox (bounded) <- socket: disco, STUN, QUIC from unknown sources (in arrival order), activity
//!                   <- relay actors: disco, QUIC from nodes not yet known, connection state
//!                   <- Endpoint: add a NodeAddr (acked once the first pings are out), remote info
//!   tasks (JoinSet)  -> relay host resolution, relay pings for net report
//!   one timer        -> Paths / NetReporter timeouts, activity flags, relay idle sweep, link check
//!        |
//!   after every input: drain Paths and NetReporter (seal and send disco, send STUN, publish plans and
//!   addresses into the socket's Routes, update watchers, log structured events), re-arm the timer
//! ```
//!
//! It ends when the Endpoint tells it to (or drops its handle), not when its inbox closes: the socket,
//! which the actor shares, holds a sender to that inbox.

mod keys;
mod predict;
mod relays;
mod report;
mod traffic;

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use bytes::Bytes;
use iroh_base::{NodeAddr, NodeId, RelayUrl, SecretKey, SharedSecret};
use iroh_relay::{client::CertificateDer, protos::frame::Datagrams};
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinSet,
};
use tracing::{debug, trace};

pub(crate) use self::relays::DEFAULT_RELAY_IDLE;
use self::relays::RelayConn;
use super::{
    batch::quinn_ecn,
    metrics::inc,
    routes::{AddrEntry, AddrOwner, NodeRoute},
    socket::{Delivered, MagicSock},
    udp::ExtraId,
};
use crate::{
    disco::{self, DiscoError, Message},
    net_report::{NetReportConfig, NetReporter, RelayMap},
    paths::{
        ConnectionType, DiscoTransmit, NodeInfo, PathConfig, PathEvent, Paths, SendAddr, Source,
    },
    portmap::{
        client::Mapping,
        service::{PortMapConfig, PortMapper},
    },
};

/// Resolves when the port mapper's mapping changed (never without a port mapper).
async fn mapping_changed(
    portmap: Option<&mut (PortMapper, watch::Receiver<Option<Mapping>>)>,
) -> Result<(), watch::error::RecvError> {
    match portmap {
        Some((_, watch)) => watch.changed().await,
        None => std::future::pending().await,
    }
}

/// How long the socket keeps an alias for a source after making it, even once the source's node is known:
/// longer than a handshake takes, since quinn drops packets from a new address during the handshake.
const ALIAS_STICKY: Duration = Duration::from_secs(10);
/// How long after hearing of a node's activity the actor wants to hear of it again.
const ACTIVITY_INTERVAL: Duration = Duration::from_secs(1);
/// How often the interface addresses are read to notice a network change (one `getifaddrs` call).
const LINK_CHECK: Duration = Duration::from_secs(1);
/// The most inbox messages handled before draining the cores.
const INBOX_BATCH: usize = 64;

/// What the actor's inbox carries.
pub(crate) enum ActorMsg {
    /// A disco packet, over UDP from `src` or through a relay (whose claimed sender is `relay_src`);
    /// `via` names the extra socket (of port prediction) it came on, if not a main one.
    Disco {
        src: SendAddr,
        relay_src: Option<NodeId>,
        via: Option<ExtraId>,
        packet: Bytes,
    },
    /// A STUN packet from `src`.
    Stun { src: SocketAddr, packet: Bytes },
    /// QUIC from a UDP source the socket did not know.
    UnknownQuic { src: SocketAddr, packet: Delivered },
    /// QUIC through a relay from a node whose relay the path core did not know.
    RelayQuic {
        url: RelayUrl,
        src: NodeId,
        datagrams: Datagrams,
    },
    /// The socket sent to this node.
    Activity(NodeId),
    /// The socket sends to this node over a trusted direct path from which nothing has come back for the
    /// path's silence timeout.
    Silent(NodeId),
    /// A relay client connected or lost its connection.
    RelayState { url: RelayUrl, connected: bool },
    /// Learn a node's addresses and start reaching it; the answer is its mapped address, or `None` if no
    /// path to it is known. Sent once the first pings are out.
    AddNodeAddr {
        addr: NodeAddr,
        /// Where the application got it: itself, or a discovery service.
        source: Source,
        reply: oneshot::Sender<Option<SocketAddr>>,
    },
    /// What the path core knows about a node.
    RemoteInfo {
        node: NodeId,
        reply: oneshot::Sender<Option<NodeInfo>>,
    },
}

/// What the actor publishes for the Endpoint's watchers.
#[derive(Debug)]
pub(crate) struct Watchers {
    pub(crate) home_relay: watch::Sender<Option<RelayUrl>>,
    pub(crate) direct_addrs: watch::Sender<BTreeSet<SocketAddr>>,
    pub(crate) conn_types: Mutex<HashMap<NodeId, watch::Sender<ConnectionType>>>,
    /// The port mapping the gateway granted, if any.
    pub(crate) port_mapping: watch::Sender<Option<Mapping>>,
}

impl Watchers {
    pub(crate) fn new() -> Self {
        Self {
            home_relay: watch::channel(None).0,
            direct_addrs: watch::channel(BTreeSet::new()).0,
            conn_types: Mutex::new(HashMap::new()),
            port_mapping: watch::channel(None).0,
        }
    }

    /// A watcher of the connection type to `node`.
    pub(crate) fn conn_type(&self, node: NodeId) -> watch::Receiver<ConnectionType> {
        let mut map = self
            .conn_types
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(node)
            .or_insert_with(|| watch::channel(ConnectionType::None).0)
            .subscribe()
    }

    fn set_conn_type(&self, node: NodeId, conn_type: ConnectionType) {
        let mut map = self
            .conn_types
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get(&node) {
            Some(tx) => {
                tx.send_if_modified(|current| {
                    let changed = *current != conn_type;
                    *current = conn_type;
                    changed
                });
            }
            None => {
                map.insert(node, watch::channel(conn_type).0);
            }
        }
    }
}

/// How relay connections verify the relay's TLS certificate, and which upgrade they ask for first.
#[derive(Debug, Clone, Default)]
pub(crate) struct RelayTls {
    pub(crate) insecure_skip_verify: bool,
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
    pub(crate) transport: iroh_relay::client::Transport,
}

/// Everything the actor is started with.
#[derive(Debug)]
pub(crate) struct ActorConfig {
    pub(crate) secret_key: SecretKey,
    pub(crate) relay_map: Option<RelayMap>,
    pub(crate) relay_tls: RelayTls,
    pub(crate) path_config: PathConfig,
    pub(crate) net_report: NetReportConfig,
    /// How long a relay other than home may go unused before it is closed.
    pub(crate) relay_idle: Duration,
    /// Which port mapping protocols to use.
    pub(crate) port_mapping: PortMapConfig,
}

/// Results of the actor's helper tasks.
enum TaskOut {
    /// Relay STUN hosts resolved for a net report.
    Resolved(Vec<crate::net_report::ProbeTarget>),
    /// A relay ping answered (or not).
    Latency(RelayUrl, Option<Duration>),
}

/// The actor; see the [module docs](self).
pub(crate) struct Actor {
    sock: Arc<MagicSock>,
    inbox: mpsc::Receiver<ActorMsg>,
    shutdown: watch::Receiver<bool>,
    watchers: Arc<Watchers>,
    secret_key: SecretKey,
    node_id: NodeId,
    paths: Paths,
    reporter: Option<NetReporter>,
    relay_map: Option<RelayMap>,
    relay_tls: RelayTls,
    keys: keys::DiscoKeys<SharedSecret>,
    relays: HashMap<RelayUrl, RelayConn>,
    home: Option<RelayUrl>,
    own_addrs: Vec<SocketAddr>,
    /// The addresses of our sockets on the local interfaces, as last read.
    local_addrs: Vec<SocketAddr>,
    tasks: JoinSet<TaskOut>,
    activity_clear: VecDeque<(Instant, NodeId)>,
    relay_idle: Duration,
    /// When the path core wants its timeout handled, as armed last.
    paths_due: Option<Instant>,
    next_sweep: Instant,
    next_link_check: Instant,
    /// Reused buffers of [`traffic`]: (node, address, received at), (node, sent at).
    traffic_scratch: TrafficScratch,
    /// The port mapper (none when port mapping is off) and its mapping, as last seen.
    portmap: Option<(PortMapper, watch::Receiver<Option<Mapping>>)>,
    /// Port prediction's extra sockets.
    predictions: predict::Predictions,
}

type TrafficScratch = (Vec<(NodeId, SocketAddr, Instant)>, Vec<(NodeId, Instant)>);

impl Actor {
    /// Sets the actor up: our own addresses are known and the home relay is connecting when this returns.
    /// Must run inside a tokio runtime.
    pub(crate) fn new(
        config: ActorConfig,
        sock: Arc<MagicSock>,
        inbox: mpsc::Receiver<ActorMsg>,
        shutdown: watch::Receiver<bool>,
        watchers: Arc<Watchers>,
    ) -> Self {
        let now = Instant::now();
        let reporter = config
            .relay_map
            .as_ref()
            .map(|_| NetReporter::new(config.net_report, rand::random()));
        let mut actor = Self {
            sock,
            inbox,
            shutdown,
            watchers,
            node_id: config.secret_key.public(),
            secret_key: config.secret_key,
            paths: Paths::new(config.path_config, rand::random()),
            reporter,
            relay_map: config.relay_map,
            relay_tls: config.relay_tls,
            keys: keys::DiscoKeys::new(Instant::now()),
            relays: HashMap::new(),
            home: None,
            own_addrs: Vec::new(),
            local_addrs: Vec::new(),
            tasks: JoinSet::new(),
            activity_clear: VecDeque::new(),
            relay_idle: config.relay_idle,
            paths_due: None,
            next_sweep: now,
            next_link_check: now + LINK_CHECK,
            traffic_scratch: (Vec::new(), Vec::new()),
            portmap: config.port_mapping.is_enabled().then(|| {
                let mapper = PortMapper::spawn(config.port_mapping);
                let watch = mapper.watch();
                (mapper, watch)
            }),
            predictions: predict::Predictions::default(),
        };
        actor.next_sweep = now + actor.relay_sweep_interval();
        actor.local_addrs = actor.read_local_addrs();
        actor.refresh_own_addrs();
        if let Some(first) = actor.relay_map.as_ref().map(|m| m.nodes()[0].url.clone()) {
            actor.set_home(first);
        }
        actor
    }

    /// Runs until shut down.
    pub(crate) async fn run(mut self) {
        self.drain();
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        loop {
            self.arm(timer.as_mut());
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                Ok(()) = mapping_changed(self.portmap.as_mut()) => self.port_mapping_changed(),
                // Timers before the inbox: a flood of packets must not starve heartbeats.
                () = &mut timer => self.handle_timeout(),
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Ok(out) = done {
                        self.handle_task(out);
                    }
                }
                msg = self.inbox.recv() => {
                    let Some(msg) = msg else { break };
                    self.handle(msg);
                    for _ in 1..INBOX_BATCH {
                        let Ok(msg) = self.inbox.try_recv() else { break };
                        self.handle(msg);
                    }
                }
            }
            self.drain();
        }
        debug!("magic socket actor stopping");
        self.tasks.abort_all();
        if let Some((mapper, _)) = &self.portmap {
            mapper.shutdown().await;
            self.watchers.port_mapping.send_replace(None);
        }
        self.close_all_relays().await;
    }

    fn arm(&mut self, timer: Pin<&mut tokio::time::Sleep>) {
        let now = Instant::now();
        // `Paths::poll_timeout` names only instants after `now`, so remember what was armed: at the timer,
        // it is in the past.
        self.paths_due = self.paths.poll_timeout(now);
        let deadline = [
            self.paths_due,
            self.reporter.as_ref().and_then(NetReporter::poll_timeout),
            self.activity_clear.front().map(|(at, _)| *at),
            Some(self.next_sweep),
            Some(self.next_link_check),
            self.predictions.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + LINK_CHECK);
        timer.reset(tokio::time::Instant::from_std(deadline));
    }

    fn handle(&mut self, msg: ActorMsg) {
        let now = Instant::now();
        match msg {
            ActorMsg::Disco {
                src,
                relay_src,
                via,
                packet,
            } => self.handle_disco(now, &src, relay_src, via, &packet),
            ActorMsg::Stun { src, packet } => {
                if let Some(reporter) = &mut self.reporter
                    && !reporter.handle_stun(now, src, &packet)
                {
                    trace!(%src, "STUN packet that is not ours, ignored");
                }
            }
            ActorMsg::UnknownQuic { src, packet } => self.handle_unknown_quic(now, src, packet),
            ActorMsg::RelayQuic {
                url,
                src,
                datagrams,
            } => self.handle_relay_quic(now, &url, src, datagrams),
            ActorMsg::Activity(node) => {
                self.paths.note_activity(now, node);
                self.activity_clear
                    .push_back((now + ACTIVITY_INTERVAL, node));
                let relay = self.paths.send_plan(now, &node).relay;
                if let Some(url) = relay {
                    self.ensure_relay(&url);
                }
            }
            ActorMsg::Silent(node) => self.sync_node_traffic(now, node),
            ActorMsg::RelayState { url, connected } => {
                debug!(%url, connected, "relay connection state");
                let Some(conn) = self.relays.get_mut(&url) else {
                    return;
                };
                let lost = conn.connected && !connected;
                conn.connected = connected;
                let is_home = self.home.as_ref() == Some(&url);
                if connected && is_home {
                    self.publish_home();
                }
                // A lost home relay: measure again (maybe another relay should be home now).
                if lost
                    && is_home
                    && let Some(reporter) = &mut self.reporter
                {
                    reporter.request_report(now, crate::net_report::ReportReason::RelayFailed(url));
                }
            }
            ActorMsg::AddNodeAddr {
                addr,
                source,
                reply,
            } => {
                let mapped = self.add_node_addr(now, addr, source);
                // The reply waits until the pings this caused are sent.
                self.drain();
                reply.send(mapped).ok();
            }
            ActorMsg::RemoteInfo { node, reply } => {
                reply.send(self.paths.node_info(now, &node)).ok();
            }
        }
    }

    fn handle_timeout(&mut self) {
        let now = Instant::now();
        if self.paths_due.is_some_and(|at| at <= now) {
            self.paths_due = None;
            // What the socket saw since (QUIC received, sent) decides whether a path is silent.
            self.sync_traffic(now);
            self.paths.handle_timeout(now);
        }
        if let Some(reporter) = &mut self.reporter
            && reporter.poll_timeout().is_some_and(|at| at <= now)
        {
            reporter.handle_timeout(now);
        }
        while let Some((at, node)) = self.activity_clear.front().copied() {
            if at > now {
                break;
            }
            self.activity_clear.pop_front();
            if let Some(route) = self.sock.routes().nodes.get(&node) {
                route
                    .activity
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if now >= self.next_sweep {
            self.next_sweep = now + self.relay_sweep_interval();
            self.sweep_relays(now);
        }
        if now >= self.next_link_check {
            self.next_link_check = now + LINK_CHECK;
            self.check_links(now);
        }
        self.expire_predictions(now);
    }

    /// Drains both cores until neither has output left.
    fn drain(&mut self) {
        loop {
            let mut progress = false;
            while let Some(transmit) = self.paths.poll_transmit() {
                progress = true;
                self.send_disco_transmit(transmit);
            }
            while let Some(event) = self.paths.poll_event() {
                progress = true;
                match event {
                    PathEvent::PlanChanged { node, plan } => self.publish_plan(node, plan),
                    PathEvent::ObservedOwnAddr { node, addr } => {
                        trace!(node = %node.fmt_short(), %addr, "a node sees us at this address");
                    }
                    PathEvent::OpenPredictionSockets { node, dst, count } => {
                        self.open_prediction_sockets(Instant::now(), node, dst, count);
                    }
                    PathEvent::SprayEnded { node, probes, hit } => {
                        self.spray_ended(node, probes, hit);
                    }
                }
            }
            progress |= self.drain_reporter();
            if !progress {
                break;
            }
        }
    }

    /// Learns a node's addresses and notes activity (which starts holepunching). Returns its mapped address
    /// if some path to it is known.
    fn add_node_addr(
        &mut self,
        now: Instant,
        mut addr: NodeAddr,
        source: Source,
    ) -> Option<SocketAddr> {
        let node = addr.node_id;
        if self.relay_map.is_none() {
            addr.relay_url = None;
        }
        addr.direct_addresses = addr
            .direct_addresses
            .iter()
            .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
            .collect();
        self.paths.add_node_addr(now, &addr, source);
        self.paths.note_activity(now, node);
        {
            let mut routes = self.sock.routes_mut();
            for direct in &addr.direct_addresses {
                if self.paths.node_for_addr(direct) == Some(node) {
                    routes.set_owner(*direct, node);
                }
            }
        }
        self.refresh_route(now, node);
        let plan = self.paths.send_plan(now, &node);
        (plan.udp.is_some() || plan.relay.is_some()).then(|| self.sock.mapped.get_or_insert(node))
    }

    /// Makes sure the socket has a route for `node` with the path core's current plan.
    fn refresh_route(&mut self, now: Instant, node: NodeId) {
        let plan = self.paths.send_plan(now, &node);
        self.set_route(node, plan);
    }

    /// Publishes `plan` as the socket's route to `node`, opening the relay it names.
    fn set_route(&mut self, node: NodeId, plan: crate::paths::SendPlan) {
        if let Some(url) = &plan.relay {
            self.ensure_relay(url);
        }
        if let Some(addr) = plan.udp
            && self.paths.node_for_addr(&addr) == Some(node)
        {
            self.sock.routes_mut().set_owner(addr, node);
        }
        self.sock.mapped.get_or_insert(node);
        let relay_known = self.paths.relay_url(&node).is_some();
        let silence_after = self.paths.silence_after(Instant::now(), &node);
        let mut routes = self.sock.routes_mut();
        let route = routes
            .nodes
            .entry(node)
            .or_insert_with(|| NodeRoute::new(plan.clone(), relay_known));
        route.plan = plan;
        route.relay_known = relay_known;
        route.silence_after = silence_after;
    }

    fn publish_plan(&mut self, node: NodeId, plan: crate::paths::SendPlan) {
        let conn_type = plan.conn_type();
        debug!(
            target: "iroh::_events::conn_type",
            node = %node.fmt_short(),
            conn_type = %conn_type,
        );
        self.set_route(node, plan);
        self.watchers.set_conn_type(node, conn_type);
    }

    fn handle_disco(
        &mut self,
        now: Instant,
        src: &SendAddr,
        relay_src: Option<NodeId>,
        via: Option<ExtraId>,
        packet: &[u8],
    ) {
        let metrics = Arc::clone(&self.sock);
        let metrics = &metrics.metrics;
        let sender = match disco::sender(packet) {
            Ok(sender) => sender,
            Err(error) => {
                trace!(%src, %error, "malformed disco packet dropped");
                inc(&metrics.disco_invalid);
                return;
            }
        };
        // The relay vouches for who sent it; a disco packet naming someone else is forged.
        if relay_src.is_some_and(|relayed| relayed != sender) || sender == self.node_id {
            inc(&metrics.disco_forged);
            return;
        }
        let Some(secret) = self.secret_from(now, sender, relay_src.is_some()) else {
            return;
        };
        let message = match disco::open(packet, secret) {
            Ok(message) => message,
            Err(DiscoError::Open(_)) => {
                trace!(%src, sender = %sender.fmt_short(), "disco packet did not open, dropped");
                inc(&metrics.disco_forged);
                return;
            }
            Err(error) => {
                trace!(%src, %error, "invalid disco message dropped");
                inc(&metrics.disco_invalid);
                return;
            }
        };
        trace!(%src, sender = %sender.fmt_short(), ?message, "disco received");
        if let (Some(via), SendAddr::Udp(addr)) = (via, src) {
            self.prediction_hit(sender, *addr, via);
        }
        let mut learned: Vec<SocketAddr> = Vec::new();
        match message {
            Message::Ping(ping) => self.paths.handle_ping(now, sender, src, ping.tx_id),
            Message::Pong(pong) => {
                let observed = (!pong.observed.ip().is_unspecified()).then_some(pong.observed);
                self.paths
                    .handle_pong(now, sender, src, pong.tx_id, observed);
            }
            Message::CallMeMaybe(cmm) => match src {
                SendAddr::Relay(url) => {
                    self.paths
                        .handle_call_me_maybe(now, sender, url, cmm.addrs(), cmm.nat());
                    learned.extend_from_slice(cmm.addrs());
                }
                SendAddr::Udp(_) => trace!("call-me-maybe over UDP ignored"),
            },
            Message::Predict(predict) => match src {
                SendAddr::Relay(_) => self.paths.handle_predict(now, sender, predict.ip),
                SendAddr::Udp(_) => trace!("predict over UDP ignored"),
            },
        }
        if let SendAddr::Udp(addr) = src {
            learned.push(*addr);
        }
        {
            let mut routes = self.sock.routes_mut();
            for addr in learned {
                if self.paths.node_for_addr(&addr) == Some(sender) {
                    routes.set_owner(addr, sender);
                }
            }
        }
        self.refresh_route(now, sender);
    }

    fn handle_unknown_quic(&mut self, now: Instant, src: SocketAddr, mut packet: Delivered) {
        let metrics = &self.sock.metrics;
        if let Some(node) = self.paths.node_for_addr(&src) {
            // The disco packet that came just before named the source.
            self.sock.routes_mut().set_owner(src, node);
            packet.src = self.sock.mapped.get_or_insert(node);
            inc(&metrics.recv_udp);
            self.sock.deliver(packet);
            return;
        }
        let existing = self.sock.routes().owner(&src);
        let alias = match existing {
            Some(AddrOwner::Alias { alias, .. }) => Some(alias),
            Some(AddrOwner::Node(node)) => Some(self.sock.mapped.get_or_insert(node)),
            None => self.sock.aliases.get_or_insert(src).inspect(|alias| {
                debug!(
                    target: "iroh::_events::magicsock::alias",
                    src = %src,
                    alias = %alias,
                );
                self.sock.routes_mut().by_addr.insert(
                    src,
                    AddrEntry::new(AddrOwner::Alias {
                        alias: *alias,
                        node: None,
                        sticky_until: now + ALIAS_STICKY,
                    }),
                );
            }),
        };
        match alias {
            Some(alias) => {
                packet.src = alias;
                inc(&metrics.recv_aliased);
                self.sock.deliver(packet);
            }
            None => inc(&metrics.recv_unknown_dropped),
        }
    }

    fn handle_relay_quic(
        &mut self,
        now: Instant,
        url: &RelayUrl,
        src: NodeId,
        datagrams: Datagrams,
    ) {
        if self.paths.relay_url(&src).is_none() {
            // Its traffic comes through this relay, so replies can go back the same way.
            let addr = NodeAddr::new(src).with_relay_url(url.clone());
            self.paths.add_node_addr(now, &addr, Source::PeerReflexive);
        }
        self.refresh_route(now, src);
        deliver_relayed(&self.sock, src, datagrams);
    }

    fn send_disco_transmit(&mut self, transmit: DiscoTransmit) {
        let (node, dst, message) = match transmit {
            DiscoTransmit::Ping { node, dst, tx_id } => {
                (node, dst, Message::Ping(disco::Ping { tx_id }))
            }
            DiscoTransmit::Pong {
                node,
                dst,
                tx_id,
                observed,
            } => {
                // A ping through a relay has no observed address: send the unspecified one.
                let observed = observed.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                (node, dst, Message::Pong(disco::Pong { tx_id, observed }))
            }
            DiscoTransmit::CallMeMaybe {
                node,
                relay,
                addrs,
                nat,
            } => (
                node,
                SendAddr::Relay(relay),
                Message::CallMeMaybe(disco::CallMeMaybe::truncating(addrs).with_nat(nat)),
            ),
            DiscoTransmit::Predict { node, relay, ip } => (
                node,
                SendAddr::Relay(relay),
                Message::Predict(disco::Predict { ip }),
            ),
        };
        let node_id = self.node_id;
        let Some(secret) = self.secret(node) else {
            return;
        };
        let packet = disco::seal(&message, &node_id, secret);
        let metrics = Arc::clone(&self.sock);
        let metrics = &metrics.metrics;
        trace!(node = %node.fmt_short(), %dst, ?message, "disco send");
        match &dst {
            SendAddr::Udp(addr) => {
                if self.sock.blocked(*addr) {
                    inc(&metrics.disco_send_failed);
                } else if let Err(error) = self.sock.udp.send_datagram(*addr, &packet) {
                    trace!(%addr, %error, "disco send failed");
                    inc(&metrics.disco_send_failed);
                } else {
                    inc(&metrics.disco_sent_udp);
                }
            }
            SendAddr::Relay(url) => match self.ensure_relay(url) {
                Some(slot) => {
                    slot.mark_used();
                    match slot.sender.try_send(node, Datagrams::single(packet)) {
                        Ok(()) => inc(&metrics.disco_sent_relay),
                        Err(_) => inc(&metrics.disco_send_failed),
                    }
                }
                None => inc(&metrics.disco_send_failed),
            },
        }
    }
}

/// Hands relayed QUIC from `src` to quinn under `src`'s mapped address.
pub(crate) fn deliver_relayed(sock: &MagicSock, src: NodeId, datagrams: Datagrams) {
    let len = datagrams.contents.len();
    let stride = datagrams.segment_size.map_or(len, |s| usize::from(s.get()));
    super::metrics::add(&sock.metrics.recv_relay, len.div_ceil(stride.max(1)) as u64);
    sock.deliver(Delivered {
        src: sock.mapped.get_or_insert(src),
        contents: datagrams.contents,
        stride,
        ecn: quinn_ecn(datagrams.ecn),
    });
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("node_id", &self.node_id)
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}
