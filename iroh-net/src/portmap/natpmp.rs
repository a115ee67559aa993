//! NAT-PMP (RFC 6886) messages: parse/encode pairs over byte slices.
//!
//! A client sends requests to its gateway's UDP port [`SERVER_PORT`]; every message starts with the
//! version ([`VERSION`], 0) and an opcode (a response's is the request's plus 128). Two requests matter:
//! the external address (opcode 0, two bytes) and a mapping (opcode 1 for UDP, 2 for TCP, twelve bytes:
//! reserved, internal port, suggested external port, requested lifetime in seconds; lifetime 0 deletes).
//! Responses carry a result code and the gateway's "seconds since start of epoch", which lets a client
//! notice a gateway that restarted (and lost its mappings). A failed response's body is undefined
//! (RFC 6886 §3.5), so only its first eight bytes are read.

use std::net::Ipv4Addr;

use bytes::BufMut;

use super::Protocol;

/// The gateway's port for requests.
pub const SERVER_PORT: u16 = 5351;
/// The port clients listen on for the gateway's multicast announcements (to 224.0.0.1).
pub const ANNOUNCE_PORT: u16 = 5350;
/// The protocol version.
pub const VERSION: u8 = 0;
/// What a response's opcode adds to the request's.
pub const RESPONSE_BIT: u8 = 128;

const OP_EXTERNAL: u8 = 0;
const OP_MAP_UDP: u8 = 1;
const OP_MAP_TCP: u8 = 2;

/// A request to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// What is the gateway's external IPv4 address?
    ExternalAddress,
    /// Map (or, with a `lifetime` of 0, delete) a port.
    Map {
        /// UDP or TCP.
        protocol: Protocol,
        /// Our port.
        internal_port: u16,
        /// The external port we would like (0: any).
        external_port: u16,
        /// Seconds (0: delete the mapping).
        lifetime: u32,
    },
}

impl Request {
    /// Bytes [`Request::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Request::ExternalAddress => 2,
            Request::Map { .. } => 12,
        }
    }

    /// Writes the request.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(VERSION);
        match *self {
            Request::ExternalAddress => buf.put_u8(OP_EXTERNAL),
            Request::Map {
                protocol,
                internal_port,
                external_port,
                lifetime,
            } => {
                buf.put_u8(map_opcode(protocol));
                buf.put_u16(0);
                buf.put_u16(internal_port);
                buf.put_u16(external_port);
                buf.put_u32(lifetime);
            }
        }
    }

    /// The request as bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// Reads a request (what a gateway does; tests use it too).
    pub fn parse(bytes: &[u8]) -> Result<Self, NatPmpError> {
        let (&version, rest) = bytes.split_first().ok_or(NatPmpError::Truncated)?;
        if version != VERSION {
            return Err(NatPmpError::Version(version));
        }
        let (&op, rest) = rest.split_first().ok_or(NatPmpError::Truncated)?;
        match op {
            OP_EXTERNAL => Ok(Request::ExternalAddress),
            OP_MAP_UDP | OP_MAP_TCP => {
                let rest = rest.get(..10).ok_or(NatPmpError::Truncated)?;
                Ok(Request::Map {
                    protocol: protocol_of(op).ok_or(NatPmpError::Opcode(op))?,
                    internal_port: be16(&rest[2..4]),
                    external_port: be16(&rest[4..6]),
                    lifetime: be32(&rest[6..10]),
                })
            }
            other => Err(NatPmpError::Opcode(other)),
        }
    }
}

/// A gateway's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// The external address.
    ExternalAddress {
        /// Seconds since the gateway's epoch began.
        epoch: u32,
        /// The address.
        addr: Ipv4Addr,
    },
    /// A mapping made, renewed or (lifetime 0) deleted.
    Mapped {
        /// Seconds since the gateway's epoch began.
        epoch: u32,
        /// UDP or TCP.
        protocol: Protocol,
        /// Our port.
        internal_port: u16,
        /// The external port granted.
        external_port: u16,
        /// Seconds granted.
        lifetime: u32,
    },
    /// A request refused (or a version the gateway does not speak).
    Failed {
        /// Seconds since the gateway's epoch began.
        epoch: u32,
        /// The request's opcode.
        opcode: u8,
        /// Why.
        code: ResultCode,
    },
}

