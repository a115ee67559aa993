//! Discovery records: a node's addressing, signed by its own key, in the pkarr format.
//!
//! A node publishes where it can be reached (its home relay and its direct addresses) so that peers
//! knowing only its [`NodeId`] can dial it. The record is a DNS packet signed with the node's ed25519
//! key, laid out as a pkarr "signed packet" (the BEP 44 mutable-item encoding that pkarr relays, DHT
//! nodes and DNS gateways understand):
//!
//! ```text
//! public key (32) | signature (64) | timestamp (8, big-endian microseconds since the Unix epoch) | DNS packet (<= 1000)
//! ```
//!
//! The signature covers the bencoded string `3:seqi<timestamp>e1:v<packet length>:<packet>`, so a record
//! cannot be altered, and a newer timestamp replaces an older record. The DNS packet is a reply whose
//! answers are TXT records named `_iroh.<z-base-32 NodeId>` (served by a discovery DNS server as
//! `_iroh.<z-base-32 NodeId>.<origin>`), one fact per TXT string:
//!
//! - `relay=<url>`: the home relay;
//! - `addr=<ip:port> <ip:port> ...`: direct addresses (split across several `addr=` strings when they do
//!   not fit one 255-byte DNS character string).
//!
//! Unknown keys are ignored (later versions may add facts); a malformed known value is an error. The DNS
//! wire format itself is read and written by `simple-dns`.
//!
//! ```
//! use iroh_base::SecretKey;
//! use iroh_relay::protos::discovery::{NodeRecord, SignedRecord};
//!
//! let key = SecretKey::generate();
//! let record = NodeRecord::new(key.public())
//!     .with_relay_url("https://relay.example.org./".parse()?)
//!     .with_direct_addresses(["192.0.2.1:4433".parse()?]);
//! let signed = SignedRecord::sign(&key, &record, 1_700_000_000_000_000)?;
//! let parsed = SignedRecord::from_bytes(signed.as_bytes())?;
//! assert_eq!(parsed.record()?, record);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::{
    collections::BTreeSet,
    fmt,
    net::SocketAddr,
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use iroh_base::{
    NodeId, PUBLIC_KEY_LENGTH, PublicKey, RelayUrl, RelayUrlParseError, SIGNATURE_LENGTH,
    SecretKey, Signature,
};
use simple_dns::{
    CLASS, Name, Packet, ResourceRecord,
    rdata::{RData, TXT},
};

#[cfg(test)]
mod tests;

/// The most bytes the DNS packet of a record may have (pkarr's and BEP 44's limit).
pub const MAX_DNS_PACKET_LEN: usize = 1000;
/// The bytes before the DNS packet: public key, signature and timestamp.
pub const HEADER_LEN: usize = PUBLIC_KEY_LENGTH + SIGNATURE_LENGTH + TIMESTAMP_LEN;
/// The most bytes a whole signed record may have.
pub const MAX_SIGNED_RECORD_LEN: usize = HEADER_LEN + MAX_DNS_PACKET_LEN;
/// The label before the node's z-base-32 NodeId in the names of its TXT records.
pub const IROH_TXT_LABEL: &str = "_iroh";
/// The TTL records get unless [`NodeRecord::with_ttl`] says otherwise, in seconds: how long the record is
/// good for. Publishers republish before it runs out (and at once when their addressing changes);
/// resolvers may cache it that long (iroh's own cache at most 30 s, so that a node that moved is found
/// again soon).
pub const DEFAULT_TTL_SECS: u32 = 300;
/// The path segment under a publish endpoint's base URL that holds records: `<base>/pkarr/<z32 id>`.
pub const PKARR_PATH: &str = "pkarr";
/// The content type of a record body over HTTP (the pkarr relay payload).
pub const PKARR_CONTENT_TYPE: &str = "application/pkarr.org/relays#payload";
/// The TXT key of the home relay.
pub const RELAY_KEY: &str = "relay";
/// The TXT key of direct addresses.
pub const ADDR_KEY: &str = "addr";

const TIMESTAMP_LEN: usize = 8;
/// The most bytes one DNS character string holds (RFC 1035 section 3.3).
const MAX_CHARACTER_STRING: usize = 255;

/// What a node publishes about itself: see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    node_id: NodeId,
    relay_url: Option<RelayUrl>,
    direct_addresses: BTreeSet<SocketAddr>,
    ttl: u32,
}

