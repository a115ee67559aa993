//! The multicast DNS messages of our service (RFC 6762 and 6763), over `simple-dns`'s codec: building
//! our answers and queries, and reading what other nodes send into the few facts we keep.
//!
//! Names (case-insensitive, as DNS names are):
//! - service `_iroh._udp.local`, and `_services._dns-sd._udp.local` pointing to it (service enumeration,
//!   RFC 6763 §9, what `avahi-browse -a` asks);
//! - instance `<z32 NodeId>._iroh._udp.local`: SRV (port, host) and TXT (`relay=`, `a0=`, ...);
//! - host `<z32 NodeId>.local`: A and AAAA.
//!
//! Parsing never panics and never allocates more than the packet's size suggests: a packet is read into
//! at most [`MAX_PEERS_PER_PACKET`] peers' facts, anything else in it ignored.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use iroh_base::{NodeId, RelayUrl};
use simple_dns::{
    CLASS, Name, OPCODE, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, ResourceRecord, TYPE,
    rdata::{A, AAAA, PTR, RData, SRV, TXT},
};

use super::{TxtError, decode_txt, encode_txt};

/// The service's name.
pub const SERVICE: &str = "_iroh._udp.local";
/// The DNS-SD service enumeration name.
pub const SERVICES_ENUM: &str = "_services._dns-sd._udp.local";
/// TTL of PTR and TXT records (RFC 6762 §10: 75 minutes for records not tied to a host name).
pub const PTR_TTL: u32 = 4500;
/// TTL of SRV, A and AAAA records (RFC 6762 §10: 120 s for records tied to a host name).
pub const HOST_TTL: u32 = 120;
/// The TTL cap of answers to legacy unicast queries (RFC 6762 §6.7).
pub const LEGACY_TTL: u32 = 10;
/// The most peers one received packet is read into.
pub const MAX_PEERS_PER_PACKET: usize = 64;
/// The largest packet we build (RFC 6762 §17: fit the link's MTU; 1,440 leaves room for IPv6 headers).
pub const MAX_PACKET: usize = 1440;

/// Which of our record sets a response carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sets {
    /// PTR `_iroh._udp.local` -> our instance (shared).
    pub ptr: bool,
    /// SRV and TXT of our instance (unique).
    pub instance: bool,
    /// A and AAAA of our host name (unique).
    pub host: bool,
    /// PTR `_services._dns-sd._udp.local` -> `_iroh._udp.local` (shared).
    pub enumerate: bool,
}

impl Sets {
    /// Every set.
    pub const ALL: Self = Self {
        ptr: true,
        instance: true,
        host: true,
        enumerate: true,
    };

    /// Whether it carries anything.
    pub fn any(self) -> bool {
        self.ptr || self.instance || self.host || self.enumerate
    }

    /// Whether it carries a shared record (answers to which are delayed, RFC 6762 §6).
    pub fn shared(self) -> bool {
        self.ptr || self.enumerate
    }

    /// Both sets' records.
    pub fn union(self, other: Self) -> Self {
        Self {
            ptr: self.ptr || other.ptr,
            instance: self.instance || other.instance,
            host: self.host || other.host,
            enumerate: self.enumerate || other.enumerate,
        }
    }

    /// This set's records without `other`'s.
    pub fn minus(self, other: Self) -> Self {
        Self {
            ptr: self.ptr && !other.ptr,
            instance: self.instance && !other.instance,
            host: self.host && !other.host,
            enumerate: self.enumerate && !other.enumerate,
        }
    }
}

/// What we announce of ourselves on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurRecords {
    /// Our node.
    pub node: NodeId,
    /// Our home relay.
    pub relay: Option<RelayUrl>,
    /// Our direct addresses (already [`super::publishable`]).
    pub addrs: Vec<SocketAddr>,
    /// The IPs of the A and AAAA records.
    pub ips: Vec<IpAddr>,
}

impl OurRecords {
    /// The SRV port: the first IPv4 address's, else the first address's.
    pub fn port(&self) -> u16 {
        self.addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(self.addrs.first())
            .map_or(0, SocketAddr::port)
    }
}

/// How the TTLs of a response are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The records' own TTLs, unique ones with the cache-flush bit.
    Normal,
    /// TTL 0: a goodbye (RFC 6762 §10.1).
    Goodbye,
    /// At most [`LEGACY_TTL`], no cache-flush bits (a reply to a legacy unicast query).
    Legacy,
}

/// A question of ours or of a peer, in the terms of our names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// PTR of the service: who is there.
    Browse,
    /// PTR of the service enumeration name.
    Enumerate,
    /// SRV or TXT (or ANY) of a node's instance.
    Instance(NodeId),
    /// A or AAAA (or ANY) of a node's host name.
    Host(NodeId),
}

