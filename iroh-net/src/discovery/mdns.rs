//! The local-network discovery service: [`MdnsDiscovery`], a tokio driver around the sans-IO
//! [`MdnsCore`] (see [`crate::mdns`] for what is announced, answered and asked, and when).
//!
//! The driver owns two sockets bound to the mDNS port with `SO_REUSEADDR`/`SO_REUSEPORT` (so it shares
//! the port with Avahi or another node on the same host): IPv4, joined to 224.0.0.251 on every selected
//! interface, and IPv6, joined to ff02::fb; and one per family on an ephemeral port, for the one-shot
//! queries that start a lookup (their unicast answers reach this process alone). It sends each packet out of the interface the core names
//! (`IP_MULTICAST_IF`), feeds received packets to the core with their source (an IPv6 link-local
//! source's scope names its interface), rescans the interfaces every [`INTERFACE_SCAN`] and whenever
//! what we publish changes, and turns the core's events into [`MdnsEvent`]s for subscribers and
//! resolves.
//!
//! Choices:
//! - **Interfaces**: every up interface that is not loopback or point-to-point and has the multicast flag
//!   (read from `/sys/class/net/<name>/flags` on Linux), IPv4 and IPv6 (link-local IPv6 addresses carry
//!   the IPv6 multicast; they are never announced as direct addresses).
//! - **Memory**: what is heard is kept only in the core's compact [`HeardPeers`] table (bounded by
//!   [`MdnsBuilder::max_peers`]), not as DNS records.
//! - **Resolving** answers from the table at once (asking the node again in the background when it was
//!   heard more than two minutes ago); when the node is not in it, the core asks for the node's records
//!   and the resolve waits up to [`DEFAULT_RESOLVE_WAIT`] for an answer before failing with
//!   [`MdnsError::NoAnswer`] (or at once with [`MdnsError::NoInterface`] when no interface can carry
//!   multicast).
//! - **Goodbyes** go out when the service is dropped, synchronously, so an exiting process still says
//!   goodbye.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use futures_util::stream;
use iroh_base::{NodeAddr, NodeId};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockRef, Socket, Type};
use tokio::{
    net::UdpSocket,
    sync::{Notify, broadcast, mpsc, watch},
};
use tracing::{Instrument, debug, warn};

pub use crate::mdns::*;
use crate::{
    discovery::{
        Discovery, DiscoveryError, DiscoveryErrorKind, DiscoveryItem, DiscoveryStream, NodeData,
    },
    mdns::proto::{GROUP_V4, GROUP_V6},
};

/// The service's name in errors and address sources.
pub const NAME: &str = "mdns";
/// How long a resolve of a node not yet heard waits for it to answer.
pub const DEFAULT_RESOLVE_WAIT: Duration = Duration::from_secs(3);
/// How often the interfaces are scanned for changes.
pub const INTERFACE_SCAN: Duration = Duration::from_secs(5);
/// The multicast DNS port.
pub const MDNS_PORT: u16 = 5353;
/// Events a subscriber may fall behind by before it loses the oldest.
pub const EVENT_BUFFER: usize = 128;

/// Settings of an [`MdnsDiscovery`]; see [`MdnsDiscovery::builder`].
#[derive(Debug, Clone)]
pub struct MdnsBuilder {
    port: u16,
    max_peers: usize,
    resolve_wait: Duration,
    advertise: bool,
}

impl Default for MdnsBuilder {
    fn default() -> Self {
        Self {
            port: MDNS_PORT,
            max_peers: DEFAULT_MAX_PEERS,
            resolve_wait: DEFAULT_RESOLVE_WAIT,
            advertise: true,
        }
    }
}

impl MdnsBuilder {
    /// The UDP port of multicast DNS (default [`MDNS_PORT`]; another port only talks to peers set alike).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The most peers remembered (default [`DEFAULT_MAX_PEERS`]).
    pub fn max_peers(mut self, max_peers: usize) -> Self {
        self.max_peers = max_peers.max(1);
        self
    }

    /// How long a resolve waits for a node not heard yet (default [`DEFAULT_RESOLVE_WAIT`]).
    pub fn resolve_wait(mut self, wait: Duration) -> Self {
        self.resolve_wait = wait;
        self
    }

