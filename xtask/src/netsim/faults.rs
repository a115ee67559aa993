//! Fault scenarios, each a transfer between two home sites (direct capable) with something going wrong:
//!
//! - `direct-drop`: once the transfer runs direct, an nftables rule on the fetcher's router drops all traffic
//!   between the two sites (the relay stays reachable). The transfer must continue through the relay; when
//!   the rule is lifted it must return to direct; the data must arrive intact.
//! - `relay-restart`: once the transfer runs direct, the relay is killed (SIGKILL) and restarted 2 s later.
//!   The transfer must not notice: it stays direct, no path event to the relay, data intact.
//! - `lossy`: 25 ms each way on both access links (100 ms round trip) and 1% loss on each link in each
//!   direction (about 2% each way end to end). The transfer must complete intact.
//! - `by-node-id`: the provider publishes its address to the discovery server in the relay process; the
//!   fetcher knows only its NodeId and resolves it over DNS (port 53 of the relay's host). The transfer must
//!   complete intact and go direct (both sites are home routers). Needs a peer program with discovery
//!   (the `transfer` example); with the stand-in it is reported as not run.
//! - `lan-wins`: the two home sites' hosts are also joined by a link of their own (one LAN, no delay,
//!   [`super::topo::SHARED_LAN`]), and both run local discovery (mDNS) besides the relay. The fetcher
//!   knows only the provider's NodeId: mDNS gives it the provider's LAN address, its public (NAT) address
//!   and its relay, so every kind of path works at once (relay, public through both NATs, which is what
//!   `by-node-id` uses in the same topology, and LAN). The transfer must go direct over the LAN one: its
//!   QUIC round-trip time at the end must be under the access links' one-way delay (the public path's
//!   round trip is four times that). Also needs the `transfer` example.
//!
//! The first two need the transfer to outlast the fault, so both access links are limited with `tbf`
//! (`--fault-rate-mbit`, default 20) and the transfer is `--fault-size` bytes (default 60 MB, about 24 s at
//! 20 Mbit/s). Faults are timed by the fetcher's path events (see [`super::contract`]); a peer program that
//! prints none gets fixed timings instead (fault 3 s after the start, lifted 8 s later) and only its final
//! result is checked.

use std::{
    thread,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    contract::{Dial, FetchResult, PathKind, PeerCmd},
    matrix::FAULT_DIRECT_WAIT,
    shaper::LinkParams,
    sys::Run,
    topo::{Kind, Spec, Topology},
    transfer::{SeenEvent, Transfer, Waited},
};

/// How the fault scenarios run.
#[derive(Debug, Clone)]
pub(crate) struct FaultOptions {
    /// The peer program.
    pub(crate) peer: PeerCmd,
    /// The relay binary.
    pub(crate) relay_bin: std::path::PathBuf,
    /// Relay over TLS.
    pub(crate) relay_tls: bool,
    /// One-way delay of the access links (except in `lossy`).
    pub(crate) delay_ms: u64,
    /// Rate limit of the access links in `direct-drop` and `relay-restart`.
    pub(crate) rate_mbit: u32,
    /// Bytes of the `direct-drop` and `relay-restart` transfers.
    pub(crate) size: u64,
    /// Bytes of the `lossy` transfer.
    pub(crate) lossy_size: u64,
    /// Give up on a transfer after this long.
    pub(crate) timeout: Duration,
    /// Seed of the shaper's loss decisions.
    pub(crate) seed: u64,
}

/// One scenario's outcome.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FaultReport {
    /// The scenario.
    pub(crate) name: &'static str,
    /// Whether it passed.
    pub(crate) passed: bool,
    /// Why not.
    pub(crate) reasons: Vec<String>,
    /// What happened when, in seconds since the fetcher started.
    pub(crate) timeline: Vec<String>,
    /// The fetcher's result.
    pub(crate) result: Option<FetchResult>,
    /// The path events.
    pub(crate) path_events: Vec<SeenEvent>,
    /// Seconds for the whole scenario.
    pub(crate) wall_secs: f64,
}

/// The scenario names, in run order.
pub(crate) const SCENARIOS: [&str; 8] = [
    "direct-drop",
    "relay-restart",
    "lossy",
    "by-node-id",
    "lan-wins",
    "portmap-upnp",
    "portmap-nat-pmp",
    "portmap-pcp",
];

/// The scenarios that need the real peer program (discovery, port mapping), with the `lossy` size.
const NEED_REAL_PEER: [&str; 5] = [
    "by-node-id",
    "lan-wins",
    "portmap-upnp",
    "portmap-nat-pmp",
    "portmap-pcp",
];

