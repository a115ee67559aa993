//! Who may use the relay: node access control (checked after the login signature is verified) and the shared
//! bearer token (checked on the HTTP upgrade request, before anything else happens).

use std::collections::HashSet;

use http::HeaderValue;
use iroh_base::NodeId;
use subtle::ConstantTimeEq;

/// Which nodes may log in. Applied after the client proved its [`NodeId`] with the login signature; a refused
/// node gets `ServerDenied { reason: NotAllowed }` and is disconnected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessControl {
    /// Every node (the default).
    #[default]
    Everyone,
    /// Only these nodes.
    Allowlist(HashSet<NodeId>),
    /// Every node except these.
    Denylist(HashSet<NodeId>),
}

impl AccessControl {
    /// Whether `node` may log in.
    pub fn is_allowed(&self, node: &NodeId) -> bool {
        match self {
            Self::Everyone => true,
            Self::Allowlist(nodes) => nodes.contains(node),
            Self::Denylist(nodes) => !nodes.contains(node),
        }
    }
}

/// Whether an `Authorization` header carries `Bearer <expected>`.
///
/// The scheme name is matched case-insensitively (RFC 9110 section 11.1: "It uses a case-insensitive token to
/// identify the authentication scheme"); the token is compared in constant time, so the time taken does not
/// tell an attacker how much of a guess was right. (Its length can still show; tokens should be long random
/// strings anyway.)
pub(crate) fn bearer_matches(expected: &str, header: Option<&HeaderValue>) -> bool {
    let Some(value) = header else {
        return false;
    };
    let value = value.as_bytes();
    const SCHEME: &[u8] = b"bearer ";
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return false;
    }
    let token = value[SCHEME.len()..].trim_ascii();
    bool::from(token.ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        let a = iroh_base::SecretKey::from_bytes(&[1; 32]).public();
        let b = iroh_base::SecretKey::from_bytes(&[2; 32]).public();
        assert!(AccessControl::Everyone.is_allowed(&a));
        let allow = AccessControl::Allowlist([a].into());
        assert!(allow.is_allowed(&a));
        assert!(!allow.is_allowed(&b));
        let deny = AccessControl::Denylist([a].into());
        assert!(!deny.is_allowed(&a));
        assert!(deny.is_allowed(&b));
    }

    #[test]
    fn bearer() {
        let check = |v: &str| bearer_matches("s3cret", Some(&HeaderValue::from_str(v).unwrap()));
        assert!(check("Bearer s3cret"));
        assert!(check("bearer s3cret"));
        assert!(check("BEARER   s3cret "));
        assert!(!check("Bearer s3cre"));
        assert!(!check("Bearer s3cret2"));
        assert!(!check("Basic s3cret"));
        assert!(!check("s3cret"));
        assert!(!check("Bearer"));
        assert!(!bearer_matches("s3cret", None));
    }
}
