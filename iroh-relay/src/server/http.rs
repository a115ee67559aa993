//! The relay listener: accepting TCP connections, TLS, HTTP/1.1 with hyper, the routes, and the `/relay`
//! upgrade that hands the connection to [`super::client`].
//!
//! | route | answer |
//! |---|---|
//! | `GET /relay` with `Connection: Upgrade`, `Upgrade: iroh-relay-v1` | `101 Switching Protocols`, then the relay protocol. `426` if the upgrade headers are missing or name another protocol, `401` without the right bearer token (when one is configured), `405` for other methods |
//! | `GET /relay` as a WebSocket upgrade (`Upgrade: websocket`, `Sec-WebSocket-Version: 13`, a `Sec-WebSocket-Key`, `Sec-WebSocket-Protocol` offering `iroh-relay-v1`) | `101` with `Sec-WebSocket-Accept` and `Sec-WebSocket-Protocol: iroh-relay-v1`, then the relay protocol, one frame per binary message. `400` if no offered protocol is one this server speaks or the key is missing, `426` naming version 13 for other WebSocket versions |
//! | `GET /ping` | `200`, empty: a latency probe |
//! | `GET /generate_204` | `204`; an `X-Iroh-Challenge` of 1 to 64 characters from `[A-Za-z0-9._-]` is echoed as `X-Iroh-Response`, any other value gets `400` |
//! | `GET /healthz` | `200` `ok` |
//! | `PUT` / `GET /pkarr/<z-base-32 NodeId>` | the discovery publish endpoint when discovery is configured (see [`super::discovery`]), else `404` |
//! | anything else | `404` |
//!
//! One task serves each connection from TCP accept to the end of the relay session, so the accept loop's
//! [`JoinSet`] knows every connection and shutdown can wait for (or abort) all of them.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::Full;
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, trace, warn};

use super::{
    Ctx,
    access::bearer_matches,
    client,
    pending::{PendingSlot, Refused},
};
use crate::{
    protos::{RELAY_PATH, UPGRADE_PROTOCOL, WEBSOCKET_PROTOCOL, frame::HEADER_LEN},
    ws::{self, MessageLimit, WsBytes},
};

/// The HTTP path of the latency probe.
pub const PING_PATH: &str = "/ping";
/// The HTTP path of the captive-portal check.
pub const GENERATE_204_PATH: &str = "/generate_204";
/// The HTTP path of the health check.
pub const HEALTHZ_PATH: &str = "/healthz";
/// The request header whose value `/generate_204` echoes.
pub const CHALLENGE_HEADER: &str = "x-iroh-challenge";
/// The response header carrying the echoed challenge.
pub const RESPONSE_HEADER: &str = "x-iroh-response";
/// The longest challenge `/generate_204` echoes.
pub const MAX_CHALLENGE_LEN: usize = 64;

/// The first pause after a failed accept (for instance out of file descriptors); each further failure in a
/// row doubles it up to [`ACCEPT_ERROR_PAUSE_MAX`], so the loop never spins and the log never floods.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause after failed accepts.
const ACCEPT_ERROR_PAUSE_MAX: Duration = Duration::from_secs(1);
/// The most bytes of an HTTP request head (request line and headers) read before the request is refused
/// with `431`: every request this server takes fits in far less (an upgrade request is a few hundred
/// bytes), and a connection that has not logged in should hold no large buffer. hyper's own default is
/// about 400 KB; 8 KiB is the least it takes.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How often at most the refusals of connections over the handshake caps are logged as a warning.
const REFUSAL_WARN_INTERVAL: Duration = Duration::from_secs(10);

type Body = Full<Bytes>;

/// Accepts connections until `stop` turns true, then waits up to `grace` for the connections to end
/// (clients are told to go by the registry) and aborts the rest.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut connections = JoinSet::new();
    let mut errors = AcceptErrors::default();
    let mut refusals = Refusals::default();
    loop {
        tokio::select! {
            biased;
            () = super::stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    errors.recovered();
                    ctx.metrics.accepts.inc();
                    let slot = match ctx.pending.try_take(peer.ip()) {
                        Ok(slot) => slot,
                        Err(refused) => {
                            // Closed before reading a byte: the descriptor is free again at once.
                            drop(stream);
                            ctx.metrics.handshake_refused(refused.label());
                            refusals.note(peer, refused);
                            continue;
                        }
                    };
                    if let Err(error) = stream.set_nodelay(true) {
                        debug!(%peer, %error, "cannot set TCP_NODELAY");
                    }
                    let conn =
                        serve_connection(stream, peer, slot, tls.clone(), Arc::clone(&ctx), stop.clone());
                    connections.spawn(conn);
                }
                Err(error) => {
                    let pause = errors.failed(&error);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = super::stopped(&mut stop) => break,
                    }
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            remaining = connections.len(),
            "aborting connections at the end of the shutdown grace period"
        );
    }
    connections.shutdown().await;
}

