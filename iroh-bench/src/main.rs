//! `iroh-bench`: the iroh `Endpoint` measured against raw quinn in the same run, over a direct path and
//! through a relay alone, plus the relay server on its own.
//!
//! ```text
//! cargo run --release -p iroh-bench -- all --json bench.json     # everything (about two minutes)
//! cargo run --release -p iroh-bench -- all --quick               # a smoke run for CI (about half a minute)
//! cargo run --release -p iroh-bench -- throughput --mode raw,direct --size 256MiB
//! cargo run --release -p iroh-bench -- connect --connects 200
//! cargo run --release -p iroh-bench -- relay                      # the relay server alone
//! cargo run --release -p iroh-bench -- memory
//! cargo run --release -p iroh-bench -- discovery                  # 1,000,000 records; needs dnsperf
//! ```
//!
//! Measures (subcommands; none means `all`):
//!
//! - `throughput` ([`throughput`]): one stream of `--size`, `--streams` parallel streams, `--clients`
//!   clients at once; MiB/s and CPU seconds per GiB, every mode in every round.
//! - `connect` ([`connect`]): `--connects` fresh connections per mode; connect time and time to first byte,
//!   median and 90th percentile.
//! - `relay` ([`relay`]): datagrams/s and Gbit/s through the relay server over TLS; its RSS per idle client.
//! - `memory` ([`memory`]): RSS of an idle endpoint against an idle raw quinn endpoint, each in a fresh
//!   child process.
//! - `discovery` ([`discovery`], not part of `all`): connect by NodeId through DNS against by NodeAddr,
//!   publish to resolvable, the discovery server's store filled to `--records` and its DNS under
//!   `dnsperf`.
//! - `hostile` ([`hostile`], not part of `all`): the relay server's memory per connection that never
//!   finishes its request head or login, after they close, and under a receiver that never reads.
//!
//! Modes (`--mode`, comma-separated; default all): `raw` quinn, the endpoint `direct`, the endpoint
//! `relay`-only ([`setup`] says how they are made alike). The relay is a real iroh-relay server with a
//! self-signed TLS certificate, in a child process of its own ([`relay_proc`] says why).
//!
//! Runtimes: the dialling side and the accepting side each run on a tokio runtime of their own with
//! `--side-threads` workers (default 1), as two hosts would; both are in this process, so the CPU figures
//! cover both ends. (With one shared two-worker runtime, tokio's LIFO wake-up slot sometimes kept both
//! ends of a transfer on one worker for a whole round, and rounds came out at either ~500 or ~1000 MiB/s:
//! a coin flip per round, for raw quinn and the endpoint alike.) The relay process has its own runtime,
//! one worker per core (`--relay-threads`). On a 2-core machine all of it competes for the same cores: a
//! ratio measured in one run is the figure to trust; absolute rates move with the machine's load.
//!
//! Other knobs: `--shape single,streams,clients` picks throughput shapes; `--stream-window 16MiB` sets the
//! stream receive window of every connection in every mode (the default is the Endpoint's).
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark binary reports on stdout and shows progress on stderr"
)]

mod connect;
mod discovery;
mod hostile;
mod memory;
mod peak;
mod quic_peer;
mod relay;
mod relay_proc;
mod report;
mod setup;
mod sys;
mod throughput;

use std::{path::PathBuf, process::ExitCode, time::Instant};

use clap::{Parser, Subcommand};

use crate::{
    memory::IdleKind,
    relay_proc::RelayProcess,
    report::{Report, Results},
    setup::{Bed, Mode},
    throughput::Shape,
};

