//! DNS acceptance tests (issue 3): real packets to a real server on loopback.
//!
//! The server runs on its own runtime thread; the tests talk to it with blocking std sockets,
//! binding the client to 127.0.0.2 / 127.0.0.3 / 127.0.0.4 to pick a view (no root needed).
//! Snapshots are built from hand-made dumps: no database.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Name, RData, RecordType};
use sixpn::config::ViewConfig;
use sixpn::model::{Generation, Org, Peer};
use sixpn::snapshot::{Snapshot, SnapshotHandle, SnapshotSettings};
use sixpn::store::Dump;
use tokio_util::sync::CancellationToken;

const PERSONAL_SRC: &str = "127.0.0.2";
const ACME_SRC: &str = "127.0.0.3";
const UNMAPPED_SRC: &str = "127.0.0.4";

fn org(slug: &str, n: u16) -> Org {
    Org {
        slug: slug.parse().unwrap(),
        prefix: format!("fdaa:0:{n:x}::/48").parse().unwrap(),
        created_at: 0,
    }
}

fn peer(org: &Org, name: &str, group: &str, host: u64) -> Peer {
    Peer {
        org: org.slug.clone(),
        name: name.parse().unwrap(),
        group: group.parse().unwrap(),
        region: "local".parse().unwrap(),
        pubkey: sixpn::wireguard::PrivateKey::from_bytes([7; 32]).public_key(),
        address: sixpn::store::peer_address(org.prefix, host),
        token: "t".parse().unwrap(),
        created_at: 0,
        updated_at: 0,
        key_expires_at: None,
    }
}

/// personal: node-1, node-2, node-3 in k8s, db in storage, big-000..big-199 in big.
/// acme: web in k8s.
fn dump(generation: u64) -> Dump {
    let personal = org("personal", 1);
    let acme = org("acme", 2);
    let mut peers = vec![
        peer(&personal, "node-1", "k8s", 1),
        peer(&personal, "node-2", "k8s", 2),
        peer(&personal, "node-3", "k8s", 3),
        peer(&personal, "db", "storage", 4),
        peer(&acme, "web", "k8s", 1),
    ];
    for i in 0..200 {
        peers.push(peer(&personal, &format!("big-{i:03}"), "big", 100 + i));
    }
    Dump {
        generation: Generation(generation),
        orgs: vec![personal, acme],
        peers,
    }
}

fn settings() -> SnapshotSettings {
    SnapshotSettings {
        views: vec![
            ViewConfig {
                source: format!("{PERSONAL_SRC}/32").parse().unwrap(),
                org: "personal".parse().unwrap(),
            },
            ViewConfig {
                source: format!("{ACME_SRC}/32").parse().unwrap(),
                org: "acme".parse().unwrap(),
            },
        ],
        ..SnapshotSettings::default()
    }
}