/// Failed accepts in a row: the growing pause, and a warning for the first one only.
#[derive(Debug, Default)]
struct AcceptErrors {
    in_a_row: u32,
}

impl AcceptErrors {
    /// Logs the failure (a warning for the first of a run) and returns how long to pause.
    fn failed(&mut self, error: &std::io::Error) -> Duration {
        if self.in_a_row == 0 {
            warn!(%error, "cannot accept relay connections; backing off until accepts work again");
        } else {
            debug!(%error, failures = self.in_a_row + 1, "accept failed again");
        }
        let pause = ACCEPT_ERROR_PAUSE
            .saturating_mul(1 << self.in_a_row.min(16))
            .min(ACCEPT_ERROR_PAUSE_MAX);
        self.in_a_row = self.in_a_row.saturating_add(1);
        pause
    }

    /// An accept worked: a warning before gets its all-clear.
    fn recovered(&mut self) {
        if self.in_a_row > 0 {
            info!(
                failures = self.in_a_row,
                "accepting relay connections again"
            );
            self.in_a_row = 0;
        }
    }
}

/// Connections refused over the handshake caps: each logged at DEBUG, and a WARN at most every
/// [`REFUSAL_WARN_INTERVAL`] with the count since the last one.
#[derive(Debug, Default)]
struct Refusals {
    last_warn: Option<tokio::time::Instant>,
    since: u64,
}

impl Refusals {
    fn note(&mut self, peer: SocketAddr, refused: Refused) {
        debug!(%peer, cap = refused.label(), "connection refused: too many unfinished handshakes");
        self.since += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_warn
            .is_none_or(|last| now.duration_since(last) >= REFUSAL_WARN_INTERVAL)
        {
            warn!(
                %peer,
                cap = refused.label(),
                refused = self.since,
                "refusing connections: too many unfinished handshakes (max_pending, max_pending_per_source)"
            );
            self.last_warn = Some(now);
            self.since = 0;
        }
    }
}

/// One connection: TLS (if configured), then HTTP, then possibly the relay protocol. `slot` is its place
/// among the connections in their handshake, given back once it logs in or ends.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: PendingSlot,
    tls: Option<TlsAcceptor>,
    ctx: Arc<Ctx>,
    stop: watch::Receiver<bool>,
) {
    match tls {
        None => serve_http(stream, peer, slot, ctx, stop).await,
        Some(acceptor) => {
            let accepted =
                tokio::time::timeout(ctx.limits.handshake_timeout, acceptor.accept(stream)).await;
            match accepted {
                Ok(Ok(stream)) => serve_http(stream, peer, slot, ctx, stop).await,
                Ok(Err(error)) => {
                    ctx.metrics.handshake_failed("tls");
                    debug!(%peer, %error, "TLS handshake failed");
                }
                Err(_) => {
                    ctx.metrics.handshake_failed("tls_timeout");
                    debug!(%peer, "TLS handshake timed out");
                }
            }
        }
    }
}

/// Serves HTTP on `stream` until it closes or upgrades; an upgrade continues as a relay client.
async fn serve_http<S>(
    stream: S,
    peer: SocketAddr,
    slot: PendingSlot,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upgrade = Arc::new(Mutex::new(None));
    let service = Service {
        ctx: Arc::clone(&ctx),
        upgrade: Arc::clone(&upgrade),
        peer,
    };
    // Boxed so the (large) HTTP state is freed after an upgrade rather than kept in this task's future.
    let mut conn = Box::pin(
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(ctx.limits.handshake_timeout)
            .max_buf_size(MAX_REQUEST_HEAD)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades(),
    );
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = super::stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    drop(conn);
    if let Err(error) = served {
        // Garbage instead of HTTP lands here: hyper answered 400 if it could and closed.
        debug!(%peer, %error, "HTTP connection failed");
        return;
    }
    let Some((on_upgrade, transport)) = upgrade
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    else {
        return;
    };
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            debug!(%peer, %error, "relay upgrade failed");
            return;
        }
    };
    match upgraded.downcast::<TokioIo<S>>() {
        Ok(parts) if transport == Transport::WebSocket => {
            trace!(%peer, "relay connection upgraded to WebSocket");
            // Until the login, messages are as small as frames are; raised by `client::serve` after it.
            let limit = MessageLimit::new(HEADER_LEN + client::MAX_LOGIN_FRAME_BODY);
            let stream = WsBytes::server(parts.io.into_inner(), parts.read_buf, limit.clone());
            client::serve(stream, Bytes::new(), slot, ctx, stop, Some(limit)).await;
        }
        Ok(parts) => {
            trace!(%peer, "relay connection upgraded");
            client::serve(parts.io.into_inner(), parts.read_buf, slot, ctx, stop, None).await;
        }
        Err(_) => warn!(%peer, "upgraded connection has an unexpected type"),
    }
}

