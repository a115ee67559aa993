//! QUIC handshake time on loopback: iroh's raw-public-key TLS (ed25519, both sides authenticated) next to
//! quinn with ordinary self-signed X.509 certificates (server authenticated only, as quinn's examples do,
//! and, for a like-for-like comparison, ed25519 certificates on both sides).
//!
//! Run with `cargo bench -p iroh-net --bench handshake` (optionally followed by `-- ROUNDS`, default 50).
//!
//! Each round makes one fresh connection per setup, in turn, so that drift in machine load affects all setups
//! alike; session resumption is off everywhere, so every handshake is a full one. The time is from
//! `connect` until both sides hold an established connection. Client and server share one single-threaded
//! tokio runtime: the figure is the CPU of both ends plus loopback latency, not a parallel best case.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use iroh_base::SecretKey;
use iroh_net::tls;
use quinn::{
    ClientConfig, Endpoint, EndpointConfig, ServerConfig, TokioRuntime,
    crypto::rustls::{QuicClientConfig, QuicServerConfig},
};
use rustls::{
    RootCertStore,
    client::Resumption,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
};

const ALPN: &[u8] = b"bench";

struct Setup {
    name: &'static str,
    server: Endpoint,
    client_config: ClientConfig,
    server_name: String,
    samples: Vec<Duration>,
}

fn endpoint(server: Option<ServerConfig>) -> Endpoint {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut config = EndpointConfig::default();
    config.grease_quic_bit(false);
    Endpoint::new(config, server, socket, Arc::new(TokioRuntime)).unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn iroh_setup() -> Setup {
    let (server_key, client_key) = (SecretKey::generate(), SecretKey::generate());
    let server = tls::make_server_config(&server_key, vec![ALPN.to_vec()], false).unwrap();
    let client =
        tls::make_client_config(&client_key, server_key.public(), vec![ALPN.to_vec()], false)
            .unwrap();
    Setup {
        name: "iroh raw public keys, ed25519, mutual",
        server: endpoint(Some(ServerConfig::with_crypto(Arc::new(server)))),
        client_config: ClientConfig::new(Arc::new(client)),
        server_name: tls::server_name(&server_key.public()),
        samples: Vec::new(),
    }
}

/// A self-signed certificate for "localhost" and its key.
fn self_signed(
    alg: &'static rcgen::SignatureAlgorithm,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key_pair = rcgen::KeyPair::generate_for(alg).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key_pair)
        .unwrap();
    let key = PrivatePkcs8KeyDer::from(key_pair.serialize_der());
    (cert.der().clone(), key.into())
}

/// quinn's usual setup: the client trusts the server's self-signed certificate as a root. With `mutual`,
/// the client also presents a self-signed certificate that the server trusts the same way.
fn x509_setup(name: &'static str, alg: &'static rcgen::SignatureAlgorithm, mutual: bool) -> Setup {
    let (cert, key) = self_signed(alg);
    let server_builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap();
    let (client_cert, client_key) = self_signed(alg);
    let server_builder = if mutual {
        let mut client_roots = RootCertStore::empty();
        client_roots.add(client_cert.clone()).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider())
                .build()
                .unwrap();
        server_builder.with_client_cert_verifier(verifier)
    } else {
        server_builder.with_no_client_auth()
    };
    let mut server = server_builder
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![ALPN.to_vec()];
    server.send_tls13_tickets = 0;
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let client_builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut client = if mutual {
        client_builder
            .with_client_auth_cert(vec![client_cert], client_key)
            .unwrap()
    } else {
        client_builder.with_no_client_auth()
    };
    client.alpn_protocols = vec![ALPN.to_vec()];
    client.resumption = Resumption::disabled();
    let server = QuicServerConfig::try_from(server).unwrap();
    let client = QuicClientConfig::try_from(client).unwrap();
    Setup {
        name,
        server: endpoint(Some(ServerConfig::with_crypto(Arc::new(server)))),
        client_config: ClientConfig::new(Arc::new(client)),
        server_name: "localhost".to_owned(),
        samples: Vec::new(),
    }
}

async fn one_handshake(setup: &Setup, client: &Endpoint) -> Duration {
    let addr: SocketAddr = setup.server.local_addr().unwrap();
    let start = Instant::now();
    let connecting = client
        .connect_with(setup.client_config.clone(), addr, &setup.server_name)
        .unwrap();
    let accepting = async { setup.server.accept().await.unwrap().await.unwrap() };
    let (conn, server_conn) = tokio::join!(connecting, accepting);
    let took = start.elapsed();
    let conn = conn.unwrap();
    conn.close(0u32.into(), b"");
    server_conn.closed().await;
    took
}

/// Dials the iroh server expecting another NodeId; returns the time until the client has refused it.
async fn one_refusal(
    setup: &Setup,
    client: &Endpoint,
    config: &ClientConfig,
    name: &str,
) -> Duration {
    let addr: SocketAddr = setup.server.local_addr().unwrap();
    let start = Instant::now();
    let connecting = client.connect_with(config.clone(), addr, name).unwrap();
    let accepting = async { setup.server.accept().await.unwrap().await };
    let (conn, server_conn) = tokio::join!(connecting, accepting);
    let took = start.elapsed();
    let err = conn.unwrap_err();
    let failure = tls::classify_error(&err).unwrap();
    assert_eq!(failure.kind, tls::HandshakeFailureKind::WrongNodeId);
    assert!(server_conn.is_err());
    took
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut setups = vec![
            iroh_setup(),
            x509_setup(
                "quinn self-signed X.509, ECDSA P-256, server only",
                &rcgen::PKCS_ECDSA_P256_SHA256,
                false,
            ),
            x509_setup(
                "quinn self-signed X.509, ed25519, server only",
                &rcgen::PKCS_ED25519,
                false,
            ),
            x509_setup(
                "self-signed X.509, ed25519, mutual",
                &rcgen::PKCS_ED25519,
                true,
            ),
        ];
        let client = endpoint(None);
        // Warm up: first connections pay for lazy initialisation.
        for setup in &setups {
            for _ in 0..5 {
                one_handshake(setup, &client).await;
            }
        }
        for _ in 0..rounds {
            for setup in &mut setups {
                let took = one_handshake(setup, &client).await;
                setup.samples.push(took);
            }
        }
        // The iroh server again, dialled by a client that expects another node.
        let other = SecretKey::generate().public();
        let wrong = ClientConfig::new(Arc::new(
            tls::make_client_config(&SecretKey::generate(), other, vec![ALPN.to_vec()], false)
                .unwrap(),
        ));
        let mut refusals = Setup {
            name: "iroh, wrong NodeId: connect -> refused",
            samples: Vec::new(),
            ..iroh_setup()
        };
        for _ in 0..rounds {
            let took = one_refusal(&refusals, &client, &wrong, &tls::server_name(&other)).await;
            refusals.samples.push(took);
        }
        setups.push(refusals);

        println!(
            "{rounds} fresh handshakes per setup on loopback, connect -> both sides established:"
        );
        for setup in &mut setups {
            setup.samples.sort();
            println!(
                "  {:<52} median {:>7.0} us   p10 {:>7.0} us   p90 {:>7.0} us",
                setup.name,
                percentile(&setup.samples, 50).as_secs_f64() * 1e6,
                percentile(&setup.samples, 10).as_secs_f64() * 1e6,
                percentile(&setup.samples, 90).as_secs_f64() * 1e6,
            );
        }
    });
}