/// One question as read from a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asking {
    /// What it asks.
    pub asked: Asked,
    /// The record type asked (echoed in legacy replies).
    pub qtype: u16,
    /// The QU bit: a unicast reply is preferred.
    pub unicast: bool,
}

/// A query, as far as it concerns our service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// The message id (echoed in legacy replies).
    pub id: u16,
    /// The questions about our names (others are dropped).
    pub questions: Vec<Asking>,
    /// Known answers (RFC 6762 §7.1): instances of our service the querier already holds, with their
    /// remaining TTLs.
    pub known: Vec<(NodeId, u32)>,
}

/// What a TXT record says: the relay and the addresses, or why it is malformed.
pub type TxtFacts = Result<(Option<RelayUrl>, BTreeSet<SocketAddr>), TxtError>;

/// What a response says of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerFacts {
    /// The PTR's TTL, if the service's PTR to the node was in it (0: a goodbye).
    pub ptr_ttl: Option<u32>,
    /// The TXT's TTL and contents.
    pub txt: Option<(u32, TxtFacts)>,
    /// The SRV's TTL and port.
    pub srv: Option<(u32, u16)>,
    /// A and AAAA records (TTL, IP).
    pub ips: Vec<(u32, IpAddr)>,
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A query.
    Query(Query),
    /// A response: what it says of each node it names, at most [`MAX_PEERS_PER_PACKET`].
    Response(Vec<(NodeId, PeerFacts)>),
}

/// Why a packet was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not a DNS message.
    #[error("not a DNS message")]
    Malformed,
    /// An opcode or response code that multicast DNS ignores (RFC 6762 §18.3, §18.11).
    #[error("opcode or rcode not zero")]
    Ignored,
    /// A name or record of ours could not be encoded (should not happen: names come from keys).
    #[error("cannot encode the message")]
    Encode,
}

/// The instance name of `node`.
pub fn instance_name(node: &NodeId) -> String {
    format!("{node}.{SERVICE}")
}

/// The host name of `node`.
pub fn host_name(node: &NodeId) -> String {
    format!("{node}.local")
}

fn name(text: &str) -> Result<Name<'_>, WireError> {
    Name::new(text).map_err(|_| WireError::Encode)
}

/// The node whose name is `<z32>` followed by `suffix` labels.
fn node_of(name: &Name<'_>, suffix: &[&str]) -> Option<NodeId> {
    let labels = name.get_labels();
    if labels.len() != suffix.len() + 1 {
        return None;
    }
    let rest_matches = labels[1..]
        .iter()
        .zip(suffix)
        .all(|(label, want)| label.as_ref().eq_ignore_ascii_case(want.as_bytes()));
    if !rest_matches {
        return None;
    }
    let first = std::str::from_utf8(labels[0].as_ref()).ok()?;
    if first.len() != 52 {
        return None;
    }
    NodeId::from_str(&first.to_ascii_lowercase()).ok()
}

/// The node of an instance name `<z32>._iroh._udp.local`.
pub fn node_of_instance(name: &Name<'_>) -> Option<NodeId> {
    node_of(name, &["_iroh", "_udp", "local"])
}

/// The node of a host name `<z32>.local`.
pub fn node_of_host(name: &Name<'_>) -> Option<NodeId> {
    node_of(name, &["local"])
}

fn is_name(name: &Name<'_>, text: &str) -> bool {
    let labels = name.get_labels();
    let mut want = text.split('.');
    labels.iter().all(|l| {
        want.next()
            .is_some_and(|w| l.as_ref().eq_ignore_ascii_case(w.as_bytes()))
    }) && want.next().is_none()
}