impl NodeRecord {
    /// A record for `node_id` with no addressing yet and the [default TTL](DEFAULT_TTL_SECS).
    pub fn new(node_id: NodeId) -> Self {
        Self {
            node_id,
            relay_url: None,
            direct_addresses: BTreeSet::new(),
            ttl: DEFAULT_TTL_SECS,
        }
    }

    /// Sets the home relay.
    pub fn with_relay_url(mut self, url: RelayUrl) -> Self {
        self.relay_url = Some(url);
        self
    }

    /// Sets the home relay, or none.
    pub fn with_relay_url_opt(mut self, url: Option<RelayUrl>) -> Self {
        self.relay_url = url;
        self
    }

    /// Sets the direct addresses.
    pub fn with_direct_addresses(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.direct_addresses = addrs.into_iter().collect();
        self
    }

    /// Sets the TTL of the TXT records, in seconds: how long resolvers may cache them.
    pub fn with_ttl(mut self, ttl_secs: u32) -> Self {
        self.ttl = ttl_secs;
        self
    }

    /// The node the record is about.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Its home relay.
    pub fn relay_url(&self) -> Option<&RelayUrl> {
        self.relay_url.as_ref()
    }

    /// Its direct addresses.
    pub fn direct_addresses(&self) -> &BTreeSet<SocketAddr> {
        &self.direct_addresses
    }

    /// The TTL of its TXT records, in seconds.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Whether it says nothing about where to reach the node.
    pub fn is_empty(&self) -> bool {
        self.relay_url.is_none() && self.direct_addresses.is_empty()
    }

    /// The TXT strings of the record, one fact each: `relay=<url>` first, then `addr=...` strings, each
    /// at most 255 bytes.
    pub fn txt_strings(&self) -> Vec<String> {
        let mut strings = Vec::new();
        if let Some(url) = &self.relay_url {
            strings.push(format!("{RELAY_KEY}={url}"));
        }
        let mut current = String::new();
        for addr in &self.direct_addresses {
            let text = addr.to_string();
            let prefix = ADDR_KEY.len() + 1;
            if !current.is_empty() && current.len() + 1 + text.len() > MAX_CHARACTER_STRING {
                strings.push(std::mem::take(&mut current));
            }
            if current.is_empty() {
                current.reserve(prefix + text.len());
                current.push_str(ADDR_KEY);
                current.push('=');
            } else {
                current.push(' ');
            }
            current.push_str(&text);
        }
        if !current.is_empty() {
            strings.push(current);
        }
        strings
    }

    /// Reads the facts from TXT strings (unknown keys are skipped). `ttl` is the TXT records' TTL.
    pub fn from_txt_strings<'a>(
        node_id: NodeId,
        ttl: u32,
        strings: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, RecordError> {
        let mut record = Self::new(node_id).with_ttl(ttl);
        for string in strings {
            let text = std::str::from_utf8(string).map_err(|_| RecordError::NotUtf8)?;
            let Some((key, value)) = text.split_once('=') else {
                continue;
            };
            match key {
                RELAY_KEY => {
                    let url = RelayUrl::from_str(value).map_err(RecordError::RelayUrl)?;
                    if record.relay_url.as_ref().is_some_and(|known| *known != url) {
                        return Err(RecordError::TwoRelays);
                    }
                    record.relay_url = Some(url);
                }
                ADDR_KEY => {
                    for part in value.split_ascii_whitespace() {
                        let addr = SocketAddr::from_str(part).map_err(|_| RecordError::Addr {
                            value: part.chars().take(64).collect(),
                        })?;
                        record.direct_addresses.insert(addr);
                    }
                }
                _ => {}
            }
        }
        Ok(record)
    }

    /// The DNS packet carrying the record: a reply with one TXT answer per string of
    /// [`NodeRecord::txt_strings`], named `_iroh.<z-base-32 NodeId>`.
    /// A record that [is empty](NodeRecord::is_empty) has no packet ([`EncodeError::Empty`]).
    pub fn to_dns_packet(&self) -> Result<Vec<u8>, EncodeError> {
        if self.is_empty() {
            return Err(EncodeError::Empty);
        }
        let name = format!("{IROH_TXT_LABEL}.{}", self.node_id);
        let strings = self.txt_strings();
        let mut packet = Packet::new_reply(0);
        for string in &strings {
            let txt = TXT::new()
                .with_string(string)
                .map_err(|_| EncodeError::TxtString)?;
            let name = Name::new(&name).map_err(|_| EncodeError::TxtString)?;
            packet.answers.push(ResourceRecord::new(
                name,
                CLASS::IN,
                self.ttl,
                RData::TXT(txt),
            ));
        }
        let bytes = packet
            .build_bytes_vec_compressed()
            .map_err(|_| EncodeError::TxtString)?;
        if bytes.len() > MAX_DNS_PACKET_LEN {
            return Err(EncodeError::TooLarge { len: bytes.len() });
        }
        Ok(bytes)
    }

