//! TLS for the relay listener: certificate and key from PEM files, a generated self-signed certificate, or a
//! ready rustls configuration. Always rustls with the ring provider and its safe default protocol versions.

use std::{path::PathBuf, sync::Arc};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};

use super::ServerError;

/// How the relay listener gets its TLS certificate. Without TLS (`ServerConfig::tls` of `None`) the relay
/// speaks plain HTTP, which is meant for development only.
#[derive(Clone)]
#[non_exhaustive]
pub enum TlsConfig {
    /// Generate a self-signed certificate at startup covering `hostnames` (DNS names or IP addresses).
    /// Clients must be told to trust it, see `Server::certificates`. For tests and trials.
    SelfSigned {
        /// Names the certificate covers; the first one is used in `Server::relay_url`.
        hostnames: Vec<String>,
    },
    /// Load a certificate chain and its private key (PKCS#8, PKCS#1 or SEC1) from PEM files.
    Files {
        /// The certificate chain, leaf first.
        cert_path: PathBuf,
        /// The private key of the leaf certificate.
        key_path: PathBuf,
    },
    /// Use this rustls configuration as is.
    Rustls(Arc<rustls::ServerConfig>),
}

impl TlsConfig {
    /// A self-signed certificate for `localhost` and `127.0.0.1`, as used by tests.
    pub fn self_signed_localhost() -> Self {
        Self::SelfSigned {
            hostnames: vec!["localhost".into(), "127.0.0.1".into()],
        }
    }
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SelfSigned { hostnames } => f
                .debug_struct("SelfSigned")
                .field("hostnames", hostnames)
                .finish(),
            Self::Files {
                cert_path,
                key_path,
            } => f
                .debug_struct("Files")
                .field("cert_path", cert_path)
                .field("key_path", key_path)
                .finish(),
            Self::Rustls(_) => f.write_str("Rustls(..)"),
        }
    }
}

/// A TLS setup ready to accept connections.
pub(crate) struct Tls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    /// The certificate chain served, when known.
    pub(crate) certificates: Vec<CertificateDer<'static>>,
    /// The host name to put in the relay URL, when the certificate says.
    pub(crate) hostname: Option<String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("certificates", &self.certificates.len())
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// Why the TLS setup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The self-signed certificate could not be generated.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be read or holds no valid PEM.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate found in {0}")]
    NoCertificate(PathBuf),
    /// rustls refused the certificate, the key or the protocol versions.
    #[error("certificate or key rejected: {0}")]
    Rejected(#[from] rustls::Error),
}

/// Builds the rustls configuration for `config`.
pub(crate) fn build(config: &TlsConfig) -> Result<Tls, ServerError> {
    match config {
        TlsConfig::SelfSigned { hostnames } => {
            let certified =
                rcgen::generate_simple_self_signed(hostnames.clone()).map_err(TlsError::from)?;
            let cert = certified.cert.der().clone();
            let key =
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
            let certificates = vec![cert];
            Ok(Tls {
                acceptor: acceptor(certificates.clone(), key)?,
                certificates,
                hostname: hostnames.first().cloned(),
            })
        }
        TlsConfig::Files {
            cert_path,
            key_path,
        } => {
            let file_error = |path: &PathBuf| {
                let path = path.clone();
                move |source| TlsError::Read { path, source }
            };
            let certificates = CertificateDer::pem_file_iter(cert_path)
                .map_err(file_error(cert_path))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(file_error(cert_path))?;
            if certificates.is_empty() {
                return Err(TlsError::NoCertificate(cert_path.clone()).into());
            }
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(file_error(key_path))?;
            Ok(Tls {
                acceptor: acceptor(certificates.clone(), key)?,
                certificates,
                hostname: None,
            })
        }
        TlsConfig::Rustls(config) => Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::clone(config)),
            certificates: Vec::new(),
            hostname: None,
        }),
    }
}

fn acceptor(
    certificates: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::from)?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(TlsError::from)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_and_files() {
        let tls = build(&TlsConfig::self_signed_localhost()).unwrap();
        assert_eq!(tls.certificates.len(), 1);
        assert_eq!(tls.hostname.as_deref(), Some("localhost"));

        let certified = rcgen::generate_simple_self_signed(vec!["relay.test".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!("iroh-relay-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, certified.cert.pem()).unwrap();
        std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();
        let tls = build(&TlsConfig::Files {
            cert_path: cert_path.clone(),
            key_path: key_path.clone(),
        })
        .unwrap();
        assert_eq!(tls.certificates.len(), 1);
        assert_eq!(&tls.certificates[0], certified.cert.der());

        // A key file holding no key, and a missing file, are errors that name the file.
        let err = build(&TlsConfig::Files {
            cert_path: cert_path.clone(),
            key_path: cert_path.clone(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("cert.pem"), "{err}");
        let err = build(&TlsConfig::Files {
            cert_path: dir.join("missing.pem"),
            key_path,
        })
        .unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
