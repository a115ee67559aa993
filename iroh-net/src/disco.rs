//! Disco: the sealed ping / pong / call-me-maybe messages that find and confirm direct paths between nodes.
//!
//! # Packet
//!
//! ```text
//! +-----------+----------------+-------------+---------------------------------+---------+
//! | magic (6) | sender id (32) | nonce (24)  | ciphertext of the plaintext     | tag (16)|
//! +-----------+----------------+-------------+---------------------------------+---------+
//!                              \___ iroh_base::SharedSecret::seal(plaintext) ____________/
//!
//! plaintext = type (u8) · version (u8) · body
//!   Ping        type 1   tx_id (12)
//!   Pong        type 2   tx_id (12) · observed address
//!   CallMeMaybe type 3   count (u8, at most 32) · count addresses · flags (u8, version 2)
//!                        · reflexive address (version 2, present when flags bit 1 is set)
//!   Predict     type 4   IP (family · 4 or 16 bytes)                               (version 2)
//! address   = family (u8: 4 or 6) · IP (4 or 16) · port (u16 big-endian)      (7 or 19 bytes)
//! flags     = bit 0: the sender's NAT maps each destination to another port ("hard", symmetric)
//!             bit 1: a reflexive address follows: the sender's public address, the same towards every
//!                    destination (an "easy" NAT), from which its probes for port prediction will come
//!             bits 2..=7: reserved; kept as received, meaning nothing to this version
//! ```
//!
//! A `Predict` goes through the relay from a node behind a hard NAT that has just opened a set of extra
//! sockets towards the receiver's reflexive address: "probe random ports of this IP of mine now" (see
//! [`crate::paths`] for port prediction).
//!
//! The box is `crypto_box` (X25519 derived from both nodes' ed25519 keys, XChaCha20-Poly1305): only the
//! sender and the receiver can read or forge it. The sender's NodeId is in the clear so that the receiver can
//! pick the [`SharedSecret`] to open with ([`sender`], then [`open`]); it is authenticated all the same,
//! because a box opens only under the secret of the node that really sealed it. It is therefore not repeated
//! inside the plaintext. Sealing does not stop replays: a replayed ping is answered again, and the path layer
//! only acts on pongs whose `tx_id` it is waiting for.
//!
//! # The magic, and why it cannot be mistaken for QUIC or STUN
//!
//! Disco shares its UDP socket (and the relay) with QUIC and STUN; [`crate::magicsock::demux`] tells them
//! apart by the first bytes. The magic's first byte has its top two bits `10`:
//!
//! - STUN: "The most significant 2 bits of every STUN message MUST be zeroes" (RFC 8489 section 5): `00`.
//! - QUIC long header (RFC 9000 section 17.2): Header Form `1`, then "Fixed Bit: The next bit (0x40) of
//!   byte 0 is set to 1, unless the packet is a Version Negotiation packet": `11`.
//! - QUIC short header (RFC 9000 section 17.3.1): Header Form `0`, Fixed Bit `1`: `01`. A stateless reset
//!   (section 10.3) also starts `01`.
//! - A Version Negotiation packet may start `10`, but its next four bytes are the version `0x00000000`, and
//!   the magic's bytes 1..=4 are the ASCII `disc`, so the full 6-byte magic never matches one.
//!
//! The fixed bit holds only while nobody greases it: RFC 9287 lets an endpoint that *advertised*
//! `grease_quic_bit` receive packets with that bit cleared (a short header would then start `00` like STUN,
//! a long header `10` like disco). Our endpoints therefore never advertise it (quinn's
//! `EndpointConfig::grease_quic_bit(false)`), so no peer of ours clears it. (In RFC 7983's demultiplexing
//! table the range 128..=191 belongs to RTP/RTCP, which this socket never carries.)
//!
//! # Versions
//!
//! [`VERSION`] is 2 (version 2 added the call-me-maybe's flags and reflexive address, and `Predict`). A
//! message of a known type at version 1 or 2 must have exactly that version's body; at a higher version its
//! version-2 fields are read and anything after them ignored, so a newer node may append fields without
//! breaking older ones. A version-1 call-me-maybe has no flags (it reads as no NAT hint), and a version-1
//! node reads a version-2 one as its addresses alone and counts a `Predict` as an unknown type. An unknown type is [`DiscoError::UnknownType`], which the caller counts and ignores.
//! Version 0 is invalid.
//!
//! # Codec rules
//!
//! Parsing works on byte slices, checks the packet length once up front (at least [`MIN_PACKET_LEN`], at most
//! [`MAX_PACKET_LEN`]) and never panics; every field read is bounds-checked. IPv6 flow labels and scope ids
//! are not sent (they mean nothing to the peer) and parse as zero.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
};

