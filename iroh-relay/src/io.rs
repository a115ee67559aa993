//! Reading and writing frames on an async byte stream: the thin I/O shell around [`crate::protos::frame`],
//! shared by the client and the server.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protos::frame::{Frame, FrameError, HEADER_LEN, MAX_FRAME_BODY, peek_header};

/// How much a read buffer grows by when it runs out of room. Small, so that idle connections stay cheap
/// (thousands of them sit on a relay); [`Frame::decode`] reserves the exact room a large frame needs.
const READ_CHUNK: usize = 16 * 1024;
/// The first read after [`FrameReader::release_idle_buffer`] reserves only this much, so a connection waiting
/// for its next frame holds no large buffer; a large frame then reserves its own size.
const IDLE_READ_CHUNK: usize = 512;
/// Encoded frames are written out once this many bytes are buffered, even before [`FrameWriter::flush`].
const WRITE_HIGH_WATER: usize = 256 * 1024;

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The stream failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a valid frame.
    #[error("invalid frame: {0}")]
    Frame(#[from] FrameError),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({0} bytes of it received)")]
    TruncatedFrame(usize),
    /// A frame's header announced a body longer than this reader takes now (see
    /// [`FrameReader::set_max_frame_body`]).
    #[error("frame of type {typ} announces {len} bytes, more than the {max} allowed here")]
    FrameTooLarge {
        /// The frame type.
        typ: u8,
        /// The announced body length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Reads frames from `R`, decoding datagram payloads without copying them.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    /// Whether the buffer was released for idleness: the next reservation is small.
    idle: bool,
    /// The longest frame body taken; a longer one is an error at its header, before room is reserved.
    max_body: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `inner`.
    pub fn new(inner: R) -> Self {
        Self::with_buffer(inner, BytesMut::new())
    }

    /// A reader over `inner` that first decodes what is already in `buf` (bytes read past an HTTP upgrade).
    pub fn with_buffer(inner: R, buf: BytesMut) -> Self {
        Self {
            inner,
            buf,
            idle: false,
            max_body: MAX_FRAME_BODY,
        }
    }

    /// Refuses frames whose body is longer than `max` (at most the protocol's 65,536 bytes) with
    /// [`ReadError::FrameTooLarge`], as soon as their header arrives: no room is reserved for them. A server
    /// sets a small limit until the peer has logged in, so an unauthenticated connection cannot make it
    /// reserve a full-size frame.
    pub fn set_max_frame_body(&mut self, max: usize) {
        self.max_body = max.min(MAX_FRAME_BODY);
    }

    /// The next frame, or `Ok(None)` when the stream ends cleanly between frames. Cancel-safe: dropping the
    /// future loses no bytes.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if self.max_body < MAX_FRAME_BODY
                && let Some((typ, len)) = peek_header(&self.buf)?
                && len > self.max_body
            {
                return Err(ReadError::FrameTooLarge {
                    typ,
                    len,
                    max: self.max_body,
                });
            }
            if let Some(frame) = Frame::decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < HEADER_LEN {
                let chunk = if self.idle {
                    IDLE_READ_CHUNK
                } else {
                    READ_CHUNK
                };
                self.idle = false;
                self.buf.reserve(chunk);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::TruncatedFrame(self.buf.len()))
                };
            }
        }
    }

    /// Frames already buffered, decoded without reading more. Lets a driver handle a burst before yielding.
    pub fn try_read_buffered(&mut self) -> Result<Option<Frame>, FrameError> {
        Frame::decode(&mut self.buf)
    }

    /// Gives the read buffer's memory back if it holds no partial frame; the next read allocates again. For
    /// connections that go idle (a relay keeps thousands of them).
    pub fn release_idle_buffer(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.idle = true;
        }
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// Writes frames to `W`, coalescing small frames into large writes.
///
/// Frames are encoded into a buffer by [`FrameWriter::queue`]; [`FrameWriter::flush`] writes the buffer and
/// flushes the stream. Call `flush` when there is nothing more to send right now.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    buf: BytesMut,
    /// Bytes were written to `inner` since its last flush.
    needs_flush: bool,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer over `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            needs_flush: false,
        }
    }

    /// Encodes `frame` into the write buffer, writing the buffer out first if it is full.
    pub async fn queue(&mut self, frame: &Frame) -> std::io::Result<()> {
        if self.buf.len() >= WRITE_HIGH_WATER {
            self.write_buffer().await?;
        }
        frame.encode(&mut self.buf);
        Ok(())
    }

    /// Writes everything queued and flushes the stream.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.write_buffer().await?;
        self.inner.flush().await?;
        self.needs_flush = false;
        Ok(())
    }

    /// Encodes `frame` into the write buffer without writing anything, however full the buffer is.
    ///
    /// For a driver that bounds the buffer itself (see [`FrameWriter::buffered_len`]) and writes with
    /// [`FrameWriter::write_some`].
    pub fn push(&mut self, frame: &Frame) {
        frame.encode(&mut self.buf);
    }

    /// Bytes encoded but not yet written to the stream.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// Whether everything pushed or queued has been written and flushed.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && !self.needs_flush
    }

    /// Makes progress: writes some buffered bytes or, once all are written, flushes the stream. Call it until
    /// [`FrameWriter::is_idle`].
    ///
    /// Cancel-safe, unlike [`FrameWriter::flush`]: a cancelled call neither loses nor repeats bytes, so a
    /// driver can await it in a `select!` beside [`FrameReader::read_frame`] and never stop reading while a
    /// write is blocked.
    pub async fn write_some(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            if self.needs_flush {
                self.inner.flush().await?;
                self.needs_flush = false;
            }
            return Ok(());
        }
        // One `write` either completes (and the buffer advances in the same poll) or accepts nothing.
        let n = self.inner.write(&self.buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.buf.advance(n);
        self.needs_flush = true;
        Ok(())
    }

    /// Queues `frame` and flushes.
    pub async fn send(&mut self, frame: &Frame) -> std::io::Result<()> {
        self.queue(frame).await?;
        self.flush().await
    }

    /// Whether frames are queued but not yet written.
    pub fn has_pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Gives the write buffer's memory back if nothing is queued; the next frame allocates again. For
    /// connections that go idle.
    pub fn release_idle_buffer(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// Shuts the stream down for writing (a TLS close_notify, a TCP FIN) after flushing.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        self.inner.shutdown().await
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    async fn write_buffer(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf).await?;
            self.buf.clear();
            self.needs_flush = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protos::frame::{Datagrams, Frame};

    #[tokio::test]
    async fn frames_cross_a_stream() {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let (a, b) = tokio::io::duplex(1024);
            let mut writer = FrameWriter::new(a);
            let mut reader = FrameReader::new(b);
            let node = iroh_base::SecretKey::from_bytes(&[1; 32]).public();
            let frames: Vec<Frame> = (0..50u8)
                .map(|i| Frame::SendDatagrams {
                    dst: node,
                    datagrams: Datagrams::single(vec![i; 3000]),
                })
                .collect();
            let sent = frames.clone();
            let write = tokio::spawn(async move {
                for frame in &sent {
                    writer.queue(frame).await.unwrap();
                }
                writer.shutdown().await.unwrap();
            });
            for frame in frames {
                assert_eq!(reader.read_frame().await.unwrap(), Some(frame));
            }
            assert_eq!(reader.read_frame().await.unwrap(), None);
            write.await.unwrap();
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn cancelled_write_some_loses_and_repeats_nothing() {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            // A tiny pipe: most writes block, and the test cancels them again and again.
            let (a, b) = tokio::io::duplex(64);
            let mut writer = FrameWriter::new(a);
            let mut reader = FrameReader::new(b);
            let frames: Vec<Frame> = (0..20u8)
                .map(|i| Frame::Ping([i; crate::protos::frame::PING_LEN]))
                .collect();
            for frame in &frames {
                writer.push(frame);
            }
            assert_eq!(writer.buffered_len(), frames.len() * 13);
            let mut got = Vec::new();
            while got.len() < frames.len() {
                tokio::select! {
                    biased;
                    frame = reader.read_frame() => got.push(frame.unwrap().unwrap()),
                    written = writer.write_some(), if !writer.is_idle() => written.unwrap(),
                }
                // Start a write and drop it before it can finish, as a `select!` does.
                let _ = tokio::time::timeout(std::time::Duration::ZERO, writer.write_some()).await;
            }
            assert_eq!(got, frames);
            while !writer.is_idle() {
                writer.write_some().await.unwrap();
            }
            assert_eq!(writer.buffered_len(), 0);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn truncated_and_invalid_streams_are_errors() {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let mut reader = FrameReader::new(&[7u8, 0, 0, 0, 8, 1, 2][..]);
            assert!(matches!(
                reader.read_frame().await,
                Err(ReadError::TruncatedFrame(7))
            ));
            let mut reader = FrameReader::new(&[7u8, 0xff, 0xff, 0xff, 0xff][..]);
            assert!(matches!(
                reader.read_frame().await,
                Err(ReadError::Frame(FrameError::TooLarge { .. }))
            ));
        })
        .await
        .unwrap();
    }
}
