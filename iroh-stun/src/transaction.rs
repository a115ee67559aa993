//! A sans-IO STUN client transaction over UDP: one Binding request, retransmitted per RFC 8489 section 6.2.1,
//! until a response arrives or the transaction times out.
//!
//! The core never reads the clock, touches a socket or spawns: the caller passes `now` in and moves bytes.
//!
//! # Drain contract
//!
//! After creating the transaction and after every call to [`ClientTransaction::handle_input`] or
//! [`ClientTransaction::handle_timeout`], the driver must:
//!
//! 1. call [`ClientTransaction::poll_transmit`] until it returns `None`, sending each [`Transmit`];
//! 2. call [`ClientTransaction::poll_event`] until it returns `None` (at most one [`Event`] is ever produced);
//! 3. arm its single timer to [`ClientTransaction::poll_timeout`] (`None`: no timer needed), and call
//!    [`ClientTransaction::handle_timeout`] when it fires.
//!
//! Once the [`Event`] has been produced the transaction is [done](ClientTransaction::is_done): it transmits
//! nothing more, wants no timer, and absorbs late responses to its request without a second event.
//!
//! # Schedule
//!
//! With the defaults (RTO 500 ms, Rc = 7, Rm = 16) requests go out at 0, 500, 1500, 3500, 7500, 15500 and
//! 31500 ms, and the transaction times out at 39500 ms: "If, after the last request, a duration equal to Rm times
//! the RTO has passed without a response [...], the client SHOULD consider the transaction to have failed." The
//! wait after the last request is Rm times the *initial* RTO, as the RFC's own example (31500 + 16 x 500) shows.
//!
//! ```text
//!           new()
//!             |
//!             v
//!     +---> [Due] --poll_transmit--> [Waiting(deadline)] --response--> [Done] (Success | Error | BadResponse)
//!     |                                     |
//!     +--- handle_timeout, sent < Rc -------+
//!                                           |
//!                 handle_timeout, sent = Rc +--------------------------> [Done] (TimedOut)
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{debug, trace};

use crate::message::{Class, Message, Method, TransactionId, peek_transaction_id};

/// Retransmission parameters (RFC 8489 section 6.2.1). [`Default`] gives the RFC's recommended values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionConfig {
    /// Initial retransmission timeout; doubled after each retransmission. RFC default: 500 ms.
    pub rto: Duration,
    /// Rc: how many times the request is sent in total. RFC default: 7. A value of 0 is treated as 1.
    pub max_transmits: u32,
    /// Rm: after the last request, wait `last_wait_multiplier * rto` (initial RTO) before giving up. RFC
    /// default: 16.
    pub last_wait_multiplier: u32,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        Self {
            rto: Duration::from_millis(500),
            max_transmits: 7,
            last_wait_multiplier: 16,
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Where to send it: the STUN server.
    pub destination: SocketAddr,
    /// The encoded Binding request (the same bytes on every retransmission).
    pub contents: &'a [u8],
}

/// What [`ClientTransaction::handle_input`] made of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Not from the server, not STUN, or for another transaction: the driver may hand it to someone else.
    NotForUs,
    /// A STUN message from the server carrying this transaction's id. It was processed, or dropped as malformed or
    /// unexpected (logged at debug); in either case nobody else wants it.
    Consumed,
}

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A success response: the server saw the request come from `reflexive`.
    Success {
        /// Our address as the server saw it (XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS).
        reflexive: SocketAddr,
        /// Time from the request to its response, or `None` if the request was retransmitted, since then the
        /// response cannot be matched to one transmission (Karn's algorithm).
        rtt: Option<Duration>,
        /// The server's alternate address (RFC 5780 OTHER-ADDRESS), if it sent one; an unspecified IP in it is
        /// replaced by the IP of the server this transaction talked to.
        other: Option<SocketAddr>,
    },
    /// An error response.
    Error {
        /// The ERROR-CODE code, in 300..=699.
        code: u16,
        /// The ERROR-CODE reason phrase.
        reason: String,
    },
    /// A response arrived that RFC 8489 says makes the transaction fail.
    BadResponse(BadResponse),
    /// No response after the last retransmission and the final wait.
    TimedOut,
}

