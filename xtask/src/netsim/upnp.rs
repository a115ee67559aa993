//! The `upnp` kind's router: a home router (as [`super::topo::Kind::Home`]) that also runs Debian's
//! `miniupnpd` (the nftables build) on its LAN side, offering UPnP IGD, NAT-PMP and PCP, each of which can
//! be turned off (for the per-protocol checks).
//!
//! Setup, per router namespace:
//!
//! - nftables: netsim's own `ip netsim` table stays the filter (masquerade, replies only inbound) and
//!   also accepts forwarded packets that a DNAT let in (`ct status dnat`): only miniupnpd makes DNATs.
//!   miniupnpd's rules go into `inet` tables of their own, `upnp_filter` and `upnp_nat`, with the base
//!   chains jumping to the chains it fills (`miniupnpd`, `prerouting_miniupnpd`,
//!   `postrouting_miniupnpd`).
//! - The WAN address is in 198.18.0.0/15, which miniupnpd takes for a reserved one and then refuses to
//!   forward anything; it learns the external address by STUN instead (`ext_perform_stun`), from the relay's
//!   STUN server, and trusts what STUN says.
//! - miniupnpd has one switch for NAT-PMP and PCP (both on port 5351). To offer one alone, the router's
//!   input drops LAN packets to 5351 of the other version (the first payload byte: 0 for NAT-PMP, 2 for
//!   PCP): a client then sees a gateway that answers only the one.
//! - `secure_mode`: mappings only to the requester's own address; `allow` the LAN for any port.
//!
//! [`mappings`] reads back the DNATs miniupnpd holds, [`upnpc_list`] what `upnpc -i -l` (Debian's
//! `miniupnpc`) sees from the host.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::sys::{self, NsProcess, Pipes, Run};

/// The shortest lifetime miniupnpd grants (NAT-PMP and PCP): short, so the per-protocol checks see a
/// renewal within a minute.
const MIN_LIFETIME_S: u32 = 20;

/// Which protocols a router offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Protocols {
    /// UPnP IGD (SSDP on 1900 and SOAP over HTTP).
    pub(crate) upnp: bool,
    /// NAT-PMP (version 0 on 5351).
    pub(crate) natpmp: bool,
    /// PCP (version 2 on 5351).
    pub(crate) pcp: bool,
}

impl Protocols {
    /// All three.
    pub(crate) const ALL: Protocols = Protocols {
        upnp: true,
        natpmp: true,
        pcp: true,
    };

    /// Only the one named `upnp`, `nat-pmp` or `pcp`.
    pub(crate) fn only(name: &str) -> Option<Self> {
        let none = Protocols {
            upnp: false,
            natpmp: false,
            pcp: false,
        };
        match name {
            "upnp" => Some(Protocols { upnp: true, ..none }),
            "nat-pmp" => Some(Protocols {
                natpmp: true,
                ..none
            }),
            "pcp" => Some(Protocols { pcp: true, ..none }),
            _ => None,
        }
    }
}

/// miniupnpd's nftables tables and chains, and the version filter on 5351 when only one of NAT-PMP and
/// PCP is offered.
pub(crate) fn ruleset(lan: &str, protocols: Protocols) -> String {
    let version_drop = match (protocols.natpmp, protocols.pcp) {
        (true, false) => Some("!= 0"),
        (false, true) => Some("== 0"),
        _ => None,
    };
    let mut rules = String::from(
        "table inet upnp_filter {\n\
         \x20 chain forward {\n\
         \x20   type filter hook forward priority filter + 10; policy accept;\n\
         \x20   jump miniupnpd\n\
         \x20 }\n\
         \x20 chain miniupnpd {\n\
         \x20 }\n\
         }\n\
         table inet upnp_nat {\n\
         \x20 chain prerouting {\n\
         \x20   type nat hook prerouting priority dstnat; policy accept;\n\
         \x20   jump prerouting_miniupnpd\n\
         \x20 }\n\
         \x20 chain postrouting {\n\
         \x20   type nat hook postrouting priority srcnat - 10; policy accept;\n\
         \x20   jump postrouting_miniupnpd\n\
         \x20 }\n\
         \x20 chain prerouting_miniupnpd {\n\
         \x20 }\n\
         \x20 chain postrouting_miniupnpd {\n\
         \x20 }\n\
         }\n",
    );
    if let Some(test) = version_drop {
        rules.push_str(&format!(
            "table inet upnp_version {{\n\
             \x20 chain input {{\n\
             \x20   type filter hook input priority filter - 10; policy accept;\n\
             \x20   iifname \"{lan}\" udp dport 5351 @th,64,8 {test} drop\n\
             \x20 }}\n\
             }}\n"
        ));
    }
    rules
}