/// A DNS server on 127.0.0.1:<free port>, stopped on drop.
struct TestDns {
    addr: SocketAddr,
    handle: SnapshotHandle,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestDns {
    fn start(dump: &Dump, settings: &SnapshotSettings) -> TestDns {
        let handle = SnapshotHandle::new(Snapshot::build(dump, settings));
        let cancel = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listeners = runtime
            .block_on(sixpn::dns::bind(&["127.0.0.1:0".parse().unwrap()]))
            .unwrap();
        let addr = listeners.local_addrs()[0];
        let (h, c) = (handle.clone(), cancel.clone());
        let thread = std::thread::spawn(move || {
            runtime
                .block_on(sixpn::dns::serve(listeners, h, c))
                .unwrap();
        });
        TestDns {
            addr,
            handle,
            cancel,
            thread: Some(thread),
        }
    }

    fn default() -> TestDns {
        TestDns::start(&dump(1), &settings())
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn query_message(qname: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut msg = Message::query();
    msg.metadata.id = rand_id();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name(qname), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        msg.set_edns(e);
    }
    msg
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0x1234);
    NEXT.fetch_add(7919, Ordering::Relaxed)
}

fn udp_socket(src: &str, timeout: Duration) -> UdpSocket {
    let socket = UdpSocket::bind((src.parse::<IpAddr>().unwrap(), 0)).unwrap();
    socket.set_read_timeout(Some(timeout)).unwrap();
    socket
}

/// Sends raw bytes over UDP from `src`; the raw reply, if one comes within `timeout`.
fn udp_raw(server: SocketAddr, src: &str, packet: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let socket = udp_socket(src, timeout);
    socket.send_to(packet, server).unwrap();
    let mut buf = vec![0u8; 65535];
    match socket.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// One UDP exchange; returns the reply's size and the decoded reply.
fn udp_exchange(server: SocketAddr, src: &str, msg: &Message) -> (usize, Message) {
    let raw =
        udp_raw(server, src, &msg.to_vec().unwrap(), Duration::from_secs(3)).expect("no UDP reply");
    let reply = Message::from_vec(&raw).expect("reply decodes");
    assert_eq!(reply.metadata.id, msg.metadata.id);
    (raw.len(), reply)
}

fn udp(server: SocketAddr, src: &str, qname: &str, qtype: RecordType) -> Message {
    udp_exchange(server, src, &query_message(qname, qtype, None)).1
}

fn tcp_connect(server: SocketAddr, src: &str) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(src.parse().unwrap(), 0).into())
        .unwrap();
    socket.connect(&server.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream
}

fn tcp_frame(msg: &Message) -> Vec<u8> {
    let body = msg.to_vec().unwrap();
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn tcp_read(stream: &mut TcpStream) -> Message {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut body).unwrap();
    Message::from_vec(&body).unwrap()
}

fn aaaa_answers(reply: &Message) -> Vec<Ipv6Addr> {
    reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

fn has_soa_authority(reply: &Message) -> bool {
    reply.authorities.len() == 1 && matches!(reply.authorities[0].data, RData::SOA(_))
}

fn personal_addr(host: u64) -> Ipv6Addr {
    sixpn::store::peer_address("fdaa:0:1::/48".parse().unwrap(), host)
}

#[test]
fn peer_aaaa_is_authoritative_with_configured_ttl() {
    let dns = TestDns::default();
    let reply = udp(
        dns.addr,
        PERSONAL_SRC,
        "node-1._peer.internal.",
        RecordType::AAAA,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative, "AA set");
    assert!(!reply.metadata.recursion_available, "RA clear");
    assert!(reply.metadata.recursion_desired, "RD copied");
    assert_eq!(aaaa_answers(&reply), [personal_addr(1)]);
    assert_eq!(reply.answers[0].ttl, 5);
    let reply = udp(
        dns.addr,
        PERSONAL_SRC,
        "node-1._peer.internal.",
        RecordType::ANY,
    );
    assert_eq!(aaaa_answers(&reply), [personal_addr(1)], "ANY");

    let ttl_settings = SnapshotSettings {
        ttl: 42,
        ..settings()
    };
    let dns = TestDns::start(&dump(1), &ttl_settings);
    let reply = udp(
        dns.addr,
        PERSONAL_SRC,
        "node-1._peer.internal.",
        RecordType::AAAA,
    );
    assert_eq!(reply.answers[0].ttl, 42);
}

#[test]
fn group_has_every_member_and_rotates() {
    let dns = TestDns::default();
    let first = aaaa_answers(&udp(
        dns.addr,
        PERSONAL_SRC,
        "k8s._g.internal.",
        RecordType::AAAA,
    ));
    let second = aaaa_answers(&udp(
        dns.addr,
        PERSONAL_SRC,
        "k8s._g.internal.",
        RecordType::AAAA,
    ));
    let mut want = vec![personal_addr(1), personal_addr(2), personal_addr(3)];
    want.sort();
    for answer in [&first, &second] {
        let mut got = answer.clone();
        got.sort();
        assert_eq!(got, want, "every member, nothing else");
    }
    assert_ne!(first, second, "consecutive answers rotate");
    // Round robin: the second answer is the first one rotated by one.
    let mut rotated = first.clone();
    rotated.rotate_left(1);
    assert_eq!(second, rotated);
}

#[test]
fn peer_list_txt() {
    let dns = TestDns::default();
    let reply = udp_exchange(
        dns.addr,
        ACME_SRC,
        &query_message("_peer.internal.", RecordType::TXT, Some(1232)),
    )
    .1;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let RData::TXT(txt) = &reply.answers[0].data else {
        panic!("not TXT: {reply:?}")
    };
    assert_eq!(txt.to_string(), "web");

    // The personal org's list is too long for 512 bytes: TC, then TCP gives it all.
    let reply = udp(dns.addr, PERSONAL_SRC, "_peer.internal.", RecordType::TXT);
    assert!(reply.metadata.truncation);
    let mut stream = tcp_connect(dns.addr, PERSONAL_SRC);
    stream
        .write_all(&tcp_frame(&query_message(
            "_peer.internal.",
            RecordType::TXT,
            None,
        )))
        .unwrap();
    let reply = tcp_read(&mut stream);
    let RData::TXT(txt) = &reply.answers[0].data else {
        panic!("not TXT")
    };
    let strings: Vec<String> = txt
        .txt_data
        .iter()
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    assert!(strings.iter().all(|s| s.len() <= 255));
    let names: Vec<&str> = strings
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(names.len(), 204);
    assert!(names.contains(&"node-1") && names.contains(&"big-199") && !names.contains(&"web"));
}

#[test]
fn negative_answers_carry_the_soa_and_out_of_zone_is_refused() {
    let dns = TestDns::default();
    let reply = udp(
        dns.addr,
        PERSONAL_SRC,
        "nobody._peer.internal.",
        RecordType::AAAA,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(reply.metadata.authoritative);
    assert!(reply.answers.is_empty());
    assert!(has_soa_authority(&reply), "{reply:?}");
    assert!(reply.authorities[0].ttl <= 5, "negative TTL is short");

    for qtype in [RecordType::A, RecordType::TXT, RecordType::MX] {
        let reply = udp(dns.addr, PERSONAL_SRC, "node-1._peer.internal.", qtype);
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{qtype}"
        );
        assert!(reply.answers.is_empty(), "{qtype}");
        assert!(has_soa_authority(&reply), "{qtype}");
    }
    // Empty non-terminals are NODATA, not NXDOMAIN (RFC 8020).
    for ent in ["_g.internal.", "_peer.internal."] {
        let reply = udp(dns.addr, PERSONAL_SRC, ent, RecordType::AAAA);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{ent}");
        assert!(has_soa_authority(&reply), "{ent}");
    }
    // The apex.
    let reply = udp(dns.addr, PERSONAL_SRC, "internal.", RecordType::SOA);
    assert!(matches!(reply.answers[0].data, RData::SOA(_)));
    let reply = udp(dns.addr, PERSONAL_SRC, "internal.", RecordType::NS);
    assert!(matches!(reply.answers[0].data, RData::NS(_)));
    let reply = udp(dns.addr, PERSONAL_SRC, "ns.internal.", RecordType::AAAA);
    assert_eq!(
        aaaa_answers(&reply),
        ["fdaa:0:1::3".parse::<Ipv6Addr>().unwrap()]
    );

    for out in ["example.com.", "internal.example.", "."] {
        let reply = udp(dns.addr, PERSONAL_SRC, out, RecordType::A);
        assert_eq!(reply.metadata.response_code, ResponseCode::Refused, "{out}");
        assert!(!reply.metadata.authoritative);
    }
}

#[test]
fn mixed_case_question_is_matched_and_echoed() {
    let dns = TestDns::default();
    let msg = query_message("NoDe-1._PEER.internal.", RecordType::AAAA, None);
    let sent = msg.to_vec().unwrap();
    let raw = udp_raw(dns.addr, PERSONAL_SRC, &sent, Duration::from_secs(3)).unwrap();
    let question = &sent[12..];
    assert_eq!(
        &raw[12..12 + question.len()],
        question,
        "question echoed byte for byte"
    );
    let reply = Message::from_vec(&raw).unwrap();
    assert_eq!(reply.queries[0].name().to_ascii(), "NoDe-1._PEER.internal.");
    assert_eq!(aaaa_answers(&reply), [personal_addr(1)]);
}

#[test]
fn views_separate_orgs_and_unmapped_sources_are_refused() {
    let dns = TestDns::default();
    let acme_web = sixpn::store::peer_address("fdaa:0:2::/48".parse().unwrap(), 1);

    let reply = udp(dns.addr, ACME_SRC, "web._peer.internal.", RecordType::AAAA);
    assert_eq!(aaaa_answers(&reply), [acme_web]);
    let reply = udp(
        dns.addr,
        ACME_SRC,
        "node-1._peer.internal.",
        RecordType::AAAA,
    );
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NXDomain,
        "another org's peer"
    );
    let reply = udp(dns.addr, ACME_SRC, "k8s._g.internal.", RecordType::AAAA);
    assert_eq!(aaaa_answers(&reply), [acme_web], "only acme's k8s");
    let reply = udp(dns.addr, ACME_SRC, "storage._g.internal.", RecordType::AAAA);
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);

