//! The TOML configuration file of the `iroh-relay` binary, turned into a [`ServerConfig`].
//!
//! Every key is optional except where noted; unknown keys are errors (so a typo does not silently fall back
//! to a default). Relative paths are taken from the directory of the configuration file. The crate README
//! documents each key and shows a complete example (`examples/relay.toml`):
//!
//! ```toml
//! relay_bind = "0.0.0.0:443"
//! stun_bind = "0.0.0.0:3478"
//! stun_alt_bind = "0.0.0.0:3479"
//! metrics_bind = "127.0.0.1:9090"
//!
//! [tls]
//! mode = "files"
//! cert_path = "cert.pem"
//! key_path = "key.pem"
//!
//! [access]
//! mode = "denylist"
//! nodes = ["ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6"]
//!
//! [limits]
//! rate_bytes_per_second = 2_000_000
//!
//! [discovery]
//! origin = "dns.example.org"
//! dns_bind = "0.0.0.0:53"
//! db_path = "records.redb"
//! ```

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use iroh_base::NodeId;
use serde::Deserialize;

use super::{
    AccessControl, Limits, RateLimit, ServerConfig, TlsConfig,
    discovery::{DiscoveryConfig, RequestRate},
};

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of this format.
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// `access.nodes` lists nodes while `access.mode` is `everyone`.
    #[error("access.nodes is set but access.mode is \"everyone\"")]
    NodesWithEveryone,
    /// `access.bearer_token` is empty.
    #[error("access.bearer_token must not be empty")]
    EmptyBearerToken,
    /// `limits.rate_burst_bytes` without `limits.rate_bytes_per_second`.
    #[error("limits.rate_burst_bytes needs limits.rate_bytes_per_second")]
    BurstWithoutRate,
    /// `relay = false` without a `[discovery]` section: the server would serve nothing.
    #[error("relay = false needs a [discovery] section (else the server serves nothing)")]
    NothingToServe,
    /// The `[discovery]` section cannot be used.
    #[error("invalid [discovery]: {0}")]
    Discovery(#[from] super::discovery::DiscoveryConfigError),
    /// A duration that is not a positive number of seconds, or longer than allowed.
    #[error("{key} must be a number of seconds more than 0 and at most {max_secs}, not {value}")]
    Duration {
        /// The key.
        key: &'static str,
        /// The value given.
        value: f64,
        /// The most allowed, in seconds.
        max_secs: u64,
    },
    /// The `[limits]` section cannot be used.
    #[error("invalid limits: {0}")]
    Limits(#[from] super::LimitsError),
}

/// The configuration file, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FileConfig {
    /// Where the relay listens (TCP). Default `0.0.0.0:443` with TLS, `0.0.0.0:80` without.
    pub relay_bind: Option<SocketAddr>,
    /// The host name clients use, shown in the relay URL at startup.
    pub hostname: Option<String>,
    /// Where STUN listens (UDP). No STUN if absent.
    pub stun_bind: Option<SocketAddr>,
    /// A second STUN socket (UDP), usually the STUN port plus one: clients that use this relay alone can
    /// then tell whether their NAT maps by destination (RFC 5780 OTHER-ADDRESS). None if absent.
    pub stun_alt_bind: Option<SocketAddr>,
    /// Where Prometheus metrics are served. No metrics if absent.
    pub metrics_bind: Option<SocketAddr>,
    /// Seconds to wait for connections to close at shutdown. Default 5.
    pub shutdown_timeout_secs: Option<f64>,
    /// TLS; plain HTTP if absent (development only).
    pub tls: Option<TlsSection>,
    /// Who may use the relay. Everyone if absent.
    #[serde(default)]
    pub access: AccessSection,
    /// Per-client limits.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Whether the relay protocol is served (`/relay`). Default true; false for a discovery-only server.
    pub relay: Option<bool>,
    /// The discovery service; none if absent.
    pub discovery: Option<DiscoverySection>,
}

