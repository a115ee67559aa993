//! Drives [`ClientTransaction`] with fake instants: no sleeps, no sockets.

use super::*;
use crate::attr::Attribute;

const SERVER: &str = "192.0.2.10:3478";
const TXID: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

fn server() -> SocketAddr {
    SERVER.parse().unwrap()
}

fn new_tx(now: Instant) -> ClientTransaction {
    ClientTransaction::with_transaction_id(
        now,
        server(),
        TransactionConfig::default(),
        TransactionId::from(TXID),
    )
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Follows the drain contract until the transaction ends, answering nothing. Returns the offsets of every
/// transmit and of the event, and the event.
fn run_silent(tx: &mut ClientTransaction, start: Instant) -> (Vec<Duration>, Duration, Event) {
    let mut sends = Vec::new();
    let mut now = start;
    loop {
        while let Some(t) = tx.poll_transmit(now) {
            assert_eq!(t.destination, server());
            sends.push(now - start);
        }
        if let Some(event) = tx.poll_event() {
            return (sends, now - start, event);
        }
        now = tx
            .poll_timeout()
            .expect("a live transaction always wants a timer");
        tx.handle_timeout(now);
    }
}

fn success_from_server(observed: SocketAddr) -> Vec<u8> {
    Message::binding_success(TransactionId::from(TXID), observed)
        .with_fingerprint(true)
        .to_bytes()
}

#[test]
fn default_config_is_rfc_values() {
    let c = TransactionConfig::default();
    assert_eq!(c.rto, ms(500));
    assert_eq!(c.max_transmits, 7);
    assert_eq!(c.last_wait_multiplier, 16);
}

#[test]
fn retransmission_schedule_matches_rfc_8489() {
    let start = Instant::now();
    let mut tx = new_tx(start);
    let (sends, end, event) = run_silent(&mut tx, start);
    let expected: Vec<Duration> = [0, 500, 1500, 3500, 7500, 15500, 31500]
        .into_iter()
        .map(ms)
        .collect();
    assert_eq!(sends, expected);
    assert_eq!(end, ms(39_500));
    assert_eq!(event, Event::TimedOut);
    assert!(tx.is_done());
    assert_eq!(tx.poll_timeout(), None);
    assert!(tx.poll_transmit(start + ms(50_000)).is_none());
    assert_eq!(tx.poll_event(), None);
}

#[test]
fn schedule_follows_config() {
    let start = Instant::now();
    let config = TransactionConfig {
        rto: ms(100),
        max_transmits: 3,
        last_wait_multiplier: 2,
    };
    let mut tx = ClientTransaction::new(start, server(), config);
    let (sends, end, event) = run_silent(&mut tx, start);
    assert_eq!(sends, vec![ms(0), ms(100), ms(300)]);
    assert_eq!(end, ms(500));
    assert_eq!(event, Event::TimedOut);

    // Zero transmits means one.
    let config = TransactionConfig {
        max_transmits: 0,
        ..config
    };
    let mut tx = ClientTransaction::new(start, server(), config);
    let (sends, end, _) = run_silent(&mut tx, start);
    assert_eq!(sends, vec![ms(0)]);
    assert_eq!(end, ms(200));
}

#[test]
fn early_timeout_does_nothing() {
    let start = Instant::now();
    let mut tx = new_tx(start);
    assert!(tx.poll_transmit(start).is_some());
    assert!(
        tx.poll_transmit(start).is_none(),
        "one transmit per due time"
    );
    tx.handle_timeout(start + ms(499));
    assert!(tx.poll_transmit(start + ms(499)).is_none());
    assert_eq!(tx.poll_timeout(), Some(start + ms(500)));
    tx.handle_timeout(start + ms(500));
    assert!(tx.poll_transmit(start + ms(500)).is_some());
}

#[test]
fn request_is_a_fingerprinted_binding_request_resent_identically() {
    let start = Instant::now();
    let mut tx = new_tx(start);
    let first = tx.poll_transmit(start).unwrap().contents.to_vec();
    let msg = Message::parse(&first).unwrap();
    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.transaction_id(), TransactionId::from(TXID));
    assert!(msg.fingerprint());
    tx.handle_timeout(start + ms(500));
    let second = tx.poll_transmit(start + ms(500)).unwrap().contents.to_vec();
    assert_eq!(first, second);
}