use bytes::BufMut;
use iroh_base::{
    KeyParsingError, NodeId, OpenError, PUBLIC_KEY_LENGTH, PublicKey, SharedSecret,
    sealed::SEAL_OVERHEAD,
};

/// The 6 bytes every disco packet starts with: `0x9c` (top bits `10`) and ASCII `disco`.
pub const MAGIC: [u8; 6] = [0x9c, b'd', b'i', b's', b'c', b'o'];
/// The version of the plaintext encoding this code writes.
pub const VERSION: u8 = 2;
/// The most addresses a [`CallMeMaybe`] carries.
pub const MAX_ADDRS: usize = 32;
/// Length of a transaction id.
pub const TX_ID_LENGTH: usize = 12;

/// Magic and sender: the unsealed part of a packet.
pub const HEADER_LEN: usize = MAGIC.len() + PUBLIC_KEY_LENGTH;
/// Type and version: the start of every plaintext.
const PLAINTEXT_HEADER_LEN: usize = 2;
/// The longest encoded socket address (IPv6).
const MAX_ADDR_LEN: usize = 1 + 16 + 2;
/// The longest plaintext this version writes: a full [`CallMeMaybe`] of IPv6 addresses, with flags and an
/// IPv6 reflexive address.
pub const MAX_PLAINTEXT_LEN: usize =
    PLAINTEXT_HEADER_LEN + 1 + MAX_ADDRS * MAX_ADDR_LEN + 1 + MAX_ADDR_LEN;
/// The shortest packet that can be valid.
pub const MIN_PACKET_LEN: usize = HEADER_LEN + SEAL_OVERHEAD + PLAINTEXT_HEADER_LEN;
/// The longest packet accepted: one UDP payload in the IPv6 minimum MTU (1280 - 40 - 8), so no disco
/// packet ever needs fragmenting. This version writes at most 709 bytes; the rest is room for newer ones.
pub const MAX_PACKET_LEN: usize = 1232;

const TYPE_PING: u8 = 1;
const TYPE_PONG: u8 = 2;
const TYPE_CALL_ME_MAYBE: u8 = 3;
const TYPE_PREDICT: u8 = 4;
/// Call-me-maybe flag: the sender's mapping varies by destination.
const FLAG_MAPPING_VARIES: u8 = 1;
/// Call-me-maybe flag: a reflexive address follows the flags.
const FLAG_REFLEXIVE: u8 = 2;
const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

/// A disco packet or plaintext that could not be read. All variants are the sender's fault (or a
/// corruption, or not disco at all); none is ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoError {
    /// Shorter than the smallest valid packet or plaintext.
    #[error("too short: {len} bytes, at least {min} needed")]
    TooShort {
        /// Bytes received.
        len: usize,
        /// Bytes needed.
        min: usize,
    },
    /// Longer than [`MAX_PACKET_LEN`].
    #[error("too long: {0} bytes, at most {MAX_PACKET_LEN} allowed")]
    TooLong(usize),
    /// Does not start with [`MAGIC`]: not a disco packet.
    #[error("not a disco packet: bad magic")]
    BadMagic,
    /// The sender field is not a valid ed25519 public key.
    #[error("invalid sender key: {0}")]
    InvalidSender(KeyParsingError),
    /// The box did not open: forged, corrupted, sealed for another node, or the sender field was changed.
    #[error("sealed box did not open: {0}")]
    Open(OpenError),
    /// A message type this version does not know, presumably from a newer peer. Count it and ignore it.
    #[error("unknown message type {typ} (version {version})")]
    UnknownType {
        /// The type byte.
        typ: u8,
        /// The version byte.
        version: u8,
    },
    /// Version 0, which no encoding ever used.
    #[error("invalid version 0 for message type {typ}")]
    InvalidVersion {
        /// The type byte.
        typ: u8,
    },
    /// The body of a known message type has the wrong length for it.
    #[error("message type {typ}: body of {len} bytes has the wrong length")]
    BadBodyLength {
        /// The type byte.
        typ: u8,
        /// The body length.
        len: usize,
    },
    /// An address with a family tag other than 4 or 6.
    #[error("unknown address family {0}")]
    BadAddressFamily(u8),
    /// A [`CallMeMaybe`] with more than [`MAX_ADDRS`] addresses.
    #[error("{0} addresses, at most {MAX_ADDRS} allowed")]
    TooManyAddresses(usize),
}

