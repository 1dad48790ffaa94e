//! The UDP fast path: `fastpath::answer` on crafted packets (decoded with hickory), its refusal to
//! answer what it does not fully handle, a malformed-packet corpus, zero heap allocations per
//! steady-state answer (counting global allocator), the batched socket server on loopback, and the
//! differential test: fast answers equal the full hickory handler's over a generated corpus.

#![allow(unsafe_code)] // the counting global allocator below

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use ipnet::Ipv6Net;
use sixpn::config::ViewConfig;
use sixpn::fastpath::{self, FastServer, FastServerConfig, Outcome};
use sixpn::model::{Generation, Org, Peer};
use sixpn::snapshot::{FastZone, Index, IndexSettings};
use sixpn::store::Dump;
use sixpn::wireguard::PrivateKey;

// ---- counting allocator (per thread, so parallel tests do not disturb the count)

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

// ---- fixtures

const PERSONAL: &str = "fdaa:0:1::/48";
const ACME: &str = "fdaa:0:2::/48";

fn soa_negative() -> Vec<u8> {
    let mut rr = b"\x08internal\x00\x00\x06\x00\x01\x00\x00\x00\x05".to_vec();
    let mut rdata = b"\x02ns\x08internal\x00\x0ahostmaster\x08internal\x00".to_vec();
    for v in [1u32, 3600, 600, 86400, 5] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    rr.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    rr.extend_from_slice(&rdata);
    rr
}

fn settings() -> IndexSettings {
    IndexSettings {
        ttl: 5,
        views: vec![
            ViewConfig {
                source: "127.0.0.2/32".parse().unwrap(),
                org: "acme".parse().unwrap(),
            },
            ViewConfig {
                source: "127.0.0.4/32".parse().unwrap(),
                org: "missing".parse().unwrap(),
            },
            ViewConfig {
                source: "127.0.0.0/8".parse().unwrap(),
                org: "personal".parse().unwrap(),
            },
        ],
        zones: vec![FastZone {
            origin: Box::from(&b"\x08internal\x00"[..]),
            soa_negative: soa_negative().into_boxed_slice(),
            static_names: vec![
                Box::from(&b"\x08internal\x00"[..]),
                Box::from(&b"\x02ns\x08internal\x00"[..]),
                Box::from(&b"\x04deep\x06static\x08internal\x00"[..]),
            ],
            delegate_misses: false,
        }],
        max_udp_payload: 4096,
    }
}

fn org(slug: &str, prefix: &str) -> Org {
    Org {
        slug: slug.parse().unwrap(),
        prefix: prefix.parse::<Ipv6Net>().unwrap(),
        created_at: 0,
    }
}

fn peer(org: &Org, name: &str, group: &str, host: u128) -> Peer {
    let key = PrivateKey::from_bytes([7; 32]).public_key();
    Peer {
        org: org.slug.clone(),
        name: name.parse().unwrap(),
        group: group.parse().unwrap(),
        region: "local".parse().unwrap(),
        pubkey: key,
        address: sixpn::model::prefix_host(org.prefix, host),
        token: "t".parse().unwrap(),
        created_at: 0,
        updated_at: 0,
        key_expires_at: None,
    }
}

/// personal: node-1 (k8s), node-2 (k8s), big-0..199 (big); acme: web-1 (web), node-9 (k8s).
fn dump() -> Dump {
    let personal = org("personal", PERSONAL);
    let acme = org("acme", ACME);
    let mut peers = vec![
        peer(&acme, "node-9", "k8s", 0x99),
        peer(&acme, "web-1", "web", 0x10),
    ];
    for i in 0..200 {
        peers.push(peer(&personal, &format!("big-{i}"), "big", 0x1000 + i));
    }
    peers.push(peer(&personal, "node-1", "k8s", 0x11));
    peers.push(peer(&personal, "node-2", "k8s", 0x12));
    Dump {
        generation: Generation(1),
        orgs: vec![acme, personal],
        peers,
    }
}

