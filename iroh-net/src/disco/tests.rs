use std::sync::LazyLock;

use iroh_base::SecretKey;
use proptest::prelude::*;

use super::*;

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 32])
}

/// Alice (1) sends to Bob (2); Carol (3) is a third node.
struct Nodes {
    alice: SecretKey,
    bob: SecretKey,
    carol: SecretKey,
    alice_to_bob: SharedSecret,
}

static NODES: LazyLock<Nodes> = LazyLock::new(|| {
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let alice_to_bob = alice.shared_secret(&bob.public()).unwrap();
    Nodes {
        alice,
        bob,
        carol,
        alice_to_bob,
    }
});

/// What a receiver does: read the claimed sender, derive the secret with it, open.
fn receive(packet: &[u8], receiver: &SecretKey) -> Result<(NodeId, Message), DiscoError> {
    let from = sender(packet)?;
    let secret = receiver
        .shared_secret(&from)
        .map_err(DiscoError::InvalidSender)?;
    Ok((from, open(packet, &secret)?))
}

fn ping(n: u8) -> Message {
    Message::Ping(Ping {
        tx_id: TxId::from_bytes([n; 12]),
    })
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(ip.into(), port))),
        (any::<u128>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(
            ip.into(),
            port,
            0,
            0
        ))),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    let tx_id = any::<[u8; 12]>().prop_map(TxId::from_bytes);
    prop_oneof![
        tx_id
            .clone()
            .prop_map(|tx_id| Message::Ping(Ping { tx_id })),
        (tx_id, arb_addr()).prop_map(|(tx_id, observed)| Message::Pong(Pong { tx_id, observed })),
        (
            proptest::collection::vec(arb_addr(), 0..=MAX_ADDRS),
            any::<bool>(),
            proptest::option::of(arb_addr())
        )
            .prop_map(|(addrs, mapping_varies, reflexive)| Message::CallMeMaybe(
                CallMeMaybe::new(addrs).unwrap().with_nat(NatHint {
                    mapping_varies,
                    reflexive
                })
            )),
        prop_oneof![
            any::<u32>().prop_map(|ip| IpAddr::V4(ip.into())),
            any::<u128>().prop_map(|ip| IpAddr::V6(ip.into())),
        ]
        .prop_map(|ip| Message::Predict(Predict { ip })),
    ]
}

proptest! {
    #[test]
    fn plaintext_round_trips(msg in arb_message()) {
        let bytes = msg.to_plaintext();
        prop_assert_eq!(Message::parse_plaintext(&bytes), Ok(msg));
    }

    #[test]
    fn encoded_len_is_exact(msg in arb_message()) {
        prop_assert_eq!(msg.to_plaintext().len(), msg.encoded_len());
        prop_assert!(msg.encoded_len() <= MAX_PLAINTEXT_LEN);
        prop_assert!(sealed_len(&msg) <= MAX_PACKET_LEN);
    }

    #[test]
    fn sealed_round_trips(msg in arb_message()) {
        let nodes = &*NODES;
        let packet = seal(&msg, &nodes.alice.public(), &nodes.alice_to_bob);
        prop_assert_eq!(packet.len(), sealed_len(&msg));
        prop_assert!(looks_like_disco(&packet));
        prop_assert_eq!(receive(&packet, &nodes.bob), Ok((nodes.alice.public(), msg.clone())));

        // seal_into appends after what the buffer already holds.
        let mut buf = b"prefix".to_vec();
        seal_into(&msg, &nodes.alice.public(), &nodes.alice_to_bob, &mut buf);
        prop_assert_eq!(&buf[..6], b"prefix");
        prop_assert_eq!(receive(&buf[6..], &nodes.bob), Ok((nodes.alice.public(), msg)));
    }

    #[test]
    fn arbitrary_plaintexts_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        if let Ok(msg) = Message::parse_plaintext(&bytes) {
            // Whatever parses re-encodes to something that parses to the same message.
            prop_assert_eq!(Message::parse_plaintext(&msg.to_plaintext()), Ok(msg));
        }
    }

    #[test]
    fn arbitrary_packets_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..1300),
        with_magic in any::<bool>(),
    ) {
        let mut packet = if with_magic { MAGIC.to_vec() } else { Vec::new() };
        packet.extend_from_slice(&body);
        // A random box cannot authenticate, so nothing random is ever accepted.
        prop_assert!(receive(&packet, &NODES.bob).is_err());
        let _ = sender(&packet);
    }

    #[test]
    fn mutated_plaintexts_never_panic(
        msg in arb_message(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = msg.to_plaintext();
        for (at, xor) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= xor;
        }
        for candidate in [&bytes[..], &bytes[..cut.index(bytes.len() + 1)]] {
            if let Ok(parsed) = Message::parse_plaintext(candidate) {
                prop_assert_eq!(Message::parse_plaintext(&parsed.to_plaintext()), Ok(parsed));
            }
        }
    }

    #[test]
    fn mutated_packets_are_rejected(
        msg in arb_message(),
        at in any::<prop::sample::Index>(),
        xor in 1..=255u8,
    ) {
        let nodes = &*NODES;
        let mut packet = seal(&msg, &nodes.alice.public(), &nodes.alice_to_bob);
        let i = at.index(packet.len());
        packet[i] ^= xor;
        let err = receive(&packet, &nodes.bob).unwrap_err();
        let expected = match i {
            0..6 => matches!(err, DiscoError::BadMagic),
            // A changed sender is either not a key, or another node's key whose secret cannot open the box.
            6..38 => matches!(err, DiscoError::InvalidSender(_) | DiscoError::Open(_)),
            _ => matches!(err, DiscoError::Open(OpenError::Authentication)),
        };
        prop_assert!(expected, "byte {} -> {:?}", i, err);
    }
}

