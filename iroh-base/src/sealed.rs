//! Sealing small messages between two nodes with keys derived from their node keys.
//!
//! Holepunching messages (ping, pong, call-me-maybe) must be readable and forgeable only by the two nodes
//! involved. Each node's ed25519 key converts to an X25519 key (Edwards to Montgomery form), the two
//! derive one shared key by Diffie-Hellman, and each message is sealed with `crypto_box`'s `ChaChaBox`
//! (XChaCha20-Poly1305) under a fresh random 24-byte nonce. A sealed message is `nonce (24) || ciphertext || tag (16)`.
//!
//! The Diffie-Hellman step costs a scalar multiplication, so keep the [`SharedSecret`] of each peer rather
//! than deriving it per message.
//!
//! ```
//! use iroh_base::SecretKey;
//!
//! let alice = SecretKey::generate();
//! let bob = SecretKey::generate();
//! let sealed = alice.shared_secret(&bob.public())?.seal(b"ping");
//! let opened = bob.shared_secret(&alice.public())?.open(&sealed)?;
//! assert_eq!(opened, b"ping");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use crypto_box::{
    ChaChaBox,
    aead::{Aead, AeadCore, OsRng, generic_array::GenericArray},
};

use crate::{KeyParsingError, PublicKey, SecretKey};

/// Length of the random nonce at the start of a sealed message.
pub const NONCE_LENGTH: usize = 24;
/// Length of the authentication tag a sealed message carries.
pub const TAG_LENGTH: usize = 16;
/// How many bytes sealing adds to a message.
pub const SEAL_OVERHEAD: usize = NONCE_LENGTH + TAG_LENGTH;

/// The key two nodes share, derived from one's secret key and the other's public key.
///
/// Either side derives the same secret: `a.shared_secret(&b.public())` opens what
/// `b.shared_secret(&a.public())` seals, and the reverse. Share one between tasks behind an `Arc`.
pub struct SharedSecret(ChaChaBox);

/// A sealed message did not open: it is too short, was sealed under another key, or was altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Shorter than a nonce and a tag.
    #[error("sealed message too short: {0} bytes")]
    TooShort(usize),
    /// Authentication failed: not sealed by the other node for us, or modified in transit.
    #[error("sealed message failed authentication")]
    Authentication,
}

impl SecretKey {
    /// The secret shared with the node whose key is `their_public`.
    pub fn shared_secret(&self, their_public: &PublicKey) -> Result<SharedSecret, KeyParsingError> {
        let ours = crypto_box::SecretKey::from(self.to_x25519_bytes());
        let theirs = crypto_box::PublicKey::from(their_public.to_x25519_bytes()?);
        Ok(SharedSecret(ChaChaBox::new(&theirs, &ours)))
    }
}

impl SharedSecret {
    /// Seals `plaintext`: returns `nonce || ciphertext || tag`, [`SEAL_OVERHEAD`] bytes longer.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(plaintext, &mut out);
        out
    }

    /// Appends the sealed form of `plaintext` to `out`.
    pub fn seal_into(&self, plaintext: &[u8], out: &mut Vec<u8>) {
        let nonce = ChaChaBox::generate_nonce(&mut OsRng);
        out.extend_from_slice(&nonce);
        // Encryption with an in-memory buffer fails only if the message exceeds XChaCha20's 256 GiB limit.
        match self.0.encrypt(&nonce, plaintext) {
            Ok(ciphertext) => out.extend_from_slice(&ciphertext),
            Err(_) => unreachable!("crypto_box refuses only messages beyond 256 GiB"),
        }
    }

    /// Opens what the other node sealed with [`SharedSecret::seal`].
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenError::TooShort(sealed.len()));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LENGTH);
        self.0
            .decrypt(GenericArray::from_slice(nonce), ciphertext)
            .map_err(|_| OpenError::Authentication)
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_bytes(&[n; 32])
    }

    #[test]
    fn both_sides_derive_the_same_secret() {
        let (a, b) = (key(1), key(2));
        let ab = a.shared_secret(&b.public()).unwrap();
        let ba = b.shared_secret(&a.public()).unwrap();
        for msg in [&b""[..], b"x", &[0xaa; 1500]] {
            let sealed = ab.seal(msg);
            assert_eq!(sealed.len(), msg.len() + SEAL_OVERHEAD);
            assert_eq!(ba.open(&sealed).unwrap(), msg);
            assert_eq!(ab.open(&ba.seal(msg)).unwrap(), msg);
        }
    }

    #[test]
    fn nonces_are_fresh() {
        let s = key(1).shared_secret(&key(2).public()).unwrap();
        assert_ne!(s.seal(b"same"), s.seal(b"same"));
    }

    #[test]
    fn a_third_node_cannot_open_or_forge() {
        let (a, b, c) = (key(1), key(2), key(3));
        let sealed = a.shared_secret(&b.public()).unwrap().seal(b"secret");
        let c_as_b = c.shared_secret(&a.public()).unwrap();
        assert_eq!(c_as_b.open(&sealed), Err(OpenError::Authentication));
        // c seals to b pretending to be a: b (deriving with a's key) rejects it.
        let forged = c.shared_secret(&b.public()).unwrap().seal(b"forged");
        let b_from_a = b.shared_secret(&a.public()).unwrap();
        assert_eq!(b_from_a.open(&forged), Err(OpenError::Authentication));
    }

    #[test]
    fn tampering_and_truncation_are_rejected() {
        let (a, b) = (key(1), key(2));
        let sealed = a.shared_secret(&b.public()).unwrap().seal(b"hello");
        let opener = b.shared_secret(&a.public()).unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                opener.open(&bad),
                Err(OpenError::Authentication),
                "bit flip at {i}"
            );
        }
        for len in 0..SEAL_OVERHEAD {
            assert_eq!(opener.open(&sealed[..len]), Err(OpenError::TooShort(len)));
        }
        assert_eq!(
            opener.open(&sealed[..sealed.len() - 1]),
            Err(OpenError::Authentication)
        );
    }
}