fn index() -> Index {
    Index::build(&dump(), &settings())
}

/// A query packet, the name written exactly as given (mixed case kept).
fn query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    if let Some(size) = edns {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&size.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    q
}

const LO: &str = "127.0.0.1";
const AAAA: u16 = 28;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ask(index: &Index, src: &str, q: &[u8]) -> (Message, Vec<u8>) {
    let mut out = [0u8; 4096];
    match fastpath::answer(index, ip(src), q, &mut out) {
        Outcome::Reply(n) => (
            Message::from_vec(&out[..n]).expect("valid reply"),
            out[..n].to_vec(),
        ),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn outcome(index: &Index, src: &str, q: &[u8]) -> Outcome {
    let mut out = [0u8; 4096];
    fastpath::answer(index, ip(src), q, &mut out)
}

fn aaaa(m: &Message) -> Vec<Ipv6Addr> {
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::AAAA(a) => a.0,
            other => panic!("not AAAA: {other:?}"),
        })
        .collect()
}

fn host(prefix: &str, h: u128) -> Ipv6Addr {
    sixpn::model::prefix_host(prefix.parse().unwrap(), h)
}

fn assert_soa_authority(m: &Message) {
    assert_eq!(m.authorities.len(), 1);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(m.authorities[0].name.to_ascii(), "internal.");
}

// ---- answers

#[test]
fn peer_aaaa_is_authoritative_with_ttl_and_question_echoed_as_asked() {
    let idx = index();
    let q = query(0xBEEF, "NoDe-1._PEER.internal", AAAA, None);
    let (m, raw) = ask(&idx, LO, &q);
    assert_eq!(m.metadata.id, 0xBEEF);
    assert!(m.metadata.authoritative);
    assert!(!m.metadata.recursion_available);
    assert!(m.metadata.recursion_desired, "RD copied");
    assert!(!m.metadata.truncation);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(aaaa(&m), vec![host(PERSONAL, 0x11)]);
    assert_eq!(m.answers[0].ttl, 5);
    // The question section is byte-identical to the query's.
    let qlen = q.len();
    assert_eq!(&raw[12..qlen], &q[12..qlen]);
    assert!(m.edns.is_none());
}

#[test]
fn group_has_every_member_and_rotates() {
    let idx = index();
    let q = query(1, "k8s._g.internal", AAAA, Some(1232));
    let mut firsts = BTreeSet::new();
    for _ in 0..4 {
        let (m, _) = ask(&idx, LO, &q);
        let got = aaaa(&m);
        let set: BTreeSet<_> = got.iter().copied().collect();
        assert_eq!(
            set,
            BTreeSet::from([host(PERSONAL, 0x11), host(PERSONAL, 0x12)])
        );
        firsts.insert(got[0]);
        assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    }
    assert_eq!(firsts.len(), 2, "consecutive answers rotate the order");
}

#[test]
fn peer_txt_lists_the_orgs_peers() {
    let idx = index();
    let (m, _) = ask(
        &idx,
        "127.0.0.2",
        &query(2, "_peer.internal", 16, Some(4096)),
    );
    let RData::TXT(txt) = &m.answers[0].data else {
        panic!("not TXT")
    };
    let joined: String = txt
        .txt_data
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    assert_eq!(joined, "node-9,web-1");
}

