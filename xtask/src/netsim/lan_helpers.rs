//! The helper programs of `cargo xtask lan`, run inside its namespaces: `lan-flood` (made-up mDNS
//! announcements) and `lan-count` (counts what a host multicasts).

use std::{
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use super::sys;

/// The mDNS group and port.
const MDNS_GROUP: &str = "224.0.0.251:5353";

/// `cargo xtask lan-flood COUNT RATE SEED`, run inside a namespace of the bridge: COUNT announcements of
/// distinct made-up nodes (valid keys, PTR + SRV + TXT + A, TTL 4500 s) at RATE packets a second.
pub(crate) fn flood_main(args: &[String]) -> ExitCode {
    let parsed = (|| -> Option<(u64, u64, u64)> {
        Some((
            args.first()?.parse().ok()?,
            args.get(1)?.parse().ok()?,
            args.get(2)?.parse().ok()?,
        ))
    })();
    let Some((count, rate, seed)) = parsed else {
        eprintln!("usage: cargo xtask lan-flood COUNT RATE SEED");
        return ExitCode::from(2);
    };
    match flood(count, rate.max(1), seed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lan-flood: {error}");
            ExitCode::FAILURE
        }
    }
}

fn flood(count: u64, rate: u64, seed: u64) -> Result<(), String> {
    use simple_dns::{
        CLASS, Name, Packet, PacketFlag, ResourceRecord,
        rdata::{A, PTR, RData, SRV, TXT},
    };
    let socket = std::net::UdpSocket::bind("0.0.0.0:5353").map_err(|e| format!("bind: {e}"))?;
    let started = Instant::now();
    let mut state = seed;
    for i in 0..count {
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&sys::splitmix64(&mut state).to_le_bytes());
        }
        let node = iroh_base::SecretKey::from_bytes(&key).public().to_string();
        let instance = format!("{node}._iroh._udp.local");
        let host = format!("{node}.local");
        let txt_value = format!("a0=10.77.9.{}:{}", i % 250 + 1, 1024 + i % 60000);
        let name = |s: &str| {
            Name::new(s)
                .map(Name::into_owned)
                .map_err(|e| format!("name: {e}"))
        };
        let mut packet = Packet::new_reply(0);
        packet.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        let ptr = RData::PTR(PTR(name(&instance)?));
        packet.answers.push(ResourceRecord::new(
            name("_iroh._udp.local")?,
            CLASS::IN,
            4500,
            ptr,
        ));
        let srv = RData::SRV(SRV {
            priority: 0,
            weight: 0,
            port: 4000,
            target: name(&host)?,
        });
        packet
            .answers
            .push(ResourceRecord::new(name(&instance)?, CLASS::IN, 4500, srv));
        let txt = TXT::new()
            .with_string(&txt_value)
            .map_err(|e| format!("txt: {e}"))?
            .into_owned();
        packet.answers.push(ResourceRecord::new(
            name(&instance)?,
            CLASS::IN,
            4500,
            RData::TXT(txt),
        ));
        let a = RData::A(A {
            address: u32::from(std::net::Ipv4Addr::new(10, 77, 9, 1)),
        });
        packet
            .answers
            .push(ResourceRecord::new(name(&host)?, CLASS::IN, 4500, a));
        let bytes = packet
            .build_bytes_vec_compressed()
            .map_err(|e| format!("build: {e}"))?;
        socket
            .send_to(&bytes, MDNS_GROUP)
            .map_err(|e| format!("send: {e}"))?;
        // Paced: packet i leaves at i / rate seconds.
        let due = started + Duration::from_secs_f64((i + 1) as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    Ok(())
}

/// `cargo xtask lan-count SECS SOURCE`: listens on the mDNS group for SECS seconds and prints how many
/// responses (QR set) came from SOURCE, and how many of them were unsolicited (answering no query seen
/// within the 200 ms before).
pub(crate) fn count_main(args: &[String]) -> ExitCode {
    let (Some(Ok(secs)), Some(Ok(source))) = (
        args.first().map(|s| s.parse::<u64>()),
        args.get(1).map(|s| s.parse::<std::net::Ipv4Addr>()),
    ) else {
        eprintln!("usage: cargo xtask lan-count SECS SOURCE-IPV4");
        return ExitCode::from(2);
    };
    let counted = (|| -> std::io::Result<(u64, u64, u64)> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:5353")?;
        socket.join_multicast_v4(
            &std::net::Ipv4Addr::new(224, 0, 0, 251),
            &std::net::Ipv4Addr::UNSPECIFIED,
        )?;
        let end = Instant::now() + Duration::from_secs(secs);
        let (mut responses, mut unsolicited, mut queries) = (0, 0, 0);
        let mut last_query: Option<Instant> = None;
        let mut buf = [0u8; 9000];
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            socket.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if n < 12 {
                continue;
            }
            let is_response = buf[2] & 0x80 != 0;
            if !is_response {
                queries += 1;
                last_query = Some(Instant::now());
            } else if from.ip() == std::net::IpAddr::V4(source) {
                responses += 1;
                if last_query.is_none_or(|at| at.elapsed() > Duration::from_millis(200)) {
                    unsolicited += 1;
                }
            }
        }
        Ok((responses, unsolicited, queries))
    })();
    match counted {
        Ok((responses, unsolicited, queries)) => {
            println!(
                "{responses} responses from {source} ({unsolicited} unsolicited, i.e. announcements), \
                 {queries} queries on the link"
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("lan-count: {error}");
            ExitCode::FAILURE
        }
    }
}