    /// Whether to announce our own addressing (default `true`); without it the service only listens and
    /// resolves.
    pub fn advertise(mut self, advertise: bool) -> Self {
        self.advertise = advertise;
        self
    }

    /// Starts the service for our node `node_id`: opens the sockets and spawns the task driving them.
    /// Must be called inside a tokio runtime.
    pub fn build(self, node_id: NodeId) -> Result<MdnsDiscovery, MdnsError> {
        let sockets = Sockets::open(self.port)?;
        let config = Config {
            port: self.port,
            max_peers: self.max_peers,
            advertise: self.advertise,
        };
        let mut core = MdnsCore::new(node_id, config, rand::random());
        let mut joined = Joined::default();
        let ifaces = scan_interfaces();
        joined.update(&sockets, &ifaces);
        core.set_interfaces(Instant::now(), ifaces);
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            sockets,
            generation: watch::Sender::new(0),
            events: broadcast::channel(EVENT_BUFFER).0,
            wake: Notify::new(),
            node_id,
        });
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            shared: Arc::clone(&shared),
            joined,
        };
        let span = tracing::debug_span!("mdns", node = %node_id.fmt_short());
        tokio::spawn(driver.run(cmd_rx).instrument(span));
        Ok(MdnsDiscovery {
            shared,
            cmds,
            resolve_wait: self.resolve_wait,
        })
    }
}

/// Local-network discovery over multicast DNS: see the [module docs](self).
///
/// Dropping it withdraws our announcement (goodbye packets) and stops the task.
pub struct MdnsDiscovery {
    shared: Arc<Shared>,
    cmds: mpsc::UnboundedSender<NodeData>,
    resolve_wait: Duration,
}

impl fmt::Debug for MdnsDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MdnsDiscovery")
            .field("node_id", &self.shared.node_id.fmt_short())
            .field("peers", &self.shared.core().heard().len())
            .finish()
    }
}

impl MdnsDiscovery {
    /// Settings to start from.
    pub fn builder() -> MdnsBuilder {
        MdnsBuilder::default()
    }

    /// The service with default settings for our node `node_id` (inside a tokio runtime).
    pub fn new(node_id: NodeId) -> Result<Self, MdnsError> {
        Self::builder().build(node_id)
    }

    /// Peers heard or gone from now on. A receiver that falls more than [`EVENT_BUFFER`] events behind
    /// loses the oldest ([`broadcast::error::RecvError::Lagged`]).
    pub fn subscribe(&self) -> broadcast::Receiver<MdnsEvent> {
        self.shared.events.subscribe()
    }

    /// The peers known now (not run out), with what they announced.
    pub fn peers(&self) -> Vec<NodeAddr> {
        let now = Instant::now();
        let core = self.shared.core();
        core.heard()
            .iter(now)
            .map(|(node, h)| NodeAddr::from_parts(node, h.relay, h.addrs))
            .collect()
    }

    /// What the service sent and dropped so far.
    pub fn stats(&self) -> Stats {
        self.shared.core().stats()
    }
}

impl Drop for MdnsDiscovery {
    fn drop(&mut self) {
        // Goodbyes now, not when the task next runs: the runtime may be ending with the process.
        let mut core = self.shared.core();
        core.shutdown();
        while let Some(transmit) = core.poll_transmit() {
            self.shared.sockets.send(&core, &transmit);
        }
    }
}

/// Why local-network discovery did not work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MdnsError {
    /// Neither the IPv4 nor the IPv6 mDNS socket could be opened (the IPv4 error inside).
    #[error("cannot open the mDNS socket on port {port}")]
    Socket {
        /// The port.
        port: u16,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// No up interface can carry multicast, so no local peer can be found.
    #[error("no local peers: no up, multicast-capable network interface")]
    NoInterface,
    /// Nobody answered for the node in time.
    #[error("no local peers answered for this node within {} ms ({heard} other nodes heard)", waited.as_millis())]
    NoAnswer {
        /// How long the resolve waited.
        waited: Duration,
        /// How many other nodes the table holds.
        heard: usize,
    },
    /// The service was shut down.
    #[error("the mDNS service stopped")]
    Closed,
}

