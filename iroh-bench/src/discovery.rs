//! Discovery: dialling by NodeId against dialling by NodeAddr, publish to resolvable, and the discovery
//! server's DNS under load (`dnsperf`) with a large store.
//!
//! The discovery server (the `iroh-relay` library's [`Server`] with discovery, plain HTTP, DNS on a free
//! port, records in a redb file) runs in a child process of its own: this binary re-executed with the
//! hidden `serve-discovery` subcommand, so its CPU and memory are its own (see [`crate::relay_proc`] for
//! why this binary). Measures, in order:
//!
//! 1. **connect**: `--connects` pairs of fresh connects to one accepting endpoint on loopback (relays
//!    off), interleaved: a new dialling endpoint given the full `NodeAddr`, then a new one given the bare
//!    NodeId and a DNS discovery service asking the server (a fresh resolver: no cached answer). Connect
//!    time from the call to the completed handshake; medians and 90th percentiles.
//! 2. **publish to resolvable**: a new record signed and `PUT`, then uncached DNS queries until one
//!    answers with the new address; `--connects` samples.
//! 3. **store**: the store filled to `--records` records (each a node of its own, as many nodes publishing
//!    would), over 8 keep-alive HTTP/1.1 connections; the fill rate, the server's RSS (now and peak) and
//!    the database file's size.
//! 4. **dns**: `dnsperf` against the filled store, queries for random stored names: first as fast as it
//!    goes for `--dns-secs` (queries per second, and the server's CPU time per query), then at the
//!    50,000 queries/s target while a probe resolves random stored names one after another (about a
//!    thousand a second) and times each: the latency under that load, median, p99 and max. (dnsperf's
//!    own per-answer output, `-v`, costs it so much CPU on a 2-core machine that it would measure itself.)
//!    dnsperf counts the queries still in flight when its time is up as lost (a few hundred at 500
//!    outstanding): the "lost" figure is that, not drops.

