//! Criterion benchmark of what the server does per request with a derived credential (issue 16):
//! parse it and verify its signature chain against the parent's stored public root key
//! (`wireguard::derived`), for one and two narrowings; beside it the SHA-256 of a plain token,
//! which both paths pay (the store looks the parent up by that hash), and the cached path (a
//! credential the server verified lately: `derived::VerifyCache`). The database query is
//! the same for both and is not included; `benches/edge/attenuate_cost.py` measures whole
//! requests.
//!
//! Run: `cargo bench --bench token_verify`.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sha2::{Digest, Sha256};
use sixpn::wireguard::derived::{self, Caveat, Derived, Kind};

const PARENT: &str = "sixpn_wg_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn bench(c: &mut Criterion) {
    let root = derived::parse_hex32(&derived::root_public_hex(Kind::Token, PARENT)).unwrap();
    let one = derived::attenuate(
        Kind::Token,
        PARENT,
        &[Caveat::Peer("node-1".into()), Caveat::Expires(1 << 40)],
        [7; 32],
    )
    .unwrap();
    let two =
        derived::attenuate(Kind::Token, &one, &[Caveat::Group("web".into())], [8; 32]).unwrap();
    let mut group = c.benchmark_group("token_verify");
    group.bench_function("plain_sha256", |b| {
        b.iter(|| Sha256::digest(black_box(PARENT).as_bytes()))
    });
    group.bench_function("derived_parse", |b| {
        b.iter(|| Derived::parse(Kind::Token, black_box(&one)).unwrap())
    });
    group.bench_function("derived_1_block", |b| {
        b.iter(|| {
            Derived::parse(Kind::Token, black_box(&one))
                .unwrap()
                .verify(&root)
                .unwrap()
        })
    });
    group.bench_function("derived_2_blocks", |b| {
        b.iter(|| {
            Derived::parse(Kind::Token, black_box(&two))
                .unwrap()
                .verify(&root)
                .unwrap()
        })
    });
    // What the server pays per request once it has verified a credential: the memo's SHA-256
    // and lookup (plus the parse, which gives the parent's hash for the database query).
    let cache = derived::VerifyCache::default();
    group.bench_function("derived_1_block_cached", |b| {
        b.iter(|| {
            let parsed = Derived::parse(Kind::Token, black_box(&one)).unwrap();
            cache.verify(&one, &parsed, &root).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
