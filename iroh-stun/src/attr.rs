//! STUN attributes (RFC 8489 section 14) and their value codecs.
//!
//! Every attribute is a TLV: a 16-bit type, a 16-bit length of the value (before padding), and the value padded
//! with 0 to 3 bytes to a multiple of 4:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Type                  |            Length             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Value (variable)                ....
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Types below 0x8000 are comprehension-required (a receiver that does not understand one must not act on the
//! message as if it were absent); 0x8000 and above are comprehension-optional.
//!
//! FINGERPRINT is not an [`Attribute`]: it is a property of the whole message ([`crate::Message::fingerprint`]),
//! computed on encode and verified on parse.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use bytes::BufMut;

use crate::error::{EncodeError, ParseError};
use crate::message::{MAGIC_COOKIE, TransactionId};
use crate::wire::{Reader, Writer, padded, wire_u16};

/// MAPPED-ADDRESS (RFC 8489 section 14.1): the reflexive address, in the clear (kept for RFC 3489 peers).
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// USERNAME (RFC 8489 section 14.3). Not interpreted here; kept as [`Attribute::Other`].
pub const USERNAME: u16 = 0x0006;
/// MESSAGE-INTEGRITY (RFC 8489 section 14.5). Not interpreted here; kept as [`Attribute::Other`].
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// ERROR-CODE (RFC 8489 section 14.8).
pub const ERROR_CODE: u16 = 0x0009;
/// UNKNOWN-ATTRIBUTES (RFC 8489 section 14.13).
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// XOR-MAPPED-ADDRESS (RFC 8489 section 14.2): the reflexive address, obfuscated against NATs that rewrite
/// addresses they find in payloads.
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// SOFTWARE (RFC 8489 section 14.14).
pub const SOFTWARE: u16 = 0x8022;
/// OTHER-ADDRESS (RFC 5780 section 7.4): the server's alternate transport address, in the MAPPED-ADDRESS
/// layout. A client that sends a Binding request there from the same socket learns whether its NAT maps by
/// destination (RFC 5780 section 4.3).
pub const OTHER_ADDRESS: u16 = 0x802C;
/// FINGERPRINT (RFC 8489 section 14.7). Represented by [`crate::Message::fingerprint`], not by an [`Attribute`].
pub const FINGERPRINT: u16 = 0x8028;

/// The attribute types this crate gives a dedicated representation to. [`Attribute::Other`] may not use them, so
/// that every message has exactly one representation and `parse(encode(m)) == m`.
pub const INTERPRETED_TYPES: [u16; 7] = [
    MAPPED_ADDRESS,
    XOR_MAPPED_ADDRESS,
    OTHER_ADDRESS,
    SOFTWARE,
    ERROR_CODE,
    UNKNOWN_ATTRIBUTES,
    FINGERPRINT,
];

/// Longest SOFTWARE text or ERROR-CODE reason phrase, in bytes.
///
/// RFC 8489 sections 14.8 and 14.14: "fewer than 128 characters (which can be as long as 509 bytes when encoding
/// them and as long as 763 bytes when decoding them)". This crate applies the decoding bound both ways, so that
/// anything it parses it can also build.
pub const MAX_TEXT_LEN: usize = 763;

const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;

/// One STUN attribute.
///
/// Unknown and uninterpreted attributes are kept raw in [`Attribute::Other`], so re-encoding a parsed message
/// reproduces them (padding bytes aside, which are always written as zeros).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Attribute {
    /// MAPPED-ADDRESS: a reflexive transport address in the clear.
    ///
    /// IPv6 flow information and scope id are not carried on the wire; they are cleared when the attribute is
    /// added to a message.
    MappedAddress(SocketAddr),
    /// XOR-MAPPED-ADDRESS: a reflexive transport address, XORed with the magic cookie (and, for IPv6, the
    /// transaction id) on the wire. Holds the plain address.
    ///
    /// IPv6 flow information and scope id are cleared when the attribute is added to a message.
    XorMappedAddress(SocketAddr),
    /// OTHER-ADDRESS: where the server also answers (RFC 5780), in the clear.
    ///
    /// IPv6 flow information and scope id are cleared when the attribute is added to a message. An
    /// unspecified IP (as a server bound to `0.0.0.0` knows its alternate socket) means "my IP, this port".
    OtherAddress(SocketAddr),
    /// SOFTWARE: a description of the sender's software, at most [`MAX_TEXT_LEN`] bytes of UTF-8.
    Software(String),
    /// ERROR-CODE: a code in 300..=699 and a reason phrase of at most [`MAX_TEXT_LEN`] bytes.
    ErrorCode {
        /// The error code, such as 420 (Unknown Attribute).
        code: u16,
        /// The human-readable reason phrase.
        reason: String,
    },
    /// UNKNOWN-ATTRIBUTES: the comprehension-required attribute types a request carried that the server did not
    /// understand (in a 420 error response).
    UnknownAttributes(Vec<u16>),
    /// Any attribute this crate does not interpret, kept as raw bytes. Its type may not be one of
    /// [`INTERPRETED_TYPES`].
    Other {
        /// The attribute type.
        typ: u16,
        /// The value, without padding.
        value: Vec<u8>,
    },
}

