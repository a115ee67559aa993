//! The `iroh-relay` binary and its configuration file: the committed example parses; the built binary serves
//! with a config file, stops cleanly on SIGTERM, fails clearly on a busy port, and documents its flags.
#![cfg(feature = "server")]
// Shared test helpers live outside `#[test]` functions, where clippy's test allowance does not reach.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use iroh_relay::server::{
    AccessControl, TlsConfig,
    config::{FileConfig, TlsSection},
};
use server_support::*;

const BIN: &str = env!("CARGO_BIN_EXE_iroh-relay");

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/relay.toml")
}

#[test]
fn example_config_parses() {
    let file = FileConfig::load(&example_path()).expect("example parses");
    assert!(matches!(file.tls, Some(TlsSection::SelfSigned { .. })));
    let config = file.into_server_config().expect("example is valid");
    assert!(matches!(config.tls, Some(TlsConfig::SelfSigned { .. })));
    assert!(matches!(config.access, AccessControl::Denylist(ref nodes) if nodes.len() == 1));
    assert!(config.stun_bind.is_some());
    assert!(config.metrics_bind.is_some());
    assert!(config.limits.rate_limit.is_some());
    assert_eq!(config.limits.max_clients, Some(10_000));
}

#[test]
fn readme_documents_every_example_key() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README");
    let example = std::fs::read_to_string(example_path()).expect("example");
    for line in example.lines() {
        let line = line.trim_start_matches("# ").trim();
        if let Some((key, _)) = line.split_once(" = ")
            && !key.contains(' ')
        {
            assert!(
                readme.contains(&format!("`{key}`")),
                "README does not document `{key}`"
            );
        }
    }
}

