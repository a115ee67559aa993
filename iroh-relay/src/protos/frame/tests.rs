use std::num::NonZeroU16;

use iroh_base::SecretKey;
use proptest::prelude::*;

use super::*;

fn node(n: u8) -> NodeId {
    SecretKey::from_bytes(&[n; 32]).public()
}

fn arb_node_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(|seed| SecretKey::from_bytes(&seed).public())
}

fn arb_text() -> impl Strategy<Value = String> {
    ".{0,40}".prop_filter("within MAX_TEXT_LEN", |s| s.len() <= MAX_TEXT_LEN)
}

fn arb_datagrams() -> impl Strategy<Value = Datagrams> {
    (
        0u8..4,
        proptest::collection::vec(any::<u8>(), 0..3000),
        any::<u16>(),
    )
        .prop_map(|(ecn, contents, seg)| {
            // A segment size that fits the payload, or none.
            let segment_size = if contents.is_empty() || seg % 3 == 0 {
                None
            } else {
                NonZeroU16::new(u16::try_from(1 + usize::from(seg) % contents.len()).unwrap())
            };
            Datagrams {
                ecn: Ecn::from_bits(ecn),
                segment_size,
                contents: contents.into(),
            }
        })
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u8>(), any::<[u8; 32]>())
            .prop_map(|(version, nonce)| Frame::ServerChallenge { version, nonce }),
        (any::<u8>(), any::<[u8; 32]>(), any::<Vec<u8>>()).prop_map(|(version, seed, msg)| {
            let key = SecretKey::from_bytes(&seed);
            Frame::ClientAuth {
                version,
                node_id: key.public(),
                signature: key.sign(&msg),
            }
        }),
        Just(Frame::ServerAccepted),
        (any::<u8>(), arb_text()).prop_map(|(code, message)| Frame::ServerDenied {
            reason: DenyReason::from_u8(code),
            message
        }),
        (arb_node_id(), arb_datagrams())
            .prop_map(|(dst, datagrams)| Frame::SendDatagrams { dst, datagrams }),
        (arb_node_id(), arb_datagrams())
            .prop_map(|(src, datagrams)| Frame::RecvDatagrams { src, datagrams }),
        any::<[u8; 8]>().prop_map(Frame::Ping),
        any::<[u8; 8]>().prop_map(Frame::Pong),
        Just(Frame::KeepAlive),
        any::<bool>().prop_map(Frame::NotePreferred),
        arb_node_id().prop_map(Frame::PeerGone),
        (any::<u8>(), arb_text()).prop_map(|(code, message)| Frame::Status {
            code: StatusCode::from_u8(code),
            message
        }),
        (13u8.., proptest::collection::vec(any::<u8>(), 0..100)).prop_map(|(typ, body)| {
            Frame::Unknown {
                typ,
                body: body.into(),
            }
        }),
    ]
}

