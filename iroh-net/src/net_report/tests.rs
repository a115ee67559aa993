//! Net report under a virtual clock (fake STUN servers, no sockets, no sleeps), plus one test over real
//! loopback sockets in [`udp`].

mod sim;
mod udp;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use iroh_stun::{Message, TransactionId};

use self::sim::{FakeServer, Sim, answer};
use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn url(name: &str) -> RelayUrl {
    format!("https://{name}.relay.test").parse().unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn target(name: &str, addrs: &[SocketAddr]) -> ProbeTarget {
    ProbeTarget {
        url: url(name),
        stun_addrs: addrs.to_vec(),
    }
}

const PUBLIC_V4: &str = "192.0.2.77:4000";
const PUBLIC_V6: &str = "[2001:db8::77]:4000";

/// Takes the startup `ReportDue`, which every reporter begins with.
fn started_sim(config: NetReportConfig) -> Sim {
    let mut sim = Sim::new(config);
    sim.drain();
    assert_eq!(
        sim.dues(),
        vec![(Duration::ZERO, ReportReason::Startup)],
        "first report due at once"
    );
    sim
}

#[test]
fn full_report_with_two_relays() {
    let mut sim = started_sim(NetReportConfig::default());
    let a4 = sim.server("198.51.100.1:3478", FakeServer::new(20, PUBLIC_V4));
    let a6 = sim.server("[2001:db8::1]:3478", FakeServer::new(25, PUBLIC_V6));
    let b4 = sim.server("203.0.113.1:3478", FakeServer::new(50, PUBLIC_V4));
    sim.start(vec![target("a", &[a4, a6]), target("b", &[b4])]);
    assert!(sim.r.is_running());
    assert_eq!(sim.sent.len(), 3, "one request per STUN address, at once");

    let report = sim.next_report(Duration::from_secs(5));
    // Complete as soon as the slowest server answered: every probe is done, every relay has a latency.
    assert_eq!(sim.elapsed(), ms(50));
    assert_eq!(report.captured_at - sim.start, ms(50));
    assert_eq!(report.reason, ReportReason::Startup);
    assert_eq!(report.global_v4, Some(addr(PUBLIC_V4)));
    assert_eq!(report.global_v6, Some(addr(PUBLIC_V6)));
    assert_eq!(report.mapping_varies_by_dest_v4, Some(false));
    assert_eq!(
        report.mapping_varies_by_dest_v6, None,
        "only one IPv6 server"
    );
    assert!(report.udp_works_v4 && report.udp_works_v6);
    assert_eq!(
        report.relay_latency,
        BTreeMap::from([(url("a"), ms(20)), (url("b"), ms(50))])
    );
    assert_eq!(report.preferred_relay, Some(url("a")));
    assert_eq!(sim.r.home_relay(), Some(&url("a")));
    assert_eq!(sim.r.last_report(), Some(&report));
    assert_eq!(sim.sent.len(), 3, "no retransmissions");
    assert!(!sim.r.is_running());
}

#[test]
fn preferred_relay_follows_latency_with_hysteresis() {
    let mut sim = started_sim(NetReportConfig::default());
    let a = sim.server("198.51.100.1:3478", FakeServer::new(30, PUBLIC_V4));
    let b = sim.server("203.0.113.1:3478", FakeServer::new(40, PUBLIC_V4));
    let targets = vec![target("a", &[a]), target("b", &[b])];
    sim.start(targets.clone());
    assert_eq!(sim.next_report(ms(100)).preferred_relay, Some(url("a")));

    // b gets faster than a, but not clearly (35 ms is not below 2/3 of 45 ms): a stays home.
    sim.servers.get_mut(&a).unwrap().rtt = ms(45);
    sim.servers.get_mut(&b).unwrap().rtt = ms(35);
    sim.start(targets.clone());
    let report = sim.next_report(ms(100));
    assert_eq!(report.relay_latency[&url("b")], ms(35));
    assert_eq!(report.preferred_relay, Some(url("a")));

    // Now clearly better (35 ms < 2/3 of 90 ms): b becomes home.
    sim.servers.get_mut(&a).unwrap().rtt = ms(90);
    sim.start(targets.clone());
    assert_eq!(sim.next_report(ms(200)).preferred_relay, Some(url("b")));
    assert_eq!(sim.r.home_relay(), Some(&url("b")));

    // The hysteresis protects the new home too.
    sim.servers.get_mut(&a).unwrap().rtt = ms(30);
    sim.start(targets);
    assert_eq!(sim.next_report(ms(200)).preferred_relay, Some(url("b")));
}

#[test]
fn choose_preferred_rule() {
    let (a, b, c) = (url("a"), url("b"), url("c"));
    let order = [a.clone(), b.clone(), c.clone()];
    let lat = |pairs: &[(&RelayUrl, u64)]| -> BTreeMap<RelayUrl, Duration> {
        pairs.iter().map(|(u, l)| ((*u).clone(), ms(*l))).collect()
    };
    let none = BTreeSet::new();
    // Lowest latency; ties go to the driver's order, not the URL order.
    let order_cba = [c.clone(), b.clone(), a.clone()];
    assert_eq!(
        choose_preferred(&lat(&[(&a, 10), (&c, 10)]), &order_cba, None, &none),
        Some(c.clone())
    );
    assert_eq!(
        choose_preferred(&lat(&[(&a, 30), (&b, 20)]), &order, None, &none),
        Some(b.clone())
    );
    // Home kept at exactly 2/3 (not strictly below), switched just under it.
    assert_eq!(
        choose_preferred(&lat(&[(&a, 30), (&b, 20)]), &order, Some(&a), &none),
        Some(a.clone())
    );
    assert_eq!(
        choose_preferred(&lat(&[(&a, 30), (&b, 19)]), &order, Some(&a), &none),
        Some(b.clone())
    );
    // A home relay without a latency is no obstacle.
    assert_eq!(
        choose_preferred(&lat(&[(&b, 50)]), &order, Some(&a), &none),
        Some(b.clone())
    );
    // Failed relays only when nothing else answered.
    let failed = BTreeSet::from([a.clone()]);
    assert_eq!(
        choose_preferred(&lat(&[(&a, 5), (&b, 50)]), &order, Some(&a), &failed),
        Some(b.clone())
    );
    assert_eq!(
        choose_preferred(&lat(&[(&a, 5)]), &order, None, &failed),
        Some(a.clone())
    );
    assert_eq!(choose_preferred(&lat(&[]), &order, Some(&a), &none), None);
}

#[test]
fn mapping_varies_by_destination() {
    let mut sim = started_sim(NetReportConfig::default());
    let a = sim.server("198.51.100.1:3478", FakeServer::new(30, "192.0.2.77:4000"));
    let b = sim.server("203.0.113.1:3478", FakeServer::new(10, "192.0.2.77:4001"));
    let c = sim.server("203.0.113.2:3478", FakeServer::new(20, "192.0.2.77:4000"));
    sim.start(vec![
        target("a", &[a]),
        target("b", &[b]),
        target("c", &[c]),
    ]);
    let report = sim.next_report(ms(100));
    assert_eq!(report.mapping_varies_by_dest_v4, Some(true));
    // Two servers saw port 4000, one (the fastest) saw 4001: the majority wins.
    assert_eq!(report.global_v4, Some(addr("192.0.2.77:4000")));

    // Two servers that disagree: the fastest one's answer.
    sim.start(vec![target("a", &[a]), target("b", &[b])]);
    let report = sim.next_report(ms(100));
    assert_eq!(report.mapping_varies_by_dest_v4, Some(true));
    assert_eq!(report.global_v4, Some(addr("192.0.2.77:4001")));

    // One server: no verdict.
    sim.start(vec![target("a", &[a])]);
    let report = sim.next_report(ms(100));
    assert_eq!(report.mapping_varies_by_dest_v4, None);
    assert_eq!(report.global_v4, Some(addr("192.0.2.77:4000")));
}

#[test]
fn one_relay_with_other_address_tells_whether_mapping_varies() {
    // A symmetric NAT: the server's second socket (named by OTHER-ADDRESS, with an unspecified IP meaning
    // the server's own) sees another port. One relay is enough for a verdict.
    let mut sim = started_sim(NetReportConfig::default());
    let primary = sim.server(
        "198.51.100.1:3478",
        FakeServer {
            other: Some(addr("0.0.0.0:3479")),
            ..FakeServer::new(20, "192.0.2.77:4000")
        },
    );
    let alternate = sim.server(
        "198.51.100.1:3479",
        FakeServer {
            // The alternate socket names the primary back: that must not start a third probe.
            other: Some(addr("0.0.0.0:3478")),
            ..FakeServer::new(20, "192.0.2.77:4999")
        },
    );
    sim.start(vec![target("a", &[primary])]);
    let report = sim.next_report(ms(200));
    assert_eq!(report.mapping_varies_by_dest_v4, Some(true));
    assert_eq!(
        sim.sent_to(alternate).len(),
        1,
        "one probe of the alternate"
    );
    assert_eq!(
        sim.sent_to(primary).len(),
        1,
        "the primary is not probed again"
    );

    // An endpoint-independent mapping: both sockets see the same address.
    let mut sim = started_sim(NetReportConfig::default());
    let primary = sim.server(
        "198.51.100.1:3478",
        FakeServer {
            other: Some(addr("198.51.100.2:3478")),
            ..FakeServer::new(20, PUBLIC_V4)
        },
    );
    let alternate = sim.server("198.51.100.2:3478", FakeServer::new(20, PUBLIC_V4));
    sim.start(vec![target("a", &[primary])]);
    let report = sim.next_report(ms(200));
    assert_eq!(report.mapping_varies_by_dest_v4, Some(false));
    assert_eq!(report.global_v4, Some(addr(PUBLIC_V4)));
    assert_eq!(sim.sent_to(alternate).len(), 1);

    // An alternate of the other family, or one that never answers, gives no verdict (and the report still
    // completes within its budget).
    let mut sim = started_sim(NetReportConfig::default());
    let primary = sim.server(
        "198.51.100.1:3478",
        FakeServer {
            other: Some(addr("[2001:db8::1]:3479")),
            ..FakeServer::new(20, PUBLIC_V4)
        },
    );
    sim.start(vec![target("a", &[primary])]);
    let report = sim.next_report(ms(200));
    assert_eq!(report.mapping_varies_by_dest_v4, None);
    assert_eq!(sim.sent.len(), 1);
    let mut sim = started_sim(NetReportConfig::default());
    let primary = sim.server(
        "198.51.100.1:3478",
        FakeServer {
            other: Some(addr("0.0.0.0:3479")),
            ..FakeServer::new(20, PUBLIC_V4)
        },
    );
    sim.start(vec![target("a", &[primary])]);
    let report = sim.next_report(ms(10_000));
    assert_eq!(report.mapping_varies_by_dest_v4, None);
    assert_eq!(report.global_v4, Some(addr(PUBLIC_V4)));
    // A firewalled alternate holds the report for 250 ms and two round trips, not for its whole budget.
    let (at, _) = sim.reports()[0].clone();
    assert!(at <= ms(20 + 250 + 40 + 1), "report at {at:?}");
}

#[test]
fn silent_stun_relay_measured_by_relay_ping() {
    let mut sim = started_sim(NetReportConfig::default());
    let a = sim.server("198.51.100.1:3478", FakeServer::new(60, PUBLIC_V4));
    let b = sim.server("[2001:db8::2]:3478", FakeServer::silent());
    sim.start(vec![target("a", &[a]), target("b", &[b])]);
    // The driver's relay ping to b comes back.
    sim.run_for(ms(10));
    sim.r.handle_relay_latency(sim.now, &url("b"), ms(20));
    sim.drain();
    let report = sim.next_report(Duration::from_secs(5));
    // b's probe gives up after its last request and wait (1500 + 10 x 100 ms), within the 3 s budget.
    assert_eq!(sim.elapsed(), ms(2500));
    assert!(report.udp_works_v4);
    assert!(!report.udp_works_v6, "b's STUN never answered");
    assert_eq!(report.global_v6, None);
    assert_eq!(
        report.relay_latency,
        BTreeMap::from([(url("a"), ms(60)), (url("b"), ms(20))])
    );
    assert_eq!(
        report.preferred_relay,
        Some(url("b")),
        "from relay pings alone"
    );
}

#[test]
fn report_completes_at_budget() {
    let mut sim = started_sim(NetReportConfig::default());
    let a = sim.server("198.51.100.1:3478", FakeServer::new(40, PUBLIC_V4));
    let b = sim.server("203.0.113.1:3478", FakeServer::silent());
    // c has no STUN and no relay ping ever comes: the report waits for it until the budget.
    sim.start(vec![
        target("a", &[a]),
        target("b", &[b]),
        ProbeTarget::unresolved(url("c")),
    ]);
    let report = sim.next_report(Duration::from_secs(5));
    assert_eq!(sim.elapsed(), Duration::from_secs(3));
    assert_eq!(report.captured_at - sim.start, Duration::from_secs(3));
    assert_eq!(
        report.relay_latency,
        BTreeMap::from([(url("a"), ms(40))]),
        "partial results"
    );
    assert_eq!(report.preferred_relay, Some(url("a")));
    assert_eq!(report.global_v4, Some(addr(PUBLIC_V4)));
    // The next report is scheduled 20 s (minus jitter) after this one started.
    let next = sim.r.poll_timeout().unwrap() - sim.start;
    assert!((ms(18_000)..=ms(20_000)).contains(&next), "{next:?}");
}

#[test]
fn retransmissions_within_budget() {
    let mut sim = started_sim(NetReportConfig::default());
    let lossy = sim.server(
        "198.51.100.1:3478",
        FakeServer {
            drop_first: 2,
            ..FakeServer::new(20, PUBLIC_V4)
        },
    );
    let silent = sim.server("203.0.113.1:3478", FakeServer::silent());
    sim.start(vec![target("a", &[lossy]), target("b", &[silent])]);
    let report = sim.next_report(Duration::from_secs(5));
    // RTO 100 ms doubling: requests at 0, 100, 300 ms; the third is answered at 320 ms. After
    // retransmissions the RTT is measured from the first request (an upper bound).
    assert_eq!(sim.sent_to(lossy), vec![ms(0), ms(100), ms(300)]);
    assert_eq!(report.relay_latency[&url("a")], ms(320));
    // The silent server gets all five requests, the last at 1.5 s, well within the 3 s budget.
    assert_eq!(
        sim.sent_to(silent),
        vec![ms(0), ms(100), ms(300), ms(700), ms(1500)]
    );
    // Nothing more is sent after the report.
    let sent = sim.sent.len();
    sim.run_for(Duration::from_secs(10));
    assert_eq!(sim.sent.len(), sent);
}

#[test]
fn periodic_reports_keep_mappings_fresh() {
    let mut sim = Sim::new(NetReportConfig::default());
    let a = sim.server("198.51.100.1:3478", FakeServer::new(20, PUBLIC_V4));
    let b = sim.server("203.0.113.1:3478", FakeServer::silent());
    sim.auto_targets = Some(vec![target("a", &[a]), target("b", &[b])]);
    sim.run_for(Duration::from_secs(120));
    let dues = sim.dues();
    assert_eq!(dues[0], (Duration::ZERO, ReportReason::Startup));
    assert!(dues[1..].iter().all(|(_, r)| *r == ReportReason::Periodic));
    // Every report starts 18 to 20 s after the previous one (20 s minus jitter), even though each one waits
    // 2.5 s for the silent server.
    for pair in dues.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            (ms(18_000)..=ms(20_000)).contains(&gap),
            "gap {gap:?} in {dues:?}"
        );
    }
    assert!(dues.len() >= 6, "{dues:?}");
    let reports = sim.reports();
    assert!(reports.len() >= 6);
    assert!(
        reports
            .iter()
            .all(|(_, r)| r.global_v4 == Some(addr(PUBLIC_V4)))
    );
    // Requests to each server never pause for 25 s.
    for server in [a, b] {
        let times = sim.sent_to(server);
        assert!(times.windows(2).all(|w| w[1] - w[0] <= ms(25_000)));
    }
    // The jitter is seeded: another reporter with the same seed schedules identically.
    let mut again = Sim::new(NetReportConfig::default());
    again.servers = sim.servers.clone();
    again.auto_targets = sim.auto_targets.clone();
    again.run_for(Duration::from_secs(120));
    assert_eq!(again.dues(), dues);
}

