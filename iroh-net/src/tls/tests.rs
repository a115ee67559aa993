//! Real quinn endpoints over loopback UDP, each handshake bounded by a timeout.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use quinn::{Connection, ConnectionError, Endpoint, EndpointConfig, TokioRuntime};
use rustls::{RootCertStore, pki_types::PrivatePkcs8KeyDer};

use super::*;

const ALPN_A: &[u8] = b"test/a";
const ALPN_B: &[u8] = b"test/b";
/// Every test finishes far within this on loopback; reaching it is a failure.
const LIMIT: Duration = Duration::from_secs(10);

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 32])
}

fn endpoint(server: Option<Arc<dyn quinn::crypto::ServerConfig>>) -> Endpoint {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut config = EndpointConfig::default();
    config.grease_quic_bit(false);
    Endpoint::new(
        config,
        server.map(quinn::ServerConfig::with_crypto),
        socket,
        Arc::new(TokioRuntime),
    )
    .unwrap()
}

fn server(secret: &SecretKey, alpns: &[&[u8]]) -> (Endpoint, SocketAddr) {
    let crypto = make_server_config(secret, to_vecs(alpns), false).unwrap();
    let ep = endpoint(Some(Arc::new(crypto)));
    let addr = ep.local_addr().unwrap();
    (ep, addr)
}

fn to_vecs(alpns: &[&[u8]]) -> Vec<Vec<u8>> {
    alpns.iter().map(|a| a.to_vec()).collect()
}