#[test]
fn truncation_at_every_length_fails_cleanly() {
    let nodes = &*NODES;
    let msg = Message::CallMeMaybe(CallMeMaybe::truncating([
        "192.0.2.1:1".parse().unwrap(),
        "[2001:db8::1]:2".parse().unwrap(),
    ]));
    let packet = seal(&msg, &nodes.alice.public(), &nodes.alice_to_bob);
    for len in 0..packet.len() {
        let err = receive(&packet[..len], &nodes.bob).unwrap_err();
        if len < MIN_PACKET_LEN {
            assert_eq!(
                err,
                DiscoError::TooShort {
                    len,
                    min: MIN_PACKET_LEN
                }
            );
        } else {
            assert_eq!(err, DiscoError::Open(OpenError::Authentication), "{len}");
        }
    }
    let plaintext = msg.to_plaintext();
    for len in 0..plaintext.len() {
        assert!(
            Message::parse_plaintext(&plaintext[..len]).is_err(),
            "{len}"
        );
    }
}

#[test]
fn a_packet_for_another_node_does_not_open() {
    let nodes = &*NODES;
    let alice_to_carol = nodes.alice.shared_secret(&nodes.carol.public()).unwrap();
    let packet = seal(&ping(1), &nodes.alice.public(), &alice_to_carol);
    assert_eq!(sender(&packet), Ok(nodes.alice.public()));
    assert_eq!(
        receive(&packet, &nodes.bob),
        Err(DiscoError::Open(OpenError::Authentication))
    );
    assert_eq!(
        receive(&packet, &nodes.carol),
        Ok((nodes.alice.public(), ping(1)))
    );
}

#[test]
fn claiming_another_sender_does_not_open() {
    let nodes = &*NODES;
    // Carol takes Alice's packet to Bob and claims it as her own.
    let mut stolen = seal(&ping(2), &nodes.alice.public(), &nodes.alice_to_bob);
    stolen[MAGIC.len()..HEADER_LEN].copy_from_slice(nodes.carol.public().as_bytes());
    assert_eq!(
        receive(&stolen, &nodes.bob),
        Err(DiscoError::Open(OpenError::Authentication))
    );
    // Carol seals her own packet to Bob but claims to be Alice.
    let carol_to_bob = nodes.carol.shared_secret(&nodes.bob.public()).unwrap();
    let forged = seal(&ping(3), &nodes.alice.public(), &carol_to_bob);
    assert_eq!(
        receive(&forged, &nodes.bob),
        Err(DiscoError::Open(OpenError::Authentication))
    );
}

#[test]
fn golden_encoding() {
    let msg = Message::Pong(Pong {
        tx_id: TxId::from_bytes(*b"0123456789ab"),
        observed: "192.0.2.7:4660".parse().unwrap(),
    });
    let mut expected = vec![2, 2];
    expected.extend_from_slice(b"0123456789ab");
    expected.extend_from_slice(&[4, 192, 0, 2, 7, 0x12, 0x34]);
    assert_eq!(msg.to_plaintext(), expected);

    let msg = Message::CallMeMaybe(CallMeMaybe::truncating(["[2001:db8::5]:1"
        .parse()
        .unwrap()]));
    let mut expected = vec![3, 2, 1, 6, 0x20, 0x01, 0x0d, 0xb8];
    expected.extend_from_slice(&[0; 11]);
    expected.extend_from_slice(&[5, 0, 1]);
    // No NAT hint: flags 0, no reflexive address.
    expected.push(0);
    assert_eq!(msg.to_plaintext(), expected);

    let msg = Message::CallMeMaybe(CallMeMaybe::truncating([]).with_nat(NatHint {
        mapping_varies: true,
        reflexive: Some("192.0.2.9:258".parse().unwrap()),
    }));
    assert_eq!(msg.to_plaintext(), [3, 2, 0, 3, 4, 192, 0, 2, 9, 1, 2]);

    let msg = Message::Predict(Predict {
        ip: "192.0.2.10".parse().unwrap(),
    });
    assert_eq!(msg.to_plaintext(), [4, 2, 4, 192, 0, 2, 10]);

    assert_eq!(ping(7).to_plaintext(), [&[1u8, 2][..], &[7; 12]].concat());
}

