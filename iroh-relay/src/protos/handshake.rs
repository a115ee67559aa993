//! The login handshake as sans-IO state machines.
//!
//! ```text
//!  client                                   server
//!    |  <-- ServerChallenge { version, nonce }  |   sent as soon as the upgrade completes
//!    |  --> ClientAuth { version, node_id,      |
//!    |        sign(auth_message(nonce)) }       |   server verifies, then asks access control
//!    |  <-- ServerAccepted | ServerDenied       |
//! ```
//!
//! The nonce is fresh random bytes per connection, so a `ClientAuth` captured on one connection proves
//! nothing on another. The signed message is domain-separated ([`auth_message`]) so that no signature made
//! for another purpose can serve as a login.
//!
//! Both cores follow the quinn-proto style: feed inputs with `handle_frame(now, ..)` and
//! `handle_timeout(now)`, then drain `poll_transmit()` and `poll_event()` until they return `None`, and arm
//! one timer at `poll_timeout()`. They never read the clock or touch a socket.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use iroh_base::{NodeId, SecretKey};

use super::frame::{DenyReason, Frame, NONCE_LEN, PROTOCOL_VERSION};

/// How long the server waits for a client to complete the handshake.
pub const SERVER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The prefix of the message a client signs to log in.
pub const AUTH_DOMAIN: &[u8] = b"iroh-relay auth v1\0";

/// The bytes a client signs to answer `nonce`: [`AUTH_DOMAIN`] followed by the nonce.
pub fn auth_message(nonce: &[u8; NONCE_LEN]) -> [u8; AUTH_DOMAIN.len() + NONCE_LEN] {
    let mut message = [0u8; AUTH_DOMAIN.len() + NONCE_LEN];
    let (domain, rest) = message.split_at_mut(AUTH_DOMAIN.len());
    domain.copy_from_slice(AUTH_DOMAIN);
    rest.copy_from_slice(nonce);
    message
}

/// Why a handshake did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The other side did not complete the handshake in time.
    #[error("handshake timed out")]
    Timeout,
    /// A frame that does not belong at this point of the handshake.
    #[error("unexpected frame type {0} during the handshake")]
    UnexpectedFrame(u8),
    /// The other side speaks another protocol version.
    #[error("unsupported protocol version {0} (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// The client's signature does not verify for the node id it claims.
    #[error("client signature does not verify for node {0}")]
    BadSignature(NodeId),
    /// The server refused the login.
    #[error("server denied the login ({reason:?}): {message}")]
    Denied {
        /// The server's reason code.
        reason: DenyReason,
        /// The server's explanation.
        message: String,
    },
}

/// Server side of the handshake.
///
/// ```text
///   new() --challenge--> AwaitingAuth --valid ClientAuth--> Verified --accept()--> Accepted
///                              |                               |
///                              +--bad auth / timeout----------> Failed <--deny()--+
/// ```
///
/// After [`ServerEvent::Verified`] the driver decides on access (allowlist, denylist, ...) and calls
/// [`ServerHandshake::accept`] or [`ServerHandshake::deny`]; both queue the frame that tells the client.
#[derive(Debug)]
pub struct ServerHandshake {
    nonce: [u8; NONCE_LEN],
    deadline: Instant,
    state: ServerState,
    transmits: VecDeque<Frame>,
    events: VecDeque<ServerEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    AwaitingAuth,
    Verified(NodeId),
    Accepted(NodeId),
    Failed,
}

/// What the server side of the handshake reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// The client proved it holds the key of this node id; call `accept` or `deny`.
    Verified(NodeId),
    /// The handshake failed; close the connection after sending what `poll_transmit` yields.
    Failed(HandshakeError),
}

impl ServerHandshake {
    /// Starts a handshake at `now` with a fresh random `nonce`, queueing the challenge.
    pub fn new(now: Instant, nonce: [u8; NONCE_LEN], timeout: Duration) -> Self {
        let mut transmits = VecDeque::new();
        transmits.push_back(Frame::ServerChallenge {
            version: PROTOCOL_VERSION,
            nonce,
        });
        Self {
            nonce,
            deadline: now + timeout,
            state: ServerState::AwaitingAuth,
            transmits,
            events: VecDeque::new(),
        }
    }

    /// Feeds a frame received from the client.
    pub fn handle_frame(&mut self, _now: Instant, frame: &Frame) {
        match (self.state, frame) {
            (ServerState::AwaitingAuth, Frame::Unknown { .. }) => return, // skipped, as everywhere
            (ServerState::AwaitingAuth, _) => {}
            (ServerState::Verified(_), _) => {
                // After ClientAuth the client must wait for our answer.
                self.fail(
                    HandshakeError::UnexpectedFrame(frame.typ()),
                    DenyReason::ProtocolViolation,
                );
                return;
            }
            // Done: the connection's frames belong to the driver now.
            (ServerState::Accepted(_) | ServerState::Failed, _) => return,
        }
        let Frame::ClientAuth {
            version,
            node_id,
            signature,
        } = *frame
        else {
            self.fail(
                HandshakeError::UnexpectedFrame(frame.typ()),
                DenyReason::ProtocolViolation,
            );
            return;
        };
        if version != PROTOCOL_VERSION {
            self.fail(
                HandshakeError::UnsupportedVersion(version),
                DenyReason::UnsupportedVersion,
            );
            return;
        }
        if node_id
            .verify(&auth_message(&self.nonce), &signature)
            .is_err()
        {
            self.fail(
                HandshakeError::BadSignature(node_id),
                DenyReason::BadSignature,
            );
            return;
        }
        self.state = ServerState::Verified(node_id);
        self.events.push_back(ServerEvent::Verified(node_id));
    }

