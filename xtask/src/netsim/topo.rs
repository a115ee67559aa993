//! One simulated internet: namespaces, links, addresses, NAT routers, the shaper, the relay.
//!
//! ```text
//!                       inet: bridge br0, the public segment 198.18.0.0/15
//!      +-----------------+--------------+------------------+--------------------+
//!    relay            probe          site 1 (public)     site 2 (home)        site 3 (double NAT)
//!  198.18.0.2     198.18.0.3,.4,.5   host 198.18.1.1     router 198.18.2.1    cgnat 198.18.3.1
//!  relay + STUN   (self-test only)                          | 10.2.1.0/24        | 100.64.3.0/24
//!                                                         host 10.2.1.2        router 100.64.3.2
//!                                                                                | 10.3.1.0/24
//!                                                                              host 10.3.1.2
//! ```
//!
//! Each site's access link (between the box holding its public address and the bridge) is either a veth pair
//! or, when the topology is shaped, two TAP devices of the [`Shaper`]. The relay's and the probe server's
//! links are always veth pairs. Homes use `10.<site>.1.0/24` (distinct per site, so a peer trying the other
//! side's private address reaches nothing rather than itself), carrier-grade segments `100.64.<site>.0/24`.
//! Nothing has a default route on the public side: the internet is one flat on-link /15.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{
    nat::{self, RouterNat},
    shaper::{Dir, LinkParams, Shaper},
    sys::{self, NoLine, NsProcess, Pipes, Run, ip, ip_in},
    upnp::{self, Protocols},
};

mod relay;

/// The /24 of the extra link [`Topology::join_lan`] adds between two hosts.
pub(crate) const SHARED_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 0);
/// The relay's address.
pub(crate) const RELAY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The probe server's first address: STUN on 3478 (server A) and 3479 (A', same address, other port).
pub(crate) const PROBE_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// The probe server's second address: STUN on 3478 (server B).
pub(crate) const PROBE_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);
/// The probe server's third address, which peers never contact: it only sends reflected packets (D).
pub(crate) const PROBE_D: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 5);
/// The probe server's TCP sink port (on [`PROBE_A`]).
pub(crate) const PROBE_TCP_PORT: u16 = 5201;
/// STUN's port.
pub(crate) const STUN_PORT: u16 = 3478;

/// What sits between a peer and the internet.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    /// Nothing: the peer has a public address.
    Public,
    /// Endpoint-independent mapping and filtering (1:1 NAT, ports preserved).
    FullCone,
    /// Linux masquerade: endpoint-independent mapping, address-and-port-dependent filtering.
    Home,
    /// Endpoint-independent mapping, address-dependent filtering (an nftables map learned on outbound UDP).
    AddressRestricted,
    /// Endpoint-dependent mapping (`masquerade random,fully-random`).
    Symmetric,
    /// A carrier-grade NAT in front of a home router.
    DoubleNat,
    /// A home router that also maps ports on request: miniupnpd with UPnP IGD, NAT-PMP and PCP (see
    /// [`super::upnp`]).
    Upnp,
    /// A home router that drops all UDP: only the relay (over TCP) works.
    UdpBlocked,
}

impl Kind {
    /// Every kind, in report order.
    pub(crate) const ALL: [Kind; 8] = [
        Kind::Public,
        Kind::FullCone,
        Kind::Home,
        Kind::AddressRestricted,
        Kind::Symmetric,
        Kind::DoubleNat,
        Kind::Upnp,
        Kind::UdpBlocked,
    ];

