//! The relay client: a connection to one relay server that authenticates, sends and receives datagram
//! batches, keeps itself alive, measures RTT, and comes back after failures.
//!
//! ```no_run
//! # async fn demo(peer: iroh_base::NodeId) -> Result<(), Box<dyn std::error::Error>> {
//! use iroh_relay::{client::{ClientBuilder, ReceivedEvent}, protos::frame::Datagrams};
//!
//! let url = "https://relay.example.org".parse()?;
//! let mut client = ClientBuilder::new(url, iroh_base::SecretKey::generate()).build();
//! client.send(peer, Datagrams::single(&b"hello"[..])).await?;
//! if let Some(ReceivedEvent::Datagrams { src, datagrams }) = client.recv().await {
//!     println!("{} bytes from {src}", datagrams.contents.len());
//! }
//! println!("RTT {:?}", client.ping().await?);
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! Layers, bottom up:
//! - [`connect_once`] makes one connection (DNS through hickory, with IP literals and `localhost` needing
//!   none; TCP; TLS for `https` with the webpki roots, extra roots or, for tests, no verification; the
//!   HTTP/1.1 upgrade with an optional bearer token; the login handshake of
//!   [`protos::handshake`](crate::protos::handshake)) and hands back a [`Connection`] of raw frames.
//! - Sans-IO cores, fed `now` and never touching the clock: the reconnect schedule (exponential backoff
//!   with jitter and a cap, reset by a stable connection) and the per-connection keepalive, liveness and
//!   ping matching.
//! - A driver task per [`Client`]: the only owner of the connection, talking to the handles through
//!   bounded channels, reconnecting forever until [`Client::close`] or until every handle is dropped.
//!
//! Queues, all bounded (a node may hold several relay clients):
//! - sending: at most [`ClientBuilder::send_buffer`] bytes of datagrams and
//!   [`ClientBuilder::send_queue_len`] batches in the channel. While connected, [`Client::send`] waits when
//!   it is full and [`Client::try_send`] fails with [`SendError::QueueFull`]. While disconnected the driver
//!   keeps draining it into a second queue of the same bounds that drops its **oldest** batch when full, so
//!   sending never stalls for long and what is sent after a reconnect is the freshest (so a disconnected
//!   client holds up to twice the send buffer).
//! - receiving: at most [`ClientBuilder::recv_buffer`] bytes of datagrams and [`ClientBuilder::recv_queue_len`]
//!   events; if the receiver lags, new datagram batches are dropped (as a UDP socket's receive buffer
//!   would) rather than stalling pings and keepalives. The byte bound is what caps memory: a batch may be
//!   anything from one small datagram to a 64 KiB GSO transmit.
//!
//! Logs: debug for details, info for connection state changes. Structured events (level DEBUG, fields
//! only): `iroh::_events::relay_client::connected` (`url`) and
//! `iroh::_events::relay_client::disconnected` (`url`, `error`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use iroh_base::{NodeId, RelayUrl, SecretKey};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot, watch};
use tracing::Instrument;

use crate::protos::frame::{Datagrams, Frame, StatusCode};

mod backoff;
mod conn;
mod connect;
mod dial;
mod driver;
mod error;
pub mod pkarr;
mod tls;
mod transport;

pub use self::{
    connect::{
        ConnectOptions, Connection, ConnectionReader, ConnectionWriter, DEFAULT_CONNECT_TIMEOUT,
        connect_once,
    },
    error::{BoxError, ConnectError, ConnectionError, PingError, SendError},
    transport::Transport,
};
pub use rustls::pki_types::CertificateDer;

use self::driver::{Command, Driver, DriverConfig, Inbox};

