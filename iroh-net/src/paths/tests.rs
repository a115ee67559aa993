//! Path selection under a virtual clock: two cores talk through a simulated network with latency, loss and
//! links that can be cut, and a relay. No sleeps: time jumps from event to event.

mod predict;
mod sim;

use std::time::Duration;

use self::sim::{Sim, SimConfig};
use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Two active nodes, A knowing B's relay and address, run until A goes direct.
fn direct_sim() -> Sim {
    let mut sim = Sim::new(SimConfig::default());
    sim.a_knows_b(true, true);
    sim.activity(true, true);
    sim.run_until(Duration::from_secs(5), |s| {
        matches!(s.a_conn(), ConnectionType::Direct(_))
    })
    .expect("direct");
    sim
}

#[test]
fn relay_first_then_direct() {
    let mut sim = Sim::new(SimConfig::default());
    // A knows B's relay and public address; B knows nothing of A.
    sim.a_knows_b(true, true);
    sim.activity(true, true);
    sim.run_for(ms(1));
    // Right away: a ping is in flight, so packets go both ways.
    assert!(matches!(sim.a_conn(), ConnectionType::Mixed(addr, _) if addr == sim.b_addr()));
    let b_trusts_a = |s: &Sim| {
        let info = s.b.node_info(s.now, &s.a_id).unwrap();
        info.paths.iter().any(|p| p.addr == s.a_addr() && p.trusted)
    };
    let direct_at = sim.run_until(Duration::from_secs(10), |s| {
        matches!(s.a_conn(), ConnectionType::Direct(_)) && b_trusts_a(s)
    });
    // A's ping and B's pong: one round trip of 2 x 10 ms; B pings back as soon as A's ping arrives.
    assert!(
        direct_at.expect("both sides direct") <= ms(100),
        "took {direct_at:?}"
    );
    assert_eq!(sim.a_conn(), ConnectionType::Direct(sim.b_addr()));
    assert_eq!(sim.b_conn(), ConnectionType::Direct(sim.a_addr()));
    // B learned A's address from the ping (peer-reflexive), and A's relay from the call-me-maybe.
    let info = sim.b.node_info(sim.now, &sim.a_id).unwrap();
    assert!(info.paths[0].sources.contains(&Source::PeerReflexive));
    sim.run_for(ms(100));
    assert!(sim.b.relay_url(&sim.a_id).is_some());
}

#[test]
fn stays_direct_under_heartbeats() {
    let mut sim = direct_sim();
    // Two minutes of traffic: the path never leaves direct, and heartbeats keep coming.
    let changes_before = sim.a_plan_changes;
    let pings_before = sim.pings_sent;
    sim.run_for(Duration::from_secs(120));
    assert_eq!(sim.a_conn(), ConnectionType::Direct(sim.b_addr()));
    assert_eq!(sim.a_plan_changes, changes_before, "no flapping");
    let pings = sim.pings_sent - pings_before;
    // A heartbeat every 2 s per side, plus an upgrade round every minute: NAT mappings stay open.
    assert!((100..=160).contains(&pings), "{pings} pings in 120 s");
}

#[test]
fn blocked_udp_stays_on_the_relay() {
    let mut sim = Sim::new(SimConfig::default());
    sim.a_knows_b(true, true);
    sim.set_udp(false);
    sim.activity(true, true);
    sim.run_for(ms(1));
    assert!(matches!(sim.a_conn(), ConnectionType::Mixed(..)));
    // Once the pings have timed out, only the relay carries traffic, and holepunching keeps retrying.
    sim.run_for(Duration::from_secs(6));
    assert!(
        matches!(sim.a_conn(), ConnectionType::Relay(_)),
        "{} {:#?} {:#?}",
        sim.a_conn(),
        sim.a.node_info(sim.now, &sim.b_id),
        sim.trace
    );
    assert!(
        matches!(sim.b_conn(), ConnectionType::Relay(_)),
        "{}",
        sim.b_conn()
    );
    let pings = sim.pings_sent;
    sim.run_for(Duration::from_secs(30));
    assert!(sim.pings_sent > pings, "holepunching retries while active");
    assert!(matches!(
        sim.a_conn(),
        ConnectionType::Relay(_) | ConnectionType::Mixed(..)
    ));
}

