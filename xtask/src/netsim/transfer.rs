//! Running one transfer between two sites of a topology with the peer program (see [`super::contract`]).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{
    contract::{
        Dial, FetchResult, FetcherLine, PathKind, PeerCmd, parse_fetcher_line, parse_provider_line,
    },
    sys::{NoLine, NsProcess, Pipes},
    topo::Topology,
};

/// How long a provider may take to print its ticket.
const TICKET_TIMEOUT: Duration = Duration::from_secs(30);

/// A path event as the orchestrator saw it.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct SeenEvent {
    /// The new path.
    pub(crate) path: PathKind,
    /// Milliseconds since the fetcher started, as the fetcher reported it.
    pub(crate) elapsed_ms: f64,
}

/// What [`Transfer::next`] returns.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// A path event (also kept in [`Transfer::events`]).
    Path(SeenEvent),
    /// The fetcher's result line.
    Done(FetchResult),
    /// Nothing by the deadline.
    Timeout,
    /// The fetcher ended without a result; the text says how.
    Failed(String),
}

/// What [`Transfer::wait_for_path`] saw.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Waited {
    /// The path event.
    Seen,
    /// Nothing by the deadline.
    Timeout,
    /// The transfer ended (with a result) before the path event.
    Finished,
}

/// A running provider and fetcher.
#[derive(Debug)]
pub(crate) struct Transfer {
    provider: NsProcess,
    fetcher: NsProcess,
    /// When the fetcher was started.
    pub(crate) started: Instant,
    /// Every path event so far.
    pub(crate) events: Vec<SeenEvent>,
}

impl Transfer {
    /// Starts the provider in site `provider` and, once it printed its ticket, the fetcher in site `fetcher`.
    pub(crate) fn start(
        topo: &Topology<'_>,
        peer: &PeerCmd,
        sites: (usize, usize),
        size: u64,
        label: &str,
    ) -> Result<Self, String> {
        Self::start_dialling(topo, peer, sites, size, label, Dial::Ticket)
    }

