//! The task behind a [`Client`](super::Client): it owns the connection, reconnects, and talks to the
//! handles only through channels.
//!
//! ```text
//!             ┌──────────── backoff delay elapsed ─────────────┐
//!             v                                                │
//!   ──> Connecting ──ok──> Connected ──error / silence──> Disconnected
//!          │  └────────────── error ──────────────────────────^ │
//!          └──── close() or every handle dropped (any state) ──> Closed
//! ```
//!
//! While not connected the task keeps serving the handles: datagrams go to a queue bounded like the send
//! queue (batches and bytes) that drops its oldest entries when full (the newest packets carry the freshest
//! state, and QUIC retransmits what is lost), pings fail at once with [`PingError::NotConnected`], the preferred flag is remembered and sent after
//! every (re)connect. While connected, one `select!` reads frames, writes (cancel-safe, so a slow write
//! never stops reading), takes datagrams from the handles only while the write buffer has room (that is
//! the backpressure `Client::send` waits on), and re-arms the single timer of the [`ConnCore`].

use std::{collections::VecDeque, future::Future, sync::Arc, time::Duration};

use tokio::{
    io::AsyncWriteExt,
    sync::{mpsc, oneshot, watch},
};
use tracing::{debug, info};

use super::{
    ConnectionError, ConnectionState, EventSender, PingError, Queued, ReceivedEvent,
    backoff::Backoff,
    conn::{ConnCore, CoreEvent},
    connect::{Connection, Connector},
};
use crate::protos::frame::Frame;

/// Datagram frames are taken from the handles only while less than this is waiting to be written.
const WRITE_BUFFER_LIMIT: usize = 64 * 1024;
/// How long a graceful close may take to flush and shut down.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How a handle answers a ping.
pub(crate) type PingReply = oneshot::Sender<Result<Duration, PingError>>;

/// Requests from the handles besides datagrams.
#[derive(Debug)]
pub(crate) enum Command {
    Ping(PingReply),
    /// Probe the connection now (see [`ConnCore::probe_now`]).
    Probe,
    /// Close; the sender learns when the client is closed.
    Close(oneshot::Sender<()>),
}

/// Settings of the driver that are not about making a connection.
#[derive(Debug, Clone)]
pub(crate) struct DriverConfig {
    pub(crate) keepalive_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) pending_limit: usize,
    pub(crate) pending_bytes_limit: usize,
}

/// The channels the driver reads and the queue it keeps while disconnected.
#[derive(Debug)]
pub(crate) struct Inbox {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) datagrams: mpsc::Receiver<Queued>,
    pub(crate) preferred: watch::Receiver<bool>,
    /// Datagram frames taken while not connected, with their datagram bytes, oldest first.
    pending: VecDeque<(Frame, usize)>,
    pending_limit: usize,
    pending_bytes: usize,
    pending_bytes_limit: usize,
    /// Batches dropped from `pending` during the current disconnection (logged once when it ends).
    pending_dropped: u64,
    datagrams_open: bool,
    preferred_open: bool,
    close_ack: Option<oneshot::Sender<()>>,
}

impl Inbox {
    pub(crate) fn new(
        commands: mpsc::Receiver<Command>,
        datagrams: mpsc::Receiver<Queued>,
        preferred: watch::Receiver<bool>,
    ) -> Self {
        Self {
            commands,
            datagrams,
            preferred,
            pending: VecDeque::new(),
            pending_limit: 0,
            pending_bytes: 0,
            pending_bytes_limit: 0,
            pending_dropped: 0,
            datagrams_open: true,
            preferred_open: true,
            close_ack: None,
        }
    }

    /// Runs `fut` while serving the handles as a disconnected client; `None` if the client is closed first.
    async fn while_disconnected<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                output = &mut fut => return Some(output),
                command = self.commands.recv() => match command {
                    Some(Command::Ping(reply)) => {
                        reply.send(Err(PingError::NotConnected)).ok();
                    }
                    // Not connected: nothing to probe (a connection is being made).
                    Some(Command::Probe) => {}
                    Some(Command::Close(ack)) => {
                        self.close_ack = Some(ack);
                        return None;
                    }
                    None => return None,
                },
                queued = self.datagrams.recv(), if self.datagrams_open => match queued {
                    Some(queued) => self.queue_pending(queued.frame, queued.bytes),
                    None => self.datagrams_open = false,
                },
            }
        }
    }

    /// Keeps `frame` for the next connection, dropping the oldest frames to stay within the bounds.
    fn queue_pending(&mut self, frame: Frame, bytes: usize) {
        while !self.pending.is_empty()
            && (self.pending.len() >= self.pending_limit
                || self.pending_bytes + bytes > self.pending_bytes_limit)
        {
            if let Some((_, old)) = self.pending.pop_front() {
                self.pending_bytes -= old;
            }
            self.pending_dropped += 1;
        }
        self.pending_bytes += bytes;
        self.pending.push_back((frame, bytes));
    }

    /// Logs, once, how many batches the last disconnection dropped.
    fn report_dropped(&mut self) {
        if self.pending_dropped > 0 {
            debug!(
                dropped = self.pending_dropped,
                "relay send queue full while disconnected, dropped the oldest datagram batches"
            );
            self.pending_dropped = 0;
        }
    }

    /// The oldest frame kept while disconnected.
    fn pop_pending(&mut self) -> Option<Frame> {
        let (frame, bytes) = self.pending.pop_front()?;
        self.pending_bytes -= bytes;
        Some(frame)
    }
}

