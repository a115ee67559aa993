//! Publishing signed records to a publish endpoint over HTTP, and fetching them back.
//!
//! [`PkarrPublisher`] signs our addressing as a pkarr record
//! ([`iroh_relay::protos::discovery::SignedRecord`]) and `PUT`s it to `<base>/pkarr/<z-base-32 NodeId>`
//! on the schedule of [`PublishSchedule`]: soon after each change, again before
//! the TTL runs out, with backoff after errors. [`PkarrResolver`] `GET`s the same URL and verifies the
//! signature: a way to resolve where plain DNS is blocked. The discovery server of `iroh-relay` serves
//! both (and DNS for the same records); so do public pkarr relays.

use std::{
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use futures_util::stream;
use iroh_base::{NodeId, SecretKey};
use iroh_relay::{
    client::{
        CertificateDer,
        pkarr::{PkarrClient, PkarrError},
    },
    protos::discovery::{DEFAULT_TTL_SECS, NodeRecord, SignedRecord, fit_record, now_micros},
};
use rand::Rng;
use tokio::{sync::watch, time::Instant};
use tracing::{debug, info, warn};
/// The URL type of publish endpoints.
pub use url::Url;

use super::{
    Discovery, DiscoveryError, DiscoveryErrorKind, DiscoveryItem, DiscoveryStream, NodeData,
    PublishConfig, PublishSchedule,
};

/// The [`Discovery::name`] of the publisher and the resolver.
pub const NAME: &str = "pkarr";

/// Publishes our addressing to a publish endpoint: see the [module docs](self).
///
/// Its task starts with the first publish (inside the endpoint's runtime) and ends when the publisher is
/// dropped.
#[derive(Debug)]
pub struct PkarrPublisher {
    secret_key: SecretKey,
    client: PkarrClient,
    ttl: u32,
    config: PublishConfig,
    data: OnceLock<watch::Sender<NodeData>>,
    status: Arc<Mutex<PublishStatus>>,
}

/// What a [`PkarrPublisher`] has achieved so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishStatus {
    /// The last record published successfully.
    pub published: Option<NodeData>,
    /// Successful publishes.
    pub successes: u64,
    /// Failed publishes.
    pub failures: u64,
    /// The last error, if the last publish failed.
    pub last_error: Option<String>,
}

impl PkarrPublisher {
    /// Publishes as the node of `secret_key` to the endpoint under `base` (for example
    /// `https://dns.example.org`, or the relay URL of `iroh-relay --dev`).
    pub fn new(secret_key: SecretKey, base: Url) -> Self {
        Self::with_client(secret_key, PkarrClient::builder(base).build())
    }

    /// Publishes with a client configured by the caller (extra roots, timeout, resolver).
    pub fn with_client(secret_key: SecretKey, client: PkarrClient) -> Self {
        Self {
            secret_key,
            client,
            ttl: DEFAULT_TTL_SECS,
            config: PublishConfig::for_ttl(Duration::from_secs(u64::from(DEFAULT_TTL_SECS))),
            data: OnceLock::new(),
            status: Arc::default(),
        }
    }

    /// The TTL of the records, in seconds (default [`DEFAULT_TTL_SECS`]); the republish interval follows
    /// it unless [`PkarrPublisher::schedule`] sets another.
    pub fn ttl(mut self, ttl_secs: u32) -> Self {
        self.ttl = ttl_secs;
        self.config = PublishConfig::for_ttl(Duration::from_secs(u64::from(ttl_secs)));
        self
    }

    /// Sets the schedule's timing.
    pub fn schedule(mut self, config: PublishConfig) -> Self {
        self.config = config;
        self
    }

    /// What it has achieved so far.
    pub fn status(&self) -> PublishStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A handle on its status that outlives the publisher (the endpoint owns the publisher).
    pub fn status_handle(&self) -> PublishStatusHandle {
        PublishStatusHandle(Arc::clone(&self.status))
    }

    fn start(&self, data: NodeData) -> watch::Sender<NodeData> {
        let (tx, rx) = watch::channel(data);
        let task = PublishTask {
            secret_key: self.secret_key.clone(),
            client: self.client.clone(),
            ttl: self.ttl,
            schedule: PublishSchedule::new(self.config.clone()),
            status: Arc::clone(&self.status),
            last_timestamp: 0,
        };
        tokio::spawn(task.run(rx));
        tx
    }
}

/// Reads a [`PkarrPublisher`]'s status from elsewhere.
#[derive(Debug, Clone)]
pub struct PublishStatusHandle(Arc<Mutex<PublishStatus>>);

