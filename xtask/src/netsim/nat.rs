//! The nftables rulesets of the simulated routers, and of the faults injected into them.
//!
//! Behaviour per router (RFC 4787 terms; "mapping" is how the public ip:port is chosen, "filtering" which
//! inbound packets reach the inside host):
//!
//! | router | mapping | filtering | rules |
//! |---|---|---|---|
//! | full cone | endpoint-independent, port preserved | endpoint-independent | 1:1 NAT: `snat` of the host to the WAN address, `dnat` of everything arriving on the WAN address to the host |
//! | home | endpoint-independent (Linux keeps the source port unless taken) | address-and-port-dependent | `masquerade`; forward only replies inbound |
//! | address-restricted | endpoint-independent | address-dependent | `masquerade`; a dynamic map learned from outbound UDP, (remote IP, our port) -> inside host, `dnat`s new inbound flows from any port of a contacted IP |
//! | symmetric | endpoint-dependent (a random port per destination) | address-and-port-dependent | `masquerade random,fully-random` |
//! | UDP blocked | as home for TCP | as home for TCP | home plus a drop of all forwarded UDP |
//!
//! The carrier-grade NAT of a double NAT is a home router whose inside is 100.64.0.0/10.
//!
//! Every NAT router also drops unsolicited packets addressed to itself on the WAN side in its `input` chain.
//! That matters beyond tidiness: an accepted unsolicited packet (say a peer's holepunch arriving before our
//! own) would leave a conntrack entry whose reply tuple clashes with our later outbound flow, and masquerade
//! would then pick a different source port, turning an endpoint-independent NAT into an endpoint-dependent
//! one. A dropped packet's conntrack entry is never confirmed, so it leaves nothing behind.

use std::net::Ipv4Addr;

/// The nftables table netsim uses in each namespace.
pub(crate) const TABLE: &str = "netsim";
/// The table holding injected faults, separate so lifting a fault is deleting it.
pub(crate) const FAULT_TABLE: &str = "netsim_fault";

/// How a router translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouterNat {
    /// 1:1 NAT of `host` to the router's `wan_ip`.
    FullCone {
        /// The router's public address.
        wan_ip: Ipv4Addr,
        /// The one inside host.
        host: Ipv4Addr,
    },
    /// Linux masquerade: a home router, or a carrier-grade NAT.
    Masquerade,
    /// `masquerade random,fully-random`: a new random port for every new flow.
    Symmetric,
    /// Masquerade, and no UDP forwarded in either direction.
    MasqueradeNoUdp,
    /// Masquerade with address-dependent filtering: once the inside host sent UDP to an IP from a port, that
    /// IP may send to the port from any of its ports.
    AddressRestricted,
    /// A home router ([`RouterNat::Masquerade`]) that also forwards what a port mapping lets in: flows
    /// that a DNAT rule (miniupnpd's, in tables of its own) rewrote.
    PortMapping,
}

/// A router's input chain: from the WAN only replies reach the router itself, so an early holepunch
/// cannot leave a conntrack entry on it that would make masquerade pick another port.
fn input_chain(wan: &str) -> String {
    format!(
        "  chain input {{\n\
         \x20   type filter hook input priority filter; policy accept;\n\
         \x20   iifname \"{wan}\" ct state established,related accept\n\
         \x20   iifname \"{wan}\" drop\n\
         \x20 }}\n"
    )
}

/// The ruleset of a router with WAN interface `wan` and LAN interface `lan`.
pub(crate) fn router_ruleset(nat: RouterNat, wan: &str, lan: &str) -> String {
    let mut rules = format!("table ip {TABLE} {{\n");
    let input = input_chain(wan);
    match nat {
        RouterNat::FullCone { wan_ip, host } => {
            rules.push_str(&format!(
                "  chain prerouting {{\n\
                 \x20   type nat hook prerouting priority dstnat; policy accept;\n\
                 \x20   iifname \"{wan}\" ip daddr {wan_ip} dnat ip to {host}\n\
                 \x20 }}\n\
                 \x20 chain postrouting {{\n\
                 \x20   type nat hook postrouting priority srcnat; policy accept;\n\
                 \x20   oifname \"{wan}\" ip saddr {host} snat ip to {wan_ip}\n\
                 \x20 }}\n"
            ));
        }
        RouterNat::AddressRestricted => {
            rules.push_str(&format!(
                "  map contacted {{\n\
                 \x20   type ipv4_addr . inet_service : ipv4_addr\n\
                 \x20   flags dynamic,timeout\n\
                 \x20   timeout 120s\n\
                 \x20 }}\n\
                 \x20 chain prerouting {{\n\
                 \x20   type nat hook prerouting priority dstnat; policy accept;\n\
                 \x20   iifname \"{wan}\" meta l4proto udp dnat ip to ip saddr . udp dport map @contacted\n\
                 \x20 }}\n\
                 {input}\
                 \x20 chain forward {{\n\
                 \x20   type filter hook forward priority filter; policy drop;\n\
                 \x20   iifname \"{lan}\" oifname \"{wan}\" meta l4proto udp update @contacted {{ ip daddr . udp sport : ip saddr }}\n\
                 \x20   iifname \"{lan}\" oifname \"{wan}\" accept\n\
                 \x20   iifname \"{wan}\" oifname \"{lan}\" ct state established,related accept\n\
                 \x20   iifname \"{wan}\" oifname \"{lan}\" ct status dnat accept\n\
                 \x20 }}\n\
                 \x20 chain postrouting {{\n\
                 \x20   type nat hook postrouting priority srcnat; policy accept;\n\
                 \x20   oifname \"{wan}\" masquerade\n\
                 \x20 }}\n"
            ));
        }
        RouterNat::Masquerade
        | RouterNat::Symmetric
        | RouterNat::MasqueradeNoUdp
        | RouterNat::PortMapping => {
            let masquerade = if nat == RouterNat::Symmetric {
                "masquerade random,fully-random"
            } else {
                "masquerade"
            };
            let no_udp = if nat == RouterNat::MasqueradeNoUdp {
                "    meta l4proto udp drop\n"
            } else {
                ""
            };
            let mapped = if nat == RouterNat::PortMapping {
                format!("    iifname \"{wan}\" oifname \"{lan}\" ct status dnat accept\n")
            } else {
                String::new()
            };
            rules.push_str(&format!(
                "{input}\
                 \x20 chain forward {{\n\
                 \x20   type filter hook forward priority filter; policy drop;\n\
                 {no_udp}\
                 \x20   iifname \"{lan}\" oifname \"{wan}\" accept\n\
                 \x20   iifname \"{wan}\" oifname \"{lan}\" ct state established,related accept\n\
                 {mapped}\
                 \x20 }}\n\
                 \x20 chain postrouting {{\n\
                 \x20   type nat hook postrouting priority srcnat; policy accept;\n\
                 \x20   oifname \"{wan}\" {masquerade}\n\
                 \x20 }}\n"
            ));
        }
    }
    rules.push_str("}\n");
    rules
}

