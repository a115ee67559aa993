//! `xtask netsim-probe`: the small network programs the self-test and the measurements run inside the
//! namespaces, each printing one JSON line.
//!
//! - `serve --udp ADDR... [--tcp ADDR...]`: on every UDP address, answers STUN Binding requests
//!   ([`iroh_stun::respond`]; requests with attributes it does not know are answered too), echoes `NSIM-ECHO` datagrams, and answers `NSIM-REFLECT <token>` by sending
//!   `NSIM-REFLECTED <token>` to the requester from *every* one of its UDP sockets (the filtering test: which
//!   of them get through the requester's NAT). On every TCP address, a sink: it reads until EOF, then
//!   answers `BYTES NANOS` (bytes read, time from the first byte to EOF). Runs until standard input closes.
//! - `nat --stun ADDR... --reflect ADDR --relay-tcp ADDR`: from one UDP socket, asks each STUN server for the
//!   mapped address, then asks `--reflect` to reflect and collects where packets arrive from; then tries a
//!   TCP connection to the relay. Prints a [`NatReport`].
//! - `echo --to ADDR --count N --interval-us U --size B --linger-ms L`: UDP echo round trips; prints an
//!   [`EchoReport`].
//! - `tcp-send --to ADDR --secs S`: sends as fast as TCP allows to a sink; prints a [`TcpReport`].
//! - `wait-tcp --to ADDR --timeout-ms T`: exits 0 once a TCP connection to ADDR succeeds, 1 at the deadline.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
};

const ECHO: &[u8] = b"NSIM-ECHO";
const REFLECT: &[u8] = b"NSIM-REFLECT";
const REFLECTED: &[u8] = b"NSIM-REFLECTED";

#[derive(Debug, Parser)]
#[command(
    name = "xtask netsim-probe",
    about = "network probes run inside netsim namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: ProbeCommand,
}

#[derive(Debug, Subcommand)]
enum ProbeCommand {
    /// STUN, echo and reflect server on UDP, byte sink on TCP; runs until stdin closes.
    Serve {
        /// UDP addresses to serve.
        #[arg(long)]
        udp: Vec<SocketAddr>,
        /// TCP sink addresses.
        #[arg(long)]
        tcp: Vec<SocketAddr>,
    },
    /// Mapping and filtering of the NAT in front of this host, and TCP reachability of the relay.
    Nat {
        /// STUN servers to ask, in order, from one socket.
        #[arg(long, required = true)]
        stun: Vec<SocketAddr>,
        /// The probe server to ask for reflected packets (after all STUN queries).
        #[arg(long)]
        reflect: SocketAddr,
        /// The relay's TCP address.
        #[arg(long)]
        relay_tcp: SocketAddr,
    },
    /// UDP echo round trips.
    Echo {
        /// The echo server.
        #[arg(long)]
        to: SocketAddr,
        /// Datagrams to send.
        #[arg(long, default_value_t = 100)]
        count: u32,
        /// Pause between datagrams, in microseconds.
        #[arg(long, default_value_t = 2000)]
        interval_us: u64,
        /// Datagram size in bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// How long to wait for late echoes after the last send, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        linger_ms: u64,
    },
    /// TCP bulk send to a sink.
    TcpSend {
        /// The sink.
        #[arg(long)]
        to: SocketAddr,
        /// For how long, in seconds.
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
    },
    /// Waits until a TCP connection succeeds.
    WaitTcp {
        /// Where to connect.
        #[arg(long)]
        to: SocketAddr,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
}

/// What `nat` found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NatReport {
    /// The local port of the probing socket.
    pub(crate) local_port: u16,
    /// One entry per STUN server, in order.
    pub(crate) stun: Vec<StunResult>,
    /// The sources that reflected packets arrived from (empty when nothing got through).
    pub(crate) reflected_from: Vec<SocketAddr>,
    /// Whether a TCP connection to the relay succeeded.
    pub(crate) relay_tcp_ok: bool,
    /// Why not, if it did not.
    pub(crate) relay_tcp_error: Option<String>,
}

