//! The discovery server against real clients on loopback: publish and fetch over HTTP with the pkarr
//! client, resolve over DNS (UDP and TCP) with raw queries and with `dig`, refusals for everything
//! malformed or foreign, the per-IP publish limit, and a restart that keeps the records.
#![cfg(all(feature = "server", feature = "client"))]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod server_support;

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use hickory_server::proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use iroh_base::SecretKey;
use iroh_relay::{
    client::pkarr::{PkarrClient, PkarrError},
    protos::discovery::{NodeRecord, SignedRecord, now_micros},
    server::{
        DiscoveryConfig, Server, ServerConfig,
        discovery::{DEV_ORIGIN, RequestRate},
    },
};
use server_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(30);

fn discovery_config() -> DiscoveryConfig {
    DiscoveryConfig::new(DEV_ORIGIN, Some("127.0.0.1:0".parse().unwrap()))
}

async fn server_with(discovery: DiscoveryConfig) -> Server {
    init_logging();
    Server::spawn(ServerConfig::dev().with_discovery(Some(discovery)))
        .await
        .unwrap()
}

fn client(server: &Server) -> PkarrClient {
    PkarrClient::builder(server.discovery_url().unwrap()).build()
}

fn record(key: &SecretKey, port: u16) -> NodeRecord {
    NodeRecord::new(key.public())
        .with_relay_url("http://relay.iroh.test./".parse().unwrap())
        .with_direct_addresses([SocketAddr::from(([192, 0, 2, 1], port))])
}

/// Sends one DNS query over UDP (or TCP) and returns the answer.
async fn dns(server: SocketAddr, name: &str, rtype: RecordType, tcp: bool) -> Message {
    let mut query = Message::new(0x1234, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let bytes = query.to_vec().unwrap();
    let answer = if tcp {
        let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
        let len = u16::try_from(bytes.len()).unwrap();
        stream.write_all(&len.to_be_bytes()).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    } else {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(&bytes, server).await.unwrap();
        let mut buf = vec![0; 4096];
        let (len, _) = socket.recv_from(&mut buf).await.unwrap();
        buf.truncate(len);
        buf
    };
    let message = Message::from_vec(&answer).unwrap();
    assert_eq!(message.metadata.id, 0x1234);
    message
}

fn txt_strings(message: &Message) -> Vec<String> {
    let mut out = Vec::new();
    for record in &message.answers {
        if let RData::TXT(txt) = &record.data {
            out.extend(
                txt.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned()),
            );
        }
    }
    out
}

fn iroh_name(key: &SecretKey) -> String {
    format!("_iroh.{}.{DEV_ORIGIN}.", key.public())
}

