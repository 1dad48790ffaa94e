//! Compact answers (issue 20) and an SOA serial that follows the data (issue 23), over real
//! sockets to a real server: UDP (the fast path) and TCP (the full hickory handler) give the
//! same bytes, owners point at the question (`C0 0C`), and the SOA of a negative answer has its
//! owner, MNAME and RNAME compressed against the question. A UDP answer too big for the client's
//! size is header, question and OPT with TC, no records (as Knot and BIND send it).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::support::db::each_backend;
use crate::support::{Api, TestDb, eventually_async, start_server_on};

const AAAA: u16 = 28;
const TXT: u16 = 16;
const SOA: u16 = 6;

/// A query as `dig +nocookie` sends it: RD set, and an OPT record (UDP size 1232, no options)
/// when `edns`.
fn query(id: u16, name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    query_sized(id, name, qtype, edns.then_some((1232, &[][..])))
}

/// [`query`] with an OPT record of UDP size `size` and the raw `options` when `edns` is given.
fn query_sized(id: u16, name: &str, qtype: u16, edns: Option<(u16, &[u8])>) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if let Some((size, options)) = edns {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&size.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 0]);
        q.extend_from_slice(&(options.len() as u16).to_be_bytes());
        q.extend_from_slice(options);
    }
    q
}

/// The raw UDP answer (the fast path answers what it can, the rest is delegated), asking again
/// like a stub resolver when none comes.
fn udp(server: SocketAddr, q: &[u8]) -> Vec<u8> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..3 {
        sock.send_to(q, server).unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return buf[..n].to_vec();
        }
    }
    panic!("no UDP answer from {server}");
}

/// The raw TCP answer: always the full handler's.
fn tcp(server: SocketAddr, q: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(q);
    stream.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).unwrap();
    answer
}

/// The authority section (one SOA) of a negative answer to `name` with EDNS, as the bytes must
/// be: owner, MNAME and RNAME all pointing at `internal.` in the question, then `serial` and the
/// built-in zone's timers; and the message's whole size.
fn compressed_soa(name: &str, serial: u32) -> (Vec<u8>, usize) {
    let qname_len: usize = name.split('.').map(|l| l.len() + 1).sum::<usize>() + 1;
    let internal = (0xC000u16 | (12 + qname_len - 10) as u16).to_be_bytes();
    let mut rr = internal.to_vec();
    rr.extend_from_slice(&[0, 6, 0, 1, 0, 0, 0, 5]);
    let mut rdata = b"\x02ns".to_vec();
    rdata.extend_from_slice(&internal);
    rdata.extend_from_slice(b"\x0ahostmaster");
    rdata.extend_from_slice(&internal);
    for v in [serial, 3600, 600, 86400, 5] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    rr.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    rr.extend_from_slice(&rdata);
    assert_eq!(rr.len(), 50, "12 + 5 + 13 + 20");
    let size = 12 + qname_len + 4 + rr.len() + 11;
    (rr, size)
}

/// The serial of the SOA in a message's authority or answer section.
fn serial(m: &Message) -> u32 {
    m.authorities
        .iter()
        .chain(&m.answers)
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(soa.serial),
            _ => None,
        })
        .expect("an SOA record")
}