/// A well-formed response that still fails the transaction (RFC 8489 sections 6.3.3 and 6.3.4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadResponse {
    /// "If the success response contains unknown comprehension-required attributes, the response is discarded
    /// and the transaction is considered to have failed" (likewise for error responses).
    #[error("response carries unknown comprehension-required attributes {0:04x?}")]
    UnknownComprehensionRequired(Vec<u16>),
    /// A Binding success response without XOR-MAPPED-ADDRESS or MAPPED-ADDRESS.
    #[error("success response carries no mapped address")]
    MissingMappedAddress,
    /// "if the error response does not contain an ERROR-CODE attribute, then the transaction is simply
    /// considered to have failed."
    #[error("error response carries no ERROR-CODE")]
    MissingErrorCode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A (re)transmission is due; `poll_transmit` hands it out.
    Due,
    /// Sent; at `deadline` either retransmit or give up.
    Waiting { deadline: Instant },
    /// Finished; the event may still be waiting in `event`.
    Done,
}

/// One Binding request transaction with its retransmission timer. See the [module docs](self) for the drain
/// contract.
#[derive(Debug)]
pub struct ClientTransaction {
    server: SocketAddr,
    transaction_id: TransactionId,
    request: Vec<u8>,
    config: TransactionConfig,
    state: State,
    /// Requests sent so far.
    transmits: u32,
    /// Timeout to use after the next (re)transmission.
    next_rto: Duration,
    /// When the first request was sent, for the RTT sample.
    first_sent: Option<Instant>,
    event: Option<Event>,
    /// Whether a malformed response has been logged at debug level already (later ones go to trace).
    logged_malformed: bool,
}

impl ClientTransaction {
    /// A transaction for a Binding request (with FINGERPRINT) to `server`, with a random transaction id. The
    /// first request is due immediately.
    pub fn new(now: Instant, server: SocketAddr, config: TransactionConfig) -> Self {
        Self::with_transaction_id(now, server, config, TransactionId::random())
    }

    /// Like [`ClientTransaction::new`] with a chosen transaction id (for deterministic tests).
    pub fn with_transaction_id(
        now: Instant,
        server: SocketAddr,
        config: TransactionConfig,
        transaction_id: TransactionId,
    ) -> Self {
        let request = Message::binding_request(transaction_id)
            .with_fingerprint(true)
            .to_bytes();
        trace!(%server, %transaction_id, ?now, "STUN transaction created, first request due");
        Self {
            server,
            transaction_id,
            request,
            config,
            state: State::Due,
            transmits: 0,
            next_rto: config.rto,
            first_sent: None,
            event: None,
            logged_malformed: false,
        }
    }

    /// The transaction id of the request.
    pub fn transaction_id(&self) -> TransactionId {
        self.transaction_id
    }

