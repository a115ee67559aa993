//! Dials the node of a ticket printed by the `listen` example, or a bare NodeId found through discovery,
//! and exchanges messages with it.
//!
//! Run: `cargo run --example connect -- TICKET [MESSAGE ...]` (messages default to a greeting), or
//! `cargo run --example connect -- NODE_ID --relay-url URL --dns-server IP:PORT` (or `--discovery-url URL`)
//! to dial a node that published its address.
#![allow(clippy::print_stdout)]

#[path = "common.rs"]
mod common;

use std::time::Duration;

use clap::Parser;
use iroh::{Endpoint, NodeAddr, NodeId, NodeTicket, SecretKey};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The protocol shared with the `listen` example.
const ALPN: &[u8] = b"iroh-example/chat/1";

#[derive(Parser, Debug)]
#[command(about = "Dial a listening node by its ticket and send it messages")]
struct Args {
    /// The ticket the `listen` example printed, or its bare NodeId (then discovery finds it).
    target: Target,
    /// Messages to send, one per argument.
    messages: Vec<String>,
    #[command(flatten)]
    relay: common::RelayArgs,
    #[command(flatten)]
    discovery: common::DiscoveryArgs,
}

/// A ticket or a NodeId.
#[derive(Debug, Clone)]
struct Target(NodeAddr);

impl std::str::FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ticket) = s.parse::<NodeTicket>() {
            return Ok(Self(ticket.node_addr().clone()));
        }
        match s.parse::<NodeId>() {
            Ok(node) => Ok(Self(NodeAddr::new(node))),
            Err(_) => anyhow::bail!("neither a ticket nor a node id: {s:?}"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let target = args.target.0;
    // Use the listener's relay unless told otherwise.
    let mut relay = args.relay.clone();
    if relay.relay_url.is_none() {
        relay.relay_url = target.relay_url.clone();
    }
    if target.is_empty() && !args.discovery.is_enabled() {
        anyhow::bail!(
            "a bare node id needs --local-discovery, --dns-server, --dns-origin or --discovery-url to find it"
        );
    }
    let secret_key = SecretKey::generate();
    let builder = Endpoint::builder()
        .secret_key(secret_key.clone())
        .relay_mode(relay.relay_mode()?)
        .insecure_skip_relay_cert_verify(relay.insecure);
    let (builder, _, _) = args.discovery.apply(builder, &secret_key, relay.insecure)?;
    let endpoint = builder.bind().await?;
    let peer = target.node_id;
    let connection = endpoint.connect(target, ALPN).await?;
    println!(
        "connected to {} via {}",
        peer.fmt_short(),
        *endpoint.conn_type(peer).borrow()
    );

    let (mut send, recv) = connection.open_bi().await?;
    let mut replies = BufReader::new(recv).lines();
    let messages = if args.messages.is_empty() {
        vec!["hello from the connect example".to_owned()]
    } else {
        args.messages
    };
    for message in messages {
        send.write_all(format!("{message}\n").as_bytes()).await?;
        match tokio::time::timeout(Duration::from_secs(10), replies.next_line()).await {
            Ok(Ok(Some(reply))) => println!("> {message}\n< {reply}"),
            _ => anyhow::bail!("no reply to {message:?}"),
        }
    }
    send.finish()?;
    println!("path at the end: {}", *endpoint.conn_type(peer).borrow());
    connection.close(0u32.into(), b"bye");
    endpoint.close().await;
    Ok(())
}
