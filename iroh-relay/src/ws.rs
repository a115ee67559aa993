//! The WebSocket transport (RFC 6455): the relay protocol's frames carried one per binary message, for
//! networks where only WebSocket gets through (load balancers and middleboxes that pass `Upgrade: websocket`
//! but nothing else).
//!
//! [`WsBytes`] turns a [`WebSocketStream`] (tokio-websockets does the framing, masking and control frames)
//! back into a byte stream, so [`FrameReader`](crate::io::FrameReader) and
//! [`FrameWriter`](crate::io::FrameWriter) work on it unchanged: reads yield the payloads of binary messages
//! in order, and writes cut the bytes at relay frame boundaries, sending each whole frame as one message.
//! Pings are answered by tokio-websockets; a close message or the end of the stream is the end of the bytes.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes, BytesMut};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_websockets::{Message, WebSocketStream};

use crate::protos::frame::{HEADER_LEN, MAX_FRAME_BODY, peek_header};

/// The GUID RFC 6455 (section 1.3) appends to `Sec-WebSocket-Key` before hashing it into
/// `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The `Sec-WebSocket-Version` this transport speaks.
pub(crate) const WS_VERSION: &str = "13";
/// The most bytes one `poll_write` takes; the writer calls again for the rest.
const MAX_WRITE: usize = 256 * 1024;
/// The largest message a relay frame fills.
pub(crate) const MAX_MESSAGE: usize = HEADER_LEN + MAX_FRAME_BODY;

/// Queued messages are written out once this many bytes wait, or at a flush. tokio-websockets' default of
/// 8 KiB meant one write per 8 KiB under load (0.67x the relay upgrade's throughput with 1200-byte frames
/// over TLS); the frame writer flushes after each batch anyway.
const FLUSH_THRESHOLD: usize = 256 * 1024;