#[test]
fn negatives_carry_the_soa() {
    let idx = index();
    // Unknown name under internal.
    let (m, _) = ask(&idx, LO, &query(3, "nope._peer.internal", AAAA, None));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
    assert_soa_authority(&m);
    // Below a peer name.
    let (m, _) = ask(&idx, LO, &query(3, "x.node-1._peer.internal", AAAA, None));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // A peer asked for A and TXT: NODATA.
    for t in [1u16, 16] {
        let (m, _) = ask(&idx, LO, &query(4, "node-1._peer.internal", t, Some(1232)));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_soa_authority(&m);
        assert!(m.edns.is_some());
    }
    // The empty non-terminal `_g.internal`: NODATA, not NXDOMAIN (RFC 8020).
    let (m, _) = ask(&idx, LO, &query(5, "_g.internal", AAAA, None));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_soa_authority(&m);
    // Static names' ancestors are the full handler's.
    assert_eq!(
        outcome(&idx, LO, &query(5, "static.internal", AAAA, None)),
        Outcome::Delegate
    );
    // Below a static name without wildcards: NXDOMAIN here.
    let (m, _) = ask(&idx, LO, &query(5, "x.ns.internal", AAAA, None));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn views_isolate_orgs_and_unmapped_sources_are_delegated() {
    let idx = index();
    let (m, _) = ask(
        &idx,
        "127.0.0.2",
        &query(6, "web-1._peer.internal", AAAA, None),
    );
    assert_eq!(aaaa(&m), vec![host(ACME, 0x10)]);
    let (m, _) = ask(
        &idx,
        "127.0.0.2",
        &query(6, "node-1._peer.internal", AAAA, None),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let (m, _) = ask(&idx, "127.0.0.2", &query(6, "k8s._g.internal", AAAA, None));
    assert_eq!(aaaa(&m), vec![host(ACME, 0x99)]);
    let (m, _) = ask(&idx, LO, &query(6, "web-1._peer.internal", AAAA, None));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // A source inside an org's /48 gets that org's view.
    let src = host(ACME, 0xabc).to_string();
    let (m, _) = ask(&idx, &src, &query(6, "web-1._peer.internal", AAAA, None));
    assert_eq!(aaaa(&m), vec![host(ACME, 0x10)]);
    // A view of a missing org is left out: the next most specific network applies.
    let (m, _) = ask(
        &idx,
        "127.0.0.4",
        &query(6, "node-1._peer.internal", AAAA, None),
    );
    assert_eq!(aaaa(&m), vec![host(PERSONAL, 0x11)]);
    // No view: the full handler refuses.
    for src in ["10.0.0.1", "fd00::1"] {
        assert_eq!(
            outcome(&idx, src, &query(6, "node-1._peer.internal", AAAA, None)),
            Outcome::Delegate,
            "{src}"
        );
    }
}

#[test]
fn big_group_truncates_within_the_size_like_the_full_handler() {
    let idx = index();
    // "big._g.internal": owner 17 bytes, header + question 33 bytes; 200 members never fit 4096
    // bytes, so every UDP answer is TC with no records, as the full handler's.
    for (edns, limit) in [
        (None, 512usize),
        (Some(100), 512),
        (Some(1232), 1232),
        (Some(4096), 4096),
        (Some(9000), 4096),
    ] {
        let (m, raw) = ask(&idx, LO, &query(7, "big._g.internal", AAAA, edns));
        assert!(m.metadata.truncation, "{edns:?}");
        assert!(raw.len() <= limit, "{edns:?}: {}", raw.len());
        // No partial RRset: header, question, OPT (Knot's and BIND's shape).
        assert!(
            m.answers.is_empty(),
            "{edns:?}: {} answers",
            m.answers.len()
        );
        assert!(m.authorities.is_empty(), "{edns:?}");
        assert_eq!(raw.len(), 33 + if edns.is_some() { 11 } else { 0 });
        assert_eq!(m.edns.is_some(), edns.is_some());
        if let Some(e) = &m.edns {
            assert_eq!(usize::from(e.max_payload()), limit);
        }
    }
    // Where all fit, all are sent: 200 × 28 after 33 bytes, in a 9,000-byte index (past
    // hickory's 120 compressed names, the owner is written out: 120 × 28 + 80 × 43).
    let wide = Index::build(
        &dump(),
        &IndexSettings {
            max_udp_payload: 9000,
            ..settings()
        },
    );
    let mut out = [0u8; 9000];
    let q = query(7, "big._g.internal", AAAA, Some(9000));
    let Outcome::Reply(n) = fastpath::answer(&wide, ip(LO), &q, &mut out) else {
        panic!("not answered")
    };
    let (m, raw) = (Message::from_vec(&out[..n]).unwrap(), &out[..n]);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 200);
    assert_eq!(raw.len(), 33 + 120 * 28 + 80 * 43 + 11);
    let set: BTreeSet<_> = aaaa(&m).into_iter().collect();
    assert_eq!(set.len(), 200, "no duplicates");
    // A caller buffer smaller than the EDNS size caps the reply too.
    let mut out = [0u8; 700];
    let q = query(7, "big._g.internal", AAAA, Some(4096));
    let Outcome::Reply(n) = fastpath::answer(&idx, ip(LO), &q, &mut out) else {
        panic!()
    };
    assert!(n <= 700);
    let m = Message::from_vec(&out[..n]).unwrap();
    assert!(m.metadata.truncation);
}

#[test]
fn what_is_not_fully_handled_is_delegated() {
    let idx = index();
    let base = query(8, "node-1._peer.internal", AAAA, Some(1232));
    let tweak = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut q = base.clone();
        f(&mut q);
        outcome(&idx, LO, &q)
    };
    assert!(matches!(tweak(&|_| ()), Outcome::Reply(_)));
    assert_eq!(tweak(&|q| q[2] |= 0x80), Outcome::Drop, "a response");
    assert_eq!(
        tweak(&|q| q[2] |= 2 << 3),
        Outcome::Delegate,
        "opcode STATUS"
    );
    assert_eq!(tweak(&|q| q[5] = 2), Outcome::Delegate, "QDCOUNT 2");
    assert_eq!(tweak(&|q| q[5] = 0), Outcome::Delegate, "QDCOUNT 0");
    assert_eq!(tweak(&|q| q[11] = 2), Outcome::Delegate, "ARCOUNT 2");
    let n = base.len();
    assert_eq!(tweak(&|q| q[n - 13] = 3), Outcome::Delegate, "class CH");
    assert_eq!(tweak(&|q| q[n - 4] = 0x80), Outcome::Delegate, "DO bit");
    assert_eq!(
        tweak(&|q| q[n - 6] = 1),
        Outcome::Delegate,
        "EDNS version 1"
    );
    assert!(
        matches!(
            tweak(&|q| {
                q[n - 1] = 12;
                q.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
            }),
            Outcome::Reply(_)
        ),
        "a client cookie is ignored, as the full handler does"
    );
    assert_eq!(
        tweak(&|q| {
            q[n - 1] = 8;
            q.extend_from_slice(&[0, 8, 0, 4, 0, 1, 0, 0]);
        }),
        Outcome::Delegate,
        "client subnet"
    );
    assert_eq!(
        tweak(&|q| {
            q[n - 1] = 12;
            q.extend_from_slice(&[0, 10, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8]);
        }),
        Outcome::Delegate,
        "an option overrunning the OPT"
    );
    assert_eq!(tweak(&|q| q.push(0)), Outcome::Delegate, "trailing byte");
    for t in [255u16, 252, 251, 41, 0] {
        let q = query(8, "node-1._peer.internal", t, None);
        assert_eq!(outcome(&idx, LO, &q), Outcome::Delegate, "type {t}");
    }
    for name in [
        "internal",
        "ns.internal",
        "deep.static.internal",
        "example.com",
        ".",
    ] {
        let q = query(8, name, AAAA, None);
        assert_eq!(outcome(&idx, LO, &q), Outcome::Delegate, "{name}");
    }
    // A compression pointer in the question.
    let mut q = query(8, "x", AAAA, None);
    q.truncate(12);
    q.extend_from_slice(&[0xC0, 0x0C, 0, 28, 0, 1]);
    assert_eq!(outcome(&idx, LO, &q), Outcome::Delegate);
}

