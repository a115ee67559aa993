//! Ed25519 keys: [`SecretKey`], [`PublicKey`] (also known as [`NodeId`]) and [`Signature`].

use std::{fmt, hash::Hash, str::FromStr};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::encoding::{HEX, Z_BASE_32, deserialize_array, deserialize_from_str, serialize_array};

/// Length of a public key in bytes.
pub const PUBLIC_KEY_LENGTH: usize = 32;
/// Length of a secret key in bytes.
pub const SECRET_KEY_LENGTH: usize = 32;
/// Length of a signature in bytes.
pub const SIGNATURE_LENGTH: usize = 64;

/// Length of a 32-byte value in z-base-32 (`ceil(256 / 5)`).
const ZBASE32_KEY_CHARS: usize = 52;
/// Length of a 32-byte value in hex.
const HEX_KEY_CHARS: usize = 64;
/// How many characters of the z-base-32 form [`PublicKey::fmt_short`] shows.
const SHORT_CHARS: usize = 10;

/// The identity of a node: an ed25519 public key.
///
/// Displayed as 52 characters of z-base-32; [`FromStr`] also accepts 64 hex digits. Only valid curve points
/// can be constructed, so holding a `PublicKey` means its bytes decode.
///
/// ```
/// use iroh_base::{PublicKey, SecretKey};
///
/// let key = SecretKey::from_bytes(&[7u8; 32]).public();
/// let text = key.to_string();
/// assert_eq!(text.len(), 52);
/// assert_eq!(text.parse::<PublicKey>()?, key);
/// // Hex is accepted too.
/// let hex: String = key.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
/// assert_eq!(hex.parse::<PublicKey>()?, key);
/// println!("connected to {}", key.fmt_short());
/// # Ok::<(), iroh_base::KeyParsingError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; PUBLIC_KEY_LENGTH]);

/// A node's identifier is its public key.
pub type NodeId = PublicKey;

/// Why a key or signature could not be read from bytes or text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyParsingError {
    /// The input had a length that no encoding of this value has.
    #[error("wrong length: {len} (expected {expected})")]
    WrongLength {
        /// The length found (bytes for binary input, characters for text).
        len: usize,
        /// The accepted lengths, for the message.
        expected: &'static str,
    },
    /// The text had the right length but a character outside the encoding's alphabet.
    #[error("invalid character at position {position}")]
    InvalidCharacter {
        /// Zero-based position of the first bad character.
        position: usize,
    },
    /// The bytes are not a valid ed25519 public key (not a point on the curve).
    #[error("not a valid ed25519 public key")]
    InvalidKey,
}

/// A signature failed to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid signature")]
pub struct SignatureError;

impl PublicKey {
    /// Reads a public key from its 32 bytes, checking that they encode a curve point.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LENGTH]) -> Result<Self, KeyParsingError> {
        VerifyingKey::from_bytes(bytes).map_err(|_| KeyParsingError::InvalidKey)?;
        Ok(Self(*bytes))
    }

    /// Reads a public key from a slice that must be exactly 32 bytes long.
    pub fn try_from_slice(bytes: &[u8]) -> Result<Self, KeyParsingError> {
        let bytes: &[u8; PUBLIC_KEY_LENGTH] =
            bytes.try_into().map_err(|_| KeyParsingError::WrongLength {
                len: bytes.len(),
                expected: "32 bytes",
            })?;
        Self::from_bytes(bytes)
    }

    /// The 32 bytes of the key.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LENGTH] {
        &self.0
    }

    /// Verifies `signature` over `message`, rejecting weak keys and malleable signatures
    /// (`verify_strict` in ed25519-dalek terms).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        let key = self.verifying_key().map_err(|_| SignatureError)?;
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(message, &signature)
            .map_err(|_| SignatureError)
    }

    /// The 32 bytes a key's text form (52 z-base-32 or 64 hex characters) stands for, **without**
    /// checking that they are a valid key: for looking keys up by their bytes on a hot path (a discovery
    /// server's DNS answers) where only keys validated earlier can match. Use [`FromStr`] for a key.
    pub fn decode_unchecked(text: &str) -> Result<[u8; PUBLIC_KEY_LENGTH], KeyParsingError> {
        decode_32(text)
    }

    /// A short, human-friendly prefix of the z-base-32 form, for logs: enough to tell nodes apart at a
    /// glance, not enough to identify one securely.
    pub fn fmt_short(&self) -> String {
        let mut text = self.to_string();
        text.truncate(SHORT_CHARS);
        text
    }

    /// The key as the X25519 public key of the same secret (birational map from Edwards to Montgomery form).
    pub(crate) fn to_x25519_bytes(self) -> Result<[u8; 32], KeyParsingError> {
        Ok(self.verifying_key()?.to_montgomery().to_bytes())
    }

    fn verifying_key(&self) -> Result<VerifyingKey, KeyParsingError> {
        // Construction validated the bytes, so this succeeds; it is kept fallible to avoid a panic path.
        VerifyingKey::from_bytes(&self.0).map_err(|_| KeyParsingError::InvalidKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Z_BASE_32.encode(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyParsingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(&decode_32(s)?)
    }
}

impl TryFrom<&[u8]> for PublicKey {
    type Error = KeyParsingError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        Self::try_from_slice(bytes)
    }
}