use std::{
    io::{Read, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use iroh_base::SecretKey;
use iroh_net::{
    discovery::{Discovery, dns::DnsDiscovery, pkarr::PkarrPublisher},
    endpoint::{Endpoint, RelayMode},
};
use iroh_relay::{
    client::pkarr::PkarrClient,
    protos::discovery::{NodeRecord, SignedRecord, now_micros},
    server::{
        DiscoveryConfig, Server, ServerConfig,
        discovery::{DEV_ORIGIN, RequestRate},
    },
};
use serde::Serialize;

use crate::{
    Result,
    sys::{cpu_seconds, median, quantile, rss_kib},
};

/// The first word of the child's ready line.
const READY: &str = "DISCOVERY";
/// The protocol of the connect measure.
const ALPN: &[u8] = b"iroh-bench/discovery/0";
/// HTTP connections filling the store.
const FILL_CONNECTIONS: usize = 64;
/// The DNS load the target names.
const TARGET_QPS: u32 = 50_000;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Connect pairs, and publish-to-resolvable samples.
    pub(crate) connects: usize,
    /// Records in the store for the DNS measure.
    pub(crate) records: usize,
    /// Seconds of each dnsperf run.
    pub(crate) dns_secs: f64,
    /// Keep the filled store in this directory and reuse it next time (filling a million records takes
    /// about two minutes).
    pub(crate) keep_dir: Option<PathBuf>,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DiscoveryResults {
    /// Connect time with a full NodeAddr, median and p90, ms.
    pub(crate) connect_addr_ms: (f64, f64),
    /// Connect time with the NodeId alone through DNS, median and p90, ms.
    pub(crate) connect_node_id_ms: (f64, f64),
    /// Publish to resolvable over DNS, median and p90, ms.
    pub(crate) publish_to_dns_ms: (f64, f64),
    /// Records stored.
    pub(crate) records: usize,
    /// Records stored per second while filling.
    pub(crate) fill_per_s: f64,
    /// The server's RSS after filling, MiB.
    pub(crate) rss_mib: f64,
    /// The server's RSS after the cold pass (every answer cached), MiB.
    pub(crate) rss_warm_mib: f64,
    /// Queries per second of the cold pass.
    pub(crate) dns_cold_qps: f64,
    /// The server's peak RSS, MiB.
    pub(crate) peak_rss_mib: f64,
    /// The database file, MiB.
    pub(crate) db_mib: f64,
    /// dnsperf's queries per second, as fast as it goes.
    pub(crate) dns_max_qps: f64,
    /// Queries per second achieved at the target rate.
    pub(crate) dns_target_qps: f64,
    /// Latency at the target rate: median, p99, max, ms.
    pub(crate) dns_latency_ms: (f64, f64, f64),
    /// Queries lost at the target rate.
    pub(crate) dns_lost: u64,
    /// The server's CPU time per query at full speed, microseconds.
    pub(crate) dns_cpu_us_per_query: f64,
    /// dnsperf's average latency at the target rate, ms.
    pub(crate) dns_target_avg_ms: f64,
}

/// The child side: a discovery server on `db` until standard input closes.
pub(crate) fn serve(db: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let discovery =
            DiscoveryConfig::new(DEV_ORIGIN, Some(SocketAddr::from(([127, 0, 0, 1], 0))))
                .with_db_path(db)
                // One client fills the store: no per-IP limit to speak of.
                .with_publish_rate(RequestRate {
                    per_second: 1e9,
                    burst: 1_000_000,
                });
        let config = ServerConfig::dev()
            .with_stun_bind(None)
            .with_discovery(Some(discovery));
        let server = Server::spawn(config).await?;
        let url = server.discovery_url().ok_or("no discovery URL")?;
        let dns = server.dns_addr().ok_or("no DNS address")?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY} {url} {dns}")?;
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

/// The server child (parent side); dropping it ends the child.
struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    url: url::Url,
    dns: SocketAddr,
}

impl ServerProcess {
    fn start(db: &Path) -> Result<Self> {
        let args = [
            std::ffi::OsStr::new("serve-discovery"),
            "--db".as_ref(),
            db.as_os_str(),
        ];
        let (child, stdin, line) = crate::relay_proc::spawn_self(&args)?;
        let mut words = line.split_whitespace();
        if words.next() != Some(READY) {
            return Err(format!("discovery child said {line:?}").into());
        }
        let url = words.next().ok_or("no URL")?.parse()?;
        let dns = words.next().ok_or("no DNS address")?.parse()?;
        Ok(Self {
            child,
            stdin,
            url,
            dns,
        })
    }

    fn stop(mut self) {
        self.stdin.take();
        self.child.wait().ok();
    }
}

/// Runs every measure.
pub(crate) async fn measure(options: &Options) -> Result<DiscoveryResults> {
    let dir = options.keep_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("iroh-bench-discovery-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("records.redb");
    let server = ServerProcess::start(&db)?;
    let outcome = measure_with(&server, &db, &dir, options).await;
    server.stop();
    if options.keep_dir.is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
    outcome
}

async fn measure_with(
    server: &ServerProcess,
    db: &Path,
    dir: &Path,
    options: &Options,
) -> Result<DiscoveryResults> {
    eprintln!(
        "discovery: {} fresh connects by NodeAddr and by NodeId",
        options.connects
    );
    let (by_addr, by_id) = connects(server, options.connects).await?;
    eprintln!(
        "discovery: publish to resolvable, {} samples",
        options.connects
    );
    let publish = publish_to_resolvable(server, options.connects).await?;
    eprintln!(
        "discovery: filling the store to {} records",
        options.records
    );
    let started = Instant::now();
    let names_file = dir.join("names.txt");
    let kept: Vec<String> = std::fs::read_to_string(&names_file)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default();
    let (names, fill_secs) = if kept.len() >= options.records {
        eprintln!(
            "discovery: reusing the {} records kept in {}",
            kept.len(),
            dir.display()
        );
        (kept, f64::NAN)
    } else {
        let names = fill(&server.url, options.records).await?;
        std::fs::write(&names_file, names.join("\n"))?;
        (names, started.elapsed().as_secs_f64())
    };
    let pid = Some(server.child.id());
    let rss = rss_kib(pid)?;
    let peak = peak_rss_kib(server.child.id())?;
    let db_bytes = std::fs::metadata(db)?.len();
    let queries = dir.join("queries.txt");
    write_queries(&queries, &names)?;
    eprintln!(
        "discovery: dnsperf, every stored name once (the cold pass: each answer read from the store)"
    );
    let cold = run_dnsperf_once(server.dns, &queries).await?;
    let rss_warm = rss_kib(pid)?;
    eprintln!(
        "discovery: dnsperf, as fast as it goes, {} s",
        options.dns_secs
    );
    let cpu_before = cpu_seconds(pid)?;
    let max = run_dnsperf(server.dns, &queries, options.dns_secs, None).await?;
    let cpu = cpu_seconds(pid)? - cpu_before;
    eprintln!("discovery: dnsperf at {TARGET_QPS} queries/s, with a latency probe");
    let load = run_dnsperf(server.dns, &queries, options.dns_secs, Some(TARGET_QPS));
    let probe = probe_latency(server, &names, Duration::from_secs_f64(options.dns_secs));
    let (target, latencies_ms) = tokio::join!(load, probe);
    let (target, latencies_ms) = (target?, latencies_ms?);
    Ok(DiscoveryResults {
        connect_addr_ms: (median(&by_addr), quantile(&by_addr, 0.9)),
        connect_node_id_ms: (median(&by_id), quantile(&by_id, 0.9)),
        publish_to_dns_ms: (median(&publish), quantile(&publish, 0.9)),
        records: names.len(),
        fill_per_s: if fill_secs.is_nan() {
            f64::NAN
        } else {
            names.len() as f64 / fill_secs.max(1e-9)
        },
        dns_cold_qps: cold.qps,
        rss_warm_mib: rss_warm as f64 / 1024.0,
        rss_mib: rss as f64 / 1024.0,
        peak_rss_mib: peak as f64 / 1024.0,
        db_mib: db_bytes as f64 / (1024.0 * 1024.0),
        dns_max_qps: max.qps,
        dns_target_qps: target.qps,
        dns_latency_ms: (
            median(&latencies_ms),
            quantile(&latencies_ms, 0.99),
            quantile(&latencies_ms, 1.0),
        ),
        dns_lost: target.lost,
        dns_cpu_us_per_query: cpu * 1e6 / (max.qps * options.dns_secs).max(1.0),
        dns_target_avg_ms: target.avg_ms,
    })
}

async fn endpoint() -> Result<Endpoint> {
    Ok(Endpoint::builder()
        .relay_mode(RelayMode::Disabled)
        .bind_addr_v6(None)
        .bind()
        .await?)
}

/// Fresh connects by NodeAddr and by NodeId, interleaved; connect times in ms.
async fn connects(server: &ServerProcess, count: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let key = SecretKey::generate();
    let listener = Endpoint::builder()
        .secret_key(key.clone())
        .alpns(vec![ALPN.to_vec()])
        .relay_mode(RelayMode::Disabled)
        .bind_addr_v6(None)
        .add_discovery(PkarrPublisher::new(key, server.url.clone()))
        .bind()
        .await?;
    let accept = {
        let listener = listener.clone();
        tokio::spawn(async move {
            while let Some(incoming) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        conn.closed().await;
                    }
                });
            }
        })
    };
    wait_resolvable(server, &listener).await?;
    // The addresses it published: both kinds of dial try the same ones.
    let addr = listener.node_addr();
    let (mut by_addr, mut by_id) = (Vec::new(), Vec::new());
    for _ in 0..count.max(1) {
        let dialler = endpoint().await?;
        let start = Instant::now();
        let conn = dialler.connect(addr.clone(), ALPN).await?;
        by_addr.push(start.elapsed().as_secs_f64() * 1e3);
        conn.close(0u32.into(), b"done");
        dialler.close().await;

        let dns = DnsDiscovery::with_name_server(DEV_ORIGIN.parse()?, server.dns)?;
        let dialler = Endpoint::builder()
            .relay_mode(RelayMode::Disabled)
            .bind_addr_v6(None)
            .add_discovery(dns)
            .bind()
            .await?;
        let start = Instant::now();
        let conn = dialler.connect(listener.node_id(), ALPN).await?;
        by_id.push(start.elapsed().as_secs_f64() * 1e3);
        conn.close(0u32.into(), b"done");
        dialler.close().await;
    }
    accept.abort();
    listener.close().await;
    Ok((by_addr, by_id))
}