#[test]
fn malformed_packets_never_panic_and_are_never_answered_wrongly() {
    let idx = index();
    let good = query(9, "node-1._peer.internal", AAAA, Some(1232));
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut out = [0u8; 4096];
    for i in 0..200_000 {
        let mut p = good.clone();
        match i % 4 {
            0 => p.truncate((next() as usize) % (good.len() + 1)),
            1 => {
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % p.len();
                    p[at] = next() as u8;
                }
            }
            2 => {
                let len = (next() as usize) % 64;
                p = (0..len).map(|_| next() as u8).collect();
            }
            _ => {
                let at = 12 + (next() as usize) % (good.len() - 12);
                p[at] = 0xC0 | (next() as u8 & 0x3F);
            }
        }
        if let Outcome::Reply(n) = fastpath::answer(&idx, ip(LO), &p, &mut out) {
            // Whatever was answered must be a valid message with the question echoed.
            let m = Message::from_vec(&out[..n]).expect("a valid message");
            assert_eq!(m.queries.len(), 1);
            assert_eq!(&out[..2], &p[..2]);
        }
    }
}

#[test]
fn steady_state_answers_do_not_allocate() {
    let idx = index();
    let queries = [
        query(10, "node-1._peer.internal", AAAA, Some(1232)),
        query(11, "NODE-2._peer.INTERNAL", AAAA, None),
        query(12, "big._g.internal", AAAA, Some(4096)),
        query(13, "k8s._g.internal", AAAA, Some(1232)),
        query(14, "missing._peer.internal", AAAA, Some(1232)),
        query(15, "node-1._peer.internal", 1, None),
        query(16, "_peer.internal", 16, Some(1232)),
    ];
    let mut out = vec![0u8; 4096];
    // Warm up (lazy statics, thread-locals).
    for q in &queries {
        assert!(matches!(
            fastpath::answer(&idx, ip(LO), q, &mut out),
            Outcome::Reply(_)
        ));
    }
    let src = ip(LO);
    let before = allocations();
    let mut bytes = 0usize;
    for _ in 0..10_000 {
        for q in &queries {
            if let Outcome::Reply(n) = fastpath::answer(&idx, src, q, &mut out) {
                bytes += n;
            }
        }
    }
    let after = allocations();
    assert!(bytes > 70_000 * 12);
    assert_eq!(after - before, 0, "heap allocations in 70,000 answers");
    // The counter works: this allocates.
    let v = std::hint::black_box(vec![1u8; 10]);
    assert!(allocations() > after && v.len() == 10);
}

