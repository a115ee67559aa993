//! The port-mapping scenarios, one per protocol: `portmap-upnp`, `portmap-nat-pmp`, `portmap-pcp`.
//!
//! The provider sits behind a [`Kind::Upnp`] router whose miniupnpd offers that protocol alone (see
//! [`super::upnp`]); the fetcher behind a symmetric NAT, so that the two can only go direct through the
//! provider's mapping. The provider asks for [`LIFETIME_S`]-second mappings
//! (`--port-mapping-lifetime-secs`). Checked, in order:
//!
//! 1. **made**: the provider reports a mapping by that protocol (its `port_mapping` JSON line) within
//!    [`MAP_WAIT`], and miniupnpd holds a DNAT of that external port to the provider's host (for UPnP,
//!    `upnpc -l` from the provider's host lists it too);
//! 2. **used**: the transfer completes intact and direct (no other way exists from a symmetric NAT);
//! 3. **renewed**: the mapping's expiry in miniupnpd's lease file moves forward before the first lifetime
//!    ends, and the DNAT is still there a third of a lifetime after it would have expired;
//! 4. **removed**: the provider stops (SIGTERM: the endpoint closes and deletes its mapping) and within
//!    [`REMOVE_WAIT`] miniupnpd holds no DNAT for the port (for UPnP, `upnpc -l` lists none).

