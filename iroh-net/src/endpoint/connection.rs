//! Connections, incoming connection attempts, and the errors of dialling and accepting.

use std::{
    future::{Future, IntoFuture},
    ops::Deref,
    pin::Pin,
    time::Duration,
};

use iroh_base::NodeId;

use crate::tls::{self, HandshakeFailure, HandshakeFailureKind, RemoteNodeIdError, TlsError};

/// A QUIC connection to a node, with the node's proven identity and the negotiated protocol.
///
/// Dereferences to [`quinn::Connection`] for streams, datagrams and statistics.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: quinn::Connection,
    remote_node_id: NodeId,
    alpn: Vec<u8>,
    /// The window tuner runs while a clone of this connection lives.
    tuner: Option<std::sync::Arc<super::windows::TunerGuard>>,
}

impl Connection {
    pub(crate) fn new(inner: quinn::Connection) -> Result<Self, RemoteNodeIdError> {
        let remote_node_id = tls::remote_node_id(&inner)?;
        let alpn = tls::alpn(&inner).unwrap_or_default();
        Ok(Self {
            inner,
            remote_node_id,
            alpn,
            tuner: None,
        })
    }

    /// Starts sizing this connection's windows with `tuning` (see [`super::windows`]).
    pub(crate) fn tune_windows(mut self, tuning: Option<super::WindowTuning>) -> Self {
        self.tuner = super::windows::spawn(&self.inner, tuning).map(std::sync::Arc::new);
        self
    }

    /// The NodeId the remote proved in the TLS handshake.
    pub fn remote_node_id(&self) -> NodeId {
        self.remote_node_id
    }

    /// The ALPN protocol the two sides agreed on.
    pub fn alpn(&self) -> &[u8] {
        &self.alpn
    }

    /// The underlying quinn connection.
    pub fn quinn(&self) -> &quinn::Connection {
        &self.inner
    }

    /// Unwraps the quinn connection. Its windows keep the size they have now (the Endpoint sizes them
    /// only while a [`Connection`] clone lives).
    pub fn into_quinn(self) -> quinn::Connection {
        self.inner
    }
}

impl Deref for Connection {
    type Target = quinn::Connection;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

/// A connection attempt from a remote node, from [`Endpoint::accept`](super::Endpoint::accept).
///
/// Await it (or call [`Incoming::accept`]) to run the handshake, or turn it down with [`Incoming::refuse`]
/// or [`Incoming::ignore`].
#[derive(Debug)]
pub struct Incoming {
    inner: quinn::Incoming,
    tuning: Option<super::WindowTuning>,
}

impl Incoming {
    pub(crate) fn new(inner: quinn::Incoming, tuning: Option<super::WindowTuning>) -> Self {
        Self { inner, tuning }
    }

    /// Completes the handshake. The remote's NodeId and the protocol are known once it returns.
    pub async fn accept(self) -> Result<Connection, AcceptError> {
        let conn = self
            .inner
            .accept()
            .map_err(AcceptError::Connection)?
            .await
            .map_err(AcceptError::Connection)?;
        let conn = Connection::new(conn).map_err(AcceptError::Identity)?;
        Ok(conn.tune_windows(self.tuning))
    }

    /// Refuses the attempt with a `CONNECTION_REFUSED` close.
    pub fn refuse(self) {
        self.inner.refuse();
    }

    /// Drops the attempt without an answer.
    pub fn ignore(self) {
        self.inner.ignore();
    }
}

impl IntoFuture for Incoming {
    type Output = Result<Connection, AcceptError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.accept())
    }
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Neither a relay nor a direct address of the node is known (caller misuse: give a `NodeAddr` with
    /// one, or enable relays).
    #[error("no address known for node {0}")]
    NoAddress(NodeId),
    /// Discovery found no usable address for the node: every service answered without one, or the
    /// connect timeout ran out first. The errors say what each service tried.
    #[error("no address for {node}: {errors}{}", timed_out.map(|t| format!(" (gave up after {} ms)", t.as_millis())).unwrap_or_default())]
    Discovery {
        /// The node dialled.
        node: NodeId,
        /// What each service that answered said.
        errors: crate::discovery::DiscoveryErrors,
        /// Set when the connect timeout ended the search (services may still have been running).
        timed_out: Option<Duration>,
    },
    /// The NodeId dialled is our own (caller misuse).
    #[error("cannot connect to ourselves")]
    SelfConnect,
    /// The node at the address proved another key than the NodeId dialled.
    #[error("the node reached is not {expected}")]
    WrongNodeId {
        /// The NodeId dialled.
        expected: NodeId,
    },
    /// The node does not accept the protocol asked for.
    #[error("the node does not accept ALPN {}", String::from_utf8_lossy(.alpn))]
    AlpnRefused {
        /// The protocol asked for.
        alpn: Vec<u8>,
    },
    /// The TLS handshake failed for another reason.
    #[error("TLS handshake failed: {0:?}")]
    Handshake(HandshakeFailure),
    /// No connection within the endpoint's connect timeout.
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// The endpoint is closed.
    #[error("the endpoint is closed")]
    Closed,
    /// The client TLS configuration could not be built (for example an empty ALPN list).
    #[error("TLS configuration: {0}")]
    Tls(#[from] TlsError),
    /// quinn refused to start the connection.
    #[error("cannot start the connection: {0}")]
    Start(quinn::ConnectError),
    /// The connection failed (the peer closed it, a transport error, a reset).
    #[error("connection failed: {0}")]
    Connection(quinn::ConnectionError),
    /// The connection's peer identity could not be read (a bug if it happens).
    #[error("peer identity: {0}")]
    Identity(#[from] RemoteNodeIdError),
}

impl ConnectError {
    /// Classifies a failed handshake: a TLS alert names the cause, a timeout is a timeout.
    pub(crate) fn from_connection(
        error: quinn::ConnectionError,
        expected: NodeId,
        alpn: &[u8],
        timeout: Duration,
    ) -> Self {
        if let Some(failure) = tls::classify_error(&error) {
            return match failure.kind {
                HandshakeFailureKind::WrongNodeId => Self::WrongNodeId { expected },
                HandshakeFailureKind::NoApplicationProtocol => Self::AlpnRefused {
                    alpn: alpn.to_vec(),
                },
                _ => Self::Handshake(failure),
            };
        }
        match error {
            quinn::ConnectionError::TimedOut => Self::Timeout(timeout),
            quinn::ConnectionError::LocallyClosed => Self::Closed,
            other => Self::Connection(other),
        }
    }

    pub(crate) fn from_start(error: quinn::ConnectError) -> Self {
        match error {
            quinn::ConnectError::EndpointStopping => Self::Closed,
            other => Self::Start(other),
        }
    }
}

/// Why accepting a connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The handshake failed or the connection ended during it.
    #[error("connection failed: {0}")]
    Connection(quinn::ConnectionError),
    /// The peer's identity could not be read (a bug if it happens).
    #[error("peer identity: {0}")]
    Identity(RemoteNodeIdError),
}
