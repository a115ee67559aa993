//! The STUN message codec (RFC 8489 section 5): header, attributes, FINGERPRINT.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0 0|     STUN Message Type     |         Message Length        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Magic Cookie                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! |                     Transaction ID (96 bits)                  |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//!   message type:  M11 M10 M9 M8 M7 C1 M6 M5 M4 C0 M3 M2 M1 M0
//! ```
//!
//! The message length counts the bytes after the 20-byte header; it is always a multiple of 4.
//!
//! Invariants kept by [`Message`]: every attribute it holds was validated when added (or parsed), and the
//! attributes never take more than [`MAX_ATTRIBUTES_LEN`] bytes. Hence [`Message::encode`] cannot fail, and for
//! every message `m` this crate lets you build, `Message::parse(&m.to_bytes()) == Ok(m)`.

use std::fmt;
use std::net::SocketAddr;

use bytes::BufMut;

use crate::attr::{self, Attribute};
use crate::error::{EncodeError, ParseError};
use crate::wire::{Reader, Writer, padded, wire_u16};

/// The fixed value in bytes 4..8 of every STUN message since RFC 5389.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// The default STUN port for UDP and TCP (RFC 8489 section 18.6).
pub const DEFAULT_PORT: u16 = 3478;

/// Length of the STUN header.
pub const HEADER_LEN: usize = 20;

/// Most bytes the attributes of a [`Message`] may take, FINGERPRINT excluded.
///
/// The header's 16-bit length field counts attributes in multiples of 4, so at most 65532 bytes; 8 of those are
/// kept free for FINGERPRINT, so that [`Message::with_fingerprint`] can never make a message unencodable.
pub const MAX_ATTRIBUTES_LEN: usize = 65_532 - FINGERPRINT_ATTR_LEN;

/// "The value of the attribute is computed as the CRC-32 of the STUN message up to (but excluding) the
/// FINGERPRINT attribute itself, XOR'ed with the 32-bit value 0x5354554e." (RFC 8489 section 14.7)
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// FINGERPRINT header (4) plus its CRC-32 value (4).
const FINGERPRINT_ATTR_LEN: usize = 8;

/// A 96-bit STUN transaction id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId([u8; 12]);

impl TransactionId {
    /// A fresh id from a cryptographically secure random number generator, as RFC 8489 section 5 asks.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The id's bytes.
    pub const fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

impl From<[u8; 12]> for TransactionId {
    fn from(bytes: [u8; 12]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransactionId({self})")
    }
}

/// The class of a message: the C1 and C0 bits of the message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// 0b00: a request, answered by a response.
    Request,
    /// 0b01: an indication, never answered.
    Indication,
    /// 0b10: a success response.
    SuccessResponse,
    /// 0b11: an error response (carries ERROR-CODE).
    ErrorResponse,
}

impl Class {
    const fn bits(self) -> u16 {
        match self {
            Self::Request => 0b00,
            Self::Indication => 0b01,
            Self::SuccessResponse => 0b10,
            Self::ErrorResponse => 0b11,
        }
    }

    const fn from_bits(bits: u16) -> Self {
        match bits & 0b11 {
            0b00 => Self::Request,
            0b01 => Self::Indication,
            0b10 => Self::SuccessResponse,
            _ => Self::ErrorResponse,
        }
    }

    /// Whether this is a success or an error response.
    pub const fn is_response(self) -> bool {
        matches!(self, Self::SuccessResponse | Self::ErrorResponse)
    }
}

/// A 12-bit STUN method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(u16);

impl Method {
    /// The Binding method (0x001), the only one RFC 8489 defines.
    pub const BINDING: Self = Self(0x001);

    /// The method with this 12-bit value, or `None` if it does not fit in 12 bits.
    pub const fn new(value: u16) -> Option<Self> {
        if value <= 0x0FFF {
            Some(Self(value))
        } else {
            None
        }
    }

    /// The 12-bit value.
    pub const fn value(self) -> u16 {
        self.0
    }
}

/// Interleaves method and class into the 14-bit message type: M11..M7 C1 M6..M4 C0 M3..M0.
const fn message_type(class: Class, method: Method) -> u16 {
    let m = method.0;
    let c = class.bits();
    (m & 0x000F) | ((c & 0b01) << 4) | ((m & 0x0070) << 1) | ((c & 0b10) << 7) | ((m & 0x0F80) << 2)
}