impl Attribute {
    /// The attribute's type on the wire.
    pub fn typ(&self) -> u16 {
        match self {
            Self::MappedAddress(_) => MAPPED_ADDRESS,
            Self::XorMappedAddress(_) => XOR_MAPPED_ADDRESS,
            Self::OtherAddress(_) => OTHER_ADDRESS,
            Self::Software(_) => SOFTWARE,
            Self::ErrorCode { .. } => ERROR_CODE,
            Self::UnknownAttributes(_) => UNKNOWN_ATTRIBUTES,
            Self::Other { typ, .. } => *typ,
        }
    }

    /// Whether a receiver must understand this attribute to process the message (type below 0x8000).
    pub fn is_comprehension_required(&self) -> bool {
        is_comprehension_required(self.typ())
    }

    /// Length of the value on the wire, before padding.
    pub(crate) fn value_len(&self) -> usize {
        match self {
            Self::MappedAddress(addr) | Self::XorMappedAddress(addr) | Self::OtherAddress(addr) => {
                address_len(addr)
            }
            Self::Software(text) => text.len(),
            Self::ErrorCode { reason, .. } => 4 + reason.len(),
            Self::UnknownAttributes(types) => 2 * types.len(),
            Self::Other { value, .. } => value.len(),
        }
    }

    /// Bytes the attribute takes in a message: header, value and padding.
    pub(crate) fn encoded_len(&self) -> usize {
        4 + padded(self.value_len())
    }

    /// Checks that the attribute can be encoded faithfully and brings it to its canonical form (IPv6 flow
    /// information and scope id cleared). Message-wide bounds are checked by the caller.
    pub(crate) fn validate(self) -> Result<Self, EncodeError> {
        match self {
            Self::MappedAddress(addr) => Ok(Self::MappedAddress(canonical_wire_addr(addr))),
            Self::XorMappedAddress(addr) => Ok(Self::XorMappedAddress(canonical_wire_addr(addr))),
            Self::OtherAddress(addr) => Ok(Self::OtherAddress(canonical_wire_addr(addr))),
            Self::Software(text) => {
                check_text_len(SOFTWARE, &text)?;
                Ok(Self::Software(text))
            }
            Self::ErrorCode { code, reason } => {
                if !(300..=699).contains(&code) {
                    return Err(EncodeError::InvalidErrorCode { code });
                }
                check_text_len(ERROR_CODE, &reason)?;
                Ok(Self::ErrorCode { code, reason })
            }
            Self::UnknownAttributes(types) => Ok(Self::UnknownAttributes(types)),
            Self::Other { typ, value } => {
                if INTERPRETED_TYPES.contains(&typ) {
                    return Err(EncodeError::ReservedAttributeType { typ });
                }
                Ok(Self::Other { typ, value })
            }
        }
    }

    /// Writes the whole attribute: header, value and zero padding.
    pub(crate) fn encode<B: BufMut>(&self, txid: &TransactionId, w: &mut Writer<'_, B>) {
        let len = self.value_len();
        w.put_attribute_header(self.typ(), wire_u16(len));
        match self {
            Self::MappedAddress(addr) | Self::OtherAddress(addr) => encode_address(*addr, w),
            Self::XorMappedAddress(addr) => encode_address(xor_address(*addr, txid), w),
            Self::Software(text) => w.put_slice(text.as_bytes()),
            Self::ErrorCode { code, reason } => {
                // 21 reserved zero bits, the 3-bit class (hundreds digit), then the number (code modulo 100).
                // `code` is in 300..=699 (checked by `validate`), so both fit in a byte.
                let class = u8::try_from(code / 100).unwrap_or(0);
                let number = u8::try_from(code % 100).unwrap_or(0);
                w.put_slice(&[0, 0, class, number]);
                w.put_slice(reason.as_bytes());
            }
            Self::UnknownAttributes(types) => {
                for typ in types {
                    w.put_u16(*typ);
                }
            }
            Self::Other { value, .. } => w.put_slice(value),
        }
        w.put_padding(len);
    }

