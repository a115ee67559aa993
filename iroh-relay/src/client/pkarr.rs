//! The HTTP side of discovery: publishing a [`SignedRecord`] to a publish endpoint and fetching one back.
//!
//! The endpoint speaks the pkarr relay protocol: `PUT <base>/pkarr/<z-base-32 NodeId>` with the record's
//! [relay payload](SignedRecord::to_relay_payload) as body stores it (the server verifies the signature
//! and keeps it only if newer than what it has), and `GET` on the same URL returns the stored payload
//! (`404` when there is none). The discovery server of `iroh-relay` serves it, and so do public pkarr
//! relays, for networks where plain DNS is blocked.
//!
//! Every request is one short HTTP/1.1 connection (records are small and published every few minutes at
//! most), bounded by the client's timeout.

use std::{fmt, time::Duration};

use bytes::Bytes;
use hickory_resolver::TokioResolver;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use iroh_base::NodeId;
use rustls::pki_types::CertificateDer;
use tracing::debug;
use url::Url;

use super::{BoxError, ConnectError, connect::AbortOnDrop, dial::Dialer};
use crate::protos::discovery::{MAX_SIGNED_RECORD_LEN, RecordError, SignedRecord};

pub use crate::protos::discovery::{PKARR_CONTENT_TYPE, PKARR_PATH};
/// The default bound on one request: connect, send, answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an error response's body is kept for the error message.
const ERROR_BODY_LIMIT: usize = 512;

/// Publishes records to, and fetches them from, one publish endpoint.
#[derive(Clone)]
pub struct PkarrClient {
    base: Url,
    dialer: std::sync::Arc<Dialer>,
    timeout: Duration,
}

impl fmt::Debug for PkarrClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PkarrClient")
            .field("base", &self.base.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`PkarrClient`].
#[derive(Debug)]
pub struct PkarrClientBuilder {
    base: Url,
    extra_roots: Vec<CertificateDer<'static>>,
    insecure_skip_cert_verify: bool,
    dns_resolver: Option<TokioResolver>,
    timeout: Duration,
}

impl PkarrClientBuilder {
    /// Trusts these certificates as roots besides the webpki roots.
    pub fn extra_roots(mut self, roots: Vec<CertificateDer<'static>>) -> Self {
        self.extra_roots = roots;
        self
    }

    /// Skips verifying the server's certificate. **Insecure**, for tests only: records are signed, so a
    /// false server cannot forge one, but it can withhold or replay them.
    pub fn insecure_skip_cert_verify(mut self, skip: bool) -> Self {
        self.insecure_skip_cert_verify = skip;
        self
    }

    /// Resolves the server's host name with this resolver instead of the system's.
    pub fn dns_resolver(mut self, resolver: TokioResolver) -> Self {
        self.dns_resolver = Some(resolver);
        self
    }

    /// Bounds each request (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The client.
    pub fn build(self) -> PkarrClient {
        let mut base = self.base;
        // `join` replaces the last segment unless the path ends with a slash.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        PkarrClient {
            base,
            dialer: std::sync::Arc::new(Dialer::new(
                self.extra_roots,
                self.insecure_skip_cert_verify,
                self.dns_resolver,
            )),
            timeout: self.timeout,
        }
    }
}

impl PkarrClient {
    /// A client of the publish endpoint under `base` (`http://` or `https://`; a path is kept as a
    /// prefix: `https://example.org/iroh/` puts records at `/iroh/pkarr/<id>`).
    pub fn builder(base: Url) -> PkarrClientBuilder {
        PkarrClientBuilder {
            base,
            extra_roots: Vec::new(),
            insecure_skip_cert_verify: false,
            dns_resolver: None,
            timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The base URL, with a trailing slash.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// Where `node`'s record lives: `<base>pkarr/<z-base-32 id>`.
    pub fn record_url(&self, node: NodeId) -> Url {
        let mut url = self.base.clone();
        let path = format!("{}{PKARR_PATH}/{node}", self.base.path());
        url.set_path(&path);
        url
    }

    /// Stores `record` at the endpoint.
    pub async fn publish(&self, record: &SignedRecord) -> Result<(), PkarrError> {
        let url = self.record_url(record.node_id());
        let response = self
            .request(http::Method::PUT, &url, record.to_relay_payload())
            .await?;
        if response.status.is_success() {
            debug!(%url, "published record");
            return Ok(());
        }
        Err(PkarrError::Status {
            status: response.status,
            message: String::from_utf8_lossy(&response.body).trim().to_owned(),
        })
    }

    /// Fetches `node`'s record; [`PkarrError::NotFound`] when the endpoint has none.
    pub async fn fetch(&self, node: NodeId) -> Result<SignedRecord, PkarrError> {
        let url = self.record_url(node);
        let response = self.request(http::Method::GET, &url, Bytes::new()).await?;
        match response.status {
            http::StatusCode::OK => {
                SignedRecord::from_relay_payload(node, &response.body).map_err(PkarrError::Record)
            }
            http::StatusCode::NOT_FOUND => Err(PkarrError::NotFound),
            status => Err(PkarrError::Status {
                status,
                message: String::from_utf8_lossy(&response.body).trim().to_owned(),
            }),
        }
    }

    async fn request(
        &self,
        method: http::Method,
        url: &Url,
        body: Bytes,
    ) -> Result<Response, PkarrError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.request_unbounded(method, url, body))
            .await
            .unwrap_or(Err(PkarrError::Timeout(timeout)))
    }

    async fn request_unbounded(
        &self,
        method: http::Method,
        url: &Url,
        body: Bytes,
    ) -> Result<Response, PkarrError> {
        let stream = self.dialer.dial(url).await.map_err(PkarrError::Connect)?;
        let http_error = |e: hyper::Error| PkarrError::Http(Box::new(e));
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(http_error)?;
        let _io = AbortOnDrop(tokio::spawn(connection));
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let mut request = http::Request::builder()
            .method(method)
            .uri(url.path())
            .header(http::header::HOST, authority)
            .header(
                http::header::USER_AGENT,
                concat!("iroh-relay/", env!("CARGO_PKG_VERSION")),
            );
        if !body.is_empty() {
            request = request.header(http::header::CONTENT_TYPE, PKARR_CONTENT_TYPE);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| PkarrError::Http(Box::new(e)))?;
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        let limit = if status.is_success() {
            MAX_SIGNED_RECORD_LEN
        } else {
            ERROR_BODY_LIMIT
        };
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(PkarrError::Body)?
            .to_bytes();
        Ok(Response { status, body })
    }
}

struct Response {
    status: http::StatusCode,
    body: Bytes,
}

/// Why publishing or fetching a record failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkarrError {
    /// The server could not be reached (DNS, TCP or TLS).
    #[error("cannot reach the server: {0}")]
    Connect(#[source] ConnectError),
    /// No answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[source] BoxError),
    /// The response body could not be read, or was longer than a record can be.
    #[error("response body: {0}")]
    Body(#[source] BoxError),
    /// The server has no record for the node.
    #[error("no record (404)")]
    NotFound,
    /// The server answered with an error status.
    #[error("server answered {status}: {message}")]
    Status {
        /// The status.
        status: http::StatusCode,
        /// The start of the response body.
        message: String,
    },
    /// The record the server returned does not parse or verify.
    #[error("bad record from the server: {0}")]
    Record(#[source] RecordError),
}
