use std::net::{Ipv4Addr, Ipv6Addr};

use iroh_base::SecretKey;
use proptest::prelude::*;

use super::*;

fn node(n: u8) -> NodeId {
    SecretKey::from_bytes(&[n; 32]).public()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn only_addresses_a_lan_peer_can_use_are_published() {
    let all = [
        "192.168.1.10:4433",
        "127.0.0.1:4433",
        "169.254.3.4:4433",
        "0.0.0.0:4433",
        "224.0.0.251:5353",
        "255.255.255.255:1",
        "192.168.1.10:0",
        "[fe80::1]:4433",
        "[::1]:4433",
        "[::ffff:127.0.0.1]:4433",
        "[2001:db8::5]:4433",
        "[fd00::2]:4433",
    ]
    .map(addr);
    assert_eq!(
        publishable(all),
        ["192.168.1.10:4433", "[2001:db8::5]:4433", "[fd00::2]:4433"].map(addr)
    );
    let many = (0..40u16).map(|p| SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), 1000 + p));
    assert_eq!(publishable(many).len(), MAX_ADDRS);
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), 1u16..)
            .prop_map(|(ip, port)| SocketAddr::new(Ipv4Addr::from(ip).into(), port)),
        (any::<[u8; 16]>(), 1u16..)
            .prop_map(|(ip, port)| SocketAddr::new(Ipv6Addr::from(ip).into(), port)),
    ]
}

