//! NAT-PMP and PCP messages from arbitrary bytes: reading never panics, what reads re-encodes to what
//! reads back the same, and the port-mapping client fed them as the gateway's answers (in each phase
//! it can be in) keeps running and sends only requests that read back.
#![no_main]

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use iroh_net::portmap::{
    client::{Config, Gateway, MapperCore},
    natpmp, pcp,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = natpmp::Response::parse(data) {
        assert_eq!(natpmp::Response::parse(&r.to_vec()), Ok(r));
    }
    if let Ok(r) = natpmp::Request::parse(data) {
        assert_eq!(natpmp::Request::parse(&r.to_vec()), Ok(r));
    }
    if let Ok(r) = pcp::Response::parse(data) {
        assert_eq!(pcp::Response::parse(&r.to_vec()), Ok(r));
    }
    if let Ok(r) = pcp::Request::parse(data) {
        assert_eq!(pcp::Request::parse(&r.to_vec()), Ok(r));
    }
    let now = Instant::now();
    let gateway = Gateway {
        ip: Ipv4Addr::new(10, 0, 0, 1),
        local_ip: Ipv4Addr::new(10, 0, 0, 2),
    };
    let from = SocketAddr::new(gateway.ip.into(), 5351);
    let mut core = MapperCore::new(Config::new(4000), 1);
    core.set_gateway(now, Some(gateway));
    for step in 0..4u64 {
        let at = now + Duration::from_secs(step * 100);
        core.handle_packet(at, from, data);
        core.handle_timeout(at);
        while let Some(transmit) = core.poll_transmit() {
            let p = &transmit.payload;
            assert!(natpmp::Request::parse(p).is_ok() || pcp::Request::parse(p).is_ok());
        }
        while core.poll_event().is_some() {}
    }
    core.shutdown(now + Duration::from_secs(500));
});
