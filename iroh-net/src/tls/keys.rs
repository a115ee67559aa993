//! The two DER encodings of ed25519 keys that TLS needs (RFC 8410), written and read by hand.
//!
//! Both are fixed-length: a constant ASN.1 prefix followed by the 32 key bytes. Reading compares the whole
//! prefix and the total length, so nothing but the one canonical encoding is accepted; there is no general
//! ASN.1 parser to get wrong.

use iroh_base::{KeyParsingError, PUBLIC_KEY_LENGTH, PublicKey, SECRET_KEY_LENGTH, SecretKey};

/// The DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410 section 4):
///
/// ```text
/// 30 2a                 SEQUENCE, 42 bytes
///    30 05              SEQUENCE, 5 bytes (AlgorithmIdentifier)
///       06 03 2b 65 70  OBJECT IDENTIFIER 1.3.101.112 (id-Ed25519), no parameters
///    03 21 00           BIT STRING, 33 bytes, 0 unused bits, then the 32 key bytes
/// ```
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Length of an ed25519 SubjectPublicKeyInfo in DER.
pub const SPKI_LENGTH: usize = SPKI_PREFIX.len() + PUBLIC_KEY_LENGTH;

/// The DER prefix of an ed25519 private key in PKCS#8 version 1 (RFC 8410 section 7, RFC 5958):
///
/// ```text
/// 30 2e                 SEQUENCE, 46 bytes (OneAsymmetricKey)
///    02 01 00           INTEGER 0 (version 1)
///    30 05 06 03 2b 65 70   AlgorithmIdentifier id-Ed25519
///    04 22              OCTET STRING, 34 bytes (privateKey), holding
///       04 20           OCTET STRING, 32 bytes: the CurvePrivateKey (the seed)
/// ```
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Length of an ed25519 PKCS#8 v1 private key in DER.
pub(crate) const PKCS8_LENGTH: usize = PKCS8_PREFIX.len() + SECRET_KEY_LENGTH;

/// A SubjectPublicKeyInfo that is not the DER encoding of a valid ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpkiError {
    /// Not 44 bytes long: not an ed25519 key, or not canonical DER.
    #[error("SubjectPublicKeyInfo has {0} bytes, an ed25519 one has 44")]
    WrongLength(usize),
    /// The ASN.1 structure or the algorithm identifier is not that of an ed25519 key.
    #[error("SubjectPublicKeyInfo is not an ed25519 key")]
    NotEd25519,
    /// The 32 key bytes are not a point on the curve.
    #[error("invalid ed25519 public key: {0}")]
    InvalidKey(#[from] KeyParsingError),
}

/// The DER SubjectPublicKeyInfo of `key`: what a raw-public-key TLS peer sends instead of a certificate
/// (RFC 7250 section 3).
pub fn public_key_to_spki(key: &PublicKey) -> [u8; SPKI_LENGTH] {
    let mut out = [0u8; SPKI_LENGTH];
    let (prefix, body) = out.split_at_mut(SPKI_PREFIX.len());
    prefix.copy_from_slice(&SPKI_PREFIX);
    body.copy_from_slice(key.as_bytes());
    out
}

/// Reads the public key out of a DER SubjectPublicKeyInfo, accepting only the canonical ed25519 encoding
/// of a valid curve point.
pub fn public_key_from_spki(der: &[u8]) -> Result<PublicKey, SpkiError> {
    if der.len() != SPKI_LENGTH {
        return Err(SpkiError::WrongLength(der.len()));
    }
    let (prefix, key) = der.split_at(SPKI_PREFIX.len());
    if prefix != SPKI_PREFIX {
        return Err(SpkiError::NotEd25519);
    }
    Ok(PublicKey::try_from_slice(key)?)
}

/// The secret key as PKCS#8 v1 DER, the form ring (through rustls) loads ed25519 keys from.
///
/// The returned buffer holds the secret: callers overwrite it once the key is loaded.
pub(crate) fn secret_key_to_pkcs8(key: &SecretKey) -> [u8; PKCS8_LENGTH] {
    let mut out = [0u8; PKCS8_LENGTH];
    let (prefix, body) = out.split_at_mut(PKCS8_PREFIX.len());
    prefix.copy_from_slice(&PKCS8_PREFIX);
    body.copy_from_slice(&key.to_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_round_trips_and_is_strict() {
        let key = SecretKey::from_bytes(&[5; 32]).public();
        let der = public_key_to_spki(&key);
        assert_eq!(public_key_from_spki(&der), Ok(key));

        assert_eq!(
            public_key_from_spki(&der[..43]),
            Err(SpkiError::WrongLength(43))
        );
        let mut longer = der.to_vec();
        longer.push(0);
        assert_eq!(
            public_key_from_spki(&longer),
            Err(SpkiError::WrongLength(45))
        );
        for i in 0..SPKI_PREFIX.len() {
            let mut bad = der;
            bad[i] ^= 0x01;
            assert_eq!(
                public_key_from_spki(&bad),
                Err(SpkiError::NotEd25519),
                "byte {i}"
            );
        }
    }

    #[test]
    fn spki_rejects_points_off_the_curve() {
        // About half of all 32-byte strings are not the compressed form of a curve point; take the first.
        let bad_key = (0u8..=255)
            .map(|n| [n; 32])
            .find(|bytes| PublicKey::from_bytes(bytes).is_err())
            .unwrap();
        let mut der = [0u8; SPKI_LENGTH];
        der[..SPKI_PREFIX.len()].copy_from_slice(&SPKI_PREFIX);
        der[SPKI_PREFIX.len()..].copy_from_slice(&bad_key);
        assert!(matches!(
            public_key_from_spki(&der),
            Err(SpkiError::InvalidKey(_))
        ));
    }

    #[test]
    fn encodings_agree_with_rustls() {
        // Load our PKCS#8 through rustls / ring and ask it for the SPKI of the public half: it must equal ours.
        let secret = SecretKey::from_bytes(&[9; 32]);
        let pkcs8 = secret_key_to_pkcs8(&secret);
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(&pkcs8[..]);
        let signer = rustls::crypto::ring::sign::any_eddsa_type(&der).unwrap();
        let spki = signer.public_key().unwrap();
        assert_eq!(spki.as_ref(), public_key_to_spki(&secret.public()));
        assert_eq!(signer.algorithm(), rustls::SignatureAlgorithm::ED25519);
    }
}