/// Every fallible function's result.
type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// The iroh Endpoint against raw quinn (same run, interleaved), relay-only paths, and the relay server.
#[derive(Debug, Parser)]
#[command(name = "iroh-bench", version)]
struct Cli {
    /// What to measure (default: all).
    #[command(subcommand)]
    command: Option<Measure>,
    /// Modes to compare, comma-separated: raw, direct, relay (default: all three).
    #[arg(long, global = true, value_delimiter = ',')]
    mode: Vec<Mode>,
    /// Throughput shapes, comma-separated: single, streams, clients (default: all three).
    #[arg(long, global = true, value_delimiter = ',')]
    shape: Vec<ShapeKind>,
    /// Bytes moved per throughput round, in total over its streams or clients: 1GiB, 256MiB, 1000000, ...
    /// (default 1GiB; --quick 64MiB).
    #[arg(long, global = true, value_parser = parse_size)]
    size: Option<u64>,
    /// Parallel streams on one connection (default 4).
    #[arg(long, global = true)]
    streams: Option<usize>,
    /// Clients at once, each with its own endpoint (default 10).
    #[arg(long, global = true)]
    clients: Option<usize>,
    /// Fresh connections per mode for connect times (default 100; --quick 10).
    #[arg(long, global = true)]
    connects: Option<usize>,
    /// Throughput rounds per mode and shape; the median is reported (default 3; --quick 1).
    #[arg(long, global = true)]
    rounds: Option<usize>,
    /// Seconds of each relay-server throughput run (default 5; --quick 1).
    #[arg(long, global = true)]
    relay_secs: Option<f64>,
    /// Idle clients for the relay's memory per client (default 1000; --quick 100).
    #[arg(long, global = true)]
    idle_clients: Option<usize>,
    /// Child processes per kind for idle memory, and per mode for peak memory (default 3; --quick 1).
    #[arg(long, global = true)]
    memory_reps: Option<usize>,
    /// Bytes moved over one stream while peak memory is measured (default 256MiB; --quick 32MiB).
    #[arg(long, global = true, value_parser = parse_size)]
    peak_size: Option<u64>,
    /// Stream receive window of every connection in every mode (default: the Endpoint's, 8 MiB); the
    /// connection and send windows are set to twice it, as the Endpoint's defaults are.
    #[arg(long, global = true, value_parser = parse_size)]
    stream_window: Option<u64>,
    /// Congestion controller of every connection in every mode: cubic, new-reno, bbr or model (default:
    /// the Endpoint's).
    #[arg(long, global = true)]
    congestion: Option<iroh_net::congestion::CongestionControl>,
    /// Worker threads of each side's tokio runtime (the dialling side and the accepting side run on two
    /// runtimes of their own; default 1).
    #[arg(long, global = true)]
    side_threads: Option<usize>,
    /// Worker threads of the relay process's runtime (default: one per core, as the iroh-relay binary).
    #[arg(long, global = true)]
    relay_threads: Option<usize>,
    /// A fast smoke run with small sizes and counts (for CI); explicit options still win.
    #[arg(long, global = true)]
    quick: bool,
    /// Also write the report, with every sample, as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

/// A throughput shape, as chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
enum ShapeKind {
    /// One stream.
    Single,
    /// `--streams` streams on one connection.
    Streams,
    /// `--clients` clients at once.
    Clients,
}

#[derive(Debug, Clone, PartialEq, Subcommand)]
enum Measure {
    /// Every measure below.
    All,
    /// Throughput (one stream, parallel streams, many clients) and CPU time per GiB.
    Throughput,
    /// Connect time and time to first byte over fresh connections.
    Connect,
    /// The relay server: datagrams/s and Gbit/s through it over TLS, RSS per idle client.
    Relay,
    /// RSS of an idle endpoint against an idle raw quinn endpoint, and peak RSS during a transfer per mode.
    Memory,
    /// Discovery: connect by NodeId against by NodeAddr, publish to resolvable, the discovery server's
    /// DNS under dnsperf with a large store (not part of `all`: it needs dnsperf).
    Discovery {
        /// Records in the store for the DNS measure (default 1,000,000; --quick 2,000).
        #[arg(long)]
        records: Option<usize>,
        /// Seconds of each dnsperf run (default 10; --quick 1).
        #[arg(long)]
        dns_secs: Option<f64>,
        /// Keep the filled store in this directory and reuse it on the next run.
        #[arg(long)]
        keep_dir: Option<PathBuf>,
    },
    /// The relay server under hostile clients: RSS per connection that never finishes its request head or
    /// its login, whether memory comes back after they close, and what a receiver that never reads pins (not
    /// part of `all`).
    Hostile {
        /// Connections per kind (default 1,000; --quick 200).
        #[arg(long)]
        connections: Option<usize>,
    },
    /// Raw quinn between two hosts (the baseline of `cargo xtask netsim`'s loss ladder).
    #[command(subcommand)]
    QuicPeer(quic_peer::Role),
    /// (Internal) run the relay server until stdin closes.
    #[command(hide = true)]
    ServeRelay {
        /// Runtime worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// (Internal) run a discovery server on a record database until stdin closes.
    #[command(hide = true)]
    ServeDiscovery {
        /// The record database file.
        #[arg(long)]
        db: PathBuf,
    },
    /// (Internal) move bytes in one mode and print the peak memory.
    #[command(hide = true)]
    PeakRss {
        /// The mode.
        #[arg(long, value_enum)]
        of: Mode,
        /// Bytes to move.
        #[arg(long)]
        bytes: u64,
    },
    /// (Internal) hold one idle endpoint and print its memory.
    #[command(hide = true)]
    IdleRss {
        /// What to hold.
        #[arg(long, value_enum)]
        kind: IdleKind,
        /// How long to hold it before reading the RSS, ms.
        #[arg(long)]
        idle_ms: u64,
    },
}

/// The options with `--quick` and the defaults applied.
#[derive(Debug, Clone)]
struct Plan {
    throughput: bool,
    connect: bool,
    relay: bool,
    memory: bool,
    modes: Vec<Mode>,
    shapes: Vec<Shape>,
    size: u64,
    connects: usize,
    rounds: usize,
    relay_secs: f64,
    idle_clients: usize,
    memory_reps: usize,
    peak_size: u64,
    idle_ms: u64,
    side_threads: usize,
    relay_threads: Option<usize>,
}

impl Plan {
    fn new(cli: &Cli) -> Self {
        let measure = cli.command.clone().unwrap_or(Measure::All);
        let all = measure == Measure::All;
        let quick = cli.quick;
        let mut modes = if cli.mode.is_empty() {
            Mode::ALL.to_vec()
        } else {
            cli.mode.clone()
        };
        modes.sort();
        modes.dedup();
        let mut kinds = if cli.shape.is_empty() {
            vec![ShapeKind::Single, ShapeKind::Streams, ShapeKind::Clients]
        } else {
            cli.shape.clone()
        };
        kinds.sort();
        kinds.dedup();
        let streams = cli.streams.unwrap_or(4);
        let clients = cli.clients.unwrap_or(10);
        let shapes = kinds
            .into_iter()
            .map(|kind| match kind {
                ShapeKind::Single => Shape::Single,
                ShapeKind::Streams => Shape::Streams(streams),
                ShapeKind::Clients => Shape::Clients(clients),
            })
            .collect();
        Self {
            throughput: all || measure == Measure::Throughput,
            connect: all || measure == Measure::Connect,
            relay: all || measure == Measure::Relay,
            memory: all || measure == Measure::Memory,
            modes,
            shapes,
            size: cli.size.unwrap_or(if quick { 64 << 20 } else { 1 << 30 }),
            connects: cli.connects.unwrap_or(if quick { 10 } else { 100 }),
            rounds: cli.rounds.unwrap_or(if quick { 1 } else { 3 }).max(1),
            relay_secs: cli.relay_secs.unwrap_or(if quick { 1.0 } else { 5.0 }),
            idle_clients: cli.idle_clients.unwrap_or(if quick { 100 } else { 1000 }),
            memory_reps: cli.memory_reps.unwrap_or(if quick { 1 } else { 3 }),
            peak_size: cli
                .peak_size
                .unwrap_or(if quick { 32 << 20 } else { 256 << 20 }),
            idle_ms: if quick { 1000 } else { 2000 },
            side_threads: cli.side_threads.unwrap_or(1).max(1),
            relay_threads: cli.relay_threads,
        }
    }