/// Waits until the listener's record answers over DNS with all its current addresses.
async fn wait_resolvable(server: &ServerProcess, listener: &Endpoint) -> Result<()> {
    let dns = DnsDiscovery::with_name_server(DEV_ORIGIN.parse()?, server.dns)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(mut stream) = dns.resolve_fresh(listener.node_id())
            && let Some(Ok(item)) = stream.next().await
            && item.node_addr.direct_addresses == listener.node_addr().direct_addresses
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the listener's record never became resolvable".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Publish (sign and PUT) then uncached DNS queries until the new address answers; ms per sample.
async fn publish_to_resolvable(server: &ServerProcess, count: usize) -> Result<Vec<f64>> {
    let key = SecretKey::generate();
    let client = PkarrClient::builder(server.url.clone()).build();
    let dns = DnsDiscovery::with_name_server(DEV_ORIGIN.parse()?, server.dns)?;
    let mut samples = Vec::new();
    for i in 0..count.max(1) {
        let port = 1000 + u16::try_from(i % 60_000).unwrap_or(0);
        let addr = SocketAddr::from(([192, 0, 2, 1], port));
        let record = NodeRecord::new(key.public()).with_direct_addresses([addr]);
        let start = Instant::now();
        let signed = SignedRecord::sign(&key, &record, now_micros())?;
        client.publish(&signed).await?;
        loop {
            let found = match dns.resolve_fresh(key.public()) {
                Some(mut stream) => stream.next().await,
                None => None,
            };
            if let Some(Ok(item)) = found
                && item.node_addr.direct_addresses.contains(&addr)
            {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err("a published record did not become resolvable within 10 s".into());
            }
        }
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(samples)
}

/// Fills the store with `count` records of as many nodes, over keep-alive connections; returns their
/// DNS names.
async fn fill(base: &url::Url, count: usize) -> Result<Vec<String>> {
    let authority = format!(
        "{}:{}",
        base.host_str().ok_or("no host")?,
        base.port_or_known_default().ok_or("no port")?
    );
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..FILL_CONNECTIONS {
        let share = count / FILL_CONNECTIONS + usize::from(worker < count % FILL_CONNECTIONS);
        let authority = authority.clone();
        tasks.spawn(async move { fill_one(&authority, share).await });
    }
    let mut names = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        names.extend(done??);
    }
    Ok(names)
}

async fn fill_one(authority: &str, count: usize) -> Result<Vec<String>> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
    let io = tokio::spawn(connection);
    let mut names = Vec::with_capacity(count);
    for i in 0..count {
        let key = SecretKey::generate();
        let port = u16::try_from(i % 60_000).unwrap_or(0) + 1;
        let record = NodeRecord::new(key.public())
            .with_relay_url("https://relay.example.org./".parse()?)
            .with_direct_addresses([
                SocketAddr::from(([192, 0, 2, 1], port)),
                SocketAddr::from(([10, 0, 0, 1], port)),
            ]);
        let signed = SignedRecord::sign(&key, &record, now_micros())?;
        let request = http::Request::builder()
            .method(http::Method::PUT)
            .uri(format!("/pkarr/{}", key.public()))
            .header(http::header::HOST, authority)
            .body(Full::new(signed.to_relay_payload()))?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        if status != http::StatusCode::NO_CONTENT {
            return Err(format!("filling the store: the server answered {status}").into());
        }
        names.push(format!("_iroh.{}.{DEV_ORIGIN}.", key.public()));
    }
    drop(sender);
    io.await.ok();
    Ok(names)
}