// ---- the socket server

/// A packet handed to the delegate, with its sender.
type Delegated = (Vec<u8>, SocketAddr);

#[test]
fn server_answers_in_batches_and_delegates_the_rest() {
    let source = Arc::new(ArcSwap::from_pointee(index()));
    let delegated: Arc<Mutex<Vec<Delegated>>> = Arc::default();
    let sink = delegated.clone();
    let mut config = FastServerConfig::new("127.0.0.1:0".parse().unwrap());
    config.workers = 2;
    let server = FastServer::start(
        &config,
        source.clone(),
        Arc::new(move |p: &[u8], src: SocketAddr| sink.lock().unwrap().push((p.to_vec(), src))),
    )
    .expect("start");
    let addr = server.local_addr();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    // A burst: the server takes several per recvmmsg and answers each, id by id.
    for id in 0..50u16 {
        client
            .send_to(&query(id, "node-1._peer.internal", AAAA, Some(1232)), addr)
            .unwrap();
    }
    let mut ids = BTreeSet::new();
    let mut buf = [0u8; 4096];
    for _ in 0..50 {
        let (n, from) = client.recv_from(&mut buf).expect("answer");
        assert_eq!(from, addr);
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(aaaa(&m), vec![host(PERSONAL, 0x11)]);
        ids.insert(m.metadata.id);
    }
    assert_eq!(ids.len(), 50);

    // A new index is picked up by the next batch.
    let mut d = dump();
    let personal = d.orgs[1].clone();
    d.peers.push(peer(&personal, "fresh", "k8s", 0x77));
    source.store(Arc::new(Index::build(&d, &settings())));
    client
        .send_to(&query(60, "fresh._peer.internal", AAAA, None), addr)
        .unwrap();
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(
        aaaa(&Message::from_vec(&buf[..n]).unwrap()),
        vec![host(PERSONAL, 0x77)]
    );

    // The apex SOA is the full handler's: the delegate gets the packet and the client's address,
    // and can answer through the reply socket.
    let q = query(61, "internal", 6, None);
    client.send_to(&q, addr).unwrap();
    let mut got = None;
    crate::support::eventually(Duration::from_secs(3), "the packet is delegated", || {
        got = delegated.lock().unwrap().pop();
        got.is_some()
    });
    let (packet, from) = got.unwrap();
    assert_eq!(packet, q);
    assert_eq!(from, client.local_addr().unwrap());
    let reply = server.reply_socket().unwrap();
    reply.send_to(b"delegated answer", from).unwrap();
    let (n, via) = client.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], via), (&b"delegated answer"[..], addr));
    server.shutdown();
}

