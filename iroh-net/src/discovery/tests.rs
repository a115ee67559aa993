use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use iroh_base::{NodeAddr, NodeId, SecretKey};

use super::{static_provider::StaticProvider, *};

fn node(n: u8) -> NodeId {
    SecretKey::from_bytes(&[n; 32]).public()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], port))
}

fn data(port: u16) -> NodeData {
    NodeData::new(None, [addr(port)])
}

fn config() -> PublishConfig {
    PublishConfig {
        debounce: Duration::from_millis(20),
        republish: Duration::from_secs(225),
        backoff_min: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
    }
}

#[test]
fn a_burst_of_changes_is_one_publish_of_the_latest() {
    let t0 = Instant::now();
    let mut s = PublishSchedule::new(config());
    assert_eq!(s.poll_timeout(), None, "nothing to publish yet");
    s.set_data(t0, data(1));
    s.set_data(t0 + Duration::from_millis(5), data(2));
    s.set_data(t0 + Duration::from_millis(10), data(3));
    // Due 20 ms after the first change, not pushed back by the later ones.
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(20)));
    assert_eq!(s.poll_publish(t0 + Duration::from_millis(19)), None);
    assert_eq!(
        s.poll_publish(t0 + Duration::from_millis(20)),
        Some(data(3))
    );
    assert_eq!(s.poll_timeout(), None, "one publish at a time");
    assert_eq!(s.poll_publish(t0 + Duration::from_millis(21)), None);
}

#[test]
fn republishes_before_the_ttl_and_publishes_changes_made_during_a_publish() {
    let t0 = Instant::now();
    let mut s = PublishSchedule::new(config());
    s.set_data(t0, data(1));
    let t1 = t0 + Duration::from_millis(20);
    assert_eq!(s.poll_publish(t1), Some(data(1)));
    s.on_result(t1 + Duration::from_millis(3), true, 0.0);
    assert_eq!(s.published(), Some(&data(1)));
    assert_eq!(
        s.poll_timeout(),
        Some(t1 + Duration::from_millis(3) + Duration::from_secs(225))
    );
    let t2 = t1 + Duration::from_secs(225) + Duration::from_millis(3);
    assert_eq!(s.poll_publish(t2), Some(data(1)), "republished");
    // A change while that publish runs is published right after it.
    s.set_data(t2 + Duration::from_millis(1), data(2));
    assert_eq!(s.poll_timeout(), None);
    s.on_result(t2 + Duration::from_millis(2), true, 0.0);
    assert_eq!(
        s.poll_timeout(),
        Some(t2 + Duration::from_millis(22)),
        "the newer data, after the debounce"
    );
    assert_eq!(
        s.poll_publish(t2 + Duration::from_millis(22)),
        Some(data(2))
    );
}

#[test]
fn failures_back_off_exponentially_with_jitter_and_a_cap() {
    let t0 = Instant::now();
    let mut s = PublishSchedule::new(config());
    s.set_data(t0, data(1));
    let mut now = t0 + Duration::from_millis(20);
    let mut delays = Vec::new();
    for _ in 0..9 {
        assert_eq!(s.poll_publish(now), Some(data(1)));
        // Jitter 1.0 (the top of its range) gives the nominal delay; 0.0 gives half.
        s.on_result(now, false, 1.0);
        let due = s.poll_timeout().unwrap();
        delays.push((due - now).as_secs());
        now = due;
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(s.failures(), 9);
    assert_eq!(s.poll_publish(now), Some(data(1)));
    s.on_result(now, false, 0.0);
    assert_eq!(
        s.poll_timeout(),
        Some(now + Duration::from_secs(30)),
        "half with jitter 0"
    );
    // New data does not wait out the backoff.
    s.set_data(now + Duration::from_secs(1), data(2));
    assert_eq!(
        s.poll_timeout(),
        Some(now + Duration::from_secs(1) + Duration::from_millis(20))
    );
    let t = now + Duration::from_secs(1) + Duration::from_millis(20);
    assert_eq!(s.poll_publish(t), Some(data(2)));
    s.on_result(t, true, 0.5);
    assert_eq!(s.failures(), 0, "a success resets the backoff");
    assert_eq!(s.poll_timeout(), Some(t + Duration::from_secs(225)));
}

#[test]
fn empty_data_is_never_published() {
    let t0 = Instant::now();
    let mut s = PublishSchedule::new(config());
    s.set_data(t0, NodeData::default());
    assert_eq!(s.poll_timeout(), None);
    s.set_data(t0, data(1));
    s.set_data(t0 + Duration::from_millis(1), NodeData::default());
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.poll_publish(t0 + Duration::from_secs(1)), None);
}

