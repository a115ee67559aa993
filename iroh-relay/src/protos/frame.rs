//! Relay protocol frames, version 1.
//!
//! After the HTTP upgrade the byte stream carries frames:
//!
//! ```text
//! +------+----------------+----------------------+
//! | type | length: u32 BE | body: `length` bytes |
//! | u8   |                |                      |
//! +------+----------------+----------------------+
//! ```
//!
//! | type | frame            | direction | body                                                       |
//! |------|------------------|-----------|------------------------------------------------------------|
//! | 1    | ServerChallenge  | S->C      | version u8 · nonce (32)                                    |
//! | 2    | ClientAuth       | C->S      | version u8 · node id (32) · signature (64)                 |
//! | 3    | ServerAccepted   | S->C      | empty                                                      |
//! | 4    | ServerDenied     | S->C      | reason u8 · UTF-8 text                                     |
//! | 5    | SendDatagrams    | C->S      | destination node id (32) · ECN u8 · segment size u16 · data |
//! | 6    | RecvDatagrams    | S->C      | source node id (32) · ECN u8 · segment size u16 · data     |
//! | 7    | Ping             | both      | 8 opaque bytes                                             |
//! | 8    | Pong             | both      | the 8 bytes of the ping                                    |
//! | 9    | KeepAlive        | both      | empty                                                      |
//! | 10   | NotePreferred    | C->S      | u8: 1 if this is the client's home relay, else 0           |
//! | 11   | PeerGone         | S->C      | node id (32)                                               |
//! | 12   | Status           | S->C      | code u8 · UTF-8 text                                       |
//!
//! A frame of a type this version does not know is reported as [`Frame::Unknown`] so the reader can skip it
//! (forward compatibility). A body longer than [`MAX_FRAME_BODY`] is an error that ends the connection: it
//! protects both sides from allocating whatever a peer claims.
//!
//! Parsing borrows nothing and never panics: [`Frame::decode`] works on a [`BytesMut`] read buffer and hands
//! out datagram payloads as [`Bytes`] views of it without copying; [`Frame::parse`] does the same over a slice.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use iroh_base::{NodeId, PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH, Signature};

/// Bytes of a frame header: type and length.
pub const HEADER_LEN: usize = 5;
/// The largest datagram payload one datagram frame carries (a GSO batch of QUIC packets).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Bytes before the payload in a datagram frame body: node id, ECN, segment size.
pub const DATAGRAM_META_LEN: usize = PUBLIC_KEY_LENGTH + 1 + 2;
/// The largest frame body accepted; anything claiming more ends the connection.
pub const MAX_FRAME_BODY: usize = DATAGRAM_META_LEN + MAX_PAYLOAD;
/// Length of the server's challenge nonce.
pub const NONCE_LEN: usize = 32;
/// Length of ping and pong payloads.
pub const PING_LEN: usize = 8;
/// Longest text (in bytes) in a ServerDenied or Status frame: the encoder cuts longer texts at a character
/// boundary and the parser rejects them.
pub const MAX_TEXT_LEN: usize = 1024;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Frame type numbers.
mod typ {
    pub(super) const SERVER_CHALLENGE: u8 = 1;
    pub(super) const CLIENT_AUTH: u8 = 2;
    pub(super) const SERVER_ACCEPTED: u8 = 3;
    pub(super) const SERVER_DENIED: u8 = 4;
    pub(super) const SEND_DATAGRAMS: u8 = 5;
    pub(super) const RECV_DATAGRAMS: u8 = 6;
    pub(super) const PING: u8 = 7;
    pub(super) const PONG: u8 = 8;
    pub(super) const KEEP_ALIVE: u8 = 9;
    pub(super) const NOTE_PREFERRED: u8 = 10;
    pub(super) const PEER_GONE: u8 = 11;
    pub(super) const STATUS: u8 = 12;
}