#[test]
fn on_demand_reports() {
    let mut sim = started_sim(NetReportConfig::default());
    let a = sim.server("198.51.100.1:3478", FakeServer::new(20, PUBLIC_V4));
    let targets = vec![target("a", &[a])];
    sim.start(targets.clone());
    sim.next_report(ms(100));
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.r.wants_report(), None);

    // The network changed: a report is due at once, and asking again does not queue another.
    sim.r.request_report(sim.now, ReportReason::NetworkChanged);
    sim.r.request_report(sim.now, ReportReason::Other("again"));
    sim.drain();
    assert_eq!(sim.r.wants_report(), Some(&ReportReason::NetworkChanged));
    assert_eq!(sim.r.poll_timeout(), None, "waiting for the driver");
    let dues = sim.dues();
    assert_eq!(dues.len(), 2);
    assert_eq!(
        dues[1],
        (sim.elapsed(), ReportReason::NetworkChanged),
        "due at once"
    );
    sim.start(targets.clone());
    assert_eq!(
        sim.next_report(ms(100)).reason,
        ReportReason::NetworkChanged
    );

    // A request during a report is queued and becomes due when the report ends.
    sim.run_for(Duration::from_secs(1));
    sim.start(targets.clone());
    sim.r
        .request_report(sim.now, ReportReason::RelayFailed(url("a")));
    sim.r
        .request_report(sim.now, ReportReason::Other("ignored"));
    sim.drain();
    assert_eq!(sim.dues().len(), 2, "queued, not due yet");
    assert!(sim.r.is_running());
    sim.next_report(ms(100));
    sim.drain();
    let dues = sim.dues();
    assert_eq!(dues.len(), 3, "only one of the two requests");
    assert_eq!(
        dues[2],
        (sim.elapsed(), ReportReason::RelayFailed(url("a")))
    );
    assert_eq!(
        sim.r.wants_report(),
        Some(&ReportReason::RelayFailed(url("a")))
    );
}

