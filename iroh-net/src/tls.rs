//! TLS bound to node identity: QUIC handshakes authenticated by the nodes' ed25519 keys alone.
//!
//! # Design
//!
//! A node's identity is its ed25519 key, so that key is what TLS authenticates, through RFC 7250 raw public
//! keys: each side sends its key as a bare DER SubjectPublicKeyInfo instead of a certificate, and proves it by
//! signing the handshake. There is no certificate authority, no expiry and no name to check against a
//! certificate.
//!
//! - **The client** dials a [`NodeId`]. That NodeId travels in the TLS server name (see [`server_name`]:
//!   `<z-base-32 NodeId>.iroh.invalid`, a name under the `.invalid` top-level domain of RFC 6761 so it can
//!   never resolve), and the client's verifier fails the handshake unless the server's raw key *is* that
//!   NodeId. A wrong key ends the handshake with the `access_denied` alert as soon as the server's first flight
//!   arrives: one round trip, no timeout.
//! - **The server** requires a client key (client authentication is mandatory) and accepts any valid ed25519
//!   key; the application reads it with [`remote_node_id`] and decides what to allow.
//! - **Both** accept only TLS 1.3, only ed25519 handshake signatures, only raw public keys (a peer offering
//!   X.509 certificates fails the certificate type negotiation with `handshake_failure`), and require ALPN
//!   (RFC 9001 section 8.1: no common protocol ends the handshake with `no_application_protocol`).
//! - Session resumption and 0-RTT are off: every connection runs the full handshake, so every connection
//!   proves both keys afresh and the identity never depends on cached state.
//!
//! All rustls configs are built with `builder_with_provider` and ring's provider; the signing key is our
//! ed25519 secret loaded through ring from PKCS#8 (`any_eddsa_type`). Failures of a handshake surface in quinn
//! as a `ConnectionError` carrying the TLS alert; [`classify_error`] turns that into a [`HandshakeFailure`].
//!
//! ```no_run
//! # async fn run(endpoint: quinn::Endpoint, addr: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use iroh_base::SecretKey;
//! use iroh_net::tls;
//!
//! let me = SecretKey::generate();
//! let them = SecretKey::generate().public();
//! let client = tls::make_client_config(&me, them, vec![b"my-proto/1".to_vec()], false)?;
//! let config = quinn::ClientConfig::new(Arc::new(client));
//! let conn = endpoint.connect_with(config, addr, &tls::server_name(&them))?.await?;
//! assert_eq!(tls::remote_node_id(&conn)?, them);
//! # Ok(())
//! # }
//! ```

mod keys;
mod verifier;

use std::sync::Arc;

use iroh_base::{NodeId, SecretKey};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::{
    client::{AlwaysResolvesClientRawPublicKeys, Resumption},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivatePkcs8KeyDer},
    server::{AlwaysResolvesServerRawPublicKeys, NoServerSessionStorage},
    sign::CertifiedKey,
};

pub use self::keys::{SPKI_LENGTH, SpkiError, public_key_from_spki, public_key_to_spki};
use self::verifier::{ClientKeyVerifier, ServerKeyVerifier};

/// The domain under which [`server_name`] puts the dialled NodeId.
pub const SERVER_NAME_SUFFIX: &str = "iroh.invalid";

/// A TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// No ALPN protocol was given. Every iroh connection names its protocol (caller misuse).
    #[error("at least one ALPN protocol is required")]
    NoAlpn,
    /// rustls refused the configuration or the key.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The crypto provider lacks the cipher suite QUIC needs for its Initial packets.
    #[error("crypto provider lacks TLS13_AES_128_GCM_SHA256")]
    NoInitialCipherSuite,
}

