//! Dials the node of a ticket printed by the `listen` example and exchanges messages with it.
//!
//! Run: `cargo run --example connect -- TICKET [MESSAGE ...]` (messages default to a greeting).
#![allow(clippy::print_stdout)]

#[path = "common.rs"]
mod common;

use std::time::Duration;

use clap::Parser;
use iroh::{Endpoint, NodeTicket};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The protocol shared with the `listen` example.
const ALPN: &[u8] = b"iroh-example/chat/1";

#[derive(Parser, Debug)]
#[command(about = "Dial a listening node by its ticket and send it messages")]
struct Args {
    /// The ticket the `listen` example printed.
    ticket: NodeTicket,
    /// Messages to send, one per argument.
    messages: Vec<String>,
    #[command(flatten)]
    relay: common::RelayArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    // Use the listener's relay unless told otherwise.
    let mut relay = args.relay.clone();
    if relay.relay_url.is_none() {
        relay.relay_url = args.ticket.node_addr().relay_url.clone();
    }
    let endpoint = Endpoint::builder()
        .relay_mode(relay.relay_mode()?)
        .insecure_skip_relay_cert_verify(relay.insecure)
        .bind()
        .await?;
    let peer = args.ticket.node_id();
    let connection = endpoint
        .connect(args.ticket.node_addr().clone(), ALPN)
        .await?;
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