#[test]
fn config_for_ttl_republishes_at_three_quarters() {
    let c = PublishConfig::for_ttl(Duration::from_secs(300));
    assert_eq!(c.republish, Duration::from_secs(225));
    assert_eq!(c.backoff_max, Duration::from_secs(225));
    let tiny = PublishConfig::for_ttl(Duration::from_secs(0));
    assert_eq!(tiny.republish, Duration::from_secs(1));
}

#[test]
fn static_provider_merges_replaces_and_resolves() {
    let book = StaticProvider::new();
    let peer = node(1);
    assert!(book.resolve(peer).is_none(), "nothing known, no stream");
    book.add_node_addr(NodeAddr::new(peer).with_direct_addresses([addr(1)]));
    book.add_node_addr(NodeAddr::new(peer).with_direct_addresses([addr(2)]));
    assert_eq!(book.get(&peer).unwrap().direct_addresses.len(), 2);
    book.set_node_addr(NodeAddr::new(peer).with_direct_addresses([addr(3)]));
    let known = book.get(&peer).unwrap();
    assert_eq!(
        known.direct_addresses.into_iter().collect::<Vec<_>>(),
        [addr(3)]
    );
    let shared = book.clone();
    assert_eq!(shared.len(), 1, "clones share the book");
    assert_eq!(book.remove(&peer).map(|a| a.node_id), Some(peer));
    assert!(shared.is_empty());
}

#[derive(Debug)]
struct Fake {
    name: &'static str,
    answers: Vec<Result<NodeAddr, &'static str>>,
    published: Arc<Mutex<Vec<NodeData>>>,
}

impl Discovery for Fake {
    fn name(&self) -> &'static str {
        self.name
    }

    fn publish(&self, data: &NodeData) {
        self.published.lock().unwrap().push(data.clone());
    }

    fn resolve(&self, _node: NodeId) -> Option<DiscoveryStream> {
        let name = self.name;
        let items: Vec<_> = self
            .answers
            .iter()
            .cloned()
            .map(|answer| match answer {
                Ok(node_addr) => Ok(DiscoveryItem {
                    node_addr,
                    provenance: name,
                    last_updated: None,
                }),
                Err(why) => Err(DiscoveryError {
                    service: name,
                    elapsed: Duration::from_millis(120),
                    kind: DiscoveryErrorKind::NotFound(why),
                }),
            })
            .collect();
        Some(Box::pin(stream::iter(items)))
    }
}

#[tokio::test]
async fn concurrent_discovery_publishes_to_all_and_merges_answers() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let published = Arc::new(Mutex::new(Vec::new()));
        let peer = node(2);
        let mut all = ConcurrentDiscovery::new();
        all.add(Fake {
            name: "a",
            answers: vec![Err("NXDOMAIN")],
            published: Arc::clone(&published),
        });
        all.add(Fake {
            name: "b",
            answers: vec![Ok(NodeAddr::new(peer).with_direct_addresses([addr(9)]))],
            published: Arc::clone(&published),
        });
        // A service that does not resolve is skipped.
        all.add(StaticProvider::new());
        assert_eq!(all.names(), ["a", "b", "static"]);
        all.publish(&data(5));
        assert_eq!(published.lock().unwrap().len(), 2);

        let results: Vec<_> = all.resolve(peer).unwrap().collect().await;
        assert_eq!(results.len(), 2);
        let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].to_string(), "a: NXDOMAIN after 120 ms");
        let found: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
        assert_eq!(found[0].provenance, "b");
    })
    .await
    .unwrap();
}

#[test]
fn errors_list_what_every_service_said() {
    let errors = DiscoveryErrors(vec![
        DiscoveryError {
            service: "dns",
            elapsed: Duration::from_millis(120),
            kind: DiscoveryErrorKind::NotFound("NXDOMAIN"),
        },
        DiscoveryError {
            service: "pkarr",
            elapsed: Duration::from_millis(3),
            kind: DiscoveryErrorKind::NotFound("no record (404)"),
        },
    ]);
    assert_eq!(
        errors.to_string(),
        "dns: NXDOMAIN after 120 ms; pkarr: no record (404) after 3 ms"
    );
    assert_eq!(
        DiscoveryErrors(Vec::new()).to_string(),
        "no discovery service answered"
    );
}

#[test]
fn dns_origins_are_checked_and_normalized() {
    let origin: dns::DnsOrigin = "Iroh.Test.".parse().unwrap();
    assert_eq!(origin.as_str(), "iroh.test");
    for bad in ["", ".", "a..b", "has space.org", &"x".repeat(64)] {
        assert!(bad.parse::<dns::DnsOrigin>().is_err(), "{bad:?}");
    }
}