/// Runs the scenarios named in `which`, printing progress.
pub(crate) fn run(run: &Run, options: &FaultOptions, which: &[String]) -> Vec<FaultReport> {
    let mut reports = Vec::new();
    for name in SCENARIOS
        .into_iter()
        .filter(|n| which.iter().any(|w| w == n))
    {
        if NEED_REAL_PEER.contains(&name) && options.peer.is_stand_in() {
            println!(
                "faults: {name} not run: the stand-in peer has no discovery nor port mapping (--peer-cmd target/debug/examples/transfer)"
            );
            continue;
        }
        println!("faults: {name} ...");
        let started = Instant::now();
        let mut scenario = Scenario {
            timeline: Vec::new(),
            reasons: Vec::new(),
            events: Vec::new(),
            t0: None,
        };
        let result = match name {
            "direct-drop" => scenario.direct_drop(run, options),
            "relay-restart" => scenario.relay_restart(run, options),
            "by-node-id" => scenario.by_node_id(run, options),
            "lan-wins" => scenario.lan_wins(run, options),
            name if name.starts_with("portmap-") => {
                let protocol = super::portmap::SCENARIOS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or("", |(_, p)| *p);
                scenario.portmap(run, options, protocol)
            }
            _ => scenario.lossy(run, options),
        };
        let result = match result {
            Ok(result) => result,
            Err(e) => {
                scenario.reasons.push(e);
                None
            }
        };
        if let Some(r) = &result {
            if !r.hash_ok {
                scenario
                    .reasons
                    .push("content does not match (hash_ok false)".into());
            }
            let size = if name == "lossy" || NEED_REAL_PEER.contains(&name) {
                options.lossy_size
            } else {
                options.size
            };
            if r.bytes != size {
                scenario
                    .reasons
                    .push(format!("received {} of {size} bytes", r.bytes));
            }
        } else if scenario.reasons.is_empty() {
            scenario.reasons.push("no result".into());
        }
        scenario.timeline.sort_by(|a, b| a.0.total_cmp(&b.0));
        let report = FaultReport {
            name,
            passed: scenario.reasons.is_empty(),
            reasons: scenario.reasons,
            timeline: scenario
                .timeline
                .iter()
                .map(|(t, what)| format!("{t:6.2} s  {what}"))
                .collect(),
            result,
            path_events: scenario.events,
            wall_secs: started.elapsed().as_secs_f64(),
        };
        println!(
            "faults: {name}: {}",
            if report.passed {
                "ok".to_owned()
            } else {
                format!("FAIL: {}", report.reasons.join("; "))
            }
        );
        reports.push(report);
    }
    reports
}

pub(super) struct Scenario {
    /// (seconds since the fetcher started, what)
    pub(super) timeline: Vec<(f64, String)>,
    pub(super) reasons: Vec<String>,
    pub(super) events: Vec<SeenEvent>,
    pub(super) t0: Option<Instant>,
}

impl Scenario {
    pub(super) fn note(&mut self, what: &str) {
        let t = self.t0.map_or(0.0, |t0| t0.elapsed().as_secs_f64());
        self.timeline.push((t, what.to_owned()));
    }