/// RFC 1982 §3.2: `a` is greater than `b` in serial number arithmetic (32 bits).
fn serial_gt(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_compact_on_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server_on(dir.path(), None).await.expect("starts");
    let api = Api::of(&server);
    let dns = server.dns_addrs[0];
    let token = api.mint("personal", "k8s", Some("web")).await;
    let (status, body) = api.register(&token, "node-1", "web").await;
    assert_eq!(status, 200, "{body}");
    let us: std::net::Ipv6Addr = body["us"].as_str().unwrap().parse().unwrap();

    tokio::task::spawn_blocking(move || {
        // A peer hit with EDNS: header 12, question 27, answer 28 (owner C0 0C), OPT 11.
        for name in ["node-1._peer.internal", "NoDe-1._PEER.Internal"] {
            let q = query(7, name, AAAA, true);
            let fast = udp(dns, &q);
            let full = tcp(dns, &q);
            assert_eq!(fast.len(), 78, "{name} over UDP: {fast:02x?}");
            assert_eq!(
                full, fast,
                "{name}: TCP (full handler) and UDP (fast path) differ"
            );
            assert_eq!(
                &fast[39..41],
                &[0xC0, 0x0C],
                "the owner points at the question"
            );
            assert_eq!(&fast[12..39], &q[12..39], "the question is echoed as asked");
            let m = Message::from_vec(&fast).unwrap();
            assert_eq!(m.answers.len(), 1);
            assert_eq!(m.answers[0].data, RData::AAAA(us.into()));
        }
        // Without EDNS, 11 bytes less.
        assert_eq!(
            udp(dns, &query(8, "node-1._peer.internal", AAAA, false)).len(),
            67
        );
        // The group and the TXT list point at the question too.
        let group = udp(dns, &query(9, "web._g.internal", AAAA, true));
        assert_eq!(group.len(), 12 + 21 + 28 + 11);
        assert_eq!(tcp(dns, &query(9, "web._g.internal", AAAA, true)), group);
        let q = query(10, "_peer.internal", TXT, true);
        let txt = udp(dns, &q);
        let qend = 12 + 16 + 4;
        assert_eq!(&txt[qend..qend + 2], &[0xC0, 0x0C]);
        assert_eq!(txt.len(), qend + 12 + 1 + "node-1".len() + 11);
        assert_eq!(tcp(dns, &q), txt);

        // NXDOMAIN and NODATA: the SOA's owner, MNAME and RNAME point into the question.
        for (name, qtype, rcode) in [
            ("nope._peer.internal", AAAA, ResponseCode::NXDomain),
            ("x.node-1._peer.internal", AAAA, ResponseCode::NXDomain),
            ("nope.internal", AAAA, ResponseCode::NXDomain),
            ("node-1._peer.internal", TXT, ResponseCode::NoError),
            ("node-1._peer.internal", 1, ResponseCode::NoError),
            ("_g.internal", AAAA, ResponseCode::NoError),
        ] {
            let q = query(11, name, qtype, true);
            let fast = udp(dns, &q);
            let m = Message::from_vec(&fast).unwrap();
            assert_eq!(m.metadata.response_code, rcode, "{name} {qtype}");
            let (soa, size) = compressed_soa(name, serial(&m));
            assert_eq!(fast.len(), size, "{name} {qtype}: {fast:02x?}");
            let qend = q.len() - 11;
            assert_eq!(&fast[qend..qend + soa.len()], &soa[..], "{name} {qtype}");
            assert_eq!(tcp(dns, &q), fast, "{name} {qtype}: TCP and UDP differ");
            let RData::SOA(data) = &m.authorities[0].data else {
                panic!("not an SOA")
            };
            assert_eq!(m.authorities[0].name.to_ascii(), "internal.");
            assert_eq!(data.mname.to_ascii(), "ns.internal.");
            assert_eq!(data.rname.to_ascii(), "hostmaster.internal.");
        }
        // The peer hit of issue 20 was 99 bytes, its NXDOMAIN 129: now 78 and 98.
        let nx = udp(dns, &query(12, "nope._peer.internal", AAAA, true));
        assert_eq!(nx.len(), 98);
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soa_serial_follows_the_store_generation() {
    each_backend(|db: TestDb| async move {
        let dir = tempfile::tempdir().unwrap();
        let server = start_server_on(dir.path(), Some(&db.url))
            .await
            .expect("starts");
        let api = Api::of(&server);
        let dns = server.dns_addrs[0];
        // The apex SOA (full handler) and a negative answer's (fast path) agree.
        let serials = move || {
            let apex = Message::from_vec(&udp(dns, &query(1, "internal", SOA, true))).unwrap();
            let nx = Message::from_vec(&udp(dns, &query(2, "nope.internal", AAAA, true))).unwrap();
            let over_tcp =
                Message::from_vec(&tcp(dns, &query(3, "nope.internal", AAAA, false))).unwrap();
            assert_eq!(apex.answers[0].record_type(), RecordType::SOA);
            (serial(&apex), serial(&nx), serial(&over_tcp))
        };
        let ask = move || tokio::task::spawn_blocking(serials);
        let (before, nx, over_tcp) = ask().await.unwrap();
        assert_eq!((nx, over_tcp), (before, before));
        assert!(before >= 1, "the zone file's serial plus the generation");

        let token = api.mint("personal", "k8s", Some("web")).await;
        let (status, body) = api.register(&token, "node-1", "web").await;
        assert_eq!(status, 200, "{body}");
        // A write is visible when its API call returns: the serial has moved on already.
        let (after, nx, over_tcp) = ask().await.unwrap();
        assert!(
            serial_gt(after, before),
            "a create moves it on: {before} → {after}"
        );
        assert_eq!(
            (nx, over_tcp),
            (after, after),
            "both paths give the same serial"
        );
        let (status, _) = api.register(&token, "node-2", "web").await;
        assert_eq!(status, 200);
        let (later, _, _) = ask().await.unwrap();
        assert!(serial_gt(later, after), "{after} → {later}");
        server.shutdown().await.unwrap();

        // A restart (from the store, or the saved DNS state) never goes back.
        let server = start_server_on(dir.path(), Some(&db.url))
            .await
            .expect("starts again");
        let dns = server.dns_addrs[0];
        let again = eventually_async(
            Duration::from_secs(10),
            "the serial after a restart",
            || async move {
                let (s, _, _) = tokio::task::spawn_blocking(move || {
                    let apex =
                        Message::from_vec(&udp(dns, &query(1, "internal", SOA, true))).unwrap();
                    let nx = Message::from_vec(&udp(dns, &query(2, "nope.internal", AAAA, true)))
                        .unwrap();
                    (serial(&apex), serial(&nx), 0)
                })
                .await
                .unwrap();
                if s == later {
                    Ok(s)
                } else {
                    Err(format!("serial {s}, was {later}"))
                }
            },
        )
        .await;
        assert_eq!(again, later, "the same data, the same serial");
        server.shutdown().await.unwrap();
    })
    .await;
}

/// The counts of a message: answers, authority records, additional records.
fn counts(m: &[u8]) -> [u16; 3] {
    [6, 8, 10].map(|at| u16::from_be_bytes([m[at], m[at + 1]]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_udp_answer_carries_no_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server_on(dir.path(), None).await.expect("starts");
    let api = Api::of(&server);
    let dns = server.dns_addrs[0];
    // 50 members: 12 + 21 + 50 × 28 + 11 = 1,444 bytes with EDNS, over a 1,232-byte UDP size.
    let token = api.mint("personal", "k8s", Some("big")).await;
    for i in 0..50 {
        let (status, body) = api.register(&token, &format!("n-{i}"), "big").await;
        assert_eq!(status, 200, "{body}");
    }

    tokio::task::spawn_blocking(move || {
        let name = "big._g.internal";
        let qend = 12 + 17 + 4;
        // NSID (option 3) is not for the fast path: the full handler answers that one over UDP.
        let nsid: &[u8] = &[0, 3, 0, 0];
        for (what, edns, size) in [
            ("no EDNS (512 bytes), fast path", None, qend),
            ("EDNS 1232, fast path", Some((1232, &[][..])), qend + 11),
            ("EDNS 600, fast path", Some((600, &[][..])), qend + 11),
            (
                "EDNS 1232 and NSID, full handler",
                Some((1232, nsid)),
                qend + 11,
            ),
        ] {
            let q = query_sized(21, name, AAAA, edns);
            let answer = udp(dns, &q);
            let m = Message::from_vec(&answer).unwrap();
            assert!(m.metadata.truncation, "{what}: TC");
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{what}");
            assert_eq!(
                counts(&answer),
                [0, 0, u16::from(edns.is_some())],
                "{what}: no partial RRset, only the OPT: {answer:02x?}"
            );
            assert_eq!(answer.len(), size, "{what}: header, question, OPT");
            assert_eq!(&answer[12..qend], &q[12..qend], "{what}: the question");
            if let Some((asked, _)) = edns {
                assert_eq!(m.edns.as_ref().unwrap().max_payload(), asked.max(512));
            }
        }
        // With room for all of them, UDP answers all 50; TCP always does.
        let q = query_sized(22, name, AAAA, Some((4096, &[][..])));
        let whole = udp(dns, &q);
        assert_eq!(counts(&whole), [50, 0, 1]);
        assert_eq!(whole.len(), qend + 50 * 28 + 11);
        assert!(!Message::from_vec(&whole).unwrap().metadata.truncation);
        let over_tcp = tcp(dns, &query(23, name, AAAA, true));
        assert_eq!(counts(&over_tcp), [50, 0, 1]);
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}
