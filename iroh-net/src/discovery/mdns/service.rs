//! The local-network discovery service: [`MdnsDiscovery`].
//!
//! The multicast DNS work (a multicast socket per address family joined on every selected interface,
//! announcing, answering queries, querying with backoff, known-answer suppression, refreshing cached
//! records before their TTLs run out, goodbye packets, following interfaces as they come and go) is done
//! by the `mdns-sd` crate's daemon, in a thread of its own. A tokio task of ours drives it: it registers
//! our service when our addressing changes, reads what the daemon resolves into the bounded
//! [`HeardPeers`] table, queries again when a resolve finds nothing, and watches the daemon's own cache
//! (which has no bound of its own) so that a flood of fake announcements cannot grow it for long.
//!
//! Choices:
//! - **Interfaces**: every up interface that is not loopback or point-to-point and has the multicast flag
//!   (read from `/sys/class/net/<name>/flags` on Linux), IPv4 and IPv6 (link-local IPv6 addresses carry
//!   the IPv6 multicast; they are never announced as direct addresses).
//! - **No probing**: the instance name is the NodeId, unique by construction. Another responder claiming
//!   it is a forgery or our own earlier run, and renaming (what probing does on a conflict) would make
//!   us unfindable, so records are announced at once.
//! - **Announcements**: the daemon sends two a second apart whenever what we announce changes (RFC 6762
//!   §8.3) and none after that; peers keep our records by refreshing them before their TTL (120 s for
//!   SRV and addresses) runs out, which is also how a node that vanished without a goodbye is forgotten.
//! - **Resolving** answers from the table at once; when the node is not in it, the daemon queries again
//!   (at most once a second) and the resolve waits [`DEFAULT_RESOLVE_WAIT`] for an answer before failing
//!   with [`MdnsError::NoAnswer`] (or [`MdnsError::NoInterface`] when no interface can carry multicast).

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use futures_util::stream;
use iroh_base::{NodeAddr, NodeId, RelayUrl};
use mdns_sd::{IfKind, IfPredicate, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{Instrument, debug, warn};

use super::{
    DEFAULT_MAX_PEERS, HeardPeers, SERVICE_TYPE, TTL_RANGE, decode_txt, encode_txt, publishable,
};
use crate::discovery::{
    BoxError, Discovery, DiscoveryError, DiscoveryErrorKind, DiscoveryItem, DiscoveryStream,
    NodeData,
};

/// The service's name in errors and address sources.
pub const NAME: &str = "mdns";
/// How long a resolve of a node not yet heard waits for it to answer.
pub const DEFAULT_RESOLVE_WAIT: Duration = Duration::from_secs(3);
/// The shortest gap between two queries we ask the daemon for (RFC 6762 §5.2: a second).
pub const QUERY_GAP: Duration = Duration::from_secs(1);
/// How often the daemon's cache size is checked (and after every [`MdnsBuilder::max_peers`] events).
pub const CACHE_CHECK_EVERY: Duration = Duration::from_secs(5);
/// Cache entries (PTR, SRV, TXT, address names) allowed per peer of the table before the daemon is
/// restarted with an empty cache.
pub const CACHE_ENTRIES_PER_PEER: usize = 4;
/// The longest a stopping service waits for its goodbyes to go out.
pub const GOODBYE_WAIT: Duration = Duration::from_millis(200);
/// The multicast DNS port.
pub const MDNS_PORT: u16 = 5353;

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

    /// Starts the service for our node `node_id`: the daemon thread and the task driving it. Must be
    /// called inside a tokio runtime.
    pub fn build(self, node_id: NodeId) -> Result<MdnsDiscovery, MdnsError> {
        let (daemon, browse) = start_daemon(self.port)?;
        let shared = Arc::new(Shared {
            heard: Mutex::new(HeardPeers::new(self.max_peers)),
            generation: watch::Sender::new(0),
            events: broadcast::channel(256).0,
            node_id,
        });
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            shared: Arc::clone(&shared),
            port: self.port,
            advertise: self.advertise,
            max_peers: self.max_peers,
            daemon: Some(daemon),
            browse,
            data: None,
            registered: None,
            last_query: Instant::now(),
            query_pending: false,
            events_since_check: 0,
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
/// Dropping it withdraws our announcement (goodbye packets) and stops the daemon.
pub struct MdnsDiscovery {
    shared: Arc<Shared>,
    cmds: mpsc::UnboundedSender<Cmd>,
    resolve_wait: Duration,
}

impl fmt::Debug for MdnsDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MdnsDiscovery")
            .field("node_id", &self.shared.node_id.fmt_short())
            .field("peers", &self.shared.heard().len())
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

    /// Peers heard or gone from now on. A receiver that falls more than 256 events behind loses the
    /// oldest ([`broadcast::error::RecvError::Lagged`]).
    pub fn subscribe(&self) -> broadcast::Receiver<MdnsEvent> {
        self.shared.events.subscribe()
    }

    /// The peers known now (not run out), with what they announced.
    pub fn peers(&self) -> Vec<NodeAddr> {
        let now = Instant::now();
        let heard = self.shared.heard();
        heard
            .iter(now)
            .map(|(node, h)| NodeAddr::from_parts(*node, h.relay.clone(), h.addrs.iter().copied()))
            .collect()
    }
}

/// A change in what is known of the local network.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MdnsEvent {
    /// A node announced (or changed) its addressing.
    Discovered(NodeAddr),
    /// A node said goodbye, or its records ran out without a refresh.
    Expired(NodeId),
}

