//! The port mapper's tokio driver: finds the gateway, runs [`MapperCore`] (PCP and NAT-PMP) over a UDP
//! socket of its own, and UPnP IGD (through `igd-next`) while the core has no mapping, and publishes the
//! mapping held in a watch.
//!
//! - The gateway is the default route's IPv4 next hop (read from `/proc/net/route`; on other systems no
//!   gateway is found and nothing is mapped), checked every [`GATEWAY_RESCAN`] and on
//!   [`PortMapper::network_changed`]. A different gateway, or our address toward it, starts over.
//! - Nothing is sent until [`PortMapper::enable`] names the port to map: the magic socket calls it once
//!   its net report shows a NAT in front of us (a public address that is not one of ours). A host with a
//!   public address, or tests on loopback, never ask their router anything.
//! - PCP and NAT-PMP are tried first and at once; UPnP runs alongside while they have no mapping (its
//!   search costs one multicast packet, backing off like the core when nothing answers) and stops, deleting
//!   its mapping, as soon as they have one.
//! - [`PortMapper::shutdown`] deletes the mappings, waiting at most [`SHUTDOWN_WAIT`].

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use igd_next::{AddPortError, PortMappingProtocol, SearchOptions, aio::tokio::search_gateway};
use tokio::{
    net::UdpSocket,
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tracing::{Instrument, debug};

use super::{
    MappingProtocol,
    client::{
        BACKOFF_FIRST, BACKOFF_MAX, Config, DEFAULT_LIFETIME, Event, Gateway, MIN_LIFETIME,
        MapperCore, Mapping, is_usable_external,
    },
};

/// How often the default route is read again.
pub const GATEWAY_RESCAN: Duration = Duration::from_secs(30);
/// The longest [`PortMapper::shutdown`] waits for the deletes.
pub const SHUTDOWN_WAIT: Duration = Duration::from_millis(1500);
/// How long a UPnP search waits for an answer.
pub const UPNP_SEARCH_WAIT: Duration = Duration::from_secs(2);
/// How often a permanent UPnP mapping (of a gateway that grants no leases) is added again: a gateway
/// that restarted forgot it.
pub const UPNP_PERMANENT_REFRESH: Duration = Duration::from_secs(1800);
/// The description UPnP mappings carry (what `upnpc -l` shows).
pub const UPNP_DESCRIPTION: &str = "iroh";

/// Which protocols the port mapper may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapConfig {
    /// UPnP IGD.
    pub upnp: bool,
    /// PCP (RFC 6887).
    pub pcp: bool,
    /// NAT-PMP (RFC 6886).
    pub natpmp: bool,
    /// The lifetime (UPnP: lease) asked for; mappings are renewed at half of what the gateway grants.
    /// Default [`DEFAULT_LIFETIME`] (two hours, RFC 6886's recommendation); shorter ones are for tests.
    pub lifetime: Duration,
}

impl Default for PortMapConfig {
    /// All three, two-hour mappings.
    fn default() -> Self {
        Self {
            upnp: true,
            pcp: true,
            natpmp: true,
            lifetime: DEFAULT_LIFETIME,
        }
    }
}

impl PortMapConfig {
    /// None: no port mapping.
    pub fn disabled() -> Self {
        Self {
            upnp: false,
            pcp: false,
            natpmp: false,
            ..Self::default()
        }
    }

    /// Whether any protocol is on.
    pub fn is_enabled(&self) -> bool {
        self.upnp || self.pcp || self.natpmp
    }
}

#[derive(Debug)]
enum Cmd {
    Enable(u16),
    NetworkChanged,
    Shutdown(oneshot::Sender<()>),
}

/// A running port mapper: see the [module docs](self).
#[derive(Debug)]
pub struct PortMapper {
    cmds: mpsc::UnboundedSender<Cmd>,
    mapping: watch::Receiver<Option<Mapping>>,
    task: JoinHandle<()>,
}

impl PortMapper {
    /// Starts the driver (idle until [`PortMapper::enable`]). Must be called inside a tokio runtime.
    pub fn spawn(config: PortMapConfig) -> Self {
        let (cmds, rx) = mpsc::unbounded_channel();
        let (tx, mapping) = watch::channel(None);
        let task = tokio::spawn(run(config, rx, tx).instrument(tracing::debug_span!("portmap")));
        Self {
            cmds,
            mapping,
            task,
        }
    }

