//! What one DNS query costs in the snapshot: `SnapshotHandle::load` + `dns::lookup` (view by
//! source address, lowercase wire key, one hash lookup) + the rotation counter for groups; the
//! same steps our hickory handler takes before encoding. Hit, miss and a 50-member group, at 1k,
//! 100k and 1M peers (groups of 50, one org; queries cycle over 4096 random names so the cache
//! is not hot on one key).
//!
//! Run with: `cargo bench --bench dns_lookup`

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hickory_server::proto::rr::{Name, RecordType};
use sixpn::dns::{Lookup, lookup};
use sixpn::snapshot::{Snapshot, SnapshotHandle, SnapshotSettings};

const N_QUERIES: usize = 4096;

/// A small deterministic generator for query names.
fn spread(n: usize, modulo: usize) -> impl Iterator<Item = usize> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % modulo as u64) as usize
    })
}

fn names(pattern: impl Fn(usize) -> String, n: usize, modulo: usize) -> Vec<Name> {
    spread(n, modulo)
        .map(|i| Name::from_ascii(pattern(i)).expect("valid"))
        .collect()
}

fn bench(c: &mut Criterion) {
    let src: IpAddr = "127.0.0.1".parse().expect("valid");
    let mut group = c.benchmark_group("dns_lookup");
    group.throughput(Throughput::Elements(1));
    for n_peers in [1_000usize, 100_000, 1_000_000] {
        let handle = SnapshotHandle::new(Snapshot::build(
            &common::dump(n_peers),
            &SnapshotSettings::default(),
        ));
        let hits = names(|i| format!("peer-{i}._peer.internal."), N_QUERIES, n_peers);
        let misses = names(
            |i| format!("nobody-{i}._peer.internal."),
            N_QUERIES,
            n_peers,
        );
        let groups = names(
            |i| format!("g-{i}._g.internal."),
            N_QUERIES,
            n_peers / common::GROUP_SIZE,
        );

        group.bench_with_input(BenchmarkId::new("hit", n_peers), &hits, |b, qs| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % qs.len();
                let snapshot = handle.load();
                let found = matches!(
                    lookup(&snapshot, src, &qs[i], RecordType::AAAA),
                    Lookup::Answer { .. }
                );
                black_box(found)
            });
        });
        group.bench_with_input(BenchmarkId::new("miss", n_peers), &misses, |b, qs| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % qs.len();
                let snapshot = handle.load();
                let missed = matches!(
                    lookup(&snapshot, src, &qs[i], RecordType::AAAA),
                    Lookup::NxDomain { .. }
                );
                black_box(missed)
            });
        });
        group.bench_with_input(BenchmarkId::new("group50", n_peers), &groups, |b, qs| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % qs.len();
                let snapshot = handle.load();
                match lookup(&snapshot, src, &qs[i], RecordType::AAAA) {
                    Lookup::Answer(set) => {
                        let start = set.next_rotation() as usize % set.len();
                        black_box((set.len(), start))
                    }
                    _ => black_box((0, 0)),
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