    /// [`Transfer::start`], with the fetcher dialling as `dial` says.
    pub(crate) fn start_dialling(
        topo: &Topology<'_>,
        peer: &PeerCmd,
        sites: (usize, usize),
        size: u64,
        label: &str,
        dial: Dial,
    ) -> Result<Self, String> {
        let run = topo.run();
        let relay_url = topo.relay_url();
        let insecure = topo.relay_insecure();
        let pipes = Pipes {
            stdin: false,
            stdout: true,
        };
        let mut provider = NsProcess::spawn(
            "provider",
            &topo.site(sites.0)?.host_ns,
            &peer.program,
            &peer.provide_discovering_args(
                size,
                &relay_url,
                insecure,
                &dial.provider_flags(&relay_url),
            ),
            &run.dir().join(format!("{label}-provider.log")),
            pipes,
        )?;
        let deadline = Instant::now() + TICKET_TIMEOUT;
        let ticket = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match provider.next_line(left) {
                Ok(line) => {
                    if let Some(ticket) = parse_provider_line(&line) {
                        break ticket;
                    }
                }
                Err(NoLine::Timeout) => {
                    return Err(format!(
                        "the provider printed no ticket within {TICKET_TIMEOUT:?}; log {}:\n{}",
                        provider.log().display(),
                        provider.log_tail(10)
                    ));
                }
                Err(NoLine::Closed) => {
                    return Err(format!(
                        "the provider exited without a ticket; log {}:\n{}",
                        provider.log().display(),
                        provider.log_tail(10)
                    ));
                }
            }
        };
        let fetcher = NsProcess::spawn(
            "fetcher",
            &topo.site(sites.1)?.host_ns,
            &peer.program,
            &match (dial, &ticket.node_id) {
                (Dial::Ticket, _) => peer.fetch_args(&ticket.ticket, &relay_url, insecure),
                (Dial::NodeId | Dial::Local, Some(node_id)) => peer.fetch_by_node_id_args(
                    node_id,
                    &relay_url,
                    insecure,
                    &dial.fetcher_flags(&topo.dns_server().to_string()),
                ),
                (Dial::NodeId | Dial::Local, None) => {
                    return Err(format!(
                        "the provider printed no node_id with its ticket (needed to dial by NodeId); log {}",
                        provider.log().display()
                    ));
                }
            },
            &run.dir().join(format!("{label}-fetcher.log")),
            pipes,
        )?;
        Ok(Self {
            provider,
            fetcher,
            started: Instant::now(),
            events: Vec::new(),
        })
    }

    /// The next thing the fetcher reports, waiting until `deadline`.
    pub(crate) fn next(&mut self, deadline: Instant) -> Step {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.fetcher.next_line(left) {
                Ok(line) => match parse_fetcher_line(&line) {
                    FetcherLine::Path { path, elapsed_ms } => {
                        let event = SeenEvent { path, elapsed_ms };
                        self.events.push(event);
                        return Step::Path(event);
                    }
                    FetcherLine::Result(result) => return Step::Done(result),
                    FetcherLine::Other => {}
                },
                Err(NoLine::Timeout) => return Step::Timeout,
                Err(NoLine::Closed) => {
                    let status = self.fetcher.wait_timeout(Duration::from_secs(2));
                    return Step::Failed(format!(
                        "the fetcher ended ({}) without a result; log {}:\n{}",
                        status.map_or_else(|| "still running".to_owned(), |s| s.to_string()),
                        self.fetcher.log().display(),
                        self.fetcher.log_tail(10)
                    ));
                }
            }
        }
    }

    /// Reads until the result (keeping path events), a failure or `deadline`.
    pub(crate) fn finish(&mut self, deadline: Instant) -> Result<FetchResult, String> {
        loop {
            match self.next(deadline) {
                Step::Path(_) => {}
                Step::Done(result) => return Ok(result),
                Step::Timeout => {
                    return Err(format!(
                        "no result within {:.0} s; fetcher log {}:\n{}",
                        self.started.elapsed().as_secs_f64(),
                        self.fetcher.log().display(),
                        self.fetcher.log_tail(8)
                    ));
                }
                Step::Failed(why) => return Err(why),
            }
        }
    }

    /// Milliseconds since the fetcher started (the clock of its `elapsed_ms`, give or take its start-up).
    pub(crate) fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    /// Waits until the fetcher reports path `path` at `after_ms` or later (by its own clock; earlier
    /// events may still sit unread in the pipe), the transfer ends, or `deadline`.
    pub(crate) fn wait_for_path(
        &mut self,
        path: PathKind,
        after_ms: f64,
        deadline: Instant,
    ) -> Result<Waited, String> {
        loop {
            match self.next(deadline) {
                Step::Path(event) if event.path == path && event.elapsed_ms >= after_ms => {
                    return Ok(Waited::Seen);
                }
                Step::Path(_) => {}
                Step::Timeout => return Ok(Waited::Timeout),
                Step::Done(_) => return Ok(Waited::Finished),
                Step::Failed(why) => return Err(why),
            }
        }
    }

    /// The provider's next line of output after its ticket, waiting at most `timeout`.
    pub(crate) fn provider_line(&mut self, timeout: Duration) -> Result<String, NoLine> {
        self.provider.next_line(timeout)
    }

    /// Stops the provider alone (SIGTERM, then SIGKILL after `grace`).
    pub(crate) fn stop_provider(&mut self, grace: Duration) {
        self.provider.stop(grace);
    }

    /// Stops both peers (SIGTERM, then SIGKILL after 2 s).
    pub(crate) fn stop(&mut self) {
        self.fetcher.stop(Duration::from_secs(2));
        self.provider.stop(Duration::from_secs(2));
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        self.stop();
    }
}