#[test]
fn blackholed_path_falls_back_and_recovers() {
    let mut sim = direct_sim();
    sim.run_for(Duration::from_secs(3));

    sim.set_udp(false);
    let fallback = sim
        .run_until(Duration::from_secs(10), |s| {
            !matches!(s.a_conn(), ConnectionType::Direct(_))
        })
        .expect("falls back");
    // Detected by the next heartbeat (every 2 s) going unanswered for the suspect timeout (400 ms).
    assert!(fallback <= ms(2500), "fallback took {fallback:?}");
    assert!(sim.a_conn_uses_relay());
    // Every packet from now on has the relay in its plan.
    sim.run_for(Duration::from_secs(20));
    assert!(
        matches!(sim.a_conn(), ConnectionType::Relay(_)),
        "{}",
        sim.a_conn()
    );

    sim.set_udp(true);
    let back = sim
        .run_until(Duration::from_secs(10), |s| {
            matches!(s.a_conn(), ConnectionType::Direct(_))
        })
        .expect("direct again");
    // The next holepunch round (every 5 s) finds it.
    assert!(back <= ms(5100), "recovery took {back:?}");
}

/// Two nodes going direct over a path with `loss` each way, exchanging QUIC as a transfer would.
fn transfer_sim(loss: f64, seed: u64) -> Sim {
    let mut sim = Sim::new(SimConfig {
        loss,
        seed,
        ..SimConfig::default()
    });
    sim.a_knows_b(true, true);
    sim.activity(true, true);
    sim.quic(true);
    sim.run_until(Duration::from_secs(10), |s| {
        matches!(s.a_conn(), ConnectionType::Direct(_))
    })
    .expect("direct");
    sim
}

#[test]
fn traffic_keeps_a_lossy_path_direct() {
    // 5% loss each way: about one heartbeat in ten loses its ping or pong. With QUIC arriving, none of
    // that matters: no fallback in a minute, for any of several seeds.
    for seed in 1..=5 {
        let mut sim = transfer_sim(0.05, seed);
        let before = sim.a_fallbacks;
        sim.run_for(Duration::from_secs(60));
        assert_eq!(sim.a_fallbacks, before, "seed {seed}: fell back");
        assert_eq!(sim.a_conn(), ConnectionType::Direct(sim.b_addr()));
    }
}

#[test]
fn a_lost_heartbeat_is_probed_again_not_taken_for_death() {
    // No QUIC at all (an idle connection): only disco tells. 5% loss each way; an unanswered heartbeat is
    // followed by probes every probe interval, so one lost ping or pong never makes the path suspect.
    for seed in 1..=5 {
        let mut sim = Sim::new(SimConfig {
            loss: 0.05,
            seed,
            ..SimConfig::default()
        });
        sim.a_knows_b(true, true);
        sim.activity(true, true);
        sim.run_until(Duration::from_secs(10), |s| {
            matches!(s.a_conn(), ConnectionType::Direct(_))
        })
        .expect("direct");
        let before = sim.a_fallbacks;
        sim.run_for(Duration::from_secs(120));
        assert_eq!(sim.a_fallbacks, before, "seed {seed}: fell back");
    }
}

#[test]
fn a_dead_path_under_traffic_falls_back_within_a_second() {
    for seed in 1..=3 {
        let mut sim = transfer_sim(0.0, seed);
        sim.run_for(Duration::from_millis(3333));
        sim.set_udp(false);
        let fallback = sim
            .run_until(Duration::from_secs(5), |s| {
                !matches!(s.a_conn(), ConnectionType::Direct(_))
            })
            .expect("falls back");
        // Silence (200 ms) and then the suspect timeout (400 ms) of unanswered probes.
        assert!(
            fallback <= ms(700),
            "seed {seed}: fallback took {fallback:?}"
        );
        assert!(sim.a_conn_uses_relay());
    }
}