    /// Decodes the value of an attribute of type `typ` (never FINGERPRINT, which the message codec handles).
    pub(crate) fn decode(typ: u16, value: &[u8], txid: &TransactionId) -> Result<Self, ParseError> {
        match typ {
            MAPPED_ADDRESS => decode_address(typ, value).map(Self::MappedAddress),
            OTHER_ADDRESS => decode_address(typ, value).map(Self::OtherAddress),
            XOR_MAPPED_ADDRESS => decode_address(typ, value)
                .map(|addr| Self::XorMappedAddress(xor_address(addr, txid))),
            SOFTWARE => decode_text(typ, value).map(Self::Software),
            ERROR_CODE => {
                let mut r = Reader::new(value);
                let Some([_, _, class_byte, number]) = r.array::<4>() else {
                    return Err(ParseError::BadAttributeLength {
                        typ,
                        length: wire_u16(value.len()),
                    });
                };
                // RFC 8489 section 14.8: "The Class represents the hundreds digit of the error code. The value
                // MUST be between 3 and 6. The Number represents the binary encoding of the error code modulo
                // 100, and its value MUST be between 0 and 99." The reserved bits are ignored on receipt.
                let class = class_byte & 0x07;
                if !(3..=6).contains(&class) || number > 99 {
                    return Err(ParseError::BadErrorCode { class, number });
                }
                let reason = decode_text(typ, value.get(4..).unwrap_or_default())?;
                let code = u16::from(class) * 100 + u16::from(number);
                Ok(Self::ErrorCode { code, reason })
            }
            UNKNOWN_ATTRIBUTES => {
                let pairs = value.chunks_exact(2);
                if !pairs.remainder().is_empty() {
                    return Err(ParseError::BadAttributeLength {
                        typ,
                        length: wire_u16(value.len()),
                    });
                }
                let types = pairs
                    .filter_map(|pair| pair.first_chunk::<2>())
                    .map(|pair| u16::from_be_bytes(*pair))
                    .collect();
                Ok(Self::UnknownAttributes(types))
            }
            _ => Ok(Self::Other {
                typ,
                value: value.to_vec(),
            }),
        }
    }
}

/// Whether an attribute type is comprehension-required (RFC 8489 section 14: 0x0000-0x7FFF).
pub fn is_comprehension_required(typ: u16) -> bool {
    typ < 0x8000
}

fn check_text_len(typ: u16, text: &str) -> Result<(), EncodeError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(EncodeError::TextTooLong {
            typ,
            length: text.len(),
            max: MAX_TEXT_LEN,
        });
    }
    Ok(())
}

fn decode_text(typ: u16, bytes: &[u8]) -> Result<String, ParseError> {
    if bytes.len() > MAX_TEXT_LEN {
        return Err(ParseError::TextTooLong {
            typ,
            length: bytes.len(),
            max: MAX_TEXT_LEN,
        });
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| ParseError::InvalidUtf8 { typ })
}

/// The address as the wire can carry it: IPv6 flow information and scope id dropped.
pub(crate) fn canonical_wire_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => addr,
        SocketAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, 0)),
    }
}

fn address_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

/// MAPPED-ADDRESS layout (RFC 8489 section 14.1): a zero byte, the family, the port, then 4 or 16 address bytes.
fn encode_address<B: BufMut>(addr: SocketAddr, w: &mut Writer<'_, B>) {
    let [p0, p1] = addr.port().to_be_bytes();
    match addr.ip() {
        IpAddr::V4(ip) => {
            let [a0, a1, a2, a3] = ip.octets();
            w.put_slice(&[0, FAMILY_IPV4, p0, p1, a0, a1, a2, a3]);
        }
        IpAddr::V6(ip) => {
            let mut value = [0u8; 20];
            let (head, octets) = value.split_at_mut(4);
            head.copy_from_slice(&[0, FAMILY_IPV6, p0, p1]);
            octets.copy_from_slice(&ip.octets());
            w.put_slice(&value);
        }
    }
}

fn decode_address(typ: u16, value: &[u8]) -> Result<SocketAddr, ParseError> {
    let bad_length = || ParseError::BadAttributeLength {
        typ,
        length: wire_u16(value.len()),
    };
    let mut r = Reader::new(value);
    // The first byte "MUST be set to 0 and MUST be ignored by receivers".
    let (Some(_), Some(family), Some(port)) = (r.u8(), r.u8(), r.u16()) else {
        return Err(bad_length());
    };
    let ip = match family {
        FAMILY_IPV4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>().ok_or_else(bad_length)?)),
        FAMILY_IPV6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>().ok_or_else(bad_length)?)),
        family => return Err(ParseError::BadAddressFamily { typ, family }),
    };
    if r.remaining() != 0 {
        return Err(bad_length());
    }
    Ok(SocketAddr::new(ip, port))
}

/// XORs an address as XOR-MAPPED-ADDRESS does (RFC 8489 section 14.2); the operation is its own inverse.
///
/// "X-Port is computed by XOR'ing the mapped port with the most significant 16 bits of the magic cookie. If the
/// IP address family is IPv4, X-Address is computed by XOR'ing the mapped IP address with the magic cookie. If
/// the IP address family is IPv6, X-Address is computed by XOR'ing the mapped IP address with the concatenation
/// of the magic cookie and the 96-bit transaction ID."
fn xor_address(addr: SocketAddr, txid: &TransactionId) -> SocketAddr {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let [c0, c1, _, _] = cookie;
    let port = addr.port() ^ u16::from_be_bytes([c0, c1]);
    let ip = match addr.ip() {
        IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(u32::from(ip) ^ MAGIC_COOKIE)),
        IpAddr::V6(ip) => {
            let mut key = [0u8; 16];
            let (key_cookie, key_txid) = key.split_at_mut(4);
            key_cookie.copy_from_slice(&cookie);
            key_txid.copy_from_slice(txid.as_bytes());
            IpAddr::V6(Ipv6Addr::from(u128::from(ip) ^ u128::from_be_bytes(key)))
        }
    };
    SocketAddr::new(ip, port)
}
