//! mDNS packets from arbitrary bytes: reading never panics, and the state machine fed them (as a query
//! from the mDNS port, a legacy query and a response) keeps running and only answers with packets that
//! read back.
#![no_main]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use iroh_base::SecretKey;
use iroh_net::mdns::{Config, Interface, MdnsCore, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wire::parse(data);
    let now = Instant::now();
    let node = SecretKey::from_bytes(&[7; 32]).public();
    let config = Config {
        port: 5353,
        max_peers: 16,
        advertise: true,
    };
    let mut core = MdnsCore::new(node, config, 1);
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    core.set_interfaces(
        now,
        vec![Interface {
            index: 2,
            addrs: vec![(ip, 24)],
        }],
    );
    core.publish(None, &[SocketAddr::new(ip, 4000)]);
    let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    core.handle_packet(now, SocketAddr::new(peer, 5353), data);
    core.handle_packet(now, SocketAddr::new(peer, 40000), data);
    core.handle_timeout(now + Duration::from_secs(2));
    while let Some(transmit) = core.poll_transmit() {
        assert!(wire::parse(&transmit.payload).is_ok());
    }
    while core.poll_event().is_some() {}
});