    let reply = udp(
        dns.addr,
        PERSONAL_SRC,
        "web._peer.internal.",
        RecordType::AAAA,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    let reply = udp(dns.addr, PERSONAL_SRC, "k8s._g.internal.", RecordType::AAAA);
    assert_eq!(aaaa_answers(&reply).len(), 3);

    let reply = udp(
        dns.addr,
        UNMAPPED_SRC,
        "node-1._peer.internal.",
        RecordType::AAAA,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert!(reply.answers.is_empty());
    let mut stream = tcp_connect(dns.addr, UNMAPPED_SRC);
    stream
        .write_all(&tcp_frame(&query_message(
            "node-1._peer.internal.",
            RecordType::AAAA,
            None,
        )))
        .unwrap();
    assert_eq!(
        tcp_read(&mut stream).metadata.response_code,
        ResponseCode::Refused
    );
}

#[test]
fn large_group_truncates_over_udp_and_is_whole_over_tcp() {
    let dns = TestDns::default();
    let big = "big._g.internal.";
    for (edns, limit) in [(None, 512usize), (Some(1232u16), 1232), (Some(4096), 4096)] {
        let msg = query_message(big, RecordType::AAAA, edns);
        let (size, reply) = udp_exchange(dns.addr, PERSONAL_SRC, &msg);
        assert!(reply.metadata.truncation, "{edns:?}: TC");
        assert!(size <= limit, "{edns:?}: {size} > {limit}");
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        // No partial RRset: header, question and (when asked) OPT, as Knot and BIND answer.
        assert!(reply.answers.is_empty(), "{edns:?}: {:?}", reply.answers);
        assert!(reply.authorities.is_empty(), "{edns:?}");
        let question = 12 + big.len() + 1 + 4;
        let opt = if edns.is_some() { 11 } else { 0 };
        assert_eq!(size, question + opt, "{edns:?}: {size} bytes");
        assert_eq!(
            reply.edns.is_some(),
            edns.is_some(),
            "{edns:?}: OPT echoed iff asked"
        );
        if let Some(e) = &reply.edns {
            assert_eq!(e.max_payload(), edns.unwrap());
        }
    }

    let mut stream = tcp_connect(dns.addr, PERSONAL_SRC);
    stream
        .write_all(&tcp_frame(&query_message(
            big,
            RecordType::AAAA,
            Some(1232),
        )))
        .unwrap();
    let reply = tcp_read(&mut stream);
    assert!(!reply.metadata.truncation);
    let mut got = aaaa_answers(&reply);
    got.sort();
    let want: Vec<Ipv6Addr> = (100..300).map(personal_addr).collect();
    assert_eq!(got, want, "all 200 over TCP");
}

#[test]
fn pipelined_tcp_queries_are_all_answered() {
    let dns = TestDns::default();
    let names = [
        "node-1._peer.internal.",
        "node-2._peer.internal.",
        "nobody._peer.internal.",
        "k8s._g.internal.",
        "big._g.internal.",
        "example.com.",
        "node-3._peer.internal.",
    ];
    let queries: Vec<Message> = names
        .iter()
        .map(|n| query_message(n, RecordType::AAAA, None))
        .collect();
    let mut stream = tcp_connect(dns.addr, PERSONAL_SRC);
    let all: Vec<u8> = queries.iter().flat_map(tcp_frame).collect();
    stream.write_all(&all).unwrap();
    let mut replies: Vec<Message> = (0..queries.len()).map(|_| tcp_read(&mut stream)).collect();
    replies.sort_by_key(|r| r.metadata.id);
    let mut expect: Vec<(u16, ResponseCode, usize)> = queries
        .iter()
        .zip([1, 1, 0, 3, 200, 0, 1])
        .zip([
            ResponseCode::NoError,
            ResponseCode::NoError,
            ResponseCode::NXDomain,
            ResponseCode::NoError,
            ResponseCode::NoError,
            ResponseCode::Refused,
            ResponseCode::NoError,
        ])
        .map(|((q, n), rc)| (q.metadata.id, rc, n))
        .collect();
    expect.sort_by_key(|e| e.0);
    let got: Vec<(u16, ResponseCode, usize)> = replies
        .iter()
        .map(|r| (r.metadata.id, r.metadata.response_code, r.answers.len()))
        .collect();
    assert_eq!(got, expect);
}

#[test]
fn a_published_snapshot_answers_the_very_next_query() {
    let dns = TestDns::default();
    let reply = udp(
        dns.addr,
        PERSONAL_SRC,
        "fresh._peer.internal.",
        RecordType::AAAA,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);

    let mut next = dump(2);
    let personal = next.orgs[0].clone();
    next.peers.push(peer(&personal, "fresh", "k8s", 999));
    next.peers.retain(|p| p.name.as_str() != "node-1");
    let mut published = dns.handle.published();
    dns.handle.publish(Snapshot::build(&next, &settings()));
    assert_eq!(*published.borrow_and_update(), Generation(2));

    let reply = udp(
        dns.addr,
        PERSONAL_SRC,
        "fresh._peer.internal.",
        RecordType::AAAA,
    );
    assert_eq!(aaaa_answers(&reply), [personal_addr(999)]);
    let reply = udp(
        dns.addr,
        PERSONAL_SRC,
        "node-1._peer.internal.",
        RecordType::AAAA,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    let reply = udp(dns.addr, PERSONAL_SRC, "k8s._g.internal.", RecordType::AAAA);
    assert_eq!(aaaa_answers(&reply).len(), 3, "node-2, node-3, fresh");
}

#[test]
fn other_opcodes_classes_and_edns_versions() {
    let dns = TestDns::default();
    let mut notify = query_message("internal.", RecordType::SOA, None);
    notify.metadata.op_code = OpCode::Notify;
    assert_eq!(
        udp_exchange(dns.addr, PERSONAL_SRC, &notify)
            .1
            .metadata
            .response_code,
        ResponseCode::NotImp
    );

    let mut chaos = Message::query();
    chaos.metadata.id = rand_id();
    let mut q = Query::query(name("version.bind."), RecordType::TXT);
    q.set_query_class(DNSClass::CH);
    chaos.add_query(q);
    assert_eq!(
        udp_exchange(dns.addr, PERSONAL_SRC, &chaos)
            .1
            .metadata
            .response_code,
        ResponseCode::Refused
    );

    let mut v1 = query_message("node-1._peer.internal.", RecordType::AAAA, Some(1232));
    v1.edns.as_mut().unwrap().set_version(1);
    let reply = udp_exchange(dns.addr, PERSONAL_SRC, &v1).1;
    // BADVERS is 16 (its name is shared with TSIG's BADSIG, which the decoder picks).
    assert_eq!(u16::from(reply.metadata.response_code), 16);
    assert_eq!(reply.edns.unwrap().version(), 0);

    let reply = udp(dns.addr, PERSONAL_SRC, "internal.", RecordType::AXFR);
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);

    // A huge advertised payload is clamped.
    let reply = udp_exchange(
        dns.addr,
        PERSONAL_SRC,
        &query_message("node-1._peer.internal.", RecordType::AAAA, Some(65000)),
    )
    .1;
    assert_eq!(
        reply.edns.unwrap().max_payload(),
        sixpn::dns::MAX_UDP_PAYLOAD
    );
}

/// A tiny deterministic generator, so a failing corpus can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    [id, flags, qd, an, ns, ar]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect()
}

const QUESTION: &[u8] = b"\x06node-1\x05_peer\x08internal\x00\x00\x1c\x00\x01";

/// (name, packet, what an answer may say; empty: silence or anything that decodes).
fn corpus() -> Vec<(String, Vec<u8>, Vec<ResponseCode>)> {
    let formerr = vec![ResponseCode::FormErr];
    let mut out: Vec<(String, Vec<u8>, Vec<ResponseCode>)> = vec![
        ("empty".into(), vec![], vec![]),
        ("one byte".into(), vec![0], vec![]),
        (
            "truncated header".into(),
            header(1, 0x0100, 1, 0, 0, 0)[..7].to_vec(),
            vec![],
        ),
        (
            "header only, QDCOUNT 1".into(),
            header(2, 0x0100, 1, 0, 0, 0),
            formerr.clone(),
        ),
        (
            "QDCOUNT 0".into(),
            header(3, 0x0100, 0, 0, 0, 0),
            formerr.clone(),
        ),
        (
            "QDCOUNT 2".into(),
            [
                header(4, 0x0100, 2, 0, 0, 0),
                QUESTION.to_vec(),
                QUESTION.to_vec(),
            ]
            .concat(),
            formerr.clone(),
        ),
        (
            "label length past the end".into(),
            [header(5, 0x0100, 1, 0, 0, 0), b"\x3fabc".to_vec()].concat(),
            formerr.clone(),
        ),
        (
            "label length 64 (reserved bits)".into(),
            [
                header(6, 0x0100, 1, 0, 0, 0),
                b"\x40".to_vec(),
                vec![b'a'; 64],
                b"\x00\x00\x1c\x00\x01".to_vec(),
            ]
            .concat(),
            formerr.clone(),
        ),
        (
            "compression loop to itself".into(),
            [
                header(7, 0x0100, 1, 0, 0, 0),
                b"\xc0\x0c\x00\x1c\x00\x01".to_vec(),
            ]
            .concat(),
            formerr.clone(),
        ),
        (
            "compression loop between two labels".into(),
            [
                header(8, 0x0100, 1, 0, 0, 0),
                b"\x01a\xc0\x0e\x01b\xc0\x0c\x00\x1c\x00\x01".to_vec(),
            ]
            .concat(),
            formerr.clone(),
        ),
        (
            "forward compression pointer".into(),
            [
                header(9, 0x0100, 1, 0, 0, 0),
                b"\xc0\x20\x00\x1c\x00\x01".to_vec(),
            ]
            .concat(),
            formerr.clone(),
        ),
        (
            "name longer than 255".into(),
            [
                header(10, 0x0100, 1, 0, 0, 0),
                [&b"\x3f"[..], &[b'a'; 63]].concat().repeat(5),
                b"\x00\x00\x1c\x00\x01".to_vec(),
            ]
            .concat(),
            formerr.clone(),
        ),
        (
            "missing qtype".into(),
            [header(11, 0x0100, 1, 0, 0, 0), b"\x08internal\x00".to_vec()].concat(),
            formerr.clone(),
        ),
        (
            "ARCOUNT without records".into(),
            [header(12, 0x0100, 1, 0, 0, 3), QUESTION.to_vec()].concat(),
            formerr.clone(),
        ),
        (
            "two OPT records".into(),
            [
                header(13, 0x0100, 1, 0, 0, 2),
                QUESTION.to_vec(),
                b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00".repeat(2),
            ]
            .concat(),
            formerr.clone(),
        ),
        (
            "a response (QR set)".into(),
            [header(14, 0x8100, 1, 0, 0, 0), QUESTION.to_vec()].concat(),
            vec![ResponseCode::NoError],
        ),
    ];
    for op in [1u16, 2, 3, 6, 7, 15] {
        out.push((
            format!("opcode {op}"),
            [
                header(100 + op, (op << 11) | 0x0100, 1, 0, 0, 0),
                QUESTION.to_vec(),
            ]
            .concat(),
            vec![ResponseCode::NotImp, ResponseCode::FormErr],
        ));
    }
    let mut rng = XorShift(0x5eed_cafe_f00d_1234);
    for i in 0..200 {
        let n = (rng.next() % 600) as usize;
        out.push((format!("random {i}"), rng.bytes(n), vec![]));
    }
    // Valid header and question, then random bytes where the records would be.
    for i in 0..100 {
        let n = (rng.next() % 100) as usize;
        let counts = rng.next();
        let h = header(
            500 + i,
            0x0100,
            1,
            (counts & 3) as u16,
            ((counts >> 2) & 3) as u16,
            ((counts >> 4) & 3) as u16,
        );
        out.push((
            format!("random records {i}"),
            [h, QUESTION.to_vec(), rng.bytes(n)].concat(),
            vec![],
        ));
    }
    out
}

#[test]
fn malformed_packets_never_crash_the_server() {
    let dns = TestDns::default();
    let good = query_message("node-1._peer.internal.", RecordType::AAAA, None);
    for (what, packet, allowed) in corpus() {
        // A packet that must be answered gets a client's patience (a busy machine may take
        // its time); one that may be dropped only a short look, to keep the loop quick.
        let wait = if allowed.is_empty() {
            Duration::from_millis(150)
        } else {
            Duration::from_secs(3)
        };
        let reply = udp_raw(dns.addr, PERSONAL_SRC, &packet, wait);
        if let Some(raw) = reply {
            assert!(raw.len() >= 12, "{what}: short reply");
            assert_eq!(raw[..2], packet[..2], "{what}: reply id");
            assert_ne!(raw[2] & 0x80, 0, "{what}: reply has QR set");
            let rcode = ResponseCode::from(0, raw[3] & 0x0f);
            if !allowed.is_empty() {
                assert!(allowed.contains(&rcode), "{what}: got {rcode}");
            }
        } else if what == "a response (QR set)" {
            // Dropped, as it should be.
        } else if !allowed.is_empty() {
            panic!("{what}: no reply, expected {allowed:?}");
        }
        let (_, reply) = udp_exchange(dns.addr, PERSONAL_SRC, &good);
        assert_eq!(aaaa_answers(&reply), [personal_addr(1)], "after {what}");
    }

    // Over TCP: garbage frames on one connection, then a good query on a fresh one.
    for (what, packet, _) in corpus().into_iter().take(40) {
        let mut stream = tcp_connect(dns.addr, PERSONAL_SRC);
        let mut frame = (packet.len() as u16).to_be_bytes().to_vec();
        frame.extend(&packet);
        let _ = stream.write_all(&frame);
        drop(stream);
        let mut stream = tcp_connect(dns.addr, PERSONAL_SRC);
        stream.write_all(&tcp_frame(&good)).unwrap();
        assert_eq!(
            aaaa_answers(&tcp_read(&mut stream)),
            [personal_addr(1)],
            "TCP after {what}"
        );
    }
}

#[test]
fn dig_retries_over_tcp_and_gets_the_whole_group() {
    let Ok(version) = std::process::Command::new("dig").arg("-v").output() else {
        eprintln!("dig is not installed; skipping the dig check");
        return;
    };
    assert!(version.status.success());
    let dns = TestDns::default();
    let out = std::process::Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &dns.addr.port().to_string(),
            "-b",
            PERSONAL_SRC,
            "+tries=1",
            "+time=3",
            "+short",
            "big._g.internal",
            "AAAA",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 200, "{text}");
}