use std::{
    net::SocketAddrV4,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use super::{
    contract::{FetchResult, PathKind},
    faults::{FaultOptions, Scenario},
    shaper::LinkParams,
    sys::{NoLine, Run},
    topo::{Kind, Spec, Topology},
    transfer::Transfer,
    upnp::{self, Protocols},
};

/// The scenario names, and the protocol each offers alone.
pub(crate) const SCENARIOS: [(&str, &str); 3] = [
    ("portmap-upnp", "upnp"),
    ("portmap-nat-pmp", "nat-pmp"),
    ("portmap-pcp", "pcp"),
];
/// The mapping lifetime the provider asks for.
pub(crate) const LIFETIME_S: u64 = 20;
/// How long the provider may take to report its mapping.
const MAP_WAIT: Duration = Duration::from_secs(10);
/// How long after the provider's stop its mapping may still be held.
const REMOVE_WAIT: Duration = Duration::from_secs(3);

impl Scenario {
    /// The `portmap-<protocol>` scenario.
    pub(super) fn portmap(
        &mut self,
        run: &Run,
        options: &FaultOptions,
        protocol: &str,
    ) -> Result<Option<FetchResult>, String> {
        let protocols = Protocols::only(protocol).ok_or("unknown protocol")?;
        let topo = Topology::build(
            run,
            &Spec {
                sites: vec![Kind::Upnp, Kind::Symmetric],
                probe_server: false,
                shaping: Some(LinkParams::delay_ms(options.delay_ms)),
                relay_tls: options.relay_tls,
                relay_bin: options.relay_bin.clone(),
                seed: options.seed,
                portmap: protocols,
            },
        )?;
        let site = topo.site(0)?.clone();
        let leases = run.dir().join(format!("{}-miniupnpd.leases", site.edge_ns));
        let mut peer = options.peer.clone();
        peer.provide_extra.extend([
            "--port-mapping-lifetime-secs".to_owned(),
            LIFETIME_S.to_string(),
        ]);
        let label = format!("fault-portmap-{protocol}");
        let mut transfer = Transfer::start(&topo, &peer, (0, 1), options.lossy_size, &label)?;
        self.t0 = Some(transfer.started);
        self.note(&format!(
            "provider behind miniupnpd offering {protocol} alone, fetcher behind a symmetric NAT; \
             {LIFETIME_S} s mappings"
        ));

        // 1. Made.
        let (by, external) = wait_for_mapping(&mut transfer)?;
        let mapped_at = Instant::now();
        self.note(&format!("provider: mapped {external} by {by}"));
        if by != protocol {
            self.reasons.push(format!(
                "mapped by {by}, but the router offers {protocol} alone"
            ));
        }
        let held = upnp::mappings(&site.edge_ns)?;
        match held.iter().find(|(port, _)| *port == external.port()) {
            Some((_, to)) if *to.ip() == site.host_ip => {
                self.note(&format!("miniupnpd holds udp {} -> {to}", external.port()));
            }
            other => self.reasons.push(format!(
                "miniupnpd holds no DNAT of port {} to the provider ({other:?}; all: {held:?})",
                external.port()
            )),
        }
        if protocol == "upnp" {
            let listed = upnp::upnpc_list(&site.host_ns)?;
            if listed.contains(&format!("UDP {:>5}->", external.port()))
                || listed.contains(&format!("UDP {}->", external.port()))
            {
                self.note("upnpc -l lists it");
            } else {
                self.reasons.push(format!(
                    "upnpc -l does not list port {}:\n{listed}",
                    external.port()
                ));
            }
        }
        let expiry_before = lease_expiry(&leases, external.port());

        // 2. Used.
        let result = transfer.finish(transfer.started + options.timeout)?;
        self.note(&format!(
            "transfer finished: {} bytes on {}",
            result.bytes,
            result.final_path.word()
        ));
        if result.final_path != PathKind::Direct {
            self.reasons
                .push("not direct, though the provider has a mapping".into());
        }

        // 3. Renewed.
        let lifetime = Duration::from_secs(LIFETIME_S);
        let check_at = mapped_at + lifetime + lifetime / 3;
        thread::sleep(check_at.saturating_duration_since(Instant::now()));
        let expiry_after = lease_expiry(&leases, external.port());
        match (expiry_before, expiry_after) {
            (Some(before), Some(after)) if after > before => self.note(&format!(
                "renewed: its lease ends {} s later than at first",
                after - before
            )),
            other => self.reasons.push(format!(
                "not renewed: lease expiry before and after {other:?} (file {})",
                leases.display()
            )),
        }
        if !upnp::mappings(&site.edge_ns)?
            .iter()
            .any(|(port, _)| *port == external.port())
        {
            self.reasons.push(format!(
                "the mapping is gone {:.0} s after it was made",
                mapped_at.elapsed().as_secs_f64()
            ));
        }

        // 4. Removed.
        transfer.stop_provider(Duration::from_secs(5));
        self.note("provider stopped (SIGTERM)");
        let deadline = Instant::now() + REMOVE_WAIT;
        loop {
            let held = upnp::mappings(&site.edge_ns)?;
            if !held.iter().any(|(port, _)| *port == external.port()) {
                self.note("miniupnpd holds the mapping no more");
                break;
            }
            if Instant::now() >= deadline {
                self.reasons.push(format!(
                    "the mapping is still held {} s after the provider stopped",
                    REMOVE_WAIT.as_secs()
                ));
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        if protocol == "upnp" {
            let listed = upnp::upnpc_list(&site.host_ns)?;
            if listed.contains(&format!("{}->", external.port())) {
                self.reasons
                    .push(format!("upnpc -l still lists the mapping:\n{listed}"));
            }
        }
        transfer.stop();
        Ok(Some(result))
    }
}

/// Reads the provider's lines until its `port_mapping` event: (protocol, external address).
fn wait_for_mapping(transfer: &mut Transfer) -> Result<(String, SocketAddrV4), String> {
    let deadline = Instant::now() + MAP_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match transfer.provider_line(left) {
            Ok(line) => {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if value["event"] != "port_mapping" {
                    continue;
                }
                let (Some(by), Some(external)) =
                    (value["protocol"].as_str(), value["external"].as_str())
                else {
                    continue;
                };
                let external = external
                    .parse()
                    .map_err(|e| format!("bad external address {external:?}: {e}"))?;
                return Ok((by.to_owned(), external));
            }
            Err(NoLine::Timeout) => {
                return Err(format!(
                    "the provider reported no port mapping within {} s",
                    MAP_WAIT.as_secs()
                ));
            }
            Err(NoLine::Closed) => return Err("the provider exited".into()),
        }
    }
}

/// The expiry (Unix seconds) of the UDP mapping of `port` in miniupnpd's lease file
/// (`UDP:<external port>:<internal ip>:<internal port>:<expiry>:<description>` lines).
fn lease_expiry(file: &Path, port: u16) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.splitn(6, ':').collect();
        (fields.first() == Some(&"UDP") && fields.get(1)?.parse::<u16>().ok()? == port)
            .then(|| fields.get(4)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_lines_read_back() {
        let dir = std::env::temp_dir().join(format!("portmap-lease-{}", std::process::id()));
        std::fs::write(
            &dir,
            "TCP:80:10.1.1.2:80:1700000000:web\nUDP:50001:10.1.1.2:4000:1700000123:iroh: x\n",
        )
        .unwrap();
        assert_eq!(lease_expiry(&dir, 50001), Some(1_700_000_123));
        assert_eq!(lease_expiry(&dir, 80), None);
        std::fs::remove_file(&dir).ok();
    }
}
