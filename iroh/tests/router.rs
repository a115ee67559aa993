//! The Router on loopback: dispatch by ALPN, handler errors confined to their connection, ALPNs following
//! the handlers, and shutdown waiting for running handlers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use iroh::{
    ConnectError, Connection, Endpoint, RelayMode, quinn,
    router::{HandlerError, ProtocolHandler, Router, RouterError},
};

const ECHO: &[u8] = b"test/echo/1";
const FAIL: &[u8] = b"test/fail/1";
const SLOW: &[u8] = b"test/slow/1";

#[derive(Debug)]
struct Echo;

impl ProtocolHandler for Echo {
    async fn accept(&self, connection: Connection) -> Result<(), HandlerError> {
        while let Ok((mut send, mut recv)) = connection.accept_bi().await {
            let data = recv.read_to_end(1 << 20).await?;
            send.write_all(&data).await?;
            send.finish()?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Fail;

impl ProtocolHandler for Fail {
    async fn accept(&self, _connection: Connection) -> Result<(), HandlerError> {
        Err("this protocol always fails".into())
    }
}

/// Holds its connection for a while, then records that it finished.
#[derive(Debug, Clone)]
struct Slow(Arc<AtomicBool>);

impl ProtocolHandler for Slow {
    async fn accept(&self, connection: Connection) -> Result<(), HandlerError> {
        let _ = connection.accept_uni().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

async fn endpoint() -> Endpoint {
    Endpoint::builder()
        .relay_mode(RelayMode::Disabled)
        .bind()
        .await
        .unwrap()
}

async fn echo_once(client: &Endpoint, router: &Router, msg: &[u8]) -> Vec<u8> {
    let connection = client
        .connect(router.endpoint().node_addr(), ECHO)
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(msg).await.unwrap();
    send.finish().unwrap();
    let answer = recv.read_to_end(1 << 20).await.unwrap();
    connection.close(0u32.into(), b"");
    answer
}

#[tokio::test]
async fn dispatches_by_alpn_and_confines_errors() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let router = Router::builder(endpoint().await)
            .accept(ECHO, Echo)
            .accept(FAIL, Fail)
            .spawn()
            .unwrap();
        assert_eq!(router.alpns().collect::<Vec<_>>(), vec![ECHO, FAIL]);
        let client = endpoint().await;

        // A long-lived echo connection, open while the failing protocol fails.
        let echo = client.connect(router.endpoint().node_addr(), ECHO).await.unwrap();
        assert_eq!(echo.alpn(), ECHO);

        let failing = client.connect(router.endpoint().node_addr(), FAIL).await.unwrap();
        let reason = failing.closed().await;
        assert!(
            matches!(&reason, quinn::ConnectionError::ApplicationClosed(close) if close.error_code == 1u32.into()),
            "{reason:?}"
        );

        // The echo connection is untouched, and new ones work too.
        let (mut send, mut recv) = echo.open_bi().await.unwrap();
        send.write_all(b"still here").await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(1024).await.unwrap(), b"still here");
        assert_eq!(echo_once(&client, &router, b"again").await, b"again");

        // A protocol nobody registered is refused in the handshake.
        let err = client
            .connect(router.endpoint().node_addr(), b"test/unknown/1")
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::AlpnRefused { .. }), "{err:?}");

        client.close().await;
        router.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn shutdown_waits_for_handlers_and_closes_the_endpoint() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let done = Arc::new(AtomicBool::new(false));
        let router = Router::builder(endpoint().await)
            .accept(SLOW, Slow(Arc::clone(&done)))
            .spawn()
            .unwrap();
        let client = endpoint().await;
        let connection = client
            .connect(router.endpoint().node_addr(), SLOW)
            .await
            .unwrap();
        let mut send = connection.open_uni().await.unwrap();
        send.write_all(b"x").await.unwrap();
        send.finish().unwrap();
        // Give the handler time to start.
        tokio::time::sleep(Duration::from_millis(50)).await;

        router.shutdown().await;
        assert!(
            done.load(Ordering::SeqCst),
            "shutdown returned before the handler finished"
        );
        assert!(router.is_shutdown());
        assert!(router.endpoint().is_closed());
        client.close().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_router_needs_a_handler() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let err = Router::builder(endpoint().await).spawn().unwrap_err();
        assert!(matches!(err, RouterError::NoHandlers));
    })
    .await
    .unwrap();
}