    /// Reads the record from a DNS packet: the TXT answers named `_iroh.<z-base-32 node_id>` (with or
    /// without an origin after it); other answers are ignored. The TTL is the smallest of theirs.
    pub fn from_dns_packet(node_id: NodeId, packet: &[u8]) -> Result<Self, RecordError> {
        let packet = Packet::parse(packet).map_err(|_| RecordError::Dns)?;
        let z32 = node_id.to_string();
        let mut ttl = None::<u32>;
        let mut strings: Vec<Vec<u8>> = Vec::new();
        for answer in &packet.answers {
            let RData::TXT(txt) = &answer.rdata else {
                continue;
            };
            if !is_iroh_name(&answer.name, &z32) {
                continue;
            }
            ttl = Some(ttl.map_or(answer.ttl, |t| t.min(answer.ttl)));
            strings.extend(txt_raw_strings(txt));
        }
        let Some(ttl) = ttl else {
            return Err(RecordError::NoIrohRecords);
        };
        Self::from_txt_strings(node_id, ttl, strings.iter().map(Vec::as_slice))
    }
}

/// The TXT answers named `_iroh.<z32>` (then anything, an origin) in a DNS packet: each answer's TTL and
/// character strings. What a discovery DNS server serves for a record, without parsing its key.
pub fn iroh_txt_answers(packet: &[u8], z32: &str) -> Result<Vec<TxtAnswer>, RecordError> {
    let packet = Packet::parse(packet).map_err(|_| RecordError::Dns)?;
    Ok(packet
        .answers
        .iter()
        .filter(|answer| is_iroh_name(&answer.name, z32))
        .filter_map(|answer| match &answer.rdata {
            RData::TXT(txt) => Some(TxtAnswer {
                ttl: answer.ttl,
                strings: txt_raw_strings(txt),
            }),
            _ => None,
        })
        .collect())
}

/// Whether `name` is `_iroh.<z32>`, optionally followed by more labels (an origin).
fn is_iroh_name(name: &Name<'_>, z32: &str) -> bool {
    let mut labels = name.get_labels().iter().map(ToString::to_string);
    labels
        .next()
        .is_some_and(|l| l.eq_ignore_ascii_case(IROH_TXT_LABEL))
        && labels.next().is_some_and(|l| l.eq_ignore_ascii_case(z32))
}

/// The character strings of a TXT record, as bytes, in order.
fn txt_raw_strings(txt: &TXT<'_>) -> Vec<Vec<u8>> {
    txt.iter_raw()
        .map(|(key, value)| match value {
            Some(value) => {
                let mut s = Vec::with_capacity(key.len() + 1 + value.len());
                s.extend_from_slice(key);
                s.push(b'=');
                s.extend_from_slice(value);
                s
            }
            None => key.to_vec(),
        })
        .collect()
}

/// One TXT answer of a signed packet: its TTL and its character strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxtAnswer {
    /// The TTL, in seconds.
    pub ttl: u32,
    /// The character strings, in order.
    pub strings: Vec<Vec<u8>>,
}

/// A [`NodeRecord`] signed by its node: see the [module docs](self) for the layout. Holding one means
/// its signature verified and its DNS packet parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRecord {
    bytes: Bytes,
}