/// How long the connection may be idle before a keepalive, and the server silent before a liveness ping.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// How long a ping waits for its pong; also how long a liveness ping may go unanswered before the
/// connection is declared dead.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(5);
/// The first reconnect delay (before jitter).
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest reconnect delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A connection that lasted this long resets the reconnect schedule to its minimum.
pub const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// Default length of the send queue, in datagram batches (the bytes they hold are bounded by
/// [`DEFAULT_SEND_BUFFER`]).
pub const DEFAULT_SEND_QUEUE_LEN: usize = 1024;
/// Default bound on the datagram bytes waiting in the send queue: room for a burst of a few hundred QUIC
/// packets (quinn's pacer releases up to 256 at once), which a TCP connection to the relay takes in a
/// moment but a shorter queue would drop.
pub const DEFAULT_SEND_BUFFER: usize = 4 * 1024 * 1024;
/// Default length of the receive queue, in events (the bytes they hold are bounded by
/// [`DEFAULT_RECV_BUFFER`]).
pub const DEFAULT_RECV_QUEUE_LEN: usize = 1024;
/// Default bound on the datagram bytes waiting in the receive queue: the 8 MiB receive buffer a busy UDP
/// socket gets, so that a flow relayed over one TCP connection absorbs the same bursts as a direct one.
pub const DEFAULT_RECV_BUFFER: usize = 8 * 1024 * 1024;
/// Commands (pings, close) waiting for the driver.
const COMMAND_QUEUE_LEN: usize = 8;

/// What a relay client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceivedEvent {
    /// Datagrams from another node.
    Datagrams {
        /// The node that sent them.
        src: NodeId,
        /// The datagrams.
        datagrams: Datagrams,
    },
    /// A node we had sent to is no longer connected to this relay.
    PeerGone(NodeId),
    /// News from the server about this connection.
    Status {
        /// What happened.
        code: StatusCode,
        /// Details for people.
        message: String,
    },
}

/// Where a [`Client`] stands, as watched through [`Client::state`].
///
/// ```text
///   Connecting ──> Connected ──> Disconnected ──(backoff)──> Connecting ...
///        └─────────────────────────────┘            any state ──close──> Closed
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnectionState {
    /// A connection attempt is under way.
    Connecting,
    /// Logged in; datagrams flow.
    Connected {
        /// When the connection was established.
        since: Instant,
    },
    /// The last connection ended or the last attempt failed; the next attempt comes after a backoff delay.
    Disconnected {
        /// Why.
        last_error: Arc<ConnectionError>,
    },
    /// The client was closed and will not reconnect.
    Closed,
}

impl ConnectionState {
    /// Whether datagrams flow right now.
    pub fn is_connected(&self) -> bool {
        matches!(self, Self::Connected { .. })
    }
}

/// Configures and starts a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    connect: ConnectOptions,
    keepalive_interval: Duration,
    ping_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    send_queue_len: usize,
    send_buffer: usize,
    recv_queue_len: usize,
    recv_buffer: usize,
}

impl ClientBuilder {
    /// A client of the relay at `url`, logging in as the node of `secret_key`, with the defaults.
    pub fn new(url: RelayUrl, secret_key: SecretKey) -> Self {
        Self::from_options(ConnectOptions::new(url, secret_key))
    }

    /// A client that connects with `options`.
    pub fn from_options(options: ConnectOptions) -> Self {
        Self {
            connect: options,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            send_queue_len: DEFAULT_SEND_QUEUE_LEN,
            send_buffer: DEFAULT_SEND_BUFFER,
            recv_queue_len: DEFAULT_RECV_QUEUE_LEN,
            recv_buffer: DEFAULT_RECV_BUFFER,
        }
    }