/// Splits a 14-bit message type into class and method (the inverse of [`message_type`]).
const fn split_message_type(typ: u16) -> (Class, Method) {
    let m = (typ & 0x000F) | ((typ >> 1) & 0x0070) | ((typ >> 2) & 0x0F80);
    let c = ((typ >> 4) & 0b01) | ((typ >> 7) & 0b10);
    (Class::from_bits(c), Method(m))
}

/// A header that passed the checks of [`check_header`].
struct Header<'a> {
    typ: u16,
    transaction_id: TransactionId,
    body: &'a [u8],
}

/// The single up-front check of a packet: header present, top bits zero, magic cookie, and a length that is a
/// multiple of 4 and matches the packet exactly.
fn check_header(packet: &[u8]) -> Result<Header<'_>, ParseError> {
    let Some((header, body)) = packet.split_first_chunk::<HEADER_LEN>() else {
        return Err(ParseError::TooShort { len: packet.len() });
    };
    let [t0, t1, l0, l1, c0, c1, c2, c3, txid @ ..] = *header;
    // RFC 8489 section 5: "The most significant 2 bits of every STUN message MUST be zeroes."
    if t0 & 0xC0 != 0 {
        return Err(ParseError::NotStun { first_byte: t0 });
    }
    let cookie = u32::from_be_bytes([c0, c1, c2, c3]);
    if cookie != MAGIC_COOKIE {
        return Err(ParseError::BadMagicCookie { found: cookie });
    }
    let length = u16::from_be_bytes([l0, l1]);
    // "Since all STUN attributes are padded to a multiple of 4 bytes, the last 2 bits of this field are always
    // zero."
    if length % 4 != 0 {
        return Err(ParseError::UnalignedLength { length });
    }
    if usize::from(length) != body.len() {
        return Err(ParseError::LengthMismatch {
            header: length,
            actual: body.len(),
        });
    }
    Ok(Header {
        typ: u16::from_be_bytes([t0, t1]),
        transaction_id: TransactionId(txid),
        body,
    })
}

/// A cheap test of whether a datagram is a STUN message, for demultiplexing a socket shared with other protocols.
///
/// True when the packet has a 20-byte header whose top two bits are zero, the magic cookie, and a message length
/// that is a multiple of 4 and equals the bytes after the header. Attributes (and FINGERPRINT) are not examined,
/// so [`Message::parse`] may still reject the packet; it never accepts one that this rejects. Does not allocate.
pub fn is_stun(packet: &[u8]) -> bool {
    check_header(packet).is_ok()
}

/// The transaction id of a packet that passes [`is_stun`], without parsing its attributes.
pub fn peek_transaction_id(packet: &[u8]) -> Option<TransactionId> {
    check_header(packet).ok().map(|h| h.transaction_id)
}

/// A STUN message: header fields, attributes in wire order, and whether it carries a FINGERPRINT.
///
/// Build one with [`Message::new`] or a Binding constructor and [`Message::push_attribute`]; every check happens
/// there, so [`Message::encode`] is infallible.
///
/// When an attribute type appears more than once, the getters return the first occurrence, as RFC 8489 section
/// 14 asks ("only the first occurrence needs to be processed"); [`Message::attributes`] has them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    class: Class,
    method: Method,
    transaction_id: TransactionId,
    attributes: Vec<Attribute>,
    /// Bytes the attributes take on the wire (always `<= MAX_ATTRIBUTES_LEN`); a function of `attributes`.
    attributes_len: usize,
    fingerprint: bool,
}

impl Message {
    /// An empty message without FINGERPRINT.
    pub fn new(class: Class, method: Method, transaction_id: TransactionId) -> Self {
        Self {
            class,
            method,
            transaction_id,
            attributes: Vec::new(),
            attributes_len: 0,
            fingerprint: false,
        }
    }

    /// A Binding request with no attributes.
    pub fn binding_request(transaction_id: TransactionId) -> Self {
        Self::new(Class::Request, Method::BINDING, transaction_id)
    }

    /// A Binding success response carrying `observed` (the address the request came from) in XOR-MAPPED-ADDRESS.
    ///
    /// IPv6 flow information and scope id are not carried on the wire and are cleared.
    pub fn binding_success(transaction_id: TransactionId, observed: SocketAddr) -> Self {
        let mut msg = Self::new(Class::SuccessResponse, Method::BINDING, transaction_id);
        let attr = Attribute::XorMappedAddress(attr::canonical_wire_addr(observed));
        msg.attributes_len = attr.encoded_len();
        msg.attributes.push(attr);
        msg
    }