/// A dnsperf query file: every name once, in random order.
fn write_queries(path: &Path, names: &[String]) -> Result<()> {
    use rand::seq::SliceRandom;
    let mut order: Vec<&String> = names.iter().collect();
    order.shuffle(&mut rand::thread_rng());
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for name in order {
        writeln!(file, "{name} TXT")?;
    }
    file.flush()?;
    Ok(())
}

/// Resolves random names of `names` one after another for `secs` (starting a little after the load, and
/// pacing to about a thousand a second), timing each: ms.
async fn probe_latency(
    server: &ServerProcess,
    names: &[String],
    secs: Duration,
) -> Result<Vec<f64>> {
    use rand::seq::SliceRandom;
    let dns = DnsDiscovery::with_name_server(DEV_ORIGIN.parse()?, server.dns)?;
    let nodes: Vec<iroh_base::NodeId> = names
        .iter()
        .filter_map(|n| n.strip_prefix("_iroh.")?.split('.').next()?.parse().ok())
        .collect();
    // Let dnsperf reach its rate first.
    tokio::time::sleep(secs.mul_f64(0.1)).await;
    let until = Instant::now() + secs.mul_f64(0.8);
    let mut samples = Vec::new();
    let mut rng = rand::thread_rng();
    while Instant::now() < until {
        let Some(node) = nodes.choose(&mut rng).copied() else {
            break;
        };
        let start = Instant::now();
        let found = match dns.resolve_fresh(node) {
            Some(mut stream) => stream.next().await,
            None => None,
        };
        if matches!(found, Some(Ok(_))) {
            samples.push(start.elapsed().as_secs_f64() * 1e3);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if samples.is_empty() {
        return Err("the latency probe got no answer".into());
    }
    Ok(samples)
}

/// What one dnsperf run reported.
struct Dnsperf {
    qps: f64,
    lost: u64,
    avg_ms: f64,
}

/// One pass over the query file, as fast as dnsperf goes.
async fn run_dnsperf_once(server: SocketAddr, queries: &Path) -> Result<Dnsperf> {
    let queries = queries.to_path_buf();
    tokio::task::spawn_blocking(move || dnsperf_with(server, &queries, &["-n", "1"])).await?
}

async fn run_dnsperf(
    server: SocketAddr,
    queries: &Path,
    secs: f64,
    qps: Option<u32>,
) -> Result<Dnsperf> {
    let queries = queries.to_path_buf();
    tokio::task::spawn_blocking(move || dnsperf(server, &queries, secs, qps)).await?
}

/// Runs dnsperf against `server` for `secs`, at most `qps` queries per second.
fn dnsperf(server: SocketAddr, queries: &Path, secs: f64, qps: Option<u32>) -> Result<Dnsperf> {
    let secs = format!("{secs}");
    let qps = qps.map(|q| q.to_string());
    let mut args = vec!["-l", secs.as_str()];
    if let Some(qps) = &qps {
        args.extend(["-Q", qps.as_str()]);
    }
    dnsperf_with(server, queries, &args)
}

/// Runs dnsperf against `server` with `extra` arguments.
fn dnsperf_with(server: SocketAddr, queries: &Path, extra: &[&str]) -> Result<Dnsperf> {
    let mut command = Command::new("dnsperf");
    command
        .args([
            "-s",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
        ])
        .arg("-d")
        .arg(queries)
        .args(["-c", "8", "-T", "2", "-q", "500"])
        .args(extra);
    let output = command.stderr(Stdio::inherit()).output().map_err(|e| {
        format!("cannot run dnsperf ({e}): apt-get install dnsperf (cargo xtask ci installs it)")
    })?;
    if !output.status.success() {
        return Err(format!("dnsperf failed: {}", output.status).into());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let qps = field("Queries per second:").ok_or("dnsperf printed no queries per second")?;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a count"
    )]
    let lost = field("Queries lost:").unwrap_or(0.0) as u64;
    let avg_ms = field("Average Latency (s):").unwrap_or(f64::NAN) * 1e3;
    Ok(Dnsperf { qps, lost, avg_ms })
}

/// Peak resident set size (`VmHWM`) of `pid`, KiB.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| format!("{path}: no VmHWM").into())
}