#[test]
fn failed_home_relay_is_replaced() {
    let mut sim = started_sim(NetReportConfig::default());
    let a = sim.server("198.51.100.1:3478", FakeServer::new(10, PUBLIC_V4));
    let b = sim.server("203.0.113.1:3478", FakeServer::new(40, PUBLIC_V4));
    let targets = vec![target("a", &[a]), target("b", &[b])];
    sim.start(targets.clone());
    assert_eq!(sim.next_report(ms(100)).preferred_relay, Some(url("a")));

    // a's relay connection fails, though its STUN still answers fast: b becomes home.
    sim.r
        .request_report(sim.now, ReportReason::RelayFailed(url("a")));
    sim.start(targets.clone());
    let report = sim.next_report(ms(100));
    assert_eq!(report.relay_latency[&url("a")], ms(10));
    assert_eq!(report.preferred_relay, Some(url("b")));

    // a answers a relay ping again: it is a candidate again, and clearly better than b.
    sim.r.handle_relay_latency(sim.now, &url("a"), ms(12));
    sim.start(targets);
    assert_eq!(sim.next_report(ms(100)).preferred_relay, Some(url("a")));
}

#[test]
fn relay_pings_count_while_recent() {
    let config = NetReportConfig::default();
    let mut sim = started_sim(config);
    let a = sim.server("198.51.100.1:3478", FakeServer::new(50, PUBLIC_V4));
    // A ping measured before the report counts, and beats the STUN round trip.
    sim.r.handle_relay_latency(sim.now, &url("a"), ms(30));
    sim.start(vec![target("a", &[a]), ProbeTarget::unresolved(url("b"))]);
    sim.r.handle_relay_latency(sim.now, &url("b"), ms(70));
    sim.drain();
    let report = sim.next_report(ms(100));
    assert_eq!(
        sim.elapsed(),
        ms(50),
        "every relay had a latency once a answered"
    );
    assert_eq!(
        report.relay_latency,
        BTreeMap::from([(url("a"), ms(30)), (url("b"), ms(70))])
    );
    // Past the maximum age, it no longer counts.
    sim.run_for(config.relay_latency_max_age + ms(1));
    sim.start(vec![target("a", &[a])]);
    assert_eq!(sim.next_report(ms(100)).relay_latency[&url("a")], ms(50));
    // A network change forgets samples at once.
    sim.r.handle_relay_latency(sim.now, &url("a"), ms(5));
    sim.r.request_report(sim.now, ReportReason::NetworkChanged);
    sim.start(vec![target("a", &[a])]);
    assert_eq!(sim.next_report(ms(100)).relay_latency[&url("a")], ms(50));
}

