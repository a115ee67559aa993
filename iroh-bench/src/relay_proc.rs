//! The relay server in its own process: this binary re-executed with the hidden `serve-relay` subcommand,
//! which runs the `iroh-relay` library [`Server`] (the code the `iroh-relay` binary runs) with a self-signed
//! TLS certificate for `localhost`, on a multi-threaded tokio runtime with one worker per core, as the
//! binary does.
//!
//! Why a process of its own rather than a server in the benchmark's runtime: its CPU time and its memory are
//! then its own (read from `/proc/PID/stat` and `/proc/PID/status`), it schedules its own threads as a
//! deployed relay does, and allocations of the endpoints do not share its heap. Why this binary rather than
//! the built `iroh-relay` binary: `cargo run -p iroh-bench` then builds everything it runs, so a stale
//! `target/release/iroh-relay` can never be measured by mistake.
//!
//! The child prints one line, `RELAY <url> <stun port> <certificate DER in hex>`, and runs until its
//! standard input closes, so it ends with the parent even if the parent is killed.

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Child, ChildStdin, Command, Stdio},
};

use iroh_base::RelayUrl;
use iroh_net::endpoint::{RelayMap, RelayNode};
use iroh_relay::{
    client::CertificateDer,
    server::{Server, ServerConfig, TlsConfig},
};

use crate::Result;

/// The first word of the child's ready line.
const READY: &str = "RELAY";

/// Runs the relay server (the child side) on `threads` worker threads (`None`: one per core, as the
/// `iroh-relay` binary); returns when standard input closes.
pub(crate) fn serve(threads: Option<usize>) -> Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async {
        let config = ServerConfig::dev().with_tls(TlsConfig::self_signed_localhost());
        let server = Server::spawn(config).await?;
        let stun_port = server
            .stun_addr()
            .map(|a| a.port())
            .ok_or("relay has no STUN")?;
        let cert = server
            .certificates()
            .into_iter()
            .next()
            .ok_or("relay has no certificate")?;
        let mut out = std::io::stdout().lock();
        let info = RelayInfo {
            url: server.relay_url(),
            stun_port,
            cert,
        };
        writeln!(out, "{}", ready_line(&info))?;
        out.flush()?;
        drop(out);
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            std::io::stdin().read_to_end(&mut sink).ok();
        })
        .await?;
        server.shutdown().await;
        Ok(())
    })
}

/// How to reach a relay and trust it.
#[derive(Debug, Clone)]
pub(crate) struct RelayInfo {
    /// Its URL (`https://localhost:PORT/`).
    pub(crate) url: RelayUrl,
    /// Its STUN port on 127.0.0.1.
    pub(crate) stun_port: u16,
    /// Its self-signed certificate, to trust as an extra root.
    pub(crate) cert: CertificateDer<'static>,
}

impl RelayInfo {
    /// A relay map with just this relay.
    pub(crate) fn map(&self) -> RelayMap {
        RelayMap::from_node(RelayNode::with_stun_port(self.url.clone(), self.stun_port))
    }

    /// The roots to trust for it.
    pub(crate) fn roots(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }
}

/// A relay child process (the parent side). Dropping it closes the child's standard input, which ends it.
#[derive(Debug)]
pub(crate) struct RelayProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// How to reach it.
    pub(crate) info: RelayInfo,
}

impl RelayProcess {
    /// Starts a relay child (with `threads` runtime workers, `None` for the default) and waits for its
    /// ready line.
    pub(crate) fn start(threads: Option<usize>) -> Result<Self> {
        let mut args = vec!["serve-relay".to_owned()];
        if let Some(threads) = threads {
            args.push(format!("--threads={threads}"));
        }
        let (child, stdin, line) = spawn_self(&args)?;
        let info = parse_ready(&line).ok_or_else(|| format!("relay child said {line:?}"))?;
        Ok(Self { child, stdin, info })
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the child and waits for it.
    pub(crate) fn stop(mut self) {
        self.stdin.take();
        self.child.wait().ok();
    }
}

/// Runs this binary with `args` (a hidden serving subcommand), standard input piped (closing it ends
/// the child) and `RUST_LOG` passed on (default `warn`); returns the child, its stdin and its first line.
pub(crate) fn spawn_self(
    args: &[impl AsRef<std::ffi::OsStr>],
) -> Result<(Child, Option<ChildStdin>, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().ok_or("the child has no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    Ok((child, stdin, line))
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.stdin.take();
    }
}

/// The line that describes a relay: `RELAY <url> <stun port> <certificate DER in hex>`.
pub(crate) fn ready_line(info: &RelayInfo) -> String {
    format!(
        "{READY} {} {} {}",
        info.url,
        info.stun_port,
        hex(info.cert.as_ref())
    )
}

/// Reads a [`ready_line`].
pub(crate) fn parse_ready(line: &str) -> Option<RelayInfo> {
    let mut words = line.split_whitespace();
    if words.next()? != READY {
        return None;
    }
    let url = words.next()?.parse().ok()?;
    let stun_port = words.next()?.parse().ok()?;
    let cert = CertificateDer::from(unhex(words.next()?)?);
    Some(RelayInfo {
        url,
        stun_port,
        cert,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_round_trips() {
        let info = RelayInfo {
            url: "https://localhost:4433/".parse().unwrap(),
            stun_port: 3478,
            cert: CertificateDer::from(vec![0, 1, 0xab, 0xff]),
        };
        let info = parse_ready(&format!("{}\n", ready_line(&info))).unwrap();
        assert_eq!(info.url.port(), Some(4433));
        assert_eq!(info.stun_port, 3478);
        assert_eq!(info.cert.as_ref(), &[0, 1, 0xab, 0xff]);
        assert!(parse_ready("nonsense").is_none());
        assert!(unhex("abc").is_none());
    }
}
