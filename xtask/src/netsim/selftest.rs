//! `cargo xtask netsim --self-test`: proves the simulated internet is what it claims, before any peer
//! program runs on it. Any mismatch is a hard failure with a message saying what was expected and seen.
//!
//! 1. NAT behaviour, per kind, with STUN from inside each peer ([`classify`]). From one UDP socket the peer
//!    asks three STUN servers at different addresses (the relay 198.18.0.2:3478, probe A 198.18.0.3:3478,
//!    probe B 198.18.0.4:3478): the mapping is endpoint-independent when all three saw the same ip:port,
//!    endpoint-dependent when they differ, absent when the mapped address is the peer's own. Then it asks A
//!    to reflect: A answers from itself, from A' (same address, port 3479, never contacted) and from D
//!    (198.18.0.5, an address never contacted). Filtering is endpoint-independent when A' and D get in,
//!    address-dependent when only A' does, address-and-port-dependent when neither does. UDP-blocked: every
//!    STUN query fails. For all kinds, a TCP connection to the relay must work.
//! 2. The shaper, measured ([`super::measure`]): added latency, configured delay, loss, throughput.
//! 3. The fault machinery: the drop rule on a router and on a public host stops traffic between two sites and
//!    lifting it restores it; killing the relay stops it and a restart brings it back.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use serde::Serialize;

use super::{
    measure::{self, ShaperFigures},
    probe::{EchoReport, NatReport},
    shaper::LinkParams,
    sys::{NsProcess, Pipes, Run},
    topo::{
        Kind, PROBE_A, PROBE_B, PROBE_D, STUN_PORT, Spec, Topology, probe_json, self_exe,
        spawn_probe, wait_probe_json,
    },
};

/// How the public mapping is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mapping {
    /// No translation: the servers saw the peer's own address.
    None,
    /// The same mapping towards every server, with the local port kept.
    EndpointIndependentPortPreserved,
    /// The same mapping towards every server.
    EndpointIndependent,
    /// A different mapping per server.
    EndpointDependent,
    /// No STUN server answered.
    NoUdp,
    /// Some servers answered and some did not.
    Inconsistent,
}

/// Which unsolicited packets reach the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Filtering {
    /// From anyone.
    EndpointIndependent,
    /// From addresses the peer sent to.
    AddressDependent,
    /// Only from the exact ip:port the peer sent to.
    AddressAndPortDependent,
    /// No UDP at all.
    NoUdp,
    /// The test was inconclusive.
    Unknown,
}

impl Mapping {
    fn text(self) -> &'static str {
        match self {
            Mapping::None => "none (public address)",
            Mapping::EndpointIndependentPortPreserved => "endpoint-independent, port kept",
            Mapping::EndpointIndependent => "endpoint-independent",
            Mapping::EndpointDependent => "endpoint-dependent",
            Mapping::NoUdp => "no UDP",
            Mapping::Inconsistent => "inconsistent",
        }
    }
}

impl Filtering {
    fn text(self) -> &'static str {
        match self {
            Filtering::EndpointIndependent => "endpoint-independent",
            Filtering::AddressDependent => "address-dependent",
            Filtering::AddressAndPortDependent => "address-and-port-dependent",
            Filtering::NoUdp => "no UDP",
            Filtering::Unknown => "unknown",
        }
    }
}

/// Whether `kind` may show `mapping`.
fn mapping_ok(kind: Kind, mapping: Mapping) -> bool {
    match kind {
        Kind::Public => mapping == Mapping::None,
        Kind::FullCone => mapping == Mapping::EndpointIndependentPortPreserved,
        Kind::Home | Kind::DoubleNat | Kind::AddressRestricted | Kind::Upnp => matches!(
            mapping,
            Mapping::EndpointIndependent | Mapping::EndpointIndependentPortPreserved
        ),
        Kind::Symmetric => mapping == Mapping::EndpointDependent,
        Kind::UdpBlocked => mapping == Mapping::NoUdp,
    }
}

/// The filtering `kind` must show.
fn expected_filtering(kind: Kind) -> Filtering {
    match kind {
        Kind::Public | Kind::FullCone => Filtering::EndpointIndependent,
        // A port-mapping router filters like a home router until something asks it for a mapping.
        Kind::Home | Kind::DoubleNat | Kind::Symmetric | Kind::Upnp => {
            Filtering::AddressAndPortDependent
        }
        Kind::AddressRestricted => Filtering::AddressDependent,
        Kind::UdpBlocked => Filtering::NoUdp,
    }
}

