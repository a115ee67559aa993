//! PCP (RFC 6887) messages: parse/encode pairs over byte slices, for the two opcodes a client needs.
//!
//! Every message is a 24-byte header, an opcode-specific body and options (each a code, a reserved byte,
//! a length and data padded to four bytes). A request's header carries the version ([`VERSION`], 2), the
//! opcode, the requested lifetime and the client's own address (IPv4 as `::ffff:a.b.c.d`), which the
//! server compares with the packet's source (a mismatch means a NAT in between: `ADDRESS_MISMATCH`). A
//! response's header carries the result code, the lifetime granted and the server's epoch time.
//!
//! - **ANNOUNCE** (opcode 0): no body. Asks whether a PCP server is there (and its epoch).
//! - **MAP** (opcode 1): a 36-byte body: a 12-byte nonce (the server refuses changes to a mapping from a
//!   different nonce), the protocol (17 for UDP), the internal port, the suggested external port and
//!   address; the response's body has the ones assigned. Lifetime 0 deletes the mapping.
//!
//! Options in responses are skipped (we send none); messages are at most [`MAX_LEN`] bytes and a
//! multiple of four long (§7).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::BufMut;

use super::{
    Protocol,
    natpmp::{be16, be32},
};

/// The server's port (shared with NAT-PMP, which a PCP server also answers).
pub const SERVER_PORT: u16 = 5351;
/// The protocol version.
pub const VERSION: u8 = 2;
/// The longest message (§7).
pub const MAX_LEN: usize = 1100;
/// Header length of requests and responses.
pub const HEADER_LEN: usize = 24;
/// MAP body length.
pub const MAP_LEN: usize = 36;
/// A response's bit in the opcode byte.
pub const RESPONSE_BIT: u8 = 0x80;

const OP_ANNOUNCE: u8 = 0;
const OP_MAP: u8 = 1;

/// A MAP body: the mapping asked for, or (in a response) the one assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Map {
    /// Ties requests for one mapping together (random, kept while the mapping lives).
    pub nonce: [u8; 12],
    /// UDP or TCP.
    pub protocol: Protocol,
    /// Our port.
    pub internal_port: u16,
    /// Suggested (request) or assigned (response) external port; 0 in a request: any.
    pub external_port: u16,
    /// Suggested or assigned external address; unspecified in a request: any.
    pub external_ip: IpAddr,
}

/// What a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// Is a server there?
    Announce,
    /// A mapping.
    Map(Map),
}

/// A request to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Seconds asked for (0: delete; ANNOUNCE: 0).
    pub lifetime: u32,
    /// Our address as we see it (the source address the server should see).
    pub client_ip: IpAddr,
    /// What is asked.
    pub opcode: Opcode,
}

impl Request {
    /// Bytes [`Request::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + body_len(&self.opcode)
    }

    /// Writes the request.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(VERSION);
        buf.put_u8(opcode_byte(&self.opcode));
        buf.put_u16(0);
        buf.put_u32(self.lifetime);
        buf.put_slice(&ip16(self.client_ip));
        if let Opcode::Map(map) = &self.opcode {
            put_map(buf, map);
        }
    }

    /// The request as bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// Reads a request (what a server does; tests use it too).
    pub fn parse(bytes: &[u8]) -> Result<Self, PcpError> {
        let head = check_frame(bytes)?;
        if head[1] & RESPONSE_BIT != 0 {
            return Err(PcpError::NotRequest);
        }
        let opcode = parse_body(head[1], &bytes[HEADER_LEN..])?;
        Ok(Request {
            lifetime: be32(&head[4..8]),
            client_ip: ip_of(&head[8..24]),
            opcode,
        })
    }
}

/// A server's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Success, or why not.
    pub result: ResultCode,
    /// Seconds granted (on errors: how long the error will last).
    pub lifetime: u32,
    /// The server's epoch time: seconds since its state began (§8.5).
    pub epoch: u32,
    /// The request's opcode, with (MAP) what was assigned.
    pub opcode: Opcode,
}