    /// Maps UDP `port` (our socket's) from now on.
    pub fn enable(&self, port: u16) {
        self.cmds.send(Cmd::Enable(port)).ok();
    }

    /// The network changed: read the gateway again and renew at once.
    pub fn network_changed(&self) {
        self.cmds.send(Cmd::NetworkChanged).ok();
    }

    /// The mapping held (`None`: none).
    pub fn watch(&self) -> watch::Receiver<Option<Mapping>> {
        self.mapping.clone()
    }

    /// Deletes the mappings and stops (at most [`SHUTDOWN_WAIT`]).
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.cmds.send(Cmd::Shutdown(done)).is_ok() {
            tokio::time::timeout(SHUTDOWN_WAIT, wait).await.ok();
        }
    }
}

impl Drop for PortMapper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The default route's IPv4 next hop, from `/proc/net/route`.
pub fn default_gateway() -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    parse_route_table(&table)
}

/// The next hop of the default route (destination and mask 0, flags UP and GATEWAY) in a
/// `/proc/net/route` table; the lowest metric wins.
pub fn parse_route_table(table: &str) -> Option<Ipv4Addr> {
    const RTF_UP_GATEWAY: u32 = 0x1 | 0x2;
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| fields.get(i).and_then(|f| u32::from_str_radix(f, 16).ok());
            let (dest, gw, flags, metric, mask) = (hex(1)?, hex(2)?, hex(3)?, hex(6)?, hex(7)?);
            (dest == 0 && mask == 0 && flags & RTF_UP_GATEWAY == RTF_UP_GATEWAY && gw != 0)
                .then(|| (metric, Ipv4Addr::from(gw.to_le_bytes())))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, gw)| gw)
}

/// Our address toward `gateway` (the source the kernel would pick).
fn local_ip_toward(gateway: Ipv4Addr) -> Option<Ipv4Addr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((gateway, super::natpmp::SERVER_PORT)).ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

fn current_gateway() -> Option<Gateway> {
    let ip = default_gateway()?;
    Some(Gateway {
        ip,
        local_ip: local_ip_toward(ip)?,
    })
}

struct State {
    config: PortMapConfig,
    core: Option<MapperCore>,
    socket: Option<UdpSocket>,
    gateway: Option<Gateway>,
    port: Option<u16>,
    upnp: Option<Upnp>,
    upnp_mapping: Option<Mapping>,
    /// The core's last probe got no answer (or only refusals): UPnP's turn.
    core_unavailable: bool,
    upnp_tx: mpsc::UnboundedSender<(u64, Option<Mapping>)>,
    /// Which UPnP task's reports count (older ones' are stale).
    upnp_generation: u64,
}

struct Upnp {
    stop: watch::Sender<Stop>,
    task: JoinHandle<()>,
}

/// What a UPnP task is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Keep mapping.
    Run,
    /// Stop and delete the mapping.
    Delete,
    /// Stop, leaving the mapping: the gateway gave PCP or NAT-PMP the same port (one redirect for
    /// all its protocols), and deleting it would delete theirs.
    Keep,
}

async fn run(
    config: PortMapConfig,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    mapping: watch::Sender<Option<Mapping>>,
) {
    let (upnp_tx, mut upnp_rx) = mpsc::unbounded_channel();
    let mut state = State {
        config,
        core: None,
        socket: None,
        gateway: None,
        port: None,
        upnp: None,
        upnp_mapping: None,
        core_unavailable: false,
        upnp_tx,
        upnp_generation: 0,
    };
    let mut rescan = tokio::time::interval(GATEWAY_RESCAN);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = [0u8; super::pcp::MAX_LEN];
    loop {
        let due = state.core.as_ref().and_then(MapperCore::poll_timeout);
        let sleep = tokio::time::sleep_until(due.map_or_else(
            || tokio::time::Instant::now() + Duration::from_secs(3600),
            tokio::time::Instant::from_std,
        ));
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => break,
                Some(Cmd::Enable(port)) => state.enable(port).await,
                Some(Cmd::NetworkChanged) => {
                    state.rescan().await;
                    if let Some(core) = &mut state.core {
                        core.network_changed(Instant::now());
                    }
                }
                Some(Cmd::Shutdown(done)) => {
                    state.shutdown(&mut buf).await;
                    mapping.send_replace(None);
                    done.send(()).ok();
                    return;
                }
            },
            received = recv(state.socket.as_ref(), &mut buf) => {
                if let Some(core) = &mut state.core {
                    match received {
                        Ok((len, from)) => core.handle_packet(Instant::now(), from, &buf[..len]),
                        // The socket is connected to the gateway's 5351: ICMP port unreachable.
                        Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                            core.handle_unreachable(Instant::now());
                        }
                        Err(error) => debug!(%error, "receiving from the gateway"),
                    }
                }
            }
            () = sleep, if due.is_some() => {
                if let Some(core) = &mut state.core {
                    core.handle_timeout(Instant::now());
                }
            }
            _ = rescan.tick() => state.rescan().await,
            Some((generation, upnp)) = upnp_rx.recv() => {
                if generation == state.upnp_generation {
                    state.upnp_mapping = upnp;
                }
            }
        }
        state.flush().await;
        state.steer();
        let now = state.held();
        mapping.send_if_modified(|held| {
            if *held == now {
                return false;
            }
            match (&*held, &now) {
                (_, Some(m)) => debug!(
                    target: "iroh::_events::portmap::mapped",
                    protocol = m.protocol.name(), external = %m.external, lifetime_s = m.lifetime.as_secs()
                ),
                (Some(m), None) => debug!(
                    target: "iroh::_events::portmap::lost",
                    protocol = m.protocol.name(), external = %m.external
                ),
                (None, None) => {}
            }
            *held = now;
            true
        });
    }
    state.stop_upnp();
}

