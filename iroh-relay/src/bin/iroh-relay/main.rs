//! The `iroh-relay` binary: runs a relay server (and its STUN server) from a TOML configuration file, or with
//! `--dev` on fixed local ports for trying things out. See the crate README for every configuration key.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::Parser;
use iroh_relay::server::{DiscoveryConfig, Server, ServerConfig, config::FileConfig};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

mod trim;

/// Where `--dev` serves the relay (plain HTTP).
const DEV_RELAY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3340);
/// Where `--dev` serves STUN.
const DEV_STUN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3478);
/// Where `--dev` serves metrics.
const DEV_METRICS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

/// An iroh relay server: forwards datagrams between nodes by node id, and answers STUN.
///
/// Logs go to standard error; set RUST_LOG to change the level (default: info). Stops gracefully on SIGTERM
/// or Ctrl-C, telling connected clients to reconnect elsewhere.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Development mode: plain HTTP relay on 127.0.0.1:3340, STUN on 127.0.0.1:3478 (UDP), metrics on
    /// http://127.0.0.1:9090/metrics, and discovery (publish endpoint on the relay listener, DNS on
    /// 127.0.0.1:5300 UDP and TCP for the origin iroh.test, records in memory); everyone allowed, no
    /// rate limit. Not for production.
    #[arg(long, conflicts_with = "config")]
    dev: bool,

    /// Path of the TOML configuration file (every key is documented in the iroh-relay README).
    #[arg(long, short, value_name = "FILE", required_unless_present = "dev")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            // hickory-server logs every DNS answer at info.
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,hickory_server=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let config = match &cli.config {
        Some(path) => FileConfig::load(path)
            .and_then(FileConfig::into_server_config)
            .map_err(|e| format!("{}: {e}", path.display()))?,
        None => ServerConfig::new(DEV_RELAY)
            .with_stun_bind(Some(DEV_STUN))
            .with_metrics_bind(Some(DEV_METRICS))
            .with_discovery(Some(DiscoveryConfig::dev())),
    };
    if config.tls.is_none() && !cli.dev {
        warn!("no [tls] section: serving plain HTTP, which is meant for development only");
    }
    // Listen for signals before anything is announced, so a signal sent right after startup is not lost.
    let signals = Signals::new()?;
    let server = Server::spawn(config)
        .await
        .map_err(|e| format!("cannot start the relay: {e}"))?;
    info!(relay_url = %server.relay_url(), "relay URL: {}", server.relay_url());
    if let Some(stun) = server.stun_addr() {
        info!("STUN on udp://{stun}");
    }
    if let Some(stun) = server.stun_alt_addr() {
        info!("second STUN socket on udp://{stun}");
    }
    if let Some(metrics) = server.metrics_addr() {
        info!("metrics on http://{metrics}/metrics");
    }
    if let Some(url) = server.discovery_url() {
        info!("discovery: publish endpoint {url} (records at {url}pkarr/<node id>)");
    }
    if let (Some(dns), Some(origin)) = (server.dns_addr(), server.discovery_origin()) {
        info!("discovery: DNS on {dns} (UDP and TCP) for the origin {origin}");
    }
    tokio::select! {
        () = signals.wait() => {}
        () = trim::run(&server) => {}
    }
    server.shutdown().await;
    Ok(())
}

/// Raises the soft limit on open files to the hard limit, and logs the figure: each relay connection is a
/// file descriptor, and the usual soft limit of 1,024 is far below what a relay holds.
fn raise_fd_limit() {
    let before = rlimit::Resource::NOFILE.get();
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let (soft, hard) = before.unwrap_or((limit, limit));
            if limit > soft {
                info!(
                    limit,
                    was = soft,
                    hard,
                    "raised the open file limit to the hard limit"
                );
            } else {
                info!(limit, hard, "open file limit");
            }
            if limit < 4096 {
                warn!(
                    limit,
                    "the open file limit is low for a relay; raise the hard limit (LimitNOFILE= in a systemd \
                     unit, or ulimit -Hn)"
                );
            }
        }
        Err(error) => warn!(%error, "cannot read or raise the open file limit"),
    }
}

/// SIGTERM and Ctrl-C (SIGINT), registered on creation.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn new() -> Result<Self, String> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| format!("cannot listen for {name}: {e}"))
        };
        Ok(Self {
            terminate: listen(SignalKind::terminate(), "SIGTERM")?,
            interrupt: listen(SignalKind::interrupt(), "Ctrl-C")?,
        })
    }

    #[cfg(not(unix))]
    fn new() -> Result<Self, String> {
        Ok(Self {})
    }

    /// Waits for either signal.
    #[cfg(unix)]
    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => info!("SIGTERM received"),
            _ = self.interrupt.recv() => info!("Ctrl-C received"),
        }
    }

    /// Waits for Ctrl-C.
    #[cfg(not(unix))]
    async fn wait(self) {
        if tokio::signal::ctrl_c().await.is_ok() {
            info!("Ctrl-C received");
        }
    }
}
