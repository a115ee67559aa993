//! The results: a Markdown table of every figure with its ratios, the targets with whether each was met,
//! and the same as JSON.

use std::{fmt::Write as _, path::Path};

use serde::Serialize;

use crate::{
    Result,
    connect::ModeConnect,
    memory::{IdleKind, IdleMemory},
    peak::PeakMemory,
    relay::{RelayMemory, RelayThroughput},
    setup::Mode,
    sys::Machine,
    throughput::ShapeThroughput,
};

/// One figure in every mode measured, with the ratios between modes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Comparison {
    /// What was measured, with its unit.
    pub(crate) measure: String,
    /// Raw quinn's figure.
    pub(crate) raw: Option<f64>,
    /// The endpoint's over a direct path.
    pub(crate) direct: Option<f64>,
    /// The endpoint's through the relay alone.
    pub(crate) relay: Option<f64>,
    /// `direct / raw`.
    pub(crate) direct_over_raw: Option<f64>,
    /// `relay / direct`.
    pub(crate) relay_over_direct: Option<f64>,
}

impl Comparison {
    fn new(measure: String, values: impl IntoIterator<Item = (Mode, f64)>) -> Self {
        let (mut raw, mut direct, mut relay) = (None, None, None);
        for (mode, value) in values {
            match mode {
                Mode::Raw => raw = Some(value),
                Mode::Direct => direct = Some(value),
                Mode::Relay => relay = Some(value),
            }
        }
        let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
        Self {
            measure,
            raw,
            direct,
            relay,
            direct_over_raw: ratio(direct, raw),
            relay_over_direct: ratio(relay, direct),
        }
    }
}

/// A target of the benchmark issue and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Target {
    /// The target.
    pub(crate) target: String,
    /// The figure measured (a ratio, or MiB for memory).
    pub(crate) measured: f64,
    /// Whether it was met.
    pub(crate) met: bool,
}

/// Everything one run measured.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Results {
    /// Throughput per shape.
    pub(crate) throughput: Vec<ShapeThroughput>,
    /// Connect figures per mode.
    pub(crate) connect: Vec<ModeConnect>,
    /// Relay server throughput.
    pub(crate) relay_throughput: Vec<RelayThroughput>,
    /// Relay server memory per idle client.
    pub(crate) relay_memory: Option<RelayMemory>,
    /// Idle endpoint memory.
    pub(crate) idle_memory: Vec<IdleMemory>,
    /// Peak memory during a transfer, per mode.
    pub(crate) peak_memory: Vec<PeakMemory>,
}

/// The whole report, as written with `--json`.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// Where it ran.
    pub(crate) machine: Machine,
    /// The command line.
    pub(crate) command: String,
    /// The one-minute load average at the end.
    pub(crate) load_at_end: f64,
    /// Wall time of the run, seconds.
    pub(crate) elapsed_s: f64,
    /// The comparison table.
    pub(crate) comparisons: Vec<Comparison>,
    /// The targets.
    pub(crate) targets: Vec<Target>,
    /// Things to know about the figures (wrong-path datagrams, drops).
    pub(crate) notes: Vec<String>,
    /// Every figure, with its samples.
    pub(crate) results: Results,
}

const MIB_KIB: f64 = 1024.0;