/// A fault: all traffic between this site and `other` (the other peer's public address) dropped, while the
/// relay stays reachable. Loaded on the box at the edge of a site: `forward` for routers, `input` and `output`
/// for a host with a public address (then both hooks see the traffic).
pub(crate) fn drop_peer_ruleset(other: Ipv4Addr, on_router: bool) -> String {
    let chains = if on_router {
        format!(
            "  chain forward {{\n\
             \x20   type filter hook forward priority filter - 10; policy accept;\n\
             \x20   ip saddr {other} drop\n\
             \x20   ip daddr {other} drop\n\
             \x20 }}\n"
        )
    } else {
        format!(
            "  chain input {{\n\
             \x20   type filter hook input priority filter - 10; policy accept;\n\
             \x20   ip saddr {other} drop\n\
             \x20 }}\n\
             \x20 chain output {{\n\
             \x20   type filter hook output priority filter - 10; policy accept;\n\
             \x20   ip daddr {other} drop\n\
             \x20 }}\n"
        )
    };
    // Prerouting too, before NAT: on a full-cone router the dnat would otherwise already have rewritten the
    // packet, which still matches by source; a raw-priority drop keeps the rule independent of the NAT kind.
    format!(
        "table ip {FAULT_TABLE} {{\n\
         \x20 chain prerouting {{\n\
         \x20   type filter hook prerouting priority raw; policy accept;\n\
         \x20   ip saddr {other} drop\n\
         \x20 }}\n\
         {chains}}}\n"
    )
}

/// Removes the fault table.
pub(crate) fn lift_fault_ruleset() -> String {
    format!("delete table ip {FAULT_TABLE}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_cone_maps_both_ways() {
        let rules = router_ruleset(
            RouterNat::FullCone {
                wan_ip: Ipv4Addr::new(198, 18, 1, 1),
                host: Ipv4Addr::new(10, 1, 1, 2),
            },
            "wan0",
            "lan0",
        );
        assert!(rules.contains("iifname \"wan0\" ip daddr 198.18.1.1 dnat ip to 10.1.1.2"));
        assert!(rules.contains("oifname \"wan0\" ip saddr 10.1.1.2 snat ip to 198.18.1.1"));
        assert!(!rules.contains("masquerade"));
        assert!(!rules.contains("policy drop"), "full cone filters nothing");
    }

    #[test]
    fn masquerade_kinds_differ_only_where_they_should() {
        let home = router_ruleset(RouterNat::Masquerade, "w", "l");
        let symmetric = router_ruleset(RouterNat::Symmetric, "w", "l");
        let no_udp = router_ruleset(RouterNat::MasqueradeNoUdp, "w", "l");
        assert!(home.contains("oifname \"w\" masquerade\n"));
        assert!(symmetric.contains("masquerade random,fully-random"));
        assert!(no_udp.contains("meta l4proto udp drop"));
        assert!(!home.contains("udp"));
        for rules in [&home, &symmetric, &no_udp] {
            assert!(
                rules.contains("iifname \"w\" oifname \"l\" ct state established,related accept")
            );
            assert!(
                rules.contains("iifname \"w\" drop"),
                "unsolicited input dropped"
            );
            // One statement per line, balanced braces.
            assert_eq!(rules.matches('{').count(), rules.matches('}').count());
        }
    }

    #[test]
    fn address_restricted_learns_contacted_addresses() {
        let rules = router_ruleset(RouterNat::AddressRestricted, "w", "l");
        assert!(rules.contains("update @contacted { ip daddr . udp sport : ip saddr }"));
        assert!(rules.contains("dnat ip to ip saddr . udp dport map @contacted"));
        assert!(rules.contains("ct status dnat accept"));
        assert!(rules.contains("oifname \"w\" masquerade\n"));
        assert_eq!(rules.matches('{').count(), rules.matches('}').count());
    }

    #[test]
    fn fault_rules_name_the_other_peer() {
        let other = Ipv4Addr::new(198, 18, 2, 1);
        let router = drop_peer_ruleset(other, true);
        assert!(router.contains("hook forward"));
        assert!(router.contains("ip daddr 198.18.2.1 drop"));
        let host = drop_peer_ruleset(other, false);
        assert!(host.contains("hook output"));
        assert!(host.contains("hook input"));
        assert_eq!(lift_fault_ruleset(), "delete table ip netsim_fault\n");
    }
}
