//! The core driven over a real UDP socket against two real STUN servers on loopback, the way the magic
//! socket's actor drives it: one socket for everything, every STUN packet offered to the reporter.

use std::time::{Duration, Instant};

use iroh_stun::Server;
use tokio::net::UdpSocket;

use super::super::*;
use super::url;

/// A minimal driver: drains, starts the report when it is due, and feeds packets and timers until a report
/// is ready. Non-STUN packets would go to QUIC; here there are none.
async fn drive(socket: &UdpSocket, r: &mut NetReporter, targets: &[ProbeTarget]) -> Report {
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(transmit) = r.poll_transmit() {
            socket
                .send_to(&transmit.contents, transmit.dst)
                .await
                .unwrap();
        }
        let mut started = false;
        while let Some(event) = r.poll_event() {
            match event {
                NetReportEvent::ReportDue(_) => {
                    r.start_report(Instant::now(), targets.to_vec());
                    started = true;
                }
                NetReportEvent::ReportReady(report) => return report,
            }
        }
        if started {
            continue;
        }
        let deadline = r
            .poll_timeout()
            .map_or_else(tokio::time::Instant::now, tokio::time::Instant::from_std);
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let (len, from) = received.unwrap();
                let packet = &buf[..len];
                assert!(iroh_stun::is_stun(packet));
                assert!(r.handle_stun(Instant::now(), from, packet), "a response to us");
            }
            () = tokio::time::sleep_until(deadline) => r.handle_timeout(Instant::now()),
        }
    }
}

#[tokio::test]
async fn report_over_loopback_with_two_stun_servers() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let a = Server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let b = Server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let targets = vec![
            RelayNode::with_stun_port(url("a"), a.local_addr().port())
                .probe_target(&[a.local_addr().ip()]),
            RelayNode::with_stun_port(url("b"), b.local_addr().port())
                .probe_target(&[b.local_addr().ip()]),
        ];
        let mut r = NetReporter::new(NetReportConfig::default(), rand::random());

        let report = drive(&socket, &mut r, &targets).await;
        assert_eq!(report.reason, ReportReason::Startup);
        assert_eq!(report.global_v4, Some(socket.local_addr().unwrap()));
        assert!(report.udp_works_v4);
        assert_eq!(report.mapping_varies_by_dest_v4, Some(false));
        assert_eq!(
            report.relay_latency.keys().cloned().collect::<Vec<_>>(),
            vec![url("a"), url("b")]
        );
        assert!(report.preferred_relay.is_some());
        assert!(
            report
                .relay_latency
                .values()
                .all(|l| *l < Duration::from_secs(1))
        );

        // An on-demand report over the same socket sees the same mapping.
        r.request_report(Instant::now(), ReportReason::NetworkChanged);
        let again = drive(&socket, &mut r, &targets).await;
        assert_eq!(again.reason, ReportReason::NetworkChanged);
        assert_eq!(again.global_v4, report.global_v4);
        assert!(again.preferred_relay.is_some());
        assert_eq!(
            own_addrs(&[], Some(&again)),
            vec![socket.local_addr().unwrap()]
        );

        a.shutdown().await;
        b.shutdown().await;
    })
    .await
    .expect("test timed out");
}