/// One relay protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// The server's first frame: the protocol version it speaks and a fresh random nonce to sign.
    ServerChallenge {
        /// Protocol version of the server.
        version: u8,
        /// Random bytes the client signs, so a captured login cannot be replayed.
        nonce: [u8; NONCE_LEN],
    },
    /// The client proves it holds the key of `node_id` by signing the challenge
    /// (see [`crate::protos::handshake::auth_message`]).
    ClientAuth {
        /// Protocol version of the client.
        version: u8,
        /// The node logging in.
        node_id: NodeId,
        /// Signature over the challenge.
        signature: Signature,
    },
    /// The server accepted the login; datagram frames may flow.
    ServerAccepted,
    /// The server refused the login and will close the connection.
    ServerDenied {
        /// Why, for programs.
        reason: DenyReason,
        /// Why, for people.
        message: String,
    },
    /// Client to server: deliver these datagrams to `dst`.
    SendDatagrams {
        /// The destination node.
        dst: NodeId,
        /// The datagrams.
        datagrams: Datagrams,
    },
    /// Server to client: datagrams from `src`.
    RecvDatagrams {
        /// The node that sent them.
        src: NodeId,
        /// The datagrams.
        datagrams: Datagrams,
    },
    /// Asks the other side to answer with a [`Frame::Pong`] carrying the same bytes (a latency probe).
    Ping([u8; PING_LEN]),
    /// Answers a [`Frame::Ping`].
    Pong([u8; PING_LEN]),
    /// Keeps the connection (and the NATs and proxies on its way) alive; needs no answer.
    KeepAlive,
    /// Client to server: whether this relay is the client's home relay.
    NotePreferred(bool),
    /// Server to client: a node the client had sent to is no longer connected.
    PeerGone(NodeId),
    /// Server to client: news about the connection.
    Status {
        /// What happened.
        code: StatusCode,
        /// Details for people.
        message: String,
    },
    /// A frame type this version does not know; readers skip it.
    Unknown {
        /// The frame type.
        typ: u8,
        /// Its body, uninterpreted.
        body: Bytes,
    },
}

/// A batch of datagrams in one frame.
///
/// With `segment_size` unset the payload is one datagram. With it set the payload is a GSO batch: datagrams
/// of `segment_size` bytes each, the last possibly shorter, as `quinn-udp` sends and receives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagrams {
    /// The ECN codepoint of the datagrams (the two low bits of the IP TOS byte).
    pub ecn: Ecn,
    /// Size of each datagram in a batch, or `None` for a single datagram.
    pub segment_size: Option<std::num::NonZeroU16>,
    /// The datagram bytes, at most [`MAX_PAYLOAD`].
    pub contents: Bytes,
}

impl Datagrams {
    /// A single datagram without ECN marking.
    pub fn single(contents: impl Into<Bytes>) -> Self {
        Self {
            ecn: Ecn::NotEct,
            segment_size: None,
            contents: contents.into(),
        }
    }

    /// Iterates over the datagrams in the batch.
    pub fn iter(&self) -> impl Iterator<Item = Bytes> + '_ {
        let size = self
            .segment_size
            .map_or(self.contents.len().max(1), |s| usize::from(s.get()));
        (0..self.contents.len()).step_by(size).map(move |start| {
            self.contents
                .slice(start..(start + size).min(self.contents.len()))
        })
    }
}

/// ECN codepoints (RFC 3168), as carried in datagram frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Ecn {
    /// Not ECN-capable transport.
    NotEct = 0b00,
    /// ECN-capable transport (1).
    Ect1 = 0b01,
    /// ECN-capable transport (0).
    Ect0 = 0b10,
    /// Congestion experienced.
    Ce = 0b11,
}

impl Ecn {
    /// The codepoint for the two low bits of `bits`.
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0b00 => Self::NotEct,
            0b01 => Self::Ect1,
            0b10 => Self::Ect0,
            _ => Self::Ce,
        }
    }
}

/// Why a server refused a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenyReason {
    /// The signature did not verify for the claimed node id.
    BadSignature,
    /// Access control refuses this node.
    NotAllowed,
    /// The client speaks a protocol version the server does not.
    UnsupportedVersion,
    /// The client did not follow the handshake (wrong frame).
    ProtocolViolation,
    /// A reason code from a newer version.
    Other(u8),
}

