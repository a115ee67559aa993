//! Property tests of the codec: round trip, `encoded_len`, `is_stun` agreement, and no panics on hostile input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use iroh_stun::attr::INTERPRETED_TYPES;
use iroh_stun::{
    Attribute, Class, MAGIC_COOKIE, Message, Method, TransactionId, is_stun, peek_transaction_id,
};
use proptest::collection::vec;
use proptest::prelude::*;

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(Ipv4Addr::from(ip).into(), port)),
        (any::<u128>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(Ipv6Addr::from(ip).into(), port)),
    ]
}

/// Short arbitrary Unicode, or long text up to the 763-byte limit.
fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,24}",
        1 => "[a-zé€]{0,254}", // up to 762 bytes
        1 => Just("x".repeat(763)),
    ]
}

fn arb_attribute() -> impl Strategy<Value = Attribute> {
    prop_oneof![
        arb_addr().prop_map(Attribute::MappedAddress),
        arb_addr().prop_map(Attribute::XorMappedAddress),
        arb_addr().prop_map(Attribute::OtherAddress),
        arb_text().prop_map(Attribute::Software),
        (300u16..=699, arb_text()).prop_map(|(code, reason)| Attribute::ErrorCode { code, reason }),
        vec(any::<u16>(), 0..8).prop_map(Attribute::UnknownAttributes),
        (
            any::<u16>().prop_filter("interpreted types have their own variant", |t| {
                !INTERPRETED_TYPES.contains(t)
            }),
            vec(any::<u8>(), 0..40)
        )
            .prop_map(|(typ, value)| Attribute::Other { typ, value }),
    ]
}

fn arb_class() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::SuccessResponse),
        Just(Class::ErrorResponse),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        arb_class(),
        0u16..0x1000,
        any::<[u8; 12]>(),
        vec(arb_attribute(), 0..8),
        any::<bool>(),
    )
        .prop_map(|(class, method, txid, attributes, fingerprint)| {
            let method = Method::new(method).unwrap();
            let mut msg = Message::new(class, method, TransactionId::from(txid));
            for attribute in attributes {
                msg.push_attribute(attribute)
                    .expect("valid attributes within bounds");
            }
            msg.with_fingerprint(fingerprint)
        })
}

/// A header that passes `is_stun`, around an arbitrary body of a multiple of 4 bytes, so parsing goes past the
/// header checks into the attributes.
fn arb_header_valid_packet() -> impl Strategy<Value = Vec<u8>> {
    (0u16..0x4000, any::<[u8; 12]>(), vec(any::<u8>(), 0..120)).prop_map(|(typ, txid, mut body)| {
        body.truncate(body.len() / 4 * 4);
        let mut p = Vec::with_capacity(20 + body.len());
        p.extend_from_slice(&typ.to_be_bytes());
        p.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        p.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        p.extend_from_slice(&txid);
        p.extend_from_slice(&body);
        p
    })
}

/// What the fuzz target checks: whatever parses is STUN, re-encodes, re-parses to the same message, and encodes
/// stably.
fn check_parsed(packet: &[u8]) {
    if let Ok(msg) = Message::parse(packet) {
        assert!(is_stun(packet));
        assert_eq!(peek_transaction_id(packet), Some(msg.transaction_id()));
        let first = msg.to_bytes();
        assert_eq!(first.len(), msg.encoded_len());
        assert_eq!(
            first.len(),
            packet.len(),
            "padding aside, re-encoding keeps every byte"
        );
        let reparsed = Message::parse(&first).expect("our own encoding parses");
        assert_eq!(reparsed, msg);
        assert_eq!(reparsed.to_bytes(), first);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip(msg in arb_message()) {
        let bytes = msg.to_bytes();
        prop_assert_eq!(Message::parse(&bytes), Ok(msg));
    }

    #[test]
    fn encoded_len_is_exact(msg in arb_message()) {
        let bytes = msg.to_bytes();
        prop_assert_eq!(bytes.len(), msg.encoded_len());
        // Through another `BufMut` the bytes are the same.
        let mut buf = bytes::BytesMut::new();
        msg.encode(&mut buf);
        prop_assert_eq!(&buf[..], &bytes[..]);
    }

    #[test]
    fn is_stun_agrees_with_parse(msg in arb_message()) {
        let bytes = msg.to_bytes();
        prop_assert!(is_stun(&bytes));
        prop_assert_eq!(peek_transaction_id(&bytes), Some(msg.transaction_id()));
        // Truncated or extended, the header no longer matches the length, and both reject it.
        let extended = [&bytes[..], &[0, 0, 0, 0][..]].concat();
        prop_assert!(!is_stun(&extended));
        prop_assert!(Message::parse(&extended).is_err());
        let truncated = &bytes[..bytes.len() - 1];
        prop_assert!(!is_stun(truncated));
        prop_assert!(Message::parse(truncated).is_err());
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..200)) {
        check_parsed(&bytes);
    }

    #[test]
    fn parse_never_panics_behind_a_valid_header(packet in arb_header_valid_packet()) {
        prop_assert!(is_stun(&packet));
        check_parsed(&packet);
    }

    #[test]
    fn parse_never_panics_on_mutated_messages(
        msg in arb_message(),
        mutations in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        keep_header_consistent in any::<bool>(),
        cut in any::<Option<prop::sample::Index>>(),
    ) {
        let mut bytes = msg.to_bytes();
        for (index, byte) in mutations {
            let i = index.index(bytes.len());
            bytes[i] ^= byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if keep_header_consistent && bytes.len() >= 20 {
            // Repair the header so that the attribute parser sees the damage.
            bytes[0] &= 0x3F;
            bytes[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            bytes.truncate(20 + (bytes.len() - 20) / 4 * 4);
            let len = u16::try_from(bytes.len() - 20).unwrap();
            bytes[2..4].copy_from_slice(&len.to_be_bytes());
        }
        check_parsed(&bytes);
    }
}