/// The address one STUN server saw.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct MappedBy {
    /// The server.
    pub(crate) server: SocketAddr,
    /// What it saw (`None`: no answer).
    pub(crate) mapped: Option<SocketAddr>,
}

/// The verdict on one kind.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NatCheck {
    /// The kind.
    pub(crate) kind: Kind,
    /// The peer's own address and the probe's local port.
    pub(crate) local: SocketAddr,
    /// The site's public address.
    pub(crate) public_ip: Ipv4Addr,
    /// What each STUN server saw.
    pub(crate) mapped: Vec<MappedBy>,
    /// Where reflected packets came from.
    pub(crate) reflected_from: Vec<SocketAddr>,
    /// The mapping observed.
    pub(crate) mapping: Mapping,
    /// The filtering observed.
    pub(crate) filtering: Filtering,
    /// The filtering the kind must have.
    pub(crate) expected_filtering: Filtering,
    /// Whether TCP to the relay worked.
    pub(crate) relay_tcp_ok: bool,
    /// What is wrong (empty: the kind behaves as it must).
    pub(crate) problems: Vec<String>,
}

/// Judges a `nat` probe report of a peer of `kind` at `host_ip` behind `public_ip`.
pub(crate) fn classify(
    kind: Kind,
    host_ip: Ipv4Addr,
    public_ip: Ipv4Addr,
    report: &NatReport,
) -> NatCheck {
    let mut problems = Vec::new();
    let local = SocketAddr::from((host_ip, report.local_port));
    let mapped: Vec<(SocketAddr, Option<SocketAddr>)> =
        report.stun.iter().map(|s| (s.server, s.mapped)).collect();
    let answers: Vec<SocketAddr> = mapped.iter().filter_map(|(_, m)| *m).collect();
    let mapping = if answers.is_empty() {
        Mapping::NoUdp
    } else if answers.len() < mapped.len() {
        for s in report.stun.iter().filter(|s| s.mapped.is_none()) {
            problems.push(format!(
                "STUN server {} did not answer ({}) while others did",
                s.server,
                s.error.as_deref().unwrap_or("no error given")
            ));
        }
        Mapping::Inconsistent
    } else if answers.iter().all(|a| *a == answers[0]) {
        if answers[0] == local && host_ip == public_ip {
            Mapping::None
        } else if answers[0].port() == report.local_port {
            Mapping::EndpointIndependentPortPreserved
        } else {
            Mapping::EndpointIndependent
        }
    } else {
        Mapping::EndpointDependent
    };
    for addr in &answers {
        if addr.ip() != public_ip {
            problems.push(format!(
                "a STUN server saw {addr}, not the site's public address {public_ip}"
            ));
        }
    }
    let from = |ip: Ipv4Addr, port: u16| {
        report
            .reflected_from
            .contains(&SocketAddr::from((ip, port)))
    };
    let filtering = if mapping == Mapping::NoUdp {
        Filtering::NoUdp
    } else if !from(PROBE_A, STUN_PORT) {
        problems.push(
            "no reflected packet came back even from the server asked (A), so filtering is unknown"
                .into(),
        );
        Filtering::Unknown
    } else {
        match (from(PROBE_A, STUN_PORT + 1), from(PROBE_D, STUN_PORT)) {
            (true, true) => Filtering::EndpointIndependent,
            (true, false) => Filtering::AddressDependent,
            (false, false) => Filtering::AddressAndPortDependent,
            (false, true) => Filtering::Unknown,
        }
    };
    if !mapping_ok(kind, mapping) {
        problems.push(format!(
            "{} must not have mapping \"{}\" (STUN answers: {})",
            kind.name(),
            mapping.text(),
            describe_mapped(&mapped)
        ));
    }
    if filtering != expected_filtering(kind) {
        problems.push(format!(
            "{} must have filtering \"{}\", observed \"{}\" (reflected packets arrived from: {:?})",
            kind.name(),
            expected_filtering(kind).text(),
            filtering.text(),
            report.reflected_from
        ));
    }
    if !report.relay_tcp_ok {
        problems.push(format!(
            "TCP to the relay failed: {}",
            report.relay_tcp_error.as_deref().unwrap_or("?")
        ));
    }
    NatCheck {
        kind,
        local,
        public_ip,
        mapped: mapped
            .iter()
            .map(|(server, mapped)| MappedBy {
                server: *server,
                mapped: *mapped,
            })
            .collect(),
        reflected_from: report.reflected_from.clone(),
        mapping,
        filtering,
        expected_filtering: expected_filtering(kind),
        relay_tcp_ok: report.relay_tcp_ok,
        problems,
    }
}

