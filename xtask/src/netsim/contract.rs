//! The peer-program contract: how netsim starts the two ends of a transfer and what it reads back.
//!
//! A peer program is any executable (`--peer-cmd "PATH [ARGS...]"`, split on whitespace; default: this
//! xtask's stand-in, `xtask netsim-peer`). netsim runs it inside a peer's namespace twice:
//!
//! ```text
//! PROGRAM [ARGS...] provide --size BYTES --relay-url URL --json [--relay-insecure]
//! PROGRAM [ARGS...] fetch --ticket TICKET --relay-url URL --json [--relay-insecure]
//! ```
//!
//! - `--relay-url URL`: the one relay of the simulated internet (for example `https://198.18.0.2/`); it also
//!   answers STUN on UDP port 3478 of the same host. Use it as the home relay and for STUN; there is no other
//!   network (no DNS, no default relays).
//! - `--relay-insecure`: present when the relay's certificate is self-signed (the default); accept it
//!   without verification. Absent with `--relay-tls plain` (an `http://` URL).
//! - `--size BYTES`: the provider serves that many bytes (any content).
//! - `--provide-args "..."` / `--fetch-args "..."` on netsim's command line append further arguments (for
//!   example a verbosity flag), after the ones above.
//!
//! The `by-node-id` fault scenario also needs discovery (the relay runs a discovery server: the publish
//! endpoint on its URL, authoritative DNS on UDP/TCP port 53 of the same host for the origin `iroh.test`):
//!
//! ```text
//! PROGRAM [ARGS...] provide --size BYTES --relay-url URL --json [--relay-insecure] --discovery-url URL
//! PROGRAM [ARGS...] fetch --node-id ID --relay-url URL --json [--relay-insecure] --dns-server IP:PORT --dns-origin iroh.test
//! ```
//!
//! and the provider's first line then carries its NodeId too: `{"ticket": "node...", "node_id": "..."}`.
//! The `lan-wins` scenario dials by NodeId found on the local network (mDNS), the relay configured too:
//!
//! ```text
//! PROGRAM [ARGS...] provide --size BYTES --relay-url URL --json [--relay-insecure] --local-discovery
//! PROGRAM [ARGS...] fetch --node-id ID --relay-url URL --json [--relay-insecure] --local-discovery
//! ```
//!
//! Standard output, one JSON object per line (other lines are ignored and logged; standard error is logged):
//!
//! - provider, first JSON line, as soon as it can be dialled: `{"ticket": "node..."}`. Then it serves until
//!   it gets SIGTERM (SIGKILL follows after 2 s).
//! - fetcher, zero or more path events while it runs, each time the path its data arrives on changes:
//!   `{"event": "path", "path": "direct"|"relay", "elapsed_ms": NUMBER}`. The fault scenarios use them to
//!   time faults and to check fallback and recovery; without them they fall back to fixed timings and check
//!   only the final result.
//! - fetcher, last: `{"bytes": N, "duration_ms": NUMBER, "throughput_mbps": NUMBER, "final_path":
//!   "direct"|"relay", "time_to_direct_ms": NUMBER|null, "hash_ok": BOOL}`, then exit 0. `duration_ms` runs
//!   from the fetcher's start to the last byte verified; `throughput_mbps` is `bytes * 8 / duration_ms /
//!   1000`; `time_to_direct_ms` from the fetcher's start until a direct path first worked (null: never);
//!   `hash_ok` whether the content matched the provider's hash.
//!
//! A fetcher that exits non-zero, or prints no result line before the timeout, failed to connect.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// The flag telling peers to accept the relay's self-signed certificate.
pub(crate) const RELAY_INSECURE_FLAG: &str = "--relay-insecure";

/// Which path data takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PathKind {
    /// Peer to peer over UDP.
    Direct,
    /// Through the relay.
    Relay,
}

impl PathKind {
    /// `direct` or `relay`.
    pub(crate) fn word(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Relay => "relay",
        }
    }
}

/// The provider's first line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TicketLine {
    /// What the fetcher needs to dial the provider.
    pub(crate) ticket: String,
    /// The provider's NodeId, for dialling by it alone (peers with discovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) node_id: Option<String>,
}

