//! The stand-in peers' datagrams and the two ends of their reliable transfer, without I/O.
//!
//! Every datagram starts with `NSP1` and a type byte; the same datagrams travel over UDP and through the
//! relay. The content is a pure function of a seed and the byte offset, so the fetcher checks every chunk as
//! it arrives and needs neither the data nor a hash from the provider.
//!
//! Transfer: the provider keeps at most [`WINDOW`] chunks unacknowledged. The fetcher acknowledges each data
//! datagram with the first chunk it lacks (`cum`) and a bitmap of the [`WINDOW`] chunks after it. The
//! provider retransmits a chunk when a chunk at least [`REORDER`] later was acknowledged and a smoothed
//! round-trip time has passed since it was sent (fast retransmit), or after a retransmission timeout.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use super::super::sys::splitmix64;

const MAGIC: &[u8; 4] = b"NSP1";
/// Payload bytes per data datagram (a multiple of 8; fits a 1500-byte MTU with headers).
pub(crate) const CHUNK: usize = 1200;
/// Chunks in flight at most; the acknowledgement bitmap covers exactly this many.
pub(crate) const WINDOW: u32 = 256;
/// How many later chunks must be acknowledged before a missing one counts as lost.
const REORDER: u32 = 3;

/// One datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Msg {
    /// Fetcher to provider through the relay: where the fetcher might be reachable directly.
    Hello {
        /// Its STUN-mapped and local addresses.
        addrs: Vec<SocketAddrV4>,
    },
    /// Provider to fetcher through the relay: what will be sent.
    Meta {
        /// Total bytes.
        size: u64,
        /// Content seed.
        seed: u64,
    },
    /// A direct-path probe over UDP.
    Ping(u64),
    /// The answer to a [`Msg::Ping`], sent back to where it came from.
    Pong(u64),
    /// Chunk `index` of the content.
    Data {
        /// Chunk number.
        index: u32,
        /// Its bytes.
        payload: Vec<u8>,
    },
    /// Fetcher to provider: what has arrived.
    Ack {
        /// Every chunk below this has arrived, and this one has not.
        cum: u32,
        /// Bit `i` (little-endian bit order within bytes) set: chunk `cum + 1 + i` has arrived.
        bits: [u8; 32],
    },
    /// Fetcher to provider: everything arrived.
    Done,
}

impl Msg {
    /// The datagram bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        match self {
            Msg::Hello { addrs } => {
                out.push(1);
                for addr in addrs {
                    out.extend_from_slice(&addr.ip().octets());
                    out.extend_from_slice(&addr.port().to_be_bytes());
                }
            }
            Msg::Meta { size, seed } => {
                out.push(2);
                out.extend_from_slice(&size.to_be_bytes());
                out.extend_from_slice(&seed.to_be_bytes());
            }
            Msg::Ping(nonce) => {
                out.push(3);
                out.extend_from_slice(&nonce.to_be_bytes());
            }
            Msg::Pong(nonce) => {
                out.push(4);
                out.extend_from_slice(&nonce.to_be_bytes());
            }
            Msg::Data { index, payload } => {
                out.push(5);
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(payload);
            }
            Msg::Ack { cum, bits } => {
                out.push(6);
                out.extend_from_slice(&cum.to_be_bytes());
                out.extend_from_slice(bits);
            }
            Msg::Done => out.push(7),
        }
        out
    }

    /// Parses a datagram; `None` for anything else.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Msg> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let (&kind, body) = rest.split_first()?;
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_be_bytes(body.get(at..at + 8)?.try_into().ok()?))
        };
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?))
        };
        match kind {
            1 if body.len() % 6 == 0 => Some(Msg::Hello {
                addrs: body
                    .chunks_exact(6)
                    .map(|c| {
                        SocketAddrV4::new(
                            Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                            u16::from_be_bytes([c[4], c[5]]),
                        )
                    })
                    .collect(),
            }),
            2 if body.len() == 16 => Some(Msg::Meta {
                size: u64_at(0)?,
                seed: u64_at(8)?,
            }),
            3 if body.len() == 8 => Some(Msg::Ping(u64_at(0)?)),
            4 if body.len() == 8 => Some(Msg::Pong(u64_at(0)?)),
            5 => Some(Msg::Data {
                index: u32_at(0)?,
                payload: body.get(4..)?.to_vec(),
            }),
            6 if body.len() == 36 => Some(Msg::Ack {
                cum: u32_at(0)?,
                bits: body.get(4..36)?.try_into().ok()?,
            }),
            7 if body.is_empty() => Some(Msg::Done),
            _ => None,
        }
    }
}

