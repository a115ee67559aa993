//! `iroh-bench hostile`: what connections that never log in, and a receiver that never reads, cost the relay
//! server: the RSS of the built `iroh-relay` binary (`/proc/PID/status`), run with TLS as deployed and the
//! default limits. The binary, not the library in this process, because the binary is what gives memory
//! back after load (see its `trim` module); build it first (`cargo build --release -p iroh-relay`).
//!
//! Each kind runs against a fresh relay process, so no kind reuses memory another freed:
//!
//! 1. *Unfinished request heads*: N connections finish TLS and send 7.5 KiB of a request head (below the
//!    server's 8 KiB limit, so the most a connection may make it hold) that never ends.
//! 2. *Unfinished logins*: N connections upgrade to the relay protocol and send the header and half the body
//!    of a login frame.
//! 3. *A stalled receiver*: a client logs in and never reads; another sends it 60 KB datagram batches as fast
//!    as the relay takes them.
//!
//! After each of the first two, the connections close and the RSS is read again after a pause, against the
//! idle RSS: memory the relay gives back. Connections come from 127.0.0.2 upward, 60 per address, below the
//! per-source cap of 64.

use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use iroh_base::SecretKey;
use iroh_relay::{
    io::{FrameReader, FrameWriter},
    protos::{
        RELAY_PATH, UPGRADE_PROTOCOL,
        frame::{Datagrams, Frame, HEADER_LEN},
        handshake::{ClientEvent, ClientHandshake},
    },
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::{Result, sys::rss_kib};

/// Connections per source address (the server allows 64 unfinished handshakes per source).
const PER_SOURCE: usize = 60;
/// How long the relay gets to give memory back after connections close (it looks every 2 s).
const SETTLE: Duration = Duration::from_secs(5);
/// The request head each connection of the first kind sends, unfinished.
const HEAD_LEN: usize = 7 * 1024 + 512;

/// What N held connections of one kind cost.
#[derive(Debug, Clone, Copy)]
struct Held {
    idle_kib: u64,
    held_kib: u64,
    after_kib: u64,
}

/// Which connections a round holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// TLS done, an unfinished request head.
    Head,
    /// Upgraded, half a login frame.
    Login,
}

/// Runs the measure with `connections` per kind and prints a table.
pub(crate) fn run(connections: usize) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let heads = runtime.block_on(async {
        let relay = RelayBinary::start()?;
        hold(&relay, Kind::Head, connections).await
    })?;
    let logins = runtime.block_on(async {
        let relay = RelayBinary::start()?;
        hold(&relay, Kind::Login, connections).await
    })?;
    let (stalled_idle, stalled) = runtime.block_on(async {
        let relay = RelayBinary::start()?;
        stalled_receiver(&relay).await
    })?;
    let per = |held: &Held| held.held_kib.saturating_sub(held.idle_kib) as f64 / connections as f64;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let ratio = |held: &Held| held.after_kib as f64 / held.idle_kib as f64;
    println!(
        "\niroh-bench hostile: RSS of the iroh-relay binary (TLS, default limits), {connections} connections per kind, a fresh process per kind"
    );
    println!("| measure | figure |\n|---|---|");
    for (name, held) in [
        (
            format!("{connections} unfinished {HEAD_LEN}-byte request heads"),
            &heads,
        ),
        (
            format!("{connections} unfinished logins (half a login frame)"),
            &logins,
        ),
    ] {
        println!(
            "| {name} | {:.1} -> {:.1} MiB: {:.1} KiB per connection |",
            mib(held.idle_kib),
            mib(held.held_kib),
            per(held)
        );
        println!(
            "| {} s after they close | {:.1} MiB ({:.2}x idle) |",
            SETTLE.as_secs(),
            mib(held.after_kib),
            ratio(held)
        );
    }
    println!(
        "| one receiver that never reads, sent 60 KB batches for 2 s | {:.1} -> {:.1} MiB: +{:.1} MiB |",
        mib(stalled_idle),
        mib(stalled_idle + stalled),
        mib(stalled)
    );
    Ok(())
}