/// Our records of `sets` (`answers`) with the rest of what a resolver needs (`additional`: RFC 6763
/// §12), as one response. `legacy` is the id and questions of a legacy unicast query being answered.
pub fn build_response(
    ours: &OurRecords,
    answers: Sets,
    ttl: Ttl,
    legacy: Option<(u16, &[Asking])>,
) -> Result<Vec<u8>, WireError> {
    let instance = instance_name(&ours.node);
    let host = host_name(&ours.node);
    let txt_pairs: Vec<String> = encode_txt(ours.relay.as_ref(), &ours.addrs)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let (ttl_of, flush) = match ttl {
        Ttl::Normal => (None, true),
        Ttl::Goodbye => (Some(0), true),
        Ttl::Legacy => (Some(LEGACY_TTL), false),
    };
    let ttl_for = |own: u32| ttl_of.map_or(own, |t: u32| t.min(own));
    let mut packet = Packet::new_reply(legacy.map_or(0, |(id, _)| id));
    packet.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    if let Some((_, questions)) = legacy {
        for q in questions {
            let text = match q.asked {
                Asked::Browse => SERVICE.to_owned(),
                Asked::Enumerate => SERVICES_ENUM.to_owned(),
                Asked::Instance(n) => instance_name(&n),
                Asked::Host(n) => host_name(&n),
            };
            let qname = Name::new(&text)
                .map_err(|_| WireError::Encode)?
                .into_owned();
            packet.questions.push(Question::new(
                qname,
                QTYPE::TYPE(TYPE::from(q.qtype)),
                QCLASS::CLASS(CLASS::IN),
                false,
            ));
        }
    }
    let additional = if answers.ptr {
        Sets {
            instance: true,
            host: true,
            ..Sets::default()
        }
    } else if answers.instance {
        Sets {
            host: true,
            ..Sets::default()
        }
    } else {
        Sets::default()
    }
    .minus(answers);
    for (sets, into_answers) in [(answers, true), (additional, false)] {
        let mut records = Vec::new();
        if sets.enumerate {
            records.push(ResourceRecord::new(
                name(SERVICES_ENUM)?,
                CLASS::IN,
                ttl_for(PTR_TTL),
                RData::PTR(PTR(name(SERVICE)?)),
            ));
        }
        if sets.ptr {
            records.push(ResourceRecord::new(
                name(SERVICE)?,
                CLASS::IN,
                ttl_for(PTR_TTL),
                RData::PTR(PTR(name(&instance)?)),
            ));
        }
        if sets.instance {
            let srv = SRV {
                priority: 0,
                weight: 0,
                port: ours.port(),
                target: name(&host)?,
            };
            records.push(
                ResourceRecord::new(
                    name(&instance)?,
                    CLASS::IN,
                    ttl_for(HOST_TTL),
                    RData::SRV(srv),
                )
                .with_cache_flush(flush),
            );
            let mut txt = TXT::new();
            for pair in &txt_pairs {
                txt.add_string(pair).map_err(|_| WireError::Encode)?;
            }
            records.push(
                ResourceRecord::new(
                    name(&instance)?,
                    CLASS::IN,
                    ttl_for(PTR_TTL),
                    RData::TXT(txt),
                )
                .with_cache_flush(flush),
            );
        }
        if sets.host {
            for ip in &ours.ips {
                let rdata = match ip {
                    IpAddr::V4(v4) => RData::A(A {
                        address: u32::from(*v4),
                    }),
                    IpAddr::V6(v6) => RData::AAAA(AAAA {
                        address: u128::from(*v6),
                    }),
                };
                records.push(
                    ResourceRecord::new(name(&host)?, CLASS::IN, ttl_for(HOST_TTL), rdata)
                        .with_cache_flush(flush),
                );
            }
        }
        if into_answers {
            packet.answers = records;
        } else {
            packet.additional_records = records;
        }
    }
    let mut bytes = packet
        .build_bytes_vec_compressed()
        .map_err(|_| WireError::Encode)?;
    if bytes.len() > MAX_PACKET && !packet.additional_records.is_empty() {
        // Additional records are a courtesy; the answers must fit.
        packet.additional_records.clear();
        bytes = packet
            .build_bytes_vec_compressed()
            .map_err(|_| WireError::Encode)?;
    }
    Ok(bytes)
}

/// A query of `questions` (the first `unicast` ones with the QU bit), with known answers: PTRs of our
/// service to `known` instances and their remaining TTLs, as many as fit in [`MAX_PACKET`].
pub fn build_query(
    questions: &[Asked],
    unicast: bool,
    known: &[(NodeId, u32)],
) -> Result<Vec<u8>, WireError> {
    let mut packet = Packet::new_query(0);
    let mut names = Vec::new();
    for q in questions {
        match q {
            Asked::Browse => names.push((SERVICE.to_owned(), TYPE::PTR)),
            Asked::Enumerate => names.push((SERVICES_ENUM.to_owned(), TYPE::PTR)),
            Asked::Instance(n) => {
                names.push((instance_name(n), TYPE::SRV));
                names.push((instance_name(n), TYPE::TXT));
            }
            Asked::Host(n) => {
                names.push((host_name(n), TYPE::A));
                names.push((host_name(n), TYPE::AAAA));
            }
        }
    }
    for (text, ty) in &names {
        packet.questions.push(Question::new(
            name(text)?,
            QTYPE::TYPE(*ty),
            QCLASS::CLASS(CLASS::IN),
            unicast,
        ));
    }
    let base = packet
        .build_bytes_vec_compressed()
        .map_err(|_| WireError::Encode)?;
    let instances: Vec<String> = known.iter().map(|(n, _)| instance_name(n)).collect();
    // Each known answer takes about 66 bytes compressed (the instance label and a pointer).
    let room = MAX_PACKET.saturating_sub(base.len()) / 70;
    for ((_, ttl), text) in known.iter().zip(&instances).take(room) {
        packet.answers.push(ResourceRecord::new(
            name(SERVICE)?,
            CLASS::IN,
            *ttl,
            RData::PTR(PTR(name(text)?)),
        ));
    }
    packet
        .build_bytes_vec_compressed()
        .map_err(|_| WireError::Encode)
}