/// Dials `addr` with the given client crypto and server name; returns both sides' outcomes.
async fn handshake(
    server: &Endpoint,
    client_crypto: Arc<dyn quinn::crypto::ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> (
    Result<Connection, ConnectionError>,
    Result<Connection, ConnectionError>,
) {
    let client = endpoint(None);
    let connecting = client
        .connect_with(quinn::ClientConfig::new(client_crypto), addr, name)
        .unwrap();
    let accept = async {
        let incoming = server.accept().await.unwrap();
        incoming.await
    };
    tokio::time::timeout(LIMIT, async { tokio::join!(connecting, accept) })
        .await
        .expect("handshake did not finish in time")
}

fn failure(result: Result<Connection, ConnectionError>) -> HandshakeFailure {
    let err = result.expect_err("handshake should have failed");
    classify_error(&err).unwrap_or_else(|| panic!("not a TLS failure: {err:?}"))
}

#[tokio::test]
async fn both_sides_learn_node_ids_and_alpn() {
    let (server_key, client_key) = (key(1), key(2));
    let (ep, addr) = server(&server_key, &[ALPN_A, ALPN_B]);
    let crypto =
        make_client_config(&client_key, server_key.public(), to_vecs(&[ALPN_B]), false).unwrap();
    let (client, server) = handshake(
        &ep,
        Arc::new(crypto),
        addr,
        &server_name(&server_key.public()),
    )
    .await;
    let (client, server) = (client.unwrap(), server.unwrap());

    assert_eq!(remote_node_id(&client), Ok(server_key.public()));
    assert_eq!(remote_node_id(&server), Ok(client_key.public()));
    assert_eq!(alpn(&client).as_deref(), Some(ALPN_B));
    assert_eq!(alpn(&server).as_deref(), Some(ALPN_B));

    // The connection carries data both ways.
    let (mut send, mut recv) = client.open_bi().await.unwrap();
    send.write_all(b"hello").await.unwrap();
    send.finish().unwrap();
    let (mut s_send, mut s_recv) = server.accept_bi().await.unwrap();
    assert_eq!(s_recv.read_to_end(64).await.unwrap(), b"hello");
    s_send.write_all(b"world").await.unwrap();
    s_send.finish().unwrap();
    assert_eq!(recv.read_to_end(64).await.unwrap(), b"world");
}

#[tokio::test]
async fn the_server_prefers_its_own_alpn_order() {
    let (server_key, client_key) = (key(1), key(2));
    let (ep, addr) = server(&server_key, &[ALPN_B, ALPN_A]);
    let crypto = make_client_config(
        &client_key,
        server_key.public(),
        to_vecs(&[ALPN_A, ALPN_B]),
        false,
    )
    .unwrap();
    let (client, server) = handshake(
        &ep,
        Arc::new(crypto),
        addr,
        &server_name(&server_key.public()),
    )
    .await;
    assert_eq!(alpn(&client.unwrap()).as_deref(), Some(ALPN_B));
    assert_eq!(alpn(&server.unwrap()).as_deref(), Some(ALPN_B));
}

#[tokio::test]
async fn dialling_the_wrong_node_id_fails_promptly() {
    let (server_key, client_key, someone_else) = (key(1), key(2), key(3).public());
    let (ep, addr) = server(&server_key, &[ALPN_A]);
    let crypto = make_client_config(&client_key, someone_else, to_vecs(&[ALPN_A]), false).unwrap();
    let start = Instant::now();
    let (client, server) =
        handshake(&ep, Arc::new(crypto), addr, &server_name(&someone_else)).await;
    let took = start.elapsed();

    let client = failure(client);
    assert_eq!(client.kind, HandshakeFailureKind::WrongNodeId);
    assert!(!client.by_peer, "the client itself refuses the server");
    assert_eq!(client.alert, 49, "access_denied");
    let server = failure(server);
    assert_eq!(server.kind, HandshakeFailureKind::WrongNodeId);
    assert!(server.by_peer);
    // One round trip on loopback, not a timeout.
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

#[tokio::test]
async fn a_server_name_naming_another_node_is_refused() {
    // The config expects the right node, but the caller passed a name for another: a caller bug, caught.
    let (server_key, client_key) = (key(1), key(2));
    let (ep, addr) = server(&server_key, &[ALPN_A]);
    let crypto = Arc::new(
        make_client_config(&client_key, server_key.public(), to_vecs(&[ALPN_A]), false).unwrap(),
    );
    for name in [server_name(&key(3).public()), "localhost".to_owned()] {
        let (client, _server) = handshake(&ep, crypto.clone(), addr, &name).await;
        let client = failure(client);
        assert_eq!(client.kind, HandshakeFailureKind::BadPeerKey, "{name}");
        assert!(!client.by_peer);
    }
}

#[tokio::test]
async fn no_common_alpn_is_no_application_protocol() {
    let (server_key, client_key) = (key(1), key(2));
    let (ep, addr) = server(&server_key, &[ALPN_A]);
    let crypto =
        make_client_config(&client_key, server_key.public(), to_vecs(&[ALPN_B]), false).unwrap();
    let (client, server) = handshake(
        &ep,
        Arc::new(crypto),
        addr,
        &server_name(&server_key.public()),
    )
    .await;
    let client = failure(client);
    assert_eq!(client.kind, HandshakeFailureKind::NoApplicationProtocol);
    assert_eq!(client.alert, 120);
    assert!(client.by_peer, "the server sends the alert");
    let server = failure(server);
    assert_eq!(server.kind, HandshakeFailureKind::NoApplicationProtocol);
    assert!(!server.by_peer);
}

#[tokio::test]
async fn a_client_without_a_key_is_refused() {
    let (server_key, client_key) = (key(1), key(2));
    let (ep, addr) = server(&server_key, &[ALPN_A]);
    // Our server verifier, but no client key at all.
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerKeyVerifier {
            expected: server_key.public(),
        }))
        .with_no_client_auth();
    config.alpn_protocols = to_vecs(&[ALPN_A]);
    let crypto = QuicClientConfig::try_from(config).unwrap();
    let (client, server) = handshake(
        &ep,
        Arc::new(crypto),
        addr,
        &server_name(&server_key.public()),
    )
    .await;
    let client = failure(client);
    assert_eq!(client.kind, HandshakeFailureKind::Incompatible);
    assert!(client.by_peer);
    assert!(!failure(server).by_peer);
    // Sanity: the same server accepts a client that has a key.
    let crypto =
        make_client_config(&client_key, server_key.public(), to_vecs(&[ALPN_A]), false).unwrap();
    let (client, _) = handshake(
        &ep,
        Arc::new(crypto),
        addr,
        &server_name(&server_key.public()),
    )
    .await;
    client.unwrap();
}

