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
            addrs.clone(),
            Duration::from_secs(120),
        );
    }
    // Full: the one heard longest ago makes room.
    heard.heard(
        t0 + Duration::from_secs(5),
        node(9),
        None,
        addrs.clone(),
        Duration::from_secs(120),
    );
    assert_eq!(heard.len(), 3);
    assert!(heard.get(t0 + Duration::from_secs(5), &node(0)).is_none());
    assert!(heard.get(t0 + Duration::from_secs(5), &node(9)).is_some());
    // A flood of ever-new senders never grows it.
    for i in 10..200u8 {
        heard.heard(
            t0 + Duration::from_secs(6),
            node(i),
            None,
            addrs.clone(),
            Duration::from_secs(120),
        );
        assert!(heard.len() <= 3);
    }
    // TTLs are clamped: a huge one lasts at most 4500 s, a zero one a second.
    let mut heard = HeardPeers::new(10);
    heard.heard(
        t0,
        node(1),
        None,
        addrs.clone(),
        Duration::from_secs(u64::MAX / 4),
    );
    heard.heard(t0, node(2), None, addrs.clone(), Duration::ZERO);
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
fn three_announcements_then_one_a_minute_and_a_change_starts_over() {
    let t0 = Instant::now();
    let mut s = AnnounceSchedule::new();
    assert_eq!(s.poll_timeout(t0), None, "nothing to announce");
    assert!(!s.poll_announce(t0));
    s.changed();
    assert_eq!(s.poll_timeout(t0), Some(t0));
    let mut sent = Vec::new();
    let mut now = t0;
    while now < t0 + Duration::from_secs(300) {
        if s.poll_announce(now) {
            sent.push((now - t0).as_secs());
        }
        now = s
            .poll_timeout(now)
            .unwrap()
            .max(now + Duration::from_millis(100));
    }
    assert_eq!(sent, [0, 1, 2, 62, 122, 182, 242]);
    // A change: a new burst, but not sooner than a second after the last announcement.
    s.changed();
    let last = t0 + Duration::from_secs(242);
    assert_eq!(s.poll_timeout(now), Some(last + BURST_GAP));
    s.stopped();
    assert_eq!(s.poll_timeout(now), None);
}