/// One STUN query of `nat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StunResult {
    /// The server asked.
    pub(crate) server: SocketAddr,
    /// The mapped address it saw, if it answered.
    pub(crate) mapped: Option<SocketAddr>,
    /// Why there is none.
    pub(crate) error: Option<String>,
}

/// What `echo` measured.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct EchoReport {
    /// Datagrams sent.
    pub(crate) sent: u32,
    /// Echoes received.
    pub(crate) received: u32,
    /// `100 * (sent - received) / sent`.
    pub(crate) loss_percent: f64,
    /// Smallest round trip, milliseconds (0 without any).
    pub(crate) rtt_min_ms: f64,
    /// Median round trip.
    pub(crate) rtt_p50_ms: f64,
    /// 99th percentile round trip.
    pub(crate) rtt_p99_ms: f64,
    /// Largest round trip.
    pub(crate) rtt_max_ms: f64,
}

/// What `tcp-send` measured (at the sink: first byte to EOF).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct TcpReport {
    /// Bytes the sink read.
    pub(crate) bytes: u64,
    /// Seconds from the sink's first byte to EOF.
    pub(crate) secs: f64,
    /// Megabits per second.
    pub(crate) mbps: f64,
}

/// `xtask netsim-probe ...`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    super::run_helper("netsim-probe", args, |cli: Cli| async move {
        match cli.command {
            ProbeCommand::Serve { udp, tcp } => serve(&udp, &tcp).await,
            ProbeCommand::Nat {
                stun,
                reflect,
                relay_tcp,
            } => print_json(&nat(&stun, reflect, relay_tcp).await?),
            ProbeCommand::Echo {
                to,
                count,
                interval_us,
                size,
                linger_ms,
            } => {
                let pacing = (
                    Duration::from_micros(interval_us),
                    Duration::from_millis(linger_ms),
                );
                print_json(&echo(to, count, pacing, size).await?)
            }
            ProbeCommand::TcpSend { to, secs } => {
                print_json(&tcp_send(to, Duration::from_secs_f64(secs)).await?)
            }
            ProbeCommand::WaitTcp { to, timeout_ms } => {
                wait_tcp(to, Duration::from_millis(timeout_ms)).await
            }
        }
    })
}

fn print_json(value: &impl Serialize) -> Result<(), String> {
    let line = serde_json::to_string(value).map_err(|e| e.to_string())?;
    println!("{line}");
    Ok(())
}

async fn serve(udp: &[SocketAddr], tcp: &[SocketAddr]) -> Result<(), String> {
    // Ends the process when the orchestrator closes our stdin (or dies).
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let mut sockets = Vec::new();
    for addr in udp {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|e| format!("bind udp {addr}: {e}"))?;
        sockets.push(Arc::new(socket));
    }
    let sockets = Arc::new(sockets);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..sockets.len() {
        let sockets = Arc::clone(&sockets);
        tasks.spawn(async move { serve_udp(&sockets, index).await });
    }
    for addr in tcp {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("bind tcp {addr}: {e}"))?;
        tasks.spawn(async move { serve_tcp(listener).await });
    }
    println!("ready");
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            return Err(e);
        }
    }
    Ok(())
}

