//! `cargo xtask netsim`: small internets of Linux network namespaces with nftables NAT routers, to prove that
//! two peers behind all kinds of NAT connect, directly where possible and through the relay otherwise.
//!
//! Needs root (namespaces, veth and TAP devices, nftables), `ip`, `nft`, `tc`, `sysctl`, `/dev/net/tun`, and
//! for the `upnp` kind Debian's `miniupnpd` (`miniupnpd-nftables`) and `upnpc` (`miniupnpc`); without them it
//! fails, naming what is missing. It never sends a packet outside the namespaces it creates
//! (the simulated internet is 198.18.0.0/15, homes are 10.x.1.0/24, carrier-grade segments 100.64.x.0/24).
//!
//! ```text
//! cargo xtask netsim --self-test                 # is the simulated internet right? (~30 s)
//! cargo xtask netsim                             # self-test, NAT matrix, fault scenarios, with the stand-in peer
//! cargo xtask netsim --peer-cmd target/debug/examples/transfer --ladder full --ladder-cc cubic,bbr,model
//! cargo xtask netsim --peer-cmd target/debug/examples/transfer --json-out netsim.json
//! cargo xtask netsim --pairs home:symmetric,symmetric:home --faults none
//! cargo xtask netsim --peer-cmd target/debug/examples/transfer --pairs upnp:symmetric --trials 20
//! cargo xtask netsim --cleanup                   # remove what crashed runs left behind
//! ```
//!
//! Parts, in the order a run uses them:
//!
//! - [`topo`]: builds one internet (relay, sites of the chosen [`topo::Kind`]s, optional probe server) and
//!   tears it down when dropped; [`nat`] holds the router rulesets; [`sys`] runs commands and processes in
//!   namespaces and guarantees teardown (drop, panic, SIGINT/SIGTERM, `--cleanup`).
//! - [`shaper`]: the user-space link shaper (delay, jitter, seeded random or Gilbert-Elliott bursty loss;
//!   this kernel has no netem), measured by [`measure`].
//! - [`selftest`]: STUN probes per NAT kind (mapping and filtering), the shaper's figures, the fault
//!   machinery. Every matrix run starts with it (skip with `--skip-self-test`): a matrix on a wrong internet
//!   would prove nothing.
//! - [`matrix`]: every ordered pair of kinds in a fresh topology, judged against [`matrix::expect_direct`];
//!   [`faults`]: direct path dropped and restored, relay killed and restarted, 2% loss at 100 ms, a pair
//!   that dials by NodeId alone through the discovery server in the relay process, a pair on one LAN as well
//!   that finds itself by mDNS and must pick the LAN path over the public and relay ones, and [`portmap`]:
//!   per port-mapping protocol (UPnP IGD, NAT-PMP, PCP, each offered alone by miniupnpd, see [`upnp`]),
//!   the mapping made, used, renewed and removed;
//!   [`ladder`]: goodput direct, relay-only and raw quinn, and RTT under load, on a rate-limited link with
//!   random and bursty loss at 40 and 100 ms.
//! - [`contract`]: the peer-program interface (flags and JSON lines); [`peer`] is a stand-in that follows
//!   it (CI drives the real `transfer` example), and [`transfer`] runs a provider and a fetcher.
//! - [`probe`]: the network probes the self-test runs inside the namespaces.
//!
//! Output: markdown on standard output, and everything as JSON with `--json-out FILE`. The exit code is
//! non-zero on any failure; the run directory with every log is then kept and named.
//!
//! `--trials N` runs each matrix pair N times in fresh topologies; the matrix cells then give the count of
//! direct trials and the median and longest time to direct (CI runs one trial).
//!
//! Time on 2 cores with the transfer example: self-test about 30 s; the matrix (64 pairs of 20 MB, as CI
//! runs it) about 7 minutes; faults about three minutes; the short ladder (5 rungs, 3 modes, 8 s
//! each) about 2.5 minutes. `cargo xtask ci` runs all of it.
//! `cargo test -p xtask --test netsim -- --ignored` runs the self-test as a test (root and a built relay
//! needed; see `xtask/tests/netsim.rs`).