#[test]
fn traffic_on_a_clean_path_adds_no_pings() {
    let mut sim = transfer_sim(0.0, 1);
    let pings = sim.pings_sent;
    sim.run_for(Duration::from_secs(60));
    // Heartbeats (every 2 s per side) and the upgrade round: what the path needs without traffic.
    let pings = sim.pings_sent - pings;
    assert!(pings <= 70, "{pings} pings in 60 s");
}

#[test]
fn lossy_path_still_goes_direct() {
    let mut sim = Sim::new(SimConfig {
        loss: 0.3,
        ..SimConfig::default()
    });
    sim.a_knows_b(true, true);
    sim.activity(true, true);
    let at = sim.run_until(Duration::from_secs(30), |s| {
        matches!(s.a_conn(), ConnectionType::Direct(_))
            && matches!(s.b_conn(), ConnectionType::Direct(_))
    });
    assert!(at.is_some(), "never direct with 30% loss");
}

#[test]
fn direct_only_without_relay() {
    let mut sim = Sim::new(SimConfig::default());
    sim.a_knows_b(false, true);
    sim.activity(true, true);
    sim.run_for(ms(1));
    // No relay: the only plan is the candidate address, confirmed or not.
    assert_eq!(sim.a_conn(), ConnectionType::Direct(sim.b_addr()));
    sim.run_until(Duration::from_secs(5), |s| {
        matches!(s.b_conn(), ConnectionType::Direct(_))
    })
    .expect("B learns A from its pings");
}

#[test]
fn relay_only_when_no_address_is_known() {
    let mut sim = Sim::new(SimConfig::default());
    sim.a_knows_b(true, false);
    sim.activity(true, true);
    sim.run_for(ms(1));
    assert!(matches!(sim.a_conn(), ConnectionType::Relay(_)));
    // The call-me-maybe gives B A's address; B's pings reach A, which learns B's address and confirms it.
    sim.run_until(Duration::from_secs(5), |s| {
        matches!(s.a_conn(), ConnectionType::Direct(_))
            && matches!(s.b_conn(), ConnectionType::Direct(_))
    })
    .expect("direct through call-me-maybe");
}

#[test]
fn idle_nodes_stop_pinging() {
    let mut sim = Sim::new(SimConfig::default());
    sim.a_knows_b(true, true);
    sim.activity(true, true);
    sim.run_for(Duration::from_secs(10));
    sim.activity(false, false);
    sim.run_for(Duration::from_secs(60));
    let pings = sim.pings_sent;
    sim.run_for(Duration::from_secs(600));
    assert_eq!(sim.pings_sent, pings, "no pings while idle");
    assert_eq!(
        sim.a
            .poll_timeout(sim.now)
            .map(|t| t > sim.now + Duration::from_secs(3600)),
        None
    );
}

#[test]
fn same_seed_same_trace() {
    let run = || {
        let mut sim = Sim::new(SimConfig {
            loss: 0.2,
            ..SimConfig::default()
        });
        sim.a_knows_b(true, true);
        sim.activity(true, true);
        sim.run_for(Duration::from_secs(20));
        (sim.trace.clone(), sim.a_conn())
    };
    assert_eq!(run(), run());
}

mod unit {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use iroh_base::SecretKey;

    use super::*;

    pub(super) fn node(n: u8) -> NodeId {
        SecretKey::from_bytes(&[n; 32]).public()
    }

