//! The authoritative DNS server for the discovery origin, on UDP and TCP (hickory-server), answering from
//! the record store.
//!
//! | query | answer |
//! |---|---|
//! | `TXT _iroh.<z-base-32 id>.<origin>`, record stored | `NOERROR`, authoritative, the record's TXT strings with its TTL |
//! | the same, no record (or not a NodeId) | `NXDOMAIN` with the zone's SOA |
//! | another type at a stored name | `NOERROR`, no answers, SOA (NODATA) |
//! | `<id>.<origin>` of a stored record | `NOERROR`, no answers (an empty non-terminal, RFC 8020) |
//! | `SOA <origin>` | the SOA; other types at the apex: NODATA |
//! | any name outside the origin, any class but IN | `REFUSED`: no recursion, so no open resolver |
//! | not a standard query | `NOTIMP` |
//!
//! Answers are no larger than the record a node signed (at most 1,000 bytes of DNS answers), so there is no
//! amplification beyond that; UDP answers respect the client's EDNS size (512 bytes without EDNS, with
//! TC set when it does not fit, so the client retries over TCP).

use std::{iter, sync::Arc, time::Duration};

use hickory_server::{
    net::runtime::Time,
    proto::{
        op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode},
        rr::{
            DNSClass, LowerName, Name, RData, Record, RecordType,
            rdata::{SOA, TXT},
        },
    },
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};
use iroh_base::PublicKey;
use tokio::net::{TcpListener, UdpSocket};
use tracing::{debug, warn};

use super::Shared;
use super::cache::CompactAnswers;
use crate::protos::discovery::{IROH_TXT_LABEL, SignedRecord, iroh_txt_answers};

/// How long a TCP connection may be idle.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// The largest UDP answer we send, whatever the client's EDNS says (the DNS flag day 2020 value).
const MAX_UDP_PAYLOAD: u16 = 1232;
/// The SOA's TTL and its negative-caching TTL ("minimum"): how long resolvers remember NXDOMAIN.
const SOA_TTL: u32 = 60;

/// The request handler: see the [module docs](self).
pub(crate) struct ZoneHandler {
    shared: Arc<Shared>,
    origin: LowerName,
    origin_labels: usize,
    soa: Record,
}

impl std::fmt::Debug for ZoneHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneHandler")
            .field("origin", &self.origin.to_string())
            .finish_non_exhaustive()
    }
}