impl fmt::Debug for SignedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRecord")
            .field("node_id", &self.node_id())
            .field("timestamp", &self.timestamp())
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl SignedRecord {
    /// Signs `record` with `key` (which must be the record's node's) at `timestamp` microseconds since
    /// the Unix epoch.
    pub fn sign(key: &SecretKey, record: &NodeRecord, timestamp: u64) -> Result<Self, EncodeError> {
        if key.public() != record.node_id {
            return Err(EncodeError::WrongKey);
        }
        let packet = record.to_dns_packet()?;
        let signature = key.sign(&signable(timestamp, &packet));
        let mut bytes = Vec::with_capacity(HEADER_LEN + packet.len());
        bytes.extend_from_slice(record.node_id.as_bytes());
        bytes.extend_from_slice(signature.as_bytes());
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&packet);
        Ok(Self {
            bytes: bytes.into(),
        })
    }

    /// Signs `record` now (see [`now_micros`]).
    pub fn sign_now(key: &SecretKey, record: &NodeRecord) -> Result<Self, EncodeError> {
        Self::sign(key, record, now_micros())
    }

    /// Parses and verifies a whole signed record (`key | signature | timestamp | packet`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() < HEADER_LEN {
            return Err(RecordError::TooShort { len: bytes.len() });
        }
        if bytes.len() > MAX_SIGNED_RECORD_LEN {
            return Err(RecordError::TooLong { len: bytes.len() });
        }
        let key = PublicKey::try_from_slice(&bytes[..PUBLIC_KEY_LENGTH])
            .map_err(|_| RecordError::InvalidKey)?;
        let signature = Signature::try_from_slice(&bytes[PUBLIC_KEY_LENGTH..][..SIGNATURE_LENGTH])
            .map_err(|_| RecordError::BadSignature)?;
        let timestamp = read_timestamp(&bytes[PUBLIC_KEY_LENGTH + SIGNATURE_LENGTH..]);
        let packet = &bytes[HEADER_LEN..];
        key.verify(&signable(timestamp, packet), &signature)
            .map_err(|_| RecordError::BadSignature)?;
        Packet::parse(packet).map_err(|_| RecordError::Dns)?;
        Ok(Self {
            bytes: Bytes::copy_from_slice(bytes),
        })
    }

    /// A record from bytes this process verified before (a discovery server's own store): checks the
    /// layout, not the signature. `None` if the bytes cannot be a record.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn from_verified_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < HEADER_LEN || bytes.len() > MAX_SIGNED_RECORD_LEN {
            return None;
        }
        PublicKey::try_from_slice(&bytes[..PUBLIC_KEY_LENGTH]).ok()?;
        Some(Self {
            bytes: Bytes::copy_from_slice(bytes),
        })
    }

    /// The TXT answers for `_iroh.<node id>` in the signed packet, each as its TTL and its character
    /// strings: what a DNS server serves for the record, unknown keys included.
    pub fn iroh_txt_answers(&self) -> Result<Vec<TxtAnswer>, RecordError> {
        iroh_txt_answers(self.dns_packet(), &self.node_id().to_string())
    }

    /// The signing timestamp of stored record bytes, without parsing the key; `None` if `bytes` are
    /// too short to be a record.
    pub fn timestamp_of(bytes: &[u8]) -> Option<u64> {
        let ts = bytes.get(PUBLIC_KEY_LENGTH + SIGNATURE_LENGTH..HEADER_LEN)?;
        Some(read_timestamp(ts))
    }

    /// The stored bytes' DNS packet, for a server that looks records up by key bytes (see
    /// [`iroh_txt_answers`]); `None` if `bytes` are too short to be a record.
    pub fn packet_of(bytes: &[u8]) -> Option<&[u8]> {
        bytes.get(HEADER_LEN..)
    }

    /// Parses and verifies the form pkarr relays carry over HTTP (`signature | timestamp | packet`, the
    /// key being in the URL).
    pub fn from_relay_payload(node_id: NodeId, payload: &[u8]) -> Result<Self, RecordError> {
        if payload.len() > MAX_SIGNED_RECORD_LEN - PUBLIC_KEY_LENGTH {
            return Err(RecordError::TooLong {
                len: payload.len() + PUBLIC_KEY_LENGTH,
            });
        }
        let mut bytes = Vec::with_capacity(PUBLIC_KEY_LENGTH + payload.len());
        bytes.extend_from_slice(node_id.as_bytes());
        bytes.extend_from_slice(payload);
        Self::from_bytes(&bytes)
    }

    /// The form pkarr relays carry over HTTP: everything but the public key.
    pub fn to_relay_payload(&self) -> Bytes {
        self.bytes.slice(PUBLIC_KEY_LENGTH..)
    }

    /// The whole encoded record.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The length of [`SignedRecord::as_bytes`].
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// The node that signed it.
    pub fn node_id(&self) -> NodeId {
        // Validated at construction; the fallback is unreachable but avoids a panic path.
        PublicKey::try_from_slice(&self.bytes[..PUBLIC_KEY_LENGTH])
            .unwrap_or_else(|_| SecretKey::from_bytes(&[0; 32]).public())
    }

    /// When it was signed, in microseconds since the Unix epoch.
    pub fn timestamp(&self) -> u64 {
        read_timestamp(&self.bytes[PUBLIC_KEY_LENGTH + SIGNATURE_LENGTH..])
    }

    /// When it was signed.
    pub fn signed_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.timestamp())
    }

    /// The signed DNS packet.
    pub fn dns_packet(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// The addressing facts it carries.
    pub fn record(&self) -> Result<NodeRecord, RecordError> {
        NodeRecord::from_dns_packet(self.node_id(), self.dns_packet())
    }
}

