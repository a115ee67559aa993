//! One client connection after the HTTP upgrade: the login, then the session.
//!
//! ```text
//!   upgraded stream --split--> FrameReader / FrameWriter
//!        |
//!   login: ServerHandshake (sans-IO) driven here; on Verified: access control, then register
//!        |                  (replacing an older connection of the node) and accept, or deny
//!        v
//!   session: one task, two futures raced with select!:
//!     reader: frames -> token bucket -> Router (cached routes) -> destination queues
//!             Ping -> Pong on our own queue; idle timeout; buffers released when quiet
//!     writer: own queue -> FrameWriter (coalesced, one flush per batch, each write under the write
//!             timeout); keepalive Ping; on close: Status frame, TLS close_notify / FIN
//!        |
//!   end: unregister (PeerGone to senders), linger briefly if we closed, count the reason
//! ```
//!
//! Reader and writer share the task, so a client costs one task; they never run at the same time, but a
//! relayed flow always involves two clients' tasks (the sender's reader, the receiver's writer), which do.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use iroh_base::NodeId;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
    time::{Instant, timeout},
};
use tracing::{Level, debug, event, trace};

use super::{
    Ctx,
    clients::{ClientShared, Clients, CloseReason, Forwarded, RegisterError, Router},
    limits::{Admission, TokenBucket},
    metrics::DropReason,
    pending::PendingSlot,
};
use crate::{
    io::{FrameReader, FrameWriter, ReadError},
    protos::{
        frame::{Datagrams, DenyReason, Frame, MAX_FRAME_BODY, NONCE_LEN, StatusCode},
        handshake::{HandshakeError, ServerEvent, ServerHandshake},
    },
    ws::{MAX_MESSAGE, MessageLimit},
};

/// How long a connection the server closed keeps reading (and discarding) before the socket is closed, so the
/// client reads our last frames instead of a reset.
const LINGER: Duration = Duration::from_secs(1);

/// The largest frame body read before the login completes: the login frame's body is 97 bytes, so a larger frame
/// is refused at its header, and a connection that has not logged in never reserves a full 64 KiB frame.
pub(crate) const MAX_LOGIN_FRAME_BODY: usize = 1024;

/// Serves one upgraded connection until it ends. `leftover` holds bytes read past the HTTP request; `slot`
/// is the connection's place among those in their handshake, given back when the login ends. A WebSocket
/// connection's `ws_limit` is raised from login-sized messages to full frames once the login is done.
pub(crate) async fn serve<S>(
    stream: S,
    leftover: Bytes,
    slot: PendingSlot,
    ctx: Arc<Ctx>,
    shutdown: watch::Receiver<bool>,
    ws_limit: Option<MessageLimit>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    // Copied so the HTTP server's read buffer is not kept alive by the leftover's view of it.
    let mut reader = FrameReader::with_buffer(read_half, BytesMut::from(&leftover[..]));
    drop(leftover);
    reader.set_max_frame_body(MAX_LOGIN_FRAME_BODY);
    // Until the login, reads reserve a small buffer: the login frame is 102 bytes.
    reader.release_idle_buffer();
    let mut writer = FrameWriter::new(write_half);

    let mut pending = PendingLogin {
        clients: &ctx.clients,
        client: None,
    };
    let login = timeout(
        ctx.limits.handshake_timeout,
        login(&mut reader, &mut writer, &ctx, shutdown, &mut pending),
    )
    .await
    .unwrap_or(Err(LoginFailure::Timeout));
    drop(slot);
    let client = match login {
        Ok(client) => client,
        Err(failure) => {
            drop(pending);
            ctx.metrics.handshake_failed(failure.label());
            debug!(reason = failure.label(), "relay login failed");
            if failure.told_client() {
                close_gracefully(&mut reader, &mut writer, ctx.limits.write_timeout).await;
            }
            return;
        }
    };
    // The login is complete: the registration now belongs to `registered` below.
    pending.client = None;
    drop(pending);
    // From here the registration is released however the task ends (even when aborted at shutdown).
    let registered = Registered {
        clients: &ctx.clients,
        client: &client,
    };
    event!(
        target: "iroh::_events::relay::client::connected",
        Level::DEBUG,
        node = %client.node_id,
        conn = client.conn_id,
    );
    reader.set_max_frame_body(MAX_FRAME_BODY);
    if let Some(limit) = ws_limit {
        limit.set(MAX_MESSAGE);
    }
    reader.release_idle_buffer();
    writer.release_idle_buffer();

    let end = tokio::select! {
        end = read_loop(&mut reader, &client, &ctx) => end,
        end = write_loop(&mut writer, &client, &ctx) => end,
    };
    drop(registered);
    if matches!(
        end,
        End::Closed(CloseReason::Replaced | CloseReason::Shutdown)
    ) {
        linger(&mut reader).await;
    }
    ctx.metrics.disconnected(end.label());
    event!(
        target: "iroh::_events::relay::client::disconnected",
        Level::DEBUG,
        node = %client.node_id,
        conn = client.conn_id,
        reason = end.label(),
    );
}

