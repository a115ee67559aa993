//! Our own addresses: the local interface addresses our sockets can be reached at, and those merged with the
//! public addresses STUN learned.

use std::net::{IpAddr, SocketAddr};

#[cfg(feature = "quic")]
use tracing::debug;

use super::types::Report;

/// Whether loopback addresses count as our own addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum LoopbackPolicy {
    /// Only when no other usable address exists (for the families we have a socket for): a machine with no
    /// network can still be reached from itself, as in tests. The default.
    #[default]
    WhenAlone,
    /// Always, after the other addresses (for endpoints that talk to others on the same host).
    Always,
    /// Never.
    Never,
}

/// The local interface addresses our sockets can be reached at, combined with the ports they are bound to.
///
/// `bound_port_v4` / `bound_port_v6`: the ports of our IPv4 and IPv6 sockets (bound to the unspecified
/// address), or `None` for a family we have no socket for. Uses [`LoopbackPolicy::WhenAlone`]; see
/// [`addrs_for_ips`] for the rules. If the interfaces cannot be listed, the result is empty (logged).
#[cfg(feature = "quic")]
#[cfg_attr(iroh_docsrs, doc(cfg(feature = "quic")))]
pub fn local_addrs(bound_port_v4: Option<u16>, bound_port_v6: Option<u16>) -> Vec<SocketAddr> {
    local_addrs_with(bound_port_v4, bound_port_v6, LoopbackPolicy::WhenAlone)
}

/// [`local_addrs`] with a choice of loopback policy.
#[cfg(feature = "quic")]
#[cfg_attr(iroh_docsrs, doc(cfg(feature = "quic")))]
pub fn local_addrs_with(
    bound_port_v4: Option<u16>,
    bound_port_v6: Option<u16>,
    loopback: LoopbackPolicy,
) -> Vec<SocketAddr> {
    let ips = match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces
            .into_iter()
            // An interface that is not running carries no traffic (if-addrs reports RUNNING as "up" on Unix).
            .filter(|interface| interface.is_oper_up() || interface.is_loopback())
            .map(|interface| interface.ip())
            .collect::<Vec<_>>(),
        Err(error) => {
            debug!(%error, "cannot list the network interfaces");
            Vec::new()
        }
    };
    addrs_for_ips(&ips, bound_port_v4, bound_port_v6, loopback)
}

/// The pure part of `local_addrs`: which interface IPs make usable addresses, with which port, in what order.
///
/// - IPs of a family without a bound port are dropped.
/// - Unspecified and multicast IPs are dropped, and so are IPv6 link-local ones (`fe80::/10`): they need a
///   scope id (the interface index) that would mean nothing to a peer.
/// - Loopback IPs follow `loopback` (see [`LoopbackPolicy`]).
/// - The result is deduplicated and sorted: non-loopback before loopback, IPv4 before IPv6, then by address.
pub fn addrs_for_ips(
    ips: &[IpAddr],
    bound_port_v4: Option<u16>,
    bound_port_v6: Option<u16>,
    loopback: LoopbackPolicy,
) -> Vec<SocketAddr> {
    let usable = |ip: &IpAddr| -> Option<SocketAddr> {
        let ip = ip.to_canonical();
        if ip.is_unspecified() || ip.is_multicast() {
            return None;
        }
        if let IpAddr::V6(v6) = ip
            && v6.is_unicast_link_local()
        {
            return None;
        }
        let port = match ip {
            IpAddr::V4(_) => bound_port_v4?,
            IpAddr::V6(_) => bound_port_v6?,
        };
        Some(SocketAddr::new(ip, port))
    };
    let candidates: Vec<SocketAddr> = ips.iter().filter_map(usable).collect();
    let has_other = candidates.iter().any(|addr| !addr.ip().is_loopback());
    let keep_loopback = match loopback {
        LoopbackPolicy::Always => true,
        LoopbackPolicy::Never => false,
        LoopbackPolicy::WhenAlone => !has_other,
    };
    let mut out: Vec<SocketAddr> = candidates
        .into_iter()
        .filter(|addr| keep_loopback || !addr.ip().is_loopback())
        .collect();
    out.sort_by_key(|addr| (addr.ip().is_loopback(), addr.is_ipv6(), *addr));
    out.dedup();
    out
}

/// Our own addresses for peers: the public addresses STUN learned (from `report`, IPv4 then IPv6) first, then
/// the `local` ones (as `local_addrs` gives them), without duplicates.
///
/// A global address is kept even when the mapping varies by destination (symmetric NAT): peers then mostly
/// find us through the addresses they observe (peer-reflexive), but the listed one costs little.
pub fn own_addrs(local: &[SocketAddr], report: Option<&Report>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::with_capacity(local.len() + 2);
    let global = report.into_iter().flat_map(Report::global_addrs);
    for addr in global.chain(local.iter().copied()) {
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}