    /// A Binding error response with an ERROR-CODE.
    ///
    /// Fails if `code` is outside 300..=699 or `reason` is longer than [`attr::MAX_TEXT_LEN`] bytes.
    pub fn binding_error(
        transaction_id: TransactionId,
        code: u16,
        reason: impl Into<String>,
    ) -> Result<Self, EncodeError> {
        let mut msg = Self::new(Class::ErrorResponse, Method::BINDING, transaction_id);
        msg.push_attribute(Attribute::ErrorCode {
            code,
            reason: reason.into(),
        })?;
        Ok(msg)
    }

    /// Adds a SOFTWARE attribute. Fails if it is longer than [`attr::MAX_TEXT_LEN`] bytes.
    pub fn with_software(mut self, software: impl Into<String>) -> Result<Self, EncodeError> {
        self.push_attribute(Attribute::Software(software.into()))?;
        Ok(self)
    }

    /// Sets whether [`Message::encode`] appends a FINGERPRINT attribute (always last).
    pub fn with_fingerprint(mut self, fingerprint: bool) -> Self {
        self.fingerprint = fingerprint;
        self
    }

    /// Appends an attribute, after checking that it can be encoded faithfully.
    ///
    /// Fails on text longer than [`attr::MAX_TEXT_LEN`] bytes, an error code outside 300..=699, an
    /// [`Attribute::Other`] whose type is one of [`attr::INTERPRETED_TYPES`], or attributes that would exceed
    /// [`MAX_ATTRIBUTES_LEN`] bytes. IPv6 addresses lose their flow information and scope id. On error the message
    /// is unchanged.
    pub fn push_attribute(&mut self, attribute: Attribute) -> Result<(), EncodeError> {
        let attribute = attribute.validate()?;
        let length = self.attributes_len + attribute.encoded_len();
        if length > MAX_ATTRIBUTES_LEN {
            return Err(EncodeError::MessageTooLong {
                length,
                max: MAX_ATTRIBUTES_LEN,
            });
        }
        self.attributes_len = length;
        self.attributes.push(attribute);
        Ok(())
    }