    /// Admits the verified client. Does nothing unless the client was verified and not yet answered.
    pub fn accept(&mut self) {
        if let ServerState::Verified(node_id) = self.state {
            self.state = ServerState::Accepted(node_id);
            self.transmits.push_back(Frame::ServerAccepted);
        }
    }

    /// Refuses the verified client with `reason`, explained by `message`.
    pub fn deny(&mut self, reason: DenyReason, message: &str) {
        if let ServerState::Verified(_) = self.state {
            self.state = ServerState::Failed;
            self.transmits.push_back(Frame::ServerDenied {
                reason,
                message: message.to_owned(),
            });
        }
    }

    /// Fails the handshake if its deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.deadline
            && matches!(
                self.state,
                ServerState::AwaitingAuth | ServerState::Verified(_)
            )
        {
            self.state = ServerState::Failed;
            self.events
                .push_back(ServerEvent::Failed(HandshakeError::Timeout));
        }
    }

    /// When to call [`ServerHandshake::handle_timeout`], while the handshake is open.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ServerState::AwaitingAuth | ServerState::Verified(_) => Some(self.deadline),
            ServerState::Accepted(_) | ServerState::Failed => None,
        }
    }

    /// The next frame to send to the client.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// The node id once the client has been accepted.
    pub fn accepted(&self) -> Option<NodeId> {
        match self.state {
            ServerState::Accepted(node_id) => Some(node_id),
            _ => None,
        }
    }

    fn fail(&mut self, error: HandshakeError, reason: DenyReason) {
        self.state = ServerState::Failed;
        self.transmits.push_back(Frame::ServerDenied {
            reason,
            message: error.to_string(),
        });
        self.events.push_back(ServerEvent::Failed(error));
    }
}

/// Client side of the handshake.
///
/// ```text
///   new() --> AwaitingChallenge --challenge--> AwaitingVerdict --ServerAccepted--> Accepted
///                   |                               |
///                   +--timeout / bad frame----------+--ServerDenied / timeout--> Failed
/// ```
pub struct ClientHandshake {
    secret_key: SecretKey,
    deadline: Instant,
    state: ClientState,
    transmits: VecDeque<Frame>,
    events: VecDeque<ClientEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    AwaitingChallenge,
    AwaitingVerdict,
    Accepted,
    Failed,
}

/// What the client side of the handshake reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The server admitted us: datagram frames may flow.
    Accepted,
    /// The handshake failed; close the connection.
    Failed(HandshakeError),
}

impl std::fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("node_id", &self.secret_key.public())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ClientHandshake {
    /// Starts waiting at `now` for the server's challenge; the whole handshake must finish within `timeout`.
    pub fn new(now: Instant, secret_key: SecretKey, timeout: Duration) -> Self {
        Self {
            secret_key,
            deadline: now + timeout,
            state: ClientState::AwaitingChallenge,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Feeds a frame received from the server.
    pub fn handle_frame(&mut self, _now: Instant, frame: Frame) {
        match (self.state, frame) {
            (ClientState::AwaitingChallenge, Frame::ServerChallenge { version, nonce }) => {
                if version != PROTOCOL_VERSION {
                    self.fail(HandshakeError::UnsupportedVersion(version));
                    return;
                }
                let signature = self.secret_key.sign(&auth_message(&nonce));
                self.transmits.push_back(Frame::ClientAuth {
                    version: PROTOCOL_VERSION,
                    node_id: self.secret_key.public(),
                    signature,
                });
                self.state = ClientState::AwaitingVerdict;
            }
            (ClientState::AwaitingVerdict, Frame::ServerAccepted) => {
                self.state = ClientState::Accepted;
                self.events.push_back(ClientEvent::Accepted);
            }
            (
                ClientState::AwaitingChallenge | ClientState::AwaitingVerdict,
                Frame::ServerDenied { reason, message },
            ) => self.fail(HandshakeError::Denied { reason, message }),
            // Forward compatibility: frames of unknown types are skipped everywhere.
            (_, Frame::Unknown { .. }) => {}
            (ClientState::AwaitingChallenge | ClientState::AwaitingVerdict, other) => {
                self.fail(HandshakeError::UnexpectedFrame(other.typ()));
            }
            (ClientState::Accepted | ClientState::Failed, _) => {}
        }
    }

    /// Fails the handshake if its deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.deadline && self.poll_timeout().is_some() {
            self.fail(HandshakeError::Timeout);
        }
    }

    /// When to call [`ClientHandshake::handle_timeout`], while the handshake is open.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ClientState::AwaitingChallenge | ClientState::AwaitingVerdict => Some(self.deadline),
            ClientState::Accepted | ClientState::Failed => None,
        }
    }

    /// The next frame to send to the server.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    fn fail(&mut self, error: HandshakeError) {
        self.state = ClientState::Failed;
        self.events.push_back(ClientEvent::Failed(error));
    }
}

#[cfg(test)]
mod tests;