/// A datagram from `socket`, or never without one.
async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

impl State {
    async fn enable(&mut self, port: u16) {
        if self.port == Some(port) || !self.config.is_enabled() {
            return;
        }
        debug!(port, "port mapping enabled");
        if self.socket.is_none() {
            match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await {
                Ok(socket) => self.socket = Some(socket),
                Err(error) => debug!(%error, "no socket for PCP / NAT-PMP"),
            }
        }
        self.port = Some(port);
        let mut config = Config::new(port);
        config.pcp = self.config.pcp;
        config.natpmp = self.config.natpmp;
        config.lifetime = self.config.lifetime;
        self.core = Some(MapperCore::new(config, rand::random()));
        self.gateway = None;
        self.stop_upnp();
        self.rescan().await;
    }

    /// Reads the gateway; a change starts over.
    async fn rescan(&mut self) {
        let Some(core) = &mut self.core else { return };
        let gateway = current_gateway();
        if gateway != self.gateway {
            debug!(?gateway, "gateway");
            // Connected, the socket hears of a closed port (ICMP), and takes packets from there only.
            if let (Some(socket), Some(gateway)) = (&self.socket, gateway)
                && let Err(error) = socket
                    .connect((gateway.ip, super::natpmp::SERVER_PORT))
                    .await
            {
                debug!(%error, "cannot connect the socket to the gateway");
            }
            self.gateway = gateway;
            self.core_unavailable = false;
            core.set_gateway(Instant::now(), gateway);
            self.stop_upnp();
        }
    }

    async fn flush(&mut self) {
        let Some(core) = &mut self.core else { return };
        while let Some(transmit) = core.poll_transmit() {
            if let Some(socket) = &self.socket
                && let Err(error) = socket.send_to(&transmit.payload, transmit.dst).await
            {
                // A connected socket reports the ICMP port unreachable of an earlier send here too.
                if error.kind() == std::io::ErrorKind::ConnectionRefused {
                    core.handle_unreachable(Instant::now());
                } else {
                    debug!(%error, dst = %transmit.dst, "cannot send to the gateway");
                }
            }
        }
        while let Some(event) = core.poll_event() {
            match event {
                Event::Unavailable => {
                    debug!("neither PCP nor NAT-PMP from the gateway");
                    self.core_unavailable = true;
                }
                Event::Mapped(m) => {
                    debug!(?event, protocol = m.protocol.name(), "port mapping");
                    self.core_unavailable = false;
                }
                Event::Lost(m) => debug!(?event, protocol = m.protocol.name(), "port mapping"),
            }
        }
    }

    /// The mapping to publish: the core's, else UPnP's.
    fn held(&self) -> Option<Mapping> {
        self.core
            .as_ref()
            .and_then(MapperCore::mapping)
            .or(self.upnp_mapping)
    }

