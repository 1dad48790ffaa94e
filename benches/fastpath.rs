//! Criterion benchmarks of the UDP fast path: `fastpath::answer` for a peer hit, an NXDOMAIN miss
//! and a group of 50 at 1k, 100k and 1M peers, `Index::build` at the same sizes, and the
//! response-rate limit's check of a negative answer (`rrl`).
//!
//! Run: `cargo bench --bench fastpath` (add `-- answer`, `-- build` or `-- rrl` to pick a group).
//!
//! Serve mode, to measure the DNS server with the shared harness without the API and store:
//! `FASTPATH_SERVE=127.0.0.1:5311 FASTPATH_GROUPS=$D/groups.tsv target/release/deps/fastpath-*`
//! loads the harness workload (`gen_zone.py --disjoint`: peers `peer-<i>` at
//! `fdaa:0:1:a7b::<i+1>` in org `personal`, groups from groups.tsv) into a snapshot and runs
//! `dns::serve` on it (UDP fast path + hickory handler, TCP on hickory) until killed.
//! `FASTPATH_ONLY=1` runs the fast path alone instead (other names get an empty NOERROR, enough
//! for the harness's readiness probe), `FASTPATH_BATCH=n` sets its datagrams per `recvmmsg`.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BenchmarkId, Criterion, criterion_group};
use sixpn::config::ViewConfig;
use sixpn::fastpath::{self, Outcome};
use sixpn::model::Peer;
use sixpn::snapshot::table::DEFAULT_MAX_UDP_PAYLOAD;
use sixpn::snapshot::{FastZone, Index, IndexSettings, Snapshot, SnapshotHandle, SnapshotSettings};
use sixpn::store::Dump;
use sixpn::wireguard::PrivateKey;

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];

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
        max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
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
        let index = Index::build(&common::dump(n), &settings);
        let cases = [
            ("hit", query(&format!("peer-{}._peer.internal", n / 2))),
            ("miss", query(&format!("nx-{}._peer.internal", n / 2))),
            (
                "group50",
                query(&format!("g-{}._g.internal", n / common::GROUP_SIZE / 2)),
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
        let dump = common::dump(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &dump, |b, dump| {
            b.iter(|| Index::build(black_box(dump), &settings))
        });
    }
    g.finish();
}

/// The response-rate limit's cost per negative answer (positive answers never reach it): a
/// source within its budget, and one far over it (dropped).
fn rrl(c: &mut Criterion) {
    let rrl = fastpath::Rrl::new(&fastpath::RrlSettings::default()).expect("on by default");
    let mut g = c.benchmark_group("rrl");
    let src: IpAddr = "192.0.2.1".parse().expect("ip");
    let now = rrl.now();
    g.bench_function("over_limit", |b| b.iter(|| rrl.check(black_box(src), now)));
    let mut i = 0u32;
    g.bench_function("many_sources", |b| {
        b.iter(|| {
            i = i.wrapping_add(256);
            rrl.check(black_box(IpAddr::V4(i.into())), now)
        })
    });
    g.finish();
}

criterion_group!(benches, answer, build, rrl);

fn main() {
    if let Ok(addr) = std::env::var("FASTPATH_SERVE") {
        serve(&addr);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

/// Serve mode (see the module docs).
fn serve(addr: &str) {
    let groups = std::env::var("FASTPATH_GROUPS").expect("FASTPATH_GROUPS=groups.tsv");
    let text = std::fs::read_to_string(&groups).expect("read groups.tsv");
    let peers: usize =
        std::env::var("FASTPATH_PEERS").map_or(10_000, |v| v.parse().expect("number"));
    let mut group_of = vec!["rest".to_string(); peers];
    for line in text.lines() {
        let mut cols = line.split('\t');
        let (Some(g), _, Some(members)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        let g = g.split('.').next().expect("label");
        for m in members.split(',') {
            let i: usize = m
                .split('.')
                .next()
                .and_then(|l| l.strip_prefix("peer-"))
                .and_then(|n| n.parse().ok())
                .expect("peer-<i>");
            group_of[i] = g.to_string();
        }
    }
    let mut d = common::dump(0);
    let key = PrivateKey::from_bytes([7; 32]).public_key();
    let base = u128::from("fdaa:0:1:a7b::".parse::<std::net::Ipv6Addr>().expect("ip"));
    for (i, g) in group_of.iter().enumerate() {
        d.peers.push(Peer {
            org: d.orgs[0].slug.clone(),
            name: format!("peer-{i}").parse().expect("label"),
            group: g.parse().expect("label"),
            region: "local".parse().expect("label"),
            pubkey: key,
            address: (base + i as u128 + 1).into(),
            token: "bench".parse().expect("label"),
            created_at: 0,
            updated_at: 0,
            key_expires_at: None,
        });
    }
    d.peers.sort_by(|a, b| a.name.cmp(&b.name));
    let addr: std::net::SocketAddr = addr.parse().expect("socket address");
    if std::env::var_os("FASTPATH_ONLY").is_some() {
        serve_fast_only(addr, &d);
    }
    // The DNS part of `sixpn serve`: snapshot, UDP fast path + hickory handler, TCP on hickory.
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let snapshot = Snapshot::build(&d, &SnapshotSettings::default());
        let handle = SnapshotHandle::new(snapshot);
        let listeners = sixpn::dns::bind(&[addr]).await.expect("bind");
        eprintln!("DNS on {:?}", listeners.local_addrs());
        let cancel = tokio_util::sync::CancellationToken::new();
        sixpn::dns::serve(listeners, handle, cancel)
            .await
            .expect("serve");
    });
}

/// The fast path alone (`FASTPATH_ONLY`): other queries (the harness's `internal. SOA` readiness
/// probe) get an empty NOERROR.
fn serve_fast_only(addr: std::net::SocketAddr, d: &Dump) -> ! {
    use std::sync::Arc;
    let settings = settings();
    let index = Arc::new(arc_swap::ArcSwap::from_pointee(Index::build(d, &settings)));
    let mut config = fastpath::FastServerConfig::new(addr);
    if let Ok(b) = std::env::var("FASTPATH_BATCH") {
        config.batch = b.parse().expect("number");
    }
    let reply: Arc<std::sync::OnceLock<std::net::UdpSocket>> = Arc::default();
    let sink = reply.clone();
    let delegate = move |p: &[u8], src| {
        let Some(socket) = sink.get() else { return };
        let mut at = 12;
        while let Some(&len) = p.get(at) {
            at += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        let end = at + 4;
        if end > p.len() {
            return;
        }
        let mut r = p[..end].to_vec();
        r[2] = 0x84 | (r[2] & 1);
        r[3] = 0;
        r[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        let _ = socket.send_to(&r, src);
    };
    let server = fastpath::FastServer::start(&config, index, Arc::new(delegate))
        .expect("start the fast path");
    let _ = reply.set(server.reply_socket().expect("reply socket"));
    eprintln!("fast path on {}", server.local_addr());
    loop {
        std::thread::park();
    }
}