#[test]
fn success_on_first_transmit_has_rtt() {
    let start = Instant::now();
    let mut tx = new_tx(start);
    tx.poll_transmit(start).unwrap();
    let reflexive: SocketAddr = "203.0.113.5:61000".parse().unwrap();
    let input = tx.handle_input(start + ms(42), server(), &success_from_server(reflexive));
    assert_eq!(input, Input::Consumed);
    assert!(tx.is_done());
    assert_eq!(
        tx.poll_event(),
        Some(Event::Success {
            reflexive,
            rtt: Some(ms(42)),
            other: None,
        })
    );
    assert_eq!(tx.poll_event(), None);
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn success_after_retransmit_has_no_rtt() {
    let start = Instant::now();
    let mut tx = new_tx(start);
    tx.poll_transmit(start).unwrap();
    tx.handle_timeout(start + ms(500));
    tx.poll_transmit(start + ms(500)).unwrap();
    let reflexive: SocketAddr = "[2001:db8::5]:7".parse().unwrap();
    tx.handle_input(start + ms(600), server(), &success_from_server(reflexive));
    assert_eq!(
        tx.poll_event(),
        Some(Event::Success {
            reflexive,
            rtt: None,
            other: None,
        })
    );
}

#[test]
fn mapped_address_is_a_fallback() {
    let start = Instant::now();
    let mut tx = new_tx(start);
    tx.poll_transmit(start).unwrap();
    let reflexive: SocketAddr = "203.0.113.5:1".parse().unwrap();
    let mut msg = Message::new(
        Class::SuccessResponse,
        Method::BINDING,
        TransactionId::from(TXID),
    );
    msg.push_attribute(Attribute::MappedAddress(reflexive))
        .unwrap();
    tx.handle_input(start, server(), &msg.to_bytes());
    assert!(matches!(tx.poll_event(), Some(Event::Success { reflexive: r, .. }) if r == reflexive));
}

#[test]
fn error_response_is_reported() {
    let start = Instant::now();
    let mut tx = new_tx(start);
    tx.poll_transmit(start).unwrap();
    let response = Message::binding_error(TransactionId::from(TXID), 420, "Unknown Attribute")
        .unwrap()
        .to_bytes();
    assert_eq!(tx.handle_input(start, server(), &response), Input::Consumed);
    assert_eq!(
        tx.poll_event(),
        Some(Event::Error {
            code: 420,
            reason: "Unknown Attribute".into()
        })
    );
}

#[test]
fn responses_that_fail_the_transaction() {
    let start = Instant::now();
    let txid = TransactionId::from(TXID);

    let mut with_unknown = Message::binding_success(txid, "1.2.3.4:5".parse().unwrap());
    with_unknown
        .push_attribute(Attribute::Other {
            typ: 0x0042,
            value: vec![],
        })
        .unwrap();
    let no_address = Message::new(Class::SuccessResponse, Method::BINDING, txid);
    let no_error_code = Message::new(Class::ErrorResponse, Method::BINDING, txid);

    for (msg, expected) in [
        (
            with_unknown,
            BadResponse::UnknownComprehensionRequired(vec![0x0042]),
        ),
        (no_address, BadResponse::MissingMappedAddress),
        (no_error_code, BadResponse::MissingErrorCode),
    ] {
        let mut tx = new_tx(start);
        tx.poll_transmit(start).unwrap();
        assert_eq!(
            tx.handle_input(start, server(), &msg.to_bytes()),
            Input::Consumed
        );
        assert_eq!(tx.poll_event(), Some(Event::BadResponse(expected)));
        assert!(tx.is_done());
    }
}

#[test]
fn response_from_wrong_address_is_ignored() {
    let start = Instant::now();
    let mut tx = new_tx(start);
    tx.poll_transmit(start).unwrap();
    let response = success_from_server("1.2.3.4:5".parse().unwrap());
    for from in ["192.0.2.10:3479", "192.0.2.11:3478", "[2001:db8::1]:3478"] {
        assert_eq!(
            tx.handle_input(start, from.parse().unwrap(), &response),
            Input::NotForUs
        );
    }
    assert_eq!(tx.poll_event(), None);
    assert!(!tx.is_done());
    assert_eq!(tx.poll_timeout(), Some(start + ms(500)));
}

#[test]
fn ipv4_mapped_source_counts_as_the_server() {
    let start = Instant::now();
    let mut tx = new_tx(start);
    tx.poll_transmit(start).unwrap();
    let response = success_from_server("1.2.3.4:5".parse().unwrap());
    let mapped: SocketAddr = "[::ffff:192.0.2.10]:3478".parse().unwrap();
    assert_eq!(tx.handle_input(start, mapped, &response), Input::Consumed);
    assert!(matches!(tx.poll_event(), Some(Event::Success { .. })));
}

#[test]
fn wrong_transaction_id_and_non_stun_are_not_for_us() {
    let start = Instant::now();
    let mut tx = new_tx(start);
    tx.poll_transmit(start).unwrap();
    let other =
        Message::binding_success(TransactionId::from([0; 12]), "1.2.3.4:5".parse().unwrap())
            .to_bytes();
    assert_eq!(tx.handle_input(start, server(), &other), Input::NotForUs);
    assert_eq!(tx.handle_input(start, server(), b"hello"), Input::NotForUs);
    assert_eq!(tx.handle_input(start, server(), &[]), Input::NotForUs);
    assert_eq!(tx.poll_event(), None);
    assert!(!tx.is_done());
}

#[test]
fn malformed_or_unexpected_messages_with_our_id_are_dropped() {
    let start = Instant::now();
    let mut tx = new_tx(start);
    tx.poll_transmit(start).unwrap();
    let txid = TransactionId::from(TXID);

    // Bad FINGERPRINT: header fine, so it is ours, but it is discarded and the transaction goes on.
    let mut bad = success_from_server("1.2.3.4:5".parse().unwrap());
    let last = bad.len() - 1;
    bad[last] ^= 0xFF;
    // Our own request reflected back, an indication, and a response of another method.
    let request = Message::binding_request(txid).to_bytes();
    let indication = Message::new(Class::Indication, Method::BINDING, txid).to_bytes();
    let other_method =
        Message::new(Class::SuccessResponse, Method::new(0x003).unwrap(), txid).to_bytes();
    for packet in [&bad, &bad, &request, &indication, &other_method] {
        assert_eq!(tx.handle_input(start, server(), packet), Input::Consumed);
        assert_eq!(tx.poll_event(), None);
        assert!(!tx.is_done());
    }
    assert_eq!(tx.poll_timeout(), Some(start + ms(500)));
}

#[test]
fn done_after_event_absorbs_late_responses() {
    let start = Instant::now();
    let mut tx = new_tx(start);
    tx.poll_transmit(start).unwrap();
    tx.handle_timeout(start + ms(500));
    tx.poll_transmit(start + ms(500)).unwrap();
    let response = success_from_server("1.2.3.4:5".parse().unwrap());
    tx.handle_input(start + ms(510), server(), &response);
    assert!(tx.poll_event().is_some());
    // The response to the retransmission arrives too: absorbed, no second event.
    assert_eq!(
        tx.handle_input(start + ms(520), server(), &response),
        Input::Consumed
    );
    assert_eq!(tx.poll_event(), None);
    tx.handle_timeout(start + ms(100_000));
    assert!(tx.poll_transmit(start + ms(100_000)).is_none());
    assert_eq!(tx.poll_event(), None);
}

#[test]
fn response_before_first_transmit_is_dropped() {
    let start = Instant::now();
    let mut tx = new_tx(start);
    let response = success_from_server("1.2.3.4:5".parse().unwrap());
    assert_eq!(tx.handle_input(start, server(), &response), Input::Consumed);
    assert_eq!(tx.poll_event(), None);
    assert!(tx.poll_transmit(start).is_some());
}

#[test]
fn timeout_after_event_and_huge_config_do_not_panic() {
    let start = Instant::now();
    let config = TransactionConfig {
        rto: Duration::MAX,
        max_transmits: u32::MAX,
        last_wait_multiplier: u32::MAX,
    };
    let mut tx = ClientTransaction::new(start, server(), config);
    assert!(tx.poll_transmit(start).is_some());
    let deadline = tx.poll_timeout().unwrap();
    assert!(deadline > start);
    tx.handle_timeout(deadline);
    assert!(tx.poll_transmit(deadline).is_some());
}

#[test]
fn other_address_is_reported_and_unspecified_ip_means_the_servers() {
    for (sent, expected) in [
        ("0.0.0.0:3479", SocketAddr::new(server().ip(), 3479)),
        ("192.0.2.9:4000", "192.0.2.9:4000".parse().unwrap()),
    ] {
        let start = Instant::now();
        let mut tx = new_tx(start);
        tx.poll_transmit(start).unwrap();
        let reflexive: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let mut msg = Message::binding_success(TransactionId::from(TXID), reflexive);
        msg.push_attribute(Attribute::OtherAddress(sent.parse().unwrap()))
            .unwrap();
        let bytes = msg.with_fingerprint(true).to_bytes();
        assert_eq!(
            tx.handle_input(start + ms(5), server(), &bytes),
            Input::Consumed
        );
        assert_eq!(
            tx.poll_event(),
            Some(Event::Success {
                reflexive,
                rtt: Some(ms(5)),
                other: Some(expected),
            })
        );
    }
}