/// The IPv4 addresses among `addrs`.
pub(crate) fn v4_only(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddrV4> {
    addrs
        .into_iter()
        .filter_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .collect()
}

/// How many chunks `size` bytes make.
pub(crate) fn chunk_count(size: u64) -> u32 {
    u32::try_from(size.div_ceil(CHUNK as u64)).unwrap_or(u32::MAX)
}

/// Fills `out` with the content of chunk `index` (its length says how much: the last chunk is shorter).
pub(crate) fn content(seed: u64, index: u32, out: &mut [u8]) {
    let first_word = u64::from(index) * (CHUNK as u64 / 8);
    for (i, word) in out.chunks_mut(8).enumerate() {
        let mut state = seed ^ (first_word + i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let value = splitmix64(&mut state).to_le_bytes();
        word.copy_from_slice(&value[..word.len()]);
    }
}

/// The length of chunk `index` of `size` bytes.
pub(crate) fn chunk_len(size: u64, index: u32) -> usize {
    let start = u64::from(index) * CHUNK as u64;
    usize::try_from(size.saturating_sub(start).min(CHUNK as u64)).unwrap_or(CHUNK)
}

/// The fetcher's side: which chunks arrived, and whether each was right.
#[derive(Debug)]
pub(crate) struct Receiver {
    size: u64,
    seed: u64,
    got: Vec<bool>,
    cum: u32,
    received: u32,
    mismatched: u32,
    scratch: Vec<u8>,
}

impl Receiver {
    /// Expects `size` bytes of the content of `seed`.
    pub(crate) fn new(size: u64, seed: u64) -> Self {
        Self {
            size,
            seed,
            got: vec![false; chunk_count(size) as usize],
            cum: 0,
            received: 0,
            mismatched: 0,
            scratch: vec![0; CHUNK],
        }
    }

    /// Takes a data datagram; returns whether it was new.
    pub(crate) fn on_data(&mut self, index: u32, payload: &[u8]) -> bool {
        let Some(slot) = self.got.get_mut(index as usize) else {
            self.mismatched += 1;
            return false;
        };
        if *slot {
            return false;
        }
        *slot = true;
        self.received += 1;
        let expected = &mut self.scratch[..chunk_len(self.size, index)];
        content(self.seed, index, expected);
        if payload != &expected[..] {
            self.mismatched += 1;
        }
        while self.got.get(self.cum as usize) == Some(&true) {
            self.cum += 1;
        }
        true
    }

    /// The acknowledgement of everything so far.
    pub(crate) fn ack(&self) -> Msg {
        let mut bits = [0u8; 32];
        for i in 0..WINDOW {
            if self.got.get((self.cum + 1 + i) as usize) == Some(&true) {
                bits[(i / 8) as usize] |= 1 << (i % 8);
            }
        }
        Msg::Ack {
            cum: self.cum,
            bits,
        }
    }

    /// Whether every chunk arrived.
    pub(crate) fn complete(&self) -> bool {
        self.cum as usize == self.got.len()
    }

    /// Whether every chunk that arrived had the right content.
    pub(crate) fn all_correct(&self) -> bool {
        self.mismatched == 0
    }

    /// Bytes received so far (whole chunks).
    pub(crate) fn bytes(&self) -> u64 {
        if self.complete() {
            self.size
        } else {
            u64::from(self.received) * CHUNK as u64
        }
    }
}

/// The provider's side: what to send next.
#[derive(Debug)]
pub(crate) struct Sender {
    size: u64,
    seed: u64,
    acked: Vec<bool>,
    sent_at: Vec<Option<Instant>>,
    retransmitted: Vec<bool>,
    cum: u32,
    next: u32,
    highest_acked: Option<u32>,
    srtt: Duration,
}

impl Sender {
    /// Sends `size` bytes of the content of `seed`.
    pub(crate) fn new(size: u64, seed: u64) -> Self {
        let n = chunk_count(size) as usize;
        Self {
            size,
            seed,
            acked: vec![false; n],
            sent_at: vec![None; n],
            retransmitted: vec![false; n],
            cum: 0,
            next: 0,
            highest_acked: None,
            srtt: Duration::from_millis(200),
        }
    }

    fn rto(&self) -> Duration {
        (self.srtt * 2).max(Duration::from_millis(50)) + Duration::from_millis(10)
    }

    /// Takes an acknowledgement.
    pub(crate) fn on_ack(&mut self, now: Instant, cum: u32, bits: &[u8; 32]) {
        let mut newly = Vec::new();
        while self.cum < cum.min(self.next) {
            newly.push(self.cum);
            self.cum += 1;
        }
        for i in 0..WINDOW {
            if bits[(i / 8) as usize] & (1 << (i % 8)) != 0 {
                newly.push(cum + 1 + i);
            }
        }
        for index in newly {
            let i = index as usize;
            if index >= self.next || self.acked.get(i) != Some(&false) {
                continue;
            }
            self.acked[i] = true;
            self.highest_acked = Some(self.highest_acked.map_or(index, |h| h.max(index)));
            // Karn: only chunks sent once give round-trip samples.
            if !self.retransmitted[i]
                && let Some(sent) = self.sent_at[i]
            {
                let sample = now.saturating_duration_since(sent);
                self.srtt = (self.srtt * 7 + sample) / 8;
            }
        }
        while self.acked.get(self.cum as usize) == Some(&true) {
            self.cum += 1;
        }
    }

    /// The next chunk to send now, if any: a lost one first, then a new one within the window. Marks it sent.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Msg> {
        let rto = self.rto();
        let lost = (self.cum..self.next).find(|&index| {
            let i = index as usize;
            if self.acked[i] {
                return false;
            }
            let Some(sent) = self.sent_at[i] else {
                return true;
            };
            let age = now.saturating_duration_since(sent);
            let overtaken = self
                .highest_acked
                .is_some_and(|h| h >= index + REORDER && age >= self.srtt + self.srtt / 8);
            overtaken || age >= rto
        });
        let index = match lost {
            Some(index) => {
                self.retransmitted[index as usize] = true;
                index
            }
            None if self.next < self.cum + WINDOW && (self.next as usize) < self.acked.len() => {
                self.next += 1;
                self.next - 1
            }
            None => return None,
        };
        self.sent_at[index as usize] = Some(now);
        let mut payload = vec![0; chunk_len(self.size, index)];
        content(self.seed, index, &mut payload);
        Some(Msg::Data { index, payload })
    }

    /// Whether everything was acknowledged.
    pub(crate) fn complete(&self) -> bool {
        self.cum as usize == self.acked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let msgs = [
            Msg::Hello {
                addrs: vec!["198.18.1.1:4000".parse().expect("addr")],
            },
            Msg::Meta { size: 10, seed: 3 },
            Msg::Ping(7),
            Msg::Pong(8),
            Msg::Data {
                index: 5,
                payload: vec![1, 2, 3],
            },
            Msg::Ack {
                cum: 9,
                bits: [0xa5; 32],
            },
            Msg::Done,
        ];
        for msg in msgs {
            assert_eq!(Msg::decode(&msg.encode()), Some(msg));
        }
        assert_eq!(Msg::decode(b"NSP1\x07x"), None);
        assert_eq!(Msg::decode(b"junk"), None);
    }

    #[test]
    fn content_is_random_access() {
        let size = 3 * CHUNK as u64 + 100;
        assert_eq!(chunk_count(size), 4);
        assert_eq!(chunk_len(size, 3), 100);
        let mut one = vec![0; CHUNK];
        content(42, 2, &mut one);
        let mut short = vec![0; 100];
        content(42, 2, &mut short);
        assert_eq!(&one[..100], &short[..]);
        let mut other = vec![0; CHUNK];
        content(43, 2, &mut other);
        assert_ne!(one, other);
    }

    /// Runs both ends against each other through a lossy, reordering-free channel and checks completion.
    fn transfer(size: u64, loss_every: u64) {
        let mut sender = Sender::new(size, 9);
        let mut receiver = Receiver::new(size, 9);
        let mut now = Instant::now();
        let mut count = 0u64;
        for _ in 0..100_000 {
            if receiver.complete() {
                break;
            }
            let mut acks = Vec::new();
            while let Some(Msg::Data { index, payload }) = sender.poll_transmit(now) {
                count += 1;
                if loss_every > 0 && count.is_multiple_of(loss_every) {
                    continue;
                }
                receiver.on_data(index, &payload);
                acks.push(receiver.ack());
            }
            now += Duration::from_millis(20);
            for ack in acks {
                if let Msg::Ack { cum, bits } = ack {
                    sender.on_ack(now, cum, &bits);
                }
            }
        }
        assert!(receiver.complete(), "transfer of {size} bytes stalled");
        assert!(receiver.all_correct());
        assert_eq!(receiver.bytes(), size);
        if let Msg::Ack { cum, bits } = receiver.ack() {
            sender.on_ack(now, cum, &bits);
        }
        assert!(sender.complete());
    }

    #[test]
    fn transfers_complete_with_and_without_loss() {
        transfer(0, 0);
        transfer(1, 0);
        transfer(1_000_000, 0);
        transfer(1_000_000, 7);
        transfer(300_000, 2);
    }

    #[test]
    fn corrupted_data_is_noticed() {
        let mut receiver = Receiver::new(2 * CHUNK as u64, 1);
        let mut payload = vec![0; CHUNK];
        content(1, 0, &mut payload);
        payload[5] ^= 1;
        receiver.on_data(0, &payload);
        assert!(!receiver.all_correct());
    }
}