    /// Runs UPnP exactly while it is wanted: enabled, a gateway, PCP and NAT-PMP off or unanswered, and
    /// no mapping of theirs. (Not alongside their first probe: the gateway may keep one redirect for
    /// all its protocols, and UPnP stopping would then delete the core's.)
    fn steer(&mut self) {
        let core_mapping = self.core.as_ref().and_then(MapperCore::mapping);
        let core_off = !(self.config.pcp || self.config.natpmp);
        let wanted = self.config.upnp
            && self.gateway.is_some()
            && core_mapping.is_none()
            && (self.core_unavailable || core_off);
        match (&self.upnp, wanted, self.gateway, self.port) {
            (None, true, Some(gateway), Some(port)) => {
                self.upnp_generation += 1;
                let (stop, stopped) = watch::channel(Stop::Run);
                let task = tokio::spawn(
                    upnp_task(
                        gateway,
                        (port, self.config.lifetime),
                        stopped,
                        self.upnp_tx.clone(),
                        self.upnp_generation,
                    )
                    .instrument(tracing::debug_span!("upnp")),
                );
                self.upnp = Some(Upnp { stop, task });
            }
            (Some(_), false, _, _) => {
                let same_port = core_mapping
                    .zip(self.upnp_mapping)
                    .is_some_and(|(core, upnp)| core.external.port() == upnp.external.port());
                self.stop_upnp_with(if same_port { Stop::Keep } else { Stop::Delete });
            }
            _ => {}
        }
    }

    fn stop_upnp(&mut self) {
        self.stop_upnp_with(Stop::Delete);
    }

    fn stop_upnp_with(&mut self, how: Stop) {
        if let Some(upnp) = self.upnp.take() {
            // The task deletes its mapping on its own; it is not waited for (shutdown waits).
            upnp.stop.send_replace(how);
            drop(upnp.task);
        }
        self.upnp_generation += 1;
        self.upnp_mapping = None;
    }

    async fn shutdown(&mut self, buf: &mut [u8]) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT - Duration::from_millis(100);
        let upnp = self.upnp.take();
        if let Some(upnp) = &upnp {
            upnp.stop.send_replace(Stop::Delete);
        }
        if let Some(core) = &mut self.core {
            core.shutdown(Instant::now());
        }
        loop {
            self.flush().await;
            let Some(core) = &mut self.core else { break };
            if core.is_idle() {
                break;
            }
            let next = core
                .poll_timeout()
                .map_or(deadline, tokio::time::Instant::from_std)
                .min(deadline);
            tokio::select! {
                received = recv(self.socket.as_ref(), buf) => {
                    if let Ok((len, from)) = received {
                        core.handle_packet(Instant::now(), from, &buf[..len]);
                    }
                }
                () = tokio::time::sleep_until(next) => {
                    if next >= deadline {
                        break;
                    }
                    core.handle_timeout(Instant::now());
                }
            }
        }
        if let Some(upnp) = upnp {
            tokio::time::timeout_at(deadline, upnp.task).await.ok();
        }
    }
}

