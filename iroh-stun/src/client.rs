//! A tokio driver for [`ClientTransaction`]: ask a STUN server for our reflexive address.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::transaction::{BadResponse, ClientTransaction, Event, TransactionConfig};

/// Our address as a STUN server saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reflexive {
    /// The reflexive transport address: where the server saw the request come from.
    pub addr: SocketAddr,
    /// Round-trip time of the request, or `None` if it had to be retransmitted (Karn's algorithm).
    pub rtt: Option<Duration>,
    /// The server's alternate address (RFC 5780 OTHER-ADDRESS), if it named one.
    pub other: Option<SocketAddr>,
}

/// Why [`query_reflexive_addr`] found no address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// Sending or receiving on the socket failed (this includes a hard ICMP error reported by the socket, which
    /// RFC 8489 section 6.2.1 counts as a failed transaction).
    #[error("STUN query I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// No response after all retransmissions and the final wait.
    #[error("STUN query timed out")]
    TimedOut,
    /// The server answered with an error response.
    #[error("STUN server answered {code} {reason}")]
    ErrorResponse {
        /// The ERROR-CODE code.
        code: u16,
        /// The ERROR-CODE reason phrase.
        reason: String,
    },
    /// The server's response fails the transaction (see [`BadResponse`]).
    #[error("unusable STUN response: {0}")]
    BadResponse(#[from] BadResponse),
}

/// Sends a Binding request from `socket` to `server`, retransmitting per `config`, and returns the reflexive
/// address from the response.
///
/// While it runs, this reads every datagram arriving on `socket`: those that are not the response (other
/// senders, other protocols, other transactions) are dropped, so do not share the socket with a concurrent
/// reader. Uses tokio's clock, so it follows `tokio::time::pause` in tests.
pub async fn query_reflexive_addr(
    socket: &UdpSocket,
    server: SocketAddr,
    config: TransactionConfig,
) -> Result<Reflexive, QueryError> {
    let mut transaction = ClientTransaction::new(Instant::now().into_std(), server, config);
    // Large enough for any STUN response we accept; longer datagrams are truncated and then fail to parse.
    let mut buf = vec![0u8; 2048];
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    loop {
        // Drain contract: transmits, then the event, then re-arm the single timer.
        let now = Instant::now().into_std();
        while let Some(transmit) = transaction.poll_transmit(now) {
            socket
                .send_to(transmit.contents, transmit.destination)
                .await?;
        }
        if let Some(event) = transaction.poll_event() {
            return match event {
                Event::Success {
                    reflexive,
                    rtt,
                    other,
                } => Ok(Reflexive {
                    addr: reflexive,
                    rtt,
                    other,
                }),
                Event::Error { code, reason } => Err(QueryError::ErrorResponse { code, reason }),
                Event::BadResponse(bad) => Err(QueryError::BadResponse(bad)),
                Event::TimedOut => Err(QueryError::TimedOut),
            };
        }
        let Some(deadline) = transaction.poll_timeout() else {
            // Not reachable through the drain contract (a transaction that is not done is always waiting after
            // its transmits are drained); treat it as the end of the transaction rather than wait forever.
            return Err(QueryError::TimedOut);
        };
        timer.as_mut().reset(Instant::from_std(deadline));
        tokio::select! {
            () = &mut timer => transaction.handle_timeout(Instant::now().into_std()),
            received = socket.recv_from(&mut buf) => {
                let (len, from) = received?;
                let packet = buf.get(..len).unwrap_or_default();
                // `NotForUs` datagrams are dropped: this function owns the socket while it runs.
                let _ = transaction.handle_input(Instant::now().into_std(), from, packet);
            }
        }
    }
}
