//! Dialling by NodeId alone, on loopback: through the static address book, through a discovery service
//! that finds nothing (the error says what was tried), and through the real discovery server of
//! `iroh-relay` (publish over HTTP, resolve over DNS and over HTTP).
//!
//! Every test runs under a timeout.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use iroh_base::{NodeAddr, SecretKey};
use iroh_net::{
    discovery::{
        Discovery, DiscoveryError, DiscoveryErrorKind, DiscoveryStream,
        static_provider::StaticProvider,
    },
    endpoint::{ConnectError, Endpoint, Source},
};

const ALPN: &[u8] = b"iroh-net-discovery-test/0";
const TIMEOUT: Duration = Duration::from_secs(30);

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init()
        .ok();
}

async fn listener() -> Endpoint {
    Endpoint::builder()
        .alpns(vec![ALPN.to_vec()])
        .bind()
        .await
        .unwrap()
}

/// Accepts one connection and echoes one stream.
fn echo(endpoint: &Endpoint) -> tokio::task::JoinHandle<()> {
    let endpoint = endpoint.clone();
    tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().accept().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let data = recv.read_to_end(1024).await.unwrap();
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
        conn.closed().await;
    })
}

async fn round_trip(conn: &iroh_net::endpoint::Connection) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"hello by node id").await.unwrap();
    send.finish().unwrap();
    assert_eq!(recv.read_to_end(1024).await.unwrap(), b"hello by node id");
}

#[tokio::test]
async fn bare_node_id_through_the_static_address_book() {
    init_tracing();
    tokio::time::timeout(TIMEOUT, async {
        let server = listener().await;
        let book = StaticProvider::new();
        let client = Endpoint::builder()
            .add_discovery(book.clone())
            .bind()
            .await
            .unwrap();
        // Unknown yet: the book has nothing, and there is no other service.
        let error = client.connect(server.node_id(), ALPN).await.unwrap_err();
        assert!(matches!(error, ConnectError::NoAddress(_)), "{error}");

        // Filled after the endpoint was built, through a clone of the book.
        let addrs = server
            .bound_sockets()
            .into_iter()
            .map(|a| std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), a.port()));
        book.add_node_addr(NodeAddr::new(server.node_id()).with_direct_addresses(addrs.take(1)));
        let accept = echo(&server);
        let conn = client.connect(server.node_id(), ALPN).await.unwrap();
        round_trip(&conn).await;
        let info = client.remote_info(server.node_id()).await.unwrap();
        assert!(
            info.paths
                .iter()
                .any(|p| p.sources.contains(&Source::Discovery("static"))),
            "the address shows where it came from: {:?}",
            info.paths
        );
        conn.close(0u32.into(), b"done");
        accept.await.unwrap();
        client.close().await;
        server.close().await;
    })
    .await
    .unwrap();
}

/// A service that never finds anything, after a delay.
#[derive(Debug)]
struct Nothing(&'static str, Duration);

impl Discovery for Nothing {
    fn name(&self) -> &'static str {
        self.0
    }

    fn resolve(&self, _node: iroh_base::NodeId) -> Option<DiscoveryStream> {
        let (name, delay) = (self.0, self.1);
        Some(Box::pin(futures_util::stream::once(async move {
            let started = Instant::now();
            tokio::time::sleep(delay).await;
            Err(DiscoveryError::new(
                name,
                started,
                DiscoveryErrorKind::NotFound("NXDOMAIN"),
            ))
        })))
    }
}

