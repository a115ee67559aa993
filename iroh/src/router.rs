//! [`Router`]: serve several protocols on one endpoint, dispatching incoming connections by ALPN.
//!
//! ```text
//!   Endpoint::accept ──> Incoming ──handshake──> Connection ──alpn──> ProtocolHandler::accept
//!                                                            (one task per connection; an error ends only
//!                                                             that connection and is logged)
//! ```
//!
//! The endpoint's ALPN list follows the registered handlers: [`RouterBuilder::spawn`] sets it, so a dialler
//! asking for a protocol nobody registered is refused during the TLS handshake.

use std::{collections::BTreeMap, fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use iroh_net::endpoint::{Connection, Endpoint, Incoming};
use tokio::{sync::watch, task::JoinSet};
use tracing::{debug, warn};

/// The error a [`ProtocolHandler`] returns; it is logged and closes that connection only.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How long [`Router::shutdown`] waits for running handlers before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The QUIC application error code a connection is closed with when its handler fails.
const HANDLER_FAILED: u32 = 1;

/// A protocol served by a [`Router`].
///
/// ```
/// use iroh::{Connection, router::{HandlerError, ProtocolHandler}};
///
/// /// Answers each bidirectional stream with what it received.
/// #[derive(Debug, Clone)]
/// struct Echo;
///
/// impl ProtocolHandler for Echo {
///     async fn accept(&self, connection: Connection) -> Result<(), HandlerError> {
///         let (mut send, mut recv) = connection.accept_bi().await?;
///         let data = recv.read_to_end(64 * 1024).await?;
///         send.write_all(&data).await?;
///         send.finish()?;
///         connection.closed().await;
///         Ok(())
///     }
/// }
/// ```
pub trait ProtocolHandler: Send + Sync + fmt::Debug + 'static {
    /// Serves one connection that negotiated this protocol. Runs in its own task.
    fn accept(
        &self,
        connection: Connection,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Called once when the router shuts down, before it waits for running connections.
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// The object-safe form of [`ProtocolHandler`] the router stores.
trait DynHandler: Send + Sync + fmt::Debug + 'static {
    fn accept(
        &self,
        connection: Connection,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + '_>>;
    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

impl<H: ProtocolHandler> DynHandler for H {
    fn accept(
        &self,
        connection: Connection,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + '_>> {
        Box::pin(ProtocolHandler::accept(self, connection))
    }

    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(ProtocolHandler::shutdown(self))
    }
}

type Handlers = BTreeMap<Vec<u8>, Arc<dyn DynHandler>>;

/// Builds a [`Router`]: register a handler per ALPN, then [`RouterBuilder::spawn`].
#[derive(Debug)]
pub struct RouterBuilder {
    endpoint: Endpoint,
    handlers: Handlers,
}

/// Why a router could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouterError {
    /// No protocol was registered.
    #[error("a router needs at least one protocol handler")]
    NoHandlers,
    /// The endpoint refused the ALPN list.
    #[error("cannot set the endpoint's ALPNs: {0}")]
    Alpns(#[source] iroh_net::endpoint::BindError),
}

impl RouterBuilder {
    /// Serves `handler` for connections that negotiate `alpn`. A second handler for the same ALPN replaces
    /// the first.
    #[must_use]
    pub fn accept(mut self, alpn: impl AsRef<[u8]>, handler: impl ProtocolHandler) -> Self {
        self.handlers
            .insert(alpn.as_ref().to_vec(), Arc::new(handler));
        self
    }

    /// Sets the endpoint's ALPNs to the registered protocols and starts accepting connections.
    pub fn spawn(self) -> Result<Router, RouterError> {
        if self.handlers.is_empty() {
            return Err(RouterError::NoHandlers);
        }
        let alpns: Vec<Vec<u8>> = self.handlers.keys().cloned().collect();
        self.endpoint.set_alpns(alpns).map_err(RouterError::Alpns)?;
        let handlers = Arc::new(self.handlers);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            self.endpoint.clone(),
            Arc::clone(&handlers),
            stop_rx,
        ));
        Ok(Router {
            endpoint: self.endpoint,
            handlers,
            stop: stop_tx,
            task: std::sync::Mutex::new(Some(task)),
        })
    }
}

/// Accepts connections on an endpoint and hands each to the [`ProtocolHandler`] of its ALPN.
///
/// ```no_run
/// # async fn run(echo: impl iroh::router::ProtocolHandler) -> Result<(), Box<dyn std::error::Error>> {
/// use iroh::{Endpoint, router::Router};
///
/// let endpoint = Endpoint::builder().bind().await?;
/// let router = Router::builder(endpoint).accept(b"my-app/echo/1", echo).spawn()?;
/// // ... the node serves until:
/// router.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Router {
    endpoint: Endpoint,
    handlers: Arc<Handlers>,
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Router {
    /// Starts building a router for `endpoint`.
    pub fn builder(endpoint: Endpoint) -> RouterBuilder {
        RouterBuilder {
            endpoint,
            handlers: BTreeMap::new(),
        }
    }

    /// The endpoint the router serves.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Whether the router has stopped (after [`Router::shutdown`]).
    pub fn is_shutdown(&self) -> bool {
        *self.stop.borrow()
    }

    /// Stops accepting, tells every handler, closes the endpoint (connections end with a close frame) and
    /// waits for running handlers, aborting those still running after a grace period.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            // The accept loop tells the handlers, closes the endpoint and drains its connection tasks.
            if let Err(err) = task.await {
                warn!(%err, "router accept loop failed");
            }
        }
    }

    /// The ALPNs served.
    pub fn alpns(&self) -> impl Iterator<Item = &[u8]> {
        self.handlers.keys().map(Vec::as_slice)
    }
}

async fn accept_loop(endpoint: Endpoint, handlers: Arc<Handlers>, mut stop: watch::Receiver<bool>) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else {
                    debug!("endpoint closed, router stops accepting");
                    break;
                };
                tasks.spawn(handle_incoming(incoming, Arc::clone(&handlers)));
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(err) = joined
                    && err.is_panic()
                {
                    warn!(%err, "protocol handler panicked");
                }
            }
        }
    }
    for handler in handlers.values() {
        handler.shutdown().await;
    }
    endpoint.close().await;
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!(
            remaining = tasks.len(),
            "protocol handlers still running after shutdown grace, aborting"
        );
        tasks.shutdown().await;
    }
}

async fn handle_incoming(incoming: Incoming, handlers: Arc<Handlers>) {
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(err) => {
            debug!(%err, "incoming connection failed during the handshake");
            return;
        }
    };
    let remote = connection.remote_node_id();
    let Some(handler) = handlers.get(connection.alpn()) else {
        // TLS only completes for ALPNs we offered, so this means the ALPN set changed under us.
        warn!(remote = %remote.fmt_short(), alpn = %String::from_utf8_lossy(connection.alpn()), "no handler for ALPN");
        connection.close(HANDLER_FAILED.into(), b"no handler");
        return;
    };
    if let Err(err) = handler.accept(connection.clone()).await {
        warn!(
            remote = %remote.fmt_short(),
            alpn = %String::from_utf8_lossy(connection.alpn()),
            %err,
            "protocol handler failed"
        );
        connection.close(HANDLER_FAILED.into(), b"handler error");
    }
}
