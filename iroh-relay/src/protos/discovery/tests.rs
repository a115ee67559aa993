use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 32])
}

fn relay() -> RelayUrl {
    "https://relay.example.org./".parse().unwrap()
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn arb_relay() -> impl Strategy<Value = Option<RelayUrl>> {
    proptest::option::of(
        (
            "[a-z]{1,20}",
            "(\\.[a-z][a-z0-9]{0,9}){0,3}",
            any::<bool>(),
            0u16..2,
        )
            .prop_map(|(host, rest, tls, port)| {
                let scheme = if tls { "https" } else { "http" };
                let port = if port == 0 {
                    String::new()
                } else {
                    ":8443".into()
                };
                format!("{scheme}://{host}{rest}{port}/").parse().unwrap()
            }),
    )
}

fn arb_record() -> impl Strategy<Value = (SecretKey, NodeRecord)> {
    (
        any::<[u8; 32]>(),
        arb_relay(),
        proptest::collection::btree_set(arb_addr(), 0..20),
        any::<u32>(),
    )
        .prop_filter("an empty record does not encode", |(_, relay, addrs, _)| {
            relay.is_some() || !addrs.is_empty()
        })
        .prop_map(|(seed, relay, addrs, ttl)| {
            let key = SecretKey::from_bytes(&seed);
            let record = NodeRecord::new(key.public())
                .with_relay_url_opt(relay)
                .with_direct_addresses(addrs)
                .with_ttl(ttl);
            (key, record)
        })
}

proptest! {
    #[test]
    fn sign_parse_round_trip((key, record) in arb_record(), ts in any::<u64>()) {
        let signed = SignedRecord::sign(&key, &record, ts).unwrap();
        prop_assert_eq!(signed.encoded_len(), signed.as_bytes().len());
        prop_assert!(signed.encoded_len() <= MAX_SIGNED_RECORD_LEN);
        let parsed = SignedRecord::from_bytes(signed.as_bytes()).unwrap();
        prop_assert_eq!(&parsed, &signed);
        prop_assert_eq!(parsed.timestamp(), ts);
        prop_assert_eq!(parsed.node_id(), key.public());
        prop_assert_eq!(parsed.record().unwrap(), record.clone());
        let relayed = SignedRecord::from_relay_payload(key.public(), &signed.to_relay_payload())
            .unwrap();
        prop_assert_eq!(relayed, signed);
    }

    #[test]
    fn any_flipped_bit_is_refused((key, record) in arb_record(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let signed = SignedRecord::sign(&key, &record, 7).unwrap();
        let mut bytes = signed.as_bytes().to_vec();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        // Changing the key, signature, timestamp or packet breaks the signature (or the key's point).
        let error = SignedRecord::from_bytes(&bytes).unwrap_err();
        prop_assert!(matches!(error, RecordError::BadSignature | RecordError::InvalidKey), "{error:?}");
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let _ = SignedRecord::from_bytes(&bytes);
        let _ = SignedRecord::from_relay_payload(key(1).public(), &bytes);
        let _ = NodeRecord::from_dns_packet(key(1).public(), &bytes);
    }

    #[test]
    fn txt_strings_round_trip((_key, record) in arb_record()) {
        let strings = record.txt_strings();
        prop_assert!(strings.iter().all(|s| s.len() <= 255));
        let back = NodeRecord::from_txt_strings(
            record.node_id(),
            record.ttl(),
            strings.iter().map(|s| s.as_bytes()),
        ).unwrap();
        prop_assert_eq!(back, record);
    }
}

#[test]
fn layout_is_key_signature_timestamp_packet() {
    let key = key(3);
    let record = NodeRecord::new(key.public()).with_relay_url(relay());
    let signed = SignedRecord::sign(&key, &record, 0x0102_0304_0506_0708).unwrap();
    let bytes = signed.as_bytes();
    assert_eq!(&bytes[..32], key.public().as_bytes());
    assert_eq!(&bytes[96..104], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(signed.dns_packet(), &bytes[104..]);
    assert_eq!(&signed.to_relay_payload()[..], &bytes[32..]);
    // The signature is over BEP 44's bencoded form.
    let mut signable = format!(
        "3:seqi{}e1:v{}:",
        0x0102_0304_0506_0708u64,
        bytes.len() - 104
    )
    .into_bytes();
    signable.extend_from_slice(&bytes[104..]);
    let signature = Signature::try_from_slice(&bytes[32..96]).unwrap();
    key.public().verify(&signable, &signature).unwrap();
}

#[test]
fn short_long_and_wrong_key_are_typed_errors() {
    assert_eq!(
        SignedRecord::from_bytes(&[0; 10]),
        Err(RecordError::TooShort { len: 10 })
    );
    assert_eq!(
        SignedRecord::from_bytes(&[0; 2000]),
        Err(RecordError::TooLong { len: 2000 })
    );
    let record = NodeRecord::new(key(1).public());
    assert_eq!(
        SignedRecord::sign(&key(1), &record, 0),
        Err(EncodeError::Empty)
    );
    let record = record.with_relay_url(relay());
    assert_eq!(
        SignedRecord::sign(&key(2), &record, 0),
        Err(EncodeError::WrongKey)
    );
    // Signed by one key, presented as another's.
    let signed = SignedRecord::sign(&key(1), &record, 0).unwrap();
    assert_eq!(
        SignedRecord::from_relay_payload(key(2).public(), &signed.to_relay_payload()),
        Err(RecordError::BadSignature)
    );
}

/// A signed record around a hand-made DNS packet, to reach the TXT parser's errors.
fn signed_with_txt(key: &SecretKey, strings: &[&str]) -> SignedRecord {
    let name = format!("_iroh.{}", key.public());
    let mut packet = Packet::new_reply(0);
    for s in strings {
        packet.answers.push(ResourceRecord::new(
            Name::new(&name).unwrap(),
            CLASS::IN,
            30,
            RData::TXT(TXT::new().with_string(s).unwrap()),
        ));
    }
    let packet = packet.build_bytes_vec().unwrap();
    let ts = 1u64;
    let signature = key.sign(&signable(ts, &packet));
    let mut bytes = key.public().as_bytes().to_vec();
    bytes.extend_from_slice(signature.as_bytes());
    bytes.extend_from_slice(&ts.to_be_bytes());
    bytes.extend_from_slice(&packet);
    SignedRecord::from_bytes(&bytes).unwrap()
}

#[test]
fn malformed_facts_are_typed_errors() {
    let k = key(4);
    let bad_addr = signed_with_txt(&k, &["addr=1.2.3.4:5 not-an-addr"]);
    assert_eq!(
        bad_addr.record(),
        Err(RecordError::Addr {
            value: "not-an-addr".into()
        })
    );
    let bad_relay = signed_with_txt(&k, &["relay=ftp://x/"]);
    assert!(matches!(bad_relay.record(), Err(RecordError::RelayUrl(_))));
    let two = signed_with_txt(
        &k,
        &["relay=https://a.example/", "relay=https://b.example/"],
    );
    assert_eq!(two.record(), Err(RecordError::TwoRelays));
    let none = signed_with_txt(&k, &[]);
    assert_eq!(none.record(), Err(RecordError::NoIrohRecords));
    // Unknown keys and key-only strings are skipped; several addr strings add up.
    let ok = signed_with_txt(
        &k,
        &[
            "future=1",
            "flag",
            "addr=1.2.3.4:5",
            "addr=[::1]:6 1.2.3.4:7",
        ],
    );
    let record = ok.record().unwrap();
    assert_eq!(record.direct_addresses().len(), 3);
    assert_eq!(record.relay_url(), None);
    assert_eq!(record.ttl(), 30);
}

#[test]
fn records_for_another_node_are_not_read_as_ours() {
    // A packet signed by k1 whose TXT names k2: it has no records about k1.
    let k1 = key(5);
    let other = NodeRecord::new(key(6).public()).with_relay_url(relay());
    let packet = other.to_dns_packet().unwrap();
    assert_eq!(
        NodeRecord::from_dns_packet(k1.public(), &packet),
        Err(RecordError::NoIrohRecords)
    );
    // With an origin after the name it is still ours.
    let name = format!("_iroh.{}.iroh.test", k1.public());
    let mut p = Packet::new_reply(0);
    p.answers.push(ResourceRecord::new(
        Name::new(&name).unwrap(),
        CLASS::IN,
        9,
        RData::TXT(TXT::new().with_string("addr=10.0.0.1:1").unwrap()),
    ));
    let record = NodeRecord::from_dns_packet(k1.public(), &p.build_bytes_vec().unwrap()).unwrap();
    assert_eq!(record.ttl(), 9);
    assert_eq!(record.direct_addresses().len(), 1);
}

#[test]
fn many_addresses_split_strings_and_fit_drops_the_rest() {
    let k = key(7);
    let addrs: Vec<SocketAddr> = (0..200u16)
        .map(|i| {
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, i)),
                40000 + i,
            )
        })
        .collect();
    let record = NodeRecord::new(k.public())
        .with_relay_url(relay())
        .with_direct_addresses(addrs);
    assert!(matches!(
        record.to_dns_packet(),
        Err(EncodeError::TooLarge { .. })
    ));
    let (fitted, dropped) = fit_record(&record).unwrap();
    assert!(dropped > 0);
    assert_eq!(fitted.direct_addresses().len() + dropped, 200);
    assert!(
        fitted.txt_strings().len() > 2,
        "addresses span several strings"
    );
    let packet = fitted.to_dns_packet().unwrap();
    assert!(packet.len() <= MAX_DNS_PACKET_LEN);
    // One more address would not have fit.
    let one_more = record.clone().with_direct_addresses(
        record
            .direct_addresses()
            .iter()
            .copied()
            .take(fitted.direct_addresses().len() + 1),
    );
    assert!(one_more.to_dns_packet().is_err());
    let signed = SignedRecord::sign(&k, &fitted, 1).unwrap();
    assert_eq!(signed.record().unwrap(), fitted);
}