#[test]
fn foreign_stun_not_consumed() {
    let mut r = NetReporter::new(NetReportConfig::default(), 1);
    let now = Instant::now();
    let server = addr("198.51.100.1:3478");
    r.start_report(now, vec![target("a", &[server])]);
    let request = r.poll_transmit().unwrap();
    let ours = answer(&request.contents, addr(PUBLIC_V4));

    // Not STUN at all (a QUIC or disco packet).
    assert!(!r.handle_stun(now, server, &[0xC0; 40]));
    assert!(!r.handle_stun(now, server, &[]));
    // A response to somebody else's transaction.
    let other = Message::binding_success(TransactionId::from([9; 12]), addr(PUBLIC_V4)).to_bytes();
    assert!(!r.handle_stun(now, server, &other));
    // Our transaction id, but from another address.
    assert!(!r.handle_stun(now, addr("203.0.113.9:3478"), &ours));
    // A request to us (someone probing our socket) is not ours either.
    let request_to_us = Message::binding_request(TransactionId::from([3; 12])).to_bytes();
    assert!(!r.handle_stun(now, server, &request_to_us));
    assert!(
        r.poll_event()
            .is_some_and(|e| matches!(e, NetReportEvent::ReportDue(_)))
    );
    assert_eq!(r.poll_event(), None, "nothing changed");

    // The real answer is consumed and completes the report.
    assert!(r.handle_stun(now + ms(5), server, &ours));
    assert!(matches!(
        r.poll_event(),
        Some(NetReportEvent::ReportReady(_))
    ));
    // Late duplicates of it are absorbed, without another report.
    assert!(r.handle_stun(now + ms(6), server, &ours));
    assert_eq!(r.poll_event(), None);
    // Still not from another address.
    assert!(!r.handle_stun(now + ms(6), addr("203.0.113.9:3478"), &ours));
}