    fn topology<'r>(
        run: &'r Run,
        options: &FaultOptions,
        link: LinkParams,
    ) -> Result<Topology<'r>, String> {
        Topology::build(
            run,
            &Spec {
                sites: vec![Kind::Home, Kind::Home],
                probe_server: false,
                shaping: Some(link),
                relay_tls: options.relay_tls,
                relay_bin: options.relay_bin.clone(),
                seed: options.seed,
                portmap: super::upnp::Protocols::ALL,
            },
        )
    }

    /// Starts the transfer and waits until it is direct; `Ok(None)` if it already finished.
    fn start_direct(
        &mut self,
        topo: &Topology<'_>,
        options: &FaultOptions,
        label: &str,
    ) -> Result<(Transfer, bool), String> {
        let mut transfer = Transfer::start(topo, &options.peer, (0, 1), options.size, label)?;
        self.t0 = Some(transfer.started);
        self.note("fetcher started");
        let waited =
            transfer.wait_for_path(PathKind::Direct, 0.0, Instant::now() + FAULT_DIRECT_WAIT)?;
        let has_events = !transfer.events.is_empty();
        match waited {
            Waited::Seen => {}
            Waited::Finished => {
                return Err("the transfer finished before the fault; raise --fault-size or lower --fault-rate-mbit".into());
            }
            Waited::Timeout if has_events => {
                return Err(format!(
                    "not direct within {} s",
                    FAULT_DIRECT_WAIT.as_secs()
                ));
            }
            Waited::Timeout => self.note("no path events from this peer program: fixed timings"),
        }
        Ok((transfer, has_events))
    }

    fn finish(
        &mut self,
        mut transfer: Transfer,
        options: &FaultOptions,
    ) -> Result<FetchResult, String> {
        let result = transfer.finish(transfer.started + options.timeout);
        transfer.stop();
        self.events = transfer.events.clone();
        for event in &self.events {
            self.timeline.push((
                event.elapsed_ms / 1000.0,
                format!("path event: {}", event.path.word()),
            ));
        }
        let result = result?;
        self.note(&format!(
            "finished: {} bytes on {}, {:.1} Mbit/s",
            result.bytes,
            result.final_path.word(),
            result.throughput_mbps
        ));
        Ok(result)
    }

    fn direct_drop(
        &mut self,
        run: &Run,
        options: &FaultOptions,
    ) -> Result<Option<FetchResult>, String> {
        let topo = Self::topology(run, options, LinkParams::delay_ms(options.delay_ms))?;
        topo.limit_rate(0, options.rate_mbit, 100)?;
        topo.limit_rate(1, options.rate_mbit, 100)?;
        let (mut transfer, has_events) = self.start_direct(&topo, options, "fault-direct-drop")?;
        thread::sleep(Duration::from_secs(1));
        let provider_ip = topo.site(0)?.public_ip;
        topo.drop_peer(1, provider_ip)?;
        self.note("drop rule on: fetcher's router drops all traffic to and from the provider");
        let dropped_ms = transfer.elapsed_ms();
        if has_events {
            match transfer.wait_for_path(
                PathKind::Relay,
                dropped_ms,
                Instant::now() + Duration::from_secs(15),
            )? {
                Waited::Seen => {}
                Waited::Timeout => self
                    .reasons
                    .push("no fallback to the relay within 15 s of the drop".into()),
                Waited::Finished => {
                    self.reasons.push(
                        "the transfer finished before falling back; raise --fault-size".into(),
                    );
                }
            }
            thread::sleep(Duration::from_secs(3));
        } else {
            thread::sleep(Duration::from_secs(8));
        }
        topo.lift_drop(1)?;
        self.note("drop rule lifted");
        let lifted_ms = transfer.elapsed_ms();
        let result = self.finish(transfer, options)?;
        if result.final_path != PathKind::Direct {
            self.reasons
                .push("did not return to direct after the rule was lifted".into());
        }
        if has_events {
            let fell_back_ms = self
                .events
                .iter()
                .find(|e| e.path == PathKind::Relay && e.elapsed_ms >= dropped_ms)
                .map(|e| e.elapsed_ms);
            if fell_back_ms.is_none() {
                self.reasons.push("no relay path after the drop".into());
            }
            // Events carry the fetcher's clock, which starts a little after ours, so a path that
            // came back within that start-up skew of the lift would look "before" `lifted_ms` (CI
            // once saw direct 20 ms before the note). No direct path can exist while the rule
            // drops everything, so any direct event after the relay fallback came after the lift.
            let back_after_ms = fell_back_ms.unwrap_or(lifted_ms);
            if !self
                .events
                .iter()
                .any(|e| e.path == PathKind::Direct && e.elapsed_ms > back_after_ms)
            {
                self.reasons
                    .push("no direct path after the rule was lifted (transfer too short?)".into());
            }
        }
        Ok(Some(result))
    }

    fn relay_restart(
        &mut self,
        run: &Run,
        options: &FaultOptions,
    ) -> Result<Option<FetchResult>, String> {
        let mut topo = Self::topology(run, options, LinkParams::delay_ms(options.delay_ms))?;
        topo.limit_rate(0, options.rate_mbit, 100)?;
        topo.limit_rate(1, options.rate_mbit, 100)?;
        let (transfer, has_events) = self.start_direct(&topo, options, "fault-relay-restart")?;
        thread::sleep(Duration::from_secs(1));
        topo.kill_relay();
        self.note("relay killed");
        let killed_ms = transfer.elapsed_ms();
        thread::sleep(Duration::from_secs(2));
        topo.start_relay()?;
        self.note("relay restarted");
        let restarted_ms = transfer.elapsed_ms();
        let result = self.finish(transfer, options)?;
        if result.final_path != PathKind::Direct {
            self.reasons.push("not direct at the end".into());
        }
        if result.duration_ms < restarted_ms {
            self.reasons
                .push("the transfer finished before the relay was back; raise --fault-size".into());
        }
        if has_events
            && self
                .events
                .iter()
                .any(|e| e.path == PathKind::Relay && e.elapsed_ms >= killed_ms)
        {
            self.reasons.push(
                "the transfer moved to the relay path although the direct path was fine".into(),
            );
        }
        Ok(Some(result))
    }

    fn lossy(&mut self, run: &Run, options: &FaultOptions) -> Result<Option<FetchResult>, String> {
        let link = LinkParams::delay_ms(25).with_loss_percent(1.0);
        let mut topo = Self::topology(run, options, link)?;
        self.t0 = Some(Instant::now());
        self.note("25 ms and 1% loss each way on both access links: 100 ms RTT, ~2% loss each way");
        let transfer = Transfer::start(
            &topo,
            &options.peer,
            (0, 1),
            options.lossy_size,
            "fault-lossy",
        )?;
        self.t0 = Some(transfer.started);
        let result = self.finish(transfer, options)?;
        let (ab, ba) = topo.shaper_stats(0)?;
        self.note(&format!(
            "provider link: {} of {} frames dropped out, {} of {} in",
            ab.dropped, ab.frames_in, ba.dropped, ba.frames_in
        ));
        Ok(Some(result))
    }
}