    /// See [`ConnectOptions::bearer_token`].
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.connect = self.connect.bearer_token(token);
        self
    }

    /// See [`ConnectOptions::extra_roots`].
    pub fn extra_roots(mut self, roots: Vec<CertificateDer<'static>>) -> Self {
        self.connect = self.connect.extra_roots(roots);
        self
    }

    /// See [`ConnectOptions::insecure_skip_cert_verify`]. **Insecure**; for tests only.
    pub fn insecure_skip_cert_verify(mut self, skip: bool) -> Self {
        self.connect = self.connect.insecure_skip_cert_verify(skip);
        self
    }

    /// See [`ConnectOptions::transport`].
    pub fn transport(mut self, transport: Transport) -> Self {
        self.connect = self.connect.transport(transport);
        self
    }

    /// See [`ConnectOptions::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect = self.connect.connect_timeout(timeout);
        self
    }

    /// See [`ConnectOptions::dns_resolver`].
    pub fn dns_resolver(mut self, resolver: hickory_resolver::TokioResolver) -> Self {
        self.connect = self.connect.dns_resolver(resolver);
        self
    }

    /// How long the connection may be idle before a KeepAlive, and the server silent before a liveness ping
    /// (default [`DEFAULT_KEEPALIVE_INTERVAL`]). A server silent for this plus the ping timeout is dead.
    pub fn keepalive_interval(mut self, interval: Duration) -> Self {
        self.keepalive_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long [`Client::ping`] and liveness pings wait for their pongs (default [`DEFAULT_PING_TIMEOUT`]).
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = timeout;
        self
    }

    /// The reconnect delays: from `min`, doubling per failure, up to `max`, each jittered down by up to
    /// half (defaults [`DEFAULT_BACKOFF_MIN`], [`DEFAULT_BACKOFF_MAX`]).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// Datagram batches the send queue holds (default [`DEFAULT_SEND_QUEUE_LEN`], at least 1); the same
    /// number is kept while disconnected.
    pub fn send_queue_len(mut self, len: usize) -> Self {
        self.send_queue_len = len.max(1);
        self
    }

    /// Datagram bytes the send queue holds (default [`DEFAULT_SEND_BUFFER`], at least 1). While
    /// disconnected the queue kept for the next connection has the same bound, so up to twice this is held.
    /// A batch larger than the whole buffer takes all of it.
    pub fn send_buffer(mut self, bytes: usize) -> Self {
        self.send_buffer = bytes.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// Events the receive queue holds (default [`DEFAULT_RECV_QUEUE_LEN`], at least 1).
    pub fn recv_queue_len(mut self, len: usize) -> Self {
        self.recv_queue_len = len.max(1);
        self
    }

    /// Datagram bytes the receive queue holds (default [`DEFAULT_RECV_BUFFER`]); a batch that would go
    /// over is dropped. One batch is always let in when the queue is empty, however large.
    pub fn recv_buffer(mut self, bytes: usize) -> Self {
        self.recv_buffer = bytes;
        self
    }

    /// The connection settings.
    pub fn connect_options(&self) -> &ConnectOptions {
        &self.connect
    }

    /// Starts the client: it connects in the background and keeps reconnecting until closed.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn build(self) -> Client {
        let url = Arc::new(self.connect.url().clone());
        let (datagrams_tx, datagrams_rx) = mpsc::channel(self.send_queue_len);
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE_LEN);
        let (events_tx, events_rx) = mpsc::channel(self.recv_queue_len);
        let queued = RecvBytes::default();
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connecting);
        let (preferred_tx, preferred_rx) = watch::channel(false);
        let config = DriverConfig {
            keepalive_interval: self.keepalive_interval,
            ping_timeout: self.ping_timeout,
            backoff: backoff::Backoff::new(self.backoff_min, self.backoff_max, STABLE_CONNECTION),
            pending_limit: self.send_queue_len,
            pending_bytes_limit: self.send_buffer,
        };
        let span = tracing::debug_span!("relay_client", url = %url);
        let driver = Driver::new(
            connect::Connector::new(self.connect),
            Inbox::new(commands_rx, datagrams_rx, preferred_rx),
            EventSender {
                events: events_tx,
                queued: queued.clone(),
                limit: self.recv_buffer,
            },
            state_tx,
            config,
        );
        tokio::spawn(driver.run().instrument(span));
        Client {
            sender: ClientSender {
                url,
                datagrams: datagrams_tx,
                send_budget: Arc::new(Semaphore::new(self.send_buffer)),
                send_buffer: self.send_buffer,
                commands: commands_tx,
                preferred: Arc::new(preferred_tx),
                state: state_rx,
            },
            receiver: ClientReceiver {
                events: events_rx,
                queued,
            },
        }
    }
}

/// A reconnecting connection to one relay; see the [module docs](self).
///
/// Dropping every handle (this, or the halves from [`Client::split`]) closes it as [`Client::close`] does.
#[derive(Debug)]
pub struct Client {
    sender: ClientSender,
    receiver: ClientReceiver,
}

