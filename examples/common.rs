//! Shared by the examples: turning command-line relay and discovery options into endpoint settings.

use std::{net::SocketAddr, sync::Arc};

use iroh::{
    EndpointBuilder, RelayMode, RelayUrl, SecretKey,
    discovery::{
        dns::{DnsDiscovery, DnsOrigin},
        mdns::MdnsDiscovery,
        pkarr::{PkarrPublisher, PkarrResolver, PublishStatusHandle},
    },
    iroh_net::endpoint::{RelayMap, RelayNode},
};
use iroh_relay::client::pkarr::PkarrClient;

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
    /// Find nodes on the local network, and be found there, over multicast DNS (`_iroh._udp.local`):
    /// no relay or server needed.
    #[arg(long)]
    pub(crate) local_discovery: bool,
}

impl DiscoveryArgs {
    /// Whether any discovery was asked for.
    #[allow(dead_code)]
    pub(crate) fn is_enabled(&self) -> bool {
        self.discovery_url.is_some()
            || self.dns_server.is_some()
            || self.dns_origin.is_some()
            || self.local_discovery
    }

    /// Adds the services these options ask for to `builder`; `secret_key` signs what is published.
    /// `insecure` accepts the discovery server's certificate without checking it (a test server's
    /// self-signed one; records are signed anyway, so a false server can only withhold them).
    ///
    /// Returns the builder, when publishing to a server a handle on the publisher's progress (see
    /// [`wait_published`]), and the local-network service if `--local-discovery` is on.
    pub(crate) fn apply(
        &self,
        mut builder: EndpointBuilder,
        secret_key: &SecretKey,
        insecure: bool,
    ) -> anyhow::Result<(
        EndpointBuilder,
        Option<PublishStatusHandle>,
        Option<Arc<MdnsDiscovery>>,
    )> {
        let mut status = None;
        let mut local = None;
        if self.local_discovery {
            let mdns = Arc::new(
                MdnsDiscovery::new(secret_key.public())
                    .map_err(|e| anyhow::anyhow!("local discovery: {e}"))?,
            );
            builder = builder.add_discovery(Arc::clone(&mdns));
            local = Some(mdns);
        }
        if let Some(url) = &self.discovery_url {
            let client = PkarrClient::builder(url.clone())
                .insecure_skip_cert_verify(insecure)
                .build();
            let publisher = PkarrPublisher::with_client(secret_key.clone(), client.clone());
            status = Some(publisher.status_handle());
            builder = builder
                .add_discovery(publisher)
                .add_discovery(PkarrResolver::with_client(client));
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
        Ok((builder, status, local))
    }
}

/// Waits until the publisher has published a record naming our home relay (or any record when
/// `relay` is false), so that a peer told our NodeId right now finds us; fails after `timeout` with the
/// publisher's last error.
#[allow(dead_code)] // not every example publishes
pub(crate) async fn wait_published(
    status: &PublishStatusHandle,
    relay: bool,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now = status.get();
        if now
            .published
            .as_ref()
            .is_some_and(|data| !relay || data.relay_url.is_some())
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "our address was not published within {timeout:?}: {}",
                now.last_error.as_deref().unwrap_or("no answer yet")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
