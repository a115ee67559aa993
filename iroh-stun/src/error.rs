//! Codec errors, split by who is at fault.
//!
//! - [`ParseError`]: the bytes on the wire are not a STUN message this crate accepts (the sender's fault, or not
//!   STUN at all). Receivers drop such packets.
//! - [`EncodeError`]: the caller tried to build a message that could not be encoded faithfully (the caller's
//!   fault). It is returned when the attribute is added, so that [`crate::Message::encode`] itself never fails.

/// Why [`crate::Message::parse`] rejected a packet.
///
/// Each variant is one fault, with the data needed to understand it from a log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The packet is shorter than the 20-byte STUN header.
    #[error("packet of {len} bytes is shorter than the 20-byte STUN header")]
    TooShort {
        /// Length of the packet.
        len: usize,
    },
    /// The two most significant bits of the message type are not zero, so this is not STUN.
    #[error("first byte {first_byte:#04x} has one of its top two bits set: not STUN")]
    NotStun {
        /// The first byte of the packet.
        first_byte: u8,
    },
    /// The magic cookie field does not hold 0x2112A442.
    #[error("magic cookie is {found:#010x}, expected 0x2112a442")]
    BadMagicCookie {
        /// The value found in the cookie field.
        found: u32,
    },
    /// The header's message length is not a multiple of 4 (every attribute is padded to 4 bytes).
    #[error("header message length {length} is not a multiple of 4")]
    UnalignedLength {
        /// The header's message length field.
        length: u16,
    },
    /// The header's message length does not equal the number of bytes after the header.
    #[error("header message length {header} does not match the {actual} bytes after the header")]
    LengthMismatch {
        /// The header's message length field.
        header: u16,
        /// Bytes actually present after the 20-byte header.
        actual: usize,
    },
    /// An attribute's (padded) value runs past the end of the message.
    #[error(
        "attribute {typ:#06x} at offset {offset} has a {length}-byte value but only {available} bytes remain"
    )]
    TruncatedAttribute {
        /// The attribute type.
        typ: u16,
        /// Offset of the attribute header from the start of the packet.
        offset: usize,
        /// The attribute's length field.
        length: u16,
        /// Bytes left in the message after the attribute header.
        available: usize,
    },
    /// An attribute's length is impossible for its type (an IPv4 address that is not 8 bytes, a FINGERPRINT
    /// that is not 4, an UNKNOWN-ATTRIBUTES list of odd length, ...).
    #[error("attribute {typ:#06x} has a length of {length}, which its type does not allow")]
    BadAttributeLength {
        /// The attribute type.
        typ: u16,
        /// The attribute's length field.
        length: u16,
    },
    /// An address attribute names a family other than 0x01 (IPv4) or 0x02 (IPv6).
    #[error("address attribute {typ:#06x} has unknown family {family:#04x}")]
    BadAddressFamily {
        /// The attribute type.
        typ: u16,
        /// The family byte found.
        family: u8,
    },
    /// A text attribute (SOFTWARE, the reason phrase of ERROR-CODE) is not valid UTF-8.
    #[error("text of attribute {typ:#06x} is not valid UTF-8")]
    InvalidUtf8 {
        /// The attribute type.
        typ: u16,
    },
    /// A text attribute is longer than RFC 8489 allows (763 bytes).
    #[error("text of attribute {typ:#06x} is {length} bytes, more than the {max} allowed")]
    TextTooLong {
        /// The attribute type.
        typ: u16,
        /// Length of the text in bytes.
        length: usize,
        /// The limit.
        max: usize,
    },
    /// An ERROR-CODE class is outside 3..=6 or its number outside 0..=99.
    #[error(
        "ERROR-CODE class {class} number {number} is out of range (class 3..=6, number 0..=99)"
    )]
    BadErrorCode {
        /// The 3-bit class (hundreds digit).
        class: u8,
        /// The number (code modulo 100).
        number: u8,
    },
    /// The FINGERPRINT attribute does not match the message.
    #[error("FINGERPRINT mismatch: computed {expected:#010x}, packet carries {actual:#010x}")]
    FingerprintMismatch {
        /// The value computed over the received message.
        expected: u32,
        /// The value the packet carries.
        actual: u32,
    },
    /// An attribute follows FINGERPRINT, which must be the last attribute.
    #[error("attribute {typ:#06x} follows FINGERPRINT, which must be the last attribute")]
    AttributeAfterFingerprint {
        /// Type of the first attribute after FINGERPRINT.
        typ: u16,
    },
    /// The attributes (FINGERPRINT excluded) take more room than a [`crate::Message`] may hold.
    #[error("attributes take {length} bytes, more than the {max} a message may hold")]
    MessageTooLong {
        /// Bytes taken by the attributes, FINGERPRINT excluded.
        length: usize,
        /// The limit, [`crate::message::MAX_ATTRIBUTES_LEN`].
        max: usize,
    },
}

/// Why an attribute could not be added to a [`crate::Message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A text attribute (SOFTWARE, an ERROR-CODE reason phrase) is longer than 763 bytes.
    #[error("text of attribute {typ:#06x} is {length} bytes, more than the {max} allowed")]
    TextTooLong {
        /// The attribute type.
        typ: u16,
        /// Length of the text in bytes.
        length: usize,
        /// The limit.
        max: usize,
    },
    /// An error code outside 300..=699.
    #[error("error code {code} is outside 300..=699")]
    InvalidErrorCode {
        /// The code given.
        code: u16,
    },
    /// [`crate::Attribute::Other`] was given a type this crate interprets itself; use the dedicated variant (or
    /// [`crate::Message::with_fingerprint`] for FINGERPRINT).
    #[error(
        "attribute type {typ:#06x} has a dedicated representation and cannot be used as a raw attribute"
    )]
    ReservedAttributeType {
        /// The attribute type given.
        typ: u16,
    },
    /// The message would grow past [`crate::message::MAX_ATTRIBUTES_LEN`] bytes of attributes.
    #[error("attributes would take {length} bytes, more than the {max} a message may hold")]
    MessageTooLong {
        /// Bytes the attributes would take.
        length: usize,
        /// The limit.
        max: usize,
    },
}