impl Response {
    /// Bytes [`Response::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + body_len(&self.opcode)
    }

    /// Writes the response (what a server does: tests play one).
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(VERSION);
        buf.put_u8(RESPONSE_BIT | opcode_byte(&self.opcode));
        buf.put_u8(0);
        buf.put_u8(self.result.to_u8());
        buf.put_u32(self.lifetime);
        buf.put_u32(self.epoch);
        buf.put_bytes(0, 12);
        if let Opcode::Map(map) = &self.opcode {
            put_map(buf, map);
        }
    }

    /// The response as bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// Reads a response. A failed one may come without its body (servers that do not know the opcode);
    /// its MAP fields are then zero.
    pub fn parse(bytes: &[u8]) -> Result<Self, PcpError> {
        let head = check_frame(bytes)?;
        if head[1] & RESPONSE_BIT == 0 {
            return Err(PcpError::NotResponse);
        }
        let result = ResultCode::from_u8(head[3]);
        let body = &bytes[HEADER_LEN..];
        let op = head[1] & !RESPONSE_BIT;
        let opcode = match parse_body(op, body) {
            Ok(opcode) => opcode,
            // A refusal's body may be missing or zeroed (protocol 0): its result is what counts.
            Err(PcpError::Truncated | PcpError::Protocol(_))
                if result != ResultCode::Success && op == OP_MAP =>
            {
                Opcode::Map(Map {
                    nonce: [0; 12],
                    protocol: Protocol::Udp,
                    internal_port: 0,
                    external_port: 0,
                    external_ip: Ipv4Addr::UNSPECIFIED.into(),
                })
            }
            Err(e) => return Err(e),
        };
        Ok(Response {
            result,
            lifetime: be32(&head[4..8]),
            epoch: be32(&head[8..12]),
            opcode,
        })
    }
}

/// A response's result code (RFC 6887 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultCode {
    /// 0.
    Success,
    /// 1: the server speaks another version (a NAT-PMP-only gateway answers so, in NAT-PMP format).
    UnsupportedVersion,
    /// 2: not allowed (mapping turned off, or not for us).
    NotAuthorized,
    /// 3: the server could not read the request.
    MalformedRequest,
    /// 4: the server does not know the opcode.
    UnsupportedOpcode,
    /// 5: an option it does not know.
    UnsupportedOption,
    /// 6: a malformed option.
    MalformedOption,
    /// 7: no external address right now.
    NetworkFailure,
    /// 8: out of resources.
    NoResources,
    /// 9: the protocol cannot be mapped.
    UnsupportedProtocol,
    /// 10: we have too many mappings.
    UserExceededQuota,
    /// 11: the suggested external address or port cannot be given (with PREFER_FAILURE).
    CannotProvideExternal,
    /// 12: the client address in the request is not the packet's source (a NAT in between).
    AddressMismatch,
    /// 13: too many remote peers.
    ExcessiveRemotePeers,
    /// Any other.
    Other(u8),
}

impl ResultCode {
    fn from_u8(code: u8) -> Self {
        use ResultCode::*;
        match code {
            0 => Success,
            1 => UnsupportedVersion,
            2 => NotAuthorized,
            3 => MalformedRequest,
            4 => UnsupportedOpcode,
            5 => UnsupportedOption,
            6 => MalformedOption,
            7 => NetworkFailure,
            8 => NoResources,
            9 => UnsupportedProtocol,
            10 => UserExceededQuota,
            11 => CannotProvideExternal,
            12 => AddressMismatch,
            13 => ExcessiveRemotePeers,
            other => Other(other),
        }
    }

    fn to_u8(self) -> u8 {
        use ResultCode::*;
        match self {
            Success => 0,
            UnsupportedVersion => 1,
            NotAuthorized => 2,
            MalformedRequest => 3,
            UnsupportedOpcode => 4,
            UnsupportedOption => 5,
            MalformedOption => 6,
            NetworkFailure => 7,
            NoResources => 8,
            UnsupportedProtocol => 9,
            UserExceededQuota => 10,
            CannotProvideExternal => 11,
            AddressMismatch => 12,
            ExcessiveRemotePeers => 13,
            Other(code) => code,
        }
    }