/// miniupnpd's configuration.
pub(crate) fn config(
    wan: &str,
    lan: &str,
    lan_net: Ipv4Addr,
    stun: SocketAddrV4,
    protocols: Protocols,
    lease_file: &Path,
) -> String {
    let yes_no = |on: bool| if on { "yes" } else { "no" };
    format!(
        "ext_ifname={wan}\n\
         listening_ip={lan}\n\
         ext_perform_stun=yes\n\
         ext_stun_host={}\n\
         ext_stun_port={}\n\
         enable_upnp={}\n\
         enable_natpmp={}\n\
         lease_file={}\n\
         upnp_table_name=upnp_filter\n\
         upnp_nat_table_name=upnp_nat\n\
         upnp_forward_chain=miniupnpd\n\
         upnp_nat_chain=prerouting_miniupnpd\n\
         upnp_nat_postrouting_chain=postrouting_miniupnpd\n\
         secure_mode=yes\n\
         system_uptime=no\n\
         min_lifetime={MIN_LIFETIME_S}\n\
         max_lifetime=86400\n\
         uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\n\
         allow 1024-65535 {lan_net}/24 1-65535\n\
         deny 0-65535 0.0.0.0/0 0-65535\n",
        stun.ip(),
        stun.port(),
        yes_no(protocols.upnp),
        yes_no(protocols.natpmp || protocols.pcp),
        lease_file.display(),
    )
}

/// Loads the rules and starts miniupnpd in `ns`; returns once it listens.
pub(crate) fn start(
    run: &Run,
    ns: &str,
    (wan, lan, lan_net): (&str, &str, Ipv4Addr),
    stun: SocketAddrV4,
    protocols: Protocols,
) -> Result<NsProcess, String> {
    let dir = run.dir();
    sys::nft_load(
        ns,
        &ruleset(lan, protocols),
        &dir.join(format!("{ns}-upnp.nft")),
    )?;
    let conf = dir.join(format!("{ns}-miniupnpd.conf"));
    let lease_file = dir.join(format!("{ns}-miniupnpd.leases"));
    std::fs::write(
        &conf,
        config(wan, lan, lan_net, stun, protocols, &lease_file),
    )
    .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    let log = dir.join(format!("{ns}-miniupnpd.log"));
    let program = Path::new(&sys::tool("miniupnpd")).to_path_buf();
    let process = NsProcess::spawn(
        "miniupnpd",
        ns,
        &program,
        &[
            "-d".to_owned(),
            "-f".to_owned(),
            conf.display().to_string(),
            "-P".to_owned(),
            dir.join(format!("{ns}-miniupnpd.pid"))
                .display()
                .to_string(),
        ],
        &log,
        Pipes {
            stdin: false,
            stdout: false,
        },
    )?;
    let ready = if protocols.upnp {
        "HTTP listening on port"
    } else {
        "Listening for NAT-PMP/PCP traffic"
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(ready) {
            return Ok(process);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "miniupnpd in {ns} did not start within 10 s; its log:\n{}",
                sys::log_tail(&log, 15)
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The UDP mappings miniupnpd holds in `ns`: (external port, internal address), from its DNAT rules.
pub(crate) fn mappings(ns: &str) -> Result<Vec<(u16, SocketAddrV4)>, String> {
    let text = sys::exec_in(
        ns,
        "nft",
        &["list", "chain", "inet", "upnp_nat", "prerouting_miniupnpd"],
    )?;
    Ok(text.lines().filter_map(parse_dnat).collect())
}

/// `iif "wan" @nh,72,8 0x11 th dport 50001 dnat ip to 10.1.1.2:4000` -> (50001, 10.1.1.2:4000): miniupnpd
/// matches the protocol by the IPv4 header's byte 9 (`@nh,72,8`, 0x11 for UDP).
fn parse_dnat(line: &str) -> Option<(u16, SocketAddrV4)> {
    if !line.contains("@nh,72,8 0x11") && !line.contains("udp dport") {
        return None;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let port = words
        .iter()
        .position(|w| *w == "dport")
        .and_then(|i| words.get(i + 1))
        .and_then(|p| p.parse().ok())?;
    let to = words
        .iter()
        .position(|w| *w == "to")
        .and_then(|i| words.get(i + 1))
        .and_then(|a| a.parse().ok())?;
    Some((port, to))
}

/// What `upnpc -l` lists, run in `host_ns` (its stdout).
pub(crate) fn upnpc_list(host_ns: &str) -> Result<String, String> {
    // -i: also an IGD whose external address looks reserved (198.18.0.0/15 does).
    sys::exec_in(host_ns, "upnpc", &["-i", "-l"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnat_rules_read_back() {
        assert_eq!(
            parse_dnat("\t\tiif \"wan0\" @nh,72,8 0x11 th dport 50001 dnat ip to 10.1.1.2:4000"),
            Some((50001, "10.1.1.2:4000".parse().unwrap()))
        );
        // TCP (protocol 6) is not ours.
        assert_eq!(
            parse_dnat("iif \"wan0\" @nh,72,8 0x6 th dport 80 dnat ip to 10.1.1.2:80"),
            None
        );
        assert_eq!(parse_dnat("chain prerouting_miniupnpd {"), None);
    }

    #[test]
    fn one_protocol_alone() {
        let pcp = ruleset("lan0", Protocols::only("pcp").unwrap());
        assert!(pcp.contains("udp dport 5351 @th,64,8 == 0 drop"));
        let natpmp = ruleset("lan0", Protocols::only("nat-pmp").unwrap());
        assert!(natpmp.contains("@th,64,8 != 0 drop"));
        assert!(!ruleset("lan0", Protocols::ALL).contains("5351"));
        let conf = config(
            "w",
            "l",
            Ipv4Addr::new(10, 1, 1, 0),
            "198.18.0.2:3478".parse().unwrap(),
            Protocols::only("upnp").unwrap(),
            Path::new("/tmp/x"),
        );
        assert!(conf.contains("enable_upnp=yes\nenable_natpmp=no\n"));
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }
}