/// A unique scratch directory.
fn scratch_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir =
        std::env::temp_dir().join(format!("iroh-relay-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary with `args`, forwarding its standard error lines to the returned channel.
fn run(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut command = Command::new(BIN);
    command.args(args);
    run_command(command)
}

/// Runs `command` (the binary, perhaps through a shell), forwarding its standard error lines to the
/// returned channel.
fn run_command(mut command: Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = command
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a log line containing `needle`, returning it.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {needle:?}; saw:\n{}", seen.join("\n"));
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("binary did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_and_stops_on_sigterm() {
    timed(async {
        let dir = scratch_dir("bin");
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem()).unwrap();
        let config = dir.join("relay.toml");
        std::fs::write(
            &config,
            r#"
relay_bind = "127.0.0.1:0"
hostname = "localhost"
stun_bind = "127.0.0.1:0"
metrics_bind = "127.0.0.1:0"
[tls]
mode = "files"
cert_path = "cert.pem"
key_path = "key.pem"
"#,
        )
        .unwrap();
        let (mut child, lines) = run(&["--config", config.to_str().unwrap()]);
        let line = wait_for_line(&lines, "relay URL: ");
        let url = line
            .split("relay URL: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("a URL");
        let url: iroh_base::RelayUrl = url.parse().expect("a relay URL");
        assert_eq!(url.scheme(), "https");
        assert_eq!(url.host_str(), Some("localhost"));

        // Talk to it over TLS, trusting the certificate we gave it.
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], url.port().unwrap()));
        let transport = Transport::with_roots(addr, vec![certified.cert.der().clone()]);
        let (status, _, body) = http_request(&transport, "GET", "/healthz", "").await;
        assert_eq!((status, &body[..]), (200, &b"ok"[..]));
        let mut client = TestClient::connect_new(&transport).await;

        let pid = child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        // The connected client is told, then the process exits cleanly.
        assert!(matches!(
            client.next_frame().await,
            Some(iroh_relay::protos::frame::Frame::Status {
                code: iroh_relay::protos::frame::StatusCode::Restarting,
                ..
            })
        ));
        let status = tokio::task::spawn_blocking(move || wait_exit(&mut child))
            .await
            .unwrap();
        assert_eq!(status.code(), Some(0), "{status:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    })
    .await;
}

#[test]
fn busy_port_fails_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = scratch_dir("busy");
    let config = dir.join("relay.toml");
    std::fs::write(&config, format!("relay_bind = \"{addr}\"\n")).unwrap();
    let (mut child, lines) = run(&["--config", config.to_str().unwrap()]);
    let line = wait_for_line(&lines, "cannot listen for relay");
    assert!(line.contains(&addr.to_string()), "{line}");
    assert_eq!(wait_exit(&mut child).code(), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_config_fails_clearly() {
    let dir = scratch_dir("bad");
    let config = dir.join("relay.toml");
    std::fs::write(&config, "relay_bnd = \"127.0.0.1:0\"\n").unwrap();
    let (mut child, lines) = run(&["--config", config.to_str().unwrap()]);
    assert_eq!(wait_exit(&mut child).code(), Some(1));
    // The reader thread ends (dropping its sender) at the end of the stream.
    let mut output = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(10)) {
        output.push(line);
    }
    let output = output.join("\n");
    assert!(output.contains("relay.toml"), "{output}");
    assert!(output.contains("unknown field `relay_bnd`"), "{output}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_explains_the_flags() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "--dev", "--config", "3340", "3478", "9090", "RUST_LOG", "SIGTERM",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
    // Neither flag is an error that says what to do.
    let output = Command::new(BIN).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--config"));
}

#[test]
fn binary_stops_on_ctrl_c() {
    let dir = scratch_dir("sigint");
    let config = dir.join("relay.toml");
    std::fs::write(&config, "relay_bind = \"127.0.0.1:0\"\n").unwrap();
    let (mut child, lines) = run(&["--config", config.to_str().unwrap()]);
    wait_for_line(&lines, "relay URL: http://127.0.0.1:");
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_for_line(&lines, "Ctrl-C received");
    assert_eq!(wait_exit(&mut child).code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A TCP connection from `source` (a loopback address) to `to`.
async fn connect_from(
    source: [u8; 4],
    to: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((source, 0)))?;
    socket.connect(to).await
}

/// Issue 16: under a 1,024 file limit, 1,100 slowloris sockets (unfinished request heads) took every
/// descriptor, so 3 of 8 real logins timed out and the log got about 15 warnings a second. Now a source gets
/// 64 unfinished handshakes and the rest are closed at accept, so every login of another host succeeds,
/// each within a second, with the attack going on, and the refusals are counted, not logged one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_under_a_low_file_limit_does_not_starve_logins() {
    timed(async {
        // This process holds the 1,100 sockets (and their descriptors) itself.
        rlimit::increase_nofile_limit(8192).unwrap();
        let dir = scratch_dir("slowloris");
        let config = dir.join("relay.toml");
        std::fs::write(
            &config,
            "relay_bind = \"127.0.0.1:0\"\nmetrics_bind = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        // Soft and hard limit 1,024, so raising the soft limit cannot help: the caps must.
        let mut command = Command::new("sh");
        command.args([
            "-c",
            &format!(
                "ulimit -n 1024 && exec {BIN} --config {}",
                config.to_str().unwrap()
            ),
        ]);
        let (mut child, lines) = run_command(command);
        let limit = wait_for_line(&lines, "open file limit");
        assert!(limit.contains("limit=1024"), "{limit}");
        let line = wait_for_line(&lines, "relay URL: ");
        let url: iroh_base::RelayUrl = line
            .split("relay URL: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], url.port().unwrap()));
        let line = wait_for_line(&lines, "metrics on http://");
        let metrics_addr: std::net::SocketAddr = line
            .split("metrics on http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap()
            .parse()
            .unwrap();

        let head = b"GET /relay HTTP/1.1\r\nHost: localhost\r\n";
        let mut held = Vec::new();
        for _ in 0..1100 {
            if let Ok(mut stream) = connect_from([127, 0, 0, 2], addr).await {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, head).await;
                held.push(stream);
            }
        }
        assert!(held.len() >= 1000, "{} slowloris sockets", held.len());
        // Keep the pressure on while the logins run: a new slowloris connection every millisecond (none is
        // let go: a closed one would free a descriptor).
        let churn = tokio::spawn(async move {
            for _ in 0..2000 {
                if let Ok(mut stream) = connect_from([127, 0, 0, 2], addr).await {
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, head).await;
                    held.push(stream);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            held
        });
        let transport = Transport::with_roots(addr, Vec::new());
        let mut clients = Vec::new();
        for i in 0..8 {
            let start = Instant::now();
            let login = tokio::time::timeout(
                Duration::from_secs(1),
                TestClient::try_connect(&transport, iroh_base::SecretKey::generate(), ""),
            )
            .await;
            let client = login
                .unwrap_or_else(|_| panic!("login {i} took more than 1 s"))
                .unwrap_or_else(|e| panic!("login {i} failed: {e:?}"));
            clients.push((client, start.elapsed()));
        }
        churn.abort();
        let metrics = Transport::with_roots(metrics_addr, Vec::new());
        let (_, _, body) = http_request(&metrics, "GET", "/metrics", "").await;
        let text = String::from_utf8(body).unwrap();
        let refused: u64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("iroh_relay_handshakes_refused_total{cap=\"per_source\"} ")
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no per-source refusals in\n{text}"));
        assert!(refused >= 1000, "{refused} refused");
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = tokio::task::spawn_blocking(move || wait_exit(&mut child))
            .await
            .unwrap();
        assert_eq!(status.code(), Some(0), "{status:?}");
        let warnings: Vec<String> = lines.try_iter().filter(|l| l.contains("WARN")).collect();
        assert!(
            warnings.len() <= 3,
            "the attack is logged, not flooded:\n{}",
            warnings.join("\n")
        );
        let slowest = clients.iter().map(|(_, t)| *t).max().unwrap();
        eprintln!(
            "8 logins under attack, the slowest in {slowest:?}; {refused} connections refused"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    })
    .await;
}
