//! Byte-level helpers shared by the header and attribute codecs.
//!
//! Reading goes through [`Reader`], which only ever hands out sub-slices through checked splits, so no input can
//! make it panic. Writing goes through [`Writer`], which forwards to a [`BufMut`] and, when the message carries a
//! FINGERPRINT, feeds the same bytes to a CRC-32 so the checksum is known the moment the last attribute is written
//! (a `BufMut` cannot be read back).

use bytes::BufMut;

/// Rounds an attribute value length up to the 4-byte boundary every STUN attribute ends on.
pub(crate) const fn padded(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// Converts a length that the message invariants keep below 65536 to the 16-bit wire field.
///
/// Every length written comes from a [`crate::Message`] whose attributes were bounded when they were added (see
/// [`crate::message::MAX_ATTRIBUTES_LEN`]), so the fallback is never taken; it exists so that encoding has no panic
/// path at all.
pub(crate) fn wire_u16(len: usize) -> u16 {
    debug_assert!(
        len <= usize::from(u16::MAX),
        "length {len} escaped the message bounds"
    );
    u16::try_from(len).unwrap_or(u16::MAX)
}

/// A cursor over untrusted bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Bytes not consumed yet.
    pub(crate) const fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes the next `n` bytes, or `None` (consuming nothing) if fewer remain.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.rest.split_at_checked(n)?;
        self.rest = tail;
        Some(head)
    }

    /// Takes the next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.rest.split_first_chunk::<N>()?;
        self.rest = tail;
        Some(*head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
}

/// Writes to a [`BufMut`], optionally computing the CRC-32 of everything written.
pub(crate) struct Writer<'a, B: BufMut> {
    buf: &'a mut B,
    crc: Option<crc32fast::Hasher>,
}

impl<'a, B: BufMut> Writer<'a, B> {
    /// A writer that also checksums what it writes when `checksum` is true.
    pub(crate) fn new(buf: &'a mut B, checksum: bool) -> Self {
        Self {
            buf,
            crc: checksum.then(crc32fast::Hasher::new),
        }
    }

    pub(crate) fn put_slice(&mut self, bytes: &[u8]) {
        if let Some(crc) = &mut self.crc {
            crc.update(bytes);
        }
        self.buf.put_slice(bytes);
    }

    pub(crate) fn put_u16(&mut self, v: u16) {
        self.put_slice(&v.to_be_bytes());
    }

    /// Writes an attribute header: type and value length, in one write (small writes cost more than their bytes,
    /// in the `BufMut` and the CRC alike, so the codec batches them).
    pub(crate) fn put_attribute_header(&mut self, typ: u16, len: u16) {
        let [t0, t1] = typ.to_be_bytes();
        let [l0, l1] = len.to_be_bytes();
        self.put_slice(&[t0, t1, l0, l1]);
    }

    /// Writes the zero bytes that pad a value of `len` bytes to a 4-byte boundary.
    pub(crate) fn put_padding(&mut self, len: usize) {
        const ZEROS: [u8; 3] = [0; 3];
        let pad = padded(len) - len;
        // `pad` is at most 3, so the slice always exists.
        if let Some(zeros) = ZEROS.get(..pad) {
            self.put_slice(zeros);
        }
    }

    /// The CRC-32 of everything written so far (0 when not checksumming).
    pub(crate) fn crc(&self) -> u32 {
        self.crc.as_ref().map_or(0, |c| c.clone().finalize())
    }
}