#[test]
fn malformed_stun_ignored() {
    let mut sim = started_sim(NetReportConfig::default());
    let server = sim.server("198.51.100.1:3478", FakeServer::new(40, PUBLIC_V4));
    sim.start(vec![target("a", &[server])]);
    let request = sim.sent[0].contents.clone();
    let good = answer(&request, addr("192.0.2.66:6666"));

    // Our transaction id with a broken FINGERPRINT: taken (nobody else wants it) but ignored.
    let mut bad_fingerprint = good.clone();
    let last = bad_fingerprint.len() - 1;
    bad_fingerprint[last] ^= 0xFF;
    // Our transaction id with an attribute running past the end of the message.
    let mut bad_attr = good.clone();
    bad_attr[22..24].copy_from_slice(&500u16.to_be_bytes());
    // A header claiming more bytes than there are: not even STUN.
    let mut truncated = good;
    truncated.truncate(24);
    sim.run_for(ms(10));
    assert!(sim.r.handle_stun(sim.now, server, &bad_fingerprint));
    assert!(sim.r.handle_stun(sim.now, server, &bad_attr));
    assert!(!sim.r.handle_stun(sim.now, server, &truncated));
    sim.drain();
    assert!(sim.reports().is_empty());

    // The real response still completes the report, with the real address.
    let report = sim.next_report(ms(100));
    assert_eq!(sim.elapsed(), ms(40));
    assert_eq!(report.global_v4, Some(addr(PUBLIC_V4)));
}