mod contract;
mod faults;
mod ladder;
pub(crate) mod lan;
pub(crate) mod lan_helpers;
mod matrix;
mod measure;
mod nat;
pub(crate) mod peer;
mod portmap;
pub(crate) mod probe;
mod selftest;
pub(crate) mod shaper;
mod sys;
mod topo;
mod transfer;
mod upnp;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use serde::Serialize;

use self::{
    contract::PeerCmd,
    faults::{FaultOptions, FaultReport},
    ladder::{LadderMode, LadderOptions, Rung, RungReport},
    matrix::{MatrixOptions, PairReport},
    selftest::SelfTestReport,
    sys::Run,
    topo::Kind,
};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask netsim",
    bin_name = "cargo xtask netsim",
    about = "NAT matrix in network namespaces (root): self-test, pairs of NAT kinds, fault scenarios"
)]
struct Args {
    /// Only check the simulated internet: NAT behaviour per kind, the shaper, the fault machinery.
    #[arg(long)]
    self_test: bool,
    /// Remove the namespaces, processes and run directories of runs whose owner is gone.
    #[arg(long)]
    cleanup: bool,
    /// With --cleanup: also of runs whose owner still runs.
    #[arg(long, requires = "cleanup")]
    force: bool,
    /// The peer program, "PATH [ARGS...]" (e.g. target/debug/examples/transfer); default: the stand-in.
    #[arg(long)]
    peer_cmd: Option<String>,
    /// Extra arguments for every provider, after the contract's (e.g. "--verbose").
    #[arg(long, allow_hyphen_values = true)]
    provide_args: Option<String>,
    /// Extra arguments for every fetcher, after the contract's.
    #[arg(long, allow_hyphen_values = true)]
    fetch_args: Option<String>,
    /// Kinds in the matrix (default: all): public, full-cone, home, address-restricted, symmetric,
    /// double-nat, udp-blocked.
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<Kind>,
    /// Explicit PROVIDER:FETCHER pairs instead of all pairs of --kinds.
    #[arg(long, value_delimiter = ',', value_parser = parse_pair)]
    pairs: Vec<(Kind, Kind)>,
    /// Only one order of each pair of different kinds.
    #[arg(long)]
    one_order: bool,
    /// Runs of each matrix pair, each in a fresh topology (CI: 1); the report gives each pair's count of
    /// direct trials and its median and longest time to direct.
    #[arg(long, default_value_t = 1)]
    trials: u32,
    /// Bytes per matrix transfer.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    size: u64,
    /// One-way delay of every access link in the matrix, in milliseconds.
    #[arg(long, default_value_t = 20)]
    delay_ms: u64,
    /// Random loss of every access link in the matrix, each way, in percent.
    #[arg(long, default_value_t = 2.0)]
    loss_percent: f64,
    /// An expected-direct pair fails when it is not direct this many milliseconds after the fetcher starts.
    #[arg(long, default_value_t = 1000)]
    direct_limit_ms: u64,
    /// Give up on a transfer after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// Write the whole report as JSON here.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Run the matrix without the self-test first.
    #[arg(long)]
    skip_self_test: bool,
    /// Skip the matrix (self-test and faults only).
    #[arg(long)]
    no_matrix: bool,
    /// Fault scenarios to run (default: all): direct-drop, relay-restart, lossy, by-node-id, lan-wins,
    /// portmap-upnp, portmap-nat-pmp, portmap-pcp; "none" for none.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Rate limit of the access links during direct-drop and relay-restart, Mbit/s.
    #[arg(long, default_value_t = 20)]
    fault_rate_mbit: u32,
    /// Bytes of the direct-drop and relay-restart transfers.
    #[arg(long, default_value_t = 60_000_000)]
    fault_size: u64,
    /// Bytes of the lossy transfer.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    lossy_size: u64,
    /// The loss ladder: `short` (5 rungs, what CI runs), `full` (10 rungs), or `none`.
    #[arg(long, value_enum, default_value_t = LadderKind::Short)]
    ladder: LadderKind,
    /// Explicit rungs instead of --ladder's, e.g. "40ms:0,40ms:2%,100ms:bursty".
    #[arg(long, value_delimiter = ',', value_parser = Rung::parse)]
    rungs: Vec<Rung>,
    /// Modes per rung (default all): direct, relay, raw.
    #[arg(long, value_delimiter = ',')]
    ladder_modes: Vec<LadderMode>,
    /// Congestion controllers to repeat the ladder with, passed as `--congestion NAME` to both peers and the
    /// raw quinn baseline (default: the peers' own).
    #[arg(long, value_delimiter = ',')]
    ladder_cc: Vec<String>,
    /// Seconds each mode runs on a rung.
    #[arg(long, default_value_t = 8.0)]
    ladder_secs: f64,
    /// Rate of the ladder's bottleneck link, Mbit/s.
    #[arg(long, default_value_t = 50)]
    ladder_rate_mbit: u32,
    /// Queue of the ladder's bottleneck link, milliseconds at its rate.
    #[arg(long, default_value_t = 100)]
    ladder_queue_ms: u32,
    /// The iroh-bench binary, for the ladder's raw quinn baseline (default: built with `cargo build -p
    /// iroh-bench`).
    #[arg(long)]
    quic_peer: Option<PathBuf>,
    /// The iroh-relay binary (default: built with `cargo build -p iroh-relay`).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// How the relay serves: TLS with a self-signed certificate (peers get --relay-insecure), or plain HTTP.
    #[arg(long, value_enum, default_value_t = RelayTls::SelfSigned)]
    relay_tls: RelayTls,
    /// Seed of the shaper's loss decisions (runs with the same seed drop the same frames).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Keep the run directory (logs, configs) even when everything passed.
    #[arg(long)]
    keep_logs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LadderKind {
    Short,
    Full,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RelayTls {
    SelfSigned,
    Plain,
}

/// Runs one of the helper programs (`xtask netsim-peer ...`, `xtask netsim-probe ...`): parses its command
/// line as `C` (exit code 2 and clap's message when that fails), runs `body` on a current-thread runtime,
/// and maps its outcome to the exit code, printing the error prefixed with `name`.
pub(crate) fn run_helper<C, F, Fut>(name: &str, args: &[String], body: F) -> ExitCode
where
    C: Parser,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let cli = match C::try_parse_from(std::iter::once(name.to_owned()).chain(args.iter().cloned()))
    {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_pair(text: &str) -> Result<(Kind, Kind), String> {
    let (a, b) = text
        .split_once(':')
        .ok_or_else(|| format!("{text}: expected PROVIDER:FETCHER"))?;
    Ok((Kind::from_str(a, true)?, Kind::from_str(b, true)?))
}

/// Everything a run found, for `--json-out`.
#[derive(Debug, Serialize)]
struct Report {
    run_id: String,
    peer_cmd: String,
    stand_in: bool,
    size: u64,
    delay_ms: u64,
    self_test: Option<SelfTestReport>,
    matrix: Vec<PairReport>,
    faults: Vec<FaultReport>,
    ladder: Vec<RungReport>,
    failures: Vec<String>,
    passed: bool,
    secs: f64,
}

/// `cargo xtask netsim ...`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    let args = match Args::try_parse_from(
        std::iter::once("netsim".to_owned()).chain(args.iter().cloned()),
    ) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if args.cleanup {
        return match sys::cleanup_stale(args.force) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("netsim --cleanup: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("netsim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let started = Instant::now();
    let peer = PeerCmd::parse(args.peer_cmd.as_deref())?
        .with_extra(args.provide_args.as_deref(), args.fetch_args.as_deref());
    let run = Run::start()?;
    // A private copy, so a rebuild during the run cannot swap or remove the relay between restarts.
    let relay_bin = run.dir().join("iroh-relay");
    let built = built_binary("iroh-relay", args.relay_bin.as_deref())?;
    std::fs::copy(&built, &relay_bin).map_err(|e| {
        format!(
            "cannot copy {} to {}: {e}",
            built.display(),
            relay_bin.display()
        )
    })?;
    let relay_tls = args.relay_tls == RelayTls::SelfSigned;
    println!("netsim run {} (logs in {})", run.id(), run.dir().display());
    let mut report = Report {
        run_id: run.id().to_owned(),
        peer_cmd: peer.display(),
        stand_in: peer.is_stand_in(),
        size: args.size,
        delay_ms: args.delay_ms,
        self_test: None,
        matrix: Vec::new(),
        faults: Vec::new(),
        ladder: Vec::new(),
        failures: Vec::new(),
        passed: false,
        secs: 0.0,
    };

    if args.self_test || !args.skip_self_test {
        let self_test = selftest::run(&run, &relay_bin, relay_tls, args.seed)?;
        println!("\n{}", self_test.markdown());
        println!("self-test took {:.1} s", self_test.secs);
        report.failures.extend(self_test.problems());
        report.self_test = Some(self_test);
    }
    let go_on = !args.self_test && report.failures.is_empty();
    if !report.failures.is_empty() && !args.self_test {
        println!(
            "\nthe self-test failed: no matrix on a simulated internet that is not what it claims"
        );
    }

    if go_on && !args.no_matrix {
        let options = MatrixOptions {
            pairs: pairs(args),
            size: args.size,
            delay_ms: args.delay_ms,
            loss_percent: args.loss_percent,
            direct_limit: Duration::from_millis(args.direct_limit_ms),
            peer: peer.clone(),
            relay_bin: relay_bin.clone(),
            relay_tls,
            timeout: Duration::from_secs(args.timeout_secs),
            seed: args.seed,
            trials: args.trials,
        };
        println!(
            "\nmatrix: {} pairs, {} bytes each, {} ms and {}% loss each way per access link, direct within {} ms, peer program: {}",
            options.pairs.len(),
            options.size,
            options.delay_ms,
            options.loss_percent,
            args.direct_limit_ms,
            peer.display()
        );
        report.matrix = matrix::run(&run, &options);
        println!("\n{}", matrix::markdown(&report.matrix));
        report
            .failures
            .extend(report.matrix.iter().filter(|r| !r.passed).map(|r| {
                format!(
                    "{} -> {}: {}",
                    r.provider.name(),
                    r.fetcher.name(),
                    r.reasons.join("; ")
                )
            }));
    }

    let which: Vec<String> = if args.faults.is_empty() {
        faults::SCENARIOS.map(str::to_owned).to_vec()
    } else {
        args.faults.clone()
    };
    if let Some(unknown) = which
        .iter()
        .find(|w| *w != "none" && !faults::SCENARIOS.contains(&w.as_str()))
    {
        return Err(format!(
            "unknown fault scenario {unknown}; known: {}",
            faults::SCENARIOS.join(", ")
        ));
    }
    if go_on && !which.iter().any(|w| w == "none") {
        let options = FaultOptions {
            peer: peer.clone(),
            relay_bin: relay_bin.clone(),
            relay_tls,
            delay_ms: args.delay_ms,
            rate_mbit: args.fault_rate_mbit,
            size: args.fault_size,
            lossy_size: args.lossy_size,
            timeout: Duration::from_secs(args.timeout_secs.max(180)),
            seed: args.seed,
        };
        println!();
        report.faults = faults::run(&run, &options, &which);
        println!("\n{}", faults::markdown(&report.faults));
        report.failures.extend(
            report
                .faults
                .iter()
                .filter(|r| !r.passed)
                .map(|r| format!("fault {}: {}", r.name, r.reasons.join("; "))),
        );
    }

    let rungs = if !args.rungs.is_empty() {
        args.rungs.clone()
    } else {
        match args.ladder {
            LadderKind::Short => Rung::short(),
            LadderKind::Full => Rung::full(),
            LadderKind::None => Vec::new(),
        }
    };
    if go_on && !rungs.is_empty() && peer.is_stand_in() {
        println!(
            "\nloss ladder not run: it needs a peer program with --duration-secs, --relay-only and --congestion \
             (--peer-cmd target/debug/examples/transfer); the stand-in has none of them"
        );
    } else if go_on && !rungs.is_empty() {
        let modes = if args.ladder_modes.is_empty() {
            vec![LadderMode::Direct, LadderMode::Relay, LadderMode::Raw]
        } else {
            args.ladder_modes.clone()
        };
        let quic_peer = if modes.contains(&LadderMode::Raw) {
            built_binary("iroh-bench", args.quic_peer.as_deref())?
        } else {
            PathBuf::new()
        };
        let options = LadderOptions {
            rungs,
            modes,
            congestion: if args.ladder_cc.is_empty() {
                vec![None]
            } else {
                args.ladder_cc.iter().cloned().map(Some).collect()
            },
            secs: args.ladder_secs,
            rate_mbit: args.ladder_rate_mbit,
            queue_ms: args.ladder_queue_ms,
            peer: peer.clone(),
            quic_peer,
            relay_bin: relay_bin.clone(),
            relay_tls,
            seed: args.seed,
        };
        println!(
            "\nloss ladder: {} rungs x {} controller(s), {} s per mode, peer program: {}",
            options.rungs.len(),
            options.congestion.len(),
            options.secs,
            peer.display()
        );
        report.ladder = ladder::run(&run, &options);
        println!("\n{}", ladder::markdown(&report.ladder, &options));
        report
            .failures
            .extend(report.ladder.iter().filter(|r| !r.passed()).map(|r| {
                format!(
                    "ladder {} ms / {} ({}): {}",
                    r.rung.rtt_ms,
                    r.rung.loss,
                    r.congestion.as_deref().unwrap_or("default cc"),
                    r.reasons.join("; ")
                )
            }));
    }

    report.passed = report.failures.is_empty();
    report.secs = started.elapsed().as_secs_f64();
    if let Some(path) = &args.json_out {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("JSON report: {}", path.display());
    }
    let checks = report
        .self_test
        .as_ref()
        .map_or(0, |s| s.nat.len() + s.machinery.len() + 1)
        + report.matrix.len()
        + report.faults.len()
        + report.ladder.len();
    if !report.passed {
        println!("\nfailures:");
        for failure in &report.failures {
            println!("  - {failure}");
        }
        run.keep_logs();
    } else if args.keep_logs {
        run.keep_logs();
    }
    println!(
        "netsim: {} passed, {} failed ({:.0} s)",
        checks.saturating_sub(report.failures.len()),
        report.failures.len(),
        report.secs
    );
    Ok(report.passed)
}

/// The (provider, fetcher) pairs the arguments ask for.
fn pairs(args: &Args) -> Vec<(Kind, Kind)> {
    if !args.pairs.is_empty() {
        return args.pairs.clone();
    }
    let kinds: Vec<Kind> = if args.kinds.is_empty() {
        Kind::ALL.to_vec()
    } else {
        Kind::ALL
            .into_iter()
            .filter(|k| args.kinds.contains(k))
            .collect()
    };
    let mut pairs = Vec::new();
    for (i, a) in kinds.iter().enumerate() {
        for (j, b) in kinds.iter().enumerate() {
            if !args.one_order || i <= j {
                pairs.push((*a, *b));
            }
        }
    }
    pairs
}

/// The binary of workspace package `package` (named as the package): the one given, or `cargo build -p
/// PACKAGE`'s.
fn built_binary(package: &str, explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if path.is_file() {
            std::path::absolute(path).map_err(|e| e.to_string())
        } else {
            Err(format!("{}: no such file", path.display()))
        };
    }
    let root = crate::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    println!("building {package}: cargo build -p {package} --bin {package}");
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "-p", package, "--bin", package])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cannot run {cargo} to build {package} (or pass its path): {e}"))?;
    if !status.success() {
        return Err(format!("building {package} failed ({status})"));
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let path = target.join("debug").join(package);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("built {package} but found no {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("netsim").chain(extra.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn pair_selection() {
        assert_eq!(pairs(&args(&[])).len(), 64);
        assert_eq!(pairs(&args(&["--one-order"])).len(), 36);
        assert_eq!(
            pairs(&args(&["--kinds", "home,symmetric"])),
            [
                (Kind::Home, Kind::Home),
                (Kind::Home, Kind::Symmetric),
                (Kind::Symmetric, Kind::Home),
                (Kind::Symmetric, Kind::Symmetric)
            ]
        );
        assert_eq!(
            pairs(&args(&["--pairs", "double-nat:udp-blocked"])),
            [(Kind::DoubleNat, Kind::UdpBlocked)]
        );
        assert!(parse_pair("home").is_err());
        assert!(parse_pair("home:moon").is_err());
    }
}