/// A transaction id: pairs a [`Pong`] with the [`Ping`] it answers. Random, so that pongs cannot be guessed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId([u8; TX_ID_LENGTH]);

impl TxId {
    /// A fresh random id from the thread-local CSPRNG.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// A random id from the given generator (for deterministic tests).
    pub fn random_from(rng: &mut impl rand::Rng) -> Self {
        Self(rng.r#gen())
    }

    /// The id with these bytes.
    pub const fn from_bytes(bytes: [u8; TX_ID_LENGTH]) -> Self {
        Self(bytes)
    }

    /// The 12 bytes.
    pub const fn as_bytes(&self) -> &[u8; TX_ID_LENGTH] {
        &self.0
    }
}

impl fmt::Debug for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TxId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// "Are you there on this path?" Sent directly to each candidate address (and via the relay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ping {
    /// Echoed in the [`Pong`].
    pub tx_id: TxId,
}

/// The answer to a [`Ping`], sent back to the address the ping came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pong {
    /// The ping's transaction id.
    pub tx_id: TxId,
    /// The address the ping came from, as the receiver saw it: the pinger's reflexive address on that path.
    pub observed: SocketAddr,
}

/// "Ping me on these addresses now": sent via the relay to start holepunching from both sides. Since
/// version 2 it also tells what kind of NAT the sender is behind (see [`NatHint`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CallMeMaybe {
    addrs: Vec<SocketAddr>,
    /// The flags byte as sent, reserved bits included (bit 1 always matches `reflexive`).
    flags: u8,
    reflexive: Option<SocketAddr>,
}

/// What a node says about its NAT in a [`CallMeMaybe`], for port prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NatHint {
    /// The node's NAT maps each destination to another public port (endpoint-dependent mapping, a
    /// "symmetric" NAT): a peer cannot know its port in advance.
    pub mapping_varies: bool,
    /// The node's public address, which it found to be the same towards every destination (an
    /// endpoint-independent mapping): its packets to any port of ours leave from there.
    pub reflexive: Option<SocketAddr>,
}

/// "My prediction sockets are open towards your reflexive address: probe random ports of `ip`", sent by a
/// node behind a hard NAT through the relay (see [`crate::paths`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Predict {
    /// The sender's public IP, whose ports are to be probed.
    pub ip: IpAddr,
}

impl CallMeMaybe {
    /// A call-me-maybe with these addresses, if there are at most [`MAX_ADDRS`].
    pub fn new(addrs: Vec<SocketAddr>) -> Result<Self, DiscoError> {
        if addrs.len() > MAX_ADDRS {
            return Err(DiscoError::TooManyAddresses(addrs.len()));
        }
        Ok(Self {
            addrs,
            ..Self::default()
        })
    }

    /// A call-me-maybe with the first [`MAX_ADDRS`] of `addrs` (put the best candidates first).
    pub fn truncating(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            addrs: addrs.into_iter().take(MAX_ADDRS).collect(),
            ..Self::default()
        }
    }

    /// The same with this NAT hint (replacing any other; reserved flag bits are cleared).
    pub fn with_nat(mut self, hint: NatHint) -> Self {
        self.flags = if hint.mapping_varies {
            FLAG_MAPPING_VARIES
        } else {
            0
        };
        if hint.reflexive.is_some() {
            self.flags |= FLAG_REFLEXIVE;
        }
        self.reflexive = hint.reflexive;
        self
    }

    /// What the sender says about its NAT (nothing from a version-1 sender).
    pub fn nat(&self) -> NatHint {
        NatHint {
            mapping_varies: self.flags & FLAG_MAPPING_VARIES != 0,
            reflexive: self.reflexive,
        }
    }

    /// The addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The addresses, owned.
    pub fn into_addrs(self) -> Vec<SocketAddr> {
        self.addrs
    }
}

/// A disco message: what a packet carries once opened.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// See [`Ping`].
    Ping(Ping),
    /// See [`Pong`].
    Pong(Pong),
    /// See [`CallMeMaybe`].
    CallMeMaybe(CallMeMaybe),
    /// See [`Predict`].
    Predict(Predict),
}

impl Message {
    /// The type byte on the wire.
    fn typ(&self) -> u8 {
        match self {
            Self::Ping(_) => TYPE_PING,
            Self::Pong(_) => TYPE_PONG,
            Self::CallMeMaybe(_) => TYPE_CALL_ME_MAYBE,
            Self::Predict(_) => TYPE_PREDICT,
        }
    }