impl Response {
    /// Bytes [`Response::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Response::ExternalAddress { .. } => 12,
            Response::Mapped { .. } => 16,
            Response::Failed { .. } => 8,
        }
    }

    /// Writes the response (what a gateway does: tests play one).
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(VERSION);
        match *self {
            Response::ExternalAddress { epoch, addr } => {
                buf.put_u8(RESPONSE_BIT | OP_EXTERNAL);
                buf.put_u16(0);
                buf.put_u32(epoch);
                buf.put_slice(&addr.octets());
            }
            Response::Mapped {
                epoch,
                protocol,
                internal_port,
                external_port,
                lifetime,
            } => {
                buf.put_u8(RESPONSE_BIT | map_opcode(protocol));
                buf.put_u16(0);
                buf.put_u32(epoch);
                buf.put_u16(internal_port);
                buf.put_u16(external_port);
                buf.put_u32(lifetime);
            }
            Response::Failed {
                epoch,
                opcode,
                code,
            } => {
                buf.put_u8(RESPONSE_BIT | opcode);
                buf.put_u16(code.to_u16());
                buf.put_u32(epoch);
            }
        }
    }

    /// The response as bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// Reads a response. A request (opcode below 128) is not one.
    pub fn parse(bytes: &[u8]) -> Result<Self, NatPmpError> {
        let head = bytes.get(..8).ok_or(NatPmpError::Truncated)?;
        if head[0] != VERSION {
            return Err(NatPmpError::Version(head[0]));
        }
        let op = head[1];
        if op & RESPONSE_BIT == 0 {
            return Err(NatPmpError::NotResponse);
        }
        let opcode = op & !RESPONSE_BIT;
        let code = be16(&head[2..4]);
        let epoch = be32(&head[4..8]);
        if code != 0 {
            return Ok(Response::Failed {
                epoch,
                opcode,
                code: ResultCode::from_u16(code),
            });
        }
        match opcode {
            OP_EXTERNAL => {
                let ip = bytes.get(8..12).ok_or(NatPmpError::Truncated)?;
                Ok(Response::ExternalAddress {
                    epoch,
                    addr: Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]),
                })
            }
            OP_MAP_UDP | OP_MAP_TCP => {
                let body = bytes.get(8..16).ok_or(NatPmpError::Truncated)?;
                Ok(Response::Mapped {
                    epoch,
                    protocol: protocol_of(opcode).ok_or(NatPmpError::Opcode(opcode))?,
                    internal_port: be16(&body[0..2]),
                    external_port: be16(&body[2..4]),
                    lifetime: be32(&body[4..8]),
                })
            }
            other => Err(NatPmpError::Opcode(other)),
        }
    }

    /// Seconds since the gateway's epoch began.
    pub fn epoch(&self) -> u32 {
        match *self {
            Response::ExternalAddress { epoch, .. }
            | Response::Mapped { epoch, .. }
            | Response::Failed { epoch, .. } => epoch,
        }
    }
}

/// A refusal's reason (RFC 6886 §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultCode {
    /// 1: the gateway speaks another version (a PCP-only or NAT-PMP-less one).
    UnsupportedVersion,
    /// 2: the gateway supports mapping but it is turned off, or we may not.
    NotAuthorized,
    /// 3: the gateway has no external address (its uplink is down).
    NetworkFailure,
    /// 4: no ports or mappings left.
    OutOfResources,
    /// 5: the gateway does not know the opcode.
    UnsupportedOpcode,
    /// Any other code.
    Other(u16),
}

impl ResultCode {
    fn from_u16(code: u16) -> Self {
        match code {
            1 => ResultCode::UnsupportedVersion,
            2 => ResultCode::NotAuthorized,
            3 => ResultCode::NetworkFailure,
            4 => ResultCode::OutOfResources,
            5 => ResultCode::UnsupportedOpcode,
            other => ResultCode::Other(other),
        }
    }

    fn to_u16(self) -> u16 {
        match self {
            ResultCode::UnsupportedVersion => 1,
            ResultCode::NotAuthorized => 2,
            ResultCode::NetworkFailure => 3,
            ResultCode::OutOfResources => 4,
            ResultCode::UnsupportedOpcode => 5,
            ResultCode::Other(code) => code,
        }
    }
}

/// A message that is not NAT-PMP, or not one we understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NatPmpError {
    /// Shorter than its opcode needs.
    #[error("truncated NAT-PMP message")]
    Truncated,
    /// Another version (PCP is 2).
    #[error("NAT-PMP version {0}, not 0")]
    Version(u8),
    /// An opcode we do not know.
    #[error("unknown NAT-PMP opcode {0}")]
    Opcode(u8),
    /// A request where a response was expected.
    #[error("a NAT-PMP request, not a response")]
    NotResponse,
}

fn map_opcode(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Udp => OP_MAP_UDP,
        Protocol::Tcp => OP_MAP_TCP,
    }
}

fn protocol_of(op: u8) -> Option<Protocol> {
    match op {
        OP_MAP_UDP => Some(Protocol::Udp),
        OP_MAP_TCP => Some(Protocol::Tcp),
        _ => None,
    }
}

pub(super) fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

pub(super) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
