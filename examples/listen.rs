//! Waits for connections and prints a ticket to dial it with; answers every message it gets.
//!
//! Run: `cargo run --example listen -- [--relay-url URL]`, then the printed
//! `cargo run --example connect -- TICKET` in another terminal (or on another machine).
//!
//! With `--discovery-url URL` it also publishes its address there, so that it can be dialled by its
//! NodeId alone: `cargo run --example connect -- NODE_ID --dns-server IP:PORT` (see the README's
//! walkthrough with `iroh-relay --dev`).
#![allow(clippy::print_stdout)]

#[path = "common.rs"]
mod common;

use clap::Parser;
use iroh::{Endpoint, NodeTicket, SecretKey};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The protocol shared with the `connect` example: newline-separated messages, each answered.
const ALPN: &[u8] = b"iroh-example/chat/1";

#[derive(Parser, Debug)]
#[command(about = "Listen for connections and answer messages")]
struct Args {
    #[command(flatten)]
    relay: common::RelayArgs,
    #[command(flatten)]
    discovery: common::DiscoveryArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let secret_key = SecretKey::generate();
    let builder = Endpoint::builder()
        .secret_key(secret_key.clone())
        .alpns(vec![ALPN.to_vec()])
        .relay_mode(args.relay.relay_mode()?)
        .insecure_skip_relay_cert_verify(args.relay.insecure);
    let (builder, published, local) =
        args.discovery
            .apply(builder, &secret_key, args.relay.insecure)?;
    let endpoint = builder.bind().await?;
    if args.relay.relay_url.is_some() {
        // Wait until the relay knows us, so the ticket's relay works right away.
        endpoint.home_relay().wait_for(Option::is_some).await?;
    }
    if let Some(status) = &published {
        let relay = args.relay.relay_url.is_some();
        common::wait_published(status, relay, std::time::Duration::from_secs(10)).await?;
    }
    let ticket = NodeTicket::new(endpoint.node_addr());
    println!("listening as {}", endpoint.node_id());
    println!("dial with: cargo run --example connect -- {ticket}");
    if let Some(url) = &args.discovery.discovery_url {
        println!("published to {url}; or dial by node id alone, for example:");
        println!(
            "  cargo run --example connect -- {} --relay-url URL --dns-server 127.0.0.1:5300",
            endpoint.node_id()
        );
    }

    if let Some(local) = local {
        println!("looking for nodes on the local network; dial with:");
        println!(
            "  cargo run --example connect -- {} --local-discovery",
            endpoint.node_id()
        );
        let mut events = local.subscribe();
        tokio::spawn(async move {
            use iroh::discovery::mdns::MdnsEvent;
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        println!("missed {missed} local discovery events");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                match event {
                    MdnsEvent::Discovered(addr) => {
                        let addrs: Vec<String> = addr
                            .direct_addresses
                            .iter()
                            .map(ToString::to_string)
                            .collect();
                        println!("local peer found: {} at {}", addr.node_id, addrs.join(", "));
                    }
                    MdnsEvent::Expired(node) => println!("local peer gone: {node}"),
                    _ => {}
                }
            }
        });
    }

    while let Some(incoming) = endpoint.accept().await {
        let connection = match incoming.await {
            Ok(connection) => connection,
            Err(err) => {
                println!("a connection failed: {err}");
                continue;
            }
        };
        let peer = connection.remote_node_id();
        println!("{} connected", peer.fmt_short());
        tokio::spawn(async move {
            let Ok((mut send, recv)) = connection.accept_bi().await else {
                return;
            };
            let mut lines = BufReader::new(recv).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("{}: {line}", peer.fmt_short());
                let reply = format!("got {} bytes\n", line.len());
                if send.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
            println!("{} left", peer.fmt_short());
        });
    }
    Ok(())
}