// ---- differential: the fast path against the full hickory handler

mod differential {
    use std::collections::BTreeMap;

    use hickory_proto::rr::Record;
    use hickory_server::net::xfer::Protocol;
    use sixpn::dns::Handler;
    use sixpn::dns::udp::full_answer;
    use sixpn::snapshot::{Snapshot, SnapshotHandle, SnapshotSettings};

    use super::*;

    /// personal (fdaa:0:1::/48): n-<i> in groups g<size> of 1, 2, 3, 50, 119, 120, 121, 200
    /// and 300 members, plus "solo"; acme (fdaa:0:2::/48): a few peers sharing group names.
    fn corpus_dump() -> Dump {
        let personal = org("personal", PERSONAL);
        let acme = org("acme", ACME);
        let mut peers = Vec::new();
        let mut host = 0x100u128;
        for size in [1usize, 2, 3, 50, 119, 120, 121, 200, 300] {
            for _ in 0..size {
                peers.push(peer(
                    &personal,
                    &format!("n-{host}"),
                    &format!("g{size}"),
                    host,
                ));
                host += 1;
            }
        }
        peers.push(peer(&personal, "solo", "solo", 0x42));
        for i in 0..5 {
            peers.push(peer(&acme, &format!("a-{i}"), "g3", 0x10 + i));
        }
        peers.sort_by(|a, b| (&a.org, &a.name).cmp(&(&b.org, &b.name)));
        Dump {
            generation: Generation(3),
            orgs: vec![acme, personal],
            peers,
        }
    }

    fn snapshot_settings() -> SnapshotSettings {
        let mut s = SnapshotSettings::default();
        s.views.insert(
            0,
            ViewConfig {
                source: "127.0.0.2/32".parse().unwrap(),
                org: "acme".parse().unwrap(),
            },
        );
        s.views.push(ViewConfig {
            source: "127.0.0.7/32".parse().unwrap(),
            org: "missing".parse().unwrap(),
        });
        s
    }

