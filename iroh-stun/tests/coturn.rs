//! Interoperability with coturn, an independent STUN implementation (Debian package `coturn`):
//!
//! - our client against coturn's `turnserver` (STUN only), over IPv4 and IPv6 loopback;
//! - coturn's `turnutils_stunclient` against our [`Server`].
//!
//! These tests never skip: a missing binary or a missing `::1` fails them, naming what to install.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use iroh_stun::{
    Class, Message, QueryError, Server, TransactionConfig, TransactionId, query_reflexive_addr,
};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const TURNSERVER: &str = "turnserver";
const STUNCLIENT: &str = "turnutils_stunclient";

/// Upper bound for each test.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a started `turnserver` gets to answer its first request.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

fn missing_binary(name: &str, error: &std::io::Error) -> ! {
    panic!(
        "cannot run `{name}` ({error}): install the Debian package `coturn` (apt-get install coturn), \
         which provides turnserver and turnutils_stunclient"
    )
}

/// A fresh scratch directory under the system temp dir, removed by [`TurnServer`]'s drop.
fn scratch_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("iroh-stun-coturn-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A UDP port that was free a moment ago on `ip` (bind to port 0, read the port, close). Another process may
/// take it before `turnserver` binds it, hence the retries in [`TurnServer::start`].
fn free_udp_port(ip: IpAddr) -> u16 {
    let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap_or_else(|e| {
        panic!("cannot bind a UDP socket on {ip}: {e} (is the loopback interface up?)")
    });
    socket.local_addr().unwrap().port()
}

/// A running `turnserver` child, killed (and its scratch directory removed) on drop.
struct TurnServer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl TurnServer {
    /// Starts a STUN-only `turnserver` on a free port of `ip` and waits until it answers a Binding request.
    async fn start(ip: IpAddr) -> Self {
        let mut last_failure = String::new();
        for attempt in 1..=5 {
            let port = free_udp_port(ip);
            let mut server = Self::spawn(ip, port);
            match server.wait_until_answering().await {
                Ok(()) => return server,
                Err(failure) => {
                    eprintln!("turnserver attempt {attempt} on {}: {failure}", server.addr);
                    last_failure = format!("{failure}\n--- turnserver log ---\n{}", server.log());
                }
            }
        }
        panic!("turnserver never answered on {ip}: {last_failure}");
    }

    fn spawn(ip: IpAddr, port: u16) -> Self {
        let dir = scratch_dir();
        let log = File::create(dir.join("log")).unwrap();
        let stderr = log.try_clone().unwrap();
        let child = Command::new(TURNSERVER)
            .args([
                "-n", // no configuration file
                "--stun-only",
                "--no-cli",
                "--no-auth",
                "--no-rfc5780", // no second port for NAT behaviour discovery
                "--no-tcp",
                "--no-tls",
                "--no-dtls",
                "--simple-log",
                "--log-file",
                "stdout",
            ])
            .arg("--listening-ip")
            .arg(ip.to_string())
            .arg("--listening-port")
            .arg(port.to_string())
            .arg("--pidfile")
            .arg(dir.join("pid"))
            .arg("--db")
            .arg(dir.join("turndb"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| missing_binary(TURNSERVER, &e));
        Self {
            child,
            addr: SocketAddr::new(ip, port),
            dir,
        }
    }

    async fn wait_until_answering(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let socket = UdpSocket::bind(SocketAddr::new(self.addr.ip(), 0))
            .await
            .unwrap();
        let quick = TransactionConfig {
            rto: Duration::from_millis(100),
            max_transmits: 2,
            last_wait_multiplier: 2,
        };
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("turnserver exited early with {status}"));
            }
            match query_reflexive_addr(&socket, self.addr, quick).await {
                Ok(_) => return Ok(()),
                Err(QueryError::TimedOut) if Instant::now() < deadline => {}
                Err(e) => return Err(format!("no answer: {e}")),
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Our `query_reflexive_addr` against coturn: the reflexive address must be exactly our socket's address.
async fn our_client_against_turnserver(ip: IpAddr) {
    let server = TurnServer::start(ip).await;
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let reflexive = query_reflexive_addr(&socket, server.addr, TransactionConfig::default())
        .await
        .unwrap_or_else(|e| panic!("query to turnserver failed: {e}\n{}", server.log()));
    assert_eq!(reflexive.addr, socket.local_addr().unwrap());
    assert!(reflexive.rtt.is_some());

    // The same exchange by hand, to look at everything coturn puts in its response: XOR-MAPPED-ADDRESS,
    // MAPPED-ADDRESS, RESPONSE-ORIGIN, SOFTWARE, and a FINGERPRINT because the request had one. All must parse
    // (the FINGERPRINT is verified by `Message::parse`).
    let request = Message::binding_request(TransactionId::random()).with_fingerprint(true);
    socket
        .send_to(&request.to_bytes(), server.addr)
        .await
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = socket.recv_from(&mut buf).await.unwrap();
    assert_eq!(from, server.addr);
    let response = Message::parse(&buf[..n])
        .unwrap_or_else(|e| panic!("coturn's response does not parse: {e}: {:02x?}", &buf[..n]));
    assert_eq!(response.transaction_id(), request.transaction_id());
    assert_eq!(response.class(), Class::SuccessResponse);
    assert_eq!(
        response.xor_mapped_address(),
        Some(socket.local_addr().unwrap())
    );
    assert_eq!(
        response.mapped_address(),
        Some(socket.local_addr().unwrap())
    );
    assert!(
        response.fingerprint(),
        "coturn answers a fingerprinted request with a FINGERPRINT"
    );
    let software = response.software().unwrap_or_default();
    assert!(
        software.starts_with("Coturn"),
        "SOFTWARE is {software:?}: is this really coturn?"
    );
}

#[tokio::test]
async fn our_client_against_turnserver_ipv4() {
    timeout(
        TEST_TIMEOUT,
        our_client_against_turnserver(IpAddr::from([127, 0, 0, 1])),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn our_client_against_turnserver_ipv6() {
    // Fails (does not skip) when ::1 is unavailable: `free_udp_port` panics naming the address.
    timeout(
        TEST_TIMEOUT,
        our_client_against_turnserver(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
    )
    .await
    .unwrap();
}

/// The `ADDR:PORT` after every "reflexive addr:" in `turnutils_stunclient`'s output, for example
/// `0: : IPv4. UDP reflexive addr: 127.0.0.1:43353`. IPv6 addresses are printed without brackets
/// (`::1:42913`), so the port is what follows the last colon.
fn reflexive_addrs(output: &str) -> Vec<SocketAddr> {
    output
        .lines()
        .filter_map(|line| line.split("reflexive addr:").nth(1))
        .map(|rest| {
            let rest = rest.trim();
            let (ip, port) = rest
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("no port in {rest:?}"));
            let ip: IpAddr = ip.trim_matches(['[', ']']).parse().unwrap();
            SocketAddr::new(ip, port.parse().unwrap())
        })
        .collect()
}

#[test]
fn reflexive_addr_lines_parse() {
    let out = "0: : IPv4. UDP reflexive addr: 127.0.0.1:43353\n0: : IPv6. UDP reflexive addr: ::1:42913\nother";
    assert_eq!(
        reflexive_addrs(out),
        vec![
            "127.0.0.1:43353".parse::<SocketAddr>().unwrap(),
            "[::1]:42913".parse().unwrap()
        ]
    );
}

async fn stunclient_against_our_server(ip: IpAddr) {
    let server = Server::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let mut answered = server.subscribe();
    let port = server.local_addr().port();

    let output = tokio::process::Command::new(STUNCLIENT)
        .arg("-p")
        .arg(port.to_string())
        .arg("-L")
        .arg(ip.to_string())
        .arg(ip.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| missing_binary(STUNCLIENT, &e));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!(
        "status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(output.status.success(), "{STUNCLIENT} failed: {context}");

    let printed = reflexive_addrs(&stdout);
    assert!(
        !printed.is_empty(),
        "no reflexive address printed: {context}"
    );

    // The peers our server saw (and answered), independently of what the client printed.
    let mut seen = BTreeSet::new();
    while let Ok(answer) = answered.try_recv() {
        assert_eq!(answer.error_code, None, "{context}");
        seen.insert(answer.peer);
    }
    assert!(!seen.is_empty(), "our server answered nothing: {context}");
    for addr in &printed {
        assert_eq!(addr.ip(), ip, "{context}");
        assert!(
            seen.contains(addr),
            "{addr} was printed but our server saw {seen:?}: {context}"
        );
    }
    let stats = server.stats();
    assert_eq!(stats.dropped_malformed, 0, "{context}");
    assert_eq!(stats.errors_answered, 0, "{context}");
    assert!(stats.requests_answered >= 1, "{context}");
    server.shutdown().await;
}

#[tokio::test]
async fn turnutils_stunclient_against_our_server_ipv4() {
    timeout(
        TEST_TIMEOUT,
        stunclient_against_our_server(IpAddr::from([127, 0, 0, 1])),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn turnutils_stunclient_against_our_server_ipv6() {
    timeout(
        TEST_TIMEOUT,
        stunclient_against_our_server(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
    )
    .await
    .unwrap();
}

#[test]
fn coturn_binaries_are_installed() {
    for name in [TURNSERVER, STUNCLIENT] {
        let found = std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path).any(|dir| Path::new(&dir).join(name).is_file())
            })
            .unwrap_or(false);
        assert!(
            found,
            "`{name}` is not on PATH: install the Debian package `coturn` (apt-get install coturn)"
        );
    }
}
