//! What a rebuild costs: `Snapshot::build` from a store dump (names, prebuilt records and answer
//! bytes, groups of 50, the `_peer.internal` TXT, routing) at 1k, 100k and 1M peers in one org.
//! The publisher does exactly this once per burst of writes.
//!
//! Run with: `cargo bench --bench snapshot_build`

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sixpn::model::{Generation, Org, Peer};
use sixpn::snapshot::{Snapshot, SnapshotSettings};
use sixpn::store::Dump;

const GROUP_SIZE: usize = 50;

fn dump(n_peers: usize) -> Dump {
    let org = Org {
        slug: "personal".parse().expect("valid"),
        prefix: "fdaa:0:1::/48".parse().expect("valid"),
        created_at: 0,
    };
    let pubkey = sixpn::wireguard::PrivateKey::from_bytes([7; 32]).public_key();
    let peers = (0..n_peers)
        .map(|i| Peer {
            org: org.slug.clone(),
            name: format!("peer-{i}").parse().expect("valid"),
            group: format!("g-{}", i / GROUP_SIZE).parse().expect("valid"),
            region: "local".parse().expect("valid"),
            pubkey,
            address: sixpn::store::peer_address(org.prefix, i as u64 + 1),
            token: "t".parse().expect("valid"),
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

fn bench(c: &mut Criterion) {
    let settings = SnapshotSettings::default();
    let mut group = c.benchmark_group("snapshot_build");
    for n_peers in [1_000usize, 100_000, 1_000_000] {
        let dump = dump(n_peers);
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