/// Reads a received packet.
pub fn parse(bytes: &[u8]) -> Result<Message, WireError> {
    let packet = Packet::parse(bytes).map_err(|_| WireError::Malformed)?;
    if packet.opcode() != OPCODE::StandardQuery || packet.rcode() != RCODE::NoError {
        return Err(WireError::Ignored);
    }
    if packet.has_flags(PacketFlag::RESPONSE) {
        return Ok(Message::Response(read_response(&packet)));
    }
    let mut query = Query {
        id: packet.id(),
        ..Query::default()
    };
    for q in &packet.questions {
        if !matches!(q.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY) {
            continue;
        }
        let qtype = match q.qtype {
            QTYPE::TYPE(ty) => u16::from(ty),
            QTYPE::ANY => 255,
            _ => continue,
        };
        let is = |types: &[TYPE]| qtype == 255 || types.iter().any(|t| u16::from(*t) == qtype);
        let asked = if is_name(&q.qname, SERVICE) && is(&[TYPE::PTR]) {
            Asked::Browse
        } else if is_name(&q.qname, SERVICES_ENUM) && is(&[TYPE::PTR]) {
            Asked::Enumerate
        } else if let Some(node) =
            node_of_instance(&q.qname).filter(|_| is(&[TYPE::SRV, TYPE::TXT]))
        {
            Asked::Instance(node)
        } else if let Some(node) = node_of_host(&q.qname).filter(|_| is(&[TYPE::A, TYPE::AAAA])) {
            Asked::Host(node)
        } else {
            continue;
        };
        query.questions.push(Asking {
            asked,
            qtype,
            unicast: q.unicast_response,
        });
    }
    for rr in &packet.answers {
        if let RData::PTR(PTR(target)) = &rr.rdata
            && is_name(&rr.name, SERVICE)
            && let Some(node) = node_of_instance(target)
        {
            query.known.push((node, rr.ttl));
        }
    }
    Ok(Message::Query(query))
}

/// The facts of `node` in `peers`, added if there is room.
fn facts_of(peers: &mut Vec<(NodeId, PeerFacts)>, node: NodeId) -> Option<&mut PeerFacts> {
    let at = match peers.iter().position(|(n, _)| *n == node) {
        Some(at) => at,
        None if peers.len() < MAX_PEERS_PER_PACKET => {
            peers.push((node, PeerFacts::default()));
            peers.len() - 1
        }
        None => return None,
    };
    Some(&mut peers[at].1)
}

fn read_response(packet: &Packet<'_>) -> Vec<(NodeId, PeerFacts)> {
    let mut peers: Vec<(NodeId, PeerFacts)> = Vec::new();
    let peers = &mut peers;
    for rr in packet.answers.iter().chain(&packet.additional_records) {
        if !matches!(rr.class, CLASS::IN) {
            continue;
        }
        match &rr.rdata {
            RData::PTR(PTR(target)) if is_name(&rr.name, SERVICE) => {
                if let Some(facts) = node_of_instance(target).and_then(|n| facts_of(peers, n)) {
                    facts.ptr_ttl = Some(rr.ttl);
                }
            }
            RData::TXT(txt) => {
                if let Some(facts) = node_of_instance(&rr.name).and_then(|n| facts_of(peers, n)) {
                    facts.txt = Some((rr.ttl, read_txt(txt)));
                }
            }
            RData::SRV(srv) => {
                if let Some(facts) = node_of_instance(&rr.name).and_then(|n| facts_of(peers, n)) {
                    facts.srv = Some((rr.ttl, srv.port));
                }
            }
            RData::A(a) => {
                if let Some(facts) = node_of_host(&rr.name).and_then(|n| facts_of(peers, n))
                    && facts.ips.len() < super::MAX_ADDRS
                {
                    facts.ips.push((rr.ttl, Ipv4Addr::from(a.address).into()));
                }
            }
            RData::AAAA(aaaa) => {
                if let Some(facts) = node_of_host(&rr.name).and_then(|n| facts_of(peers, n))
                    && facts.ips.len() < super::MAX_ADDRS
                {
                    facts
                        .ips
                        .push((rr.ttl, Ipv6Addr::from(aaaa.address).into()));
                }
            }
            _ => {}
        }
    }
    std::mem::take(peers)
}

/// The TXT strings as `key=value` pairs (strings without `=` are boolean keys, ignored by us).
fn read_txt(txt: &TXT<'_>) -> TxtFacts {
    let pairs = txt.iter_raw().filter_map(|(key, value)| {
        let key = std::str::from_utf8(key).ok()?;
        let value = std::str::from_utf8(value?).ok()?;
        Some((key, value))
    });
    decode_txt(pairs)
}