#[test]
fn snapshot_handle_is_shared_and_cheap() {
    let handle = SnapshotHandle::new(Snapshot::build(&dump(1), &settings()));
    let a = handle.load();
    let clone = handle.clone();
    clone.publish(Snapshot::build(&dump(5), &settings()));
    assert_eq!(
        a.generation(),
        Generation(1),
        "old readers keep their snapshot"
    );
    assert_eq!(handle.load().generation(), Generation(5));
    assert!(Arc::strong_count(&a) >= 1);
}

/// The publisher against a real (SQLite) store: every write's generation gets published, and the
/// published snapshot answers with the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_follows_a_real_store() {
    use sixpn::store::{NewPeer, NewToken, Store};

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sixpn.db").display());
    let store = Store::open(&url, "fdaa::/16".parse().unwrap())
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let handle = sixpn::snapshot::start(store.clone(), SnapshotSettings::default(), cancel.clone())
        .await
        .unwrap();
    let personal = "personal".parse().unwrap();
    let (_, secret) = store
        .mint_token(
            &personal,
            NewToken {
                name: "t".parse().unwrap(),
                group: None,
                expires_at: None,
                max_peers: None,
                key_expiry: None,
            },
        )
        .await
        .unwrap();
    let token = store.authenticate(secret.expose()).await.unwrap();
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();

    let mut last = Generation(0);
    for i in 0..5 {
        let (peer, generation) = store
            .register_peer(
                &token,
                NewPeer {
                    name: format!("node-{i}").parse().unwrap(),
                    group: "k8s".parse().unwrap(),
                    region: "local".parse().unwrap(),
                    pubkey: sixpn::wireguard::PrivateKey::from_bytes([i + 1; 32]).public_key(),
                },
            )
            .await
            .unwrap();
        assert!(generation > last);
        last = generation;
        assert!(
            handle
                .wait_for_timeout(generation, Duration::from_secs(5))
                .await,
            "generation {generation} published"
        );
        let snapshot = handle.load();
        let found = sixpn::dns::lookup(
            &snapshot,
            loopback,
            &name(&format!("node-{i}._peer.internal.")),
            RecordType::AAAA,
        );
        match found {
            sixpn::dns::Lookup::Answer(set) => {
                let records = set.records(snapshot.ttl(), 0, set.len());
                assert_eq!(records[0].data, RData::AAAA(peer.address.into()));
            }
            other => panic!("node-{i}: {other:?}"),
        }
    }

    let (deleted, generation) = store
        .delete_token(&personal, &"t".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(deleted, 5);
    assert!(
        handle
            .wait_for_timeout(generation, Duration::from_secs(5))
            .await
    );
    let snapshot = handle.load();
    let gone = sixpn::dns::lookup(
        &snapshot,
        loopback,
        &name("k8s._g.internal."),
        RecordType::AAAA,
    );
    assert!(
        matches!(gone, sixpn::dns::Lookup::NxDomain { .. }),
        "{gone:?}"
    );
    cancel.cancel();
}

