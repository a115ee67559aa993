//! Driving net report from the actor: resolving the relays' STUN hosts, sending STUN on the socket QUIC
//! uses, pinging relays, and applying each report: the home relay and our own addresses. Also noticing
//! network changes: the interface addresses are read every [`LINK_CHECK`](super::LINK_CHECK), and when
//! they change a net report is requested at once, our addresses are republished, every relay connection
//! is checked with a probe (one whose local address went away dies silently), and every active node is
//! holepunched again (its direct path may be gone, and new ones may work).

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use tracing::{debug, info, trace};

use super::{Actor, TaskOut};
use crate::net_report::{self, NetReportEvent, ProbeTarget, RelayNode, ReportReason};

/// How long resolving one relay host may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

impl Actor {
    /// Sends the reporter's STUN requests and handles its events. Returns whether there was any.
    pub(super) fn drain_reporter(&mut self) -> bool {
        let mut progress = false;
        let Some(reporter) = &mut self.reporter else {
            return false;
        };
        let mut events = Vec::new();
        while let Some(transmit) = reporter.poll_transmit() {
            progress = true;
            if let Err(error) = self
                .sock
                .udp
                .send_datagram(transmit.dst, &transmit.contents)
            {
                trace!(dst = %transmit.dst, %error, "STUN send failed");
            }
        }
        while let Some(event) = reporter.poll_event() {
            progress = true;
            events.push(event);
        }
        for event in events {
            match event {
                NetReportEvent::ReportDue(reason) => {
                    trace!(%reason, "net report due");
                    self.start_report();
                }
                NetReportEvent::ReportReady(report) => {
                    if let Some(preferred) = report.preferred_relay.clone() {
                        self.set_home(preferred);
                    }
                    self.maybe_enable_port_mapping(report.global_v4);
                    self.paths
                        .set_nat(report.mapping_varies_by_dest_v4, report.global_v4);
                    self.refresh_own_addrs();
                }
            }
        }
        progress
    }

    /// Resolves the relays' STUN hosts in the background (the report starts when that is done) and pings
    /// the relays we are connected to.
    fn start_report(&mut self) {
        let Some(map) = &self.relay_map else {
            return;
        };
        let nodes: Vec<RelayNode> = map.nodes().to_vec();
        self.tasks
            .spawn(async move { TaskOut::Resolved(resolve_targets(nodes).await) });
        for (url, conn) in &self.relays {
            let sender = conn.slot.sender.clone();
            if !sender.state().borrow().is_connected() {
                continue;
            }
            let url = url.clone();
            self.tasks
                .spawn(async move { TaskOut::Latency(url, sender.ping().await.ok()) });
        }
    }

    pub(super) fn handle_task(&mut self, out: TaskOut) {
        let now = Instant::now();
        let Some(reporter) = &mut self.reporter else {
            return;
        };
        match out {
            TaskOut::Resolved(targets) => reporter.start_report(now, targets),
            TaskOut::Latency(url, Some(rtt)) => reporter.handle_relay_latency(now, &url, rtt),
            TaskOut::Latency(url, None) => trace!(%url, "relay ping unanswered"),
        }
    }

    /// Reads the interface addresses; if they changed since the last reading, the network changed.
    pub(super) fn check_links(&mut self, now: Instant) {
        let local = self.read_local_addrs();
        if local == self.local_addrs {
            return;
        }
        let added: Vec<SocketAddr> = local
            .iter()
            .filter(|addr| !self.local_addrs.contains(addr))
            .copied()
            .collect();
        let removed: Vec<SocketAddr> = self
            .local_addrs
            .iter()
            .filter(|addr| !local.contains(addr))
            .copied()
            .collect();
        info!(?added, ?removed, "network changed");
        debug!(target: "iroh::_events::network_changed", ?added, ?removed);
        if let Some((mapper, _)) = &self.portmap {
            mapper.network_changed();
        }
        if let Some(reporter) = &mut self.reporter {
            reporter.request_report(now, ReportReason::NetworkChanged);
        }
        self.close_predictions();
        for conn in self.relays.values() {
            conn.slot.sender.check_connection();
        }
        // One holepunch round per active node, with our new addresses (set_own_addrs would start another).
        let own = self.own_addrs_from(&local);
        self.local_addrs = local;
        if own != self.own_addrs {
            self.publish_own_addrs(&own);
        }
        self.paths.network_changed(now, own);
    }