impl Discovery for MdnsDiscovery {
    fn name(&self) -> &'static str {
        NAME
    }

    fn publish(&self, data: &NodeData) {
        let _ = self.cmds.send(data.clone());
    }

    fn resolve(&self, node: NodeId) -> Option<DiscoveryStream> {
        if node == self.shared.node_id {
            return None;
        }
        let shared = Arc::clone(&self.shared);
        let wait = self.resolve_wait;
        let closed = self.cmds.is_closed();
        Some(Box::pin(stream::once(async move {
            let started = Instant::now();
            let fail = |e| {
                Err(DiscoveryError::new(
                    NAME,
                    started,
                    DiscoveryErrorKind::Mdns(e),
                ))
            };
            if closed {
                return fail(MdnsError::Closed);
            }
            let mut generation = shared.generation.subscribe();
            {
                let mut core = shared.core();
                if core.interfaces().next().is_none() {
                    return fail(MdnsError::NoInterface);
                }
                let asked = core.lookup(started, node, wait);
                let item = shared.item(&core, node);
                drop(core);
                if asked {
                    shared.wake.notify_one();
                }
                if let Some(item) = item {
                    return Ok(item);
                }
            }
            let deadline = tokio::time::Instant::from_std(
                started
                    .checked_add(wait)
                    .unwrap_or(started + Duration::from_secs(86_400 * 365)),
            );
            loop {
                match tokio::time::timeout_at(deadline, generation.changed()).await {
                    Ok(Ok(())) => {
                        let core = shared.core();
                        if let Some(item) = shared.item(&core, node) {
                            return Ok(item);
                        }
                    }
                    Ok(Err(_)) => return fail(MdnsError::Closed),
                    Err(_) => {
                        let heard = shared.core().heard().len();
                        return fail(MdnsError::NoAnswer {
                            waited: started.elapsed(),
                            heard,
                        });
                    }
                }
            }
        })))
    }
}

/// What the service, its resolves and the driver share.
struct Shared {
    core: Mutex<MdnsCore>,
    sockets: Sockets,
    /// Bumped whenever the table changes; resolves wait on it.
    generation: watch::Sender<u64>,
    events: broadcast::Sender<MdnsEvent>,
    /// Wakes the driver after a resolve started a lookup.
    wake: Notify,
    node_id: NodeId,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, MdnsCore> {
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn item(&self, core: &MdnsCore, node: NodeId) -> Option<DiscoveryItem> {
        let h = core.heard().get(Instant::now(), &node)?;
        Some(DiscoveryItem {
            node_addr: NodeAddr::from_parts(node, h.relay, h.addrs),
            provenance: NAME,
            last_updated: None,
        })
    }
}

/// The two mDNS sockets (either may be missing: a host without IPv6, say), and two of ephemeral ports
/// for one-shot queries.
struct Sockets {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    oneshot_v4: Option<UdpSocket>,
    oneshot_v6: Option<UdpSocket>,
}

impl Sockets {
    fn open(port: u16) -> Result<Self, MdnsError> {
        let v4 = open_socket(false, port);
        let v6 = open_socket(true, port);
        match (v4, v6) {
            (Err(source), Err(_)) => Err(MdnsError::Socket { port, source }),
            (v4, v6) => {
                if let Err(error) = &v4 {
                    warn!(%error, "no IPv4 mDNS socket");
                }
                if let Err(error) = &v6 {
                    debug!(%error, "no IPv6 mDNS socket");
                }
                let oneshot_v4 = v4.is_ok().then(|| open_socket(false, 0).ok()).flatten();
                let oneshot_v6 = v6.is_ok().then(|| open_socket(true, 0).ok()).flatten();
                Ok(Self {
                    v4: v4.ok(),
                    v6: v6.ok(),
                    oneshot_v4,
                    oneshot_v6,
                })
            }
        }
    }

