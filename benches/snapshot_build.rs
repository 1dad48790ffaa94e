//! What the control plane costs, at 1k, 100k and 1M peers in one org (groups of 50):
//! - `snapshot_build`: a full build from a store dump (the model, then every shard of the answer
//!   table): what the publisher does at start and on resync;
//! - `snapshot_patch`: one change (a peer created) applied to the model and patched into the
//!   snapshot: what the publisher does per write. It should not grow with the fleet.
//!
//! Run with: `cargo bench --bench snapshot_build`

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sixpn::model::{Change, Generation};
use sixpn::snapshot::{Base, Model, Snapshot, SnapshotSettings, Touched};

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

    let mut group = c.benchmark_group("snapshot_patch");
    for n_peers in [1_000usize, 100_000, 1_000_000] {
        let dump = common::dump(n_peers);
        let mut model = Model::from_dump(&dump);
        let base = Base::new(&settings);
        let mut snapshot = Snapshot::from_model(base, &model);
        let template = dump.peers[0].clone();
        let mut i = 0u64;
        group.bench_function(BenchmarkId::from_parameter(n_peers), |b| {
            b.iter(|| {
                i += 1;
                let mut peer = template.clone();
                peer.name = format!("new-{i}").parse().expect("valid");
                peer.address = sixpn::store::peer_address(
                    dump.orgs[0].prefix,
                    n_peers as u64 + i,
                );
                let mut touched = Touched::default();
                let generation = Generation(1 + i);
                model.apply(generation, &[Change::PeerUpserted(peer)], &mut touched);
                snapshot = snapshot.apply(&model, &touched);
                black_box(snapshot.generation())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
