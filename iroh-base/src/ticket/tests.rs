use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

use proptest::prelude::*;

use super::*;
use crate::SecretKey;

fn addr() -> NodeAddr {
    NodeAddr::new(SecretKey::from_bytes(&[5; 32]).public())
        .with_relay_url("https://relay.example.org:8443".parse().unwrap())
        .with_direct_addresses([
            SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 4433)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, 1)),
        ])
}

fn encode_raw(bytes: &[u8]) -> String {
    format!("{NODE_TICKET_PREFIX}{}", BASE32_LOWER.encode(bytes))
}

#[test]
fn round_trip_and_case_insensitive() {
    let ticket = NodeTicket::new(addr());
    let text = ticket.to_string();
    assert!(text.starts_with("node"));
    assert!(!text[4..].contains(|c: char| c.is_ascii_uppercase()));
    assert_eq!(text.parse::<NodeTicket>().unwrap(), ticket);
    let upper_body = format!("node{}", text[4..].to_ascii_uppercase());
    assert_eq!(upper_body.parse::<NodeTicket>().unwrap(), ticket);
    let bare = NodeTicket::new(NodeAddr::new(addr().node_id));
    assert_eq!(bare.to_string().parse::<NodeTicket>().unwrap(), bare);
}

#[test]
fn each_fault_has_its_error() {
    let good = NodeTicket::new(addr()).to_bytes();

    assert_eq!("".parse::<NodeTicket>(), Err(TicketParseError::WrongPrefix));
    assert_eq!(
        "blobabc".parse::<NodeTicket>(),
        Err(TicketParseError::WrongPrefix)
    );
    assert_eq!("node".parse::<NodeTicket>(), Err(TicketParseError::Empty));
    assert!(matches!(
        "node!!!!".parse::<NodeTicket>(),
        Err(TicketParseError::InvalidBase32 { position: 0 })
    ));
    assert_eq!(NodeTicket::from_bytes(&[]), Err(TicketParseError::Empty));

    let mut future = good.clone();
    future[0] = 7;
    assert_eq!(
        encode_raw(&future).parse::<NodeTicket>(),
        Err(TicketParseError::UnsupportedVersion(7))
    );

    assert!(matches!(
        encode_raw(&good[..20]).parse::<NodeTicket>(),
        Err(TicketParseError::Malformed(_))
    ));

    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0, 0]);
    assert_eq!(
        encode_raw(&trailing).parse::<NodeTicket>(),
        Err(TicketParseError::TrailingBytes(2))
    );

    let mut bad_key = good.clone();
    bad_key[1..33].copy_from_slice(&[0; 32]);
    bad_key[1] = 2; // y = 2 is not on the curve
    assert_eq!(
        encode_raw(&bad_key).parse::<NodeTicket>(),
        Err(TicketParseError::InvalidNodeId(KeyParsingError::InvalidKey))
    );

    let wire = TicketV0 {
        node_id: *addr().node_id.as_bytes(),
        relay_url: Some("ftp://relay.example.org".into()),
        direct_addresses: vec![],
    };
    let mut bytes = vec![VERSION];
    bytes.extend(postcard::to_stdvec(&wire).unwrap());
    assert!(matches!(
        encode_raw(&bytes).parse::<NodeTicket>(),
        Err(TicketParseError::InvalidRelayUrl(
            RelayUrlParseError::UnsupportedScheme(_)
        ))
    ));
}

#[test]
fn serde_forms() {
    let ticket = NodeTicket::new(addr());
    let json = serde_json::to_string(&ticket).unwrap();
    assert_eq!(json, format!("\"{ticket}\""));
    assert_eq!(serde_json::from_str::<NodeTicket>(&json).unwrap(), ticket);
    let bin = postcard::to_stdvec(&ticket).unwrap();
    assert_eq!(postcard::from_bytes::<NodeTicket>(&bin).unwrap(), ticket);
}

#[test]
fn node_addr_serde_forms() {
    let addr = addr();
    let json = serde_json::to_value(&addr).unwrap();
    assert_eq!(json["node_id"], addr.node_id.to_string());
    assert_eq!(json["relay_url"], "https://relay.example.org:8443/");
    assert_eq!(json["direct_addresses"][0], "192.0.2.1:4433");
    assert_eq!(serde_json::from_value::<NodeAddr>(json).unwrap(), addr);
    let bin = postcard::to_stdvec(&addr).unwrap();
    assert_eq!(postcard::from_bytes::<NodeAddr>(&bin).unwrap(), addr);
}

#[test]
fn ticket_drops_scope_ids() {
    let scoped = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 7, 3));
    let ticket = NodeTicket::new(NodeAddr::new(addr().node_id).with_direct_addresses([scoped]));
    let back: NodeTicket = ticket.to_string().parse().unwrap();
    let unscoped = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 0, 0));
    assert_eq!(back.node_addr().direct_addresses.first(), Some(&unscoped));
}

fn arb_socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        // Scope ids are local interface numbers and are not carried (see `ticket_drops_scope_ids`).
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(
            ip.into(),
            port,
            0,
            0
        ))),
    ]
}

fn arb_node_addr() -> impl Strategy<Value = NodeAddr> {
    (
        any::<[u8; 32]>(),
        proptest::option::of("[a-z]{1,12}(\\.[a-z]{1,8}){0,2}"),
        any::<bool>(),
        proptest::option::of(any::<u16>()),
        proptest::collection::btree_set(arb_socket_addr(), 0..6),
    )
        .prop_map(|(seed, host, tls, port, addrs)| {
            let relay = host.map(|host| {
                let scheme = if tls { "https" } else { "http" };
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                format!("{scheme}://{host}{port}").parse().unwrap()
            });
            NodeAddr::from_parts(SecretKey::from_bytes(&seed).public(), relay, addrs)
        })
}

proptest! {
    #[test]
    fn tickets_round_trip(addr in arb_node_addr()) {
        let ticket = NodeTicket::new(addr);
        let text = ticket.to_string();
        prop_assert_eq!(text.parse::<NodeTicket>().unwrap(), ticket.clone());
        prop_assert_eq!(NodeTicket::from_bytes(&ticket.to_bytes()).unwrap(), ticket);
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = NodeTicket::from_bytes(&bytes);
        let _ = encode_raw(&bytes).parse::<NodeTicket>();
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = text.parse::<NodeTicket>();
        }
    }

    #[test]
    fn truncated_tickets_are_rejected(addr in arb_node_addr(), cut in 0usize..100) {
        let bytes = NodeTicket::new(addr).to_bytes();
        let cut = cut % bytes.len();
        prop_assert!(NodeTicket::from_bytes(&bytes[..cut]).is_err());
    }
}