async fn serve_udp(sockets: &[Arc<UdpSocket>], index: usize) -> Result<(), String> {
    let socket = sockets.get(index).ok_or("no such socket")?;
    let mut buf = vec![0u8; 2048];
    loop {
        let (len, from) = socket
            .recv_from(&mut buf)
            .await
            .map_err(|e| format!("udp recv: {e}"))?;
        let packet = buf.get(..len).unwrap_or_default();
        if packet.starts_with(ECHO) {
            let _ = socket.send_to(packet, from).await;
        } else if let Some(token) = packet.strip_prefix(REFLECT) {
            let mut answer = REFLECTED.to_vec();
            answer.extend_from_slice(token);
            for other in sockets {
                let _ = other.send_to(&answer, from).await;
            }
        } else if iroh_stun::is_stun(packet)
            && let Ok(Some(response)) = iroh_stun::respond(from, packet, Some("netsim-probe"))
        {
            let mut bytes = response.to_bytes();
            // A Binding request refused for an attribute we do not know (RFC 3489's CHANGE-REQUEST,
            // which miniupnpd sends to learn its external address): answered anyway, from here, as
            // many public servers do. miniupnpd then sees its own address and trusts it.
            if packet.get(..2) == Some(&[0, 1])
                && bytes.get(..2) == Some(&[0x01, 0x11])
                && let Some(id) = iroh_stun::peek_transaction_id(packet)
            {
                bytes = iroh_stun::Message::binding_success(id, from).to_bytes();
            }
            let _ = socket.send_to(&bytes, from).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener) -> Result<(), String> {
    loop {
        let (mut stream, _) = listener
            .accept()
            .await
            .map_err(|e| format!("tcp accept: {e}"))?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut bytes = 0u64;
            let mut first = None;
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        first.get_or_insert_with(Instant::now);
                        bytes += n as u64;
                    }
                }
            }
            let nanos = first.map_or(0, |t| t.elapsed().as_nanos());
            let _ = stream
                .write_all(format!("{bytes} {nanos}\n").as_bytes())
                .await;
        });
    }
}

async fn nat(
    servers: &[SocketAddr],
    reflect: SocketAddr,
    relay_tcp: SocketAddr,
) -> Result<NatReport, String> {
    let socket = UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let local_port = socket.local_addr().map_err(|e| e.to_string())?.port();
    // Short retransmissions: everything is a few milliseconds away, and UDP-blocked hosts must fail fast.
    let config = iroh_stun::TransactionConfig {
        rto: Duration::from_millis(150),
        max_transmits: 4,
        last_wait_multiplier: 4,
    };
    let mut stun = Vec::new();
    for server in servers {
        let result = iroh_stun::query_reflexive_addr(&socket, *server, config).await;
        stun.push(StunResult {
            server: *server,
            mapped: result.as_ref().ok().map(|r| r.addr),
            error: result.err().map(|e| e.to_string()),
        });
    }

    // Filtering: ask `reflect` to answer from all its sockets, a few times in case of loss, and see which
    // answers get in.
    let token = u64::from(local_port)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .to_be_bytes();
    let mut request = REFLECT.to_vec();
    request.extend_from_slice(&token);
    let mut expected = REFLECTED.to_vec();
    expected.extend_from_slice(&token);
    let mut reflected_from = BTreeSet::new();
    let mut buf = vec![0u8; 2048];
    for _ in 0..3 {
        let _ = socket.send_to(&request, reflect).await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(250);
        while let Ok(Ok((len, from))) =
            tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            if buf.get(..len) == Some(expected.as_slice()) {
                reflected_from.insert(from);
            }
        }
    }

    let tcp = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(relay_tcp)).await;
    let (relay_tcp_ok, relay_tcp_error) = match tcp {
        Ok(Ok(_)) => (true, None),
        Ok(Err(e)) => (false, Some(e.to_string())),
        Err(_) => (false, Some("timed out".to_owned())),
    };
    Ok(NatReport {
        local_port,
        stun,
        reflected_from: reflected_from.into_iter().collect(),
        relay_tcp_ok,
        relay_tcp_error,
    })
}