impl Scenario {
    fn by_node_id(
        &mut self,
        run: &Run,
        options: &FaultOptions,
    ) -> Result<Option<FetchResult>, String> {
        let topo = Self::topology(run, options, LinkParams::delay_ms(options.delay_ms))?;
        self.t0 = Some(Instant::now());
        self.note("the provider publishes to the relay's discovery server; the fetcher has its NodeId only");
        let transfer = Transfer::start_dialling(
            &topo,
            &options.peer,
            (0, 1),
            options.lossy_size,
            "fault-by-node-id",
            Dial::NodeId,
        )?;
        self.t0 = Some(transfer.started);
        let result = self.finish(transfer, options)?;
        if result.final_path != PathKind::Direct {
            self.reasons
                .push("dialled by NodeId, but never went direct between two home routers".into());
        }
        if let Some(ms) = result.time_to_direct_ms {
            self.note(&format!("direct after {ms:.0} ms (discovery included)"));
        }
        Ok(Some(result))
    }

    fn lan_wins(
        &mut self,
        run: &Run,
        options: &FaultOptions,
    ) -> Result<Option<FetchResult>, String> {
        let topo = Self::topology(run, options, LinkParams::delay_ms(options.delay_ms))?;
        let (lan_provider, lan_fetcher) = topo.join_lan(0, 1)?;
        self.t0 = Some(Instant::now());
        self.note(&format!(
            "hosts also on one LAN ({lan_provider} provider, {lan_fetcher} fetcher); both run mDNS and \
             the relay; the fetcher has the NodeId only"
        ));
        let transfer = Transfer::start_dialling(
            &topo,
            &options.peer,
            (0, 1),
            options.lossy_size,
            "fault-lan-wins",
            Dial::Local,
        )?;
        self.t0 = Some(transfer.started);
        let result = self.finish(transfer, options)?;
        if result.final_path != PathKind::Direct {
            self.reasons
                .push("not direct at the end, though the LAN path works".into());
        }
        let public_rtt_ms = 4 * options.delay_ms;
        match result.quic.rtt_ms {
            Some(rtt) => {
                self.note(&format!(
                    "QUIC round trip at the end {rtt:.2} ms (the public path's is {public_rtt_ms} ms \
                     and more, the relay's as much)"
                ));
                // Under a quarter of the public path's round trip: not that path, nor the relay.
                if rtt >= options.delay_ms as f64 {
                    self.reasons.push(format!(
                        "round trip {rtt:.1} ms at the end: the LAN path (well under 1 ms) did not win over \
                         the public or relay path ({public_rtt_ms} ms)"
                    ));
                }
            }
            None => self
                .reasons
                .push("the peer program reported no QUIC round-trip time".into()),
        }
        if let Some(ms) = result.time_to_direct_ms {
            self.note(&format!("direct after {ms:.0} ms (mDNS included)"));
        }
        Ok(Some(result))
    }
}

/// The scenarios as markdown.
pub(crate) fn markdown(reports: &[FaultReport]) -> String {
    let mut md = String::from(
        "### Fault scenarios\n\n| scenario | result | final path | throughput | verdict |\n|---|---|---|---|---|\n",
    );
    for r in reports {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.name,
            r.result.map_or_else(
                || "no result".to_owned(),
                |x| format!(
                    "{} bytes, hash {}",
                    x.bytes,
                    if x.hash_ok { "ok" } else { "BAD" }
                )
            ),
            r.result.map_or("-", |x| x.final_path.word()),
            r.result.map_or_else(
                || "-".to_owned(),
                |x| format!("{:.1} Mbit/s", x.throughput_mbps)
            ),
            if r.passed {
                "ok".to_owned()
            } else {
                format!("FAIL: {}", r.reasons.join("; "))
            }
        ));
    }
    for r in reports {
        md.push_str(&format!(
            "\n{}:\n```text\n{}\n```\n",
            r.name,
            r.timeline.join("\n")
        ));
    }
    md
}