impl DenyReason {
    fn to_u8(self) -> u8 {
        match self {
            Self::BadSignature => 1,
            Self::NotAllowed => 2,
            Self::UnsupportedVersion => 3,
            Self::ProtocolViolation => 4,
            Self::Other(code) => code,
        }
    }

    fn from_u8(code: u8) -> Self {
        match code {
            1 => Self::BadSignature,
            2 => Self::NotAllowed,
            3 => Self::UnsupportedVersion,
            4 => Self::ProtocolViolation,
            other => Self::Other(other),
        }
    }
}

/// What a [`Frame::Status`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StatusCode {
    /// All is well (sent after a previous problem cleared).
    Healthy,
    /// Another connection logged in with the same node id; this one is being closed.
    SameNodeConnectedElsewhere,
    /// The client sends faster than its rate limit; the excess is being dropped.
    RateLimited,
    /// The server is shutting down or restarting; reconnect later.
    Restarting,
    /// A code from a newer version.
    Other(u8),
}

impl StatusCode {
    fn to_u8(self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::SameNodeConnectedElsewhere => 1,
            Self::RateLimited => 2,
            Self::Restarting => 3,
            Self::Other(code) => code,
        }
    }

    fn from_u8(code: u8) -> Self {
        match code {
            0 => Self::Healthy,
            1 => Self::SameNodeConnectedElsewhere,
            2 => Self::RateLimited,
            3 => Self::Restarting,
            other => Self::Other(other),
        }
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header announces a body longer than [`MAX_FRAME_BODY`].
    #[error("frame type {typ} announces {len} bytes, more than the maximum {MAX_FRAME_BODY}")]
    TooLarge {
        /// The frame type.
        typ: u8,
        /// The announced body length.
        len: u32,
    },
    /// The body length does not fit the frame type.
    #[error("frame type {typ} has a {len}-byte body, expected {expected}")]
    BadLength {
        /// The frame type.
        typ: u8,
        /// The body length.
        len: usize,
        /// What the type needs, for the message.
        expected: &'static str,
    },
    /// A node id that is not a valid public key.
    #[error("frame type {typ} carries an invalid node id")]
    InvalidNodeId {
        /// The frame type.
        typ: u8,
    },
    /// Text that is not UTF-8.
    #[error("frame type {typ} carries text that is not UTF-8")]
    InvalidText {
        /// The frame type.
        typ: u8,
    },
    /// Text longer than [`MAX_TEXT_LEN`].
    #[error("frame type {typ} carries {len} bytes of text, more than {MAX_TEXT_LEN}")]
    TextTooLong {
        /// The frame type.
        typ: u8,
        /// The text length.
        len: usize,
    },
    /// A NotePreferred byte other than 0 or 1.
    #[error("NotePreferred carries {0}, expected 0 or 1")]
    InvalidFlag(u8),
    /// A segment size of a datagram batch larger than its payload, or a batch without one.
    #[error("segment size {segment_size} does not fit a payload of {len} bytes")]
    BadSegmentSize {
        /// The segment size field.
        segment_size: u16,
        /// The payload length.
        len: usize,
    },
    /// A datagram frame with reserved ECN bits set.
    #[error("reserved bits set in ECN byte {0:#04x}")]
    BadEcn(u8),
}

impl Frame {
    /// The type byte of this frame.
    pub fn typ(&self) -> u8 {
        match self {
            Self::ServerChallenge { .. } => typ::SERVER_CHALLENGE,
            Self::ClientAuth { .. } => typ::CLIENT_AUTH,
            Self::ServerAccepted => typ::SERVER_ACCEPTED,
            Self::ServerDenied { .. } => typ::SERVER_DENIED,
            Self::SendDatagrams { .. } => typ::SEND_DATAGRAMS,
            Self::RecvDatagrams { .. } => typ::RECV_DATAGRAMS,
            Self::Ping(_) => typ::PING,
            Self::Pong(_) => typ::PONG,
            Self::KeepAlive => typ::KEEP_ALIVE,
            Self::NotePreferred(_) => typ::NOTE_PREFERRED,
            Self::PeerGone(_) => typ::PEER_GONE,
            Self::Status { .. } => typ::STATUS,
            Self::Unknown { typ, .. } => *typ,
        }
    }