/// A fetcher's path event.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct PathEvent {
    /// Always `"path"`.
    pub(crate) event: EventTag,
    /// The path data now arrives on.
    pub(crate) path: PathKind,
    /// Milliseconds since the fetcher started.
    pub(crate) elapsed_ms: f64,
}

/// The `event` field's one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventTag {
    /// A path change.
    Path,
}

impl PathEvent {
    /// A change to `path`, `elapsed` after the start.
    pub(crate) fn new(path: PathKind, elapsed: Duration) -> Self {
        Self {
            event: EventTag::Path,
            path,
            elapsed_ms: millis(elapsed),
        }
    }
}

/// The fetcher's result line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct FetchResult {
    /// Bytes received.
    pub(crate) bytes: u64,
    /// From the fetcher's start to the last byte verified.
    pub(crate) duration_ms: f64,
    /// `bytes * 8 / duration_ms / 1000`.
    pub(crate) throughput_mbps: f64,
    /// The path at the end.
    pub(crate) final_path: PathKind,
    /// When a direct path first worked, if ever.
    pub(crate) time_to_direct_ms: Option<f64>,
    /// Whether the content was right.
    pub(crate) hash_ok: bool,
    /// What QUIC saw, from fetchers that report it (the transfer example and the raw quinn peer do).
    #[serde(flatten)]
    pub(crate) quic: QuicFigures,
}

/// Optional figures of a fetcher's QUIC connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct QuicFigures {
    /// The smoothed round trip at the end, milliseconds.
    #[serde(default)]
    pub(crate) rtt_ms: Option<f64>,
    /// Packets the fetcher's side counted lost.
    #[serde(default)]
    pub(crate) lost_packets: Option<u64>,
    /// Congestion events on the fetcher's side.
    #[serde(default)]
    pub(crate) congestion_events: Option<u64>,
    /// How often the path changed between direct and relay after the first.
    #[serde(default)]
    pub(crate) path_changes: Option<u32>,
    /// Port prediction's packets on the fetcher's side (sockets opened, probes sprayed).
    #[serde(default)]
    pub(crate) prediction_packets: Option<u64>,
}

impl FetchResult {
    /// A result with the throughput computed from `bytes` and `duration`.
    pub(crate) fn new(
        bytes: u64,
        duration: Duration,
        final_path: PathKind,
        time_to_direct: Option<Duration>,
        hash_ok: bool,
    ) -> Self {
        let duration_ms = millis(duration);
        #[allow(clippy::cast_precision_loss)]
        let throughput_mbps = if duration_ms > 0.0 {
            bytes as f64 * 8.0 / duration_ms / 1000.0
        } else {
            0.0
        };
        Self {
            bytes,
            duration_ms,
            throughput_mbps,
            final_path,
            time_to_direct_ms: time_to_direct.map(millis),
            hash_ok,
            quic: QuicFigures::default(),
        }
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// One line of a fetcher's output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FetcherLine {
    /// A path event.
    Path {
        /// The new path.
        path: PathKind,
        /// Since the fetcher's start.
        elapsed_ms: f64,
    },
    /// The result.
    Result(FetchResult),
    /// Anything else.
    Other,
}

/// Reads one line of fetcher output.
pub(crate) fn parse_fetcher_line(line: &str) -> FetcherLine {
    if let Ok(event) = serde_json::from_str::<PathEvent>(line) {
        return FetcherLine::Path {
            path: event.path,
            elapsed_ms: event.elapsed_ms,
        };
    }
    match serde_json::from_str::<FetchResult>(line) {
        Ok(result) => FetcherLine::Result(result),
        Err(_) => FetcherLine::Other,
    }
}

/// Reads a provider's ticket line (ticket and NodeId), if it is one.
pub(crate) fn parse_provider_line(line: &str) -> Option<TicketLine> {
    serde_json::from_str::<TicketLine>(line)
        .ok()
        .filter(|t| !t.ticket.is_empty())
}

/// How the fetcher dials the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dial {
    /// With the provider's ticket.
    Ticket,
    /// With its NodeId alone, found through the relay's discovery server (the provider publishes).
    NodeId,
    /// With its NodeId alone, found on the local network (both ends `--local-discovery`).
    Local,
}

/// The flag turning on local-network discovery (mDNS) in a peer program.
pub(crate) const LOCAL_DISCOVERY_FLAG: &str = "--local-discovery";