/// Holds `connections` of `kind` against `relay`, then closes them.
async fn hold(relay: &RelayBinary, kind: Kind, connections: usize) -> Result<Held> {
    let (connector, addr, pid) = (&relay.connector, relay.addr, relay.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = rss_kib(Some(pid))?;
    let mut head = String::from("GET /relay HTTP/1.1\r\nHost: localhost\r\n");
    // Long lines: hyper takes at most 100 header lines.
    let line = format!("X-Padding: {}\r\n", "a".repeat(500));
    while head.len() + line.len() <= HEAD_LEN {
        head.push_str(&line);
    }
    let mut partial = vec![0u8; HEADER_LEN + 48];
    // The login frame: type 2, a 97-byte body (version, node id, signature), of which 48 bytes come.
    partial[0] = 2;
    partial[1..HEADER_LEN].copy_from_slice(&97u32.to_be_bytes());
    let mut held = Vec::with_capacity(connections);
    for i in 0..connections {
        let mut stream = connect(connector, addr, i).await?;
        match kind {
            Kind::Head => stream.write_all(head.as_bytes()).await?,
            Kind::Login => {
                upgrade(&mut stream).await?;
                stream.write_all(&partial).await?;
            }
        }
        stream.flush().await?;
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held_kib = rss_kib(Some(pid))?;
    let mut closed = 0;
    for stream in &mut held {
        let mut buf = [0u8; 64];
        // A closed connection reads EOF at once (a held one has nothing, or the login challenge, to read).
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    if closed > 0 {
        return Err(format!("{kind:?}: the relay closed {closed} of the held connections").into());
    }
    drop(held);
    tokio::time::sleep(SETTLE).await;
    let after_kib = rss_kib(Some(pid))?;
    Ok(Held {
        idle_kib,
        held_kib,
        after_kib,
    })
}

/// A receiver that logs in and never reads, and a sender that floods it for 2 s: the RSS before, and the
/// growth.
async fn stalled_receiver(relay: &RelayBinary) -> Result<(u64, u64)> {
    let (connector, addr, pid) = (&relay.connector, relay.addr, relay.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let receiver_key = SecretKey::generate();
    let receiver = connect(connector, addr, 0).await?;
    let receiver = login(receiver, &receiver_key).await?;
    let sender = connect(connector, addr, 1).await?;
    let (_sender_reader, mut sender) = login(sender, &SecretKey::generate()).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(Some(pid))?;
    let frame = Frame::SendDatagrams {
        dst: receiver_key.public(),
        datagrams: Datagrams::single(vec![7u8; 60_000]),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut peak = before;
    let mut sent = 0u64;
    while tokio::time::Instant::now() < deadline {
        if tokio::time::timeout(Duration::from_millis(200), sender.send(&frame))
            .await
            .is_err()
        {
            // The relay reads slowly for a moment: keep measuring.
            continue;
        }
        sent += 1;
        if sent.is_multiple_of(64) {
            peak = peak.max(rss_kib(Some(pid))?);
        }
    }
    peak = peak.max(rss_kib(Some(pid))?);
    drop(receiver);
    Ok((before, peak.saturating_sub(before)))
}

type Stream = TlsStream<tokio::net::TcpStream>;
type Halves = (
    FrameReader<tokio::io::ReadHalf<Stream>>,
    FrameWriter<tokio::io::WriteHalf<Stream>>,
);

/// The built `iroh-relay` binary, run with a fresh self-signed certificate; killed on drop.
struct RelayBinary {
    child: Child,
    addr: SocketAddr,
    connector: TlsConnector,
    dir: PathBuf,
}

impl RelayBinary {
    /// Starts `iroh-relay` from this binary's directory (`target/release`) and waits for its relay URL.
    fn start() -> Result<Self> {
        let binary = std::env::current_exe()?.with_file_name("iroh-relay");
        if !binary.exists() {
            return Err(format!(
                "{} not found: build it first (cargo build --release -p iroh-relay)",
                binary.display()
            )
            .into());
        }
        let dir = std::env::temp_dir().join(format!("iroh-bench-hostile-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
        std::fs::write(dir.join("cert.pem"), certified.cert.pem())?;
        std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem())?;
        let config = dir.join("relay.toml");
        std::fs::write(
            &config,
            "relay_bind = \"127.0.0.1:0\"\nhostname = \"localhost\"\n[tls]\nmode = \"files\"\ncert_path = \"cert.pem\"\nkey_path = \"key.pem\"\n",
        )?;
        let mut child = Command::new(&binary)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let port = loop {
            let line = lines.next().ok_or("the relay exited before its URL")??;
            if let Some(rest) = line.split("relay URL: https://localhost:").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let port: u16 = digits.parse()?;
                break port;
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Self {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            connector: connector(certified.cert.der().clone())?,
            dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RelayBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn connector(cert: rustls::pki_types::CertificateDer<'static>) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A TLS connection from 127.0.0.(2 + i / PER_SOURCE).
async fn connect(connector: &TlsConnector, addr: SocketAddr, i: usize) -> Result<Stream> {
    let source = Ipv4Addr::new(127, 0, 0, u8::try_from(2 + i / PER_SOURCE)?);
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let tcp = socket.connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    Ok(connector.connect(name, tcp).await?)
}

/// Sends the upgrade request and reads the `101` head.
async fn upgrade(stream: &mut Stream) -> Result<()> {
    let request = format!(
        "GET {RELAY_PATH} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE_PROTOCOL}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await?);
        if head.len() > 4096 {
            return Err("response head too long".into());
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!("upgrade refused: {}", String::from_utf8_lossy(&head)).into());
    }
    Ok(())
}

/// Upgrades and logs in as `key`.
async fn login(mut stream: Stream, key: &SecretKey) -> Result<Halves> {
    upgrade(&mut stream).await?;
    let (read, write) = tokio::io::split(stream);
    let (mut reader, mut writer) = (FrameReader::new(read), FrameWriter::new(write));
    let mut handshake = ClientHandshake::new(
        std::time::Instant::now(),
        key.clone(),
        Duration::from_secs(10),
    );
    loop {
        while let Some(frame) = handshake.poll_transmit() {
            writer.send(&frame).await?;
        }
        match handshake.poll_event() {
            Some(ClientEvent::Accepted) => return Ok((reader, writer)),
            Some(ClientEvent::Failed(error)) => return Err(error.to_string().into()),
            None => {}
        }
        let frame = reader.read_frame().await?.ok_or("closed during login")?;
        handshake.handle_frame(std::time::Instant::now(), frame);
    }
}