    /// The addresses of our sockets on the local interfaces. Only [`Actor::check_links`] (and the actor's
    /// start) records them: a reading taken elsewhere must not hide a change from it.
    pub(super) fn read_local_addrs(&self) -> Vec<SocketAddr> {
        let v4 = self.sock.udp.local_v4();
        let v6 = self.sock.udp.local_v6();
        let bound: Vec<SocketAddr> = std::iter::once(v4)
            .chain(v6)
            .filter(|addr| !addr.ip().is_unspecified())
            .collect();
        // A socket bound to one address is reachable there only; unspecified ones on every interface.
        if bound.is_empty() {
            return net_report::local_addrs(Some(v4.port()), v6.map(|a| a.port()));
        }
        let mut local = bound;
        if v4.ip().is_unspecified() {
            local.extend(net_report::local_addrs(Some(v4.port()), None));
        }
        if let Some(v6) = v6.filter(|a| a.ip().is_unspecified()) {
            local.extend(net_report::local_addrs(None, Some(v6.port())));
        }
        local
    }

    /// Recomputes our own addresses (local interfaces, and the public ones of the last report) and
    /// publishes them if they changed.
    pub(super) fn refresh_own_addrs(&mut self) {
        let own = self.own_addrs_from(&self.read_local_addrs());
        if own == self.own_addrs {
            return;
        }
        self.publish_own_addrs(&own);
        self.paths.set_own_addrs(Instant::now(), own);
    }

    /// Our own addresses given the `local` ones: those, the public ones of the last report, and the one
    /// the gateway mapped for us.
    fn own_addrs_from(&self, local: &[SocketAddr]) -> Vec<SocketAddr> {
        let report = self.reporter.as_ref().and_then(|r| r.last_report());
        let mut own = net_report::own_addrs(local, report);
        let mapped = self
            .portmap
            .as_ref()
            .and_then(|(_, watch)| *watch.borrow())
            .map(|m| SocketAddr::V4(m.external));
        if let Some(mapped) = mapped
            && !own.contains(&mapped)
        {
            // First: it is reachable from anyone, where the STUN-learned one may filter.
            own.insert(0, mapped);
        }
        own
    }

    /// Starts port mapping once a report shows a NAT in front of us: a public IPv4 address that is not
    /// one of ours (nor loopback). A host with a public address needs no mapping, and tests with a relay
    /// on loopback ask no router anything.
    fn maybe_enable_port_mapping(&mut self, global_v4: Option<SocketAddr>) {
        let Some((mapper, _)) = &self.portmap else {
            return;
        };
        let Some(global) = global_v4 else { return };
        // A STUN server on this host reflects loopback or one of our addresses (also of an interface
        // that is down, which `local_addrs` leaves out): no NAT, and nothing to ask a router.
        if global.ip().is_loopback()
            || self.local_addrs.iter().any(|a| a.ip() == global.ip())
            || is_interface_ip(global.ip())
        {
            return;
        }
        mapper.enable(self.sock.udp.local_v4().port());
    }

    /// The gateway's mapping changed: our addresses with it, for the Endpoint and for peers.
    pub(super) fn port_mapping_changed(&mut self) {
        let mapping = self
            .portmap
            .as_mut()
            .and_then(|(_, watch)| *watch.borrow_and_update());
        self.watchers.port_mapping.send_replace(mapping);
        self.refresh_own_addrs();
    }

    fn publish_own_addrs(&mut self, own: &[SocketAddr]) {
        debug!(target: "iroh::_events::direct_addrs", addrs = ?own);
        self.own_addrs = own.to_vec();
        self.watchers
            .direct_addrs
            .send_replace(own.iter().copied().collect::<BTreeSet<_>>());
    }
}

/// Whether `ip` is the address of one of this host's interfaces, up or not.
fn is_interface_ip(ip: IpAddr) -> bool {
    if_addrs::get_if_addrs().is_ok_and(|interfaces| interfaces.iter().any(|i| i.ip() == ip))
}

/// The probe targets of these relays: each host resolved (IP literals need no lookup).
async fn resolve_targets(nodes: Vec<RelayNode>) -> Vec<ProbeTarget> {
    let mut targets = Vec::with_capacity(nodes.len());
    for node in nodes {
        let Some(host) = node.url.host_str() else {
            targets.push(ProbeTarget::unresolved(node.url.clone()));
            continue;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                let lookup = tokio::net::lookup_host((host, 0));
                match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                    Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                    Ok(Err(error)) => {
                        debug!(%host, %error, "cannot resolve relay host");
                        Vec::new()
                    }
                    Err(_) => {
                        debug!(%host, "resolving relay host timed out");
                        Vec::new()
                    }
                }
            }
        };
        targets.push(node.probe_target(&ips));
    }
    targets
}