    /// Whether the error lasts (§7.4: "long lifetime" errors, worth retrying only much later).
    pub fn is_long_lived(self) -> bool {
        use ResultCode::*;
        matches!(
            self,
            UnsupportedVersion
                | NotAuthorized
                | MalformedRequest
                | UnsupportedOpcode
                | UnsupportedOption
                | MalformedOption
                | UnsupportedProtocol
                | AddressMismatch
        )
    }
}

/// A message that is not PCP, or not one we understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PcpError {
    /// Shorter than its header, body or an option says.
    #[error("truncated PCP message")]
    Truncated,
    /// Longer than 1,100 bytes, or not a multiple of four.
    #[error("PCP message of a bad length ({0} bytes)")]
    Length(usize),
    /// Another version (NAT-PMP is 0).
    #[error("PCP version {0}, not 2")]
    Version(u8),
    /// An opcode we do not know.
    #[error("unknown PCP opcode {0}")]
    Opcode(u8),
    /// A protocol number other than UDP's or TCP's.
    #[error("PCP mapping of protocol {0}")]
    Protocol(u8),
    /// A response where a request was expected.
    #[error("a PCP response, not a request")]
    NotRequest,
    /// A request where a response was expected.
    #[error("a PCP request, not a response")]
    NotResponse,
}

/// The header, after the checks every message gets.
fn check_frame(bytes: &[u8]) -> Result<&[u8], PcpError> {
    if bytes.len() > MAX_LEN || !bytes.len().is_multiple_of(4) {
        return Err(PcpError::Length(bytes.len()));
    }
    let head = bytes.get(..HEADER_LEN).ok_or(PcpError::Truncated)?;
    if head[0] != VERSION {
        return Err(PcpError::Version(head[0]));
    }
    Ok(head)
}

fn parse_body(op: u8, body: &[u8]) -> Result<Opcode, PcpError> {
    let (opcode, options) = match op {
        OP_ANNOUNCE => (Opcode::Announce, body),
        OP_MAP => {
            let map = body.get(..MAP_LEN).ok_or(PcpError::Truncated)?;
            let protocol = match map[12] {
                17 => Protocol::Udp,
                6 => Protocol::Tcp,
                other => return Err(PcpError::Protocol(other)),
            };
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(&map[..12]);
            let opcode = Opcode::Map(Map {
                nonce,
                protocol,
                internal_port: be16(&map[16..18]),
                external_port: be16(&map[18..20]),
                external_ip: ip_of(&map[20..36]),
            });
            (opcode, &body[MAP_LEN..])
        }
        other => return Err(PcpError::Opcode(other)),
    };
    skip_options(options)?;
    Ok(opcode)
}

/// Checks the options are well framed (their content is not used).
fn skip_options(mut rest: &[u8]) -> Result<(), PcpError> {
    while !rest.is_empty() {
        let head = rest.get(..4).ok_or(PcpError::Truncated)?;
        let len = usize::from(be16(&head[2..4]));
        let padded = len.div_ceil(4) * 4;
        rest = rest.get(4 + padded..).ok_or(PcpError::Truncated)?;
    }
    Ok(())
}

fn body_len(opcode: &Opcode) -> usize {
    match opcode {
        Opcode::Announce => 0,
        Opcode::Map(_) => MAP_LEN,
    }
}

fn opcode_byte(opcode: &Opcode) -> u8 {
    match opcode {
        Opcode::Announce => OP_ANNOUNCE,
        Opcode::Map(_) => OP_MAP,
    }
}

fn put_map(buf: &mut impl BufMut, map: &Map) {
    buf.put_slice(&map.nonce);
    buf.put_u8(match map.protocol {
        Protocol::Udp => 17,
        Protocol::Tcp => 6,
    });
    buf.put_bytes(0, 3);
    buf.put_u16(map.internal_port);
    buf.put_u16(map.external_port);
    buf.put_slice(&ip16(map.external_ip));
}

/// An address as PCP writes it: IPv6, or IPv4-mapped IPv6 (§5). The unspecified IPv4 address is
/// `::ffff:0.0.0.0`.
fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn ip_of(bytes: &[u8]) -> IpAddr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&bytes[..16]);
    let v6 = Ipv6Addr::from(octets);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}