    pub(super) fn v4(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), port))
    }

    pub(super) fn relay() -> RelayUrl {
        "https://relay.example.org".parse().unwrap()
    }

    pub(super) fn drain(paths: &mut Paths) -> Vec<DiscoTransmit> {
        std::iter::from_fn(|| paths.poll_transmit()).collect()
    }

    fn ping_ids(transmits: &[DiscoTransmit]) -> Vec<(SocketAddr, TxId)> {
        transmits
            .iter()
            .filter_map(|t| match t {
                DiscoTransmit::Ping {
                    dst: SendAddr::Udp(addr),
                    tx_id,
                    ..
                } => Some((*addr, *tx_id)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn unknown_and_replayed_pongs_change_nothing() {
        let now = Instant::now();
        let mut paths = Paths::new(PathConfig::default(), 1);
        let b = node(2);
        paths.add_node_addr(
            now,
            &NodeAddr::new(b).with_direct_addresses([v4(1)]),
            Source::App,
        );
        paths.note_activity(now, b);
        let pings = ping_ids(&drain(&mut paths));
        assert_eq!(pings.len(), 1);
        paths.handle_pong(
            now,
            b,
            &SendAddr::Udp(v4(1)),
            TxId::from_bytes([9; 12]),
            None,
        );
        assert!(
            !matches!(paths.conn_type(now, &b), ConnectionType::Direct(_))
                || paths.relay_url(&b).is_none()
        );
        let info = paths.node_info(now, &b).unwrap();
        assert!(
            !info.paths[0].trusted,
            "a pong for no ping of ours confirms nothing"
        );
        // The real pong confirms; the same pong again is ignored.
        let later = now + ms(30);
        paths.handle_pong(later, b, &SendAddr::Udp(v4(1)), pings[0].1, Some(v4(99)));
        assert!(paths.node_info(later, &b).unwrap().paths[0].trusted);
        assert_eq!(
            paths.node_info(later, &b).unwrap().paths[0].latency,
            Some(ms(30))
        );
        let events: Vec<_> = std::iter::from_fn(|| paths.poll_event()).collect();
        assert!(events.contains(&PathEvent::ObservedOwnAddr {
            node: b,
            addr: v4(99)
        }));
        paths.handle_pong(later + ms(1), b, &SendAddr::Udp(v4(1)), pings[0].1, None);
        assert_eq!(
            paths.node_info(later, &b).unwrap().paths[0].latency,
            Some(ms(30))
        );
    }

    #[test]
    fn lower_latency_and_ipv6_win() {
        let now = Instant::now();
        let mut paths = Paths::new(PathConfig::default(), 1);
        let b = node(2);
        let v6 = SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 7));
        paths.add_node_addr(
            now,
            &NodeAddr::new(b)
                .with_relay_url(relay())
                .with_direct_addresses([v4(1), v4(2), v6]),
            Source::App,
        );
        paths.note_activity(now, b);
        let pings = ping_ids(&drain(&mut paths));
        assert_eq!(pings.len(), 3);
        let id = |addr| pings.iter().find(|(a, _)| *a == addr).unwrap().1;
        // The slow v4 path answers first and becomes best.
        paths.handle_pong(now + ms(50), b, &SendAddr::Udp(v4(1)), id(v4(1)), None);
        assert_eq!(
            paths.conn_type(now + ms(50), &b),
            ConnectionType::Direct(v4(1))
        );
        // A v4 path only 4% faster does not replace it (no flapping on jitter).
        let t = now + ms(48);
        paths.handle_pong(t, b, &SendAddr::Udp(v4(2)), id(v4(2)), None);
        assert_eq!(paths.conn_type(t, &b), ConnectionType::Direct(v4(1)));
        // IPv6 slightly slower (52 vs 50 ms) but within a tenth wins: IPv6 is preferred when close.
        let t = now + ms(52);
        paths.handle_pong(t, b, &SendAddr::Udp(v6), id(v6), None);
        assert_eq!(paths.conn_type(t, &b), ConnectionType::Direct(v6));
    }

    #[test]
    fn new_own_addresses_trigger_call_me_maybe_at_once() {
        let now = Instant::now();
        let mut paths = Paths::new(PathConfig::default(), 1);
        let b = node(2);
        paths.set_own_addrs(now, vec![v4(10)]);
        paths.add_node_addr(now, &NodeAddr::new(b).with_relay_url(relay()), Source::App);
        paths.note_activity(now, b);
        let first = drain(&mut paths);
        assert!(
            first.iter().any(
                |t| matches!(t, DiscoTransmit::CallMeMaybe { addrs, .. } if addrs == &[v4(10)])
            )
        );
        // A moment later our public address is learned: B hears of it now, not at the next round.
        let later = now + ms(300);
        paths.set_own_addrs(later, vec![v4(10), v4(99)]);
        let out = drain(&mut paths);
        assert!(
            out.iter().any(
                |t| matches!(t, DiscoTransmit::CallMeMaybe { addrs, .. } if addrs.contains(&v4(99)))
            ),
            "{out:?}"
        );
        // The same addresses again change nothing.
        paths.set_own_addrs(later, vec![v4(10), v4(99)]);
        assert!(drain(&mut paths).is_empty());
    }

    #[test]
    fn a_ping_through_a_freshly_opened_nat_is_answered_with_a_ping_at_once() {
        let now = Instant::now();
        let mut paths = Paths::new(PathConfig::default(), 1);
        let b = node(2);
        paths.add_node_addr(
            now,
            &NodeAddr::new(b).with_direct_addresses([v4(1)]),
            Source::App,
        );
        paths.note_activity(now, b);
        assert_eq!(
            ping_ids(&drain(&mut paths)).len(),
            1,
            "our first ping (dropped by B's NAT)"
        );
        // 50 ms later B, told by call-me-maybe, pings us from that address: its NAT is open now, so we ping
        // again at once rather than after the minimum ping interval.
        let t = now + ms(50);
        paths.handle_ping(t, b, &SendAddr::Udp(v4(1)), TxId::from_bytes([7; 12]));
        assert_eq!(ping_ids(&drain(&mut paths)).len(), 1);
        // A second ping from B right after does not make us ping again: we pinged since its first.
        paths.handle_ping(
            t + ms(5),
            b,
            &SendAddr::Udp(v4(1)),
            TxId::from_bytes([8; 12]),
        );
        assert!(ping_ids(&drain(&mut paths)).is_empty());
    }

    #[test]
    fn candidates_are_capped() {
        let now = Instant::now();
        let mut paths = Paths::new(PathConfig::default(), 1);
        let b = node(2);
        let relay = relay();
        let addrs: Vec<SocketAddr> = (1..=100).map(v4).collect();
        paths.handle_call_me_maybe(now, b, &relay, &addrs, crate::disco::NatHint::default());
        let info = paths.node_info(now, &b).unwrap();
        assert_eq!(info.paths.len(), PathConfig::default().max_paths);
        assert_eq!(info.relay_url, Some(relay));
    }

    #[test]
    fn a_ping_is_answered_on_its_path() {
        let now = Instant::now();
        let mut paths = Paths::new(PathConfig::default(), 1);
        let a = node(1);
        paths.handle_ping(now, a, &SendAddr::Udp(v4(5)), TxId::from_bytes([3; 12]));
        let out = drain(&mut paths);
        assert!(out.contains(&DiscoTransmit::Pong {
            node: a,
            dst: SendAddr::Udp(v4(5)),
            tx_id: TxId::from_bytes([3; 12]),
            observed: Some(v4(5)),
        }));
        // And we ping back to confirm the path from our side.
        assert_eq!(ping_ids(&out).len(), 1);
        assert_eq!(paths.node_for_addr(&v4(5)), Some(a));
        // A ping through the relay is answered through the relay, with no observed address.
        paths.handle_ping(now, a, &SendAddr::Relay(relay()), TxId::from_bytes([4; 12]));
        assert!(drain(&mut paths).contains(&DiscoTransmit::Pong {
            node: a,
            dst: SendAddr::Relay(relay()),
            tx_id: TxId::from_bytes([4; 12]),
            observed: None,
        }));
    }
}

#[test]
fn a_network_change_finds_a_dead_path_at_once() {
    let mut sim = direct_sim();
    // Just after A's heartbeat, so that the next one is two seconds away.
    let pings = sim.a_pings_sent;
    sim.run_until(Duration::from_secs(3), |s| s.a_pings_sent > pings)
        .expect("a heartbeat");
    sim.run_for(ms(50));
    // A's network changes and the old path dies with it.
    sim.set_udp(false);
    let pings = sim.pings_sent;
    sim.a.network_changed(sim.now, vec![sim.a_addr()]);
    let fell_back = sim.run_until(Duration::from_secs(3), |s| s.a_conn_uses_relay());
    assert!(sim.pings_sent > pings, "the change pings the candidates");
    // The ping sent at the change goes unanswered for the suspect timeout (400 ms): well before the next
    // heartbeat would even have been sent.
    let fell_back = fell_back.expect("falls back to the relay");
    assert!(fell_back <= ms(450), "took {fell_back:?}");
    // The new network works: the path comes back with the next holepunch round.
    sim.set_udp(true);
    sim.run_until(Duration::from_secs(10), |s| {
        matches!(s.a_conn(), ConnectionType::Direct(_))
    })
    .expect("direct again");
}

#[test]
fn a_network_change_leaves_idle_nodes_alone() {
    let mut sim = direct_sim();
    sim.activity(false, false);
    sim.run_for(sim.a.config().session_active_timeout + Duration::from_secs(1));
    let pings = sim.pings_sent;
    sim.a.network_changed(sim.now, vec![sim.a_addr()]);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.pings_sent, pings, "no pings for an idle node");
}