/// The task's state.
#[derive(Debug)]
pub(crate) struct Driver {
    connector: Connector,
    inbox: Inbox,
    events: EventSender,
    state: watch::Sender<ConnectionState>,
    config: DriverConfig,
    dropped_events: u64,
    /// Disconnections since the last successful connection (only for deciding the log level).
    failures_in_a_row: u32,
}

impl Driver {
    pub(crate) fn new(
        connector: Connector,
        mut inbox: Inbox,
        events: EventSender,
        state: watch::Sender<ConnectionState>,
        config: DriverConfig,
    ) -> Self {
        inbox.pending_limit = config.pending_limit.max(1);
        inbox.pending_bytes_limit = config.pending_bytes_limit.max(1);
        Self {
            connector,
            inbox,
            events,
            state,
            config,
            dropped_events: 0,
            failures_in_a_row: 0,
        }
    }

    /// Connects, serves, reconnects, until closed.
    pub(crate) async fn run(mut self) {
        loop {
            self.set_state(ConnectionState::Connecting);
            let Some(result) = self
                .inbox
                .while_disconnected(self.connector.connect())
                .await
            else {
                break;
            };
            let error = match result {
                Ok(connection) => {
                    let since = now();
                    self.config.backoff.on_connected(since);
                    self.set_state(ConnectionState::Connected { since });
                    match self.serve(connection).await {
                        Ok(()) => break,
                        Err(error) => error,
                    }
                }
                Err(error) => ConnectionError::Connect(error),
            };
            let refused = matches!(&error, ConnectionError::Connect(e) if e.is_refusal());
            let delay = self
                .config
                .backoff
                .next_delay(now(), refused, &mut rand::thread_rng());
            self.set_state(ConnectionState::Disconnected {
                last_error: Arc::new(error),
            });
            debug!(?delay, "reconnecting after a delay");
            let wait = tokio::time::sleep(delay);
            if self.inbox.while_disconnected(wait).await.is_none() {
                break;
            }
        }
        self.inbox.report_dropped();
        self.set_state(ConnectionState::Closed);
        if let Some(ack) = self.inbox.close_ack.take() {
            ack.send(()).ok();
        }
    }