/// How an upgraded connection carries frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// `Upgrade: iroh-relay-v1`: frames straight on the stream.
    Relay,
    /// `Upgrade: websocket`: one frame per binary message.
    WebSocket,
}

/// The HTTP service of one connection. It answers synchronously; a `/relay` upgrade leaves its
/// [`OnUpgrade`] in the slot for [`serve_http`] to pick up once hyper lets go of the stream.
struct Service {
    ctx: Arc<Ctx>,
    upgrade: Arc<Mutex<Option<(OnUpgrade, Transport)>>>,
    peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let metrics = &self.ctx.metrics;
        let path = request.uri().path();
        if let (Some(shared), Some(id)) = (
            &self.ctx.discovery,
            path.strip_prefix(&super::discovery::route_prefix()),
        ) {
            metrics.http_request("pkarr");
            let shared = Arc::clone(shared);
            let (id, method) = (id.to_owned(), request.method().clone());
            let length = request
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let peer = self.peer.ip();
            let body = request.into_body();
            return Box::pin(async move {
                Ok(super::discovery::handle(shared, peer, method, id, body, length).await)
            });
        }
        let response = match path {
            RELAY_PATH if !self.ctx.relay_enabled => {
                metrics.http_request("other");
                response(StatusCode::NOT_FOUND, "this server relays nothing\n")
            }
            RELAY_PATH => {
                metrics.http_request("relay");
                self.relay(&mut request)
            }
            PING_PATH | GENERATE_204_PATH | HEALTHZ_PATH
                if request.method() != Method::GET && request.method() != Method::HEAD =>
            {
                metrics.http_request("other");
                method_not_allowed("GET, HEAD")
            }
            PING_PATH => {
                metrics.http_request("ping");
                response(StatusCode::OK, "")
            }
            GENERATE_204_PATH => {
                metrics.http_request("generate_204");
                generate_204(request.headers())
            }
            HEALTHZ_PATH => {
                metrics.http_request("healthz");
                response(StatusCode::OK, "ok")
            }
            _ => {
                metrics.http_request("other");
                response(StatusCode::NOT_FOUND, "not found\n")
            }
        };
        Box::pin(std::future::ready(Ok(response)))
    }
}

impl Service {
    /// `GET /relay`: checks the upgrade request and the bearer token, then switches protocols.
    fn relay(&self, request: &mut Request<Incoming>) -> Response<Body> {
        let metrics = &self.ctx.metrics;
        if request.method() != Method::GET {
            metrics.handshake_failed("bad_upgrade");
            // Only a GET can upgrade: HEAD is not allowed here, and `Allow` says so.
            return method_not_allowed("GET");
        }
        let websocket = upgrades_to(request.version(), request.headers(), "websocket");
        let accept = if websocket {
            match websocket_accept(request.headers()) {
                Ok(accept) => Some(accept),
                Err(refusal) => {
                    metrics.handshake_failed("bad_upgrade");
                    return *refusal;
                }
            }
        } else {
            None
        };
        if !websocket && !upgrades_to(request.version(), request.headers(), UPGRADE_PROTOCOL) {
            metrics.handshake_failed("bad_upgrade");
            // RFC 9110 section 15.5.22: "A server that sends a 426 (Upgrade Required) response MUST send an
            // Upgrade header field to indicate the acceptable protocols."
            let mut response = response(
                StatusCode::UPGRADE_REQUIRED,
                "this endpoint speaks iroh-relay-v1 over an HTTP/1.1 upgrade\n",
            );
            let headers = response.headers_mut();
            headers.insert(
                header::UPGRADE,
                HeaderValue::from_static("iroh-relay-v1, websocket"),
            );
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            return response;
        }
        if let Some(token) = &self.ctx.bearer_token
            && !bearer_matches(token, request.headers().get(header::AUTHORIZATION))
        {
            metrics.handshake_failed("unauthorized");
            let mut response = response(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required\n",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"iroh-relay\""),
            );
            return response;
        }
        let transport = if websocket {
            Transport::WebSocket
        } else {
            Transport::Relay
        };
        *self.upgrade.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((hyper::upgrade::on(request), transport));
        metrics.upgrades.inc();
        let mut response = response(StatusCode::SWITCHING_PROTOCOLS, "");
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        match accept {
            Some(accept) => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
                headers.insert(
                    header::SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(WEBSOCKET_PROTOCOL),
                );
            }
            None => {
                headers.insert(header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
            }
        }
        response
    }
}