#[test]
fn error_response_means_udp_works() {
    let mut r = NetReporter::new(NetReportConfig::default(), 1);
    let now = Instant::now();
    let server = addr("198.51.100.1:3478");
    r.start_report(now, vec![target("a", &[server])]);
    let request = Message::parse(&r.poll_transmit().unwrap().contents).unwrap();
    let error = Message::binding_error(request.transaction_id(), 500, "Server Error")
        .unwrap()
        .to_bytes();
    assert!(r.handle_stun(now + ms(5), server, &error));
    // No latency for a: the report waits for a relay ping until the budget.
    r.handle_timeout(now + Duration::from_secs(3));
    let report = std::iter::from_fn(|| r.poll_event())
        .find_map(|e| match e {
            NetReportEvent::ReportReady(report) => Some(report),
            NetReportEvent::ReportDue(_) => None,
        })
        .unwrap();
    assert!(report.udp_works_v4);
    assert_eq!(report.global_v4, None);
    assert!(report.relay_latency.is_empty());
    assert_eq!(report.preferred_relay, None);
}

#[test]
fn start_report_without_targets_and_restart() {
    let mut r = NetReporter::new(NetReportConfig::default(), 1);
    let now = Instant::now();
    let _ = r.poll_event();
    // Nothing to probe: an empty report at once.
    r.start_report(now, Vec::new());
    let Some(NetReportEvent::ReportReady(report)) = r.poll_event() else {
        panic!("empty report expected");
    };
    assert!(!report.udp_works() && report.relay_latency.is_empty());
    // Starting while one runs abandons the running one.
    let server = addr("198.51.100.1:3478");
    r.start_report(now, vec![target("a", &[server])]);
    let first = r.poll_transmit().unwrap();
    r.start_report(now, vec![target("a", &[server])]);
    let second = r.poll_transmit().unwrap();
    assert_ne!(first.contents, second.contents, "fresh transaction ids");
    // The abandoned transaction's late answer is absorbed and changes nothing.
    assert!(r.handle_stun(now, server, &answer(&first.contents, addr(PUBLIC_V4))));
    assert_eq!(r.poll_event(), None);
    assert!(r.handle_stun(now, server, &answer(&second.contents, addr(PUBLIC_V4))));
    assert!(matches!(
        r.poll_event(),
        Some(NetReportEvent::ReportReady(_))
    ));
}

