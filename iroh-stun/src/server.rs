//! A STUN Binding server: the sans-IO [`respond`] function, and [`Server`], a tokio task that runs it on a UDP
//! socket.
//!
//! [`respond`] holds all the protocol logic and is usable by any driver (for instance one that shares a socket
//! with another protocol and demultiplexes with [`crate::is_stun`]). [`Server`] is the thin driver: one task,
//! one socket, a receive loop that answers what [`respond`] answers, counts everything, and never stops on bad
//! input.
//!
//! ```text
//!   datagram --parse--> malformed? ------------------------------> drop, count `dropped_malformed`
//!                          |
//!                          +-- not a Binding request ------------> drop, count `ignored`
//!                          +-- unknown comprehension-required ---> 420 + UNKNOWN-ATTRIBUTES, count `errors_answered`
//!                          +-- otherwise ------------------------> success + XOR-MAPPED-ADDRESS, count `requests_answered`
//! ```
//!
//! Before answering, [`Server`] checks the source against its per-source [`RateLimit`] (by default 20
//! requests a second, bursts of 40, per IPv4 address or IPv6 /64): over it, the request is dropped and
//! counted in `refused_rate_limited`, so a spoofed source cannot use the server as a reflector.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, trace};

use crate::attr::{self, Attribute};
use crate::error::{EncodeError, ParseError};
use crate::message::{Class, Message, Method};

mod limit;

use limit::SourceLimiter;
pub use limit::{MAX_TRACKED_SOURCES, RateLimit};

/// Why [`respond`] produced no answer and no deliberate silence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The datagram is not a well-formed STUN message (the sender's fault); drop it.
    #[error("malformed STUN request: {0}")]
    Malformed(#[from] ParseError),
    /// The response could not be built, for instance because the SOFTWARE text given to [`respond`] is too long
    /// (the caller's fault).
    #[error("cannot build STUN response: {0}")]
    Encode(#[from] EncodeError),
}

/// Computes the answer to one datagram received from `from`: the sans-IO heart of the server.
///
/// - A Binding request gets a success response with XOR-MAPPED-ADDRESS set to `from` (an IPv4-mapped IPv6
///   address, as a dual-stack socket reports IPv4 peers, is answered in its IPv4 form).
/// - A Binding request with comprehension-required attributes this crate does not interpret (including
///   MESSAGE-INTEGRITY and USERNAME: there is no authentication here) gets a 420 (Unknown Attribute) error
///   response listing them in UNKNOWN-ATTRIBUTES.
/// - Indications, responses, and messages of other methods get `Ok(None)`: nothing is sent.
///
/// Every response carries `software` as SOFTWARE if given, and a FINGERPRINT. Keep `software` short: each byte
/// of it is sent to whoever claims an address, which a spoofed source turns into reflected traffic.
pub fn respond(
    from: SocketAddr,
    packet: &[u8],
    software: Option<&str>,
) -> Result<Option<Message>, ServerError> {
    respond_inner(from, packet, software, None)
}

/// [`respond`] with the settings of a [`ServerConfig`]: its SOFTWARE text, and on success responses its
/// OTHER-ADDRESS (RFC 5780 section 7.4) if one is set.
pub fn respond_with_config(
    from: SocketAddr,
    packet: &[u8],
    config: &ServerConfig,
) -> Result<Option<Message>, ServerError> {
    respond_inner(from, packet, config.software(), config.other_address)
}

fn respond_inner(
    from: SocketAddr,
    packet: &[u8],
    software: Option<&str>,
    other: Option<SocketAddr>,
) -> Result<Option<Message>, ServerError> {
    let request = Message::parse(packet)?;
    // RFC 8489 sections 6.3.2 to 6.3.4: indications and responses are processed, never answered; a server has
    // no transaction for a response to match.
    if request.class() != Class::Request {
        return Ok(None);
    }
    // RFC 8489 section 6.3: the agent first checks "that the method value is a supported method. [...] If any
    // errors are detected, the message is silently discarded." So a request of a method other than Binding gets
    // no answer (not a 400): the RFC reserves 400 (Bad Request) for requests of a supported method that are
    // malformed, and staying silent also keeps this server from reflecting traffic it does not understand.
    if request.method() != Method::BINDING {
        return Ok(None);
    }
    let transaction_id = request.transaction_id();
    let unknown = request.unknown_comprehension_required();
    let mut response = if unknown.is_empty() {
        // RFC 8489 section 6.3.1.1: "When forming the success response, the server adds an XOR-MAPPED-ADDRESS
        // attribute to the response; this attribute contains the source transport address of the request
        // message."
        let mut success = Message::binding_success(transaction_id, canonical_peer(from));
        if let Some(other) = other {
            success.push_attribute(Attribute::OtherAddress(other))?;
        }
        success
    } else {
        // RFC 8489 section 6.3.1: "If the request contains one or more unknown comprehension-required
        // attributes, the server replies with an error response with an error code of 420 (Unknown Attribute)
        // and includes an UNKNOWN-ATTRIBUTES attribute in the response that lists the unknown
        // comprehension-required attributes."
        let mut error = Message::binding_error(transaction_id, 420, "Unknown Attribute")?;
        error.push_attribute(Attribute::UnknownAttributes(unknown))?;
        error
    };
    if let Some(software) = software {
        response.push_attribute(Attribute::Software(software.to_owned()))?;
    }
    Ok(Some(response.with_fingerprint(true)))
}

/// An IPv4-mapped IPv6 peer address in its IPv4 form; other addresses unchanged.
fn canonical_peer(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Settings for a [`Server`]. The default: no SOFTWARE, no OTHER-ADDRESS, the default per-source
/// [`RateLimit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    software: Option<String>,
    other_address: Option<SocketAddr>,
    rate_limit: Option<RateLimit>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            software: None,
            other_address: None,
            rate_limit: Some(RateLimit::default()),
        }
    }
}

