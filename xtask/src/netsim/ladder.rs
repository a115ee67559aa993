//! The loss ladder: goodput of the Endpoint's direct path, of its relay-only path and of raw quinn over the
//! same simulated access link, rung by rung from a clean link to heavy random and bursty loss, with the
//! round-trip time under load (bufferbloat) beside each.
//!
//! ```text
//!   provider (public host) --[10 or 25 ms]-- internet --[10 or 25 ms, rate limit, loss]-- home router -- fetcher
//!          echo server                          relay                                        echo probe
//! ```
//!
//! Every rung is a fresh topology: a public provider and a fetcher behind a home router (so the direct path
//! is a holepunched one). Both access links get a quarter of the rung's round trip each way; the fetcher's
//! access link is also the bottleneck: `tbf` at `--ladder-rate-mbit` (default 50) with a queue of
//! `--ladder-queue-ms` (default 100 ms) in both directions, and the rung's loss in both directions (random,
//! or Gilbert-Elliott bursts, see [`Burst`]). Each mode then runs for `--ladder-secs`:
//!
//! - `direct`: the peer program (the transfer example), `fetch --duration-secs S`;
//! - `relay`: the same with `--relay-only` on both sides (TCP and TLS to the relay and back);
//! - `raw`: raw quinn (`iroh-bench quic-peer`) from the fetcher to the provider's public address, with the
//!   same transport config and congestion controller: what the path allows a QUIC connection without
//!   holepunching or a magic socket.
//!
//! While each runs, a UDP echo probe from the fetcher to the provider (every 50 ms, from 1.5 s in to the
//! end) measures the round trip as another flow on the link sees it; the idle round trip is measured
//! first. `--ladder-cc cubic,bbr,...` repeats the rungs once per congestion controller (both ends and the
//! raw baseline get it); the default is the Endpoint's own.
//!
//! A rung fails (and with it the run) when a mode does not connect, delivers wrong bytes, or when the
//! direct mode does not end on the direct path or falls back to the relay after having gone direct (the
//! direct path must survive random loss). The issue's targets (direct at least 0.8 x relay-only on every
//! rung, at least half the link rate at 2% loss and 40 ms, RTT under load at most twice the idle RTT on a
//! clean link) are judged in the report as met or missed; they do not fail the run, since one CI run on a
//! shared 2-core machine is no benchmark.

use std::{
    fmt, thread,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    contract::{FetchResult, FetcherLine, PathKind, PeerCmd, parse_fetcher_line},
    probe::EchoReport,
    shaper::{Burst, Dir, LinkParams},
    sys::{NoLine, NsProcess, Pipes, Run},
    topo::{self, Kind, Spec, Topology},
    transfer::{SeenEvent, Transfer},
};

/// The echo server's UDP port on the provider's host.
const ECHO_PORT: u16 = 7777;
/// The raw quinn server's UDP port on the provider's host.
const QUIC_PORT: u16 = 4433;
/// The provider's size in the time-bounded transfers: more than any rung can move.
const ENDLESS: u64 = 1 << 40;
/// Echo probes while a mode runs: one every this many milliseconds.
const ECHO_INTERVAL_MS: u64 = 50;
/// The echo probe starts this long after the fetcher (past connection setup and slow start's first burst).
const ECHO_DELAY: Duration = Duration::from_millis(1500);

/// The bursty rung's Gilbert-Elliott chain: bad for 1 in 26 frames in runs of 4 on average, half of them
/// lost there: 1.9% of frames lost, in clusters.
pub(crate) const BURSTY: Burst = Burst {
    enter_ppm: 10_000,
    leave_ppm: 250_000,
    bad_loss_ppm: 500_000,
};

/// The loss on a rung's bottleneck link, each way.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Loss {
    /// Independent random loss of this many percent of frames.
    Random(f64),
    /// Gilbert-Elliott bursts ([`BURSTY`]).
    Bursty,
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loss::Random(p) => write!(f, "{p}%"),
            Loss::Bursty => write!(
                f,
                "bursty {:.1}% (bad runs of {:.0} frames)",
                BURSTY.mean_loss(0) * 100.0,
                BURSTY.mean_burst_frames()
            ),
        }
    }
}