/// The NodeId of a connection's peer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteNodeIdError {
    /// The handshake has not completed, or the connection was made without TLS identity.
    #[error("the connection has no peer identity")]
    NoIdentity,
    /// The peer identity is not a rustls certificate list (the connection does not use rustls).
    #[error("the peer identity is not a rustls certificate list")]
    UnexpectedType,
    /// The peer presented no key.
    #[error("the peer presented no key")]
    Empty,
    /// The peer presented several entries where a raw public key is exactly one.
    #[error("the peer presented {0} certificate entries, not one raw key")]
    NotRawKey(usize),
    /// The peer's raw key is not a valid ed25519 SubjectPublicKeyInfo.
    #[error("the peer's key is invalid: {0}")]
    InvalidKey(#[from] SpkiError),
}

/// What a failed handshake tells about its cause, read from the TLS alert that ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandshakeFailureKind {
    /// `access_denied`: the server proved a valid key, but not the NodeId the client dialled.
    WrongNodeId,
    /// `no_application_protocol`: the two sides have no ALPN protocol in common.
    NoApplicationProtocol,
    /// `handshake_failure`: the peer does not speak raw public keys (it sent or wants X.509 certificates), or
    /// offered no client key, or has no parameters in common with us.
    Incompatible,
    /// `bad_certificate`, `decrypt_error`, `unsupported_certificate`, `certificate_required`: the peer's key
    /// is malformed or missing, or its handshake signature does not verify. The client also raises
    /// `bad_certificate` when the server name it was given does not name the node its config expects (a
    /// caller bug: pass [`server_name`] of the same NodeId).
    BadPeerKey,
    /// Any other TLS alert.
    Other,
}

/// A QUIC connection that ended during the TLS handshake, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandshakeFailure {
    /// What went wrong.
    pub kind: HandshakeFailureKind,
    /// The TLS alert code (RFC 8446 section 6) carried in QUIC's CRYPTO_ERROR (`0x100 + alert`).
    pub alert: u8,
    /// True when the peer refused us; false when our own side refused the peer.
    pub by_peer: bool,
}

/// The TLS server name that carries `node_id`: `<z-base-32 NodeId>.iroh.invalid`. Pass it to quinn's
/// `connect`; the client config made by [`make_client_config`] checks it names the node it expects.
pub fn server_name(node_id: &NodeId) -> String {
    format!("{node_id}.{SERVER_NAME_SUFFIX}")
}

/// The NodeId that a [`server_name`] carries, or `None` if `name` is not of that form. Case-insensitive,
/// as DNS names are.
pub fn node_id_from_server_name(name: &str) -> Option<NodeId> {
    let (label, domain) = name.split_once('.')?;
    if !domain.eq_ignore_ascii_case(SERVER_NAME_SUFFIX) {
        return None;
    }
    label.to_ascii_lowercase().parse().ok()
}

/// A QUIC server config that presents `secret_key`'s public half as a raw key, requires every client to do
/// the same, and accepts the given ALPN protocols (in order of preference; at least one).
///
/// With `keylog`, TLS secrets are written to the file named by the `SSLKEYLOGFILE` environment variable,
/// for decrypting captures in Wireshark; never enable it in production.
pub fn make_server_config(
    secret_key: &SecretKey,
    alpns: Vec<Vec<u8>>,
    keylog: bool,
) -> Result<QuicServerConfig, TlsError> {
    if alpns.is_empty() {
        return Err(TlsError::NoAlpn);
    }
    let key = certified_key(secret_key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(ClientKeyVerifier))
        .with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(key)));
    config.alpn_protocols = alpns;
    // No resumption: no tickets, no session cache, no early data.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.max_early_data_size = 0;
    if keylog {
        config.key_log = Arc::new(rustls::KeyLogFile::new());
    }
    QuicServerConfig::try_from(config).map_err(|_| TlsError::NoInitialCipherSuite)
}

