//! `xtask netsim-peer`: the stand-in peer program, following the contract of [`super::contract`] until the
//! real transfer example exists.
//!
//! It behaves like a small iroh on purpose, so the matrix it drives says something about the topology: each
//! side learns its public UDP address from the relay's STUN server (port 3478 on the relay's host), the
//! fetcher sends its addresses to the provider through the relay (the provider's are in the ticket), both
//! send UDP pings to all of the other's addresses every 250 ms (learning new ones from incoming pings, as ICE
//! does with peer-reflexive candidates) and a path is direct while pongs come back (1.5 s without one: back
//! to the relay). Data goes direct when it can, through the relay otherwise, with the windowed, acknowledged
//! transfer of [`wire`]; every chunk is checked against the seeded content as it arrives.
//!
//! So: direct wherever UDP holepunching works between the two NATs, relayed elsewhere, falling back when the
//! direct path dies and returning when it heals. It is no QUIC: no congestion control, no encryption.

mod wire;

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    process::ExitCode,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use iroh_base::{NodeAddr, NodeId, NodeTicket, RelayUrl, SecretKey};
use iroh_relay::{
    client::{ClientBuilder, ClientReceiver, ClientSender, ReceivedEvent},
    protos::frame::Datagrams,
};
use tokio::net::UdpSocket;

use self::wire::{Msg, Receiver, Sender, v4_only};
use super::contract::{FetchResult, PathEvent, PathKind, TicketLine};

/// Pings on a candidate path this often.
const PING_EVERY: Duration = Duration::from_millis(250);
/// A direct path without a pong for this long is dead.
const DIRECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// The fetcher repeats its hello this often until the provider answers.
const HELLO_EVERY: Duration = Duration::from_millis(300);
/// The fetcher reports a new path after this many new-frontier data datagrams in a row arrived on it.
const SWITCH_AFTER: u32 = 4;
/// Housekeeping tick.
const TICK: Duration = Duration::from_millis(2);

#[derive(Debug, Parser)]
#[command(
    name = "xtask netsim-peer",
    about = "stand-in peer program for cargo xtask netsim"
)]
struct Cli {
    #[command(subcommand)]
    command: PeerCommand,
}

#[derive(Debug, Subcommand)]
enum PeerCommand {
    /// Prints a ticket, then serves SIZE bytes to one fetcher until killed.
    Provide {
        /// Bytes to serve.
        #[arg(long)]
        size: u64,
        /// The relay.
        #[arg(long)]
        relay_url: RelayUrl,
        /// Accept any relay certificate (the netsim relay's is self-signed).
        #[arg(long)]
        relay_insecure: bool,
        /// Print JSON lines (the only output this stand-in has).
        #[arg(long)]
        json: bool,
    },
    /// Fetches from the provider of TICKET and prints the result.
    Fetch {
        /// The provider's ticket.
        #[arg(long)]
        ticket: NodeTicket,
        /// Our relay (default: the provider's, from the ticket).
        #[arg(long)]
        relay_url: Option<RelayUrl>,
        /// Accept any relay certificate.
        #[arg(long)]
        relay_insecure: bool,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// `xtask netsim-peer provide|fetch ...`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    super::run_helper("netsim-peer", args, |cli: Cli| async move {
        match cli.command {
            PeerCommand::Provide {
                size,
                relay_url,
                relay_insecure,
                json: _,
            } => provide(size, relay_url, relay_insecure).await,
            PeerCommand::Fetch {
                ticket,
                relay_url,
                relay_insecure,
                json: _,
            } => fetch(&ticket, relay_url, relay_insecure).await,
        }
    })
}

fn print_line(value: &impl serde::Serialize) {
    if let Ok(line) = serde_json::to_string(value) {
        println!("{line}");
    }
}

/// The socket, the relay client, and the state of the direct path to the one other peer.
struct Node {
    node_id: NodeId,
    socket: UdpSocket,
    relay_tx: ClientSender,
    relay_rx: ClientReceiver,
    candidates: BTreeSet<SocketAddr>,
    confirmed: Option<(SocketAddr, Instant)>,
    last_ping: Option<Instant>,
    pings_sent: u64,
    first_direct: Option<Instant>,
}

impl Node {
    async fn start(
        relay_url: &RelayUrl,
        insecure: bool,
    ) -> Result<(Self, Vec<SocketAddr>), String> {
        let socket = UdpSocket::bind("0.0.0.0:0")
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let addrs = own_addrs(&socket, relay_url).await;
        let secret = SecretKey::generate();
        let node_id = secret.public();
        let client = ClientBuilder::new(relay_url.clone(), secret)
            .insecure_skip_cert_verify(insecure)
            .build();
        let (relay_tx, relay_rx) = client.split();
        Ok((
            Self {
                node_id,
                socket,
                relay_tx,
                relay_rx,
                candidates: BTreeSet::new(),
                confirmed: None,
                last_ping: None,
                pings_sent: 0,
                first_direct: None,
            },
            addrs,
        ))
    }