/// One rung: a round trip and a loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Rung {
    /// The round trip between the two hosts without queueing, milliseconds (a quarter on each access link,
    /// each way).
    pub(crate) rtt_ms: u64,
    /// The bottleneck link's loss.
    pub(crate) loss: Loss,
}

impl Rung {
    /// Parses `40ms:2%`, `100ms:0`, `40ms:bursty` (the `ms` and `%` are optional).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let (rtt, loss) = text
            .split_once(':')
            .ok_or_else(|| format!("rung {text}: expected RTT:LOSS, e.g. 40ms:2%"))?;
        let rtt_ms: u64 = rtt
            .trim_end_matches("ms")
            .parse()
            .map_err(|e| format!("rung {text}: round trip {rtt}: {e}"))?;
        if !rtt_ms.is_multiple_of(4) || rtt_ms == 0 {
            return Err(format!(
                "rung {text}: the round trip must be a positive multiple of 4 ms (a quarter per link and way)"
            ));
        }
        let loss = match loss {
            "bursty" | "ge" => Loss::Bursty,
            random => {
                let percent: f64 = random
                    .trim_end_matches('%')
                    .parse()
                    .map_err(|e| format!("rung {text}: loss {random}: {e}"))?;
                if !(0.0..50.0).contains(&percent) {
                    return Err(format!("rung {text}: loss must be between 0 and 50%"));
                }
                Loss::Random(percent)
            }
        };
        Ok(Self { rtt_ms, loss })
    }

    /// The full ladder: 0, 1, 2 and 5% random loss and bursty loss, at 40 and 100 ms.
    pub(crate) fn full() -> Vec<Self> {
        [40, 100]
            .into_iter()
            .flat_map(|rtt_ms| {
                [
                    Loss::Random(0.0),
                    Loss::Random(1.0),
                    Loss::Random(2.0),
                    Loss::Random(5.0),
                    Loss::Bursty,
                ]
                .map(|loss| Self { rtt_ms, loss })
            })
            .collect()
    }

    /// The shortened ladder CI runs: the 40 ms rungs without 1%, and 2% at 100 ms.
    pub(crate) fn short() -> Vec<Self> {
        let mut rungs: Vec<Self> = [
            Loss::Random(0.0),
            Loss::Random(2.0),
            Loss::Random(5.0),
            Loss::Bursty,
        ]
        .map(|loss| Self { rtt_ms: 40, loss })
        .to_vec();
        rungs.push(Self {
            rtt_ms: 100,
            loss: Loss::Random(2.0),
        });
        rungs
    }

    fn bottleneck(&self) -> LinkParams {
        let link = LinkParams::delay_ms(self.rtt_ms / 4);
        match self.loss {
            Loss::Random(p) => link.with_loss_percent(p),
            Loss::Bursty => link.with_burst(BURSTY),
        }
    }

    /// The long-run loss each way, percent.
    fn loss_percent(&self) -> f64 {
        match self.loss {
            Loss::Random(p) => p,
            Loss::Bursty => BURSTY.mean_loss(0) * 100.0,
        }
    }
}

/// What is measured on each rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LadderMode {
    /// The Endpoint, holepunched direct path.
    Direct,
    /// The Endpoint, relay only.
    Relay,
    /// Raw quinn to the provider's public address.
    Raw,
}

impl LadderMode {
    fn name(self) -> &'static str {
        match self {
            LadderMode::Direct => "direct",
            LadderMode::Relay => "relay",
            LadderMode::Raw => "raw",
        }
    }
}