/// The checks of a WebSocket upgrade request past its `Upgrade` header: version 13, a key, and our protocol
/// among those offered. Gives the `Sec-WebSocket-Accept` value, or the refusal to send.
fn websocket_accept(headers: &HeaderMap) -> Result<HeaderValue, Box<Response<Body>>> {
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == ws::WS_VERSION.as_bytes());
    if !version_ok {
        let mut refusal = response(
            StatusCode::UPGRADE_REQUIRED,
            "this relay speaks WebSocket version 13\n",
        );
        let headers = refusal.headers_mut();
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static(ws::WS_VERSION),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        return Err(Box::new(refusal));
    }
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == WEBSOCKET_PROTOCOL);
    if !offered {
        return Err(Box::new(response(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must offer iroh-relay-v1\n",
        )));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(Box::new(response(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs a Sec-WebSocket-Key\n",
        )));
    };
    HeaderValue::from_str(&ws::accept_key(key.as_bytes()))
        .map_err(|_| Box::new(response(StatusCode::INTERNAL_SERVER_ERROR, "")))
}

/// Whether the request asks for an upgrade to `protocol`: HTTP/1.1, a `Connection` header listing
/// `upgrade`, and `protocol` in `Upgrade` (both compared case-insensitively).
fn upgrades_to(version: Version, headers: &HeaderMap, protocol: &str) -> bool {
    if version != Version::HTTP_11 {
        return false;
    }
    let connection_upgrade = headers.get_all(header::CONNECTION).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    let upgrade_relay = headers.get_all(header::UPGRADE).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case(protocol))
        })
    });
    connection_upgrade && upgrade_relay
}

/// `/generate_204`: echoes a well-formed challenge.
fn generate_204(headers: &HeaderMap) -> Response<Body> {
    let Some(challenge) = headers.get(CHALLENGE_HEADER) else {
        return response(StatusCode::NO_CONTENT, "");
    };
    if !is_valid_challenge(challenge.as_bytes()) {
        return response(
            StatusCode::BAD_REQUEST,
            "X-Iroh-Challenge must be 1 to 64 characters of A-Z a-z 0-9 . _ -\n",
        );
    }
    let mut response = response(StatusCode::NO_CONTENT, "");
    response
        .headers_mut()
        .insert(RESPONSE_HEADER, challenge.clone());
    response
}

/// 1 to [`MAX_CHALLENGE_LEN`] characters from `[A-Za-z0-9._-]`.
fn is_valid_challenge(value: &[u8]) -> bool {
    (1..=MAX_CHALLENGE_LEN).contains(&value.len())
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn response(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    if !body.is_empty() {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

/// `405` naming the methods the path takes.
fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert!(is_valid_challenge(b"abc-DEF_0.9"));
        assert!(is_valid_challenge(&[b'a'; 64]));
        assert!(!is_valid_challenge(&[b'a'; 65]));
        assert!(!is_valid_challenge(b""));
        assert!(!is_valid_challenge(b"a b"));
        assert!(!is_valid_challenge(b"a/b"));
        assert!(!is_valid_challenge("é".as_bytes()));
    }

    #[test]
    fn upgrade_headers() {
        let headers = |connection: &str, upgrade: &str| {
            let mut map = HeaderMap::new();
            map.insert(
                header::CONNECTION,
                HeaderValue::from_str(connection).unwrap(),
            );
            map.insert(header::UPGRADE, HeaderValue::from_str(upgrade).unwrap());
            map
        };
        assert!(upgrades_to(
            Version::HTTP_11,
            &headers("Upgrade", "iroh-relay-v1"),
            UPGRADE_PROTOCOL
        ));
        assert!(upgrades_to(
            Version::HTTP_11,
            &headers("keep-alive, upgrade", "IROH-RELAY-V1"),
            UPGRADE_PROTOCOL
        ));
        assert!(!upgrades_to(
            Version::HTTP_10,
            &headers("Upgrade", "iroh-relay-v1"),
            UPGRADE_PROTOCOL
        ));
        assert!(!upgrades_to(
            Version::HTTP_11,
            &headers("keep-alive", "iroh-relay-v1"),
            UPGRADE_PROTOCOL
        ));
        assert!(!upgrades_to(
            Version::HTTP_11,
            &headers("Upgrade", "websocket"),
            UPGRADE_PROTOCOL
        ));
        assert!(upgrades_to(
            Version::HTTP_11,
            &headers("Upgrade", "WebSocket"),
            "websocket"
        ));
        assert!(!upgrades_to(
            Version::HTTP_11,
            &HeaderMap::new(),
            UPGRADE_PROTOCOL
        ));
    }
}
