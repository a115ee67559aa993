//! Tests of [`respond`], the sans-IO server logic. The tokio driver is tested in `tests/server_client.rs`.

use super::*;
use crate::TransactionId;

const TXID: [u8; 12] = [9; 12];

fn txid() -> TransactionId {
    TransactionId::from(TXID)
}

fn request() -> Message {
    Message::binding_request(txid())
}

fn answer(from: &str, msg: &Message, software: Option<&str>) -> Option<Message> {
    respond(from.parse().unwrap(), &msg.to_bytes(), software).expect("well-formed request")
}

#[test]
fn binding_request_gets_xor_mapped_address() {
    for from in ["198.51.100.1:40000", "[2001:db8::7]:1"] {
        let response = answer(from, &request(), None).expect("answered");
        assert_eq!(response.class(), Class::SuccessResponse);
        assert_eq!(response.method(), Method::BINDING);
        assert_eq!(response.transaction_id(), txid());
        assert_eq!(response.xor_mapped_address(), Some(from.parse().unwrap()));
        assert_eq!(response.software(), None);
        assert!(response.fingerprint());
        // And it survives the wire.
        assert_eq!(Message::parse(&response.to_bytes()), Ok(response));
    }
}

#[test]
fn software_is_included_when_given() {
    let response = answer("198.51.100.1:1", &request(), Some("iroh-stun test")).unwrap();
    assert_eq!(response.software(), Some("iroh-stun test"));
    assert!(matches!(
        respond(
            "198.51.100.1:1".parse().unwrap(),
            &request().to_bytes(),
            Some(&"x".repeat(764))
        ),
        Err(ServerError::Encode(EncodeError::TextTooLong { .. }))
    ));
}

#[test]
fn ipv4_mapped_peer_is_answered_as_ipv4() {
    let response = answer("[::ffff:198.51.100.9]:5000", &request(), None).unwrap();
    assert_eq!(
        response.xor_mapped_address(),
        Some("198.51.100.9:5000".parse().unwrap())
    );
}

#[test]
fn fingerprinted_request_is_answered() {
    let response = answer("198.51.100.1:1", &request().with_fingerprint(true), None).unwrap();
    assert_eq!(response.class(), Class::SuccessResponse);
}

#[test]
fn unknown_comprehension_required_attributes_get_420() {
    let mut msg = request();
    for typ in [0x0024, 0x0006, 0x0024] {
        msg.push_attribute(Attribute::Other {
            typ,
            value: vec![1, 2, 3, 4],
        })
        .unwrap();
    }
    // Comprehension-optional unknowns are ignored, not listed.
    msg.push_attribute(Attribute::Other {
        typ: 0x8029,
        value: vec![0; 8],
    })
    .unwrap();
    let response = answer("198.51.100.1:1", &msg, Some("sw")).unwrap();
    assert_eq!(response.class(), Class::ErrorResponse);
    assert_eq!(response.method(), Method::BINDING);
    assert_eq!(response.transaction_id(), txid());
    assert_eq!(response.error_code(), Some((420, "Unknown Attribute")));
    assert_eq!(response.unknown_attributes(), Some(&[0x0006, 0x0024][..]));
    assert_eq!(response.xor_mapped_address(), None);
    assert_eq!(response.software(), Some("sw"));
    assert!(response.fingerprint());
}

#[test]
fn comprehension_optional_unknowns_do_not_prevent_success() {
    let mut msg = request();
    msg.push_attribute(Attribute::Other {
        typ: 0xC001,
        value: vec![1],
    })
    .unwrap();
    msg.push_attribute(Attribute::Software("client".into()))
        .unwrap();
    let response = answer("198.51.100.1:1", &msg, None).unwrap();
    assert_eq!(response.class(), Class::SuccessResponse);
}

#[test]
fn known_but_unexpected_attributes_are_ignored() {
    // ERROR-CODE and XOR-MAPPED-ADDRESS in a request make no sense but are understood: "Known-but-unexpected
    // attributes SHOULD be ignored by the agent."
    let mut msg = request();
    msg.push_attribute(Attribute::ErrorCode {
        code: 500,
        reason: "?".into(),
    })
    .unwrap();
    msg.push_attribute(Attribute::XorMappedAddress("1.1.1.1:1".parse().unwrap()))
        .unwrap();
    let response = answer("198.51.100.1:1", &msg, None).unwrap();
    assert_eq!(response.class(), Class::SuccessResponse);
    assert_eq!(
        response.xor_mapped_address(),
        Some("198.51.100.1:1".parse().unwrap())
    );
}

#[test]
fn other_methods_are_silently_discarded() {
    let msg = Message::new(Class::Request, Method::new(0x003).unwrap(), txid());
    assert_eq!(answer("198.51.100.1:1", &msg, None), None);
}

#[test]
fn indications_and_responses_are_not_answered() {
    for msg in [
        Message::new(Class::Indication, Method::BINDING, txid()),
        Message::binding_success(txid(), "1.2.3.4:5".parse().unwrap()),
        Message::binding_error(txid(), 400, "Bad Request").unwrap(),
    ] {
        assert_eq!(answer("198.51.100.1:1", &msg, None), None);
    }
}

#[test]
fn malformed_packets_are_errors() {
    let from: SocketAddr = "198.51.100.1:1".parse().unwrap();
    assert!(matches!(
        respond(from, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", None),
        Err(ServerError::Malformed(ParseError::NotStun { .. }))
    ));
    let mut bytes = request().with_fingerprint(true).to_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(matches!(
        respond(from, &bytes, None),
        Err(ServerError::Malformed(
            ParseError::FingerprintMismatch { .. }
        ))
    ));
}

#[test]
fn server_config_validates_software() {
    assert_eq!(ServerConfig::default().software(), None);
    let config = ServerConfig::default().with_software("relay").unwrap();
    assert_eq!(config.software(), Some("relay"));
    assert!(matches!(
        ServerConfig::default().with_software("x".repeat(764)),
        Err(EncodeError::TextTooLong { .. })
    ));
}

#[test]
fn other_address_is_sent_on_success_only() {
    let config = ServerConfig::default()
        .with_software("t")
        .unwrap()
        .with_other_address("0.0.0.0:3479".parse().unwrap());
    let from: SocketAddr = "198.51.100.1:40000".parse().unwrap();
    let response = respond_with_config(from, &request().to_bytes(), &config)
        .unwrap()
        .expect("answered");
    assert_eq!(
        response.other_address(),
        Some("0.0.0.0:3479".parse().unwrap())
    );
    assert_eq!(response.software(), Some("t"));
    assert_eq!(Message::parse(&response.to_bytes()), Ok(response));
    // Without it configured, none is sent.
    let plain = respond_with_config(from, &request().to_bytes(), &ServerConfig::default())
        .unwrap()
        .unwrap();
    assert_eq!(plain.other_address(), None);
    // An error response carries none either.
    let mut unknown = request();
    unknown
        .push_attribute(Attribute::Other {
            typ: 0x0042,
            value: vec![],
        })
        .unwrap();
    let error = respond_with_config(from, &unknown.to_bytes(), &config)
        .unwrap()
        .unwrap();
    assert_eq!(error.error_code().map(|(c, _)| c), Some(420));
    assert_eq!(error.other_address(), None);
}