/// The stream settings both ends use.
fn config() -> tokio_websockets::Config {
    tokio_websockets::Config::default().flush_threshold(FLUSH_THRESHOLD)
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64 of the SHA-1 of the key and the GUID.
pub(crate) fn accept_key(key: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(ACCEPT_GUID);
    data_encoding::BASE64.encode(ctx.finish().as_ref())
}

/// The largest message the reading side takes now, shared between a [`WsBytes`] and whoever raises it
/// (the server, once the peer has logged in).
#[derive(Debug, Clone)]
pub(crate) struct MessageLimit(Arc<AtomicUsize>);

impl MessageLimit {
    pub(crate) fn new(max: usize) -> Self {
        Self(Arc::new(AtomicUsize::new(max)))
    }

    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn set(&self, max: usize) {
        self.0.store(max, Ordering::Relaxed);
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// What tokio-websockets reads and writes: the stream, with the bytes read past the `101` in front. (It
/// writes a message's header and payload with one vectored write, many messages at once; a `BufWriter`
/// in between was tried and measured no better.)
type Wire<S> = Rewind<S>;

/// A byte stream over a WebSocket connection carrying relay frames (see the module docs).
#[derive(Debug)]
pub(crate) struct WsBytes<S> {
    ws: WebSocketStream<Wire<S>>,
    /// What is left of the binary message being read.
    reading: Bytes,
    /// Bytes written that do not yet make a whole relay frame.
    writing: BytesMut,
    limit: MessageLimit,
    /// The limit `ws` was last given.
    applied: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsBytes<S> {
    /// The server's end of an upgraded stream, `prefix` being what was read past the request; messages
    /// longer than `limit` end the stream with an error.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn server(stream: S, prefix: Bytes, limit: MessageLimit) -> Self {
        let wire = Rewind::new(stream, prefix);
        let ws = tokio_websockets::ServerBuilder::new()
            .config(config())
            .serve(wire);
        Self::new(ws, limit)
    }

    /// The client's end of an upgraded stream (it masks what it sends), `prefix` being what was read past
    /// the `101`.
    pub(crate) fn client(stream: S, prefix: Bytes, limit: MessageLimit) -> Self {
        let wire = Rewind::new(stream, prefix);
        let ws = tokio_websockets::ClientBuilder::new()
            .config(config())
            .take_over(wire);
        Self::new(ws, limit)
    }

    fn new(mut ws: WebSocketStream<Wire<S>>, limit: MessageLimit) -> Self {
        let applied = limit.get();
        ws.limits_mut().set_max_payload_len(Some(applied));
        Self {
            ws,
            reading: Bytes::new(),
            writing: BytesMut::new(),
            limit,
            applied,
        }
    }
}

fn ws_error(error: tokio_websockets::Error) -> io::Error {
    match error {
        tokio_websockets::Error::Io(error) => error,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.reading.is_empty() {
                let n = this.reading.len().min(buf.remaining());
                buf.put_slice(&this.reading[..n]);
                this.reading.advance(n);
                return Poll::Ready(Ok(()));
            }
            let limit = this.limit.get();
            if limit != this.applied {
                this.ws.limits_mut().set_max_payload_len(Some(limit));
                this.applied = limit;
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                // A close message, or the stream's end: no more bytes.
                None => return Poll::Ready(Ok(())),
                Some(Err(error)) => return Poll::Ready(Err(ws_error(error))),
                Some(Ok(message)) if message.is_binary() => {
                    this.reading = message.into_payload().into();
                }
                Some(Ok(message)) if message.is_close() => return Poll::Ready(Ok(())),
                Some(Ok(message)) if message.is_text() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text message on the relay's WebSocket (frames are binary messages)",
                    )));
                }
                // Ping (answered by tokio-websockets) and pong.
                Some(Ok(_)) => {}
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Either everything taken below becomes messages, or nothing is taken: cancel-safe like a socket.
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(ws_error)?;
        let mut n = 0;
        // Whole frames at the front of `buf` each get an allocation of their own, so the client's masking
        // works on it in place (a slice of a shared buffer would be copied once more).
        while this.writing.is_empty() && n < MAX_WRITE {
            let header = peek_header(&buf[n..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let Some((_, body)) = header else { break };
            let len = HEADER_LEN + body;
            if buf.len() - n < len {
                break;
            }
            let frame = Bytes::copy_from_slice(&buf[n..n + len]);
            Pin::new(&mut this.ws)
                .start_send(Message::binary(frame))
                .map_err(ws_error)?;
            n += len;
        }
        if n > 0 {
            return Poll::Ready(Ok(n));
        }
        // A partial frame (a writer that does not write whole frames): gathered until it is whole.
        let n = buf.len().min(MAX_WRITE);
        this.writing.extend_from_slice(&buf[..n]);
        loop {
            let header = peek_header(&this.writing)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let Some((_, body)) = header else { break };
            let len = HEADER_LEN + body;
            if this.writing.len() < len {
                break;
            }
            let frame = this.writing.split_to(len).freeze();
            Pin::new(&mut this.ws)
                .start_send(Message::binary(frame))
                .map_err(ws_error)?;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(ws_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A close message, then the stream's own shutdown (TLS close_notify, TCP FIN). Waiting for the
        // peer's close is left to the reader.
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_flush(cx)).map_err(ws_error)?;
        match Pin::new(&mut this.ws).start_send(Message::close(None, "")) {
            Ok(()) | Err(tokio_websockets::Error::AlreadyClosed) => {}
            Err(error) => return Poll::Ready(Err(ws_error(error))),
        }
        ready!(Pin::new(&mut this.ws).poll_flush(cx)).map_err(ws_error)?;
        Pin::new(this.ws.get_mut()).poll_shutdown(cx)
    }
}

/// A stream that first yields bytes already read from it (what an HTTP library read past the `101`).
#[derive(Debug)]
pub(crate) struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub(crate) fn new(inner: S, prefix: Bytes) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::DuplexStream;

    use super::*;
    use crate::{
        io::{FrameReader, FrameWriter},
        protos::frame::{Datagrams, Frame},
    };

    #[test]
    fn accept_key_matches_rfc_6455() {
        // The example of RFC 6455 section 1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    /// A client end and a server end joined by an in-memory pipe.
    fn pair(
        client_limit: MessageLimit,
        server_limit: MessageLimit,
    ) -> (WsBytes<DuplexStream>, WsBytes<DuplexStream>) {
        let (a, b) = tokio::io::duplex(4 << 20);
        (
            WsBytes::client(a, Bytes::new(), client_limit),
            WsBytes::server(b, Bytes::new(), server_limit),
        )
    }

    fn big() -> Frame {
        Frame::SendDatagrams {
            dst: iroh_base::SecretKey::from_bytes(&[3; 32]).public(),
            datagrams: Datagrams::single(vec![0; 1000]),
        }
    }

    #[tokio::test]
    async fn frames_cross_as_one_message_each() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (a, b) = tokio::io::duplex(4 << 20);
            let mut writer = FrameWriter::new(WsBytes::client(
                a,
                Bytes::new(),
                MessageLimit::new(MAX_MESSAGE),
            ));
            let mut raw = tokio_websockets::ServerBuilder::new().serve(b);
            let node = iroh_base::SecretKey::from_bytes(&[3; 32]).public();
            let frames: Vec<Frame> = (0..50u16)
                .map(|i| Frame::SendDatagrams {
                    dst: node,
                    datagrams: Datagrams::single(vec![i.to_le_bytes()[0]; usize::from(i) * 1000]),
                })
                .chain([Frame::KeepAlive, Frame::Ping([7; 8])])
                .collect();
            for frame in &frames {
                writer.queue(frame).await.unwrap();
            }
            writer.flush().await.unwrap();
            use futures_util::StreamExt;
            for frame in &frames {
                let message = raw.next().await.unwrap().unwrap();
                assert!(message.is_binary());
                let mut bytes = BytesMut::from(&message.as_payload()[..]);
                assert_eq!(&Frame::decode(&mut bytes).unwrap().unwrap(), frame);
                assert!(bytes.is_empty(), "one frame per message");
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn partial_writes_are_gathered_into_whole_frames() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let limit = MessageLimit::new(MAX_MESSAGE);
            let (mut client, server) = pair(limit.clone(), limit);
            let mut reader = FrameReader::new(server);
            let mut bytes = BytesMut::new();
            big().encode(&mut bytes);
            Frame::KeepAlive.encode(&mut bytes);
            use tokio::io::AsyncWriteExt;
            for chunk in bytes.chunks(7) {
                client.write_all(chunk).await.unwrap();
            }
            client.flush().await.unwrap();
            assert_eq!(reader.read_frame().await.unwrap(), Some(big()));
            assert_eq!(reader.read_frame().await.unwrap(), Some(Frame::KeepAlive));
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn reader_sees_frames_and_the_end() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let limit = MessageLimit::new(MAX_MESSAGE);
            let (client, server) = pair(limit.clone(), limit);
            let mut writer = FrameWriter::new(client);
            let mut reader = FrameReader::new(server);
            writer.send(&Frame::Ping([1; 8])).await.unwrap();
            writer.send(&Frame::Pong([2; 8])).await.unwrap();
            assert_eq!(
                reader.read_frame().await.unwrap(),
                Some(Frame::Ping([1; 8]))
            );
            assert_eq!(
                reader.read_frame().await.unwrap(),
                Some(Frame::Pong([2; 8]))
            );
            writer.shutdown().await.unwrap();
            assert_eq!(reader.read_frame().await.unwrap(), None);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn messages_over_the_limit_end_the_stream() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (client, server) = pair(MessageLimit::new(MAX_MESSAGE), MessageLimit::new(100));
            let mut writer = FrameWriter::new(client);
            let mut reader = FrameReader::new(server);
            writer.send(&Frame::KeepAlive).await.unwrap();
            writer.send(&big()).await.unwrap();
            assert_eq!(reader.read_frame().await.unwrap(), Some(Frame::KeepAlive));
            assert!(reader.read_frame().await.is_err());
            // Raised in time, the same frame passes.
            let limit = MessageLimit::new(100);
            let (client, server) = pair(MessageLimit::new(MAX_MESSAGE), limit.clone());
            let mut writer = FrameWriter::new(client);
            let mut reader = FrameReader::new(server);
            writer.send(&Frame::KeepAlive).await.unwrap();
            writer.send(&big()).await.unwrap();
            assert_eq!(reader.read_frame().await.unwrap(), Some(Frame::KeepAlive));
            limit.set(MAX_MESSAGE);
            assert_eq!(reader.read_frame().await.unwrap(), Some(big()));
        })
        .await
        .unwrap();
    }
}