    /// Length of the plaintext encoding ([`Message::encode_plaintext`]), at most [`MAX_PLAINTEXT_LEN`].
    pub fn encoded_len(&self) -> usize {
        PLAINTEXT_HEADER_LEN
            + match self {
                Self::Ping(_) => TX_ID_LENGTH,
                Self::Pong(pong) => TX_ID_LENGTH + addr_len(&pong.observed),
                Self::CallMeMaybe(cmm) => {
                    1 + cmm.addrs.iter().map(addr_len).sum::<usize>()
                        + 1
                        + cmm.reflexive.as_ref().map_or(0, addr_len)
                }
                Self::Predict(predict) => ip_len(&predict.ip),
            }
    }

    /// Writes the plaintext: `type · version · body`, [`Message::encoded_len`] bytes.
    ///
    /// Panics only if `buf` has less room than that (a `Vec` always has room).
    pub fn encode_plaintext(&self, buf: &mut impl BufMut) {
        buf.put_u8(self.typ());
        buf.put_u8(VERSION);
        match self {
            Self::Ping(ping) => buf.put_slice(&ping.tx_id.0),
            Self::Pong(pong) => {
                buf.put_slice(&pong.tx_id.0);
                put_addr(buf, &pong.observed);
            }
            Self::CallMeMaybe(cmm) => {
                // `CallMeMaybe` never holds more than MAX_ADDRS (32), so the count fits a byte.
                buf.put_u8(u8::try_from(cmm.addrs.len()).unwrap_or(u8::MAX));
                for addr in &cmm.addrs {
                    put_addr(buf, addr);
                }
                buf.put_u8(cmm.flags);
                if let Some(reflexive) = &cmm.reflexive {
                    put_addr(buf, reflexive);
                }
            }
            Self::Predict(predict) => put_ip(buf, &predict.ip),
        }
    }

    /// The plaintext as a new vector.
    pub fn to_plaintext(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_plaintext(&mut out);
        out
    }

    /// Reads a plaintext (what [`Message::encode_plaintext`] writes, or a newer version's). Never panics.
    pub fn parse_plaintext(plaintext: &[u8]) -> Result<Self, DiscoError> {
        let [typ, version, body @ ..] = plaintext else {
            return Err(DiscoError::TooShort {
                len: plaintext.len(),
                min: PLAINTEXT_HEADER_LEN,
            });
        };
        let (typ, version) = (*typ, *version);
        if !matches!(
            typ,
            TYPE_PING | TYPE_PONG | TYPE_CALL_ME_MAYBE | TYPE_PREDICT
        ) {
            return Err(DiscoError::UnknownType { typ, version });
        }
        if version == 0 {
            return Err(DiscoError::InvalidVersion { typ });
        }
        let mut reader = Reader {
            typ,
            body_len: body.len(),
            rest: body,
        };
        let message = match typ {
            TYPE_PING => Self::Ping(Ping {
                tx_id: reader.tx_id()?,
            }),
            TYPE_PONG => Self::Pong(Pong {
                tx_id: reader.tx_id()?,
                observed: reader.addr()?,
            }),
            TYPE_PREDICT => Self::Predict(Predict { ip: reader.ip()? }),
            _ => {
                let count = usize::from(reader.byte()?);
                if count > MAX_ADDRS {
                    return Err(DiscoError::TooManyAddresses(count));
                }
                let addrs = (0..count)
                    .map(|_| reader.addr())
                    .collect::<Result<_, _>>()?;
                let (flags, reflexive) = if version >= 2 {
                    let flags = reader.byte()?;
                    let reflexive = if flags & FLAG_REFLEXIVE != 0 {
                        Some(reader.addr()?)
                    } else {
                        None
                    };
                    (flags, reflexive)
                } else {
                    (0, None)
                };
                Self::CallMeMaybe(CallMeMaybe {
                    addrs,
                    flags,
                    reflexive,
                })
            }
        };
        // The fields of the message's version are all read. Versions this code knows must end here; a
        // newer one may append.
        if version <= VERSION && !reader.rest.is_empty() {
            return Err(DiscoError::BadBodyLength {
                typ,
                len: body.len(),
            });
        }
        Ok(message)
    }
}

/// Whether `packet` starts with the disco [`MAGIC`]. Cheap: the one test demultiplexing needs.
pub fn looks_like_disco(packet: &[u8]) -> bool {
    packet.starts_with(&MAGIC)
}