    /// The message class.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The message method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        self.transaction_id
    }

    /// The attributes in wire order (FINGERPRINT excluded).
    pub fn attributes(&self) -> &[Attribute] {
        &self.attributes
    }

    /// Whether the message carries (when parsed: carried a valid) FINGERPRINT.
    pub fn fingerprint(&self) -> bool {
        self.fingerprint
    }

    /// The first XOR-MAPPED-ADDRESS.
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::XorMappedAddress(addr) => Some(*addr),
            _ => None,
        })
    }

    /// The first MAPPED-ADDRESS.
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::MappedAddress(addr) => Some(*addr),
            _ => None,
        })
    }

    /// The first OTHER-ADDRESS (RFC 5780): where the server also answers.
    pub fn other_address(&self) -> Option<SocketAddr> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::OtherAddress(addr) => Some(*addr),
            _ => None,
        })
    }

    /// The first SOFTWARE text.
    pub fn software(&self) -> Option<&str> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Software(text) => Some(text.as_str()),
            _ => None,
        })
    }

    /// The first ERROR-CODE, as its code and reason phrase.
    pub fn error_code(&self) -> Option<(u16, &str)> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::ErrorCode { code, reason } => Some((*code, reason.as_str())),
            _ => None,
        })
    }

    /// The first UNKNOWN-ATTRIBUTES list.
    pub fn unknown_attributes(&self) -> Option<&[u16]> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::UnknownAttributes(types) => Some(types.as_slice()),
            _ => None,
        })
    }

    /// The comprehension-required attribute types (below 0x8000) that this crate does not interpret, sorted and
    /// without duplicates: what a 420 (Unknown Attribute) response lists.
    ///
    /// MESSAGE-INTEGRITY and USERNAME are among them: this crate implements no authentication.
    pub fn unknown_comprehension_required(&self) -> Vec<u16> {
        let mut types: Vec<u16> = self
            .attributes
            .iter()
            .filter_map(|a| match a {
                Attribute::Other { typ, .. } if attr::is_comprehension_required(*typ) => Some(*typ),
                _ => None,
            })
            .collect();
        types.sort_unstable();
        types.dedup();
        types
    }

    /// Bytes [`Message::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// The header's message length: everything after the header, FINGERPRINT included.
    fn body_len(&self) -> usize {
        let fingerprint = if self.fingerprint {
            FINGERPRINT_ATTR_LEN
        } else {
            0
        };
        self.attributes_len + fingerprint
    }

    /// Writes the message, padding each attribute with zero bytes and appending FINGERPRINT last if enabled.
    ///
    /// Writes exactly [`Message::encoded_len`] bytes. Like any [`BufMut`] write, panics if `buf` cannot grow to
    /// hold them (a `Vec` always can).
    pub fn encode(&self, buf: &mut impl BufMut) {
        let mut w = Writer::new(buf, self.fingerprint);
        let mut header = [0u8; HEADER_LEN];
        let (fixed, txid) = header.split_at_mut(8);
        let [t0, t1] = message_type(self.class, self.method).to_be_bytes();
        let [l0, l1] = wire_u16(self.body_len()).to_be_bytes();
        let [c0, c1, c2, c3] = MAGIC_COOKIE.to_be_bytes();
        fixed.copy_from_slice(&[t0, t1, l0, l1, c0, c1, c2, c3]);
        txid.copy_from_slice(self.transaction_id.as_bytes());
        w.put_slice(&header);
        for attribute in &self.attributes {
            attribute.encode(&self.transaction_id, &mut w);
        }
        if self.fingerprint {
            // The header length written above already counts the FINGERPRINT attribute, as RFC 8489 section 14.7
            // requires of the bytes the CRC covers.
            let value = w.crc() ^ FINGERPRINT_XOR;
            w.put_attribute_header(attr::FINGERPRINT, 4);
            w.put_slice(&value.to_be_bytes());
        }
    }

    /// The encoded message in a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf
    }

    /// Parses one STUN message, which must fill `packet` exactly.
    ///
    /// Never panics. A FINGERPRINT, if present, is verified and must be the last attribute. Padding bytes are
    /// ignored. See [`ParseError`] for what is rejected.
    pub fn parse(packet: &[u8]) -> Result<Self, ParseError> {
        let Header {
            typ,
            transaction_id,
            body,
        } = check_header(packet)?;
        let (class, method) = split_message_type(typ);
        let mut msg = Self::new(class, method, transaction_id);

        let mut r = Reader::new(body);
        while r.remaining() > 0 {
            let offset = packet.len() - r.remaining();
            // The body length is a multiple of 4 and so is every padded attribute, so at least 4 bytes remain
            // here; the `else` only keeps this free of panics.
            let (Some(attr_type), Some(length)) = (r.u16(), r.u16()) else {
                return Err(ParseError::TruncatedAttribute {
                    typ: 0,
                    offset,
                    length: 0,
                    available: r.remaining(),
                });
            };
            // RFC 8489 section 14.7: "When present, the FINGERPRINT attribute MUST be the last attribute in the
            // message."
            if msg.fingerprint {
                return Err(ParseError::AttributeAfterFingerprint { typ: attr_type });
            }
            let available = r.remaining();
            let Some(padded_value) = r.take(padded(usize::from(length))) else {
                return Err(ParseError::TruncatedAttribute {
                    typ: attr_type,
                    offset,
                    length,
                    available,
                });
            };
            let value = padded_value.get(..usize::from(length)).unwrap_or_default();

            if attr_type == attr::FINGERPRINT {
                let Some(actual) = Reader::new(value).u32().filter(|_| length == 4) else {
                    return Err(ParseError::BadAttributeLength {
                        typ: attr_type,
                        length,
                    });
                };
                // "the CRC-32 of the STUN message up to (but excluding) the FINGERPRINT attribute itself": the
                // bytes before this attribute, whose header length field already counts the FINGERPRINT.
                let covered = packet.get(..offset).unwrap_or_default();
                let expected = crc32fast::hash(covered) ^ FINGERPRINT_XOR;
                if expected != actual {
                    return Err(ParseError::FingerprintMismatch { expected, actual });
                }
                msg.fingerprint = true;
                continue;
            }

            let attribute = Attribute::decode(attr_type, value, &transaction_id)?;
            msg.attributes_len += 4 + padded_value.len();
            msg.attributes.push(attribute);
        }

        if msg.attributes_len > MAX_ATTRIBUTES_LEN {
            return Err(ParseError::MessageTooLong {
                length: msg.attributes_len,
                max: MAX_ATTRIBUTES_LEN,
            });
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests;