/// Why local-network discovery did not work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MdnsError {
    /// The mDNS daemon could not start (no thread, no poller).
    #[error("the mDNS daemon did not start: {0}")]
    Daemon(#[source] BoxError),
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
        let _ = self.cmds.send(Cmd::Publish(data.clone()));
    }

    fn resolve(&self, node: NodeId) -> Option<DiscoveryStream> {
        if node == self.shared.node_id {
            return None;
        }
        let shared = Arc::clone(&self.shared);
        let cmds = self.cmds.clone();
        let wait = self.resolve_wait;
        Some(Box::pin(stream::once(async move {
            let started = Instant::now();
            let kind = |e| DiscoveryErrorKind::Mdns(e);
            let mut generation = shared.generation.subscribe();
            if let Some(item) = shared.item(node) {
                return Ok(item);
            }
            if !any_usable_interface() {
                return Err(DiscoveryError::new(
                    NAME,
                    started,
                    kind(MdnsError::NoInterface),
                ));
            }
            if cmds.send(Cmd::Query).is_err() {
                return Err(DiscoveryError::new(NAME, started, kind(MdnsError::Closed)));
            }
            let deadline = tokio::time::Instant::from_std(started + wait);
            loop {
                match tokio::time::timeout_at(deadline, generation.changed()).await {
                    Ok(Ok(())) => {
                        if let Some(item) = shared.item(node) {
                            return Ok(item);
                        }
                    }
                    Ok(Err(_)) => {
                        return Err(DiscoveryError::new(NAME, started, kind(MdnsError::Closed)));
                    }
                    Err(_) => {
                        let heard = shared.heard().len();
                        let error = MdnsError::NoAnswer {
                            waited: started.elapsed(),
                            heard,
                        };
                        return Err(DiscoveryError::new(NAME, started, kind(error)));
                    }
                }
            }
        })))
    }

    fn resolve_fresh(&self, node: NodeId) -> Option<DiscoveryStream> {
        // The table follows announcements and goodbyes as they come; asking the network again makes
        // a node that changed without us hearing it answer now.
        let _ = self.cmds.send(Cmd::Query);
        self.resolve(node)
    }
}

/// What the service and its resolves share with the driver.
struct Shared {
    heard: Mutex<HeardPeers>,
    /// Bumped whenever the table changes; resolves wait on it.
    generation: watch::Sender<u64>,
    events: broadcast::Sender<MdnsEvent>,
    node_id: NodeId,
}

impl Shared {
    fn heard(&self) -> MutexGuard<'_, HeardPeers> {
        self.heard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn item(&self, node: NodeId) -> Option<DiscoveryItem> {
        let heard = self.heard();
        let h = heard.get(Instant::now(), &node)?;
        Some(DiscoveryItem {
            node_addr: NodeAddr::from_parts(node, h.relay.clone(), h.addrs.iter().copied()),
            provenance: NAME,
            last_updated: None,
        })
    }