/// Records we sign read back with the reference pkarr implementation, and its records with ours.
#[test]
fn interop_with_pkarr() {
    let k = key(8);
    let record = NodeRecord::new(k.public())
        .with_relay_url(relay())
        .with_direct_addresses([
            "192.0.2.1:4433".parse().unwrap(),
            "[2001:db8::1]:4433".parse().unwrap(),
        ])
        .with_ttl(60);
    let ours = SignedRecord::sign(&k, &record, 1_700_000_000_123_456).unwrap();

    let pk = pkarr::PublicKey::try_from(k.public().as_bytes()).unwrap();
    assert_eq!(pk.to_z32(), k.public().to_string(), "same z-base-32");
    let theirs = pkarr::SignedPacket::from_relay_payload(&pk, &ours.to_relay_payload()).unwrap();
    assert_eq!(&theirs.as_bytes()[..], ours.as_bytes());
    let txts: Vec<String> = theirs
        .resource_records(IROH_TXT_LABEL)
        .filter_map(|rr| match &rr.rdata {
            pkarr::dns::rdata::RData::TXT(txt) => String::try_from(txt.clone()).ok(),
            _ => None,
        })
        .collect();
    assert_eq!(txts, record.txt_strings());

    // pkarr builds, we read.
    let keypair = pkarr::Keypair::from_secret_key(&k.to_bytes());
    let mut builder = pkarr::SignedPacket::builder();
    for s in record.txt_strings() {
        builder = builder.txt(
            pkarr::dns::Name::new_unchecked(IROH_TXT_LABEL),
            pkarr::dns::rdata::TXT::new()
                .with_string(&s)
                .unwrap()
                .into_owned(),
            60,
        );
    }
    let built = builder.sign(&keypair).unwrap();
    let parsed = SignedRecord::from_bytes(built.as_bytes()).unwrap();
    assert_eq!(parsed.record().unwrap(), record);
}

/// A record signed by an independent implementation (Python's `cryptography` Ed25519 and a hand-built
/// DNS packet, key `[7; 32]`), kept as a fuzz corpus seed, parses and verifies.
#[test]
fn a_record_signed_elsewhere_verifies() {
    let bytes = include_bytes!("../../../../fuzz/corpus/discovery_record/seed-signed-record");
    let signed = SignedRecord::from_bytes(bytes).unwrap();
    assert_eq!(signed.node_id(), key(7).public());
    assert_eq!(signed.timestamp(), 1_700_000_000_000_000);
    let record = signed.record().unwrap();
    assert_eq!(record.relay_url(), Some(&relay()));
    assert_eq!(record.direct_addresses().len(), 2);
    assert_eq!(record.ttl(), 300);
}