fn describe_mapped(mapped: &[(SocketAddr, Option<SocketAddr>)]) -> String {
    mapped
        .iter()
        .map(|(server, m)| match m {
            Some(m) => format!("{server} saw {m}"),
            None => format!("{server}: none"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One check of the fault machinery.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MachineryCheck {
    /// What was checked.
    pub(crate) name: String,
    /// Whether it behaved.
    pub(crate) ok: bool,
    /// What was seen.
    pub(crate) detail: String,
}

/// Everything the self-test found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SelfTestReport {
    /// Per NAT kind.
    pub(crate) nat: Vec<NatCheck>,
    /// The shaper's figures.
    pub(crate) shaper: ShaperFigures,
    /// The fault machinery.
    pub(crate) machinery: Vec<MachineryCheck>,
    /// Seconds the self-test took.
    pub(crate) secs: f64,
}

impl SelfTestReport {
    /// Every problem found, one line each.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .nat
            .iter()
            .flat_map(|c| {
                c.problems
                    .iter()
                    .map(move |p| format!("{}: {p}", c.kind.name()))
            })
            .collect();
        all.extend(self.shaper.problems.iter().map(|p| format!("shaper: {p}")));
        all.extend(
            self.machinery
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("fault machinery: {}: {}", c.name, c.detail)),
        );
        all
    }

    /// The report as markdown.
    pub(crate) fn markdown(&self) -> String {
        let mut md = String::from(
            "### NAT kinds (STUN from one socket to the relay, A and B; reflection from A, A' and D)\n\n\
             | kind | peer | mapped (relay / A / B) | mapping | filtering | TCP to relay | verdict |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for c in &self.nat {
            let mapped: Vec<String> = c
                .mapped
                .iter()
                .map(|m| m.mapped.map_or_else(|| "-".to_owned(), |m| m.to_string()))
                .collect();
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                c.kind.name(),
                c.local,
                mapped.join(" / "),
                c.mapping.text(),
                c.filtering.text(),
                if c.relay_tcp_ok { "ok" } else { "FAILED" },
                if c.problems.is_empty() { "ok" } else { "FAIL" }
            ));
        }
        md.push('\n');
        md.push_str(&self.shaper.markdown());
        md.push_str("\n### Fault machinery\n\n| check | result | seen |\n|---|---|---|\n");
        for c in &self.machinery {
            md.push_str(&format!(
                "| {} | {} | {} |\n",
                c.name,
                if c.ok { "ok" } else { "FAIL" },
                c.detail
            ));
        }
        md
    }
}

/// Runs the self-test on a topology with one site of every kind, shaped links (no impairment unless
/// measuring) and the probe server.
pub(crate) fn run(
    run: &Run,
    relay_bin: &std::path::Path,
    relay_tls: bool,
    seed: u64,
) -> Result<SelfTestReport, String> {
    let started = std::time::Instant::now();
    let spec = Spec {
        sites: Kind::ALL.to_vec(),
        probe_server: true,
        shaping: Some(LinkParams::default()),
        relay_tls,
        relay_bin: relay_bin.to_path_buf(),
        seed,
        portmap: super::upnp::Protocols::ALL,
    };
    println!("self-test: building a topology with one site of each kind");
    let mut topo = Topology::build(run, &spec)?;

    println!("self-test: NAT probes from every site");
    let nat = nat_checks(run, &topo)?;

    println!("self-test: measuring the shaper");
    let public = index_of(&topo, Kind::Public)?;
    let shaper = measure::shaper_figures(&mut topo, public)?;

    println!("self-test: fault machinery");
    let machinery = machinery_checks(&mut topo)?;
    Ok(SelfTestReport {
        nat,
        shaper,
        machinery,
        secs: started.elapsed().as_secs_f64(),
    })
}

fn index_of(topo: &Topology<'_>, kind: Kind) -> Result<usize, String> {
    topo.sites()
        .iter()
        .position(|s| s.kind == kind)
        .ok_or_else(|| format!("no {} site", kind.name()))
}

