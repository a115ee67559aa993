//! Pure helpers for datagram batches: taking non-QUIC segments out of a GRO batch, and cutting a GSO
//! transmit into relay datagram batches.

use std::num::NonZeroU16;

use bytes::Bytes;
use iroh_relay::protos::frame::{Datagrams, Ecn, MAX_PAYLOAD};
use quinn::udp::EcnCodepoint;

use super::demux::{PacketKind, classify};

/// Classifies every segment of the batch in `buf[..len]` (segments of `stride` bytes, the last possibly
/// shorter); hands each STUN or disco segment to `other` and compacts the QUIC segments to the front.
/// Returns the length of the QUIC segments kept; their stride is unchanged, because a short segment can
/// only be the last one and stays last.
pub(crate) fn take_non_quic(
    buf: &mut [u8],
    len: usize,
    stride: usize,
    mut other: impl FnMut(PacketKind, &[u8]),
) -> usize {
    let len = len.min(buf.len());
    let stride = if stride == 0 { len } else { stride };
    if len == 0 {
        return 0;
    }
    // The common case: all QUIC, nothing to move.
    let all_quic = (0..len)
        .step_by(stride)
        .all(|start| classify(&buf[start..(start + stride).min(len)]) == PacketKind::Quic);
    if all_quic {
        return len;
    }
    let mut kept = 0;
    let mut start = 0;
    while start < len {
        let end = (start + stride).min(len);
        match classify(&buf[start..end]) {
            PacketKind::Quic => {
                if kept != start {
                    buf.copy_within(start..end, kept);
                }
                kept += end - start;
            }
            kind => other(kind, &buf[start..end]),
        }
        start = end;
    }
    kept
}

/// The relay batches that carry a transmit: one datagram, or its GSO segments in batches of at most
/// [`MAX_PAYLOAD`] bytes, each with the segment size so the receiver can split them again.
pub(crate) fn relay_batches(
    contents: &[u8],
    segment_size: Option<usize>,
    ecn: Option<EcnCodepoint>,
) -> impl Iterator<Item = Datagrams> + '_ {
    let ecn = ecn.map_or(Ecn::NotEct, |e| Ecn::from_bits(e as u8));
    let segment = segment_size
        .filter(|s| *s > 0 && *s < contents.len())
        .and_then(|s| Some((s, NonZeroU16::new(u16::try_from(s).ok()?)?)));
    let chunk = match segment {
        // Whole segments per batch.
        Some((size, _)) => (MAX_PAYLOAD / size).max(1) * size,
        None => contents.len().max(1),
    };
    contents.chunks(chunk).map(move |part| Datagrams {
        ecn,
        segment_size: segment
            .filter(|(size, _)| part.len() > *size)
            .map(|(_, nz)| nz),
        contents: Bytes::copy_from_slice(part),
    })
}

/// The quinn ECN codepoint of a relayed batch.
pub(crate) fn quinn_ecn(ecn: Ecn) -> Option<EcnCodepoint> {
    EcnCodepoint::from_bits(ecn as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disco::MAGIC;

    fn quic(n: u8, len: usize) -> Vec<u8> {
        let mut v = vec![n; len];
        v[0] = 0x40 | (n & 0x3f);
        v
    }

    fn disco(len: usize) -> Vec<u8> {
        let mut v = vec![7; len];
        v[..MAGIC.len()].copy_from_slice(&MAGIC);
        v
    }

    #[test]
    fn all_quic_batch_is_untouched() {
        let mut buf = [quic(1, 10), quic(2, 10), quic(3, 4)].concat();
        let before = buf.clone();
        let kept = take_non_quic(&mut buf, 24, 10, |_, _| panic!("nothing else"));
        assert_eq!(kept, 24);
        assert_eq!(buf, before);
    }

    #[test]
    fn disco_segments_are_taken_out_and_the_rest_compacted() {
        let mut buf = [
            quic(1, 100),
            disco(100),
            quic(2, 100),
            disco(100),
            quic(3, 60),
        ]
        .concat();
        let mut taken = Vec::new();
        let kept = take_non_quic(&mut buf, 460, 100, |kind, seg| {
            taken.push((kind, seg.len()));
        });
        assert_eq!(
            taken,
            vec![(PacketKind::Disco, 100), (PacketKind::Disco, 100)]
        );
        assert_eq!(kept, 260);
        assert_eq!(
            &buf[..260],
            &[quic(1, 100), quic(2, 100), quic(3, 60)].concat()[..]
        );
    }

    #[test]
    fn single_disco_datagram_leaves_nothing() {
        let mut buf = disco(80);
        let mut n = 0;
        assert_eq!(take_non_quic(&mut buf, 80, 80, |_, _| n += 1), 0);
        assert_eq!(n, 1);
        assert_eq!(take_non_quic(&mut buf, 0, 0, |_, _| n += 1), 0);
    }

    #[test]
    fn relay_batches_keep_segments_whole() {
        let contents: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let single: Vec<_> = relay_batches(&contents[..1000], None, None).collect();
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].segment_size, None);

        let batches: Vec<_> = relay_batches(&contents, Some(1200), None).collect();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].segment_size.map(|s| s.get()), Some(1200));
        let joined: Vec<u8> = batches.iter().flat_map(|b| b.contents.to_vec()).collect();
        assert_eq!(joined, contents);

        let big = vec![0x40u8; 100 * 1000];
        let batches: Vec<_> = relay_batches(&big, Some(1000), Some(EcnCodepoint::Ect0)).collect();
        assert!(batches.len() >= 2);
        for batch in &batches {
            assert!(batch.contents.len() <= MAX_PAYLOAD);
            assert_eq!(batch.contents.len() % 1000, 0);
            assert_eq!(batch.ecn, Ecn::Ect0);
        }
        assert_eq!(
            batches.iter().map(|b| b.contents.len()).sum::<usize>(),
            big.len()
        );
    }
}
