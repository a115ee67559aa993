//! Shared by the examples: turning command-line relay and discovery options into endpoint settings.

use std::net::SocketAddr;

use iroh::{
    EndpointBuilder, RelayMode, RelayUrl, SecretKey,
    discovery::{
        dns::{DnsDiscovery, DnsOrigin},
        pkarr::{PkarrPublisher, PkarrResolver},
    },
    iroh_net::endpoint::{RelayMap, RelayNode},
};

/// The relay settings of an example's command line.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct RelayArgs {
    /// A relay to use (for example `http://127.0.0.1:3340` from `cargo run -p iroh-relay -- --dev`).
    #[arg(long)]
    pub(crate) relay_url: Option<RelayUrl>,
    /// The relay's STUN port, if not 3478.
    #[arg(long)]
    pub(crate) stun_port: Option<u16>,
    /// Trust the relay's TLS certificate without checking it (for test relays with self-signed certificates).
    #[arg(long)]
    pub(crate) insecure: bool,
}

impl RelayArgs {
    /// The relay mode these options ask for: disabled without a URL.
    pub(crate) fn relay_mode(&self) -> anyhow::Result<RelayMode> {
        Ok(match &self.relay_url {
            None => RelayMode::Disabled,
            Some(url) => {
                let node = match self.stun_port {
                    Some(port) => RelayNode::with_stun_port(url.clone(), port),
                    None => RelayNode::new(url.clone()),
                };
                RelayMode::Custom(RelayMap::new(vec![node])?)
            }
        })
    }
}

/// The discovery settings of an example's command line: where to publish our address, and how to find
/// nodes dialled by NodeId alone.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct DiscoveryArgs {
    /// Publish our address to this discovery server, and look nodes up there over HTTP (for example
    /// `http://127.0.0.1:3340` from `cargo run -p iroh-relay -- --dev`).
    #[arg(long)]
    pub(crate) discovery_url: Option<iroh::iroh_net::discovery::pkarr::Url>,
    /// Look nodes up over DNS at this server (for example `127.0.0.1:5300` from `iroh-relay --dev`).
    #[arg(long)]
    pub(crate) dns_server: Option<SocketAddr>,
    /// The DNS origin to look nodes up under (default `iroh.test` with `--dns-server`; with only this
    /// option, the system's resolver is asked).
    #[arg(long)]
    pub(crate) dns_origin: Option<DnsOrigin>,
}

impl DiscoveryArgs {
    /// Whether any discovery was asked for.
    #[allow(dead_code)]
    pub(crate) fn is_enabled(&self) -> bool {
        self.discovery_url.is_some() || self.dns_server.is_some() || self.dns_origin.is_some()
    }

    /// Adds the services these options ask for to `builder`; `secret_key` signs what is published.
    pub(crate) fn apply(
        &self,
        mut builder: EndpointBuilder,
        secret_key: &SecretKey,
    ) -> anyhow::Result<EndpointBuilder> {
        if let Some(url) = &self.discovery_url {
            builder = builder
                .add_discovery(PkarrPublisher::new(secret_key.clone(), url.clone()))
                .add_discovery(PkarrResolver::new(url.clone()));
        }
        let origin = match (&self.dns_origin, self.dns_server) {
            (Some(origin), _) => Some(origin.clone()),
            (None, Some(_)) => Some("iroh.test".parse()?),
            (None, None) => None,
        };
        if let Some(origin) = origin {
            let dns = match self.dns_server {
                Some(server) => DnsDiscovery::with_name_server(origin, server),
                None => DnsDiscovery::new(origin),
            }
            .map_err(|e| anyhow::anyhow!("DNS resolver: {e}"))?;
            builder = builder.add_discovery(dns);
        }
        Ok(builder)
    }
}