impl Report {
    /// Builds the tables from `results`.
    pub(crate) fn new(machine: Machine, command: String, elapsed_s: f64, results: Results) -> Self {
        let mut comparisons = Vec::new();
        let mut notes = Vec::new();
        for shape in &results.throughput {
            comparisons.push(Comparison::new(
                format!("throughput, {} (MiB/s)", shape.shape),
                shape.modes.iter().map(|m| (m.mode, m.mib_per_s)),
            ));
        }
        for shape in &results.throughput {
            comparisons.push(Comparison::new(
                format!("CPU per GiB, {}, both ends (s)", shape.shape),
                shape.modes.iter().map(|m| (m.mode, m.cpu_s_per_gib)),
            ));
        }
        for shape in &results.throughput {
            // Rate times CPU per byte: how many of the machine's cores the transfer kept busy (both ends,
            // and the relay process for relay-only). At the core count the transfer was CPU-bound.
            comparisons.push(Comparison::new(
                format!("cores busy, {} (CPU s per s, incl. relay)", shape.shape),
                shape.modes.iter().map(|m| {
                    let cpu = m.cpu_s_per_gib + m.relay_cpu_s_per_gib.unwrap_or(0.0);
                    (m.mode, m.mib_per_s / 1024.0 * cpu)
                }),
            ));
        }
        for shape in &results.throughput {
            for m in &shape.modes {
                if let Some(relay_cpu) = m.relay_cpu_s_per_gib {
                    notes.push(format!(
                        "{}: the relay process spent {relay_cpu:.2} s CPU per GiB besides the endpoints' {:.2} s",
                        shape.shape, m.cpu_s_per_gib
                    ));
                }
                if m.quic_sent_packets > 0 {
                    notes.push(format!(
                        "{}, {}: sender RTT {:.2} ms, congestion window {:.0} KiB (medians), {:.3}% of packets lost, {} congestion events",
                        shape.shape,
                        m.mode.label(),
                        m.rtt_ms,
                        m.cwnd_kib,
                        100.0 * m.quic_lost_packets as f64 / m.quic_sent_packets as f64,
                        m.quic_congestion_events
                    ));
                }
                if m.wrong_path_datagrams > 0 {
                    notes.push(format!(
                        "{}, {}: {} datagrams took the other path",
                        shape.shape,
                        m.mode.label(),
                        m.wrong_path_datagrams
                    ));
                }
                if m.relay_send_dropped > 0 {
                    notes.push(format!(
                        "{}, {}: {} QUIC datagrams dropped at the relay client's full send queue",
                        shape.shape,
                        m.mode.label(),
                        m.relay_send_dropped
                    ));
                }
            }
        }
        type Pick = fn(&ModeConnect) -> f64;
        let connect_rows: [(&str, Pick); 4] = [
            ("connect time, median (ms)", |c| c.connect_median_ms),
            ("connect time, p90 (ms)", |c| c.connect_p90_ms),
            ("time to first byte, median (ms)", |c| c.ttfb_median_ms),
            ("time to first byte, p90 (ms)", |c| c.ttfb_p90_ms),
        ];
        if !results.connect.is_empty() {
            for (measure, pick) in connect_rows {
                comparisons.push(Comparison::new(
                    measure.to_owned(),
                    results.connect.iter().map(|c| (c.mode, pick(c))),
                ));
            }
        }
        let targets = targets(&results, &comparisons);
        Self {
            machine,
            command,
            load_at_end: crate::sys::load_average(),
            elapsed_s,
            comparisons,
            targets,
            notes,
            results,
        }
    }

    /// The report as Markdown tables.
    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), format_value);
        let ratio = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
        if !self.comparisons.is_empty() {
            let _ = writeln!(
                out,
                "| measure | {} | {} | {} | direct / raw | relay / direct |",
                Mode::Raw.label(),
                Mode::Direct.label(),
                Mode::Relay.label()
            );
            let _ = writeln!(out, "|---|---|---|---|---|---|");
            for c in &self.comparisons {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} |",
                    c.measure,
                    cell(c.raw),
                    cell(c.direct),
                    cell(c.relay),
                    ratio(c.direct_over_raw),
                    ratio(c.relay_over_direct)
                );
            }
            out.push('\n');
        }
        let r = &self.results;
        if !r.relay_throughput.is_empty()
            || r.relay_memory.is_some()
            || !r.idle_memory.is_empty()
            || !r.peak_memory.is_empty()
        {
            let _ = writeln!(out, "| measure | figure |");
            let _ = writeln!(out, "|---|---|");
        }
        for t in &r.relay_throughput {
            let _ = writeln!(
                out,
                "| relay server, TLS, {} | {:.2} Gbit/s, {:.0}k datagrams/s, relay CPU {:.2} s/GiB |",
                t.case,
                t.gbit_per_s,
                t.datagrams_per_s / 1e3,
                t.relay_cpu_s_per_gib
            );
        }
        if let Some(m) = &r.relay_memory {
            let _ = writeln!(
                out,
                "| relay server, TLS, RSS per idle client ({} clients) | {:.1} KiB ({} -> {} KiB) |",
                m.clients, m.kib_per_client, m.rss_before_kib, m.rss_after_kib
            );
        }
        let raw_rss = r
            .idle_memory
            .iter()
            .find(|m| m.kind == IdleKind::Raw)
            .map(|m| m.rss_kib);
        for m in &r.idle_memory {
            let versus = match raw_rss {
                Some(raw) if m.kind != IdleKind::Raw => {
                    format!(", {:+.2} MiB vs raw quinn", diff_mib(m.rss_kib, raw))
                }
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "| RSS, {} | {:.2} MiB (+{:.2} MiB over the process baseline{versus}) |",
                m.kind.label(),
                kib_to_mib(m.rss_kib),
                kib_to_mib(m.growth_kib)
            );
        }
        let raw_peak = r
            .peak_memory
            .iter()
            .find(|m| m.mode == Mode::Raw)
            .map(|m| m.peak_kib);
        for m in &r.peak_memory {
            let versus = match raw_peak {
                Some(raw) if m.mode != Mode::Raw => {
                    format!(", {:+.2} MiB vs raw quinn", diff_mib(m.peak_kib, raw))
                }
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "| peak RSS, {}, one stream of {} (both ends) | {:.2} MiB (+{:.2} MiB over the process baseline{versus}) |",
                m.mode.label(),
                crate::human_size(m.bytes),
                kib_to_mib(m.peak_kib),
                kib_to_mib(m.growth_kib)
            );
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\n| target | measured | met |");
            let _ = writeln!(out, "|---|---|---|");
            for t in &self.targets {
                let _ = writeln!(
                    out,
                    "| {} | {:.3} | {} |",
                    t.target,
                    t.measured,
                    if t.met { "yes" } else { "**no**" }
                );
            }
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }

    /// Writes the report as pretty JSON to `path`.
    pub(crate) fn write_json(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(())
    }
}

fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / MIB_KIB
}

fn diff_mib(a: u64, b: u64) -> f64 {
    (a as f64 - b as f64) / MIB_KIB
}

fn targets(results: &Results, comparisons: &[Comparison]) -> Vec<Target> {
    let mut targets = Vec::new();
    for c in comparisons
        .iter()
        .filter(|c| c.measure.starts_with("throughput"))
    {
        let shape = c
            .measure
            .trim_start_matches("throughput, ")
            .trim_end_matches(" (MiB/s)");
        if let Some(r) = c.direct_over_raw {
            targets.push(Target {
                target: format!("direct throughput >= 0.97 x raw quinn ({shape})"),
                measured: r,
                met: r >= 0.97,
            });
        }
        if let Some(r) = c.relay_over_direct {
            targets.push(Target {
                target: format!("relay-only throughput >= 0.40 x direct ({shape})"),
                measured: r,
                met: r >= 0.40,
            });
        }
    }
    if let Some(r) = comparisons
        .iter()
        .find(|c| c.measure == "connect time, median (ms)")
        .and_then(|c| c.direct_over_raw)
    {
        targets.push(Target {
            target: "direct connect time (median) <= 1.2 x raw quinn".into(),
            measured: r,
            met: r <= 1.2,
        });
    }
    let rss = |kind| {
        results
            .idle_memory
            .iter()
            .find(|m| m.kind == kind)
            .map(|m| m.rss_kib)
    };
    if let Some(raw) = rss(IdleKind::Raw) {
        for kind in [IdleKind::Endpoint, IdleKind::EndpointRelay] {
            if let Some(endpoint) = rss(kind) {
                let extra = diff_mib(endpoint, raw);
                targets.push(Target {
                    target: format!("{} RSS <= raw quinn + 4 MiB (MiB over raw)", kind.label()),
                    measured: extra,
                    met: extra <= 4.0,
                });
            }
        }
    }
    let peak = |mode| {
        results
            .peak_memory
            .iter()
            .find(|m| m.mode == mode)
            .map(|m| m.peak_kib)
    };
    if let Some(raw) = peak(Mode::Raw) {
        for mode in [Mode::Direct, Mode::Relay] {
            if let Some(endpoint) = peak(mode) {
                let extra = diff_mib(endpoint, raw);
                targets.push(Target {
                    target: format!(
                        "peak RSS during a transfer, {} <= raw quinn + 4 MiB (MiB over raw)",
                        mode.label()
                    ),
                    measured: extra,
                    met: extra <= 4.0,
                });
            }
        }
    }
    targets
}