proptest! {
    #[test]
    fn txt_round_trips(
        addrs in proptest::collection::btree_set(arb_addr(), 0..MAX_ADDRS),
        relay in any::<bool>(),
    ) {
        let url: RelayUrl = "https://relay.example.org./".parse().unwrap();
        let relay = relay.then_some(url);
        let list: Vec<SocketAddr> = addrs.iter().copied().collect();
        let txt = encode_txt(relay.as_ref(), &list);
        prop_assert!(txt.iter().all(|(k, v)| k.len() + 1 + v.len() <= 255));
        let (back_relay, back) = decode_txt(txt.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        prop_assert_eq!(back_relay, relay);
        prop_assert_eq!(back, addrs);
    }

    #[test]
    fn decoding_never_panics(pairs in proptest::collection::vec((".{0,8}", ".{0,60}"), 0..40)) {
        let _ = decode_txt(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
}

#[test]
fn malformed_txt_is_a_typed_error() {
    assert_eq!(decode_txt([("relay", "ftp://x/")]), Err(TxtError::Relay));
    assert_eq!(
        decode_txt([("a0", "not an address")]),
        Err(TxtError::Addr {
            value: "not an address".into()
        })
    );
    let many: Vec<(String, String)> = (0..=MAX_ADDRS)
        .map(|i| (format!("a{i}"), format!("10.0.0.1:{}", 1000 + i)))
        .collect();
    assert_eq!(
        decode_txt(many.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        Err(TxtError::TooManyAddrs)
    );
    // Unknown keys, and keys that only look like address keys, are skipped.
    let (relay, addrs) = decode_txt([
        ("future", "1"),
        ("a", "x"),
        ("ab", "y"),
        ("A3", "10.0.0.1:9"),
    ])
    .unwrap();
    assert_eq!(relay, None);
    assert_eq!(addrs.len(), 1);
    // A key given twice counts once, the first time (RFC 6763 section 6.4), whatever its case; a bad
    // later value is ignored with it.
    let (relay, addrs) = decode_txt([
        ("relay", "https://first.example/"),
        ("RELAY", "https://second.example/"),
        ("relay", "ftp://bad/"),
        ("a0", "10.0.0.1:1"),
        ("A0", "10.0.0.2:2"),
        ("a0", "garbage"),
    ])
    .unwrap();
    assert_eq!(relay, Some("https://first.example/".parse().unwrap()));
    assert_eq!(addrs, BTreeSet::from([addr("10.0.0.1:1")]));
    // So many repeats of one key are not too many addresses.
    let repeats: Vec<(&str, &str)> = (0..100).map(|_| ("a1", "10.0.0.1:1")).collect();
    assert_eq!(decode_txt(repeats).unwrap().1.len(), 1);
}

#[test]
fn heard_peers_are_bounded_and_expire() {
    let t0 = Instant::now();
    let mut heard = HeardPeers::new(3);
    let addrs: BTreeSet<SocketAddr> = [addr("192.168.1.2:1")].into();
    for i in 0..3 {
        heard.heard(
            t0 + Duration::from_secs(i.into()),
            node(i),
            None,
            &addrs,
            Duration::from_secs(120),
        );
    }
    // Full: the one heard longest ago makes room.
    heard.heard(
        t0 + Duration::from_secs(5),
        node(9),
        None,
        &addrs,
        Duration::from_secs(120),
    );
    assert_eq!(heard.len(), 3);
    assert_eq!(
        heard.take_dropped(),
        [node(0)],
        "the dropped node is reported"
    );
    assert!(heard.take_dropped().is_empty());
    assert!(heard.get(t0 + Duration::from_secs(5), &node(0)).is_none());
    assert!(heard.get(t0 + Duration::from_secs(5), &node(9)).is_some());
    // A flood of ever-new senders never grows it.
    for i in 10..200u8 {
        heard.heard(
            t0 + Duration::from_secs(6),
            node(i),
            None,
            &addrs,
            Duration::from_secs(120),
        );
        assert!(heard.len() <= 3);
        assert_eq!(heard.take_dropped().len(), 1);
    }
    // TTLs are clamped: a huge one lasts at most 4500 s, a zero one a second.
    let mut heard = HeardPeers::new(10);
    heard.heard(t0, node(1), None, &addrs, Duration::from_secs(u64::MAX / 4));
    heard.heard(t0, node(2), None, &addrs, Duration::ZERO);
    assert!(
        heard
            .get(t0 + Duration::from_millis(999), &node(2))
            .is_some()
    );
    assert!(heard.get(t0 + Duration::from_secs(1), &node(2)).is_none());
    assert!(
        heard
            .get(t0 + Duration::from_secs(4499), &node(1))
            .is_some()
    );
    assert!(
        heard
            .get(t0 + Duration::from_secs(4500), &node(1))
            .is_none()
    );
    heard.expire(t0 + Duration::from_secs(2));
    assert_eq!(heard.len(), 1);
    heard.gone(&node(1));
    assert!(heard.is_empty());
}

#[test]
fn three_announcements_then_none_and_a_change_starts_over() {
    let t0 = Instant::now();
    let mut s = AnnounceSchedule::new();
    assert_eq!(s.poll_timeout(t0), None, "nothing to announce");
    assert!(!s.poll_announce(t0));
    s.changed();
    assert_eq!(s.poll_timeout(t0), Some(t0));
    let mut sent = Vec::new();
    let mut now = t0;
    while let Some(at) = s.poll_timeout(now) {
        now = at.max(now + Duration::from_millis(100));
        if s.poll_announce(now) {
            sent.push((now - t0).as_millis());
        }
    }
    assert_eq!(sent, [100, 1100, 2100]);
    // A change right after: a new burst, but not sooner than a second after the last announcement.
    let now = t0 + Duration::from_millis(2500);
    s.changed();
    assert_eq!(s.poll_timeout(now), Some(t0 + Duration::from_millis(3100)));
    s.stopped();
    assert_eq!(s.poll_timeout(now), None);
}

// The state machine on a simulated link: every core on interface 2 of 10.0.0.0/24, IPv4 only.

mod link {
    use std::{
        collections::BTreeSet,
        net::{IpAddr, Ipv4Addr, SocketAddr},
        time::{Duration, Instant},
    };

    use iroh_base::{NodeAddr, NodeId, RelayUrl, SecretKey};
    use proptest::prelude::*;

    use crate::mdns::{
        Config, HeardPeers, Interface, MdnsCore, MdnsEvent, Transmit,
        proto::GROUP_V4,
        wire::{self, Asked, Message, OurRecords, Sets, Ttl},
    };

    const PORT: u16 = 5353;
    /// The port one-shot queries leave from.
    const ONESHOT_PORT: u16 = 40000;

    fn key(n: u8) -> NodeId {
        SecretKey::from_bytes(&[n; 32]).public()
    }

    fn ip(n: u8) -> IpAddr {
        Ipv4Addr::new(10, 0, 0, n).into()
    }

    fn src(n: u8) -> SocketAddr {
        SocketAddr::new(ip(n), PORT)
    }

    /// The interface index every host has on the simulated link.
    const LINK_INDEX: u32 = 2;

    fn iface(n: u8) -> Interface {
        Interface {
            index: LINK_INDEX,
            addrs: vec![(ip(n), 24)],
        }
    }

    /// A core for host `n` (10.0.0.n) publishing 10.0.0.n:4000 + n.
    fn host(n: u8, now: Instant, publish: bool) -> MdnsCore {
        let config = Config {
            port: PORT,
            max_peers: 64,
            advertise: true,
        };
        let mut core = MdnsCore::new(key(n), config, u64::from(n));
        core.set_interfaces(now, vec![iface(n)]);
        if publish {
            core.publish(None, &[addr_of(n)]);
        }
        core
    }

    fn addr_of(n: u8) -> SocketAddr {
        SocketAddr::new(ip(n), 4000 + u16::from(n))
    }

    struct Link {
        hosts: Vec<(u8, MdnsCore)>,
        now: Instant,
        /// Every packet sent: (time, sender, transmit).
        log: Vec<(Instant, u8, Transmit)>,
    }

    impl Link {
        fn new(now: Instant, hosts: Vec<(u8, MdnsCore)>) -> Self {
            Self {
                hosts,
                now,
                log: Vec::new(),
            }
        }

        fn core(&mut self, n: u8) -> &mut MdnsCore {
            &mut self.hosts.iter_mut().find(|(h, _)| *h == n).unwrap().1
        }

        /// Delivers everything queued, repeatedly, at the current time.
        fn deliver(&mut self) {
            loop {
                let mut sent = Vec::new();
                for (n, core) in &mut self.hosts {
                    while let Some(t) = core.poll_transmit() {
                        sent.push((*n, t));
                    }
                }
                if sent.is_empty() {
                    return;
                }
                for (from, t) in sent {
                    self.log.push((self.now, from, t.clone()));
                    if t.iface != LINK_INDEX {
                        continue; // another interface: no one there
                    }
                    let from_addr = if t.oneshot {
                        SocketAddr::new(ip(from), ONESHOT_PORT)
                    } else {
                        src(from)
                    };
                    for (n, core) in &mut self.hosts {
                        let to_me =
                            t.dst == SocketAddr::new(GROUP_V4.into(), PORT) || t.dst.ip() == ip(*n);
                        if *n != from && to_me {
                            core.handle_packet(self.now, from_addr, &t.payload);
                        }
                    }
                }
            }
        }

        /// Runs every core's timers until `until`.
        fn run_until(&mut self, until: Instant) {
            loop {
                self.deliver();
                let next = self
                    .hosts
                    .iter()
                    .filter_map(|(_, c)| c.poll_timeout(self.now))
                    .min();
                match next {
                    Some(at) if at <= until => {
                        self.now = self.now.max(at);
                        let now = self.now;
                        for (_, core) in &mut self.hosts {
                            core.handle_timeout(now);
                        }
                    }
                    _ => {
                        self.now = until;
                        self.deliver();
                        return;
                    }
                }
            }
        }

        fn events(&mut self, n: u8) -> Vec<MdnsEvent> {
            let core = self.core(n);
            std::iter::from_fn(|| core.poll_event()).collect()
        }

        /// What `n` sent that was a response.
        fn answers_by(&self, n: u8) -> Vec<(Duration, Transmit)> {
            self.sent_by(n)
                .into_iter()
                .filter(|(_, t)| matches!(wire::parse(&t.payload), Ok(Message::Response(_))))
                .collect()
        }

        fn sent_by(&self, n: u8) -> Vec<(Duration, Transmit)> {
            let t0 = self.log.first().map_or(self.now, |(t, _, _)| *t);
            self.log
                .iter()
                .filter(|(_, from, _)| *from == n)
                .map(|(t, _, tr)| (*t - t0, tr.clone()))
                .collect()
        }
    }

    fn discovered(n: u8) -> MdnsEvent {
        MdnsEvent::Discovered(NodeAddr::from_parts(key(n), None, [addr_of(n)]))
    }

    #[test]
    fn a_lookup_is_answered_at_once() {
        let t0 = Instant::now();
        // b starts long after a's announcements are over.
        let mut link = Link::new(t0, vec![(1, host(1, t0, true))]);
        link.run_until(t0 + Duration::from_secs(10));
        let t1 = link.now;
        link.hosts.push((2, host(2, t1, false)));
        link.log.clear();
        assert!(link.core(2).lookup(t1, key(1), Duration::from_secs(3)));
        link.run_until(t1);
        assert_eq!(link.events(2), [discovered(1)], "answered without waiting");
        let first = &link.answers_by(1)[0];
        assert_eq!(first.0, Duration::ZERO);
        assert_eq!(
            first.1.dst,
            SocketAddr::new(ip(2), ONESHOT_PORT),
            "the one-shot query is answered by unicast to its port"
        );
        let packet = simple_dns::Packet::parse(&first.1.payload).unwrap();
        assert!(packet.answers.iter().all(|rr| rr.ttl <= wire::LEGACY_TTL));
        let sent = link.sent_by(2);
        assert!(sent[0].1.oneshot && sent.len() == 1, "one query");
        let kept = link.core(2).heard().get(t1, &key(1)).unwrap().expires_at;
        assert!(
            kept >= t1 + Duration::from_secs(119),
            "the legacy TTL cap is not the record's TTL"
        );
        assert!(!link.core(2).looking_up(&key(1)));
        // Known and fresh: no new query.
        assert!(!link.core(2).lookup(t1, key(1), Duration::from_secs(3)));
        let got = link.core(2).heard().get(t1, &key(1)).unwrap();
        assert_eq!(got.addrs, BTreeSet::from([addr_of(1)]));
    }

    #[test]
    fn a_lookup_asks_again_at_once_on_an_interface_that_comes_up() {
        let t0 = Instant::now();
        let mut link = Link::new(t0, vec![(1, host(1, t0, true))]);
        link.run_until(t0 + Duration::from_secs(10));
        let t1 = link.now;
        // b is up only on another network at first (index 3: nobody there).
        let elsewhere = Interface {
            index: 3,
            addrs: vec![(Ipv4Addr::new(10, 9, 0, 2).into(), 24)],
        };
        let mut b = host(2, t1, false);
        b.set_interfaces(t1, vec![elsewhere.clone()]);
        link.hosts.push((2, b));
        assert!(link.core(2).lookup(t1, key(1), Duration::from_secs(3)));
        let t2 = t1 + Duration::from_millis(300);
        link.run_until(t2);
        assert!(
            link.events(2).is_empty(),
            "nothing heard on the other network"
        );
        // The link's interface comes up 300 ms later (its carrier, say): asked again there at once,
        // not at the 1 s retry.
        link.core(2).set_interfaces(t2, vec![elsewhere, iface(2)]);
        link.run_until(t2);
        assert_eq!(link.events(2), [discovered(1)]);
        assert!(!link.core(2).looking_up(&key(1)));
    }

    #[test]
    fn qu_questions_get_unicast_answers_when_multicast_recently() {
        let t0 = Instant::now();
        let mut link = Link::new(t0, vec![(1, host(1, t0, true))]);
        link.run_until(t0 + Duration::from_secs(10));
        let qu = wire::build_query(&[Asked::Instance(key(1))], true, &[]).unwrap();
        // 8 s after the last announcement (under a quarter of the 120 s TTL): unicast, at once.
        let t1 = link.now;
        link.log.clear();
        link.core(1).handle_packet(t1, src(7), &qu);
        link.run_until(t1);
        let answers = link.answers_by(1);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].1.dst, src(7));
        // 100 s later: multicast, so that every cache on the link is refreshed.
        let t2 = t1 + Duration::from_secs(100);
        link.run_until(t2);
        link.log.clear();
        link.core(1).handle_packet(t2, src(7), &qu);
        link.run_until(t2);
        let answers = link.answers_by(1);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].1.dst, SocketAddr::new(GROUP_V4.into(), PORT));
    }

    #[test]
    fn multicast_answers_are_at_most_one_a_second() {
        let t0 = Instant::now();
        let mut link = Link::new(t0, vec![(1, host(1, t0, true))]);
        link.run_until(t0 + Duration::from_secs(10));
        let query = wire::build_query(&[Asked::Instance(key(1))], false, &[]).unwrap();
        let t1 = link.now;
        link.log.clear();
        link.core(1).handle_packet(t1, src(7), &query);
        link.run_until(t1 + Duration::from_millis(100));
        let now = link.now;
        link.core(1).handle_packet(now, src(8), &query);
        link.run_until(t1 + Duration::from_secs(3));
        let times: Vec<u128> = link
            .answers_by(1)
            .iter()
            .map(|(t, _)| t.as_millis())
            .collect();
        assert_eq!(times, [0, 1000], "the second waits for the second to pass");
    }

    #[test]
    fn three_announcements_then_silence() {
        let t0 = Instant::now();
        let mut link = Link::new(t0, vec![(1, host(1, t0, true)), (2, host(2, t0, false))]);
        link.run_until(t0 + Duration::from_secs(600));
        let sent: Vec<u64> = link
            .sent_by(1)
            .iter()
            .filter(|(_, t)| matches!(wire::parse(&t.payload), Ok(Message::Response(_))))
            .map(|(t, _)| t.as_secs())
            .collect();
        assert_eq!(
            sent,
            [0, 1, 2],
            "three announcements, then nothing for 10 minutes"
        );
        assert_eq!(link.core(1).stats().announcements, 3);
        assert_eq!(link.events(2), [discovered(1)]);
        // b's browse backs off: 1 + 2 + 4 + ... within 600 s is 9 queries, none answered by a again
        // (known answers).
        let queries = link.sent_by(2).len();
        assert!((8..=10).contains(&queries), "{queries}");
    }

    #[test]
    fn a_browse_finds_a_node_and_known_answers_silence_it() {
        let t0 = Instant::now();
        let mut link = Link::new(t0, vec![(1, host(1, t0, true))]);
        link.run_until(t0 + Duration::from_secs(10));
        let t1 = link.now;
        link.hosts.push((2, host(2, t1, false)));
        link.log.clear();
        link.run_until(t1 + Duration::from_millis(300));
        assert_eq!(
            link.events(2),
            [discovered(1)],
            "the browse's answer carries TXT"
        );
        let (at, answer) = &link.answers_by(1)[0];
        let (query_at, _) = &link.sent_by(2)[0];
        let delay = at.saturating_sub(*query_at);
        assert!(
            (20..=120).contains(&delay.as_millis()),
            "shared answers wait 20-120 ms: {delay:?}"
        );
        assert!(matches!(
            wire::parse(&answer.payload),
            Ok(Message::Response(_))
        ));
        // b's next browse lists a as known: a stays quiet.
        link.log.clear();
        link.run_until(t1 + Duration::from_secs(30));
        assert!(!link.sent_by(2).is_empty());
        assert!(
            link.answers_by(1).is_empty(),
            "known answer suppressed a's PTR"
        );
    }

    #[test]
    fn goodbye_forgets_after_a_second_and_a_change_replaces_addresses() {
        let t0 = Instant::now();
        let mut link = Link::new(t0, vec![(1, host(1, t0, true)), (2, host(2, t0, false))]);
        link.run_until(t0 + Duration::from_secs(5));
        assert_eq!(link.events(2), [discovered(1)]);
        let moved = SocketAddr::new(ip(1), 9999);
        let relay: RelayUrl = "https://relay.example.org./".parse().unwrap();
        link.core(1).publish(Some(relay.clone()), &[moved]);
        link.run_until(t0 + Duration::from_secs(6));
        assert_eq!(
            link.events(2),
            [MdnsEvent::Discovered(NodeAddr::from_parts(
                key(1),
                Some(relay),
                [moved]
            ))]
        );
        link.core(1).shutdown();
        // A publish still queued behind the shutdown changes nothing.
        link.core(1).publish(None, &[addr_of(1)]);
        let bye = link.now;
        link.run_until(bye + Duration::from_millis(900));
        assert!(link.events(2).is_empty(), "kept for a second");
        link.run_until(bye + Duration::from_millis(1100));
        assert_eq!(link.events(2), [MdnsEvent::Expired(key(1))]);
        assert!(link.core(2).heard().is_empty());
        link.log.clear();
        link.run_until(bye + Duration::from_secs(60));
        assert!(
            link.answers_by(1).is_empty(),
            "nothing announced after the goodbye"
        );
    }

    #[test]
    fn a_node_heard_long_ago_that_does_not_answer_is_forgotten() {
        let t0 = Instant::now();
        let mut link = Link::new(t0, vec![(1, host(1, t0, true)), (2, host(2, t0, false))]);
        link.run_until(t0 + Duration::from_secs(5));
        assert_eq!(link.events(2), [discovered(1)]);
        // a vanishes without a goodbye.
        link.hosts.retain(|(n, _)| *n == 2);
        link.run_until(t0 + Duration::from_secs(200));
        let now = link.now;
        assert!(
            link.core(2).heard().get(now, &key(1)).is_some(),
            "TXT TTL 75 min"
        );
        assert!(link.core(2).lookup(now, key(1), Duration::from_secs(3)));
        link.run_until(now + Duration::from_secs(4));
        assert_eq!(link.events(2), [MdnsEvent::Expired(key(1))]);
        assert!(link.core(2).heard().is_empty());
    }

    #[test]
    fn legacy_queries_get_unicast_answers_with_short_ttls() {
        let t0 = Instant::now();
        let mut core = host(1, t0, true);
        core.handle_timeout(t0);
        while core.poll_transmit().is_some() {}
        let mut query = wire::build_query(&[Asked::Instance(key(1))], false, &[]).unwrap();
        query[0] = 0x12;
        query[1] = 0x34;
        let asker = SocketAddr::new(ip(9), 40000);
        core.handle_packet(t0, asker, &query);
        let t = core.poll_transmit().expect("answered at once");
        assert_eq!(t.dst, asker);
        let packet = simple_dns::Packet::parse(&t.payload).unwrap();
        assert_eq!(packet.id(), 0x1234);
        assert_eq!(packet.questions.len(), 2, "questions echoed");
        assert!(
            packet
                .answers
                .iter()
                .all(|rr| rr.ttl <= 10 && !rr.cache_flush)
        );
    }

    #[test]
    fn packets_from_off_the_link_or_other_ports_are_ignored() {
        let t0 = Instant::now();
        let mut core = host(2, t0, false);
        let ours = OurRecords {
            node: key(1),
            relay: None,
            addrs: vec![addr_of(1)],
            ips: vec![ip(1)],
        };
        let response = wire::build_response(&ours, Sets::ALL, Ttl::Normal, None).unwrap();
        core.handle_packet(t0, "192.168.5.5:5353".parse().unwrap(), &response);
        core.handle_packet(t0, SocketAddr::new(ip(1), 40000), &response);
        assert!(core.poll_event().is_none());
        assert_eq!(core.stats().off_link, 2);
        core.handle_packet(t0, src(1), &response);
        assert_eq!(core.poll_event(), Some(discovered(1)));
    }

    #[test]
    fn addresses_from_srv_and_a_records_when_txt_has_none() {
        let t0 = Instant::now();
        let mut core = host(2, t0, false);
        let ours = OurRecords {
            node: key(1),
            relay: None,
            addrs: vec![],
            ips: vec![ip(1)],
        };
        // A responder that is not us: empty TXT, the port in SRV.
        let mut bytes = wire::build_response(&ours, Sets::ALL, Ttl::Normal, None).unwrap();
        core.handle_packet(t0, src(1), &bytes);
        assert!(core.poll_event().is_none(), "SRV port 0: nothing usable");
        let first = bytes.clone();
        let mut packet = simple_dns::Packet::parse(&first).unwrap();
        for rr in &mut packet.answers {
            if let simple_dns::rdata::RData::SRV(srv) = &mut rr.rdata {
                srv.port = 4001;
            }
        }
        bytes = packet.build_bytes_vec_compressed().unwrap();
        core.handle_packet(t0, src(1), &bytes);
        assert_eq!(core.poll_event(), Some(discovered(1)));
    }

    #[test]
    fn a_flood_of_announcements_stays_within_the_table() {
        let t0 = Instant::now();
        let mut core = host(2, t0, false);
        for i in 0..5000u32 {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            let node = SecretKey::from_bytes(&seed).public();
            let ours = OurRecords {
                node,
                relay: None,
                addrs: vec![SocketAddr::new(ip(1), 1000 + (i % 60000) as u16)],
                ips: vec![ip(1)],
            };
            let bytes = wire::build_response(&ours, Sets::ALL, Ttl::Normal, None).unwrap();
            core.handle_packet(t0, src(1), &bytes);
        }
        assert_eq!(core.heard().len(), 64);
        // Every node pushed out to make room is reported gone, so subscribers' views stay bounded too.
        let events: Vec<MdnsEvent> = std::iter::from_fn(|| core.poll_event()).collect();
        let expired = events
            .iter()
            .filter(|e| matches!(e, MdnsEvent::Expired(_)))
            .count();
        assert_eq!(expired, 5000 - 64);
        assert_eq!(events.len() - expired, 5000);
        let mut lookups = 0;
        core.handle_timeout(t0);
        while core.poll_transmit().is_some() {
            lookups += 1;
        }
        assert!(lookups <= 1, "announcements start no lookups: {lookups}");
    }

    #[test]
    fn a_known_peer_costs_under_a_hundred_bytes() {
        let t0 = Instant::now();
        let mut heard = HeardPeers::new(100_000);
        let relay: RelayUrl = "https://relay.example.org./".parse().unwrap();
        for i in 0..10_000u32 {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            let node = SecretKey::from_bytes(&seed).public();
            let addrs = BTreeSet::from([SocketAddr::new(ip(1), 1000 + (i % 60000) as u16)]);
            heard.heard(
                t0,
                node,
                Some(relay.clone()),
                &addrs,
                Duration::from_secs(4500),
            );
        }
        let per_peer = heard.heap_bytes() / 10_000;
        assert!(per_peer < 128, "{per_peer} bytes per peer");
    }

    proptest! {
        #[test]
        fn any_packet_is_harmless(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let t0 = Instant::now();
            let mut core = host(2, t0, true);
            core.handle_packet(t0, src(1), &bytes);
            core.handle_packet(t0, SocketAddr::new(ip(1), 40000), &bytes);
            core.handle_timeout(t0 + Duration::from_secs(1));
            while core.poll_transmit().is_some() {}
        }

        #[test]
        fn our_records_read_back(
            port in 1u16..,
            n in 0u8..4,
            relay in any::<bool>(),
        ) {
            let relay: Option<RelayUrl> = relay.then(|| "https://relay.example.org./".parse().unwrap());
            let addrs: Vec<SocketAddr> = (0..=n).map(|i| SocketAddr::new(ip(10 + i), port)).collect();
            let ours = OurRecords { node: key(1), relay: relay.clone(), addrs: addrs.clone(), ips: vec![ip(1)] };
            let bytes = wire::build_response(&ours, Sets::ALL, Ttl::Normal, None).unwrap();
            prop_assert!(bytes.len() <= wire::MAX_PACKET);
            let Ok(Message::Response(peers)) = wire::parse(&bytes) else { panic!("not a response") };
            prop_assert_eq!(peers.len(), 1);
            let (node, facts) = &peers[0];
            prop_assert_eq!(*node, key(1));
            prop_assert_eq!(facts.ptr_ttl, Some(wire::PTR_TTL));
            let (ttl, txt) = facts.txt.clone().unwrap();
            prop_assert_eq!(ttl, wire::PTR_TTL);
            prop_assert_eq!(txt, Ok((relay, addrs.into_iter().collect())));
            prop_assert_eq!(facts.srv, Some((wire::HOST_TTL, port)));
        }
    }
}