    /// The live direct path, if any.
    fn direct(&self, now: Instant) -> Option<SocketAddr> {
        self.confirmed
            .filter(|(_, at)| now.saturating_duration_since(*at) < DIRECT_TIMEOUT)
            .map(|(addr, _)| addr)
    }

    async fn send_relay(&self, to: NodeId, msg: &Msg) {
        let datagrams = Datagrams::single(Bytes::from(msg.encode()));
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.relay_tx.send(to, datagrams)).await;
    }

    async fn send_udp(&self, to: SocketAddr, msg: &Msg) {
        // Errors (a fault rule's EPERM, an unreachable network) are a lost datagram, as for any UDP sender.
        let _ = self.socket.send_to(&msg.encode(), to).await;
    }

    /// Sends pings to every candidate when it is time.
    async fn ping_if_due(&mut self, now: Instant) {
        if self
            .last_ping
            .is_some_and(|at| now.saturating_duration_since(at) < PING_EVERY)
        {
            return;
        }
        self.last_ping = Some(now);
        self.pings_sent += 1;
        let nonce = self.pings_sent;
        for addr in self.candidates.clone() {
            self.send_udp(addr, &Msg::Ping(nonce)).await;
        }
    }

    /// Handles the path messages of a UDP datagram; returns the rest.
    async fn on_udp(&mut self, from: SocketAddr, msg: Msg) -> Option<Msg> {
        match msg {
            Msg::Ping(nonce) => {
                self.candidates.insert(from);
                self.send_udp(from, &Msg::Pong(nonce)).await;
                None
            }
            Msg::Pong(_) => {
                let now = Instant::now();
                self.confirmed = Some((from, now));
                self.first_direct.get_or_insert(now);
                None
            }
            other => Some(other),
        }
    }
}

