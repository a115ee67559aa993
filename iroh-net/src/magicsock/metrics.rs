//! Counters of what the magic socket sent, received and dropped.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// The socket's counters, updated with relaxed atomics on the hot path.
        #[derive(Debug, Default)]
        pub(crate) struct Metrics {
            $( pub(crate) $name: AtomicU64, )*
        }

        /// A snapshot of the magic socket's counters (see [`Endpoint::stats`](crate::endpoint::Endpoint::stats)).
        /// Every drop is counted somewhere here: the socket never fails a send to quinn.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct SocketStats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Metrics {
            /// Reads every counter.
            pub(crate) fn snapshot(&self) -> SocketStats {
                SocketStats {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                }
            }
        }
    };
}

counters! {
    /// QUIC datagrams sent directly over UDP.
    send_udp,
    /// QUIC datagrams handed to a relay client.
    send_relay,
    /// QUIC datagrams dropped because no way to their node is known, or their address is none of ours.
    send_no_route,
    /// QUIC datagrams not sent over UDP: a system error, a full buffer while the relay carried a copy, the
    /// test filter, or a missing IPv6 socket.
    send_udp_dropped,
    /// QUIC datagrams the relay could not take (its queue full or the client closed, or no client yet).
    send_relay_dropped,
    /// QUIC datagrams received over UDP and given to quinn.
    recv_udp,
    /// QUIC datagrams received through a relay and given to quinn.
    recv_relay,
    /// QUIC datagrams from a source no disco message had confirmed, given to quinn under an alias.
    recv_aliased,
    /// QUIC datagrams from an unknown source that could not open a connection, dropped.
    recv_unknown_dropped,
    /// Received datagrams dropped because the actor's queue or quinn's delivery queue was full.
    recv_queue_full,
    /// Received UDP datagrams dropped by the test filter.
    recv_filtered,
    /// Disco packets received (before authentication).
    disco_recv,
    /// Disco packets dropped as malformed: truncated, too long, or with an invalid sender key.
    disco_invalid,
    /// Disco packets dropped because they did not open: forged, altered, or sealed for another node.
    disco_forged,
    /// Disco packets from senders the socket did not know, dropped unopened because the budget of key
    /// agreements for strangers was spent (a flood of made-up senders).
    disco_over_budget,
    /// Disco keys derived (one X25519 key agreement each, cached after): for the nodes we talk to, and for
    /// strangers within their budget.
    disco_keys_derived,
    /// Disco packets sent over UDP.
    disco_sent_udp,
    /// Disco packets sent through a relay.
    disco_sent_relay,
    /// Disco packets that could not be sent.
    disco_send_failed,
    /// STUN packets received.
    stun_recv,
    /// Port prediction, hard side: extra sockets opened (each sends one ping).
    predict_sockets,
    /// Port prediction, easy side: probes sprayed (counted when a spray ends).
    predict_probes,
    /// Port prediction: direct paths it found (a probe that reached an extra socket, on the hard side; a
    /// probe answered, on the easy side).
    predict_hits,
}

/// Adds one to a counter.
pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