/// The current time in microseconds since the Unix epoch (0 if the clock is before it).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn read_timestamp(bytes: &[u8]) -> u64 {
    let mut ts = [0u8; TIMESTAMP_LEN];
    ts.copy_from_slice(&bytes[..TIMESTAMP_LEN]);
    u64::from_be_bytes(ts)
}

/// What BEP 44 signs: `3:seqi<timestamp>e1:v<len>:<packet>`.
fn signable(timestamp: u64, packet: &[u8]) -> Vec<u8> {
    let mut out = format!("3:seqi{timestamp}e1:v{}:", packet.len()).into_bytes();
    out.extend_from_slice(packet);
    out
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Shorter than key, signature and timestamp.
    #[error("record too short: {len} bytes, need at least {HEADER_LEN}")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// Longer than [`MAX_SIGNED_RECORD_LEN`].
    #[error("record too long: {len} bytes, at most {MAX_SIGNED_RECORD_LEN}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The public key is not a valid ed25519 point.
    #[error("invalid public key")]
    InvalidKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The DNS packet does not parse.
    #[error("malformed DNS packet")]
    Dns,
    /// The packet has no TXT answer for `_iroh.<node id>`.
    #[error("no _iroh TXT records")]
    NoIrohRecords,
    /// A TXT string is not UTF-8.
    #[error("TXT string is not UTF-8")]
    NotUtf8,
    /// A `relay=` value is not a relay URL.
    #[error("bad relay URL: {0}")]
    RelayUrl(RelayUrlParseError),
    /// Two different `relay=` values.
    #[error("more than one relay URL")]
    TwoRelays,
    /// An `addr=` value is not `ip:port`.
    #[error("bad direct address {value:?}")]
    Addr {
        /// The value (at most 64 characters of it).
        value: String,
    },
}

/// Why a record could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The DNS packet would exceed [`MAX_DNS_PACKET_LEN`] (too many direct addresses).
    #[error("DNS packet of {len} bytes exceeds {MAX_DNS_PACKET_LEN}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// A TXT string could not be encoded (longer than 255 bytes: a relay URL that long).
    #[error("TXT string does not fit a DNS character string")]
    TxtString,
    /// The record says nothing (no relay, no direct address): there is nothing to publish.
    #[error("the record has neither a relay nor a direct address")]
    Empty,
    /// The key is not the record's node's.
    #[error("the secret key is not the record's node's")]
    WrongKey,
}

/// Largest prefix of `record`'s direct addresses (in its order) whose record fits
/// [`MAX_DNS_PACKET_LEN`]: what a publisher with too many addresses publishes. Returns the record and how
/// many addresses were left out.
pub fn fit_record(record: &NodeRecord) -> Result<(NodeRecord, usize), EncodeError> {
    match record.to_dns_packet() {
        Ok(_) => return Ok((record.clone(), 0)),
        Err(EncodeError::TooLarge { .. }) => {}
        Err(other) => return Err(other),
    }
    let addrs: Vec<SocketAddr> = record.direct_addresses.iter().copied().collect();
    // Binary search over how many to keep: fewer always encodes smaller.
    let (mut lo, mut hi) = (0usize, addrs.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let candidate = record
            .clone()
            .with_direct_addresses(addrs[..mid].iter().copied());
        match candidate.to_dns_packet() {
            Ok(_) => lo = mid,
            Err(EncodeError::TooLarge { .. }) => hi = mid - 1,
            Err(other) => return Err(other),
        }
    }
    let fitted = record
        .clone()
        .with_direct_addresses(addrs[..lo].iter().copied());
    fitted.to_dns_packet()?;
    Ok((fitted, addrs.len() - lo))
}