proptest! {
    #[test]
    fn round_trip(frame in arb_frame()) {
        frame.validate().unwrap();
        let bytes = frame.to_bytes();
        prop_assert_eq!(bytes.len(), frame.encoded_len());
        let (parsed, used) = Frame::parse(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(&parsed, &frame);
        let mut buf = BytesMut::from(&bytes[..]);
        prop_assert_eq!(Frame::decode(&mut buf).unwrap(), Some(frame));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn stream_of_frames_decodes_in_any_split(frames in proptest::collection::vec(arb_frame(), 1..6), split in any::<usize>()) {
        let mut wire = BytesMut::new();
        for frame in &frames {
            frame.encode(&mut wire);
        }
        let split = split % (wire.len() + 1);
        let mut buf = BytesMut::from(&wire[..split]);
        let mut decoded = Vec::new();
        while let Some(frame) = Frame::decode(&mut buf).unwrap() {
            decoded.push(frame);
        }
        buf.extend_from_slice(&wire[split..]);
        while let Some(frame) = Frame::decode(&mut buf).unwrap() {
            decoded.push(frame);
        }
        prop_assert_eq!(decoded, frames);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(Some((frame, used))) = Frame::parse(&bytes) {
            prop_assert!(used <= bytes.len());
            // Whatever parses re-encodes to the same bytes.
            prop_assert_eq!(&frame.to_bytes()[..], &bytes[..used]);
        }
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = Frame::decode(&mut buf);
    }
}

#[test]
fn incomplete_input_asks_for_more() {
    let frame = Frame::Ping([1; 8]);
    let bytes = frame.to_bytes();
    for len in 0..bytes.len() {
        assert_eq!(Frame::parse(&bytes[..len]), Ok(None));
        let mut buf = BytesMut::from(&bytes[..len]);
        assert_eq!(Frame::decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), len, "nothing consumed");
    }
}

#[test]
fn oversize_frame_is_rejected_from_the_header_alone() {
    let mut header = vec![typ::SEND_DATAGRAMS];
    header.extend_from_slice(&(u32::try_from(MAX_FRAME_BODY).unwrap() + 1).to_be_bytes());
    assert!(matches!(
        Frame::parse(&header),
        Err(FrameError::TooLarge { .. })
    ));
    header[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut buf = BytesMut::from(&header[..]);
    assert!(matches!(
        Frame::decode(&mut buf),
        Err(FrameError::TooLarge { len: u32::MAX, .. })
    ));

    let big = Frame::SendDatagrams {
        dst: node(1),
        datagrams: Datagrams::single(vec![0; MAX_PAYLOAD + 1]),
    };
    assert!(matches!(big.validate(), Err(FrameError::TooLarge { .. })));
    let max = Frame::SendDatagrams {
        dst: node(1),
        datagrams: Datagrams::single(vec![0; MAX_PAYLOAD]),
    };
    max.validate().unwrap();
    assert_eq!(Frame::parse(&max.to_bytes()).unwrap().unwrap().0, max);
}

fn raw(typ: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![typ];
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn each_fault_has_its_error() {
    let bad_len = |typ, body: &[u8]| {
        assert!(
            matches!(
                Frame::parse(&raw(typ, body)),
                Err(FrameError::BadLength { .. })
            ),
            "type {typ} with {} bytes",
            body.len()
        );
    };
    bad_len(typ::SERVER_CHALLENGE, &[1; 32]);
    bad_len(typ::CLIENT_AUTH, &[1; 96]);
    bad_len(typ::SERVER_ACCEPTED, &[0]);
    bad_len(typ::KEEP_ALIVE, &[0]);
    bad_len(typ::SERVER_DENIED, &[]);
    bad_len(typ::STATUS, &[]);
    bad_len(typ::SEND_DATAGRAMS, &[0; 34]);
    bad_len(typ::PING, &[0; 7]);
    bad_len(typ::PONG, &[0; 9]);
    bad_len(typ::NOTE_PREFERRED, &[]);
    bad_len(typ::PEER_GONE, &[0; 31]);

    // y = 2 is not a point on the curve.
    let mut bad_key = [0u8; 32];
    bad_key[0] = 2;
    assert_eq!(
        Frame::parse(&raw(typ::PEER_GONE, &bad_key)),
        Err(FrameError::InvalidNodeId {
            typ: typ::PEER_GONE
        })
    );
    let mut body = bad_key.to_vec();
    body.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        Frame::parse(&raw(typ::RECV_DATAGRAMS, &body)),
        Err(FrameError::InvalidNodeId {
            typ: typ::RECV_DATAGRAMS
        })
    );

    assert_eq!(
        Frame::parse(&raw(typ::STATUS, &[0, 0xff, 0xfe])),
        Err(FrameError::InvalidText { typ: typ::STATUS })
    );
    let mut long = vec![1u8];
    long.extend(std::iter::repeat_n(b'a', MAX_TEXT_LEN + 1));
    assert_eq!(
        Frame::parse(&raw(typ::SERVER_DENIED, &long)),
        Err(FrameError::TextTooLong {
            typ: typ::SERVER_DENIED,
            len: MAX_TEXT_LEN + 1
        })
    );
    assert_eq!(
        Frame::parse(&raw(typ::NOTE_PREFERRED, &[2])),
        Err(FrameError::InvalidFlag(2))
    );

    let mut dgram = node(1).as_bytes().to_vec();
    dgram.extend_from_slice(&[0b100, 0, 0, 1, 2, 3]);
    assert_eq!(
        Frame::parse(&raw(typ::SEND_DATAGRAMS, &dgram)),
        Err(FrameError::BadEcn(0b100))
    );
    let mut dgram = node(1).as_bytes().to_vec();
    dgram.extend_from_slice(&[0, 0, 4, 1, 2, 3]);
    assert_eq!(
        Frame::parse(&raw(typ::SEND_DATAGRAMS, &dgram)),
        Err(FrameError::BadSegmentSize {
            segment_size: 4,
            len: 3
        })
    );
}

#[test]
fn unknown_types_are_kept_for_skipping() {
    let bytes = raw(200, b"future");
    let (frame, used) = Frame::parse(&bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(
        frame,
        Frame::Unknown {
            typ: 200,
            body: Bytes::from_static(b"future")
        }
    );
}

#[test]
fn long_texts_are_clipped_at_a_char_boundary() {
    let message = "é".repeat(MAX_TEXT_LEN); // two bytes each
    let frame = Frame::Status {
        code: StatusCode::Healthy,
        message,
    };
    let (parsed, _) = Frame::parse(&frame.to_bytes()).unwrap().unwrap();
    let Frame::Status { message, .. } = parsed else {
        panic!("not a status frame")
    };
    assert_eq!(message.len(), MAX_TEXT_LEN);
    assert!(message.chars().all(|c| c == 'é'));
}

#[test]
fn datagram_batches_split_into_segments() {
    let batch = Datagrams {
        ecn: Ecn::Ect0,
        segment_size: NonZeroU16::new(4),
        contents: Bytes::from_static(b"aaaabbbbcc"),
    };
    let parts: Vec<Bytes> = batch.iter().collect();
    assert_eq!(parts, [&b"aaaa"[..], b"bbbb", b"cc"]);
    assert_eq!(Datagrams::single(&b"xyz"[..]).iter().count(), 1);
}

#[test]
fn decode_does_not_copy_payloads() {
    let frame = Frame::RecvDatagrams {
        src: node(3),
        datagrams: Datagrams::single(vec![7u8; 1200]),
    };
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    let start = buf.as_ptr() as usize;
    let Some(Frame::RecvDatagrams { datagrams, .. }) = Frame::decode(&mut buf).unwrap() else {
        panic!("wrong frame")
    };
    // The payload is a view into the read buffer, just past the header and metadata.
    assert_eq!(
        datagrams.contents.as_ptr() as usize,
        start + HEADER_LEN + DATAGRAM_META_LEN
    );
}

#[test]
fn validated_id_cache_gives_the_same_answers() {
    // y = 2 is not a point on the curve; find a valid id sharing its cache slot (first two bytes mod 1024).
    let mut bad_key = [0u8; 32];
    bad_key[0] = 2;
    let same_slot = (0u32..)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            SecretKey::from_bytes(&seed).public()
        })
        .find(|id| id.as_bytes()[0] == 2 && id.as_bytes()[1] % 4 == 0)
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            Frame::parse(&raw(typ::PEER_GONE, same_slot.as_bytes()))
                .unwrap()
                .unwrap()
                .0,
            Frame::PeerGone(same_slot)
        );
        assert_eq!(
            Frame::parse(&raw(typ::PEER_GONE, &bad_key)),
            Err(FrameError::InvalidNodeId {
                typ: typ::PEER_GONE
            })
        );
    }
}
