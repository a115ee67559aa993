//! Network changes on the real host: a new interface (one end of a veth pair; this kernel kind has no
//! `dummy` driver) gets an address while an endpoint runs, and the endpoint publishes it as a direct
//! address; the interface goes, and so does the address.
//!
//! Needs root and iproute2 (`ip`), as CI has (`cargo xtask ci` installs iproute2 and runs as root). Without
//! them the test fails, naming what is missing, rather than passing without having run.
#![cfg(feature = "quic")]
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    time::Duration,
};

use iroh_net::endpoint::Endpoint;
use tokio::sync::watch;

/// A veth pair, `name` carrying `ip`, both ends up (a veth end is running only while its peer is up); it
/// exists until dropped.
struct VethLink {
    name: String,
}

impl VethLink {
    fn add(name: &str, ip: Ipv4Addr) -> Self {
        let peer = format!("{name}p");
        ip_cmd(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
        let link = Self {
            name: name.to_owned(),
        };
        ip_cmd(&["addr", "add", &format!("{ip}/32"), "dev", name]);
        ip_cmd(&["link", "set", &peer, "up"]);
        ip_cmd(&["link", "set", name, "up"]);
        link
    }
}

impl Drop for VethLink {
    fn drop(&mut self) {
        Command::new("ip")
            .args(["link", "del", &self.name])
            .status()
            .ok();
    }
}

fn ip_cmd(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("this test needs iproute2's `ip` (cargo xtask ci installs it): {e}")
    });
    assert!(
        out.status.success(),
        "`ip {}` failed (this test needs root, as CI runs): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn wait_for_addrs(
    watcher: &mut watch::Receiver<BTreeSet<SocketAddr>>,
    what: &str,
    pred: impl Fn(&BTreeSet<SocketAddr>) -> bool,
) {
    let seen = tokio::time::timeout(
        Duration::from_secs(10),
        watcher.wait_for(|addrs| pred(addrs)),
    )
    .await
    .is_ok_and(|changed| changed.is_ok());
    assert!(seen, "{what}: not within 10 s: {:?}", *watcher.borrow());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interface_address_that_comes_and_goes_is_published_and_withdrawn() {
    tokio::time::timeout(Duration::from_secs(60), async {
        // Per process, so that concurrent runs do not collide: 10.254.x.y, an interface name <= 15 chars.
        let pid = std::process::id();
        let [_, _, hi, lo] = pid.to_be_bytes();
        let ip = Ipv4Addr::new(10, 254, hi, lo);
        let name = format!("irn{}", pid % 10_000_000);
        let endpoint = Endpoint::builder().bind().await.unwrap();
        let port = endpoint
            .node_addr()
            .direct_addresses
            .iter()
            .next()
            .unwrap()
            .port();
        let new_addr = SocketAddr::new(IpAddr::V4(ip), port);
        let mut addrs = endpoint.direct_addresses();
        assert!(!addrs.borrow().contains(&new_addr));

        let link = VethLink::add(&name, ip);
        wait_for_addrs(&mut addrs, "the new address published", |a| {
            a.contains(&new_addr)
        })
        .await;
        drop(link);
        wait_for_addrs(&mut addrs, "the address withdrawn", |a| {
            !a.contains(&new_addr)
        })
        .await;
        endpoint.close().await;
    })
    .await
    .unwrap();
}