#[test]
fn pongs_to_pings_from_before_a_network_change_do_not_count() {
    let mut sim = direct_sim();
    let sent = sim.a_pings_sent;
    sim.run_until(Duration::from_secs(3), |s| s.a_pings_sent > sent)
        .expect("a heartbeat from A");
    // The network changes while the heartbeat is out. The old path still carries what is already on it,
    // so the heartbeat's pong comes back after the change; nothing sent from 12 ms on arrives.
    sim.run_for(ms(5));
    let changed_at = sim.now;
    sim.a.network_changed(sim.now, vec![sim.a_addr()]);
    sim.run_for(ms(7));
    sim.set_udp(false);
    sim.run_until(Duration::from_secs(3), |s| s.a_conn_uses_relay())
        .expect("falls back to the relay");
    // The late pong did not make the path trusted again: the fallback comes a suspect timeout after the
    // change, not after the next heartbeat.
    let took = sim.now - changed_at;
    assert!(took <= ms(450), "took {took:?}");
}

/// A dialler behind a symmetric NAT, an acceptor behind an address-restricted one: the acceptor's filter
/// drops the dialler's first pings; the acceptor's pings (after the call-me-maybe) go to the address STUN
/// saw, which the symmetric NAT does not forward, but they open the acceptor's filter. Only a dialler that
/// keeps probing gets through then.
fn restricted_sim(loss: f64, seed: u64) -> Sim {
    let mut sim = Sim::new(SimConfig {
        loss,
        seed,
        a_symmetric: true,
        b_address_restricted: true,
        ..SimConfig::default()
    });
    sim.a_knows_b(true, true);
    sim.activity(true, true);
    sim
}