#[test]
fn version_policy() {
    let body = [9u8; 12];
    let with = |typ: u8, version: u8, body: &[u8]| [&[typ, version][..], body].concat();

    // Unknown types are reported with their version, whatever the body.
    assert_eq!(
        Message::parse_plaintext(&with(9, 1, &body)),
        Err(DiscoError::UnknownType { typ: 9, version: 1 })
    );
    assert_eq!(
        Message::parse_plaintext(&[0, 7]),
        Err(DiscoError::UnknownType { typ: 0, version: 7 })
    );
    // Versions 1 and 2 must be exact; a newer version may append.
    let mut longer = body.to_vec();
    longer.push(0xee);
    for version in [1, 2] {
        assert_eq!(
            Message::parse_plaintext(&with(1, version, &longer)),
            Err(DiscoError::BadBodyLength { typ: 1, len: 13 })
        );
    }
    assert_eq!(
        Message::parse_plaintext(&with(1, 3, &longer)),
        Ok(Message::Ping(Ping {
            tx_id: TxId::from_bytes(body)
        }))
    );
    // ...but must still carry version 1's fields.
    assert_eq!(
        Message::parse_plaintext(&with(1, 3, &body[..11])),
        Err(DiscoError::BadBodyLength { typ: 1, len: 11 })
    );
    assert_eq!(
        Message::parse_plaintext(&with(1, 0, &body)),
        Err(DiscoError::InvalidVersion { typ: 1 })
    );
    assert_eq!(
        Message::parse_plaintext(&[1]),
        Err(DiscoError::TooShort { len: 1, min: 2 })
    );
}

#[test]
fn addresses_are_checked() {
    let mut pong = vec![2, 1];
    pong.extend_from_slice(&[0; 12]);
    pong.extend_from_slice(&[5, 1, 2, 3, 4, 0, 80]);
    assert_eq!(
        Message::parse_plaintext(&pong),
        Err(DiscoError::BadAddressFamily(5))
    );

    // A count beyond the limit is refused before any address is read.
    assert_eq!(
        Message::parse_plaintext(&[3, 1, 33]),
        Err(DiscoError::TooManyAddresses(33))
    );
    // A count that promises more addresses than follow.
    assert_eq!(
        Message::parse_plaintext(&[3, 1, 2, 4, 1, 2, 3, 4, 0, 80]),
        Err(DiscoError::BadBodyLength { typ: 3, len: 8 })
    );

    let many: Vec<SocketAddr> = (0..40u16)
        .map(|port| SocketAddr::from(([192, 0, 2, 1], port)))
        .collect();
    assert_eq!(
        CallMeMaybe::new(many.clone()),
        Err(DiscoError::TooManyAddresses(40))
    );
    assert_eq!(CallMeMaybe::truncating(many.clone()).addrs(), &many[..32]);

    // IPv6 scope ids and flow labels are not sent.
    let scoped = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 7, 3));
    let msg = Message::Pong(Pong {
        tx_id: TxId::from_bytes([0; 12]),
        observed: scoped,
    });
    let Ok(Message::Pong(back)) = Message::parse_plaintext(&msg.to_plaintext()) else {
        panic!("pong did not parse");
    };
    assert_eq!(
        back.observed,
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 0, 0))
    );
}

#[test]
fn limits() {
    let full = Message::CallMeMaybe(CallMeMaybe::truncating(
        (0u16..)
            .take(MAX_ADDRS)
            .map(|port| SocketAddr::from((Ipv6Addr::LOCALHOST, port))),
    ));
    assert_eq!(
        full.encoded_len(),
        MAX_PLAINTEXT_LEN - MAX_ADDR_LEN_FOR_TESTS
    );
    assert_eq!(sealed_len(&full), 689 + 1);
    let fuller = Message::CallMeMaybe(
        CallMeMaybe::truncating(
            (0u16..)
                .take(MAX_ADDRS)
                .map(|port| SocketAddr::from((Ipv6Addr::LOCALHOST, port))),
        )
        .with_nat(NatHint {
            mapping_varies: false,
            reflexive: Some(SocketAddr::from((Ipv6Addr::LOCALHOST, 1))),
        }),
    );
    assert_eq!(fuller.encoded_len(), MAX_PLAINTEXT_LEN);
    assert_eq!(sealed_len(&fuller), 709);
    assert!(sealed_len(&full) <= MAX_PACKET_LEN);

    let mut huge = MAGIC.to_vec();
    huge.resize(MAX_PACKET_LEN + 1, 0);
    assert_eq!(sender(&huge), Err(DiscoError::TooLong(MAX_PACKET_LEN + 1)));
    assert_eq!(sender(&[0u8; MIN_PACKET_LEN]), Err(DiscoError::BadMagic));
}