impl TryFrom<[u8; PUBLIC_KEY_LENGTH]> for PublicKey {
    type Error = KeyParsingError;

    fn try_from(bytes: [u8; PUBLIC_KEY_LENGTH]) -> Result<Self, Self::Error> {
        Self::from_bytes(&bytes)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serialize_array(&self.0, serializer)
        }
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserialize_from_str(deserializer)
        } else {
            let bytes = deserialize_array(deserializer)?;
            Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
        }
    }
}

/// Decodes 32 bytes from z-base-32 (52 characters) or hex (64 characters).
fn decode_32(s: &str) -> Result<[u8; 32], KeyParsingError> {
    let encoding = match s.len() {
        ZBASE32_KEY_CHARS => &*Z_BASE_32,
        HEX_KEY_CHARS => &HEX,
        len => {
            return Err(KeyParsingError::WrongLength {
                len,
                expected: "52 z-base-32 or 64 hex characters",
            });
        }
    };
    let mut out = [0u8; 32];
    match encoding.decode_mut(s.as_bytes(), &mut out) {
        Ok(32) => Ok(out),
        Ok(_) => Err(KeyParsingError::WrongLength {
            len: s.len(),
            expected: "52 z-base-32 or 64 hex characters",
        }),
        Err(partial) => Err(match partial.error.kind {
            data_encoding::DecodeKind::Length => KeyParsingError::WrongLength {
                len: s.len(),
                expected: "52 z-base-32 or 64 hex characters",
            },
            // Symbol, Trailing (non-zero unused bits in the last character) and Padding are all characters
            // that no canonical encoding would contain.
            _ => KeyParsingError::InvalidCharacter {
                position: partial.error.position,
            },
        }),
    }
}

/// A node's ed25519 secret key. It signs, and derives the [`PublicKey`] that is the node's identity.
///
/// `Debug` never shows the key. `Display` and serde do, in the same encodings as [`PublicKey`], so that it
/// can be stored in a configuration file; treat that text as the secret it is. The key material is zeroed
/// when dropped.
///
/// ```
/// use iroh_base::SecretKey;
///
/// let secret = SecretKey::generate();
/// let signature = secret.sign(b"hello");
/// assert!(secret.public().verify(b"hello", &signature).is_ok());
/// assert!(secret.public().verify(b"hellp", &signature).is_err());
/// assert_eq!(format!("{secret:?}"), "SecretKey(..)");
/// ```
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A new random key from the operating system's secure random source.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// The key with the given 32 secret bytes (any 32 bytes make a valid key).
    pub fn from_bytes(bytes: &[u8; SECRET_KEY_LENGTH]) -> Self {
        Self(SigningKey::from_bytes(bytes))
    }

    /// The 32 secret bytes.
    pub fn to_bytes(&self) -> [u8; SECRET_KEY_LENGTH] {
        self.0.to_bytes()
    }

    /// The public half: the node's identity.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }

    /// The X25519 secret scalar of the same key, for Diffie-Hellman with another node's converted key.
    pub(crate) fn to_x25519_bytes(&self) -> [u8; 32] {
        self.0.to_scalar_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Z_BASE_32.encode(self.0.as_bytes()))
    }
}

impl FromStr for SecretKey {
    type Err = KeyParsingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::from_bytes(&decode_32(s)?))
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        // ed25519-dalek compares signing keys in constant time.
        self.0 == other.0
    }
}

impl Eq for SecretKey {}

impl Serialize for SecretKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serialize_array(self.0.as_bytes(), serializer)
        }
    }
}

impl<'de> Deserialize<'de> for SecretKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserialize_from_str(deserializer)
        } else {
            Ok(Self::from_bytes(&deserialize_array(deserializer)?))
        }
    }
}

/// An ed25519 signature: 64 bytes, displayed as 128 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; SIGNATURE_LENGTH]);

impl Signature {
    /// The signature with these 64 bytes. Whether they are a valid signature is decided by
    /// [`PublicKey::verify`].
    pub fn from_bytes(bytes: &[u8; SIGNATURE_LENGTH]) -> Self {
        Self(*bytes)
    }

    /// Reads a signature from a slice that must be exactly 64 bytes long.
    pub fn try_from_slice(bytes: &[u8]) -> Result<Self, KeyParsingError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| KeyParsingError::WrongLength {
                len: bytes.len(),
                expected: "64 bytes",
            })
    }

    /// The 64 bytes.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LENGTH] {
        self.0
    }

    /// The 64 bytes, borrowed.
    pub fn as_bytes(&self) -> &[u8; SIGNATURE_LENGTH] {
        &self.0
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&HEX.encode(&self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl FromStr for Signature {
    type Err = KeyParsingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 2 * SIGNATURE_LENGTH {
            return Err(KeyParsingError::WrongLength {
                len: s.len(),
                expected: "128 hex characters",
            });
        }
        let mut out = [0u8; SIGNATURE_LENGTH];
        HEX.decode_mut(s.as_bytes(), &mut out).map_err(|partial| {
            KeyParsingError::InvalidCharacter {
                position: partial.error.position,
            }
        })?;
        Ok(Self(out))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serialize_array(&self.0, serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserialize_from_str(deserializer)
        } else {
            Ok(Self(deserialize_array(deserializer)?))
        }
    }
}

#[cfg(test)]
mod tests;
