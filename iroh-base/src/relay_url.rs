//! [`RelayUrl`]: the validated address of a relay server.

use std::{fmt, ops::Deref, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

use crate::encoding::deserialize_from_str;

/// The URL of a relay server: `http` or `https`, with a host.
///
/// ```
/// use iroh_base::{RelayUrl, RelayUrlParseError};
///
/// let url: RelayUrl = "https://relay.example.org".parse()?;
/// assert_eq!(url.to_string(), "https://relay.example.org/");
/// assert!(matches!(
///     "ftp://relay.example.org".parse::<RelayUrl>(),
///     Err(RelayUrlParseError::UnsupportedScheme(_))
/// ));
/// # Ok::<(), RelayUrlParseError>(())
/// ```
///
/// The URL is kept in the normal form of the `url` crate (lower-case scheme and host, a path of at least
/// `/`), so two spellings of one relay compare equal.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelayUrl(Url);

/// Why a string or URL is not a relay URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayUrlParseError {
    /// Not a URL at all.
    #[error("invalid URL: {0}")]
    InvalidUrl(#[from] url::ParseError),
    /// A URL whose scheme is not `http` or `https`.
    #[error("relay URLs must be http or https, not {0:?}")]
    UnsupportedScheme(String),
    /// A URL without a host, such as `http:/path`.
    #[error("relay URL has no host")]
    MissingHost,
    /// A URL with a user name or password, which relays do not use and which would leak into logs.
    #[error("relay URL must not contain credentials")]
    HasCredentials,
}

impl RelayUrl {
    /// The underlying [`Url`].
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// Whether the relay is reached over TLS (`https`).
    pub fn is_tls(&self) -> bool {
        self.0.scheme() == "https"
    }
}

impl TryFrom<Url> for RelayUrl {
    type Error = RelayUrlParseError;

    fn try_from(url: Url) -> Result<Self, Self::Error> {
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(RelayUrlParseError::UnsupportedScheme(other.to_owned())),
        }
        if url.host().is_none() {
            return Err(RelayUrlParseError::MissingHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RelayUrlParseError::HasCredentials);
        }
        Ok(Self(url))
    }
}

impl From<RelayUrl> for Url {
    fn from(url: RelayUrl) -> Self {
        url.0
    }
}

impl FromStr for RelayUrl {
    type Err = RelayUrlParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(Url::parse(s)?)
    }
}

impl Deref for RelayUrl {
    type Target = Url;

    fn deref(&self) -> &Url {
        &self.0
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayUrl({})", self.0)
    }
}

/// Serialized as its string in every format: the string is also the most compact encoding.
impl Serialize for RelayUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for RelayUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_from_str(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_and_https_and_normalizes() {
        let a: RelayUrl = "HTTPS://Relay.Example.ORG".parse().unwrap();
        let b: RelayUrl = "https://relay.example.org/".parse().unwrap();
        assert_eq!(a, b);
        assert!(a.is_tls());
        let plain: RelayUrl = "http://127.0.0.1:3340".parse().unwrap();
        assert!(!plain.is_tls());
        assert_eq!(plain.port(), Some(3340));
        let v6: RelayUrl = "http://[::1]:3340/".parse().unwrap();
        assert_eq!(v6.to_string().parse::<RelayUrl>().unwrap(), v6);
    }

    #[test]
    fn each_fault_has_its_error() {
        assert!(matches!(
            "not a url".parse::<RelayUrl>(),
            Err(RelayUrlParseError::InvalidUrl(_))
        ));
        assert_eq!(
            "ftp://relay.example.org".parse::<RelayUrl>(),
            Err(RelayUrlParseError::UnsupportedScheme("ftp".into()))
        );
        assert_eq!(
            "wss://relay.example.org".parse::<RelayUrl>(),
            Err(RelayUrlParseError::UnsupportedScheme("wss".into()))
        );
        assert_eq!(
            "https://user:pw@relay.example.org".parse::<RelayUrl>(),
            Err(RelayUrlParseError::HasCredentials)
        );
        // The url crate already refuses http(s) URLs without a host; a `file:` URL has none either.
        assert!("https://".parse::<RelayUrl>().is_err());
        let no_host = Url::parse("data:text/plain,hi").unwrap();
        assert_eq!(
            RelayUrl::try_from(no_host),
            Err(RelayUrlParseError::UnsupportedScheme("data".into()))
        );
    }

    #[test]
    fn serde_is_the_string() {
        let url: RelayUrl = "https://relay.example.org:8443/x".parse().unwrap();
        let json = serde_json::to_string(&url).unwrap();
        assert_eq!(json, "\"https://relay.example.org:8443/x\"");
        assert_eq!(serde_json::from_str::<RelayUrl>(&json).unwrap(), url);
        assert!(serde_json::from_str::<RelayUrl>("\"ftp://x\"").is_err());
        let bytes = postcard::to_stdvec(&url).unwrap();
        assert_eq!(postcard::from_bytes::<RelayUrl>(&bytes).unwrap(), url);
    }
}