/// The `[discovery]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DiscoverySection {
    /// The DNS zone records are served under (required), for example `dns.example.org`.
    pub origin: String,
    /// Where the authoritative DNS server listens (UDP and TCP). No DNS if absent (HTTP only).
    pub dns_bind: Option<SocketAddr>,
    /// The record database file. Records are kept in memory (lost on restart) if absent.
    pub db_path: Option<PathBuf>,
    /// Sustained publishes per second per client IP (IPv6: per /64). Default 2.
    pub publish_rate_per_second: Option<f64>,
    /// Publishes at once per client IP. Default 10.
    pub publish_burst: Option<u32>,
    /// Seconds after which a record not republished is evicted. Default 86400 (one day).
    pub evict_after_secs: Option<f64>,
    /// Seconds a record's timestamp may be ahead of the server's clock. Default 600.
    pub max_future_skew_secs: Option<f64>,
    /// Nodes whose DNS answers are kept in memory (about 200 bytes each). Default 1000000.
    pub dns_cache_records: Option<usize>,
}

impl DiscoverySection {
    fn into_config(self) -> Result<DiscoveryConfig, ConfigError> {
        let mut rate = RequestRate::default();
        if let Some(per_second) = self.publish_rate_per_second {
            rate.per_second = per_second;
        }
        if let Some(burst) = self.publish_burst {
            rate.burst = burst;
        }
        let mut config = DiscoveryConfig::new(self.origin, self.dns_bind).with_publish_rate(rate);
        config.db_path = self.db_path;
        if let Some(secs) = self.evict_after_secs {
            config.evict_after = seconds("discovery.evict_after_secs", secs)?;
        }
        if let Some(secs) = self.max_future_skew_secs {
            config.max_future_skew = seconds("discovery.max_future_skew_secs", secs)?;
        }
        if let Some(records) = self.dns_cache_records {
            config.dns_cache_records = records;
        }
        config.validate()?;
        Ok(config)
    }
}

/// The `[tls]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum TlsSection {
    /// `mode = "files"`: certificate chain and key from PEM files.
    Files {
        /// The certificate chain (PEM), leaf first.
        cert_path: PathBuf,
        /// The private key (PEM).
        key_path: PathBuf,
    },
    /// `mode = "self-signed"`: a certificate generated at each start.
    SelfSigned {
        /// The names it covers. Default `["localhost"]`.
        #[serde(default)]
        hostnames: Vec<String>,
    },
}

/// Access modes of the `[access]` table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AccessMode {
    /// Every node.
    #[default]
    Everyone,
    /// Only the listed nodes.
    Allowlist,
    /// Every node except the listed ones.
    Denylist,
}

/// The `[access]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AccessSection {
    /// `everyone` (default), `allowlist` or `denylist`.
    #[serde(default)]
    pub mode: AccessMode,
    /// Node ids (z-base-32 or hex) for the allowlist or denylist.
    #[serde(default)]
    pub nodes: Vec<NodeId>,
    /// A shared secret clients must send as `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
}

/// The `[limits]` table; absent keys keep the defaults of [`Limits`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LimitsSection {
    /// Sustained receive rate per client in bytes per second; no limit if absent.
    pub rate_bytes_per_second: Option<u64>,
    /// Burst in bytes (default: one second at the rate; at least one maximum-size frame).
    pub rate_burst_bytes: Option<u64>,
    /// Frames queued per client before drops. Default 256.
    pub send_queue_len: Option<usize>,
    /// Seconds one write to a client may take. Default 5.
    pub write_timeout_secs: Option<f64>,
    /// Seconds between keepalive pings. Default 30.
    pub keepalive_interval_secs: Option<f64>,
    /// Seconds of silence from a client before it is disconnected. Default 90.
    pub idle_timeout_secs: Option<f64>,
    /// Seconds for each of the TLS handshake, the upgrade request and the login. Default 10.
    pub handshake_timeout_secs: Option<f64>,
    /// The most clients at once. No cap if absent.
    pub max_clients: Option<usize>,
    /// Bytes queued per client before drops (at least 65,576). Default 4 MiB.
    pub send_queue_bytes: Option<usize>,
    /// The most connections in their handshake (accepted, not logged in) at once. Default 2,048.
    pub max_pending: Option<usize>,
    /// The most connections in their handshake from one IPv4 address or IPv6 /64. Default 64.
    pub max_pending_per_source: Option<usize>,
    /// STUN requests answered per second per source (IPv4 address or IPv6 /64); 0 for no limit.
    /// Default 20.
    pub stun_requests_per_second: Option<u32>,
    /// STUN requests a quiet source may send at once. Default twice the rate (40).
    pub stun_burst: Option<u32>,
}