/// Keeps a UPnP mapping of `port` on `gateway` until told to stop (then deletes it, unless told to keep
/// it), reporting it. A mapping request under way is finished, not cancelled: cancelled, it might have
/// made a mapping nobody deletes.
async fn upnp_task(
    gateway: Gateway,
    (port, lease): (u16, Duration),
    mut stop: watch::Receiver<Stop>,
    report: mpsc::UnboundedSender<(u64, Option<Mapping>)>,
    generation: u64,
) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let attempt = upnp_map(gateway, port, lease).await;
        let stopped = *stop.borrow();
        let outcome = match attempt {
            Ok((igd, mapping)) if stopped == Stop::Run => {
                backoff = BACKOFF_FIRST;
                report.send((generation, Some(mapping))).ok();
                let outcome = upnp_keep(&igd, gateway, (port, lease), mapping, &mut stop).await;
                report.send((generation, None)).ok();
                outcome.map(|how| (igd, mapping, how))
            }
            Ok((igd, mapping)) => Some((igd, mapping, stopped)),
            Err(error) => {
                debug!(%error, ?backoff, "no UPnP mapping");
                if stopped != Stop::Run {
                    return;
                }
                None
            }
        };
        if let Some((igd, mapping, how)) = outcome {
            if how == Stop::Delete {
                match igd
                    .remove_port(PortMappingProtocol::UDP, mapping.external.port())
                    .await
                {
                    Ok(()) => debug!(external = %mapping.external, "UPnP mapping deleted"),
                    Err(error) => debug!(%error, "cannot delete the UPnP mapping"),
                }
            }
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Why UPnP gave no mapping.
#[derive(Debug, thiserror::Error)]
enum UpnpError {
    #[error("search: {0}")]
    Search(#[from] igd_next::SearchError),
    #[error("the UPnP gateway {found} is not the default gateway {expected}")]
    OtherGateway { found: IpAddr, expected: Ipv4Addr },
    #[error("external address: {0}")]
    ExternalIp(#[from] igd_next::GetExternalIpError),
    #[error("the external address {0} is not IPv4")]
    NotIpv4(IpAddr),
    #[error("the external address {0} is not public")]
    NotPublic(Ipv4Addr),
    #[error("add: {0}")]
    Add(#[from] AddPortError),
    #[error("add any: {0}")]
    AddAny(#[from] igd_next::AddAnyPortError),
}

type Igd = igd_next::aio::Gateway<igd_next::aio::tokio::Tokio>;

async fn upnp_map(
    gateway: Gateway,
    port: u16,
    lease: Duration,
) -> Result<(Igd, Mapping), UpnpError> {
    let mut options = SearchOptions::default();
    options.bind_addr = SocketAddr::new(gateway.local_ip.into(), 0);
    options.timeout = Some(UPNP_SEARCH_WAIT);
    options.single_search_timeout = Some(UPNP_SEARCH_WAIT);
    let igd = search_gateway(options).await?;
    if igd.addr.ip() != IpAddr::V4(gateway.ip) {
        return Err(UpnpError::OtherGateway {
            found: igd.addr.ip(),
            expected: gateway.ip,
        });
    }
    let ip = match igd.get_external_ip().await? {
        IpAddr::V4(ip) => ip,
        other => return Err(UpnpError::NotIpv4(other)),
    };
    // Behind another NAT the gateway's external address is no use to peers: no mapping at all.
    if !is_usable_external(SocketAddrV4::new(ip, port.max(1))) {
        return Err(UpnpError::NotPublic(ip));
    }
    let lease = lease.max(MIN_LIFETIME);
    let (external_port, lease) = upnp_add(&igd, gateway, (port, lease), port, true).await?;
    let mapping = Mapping {
        protocol: MappingProtocol::Upnp,
        external: SocketAddrV4::new(ip, external_port),
        lifetime: lease,
        gateway: gateway.ip,
    };
    debug!(external = %mapping.external, ?lease, "UPnP mapping made");
    Ok((igd, mapping))
}

/// Adds (or renews) the mapping of `external_port`, or (`any_port`, when that one is taken) of a port the
/// gateway picks; returns the port and the lease.
async fn upnp_add(
    igd: &Igd,
    gateway: Gateway,
    (port, mut lease): (u16, Duration),
    external_port: u16,
    any_port: bool,
) -> Result<(u16, Duration), UpnpError> {
    let local = SocketAddr::new(gateway.local_ip.into(), port);
    for _ in 0..2 {
        let secs = u32::try_from(lease.as_secs()).unwrap_or(u32::MAX);
        match igd
            .add_port(
                PortMappingProtocol::UDP,
                external_port,
                local,
                secs,
                UPNP_DESCRIPTION,
            )
            .await
        {
            Ok(()) => return Ok((external_port, lease)),
            Err(AddPortError::OnlyPermanentLeasesSupported) if !lease.is_zero() => {
                lease = Duration::ZERO;
            }
            Err(AddPortError::PortInUse | AddPortError::SamePortValuesRequired) if any_port => {
                let port = igd
                    .add_any_port(PortMappingProtocol::UDP, local, secs, UPNP_DESCRIPTION)
                    .await?;
                return Ok((port, lease));
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(AddPortError::OnlyPermanentLeasesSupported.into())
}

/// Renews the mapping at half its lease until stopped (what to do then) or a renewal fails (`None`).
async fn upnp_keep(
    igd: &Igd,
    gateway: Gateway,
    (port, lease): (u16, Duration),
    mapping: Mapping,
    stop: &mut watch::Receiver<Stop>,
) -> Option<Stop> {
    loop {
        // A permanent lease is still refreshed now and then: a gateway that restarted forgot it.
        let wait = if mapping.lifetime.is_zero() {
            UPNP_PERMANENT_REFRESH
        } else {
            mapping.lifetime / 2
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return Some(*stop.borrow()),
        }
        // Only the same port: another would be another mapping, and the old one still listed.
        if let Err(error) =
            upnp_add(igd, gateway, (port, lease), mapping.external.port(), false).await
        {
            debug!(%error, "UPnP renewal failed");
            return None;
        }
    }
}