impl ServerConfig {
    /// Sends `software` as SOFTWARE in every response. Fails if it is longer than [`attr::MAX_TEXT_LEN`] bytes;
    /// see [`respond`] on keeping it short.
    pub fn with_software(mut self, software: impl Into<String>) -> Result<Self, EncodeError> {
        let software = software.into();
        if software.len() > attr::MAX_TEXT_LEN {
            return Err(EncodeError::TextTooLong {
                typ: attr::SOFTWARE,
                length: software.len(),
                max: attr::MAX_TEXT_LEN,
            });
        }
        self.software = Some(software);
        Ok(self)
    }

    /// The SOFTWARE text, if any.
    pub fn software(&self) -> Option<&str> {
        self.software.as_deref()
    }

    /// Sends `addr` as OTHER-ADDRESS (RFC 5780) in every success response: the server's second socket, to
    /// which a client sends a second Binding request from the same socket to learn whether its NAT maps by
    /// destination (a different reflexive address there means it does). An unspecified IP (`0.0.0.0:3479`,
    /// as a server bound to every interface knows its second socket) means "the IP you reached me at".
    pub fn with_other_address(mut self, addr: SocketAddr) -> Self {
        self.other_address = Some(addr);
        self
    }

    /// The OTHER-ADDRESS sent, if any.
    pub fn other_address(&self) -> Option<SocketAddr> {
        self.other_address
    }

    /// Sets (or with `None` removes) the per-source limit on answered requests. Without one, every request
    /// is answered, however many one claimed source sends.
    pub fn with_rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }

    /// The per-source limit, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }
}

/// A snapshot of a [`Server`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Binding requests answered with a success response.
    pub requests_answered: u64,
    /// Requests answered with an error response.
    pub errors_answered: u64,
    /// Datagrams dropped because they were not well-formed STUN.
    pub dropped_malformed: u64,
    /// Well-formed STUN messages deliberately left unanswered (indications, responses, other methods).
    pub ignored: u64,
    /// Responses that could not be sent.
    pub send_errors: u64,
    /// Errors from receiving on the socket.
    pub recv_errors: u64,
    /// Datagrams dropped unread because their source was over the [`RateLimit`].
    pub refused_rate_limited: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests_answered: AtomicU64,
    errors_answered: AtomicU64,
    dropped_malformed: AtomicU64,
    ignored: AtomicU64,
    send_errors: AtomicU64,
    recv_errors: AtomicU64,
    refused_rate_limited: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ServerStats {
        ServerStats {
            requests_answered: self.requests_answered.load(Ordering::Relaxed),
            errors_answered: self.errors_answered.load(Ordering::Relaxed),
            dropped_malformed: self.dropped_malformed.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            recv_errors: self.recv_errors.load(Ordering::Relaxed),
            refused_rate_limited: self.refused_rate_limited.load(Ordering::Relaxed),
        }
    }
}

/// Reads a [`Server`]'s counters; from [`Server::stats_handle`].
#[derive(Debug, Clone)]
pub struct StatsHandle(Arc<Counters>);

impl StatsHandle {
    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        self.0.snapshot()
    }
}

/// A response the [`Server`] sent, as reported to [`Server::subscribe`]rs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The address the request came from (and the response went to).
    pub peer: SocketAddr,
    /// `None` for a success response, else the error code sent.
    pub error_code: Option<u16>,
}

/// How many [`Answered`] notices a slow subscriber may fall behind before it starts losing the oldest.
const ANSWERED_CAPACITY: usize = 256;

/// Pause after a receive error, so a persistently failing socket does not spin the task.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Largest UDP payload, so no datagram is ever truncated by the receive buffer.
const RECV_BUFFER_LEN: usize = 65_536;