/// Why a connection did not become a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoginFailure {
    Closed,
    Io,
    InvalidFrame,
    FrameTooLarge,
    Timeout,
    BadSignature,
    UnsupportedVersion,
    ProtocolViolation,
    NotAllowed,
    Full,
    ShuttingDown,
}

impl LoginFailure {
    fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Io => "io",
            Self::InvalidFrame => "invalid_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::Timeout => "timeout",
            Self::BadSignature => "bad_signature",
            Self::UnsupportedVersion => "unsupported_version",
            Self::ProtocolViolation => "protocol_violation",
            Self::NotAllowed => "not_allowed",
            Self::Full => "full",
            Self::ShuttingDown => "shutting_down",
        }
    }

    /// Whether a ServerDenied frame went out, so the connection deserves an orderly close.
    fn told_client(self) -> bool {
        matches!(
            self,
            Self::BadSignature
                | Self::UnsupportedVersion
                | Self::ProtocolViolation
                | Self::NotAllowed
                | Self::Full
        )
    }

    fn from_handshake(error: &HandshakeError) -> Self {
        match error {
            HandshakeError::Timeout => Self::Timeout,
            HandshakeError::UnsupportedVersion(_) => Self::UnsupportedVersion,
            HandshakeError::BadSignature(_) => Self::BadSignature,
            _ => Self::ProtocolViolation,
        }
    }
}

/// A registration made during the login, undone if the login does not complete (including when its future
/// is dropped by the timeout).
struct PendingLogin<'a> {
    clients: &'a Clients,
    client: Option<Arc<ClientShared>>,
}

impl Drop for PendingLogin<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.clients.unregister(&client);
        }
    }
}

/// A logged-in client, unregistered on drop.
struct Registered<'a> {
    clients: &'a Clients,
    client: &'a Arc<ClientShared>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.clients.unregister(self.client);
    }
}