impl PublishStatusHandle {
    /// The status now.
    pub fn get(&self) -> PublishStatus {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Discovery for PkarrPublisher {
    fn name(&self) -> &'static str {
        NAME
    }

    fn publish(&self, data: &NodeData) {
        match self.data.get() {
            Some(tx) => {
                tx.send_replace(data.clone());
            }
            None => {
                if tokio::runtime::Handle::try_current().is_err() {
                    warn!("pkarr publish outside a tokio runtime: ignored");
                    return;
                }
                let mut fresh = None;
                let tx = self.data.get_or_init(|| {
                    let tx = self.start(data.clone());
                    fresh = Some(());
                    tx
                });
                if fresh.is_none() {
                    tx.send_replace(data.clone());
                }
            }
        }
    }
}

struct PublishTask {
    secret_key: SecretKey,
    client: PkarrClient,
    ttl: u32,
    schedule: PublishSchedule,
    status: Arc<Mutex<PublishStatus>>,
    last_timestamp: u64,
}

impl PublishTask {
    async fn run(mut self, mut rx: watch::Receiver<NodeData>) {
        let now = || Instant::now().into_std();
        let initial = rx.borrow_and_update().clone();
        self.schedule.set_data(now(), initial);
        loop {
            if let Some(data) = self.schedule.poll_publish(now()) {
                let result = self.publish_once(&data).await;
                let jitter = rand::thread_rng().r#gen::<f64>();
                self.note(&data, result.as_ref().err());
                self.schedule.on_result(now(), result.is_ok(), jitter);
                continue;
            }
            let deadline = self.schedule.poll_timeout();
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        debug!("publisher dropped; publish task ends");
                        return;
                    }
                    let data = rx.borrow_and_update().clone();
                    self.schedule.set_data(now(), data);
                }
                () = sleep_until(deadline) => {}
            }
        }
    }

    async fn publish_once(&mut self, data: &NodeData) -> Result<(), PublishError> {
        let record = NodeRecord::new(self.secret_key.public())
            .with_relay_url_opt(data.relay_url.clone())
            .with_direct_addresses(data.direct_addresses.iter().copied())
            .with_ttl(self.ttl);
        let (record, dropped) = fit_record(&record).map_err(PublishError::Encode)?;
        if dropped > 0 {
            debug!(
                dropped,
                "too many direct addresses for one record; publishing the first"
            );
        }
        // Strictly increasing, even if the clock steps back: the server keeps only newer records.
        let timestamp = now_micros().max(self.last_timestamp + 1);
        let signed = SignedRecord::sign(&self.secret_key, &record, timestamp)
            .map_err(PublishError::Encode)?;
        self.client
            .publish(&signed)
            .await
            .map_err(PublishError::Http)?;
        self.last_timestamp = timestamp;
        Ok(())
    }

    fn note(&self, data: &NodeData, error: Option<&PublishError>) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        match error {
            None => {
                if status.last_error.is_some() {
                    info!(base = %self.client.base(), "publishing works again");
                }
                status.successes += 1;
                status.published = Some(data.clone());
                status.last_error = None;
                tracing::debug!(
                    target: "iroh::_events::discovery::published",
                    service = NAME,
                    relay = ?data.relay_url,
                    addrs = ?data.direct_addresses,
                );
            }
            Some(error) => {
                // Logged once per outage; the retries that follow are debug.
                if status.last_error.is_none() {
                    warn!(base = %self.client.base(), %error, "publishing our address failed; retrying with backoff");
                } else {
                    debug!(%error, "publish retry failed");
                }
                status.failures += 1;
                status.last_error = Some(error.to_string());
            }
        }
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("cannot encode the record: {0}")]
    Encode(iroh_relay::protos::discovery::EncodeError),
    #[error("{0}")]
    Http(PkarrError),
}

/// Resolves nodes by fetching their signed records from a publish endpoint: see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct PkarrResolver {
    client: PkarrClient,
}

impl PkarrResolver {
    /// Fetches from the endpoint under `base`.
    pub fn new(base: Url) -> Self {
        Self::with_client(PkarrClient::builder(base).build())
    }

    /// Fetches with a client configured by the caller.
    pub fn with_client(client: PkarrClient) -> Self {
        Self { client }
    }

    /// A client for `base` trusting `extra_roots` (a test server's certificate).
    pub fn with_extra_roots(base: Url, extra_roots: Vec<CertificateDer<'static>>) -> Self {
        Self::with_client(PkarrClient::builder(base).extra_roots(extra_roots).build())
    }

    /// Fetches `node`'s record once.
    pub async fn lookup(&self, node: NodeId) -> Result<DiscoveryItem, DiscoveryError> {
        let started = Instant::now().into_std();
        let fail = |kind| DiscoveryError::new(NAME, started, kind);
        let signed = match self.client.fetch(node).await {
            Ok(signed) => signed,
            Err(PkarrError::NotFound) => {
                return Err(fail(DiscoveryErrorKind::NotFound("no record (404)")));
            }
            Err(error) => return Err(fail(DiscoveryErrorKind::Pkarr(error))),
        };
        let record = signed
            .record()
            .map_err(|e| fail(DiscoveryErrorKind::Record(e)))?;
        if record.is_empty() {
            return Err(fail(DiscoveryErrorKind::Empty));
        }
        Ok(DiscoveryItem::from_record(
            &record,
            NAME,
            Some(signed.timestamp()),
        ))
    }
}

impl Discovery for PkarrResolver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn resolve(&self, node: NodeId) -> Option<DiscoveryStream> {
        let this = self.clone();
        Some(Box::pin(stream::once(
            async move { this.lookup(node).await },
        )))
    }
}
