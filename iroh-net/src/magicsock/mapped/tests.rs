use std::{collections::HashSet, net::Ipv4Addr, sync::Arc};

use iroh_base::SecretKey;
use proptest::prelude::*;

use super::*;

fn node(n: u8) -> NodeId {
    SecretKey::from_bytes(&[n; 32]).public()
}

#[test]
fn addresses_are_stable_and_reversible() {
    let table = MappedAddrs::new();
    assert!(table.is_empty());
    let (a, b) = (node(1), node(2));
    let addr_a = table.get_or_insert(a);
    let addr_b = table.get_or_insert(b);
    assert_ne!(addr_a, addr_b);
    assert_eq!(table.get_or_insert(a), addr_a);
    assert_eq!(table.get(&a), Some(addr_a));
    assert_eq!(table.get(&node(3)), None);
    assert_eq!(table.node_for(&addr_a), Some(a));
    assert_eq!(table.node_for(&addr_b), Some(b));
    assert_eq!(table.len(), 2);
    assert!(table.is_mapped(&addr_a));
}

#[test]
fn addresses_are_unique_local_ipv6_with_the_fixed_port() {
    let table = MappedAddrs::new();
    let SocketAddr::V6(addr) = table.get_or_insert(node(1)) else {
        panic!("mapped addresses are IPv6");
    };
    assert!(addr.ip().is_unique_local());
    assert_eq!(addr.ip().octets()[0], 0xfd);
    assert_eq!(addr.port(), MAPPED_PORT);
}

#[test]
fn injected_prefix_gives_exact_addresses() {
    let table = MappedAddrs::with_prefix([1, 2, 3, 4, 5], 7);
    assert_eq!(
        table.get_or_insert(node(9)),
        "[fd01:203:405:7::1]:12345".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        table.get_or_insert(node(8)),
        "[fd01:203:405:7::2]:12345".parse::<SocketAddr>().unwrap()
    );
    // Interface id 0 and ids not yet handed out are in range but name no node.
    for unused in ["[fd01:203:405:7::]:12345", "[fd01:203:405:7::3]:12345"] {
        let addr: SocketAddr = unused.parse().unwrap();
        assert!(table.is_mapped(&addr));
        assert_eq!(table.node_for(&addr), None);
    }
    // The flow label and scope id do not matter.
    let scoped = SocketAddr::V6(SocketAddrV6::new(
        "fd01:203:405:7::1".parse().unwrap(),
        MAPPED_PORT,
        5,
        6,
    ));
    assert_eq!(table.node_for(&scoped), Some(node(9)));
}

#[test]
fn real_addresses_are_not_mapped() {
    let table = MappedAddrs::with_prefix([1, 2, 3, 4, 5], 7);
    let mapped = table.get_or_insert(node(1));
    let mut wrong_port = mapped;
    wrong_port.set_port(MAPPED_PORT + 1);
    let other_subnet = MappedAddrs::with_prefix([1, 2, 3, 4, 5], 8).get_or_insert(node(1));
    for addr in [
        SocketAddr::from((Ipv4Addr::LOCALHOST, MAPPED_PORT)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, MAPPED_PORT)),
        "[2001:db8::1]:12345".parse().unwrap(),
        wrong_port,
        other_subnet,
    ] {
        assert!(!table.is_mapped(&addr), "{addr}");
        assert_eq!(table.node_for(&addr), None, "{addr}");
    }
}

#[test]
fn tables_in_one_process_do_not_collide() {
    let (one, two) = (MappedAddrs::new(), MappedAddrs::new());
    let a = one.get_or_insert(node(1));
    let b = two.get_or_insert(node(1));
    assert_ne!(a, b);
    assert!(!two.is_mapped(&a));
    assert!(!one.is_mapped(&b));
}

#[test]
fn concurrent_inserts_agree() {
    let table = Arc::new(MappedAddrs::new());
    let nodes: Vec<NodeId> = (0..50).map(node).collect();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (table, nodes) = (table.clone(), nodes.clone());
            std::thread::spawn(move || {
                // Each thread walks the nodes in a different order.
                let mut order = nodes;
                order.rotate_left(t * 13);
                order
                    .into_iter()
                    .map(|n| (n, table.get_or_insert(n)))
                    .collect::<HashMap<_, _>>()
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for r in &results[1..] {
        assert_eq!(r, &results[0]);
    }
    assert_eq!(table.len(), 50);
    let distinct: HashSet<_> = results[0].values().collect();
    assert_eq!(distinct.len(), 50);
    for (n, addr) in &results[0] {
        assert_eq!(table.node_for(addr), Some(*n));
    }
}

proptest! {
    #[test]
    fn the_table_is_a_bijection(seeds in proptest::collection::vec(any::<[u8; 32]>(), 1..30)) {
        let table = MappedAddrs::with_prefix([9; 5], 1);
        let nodes: Vec<NodeId> = seeds.iter().map(|s| SecretKey::from_bytes(s).public()).collect();
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| table.get_or_insert(*n)).collect();
        let distinct_nodes: HashSet<_> = nodes.iter().collect();
        prop_assert_eq!(table.len(), distinct_nodes.len());
        for (n, a) in nodes.iter().zip(&addrs) {
            prop_assert_eq!(table.node_for(a), Some(*n));
            prop_assert_eq!(table.get(n), Some(*a));
        }
    }
}