/// Drives the server side of the login handshake.
async fn login<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    ctx: &Ctx,
    mut shutdown: watch::Receiver<bool>,
    pending: &mut PendingLogin<'_>,
) -> Result<Arc<ClientShared>, LoginFailure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut handshake = ServerHandshake::new(
        Instant::now().into_std(),
        nonce,
        ctx.limits.handshake_timeout,
    );
    let mut failure = None;
    loop {
        let mut wrote = false;
        while let Some(frame) = handshake.poll_transmit() {
            writer.queue(&frame).await.map_err(|_| LoginFailure::Io)?;
            wrote = true;
        }
        if wrote {
            writer.flush().await.map_err(|_| LoginFailure::Io)?;
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
        if handshake.accepted().is_some()
            && let Some(client) = &pending.client
        {
            return Ok(Arc::clone(client));
        }
        let deadline = handshake
            .poll_timeout()
            .map_or_else(Instant::now, Instant::from_std);
        tokio::select! {
            read = reader.read_frame() => match read {
                Ok(Some(frame)) => handshake.handle_frame(Instant::now().into_std(), &frame),
                Ok(None) => return Err(LoginFailure::Closed),
                Err(ReadError::Frame(_)) => return Err(LoginFailure::InvalidFrame),
                Err(ReadError::TruncatedFrame(_)) => return Err(LoginFailure::Closed),
                Err(ReadError::FrameTooLarge { .. }) => return Err(LoginFailure::FrameTooLarge),
                Err(_) => return Err(LoginFailure::Io),
            },
            () = tokio::time::sleep_until(deadline) => handshake.handle_timeout(Instant::now().into_std()),
            () = super::stopped(&mut shutdown) => return Err(LoginFailure::ShuttingDown),
        }
        while let Some(event) = handshake.poll_event() {
            match event {
                ServerEvent::Verified(node_id) => {
                    if let Err(reason) = admit(ctx, node_id, pending) {
                        let message = match reason {
                            LoginFailure::Full => "the relay is full",
                            LoginFailure::ShuttingDown => "the relay is shutting down",
                            _ => "this relay does not serve this node",
                        };
                        handshake.deny(DenyReason::NotAllowed, message);
                        failure = Some(reason);
                    } else {
                        handshake.accept();
                    }
                }
                ServerEvent::Failed(error) => {
                    debug!(%error, "relay handshake failed");
                    failure = Some(LoginFailure::from_handshake(&error));
                }
            }
        }
    }
}

/// Access control, then registration.
fn admit(ctx: &Ctx, node_id: NodeId, pending: &mut PendingLogin<'_>) -> Result<(), LoginFailure> {
    if !ctx.access.is_allowed(&node_id) {
        debug!(node = %node_id.fmt_short(), "node refused by access control");
        return Err(LoginFailure::NotAllowed);
    }
    match ctx.clients.register(node_id) {
        Ok(client) => {
            pending.client = Some(client);
            Ok(())
        }
        Err(RegisterError::Full) => Err(LoginFailure::Full),
        Err(RegisterError::ShuttingDown) => Err(LoginFailure::ShuttingDown),
    }
}

/// How a session ended.
#[derive(Debug)]
enum End {
    ClientClosed,
    Read(ReadError),
    ProtocolViolation,
    IdleTimeout,
    WriteTimeout,
    WriteError,
    Closed(CloseReason),
}

impl End {
    fn label(&self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::Read(ReadError::Frame(_)) => "invalid_frame",
            Self::Read(_) => "read_error",
            Self::ProtocolViolation => "protocol_violation",
            Self::IdleTimeout => "idle_timeout",
            Self::WriteTimeout => "write_timeout",
            Self::WriteError => "write_error",
            Self::Closed(CloseReason::Replaced) => "replaced",
            Self::Closed(CloseReason::Shutdown) => "shutdown",
            Self::Closed(CloseReason::Disconnected) => "disconnected",
        }
    }
}

/// Number of datagrams in a batch.
fn datagram_count(datagrams: &Datagrams) -> u64 {
    let len = datagrams.contents.len();
    let count = match datagrams.segment_size {
        Some(size) => len.div_ceil(usize::from(size.get())),
        None => 1,
    };
    u64::try_from(count).unwrap_or(u64::MAX)
}

/// What the reader keeps between frames.
struct ReadState<'a> {
    ctx: &'a Ctx,
    client: &'a ClientShared,
    router: Router,
    bucket: Option<TokenBucket>,
}