/// A STUN server running on a UDP socket in its own tokio task.
///
/// Dropping the handle stops the task too (without waiting for it); [`Server::shutdown`] stops it and waits until
/// the socket is closed.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    answered: broadcast::Sender<Answered>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds a UDP socket to `addr` and serves STUN on it with the default [`ServerConfig`].
    ///
    /// Must be called within a tokio runtime.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        Self::spawn(socket, ServerConfig::default())
    }

    /// Serves STUN on an already bound socket with the default [`ServerConfig`].
    ///
    /// Must be called within a tokio runtime.
    pub fn from_socket(socket: UdpSocket) -> io::Result<Self> {
        Self::spawn(socket, ServerConfig::default())
    }

    /// Serves STUN on an already bound socket; the task owns the socket until it stops.
    ///
    /// Fails only if the socket's local address cannot be read. Must be called within a tokio runtime (panics
    /// otherwise, like `tokio::spawn`).
    pub fn spawn(socket: UdpSocket, config: ServerConfig) -> io::Result<Self> {
        let local_addr = socket.local_addr()?;
        let counters = Arc::new(Counters::default());
        let (answered, _) = broadcast::channel(ANSWERED_CAPACITY);
        let (shutdown, shutdown_rx) = oneshot::channel();
        let driver = Driver {
            socket,
            limiter: config.rate_limit.map(SourceLimiter::new),
            config,
            counters: Arc::clone(&counters),
            answered: answered.clone(),
        };
        let task = tokio::spawn(driver.run(shutdown_rx));
        debug!(%local_addr, "STUN server started");
        Ok(Self {
            local_addr,
            counters,
            answered,
            shutdown,
            task,
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        self.counters.snapshot()
    }

    /// A handle that reads the counters later, from anywhere (for a metrics exporter); it stays valid after
    /// the server stops (the counters then stop moving).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(Arc::clone(&self.counters))
    }

    /// A stream of the responses sent from now on (for tests and monitoring). A subscriber more than 256
    /// responses behind loses the oldest ([`broadcast::error::RecvError::Lagged`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Answered> {
        self.answered.subscribe()
    }

    /// Stops the task and waits until it has ended and the socket is closed.
    ///
    /// If the task panicked, the panic is resumed here.
    pub async fn shutdown(self) {
        let Self {
            local_addr,
            shutdown,
            task,
            ..
        } = self;
        // An error means the task already ended; joining it below still reports how.
        let _ = shutdown.send(());
        match task.await {
            Ok(()) => debug!(%local_addr, "STUN server shut down"),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => debug!(%local_addr, %error, "STUN server task was cancelled"),
        }
    }
}

/// The task side of a [`Server`]: sole owner of the socket.
struct Driver {
    socket: UdpSocket,
    config: ServerConfig,
    limiter: Option<SourceLimiter>,
    counters: Arc<Counters>,
    answered: broadcast::Sender<Answered>,
}

impl Driver {
    async fn run(mut self, mut shutdown: oneshot::Receiver<()>) {
        let mut buf = vec![0u8; RECV_BUFFER_LEN];
        let mut out = Vec::with_capacity(1024);
        loop {
            let received = tokio::select! {
                // Resolves on an explicit shutdown and when the `Server` handle is dropped.
                _ = &mut shutdown => break,
                received = self.socket.recv_from(&mut buf) => received,
            };
            let (len, from) = match received {
                Ok(received) => received,
                Err(error) => {
                    Counters::bump(&self.counters.recv_errors);
                    debug!(%error, "STUN server receive error");
                    tokio::time::sleep(RECV_ERROR_PAUSE).await;
                    continue;
                }
            };
            if let Some(limiter) = &mut self.limiter
                && !limiter.admit(Instant::now(), from.ip())
            {
                Counters::bump(&self.counters.refused_rate_limited);
                trace!(%from, "STUN source over its rate limit");
                continue;
            }
            let packet = buf.get(..len).unwrap_or_default();
            self.handle(from, packet, &mut out).await;
        }
        debug!("STUN server task ending, closing the socket");
    }

    async fn handle(&self, from: SocketAddr, packet: &[u8], out: &mut Vec<u8>) {
        let response = match respond_with_config(from, packet, &self.config) {
            Ok(Some(response)) => response,
            Ok(None) => {
                Counters::bump(&self.counters.ignored);
                trace!(%from, "STUN message needs no answer");
                return;
            }
            Err(error) => {
                Counters::bump(&self.counters.dropped_malformed);
                debug!(%from, %error, "dropping datagram");
                return;
            }
        };
        out.clear();
        response.encode(out);
        if let Err(error) = self.socket.send_to(out, from).await {
            Counters::bump(&self.counters.send_errors);
            debug!(%from, %error, "cannot send STUN response");
            return;
        }
        let error_code = response.error_code().map(|(code, _)| code);
        match error_code {
            None => Counters::bump(&self.counters.requests_answered),
            Some(_) => Counters::bump(&self.counters.errors_answered),
        }
        trace!(%from, ?error_code, "STUN response sent");
        if self.answered.receiver_count() > 0 {
            // An error only means every subscriber went away in the meantime.
            let _ = self.answered.send(Answered {
                peer: from,
                error_code,
            });
        }
    }
}

#[cfg(test)]
mod tests;