    /// Length of the body when encoded.
    pub fn body_len(&self) -> usize {
        match self {
            Self::ServerChallenge { .. } => 1 + NONCE_LEN,
            Self::ClientAuth { .. } => 1 + PUBLIC_KEY_LENGTH + SIGNATURE_LENGTH,
            Self::ServerAccepted | Self::KeepAlive => 0,
            Self::ServerDenied { message, .. } | Self::Status { message, .. } => {
                1 + clip_text(message).len()
            }
            Self::SendDatagrams { datagrams, .. } | Self::RecvDatagrams { datagrams, .. } => {
                DATAGRAM_META_LEN + datagrams.contents.len()
            }
            Self::Ping(_) | Self::Pong(_) => PING_LEN,
            Self::NotePreferred(_) => 1,
            Self::PeerGone(_) => PUBLIC_KEY_LENGTH,
            Self::Unknown { body, .. } => body.len(),
        }
    }

    /// Length of the whole frame when encoded.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// Writes the frame.
    ///
    /// Texts longer than [`MAX_TEXT_LEN`] are cut. Datagram payloads and unknown bodies must respect
    /// [`MAX_PAYLOAD`] and [`MAX_FRAME_BODY`]: a frame built from a longer one encodes, but the other side
    /// rejects it. [`Frame::validate`] checks a frame before sending.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(self.typ());
        buf.put_u32(u32::try_from(self.body_len()).unwrap_or(u32::MAX));
        match self {
            Self::ServerChallenge { version, nonce } => {
                buf.put_u8(*version);
                buf.put_slice(nonce);
            }
            Self::ClientAuth {
                version,
                node_id,
                signature,
            } => {
                buf.put_u8(*version);
                buf.put_slice(node_id.as_bytes());
                buf.put_slice(signature.as_bytes());
            }
            Self::ServerAccepted | Self::KeepAlive => {}
            Self::ServerDenied { reason, message } => {
                buf.put_u8(reason.to_u8());
                buf.put_slice(clip_text(message).as_bytes());
            }
            Self::Status { code, message } => {
                buf.put_u8(code.to_u8());
                buf.put_slice(clip_text(message).as_bytes());
            }
            Self::SendDatagrams { dst: id, datagrams }
            | Self::RecvDatagrams { src: id, datagrams } => {
                buf.put_slice(id.as_bytes());
                buf.put_u8(datagrams.ecn as u8);
                buf.put_u16(datagrams.segment_size.map_or(0, |s| s.get()));
                buf.put_slice(&datagrams.contents);
            }
            Self::Ping(data) | Self::Pong(data) => buf.put_slice(data),
            Self::NotePreferred(preferred) => buf.put_u8(u8::from(*preferred)),
            Self::PeerGone(node_id) => buf.put_slice(node_id.as_bytes()),
            Self::Unknown { body, .. } => buf.put_slice(body),
        }
    }

    /// The encoded frame as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Checks that the other side will accept this frame: the body within [`MAX_FRAME_BODY`], a datagram
    /// payload within [`MAX_PAYLOAD`] and its segment size consistent.
    pub fn validate(&self) -> Result<(), FrameError> {
        let len = self.body_len();
        if len > MAX_FRAME_BODY {
            return Err(FrameError::TooLarge {
                typ: self.typ(),
                len: u32::try_from(len).unwrap_or(u32::MAX),
            });
        }
        if let Self::SendDatagrams { datagrams, .. } | Self::RecvDatagrams { datagrams, .. } = self
        {
            check_segment_size(
                datagrams.segment_size.map_or(0, |s| s.get()),
                datagrams.contents.len(),
            )?;
        }
        Ok(())
    }

    /// Reads one frame from the front of `buf` without copying datagram payloads.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold a whole frame (read more and call again); on success the
    /// frame's bytes are removed from `buf`. An error means the stream is not speaking this protocol and the
    /// connection should be closed; `buf` is then left as it was.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Self>, FrameError> {
        let Some((typ, len)) = peek_header(buf)? else {
            return Ok(None);
        };
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(HEADER_LEN + len);
        frame.advance(HEADER_LEN);
        Self::parse_body(typ, frame.freeze()).map(Some)
    }

    /// Reads one frame from the front of `bytes`, returning it and the number of bytes it took, or `Ok(None)`
    /// if `bytes` holds only part of a frame. Datagram payloads are copied; use [`Frame::decode`] on a read
    /// buffer to avoid that.
    pub fn parse(bytes: &[u8]) -> Result<Option<(Self, usize)>, FrameError> {
        let Some((typ, len)) = peek_header(bytes)? else {
            return Ok(None);
        };
        let Some(body) = bytes.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let frame = Self::parse_body(typ, Bytes::copy_from_slice(body))?;
        Ok(Some((frame, HEADER_LEN + len)))
    }

    /// Interprets the body of a frame of type `typ`.
    pub fn parse_body(typ: u8, body: Bytes) -> Result<Self, FrameError> {
        let len = body.len();
        let bad_length = |expected| FrameError::BadLength { typ, len, expected };
        let frame = match typ {
            typ::SERVER_CHALLENGE => {
                let (&version, nonce) = body.split_first().ok_or(bad_length("33"))?;
                let nonce = nonce.try_into().map_err(|_| bad_length("33"))?;
                Self::ServerChallenge { version, nonce }
            }
            typ::CLIENT_AUTH => {
                if len != 1 + PUBLIC_KEY_LENGTH + SIGNATURE_LENGTH {
                    return Err(bad_length("97"));
                }
                let node_id = node_id_at(typ, &body[1..1 + PUBLIC_KEY_LENGTH])?;
                let signature = Signature::try_from_slice(&body[1 + PUBLIC_KEY_LENGTH..])
                    .map_err(|_| bad_length("97"))?;
                Self::ClientAuth {
                    version: body[0],
                    node_id,
                    signature,
                }
            }
            typ::SERVER_ACCEPTED | typ::KEEP_ALIVE => {
                if len != 0 {
                    return Err(bad_length("0"));
                }
                if typ == typ::KEEP_ALIVE {
                    Self::KeepAlive
                } else {
                    Self::ServerAccepted
                }
            }
            typ::SERVER_DENIED | typ::STATUS => {
                let (&code, text) = body.split_first().ok_or(bad_length("at least 1"))?;
                if text.len() > MAX_TEXT_LEN {
                    return Err(FrameError::TextTooLong {
                        typ,
                        len: text.len(),
                    });
                }
                let message = std::str::from_utf8(text)
                    .map_err(|_| FrameError::InvalidText { typ })?
                    .to_owned();
                if typ == typ::STATUS {
                    Self::Status {
                        code: StatusCode::from_u8(code),
                        message,
                    }
                } else {
                    Self::ServerDenied {
                        reason: DenyReason::from_u8(code),
                        message,
                    }
                }
            }
            typ::SEND_DATAGRAMS | typ::RECV_DATAGRAMS => {
                if len < DATAGRAM_META_LEN {
                    return Err(bad_length("at least 35"));
                }
                let id = node_id_at(typ, &body[..PUBLIC_KEY_LENGTH])?;
                let ecn_byte = body[PUBLIC_KEY_LENGTH];
                if ecn_byte & !0b11 != 0 {
                    return Err(FrameError::BadEcn(ecn_byte));
                }
                let segment_size =
                    u16::from_be_bytes([body[PUBLIC_KEY_LENGTH + 1], body[PUBLIC_KEY_LENGTH + 2]]);
                let contents = body.slice(DATAGRAM_META_LEN..);
                check_segment_size(segment_size, contents.len())?;
                let datagrams = Datagrams {
                    ecn: Ecn::from_bits(ecn_byte),
                    segment_size: std::num::NonZeroU16::new(segment_size),
                    contents,
                };
                if typ == typ::SEND_DATAGRAMS {
                    Self::SendDatagrams { dst: id, datagrams }
                } else {
                    Self::RecvDatagrams { src: id, datagrams }
                }
            }
            typ::PING | typ::PONG => {
                let data: [u8; PING_LEN] = body[..].try_into().map_err(|_| bad_length("8"))?;
                if typ == typ::PING {
                    Self::Ping(data)
                } else {
                    Self::Pong(data)
                }
            }
            typ::NOTE_PREFERRED => match body[..] {
                [0] => Self::NotePreferred(false),
                [1] => Self::NotePreferred(true),
                [other] => return Err(FrameError::InvalidFlag(other)),
                _ => return Err(bad_length("1")),
            },
            typ::PEER_GONE => {
                if len != PUBLIC_KEY_LENGTH {
                    return Err(bad_length("32"));
                }
                Self::PeerGone(node_id_at(typ, &body)?)
            }
            _ => Self::Unknown { typ, body },
        };
        Ok(frame)
    }
}