impl ReadState<'_> {
    /// Handles one frame from the client.
    fn handle(&mut self, frame: Frame, now: std::time::Instant) -> Result<(), End> {
        let metrics = &self.ctx.metrics;
        // Every frame is charged, whatever its type: a flood of keepalives or unknown frames costs the
        // server as much to read as one of datagrams.
        if let Some(bucket) = &mut self.bucket
            && let Admission::Drop { notify } = bucket.admit(now, frame.encoded_len())
        {
            if let Frame::SendDatagrams { datagrams, .. } = &frame {
                metrics
                    .dropped(DropReason::RateLimited)
                    .inc_by(datagram_count(datagrams));
            }
            if notify {
                metrics.rate_limited.inc();
                debug!(node = %self.client.node_id.fmt_short(), "client is rate limited");
                let _ = self.client.push(Frame::Status {
                    code: StatusCode::RateLimited,
                    message: "rate limit exceeded: excess datagrams are dropped".into(),
                });
            }
            return Ok(());
        }
        match frame {
            Frame::SendDatagrams { dst, datagrams } => {
                let count = datagram_count(&datagrams);
                match self.router.forward(&self.ctx.clients, dst, datagrams) {
                    Forwarded::Queued => {}
                    Forwarded::QueueFull => {
                        metrics.dropped(DropReason::QueueFull).inc_by(count);
                    }
                    Forwarded::UnknownDestination { tell } => {
                        metrics
                            .dropped(DropReason::UnknownDestination)
                            .inc_by(count);
                        if tell && self.client.push(Frame::PeerGone(dst)).is_ok() {
                            metrics.peer_gone.inc();
                        }
                    }
                }
            }
            // A full queue drops the answer like any frame; the client's probe times out.
            Frame::Ping(data) => {
                let _ = self.client.push(Frame::Pong(data));
            }
            Frame::Pong(_) | Frame::KeepAlive => {}
            Frame::NotePreferred(preferred) => self.client.set_preferred(preferred),
            Frame::Unknown { typ, body } => {
                trace!(typ, len = body.len(), "skipping frame of unknown type");
            }
            other => {
                debug!(
                    node = %self.client.node_id.fmt_short(),
                    typ = other.typ(),
                    "client sent a frame that clients do not send; closing"
                );
                return Err(End::ProtocolViolation);
            }
        }
        Ok(())
    }
}

/// Reads the client's frames until the stream ends, fails, idles out or breaks the protocol.
async fn read_loop<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    client: &ClientShared,
    ctx: &Ctx,
) -> End {
    let limits = &ctx.limits;
    let mut state = ReadState {
        ctx,
        client,
        router: Router::new(client.node_id),
        bucket: limits
            .rate_limit
            .map(|limit| TokenBucket::new(Instant::now().into_std(), limit)),
    };
    let check_every = limits.keepalive_interval.min(limits.idle_timeout);
    let mut last_rx = Instant::now();
    let timer = tokio::time::sleep(check_every);
    tokio::pin!(timer);
    loop {
        let read = tokio::select! {
            biased;
            read = reader.read_frame() => read,
            () = &mut timer => {
                let now = Instant::now();
                let idle = now.saturating_duration_since(last_rx);
                if idle >= limits.idle_timeout {
                    return End::IdleTimeout;
                }
                if idle >= limits.keepalive_interval {
                    reader.release_idle_buffer();
                }
                let wait = check_every.min(limits.idle_timeout.saturating_sub(idle));
                timer.as_mut().reset(now.checked_add(wait).unwrap_or(now));
                continue;
            }
        };
        let mut frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => return End::ClientClosed,
            Err(error) => return End::Read(error),
        };
        last_rx = Instant::now();
        let now = last_rx.into_std();
        // Handle the whole burst already buffered before going back to the socket.
        loop {
            if let Err(end) = state.handle(frame, now) {
                return end;
            }
            frame = match reader.try_read_buffered() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => return End::Read(ReadError::Frame(error)),
            };
        }
    }
}

