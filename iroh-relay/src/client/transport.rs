//! How a client's frames travel once the HTTP upgrade is done: straight on the stream (`Upgrade:
//! iroh-relay-v1`) or one per WebSocket binary message (`Upgrade: websocket`).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::dial::HttpStream;
use crate::ws::{Rewind, WsBytes};

/// Which HTTP upgrade a client asks the relay for.
///
/// Both carry the same frames and the same login. The relay protocol's own upgrade is the lighter one; a
/// WebSocket gets through load balancers, CDNs and middleboxes that pass `Upgrade: websocket` and nothing
/// else. Whichever is chosen, a connect whose upgrade is clearly refused (the relay or a proxy in front of it
/// answers `400`, `404`, `405`, `426` or `501`, or switches to another protocol) tries the other at once,
/// and the client keeps using the one that worked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// `Upgrade: iroh-relay-v1`: frames straight on the TCP or TLS stream (the default).
    #[default]
    Relay,
    /// `Upgrade: websocket` (RFC 6455) with `Sec-WebSocket-Protocol: iroh-relay-v1`: one frame per binary
    /// message.
    WebSocket,
}

impl Transport {
    /// The other transport, for the fallback.
    pub(crate) fn other(self) -> Self {
        match self {
            Self::Relay => Self::WebSocket,
            Self::WebSocket => Self::Relay,
        }
    }
}

/// The stream a logged-in connection reads and writes frames on.
#[derive(Debug)]
pub(crate) enum RelayStream {
    Relay(Rewind<HttpStream>),
    WebSocket(Box<WsBytes<HttpStream>>),
}

impl AsyncRead for RelayStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Relay(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::WebSocket(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RelayStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Relay(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::WebSocket(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Relay(stream) => Pin::new(stream).poll_flush(cx),
            Self::WebSocket(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Relay(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::WebSocket(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Relay(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::WebSocket(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Relay(stream) => stream.is_write_vectored(),
            Self::WebSocket(_) => false,
        }
    }
}