#[test]
fn magic_is_neither_stun_nor_quic() {
    // Top two bits 10: STUN has 00, QUIC long headers 11, short headers 01 (with the fixed bit kept).
    assert_eq!(MAGIC[0] >> 6, 0b10);
    // Bytes 1..=4 are not the zero version of a QUIC Version Negotiation packet.
    assert_ne!(MAGIC[1..5], [0, 0, 0, 0]);
    let packet = seal(&ping(1), &NODES.alice.public(), &NODES.alice_to_bob);
    assert!(!iroh_stun::is_stun(&packet));
    assert!(!looks_like_disco(&MAGIC[..5]));
}

#[test]
fn tx_ids_are_random_and_debuggable() {
    assert_ne!(TxId::random(), TxId::random());
    let id = TxId::from_bytes([0xab; 12]);
    assert_eq!(format!("{id:?}"), format!("TxId({})", "ab".repeat(12)));
    assert_eq!(id.as_bytes(), &[0xab; 12]);
}

/// The longest encoded socket address (an IPv6 one).
const MAX_ADDR_LEN_FOR_TESTS: usize = 19;

#[test]
fn version_one_call_me_maybe_and_reserved_flags() {
    // A version-1 call-me-maybe (an older node's) has no flags: no NAT hint.
    let v1 = [3u8, 1, 1, 4, 192, 0, 2, 1, 0, 80];
    let Ok(Message::CallMeMaybe(cmm)) = Message::parse_plaintext(&v1) else {
        panic!("version 1 must parse");
    };
    assert_eq!(cmm.addrs(), ["192.0.2.1:80".parse().unwrap()]);
    assert_eq!(cmm.nat(), NatHint::default());
    // Version 1 bodies stay exact: a trailing byte is an error there.
    assert!(Message::parse_plaintext(&[3, 1, 0, 0]).is_err());
    // Version 2 needs its flags byte, and the reflexive address its flag announces.
    assert_eq!(
        Message::parse_plaintext(&[3, 2, 0]),
        Err(DiscoError::BadBodyLength { typ: 3, len: 1 })
    );
    assert_eq!(
        Message::parse_plaintext(&[3, 2, 0, 2, 4, 1, 2]),
        Err(DiscoError::BadBodyLength { typ: 3, len: 5 })
    );
    // Reserved bits are kept (so the encoding round-trips) and mean nothing.
    let reserved = [3u8, 2, 0, 0xfd];
    let msg = Message::parse_plaintext(&reserved).unwrap();
    let Message::CallMeMaybe(cmm) = &msg else {
        panic!("a call-me-maybe");
    };
    assert_eq!(
        cmm.nat(),
        NatHint {
            mapping_varies: true,
            reflexive: None
        }
    );
    assert_eq!(msg.to_plaintext(), reserved);
    // A newer version may append after the reflexive address.
    let v3 = [3u8, 3, 0, 2, 4, 10, 0, 0, 1, 0, 9, 0xaa, 0xbb];
    let Ok(Message::CallMeMaybe(cmm)) = Message::parse_plaintext(&v3) else {
        panic!("version 3 must parse");
    };
    assert_eq!(cmm.nat().reflexive, Some("10.0.0.1:9".parse().unwrap()));
}

#[test]
fn predict_is_checked() {
    assert_eq!(
        Message::parse_plaintext(&[4, 2, 6, 1, 2, 3]),
        Err(DiscoError::BadBodyLength { typ: 4, len: 4 })
    );
    assert_eq!(
        Message::parse_plaintext(&[4, 2, 5, 1, 2, 3, 4]),
        Err(DiscoError::BadAddressFamily(5))
    );
    assert_eq!(
        Message::parse_plaintext(&[4, 2, 4, 1, 2, 3, 4, 0]),
        Err(DiscoError::BadBodyLength { typ: 4, len: 6 })
    );
    let v6 = Message::Predict(Predict {
        ip: "2001:db8::1".parse().unwrap(),
    });
    assert_eq!(v6.encoded_len(), 2 + 17);
    assert_eq!(Message::parse_plaintext(&v6.to_plaintext()), Ok(v6));
}