#[tokio::test]
async fn publish_then_resolve_over_http_and_dns() {
    tokio::time::timeout(TIMEOUT, async {
        let server = server_with(discovery_config()).await;
        let dns_addr = server.dns_addr().unwrap();
        let client = client(&server);
        let key = SecretKey::generate();

        let missing = client.fetch(key.public()).await.unwrap_err();
        assert!(matches!(missing, PkarrError::NotFound), "{missing}");
        let nx = dns(dns_addr, &iroh_name(&key), RecordType::TXT, false).await;
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert!(nx.metadata.authoritative);
        assert_eq!(nx.authorities.len(), 1, "NXDOMAIN carries the SOA");

        let published = record(&key, 1);
        let signed = SignedRecord::sign_now(&key, &published).unwrap();
        let started = Instant::now();
        client.publish(&signed).await.unwrap();
        let answer = dns(dns_addr, &iroh_name(&key), RecordType::TXT, false).await;
        println!("publish to resolvable over DNS: {:?}", started.elapsed());
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert!(answer.metadata.authoritative);
        assert!(!answer.metadata.recursion_available);
        assert_eq!(txt_strings(&answer), published.txt_strings());
        assert_eq!(answer.answers[0].ttl, published.ttl());

        // The same over TCP, and with the name in another case.
        let upper = iroh_name(&key).to_uppercase();
        let tcp = dns(dns_addr, &upper, RecordType::TXT, true).await;
        assert_eq!(txt_strings(&tcp), published.txt_strings());

        // Over HTTP the record comes back signed, byte for byte.
        let fetched = client.fetch(key.public()).await.unwrap();
        assert_eq!(fetched, signed);
        assert_eq!(fetched.record().unwrap(), published);

        // The node moves: the newer record replaces the older everywhere.
        let moved = record(&key, 2);
        client
            .publish(&SignedRecord::sign_now(&key, &moved).unwrap())
            .await
            .unwrap();
        let answer = dns(dns_addr, &iroh_name(&key), RecordType::TXT, false).await;
        assert_eq!(txt_strings(&answer), moved.txt_strings());
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dns_answers_only_for_its_zone() {
    tokio::time::timeout(TIMEOUT, async {
        let server = server_with(discovery_config()).await;
        let dns_addr = server.dns_addr().unwrap();
        let key = SecretKey::generate();
        client(&server)
            .publish(&SignedRecord::sign_now(&key, &record(&key, 3)).unwrap())
            .await
            .unwrap();

        // No recursion: other zones are refused, not looked up.
        for name in ["example.org.", "test.", "."] {
            let refused = dns(dns_addr, name, RecordType::A, false).await;
            assert_eq!(
                refused.metadata.response_code,
                ResponseCode::Refused,
                "{name}"
            );
            assert!(refused.answers.is_empty());
        }
        // Another type at the record's name: NODATA with the SOA.
        let nodata = dns(dns_addr, &iroh_name(&key), RecordType::A, false).await;
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.authorities.len(), 1);
        // The node's own name is an empty non-terminal.
        let ent = dns(
            dns_addr,
            &format!("{}.{DEV_ORIGIN}.", key.public()),
            RecordType::TXT,
            false,
        )
        .await;
        assert_eq!(ent.metadata.response_code, ResponseCode::NoError);
        // The apex has an SOA; garbage labels are NXDOMAIN.
        let soa = dns(dns_addr, &format!("{DEV_ORIGIN}."), RecordType::SOA, false).await;
        assert_eq!(soa.answers.len(), 1);
        for name in [
            format!("_iroh.notakey.{DEV_ORIGIN}."),
            format!("x._iroh.{}.{DEV_ORIGIN}.", key.public()),
        ] {
            let nx = dns(dns_addr, &name, RecordType::TXT, false).await;
            assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain, "{name}");
        }
        server.shutdown().await;
    })
    .await
    .unwrap();
}

/// `PUT path` with `body`; returns the status.
async fn put(transport: &Transport, path: &str, body: &[u8]) -> u16 {
    let mut stream = transport.connect().await;
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let head = read_head(&mut stream).await;
    status_of(&head)
}

#[tokio::test]
async fn bad_publishes_get_clear_refusals() {
    tokio::time::timeout(TIMEOUT, async {
        let server = server_with(discovery_config()).await;
        let transport = Transport::for_server(&server);
        let key = SecretKey::generate();
        let path = format!("/pkarr/{}", key.public());
        let signed = SignedRecord::sign(&key, &record(&key, 4), now_micros()).unwrap();
        let payload = signed.to_relay_payload();

        // A bad signature: one flipped bit.
        let mut forged = payload.to_vec();
        forged[10] ^= 1;
        assert_eq!(put(&transport, &path, &forged).await, 400);
        // Another node's key in the path.
        let other = format!("/pkarr/{}", SecretKey::generate().public());
        assert_eq!(put(&transport, &other, &payload).await, 400);
        // Garbage, empty, oversized, not a key.
        assert_eq!(put(&transport, &path, b"hello").await, 400);
        assert_eq!(put(&transport, &path, b"").await, 400);
        assert_eq!(put(&transport, &path, &[7u8; 5000]).await, 413);
        assert_eq!(put(&transport, "/pkarr/not-a-key", &payload).await, 400);
        // A timestamp an hour ahead.
        let future =
            SignedRecord::sign(&key, &record(&key, 4), now_micros() + 3_600_000_000).unwrap();
        assert_eq!(
            put(&transport, &path, &future.to_relay_payload()).await,
            400
        );
        // Other methods.
        let (status, head, _) = http_request(&transport, "DELETE", &path, "").await;
        assert_eq!(status, 405);
        assert_eq!(header(&head, "allow"), Some("GET, PUT"));

        // The real one is stored; replaying it, or an older one, is refused.
        assert_eq!(put(&transport, &path, &payload).await, 204);
        assert_eq!(put(&transport, &path, &payload).await, 409);
        let older = SignedRecord::sign(&key, &record(&key, 5), signed.timestamp() - 1).unwrap();
        assert_eq!(put(&transport, &path, &older.to_relay_payload()).await, 409);
        let fetched = client(&server).fetch(key.public()).await.unwrap();
        assert_eq!(fetched, signed, "the refused ones changed nothing");
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn publishes_are_rate_limited_per_ip() {
    tokio::time::timeout(TIMEOUT, async {
        let rate = RequestRate {
            per_second: 0.5,
            burst: 3,
        };
        let server = server_with(discovery_config().with_publish_rate(rate)).await;
        let client = client(&server);
        let key = SecretKey::generate();
        for port in 0..3 {
            let signed = SignedRecord::sign_now(&key, &record(&key, port)).unwrap();
            client.publish(&signed).await.unwrap();
        }
        let signed = SignedRecord::sign_now(&key, &record(&key, 9)).unwrap();
        match client.publish(&signed).await {
            Err(PkarrError::Status { status, .. }) => assert_eq!(status.as_u16(), 429),
            other => panic!("expected 429, got {other:?}"),
        }
        // Fetches are not limited.
        for _ in 0..10 {
            client.fetch(key.public()).await.unwrap();
        }
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_restarted_server_keeps_its_records() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempdir();
        let db = dir.join("records.redb");
        let key = SecretKey::generate();
        let signed = SignedRecord::sign_now(&key, &record(&key, 6)).unwrap();
        {
            let server = server_with(discovery_config().with_db_path(&db)).await;
            client(&server).publish(&signed).await.unwrap();
            server.shutdown().await;
        }
        let server = server_with(discovery_config().with_db_path(&db)).await;
        assert_eq!(client(&server).fetch(key.public()).await.unwrap(), signed);
        let answer = dns(
            server.dns_addr().unwrap(),
            &iroh_name(&key),
            RecordType::TXT,
            true,
        )
        .await;
        assert_eq!(txt_strings(&answer), record(&key, 6).txt_strings());
        server.shutdown().await;
        std::fs::remove_dir_all(dir).ok();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn records_not_republished_are_evicted() {
    tokio::time::timeout(TIMEOUT, async {
        let mut config = discovery_config().with_evict_after(Duration::from_secs(60));
        config.evict_interval = Duration::from_millis(50);
        let server = server_with(config).await;
        let client = client(&server);
        let (old, fresh) = (SecretKey::generate(), SecretKey::generate());
        let stale = SignedRecord::sign(&old, &record(&old, 7), now_micros() - 120_000_000).unwrap();
        client.publish(&stale).await.unwrap();
        client
            .publish(&SignedRecord::sign_now(&fresh, &record(&fresh, 8)).unwrap())
            .await
            .unwrap();
        loop {
            match client.fetch(old.public()).await {
                Err(PkarrError::NotFound) => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(other) => panic!("{other}"),
            }
        }
        client.fetch(fresh.public()).await.unwrap();
        server.shutdown().await;
    })
    .await
    .unwrap();
}

/// `dig` (Debian's bind9-dnsutils), an independent DNS client, reads the TXT records.
#[tokio::test]
async fn dig_reads_the_records() {
    tokio::time::timeout(TIMEOUT, async {
        let server = server_with(discovery_config()).await;
        let dns_addr = server.dns_addr().unwrap();
        let key = SecretKey::generate();
        let published = record(&key, 9);
        client(&server)
            .publish(&SignedRecord::sign_now(&key, &published).unwrap())
            .await
            .unwrap();
        for transport in ["+notcp", "+tcp"] {
            let name = iroh_name(&key);
            let port = dns_addr.port().to_string();
            let output = tokio::task::spawn_blocking(move || {
                Command::new("dig")
                    .args(["@127.0.0.1", "-p", &port, transport, "+short", "TXT", &name])
                    .output()
            })
            .await
            .unwrap()
            .expect("`dig` runs (apt-get install bind9-dnsutils; `cargo xtask ci` installs it)");
            assert!(output.status.success(), "{output:?}");
            let text = String::from_utf8(output.stdout).unwrap();
            for string in published.txt_strings() {
                assert!(
                    text.contains(&format!("\"{string}\"")),
                    "{transport}: {text}"
                );
            }
        }
        server.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn metrics_count_publishes_fetches_and_queries() {
    tokio::time::timeout(TIMEOUT, async {
        init_logging();
        let config = ServerConfig::dev()
            .with_metrics_bind(Some("127.0.0.1:0".parse().unwrap()))
            .with_discovery(Some(discovery_config()));
        let server = Server::spawn(config).await.unwrap();
        let client = client(&server);
        let key = SecretKey::generate();
        let signed = SignedRecord::sign_now(&key, &record(&key, 11)).unwrap();
        client.publish(&signed).await.unwrap();
        assert!(
            client.publish(&signed).await.is_err(),
            "a replay is refused"
        );
        client.fetch(key.public()).await.unwrap();
        let dns_addr = server.dns_addr().unwrap();
        dns(dns_addr, &iroh_name(&key), RecordType::TXT, false).await;
        dns(dns_addr, "example.org.", RecordType::A, false).await;
        let (status, text) = http_get_plain(server.metrics_addr().unwrap(), "/metrics").await;
        assert_eq!(status, 200);
        for line in [
            "iroh_relay_discovery_publishes_total{result=\"stored\"} 1",
            "iroh_relay_discovery_publishes_total{result=\"not_newer\"} 1",
            "iroh_relay_discovery_fetches_total{result=\"found\"} 1",
            "iroh_relay_discovery_records 1",
            "iroh_relay_dns_queries_total{rcode=\"noerror\"} 1",
            "iroh_relay_dns_queries_total{rcode=\"refused\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        server.shutdown().await;
    })
    .await
    .unwrap();
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "iroh-discovery-test-{}-{}",
        std::process::id(),
        now_micros()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