    /// Serves one connection until it fails (`Err`) or the client is closed (`Ok`).
    async fn serve(&mut self, connection: Connection) -> Result<(), ConnectionError> {
        let (reader, writer) = connection.split();
        let (mut reader, mut writer) = (reader.frames, writer.frames);
        let mut core: ConnCore<PingReply> = ConnCore::new(
            now(),
            self.config.keepalive_interval,
            self.config.ping_timeout,
        );
        // A fresh connection is not anyone's home relay until told so.
        if *self.inbox.preferred.borrow_and_update() {
            writer.push(&Frame::NotePreferred(true));
        }
        let inbox = &mut self.inbox;
        inbox.report_dropped();
        let result = 'serve: loop {
            // Queued while disconnected: older than anything still in the channel, so they go first.
            while writer.buffered_len() < WRITE_BUFFER_LIMIT {
                let Some(frame) = inbox.pop_pending() else {
                    break;
                };
                writer.push(&frame);
                core.on_sent(now());
            }
            while let Some(frame) = core.poll_transmit() {
                writer.push(&frame);
            }
            while let Some(event) = core.poll_event() {
                match event {
                    CoreEvent::Received(event) => {
                        deliver(&self.events, &mut self.dropped_events, event);
                    }
                    CoreEvent::Pong { token, rtt } => {
                        token.send(Ok(rtt)).ok();
                    }
                    CoreEvent::PingTimeout(token) => {
                        token
                            .send(Err(PingError::Timeout(self.config.ping_timeout)))
                            .ok();
                    }
                    CoreEvent::Dead { silent_for } => {
                        break 'serve Err(ConnectionError::Timeout(silent_for));
                    }
                }
            }
            let deadline = core.poll_timeout();
            let has_room = writer.buffered_len() < WRITE_BUFFER_LIMIT;
            tokio::select! {
                frame = reader.read_frame() => match frame {
                    Ok(Some(frame)) => core.handle_frame(now(), frame),
                    Ok(None) => break 'serve Err(ConnectionError::ClosedByServer),
                    Err(error) => break 'serve Err(ConnectionError::Read(error)),
                },
                written = writer.write_some(), if !writer.is_idle() => {
                    if let Err(error) = written {
                        break 'serve Err(ConnectionError::Write(error));
                    }
                }
                queued = inbox.datagrams.recv(), if inbox.datagrams_open && has_room => match queued {
                    // The batch's bytes of the send buffer are given back here, once it is in the write
                    // buffer (itself bounded).
                    Some(queued) => {
                        writer.push(&queued.frame);
                        core.on_sent(now());
                    }
                    None => inbox.datagrams_open = false,
                },
                command = inbox.commands.recv() => match command {
                    Some(Command::Ping(reply)) => {
                        if let Err(reply) = core.send_ping(now(), rand::random(), reply) {
                            reply.send(Err(PingError::TooManyInFlight)).ok();
                        }
                    }
                    Some(Command::Probe) => core.probe_now(now()),
                    Some(Command::Close(ack)) => {
                        inbox.close_ack = Some(ack);
                        break 'serve Ok(());
                    }
                    None => break 'serve Ok(()),
                },
                changed = inbox.preferred.changed(), if inbox.preferred_open => match changed {
                    Ok(()) => {
                        let preferred = *inbox.preferred.borrow_and_update();
                        writer.push(&Frame::NotePreferred(preferred));
                        core.on_sent(now());
                    }
                    Err(_) => inbox.preferred_open = false,
                },
                () = sleep_until(deadline), if deadline.is_some() => core.handle_timeout(now()),
            }
        };
        let lost = if result.is_ok() {
            PingError::Closed
        } else {
            PingError::ConnectionLost
        };
        for reply in core.take_pings() {
            reply.send(Err(lost.clone())).ok();
        }
        if result.is_ok() {
            // Graceful close: what `send` accepted goes out (and nothing more is accepted), then TLS
            // close_notify / TCP FIN.
            inbox.datagrams.close();
            while let Some(frame) = inbox.pop_pending() {
                writer.push(&frame);
            }
            while let Ok(queued) = inbox.datagrams.try_recv() {
                writer.push(&queued.frame);
            }
            let flushed = tokio::time::timeout(CLOSE_TIMEOUT, async {
                while !writer.is_idle() {
                    writer.write_some().await?;
                }
                writer.get_mut().shutdown().await?;
                // Wait for the server's end too: closing a socket with unread bytes resets it, which
                // could destroy what was just sent before the server reads it.
                while let Ok(Some(_)) = reader.read_frame().await {}
                std::io::Result::Ok(())
            })
            .await;
            debug!(?flushed, "relay connection closed");
        }
        result
    }

    fn set_state(&mut self, state: ConnectionState) {
        let url = self.connector.options().url();
        match &state {
            ConnectionState::Connected { .. } => {
                info!(%url, "relay connected");
                debug!(target: "iroh::_events::relay_client::connected", %url);
                self.failures_in_a_row = 0;
            }
            ConnectionState::Disconnected { last_error } => {
                // The first failure is news; the ones that follow while the relay stays out of reach
                // are not worth a line each at info.
                let failures = self.failures_in_a_row;
                self.failures_in_a_row = failures.saturating_add(1);
                if failures == 0 {
                    info!(%url, error = %last_error, "relay disconnected");
                } else {
                    debug!(%url, error = %last_error, failures, "relay still unreachable");
                }
                debug!(target: "iroh::_events::relay_client::disconnected", %url, error = %last_error);
            }
            ConnectionState::Closed => info!(%url, "relay client closed"),
            ConnectionState::Connecting => debug!(%url, "connecting to relay"),
        }
        self.state.send_replace(state);
    }
}

/// Hands an event to the receiver without ever waiting: if it lags, the event is dropped (as a UDP
/// socket drops what its receive buffer cannot hold) so that pings, pongs and keepalives keep flowing.
fn deliver(events: &EventSender, dropped: &mut u64, event: ReceivedEvent) {
    if !events.try_send(event) {
        *dropped += 1;
        debug!(
            dropped = *dropped,
            "relay receive queue full, dropped an event"
        );
    }
}

/// The current time on tokio's clock (which tests may pause), as the cores take it.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