/// Reads the header at the front of `bytes`: `Ok(None)` if incomplete, an error if the body is too large.
pub(crate) fn peek_header(bytes: &[u8]) -> Result<Option<(u8, usize)>, FrameError> {
    let Some(&[typ, a, b, c, d]) = bytes.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([a, b, c, d]);
    match usize::try_from(len) {
        Ok(len) if len <= MAX_FRAME_BODY => Ok(Some((typ, len))),
        _ => Err(FrameError::TooLarge { typ, len }),
    }
}

fn node_id_at(typ: u8, bytes: &[u8]) -> Result<NodeId, FrameError> {
    let invalid = || FrameError::InvalidNodeId { typ };
    let bytes: &[u8; PUBLIC_KEY_LENGTH] = bytes.try_into().map_err(|_| invalid())?;
    if let Some(id) = validated_ids::lookup(bytes) {
        return Ok(id);
    }
    let id = NodeId::from_bytes(bytes).map_err(|_| invalid())?;
    validated_ids::insert(id);
    Ok(id)
}

/// Node ids this thread recently found valid.
///
/// Checking that 32 bytes are a node id decompresses a curve point, which costs far more than everything
/// else in parsing a datagram frame (profiling the relay showed it dominating the forwarding of 1200-byte
/// datagrams), and datagram frames repeat a small set of ids. Validity depends on the bytes alone, so a
/// cache of valid ids gives the same answers: a direct-mapped table, one slot per value of the first two
/// bytes modulo its size, holding only ids that passed the check.
mod validated_ids {
    use std::cell::RefCell;