impl DiscoveryResults {
    /// The report table, with the targets.
    pub(crate) fn table(&self) -> String {
        let extra = self.connect_node_id_ms.0 - self.connect_addr_ms.0;
        let check = |ok: bool| if ok { "met" } else { "MISSED" };
        let mut out = String::new();
        out.push_str("| measure | value | target |\n|---|---|---|\n");
        out.push_str(&format!(
            "| connect, full NodeAddr (median / p90) | {:.2} / {:.2} ms | |\n",
            self.connect_addr_ms.0, self.connect_addr_ms.1
        ));
        out.push_str(&format!(
            "| connect, NodeId through DNS (median / p90) | {:.2} / {:.2} ms | at most 3 ms more: +{extra:.2} ms, {} |\n",
            self.connect_node_id_ms.0,
            self.connect_node_id_ms.1,
            check(extra <= 3.0)
        ));
        out.push_str(&format!(
            "| publish to resolvable over DNS (median / p90) | {:.2} / {:.2} ms | under 50 ms: {} |\n",
            self.publish_to_dns_ms.0,
            self.publish_to_dns_ms.1,
            check(self.publish_to_dns_ms.0 < 50.0)
        ));
        let fill = if self.fill_per_s.is_finite() {
            format!("{:.0} records/s filled", self.fill_per_s)
        } else {
            "kept from an earlier run".to_owned()
        };
        out.push_str(&format!(
            "| store: {} records | {fill}; RSS {:.1} MiB (peak {:.1}); file {:.1} MiB | RSS recorded |\n",
            self.records, self.rss_mib, self.peak_rss_mib, self.db_mib
        ));
        out.push_str(&format!(
            "| DNS cold pass (every name once, answers from the database) | {:.0} queries/s; RSS after {:.1} MiB (every answer cached) | |\n",
            self.dns_cold_qps, self.rss_warm_mib
        ));
        out.push_str(&format!(
            "| DNS, as fast as dnsperf goes | {:.0} queries/s; server CPU {:.1} us/query | at least {TARGET_QPS}: {} |\n",
            self.dns_max_qps,
            self.dns_cpu_us_per_query,
            check(self.dns_max_qps >= f64::from(TARGET_QPS))
        ));
        out.push_str(&format!(
            "| DNS under {TARGET_QPS}/s of dnsperf: achieved (avg latency, in flight at the end) | {:.0} queries/s ({:.2} ms avg, {} in flight) | |\n",
            self.dns_target_qps, self.dns_target_avg_ms, self.dns_lost
        ));
        out.push_str(&format!(
            "| DNS under that load: probe latency median / p99 / max | {:.2} / {:.2} / {:.2} ms | p99 under 5 ms: {} |\n",
            self.dns_latency_ms.0,
            self.dns_latency_ms.1,
            self.dns_latency_ms.2,
            check(self.dns_latency_ms.1 < 5.0)
        ));
        out
    }
}

/// Where a run's JSON goes, if asked.
pub(crate) fn write_json(results: &DiscoveryResults, path: &PathBuf) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(results)?)?;
    Ok(())
}