    /// Whether the shared relay process is needed.
    fn needs_relay(&self) -> bool {
        let endpoints = self.modes.iter().any(|m| *m != Mode::Raw);
        ((self.throughput || self.connect) && endpoints) || self.relay || self.memory
    }
}

/// Parses `1GiB`, `256MiB`, `64KiB`, `1G`, `1.5MiB` or plain bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("not a size: {text:?}"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" | "kb" => 1024.0,
        "m" | "mib" | "mb" => 1024.0 * 1024.0,
        "g" | "gib" | "gb" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    let bytes = (number * scale).round();
    if !(1.0..=1e15).contains(&bytes) {
        return Err(format!("size out of range: {text:?}"));
    }
    #[allow(
        clippy::cast_possible_truncation,
        reason = "checked above to be a whole number between 1 and 10^15"
    )]
    Ok(bytes as u64)
}

/// `1 GiB`, `256 MiB`, `102.4 MiB`, `4 KiB`, `17 B`.
pub(crate) fn human_size(bytes: u64) -> String {
    let units = [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (scale, name) in units {
        if bytes >= scale {
            let value = bytes as f64 / scale as f64;
            return if bytes.is_multiple_of(scale) {
                format!("{} {name}", bytes / scale)
            } else {
                format!("{value:.1} {name}")
            };
        }
    }
    format!("{bytes} B")
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Some(Measure::ServeRelay { threads }) => relay_proc::serve(*threads),
        Some(Measure::IdleRss { kind, idle_ms }) => memory::child(*kind, *idle_ms),
        Some(Measure::QuicPeer(role)) => quic_peer::main(role),
        Some(Measure::PeakRss { of, bytes }) => peak::child(*of, *bytes),
        Some(Measure::ServeDiscovery { db }) => discovery::serve(db),
        Some(Measure::Hostile { connections }) => {
            hostile::run(connections.unwrap_or(if cli.quick { 200 } else { 1000 }))
        }
        Some(Measure::Discovery {
            records,
            dns_secs,
            keep_dir,
        }) => run_discovery(&cli, *records, *dns_secs, keep_dir.clone()),
        _ => run(&cli),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("iroh-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_discovery(
    cli: &Cli,
    records: Option<usize>,
    dns_secs: Option<f64>,
    keep_dir: Option<PathBuf>,
) -> Result<()> {
    let options = discovery::Options {
        connects: cli.connects.unwrap_or(if cli.quick { 10 } else { 100 }),
        records: records.unwrap_or(if cli.quick { 2_000 } else { 1_000_000 }),
        dns_secs: dns_secs.unwrap_or(if cli.quick { 1.0 } else { 10.0 }),
        keep_dir,
    };
    let machine = sys::Machine::describe();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results = runtime.block_on(discovery::measure(&options))?;
    println!(
        "\niroh-bench discovery on {} cores, {} MiB, Linux {}, {}; load {:.2} at start",
        machine.nproc, machine.memory_mib, machine.kernel, machine.rustc, machine.load_at_start
    );
    println!("{}", results.table());
    if let Some(path) = &cli.json {
        discovery::write_json(&results, path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn run(cli: &Cli) -> Result<()> {
    let plan = Plan::new(cli);
    if let Some(window) = cli.stream_window {
        setup::set_stream_window(
            u32::try_from(window).map_err(|_| "--stream-window must be below 4 GiB")?,
        );
    }
    if let Some(cc) = cli.congestion {
        setup::set_congestion(cc);
    }
    let machine = sys::Machine::describe();
    if machine.load_at_start >= 1.0 {
        eprintln!(
            "warning: load average {:.2}: absolute figures will be low; the ratios still hold",
            machine.load_at_start
        );
    }
    let started = Instant::now();
    let relay = plan
        .needs_relay()
        .then(|| RelayProcess::start(plan.relay_threads))
        .transpose()?;
    let side_runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(plan.side_threads)
            .enable_all()
            .build()
    };
    let (clients, servers) = (side_runtime()?, side_runtime()?);
    let mut results = clients.block_on(measure_async(&plan, servers.handle(), relay.as_ref()))?;
    if plan.memory {
        eprintln!("memory: idle endpoints, one child process each");
        results.idle_memory = memory::measure(
            plan.memory_reps,
            plan.idle_ms,
            relay.as_ref().map(|r| &r.info),
        )?;
        eprintln!(
            "memory: peak during one stream of {} per mode, one child process each",
            human_size(plan.peak_size)
        );
        results.peak_memory = peak::measure(
            &plan.modes,
            plan.memory_reps,
            plan.peak_size,
            relay.as_ref().map(|r| &r.info),
        )?;
    }
    if let Some(relay) = relay {
        relay.stop();
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = Report::new(machine, command, started.elapsed().as_secs_f64(), results);
    println!(
        "\niroh-bench on {} cores, {} MiB, Linux {}, {}; load {:.2} at start, {:.2} at end; {:.0} s",
        report.machine.nproc,
        report.machine.memory_mib,
        report.machine.kernel,
        report.machine.rustc,
        report.machine.load_at_start,
        report.load_at_end,
        report.elapsed_s
    );
    println!("{}", report.table());
    if let Some(path) = &cli.json {
        report.write_json(path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

async fn measure_async(
    plan: &Plan,
    server: &tokio::runtime::Handle,
    relay: Option<&RelayProcess>,
) -> Result<Results> {
    let mut results = Results::default();
    let info = relay.map(|r| &r.info);
    if plan.throughput || plan.connect {
        let mut beds = Vec::new();
        for mode in &plan.modes {
            beds.push(Bed::new(server, *mode, info.cloned()).await?);
        }
        if plan.throughput {
            for &shape in &plan.shapes {
                eprintln!("throughput: {}", shape.describe(plan.size));
                results.throughput.push(
                    throughput::measure(
                        &beds,
                        shape,
                        plan.size,
                        plan.rounds,
                        relay.map(RelayProcess::pid),
                    )
                    .await?,
                );
            }
        }
        if plan.connect {
            eprintln!("connect: {} fresh connections per mode", plan.connects);
            results.connect = connect::measure(&beds, plan.connects).await?;
        }
        for bed in beds {
            bed.close().await;
        }
    }
    if plan.relay
        && let Some(relay) = relay
    {
        eprintln!("relay server: throughput over TLS");
        results.relay_throughput =
            relay::throughput(server, &relay.info, relay.pid(), plan.relay_secs).await?;
        eprintln!(
            "relay server: memory per idle client ({} clients, fresh relay process)",
            plan.idle_clients
        );
        results.relay_memory = Some(relay::memory(plan.idle_clients, plan.relay_threads).await?);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn sizes_print() {
        assert_eq!(human_size(1 << 30), "1 GiB");
        assert_eq!(human_size((1 << 30) / 10), "102.4 MiB");
        assert_eq!(human_size(17), "17 B");
    }

    #[test]
    fn cli_parses_modes_and_measures() {
        let cli = Cli::try_parse_from([
            "iroh-bench",
            "throughput",
            "--mode",
            "direct,raw",
            "--quick",
        ])
        .unwrap();
        let plan = Plan::new(&cli);
        assert!(plan.throughput && !plan.connect && !plan.memory);
        assert_eq!(plan.modes, vec![Mode::Raw, Mode::Direct]);
        assert_eq!(plan.size, 64 << 20);
        let plan = Plan::new(&Cli::try_parse_from(["iroh-bench"]).unwrap());
        assert!(plan.throughput && plan.connect && plan.relay && plan.memory);
    }
}