/// A plain rustls setup: a self-signed X.509 certificate for "localhost", trusted by the client as a root.
fn x509_pair() -> (rustls::ServerConfig, rustls::ClientConfig) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivatePkcs8KeyDer::from(key_pair.serialize_der());
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key.into())
        .unwrap();
    server.alpn_protocols = to_vecs(&[ALPN_A]);
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = to_vecs(&[ALPN_A]);
    (server, client)
}

#[tokio::test]
async fn a_plain_certificate_server_is_refused() {
    let (x509_server, x509_client) = x509_pair();
    let ep = endpoint(Some(Arc::new(
        QuicServerConfig::try_from(x509_server).unwrap(),
    )));
    let addr = ep.local_addr().unwrap();
    // Sanity: the X.509 setup works on its own.
    let (client, _) = handshake(
        &ep,
        Arc::new(QuicClientConfig::try_from(x509_client).unwrap()),
        addr,
        "localhost",
    )
    .await;
    client.unwrap();

    let target = key(1).public();
    let crypto = make_client_config(&key(2), target, to_vecs(&[ALPN_A]), false).unwrap();
    let (client, server) = handshake(&ep, Arc::new(crypto), addr, &server_name(&target)).await;
    let client = failure(client);
    assert_eq!(client.kind, HandshakeFailureKind::Incompatible);
    assert!(client.by_peer, "the X.509 server cannot serve a raw key");
    assert_eq!(failure(server).kind, HandshakeFailureKind::Incompatible);
}

#[tokio::test]
async fn a_plain_certificate_client_is_refused() {
    let (_, x509_client) = x509_pair();
    let server_key = key(1);
    let (ep, addr) = server(&server_key, &[ALPN_A]);
    let (client, server) = handshake(
        &ep,
        Arc::new(QuicClientConfig::try_from(x509_client).unwrap()),
        addr,
        &server_name(&server_key.public()),
    )
    .await;
    let client = failure(client);
    assert_eq!(client.kind, HandshakeFailureKind::Incompatible);
    assert!(
        client.by_peer,
        "our server refuses a client that wants X.509"
    );
    let server = failure(server);
    assert_eq!(server.kind, HandshakeFailureKind::Incompatible);
    assert!(!server.by_peer);
}

#[test]
fn configs_require_alpn() {
    assert!(matches!(
        make_server_config(&key(1), vec![], false),
        Err(TlsError::NoAlpn)
    ));
    assert!(matches!(
        make_client_config(&key(1), key(2).public(), vec![], false),
        Err(TlsError::NoAlpn)
    ));
}

#[test]
fn server_names_round_trip() {
    let id = key(4).public();
    let name = server_name(&id);
    assert!(name.ends_with(".iroh.invalid"));
    assert_eq!(node_id_from_server_name(&name), Some(id));
    assert_eq!(
        node_id_from_server_name(&name.to_ascii_uppercase()),
        Some(id)
    );
    // The name is a valid DNS name for rustls.
    assert!(rustls::pki_types::ServerName::try_from(name.as_str()).is_ok());

    for bad in [
        "",
        "iroh.invalid",
        "localhost",
        &format!("{id}.example.com"),
        &format!("{id}.iroh.invalid.com"),
        &format!("x{id}.iroh.invalid"),
        &format!("a.{id}.iroh.invalid"),
    ] {
        assert_eq!(node_id_from_server_name(bad), None, "{bad}");
    }
}

#[test]
fn classify_ignores_non_tls_errors() {
    assert_eq!(classify_error(&ConnectionError::TimedOut), None);
    assert_eq!(classify_error(&ConnectionError::LocallyClosed), None);
}