fn nat_checks(run: &Run, topo: &Topology<'_>) -> Result<Vec<NatCheck>, String> {
    let servers = [
        topo.relay_stun(),
        SocketAddr::from((PROBE_A, STUN_PORT)),
        SocketAddr::from((PROBE_B, STUN_PORT)),
    ];
    let mut probes = Vec::new();
    for site in topo.sites() {
        let mut args = vec!["nat".to_owned()];
        for server in servers {
            args.extend(["--stun".to_owned(), server.to_string()]);
        }
        args.extend([
            "--reflect".to_owned(),
            servers[1].to_string(),
            "--relay-tcp".to_owned(),
            topo.relay_tcp().to_string(),
        ]);
        let name = format!("selftest-nat-{}", site.kind.name());
        probes.push((site, spawn_probe(run, &site.host_ns, &args, &name)?));
    }
    let mut checks = Vec::new();
    for (site, mut probe) in probes {
        let report: NatReport = wait_probe_json(&mut probe, Duration::from_secs(20))
            .map_err(|e| format!("NAT probe in the {} site: {e}", site.kind.name()))?;
        checks.push(classify(site.kind, site.host_ip, site.public_ip, &report));
    }
    Ok(checks)
}

/// A short echo: how many of 20 datagrams came back.
fn echo_count(ns: &str, to: SocketAddr) -> Result<u32, String> {
    let report: EchoReport = probe_json(
        ns,
        &[
            "echo",
            "--to",
            &to.to_string(),
            "--count",
            "20",
            "--interval-us",
            "5000",
            "--linger-ms",
            "300",
        ],
    )?;
    Ok(report.received)
}