impl FileConfig {
    /// Reads and parses `path`, resolving relative paths in it against its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text)?;
        if let (
            Some(dir),
            Some(TlsSection::Files {
                cert_path,
                key_path,
            }),
        ) = (path.parent(), config.tls.as_mut())
        {
            *cert_path = dir.join(&*cert_path);
            *key_path = dir.join(&*key_path);
        }
        if let (
            Some(dir),
            Some(DiscoverySection {
                db_path: Some(db), ..
            }),
        ) = (path.parent(), config.discovery.as_mut())
        {
            *db = dir.join(&*db);
        }
        Ok(config)
    }

    /// Parses the TOML text of a configuration file.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Ok(toml::from_str(text)?)
    }

    /// The server configuration this file describes.
    pub fn into_server_config(self) -> Result<ServerConfig, ConfigError> {
        let tls = self.tls.map(|tls| match tls {
            TlsSection::Files {
                cert_path,
                key_path,
            } => TlsConfig::Files {
                cert_path,
                key_path,
            },
            TlsSection::SelfSigned { hostnames } if hostnames.is_empty() => TlsConfig::SelfSigned {
                hostnames: vec!["localhost".into()],
            },
            TlsSection::SelfSigned { hostnames } => TlsConfig::SelfSigned { hostnames },
        });
        let default_port = if tls.is_some() { 443 } else { 80 };
        let relay_bind = self
            .relay_bind
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], default_port)));
        let nodes: HashSet<NodeId> = self.access.nodes.into_iter().collect();
        let access = match self.access.mode {
            AccessMode::Everyone if !nodes.is_empty() => {
                return Err(ConfigError::NodesWithEveryone);
            }
            AccessMode::Everyone => AccessControl::Everyone,
            AccessMode::Allowlist => AccessControl::Allowlist(nodes),
            AccessMode::Denylist => AccessControl::Denylist(nodes),
        };
        if self.access.bearer_token.as_deref() == Some("") {
            return Err(ConfigError::EmptyBearerToken);
        }
        let stun_rate_limit = self.limits.stun_rate_limit();
        let mut config = ServerConfig::new(relay_bind)
            .with_access(access)
            .with_stun_rate_limit(stun_rate_limit)
            .with_limits(self.limits.into_limits()?)
            .with_stun_bind(self.stun_bind)
            .with_stun_alt_bind(self.stun_alt_bind)
            .with_metrics_bind(self.metrics_bind);
        config.tls = tls;
        config.hostname = self.hostname;
        config.bearer_token = self.access.bearer_token;
        if let Some(secs) = self.shutdown_timeout_secs {
            config.shutdown_timeout = seconds("shutdown_timeout_secs", secs)?;
        }
        config.relay_enabled = self.relay.unwrap_or(true);
        config.discovery = self
            .discovery
            .map(DiscoverySection::into_config)
            .transpose()?;
        if !config.relay_enabled && config.discovery.is_none() {
            return Err(ConfigError::NothingToServe);
        }
        Ok(config)
    }
}

impl LimitsSection {
    fn stun_rate_limit(&self) -> Option<super::StunRateLimit> {
        let default = super::StunRateLimit::default();
        match self.stun_requests_per_second {
            Some(0) => None,
            rate => {
                let rate = rate.unwrap_or(default.requests_per_second);
                let burst = self.stun_burst.unwrap_or(rate.saturating_mul(2));
                Some(super::StunRateLimit::new(rate, burst))
            }
        }
    }

    fn into_limits(self) -> Result<Limits, ConfigError> {
        let mut limits = Limits::default();
        if let Some(rate) = self.rate_bytes_per_second {
            limits.rate_limit = Some(RateLimit::new(rate, self.rate_burst_bytes.unwrap_or(rate)));
        } else if self.rate_burst_bytes.is_some() {
            return Err(ConfigError::BurstWithoutRate);
        }
        if let Some(len) = self.send_queue_len {
            limits.send_queue_len = len;
        }
        for (name, value, slot) in [
            (
                "write_timeout_secs",
                self.write_timeout_secs,
                &mut limits.write_timeout,
            ),
            (
                "keepalive_interval_secs",
                self.keepalive_interval_secs,
                &mut limits.keepalive_interval,
            ),
            (
                "idle_timeout_secs",
                self.idle_timeout_secs,
                &mut limits.idle_timeout,
            ),
            (
                "handshake_timeout_secs",
                self.handshake_timeout_secs,
                &mut limits.handshake_timeout,
            ),
        ] {
            if let Some(secs) = value {
                *slot = seconds(name, secs)?;
            }
        }
        limits.max_clients = self.max_clients;
        for (value, slot) in [
            (self.send_queue_bytes, &mut limits.send_queue_bytes),
            (self.max_pending, &mut limits.max_pending),
            (
                self.max_pending_per_source,
                &mut limits.max_pending_per_source,
            ),
        ] {
            if let Some(value) = value {
                *slot = value;
            }
        }
        limits.validate()?;
        Ok(limits)
    }
}

