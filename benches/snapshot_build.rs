//! What a rebuild costs: `Snapshot::build` from a store dump (names, prebuilt records and answer
//! bytes, groups of 50, the `_peer.internal` TXT, routing) at 1k, 100k and 1M peers in one org.
//! The publisher does exactly this once per burst of writes.
//!
//! Run with: `cargo bench --bench snapshot_build`

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sixpn::snapshot::{Snapshot, SnapshotSettings};

fn bench(c: &mut Criterion) {
    let settings = SnapshotSettings::default();
    let mut group = c.benchmark_group("snapshot_build");
    for n_peers in [1_000usize, 100_000, 1_000_000] {
        let dump = common::dump(n_peers);
        if n_peers >= 1_000_000 {
            group.sample_size(10);
            group.measurement_time(Duration::from_secs(30));
        } else if n_peers >= 100_000 {
            group.sample_size(10);
            group.measurement_time(Duration::from_secs(10));
        }
        group.bench_with_input(BenchmarkId::from_parameter(n_peers), &dump, |b, dump| {
            b.iter(|| black_box(Snapshot::build(dump, &settings)));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