impl ZoneHandler {
    pub(crate) fn new(shared: Arc<Shared>, origin: &Name) -> Self {
        let mut origin = origin.clone();
        origin.set_fqdn(true);
        let mname = Name::from_ascii("ns")
            .and_then(|ns| ns.append_domain(&origin))
            .unwrap_or_else(|_| origin.clone());
        let rname = Name::from_ascii("hostmaster")
            .and_then(|h| h.append_domain(&origin))
            .unwrap_or_else(|_| origin.clone());
        let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, SOA_TTL);
        let soa = Record::from_rdata(origin.clone(), SOA_TTL, RData::SOA(soa));
        let origin_labels = origin.iter().count();
        Self {
            shared,
            origin: LowerName::from(origin),
            origin_labels,
            soa,
        }
    }

    /// The answer to one query: response code, answers, and the SOA for the authority section.
    pub(crate) fn lookup(&self, request: &Request) -> (ResponseCode, Vec<Record>, Option<Record>) {
        if request.metadata.op_code != OpCode::Query {
            return (ResponseCode::NotImp, Vec::new(), None);
        }
        let [query] = request.queries.queries() else {
            return (ResponseCode::FormErr, Vec::new(), None);
        };
        let qname = query.name();
        if query.query_class() != DNSClass::IN || !self.origin.zone_of(qname) {
            return (ResponseCode::Refused, Vec::new(), None);
        }
        let labels: Vec<&[u8]> = qname.iter().collect();
        let extra = labels.len().saturating_sub(self.origin_labels);
        let soa = Some(self.soa.clone());
        match extra {
            0 => match query.query_type() {
                RecordType::SOA => (ResponseCode::NoError, vec![self.soa.clone()], None),
                _ => (ResponseCode::NoError, Vec::new(), soa),
            },
            1 if self.answers(labels[0]).is_some() => (ResponseCode::NoError, Vec::new(), soa),
            2 if labels[0].eq_ignore_ascii_case(IROH_TXT_LABEL.as_bytes()) => {
                let answers = self.answers(labels[1]);
                let Some(answers) = answers else {
                    return (ResponseCode::NXDomain, Vec::new(), soa);
                };
                if !matches!(query.query_type(), RecordType::TXT | RecordType::ANY) {
                    return (ResponseCode::NoError, Vec::new(), soa);
                }
                let name = query.original().name().clone();
                let records = answers
                    .answers()
                    .into_iter()
                    .map(|(ttl, strings)| {
                        let txt = RData::TXT(TXT::from_bytes(strings));
                        Record::from_rdata(name.clone(), ttl, txt)
                    })
                    .collect();
                (ResponseCode::NoError, records, None)
            }
            _ => (ResponseCode::NXDomain, Vec::new(), soa),
        }
    }

    /// The TXT answers of the node a label names, if it is a NodeId with a stored record that has
    /// some; from the answer cache when it can. The key is decoded, not validated (a hot path:
    /// validating is a curve point decompression): only valid keys were stored.
    fn answers(&self, label: &[u8]) -> Option<CompactAnswers> {
        let z32 = std::str::from_utf8(label).ok()?;
        let key = PublicKey::decode_unchecked(z32).ok()?;
        let generation = match self.shared.answers.get(&key) {
            Ok(cached) => return cached,
            Err(generation) => generation,
        };
        let stored = match self.shared.store.get_raw(&key) {
            Ok(stored) => stored,
            Err(error) => {
                warn!(%error, "record store read failed");
                return None;
            }
        };
        let answers = stored.and_then(|bytes| {
            let packet = SignedRecord::packet_of(&bytes)?;
            let answers = iroh_txt_answers(packet, &z32.to_ascii_lowercase()).ok()?;
            CompactAnswers::encode(&answers)
        });
        self.shared.answers.insert(key, answers.clone(), generation);
        answers
    }
}

fn rcode_label(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::NoError => "noerror",
        ResponseCode::NXDomain => "nxdomain",
        ResponseCode::Refused => "refused",
        ResponseCode::FormErr => "formerr",
        ResponseCode::NotImp => "notimp",
        ResponseCode::ServFail => "servfail",
        _ => "other",
    }
}

#[async_trait::async_trait]
impl RequestHandler for ZoneHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // RFC 6891: an OPT in the answer only if the query had one, so large answers are not cut at 512.
        let response_edns = request.edns.as_ref().map(|edns| {
            let mut out = Edns::new();
            out.set_max_payload(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            out
        });
        let builder = MessageResponseBuilder::new(&request.queries, response_edns.as_ref());
        let (code, answers, soa) = if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            (ResponseCode::BADVERS, Vec::new(), None)
        } else {
            self.lookup(request)
        };
        self.shared.metrics.dns_query(rcode_label(code));
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = code;
        metadata.authoritative = matches!(code, ResponseCode::NoError | ResponseCode::NXDomain);
        let response = builder.build(
            metadata,
            answers.iter(),
            iter::empty(),
            soa.iter(),
            iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                debug!(%error, "cannot send a DNS response");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// The DNS server, running until dropped or [`DnsServer::shutdown`].
pub(crate) struct DnsServer {
    server: hickory_server::Server<ZoneHandler>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer").finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Serves `handler` on an already bound UDP socket and TCP listener.
    pub(crate) fn spawn(handler: ZoneHandler, udp: UdpSocket, tcp: TcpListener) -> Self {
        let mut server = hickory_server::Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        Self { server }
    }

    /// Stops answering.
    pub(crate) async fn shutdown(mut self) {
        if let Err(error) = self.server.shutdown_gracefully().await {
            debug!(%error, "DNS server stopped with an error");
        }
    }
}
