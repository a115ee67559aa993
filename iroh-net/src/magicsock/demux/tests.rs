use iroh_base::SecretKey;
use iroh_stun::{Message as StunMessage, TransactionId};
use proptest::prelude::*;

use super::*;

fn disco_packet() -> Vec<u8> {
    let (a, b) = (
        SecretKey::from_bytes(&[1; 32]),
        SecretKey::from_bytes(&[2; 32]),
    );
    let secret = a.shared_secret(&b.public()).unwrap();
    let msg = disco::Message::Ping(disco::Ping {
        tx_id: disco::TxId::from_bytes([7; 12]),
    });
    disco::seal(&msg, &a.public(), &secret)
}

#[test]
fn stun_messages_are_stun() {
    let request = StunMessage::binding_request(TransactionId::random());
    assert_eq!(classify(&request.to_bytes()), PacketKind::Stun);
    let request = request.with_fingerprint(true);
    assert_eq!(classify(&request.to_bytes()), PacketKind::Stun);
    let response =
        StunMessage::binding_success(TransactionId::random(), "192.0.2.1:3478".parse().unwrap());
    assert_eq!(classify(&response.to_bytes()), PacketKind::Stun);

    // Without the magic cookie it is not STUN, and goes to quinn.
    let mut bytes = request.to_bytes();
    bytes[4] ^= 0xff;
    assert_eq!(classify(&bytes), PacketKind::Quic);
}

#[test]
fn disco_packets_are_disco() {
    let packet = disco_packet();
    assert_eq!(classify(&packet), PacketKind::Disco);
    // Classification looks at the magic only; the parser rejects what is short or forged.
    assert_eq!(classify(&packet[..6]), PacketKind::Disco);
    assert_eq!(classify(&packet[..5]), PacketKind::Quic);
    let mut wrong = packet.clone();
    wrong[3] ^= 1;
    assert_eq!(classify(&wrong), PacketKind::Quic);
}

#[test]
fn odd_inputs_go_to_quic() {
    assert_eq!(classify(&[]), PacketKind::Quic);
    assert_eq!(classify(&[0]), PacketKind::Quic);
    assert_eq!(classify(&[0x80]), PacketKind::Quic);
    // A QUIC Version Negotiation packet may start 10xxxxxx, but its version field is zero.
    let mut vn = vec![0x9c, 0, 0, 0, 0];
    vn.extend_from_slice(&[8; 30]);
    assert_eq!(classify(&vn), PacketKind::Quic);
}

proptest! {
    #[test]
    fn quic_with_the_fixed_bit_is_always_quic(
        first in any::<u8>(),
        rest in proptest::collection::vec(any::<u8>(), 0..1500),
    ) {
        // Any header with the fixed bit (0x40) set: long (11) or short (01).
        let packet = [&[first | 0x40][..], &rest].concat();
        prop_assert_eq!(classify(&packet), PacketKind::Quic);
    }

    #[test]
    fn classification_agrees_with_the_parsers(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let kind = classify(&bytes);
        prop_assert_eq!(kind == PacketKind::Stun, iroh_stun::is_stun(&bytes));
        prop_assert_eq!(kind == PacketKind::Disco, disco::looks_like_disco(&bytes));
    }
}

/// Real QUIC traffic captured between two quinn endpoints configured as ours are (fixed bit kept).
#[cfg(feature = "quic")]
mod quic_capture {
    use std::{
        net::{Ipv4Addr, SocketAddr},
        sync::Arc,
        time::Duration,
    };

    use quinn::{Endpoint, EndpointConfig, TokioRuntime};
    use tokio::{net::UdpSocket, sync::mpsc};

    use super::*;
    use crate::tls;

    const ALPN: &[u8] = b"demux-test";
    const LIMIT: Duration = Duration::from_secs(10);