    use iroh_base::{NodeId, PUBLIC_KEY_LENGTH};

    const SLOTS: usize = 1024;

    thread_local! {
        static TABLE: RefCell<Vec<Option<NodeId>>> = const { RefCell::new(Vec::new()) };
    }

    fn slot(bytes: &[u8; PUBLIC_KEY_LENGTH]) -> usize {
        usize::from(u16::from_le_bytes([bytes[0], bytes[1]])) % SLOTS
    }

    pub(super) fn lookup(bytes: &[u8; PUBLIC_KEY_LENGTH]) -> Option<NodeId> {
        TABLE.with_borrow(|table| {
            table
                .get(slot(bytes))
                .copied()
                .flatten()
                .filter(|id| id.as_bytes() == bytes)
        })
    }

    pub(super) fn insert(id: NodeId) {
        TABLE.with_borrow_mut(|table| {
            if table.is_empty() {
                table.resize(SLOTS, None);
            }
            let index = slot(id.as_bytes());
            table[index] = Some(id);
        });
    }
}

/// A segment size must be zero (one datagram), or at most the payload and non-zero with a non-empty payload.
fn check_segment_size(segment_size: u16, len: usize) -> Result<(), FrameError> {
    if len > MAX_PAYLOAD || (segment_size != 0 && usize::from(segment_size) > len) {
        return Err(FrameError::BadSegmentSize { segment_size, len });
    }
    Ok(())
}

/// `text` cut to at most [`MAX_TEXT_LEN`] bytes at a character boundary.
fn clip_text(text: &str) -> &str {
    if text.len() <= MAX_TEXT_LEN {
        return text;
    }
    let mut end = MAX_TEXT_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests;