#[test]
fn a_filtering_nat_opened_mid_round_goes_direct_within_the_round() {
    let mut sim = restricted_sim(0.0, 1);
    let at = sim
        .run_until(Duration::from_secs(10), |s| {
            matches!(s.a_conn(), ConnectionType::Direct(_))
                && matches!(s.b_conn(), ConnectionType::Direct(_))
        })
        .expect("direct");
    // Call-me-maybe over the relay (30 ms), B's pings open its filter, A's next probe (every 25 ms) gets
    // in, its pong returns: a few tens of milliseconds, not the next round five seconds later.
    assert!(at <= ms(150), "took {at:?}");
    // B talks to A on the address A's NAT gave it for B, which only A's pings revealed.
    assert_eq!(sim.b_conn(), ConnectionType::Direct(sim.a_addr_for_b()));
}

#[test]
fn a_filtering_nat_with_loss_still_goes_direct_within_a_second() {
    for seed in 1..=20 {
        let mut sim = restricted_sim(0.02, seed);
        let at = sim.run_until(Duration::from_secs(10), |s| {
            matches!(s.a_conn(), ConnectionType::Direct(_))
        });
        assert!(at.is_some_and(|at| at <= ms(1000)), "seed {seed}: {at:?}");
    }
}

#[test]
fn a_node_that_never_goes_direct_backs_off() {
    let mut sim = Sim::new(SimConfig::default());
    sim.a_knows_b(true, true);
    sim.set_udp(false);
    sim.activity(true, false);
    // Rounds after 5, 10, 20, 40 s, then every minute: over ten minutes about a dozen rounds of about 25
    // pings, where a round every 5 s would be 120.
    let start = sim.a_pings_sent;
    sim.run_for(Duration::from_secs(600));
    let pings = sim.a_pings_sent - start;
    assert!((200..=400).contains(&pings), "{pings} pings in 10 minutes");
    let rounds_before = sim.a_pings_sent;
    sim.run_for(Duration::from_secs(59));
    let within_a_minute = sim.a_pings_sent - rounds_before;
    assert!(
        within_a_minute <= 30,
        "at most one round a minute: {within_a_minute} pings"
    );
    // A new candidate starts the backoff over, with a round at once.
    let before = sim.a_pings_sent;
    sim.a_learns(SocketAddr::from(([198, 18, 0, 9], 9)));
    assert!(
        sim.a_pings_sent >= before + 2,
        "both candidates pinged at once"
    );
}