    /// The name used on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Public => "public",
            Kind::FullCone => "full-cone",
            Kind::Home => "home",
            Kind::AddressRestricted => "address-restricted",
            Kind::Symmetric => "symmetric",
            Kind::DoubleNat => "double-nat",
            Kind::Upnp => "upnp",
            Kind::UdpBlocked => "udp-blocked",
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// One site per entry, numbered from 1.
    pub(crate) sites: Vec<Kind>,
    /// Start the probe server (STUN A/A'/B, reflect source D, TCP sink).
    pub(crate) probe_server: bool,
    /// Shape every access link with these parameters (both directions); `None`: plain veth links.
    pub(crate) shaping: Option<LinkParams>,
    /// Serve the relay over TLS with a self-signed certificate (else plain HTTP).
    pub(crate) relay_tls: bool,
    /// The `iroh-relay` binary.
    pub(crate) relay_bin: PathBuf,
    /// Seed of the shaper's loss decisions.
    pub(crate) seed: u64,
    /// What the routers of [`Kind::Upnp`] sites offer.
    pub(crate) portmap: Protocols,
}

/// One site: a peer and whatever NAT is in front of it.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    /// What it is.
    pub(crate) kind: Kind,
    /// Where the peer runs.
    pub(crate) host_ns: String,
    /// The peer's own address.
    pub(crate) host_ip: Ipv4Addr,
    /// The site's address on the internet (the peer's own for [`Kind::Public`]).
    pub(crate) public_ip: Ipv4Addr,
    /// The namespace holding `public_ip`: where faults are injected.
    pub(crate) edge_ns: String,
    /// The shaper link of the access link, when shaped.
    pub(crate) link: Option<String>,
    /// The access link's interfaces: (in `edge_ns`, in the internet namespace).
    pub(crate) access_ifs: (String, String),
}

static NEXT_TOPOLOGY: AtomicU32 = AtomicU32::new(1);

/// A built topology with its running relay (and probe server). Dropping it tears it down.
#[derive(Debug)]
pub(crate) struct Topology<'r> {
    run: &'r Run,
    tag: String,
    namespaces: Vec<String>,
    inet_ns: String,
    relay_ns: String,
    shaper: Option<Shaper>,
    relay: Option<NsProcess>,
    relay_starts: u32,
    relay_config: PathBuf,
    relay_bin: PathBuf,
    relay_tls: bool,
    probe: Option<NsProcess>,
    /// miniupnpd of each [`Kind::Upnp`] site, and what to start it with: (namespace, WAN, LAN, LAN net).
    miniupnpd: Vec<NsProcess>,
    upnp_routers: Vec<(String, String, String, Ipv4Addr)>,
    sites: Vec<Site>,
    /// Every interface on the public segment: (namespace, interface, its addresses).
    public_ifs: Vec<(String, String, Vec<Ipv4Addr>)>,
}

impl<'r> Topology<'r> {
    /// Builds `spec` and starts the relay (and the probe server); on error, what was built is torn down.
    pub(crate) fn build(run: &'r Run, spec: &Spec) -> Result<Self, String> {
        let tag = format!("t{}", NEXT_TOPOLOGY.fetch_add(1, Ordering::Relaxed));
        let mut topo = Topology {
            run,
            inet_ns: run.ns(&format!("{tag}-inet")),
            relay_ns: run.ns(&format!("{tag}-relay")),
            relay_config: run.dir().join(format!("{tag}-relay.toml")),
            tag,
            namespaces: Vec::new(),
            shaper: None,
            relay: None,
            relay_starts: 0,
            relay_bin: spec.relay_bin.clone(),
            relay_tls: spec.relay_tls,
            probe: None,
            miniupnpd: Vec::new(),
            upnp_routers: Vec::new(),
            sites: Vec::new(),
            public_ifs: Vec::new(),
        };
        topo.build_all(spec)?;
        Ok(topo)
    }

