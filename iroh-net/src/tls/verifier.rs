//! The two rustls verifiers: the client's check of the server's raw key, and the server's check of the client's.
//!
//! Neither consults a certificate authority. A raw public key (RFC 7250) is the peer's identity: the client
//! accepts the server only if its key is the [`NodeId`] it dialled; the server accepts any client that proves
//! a valid ed25519 key and lets the application read that key afterwards. Handshake signatures are checked
//! with ed25519 only, and only in TLS 1.3 (the configs never enable TLS 1.2).

use iroh_base::{NodeId, SIGNATURE_LENGTH, Signature};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, PeerMisbehaved,
    SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};

use super::{keys::public_key_from_spki, node_id_from_server_name};

/// The only signature scheme either side accepts.
const SCHEMES: [SignatureScheme; 1] = [SignatureScheme::ED25519];

/// Verifies, on the client, that the server holds the key of the node we dialled.
#[derive(Debug)]
pub(super) struct ServerKeyVerifier {
    /// The node the client dialled.
    pub(super) expected: NodeId,
}

/// Verifies, on the server, that the client presented a valid ed25519 raw public key.
#[derive(Debug)]
pub(super) struct ClientKeyVerifier;

impl ServerCertVerifier for ServerKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // The name we handed to quinn must name the node this config was made for; a mismatch is a bug in the
        // caller, and failing here keeps the two from silently disagreeing about whom we are talking to.
        let named = match server_name {
            ServerName::DnsName(name) => node_id_from_server_name(name.as_ref()),
            _ => None,
        };
        if named != Some(self.expected) {
            return Err(Error::InvalidCertificate(CertificateError::NotValidForName));
        }
        let presented = raw_key(end_entity, intermediates)?;
        if presented != self.expected {
            tracing::debug!(
                expected = %self.expected.fmt_short(),
                presented = %presented.fmt_short(),
                "server proved a different node id than the one dialled"
            );
            // Sends the access_denied alert: the key is well-formed but not the one we want.
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_ed25519(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for ClientKeyVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        raw_key(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_ed25519(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// The key a peer presented: exactly one entry, the canonical SPKI of a valid ed25519 key.
///
/// RFC 7250 section 3: "the Certificate payload [...] contains a single [...] SubjectPublicKeyInfo";
/// there is nothing a raw key could chain to, so any further entry is malformed.
fn raw_key(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<NodeId, Error> {
    if !intermediates.is_empty() {
        return Err(Error::InvalidCertificate(CertificateError::BadEncoding));
    }
    public_key_from_spki(end_entity.as_ref())
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))
}

/// Checks a TLS 1.3 CertificateVerify signature: ed25519 by the presented key, nothing else.
fn verify_ed25519(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        // rustls already refuses schemes we did not list; this keeps the guarantee local.
        return Err(Error::PeerMisbehaved(
            PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    let key = raw_key(cert, &[])?;
    let signature: &[u8; SIGNATURE_LENGTH] = dss
        .signature()
        .try_into()
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadSignature))?;
    key.verify(message, &Signature::from_bytes(signature))
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadSignature))?;
    Ok(HandshakeSignatureValid::assertion())
}

fn tls12_refused() -> Error {
    Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered)
}