/// How the ladder runs.
#[derive(Debug, Clone)]
pub(crate) struct LadderOptions {
    /// The rungs, in order.
    pub(crate) rungs: Vec<Rung>,
    /// The modes per rung.
    pub(crate) modes: Vec<LadderMode>,
    /// Congestion controllers to run every rung with (`None`: the peers' default).
    pub(crate) congestion: Vec<Option<String>>,
    /// Seconds per mode.
    pub(crate) secs: f64,
    /// The bottleneck's rate.
    pub(crate) rate_mbit: u32,
    /// The bottleneck's queue, in milliseconds at its rate.
    pub(crate) queue_ms: u32,
    /// The peer program (the transfer example: it needs `--duration-secs`, `--relay-only`, `--congestion`).
    pub(crate) peer: PeerCmd,
    /// The `iroh-bench` binary (for `quic-peer`).
    pub(crate) quic_peer: std::path::PathBuf,
    /// The relay binary.
    pub(crate) relay_bin: std::path::PathBuf,
    /// Relay over TLS.
    pub(crate) relay_tls: bool,
    /// The shaper's seed.
    pub(crate) seed: u64,
}

/// One mode's run on a rung.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ModeRun {
    /// Which mode.
    pub(crate) mode: LadderMode,
    /// The fetcher's result.
    pub(crate) result: Option<FetchResult>,
    /// Why there is none.
    pub(crate) error: Option<String>,
    /// Round trips of the echo probe while it ran.
    pub(crate) loaded_rtt: Option<EchoReport>,
    /// Path events (direct and relay modes).
    pub(crate) path_events: Vec<SeenEvent>,
    /// Frames the shaper dropped for loss on the bottleneck link, and frames it passed, both directions.
    pub(crate) frames_dropped: u64,
    /// Frames offered to the bottleneck link, both directions.
    pub(crate) frames_in: u64,
}

impl ModeRun {
    fn goodput(&self) -> Option<f64> {
        self.result.map(|r| r.throughput_mbps)
    }

    /// How often the path went from direct back to the relay.
    fn fallbacks(&self) -> usize {
        self.path_events
            .windows(2)
            .filter(|w| w[0].path == PathKind::Direct && w[1].path == PathKind::Relay)
            .count()
    }
}

/// One rung's outcome, for one congestion controller.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RungReport {
    /// The rung.
    pub(crate) rung: Rung,
    /// The congestion controller (`None`: the default).
    pub(crate) congestion: Option<String>,
    /// The idle round trip.
    pub(crate) idle_rtt: Option<EchoReport>,
    /// The modes.
    pub(crate) runs: Vec<ModeRun>,
    /// Failures (hard).
    pub(crate) reasons: Vec<String>,
    /// Targets met or missed (soft).
    pub(crate) targets: Vec<(String, bool)>,
    /// Seconds for the rung.
    pub(crate) wall_secs: f64,
}

impl RungReport {
    fn run(&self, mode: LadderMode) -> Option<&ModeRun> {
        self.runs.iter().find(|r| r.mode == mode)
    }

    fn goodput(&self, mode: LadderMode) -> Option<f64> {
        self.run(mode).and_then(ModeRun::goodput)
    }