#[test]
fn a_round_probes_every_candidate_for_a_second_then_stops() {
    let mut sim = Sim::new(SimConfig::default());
    sim.a_knows_b(true, true);
    sim.set_udp(false);
    sim.activity(true, false);
    sim.run_for(ms(1000));
    let first_second = sim.a_pings_sent;
    // 20 at 25 ms for half a second, then 5 at 100 ms.
    assert!((22..=28).contains(&first_second), "{first_second} pings");
    sim.run_for(ms(3900));
    assert_eq!(sim.a_pings_sent, first_second, "quiet until the next round");
}

mod call_me_maybe {
    use super::super::*;
    use super::unit::{drain, node, relay, v4};
    use std::time::Instant;

    #[test]
    fn is_answered_with_pings_and_a_call_me_maybe_of_our_own_but_not_twice() {
        let now = Instant::now();
        let mut paths = Paths::new(PathConfig::default(), 1);
        paths.set_own_addrs(now, vec![v4(7)]);
        paths.handle_call_me_maybe(
            now,
            node(2),
            &relay(),
            &[v4(1), v4(2)],
            crate::disco::NatHint::default(),
        );
        let out = drain(&mut paths);
        let pinged: Vec<SocketAddr> = out
            .iter()
            .filter_map(|t| match t {
                DiscoTransmit::Ping {
                    dst: SendAddr::Udp(addr),
                    ..
                } => Some(*addr),
                _ => None,
            })
            .collect();
        assert_eq!(pinged, [v4(1), v4(2)]);
        let asked = |out: &[DiscoTransmit]| {
            out.iter()
                .filter(
                    |t| matches!(t, DiscoTransmit::CallMeMaybe { addrs, .. } if addrs == &[v4(7)]),
                )
                .count()
        };
        assert_eq!(asked(&out), 1, "a call-me-maybe back: {out:?}");
        // The peer answers ours with its own: no call-me-maybe loop, but its addresses are pinged.
        let later = now + Duration::from_millis(60);
        paths.handle_call_me_maybe(
            later,
            node(2),
            &relay(),
            &[v4(1), v4(3)],
            crate::disco::NatHint::default(),
        );
        let out = drain(&mut paths);
        assert_eq!(asked(&out), 0, "{out:?}");
        assert!(out.iter().any(
            |t| matches!(t, DiscoTransmit::Ping { dst: SendAddr::Udp(a), .. } if *a == v4(3))
        ));
    }
}
