//! What the benchmark reads from the system, without `libc`: CPU time and resident memory of a process from
//! `/proc`, the machine's description, and the statistics over samples.

use std::{fs, process::Command};

use serde::Serialize;

use crate::Result;

/// Clock ticks per second of the `utime`/`stime` fields in `/proc/PID/stat`: the kernel reports them in
/// `USER_HZ`, which is 100 on every Linux architecture (`sysconf(_SC_CLK_TCK)` answers the same).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time (user + system, all threads) of process `pid` (`None`: this process), in seconds.
///
/// Fields 14 (`utime`) and 15 (`stime`) of `/proc/PID/stat`, counted after the command name, which is in
/// parentheses and may itself contain spaces. The resolution is one tick (10 ms).
pub(crate) fn cpu_seconds(pid: Option<u32>) -> Result<f64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("{path}: no command name"))?;
    // After the name come field 3 (state), 4, ...: utime (14) is the 12th of them, stime (15) the 13th.
    let mut fields = after_name.split_whitespace().skip(11);
    let mut tick = || -> Result<u64> {
        Ok(fields
            .next()
            .ok_or_else(|| format!("{path}: too few fields"))?
            .parse::<u64>()
            .map_err(|e| format!("{path}: {e}"))?)
    };
    let (utime, stime) = (tick()?, tick()?);
    Ok(ticks_to_seconds(utime + stime))
}

#[allow(
    clippy::cast_precision_loss,
    reason = "tick counts stay far below 2^52"
)]
fn ticks_to_seconds(ticks: u64) -> f64 {
    ticks as f64 / TICKS_PER_SECOND
}

/// Resident set size (`VmRSS`) of process `pid` (`None`: this process), in KiB.
pub(crate) fn rss_kib(pid: Option<u32>) -> Result<u64> {
    let path = pid.map_or_else(
        || "/proc/self/status".to_owned(),
        |p| format!("/proc/{p}/status"),
    );
    let status = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| format!("{path}: no VmRSS").into())
}

/// The one-minute load average.
pub(crate) fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|l| l.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The machine a run was made on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    /// Cores available to this process.
    pub(crate) nproc: usize,
    /// Total memory in MiB.
    pub(crate) memory_mib: u64,
    /// `uname -r`.
    pub(crate) kernel: String,
    /// `rustc --version` of the toolchain on the PATH (the one `cargo run` builds with).
    pub(crate) rustc: String,
    /// The one-minute load average when the run started.
    pub(crate) load_at_start: f64,
}

impl Machine {
    /// Reads the description of this machine.
    pub(crate) fn describe() -> Self {
        let memory_mib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|kib| kib.parse::<u64>().ok())
            })
            .map_or(0, |kib| kib / 1024);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
        let rustc = Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned());
        Self {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            memory_mib,
            kernel,
            rustc,
            load_at_start: load_average(),
        }
    }
}

/// The `q`-quantile (0..=1) of `samples` by the nearest-rank method; NaN for no samples.
pub(crate) fn quantile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * len_f64(sorted.len())).ceil();
    let index = rank_to_index(rank).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// The median of `samples` (the lower middle one for an even count, by nearest rank).
pub(crate) fn median(samples: &[f64]) -> f64 {
    quantile(samples, 0.5)
}

#[allow(clippy::cast_precision_loss, reason = "sample counts are small")]
pub(crate) fn len_f64(len: usize) -> f64 {
    len as f64
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a rank is a small non-negative whole number"
)]
fn rank_to_index(rank: f64) -> usize {
    rank.max(0.0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(median(&v), 5.0);
        assert_eq!(quantile(&v, 0.9), 9.0);
        assert_eq!(quantile(&v, 1.0), 10.0);
        assert_eq!(quantile(&[3.0], 0.9), 3.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn reads_own_process() {
        assert!(cpu_seconds(None).unwrap() >= 0.0);
        assert!(rss_kib(None).unwrap() > 0);
    }
}