impl Dial {
    /// The provider's discovery flags (`relay_url` also serves the discovery server's publish endpoint).
    pub(crate) fn provider_flags(self, relay_url: &str) -> Vec<&str> {
        match self {
            Dial::Ticket => vec![],
            Dial::NodeId => vec!["--discovery-url", relay_url],
            Dial::Local => vec![LOCAL_DISCOVERY_FLAG],
        }
    }

    /// The fetcher's discovery flags (`dns_server`: the discovery server's DNS).
    pub(crate) fn fetcher_flags(self, dns_server: &str) -> Vec<&str> {
        match self {
            Dial::Ticket => vec![],
            Dial::NodeId => vec!["--dns-server", dns_server, "--dns-origin", DISCOVERY_ORIGIN],
            Dial::Local => vec![LOCAL_DISCOVERY_FLAG],
        }
    }
}

/// The DNS origin of the relay's discovery server.
pub(crate) const DISCOVERY_ORIGIN: &str = "iroh.test";

/// The peer program and the arguments before `provide` / `fetch`.
#[derive(Debug, Clone)]
pub(crate) struct PeerCmd {
    /// The executable.
    pub(crate) program: PathBuf,
    /// Arguments it always gets first.
    pub(crate) args: Vec<String>,
    /// Arguments the provider gets last (`--provide-args`).
    pub(crate) provide_extra: Vec<String>,
    /// Arguments the fetcher gets last (`--fetch-args`).
    pub(crate) fetch_extra: Vec<String>,
}

impl PeerCmd {
    /// From `--peer-cmd "PATH [ARGS...]"`, or this xtask's stand-in.
    pub(crate) fn parse(text: Option<&str>) -> Result<Self, String> {
        match text {
            Some(text) => {
                let mut words = text.split_whitespace().map(str::to_owned);
                let program = words.next().ok_or("--peer-cmd is empty")?;
                let program = std::path::absolute(&program)
                    .map_err(|e| format!("--peer-cmd {program}: {e}"))?;
                if !program.is_file() {
                    return Err(format!(
                        "--peer-cmd: {} is not a file (build the example first, e.g. `cargo build --example transfer`, \
                         and pass target/debug/examples/transfer)",
                        program.display()
                    ));
                }
                Ok(Self {
                    program,
                    args: words.collect(),
                    provide_extra: Vec::new(),
                    fetch_extra: Vec::new(),
                })
            }
            None => Ok(Self {
                program: super::topo::self_exe()?,
                args: vec!["netsim-peer".to_owned()],
                provide_extra: Vec::new(),
                fetch_extra: Vec::new(),
            }),
        }
    }