    /// Whether the rung passed (its hard checks).
    pub(crate) fn passed(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// Runs the ladder, printing progress.
pub(crate) fn run(run: &Run, options: &LadderOptions) -> Vec<RungReport> {
    let mut reports = Vec::new();
    let total = options.rungs.len() * options.congestion.len();
    for cc in &options.congestion {
        for rung in &options.rungs {
            let started = Instant::now();
            let label = format!(
                "ladder{:02}-{}ms-{}",
                reports.len() + 1,
                rung.rtt_ms,
                match rung.loss {
                    Loss::Random(p) => format!("{p}pct").replace('.', "_"),
                    Loss::Bursty => "bursty".to_owned(),
                }
            );
            let mut report = RungReport {
                rung: *rung,
                congestion: cc.clone(),
                idle_rtt: None,
                runs: Vec::new(),
                reasons: Vec::new(),
                targets: Vec::new(),
                wall_secs: 0.0,
            };
            if let Err(e) = run_rung(run, options, &mut report, &label) {
                report.reasons.push(e);
            }
            judge(&mut report, options);
            report.wall_secs = started.elapsed().as_secs_f64();
            println!(
                "ladder {}/{total}: {} ms, loss {}, {}: {}",
                reports.len() + 1,
                rung.rtt_ms,
                rung.loss,
                cc.as_deref().unwrap_or("default cc"),
                summary(&report)
            );
            for reason in &report.reasons {
                println!("    FAIL: {reason}");
            }
            reports.push(report);
        }
    }
    reports
}

fn summary(report: &RungReport) -> String {
    report
        .runs
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.mode.name(),
                r.goodput()
                    .map_or_else(|| "-".to_owned(), |g| format!("{g:.1} Mbit/s"))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn run_rung(
    run: &Run,
    options: &LadderOptions,
    report: &mut RungReport,
    label: &str,
) -> Result<(), String> {
    let rung = report.rung;
    let mut topo = Topology::build(
        run,
        &Spec {
            sites: vec![Kind::Public, Kind::Home],
            probe_server: false,
            shaping: Some(LinkParams::delay_ms(rung.rtt_ms / 4)),
            relay_tls: options.relay_tls,
            relay_bin: options.relay_bin.clone(),
            seed: options.seed,
            portmap: super::upnp::Protocols::ALL,
        },
    )?;
    topo.shape(1, Dir::Both, rung.bottleneck())?;
    topo.limit_rate(1, options.rate_mbit, options.queue_ms)?;
    let provider = topo.site(0)?.clone();
    let fetcher = topo.site(1)?.clone();
    let echo_to = format!("{}:{ECHO_PORT}", provider.host_ip);
    let _echo_server = start_echo_server(run, &provider.host_ns, &echo_to, label)?;
    report.idle_rtt = Some(topo::probe_json(
        &fetcher.host_ns,
        &[
            "echo",
            "--to",
            &echo_to,
            "--count",
            "40",
            "--interval-us",
            "25000",
            "--linger-ms",
            "1000",
        ],
    )?);
    for &mode in &options.modes {
        let (before_ab, before_ba) = topo.shaper_stats(1)?;
        let mut outcome = ModeRun {
            mode,
            result: None,
            error: None,
            loaded_rtt: None,
            path_events: Vec::new(),
            frames_dropped: 0,
            frames_in: 0,
        };
        let label = format!("{label}-{}", mode.name());
        let measured = match mode {
            LadderMode::Direct | LadderMode::Relay => {
                run_transfer(&topo, options, report, mode, &label, &mut outcome)
            }
            LadderMode::Raw => run_raw(&topo, options, report, &label, &mut outcome),
        };
        if let Err(e) = measured {
            outcome.error = Some(e);
        }
        let (after_ab, after_ba) = topo.shaper_stats(1)?;
        outcome.frames_dropped =
            after_ab.dropped + after_ba.dropped - before_ab.dropped - before_ba.dropped;
        outcome.frames_in =
            after_ab.frames_in + after_ba.frames_in - before_ab.frames_in - before_ba.frames_in;
        report.runs.push(outcome);
    }
    Ok(())
}

fn start_echo_server(run: &Run, ns: &str, addr: &str, label: &str) -> Result<NsProcess, String> {
    let mut server = NsProcess::spawn(
        "echo-server",
        ns,
        &topo::self_exe()?,
        &[
            "netsim-probe".to_owned(),
            "serve".to_owned(),
            "--udp".to_owned(),
            addr.to_owned(),
        ],
        &run.dir().join(format!("{label}-echo-server.log")),
        Pipes {
            stdin: true,
            stdout: true,
        },
    )?;
    match server.next_line(Duration::from_secs(10)) {
        Ok(line) if line == "ready" => Ok(server),
        other => Err(format!(
            "the echo server did not start ({other:?}):\n{}",
            server.log_tail(10)
        )),
    }
}

/// Starts the echo probe for the rest of a mode's run (after [`ECHO_DELAY`]).
fn start_loaded_echo(
    topo: &Topology<'_>,
    options: &LadderOptions,
    label: &str,
) -> Result<NsProcess, String> {
    let fetcher = topo.site(1)?;
    let provider = topo.site(0)?;
    let probing = (options.secs - ECHO_DELAY.as_secs_f64() - 0.5).max(1.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let count = (probing * 1000.0 / ECHO_INTERVAL_MS as f64).round() as u64;
    topo::spawn_probe(
        topo.run(),
        &fetcher.host_ns,
        &[
            "echo".to_owned(),
            "--to".to_owned(),
            format!("{}:{ECHO_PORT}", provider.host_ip),
            "--count".to_owned(),
            count.to_string(),
            "--interval-us".to_owned(),
            (ECHO_INTERVAL_MS * 1000).to_string(),
            "--linger-ms".to_owned(),
            "1000".to_owned(),
        ],
        &format!("{label}-echo"),
    )
}

fn congestion_args(report: &RungReport) -> Vec<String> {
    report
        .congestion
        .iter()
        .flat_map(|cc| ["--congestion".to_owned(), cc.clone()])
        .collect()
}

fn run_transfer(
    topo: &Topology<'_>,
    options: &LadderOptions,
    report: &RungReport,
    mode: LadderMode,
    label: &str,
    outcome: &mut ModeRun,
) -> Result<(), String> {
    let mut peer = options.peer.clone();
    let mut both = congestion_args(report);
    if mode == LadderMode::Relay {
        both.push("--relay-only".to_owned());
    }
    peer.provide_extra.extend(both.iter().cloned());
    peer.fetch_extra.extend(both);
    peer.fetch_extra
        .extend(["--duration-secs".to_owned(), options.secs.to_string()]);
    let mut transfer = Transfer::start(topo, &peer, (0, 1), ENDLESS, label)?;
    let echo = wait_then(ECHO_DELAY, || start_loaded_echo(topo, options, label));
    let result = transfer.finish(transfer.started + Duration::from_secs_f64(options.secs + 60.0));
    transfer.stop();
    outcome.path_events = transfer.events.clone();
    outcome.loaded_rtt = finish_echo(echo);
    outcome.result = Some(result?);
    Ok(())
}

fn wait_then<T>(delay: Duration, f: impl FnOnce() -> T) -> T {
    thread::sleep(delay);
    f()
}

fn finish_echo(echo: Result<NsProcess, String>) -> Option<EchoReport> {
    let mut echo = echo.ok()?;
    topo::wait_probe_json(&mut echo, Duration::from_secs(30)).ok()
}

fn run_raw(
    topo: &Topology<'_>,
    options: &LadderOptions,
    report: &RungReport,
    label: &str,
    outcome: &mut ModeRun,
) -> Result<(), String> {
    let provider = topo.site(0)?;
    let fetcher = topo.site(1)?;
    let run = topo.run();
    let pipes = Pipes {
        stdin: false,
        stdout: true,
    };
    let mut serve_args = vec![
        "quic-peer".to_owned(),
        "serve".to_owned(),
        "--bind".to_owned(),
        format!("{}:{QUIC_PORT}", provider.host_ip),
    ];
    serve_args.extend(congestion_args(report));
    let mut server = NsProcess::spawn(
        "quic-server",
        &provider.host_ns,
        &options.quic_peer,
        &serve_args,
        &run.dir().join(format!("{label}-server.log")),
        pipes,
    )?;
    let line = server.next_line(Duration::from_secs(10)).map_err(|e| {
        format!(
            "the raw quinn server did not start ({e:?}):\n{}",
            server.log_tail(10)
        )
    })?;
    let hello: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| format!("raw quinn server said {line:?}: {e}"))?;
    let node_id = hello["node_id"]
        .as_str()
        .ok_or_else(|| format!("raw quinn server said {line:?}"))?
        .to_owned();
    let mut fetch_args = vec![
        "quic-peer".to_owned(),
        "fetch".to_owned(),
        "--to".to_owned(),
        format!("{}:{QUIC_PORT}", provider.host_ip),
        "--node-id".to_owned(),
        node_id,
        "--duration-secs".to_owned(),
        options.secs.to_string(),
    ];
    fetch_args.extend(congestion_args(report));
    let mut client = NsProcess::spawn(
        "quic-fetcher",
        &fetcher.host_ns,
        &options.quic_peer,
        &fetch_args,
        &run.dir().join(format!("{label}-fetcher.log")),
        pipes,
    )?;
    let echo = wait_then(ECHO_DELAY, || start_loaded_echo(topo, options, label));
    let deadline = Instant::now() + Duration::from_secs_f64(options.secs + 60.0);
    let result = loop {
        match client.next_line(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let FetcherLine::Result(result) = parse_fetcher_line(&line) {
                    break Ok(result);
                }
            }
            Err(NoLine::Timeout) => break Err("the raw quinn fetcher gave no result".to_owned()),
            Err(NoLine::Closed) => {
                break Err(format!(
                    "the raw quinn fetcher ended without a result:\n{}",
                    client.log_tail(10)
                ));
            }
        }
    };
    outcome.loaded_rtt = finish_echo(echo);
    server.stop(Duration::from_secs(1));
    outcome.result = Some(result?);
    Ok(())
}

/// Fills in a rung's hard failures and its targets.
fn judge(report: &mut RungReport, options: &LadderOptions) {
    let link = f64::from(options.rate_mbit);
    for run in &report.runs {
        let name = run.mode.name();
        match (&run.result, &run.error) {
            (None, Some(e)) => report
                .reasons
                .push(format!("{name}: {}", e.lines().next().unwrap_or("?"))),
            (None, None) => report.reasons.push(format!("{name}: no result")),
            (Some(r), _) => {
                if !r.hash_ok {
                    report.reasons.push(format!("{name}: wrong bytes"));
                }
                if r.bytes == 0 {
                    report.reasons.push(format!("{name}: no bytes"));
                }
            }
        }
        if run.mode == LadderMode::Direct {
            if let Some(r) = &run.result
                && r.final_path != PathKind::Direct
            {
                report.reasons.push("direct: ended on the relay".to_owned());
            }
            if run.fallbacks() > 0 {
                report.reasons.push(format!(
                    "direct: fell back to the relay {} time(s) after going direct",
                    run.fallbacks()
                ));
            }
        }
    }
    if let (Some(direct), Some(relay)) = (
        report.goodput(LadderMode::Direct),
        report.goodput(LadderMode::Relay),
    ) {
        report.targets.push((
            format!("direct >= 0.8 x relay-only ({:.2})", direct / relay),
            direct >= 0.8 * relay,
        ));
    }
    if report.rung.rtt_ms == 40
        && report.rung.loss == Loss::Random(2.0)
        && let Some(direct) = report.goodput(LadderMode::Direct)
    {
        report.targets.push((
            format!("direct >= 50% of the link ({:.0}%)", 100.0 * direct / link),
            direct >= 0.5 * link,
        ));
    }
    if report.rung.loss == Loss::Random(0.0)
        && let (Some(idle), Some(loaded)) = (
            report.idle_rtt.as_ref(),
            report
                .run(LadderMode::Direct)
                .and_then(|r| r.loaded_rtt.as_ref()),
        )
        && idle.rtt_p50_ms > 0.0
    {
        let ratio = loaded.rtt_p50_ms / idle.rtt_p50_ms;
        report.targets.push((
            format!("RTT under load <= 2 x idle ({ratio:.2})"),
            ratio <= 2.0,
        ));
    }
}

/// The ladder as markdown: one row per rung and controller.
pub(crate) fn markdown(reports: &[RungReport], options: &LadderOptions) -> String {
    let mut md = format!(
        "### Loss ladder ({} Mbit/s bottleneck with a {} ms queue, {} s per mode)\n\n\
         | RTT | loss each way | cc | direct Mbit/s | relay-only | raw quinn | direct / relay | direct / raw | \
         direct / link | idle RTT | RTT under load (direct, relay, raw) p50 | verdict |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        options.rate_mbit, options.queue_ms, options.secs
    );
    let link = f64::from(options.rate_mbit);
    for r in reports {
        let g = |m| r.goodput(m);
        let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".to_owned(),
        };
        let loaded = [LadderMode::Direct, LadderMode::Relay, LadderMode::Raw]
            .map(|m| {
                r.run(m)
                    .and_then(|run| run.loaded_rtt.as_ref())
                    .map_or_else(|| "-".to_owned(), |e| format!("{:.0}", e.rtt_p50_ms))
            })
            .join(" / ");
        let mut verdict: Vec<String> = r.reasons.iter().map(|x| format!("FAIL: {x}")).collect();
        verdict.extend(
            r.targets
                .iter()
                .map(|(what, met)| format!("{} {what}", if *met { "met" } else { "MISSED" })),
        );
        if verdict.is_empty() {
            verdict.push("ok".to_owned());
        }
        md.push_str(&format!(
            "| {} ms | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ms | {} |\n",
            r.rung.rtt_ms,
            r.rung.loss,
            r.congestion.as_deref().unwrap_or("default"),
            fmt(g(LadderMode::Direct)),
            fmt(g(LadderMode::Relay)),
            fmt(g(LadderMode::Raw)),
            ratio(g(LadderMode::Direct), g(LadderMode::Relay)),
            ratio(g(LadderMode::Direct), g(LadderMode::Raw)),
            g(LadderMode::Direct)
                .map_or_else(|| "-".to_owned(), |d| format!("{:.0}%", 100.0 * d / link)),
            r.idle_rtt
                .as_ref()
                .map_or_else(|| "-".to_owned(), |e| format!("{:.1} ms", e.rtt_p50_ms)),
            loaded,
            verdict.join("; ")
        ));
    }
    let measured: Vec<String> = reports
        .iter()
        .filter_map(|r| {
            let (dropped, offered) = r.runs.iter().fold((0, 0), |(d, o), run| {
                (d + run.frames_dropped, o + run.frames_in)
            });
            #[allow(clippy::cast_precision_loss)]
            (offered > 0).then(|| {
                format!(
                    "{} ms / {}: {:.2}% of {offered} frames (configured {:.2}%)",
                    r.rung.rtt_ms,
                    r.rung.loss,
                    100.0 * dropped as f64 / offered as f64,
                    r.rung.loss_percent()
                )
            })
        })
        .collect();
    if !measured.is_empty() {
        md.push_str("\nLoss the shaper applied on the bottleneck link (all modes, both ways): ");
        md.push_str(&measured.join("; "));
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_parse() {
        assert_eq!(
            Rung::parse("40ms:2%"),
            Ok(Rung {
                rtt_ms: 40,
                loss: Loss::Random(2.0)
            })
        );
        assert_eq!(
            Rung::parse("100:bursty"),
            Ok(Rung {
                rtt_ms: 100,
                loss: Loss::Bursty
            })
        );
        assert!(Rung::parse("42ms:1%").is_err(), "not a multiple of 4");
        assert!(Rung::parse("40ms").is_err());
        assert!(Rung::parse("40ms:60%").is_err());
        assert_eq!(Rung::full().len(), 10);
        assert_eq!(Rung::short().len(), 5);
        assert_eq!(
            Rung::parse("40:5").map(|r| r.bottleneck().loss_ppm),
            Ok(50_000)
        );
        assert_eq!(
            Rung::parse("40:ge").map(|r| r.bottleneck().burst),
            Ok(Some(BURSTY))
        );
    }

    #[test]
    fn fallbacks_count_direct_to_relay_only() {
        let event = |path, ms| SeenEvent {
            path,
            elapsed_ms: ms,
        };
        let run = ModeRun {
            mode: LadderMode::Direct,
            result: None,
            error: None,
            loaded_rtt: None,
            path_events: vec![
                event(PathKind::Relay, 10.0),
                event(PathKind::Direct, 300.0),
                event(PathKind::Relay, 4000.0),
                event(PathKind::Direct, 4500.0),
            ],
            frames_dropped: 0,
            frames_in: 0,
        };
        assert_eq!(run.fallbacks(), 1);
    }
}