/// Static zones from a folder: a second zone with its own SOA, a CNAME into the generated names,
/// multi-record sets, and empty non-terminals.
#[test]
fn static_zones_from_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("example.test.zone"),
        "$TTL 30\n@ IN SOA ns.example.test. hm.example.test. 7 3600 600 86400 10\n\
         @ IN NS ns\nwww IN A 192.0.2.1\nwww IN A 192.0.2.2\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("internal.zone"),
        "$TTL 5\n@ IN SOA ns.internal. hm.internal. 1 3600 600 86400 5\n@ IN NS ns\n\
         api.svc IN CNAME node-1._peer.internal.\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("README"), "not a zone").unwrap();
    let dns_config = sixpn::config::DnsConfig {
        zones_dir: Some(dir.path().to_owned()),
        views: settings().views,
        ..Default::default()
    };
    let zone_settings = SnapshotSettings::from_config(&dns_config).unwrap();
    assert_eq!(zone_settings.zones.len(), 2);
    let dns = TestDns::start(&dump(1), &zone_settings);

    let reply = udp(
        dns.addr,
        PERSONAL_SRC,
        "api.svc.internal.",
        RecordType::AAAA,
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(matches!(reply.answers[0].data, RData::CNAME(_)));
    assert_eq!(
        aaaa_answers(&reply),
        [personal_addr(1)],
        "CNAME followed in the view"
    );
    let reply = udp(dns.addr, ACME_SRC, "api.svc.internal.", RecordType::AAAA);
    assert_eq!(
        reply.answers.len(),
        1,
        "acme has no node-1: the CNAME alone"
    );

    let reply = udp(dns.addr, PERSONAL_SRC, "svc.internal.", RecordType::A);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "ENT");

    let reply = udp(dns.addr, ACME_SRC, "WWW.example.test.", RecordType::A);
    assert_eq!(reply.answers.len(), 2);
    assert!(reply.metadata.authoritative);
    let reply = udp(dns.addr, ACME_SRC, "nope.example.test.", RecordType::A);
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    let RData::SOA(soa) = &reply.authorities[0].data else {
        panic!("no SOA")
    };
    assert_eq!(soa.serial, 7, "the example.test SOA");
    assert_eq!(reply.authorities[0].ttl, 10, "min(TTL 30, minimum 10)");

    let bad = sixpn::config::DnsConfig {
        zones_dir: Some(dir.path().join("missing")),
        ..Default::default()
    };
    assert!(SnapshotSettings::from_config(&bad).is_err());
}
