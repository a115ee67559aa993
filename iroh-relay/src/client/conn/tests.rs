use iroh_base::SecretKey;

use super::*;
use crate::protos::frame::{Datagrams, StatusCode};

const INTERVAL: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(3);
const SECOND: Duration = Duration::from_secs(1);

fn core(now: Instant) -> ConnCore<u32> {
    ConnCore::new(now, INTERVAL, PING_TIMEOUT)
}

fn transmits(core: &mut ConnCore<u32>) -> Vec<Frame> {
    std::iter::from_fn(|| core.poll_transmit()).collect()
}

fn events(core: &mut ConnCore<u32>) -> Vec<CoreEvent<u32>> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

/// Advances virtual time to the core's next deadline and handles it.
fn step(core: &mut ConnCore<u32>) -> Instant {
    let at = core.poll_timeout().expect("a live core has a deadline");
    core.handle_timeout(at);
    at
}

#[test]
fn keepalive_goes_out_only_when_idle() {
    let start = Instant::now();
    let mut core = core(start);
    // Busy sending: the keepalive deadline keeps moving.
    for i in 1..=5 {
        core.on_sent(start + SECOND * 5 * i);
        core.handle_frame(start + SECOND * 5 * i, Frame::KeepAlive);
        core.handle_timeout(start + SECOND * 5 * i);
        assert!(transmits(&mut core).is_empty());
    }
    let last = start + SECOND * 25;
    assert_eq!(core.poll_timeout(), Some(last + INTERVAL));
    // Idle for an interval, but the server keeps talking: a keepalive and no probe.
    core.handle_frame(last + INTERVAL - SECOND, Frame::KeepAlive);
    assert_eq!(step(&mut core), last + INTERVAL);
    assert_eq!(transmits(&mut core), vec![Frame::KeepAlive]);
    assert_eq!(core.poll_timeout(), Some(last + INTERVAL * 2 - SECOND));
}

#[test]
fn silence_is_probed_then_declared_dead() {
    let start = Instant::now();
    let mut core = core(start);
    // After an interval of silence: one probe ping (which also serves as the keepalive).
    assert_eq!(step(&mut core), start + INTERVAL);
    let sent = transmits(&mut core);
    assert!(matches!(sent[..], [Frame::Ping(_)]), "{sent:?}");
    // Nothing more until the probe times out, then dead.
    assert_eq!(core.poll_timeout(), Some(start + INTERVAL + PING_TIMEOUT));
    assert_eq!(step(&mut core), start + INTERVAL + PING_TIMEOUT);
    assert!(transmits(&mut core).is_empty());
    assert!(matches!(
        events(&mut core)[..],
        [CoreEvent::Dead { silent_for }] if silent_for == INTERVAL + PING_TIMEOUT
    ));
    assert_eq!(core.poll_timeout(), None);
    // A dead core ignores everything.
    core.handle_frame(start + INTERVAL * 2, Frame::Ping([1; 8]));
    assert!(transmits(&mut core).is_empty());
    assert_eq!(core.send_ping(start + INTERVAL * 2, [2; 8], 7), Err(7));
}

#[test]
fn an_answered_probe_keeps_the_connection_alive() {
    let start = Instant::now();
    let mut core = core(start);
    step(&mut core);
    let [Frame::Ping(probe)] = transmits(&mut core)[..] else {
        panic!("expected a probe");
    };
    core.handle_frame(start + INTERVAL + SECOND, Frame::Pong(probe));
    assert!(
        events(&mut core).is_empty(),
        "a probe's pong is no user event"
    );
    // The next probe comes an interval after the answer; the next keepalive an interval after the probe.
    assert_eq!(core.poll_timeout(), Some(start + INTERVAL * 2));
    let mut now = start;
    for _ in 0..10 {
        now = step(&mut core);
        for frame in transmits(&mut core) {
            if let Frame::Ping(data) = frame {
                core.handle_frame(now, Frame::Pong(data));
            }
        }
        assert!(events(&mut core).is_empty());
    }
    assert!(now >= start + INTERVAL * 10);
}

#[test]
fn server_pings_are_answered_at_once() {
    let start = Instant::now();
    let mut core = core(start);
    core.handle_frame(start + SECOND, Frame::Ping([5; 8]));
    assert_eq!(transmits(&mut core), vec![Frame::Pong([5; 8])]);
    // The pong counts as sending: no keepalive for another interval.
    assert_eq!(core.poll_timeout(), Some(start + SECOND + INTERVAL));
}

#[test]
fn user_pings_match_their_pongs_and_time_out() {
    let start = Instant::now();
    let mut core = core(start);
    core.send_ping(start, [1; 8], 1).unwrap();
    core.send_ping(start + SECOND, [2; 8], 2).unwrap();
    assert_eq!(
        transmits(&mut core),
        vec![Frame::Ping([1; 8]), Frame::Ping([2; 8])]
    );
    // A pong that matches nothing is ignored; the second ping's pong reports its own RTT.
    core.handle_frame(start + SECOND * 2, Frame::Pong([9; 8]));
    core.handle_frame(start + SECOND * 2, Frame::Pong([2; 8]));
    assert!(matches!(
        events(&mut core)[..],
        [CoreEvent::Pong { token: 2, rtt }] if rtt == SECOND
    ));
    // The first ping's pong never comes.
    assert_eq!(step(&mut core), start + PING_TIMEOUT);
    assert!(matches!(events(&mut core)[..], [CoreEvent::PingTimeout(1)]));
    // A late pong is ignored.
    core.handle_frame(start + PING_TIMEOUT + SECOND, Frame::Pong([1; 8]));
    assert!(events(&mut core).is_empty());
}

