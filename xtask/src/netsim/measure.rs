//! What the shaper really does, measured rather than trusted: round trips with UDP echo, loss over many
//! datagrams, TCP throughput; each shaped figure next to the same figure over a plain veth link.
//!
//! Shaped path: the public site's host to the probe server (its access link goes through the shaper).
//! Baseline: the relay's namespace to the probe server (plain veth). Both cross the same bridge.

use std::net::SocketAddr;

use serde::Serialize;

use super::{
    probe::{EchoReport, TcpReport},
    shaper::{Dir, LinkParams},
    topo::{PROBE_A, PROBE_TCP_PORT, STUN_PORT, Topology, probe_json},
};

/// One-way delay configured for the delay measurement.
const DELAY_MS: u64 = 10;
/// Loss configured for the loss measurement.
const LOSS_PERCENT: f64 = 5.0;
/// Datagrams of the loss measurement.
const LOSS_COUNT: u32 = 2000;
/// Seconds of each TCP throughput measurement.
const TCP_SECS: &str = "2";

/// The shaper's measured figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ShaperFigures {
    /// Round trips over a plain veth link.
    pub(crate) baseline_rtt: EchoReport,
    /// Round trips through the shaper with nothing configured: its own latency.
    pub(crate) shaped_rtt_no_delay: EchoReport,
    /// The one-way delay configured for `shaped_rtt_delay`, in milliseconds (on one link, both directions).
    pub(crate) delay_ms: u64,
    /// Round trips with `delay_ms` each way.
    pub(crate) shaped_rtt_delay: EchoReport,
    /// Loss configured for the loss runs, percent.
    pub(crate) loss_percent: f64,
    /// Echo loss with `loss_percent` on the way out only (expect about `loss_percent`).
    pub(crate) loss_one_way: EchoReport,
    /// Echo loss with `loss_percent` both ways (expect about `1 - (1 - p)^2`).
    pub(crate) loss_both_ways: EchoReport,
    /// TCP over a plain veth link.
    pub(crate) baseline_tcp: TcpReport,
    /// TCP through the shaper, nothing configured.
    pub(crate) shaped_tcp_no_delay: TcpReport,
    /// TCP through the shaper with `delay_ms` each way.
    pub(crate) shaped_tcp_delay: TcpReport,
    /// Frames the shaper dropped for loss, and for a full queue, over the whole measurement.
    pub(crate) frames_dropped: (u64, u64),
    /// What is out of bounds.
    pub(crate) problems: Vec<String>,
}

fn echo(ns: &str, to: SocketAddr, count: u32, interval_us: u32) -> Result<EchoReport, String> {
    probe_json(
        ns,
        &[
            "echo",
            "--to",
            &to.to_string(),
            "--count",
            &count.to_string(),
            "--interval-us",
            &interval_us.to_string(),
            "--linger-ms",
            "500",
        ],
    )
}

fn tcp(ns: &str) -> Result<TcpReport, String> {
    let to = SocketAddr::from((PROBE_A, PROBE_TCP_PORT)).to_string();
    probe_json(ns, &["tcp-send", "--to", &to, "--secs", TCP_SECS])
}

/// Measures the shaper on the access link of site `site` (a public host) of `topo`, which must have the
/// probe server. Leaves the link unimpaired.
pub(crate) fn shaper_figures(
    topo: &mut Topology<'_>,
    site: usize,
) -> Result<ShaperFigures, String> {
    let host = topo.site(site)?.host_ns.clone();
    let relay = topo.relay_ns().to_owned();
    let server = SocketAddr::from((PROBE_A, STUN_PORT));
    let clean = LinkParams::default();

    let baseline_rtt = echo(&relay, server, 200, 2000)?;
    let baseline_tcp = tcp(&relay)?;
    topo.shape(site, Dir::Both, clean)?;
    let shaped_rtt_no_delay = echo(&host, server, 200, 2000)?;
    let shaped_tcp_no_delay = tcp(&host)?;

    topo.shape(site, Dir::Both, LinkParams::delay_ms(DELAY_MS))?;
    let shaped_rtt_delay = echo(&host, server, 200, 2000)?;
    let shaped_tcp_delay = tcp(&host)?;

    let lossy = LinkParams::default().with_loss_percent(LOSS_PERCENT);
    topo.shape(site, Dir::Ab, lossy)?;
    topo.shape(site, Dir::Ba, clean)?;
    let loss_one_way = echo(&host, server, LOSS_COUNT, 500)?;
    topo.shape(site, Dir::Both, lossy)?;
    let loss_both_ways = echo(&host, server, LOSS_COUNT, 500)?;
    topo.shape(site, Dir::Both, clean)?;
    let (ab, ba) = topo.shaper_stats(site)?;

    let mut figures = ShaperFigures {
        baseline_rtt,
        shaped_rtt_no_delay,
        delay_ms: DELAY_MS,
        shaped_rtt_delay,
        loss_percent: LOSS_PERCENT,
        loss_one_way,
        loss_both_ways,
        baseline_tcp,
        shaped_tcp_no_delay,
        shaped_tcp_delay,
        frames_dropped: (ab.dropped + ba.dropped, ab.overflow + ba.overflow),
        problems: Vec::new(),
    };
    figures.problems = figures.judge();
    Ok(figures)
}

