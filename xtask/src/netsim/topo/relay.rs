//! The relay (and discovery server) process of a topology: its addresses, starting it, killing it.

use std::net::SocketAddr;

use super::{RELAY_IP, STUN_PORT, Topology, probe_cmd};
use crate::netsim::sys::{NsProcess, Pipes};

impl Topology<'_> {
    /// The relay's URL.
    pub(crate) fn relay_url(&self) -> String {
        if self.relay_tls {
            format!("https://{RELAY_IP}/")
        } else {
            format!("http://{RELAY_IP}/")
        }
    }

    /// Whether peers must accept a self-signed relay certificate.
    pub(crate) fn relay_insecure(&self) -> bool {
        self.relay_tls
    }

    /// The relay's TCP address.
    pub(crate) fn relay_tcp(&self) -> SocketAddr {
        SocketAddr::from((RELAY_IP, if self.relay_tls { 443 } else { 80 }))
    }

    /// The discovery DNS server in the relay process (UDP and TCP).
    pub(crate) fn dns_server(&self) -> SocketAddr {
        SocketAddr::from((RELAY_IP, 53))
    }

    /// The relay's STUN address.
    pub(crate) fn relay_stun(&self) -> SocketAddr {
        SocketAddr::from((RELAY_IP, STUN_PORT))
    }

    /// The relay's second STUN address (RFC 5780 OTHER-ADDRESS), from which nodes tell whether their
    /// NAT's mapping varies by destination.
    pub(crate) fn relay_stun_alt(&self) -> SocketAddr {
        SocketAddr::from((RELAY_IP, STUN_PORT + 1))
    }

    /// The namespace of the relay (plain veth link: a baseline for measurements).
    pub(crate) fn relay_ns(&self) -> &str {
        &self.relay_ns
    }

    /// Starts the relay (again) and waits until it accepts TCP connections.
    pub(crate) fn start_relay(&mut self) -> Result<(), String> {
        let tcp = self.relay_tcp();
        let tls = if self.relay_tls {
            format!("\n[tls]\nmode = \"self-signed\"\nhostnames = [\"{RELAY_IP}\"]\n")
        } else {
            String::new()
        };
        // Discovery in the relay process: the publish endpoint on its listener, DNS on port 53.
        let discovery = format!(
            "\n[discovery]\norigin = \"{}\"\ndns_bind = \"{}\"\n",
            crate::netsim::contract::DISCOVERY_ORIGIN,
            self.dns_server()
        );
        let config = format!(
            "relay_bind = \"{tcp}\"\nhostname = \"{RELAY_IP}\"\nstun_bind = \"{}\"\nstun_alt_bind = \"{}\"\nshutdown_timeout_secs = 1\n{tls}{discovery}",
            self.relay_stun(),
            self.relay_stun_alt()
        );
        std::fs::write(&self.relay_config, config)
            .map_err(|e| format!("cannot write {}: {e}", self.relay_config.display()))?;
        self.relay_starts += 1;
        let log = self
            .run
            .dir()
            .join(format!("{}-relay-{}.log", self.tag, self.relay_starts));
        let relay = NsProcess::spawn(
            "relay",
            &self.relay_ns,
            &self.relay_bin,
            &[
                "--config".to_owned(),
                self.relay_config.display().to_string(),
            ],
            &log,
            Pipes {
                stdin: false,
                stdout: false,
            },
        )?;
        self.relay = Some(relay);
        let waited = probe_cmd(
            &self.relay_ns,
            &[
                "wait-tcp",
                "--to",
                &tcp.to_string(),
                "--timeout-ms",
                "15000",
            ],
        );
        if let Err(e) = waited {
            let tail = self
                .relay
                .as_ref()
                .map(|r| r.log_tail(15))
                .unwrap_or_default();
            return Err(format!("the relay did not come up: {e}\nits log:\n{tail}"));
        }
        Ok(())
    }

    /// Kills the relay (SIGKILL: as a crash would).
    pub(crate) fn kill_relay(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            relay.kill();
        }
    }
}
