//! Resident memory of an idle endpoint against an idle raw quinn endpoint, each measured in a fresh child
//! process (this binary re-executed with the hidden `idle-rss` subcommand), so nothing another measure
//! allocated or touched is counted.
//!
//! A child builds a tokio runtime with two worker threads (an application's multi-threaded runtime on this
//! 2-core machine), waits a moment, reads its `VmRSS` (the baseline: runtime, TLS provider not yet
//! touched), binds one endpoint that accepts connections (raw quinn: the same socket options and TLS server
//! config as in the other measures), lets it sit idle, reads `VmRSS` again and prints both. Kinds are run interleaved, several times each, and the
//! medians reported. The absolute figures include the pages of this binary's code that each kind touched,
//! which is part of what an application pays.

use std::{process::Command, time::Duration};

use serde::Serialize;

use crate::{
    Result,
    relay_proc::RelayInfo,
    setup::{iroh_endpoint, raw_endpoint, raw_server_config},
    sys::{median, rss_kib},
};

/// The first word of a child's answer.
const ANSWER: &str = "RSS";
/// The environment variable that hands the relay to a child.
const RELAY_ENV: &str = "IROH_BENCH_RELAY";

/// What an idle child holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum IdleKind {
    /// A raw quinn endpoint with a server config.
    Raw,
    /// An iroh endpoint, relays disabled.
    Endpoint,
    /// An iroh endpoint connected to its home relay.
    EndpointRelay,
}

impl IdleKind {
    /// The row label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Raw => "idle raw quinn endpoint",
            Self::Endpoint => "idle Endpoint, no relay",
            Self::EndpointRelay => "idle Endpoint, home relay connected",
        }
    }
}

/// The memory of one kind, KiB (medians over the repetitions).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IdleMemory {
    /// What the child held.
    pub(crate) kind: IdleKind,
    /// `VmRSS` with the endpoint idle.
    pub(crate) rss_kib: u64,
    /// Growth over the child's baseline.
    pub(crate) growth_kib: u64,
    /// Every repetition's `(baseline, idle)`.
    pub(crate) samples_kib: Vec<(u64, u64)>,
}

/// The child side: holds one endpoint of `kind` idle for `idle_ms` and prints `RSS <baseline> <idle>`.
pub(crate) fn child(kind: IdleKind, idle_ms: u64) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (baseline, idle) = runtime.block_on(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let baseline = rss_kib(None)?;
        let relay = match kind {
            IdleKind::EndpointRelay => {
                let line = std::env::var(RELAY_ENV)?;
                Some(crate::relay_proc::parse_ready(&line).ok_or("bad relay description")?)
            }
            _ => None,
        };
        let holder: Box<dyn std::any::Any> = match kind {
            IdleKind::Raw => {
                let key = iroh_base::SecretKey::generate();
                Box::new(raw_endpoint(Some(raw_server_config(&key)?))?)
            }
            IdleKind::Endpoint | IdleKind::EndpointRelay => {
                Box::new(iroh_endpoint(relay.as_ref()).await?)
            }
        };
        tokio::time::sleep(Duration::from_millis(idle_ms)).await;
        let idle = rss_kib(None)?;
        drop(holder);
        Result::<_>::Ok((baseline, idle))
    })?;
    println!("{ANSWER} {baseline} {idle}");
    Ok(())
}

fn run_child(kind: IdleKind, idle_ms: u64, relay: Option<&RelayInfo>) -> Result<(u64, u64)> {
    run_measuring_child(
        "idle-rss",
        &[
            format!("--kind={}", kind_arg(kind)),
            format!("--idle-ms={idle_ms}"),
        ],
        relay,
        ANSWER,
    )
}

/// Runs this binary as `subcommand args...` (the relay, if any, handed over in the environment) and
/// reads its `answer` line: `<answer> <baseline KiB> <figure KiB>`.
pub(crate) fn run_measuring_child(
    subcommand: &str,
    args: &[String],
    relay: Option<&RelayInfo>,
    answer: &str,
) -> Result<(u64, u64)> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command.arg(subcommand).args(args);
    if let Some(relay) = relay {
        command.env(RELAY_ENV, crate::relay_proc::ready_line(relay));
    }
    let output = command.output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(answer))
        .ok_or_else(|| {
            format!(
                "{subcommand} {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let mut numbers = line.split_whitespace().map(str::parse::<u64>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(baseline)), Some(Ok(figure))) => Ok((baseline, figure)),
        _ => Err(format!("{subcommand} answered {line:?}").into()),
    }
}

fn kind_arg(kind: IdleKind) -> &'static str {
    match kind {
        IdleKind::Raw => "raw",
        IdleKind::Endpoint => "endpoint",
        IdleKind::EndpointRelay => "endpoint-relay",
    }
}

/// Runs every kind `reps` times, interleaved, each in a fresh child; the endpoint with a relay only when
/// `relay` is given.
pub(crate) fn measure(
    reps: usize,
    idle_ms: u64,
    relay: Option<&RelayInfo>,
) -> Result<Vec<IdleMemory>> {
    let mut kinds = vec![IdleKind::Raw, IdleKind::Endpoint];
    if relay.is_some() {
        kinds.push(IdleKind::EndpointRelay);
    }
    let mut samples = vec![Vec::new(); kinds.len()];
    for _ in 0..reps.max(1) {
        for (kind, samples) in kinds.iter().zip(&mut samples) {
            samples.push(run_child(*kind, idle_ms, relay)?);
        }
    }
    Ok(kinds
        .into_iter()
        .zip(samples)
        .map(|(kind, samples)| {
            let idle: Vec<f64> = samples.iter().map(|s| s.1 as f64).collect();
            let growth: Vec<f64> = samples
                .iter()
                .map(|s| s.1.saturating_sub(s.0) as f64)
                .collect();
            IdleMemory {
                kind,
                rss_kib: kib(median(&idle)),
                growth_kib: kib(median(&growth)),
                samples_kib: samples,
            }
        })
        .collect())
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "a median of whole KiB counts is a whole KiB count"
)]
fn kib(value: f64) -> u64 {
    value.max(0.0) as u64
}