    fn build_all(&mut self, spec: &Spec) -> Result<(), String> {
        let inet = self.inet_ns.clone();
        self.add_ns(&inet, false)?;
        ip_in(&inet, &["link", "add", "br0", "type", "bridge"])?;
        ip_in(&inet, &["link", "set", "br0", "up"])?;
        let relay_ns = self.relay_ns.clone();
        self.add_ns(&relay_ns, false)?;
        let (relay_if, _) = self.veth_to_inet(&relay_ns, &[RELAY_IP])?;
        self.public_ifs
            .push((relay_ns.clone(), relay_if, vec![RELAY_IP]));
        // miniupnpd learns its external address from the probe server's STUN (which answers its RFC 3489
        // requests; the relay's refuses them).
        if spec.probe_server || spec.sites.contains(&Kind::Upnp) {
            let probe_ns = self.ns_name("probe");
            self.add_ns(&probe_ns, false)?;
            let (probe_if, _) = self.veth_to_inet(&probe_ns, &[PROBE_A, PROBE_B, PROBE_D])?;
            self.public_ifs
                .push((probe_ns.clone(), probe_if, vec![PROBE_A, PROBE_B, PROBE_D]));
            self.start_probe_server(&probe_ns)?;
        }
        if spec.shaping.is_some() {
            let shaper_ns = self.ns_name("shaper");
            self.add_ns(&shaper_ns, false)?;
            self.shaper = Some(Shaper::start(self.run, &shaper_ns, spec.seed)?);
        }
        for (i, kind) in spec.sites.iter().enumerate() {
            let index = u8::try_from(i + 1)
                .ok()
                .filter(|i| *i < 250)
                .ok_or("too many sites")?;
            let site = self.build_site(index, *kind, spec.shaping)?;
            self.public_ifs.push((
                site.edge_ns.clone(),
                site.access_ifs.0.clone(),
                vec![site.public_ip],
            ));
            self.sites.push(site);
        }
        self.resolve_neighbours()?;
        self.wait_links_up()?;
        self.start_relay()?;
        // Last: the routers are set up and the probe server answers STUN.
        for (ns, wan, lan, net) in self.upnp_routers.clone() {
            let stun = SocketAddrV4::new(PROBE_A, STUN_PORT);
            let process = upnp::start(self.run, &ns, (&wan, &lan, net), stun, spec.portmap)?;
            self.miniupnpd.push(process);
        }
        Ok(())
    }

