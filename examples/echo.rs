//! A protocol served through the `Router`: an echo server and a client in one process.
//!
//! Run: `cargo run --example echo -- [MESSAGE]`.
#![allow(clippy::print_stdout)]

use clap::Parser;
use iroh::{
    Connection, Endpoint, RelayMode,
    router::{HandlerError, ProtocolHandler, Router},
};

/// The echo protocol's ALPN.
const ALPN: &[u8] = b"iroh-example/echo/1";

/// Sends back whatever arrives on each bidirectional stream.
#[derive(Debug, Clone)]
struct Echo;

impl ProtocolHandler for Echo {
    async fn accept(&self, connection: Connection) -> Result<(), HandlerError> {
        println!(
            "echo: connection from {}",
            connection.remote_node_id().fmt_short()
        );
        // Serve streams until the peer closes the connection.
        while let Ok((mut send, mut recv)) = connection.accept_bi().await {
            let copied = tokio::io::copy(&mut recv, &mut send).await?;
            send.finish()?;
            println!("echo: returned {copied} bytes");
        }
        Ok(())
    }
}

#[derive(Parser, Debug)]
#[command(about = "Serve an echo protocol through a Router and call it")]
struct Args {
    /// What to send.
    #[arg(default_value = "hello, echo")]
    message: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();

    // The server: an endpoint whose ALPNs the router sets from its handlers.
    let server = Endpoint::builder()
        .relay_mode(RelayMode::Disabled)
        .bind()
        .await?;
    let router = Router::builder(server).accept(ALPN, Echo).spawn()?;

    // The client dials the server's address (its NodeId and local addresses).
    let client = Endpoint::builder()
        .relay_mode(RelayMode::Disabled)
        .bind()
        .await?;
    let connection = client.connect(router.endpoint().node_addr(), ALPN).await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(args.message.as_bytes()).await?;
    send.finish()?;
    let answer = recv.read_to_end(64 * 1024).await?;
    println!(
        "client: sent {:?}, got back {:?}",
        args.message,
        String::from_utf8_lossy(&answer)
    );
    anyhow::ensure!(answer == args.message.as_bytes(), "the echo differs");

    connection.close(0u32.into(), b"done");
    client.close().await;
    router.shutdown().await;
    Ok(())
}