#[tokio::test]
async fn nothing_found_says_what_was_tried_and_a_hang_ends_at_the_connect_timeout() {
    init_tracing();
    tokio::time::timeout(TIMEOUT, async {
        let peer = SecretKey::generate().public();
        let client = Endpoint::builder()
            .add_discovery(Nothing("dns", Duration::from_millis(20)))
            .add_discovery(Nothing("pkarr", Duration::from_millis(5)))
            .bind()
            .await
            .unwrap();
        let error = client.connect(peer, ALPN).await.unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(
                error,
                ConnectError::Discovery {
                    timed_out: None,
                    ..
                }
            ),
            "{text}"
        );
        assert!(
            text.starts_with(&format!("no address for {peer}: ")),
            "{text}"
        );
        assert!(text.contains("dns: NXDOMAIN after"), "{text}");
        assert!(text.contains("pkarr: NXDOMAIN after"), "{text}");
        client.close().await;

        // A service slower than the connect timeout: the dial ends at the timeout, saying so.
        let slow = Endpoint::builder()
            .add_discovery(Nothing("dns", Duration::from_secs(60)))
            .connect_timeout(Duration::from_millis(300))
            .bind()
            .await
            .unwrap();
        let started = Instant::now();
        let error = slow.connect(peer, ALPN).await.unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert!(
            matches!(
                error,
                ConnectError::Discovery {
                    timed_out: Some(_),
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("gave up after"), "{error}");
        slow.close().await;
    })
    .await
    .unwrap();
}

mod with_server {
    use iroh_net::{
        discovery::{
            dns::DnsDiscovery,
            pkarr::{PkarrPublisher, PkarrResolver},
        },
        endpoint::{RelayMap, RelayMode, RelayNode},
    };
    use iroh_relay::server::{DiscoveryConfig, Server, ServerConfig, discovery::DEV_ORIGIN};

    use super::*;

    /// A relay with discovery (DNS on a free port) on 127.0.0.1, plain HTTP.
    async fn relay_with_discovery() -> Server {
        let discovery = DiscoveryConfig::new(DEV_ORIGIN, Some("127.0.0.1:0".parse().unwrap()));
        Server::spawn(ServerConfig::dev().with_discovery(Some(discovery)))
            .await
            .unwrap()
    }

    fn relay_map(server: &Server) -> RelayMap {
        let stun = server.stun_addr().unwrap().port();
        RelayMap::from_node(RelayNode::with_stun_port(server.relay_url(), stun))
    }

    /// An endpoint on `relay` that publishes to `discovery` and resolves through its DNS (or HTTP).
    async fn node(relay: &Server, discovery: &Server, dns: bool) -> Endpoint {
        let key = SecretKey::generate();
        let base = discovery.discovery_url().unwrap();
        let mut builder = Endpoint::builder()
            .secret_key(key.clone())
            .alpns(vec![ALPN.to_vec()])
            .relay_mode(RelayMode::Custom(relay_map(relay)))
            .add_discovery(PkarrPublisher::new(key, base.clone()));
        builder = if dns {
            let origin = DEV_ORIGIN.parse().unwrap();
            let server = discovery.dns_addr().unwrap();
            builder.add_discovery(DnsDiscovery::with_name_server(origin, server).unwrap())
        } else {
            builder.add_discovery(PkarrResolver::new(base))
        };
        let endpoint = builder.bind().await.unwrap();
        endpoint
            .home_relay()
            .wait_for(Option::is_some)
            .await
            .unwrap();
        endpoint
    }

    /// Waits until `endpoint`'s record on `server` names `relay`.
    async fn published(server: &Server, endpoint: &Endpoint, relay: &Server) {
        let client =
            iroh_relay::client::pkarr::PkarrClient::builder(server.discovery_url().unwrap())
                .build();
        loop {
            if let Ok(record) = client.fetch(endpoint.node_id()).await
                && record.record().unwrap().relay_url() == Some(&relay.relay_url())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn dial_by_node_id(dns: bool) {
        init_tracing();
        tokio::time::timeout(TIMEOUT, async {
            let relay = relay_with_discovery().await;
            let server = node(&relay, &relay, dns).await;
            let client = node(&relay, &relay, dns).await;
            published(&relay, &server, &relay).await;
            let accept = echo(&server);
            let conn = client.connect(server.node_id(), ALPN).await.unwrap();
            round_trip(&conn).await;
            let info = client.remote_info(server.node_id()).await.unwrap();
            let service = if dns { "dns" } else { "pkarr" };
            assert_eq!(
                info.relay_source,
                Some(Source::Discovery(service)),
                "{info:?}"
            );
            assert_eq!(info.relay_url, Some(relay.relay_url()));
            conn.close(0u32.into(), b"done");
            accept.await.unwrap();
            client.close().await;
            server.close().await;
            relay.shutdown().await;
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn bare_node_id_through_dns_discovery() {
        dial_by_node_id(true).await;
    }

    #[tokio::test]
    async fn bare_node_id_through_http_discovery() {
        dial_by_node_id(false).await;
    }

    /// A node that moves to another relay is found at the new one: its old record named the first
    /// relay, which no longer has it; the dialler, knowing nothing, resolves the new record.
    #[tokio::test]
    async fn a_node_that_moves_is_found_at_its_new_relay() {
        init_tracing();
        tokio::time::timeout(TIMEOUT, async {
            let discovery = relay_with_discovery().await;
            let second = Server::spawn(ServerConfig::dev()).await.unwrap();
            let mover = node(&discovery, &discovery, true).await;
            published(&discovery, &mover, &discovery).await;
            let mover_key = mover.secret_key().clone();
            mover.close().await;

            // The same node comes back on the other relay, with no direct path the dialler could use.
            let base = discovery.discovery_url().unwrap();
            let moved = Endpoint::builder()
                .secret_key(mover_key.clone())
                .alpns(vec![ALPN.to_vec()])
                .relay_mode(RelayMode::Custom(relay_map(&second)))
                .add_discovery(PkarrPublisher::new(mover_key, base))
                .bind()
                .await
                .unwrap();
            moved.home_relay().wait_for(Option::is_some).await.unwrap();
            moved.set_direct_filter(Some(std::sync::Arc::new(|_| true)));
            published(&discovery, &moved, &second).await;

            let dialler = node(&discovery, &discovery, true).await;
            dialler.set_direct_filter(Some(std::sync::Arc::new(|_| true)));
            let accept = echo(&moved);
            let conn = dialler.connect(moved.node_id(), ALPN).await.unwrap();
            round_trip(&conn).await;
            let info = dialler.remote_info(moved.node_id()).await.unwrap();
            assert_eq!(
                info.relay_url,
                Some(second.relay_url()),
                "found at the new relay"
            );
            conn.close(0u32.into(), b"done");
            accept.await.unwrap();
            dialler.close().await;
            moved.close().await;
            second.shutdown().await;
            discovery.shutdown().await;
        })
        .await
        .unwrap();
    }

    /// The first answer names only a dead address (a record from before the node knew its relay); the
    /// dial does not hang on it: discovery is asked again, past its cache, and the newer record works.
    #[tokio::test]
    async fn a_stale_first_answer_is_refreshed_while_dialling() {
        init_tracing();
        tokio::time::timeout(TIMEOUT, async {
            let relay = relay_with_discovery().await;
            let key = SecretKey::generate();
            let stale = iroh_relay::protos::discovery::NodeRecord::new(key.public())
                .with_direct_addresses(["192.0.2.1:1".parse().unwrap()]);
            let client =
                iroh_relay::client::pkarr::PkarrClient::builder(relay.discovery_url().unwrap())
                    .build();
            let signed =
                iroh_relay::protos::discovery::SignedRecord::sign_now(&key, &stale).unwrap();
            client.publish(&signed).await.unwrap();

            let dialler = node(&relay, &relay, true).await;
            let started = Instant::now();
            let dial = {
                let dialler = dialler.clone();
                let target = key.public();
                tokio::spawn(async move { dialler.connect(target, ALPN).await })
            };
            // The real node comes up after the dialler has its (stale, now cached) answer.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let base = relay.discovery_url().unwrap();
            let server = Endpoint::builder()
                .secret_key(key.clone())
                .alpns(vec![ALPN.to_vec()])
                .relay_mode(RelayMode::Custom(relay_map(&relay)))
                .add_discovery(PkarrPublisher::new(key, base))
                .bind()
                .await
                .unwrap();
            let accept = echo(&server);
            let conn = dial.await.unwrap().unwrap();
            println!("connected after {:?}", started.elapsed());
            round_trip(&conn).await;
            conn.close(0u32.into(), b"done");
            accept.await.unwrap();
            dialler.close().await;
            server.close().await;
            relay.shutdown().await;
        })
        .await
        .unwrap();
    }
}