/// The packet's claimed sender, to choose the [`SharedSecret`] to [`open`] it with. Checks the length and
/// magic; the claim is proven only when the box opens.
pub fn sender(packet: &[u8]) -> Result<NodeId, DiscoError> {
    let header = check_packet(packet)?;
    let key = &header[MAGIC.len()..];
    PublicKey::try_from_slice(key).map_err(DiscoError::InvalidSender)
}

/// Opens a packet with the secret shared with its [`sender`] and parses the message inside.
pub fn open(packet: &[u8], secret: &SharedSecret) -> Result<Message, DiscoError> {
    check_packet(packet)?;
    let plaintext = secret
        .open(&packet[HEADER_LEN..])
        .map_err(DiscoError::Open)?;
    Message::parse_plaintext(&plaintext)
}

/// Length of the sealed packet for `message`: [`HEADER_LEN`] + sealing overhead + plaintext.
pub fn sealed_len(message: &Message) -> usize {
    HEADER_LEN + SEAL_OVERHEAD + message.encoded_len()
}

/// Seals `message` from `sender` (our own NodeId) with the secret shared with the receiver.
pub fn seal(message: &Message, sender: &NodeId, secret: &SharedSecret) -> Vec<u8> {
    let mut out = Vec::with_capacity(sealed_len(message));
    seal_into(message, sender, secret, &mut out);
    out
}

/// Appends the sealed packet for `message` to `out` ([`sealed_len`] bytes), for callers reusing a buffer.
pub fn seal_into(message: &Message, sender: &NodeId, secret: &SharedSecret, out: &mut Vec<u8>) {
    out.reserve(sealed_len(message));
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(sender.as_bytes());
    let mut plaintext = [0u8; MAX_PLAINTEXT_LEN];
    let len = message.encoded_len();
    message.encode_plaintext(&mut &mut plaintext[..]);
    secret.seal_into(&plaintext[..len], out);
}

/// The one length check of a packet, and its magic; returns the header.
fn check_packet(packet: &[u8]) -> Result<&[u8], DiscoError> {
    if packet.len() < MIN_PACKET_LEN {
        return Err(DiscoError::TooShort {
            len: packet.len(),
            min: MIN_PACKET_LEN,
        });
    }
    if packet.len() > MAX_PACKET_LEN {
        return Err(DiscoError::TooLong(packet.len()));
    }
    if !looks_like_disco(packet) {
        return Err(DiscoError::BadMagic);
    }
    Ok(&packet[..HEADER_LEN])
}

fn addr_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => MAX_ADDR_LEN,
    }
}

fn ip_len(ip: &IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => 1 + 4,
        IpAddr::V6(_) => 1 + 16,
    }
}

fn put_ip(buf: &mut impl BufMut, ip: &IpAddr) {
    match ip {
        IpAddr::V4(ip) => {
            buf.put_u8(FAMILY_V4);
            buf.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            buf.put_u8(FAMILY_V6);
            buf.put_slice(&ip.octets());
        }
    }
}

fn put_addr(buf: &mut impl BufMut, addr: &SocketAddr) {
    put_ip(buf, &addr.ip());
    buf.put_u16(addr.port());
}

/// Bounds-checked reads from a plaintext body; running out is [`DiscoError::BadBodyLength`].
struct Reader<'a> {
    typ: u8,
    body_len: usize,
    rest: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DiscoError> {
        let Some((head, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(DiscoError::BadBodyLength {
                typ: self.typ,
                len: self.body_len,
            });
        };
        self.rest = rest;
        Ok(*head)
    }

    fn byte(&mut self) -> Result<u8, DiscoError> {
        Ok(self.take::<1>()?[0])
    }

    fn tx_id(&mut self) -> Result<TxId, DiscoError> {
        self.take().map(TxId)
    }

    fn ip(&mut self) -> Result<IpAddr, DiscoError> {
        match self.byte()? {
            FAMILY_V4 => Ok(IpAddr::V4(Ipv4Addr::from(self.take::<4>()?))),
            FAMILY_V6 => Ok(IpAddr::V6(Ipv6Addr::from(self.take::<16>()?))),
            family => Err(DiscoError::BadAddressFamily(family)),
        }
    }

    fn addr(&mut self) -> Result<SocketAddr, DiscoError> {
        let ip = self.ip()?;
        let port = u16::from_be_bytes(self.take()?);
        Ok(match ip {
            IpAddr::V4(ip) => SocketAddr::V4(SocketAddrV4::new(ip, port)),
            IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
        })
    }
}

#[cfg(test)]
mod tests;