    /// Makes every host on the public segment know every other one's MAC address for good. Routers on the
    /// internet resolved their neighbours long ago; here, a lost ARP request on a lossy access link would
    /// hold a peer's first packets back for the one-second ARP retry, an artifact no real peer sees.
    fn resolve_neighbours(&self) -> Result<(), String> {
        let mut macs = Vec::new();
        for (ns, dev, _) in &self.public_ifs {
            let json = ip_in(ns, &["-j", "link", "show", "dev", dev])?;
            let links: serde_json::Value =
                serde_json::from_str(&json).map_err(|e| format!("ip -j link show {dev}: {e}"))?;
            let mac = links[0]["address"]
                .as_str()
                .ok_or_else(|| format!("no MAC address for {dev} in {ns}: {json}"))?
                .to_owned();
            macs.push(mac);
        }
        for (ns, dev, _) in &self.public_ifs {
            for ((other_ns, _, ips), mac) in self.public_ifs.iter().zip(&macs) {
                if other_ns == ns {
                    continue;
                }
                for ip in ips {
                    ip_in(
                        ns,
                        &[
                            "neigh",
                            "replace",
                            &ip.to_string(),
                            "lladdr",
                            mac,
                            "dev",
                            dev,
                            "nud",
                            "permanent",
                        ],
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Waits until no interface of the topology is still coming up: the kernel reports a new link's
    /// carrier (`RUNNING`, operational state up) up to a second after it is set up, and a peer started
    /// before that would see its own network change a second later.
    fn wait_links_up(&self) -> Result<(), String> {
        Self::wait_links_up_in(&self.namespaces)
    }

    fn wait_links_up_in(namespaces: &[String]) -> Result<(), String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for ns in namespaces {
            loop {
                let json = ip_in(ns, &["-j", "link", "show"])?;
                let links: serde_json::Value =
                    serde_json::from_str(&json).map_err(|e| format!("ip -j link show: {e}"))?;
                let waiting: Vec<String> = links
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|link| link["ifname"] != "lo")
                    .filter(|link| {
                        let up = link["flags"]
                            .as_array()
                            .is_some_and(|flags| flags.iter().any(|f| f == "UP"));
                        let state = link["operstate"].as_str().unwrap_or("UNKNOWN");
                        up && !matches!(state, "UP" | "UNKNOWN")
                    })
                    .map(|link| link["ifname"].as_str().unwrap_or("?").to_owned())
                    .collect();
                if waiting.is_empty() {
                    break;
                }
                if std::time::Instant::now() >= deadline {
                    return Err(format!("interfaces {waiting:?} in {ns} did not come up"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    fn ns_name(&self, name: &str) -> String {
        self.run.ns(&format!("{}-{name}", self.tag))
    }

    fn add_ns(&mut self, ns: &str, forwarding: bool) -> Result<(), String> {
        self.namespaces.push(ns.to_owned());
        sys::add_netns(ns, forwarding)
    }

    /// A veth pair from `ns` to the bridge, with `addrs` (in the public /15) on the `ns` end.
    fn veth_to_inet(&self, ns: &str, addrs: &[Ipv4Addr]) -> Result<(String, String), String> {
        let (inner, outer) = self.run.link_names('v');
        ip(&[
            "link",
            "add",
            &inner,
            "netns",
            ns,
            "type",
            "veth",
            "peer",
            "name",
            &outer,
            "netns",
            &self.inet_ns,
        ])?;
        ip_in(
            &self.inet_ns,
            &["link", "set", &outer, "master", "br0", "up"],
        )?;
        for addr in addrs {
            ip_in(ns, &["addr", "add", &format!("{addr}/15"), "dev", &inner])?;
        }
        ip_in(ns, &["link", "set", &inner, "up"])?;
        Ok((inner, outer))
    }

    /// A shaped link from `ns` to the bridge: two TAP devices of the shaper, moved into place.
    fn tap_to_inet(
        &mut self,
        ns: &str,
        addr: Ipv4Addr,
        params: LinkParams,
    ) -> Result<(String, String), String> {
        let (inner, outer) = self.run.link_names('t');
        let inet = self.inet_ns.clone();
        let shaper = self.shaper.as_mut().ok_or("no shaper")?;
        shaper.attach(&inner, &inner, &outer)?;
        let shaper_ns = shaper.ns().to_owned();
        shaper.set(&inner, Dir::Both, params)?;
        ip_in(&shaper_ns, &["link", "set", &inner, "netns", ns])?;
        ip_in(&shaper_ns, &["link", "set", &outer, "netns", &inet])?;
        ip_in(&inet, &["link", "set", &outer, "master", "br0", "up"])?;
        ip_in(ns, &["addr", "add", &format!("{addr}/15"), "dev", &inner])?;
        ip_in(ns, &["link", "set", &inner, "up"])?;
        Ok((inner, outer))
    }

    /// A veth pair between two namespaces with one /24 address on each end.
    fn veth_between(
        &self,
        a: (&str, Ipv4Addr),
        b: (&str, Ipv4Addr),
    ) -> Result<(String, String), String> {
        let (if_a, if_b) = self.run.link_names('v');
        ip(&[
            "link", "add", &if_a, "netns", a.0, "type", "veth", "peer", "name", &if_b, "netns", b.0,
        ])?;
        for ((ns, addr), name) in [(a, &if_a), (b, &if_b)] {
            ip_in(ns, &["addr", "add", &format!("{addr}/24"), "dev", name])?;
            ip_in(ns, &["link", "set", name, "up"])?;
        }
        Ok((if_a, if_b))
    }

    fn build_site(
        &mut self,
        i: u8,
        kind: Kind,
        shaping: Option<LinkParams>,
    ) -> Result<Site, String> {
        let public_ip = Ipv4Addr::new(198, 18, i, 1);
        let host_ns = self.ns_name(&format!("s{i}-host"));
        let lan_router = Ipv4Addr::new(10, i, 1, 1);
        let lan_host = Ipv4Addr::new(10, i, 1, 2);
        // The namespace at the edge of the site, which gets the access link.
        let edge_ns = match kind {
            Kind::Public => host_ns.clone(),
            Kind::DoubleNat => self.ns_name(&format!("s{i}-cgnat")),
            _ => self.ns_name(&format!("s{i}-router")),
        };
        self.add_ns(&edge_ns, kind != Kind::Public)?;
        let access_ifs = match shaping {
            Some(params) => self.tap_to_inet(&edge_ns, public_ip, params)?,
            None => self.veth_to_inet(&edge_ns, &[public_ip])?,
        };
        let link = shaping.map(|_| access_ifs.0.clone());
        let wan = access_ifs.0.clone();
        let host_ip = match kind {
            Kind::Public => public_ip,
            Kind::DoubleNat => {
                let router_ns = self.ns_name(&format!("s{i}-router"));
                self.add_ns(&router_ns, true)?;
                self.add_ns(&host_ns, false)?;
                let cgn_outer = Ipv4Addr::new(100, 64, i, 1);
                let cgn_inner = Ipv4Addr::new(100, 64, i, 2);
                let (cgn_lan, router_wan) =
                    self.veth_between((&edge_ns, cgn_outer), (&router_ns, cgn_inner))?;
                ip_in(
                    &router_ns,
                    &["route", "add", "default", "via", &cgn_outer.to_string()],
                )?;
                let (router_lan, _) =
                    self.veth_between((&router_ns, lan_router), (&host_ns, lan_host))?;
                ip_in(
                    &host_ns,
                    &["route", "add", "default", "via", &lan_router.to_string()],
                )?;
                self.load_rules(&edge_ns, RouterNat::Masquerade, &wan, &cgn_lan)?;
                self.load_rules(&router_ns, RouterNat::Masquerade, &router_wan, &router_lan)?;
                lan_host
            }
            _ => {
                self.add_ns(&host_ns, false)?;
                let (router_lan, _) =
                    self.veth_between((&edge_ns, lan_router), (&host_ns, lan_host))?;
                ip_in(
                    &host_ns,
                    &["route", "add", "default", "via", &lan_router.to_string()],
                )?;
                let nat = match kind {
                    Kind::FullCone => RouterNat::FullCone {
                        wan_ip: public_ip,
                        host: lan_host,
                    },
                    Kind::Symmetric => RouterNat::Symmetric,
                    Kind::AddressRestricted => RouterNat::AddressRestricted,
                    Kind::UdpBlocked => RouterNat::MasqueradeNoUdp,
                    Kind::Upnp => RouterNat::PortMapping,
                    _ => RouterNat::Masquerade,
                };
                self.load_rules(&edge_ns, nat, &wan, &router_lan)?;
                if kind == Kind::Upnp {
                    self.upnp_routers.push((
                        edge_ns.clone(),
                        wan.clone(),
                        router_lan.clone(),
                        Ipv4Addr::new(10, i, 1, 0),
                    ));
                }
                lan_host
            }
        };
        Ok(Site {
            kind,
            host_ns,
            host_ip,
            public_ip,
            edge_ns,
            link,
            access_ifs,
        })
    }

    fn load_rules(&self, ns: &str, nat: RouterNat, wan: &str, lan: &str) -> Result<(), String> {
        let file = self.run.dir().join(format!("{ns}.nft"));
        sys::nft_load(ns, &nat::router_ruleset(nat, wan, lan), &file)
    }

    fn start_probe_server(&mut self, ns: &str) -> Result<(), String> {
        let mut args = vec!["netsim-probe".to_owned(), "serve".to_owned()];
        for udp in [
            SocketAddrV4::new(PROBE_A, STUN_PORT),
            SocketAddrV4::new(PROBE_A, STUN_PORT + 1),
            SocketAddrV4::new(PROBE_B, STUN_PORT),
            SocketAddrV4::new(PROBE_D, STUN_PORT),
        ] {
            args.extend(["--udp".to_owned(), udp.to_string()]);
        }
        args.extend([
            "--tcp".to_owned(),
            SocketAddrV4::new(PROBE_A, PROBE_TCP_PORT).to_string(),
        ]);
        let mut probe = NsProcess::spawn(
            "probe-server",
            ns,
            &self_exe()?,
            &args,
            &self.run.dir().join(format!("{ns}.log")),
            Pipes {
                stdin: true,
                stdout: true,
            },
        )?;
        match probe.next_line(Duration::from_secs(10)) {
            Ok(line) if line == "ready" => {}
            other => {
                return Err(format!(
                    "the probe server did not start ({other:?}):\n{}",
                    probe.log_tail(10)
                ));
            }
        }
        self.probe = Some(probe);
        Ok(())
    }

    /// The sites, in spec order.
    pub(crate) fn sites(&self) -> &[Site] {
        &self.sites
    }

    /// Site `i` (0-based, spec order).
    pub(crate) fn site(&self, i: usize) -> Result<&Site, String> {
        self.sites.get(i).ok_or_else(|| format!("no site {i}"))
    }

    /// Changes the shaping of site `i`'s access link (`Dir::Ab` is from the site to the internet).
    pub(crate) fn shape(&mut self, i: usize, dir: Dir, params: LinkParams) -> Result<(), String> {
        let link = self
            .site(i)?
            .link
            .clone()
            .ok_or("this topology's links are not shaped")?;
        self.shaper
            .as_mut()
            .ok_or("no shaper")?
            .set(&link, dir, params)
    }

    /// The shaper's frame counters of site `i`'s access link.
    pub(crate) fn shaper_stats(
        &mut self,
        i: usize,
    ) -> Result<(super::shaper::DirStats, super::shaper::DirStats), String> {
        let link = self.site(i)?.link.clone().ok_or("not shaped")?;
        self.shaper.as_mut().ok_or("no shaper")?.stats(&link)
    }

    /// Limits site `i`'s access link to `mbit` Mbit/s in both directions (kernel `tbf` on both ends), with a
    /// queue of `queue_ms` milliseconds at that rate in front of it (`tbf`'s `latency`: a router's buffer).
    pub(crate) fn limit_rate(&self, i: usize, mbit: u32, queue_ms: u32) -> Result<(), String> {
        let site = self.site(i)?;
        for (ns, dev) in [
            (&site.edge_ns, &site.access_ifs.0),
            (&self.inet_ns, &site.access_ifs.1),
        ] {
            sys::exec_in(
                ns,
                "tc",
                &[
                    "qdisc",
                    "replace",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    &format!("{mbit}mbit"),
                    "burst",
                    "64kb",
                    "latency",
                    &format!("{queue_ms}ms"),
                ],
            )?;
        }
        Ok(())
    }

    /// Drops all traffic between site `i` and `other` (another site's public address) at site `i`'s edge.
    pub(crate) fn drop_peer(&self, i: usize, other: Ipv4Addr) -> Result<(), String> {
        let site = self.site(i)?;
        let on_router = site.kind != Kind::Public;
        let file = self.run.dir().join(format!("{}-fault.nft", site.edge_ns));
        sys::nft_load(
            &site.edge_ns,
            &nat::drop_peer_ruleset(other, on_router),
            &file,
        )
    }

    /// Lifts [`Topology::drop_peer`].
    pub(crate) fn lift_drop(&self, i: usize) -> Result<(), String> {
        let site = self.site(i)?;
        let file = self.run.dir().join(format!("{}-lift.nft", site.edge_ns));
        sys::nft_load(&site.edge_ns, &nat::lift_fault_ruleset(), &file)
    }

    /// Joins the hosts of sites `i` and `j` by one more link, as if both were on one LAN as well:
    /// [`SHARED_LAN`]`.1` and `.2`, no shaping, multicast on (what local discovery finds). Returns the
    /// two addresses.
    pub(crate) fn join_lan(&self, i: usize, j: usize) -> Result<(Ipv4Addr, Ipv4Addr), String> {
        let [a, b, c, _] = SHARED_LAN.octets();
        let (ip_i, ip_j) = (Ipv4Addr::new(a, b, c, 1), Ipv4Addr::new(a, b, c, 2));
        let (ns_i, ns_j) = (self.site(i)?.host_ns.clone(), self.site(j)?.host_ns.clone());
        self.veth_between((ns_i.as_str(), ip_i), (ns_j.as_str(), ip_j))?;
        Self::wait_links_up_in(&[ns_i, ns_j])?;
        Ok((ip_i, ip_j))
    }

    /// The run this topology belongs to.
    pub(crate) fn run(&self) -> &'r Run {
        self.run
    }
}

impl Drop for Topology<'_> {
    fn drop(&mut self) {
        self.relay = None;
        self.probe = None;
        self.shaper = None;
        for ns in self.namespaces.iter().rev() {
            if let Ok(pids) = ip(&["netns", "pids", ns]) {
                for pid in pids.split_whitespace() {
                    let _ = sys::run_cmd("kill", &["-KILL", pid]);
                }
            }
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("netsim teardown: {e}");
            }
        }
    }
}

/// This program, for running its helpers inside namespaces: `/proc/<our pid>/exe`, which executes the very
/// binary this process runs even after a rebuild replaced the file on disk (a `cargo build` during a run).
pub(crate) fn self_exe() -> Result<PathBuf, String> {
    let proc_exe = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
    if proc_exe.exists() {
        Ok(proc_exe)
    } else {
        std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))
    }
}

/// Runs `xtask netsim-probe ARGS` inside `ns` and returns its output.
pub(crate) fn probe_cmd(ns: &str, args: &[&str]) -> Result<String, String> {
    let exe = self_exe()?;
    let exe = exe.display().to_string();
    let mut all = vec!["netsim-probe"];
    all.extend_from_slice(args);
    sys::exec_in(ns, &exe, &all)
}

/// Runs a probe inside `ns` and parses its JSON output.
pub(crate) fn probe_json<T: serde::de::DeserializeOwned>(
    ns: &str,
    args: &[&str],
) -> Result<T, String> {
    let out = probe_cmd(ns, args)?;
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("probe output {line:?}: {e}"))
}

/// Starts a probe in `ns` without waiting (for probes that run side by side); read it with
/// [`wait_probe_json`].
pub(crate) fn spawn_probe(
    run: &Run,
    ns: &str,
    args: &[String],
    log_name: &str,
) -> Result<NsProcess, String> {
    let mut all = vec!["netsim-probe".to_owned()];
    all.extend_from_slice(args);
    NsProcess::spawn(
        log_name,
        ns,
        &self_exe()?,
        &all,
        &run.dir().join(format!("{log_name}.log")),
        Pipes {
            stdin: false,
            stdout: true,
        },
    )
}

/// The JSON line of a probe started with [`spawn_probe`].
pub(crate) fn wait_probe_json<T: serde::de::DeserializeOwned>(
    probe: &mut NsProcess,
    timeout: Duration,
) -> Result<T, String> {
    match probe.next_line(timeout) {
        Ok(line) => serde_json::from_str(&line).map_err(|e| format!("probe output {line:?}: {e}")),
        Err(NoLine::Timeout) => Err(format!("probe gave no answer within {timeout:?}")),
        Err(NoLine::Closed) => Err(format!("probe failed:\n{}", probe.log_tail(10))),
    }
}