/// A QUIC client config that authenticates with `secret_key` and accepts only a server that proves the key
/// `remote`. Connect with [`server_name`]`(&remote)` as the server name. `alpns` are offered in order (at
/// least one); `keylog` as for [`make_server_config`].
pub fn make_client_config(
    secret_key: &SecretKey,
    remote: NodeId,
    alpns: Vec<Vec<u8>>,
    keylog: bool,
) -> Result<QuicClientConfig, TlsError> {
    if alpns.is_empty() {
        return Err(TlsError::NoAlpn);
    }
    let key = certified_key(secret_key)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerKeyVerifier { expected: remote }))
        .with_client_cert_resolver(Arc::new(AlwaysResolvesClientRawPublicKeys::new(key)));
    config.alpn_protocols = alpns;
    config.resumption = Resumption::disabled();
    config.enable_early_data = false;
    if keylog {
        config.key_log = Arc::new(rustls::KeyLogFile::new());
    }
    QuicClientConfig::try_from(config).map_err(|_| TlsError::NoInitialCipherSuite)
}

/// The NodeId the peer of an established connection proved in the handshake.
pub fn remote_node_id(conn: &quinn::Connection) -> Result<NodeId, RemoteNodeIdError> {
    let identity = conn.peer_identity().ok_or(RemoteNodeIdError::NoIdentity)?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| RemoteNodeIdError::UnexpectedType)?;
    match certs.as_slice() {
        [] => Err(RemoteNodeIdError::Empty),
        [spki] => Ok(public_key_from_spki(spki.as_ref())?),
        // Our verifiers accept exactly one entry, so this is not a connection they admitted.
        many => Err(RemoteNodeIdError::NotRawKey(many.len())),
    }
}

/// The ALPN protocol negotiated on a connection (after its handshake), or `None` before that.
pub fn alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// Classifies a connection error that a TLS alert caused, on either side; `None` for any other error
/// (timeouts, application closes, transport errors that are not TLS).
pub fn classify_error(err: &quinn::ConnectionError) -> Option<HandshakeFailure> {
    let (code, by_peer) = match err {
        quinn::ConnectionError::TransportError(e) => (e.code, false),
        quinn::ConnectionError::ConnectionClosed(close) => (close.error_code, true),
        _ => return None,
    };
    // RFC 9001 section 4.8: "A TLS alert is converted into a QUIC connection error. The AlertDescription
    // value is added to 0x0100 to produce a QUIC error code from the range reserved for CRYPTO_ERROR".
    let alert = u8::try_from(u64::from(code).checked_sub(0x100)?).ok()?;
    let kind = match rustls::AlertDescription::from(alert) {
        rustls::AlertDescription::AccessDenied => HandshakeFailureKind::WrongNodeId,
        rustls::AlertDescription::NoApplicationProtocol => {
            HandshakeFailureKind::NoApplicationProtocol
        }
        rustls::AlertDescription::HandshakeFailure => HandshakeFailureKind::Incompatible,
        rustls::AlertDescription::BadCertificate
        | rustls::AlertDescription::DecryptError
        | rustls::AlertDescription::UnsupportedCertificate
        | rustls::AlertDescription::CertificateRequired => HandshakeFailureKind::BadPeerKey,
        _ => HandshakeFailureKind::Other,
    };
    Some(HandshakeFailure {
        kind,
        alert,
        by_peer,
    })
}

/// ring's provider: the only one the workspace builds, passed explicitly so that no process-wide default is
/// needed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Our raw public key and a signer for it.
fn certified_key(secret_key: &SecretKey) -> Result<Arc<CertifiedKey>, TlsError> {
    let mut pkcs8 = keys::secret_key_to_pkcs8(secret_key);
    let signer = rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(&pkcs8[..]));
    // ring keeps its own copy; do not leave ours lying on the stack.
    pkcs8.fill(0);
    std::hint::black_box(&pkcs8);
    let signer = signer?;
    let spki = public_key_to_spki(&secret_key.public());
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(spki.to_vec())],
        signer,
    )))
}

#[cfg(test)]
mod tests;