#[test]
fn relay_map() {
    assert_eq!(RelayMap::new(Vec::new()), Err(RelayMapError::Empty));
    let a = RelayNode::new(url("a"));
    assert_eq!(a.stun_port, Some(3478));
    let b = RelayNode::without_stun(url("b"));
    assert_eq!(
        RelayMap::new(vec![a.clone(), b.clone(), a.clone()]),
        Err(RelayMapError::Duplicate(url("a")))
    );
    let map = RelayMap::new(vec![b.clone(), a.clone()]).unwrap();
    assert_eq!(
        map.urls().cloned().collect::<Vec<_>>(),
        vec![url("b"), url("a")]
    );
    assert_eq!(map.get(&url("a")), Some(&a));
    assert!(!map.contains(&url("c")));
    assert_eq!(RelayMap::from_node(a.clone()).nodes(), &[a.clone()][..]);

    let ips: Vec<IpAddr> = vec![
        "198.51.100.1".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
        "198.51.100.1".parse().unwrap(),
    ];
    assert_eq!(
        RelayNode::with_stun_port(url("a"), 3479).probe_target(&ips),
        target(
            "a",
            &[addr("198.51.100.1:3479"), addr("[2001:db8::1]:3479")]
        )
    );
    assert_eq!(b.probe_target(&ips), ProbeTarget::unresolved(url("b")));
}

