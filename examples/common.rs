//! Shared by the examples: turning command-line relay options into a relay mode.

use iroh::{
    RelayMode, RelayUrl,
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