#[test]
fn pings_in_flight_are_bounded_and_handed_back() {
    let start = Instant::now();
    let mut core = core(start);
    for token in 0..MAX_PINGS_IN_FLIGHT {
        let token = u32::try_from(token).unwrap();
        core.send_ping(start, [u8::try_from(token).unwrap(); 8], token)
            .unwrap();
    }
    assert_eq!(core.send_ping(start, [0xff; 8], 99), Err(99));
    let mut left: Vec<u32> = core.take_pings().collect();
    left.sort_unstable();
    assert_eq!(
        left,
        (0..u32::try_from(MAX_PINGS_IN_FLIGHT).unwrap()).collect::<Vec<_>>()
    );
}

#[test]
fn received_frames_surface_as_events() {
    let start = Instant::now();
    let mut core = core(start);
    let peer = SecretKey::from_bytes(&[3; 32]).public();
    let datagrams = Datagrams::single(&b"hello"[..]);
    core.handle_frame(
        start,
        Frame::RecvDatagrams {
            src: peer,
            datagrams: datagrams.clone(),
        },
    );
    core.handle_frame(start, Frame::PeerGone(peer));
    core.handle_frame(
        start,
        Frame::Status {
            code: StatusCode::Restarting,
            message: "bye".into(),
        },
    );
    core.handle_frame(
        start,
        Frame::Unknown {
            typ: 200,
            body: bytes::Bytes::new(),
        },
    );
    core.handle_frame(start, Frame::ServerAccepted);
    let got: Vec<ReceivedEvent> = events(&mut core)
        .into_iter()
        .map(|e| match e {
            CoreEvent::Received(event) => event,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ReceivedEvent::Datagrams {
                src: peer,
                datagrams
            },
            ReceivedEvent::PeerGone(peer),
            ReceivedEvent::Status {
                code: StatusCode::Restarting,
                message: "bye".into()
            },
        ]
    );
    assert!(transmits(&mut core).is_empty());
}

#[test]
fn poll_timeout_is_the_earliest_deadline() {
    let start = Instant::now();
    let mut core = core(start);
    assert_eq!(core.poll_timeout(), Some(start + INTERVAL));
    core.send_ping(start + SECOND, [1; 8], 1).unwrap();
    assert_eq!(core.poll_timeout(), Some(start + SECOND + PING_TIMEOUT));
    // Handling a timeout early changes nothing.
    core.handle_timeout(start + SECOND * 2);
    assert!(events(&mut core).is_empty());
    assert_eq!(core.poll_timeout(), Some(start + SECOND + PING_TIMEOUT));
}

#[test]
fn a_probe_on_request_declares_a_silent_connection_dead_after_the_ping_timeout() {
    let start = Instant::now();
    let mut core = core(start);
    // The server spoke a moment ago; the driver asks for a probe anyway (the network changed).
    core.handle_frame(start + SECOND, Frame::KeepAlive);
    core.probe_now(start + SECOND * 2);
    let sent = transmits(&mut core);
    assert!(matches!(sent[..], [Frame::Ping(_)]), "{sent:?}");
    // A second request while the probe is out sends nothing more.
    core.probe_now(start + SECOND * 3);
    assert!(transmits(&mut core).is_empty());
    // No answer: dead one ping timeout after the probe, long before an interval of silence.
    assert_eq!(core.poll_timeout(), Some(start + SECOND * 2 + PING_TIMEOUT));
    assert_eq!(step(&mut core), start + SECOND * 2 + PING_TIMEOUT);
    assert!(matches!(
        events(&mut core)[..],
        [CoreEvent::Dead { silent_for }] if silent_for == SECOND + PING_TIMEOUT
    ));
}

#[test]
fn a_requested_probe_is_answered_by_its_pong_alone() {
    let start = Instant::now();
    let mut core = core(start);
    core.probe_now(start);
    let [Frame::Ping(probe)] = transmits(&mut core)[..] else {
        panic!("expected a probe");
    };
    // Frames that were already on their way keep a busy connection alive, but answer nothing: a ping
    // timeout of silence stays fatal.
    let datagrams = || Frame::RecvDatagrams {
        src: SecretKey::from_bytes(&[1; 32]).public(),
        datagrams: Datagrams::single(&b"x"[..]),
    };
    for i in 1..=10 {
        let now = start + SECOND * i;
        core.handle_frame(now, datagrams());
        core.handle_timeout(now);
    }
    let dead =
        |events: Vec<CoreEvent<u32>>| events.iter().any(|e| matches!(e, CoreEvent::Dead { .. }));
    assert!(!dead(events(&mut core)), "alive while frames arrive");
    assert_eq!(
        core.poll_timeout(),
        Some(start + SECOND * 10 + PING_TIMEOUT)
    );
    // Its pong arrives: silence is judged by the interval again.
    transmits(&mut core);
    core.handle_frame(start + SECOND * 11, Frame::Pong(probe));
    core.handle_timeout(start + SECOND * 11 + PING_TIMEOUT);
    assert!(!dead(events(&mut core)), "alive after the pong");
    // A pong that is not the probe's (a stale one, a user ping's) does not end a check.
    core.probe_now(start + SECOND * 12);
    let [Frame::Ping(second)] = transmits(&mut core)[..] else {
        panic!("expected a second probe");
    };
    assert_ne!(second, probe);
    core.handle_frame(start + SECOND * 13, Frame::Pong(probe));
    core.handle_timeout(start + SECOND * 13 + PING_TIMEOUT);
    assert!(
        dead(events(&mut core)),
        "the second probe was never answered"
    );
}