    /// Adds arguments for the provider and the fetcher, each split on whitespace, after the contract's.
    pub(crate) fn with_extra(mut self, provide: Option<&str>, fetch: Option<&str>) -> Self {
        let split = |s: Option<&str>| {
            s.unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        self.provide_extra = split(provide);
        self.fetch_extra = split(fetch);
        self
    }

    /// Whether this is the built-in stand-in.
    pub(crate) fn is_stand_in(&self) -> bool {
        self.args.first().is_some_and(|a| a == "netsim-peer")
    }

    /// How it is shown in reports.
    pub(crate) fn display(&self) -> String {
        if self.is_stand_in() {
            return "xtask netsim-peer (the stand-in)".to_owned();
        }
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The provider's arguments with these discovery flags (see [`Dial::provider_flags`]).
    pub(crate) fn provide_discovering_args(
        &self,
        size: u64,
        relay_url: &str,
        insecure: bool,
        discovery: &[&str],
    ) -> Vec<String> {
        self.role_args(
            "provide",
            &["--size", &size.to_string()],
            relay_url,
            insecure,
            discovery,
        )
    }

    /// The fetcher's arguments when it dials `node_id` alone, found with these discovery flags (see
    /// [`Dial::fetcher_flags`]).
    pub(crate) fn fetch_by_node_id_args(
        &self,
        node_id: &str,
        relay_url: &str,
        insecure: bool,
        discovery: &[&str],
    ) -> Vec<String> {
        self.role_args(
            "fetch",
            &["--node-id", node_id],
            relay_url,
            insecure,
            discovery,
        )
    }

    /// The arguments of the fetcher.
    pub(crate) fn fetch_args(&self, ticket: &str, relay_url: &str, insecure: bool) -> Vec<String> {
        self.role_args("fetch", &["--ticket", ticket], relay_url, insecure, &[])
    }

    /// `ARGS... ROLE TARGET... --relay-url URL --json [--relay-insecure] DISCOVERY... EXTRA...`, with the
    /// role's `--provide-args` / `--fetch-args` last.
    fn role_args(
        &self,
        role: &str,
        target: &[&str],
        relay_url: &str,
        insecure: bool,
        discovery: &[&str],
    ) -> Vec<String> {
        let mut args = self.args.clone();
        args.push(role.to_owned());
        args.extend(target.iter().map(|s| (*s).to_owned()));
        args.extend(["--relay-url", relay_url, "--json"].map(str::to_owned));
        if insecure {
            args.push(RELAY_INSECURE_FLAG.to_owned());
        }
        args.extend(discovery.iter().map(|s| (*s).to_owned()));
        let extra = if role == "provide" {
            &self.provide_extra
        } else {
            &self.fetch_extra
        };
        args.extend(extra.iter().cloned());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_round_trips_and_accepts_integers() {
        let result = FetchResult::new(
            1_000_000,
            Duration::from_millis(500),
            PathKind::Direct,
            Some(Duration::from_millis(120)),
            true,
        );
        assert!((result.throughput_mbps - 16.0).abs() < 1e-9);
        let line = serde_json::to_string(&result).expect("serializes");
        assert_eq!(parse_fetcher_line(&line), FetcherLine::Result(result));
        let integers = r#"{"bytes": 5, "duration_ms": 10, "throughput_mbps": 4, "final_path": "relay", "time_to_direct_ms": null, "hash_ok": false}"#;
        let FetcherLine::Result(parsed) = parse_fetcher_line(integers) else {
            panic!("not parsed: {integers}");
        };
        assert_eq!(parsed.final_path, PathKind::Relay);
        assert_eq!(parsed.time_to_direct_ms, None);
    }

    #[test]
    fn events_and_noise() {
        let line =
            serde_json::to_string(&PathEvent::new(PathKind::Relay, Duration::from_millis(3)))
                .expect("serializes");
        assert!(line.contains(r#""event":"path""#));
        assert_eq!(
            parse_fetcher_line(&line),
            FetcherLine::Path {
                path: PathKind::Relay,
                elapsed_ms: 3.0
            }
        );
        assert_eq!(parse_fetcher_line("connecting..."), FetcherLine::Other);
        assert_eq!(
            parse_fetcher_line(r#"{"event": "other"}"#),
            FetcherLine::Other
        );
        assert_eq!(
            parse_provider_line(r#"{"ticket": "nodeabc"}"#)
                .map(|t| t.ticket)
                .as_deref(),
            Some("nodeabc")
        );
        assert!(parse_provider_line("hello").is_none());
        let both = parse_provider_line(r#"{"ticket": "nodeabc", "node_id": "xyz"}"#).unwrap();
        assert_eq!(both.node_id.as_deref(), Some("xyz"));
    }

    #[test]
    fn argument_lists() {
        let cmd = PeerCmd {
            program: PathBuf::from("/bin/transfer"),
            args: vec![],
            provide_extra: vec![],
            fetch_extra: vec![],
        };
        assert_eq!(
            cmd.provide_discovering_args(10, "https://198.18.0.2/", true, &[]),
            [
                "provide",
                "--size",
                "10",
                "--relay-url",
                "https://198.18.0.2/",
                "--json",
                "--relay-insecure"
            ]
        );
        assert_eq!(
            cmd.fetch_args("nodeX", "http://198.18.0.2/", false),
            [
                "fetch",
                "--ticket",
                "nodeX",
                "--relay-url",
                "http://198.18.0.2/",
                "--json"
            ]
        );
        assert!(!cmd.is_stand_in());
        let extra = cmd.with_extra(Some("--relay-only"), None);
        assert_eq!(
            extra
                .provide_discovering_args(1, "u", false, &[])
                .last()
                .map(String::as_str),
            Some("--relay-only")
        );
        assert_eq!(
            extra.fetch_args("t", "u", false).last().map(String::as_str),
            Some("--json")
        );
    }
}