    /// The server the request goes to.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Whether the transaction has ended (its [`Event`] may still be waiting in [`ClientTransaction::poll_event`]).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next datagram to send, if one is due.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<'_>> {
        if self.state != State::Due {
            return None;
        }
        self.transmits += 1;
        if self.first_sent.is_none() {
            self.first_sent = Some(now);
        }
        let wait = if self.transmits < self.max_transmits() {
            // "For example, assuming an RTO of 500 ms, requests would be sent at times 0 ms, 500 ms, 1500 ms,
            // 3500 ms, 7500 ms, 15500 ms, and 31500 ms": the RTO doubles after each retransmission.
            let wait = self.next_rto;
            self.next_rto = self.next_rto.saturating_mul(2);
            wait
        } else {
            // "If, after the last request, a duration equal to Rm times the RTO has passed without a response
            // [...], the client SHOULD consider the transaction to have failed."
            self.config
                .rto
                .saturating_mul(self.config.last_wait_multiplier)
        };
        let deadline = add_saturating(now, wait);
        trace!(
            transaction_id = %self.transaction_id,
            attempt = self.transmits,
            ?wait,
            "sending STUN Binding request, waiting for a response"
        );
        self.state = State::Waiting { deadline };
        Some(Transmit {
            destination: self.server,
            contents: &self.request,
        })
    }

    /// When [`ClientTransaction::handle_timeout`] should next be called, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { deadline } => Some(deadline),
            State::Due | State::Done => None,
        }
    }

    /// Advances the timer: schedules a retransmission or times the transaction out. Early calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let State::Waiting { deadline } = self.state else {
            return;
        };
        if now < deadline {
            return;
        }
        if self.transmits < self.max_transmits() {
            debug!(
                transaction_id = %self.transaction_id,
                sent = self.transmits,
                "no STUN response yet, retransmitting"
            );
            self.state = State::Due;
        } else {
            debug!(
                transaction_id = %self.transaction_id,
                sent = self.transmits,
                "no STUN response after the last request and the final wait: timed out"
            );
            self.finish(Event::TimedOut);
        }
    }

    /// Offers a received datagram to the transaction.
    ///
    /// Returns [`Input::NotForUs`] unless the datagram comes from the server (IPv4-mapped IPv6 addresses are
    /// compared as IPv4) and is a STUN message with this transaction's id.
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, packet: &[u8]) -> Input {
        if !same_addr(from, self.server) {
            return Input::NotForUs;
        }
        if peek_transaction_id(packet) != Some(self.transaction_id) {
            return Input::NotForUs;
        }
        if self.state == State::Done {
            trace!(transaction_id = %self.transaction_id, "late STUN response after the transaction ended, dropped");
            return Input::Consumed;
        }
        if self.transmits == 0 {
            debug!(transaction_id = %self.transaction_id, "STUN response before any request was sent, dropped");
            return Input::Consumed;
        }
        let msg = match Message::parse(packet) {
            Ok(msg) => msg,
            Err(error) => {
                // RFC 8489 section 6.3: "If any errors are detected, the message is silently discarded."
                if self.logged_malformed {
                    trace!(transaction_id = %self.transaction_id, %error, "malformed STUN response dropped");
                } else {
                    self.logged_malformed = true;
                    debug!(transaction_id = %self.transaction_id, %error, "malformed STUN response dropped");
                }
                return Input::Consumed;
            }
        };
        // Section 6.3: the agent checks "that the method value is a supported method" and "that the message
        // class is allowed for the particular method"; a request or indication is no answer to our request.
        if !msg.class().is_response() || msg.method() != Method::BINDING {
            debug!(
                transaction_id = %self.transaction_id,
                class = ?msg.class(),
                method = msg.method().value(),
                "STUN message with our transaction id is not a Binding response, dropped"
            );
            return Input::Consumed;
        }
        let unknown = msg.unknown_comprehension_required();
        if !unknown.is_empty() {
            debug!(transaction_id = %self.transaction_id, ?unknown, "response has unknown comprehension-required attributes: failed");
            self.finish(Event::BadResponse(
                BadResponse::UnknownComprehensionRequired(unknown),
            ));
            return Input::Consumed;
        }
        let event = if msg.class() == Class::SuccessResponse {
            match msg.xor_mapped_address().or_else(|| msg.mapped_address()) {
                Some(reflexive) => {
                    // Karn: a sample is only trustworthy if the request went out once.
                    let rtt = match (self.transmits, self.first_sent) {
                        (1, Some(sent)) => Some(now.saturating_duration_since(sent)),
                        _ => None,
                    };
                    debug!(transaction_id = %self.transaction_id, %reflexive, ?rtt, "STUN Binding succeeded");
                    let other = msg.other_address().map(|other| {
                        if other.ip().is_unspecified() {
                            SocketAddr::new(self.server.ip(), other.port())
                        } else {
                            other
                        }
                    });
                    Event::Success {
                        reflexive,
                        rtt,
                        other,
                    }
                }
                None => {
                    debug!(transaction_id = %self.transaction_id, "success response without a mapped address: failed");
                    Event::BadResponse(BadResponse::MissingMappedAddress)
                }
            }
        } else {
            match msg.error_code() {
                Some((code, reason)) => {
                    debug!(transaction_id = %self.transaction_id, code, reason, "STUN Binding error response");
                    Event::Error {
                        code,
                        reason: reason.to_owned(),
                    }
                }
                None => {
                    debug!(transaction_id = %self.transaction_id, "error response without ERROR-CODE: failed");
                    Event::BadResponse(BadResponse::MissingErrorCode)
                }
            }
        };
        self.finish(event);
        Input::Consumed
    }

    /// The transaction's outcome, once (then `None`).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    fn max_transmits(&self) -> u32 {
        self.config.max_transmits.max(1)
    }

    fn finish(&mut self, event: Event) {
        self.state = State::Done;
        self.event = Some(event);
    }
}

/// Compares socket addresses the way a dual-stack socket reports them: an IPv4-mapped IPv6 address equals its
/// IPv4 form; IPv6 flow information and scope id are ignored.
fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// `now + d`, saturating at a far-future instant instead of panicking on overflow.
fn add_saturating(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests;
