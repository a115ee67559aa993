//! Codec benchmarks: parse and encode of a Binding success response (XOR-MAPPED-ADDRESS, SOFTWARE, FINGERPRINT)
//! over IPv4 and IPv6, and the `is_stun` demultiplexing check.
//!
//! Run with `cargo bench -p iroh-stun --bench codec`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iroh_stun::{Message, TransactionId, is_stun};

fn response(observed: &str) -> Message {
    let observed: SocketAddr = observed.parse().unwrap();
    Message::binding_success(TransactionId::from([0x5A; 12]), observed)
        .with_software("iroh-stun bench")
        .unwrap()
        .with_fingerprint(true)
}

fn codec(c: &mut Criterion) {
    let cases = [
        ("ipv4", response("203.0.113.77:54321")),
        ("ipv6", response("[2001:db8:85a3::8a2e:370:7334]:54321")),
    ];
    for (name, msg) in &cases {
        let bytes = msg.to_bytes();
        let mut group = c.benchmark_group(format!("binding_success_{name}"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function("parse", |b| {
            b.iter(|| Message::parse(black_box(&bytes)).expect("valid"));
        });
        let mut buf = Vec::with_capacity(bytes.len());
        group.bench_function("encode", |b| {
            b.iter(|| {
                buf.clear();
                black_box(msg).encode(&mut buf);
                black_box(&buf);
            });
        });
        group.bench_function("is_stun", |b| {
            b.iter(|| is_stun(black_box(&bytes)));
        });
        group.finish();
    }
    // The common demultiplexing case: a QUIC short-header packet is rejected on its first byte.
    let quic = [0x40u8; 1200];
    c.bench_function("is_stun_rejects_quic", |b| {
        b.iter(|| is_stun(black_box(&quic)));
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