impl Client {
    /// Queues datagrams for `dst`, waiting for room in the send queue.
    pub async fn send(&self, dst: NodeId, datagrams: Datagrams) -> Result<(), SendError> {
        self.sender.send(dst, datagrams).await
    }

    /// Queues datagrams for `dst` if there is room, never waiting.
    pub fn try_send(&self, dst: NodeId, datagrams: Datagrams) -> Result<(), SendError> {
        self.sender.try_send(dst, datagrams)
    }

    /// The next event; `None` once the client is closed and every event is taken.
    pub async fn recv(&mut self) -> Option<ReceivedEvent> {
        self.receiver.recv().await
    }

    /// Measures the round-trip time to the relay with a Ping frame.
    pub async fn ping(&self) -> Result<Duration, PingError> {
        self.sender.ping().await
    }

    /// Tells the relay whether it is this node's home relay, now and after every reconnect.
    pub fn note_preferred(&self, preferred: bool) {
        self.sender.note_preferred(preferred);
    }

    /// Checks the connection now rather than after a keepalive interval of silence: a probe ping goes out,
    /// and until its pong comes back, a ping timeout with nothing received drops the connection (which is
    /// then made again). Frames already on their way keep a busy connection alive meanwhile but do not
    /// count as the answer. For when it may have died without a word, as after a network change (its
    /// local address gone). Does nothing while not connected or while such a probe is out; never waits.
    pub fn check_connection(&self) {
        self.sender.check_connection();
    }

    /// A watcher of the connection state.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.sender.state()
    }

    /// The relay's URL.
    pub fn url(&self) -> &RelayUrl {
        self.sender.url()
    }

    /// Closes gracefully: the datagrams `send` accepted are written (within a bounded time), the connection
    /// is shut down, and the client stops reconnecting. Returns once it is closed. If it is not connected at
    /// that moment, the datagrams queued for the next connection are dropped.
    pub async fn close(self) {
        self.sender.close().await;
    }

    /// Splits into a cloneable sending handle and the receiving half.
    pub fn split(self) -> (ClientSender, ClientReceiver) {
        (self.sender, self.receiver)
    }
}

/// The sending half of a [`Client`]; clones share the client.
#[derive(Debug, Clone)]
pub struct ClientSender {
    url: Arc<RelayUrl>,
    datagrams: mpsc::Sender<Queued>,
    /// Bytes of [`ClientBuilder::send_buffer`] not taken by queued batches.
    send_budget: Arc<Semaphore>,
    send_buffer: usize,
    commands: mpsc::Sender<Command>,
    preferred: Arc<watch::Sender<bool>>,
    state: watch::Receiver<ConnectionState>,
}

impl ClientSender {
    /// See [`Client::send`].
    pub async fn send(&self, dst: NodeId, datagrams: Datagrams) -> Result<(), SendError> {
        let (frame, bytes) = datagram_frame(dst, datagrams)?;
        if self.datagrams.is_closed() {
            return Err(SendError::Closed);
        }
        let permit = Arc::clone(&self.send_budget)
            .acquire_many_owned(self.cost(bytes))
            .await
            .map_err(|_| SendError::Closed)?;
        self.datagrams
            .send(Queued {
                frame,
                bytes,
                _permit: permit,
            })
            .await
            .map_err(|_| SendError::Closed)
    }

    /// See [`Client::try_send`].
    pub fn try_send(&self, dst: NodeId, datagrams: Datagrams) -> Result<(), SendError> {
        let (frame, bytes) = datagram_frame(dst, datagrams)?;
        if self.datagrams.is_closed() {
            return Err(SendError::Closed);
        }
        let permit = Arc::clone(&self.send_budget)
            .try_acquire_many_owned(self.cost(bytes))
            .map_err(|e| match e {
                TryAcquireError::NoPermits => SendError::QueueFull,
                TryAcquireError::Closed => SendError::Closed,
            })?;
        self.datagrams
            .try_send(Queued {
                frame,
                bytes,
                _permit: permit,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SendError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => SendError::Closed,
            })
    }