/// `pacing`: the pause between datagrams, and the wait for late echoes after the last.
async fn echo(
    to: SocketAddr,
    count: u32,
    pacing: (Duration, Duration),
    size: usize,
) -> Result<EchoReport, String> {
    let (interval, linger) = pacing;
    let socket = Arc::new(
        UdpSocket::bind("0.0.0.0:0")
            .await
            .map_err(|e| format!("bind: {e}"))?,
    );
    let start = Instant::now();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let receiver = {
        let socket = Arc::clone(&socket);
        tokio::spawn(async move {
            let mut rtts = Vec::new();
            let mut seen = BTreeSet::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let received = tokio::select! {
                    _ = &mut stopped => break,
                    received = socket.recv_from(&mut buf) => received,
                };
                let Ok((len, _)) = received else { break };
                let now = start.elapsed();
                let Some(body) = buf.get(..len).and_then(|b| b.strip_prefix(ECHO)) else {
                    continue;
                };
                let Some(stamp) = body.get(..16) else {
                    continue;
                };
                let mut seq = [0u8; 8];
                let mut sent = [0u8; 8];
                seq.copy_from_slice(&stamp[..8]);
                sent.copy_from_slice(&stamp[8..]);
                if seen.insert(u64::from_be_bytes(seq)) {
                    let sent = Duration::from_nanos(u64::from_be_bytes(sent));
                    rtts.push(now.saturating_sub(sent));
                }
            }
            rtts
        })
    };
    let mut packet = vec![0u8; size.max(ECHO.len() + 16)];
    packet[..ECHO.len()].copy_from_slice(ECHO);
    let mut next = tokio::time::Instant::now();
    for seq in 0..count {
        let sent = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        packet[ECHO.len()..ECHO.len() + 8].copy_from_slice(&u64::from(seq).to_be_bytes());
        packet[ECHO.len() + 8..ECHO.len() + 16].copy_from_slice(&sent.to_be_bytes());
        // A failed send (EPERM from a firewall rule, an unreachable network) is a lost datagram.
        let _ = socket.send_to(&packet, to).await;
        next += interval;
        tokio::time::sleep_until(next).await;
    }
    tokio::time::sleep(linger).await;
    let _ = stop.send(());
    let mut rtts = receiver.await.map_err(|e| format!("echo receiver: {e}"))?;
    rtts.sort();
    let received = u32::try_from(rtts.len()).unwrap_or(u32::MAX);
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let quantile = |q: f64| {
        // Rounded index into a non-empty sorted list.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = ((rtts.len().saturating_sub(1)) as f64 * q).round() as usize;
        ms(rtts.get(i))
    };
    Ok(EchoReport {
        sent: count,
        received,
        loss_percent: if count == 0 {
            0.0
        } else {
            100.0 * f64::from(count - received.min(count)) / f64::from(count)
        },
        rtt_min_ms: ms(rtts.first()),
        rtt_p50_ms: quantile(0.5),
        rtt_p99_ms: quantile(0.99),
        rtt_max_ms: ms(rtts.last()),
    })
}

async fn tcp_send(to: SocketAddr, secs: Duration) -> Result<TcpReport, String> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(to))
        .await
        .map_err(|_| format!("connect to {to}: timed out"))?
        .map_err(|e| format!("connect to {to}: {e}"))?;
    let chunk = vec![0x5au8; 128 * 1024];
    let end = Instant::now() + secs;
    while Instant::now() < end {
        stream
            .write_all(&chunk)
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    stream
        .shutdown()
        .await
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut answer))
        .await
        .map_err(|_| "the sink did not answer".to_owned())?
        .map_err(|e| format!("read answer: {e}"))?;
    let mut words = answer.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(bytes)), Some(Ok(nanos))) = (words.next(), words.next()) else {
        return Err(format!("bad answer from the sink: {answer:?}"));
    };
    let secs = Duration::from_nanos(nanos).as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let mbps = if secs > 0.0 {
        bytes as f64 * 8.0 / secs / 1e6
    } else {
        0.0
    };
    Ok(TcpReport { bytes, secs, mbps })
}

async fn wait_tcp(to: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt =
            tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(to)).await;
        if let Ok(Ok(_)) = attempt {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("no TCP connection to {to} within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