    fn endpoint(server: Option<&SecretKey>) -> Endpoint {
        let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut config = EndpointConfig::default();
        config.grease_quic_bit(false);
        let server = server.map(|key| {
            let crypto = tls::make_server_config(key, vec![ALPN.to_vec()], false).unwrap();
            quinn::ServerConfig::with_crypto(Arc::new(crypto))
        });
        Endpoint::new(config, server, socket, Arc::new(TokioRuntime)).unwrap()
    }

    fn client_config(server: &SecretKey) -> quinn::ClientConfig {
        let crypto = tls::make_client_config(
            &SecretKey::from_bytes(&[9; 32]),
            server.public(),
            vec![ALPN.to_vec()],
            false,
        )
        .unwrap();
        quinn::ClientConfig::new(Arc::new(crypto))
    }

    #[tokio::test]
    async fn a_quinn_initial_is_quic() {
        let server_key = SecretKey::from_bytes(&[3; 32]);
        let sink = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let client = endpoint(None);
        let _connecting = client
            .connect_with(
                client_config(&server_key),
                sink.local_addr().unwrap(),
                &tls::server_name(&server_key.public()),
            )
            .unwrap();
        let mut buf = vec![0u8; 2048];
        let (len, _) = tokio::time::timeout(LIMIT, sink.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let initial = &buf[..len];
        // Long header, fixed bit, packet type Initial (00), QUIC v1.
        assert_eq!(initial[0] & 0xf0, 0xc0, "first byte {:#04x}", initial[0]);
        assert_eq!(initial[1..5], [0, 0, 0, 1]);
        assert_eq!(classify(initial), PacketKind::Quic);
    }

    #[tokio::test]
    async fn every_packet_of_a_connection_is_quic() {
        let server_key = SecretKey::from_bytes(&[4; 32]);
        let server = endpoint(Some(&server_key));
        let server_addr = server.local_addr().unwrap();

        // A forwarder between client and server that records every datagram.
        let relay = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let relay_addr = relay.local_addr().unwrap();
        let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let forwarder = tokio::spawn(async move {
            let mut client_addr: Option<SocketAddr> = None;
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((len, from)) = relay.recv_from(&mut buf).await else {
                    return;
                };
                let to = if from == server_addr {
                    match client_addr {
                        Some(addr) => addr,
                        None => continue,
                    }
                } else {
                    client_addr = Some(from);
                    server_addr
                };
                let _ = seen_tx.send(buf[..len].to_vec());
                let _ = relay.send_to(&buf[..len], to).await;
            }
        });

        let client = endpoint(None);
        let exchange = async {
            let connecting = client
                .connect_with(
                    client_config(&server_key),
                    relay_addr,
                    &tls::server_name(&server_key.public()),
                )
                .unwrap();
            let accepting = async { server.accept().await.unwrap().await.unwrap() };
            let (conn, server_conn) = tokio::join!(connecting, accepting);
            let conn = conn.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&[0x5a; 4000]).await.unwrap();
            send.finish().unwrap();
            let (mut s_send, mut s_recv) = server_conn.accept_bi().await.unwrap();
            let data = s_recv.read_to_end(10_000).await.unwrap();
            s_send.write_all(&data).await.unwrap();
            s_send.finish().unwrap();
            assert_eq!(recv.read_to_end(10_000).await.unwrap().len(), 4000);
            conn.close(0u32.into(), b"done");
            server_conn.closed().await;
        };
        tokio::time::timeout(LIMIT, exchange).await.unwrap();
        forwarder.abort();

        let mut packets = Vec::new();
        while let Ok(p) = seen_rx.try_recv() {
            packets.push(p);
        }
        let short_headers = packets.iter().filter(|p| p[0] & 0x80 == 0).count();
        let long_headers = packets.len() - short_headers;
        assert!(short_headers > 0 && long_headers > 0, "{packets:?}");
        for p in &packets {
            assert_eq!(p[0] & 0x40, 0x40, "fixed bit cleared: {:#04x}", p[0]);
            assert_eq!(classify(p), PacketKind::Quic, "first byte {:#04x}", p[0]);
        }
    }
}