/// Writes what is queued for the client, and keepalive pings, until a write fails or the server closes the
/// connection.
async fn write_loop<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    client: &ClientShared,
    ctx: &Ctx,
) -> End {
    let limits = &ctx.limits;
    let write_timeout = limits.write_timeout;
    let mut batch = VecDeque::new();
    // Checked: the limits are validated (at most a week), but no configured value may panic here.
    let first = Instant::now()
        .checked_add(limits.keepalive_interval)
        .unwrap_or_else(Instant::now);
    let mut keepalive = tokio::time::interval_at(first, limits.keepalive_interval);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut active = false;
    let mut pings = 0u64;
    loop {
        tokio::select! {
            // The tick first: under a constant stream of frames, pings (which keep a receive-only client's
            // answers, and so its idle timer, going) must still go out.
            biased;
            _ = keepalive.tick() => {
                if !active {
                    // Quiet for a whole interval: give buffers back.
                    writer.release_idle_buffer();
                    batch = VecDeque::new();
                    client.shrink();
                }
                active = false;
                pings = pings.wrapping_add(1);
                if let Err(end) = write_frame(writer, &Frame::Ping(pings.to_be_bytes()), write_timeout).await {
                    return end;
                }
                if let Err(end) = flush(writer, write_timeout).await {
                    return end;
                }
            }
            () = client.notified() => {}
        }
        if let Some(reason) = client.take(&mut batch) {
            return close(writer, reason, write_timeout).await;
        }
        if batch.is_empty() {
            continue;
        }
        active = true;
        let (mut datagrams, mut bytes) = (0u64, 0u64);
        for frame in batch.drain(..) {
            if let Frame::RecvDatagrams { datagrams: d, .. } = &frame {
                datagrams += datagram_count(d);
                bytes += u64::try_from(d.contents.len()).unwrap_or(u64::MAX);
            }
            if let Err(end) = write_frame(writer, &frame, write_timeout).await {
                return end;
            }
            client.written(&frame);
        }
        // Counted once handed to the stream (before the flush that pushes out the last of them).
        ctx.metrics.relayed_datagrams.inc_by(datagrams);
        ctx.metrics.relayed_bytes.inc_by(bytes);
        if let Err(end) = flush(writer, write_timeout).await {
            return end;
        }
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    frame: &Frame,
    write_timeout: Duration,
) -> Result<(), End> {
    match timeout(write_timeout, writer.queue(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::WriteError),
        Err(_) => Err(End::WriteTimeout),
    }
}

async fn flush<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    write_timeout: Duration,
) -> Result<(), End> {
    match timeout(write_timeout, writer.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::WriteError),
        Err(_) => Err(End::WriteTimeout),
    }
}

/// Tells the client why the server closes the connection, and shuts the stream down.
async fn close<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    reason: CloseReason,
    write_timeout: Duration,
) -> End {
    let (code, message) = match reason {
        CloseReason::Replaced => (
            StatusCode::SameNodeConnectedElsewhere,
            "another connection logged in with this node id",
        ),
        CloseReason::Shutdown => (StatusCode::Restarting, "the relay is shutting down"),
        // Only set once the session is over; nothing to tell.
        CloseReason::Disconnected => return End::Closed(reason),
    };
    let status = Frame::Status {
        code,
        message: message.into(),
    };
    let _ = timeout(write_timeout, async {
        writer.queue(&status).await?;
        writer.shutdown().await
    })
    .await;
    End::Closed(reason)
}

/// Shuts the write side down (after what is queued), then lingers.
async fn close_gracefully<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    write_timeout: Duration,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let Ok(Ok(())) = timeout(write_timeout, writer.shutdown()).await {
        linger(reader).await;
    }
}

/// Reads and discards until the client closes its side (or [`LINGER`] passes), so that closing our socket
/// does not send a reset that could destroy the frames we wrote last before the client read them.
async fn linger<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) {
    let _ = timeout(
        LINGER,
        tokio::io::copy(reader.get_mut(), &mut tokio::io::sink()),
    )
    .await;
}