/// Our STUN-mapped address (from the relay host's STUN server) and our local address.
async fn own_addrs(socket: &UdpSocket, relay_url: &RelayUrl) -> Vec<SocketAddr> {
    let Some(host) = relay_url.as_url().host_str() else {
        return Vec::new();
    };
    let Ok(relay_ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() else {
        return Vec::new();
    };
    let stun = SocketAddr::new(relay_ip, iroh_stun::DEFAULT_PORT);
    let config = iroh_stun::TransactionConfig {
        rto: Duration::from_millis(100),
        max_transmits: 4,
        last_wait_multiplier: 4,
    };
    let mut addrs = Vec::new();
    if let Ok(reflexive) = iroh_stun::query_reflexive_addr(socket, stun, config).await {
        addrs.push(reflexive.addr);
    }
    // The local address the route to the relay uses (connecting a UDP socket sends nothing).
    if let Ok(port) = socket.local_addr().map(|a| a.port())
        && let Ok(probe) = std::net::UdpSocket::bind("0.0.0.0:0")
        && probe.connect(stun).is_ok()
        && let Ok(local) = probe.local_addr()
    {
        addrs.push(SocketAddr::new(local.ip(), port));
    }
    addrs.dedup();
    addrs
}

async fn provide(size: u64, relay_url: RelayUrl, insecure: bool) -> Result<(), String> {
    let (mut node, addrs) = Node::start(&relay_url, insecure).await?;
    let node_id = node.node_id;
    let ticket = NodeTicket::new(NodeAddr::from_parts(node_id, Some(relay_url), addrs));
    print_line(&TicketLine {
        ticket: ticket.to_string(),
        node_id: Some(node_id.to_string()),
    });
    let seed = u64::from(std::process::id()) ^ 0xfeed_5eed;
    let mut fetcher: Option<NodeId> = None;
    let mut sender = Sender::new(size, seed);
    let mut done = false;
    let mut buf = vec![0u8; 65536];
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let mut incoming: Vec<Msg> = Vec::new();
        tokio::select! {
            received = node.socket.recv_from(&mut buf) => {
                if let Ok((len, from)) = received
                    && let Some(msg) = Msg::decode(buf.get(..len).unwrap_or_default())
                    && let Some(msg) = node.on_udp(from, msg).await
                {
                    incoming.push(msg);
                }
            }
            event = node.relay_rx.recv() => {
                let Some(event) = event else { return Err("relay client closed".into()) };
                if let ReceivedEvent::Datagrams { src, datagrams } = event {
                    for datagram in datagrams.iter() {
                        match Msg::decode(&datagram) {
                            Some(Msg::Hello { addrs }) => {
                                fetcher = Some(src);
                                node.candidates.extend(addrs.into_iter().map(SocketAddr::V4));
                                node.send_relay(src, &Msg::Meta { size, seed }).await;
                            }
                            Some(msg) => incoming.push(msg),
                            None => {}
                        }
                    }
                }
            }
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        for msg in incoming {
            match msg {
                Msg::Ack { cum, bits } => sender.on_ack(now, cum, &bits),
                Msg::Done if !done => {
                    done = true;
                    eprintln!(
                        "netsim-peer: the fetcher has everything (all acknowledged: {})",
                        sender.complete()
                    );
                }
                _ => {}
            }
        }
        let Some(fetcher) = fetcher else { continue };
        node.ping_if_due(now).await;
        let direct = node.direct(now);
        while let Some(data) = sender.poll_transmit(now) {
            match direct {
                Some(addr) => node.send_udp(addr, &data).await,
                None => node.send_relay(fetcher, &data).await,
            }
        }
    }
}

async fn fetch(
    ticket: &NodeTicket,
    relay_url: Option<RelayUrl>,
    insecure: bool,
) -> Result<(), String> {
    let started = Instant::now();
    let provider = ticket.node_id();
    let relay_url = relay_url
        .or_else(|| ticket.node_addr().relay_url.clone())
        .ok_or("no relay: neither --relay-url nor one in the ticket")?;
    let (mut node, addrs) = Node::start(&relay_url, insecure).await?;
    node.candidates
        .extend(ticket.node_addr().direct_addresses.iter().copied());
    let hello = Msg::Hello {
        addrs: v4_only(addrs),
    };
    let mut receiver: Option<Receiver> = None;
    let mut last_hello: Option<Instant> = None;
    let mut path: Option<PathKind> = None;
    let mut streak: (Option<PathKind>, u32) = (None, 0);
    // The highest chunk seen: only chunks beyond it show the path the provider sends new data on now
    // (stragglers of the old path and retransmissions carry lower numbers).
    let mut frontier: Option<u32> = None;
    let mut buf = vec![0u8; 65536];
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        // (message, where it came from: None = the relay)
        let mut incoming: Vec<(Msg, Option<SocketAddr>)> = Vec::new();
        tokio::select! {
            received = node.socket.recv_from(&mut buf) => {
                if let Ok((len, from)) = received
                    && let Some(msg) = Msg::decode(buf.get(..len).unwrap_or_default())
                    && let Some(msg) = node.on_udp(from, msg).await
                {
                    incoming.push((msg, Some(from)));
                }
            }
            event = node.relay_rx.recv() => {
                let Some(event) = event else { return Err("relay client closed".into()) };
                if let ReceivedEvent::Datagrams { src, datagrams } = event
                    && src == provider
                {
                    incoming.extend(datagrams.iter().filter_map(|d| Msg::decode(&d)).map(|m| (m, None)));
                }
            }
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        for (msg, from) in incoming {
            match msg {
                Msg::Meta { size, seed } if receiver.is_none() => {
                    receiver = Some(Receiver::new(size, seed));
                }
                Msg::Data { index, payload } => {
                    let Some(receiver) = receiver.as_mut() else {
                        continue;
                    };
                    receiver.on_data(index, &payload);
                    let ack = receiver.ack();
                    match from {
                        Some(addr) => node.send_udp(addr, &ack).await,
                        None => node.send_relay(provider, &ack).await,
                    }
                    if frontier.is_some_and(|f| index <= f) {
                        continue;
                    }
                    frontier = Some(index);
                    let this_path = if from.is_some() {
                        PathKind::Direct
                    } else {
                        PathKind::Relay
                    };
                    streak = if streak.0 == Some(this_path) {
                        (streak.0, streak.1 + 1)
                    } else {
                        (Some(this_path), 1)
                    };
                    // The first data decides at once; changes need a streak.
                    if path.is_none() || (path != Some(this_path) && streak.1 >= SWITCH_AFTER) {
                        path = Some(this_path);
                        print_line(&PathEvent::new(this_path, started.elapsed()));
                    }
                }
                _ => {}
            }
        }
        if let Some(receiver) = &receiver
            && receiver.complete()
        {
            for _ in 0..3 {
                node.send_relay(provider, &Msg::Done).await;
                if let Some(addr) = node.direct(now) {
                    node.send_udp(addr, &Msg::Done).await;
                }
            }
            let elapsed = started.elapsed();
            print_line(&FetchResult::new(
                receiver.bytes(),
                elapsed,
                path.unwrap_or(PathKind::Relay),
                node.first_direct
                    .map(|at| at.saturating_duration_since(started)),
                receiver.all_correct(),
            ));
            node.relay_tx.close().await;
            return Ok(());
        }
        if receiver.is_none()
            && last_hello.is_none_or(|at| now.saturating_duration_since(at) >= HELLO_EVERY)
        {
            last_hello = Some(now);
            node.send_relay(provider, &hello).await;
        }
        node.ping_if_due(now).await;
    }
}