impl ShaperFigures {
    /// Bounds wide enough for a busy 2-core machine, narrow enough to catch a broken shaper.
    fn judge(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let configured = 2.0 * self.delay_ms as f64;
        let rtt = &self.shaped_rtt_delay;
        if rtt.received < rtt.sent * 9 / 10 {
            problems.push(format!(
                "only {}/{} echoes with delay",
                rtt.received, rtt.sent
            ));
        }
        if rtt.rtt_min_ms < configured - 0.2 {
            problems.push(format!(
                "minimum round trip {:.2} ms is below the configured {configured} ms",
                rtt.rtt_min_ms
            ));
        }
        if rtt.rtt_p50_ms > configured + 3.0 {
            problems.push(format!(
                "median round trip {:.2} ms is over the configured {configured} ms by more than 3 ms",
                rtt.rtt_p50_ms
            ));
        }
        let p = self.loss_percent;
        let both = 100.0 * (1.0 - (1.0 - p / 100.0).powi(2));
        for (name, report, expect) in [
            ("one way", &self.loss_one_way, p),
            ("both ways", &self.loss_both_ways, both),
        ] {
            // More than four standard deviations of a binomial count, and at least one percentage point.
            let sd =
                (expect / 100.0 * (1.0 - expect / 100.0) / f64::from(report.sent)).sqrt() * 100.0;
            let bound = (4.0 * sd).max(1.0);
            if (report.loss_percent - expect).abs() > bound {
                problems.push(format!(
                    "loss {name}: {:.2}% measured, {expect:.2}% expected (bound ±{bound:.2})",
                    report.loss_percent
                ));
            }
        }
        if self.shaped_rtt_no_delay.loss_percent > 0.0 {
            problems.push(format!(
                "{:.1}% loss through the unimpaired shaper",
                self.shaped_rtt_no_delay.loss_percent
            ));
        }
        if self.frames_dropped.1 > 0 {
            problems.push(format!(
                "{} frames dropped on a full shaper queue",
                self.frames_dropped.1
            ));
        }
        // The floor is far below what the shaper sustains (see the report) so a loaded CI machine does
        // not fail; a shaper that serialises on something will.
        if self.shaped_tcp_no_delay.mbps < 50.0 {
            problems.push(format!(
                "TCP through the shaper reached only {:.0} Mbit/s (plain veth: {:.0})",
                self.shaped_tcp_no_delay.mbps, self.baseline_tcp.mbps
            ));
        }
        problems
    }

    /// The figures as markdown.
    pub(crate) fn markdown(&self) -> String {
        let rtt = |r: &EchoReport| {
            format!(
                "{:.3} / {:.3} / {:.3} / {:.3} ms",
                r.rtt_min_ms, r.rtt_p50_ms, r.rtt_p99_ms, r.rtt_max_ms
            )
        };
        let d = self.delay_ms;
        let p = self.loss_percent;
        format!(
            "### Link shaper (measured)\n\n\
             | measurement | configured | result |\n|---|---|---|\n\
             | UDP echo RTT min / p50 / p99 / max, plain veth | - | {} |\n\
             | UDP echo RTT, through the shaper | 0 ms | {} |\n\
             | UDP echo RTT, through the shaper | {d} ms each way | {} |\n\
             | echo loss over {} datagrams | {p}% out only | {:.2}% |\n\
             | echo loss over {} datagrams | {p}% each way (expect {:.2}%) | {:.2}% |\n\
             | TCP throughput, plain veth | - | {:.0} Mbit/s |\n\
             | TCP throughput, through the shaper | 0 ms | {:.0} Mbit/s |\n\
             | TCP throughput, through the shaper | {d} ms each way | {:.0} Mbit/s |\n",
            rtt(&self.baseline_rtt),
            rtt(&self.shaped_rtt_no_delay),
            rtt(&self.shaped_rtt_delay),
            self.loss_one_way.sent,
            self.loss_one_way.loss_percent,
            self.loss_both_ways.sent,
            100.0 * (1.0 - (1.0 - p / 100.0).powi(2)),
            self.loss_both_ways.loss_percent,
            self.baseline_tcp.mbps,
            self.shaped_tcp_no_delay.mbps,
            self.shaped_tcp_delay.mbps,
        )
    }
}
