//! The plain types [`MdnsCore`](super::MdnsCore) takes and returns: interfaces, packets to send, its
//! settings and counters.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// One network interface the core runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The OS's interface index.
    pub index: u32,
    /// Its addresses with their prefix lengths.
    pub addrs: Vec<(IpAddr, u8)>,
}

impl Interface {
    /// Whether `ip` is on this interface's link: in one of its prefixes (IPv6 link-local addresses with
    /// this interface's scope are checked by the caller).
    pub fn on_link(&self, ip: IpAddr) -> bool {
        self.addrs.iter().any(|(own, prefix)| match (own, ip) {
            (IpAddr::V4(own), IpAddr::V4(ip)) => {
                let bits = u32::from(*prefix.min(&32));
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(*own) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(own), IpAddr::V6(ip)) => {
                let bits = u32::from(*prefix.min(&128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                u128::from(*own) & mask == u128::from(ip) & mask
            }
            _ => false,
        })
    }

    /// Its first IPv4 address (what selects it for sending IPv4 multicast).
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.addrs.iter().find_map(|(ip, _)| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
    }

    /// Whether it has an IPv6 address (link-local included), so IPv6 multicast works on it.
    pub fn has_ipv6(&self) -> bool {
        self.addrs.iter().any(|(ip, _)| ip.is_ipv6())
    }
}

/// A packet to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The interface to send it on.
    pub iface: u32,
    /// Where: the group of the family ([`GROUP_V4`](super::proto::GROUP_V4) or [`GROUP_V6`](super::proto::GROUP_V6) at the
    /// mDNS port) or a querier.
    pub dst: SocketAddr,
    /// The message.
    pub payload: Vec<u8>,
    /// Send from a socket of an ephemeral port rather than the mDNS port: a one-shot query (§5.1),
    /// which responders answer at once by unicast to that port (§6.7), so the answer reaches this
    /// process even when others on the host share the mDNS port (§15.1).
    pub oneshot: bool,
}

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct Config {
    /// The mDNS port (5353).
    pub port: u16,
    /// The most peers remembered.
    pub max_peers: usize,
    /// Whether to announce and answer for ourselves.
    pub advertise: bool,
}

/// Counters of what the core sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Unsolicited announcements (one per interface per packet).
    pub announcements: u64,
    /// Multicast answers to queries.
    pub multicast_answers: u64,
    /// Unicast answers (QU and legacy queries).
    pub unicast_answers: u64,
    /// Queries sent (one per interface per packet).
    pub queries: u64,
    /// Packets received that were not DNS or not for mDNS.
    pub malformed: u64,
    /// Responses dropped for their source (wrong port, not on the link).
    pub off_link: u64,
}