    /// Sends `transmit` out of its interface. A full socket buffer drops the packet (mDNS repeats
    /// itself); other errors are logged at debug level (an interface that just went away).
    fn send(&self, core: &MdnsCore, transmit: &Transmit) {
        let iface = core.interfaces().find(|i| i.index == transmit.iface);
        let (mdns, oneshot) = match transmit.dst {
            SocketAddr::V4(_) => (&self.v4, &self.oneshot_v4),
            SocketAddr::V6(_) => (&self.v6, &self.oneshot_v6),
        };
        let Some(socket) = (if transmit.oneshot { oneshot } else { mdns }) else {
            return;
        };
        let chosen = match transmit.dst {
            SocketAddr::V4(_) => match iface.and_then(Interface::ipv4) {
                Some(ip) => SockRef::from(socket).set_multicast_if_v4(&ip),
                None => return,
            },
            SocketAddr::V6(_) => SockRef::from(socket).set_multicast_if_v6(transmit.iface),
        };
        let result = chosen.and_then(|()| socket.try_send_to(&transmit.payload, transmit.dst));
        if let Err(error) = result {
            debug!(%error, dst = %transmit.dst, iface = transmit.iface, "mDNS send failed");
        }
    }
}

fn open_socket(v6: bool, port: u16) -> io::Result<UdpSocket> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    let bind: SocketAddr = if v6 {
        socket.set_only_v6(true)?;
        socket.set_multicast_loop_v6(true)?;
        socket.set_multicast_hops_v6(255)?;
        (Ipv6Addr::UNSPECIFIED, port).into()
    } else {
        socket.set_multicast_loop_v4(true)?;
        socket.set_multicast_ttl_v4(255)?;
        (Ipv4Addr::UNSPECIFIED, port).into()
    };
    socket.bind(&bind.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// The interfaces whose group memberships are held.
#[derive(Default)]
struct Joined {
    v4: BTreeSet<u32>,
    v6: BTreeSet<u32>,
}

impl Joined {
    /// Joins the groups on new interfaces, leaves them on gone ones.
    fn update(&mut self, sockets: &Sockets, ifaces: &[Interface]) {
        let want_v4: BTreeSet<u32> = ifaces
            .iter()
            .filter(|i| i.ipv4().is_some())
            .map(|i| i.index)
            .collect();
        let want_v6: BTreeSet<u32> = ifaces
            .iter()
            .filter(|i| i.has_ipv6())
            .map(|i| i.index)
            .collect();
        if let Some(socket) = &sockets.v4 {
            let socket = SockRef::from(socket);
            for gone in self.v4.difference(&want_v4) {
                let _ =
                    socket.leave_multicast_v4_n(&GROUP_V4, &InterfaceIndexOrAddress::Index(*gone));
            }
            for new in want_v4.difference(&self.v4) {
                if let Err(error) =
                    socket.join_multicast_v4_n(&GROUP_V4, &InterfaceIndexOrAddress::Index(*new))
                {
                    warn!(%error, iface = new, "cannot join the IPv4 mDNS group");
                }
            }
        }
        if let Some(socket) = &sockets.v6 {
            let socket = SockRef::from(socket);
            for gone in self.v6.difference(&want_v6) {
                let _ = socket.leave_multicast_v6(&GROUP_V6, *gone);
            }
            for new in want_v6.difference(&self.v6) {
                if let Err(error) = socket.join_multicast_v6(&GROUP_V6, *new) {
                    debug!(%error, iface = new, "cannot join the IPv6 mDNS group");
                }
            }
        }
        self.v4 = want_v4;
        self.v6 = want_v6;
    }
}

struct Driver {
    shared: Arc<Shared>,
    joined: Joined,
}

/// Receives on `socket`, or never if there is none.
async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<NodeData>) {
        let shared = Arc::clone(&self.shared);
        let mut scan = tokio::time::interval(INTERFACE_SCAN);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        scan.reset();
        // mDNS messages are at most 9,000 bytes (RFC 6762 §17).
        let mut buf4 = vec![0u8; 9000];
        let mut buf6 = vec![0u8; 9000];
        let mut oneshot4 = vec![0u8; 9000];
        let mut oneshot6 = vec![0u8; 9000];
        let mut logged_error = false;
        loop {
            let timeout = shared.core().poll_timeout(Instant::now());
            let timer = async {
                match timeout {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                data = cmds.recv() => match data {
                    None => break,
                    Some(data) => {
                        self.rescan();
                        shared.core().publish(data.relay_url.clone(), &data.direct_addresses.iter().copied().collect::<Vec<_>>());
                    }
                },
                () = shared.wake.notified() => {}
                got = recv(shared.sockets.v4.as_ref(), &mut buf4) => {
                    self.received(got, &buf4, &mut logged_error);
                }
                got = recv(shared.sockets.v6.as_ref(), &mut buf6) => {
                    self.received(got, &buf6, &mut logged_error);
                }
                got = recv(shared.sockets.oneshot_v4.as_ref(), &mut oneshot4) => {
                    self.received(got, &oneshot4, &mut logged_error);
                }
                got = recv(shared.sockets.oneshot_v6.as_ref(), &mut oneshot6) => {
                    self.received(got, &oneshot6, &mut logged_error);
                }
                () = timer => shared.core().handle_timeout(Instant::now()),
                _ = scan.tick() => self.rescan(),
            }
            self.flush();
        }
    }

    fn received(&self, got: io::Result<(usize, SocketAddr)>, buf: &[u8], logged_error: &mut bool) {
        match got {
            Ok((len, src)) => {
                let bytes = buf.get(..len).unwrap_or(buf);
                self.shared.core().handle_packet(Instant::now(), src, bytes);
            }
            Err(error) => {
                if !*logged_error {
                    warn!(%error, "mDNS receive failed");
                    *logged_error = true;
                }
            }
        }
    }

    fn rescan(&mut self) {
        let ifaces = scan_interfaces();
        let mut core = self.shared.core();
        if core.interfaces().cloned().collect::<Vec<_>>() == ifaces {
            return;
        }
        debug!(?ifaces, "mDNS interfaces changed");
        self.joined.update(&self.shared.sockets, &ifaces);
        core.set_interfaces(Instant::now(), ifaces);
    }

    /// Sends what the core queued and hands its events out.
    fn flush(&self) {
        let mut events = Vec::new();
        {
            let mut core = self.shared.core();
            core.handle_timeout(Instant::now());
            while let Some(transmit) = core.poll_transmit() {
                self.shared.sockets.send(&core, &transmit);
            }
            while let Some(event) = core.poll_event() {
                events.push(event);
            }
        }
        if events.is_empty() {
            return;
        }
        self.shared
            .generation
            .send_modify(|g| *g = g.wrapping_add(1));
        for event in events {
            let _ = self.shared.events.send(event);
        }
    }
}

/// The interfaces mDNS runs on, ordered by index: up, not loopback, not point-to-point,
/// multicast-capable, with their addresses.
fn scan_interfaces() -> Vec<Interface> {
    let Ok(all) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    let mut by_index: BTreeMap<u32, Interface> = BTreeMap::new();
    for intf in all.iter().filter(|i| usable_interface(i)) {
        let Some(index) = intf.index else { continue };
        let addr = match &intf.addr {
            if_addrs::IfAddr::V4(v4) => (IpAddr::V4(v4.ip), v4.prefixlen),
            if_addrs::IfAddr::V6(v6) => (IpAddr::V6(v6.ip), v6.prefixlen),
        };
        let entry = by_index.entry(index).or_insert_with(|| Interface {
            index,
            addrs: Vec::new(),
        });
        entry.addrs.push(addr);
    }
    by_index
        .into_values()
        .map(|mut i| {
            i.addrs.sort();
            i
        })
        .collect()
}

/// Whether mDNS runs on `intf`: up, not loopback, not point-to-point, multicast-capable.
fn usable_interface(intf: &if_addrs::Interface) -> bool {
    intf.is_oper_up() && !intf.is_loopback() && !intf.is_p2p() && has_multicast_flag(&intf.name)
}

/// `IFF_MULTICAST` of interface `name` (Linux: from sysfs; elsewhere assumed).
fn has_multicast_flag(name: &str) -> bool {
    #[cfg(target_os = "linux")]
    {
        const IFF_MULTICAST: u32 = 0x1000;
        let path = format!("/sys/class/net/{name}/flags");
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let digits = text.trim().trim_start_matches("0x");
                u32::from_str_radix(digits, 16).is_ok_and(|flags| flags & IFF_MULTICAST != 0)
            }
            Err(_) => true,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = name;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_never_used() {
        let all = if_addrs::get_if_addrs().unwrap();
        for intf in all.iter().filter(|i| i.is_loopback()) {
            assert!(!usable_interface(intf), "{}", intf.name);
        }
        assert!(
            scan_interfaces()
                .iter()
                .all(|i| i.addrs.iter().all(|(ip, _)| !ip.is_loopback()))
        );
    }
}