fn machinery_checks(topo: &mut Topology<'_>) -> Result<Vec<MachineryCheck>, String> {
    let public = index_of(topo, Kind::Public)?;
    let cone = index_of(topo, Kind::FullCone)?;
    let (public_site, cone_site) = (topo.site(public)?.clone(), topo.site(cone)?.clone());
    // An echo server behind the full-cone router, reached through its public address.
    let mut server = NsProcess::spawn(
        "echo-server",
        &cone_site.host_ns,
        &self_exe()?,
        &[
            "netsim-probe".to_owned(),
            "serve".to_owned(),
            "--udp".to_owned(),
            SocketAddr::from((cone_site.host_ip, 4000)).to_string(),
        ],
        &topo.run().dir().join("selftest-echo-server.log"),
        Pipes {
            stdin: true,
            stdout: true,
        },
    )?;
    server
        .next_line(Duration::from_secs(10))
        .map_err(|e| format!("echo server did not start: {e:?}"))?;
    let target = SocketAddr::from((cone_site.public_ip, 4000));
    let mut checks = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| {
        checks.push(MachineryCheck {
            name: name.to_owned(),
            ok,
            detail,
        });
    };
    let n = echo_count(&public_site.host_ns, target)?;
    check(
        "echo public -> full cone",
        n >= 15,
        format!("{n}/20 echoes"),
    );
    for (name, at, other) in [
        ("drop rule on a router", cone, public_site.public_ip),
        ("drop rule on a public host", public, cone_site.public_ip),
    ] {
        topo.drop_peer(at, other)?;
        let blocked = echo_count(&public_site.host_ns, target)?;
        topo.lift_drop(at)?;
        let restored = echo_count(&public_site.host_ns, target)?;
        check(
            name,
            blocked == 0 && restored >= 15,
            format!("{blocked}/20 echoes with the rule, {restored}/20 after lifting it"),
        );
    }
    drop(server);

    let relay = topo.relay_tcp().to_string();
    topo.kill_relay();
    let down = super::topo::probe_cmd(
        &public_site.host_ns,
        &["wait-tcp", "--to", &relay, "--timeout-ms", "300"],
    )
    .is_err();
    topo.start_relay()?;
    let stun: NatReport = probe_json(
        &public_site.host_ns,
        &[
            "nat",
            "--stun",
            &topo.relay_stun().to_string(),
            "--reflect",
            &SocketAddr::from((PROBE_A, STUN_PORT)).to_string(),
            "--relay-tcp",
            &relay,
        ],
    )?;
    let back = stun.relay_tcp_ok && stun.stun.iter().all(|s| s.mapped.is_some());
    check(
        "relay kill and restart",
        down && back,
        format!(
            "TCP to the killed relay {}; after the restart TCP {} and STUN {}",
            if down { "refused" } else { "STILL WORKED" },
            if stun.relay_tcp_ok { "works" } else { "FAILS" },
            if back { "answers" } else { "does not answer" }
        ),
    );
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netsim::probe::StunResult;

    fn report(mapped: &[Option<&str>], reflected: &[&str], tcp: bool) -> NatReport {
        let servers = ["198.18.0.2:3478", "198.18.0.3:3478", "198.18.0.4:3478"];
        NatReport {
            local_port: 40000,
            stun: mapped
                .iter()
                .zip(servers)
                .map(|(m, s)| StunResult {
                    server: s.parse().expect("addr"),
                    mapped: m.map(|m| m.parse().expect("addr")),
                    error: m.is_none().then(|| "timed out".to_owned()),
                })
                .collect(),
            reflected_from: reflected.iter().map(|r| r.parse().expect("addr")).collect(),
            relay_tcp_ok: tcp,
            relay_tcp_error: (!tcp).then(|| "refused".to_owned()),
        }
    }

    const ALL_REFLECTED: [&str; 4] = [
        "198.18.0.3:3478",
        "198.18.0.3:3479",
        "198.18.0.4:3478",
        "198.18.0.5:3478",
    ];
    const WAN: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 1);
    const HOST: Ipv4Addr = Ipv4Addr::new(10, 3, 1, 2);

    #[test]
    fn kinds_that_behave_pass() {
        let m = Some("198.18.3.1:40000");
        let public = classify(
            Kind::Public,
            WAN,
            WAN,
            &report(&[m, m, m], &ALL_REFLECTED, true),
        );
        assert_eq!(public.mapping, Mapping::None);
        assert!(public.problems.is_empty(), "{:?}", public.problems);
        let cone = classify(
            Kind::FullCone,
            HOST,
            WAN,
            &report(&[m, m, m], &ALL_REFLECTED, true),
        );
        assert_eq!(cone.filtering, Filtering::EndpointIndependent);
        assert!(cone.problems.is_empty(), "{:?}", cone.problems);
        let home = classify(
            Kind::Home,
            HOST,
            WAN,
            &report(&[m, m, m], &["198.18.0.3:3478"], true),
        );
        assert_eq!(home.filtering, Filtering::AddressAndPortDependent);
        assert!(home.problems.is_empty(), "{:?}", home.problems);
        let sym = classify(
            Kind::Symmetric,
            HOST,
            WAN,
            &report(
                &[
                    Some("198.18.3.1:1111"),
                    Some("198.18.3.1:2222"),
                    Some("198.18.3.1:3333"),
                ],
                &["198.18.0.3:3478"],
                true,
            ),
        );
        assert_eq!(sym.mapping, Mapping::EndpointDependent);
        assert!(sym.problems.is_empty(), "{:?}", sym.problems);
        let blocked = classify(
            Kind::UdpBlocked,
            HOST,
            WAN,
            &report(&[None, None, None], &[], true),
        );
        assert_eq!(blocked.mapping, Mapping::NoUdp);
        assert!(blocked.problems.is_empty(), "{:?}", blocked.problems);
    }

    #[test]
    fn misbehaving_kinds_fail_with_reasons() {
        let m = Some("198.18.3.1:40000");
        // A "full cone" that filters is wrong.
        let cone = classify(
            Kind::FullCone,
            HOST,
            WAN,
            &report(&[m, m, m], &["198.18.0.3:3478"], true),
        );
        assert!(cone.problems.iter().any(|p| p.contains("filtering")));
        // A "symmetric" NAT that keeps one mapping is wrong.
        let sym = classify(
            Kind::Symmetric,
            HOST,
            WAN,
            &report(&[m, m, m], &["198.18.0.3:3478"], true),
        );
        assert!(sym.problems.iter().any(|p| p.contains("mapping")));
        // UDP that gets through a UDP-blocked router is wrong, and so is a dead relay.
        let blocked = classify(Kind::UdpBlocked, HOST, WAN, &report(&[m, m, m], &[], false));
        assert!(blocked.problems.len() >= 2, "{:?}", blocked.problems);
        // A wrong public address is named.
        let elsewhere = Some("198.18.9.1:40000");
        let home = classify(
            Kind::Home,
            HOST,
            WAN,
            &report(&[elsewhere; 3], &["198.18.0.3:3478"], true),
        );
        assert!(
            home.problems
                .iter()
                .any(|p| p.contains("not the site's public address"))
        );
        // Half-answered STUN is inconsistent.
        let half = classify(
            Kind::Home,
            HOST,
            WAN,
            &report(&[m, None, m], &["198.18.0.3:3478"], true),
        );
        assert_eq!(half.mapping, Mapping::Inconsistent);
        assert!(!half.problems.is_empty());
    }
}