#[test]
fn addrs_policy() {
    let ips: Vec<IpAddr> = [
        "::1",
        "fe80::1",
        "2001:db8::5",
        "127.0.0.1",
        "0.0.0.0",
        "192.0.2.2",
        "224.0.0.1",
        "10.0.0.3",
        "::ffff:10.0.0.3",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    // Loopback left out when there is more; link-local IPv6, unspecified and multicast always; IPv4 first.
    assert_eq!(
        addrs_for_ips(&ips, Some(1000), Some(2000), LoopbackPolicy::WhenAlone),
        vec![
            addr("10.0.0.3:1000"),
            addr("192.0.2.2:1000"),
            addr("[2001:db8::5]:2000")
        ]
    );
    assert_eq!(
        addrs_for_ips(&ips, None, Some(2000), LoopbackPolicy::Always),
        vec![addr("[2001:db8::5]:2000"), addr("[::1]:2000")]
    );
    // Only loopback there: it is used (tests on a machine without network).
    let lo: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    assert_eq!(
        addrs_for_ips(&lo, Some(1000), Some(2000), LoopbackPolicy::WhenAlone),
        vec![addr("127.0.0.1:1000"), addr("[::1]:2000")]
    );
    assert!(addrs_for_ips(&lo, Some(1000), None, LoopbackPolicy::Never).is_empty());
    // Only non-loopback IPv6 but only an IPv4 socket: loopback is all there is for that socket.
    let v6_only: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "2001:db8::5".parse().unwrap()];
    assert_eq!(
        addrs_for_ips(&v6_only, Some(1000), None, LoopbackPolicy::WhenAlone),
        vec![addr("127.0.0.1:1000")]
    );
}

#[cfg(feature = "quic")]
#[test]
fn local_addrs_of_this_machine() {
    let addrs = local_addrs(Some(4242), Some(4343));
    // Every machine has at least loopback, which the policy keeps when it is all there is.
    assert!(!addrs.is_empty());
    for a in &addrs {
        assert_eq!(a.port(), if a.is_ipv4() { 4242 } else { 4343 });
        assert!(!a.ip().is_unspecified());
    }
    assert!(local_addrs(None, None).is_empty());
    let with_lo = local_addrs_with(Some(4242), None, LoopbackPolicy::Always);
    assert!(with_lo.contains(&addr("127.0.0.1:4242")));
}

#[test]
fn own_addrs_public_first() {
    let local = vec![
        addr("10.0.0.3:1000"),
        addr("192.0.2.77:4000"),
        addr("[2001:db8::5]:2000"),
    ];
    assert_eq!(own_addrs(&local, None), local);
    let report = Report {
        global_v4: Some(addr(PUBLIC_V4)),
        global_v6: Some(addr("[2001:db8::5]:2000")),
        mapping_varies_by_dest_v4: None,
        mapping_varies_by_dest_v6: None,
        relay_latency: BTreeMap::new(),
        preferred_relay: None,
        udp_works_v4: true,
        udp_works_v6: true,
        reason: ReportReason::Startup,
        captured_at: Instant::now(),
    };
    assert_eq!(
        own_addrs(&local, Some(&report)),
        vec![
            addr(PUBLIC_V4),
            addr("[2001:db8::5]:2000"),
            addr("10.0.0.3:1000")
        ]
    );
}