    fn changed(&self, event: MdnsEvent) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
        let _ = self.events.send(event);
    }
}

enum Cmd {
    Publish(NodeData),
    Query,
}

struct Driver {
    shared: Arc<Shared>,
    port: u16,
    advertise: bool,
    max_peers: usize,
    /// `None` only while being replaced.
    daemon: Option<ServiceDaemon>,
    browse: mdns_sd::Receiver<ServiceEvent>,
    /// What we announce.
    data: Option<NodeData>,
    /// The full name registered with the daemon.
    registered: Option<String>,
    last_query: Instant,
    query_pending: bool,
    /// Service events since the daemon's cache was last checked.
    events_since_check: usize,
}

impl Driver {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut cache_check = tokio::time::interval(CACHE_CHECK_EVERY);
        cache_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let query_at = self.query_pending.then(|| self.last_query + QUERY_GAP);
            let query_timer = async {
                match query_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => break,
                    Some(Cmd::Publish(data)) => {
                        self.data = Some(data);
                        self.announce();
                    }
                    Some(Cmd::Query) => self.query(),
                },
                event = self.browse.recv_async(), if self.daemon.is_some() => match event {
                    Ok(event) => {
                        self.on_event(event);
                        // Many new names at once: check the daemon's cache now rather than at the
                        // next tick, so a flood is cut short after about a table's worth.
                        self.events_since_check += 1;
                        if self.events_since_check > self.max_peers {
                            self.check_cache().await;
                            cache_check.reset();
                        }
                    }
                    Err(_) => {
                        // The daemon closes a browse whose channel filled up (we fell behind); browse
                        // again (the daemon replays its cache into the new channel).
                        debug!("browse channel closed; browsing again");
                        self.rebrowse();
                    }
                },
                () = query_timer => self.query(),
                _ = cache_check.tick() => self.check_cache().await,
            }
        }
        self.stop();
    }

    /// The daemon, unless it failed to restart (then local discovery is off and calls do nothing).
    fn daemon(&self) -> Result<&ServiceDaemon, mdns_sd::Error> {
        self.daemon.as_ref().ok_or(mdns_sd::Error::DaemonShutdown)
    }

    /// Registers (or re-registers, after a change) our service; withdraws it when nothing is left to
    /// announce.
    fn announce(&mut self) {
        if !self.advertise {
            return;
        }
        let Some(data) = &self.data else { return };
        let addrs = publishable(data.direct_addresses.iter().copied());
        if addrs.is_empty() && data.relay_url.is_none() {
            let _ = self.withdraw();
            return;
        }
        match service_info(self.shared.node_id, data.relay_url.as_ref(), &addrs) {
            Ok(info) => {
                let fullname = info.get_fullname().to_owned();
                debug!(?addrs, relay = ?data.relay_url, "announcing");
                if let Err(error) = self.daemon().and_then(|d| d.register(info)) {
                    warn!(%error, "mDNS register failed");
                    return;
                }
                self.registered = Some(fullname);
            }
            Err(error) => warn!(%error, "cannot build the mDNS service record"),
        }
    }

    /// Withdraws our service: the daemon sends goodbyes (TTL 0) at once. Returns the daemon's answer,
    /// which comes once they are out.
    fn withdraw(&mut self) -> Option<mdns_sd::Receiver<mdns_sd::UnregisterStatus>> {
        let fullname = self.registered.take()?;
        self.daemon.as_ref()?.unregister(&fullname).ok()
    }

    /// Asks the network now, or as soon as [`QUERY_GAP`] has passed since the last query.
    fn query(&mut self) {
        let now = Instant::now();
        if now.saturating_duration_since(self.last_query) < QUERY_GAP {
            self.query_pending = true;
            return;
        }
        self.query_pending = false;
        self.last_query = now;
        self.rebrowse();
    }

    /// A new browse: the daemon sends a query at once (after its 10-50 ms jitter), replays its cache,
    /// and queries again with backoff.
    fn rebrowse(&mut self) {
        match self.daemon().and_then(|d| d.browse(SERVICE_TYPE)) {
            Ok(browse) => self.browse = browse,
            Err(mdns_sd::Error::DaemonShutdown) => {
                // Its thread ended: stop polling its channels (a closed one is ready at once).
                warn!("the mDNS daemon stopped; local discovery is off");
                self.daemon = None;
            }
            Err(error) => warn!(%error, "mDNS browse failed"),
        }
    }

    fn on_event(&mut self, event: ServiceEvent) {
        match event {
            ServiceEvent::ServiceResolved(service) => self.on_resolved(&service),
            ServiceEvent::ServiceRemoved(_, fullname) => {
                let Some(node) = node_of(&fullname) else {
                    return;
                };
                let removed = {
                    let mut heard = self.shared.heard();
                    let known = heard.get(Instant::now(), &node).is_some();
                    heard.gone(&node);
                    known
                };
                if removed {
                    debug!(node = %node.fmt_short(), "local peer gone");
                    self.shared.changed(MdnsEvent::Expired(node));
                }
            }
            _ => {}
        }
    }

    fn on_resolved(&mut self, service: &ResolvedService) {
        let Some(node) = node_of(&service.fullname) else {
            return;
        };
        if node == self.shared.node_id {
            return;
        }
        let txt = service
            .txt_properties
            .iter()
            .map(|property| (property.key(), property.val_str()));
        let (relay, mut addrs) = match decode_txt(txt) {
            Ok(found) => found,
            Err(error) => {
                debug!(node = %node.fmt_short(), %error, "ignoring a malformed announcement");
                return;
            }
        };
        if addrs.is_empty() {
            // A responder that is not us may carry the addresses in A/AAAA records only.
            let port = service.port;
            addrs = publishable(
                service
                    .addresses
                    .iter()
                    .map(|scoped| SocketAddr::new(scoped.to_ip_addr(), port)),
            )
            .into_iter()
            .collect();
        }
        if addrs.is_empty() && relay.is_none() {
            return;
        }
        let addr = NodeAddr::from_parts(node, relay.clone(), addrs.iter().copied());
        let changed = {
            let mut heard = self.shared.heard();
            let now = Instant::now();
            let same = heard
                .get(now, &node)
                .is_some_and(|h| h.relay == relay && h.addrs == addrs);
            // The daemon follows the records' own TTLs and reports the removal; the table keeps an
            // entry until then (bounded by the longest TTL).
            heard.heard(now, node, relay, addrs, TTL_RANGE.1);
            !same
        };
        if changed {
            debug!(node = %node.fmt_short(), ?addr, "local peer heard");
            self.shared.changed(MdnsEvent::Discovered(addr));
        }
    }

    /// Restarts the daemon (emptying its cache) when its cache holds far more than the table allows:
    /// someone is flooding the link with announcements.
    async fn check_cache(&mut self) {
        self.events_since_check = 0;
        let Ok(metrics) = self.daemon().and_then(ServiceDaemon::get_metrics) else {
            return;
        };
        let Ok(Ok(metrics)) =
            tokio::time::timeout(Duration::from_secs(1), metrics.recv_async()).await
        else {
            return;
        };
        let entries: i64 = ["cached-ptr", "cached-srv", "cached-txt", "cached-addr"]
            .iter()
            .filter_map(|key| metrics.get(*key))
            .sum();
        let limit = self.max_peers.saturating_mul(CACHE_ENTRIES_PER_PEER);
        if usize::try_from(entries).unwrap_or(0) <= limit {
            return;
        }
        warn!(
            entries,
            limit, "mDNS cache over its bound (an announcement flood?); restarting the daemon"
        );
        if let Some(old) = self.daemon.take() {
            let _ = old.shutdown();
        }
        match start_daemon(self.port) {
            Ok((daemon, browse)) => {
                self.daemon = Some(daemon);
                self.browse = browse;
                self.registered = None;
                self.announce();
            }
            Err(error) => {
                // Left without a daemon: resolves then answer only from the table.
                warn!(%error, "mDNS daemon did not restart; local discovery is off");
            }
        }
    }

    /// Goodbyes for our records, then the daemon's end. Waits (at most [`GOODBYE_WAIT`], in practice
    /// well under a millisecond) until the goodbyes are sent, so that a process exiting right after
    /// still says goodbye.
    fn stop(&mut self) {
        if let Some(done) = self.withdraw() {
            let _ = done.recv_timeout(GOODBYE_WAIT);
        }
        if let Some(daemon) = self.daemon.take() {
            let _ = daemon.shutdown();
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Also when the runtime drops the task without it finishing.
        self.stop();
    }
}

