//! Port mapping: asking the home router to forward a public port to our UDP socket, so that any peer can
//! reach us directly even behind a NAT that filters (or maps per destination).
//!
//! Three protocols exist in home routers. This module has sans-IO pieces for two of them and the
//! client that speaks both:
//!
//! - [`natpmp`]: NAT-PMP (RFC 6886), the older and simpler, on UDP port 5351 of the gateway;
//! - [`pcp`]: PCP (RFC 6887), its successor on the same port (servers answer both versions);
//! - [`client`]: [`client::MapperCore`], a state machine fed `(now, input)` that probes the gateway with
//!   both at once, maps our port with whichever answers (PCP preferred), renews before the lifetime
//!   ends, notices a gateway that restarted (its epoch went back) and maps again, deletes the mapping on
//!   close, and backs off to a few packets a minute when the gateway does not answer.
//!
//! - [`service`] (with the `quic` feature): the tokio driver, which also speaks UPnP IGD (SSDP discovery
//!   and SOAP over HTTP, through the `igd-next` crate) while PCP and NAT-PMP have no mapping.

pub mod client;
pub mod natpmp;
pub mod pcp;
#[cfg(feature = "quic")]
#[cfg_attr(iroh_docsrs, doc(cfg(feature = "quic")))]
pub mod service;

#[cfg(test)]
mod tests;

/// The transport protocol of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// UDP (what the magic socket needs).
    Udp,
    /// TCP.
    Tcp,
}

/// Which protocol made a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MappingProtocol {
    /// PCP (RFC 6887).
    Pcp,
    /// NAT-PMP (RFC 6886).
    NatPmp,
    /// UPnP IGD.
    Upnp,
}

impl MappingProtocol {
    /// A short lowercase name, for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            MappingProtocol::Pcp => "pcp",
            MappingProtocol::NatPmp => "nat-pmp",
            MappingProtocol::Upnp => "upnp",
        }
    }
}
