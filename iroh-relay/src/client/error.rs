//! The client's errors, typed by who is at fault: the network (DNS, TCP, TLS), the server (HTTP status,
//! handshake, protocol), the caller (a full queue, an invalid batch) or the clock (timeouts).

use std::{error::Error as StdError, time::Duration};

use crate::{
    io::ReadError,
    protos::{frame::FrameError, handshake::HandshakeError},
};

/// A boxed error from a library whose types this crate does not expose (hickory, hyper).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a connection to a relay could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The relay's host name did not resolve to any address.
    #[error("resolving {host} failed: {source}")]
    Dns {
        /// The host name.
        host: String,
        /// What the resolver said.
        #[source]
        source: BoxError,
    },
    /// No TCP connection could be opened to any of the relay's addresses (the error of the last one tried).
    #[error("TCP connection to {addr} failed: {source}")]
    Tcp {
        /// The address of the last attempt.
        addr: std::net::SocketAddr,
        /// The error of that attempt.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (an untrusted or mismatched certificate, a protocol error) or the TLS
    /// configuration could not be built.
    #[error("TLS failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The HTTP exchange failed before a response, or a WebSocket `101` did not match the key sent.
    #[error("HTTP upgrade failed: {0}")]
    Http(#[source] BoxError),
    /// The server answered `101 Switching Protocols` but not to the protocol asked for (a WebSocket
    /// subprotocol included).
    #[error("asked the relay for {asked}, it switched to {got:?}")]
    WrongProtocol {
        /// The protocol asked for.
        asked: &'static str,
        /// What the server named, if anything.
        got: Option<String>,
    },
    /// The server answered `401 Unauthorized`: the bearer token is missing or wrong.
    #[error("the relay requires authorization (401): {message}")]
    Unauthorized {
        /// The start of the response body, if any.
        message: String,
    },
    /// The server answered `403 Forbidden`: this client may not use the relay.
    #[error("the relay refused access (403): {message}")]
    Forbidden {
        /// The start of the response body, if any.
        message: String,
    },
    /// The server answered with another status than `101 Switching Protocols`.
    #[error("the relay answered HTTP {status} instead of upgrading: {message}")]
    HttpStatus {
        /// The status code.
        status: http::StatusCode,
        /// The start of the response body, if any.
        message: String,
    },
    /// The login handshake failed, including a [`HandshakeError::Denied`] from the server.
    #[error("relay handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// Reading from the relay failed during the handshake.
    #[error("reading the handshake failed: {0}")]
    Read(#[from] ReadError),
    /// Writing to the relay failed during the handshake.
    #[error("writing the handshake failed: {0}")]
    Write(#[source] std::io::Error),
    /// The server closed the connection during the handshake.
    #[error("the relay closed the connection during the handshake")]
    ClosedDuringHandshake,
    /// The whole connect (DNS, TCP, TLS, HTTP, handshake) took longer than the connect timeout.
    #[error("connecting timed out after {0:?}")]
    Timeout(Duration),
}

impl ConnectError {
    /// Whether retrying soon is pointless: the server refused this client (401, 403, a denied login). A
    /// reconnecting client still retries, but at its longest backoff.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized { .. }
                | Self::Forbidden { .. }
                | Self::Handshake(HandshakeError::Denied { .. })
        )
    }
}

/// Why an established connection ended, or why none could be made: what
/// [`ConnectionState::Disconnected`](super::ConnectionState::Disconnected) reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Reading failed, or the server sent bytes that are not frames.
    #[error("reading from the relay failed: {0}")]
    Read(#[from] ReadError),
    /// Writing failed.
    #[error("writing to the relay failed: {0}")]
    Write(#[source] std::io::Error),
    /// The server closed the connection.
    #[error("the relay closed the connection")]
    ClosedByServer,
    /// Nothing arrived from the server for this long, not even an answer to a liveness ping.
    #[error("the relay went silent for {0:?}")]
    Timeout(Duration),
}

/// Why datagrams could not be queued for sending.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The client was closed (or all its handles dropped); nothing more is sent.
    #[error("the relay client is closed")]
    Closed,
    /// The send queue is full (only from `try_send`; `send` waits for room instead).
    #[error("the relay send queue is full")]
    QueueFull,
    /// The batch would not be accepted by the server: too large, or its segment size does not fit.
    #[error("invalid datagram batch: {0}")]
    Invalid(#[from] FrameError),
    /// Writing to the connection failed (only from [`ConnectionWriter`](super::ConnectionWriter)).
    #[error("writing to the relay failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a ping got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// The client is not connected right now (it is connecting or waiting to reconnect).
    #[error("not connected to the relay")]
    NotConnected,
    /// No pong arrived within the ping timeout.
    #[error("no pong within {0:?}")]
    Timeout(Duration),
    /// The connection ended before the pong arrived.
    #[error("the connection ended before the pong arrived")]
    ConnectionLost,
    /// Too many pings are already waiting for their pongs.
    #[error("too many pings in flight")]
    TooManyInFlight,
    /// The client was closed.
    #[error("the relay client is closed")]
    Closed,
}