/// The daemon on the interfaces we use, browsing our service type.
fn start_daemon(port: u16) -> Result<(ServiceDaemon, mdns_sd::Receiver<ServiceEvent>), MdnsError> {
    let error = |e: mdns_sd::Error| MdnsError::Daemon(Box::new(e));
    let daemon = ServiceDaemon::new_with_port(port).map_err(error)?;
    daemon.disable_interface(IfKind::All).map_err(error)?;
    daemon
        .enable_interface(IfKind::Predicate(IfPredicate::new(usable_interface)))
        .map_err(error)?;
    let browse = daemon.browse(SERVICE_TYPE).map_err(error)?;
    Ok((daemon, browse))
}

/// Our service record: instance and host named by the NodeId, the addresses' IPs as A/AAAA records, the
/// first address's port in SRV, and everything in TXT.
fn service_info(
    node_id: NodeId,
    relay: Option<&RelayUrl>,
    addrs: &[SocketAddr],
) -> Result<ServiceInfo, mdns_sd::Error> {
    let instance = node_id.to_string();
    let host = format!("{instance}.local.");
    let ips: Vec<IpAddr> = addrs
        .iter()
        .map(SocketAddr::ip)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let port = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .map_or(0, SocketAddr::port);
    let txt = encode_txt(relay, addrs);
    let mut info = ServiceInfo::new(SERVICE_TYPE, &instance, &host, &ips[..], port, &txt[..])?;
    info.set_requires_probe(false);
    Ok(info)
}