    /// Flips the case of letters by `seed`'s bits.
    fn mixed(name: &str, seed: u32) -> String {
        name.chars()
            .enumerate()
            .map(|(i, c)| {
                if seed >> (i % 32) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    }

    fn with_cookie(mut q: Vec<u8>) -> Vec<u8> {
        let n = q.len();
        q[n - 1] = 12;
        q.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        q
    }

    /// A record's identity for comparison: name (lowercase), type, class, TTL, RDATA.
    fn key(r: &Record) -> String {
        format!(
            "{} {} {} {} {}",
            r.name.to_lowercase(),
            r.record_type(),
            r.dns_class,
            r.ttl,
            r.data
        )
    }

    #[tokio::test]
    async fn fast_answers_equal_the_full_handlers() {
        let snapshot = Snapshot::build(&corpus_dump(), &snapshot_settings());
        let handle = SnapshotHandle::new(snapshot);
        let handler = Handler::new(handle.clone());
        let snap = handle.load();
        let fast = snap.fast();

        let mut names: Vec<String> = vec![
            "solo._peer.internal".into(),
            "n-300._peer.internal".into(),
            "a-1._peer.internal".into(),
            "nope._peer.internal".into(),
            "x.solo._peer.internal".into(),
            "_peer.internal".into(),
            "_g.internal".into(),
            "g0._g.internal".into(),
            "nope.internal".into(),
            "internal".into(),
            "ns.internal".into(),
            "gateway.internal".into(),
            "x.ns.internal".into(),
            "example.com".into(),
            "internal.example".into(),
        ];
        for size in [1, 2, 3, 50, 119, 120, 121, 200, 300] {
            names.push(format!("g{size}._g.internal"));
        }
        names.push(format!("{}._g.internal", "x".repeat(63)));
        let sources = [
            "127.0.0.1",
            "127.0.0.2",
            "127.0.0.7",
            "10.9.9.9",
            "fdaa:0:2::99",
            "::1",
        ];
        let types = [28u16, 1, 16, 15, 6, 2, 5, 255, 33];
        let sizes = [
            None,
            Some(100),
            Some(512),
            Some(1232),
            Some(4096),
            Some(65000),
        ];

        let mut stats: BTreeMap<&str, usize> = BTreeMap::new();
        let mut out = vec![0u8; 4096];
        let mut id = 0u16;
        for (ni, name) in names.iter().enumerate() {
            for variant in 0..2u32 {
                let asked = if variant == 0 {
                    name.clone()
                } else {
                    mixed(name, 0x9E37_79B9 ^ ni as u32)
                };
                for &qtype in &types {
                    for &size in &sizes {
                        for cookie in [false, true] {
                            if cookie && size.is_none() {
                                continue;
                            }
                            for src in sources {
                                id = id.wrapping_add(1);
                                let mut q = query(id, &asked, qtype, size);
                                if cookie {
                                    q = with_cookie(q);
                                }
                                // Header bits: RD clear, or AD and CD set (as dig sends).
                                match id % 3 {
                                    0 => q[2] &= !0x01,
                                    1 => q[3] |= 0x30,
                                    _ => {}
                                }
                                let src_addr = SocketAddr::new(ip(src), 5353);
                                let outcome = fastpath::answer(fast, src_addr.ip(), &q, &mut out);
                                let full =
                                    full_answer(&handler, q.clone(), src_addr, Protocol::Udp).await;
                                let case = format!(
                                    "{src} {asked} type {qtype} edns {size:?} cookie {cookie}"
                                );
                                match outcome {
                                    Outcome::Delegate => {
                                        *stats.entry("delegated").or_default() += 1
                                    }
                                    Outcome::Drop => {
                                        assert!(full.is_none(), "{case}: fast drops, full answers");
                                    }
                                    Outcome::Reply(n) => {
                                        let full = full
                                            .unwrap_or_else(|| panic!("{case}: full sent nothing"));
                                        let kind = compare(&out[..n], &full, &q, &case);
                                        *stats.entry(kind).or_default() += 1;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        // Every EDNS size around the truncation points, byte by byte.
        for name in ["g50._g.internal", "G121._g.INTERNAL", "_peer.internal"] {
            for size in 512..=1800u16 {
                id = id.wrapping_add(1);
                let q = query(
                    id,
                    name,
                    if name.starts_with('_') { 16 } else { 28 },
                    Some(size),
                );
                let src_addr = SocketAddr::new(ip("127.0.0.1"), 5353);
                let Outcome::Reply(n) = fastpath::answer(fast, src_addr.ip(), &q, &mut out) else {
                    panic!("{name} {size}: not answered by the fast path");
                };
                let full = full_answer(&handler, q.clone(), src_addr, Protocol::Udp)
                    .await
                    .expect("an answer");
                let kind = compare(&out[..n], &full, &q, &format!("{name} edns {size}"));
                *stats.entry(kind).or_default() += 1;
            }
        }
        eprintln!("differential corpus: {stats:?}");
        // The fast path really answered every hot kind of query (not all delegated).
        for kind in ["answer", "group", "truncated", "nxdomain", "nodata", "txt"] {
            assert!(
                stats.get(kind).copied().unwrap_or(0) > 10,
                "{kind}: {stats:?}"
            );
        }
        let answered: usize = stats
            .iter()
            .filter(|(k, _)| **k != "delegated")
            .map(|(_, v)| v)
            .sum();
        assert!(answered > stats["delegated"], "{stats:?}");
    }

    /// Asserts that the fast reply equals the full one record for record (group order aside);
    /// returns the kind of answer.
    fn compare(fast_raw: &[u8], full_raw: &[u8], q: &[u8], case: &str) -> &'static str {
        let fast = Message::from_vec(fast_raw).unwrap_or_else(|e| panic!("{case}: fast: {e}"));
        let full = Message::from_vec(full_raw).unwrap_or_else(|e| panic!("{case}: full: {e}"));
        assert_eq!(fast.metadata, full.metadata, "{case}: header");
        // The question is echoed byte for byte by both.
        let qend = question_end(q);
        assert_eq!(&fast_raw[12..qend], &q[12..qend], "{case}: question echo");
        assert_eq!(
            &full_raw[12..qend],
            &q[12..qend],
            "{case}: question echo (full)"
        );
        assert_eq!(fast.edns, full.edns, "{case}: OPT");
        let keys = |rs: &[Record]| rs.iter().map(key).collect::<Vec<_>>();
        assert_eq!(
            keys(&fast.authorities),
            keys(&full.authorities),
            "{case}: authority"
        );
        assert_eq!(
            keys(&fast.additionals),
            keys(&full.additionals),
            "{case}: additional"
        );
        let (mut fa, mut fu) = (keys(&fast.answers), keys(&full.answers));
        assert_eq!(fa.len(), fu.len(), "{case}: answer count");
        let rcode = fast.metadata.response_code;
        if fa.len() > 1 {
            if fast.metadata.truncation {
                // Different rotation windows of the same group: both within it, no repeats.
                let n = fa.len();
                fa.sort();
                fa.dedup();
                fu.sort();
                fu.dedup();
                assert_eq!((fa.len(), fu.len()), (n, n), "{case}: repeated records");
                let owner = &fa[0][..fa[0].find(' ').unwrap()];
                assert!(fu.iter().all(|k| k.starts_with(owner)), "{case}");
                assert_eq!(fast_raw.len(), full_raw.len(), "{case}: size");
                return "truncated group";
            }
            fa.sort();
            fu.sort();
            assert_eq!(fa, fu, "{case}: group members");
            assert_eq!(fast_raw.len(), full_raw.len(), "{case}: size");
            return "group";
        }
        assert_eq!(fa, fu, "{case}: answers");
        // No rotation to tell them apart: byte for byte the same, compression included (the
        // SOA of a negative answer too).
        assert_eq!(fast_raw, full_raw, "{case}: bytes");
        if fa.len() == 1 {
            return if fast.answers[0].record_type() == RecordType::TXT {
                "txt"
            } else {
                "answer"
            };
        }
        if fast.metadata.truncation {
            return "truncated";
        }
        match rcode {
            ResponseCode::NXDomain => "nxdomain",
            ResponseCode::NoError => "nodata",
            _ => "other",
        }
    }

    /// The end of the question section of a query built by [`query`].
    fn question_end(q: &[u8]) -> usize {
        let mut at = 12;
        while q[at] != 0 {
            at += 1 + usize::from(q[at]);
        }
        at + 5
    }
}
