//! Peak resident memory during a transfer, per mode, each in a fresh child process (this binary
//! re-executed with the hidden `peak-rss` subcommand) so that no other measure's allocations count.
//!
//! A child sets up both ends of one mode exactly as the throughput measure does (a runtime of one worker
//! per side, the same transport config, the relay for the endpoint modes), reads its `VmRSS` (the
//! baseline), moves `--peak-size` bytes over one stream, and reads `VmHWM`, the peak resident set the
//! kernel recorded. Both ends are in the one process, so the peak is a sender's and a receiver's
//! together. Modes are run interleaved, several times each; medians are reported.

use std::time::Duration;

use serde::Serialize;

use crate::{
    Result,
    relay_proc::RelayInfo,
    setup::{Bed, Mode, push},
    sys::median,
};

/// The first word of a child's answer.
const ANSWER: &str = "PEAK";
/// The environment variable that hands the relay to a child.
const RELAY_ENV: &str = "IROH_BENCH_RELAY";

/// The peak memory of one mode, KiB (medians over the repetitions).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PeakMemory {
    /// The mode.
    pub(crate) mode: Mode,
    /// Bytes moved.
    pub(crate) bytes: u64,
    /// `VmHWM` at the end of the transfer.
    pub(crate) peak_kib: u64,
    /// The peak over the child's baseline.
    pub(crate) growth_kib: u64,
    /// Every repetition's `(baseline, peak)`.
    pub(crate) samples_kib: Vec<(u64, u64)>,
}

/// The child side: one transfer of `size` bytes in `mode`, then `PEAK <baseline> <hwm>`.
pub(crate) fn child(mode: Mode, size: u64) -> Result<()> {
    let side = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
    };
    let (clients, servers) = (side()?, side()?);
    let relay = match mode {
        Mode::Raw => None,
        Mode::Direct | Mode::Relay => {
            let line = std::env::var(RELAY_ENV)?;
            Some(crate::relay_proc::parse_ready(&line).ok_or("bad relay description")?)
        }
    };
    let (baseline, peak) = clients.block_on(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let baseline = status_kib("VmRSS")?;
        let bed = Bed::new(servers.handle(), mode, relay).await?;
        let dialler = bed.dialler().await?;
        let conn = bed.connect(&dialler).await?;
        bed.settle(&dialler).await?;
        push(&conn, size).await?;
        let peak = status_kib("VmHWM")?;
        conn.close(0u32.into(), b"");
        dialler.close().await;
        bed.close().await;
        Result::<_>::Ok((baseline, peak))
    })?;
    println!("{ANSWER} {baseline} {peak}");
    Ok(())
}

/// A `kB` field of `/proc/self/status`.
fn status_kib(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| format!("/proc/self/status has no {field}").into())
}

fn run_child(mode: Mode, size: u64, relay: Option<&RelayInfo>) -> Result<(u64, u64)> {
    crate::memory::run_measuring_child(
        "peak-rss",
        &[
            format!("--of={}", mode_arg(mode)),
            format!("--bytes={size}"),
        ],
        relay,
        ANSWER,
    )
}

fn mode_arg(mode: Mode) -> &'static str {
    match mode {
        Mode::Raw => "raw",
        Mode::Direct => "direct",
        Mode::Relay => "relay",
    }
}

/// Runs every mode of `modes` `reps` times, interleaved, each in a fresh child.
pub(crate) fn measure(
    modes: &[Mode],
    reps: usize,
    size: u64,
    relay: Option<&RelayInfo>,
) -> Result<Vec<PeakMemory>> {
    let modes: Vec<Mode> = modes
        .iter()
        .copied()
        .filter(|m| *m == Mode::Raw || relay.is_some())
        .collect();
    let mut samples = vec![Vec::new(); modes.len()];
    for _ in 0..reps.max(1) {
        for (mode, samples) in modes.iter().zip(&mut samples) {
            samples.push(run_child(*mode, size, relay)?);
        }
    }
    Ok(modes
        .into_iter()
        .zip(samples)
        .map(|(mode, samples)| {
            let peak: Vec<f64> = samples.iter().map(|s| s.1 as f64).collect();
            let growth: Vec<f64> = samples
                .iter()
                .map(|s| s.1.saturating_sub(s.0) as f64)
                .collect();
            PeakMemory {
                mode,
                bytes: size,
                peak_kib: kib(median(&peak)),
                growth_kib: kib(median(&growth)),
                samples_kib: samples,
            }
        })
        .collect())
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a median of whole KiB counts is a whole KiB count"
)]
fn kib(value: f64) -> u64 {
    value.max(0.0) as u64
}