/// The NodeId of a full instance name `<z32>._iroh._udp.local.`.
fn node_of(fullname: &str) -> Option<NodeId> {
    let instance = fullname.strip_suffix(SERVICE_TYPE)?.strip_suffix('.')?;
    instance.parse().ok()
}

/// Whether mDNS runs on `intf`: up, not loopback, not point-to-point, multicast-capable.
fn usable_interface(intf: &if_addrs::Interface) -> bool {
    intf.is_oper_up() && !intf.is_loopback() && !intf.is_p2p() && has_multicast_flag(&intf.name)
}

/// Whether some interface can carry our multicast.
fn any_usable_interface() -> bool {
    if_addrs::get_if_addrs().is_ok_and(|all| all.iter().any(usable_interface))
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
    use iroh_base::SecretKey;

    use super::*;

    #[test]
    fn instance_names_map_to_node_ids() {
        let node = SecretKey::from_bytes(&[7; 32]).public();
        assert_eq!(node_of(&format!("{node}.{SERVICE_TYPE}")), Some(node));
        assert_eq!(node_of(&format!("{node}._http._tcp.local.")), None);
        assert_eq!(node_of(&format!("x{node}.{SERVICE_TYPE}")), None);
        assert_eq!(node_of("printer._iroh._udp.local."), None);
    }

    #[test]
    fn service_record_carries_everything_in_txt() {
        let node = SecretKey::from_bytes(&[7; 32]).public();
        let relay: RelayUrl = "https://relay.example.org./".parse().unwrap();
        let addrs: Vec<SocketAddr> = ["[fd00::2]:4001", "192.168.1.10:4000"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let info = service_info(node, Some(&relay), &addrs).unwrap();
        assert_eq!(info.get_fullname(), format!("{node}.{SERVICE_TYPE}"));
        assert_eq!(info.get_hostname(), format!("{node}.local."));
        assert_eq!(info.get_port(), 4000, "SRV names the IPv4 port");
        assert!(!info.requires_probe());
        let txt = info.get_properties();
        let pairs = txt.iter().map(|p| (p.key(), p.val_str()));
        let (got_relay, got) = decode_txt(pairs).unwrap();
        assert_eq!(got_relay, Some(relay));
        assert_eq!(got, addrs.into_iter().collect());
    }

    #[test]
    fn loopback_is_never_used() {
        let all = if_addrs::get_if_addrs().unwrap();
        for intf in all.iter().filter(|i| i.is_loopback()) {
            assert!(!usable_interface(intf), "{}", intf.name);
        }
    }
}