/// The longest duration any key of the file may give: a year (the limits' own bound, a week, is checked
/// by [`Limits`](super::Limits) validation). Longer values are typos, and would overflow timers.
const MAX_FILE_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn seconds(key: &'static str, secs: f64) -> Result<Duration, ConfigError> {
    let max = if key.ends_with("_timeout_secs") || key.ends_with("_interval_secs") {
        super::MAX_LIMIT_DURATION
    } else {
        MAX_FILE_DURATION
    };
    match Duration::try_from_secs_f64(secs) {
        Ok(duration) if !duration.is_zero() && duration <= max => Ok(duration),
        _ => Err(ConfigError::Duration {
            key,
            value: secs,
            max_secs: max.as_secs(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_is_plain_http_on_80() {
        let config = FileConfig::parse("").unwrap().into_server_config().unwrap();
        assert_eq!(config.relay_bind, "0.0.0.0:80".parse().unwrap());
        assert!(config.tls.is_none());
        assert!(config.stun_bind.is_none());
        assert_eq!(config.access, AccessControl::Everyone);
        assert_eq!(config.limits, Limits::default());
        assert_eq!(
            config.stun_rate_limit,
            Some(crate::server::StunRateLimit::default())
        );
        let off = FileConfig::parse("[limits]\nstun_requests_per_second = 0")
            .unwrap()
            .into_server_config()
            .unwrap();
        assert_eq!(off.stun_rate_limit, None);
    }

    #[test]
    fn full_file() {
        let node = iroh_base::SecretKey::from_bytes(&[3; 32]).public();
        let text = format!(
            r#"
            relay_bind = "127.0.0.1:8443"
            hostname = "relay.test"
            stun_bind = "127.0.0.1:3478"
            stun_alt_bind = "127.0.0.1:3479"
            metrics_bind = "127.0.0.1:9090"
            shutdown_timeout_secs = 2.5
            [tls]
            mode = "self-signed"
            hostnames = ["relay.test"]
            [access]
            mode = "allowlist"
            nodes = ["{node}"]
            bearer_token = "t0ken"
            [limits]
            rate_bytes_per_second = 1000000
            rate_burst_bytes = 200000
            send_queue_len = 64
            write_timeout_secs = 1.5
            keepalive_interval_secs = 10
            idle_timeout_secs = 40
            handshake_timeout_secs = 3
            max_clients = 100
            send_queue_bytes = 1000000
            max_pending = 500
            max_pending_per_source = 8
            stun_requests_per_second = 5
            [discovery]
            origin = "dns.relay.test"
            dns_bind = "127.0.0.1:5300"
            db_path = "/var/lib/iroh/records.redb"
            publish_rate_per_second = 0.5
            publish_burst = 4
            evict_after_secs = 3600
            max_future_skew_secs = 30
            dns_cache_records = 5000
            "#
        );
        let config = FileConfig::parse(&text)
            .unwrap()
            .into_server_config()
            .unwrap();
        assert_eq!(config.relay_bind, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(config.hostname.as_deref(), Some("relay.test"));
        assert!(
            matches!(config.tls, Some(TlsConfig::SelfSigned { ref hostnames }) if hostnames == &["relay.test"])
        );
        assert_eq!(config.access, AccessControl::Allowlist([node].into()));
        assert_eq!(config.bearer_token.as_deref(), Some("t0ken"));
        assert_eq!(config.shutdown_timeout, Duration::from_millis(2500));
        assert_eq!(
            config.stun_rate_limit,
            Some(crate::server::StunRateLimit::new(5, 10))
        );
        let limits = config.limits;
        assert_eq!(limits.send_queue_bytes, 1_000_000);
        assert_eq!(limits.max_pending, 500);
        assert_eq!(limits.max_pending_per_source, 8);
        assert_eq!(limits.rate_limit, Some(RateLimit::new(1_000_000, 200_000)));
        assert_eq!(limits.send_queue_len, 64);
        assert_eq!(limits.write_timeout, Duration::from_millis(1500));
        assert_eq!(limits.keepalive_interval, Duration::from_secs(10));
        assert_eq!(limits.idle_timeout, Duration::from_secs(40));
        assert_eq!(limits.handshake_timeout, Duration::from_secs(3));
        assert_eq!(limits.max_clients, Some(100));
        let discovery = config.discovery.unwrap();
        assert_eq!(discovery.origin, "dns.relay.test");
        assert_eq!(discovery.dns_bind, Some("127.0.0.1:5300".parse().unwrap()));
        assert_eq!(
            discovery.db_path.as_deref(),
            Some(Path::new("/var/lib/iroh/records.redb"))
        );
        assert_eq!(
            discovery.publish_rate,
            RequestRate {
                per_second: 0.5,
                burst: 4
            }
        );
        assert_eq!(discovery.evict_after, Duration::from_secs(3600));
        assert_eq!(discovery.max_future_skew, Duration::from_secs(30));
        assert_eq!(discovery.dns_cache_records, 5000);
        assert!(config.relay_enabled);
    }

    #[test]
    fn discovery_alone() {
        let config = FileConfig::parse(
            "relay = false
[discovery]
origin = \"d.test\"",
        )
        .unwrap()
        .into_server_config()
        .unwrap();
        assert!(!config.relay_enabled);
        assert_eq!(config.discovery.unwrap().dns_bind, None);
    }

    #[test]
    fn mistakes_are_errors() {
        for text in [
            "relay_bnd = \"0.0.0.0:80\"",
            "[tls]\nmode = \"files\"\ncert_path = \"c.pem\"",
            "[tls]\nmode = \"magic\"",
            "[tls]\nmode = \"self-signed\"\nhostname = [\"x\"]",
            "[access]\nmode = \"allowlist\"\nnodes = [\"not a node\"]",
            "[limits]\nwrite_timeout = 5",
            "[discovery]\ndns_bind = \"127.0.0.1:53\"",
            "[discovery]\norigin = \"x.test\"\nttl = 5",
        ] {
            assert!(FileConfig::parse(text).is_err(), "{text}");
        }
        for text in [
            "[access]\nnodes = [\"ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6\"]",
            "[access]\nbearer_token = \"\"",
            "[limits]\nwrite_timeout_secs = -1",
            "[limits]\nwrite_timeout_secs = 0",
            "[limits]\nsend_queue_len = 0",
            "[limits]\nrate_burst_bytes = 10",
            "shutdown_timeout_secs = nan",
            // Issue 16: accepted before, then every connection panicked ("overflow when adding duration
            // to instant").
            "[limits]\nhandshake_timeout_secs = 1e19",
            "[limits]\nkeepalive_interval_secs = 1e19",
            "[limits]\nidle_timeout_secs = 604801",
            "shutdown_timeout_secs = 1e300",
            "[limits]\nmax_clients = 0",
            "[limits]\nmax_pending = 0",
            "[limits]\nmax_pending_per_source = 0",
            "[limits]\nsend_queue_bytes = 1000",
            "relay = false",
            "[discovery]\norigin = \"\"",
            "[discovery]\norigin = \"bad name!\"",
            "[discovery]\norigin = \"x.test\"\npublish_burst = 0",
            "[discovery]\norigin = \"x.test\"\npublish_rate_per_second = -1",
            "[discovery]\norigin = \"x.test\"\nevict_after_secs = 0",
        ] {
            let parsed = FileConfig::parse(text).unwrap();
            assert!(parsed.into_server_config().is_err(), "{text}");
        }
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let dir = std::env::temp_dir().join(format!("iroh-relay-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.toml");
        std::fs::write(
            &path,
            "[tls]\nmode = \"files\"\ncert_path = \"c.pem\"\nkey_path = \"/abs/k.pem\"\n",
        )
        .unwrap();
        let config = FileConfig::load(&path).unwrap();
        assert_eq!(
            config.tls,
            Some(TlsSection::Files {
                cert_path: dir.join("c.pem"),
                key_path: "/abs/k.pem".into(),
            })
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            FileConfig::load(&path),
            Err(ConfigError::Read { .. })
        ));
    }
}