    /// The permits a batch of `bytes` takes: its size, but never more than the whole buffer.
    fn cost(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.clamp(1, self.send_buffer)).unwrap_or(u32::MAX)
    }

    /// See [`Client::ping`].
    pub async fn ping(&self) -> Result<Duration, PingError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Ping(reply))
            .await
            .map_err(|_| PingError::Closed)?;
        answer.await.unwrap_or(Err(PingError::Closed))
    }

    /// See [`Client::check_connection`].
    pub fn check_connection(&self) {
        // A full command queue means commands are being handled; a probe is a hint, dropping it is fine.
        self.commands.try_send(Command::Probe).ok();
    }

    /// See [`Client::note_preferred`].
    pub fn note_preferred(&self, preferred: bool) {
        self.preferred.send_if_modified(|current| {
            let changed = *current != preferred;
            *current = preferred;
            changed
        });
    }

    /// See [`Client::state`].
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// See [`Client::url`].
    pub fn url(&self) -> &RelayUrl {
        &self.url
    }

    /// Closes the client for every handle; see [`Client::close`].
    pub async fn close(&self) {
        let (ack, closed) = oneshot::channel();
        if self.commands.send(Command::Close(ack)).await.is_ok() {
            // An error means the driver ended without answering: closed all the same.
            closed.await.ok();
        }
    }
}

/// The receiving half of a [`Client`].
#[derive(Debug)]
pub struct ClientReceiver {
    events: mpsc::Receiver<ReceivedEvent>,
    queued: RecvBytes,
}

impl ClientReceiver {
    /// See [`Client::recv`]. Cancel-safe.
    pub async fn recv(&mut self) -> Option<ReceivedEvent> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next event if one is waiting: for poll-based callers such as a socket implementation.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<ReceivedEvent>> {
        let event = std::task::ready!(self.events.poll_recv(cx));
        if let Some(ReceivedEvent::Datagrams { datagrams, .. }) = &event {
            self.queued.release(datagrams.contents.len());
        }
        Poll::Ready(event)
    }
}

/// Datagram bytes in the receive queue, shared by the driver (adds) and the receiver (subtracts).
#[derive(Debug, Clone, Default)]
pub(crate) struct RecvBytes(Arc<AtomicUsize>);

impl RecvBytes {
    /// Takes `len` bytes of a budget of `limit`, unless that would go over it (one batch always fits an
    /// empty queue).
    fn try_take(&self, len: usize, limit: usize) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued == 0 || queued.saturating_add(len) <= limit).then(|| queued + len)
            })
            .is_ok()
    }

    fn release(&self, len: usize) {
        self.0.fetch_sub(len, Ordering::AcqRel);
    }
}

/// The driver's end of the receive queue: events, with datagram bytes bounded.
#[derive(Debug)]
pub(crate) struct EventSender {
    events: mpsc::Sender<ReceivedEvent>,
    queued: RecvBytes,
    limit: usize,
}

impl EventSender {
    /// Queues `event` without waiting; `false` if it was dropped because the queue is full (in events or,
    /// for datagrams, in bytes). Events for a receiver that is gone are discarded silently (`true`).
    pub(crate) fn try_send(&self, event: ReceivedEvent) -> bool {
        let len = match &event {
            ReceivedEvent::Datagrams { datagrams, .. } => datagrams.contents.len(),
            _ => 0,
        };
        if len > 0 && !self.queued.try_take(len, self.limit) {
            return self.events.is_closed();
        }
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued.release(len);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued.release(len);
                true
            }
        }
    }
}

/// The frame for a batch and its datagram bytes, or why the server would refuse it.
fn datagram_frame(dst: NodeId, datagrams: Datagrams) -> Result<(Frame, usize), SendError> {
    let bytes = datagrams.contents.len();
    let frame = Frame::SendDatagrams { dst, datagrams };
    frame.validate()?;
    Ok((frame, bytes))
}

/// A datagram frame in the send queue, holding its bytes of the send buffer until the driver takes it.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) frame: Frame,
    /// Datagram bytes in the frame.
    pub(crate) bytes: usize,
    _permit: OwnedSemaphorePermit,
}
