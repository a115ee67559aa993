//! Access control against a real server: allowlist, denylist, bearer token, client cap. Denied clients can
//! neither send nor receive anything.
#![cfg(feature = "server")]
// Shared test helpers live outside `#[test]` functions, where clippy's test allowance does not reach.
#![allow(clippy::unwrap_used)]

mod server_support;

use iroh_base::SecretKey;
use iroh_relay::{
    protos::frame::{DenyReason, Frame},
    server::{AccessControl, Limits, ServerConfig},
};
use server_support::*;

/// A denied node gets nothing through: its connection is closed, and datagrams sent to it bounce with
/// PeerGone.
async fn assert_denied_and_unreachable(
    transport: &Transport,
    denied: SecretKey,
    expected: LoginError,
    witness: &mut TestClient,
) {
    let (mut conn, status) = TestClient::upgraded(transport, denied.clone(), "").await;
    if status == 101 {
        assert_eq!(conn.login().await.unwrap_err(), expected);
        // Whatever it sends now goes nowhere: the server has closed the connection.
        let _ = conn
            .writer
            .send(&Frame::SendDatagrams {
                dst: witness.node_id(),
                datagrams: iroh_relay::protos::frame::Datagrams::single(b"sneaky".to_vec()),
            })
            .await;
        assert!(conn.closed().await);
    } else {
        assert_eq!(LoginError::Http(status), expected);
    }
    witness.send(denied.public(), b"are you there?").await;
    assert_eq!(
        witness.next_frame().await,
        Some(Frame::PeerGone(denied.public()))
    );
}

async fn allowlist(mode: Mode) {
    let allowed = [SecretKey::generate(), SecretKey::generate()];
    let list = allowed.iter().map(SecretKey::public).collect();
    let server = spawn(
        mode,
        ServerConfig::dev().with_access(AccessControl::Allowlist(list)),
    )
    .await;
    let transport = Transport::for_server(&server);
    let mut a = TestClient::connect(&transport, allowed[0].clone()).await;
    let mut b = TestClient::connect(&transport, allowed[1].clone()).await;
    assert_denied_and_unreachable(
        &transport,
        SecretKey::generate(),
        LoginError::Denied(DenyReason::NotAllowed),
        &mut a,
    )
    .await;
    a.send(b.node_id(), b"allowed").await;
    assert_eq!(b.recv().await.0, a.node_id());
    assert_eq!(server.num_clients(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn allowlist_plain() {
    timed(allowlist(Mode::Plain)).await;
}

#[tokio::test]
async fn allowlist_tls() {
    timed(allowlist(Mode::Tls)).await;
}

#[tokio::test]
async fn denylist() {
    timed(async {
        let denied = SecretKey::generate();
        let server = spawn(
            Mode::Plain,
            ServerConfig::dev().with_access(AccessControl::Denylist([denied.public()].into())),
        )
        .await;
        let transport = Transport::for_server(&server);
        let mut a = TestClient::connect_new(&transport).await;
        let mut b = TestClient::connect_new(&transport).await;
        assert_denied_and_unreachable(
            &transport,
            denied,
            LoginError::Denied(DenyReason::NotAllowed),
            &mut a,
        )
        .await;
        b.send(a.node_id(), b"not denied").await;
        assert_eq!(a.recv().await.0, b.node_id());
        server.shutdown().await;
    })
    .await;
}

async fn bearer_token(mode: Mode) {
    let server = spawn(mode, ServerConfig::dev().with_bearer_token("correct horse")).await;
    let transport = Transport::for_server(&server);
    let key = SecretKey::generate();
    for headers in [
        "",
        "Authorization: Bearer wrong horse\r\n",
        "Authorization: Bearer correct hors\r\n",
        "Authorization: Basic correct horse\r\n",
    ] {
        let result = TestClient::try_connect(&transport, key.clone(), headers).await;
        assert_eq!(result.err(), Some(LoginError::Http(401)), "{headers:?}");
    }
    let (status, head, _) = http_request(
        &transport,
        "GET",
        "/relay",
        "Connection: Upgrade\r\nUpgrade: iroh-relay-v1\r\n",
    )
    .await;
    assert_eq!(status, 401);
    assert!(header(&head, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")));

    let with_token = "Authorization: Bearer correct horse\r\n";
    let mut a = TestClient::try_connect(&transport, SecretKey::generate(), with_token)
        .await
        .unwrap();
    let mut b = TestClient::try_connect(&transport, SecretKey::generate(), with_token)
        .await
        .unwrap();
    // The refused node cannot be reached either.
    a.send(key.public(), b"x").await;
    assert_eq!(a.next_frame().await, Some(Frame::PeerGone(key.public())));
    a.send(b.node_id(), b"with token").await;
    assert_eq!(b.recv().await.0, a.node_id());
    server.shutdown().await;
}

#[tokio::test]
async fn bearer_token_plain() {
    timed(bearer_token(Mode::Plain)).await;
}

#[tokio::test]
async fn bearer_token_tls() {
    timed(bearer_token(Mode::Tls)).await;
}

#[tokio::test]
async fn max_clients() {
    timed(async {
        let mut limits = Limits::default();
        limits.max_clients = Some(2);
        let server = spawn(Mode::Plain, ServerConfig::dev().with_limits(limits)).await;
        let transport = Transport::for_server(&server);
        let key = SecretKey::generate();
        let _a = TestClient::connect(&transport, key.clone()).await;
        let _b = TestClient::connect_new(&transport).await;
        let refused = TestClient::try_connect(&transport, SecretKey::generate(), "").await;
        assert_eq!(
            refused.err(),
            Some(LoginError::Denied(DenyReason::NotAllowed))
        );
        // A node already connected may replace its connection.
        let _a2 = TestClient::connect(&transport, key).await;
        assert_eq!(server.num_clients(), 2);
        server.shutdown().await;
    })
    .await;
}
