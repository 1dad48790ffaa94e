//! Criterion benchmarks of the UDP fast path: `fastpath::answer` for a peer hit, an NXDOMAIN miss
//! and a group of 50 at 1k, 100k and 1M peers, and `Index::build` at the same sizes.
//!
//! Run: `cargo bench --bench fastpath` (add `-- answer` or `-- build` to pick a group).

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sixpn::config::ViewConfig;
use sixpn::fastpath::{self, FastZone, Index, IndexSettings, Outcome};
use sixpn::model::{Generation, Org, Peer};
use sixpn::store::Dump;
use sixpn::wireguard::PrivateKey;

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
const GROUP: usize = 50;

/// One org with `n` peers `peer-<i>` in groups `group-<i / 50>` of 50.
fn dump(n: usize) -> Dump {
    let org = Org {
        slug: "personal".parse().expect("label"),
        prefix: "fdaa:0:1::/48".parse().expect("net"),
        created_at: 0,
    };
    let key = PrivateKey::from_bytes([7; 32]).public_key();
    let peers = (0..n)
        .map(|i| Peer {
            org: org.slug.clone(),
            name: format!("peer-{i}").parse().expect("label"),
            group: format!("group-{}", i / GROUP).parse().expect("label"),
            region: "local".parse().expect("label"),
            pubkey: key,
            address: sixpn::model::prefix_host(org.prefix, i as u128 + 16),
            token: "bench".parse().expect("label"),
            created_at: 0,
            updated_at: 0,
        })
        .collect();
    Dump {
        generation: Generation(1),
        orgs: vec![org],
        peers,
    }
}

fn settings() -> IndexSettings {
    let mut soa = b"\x08internal\x00\x00\x06\x00\x01\x00\x00\x00\x05".to_vec();
    let mut rdata = b"\x02ns\x08internal\x00\x0ahostmaster\x08internal\x00".to_vec();
    for v in [1u32, 3600, 600, 86400, 5] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    soa.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    soa.extend_from_slice(&rdata);
    IndexSettings {
        ttl: 5,
        views: vec![ViewConfig {
            source: "127.0.0.0/8".parse().expect("net"),
            org: "personal".parse().expect("label"),
        }],
        zones: vec![FastZone {
            origin: Box::from(&b"\x08internal\x00"[..]),
            soa_negative: soa.into_boxed_slice(),
            static_names: vec![
                Box::from(&b"\x08internal\x00"[..]),
                Box::from(&b"\x02ns\x08internal\x00"[..]),
            ],
            delegate_misses: false,
        }],
        max_udp_payload: 1232,
    }
}

fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 28, 0, 1]);
    q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]); // EDNS 4096
    q
}

fn answer(c: &mut Criterion) {
    let settings = settings();
    let src: IpAddr = "127.0.0.1".parse().expect("ip");
    let mut g = c.benchmark_group("answer");
    for n in SIZES {
        let index = Index::build(&dump(n), &settings);
        let cases = [
            ("hit", query(&format!("peer-{}._peer.internal", n / 2))),
            ("miss", query(&format!("nx-{}._peer.internal", n / 2))),
            (
                "group50",
                query(&format!("group-{}._g.internal", n / GROUP / 2)),
            ),
        ];
        let mut out = vec![0u8; 4096];
        for (case, q) in &cases {
            assert!(matches!(
                fastpath::answer(&index, src, q, &mut out),
                Outcome::Reply(_)
            ));
            g.bench_with_input(BenchmarkId::new(*case, n), q, |b, q| {
                b.iter(|| fastpath::answer(black_box(&index), src, black_box(q), &mut out))
            });
        }
    }
    g.finish();
}

fn build(c: &mut Criterion) {
    let settings = settings();
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    for n in SIZES {
        let dump = dump(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &dump, |b, dump| {
            b.iter(|| Index::build(black_box(dump), &settings))
        });
    }
    g.finish();
}

criterion_group!(benches, answer, build);
criterion_main!(benches);
