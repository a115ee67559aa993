use super::*;
use crate::protos::frame::Frame;

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 32])
}

/// Runs frames between the two cores until neither has anything to send.
fn pump(server: &mut ServerHandshake, client: &mut ClientHandshake, now: Instant) {
    loop {
        let mut moved = false;
        while let Some(frame) = server.poll_transmit() {
            client.handle_frame(now, frame);
            moved = true;
        }
        while let Some(frame) = client.poll_transmit() {
            server.handle_frame(now, &frame);
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

#[test]
fn successful_login() {
    let now = Instant::now();
    let mut server = ServerHandshake::new(now, [9; 32], SERVER_HANDSHAKE_TIMEOUT);
    let mut client = ClientHandshake::new(now, key(1), SERVER_HANDSHAKE_TIMEOUT);
    pump(&mut server, &mut client, now);
    assert_eq!(
        server.poll_event(),
        Some(ServerEvent::Verified(key(1).public()))
    );
    server.accept();
    pump(&mut server, &mut client, now);
    assert_eq!(client.poll_event(), Some(ClientEvent::Accepted));
    assert_eq!(server.accepted(), Some(key(1).public()));
    assert_eq!(server.poll_timeout(), None);
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn access_control_denial_reaches_the_client() {
    let now = Instant::now();
    let mut server = ServerHandshake::new(now, [9; 32], SERVER_HANDSHAKE_TIMEOUT);
    let mut client = ClientHandshake::new(now, key(1), SERVER_HANDSHAKE_TIMEOUT);
    pump(&mut server, &mut client, now);
    assert!(matches!(
        server.poll_event(),
        Some(ServerEvent::Verified(_))
    ));
    server.deny(DenyReason::NotAllowed, "not on the allowlist");
    pump(&mut server, &mut client, now);
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::Failed(HandshakeError::Denied {
            reason: DenyReason::NotAllowed,
            message: "not on the allowlist".into(),
        }))
    );
    assert_eq!(server.accepted(), None);
}

#[test]
fn a_captured_login_does_not_work_on_another_connection() {
    let now = Instant::now();
    // Connection 1: capture the ClientAuth.
    let mut server1 = ServerHandshake::new(now, [1; 32], SERVER_HANDSHAKE_TIMEOUT);
    let mut client = ClientHandshake::new(now, key(1), SERVER_HANDSHAKE_TIMEOUT);
    client.handle_frame(now, server1.poll_transmit().unwrap());
    let captured = client.poll_transmit().unwrap();
    // Connection 2 has a different nonce: replaying the capture fails.
    let mut server2 = ServerHandshake::new(now, [2; 32], SERVER_HANDSHAKE_TIMEOUT);
    let _challenge = server2.poll_transmit();
    server2.handle_frame(now, &captured);
    assert_eq!(
        server2.poll_event(),
        Some(ServerEvent::Failed(HandshakeError::BadSignature(
            key(1).public()
        )))
    );
    assert!(matches!(
        server2.poll_transmit(),
        Some(Frame::ServerDenied {
            reason: DenyReason::BadSignature,
            ..
        })
    ));
}

#[test]
fn a_signature_by_another_key_is_rejected() {
    let now = Instant::now();
    let nonce = [5; 32];
    let mut server = ServerHandshake::new(now, nonce, SERVER_HANDSHAKE_TIMEOUT);
    let _challenge = server.poll_transmit();
    // Claims to be node 1, signs with node 2's key.
    server.handle_frame(
        now,
        &Frame::ClientAuth {
            version: PROTOCOL_VERSION,
            node_id: key(1).public(),
            signature: key(2).sign(&auth_message(&nonce)),
        },
    );
    assert_eq!(
        server.poll_event(),
        Some(ServerEvent::Failed(HandshakeError::BadSignature(
            key(1).public()
        )))
    );
    // A signature over the bare nonce (no domain) is not a login either.
    let mut server = ServerHandshake::new(now, nonce, SERVER_HANDSHAKE_TIMEOUT);
    server.handle_frame(
        now,
        &Frame::ClientAuth {
            version: PROTOCOL_VERSION,
            node_id: key(1).public(),
            signature: key(1).sign(&nonce),
        },
    );
    assert!(matches!(
        server.poll_event(),
        Some(ServerEvent::Failed(HandshakeError::BadSignature(_)))
    ));
}

#[test]
fn timeouts_under_virtual_time() {
    let start = Instant::now();
    let timeout = Duration::from_secs(10);
    let mut server = ServerHandshake::new(start, [0; 32], timeout);
    assert_eq!(server.poll_timeout(), Some(start + timeout));
    server.handle_timeout(start + timeout - Duration::from_millis(1));
    assert_eq!(server.poll_event(), None);
    server.handle_timeout(start + timeout);
    assert_eq!(
        server.poll_event(),
        Some(ServerEvent::Failed(HandshakeError::Timeout))
    );
    assert_eq!(server.poll_timeout(), None);

    let mut client = ClientHandshake::new(start, key(1), timeout);
    client.handle_timeout(start + timeout);
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::Failed(HandshakeError::Timeout))
    );
    client.handle_timeout(start + timeout * 2);
    assert_eq!(client.poll_event(), None, "fails once");
}

#[test]
fn protocol_violations() {
    let now = Instant::now();
    // Server: a datagram frame instead of ClientAuth.
    let mut server = ServerHandshake::new(now, [0; 32], SERVER_HANDSHAKE_TIMEOUT);
    server.handle_frame(now, &Frame::KeepAlive);
    assert_eq!(
        server.poll_event(),
        Some(ServerEvent::Failed(HandshakeError::UnexpectedFrame(9)))
    );
    // Server: wrong version.
    let mut server = ServerHandshake::new(now, [0; 32], SERVER_HANDSHAKE_TIMEOUT);
    server.handle_frame(
        now,
        &Frame::ClientAuth {
            version: 2,
            node_id: key(1).public(),
            signature: key(1).sign(b""),
        },
    );
    assert_eq!(
        server.poll_event(),
        Some(ServerEvent::Failed(HandshakeError::UnsupportedVersion(2)))
    );
    // Server: unknown frames are skipped.
    let mut server = ServerHandshake::new(now, [0; 32], SERVER_HANDSHAKE_TIMEOUT);
    server.handle_frame(
        now,
        &Frame::Unknown {
            typ: 99,
            body: Default::default(),
        },
    );
    assert_eq!(server.poll_event(), None);
    // Client: accepted before any challenge.
    let mut client = ClientHandshake::new(now, key(1), SERVER_HANDSHAKE_TIMEOUT);
    client.handle_frame(now, Frame::ServerAccepted);
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::Failed(HandshakeError::UnexpectedFrame(3)))
    );
    // Client: a server of another version.
    let mut client = ClientHandshake::new(now, key(1), SERVER_HANDSHAKE_TIMEOUT);
    client.handle_frame(
        now,
        Frame::ServerChallenge {
            version: 7,
            nonce: [0; 32],
        },
    );
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::Failed(HandshakeError::UnsupportedVersion(7)))
    );
    assert_eq!(
        client.poll_transmit(),
        None,
        "no login sent to an unknown version"
    );
}
