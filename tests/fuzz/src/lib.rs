//! What the fuzz targets share: the fixed DNS data they all query (three orgs, peers, groups of
//! every interesting size), a query builder, and the fast-vs-full comparison of
//! `tests/it/fastpath.rs` (`differential::compare`), returning an error instead of panicking so
//! the target can print the case before it fails.
//!
//! Nothing here is fuzzed itself; it only sets the stage once per process.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::OnceLock;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use sixpn::config::ViewConfig;
use sixpn::dns::Handler;
use sixpn::model::{Generation, Org, Peer};
use sixpn::snapshot::{Snapshot, SnapshotHandle, SnapshotSettings};
use sixpn::store::Dump;
use sixpn::wireguard::PrivateKey;

/// personal's /48.
pub const PERSONAL: &str = "fdaa:0:1::/48";
/// acme's /48.
pub const ACME: &str = "fdaa:0:2::/48";
/// beta's /48 (an org without peers).
pub const BETA: &str = "fdaa:0:3::/48";

fn org(slug: &str, prefix: &str) -> Org {
    Org {
        slug: slug.parse().expect("valid slug"),
        prefix: prefix.parse().expect("valid prefix"),
        created_at: 0,
    }
}

fn peer(org: &Org, name: &str, group: &str, host: u128) -> Peer {
    // Distinct keys are not needed by DNS; one key, computed once, keeps the fixture cheap.
    static KEY: OnceLock<sixpn::wireguard::PublicKey> = OnceLock::new();
    let key = *KEY.get_or_init(|| PrivateKey::from_bytes([7; 32]).public_key());
    Peer {
        org: org.slug.clone(),
        name: name.parse().expect("valid peer name"),
        group: group.parse().expect("valid group name"),
        region: "local".parse().expect("valid region"),
        pubkey: key,
        address: sixpn::model::prefix_host(org.prefix, host),
        token: "t".parse().expect("valid token name"),
        created_at: 0,
        updated_at: 0,
        key_expires_at: None,
    }
}

/// The group sizes of personal: around the UDP truncation points and hickory's 120-name
/// compression limit.
pub const GROUP_SIZES: [usize; 7] = [1, 2, 3, 50, 120, 121, 300];

/// personal: `n-<host>` in groups `g<size>` ([`GROUP_SIZES`]) and `solo` (group `solo`), so its
/// `_peer.internal` TXT is several KB; acme: `a-0..4` in `g3` (a group name personal has too) and
/// `web-1` in `web`; beta: no peers.
pub fn dump() -> Dump {
    let personal = org("personal", PERSONAL);
    let acme = org("acme", ACME);
    let beta = org("beta", BETA);
    let mut peers = Vec::new();
    let mut host = 0x100u128;
    for size in GROUP_SIZES {
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
    peers.push(peer(&acme, "web-1", "web", 0x20));
    peers.sort_by(|a, b| (&a.org, &a.name).cmp(&(&b.org, &b.name)));
    Dump {
        generation: Generation(3),
        orgs: vec![acme, beta, personal],
        peers,
    }
}

/// The default settings (TTL 5, loopback → personal, the built-in `internal.` zone) plus
/// 127.0.0.2 → acme and 127.0.0.7 → a missing org.
pub fn snapshot_settings() -> SnapshotSettings {
    let mut s = SnapshotSettings::default();
    s.views.insert(
        0,
        ViewConfig {
            source: "127.0.0.2/32".parse().expect("valid cidr"),
            org: "acme".parse().expect("valid slug"),
        },
    );
    s.views.push(ViewConfig {
        source: "127.0.0.7/32".parse().expect("valid cidr"),
        org: "missing".parse().expect("valid slug"),
    });
    s
}

/// The snapshot handle every DNS target of this process queries, built once.
pub fn handle() -> &'static SnapshotHandle {
    static HANDLE: OnceLock<SnapshotHandle> = OnceLock::new();
    HANDLE.get_or_init(|| SnapshotHandle::new(Snapshot::build(&dump(), &snapshot_settings())))
}

/// The full hickory handler over [`handle`].
pub fn handler() -> &'static Handler {
    static HANDLER: OnceLock<Handler> = OnceLock::new();
    HANDLER.get_or_init(|| Handler::new(handle().clone()))
}

/// A current-thread tokio runtime for the process.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Sources worth asking from: each view, each kind of miss.
pub const SOURCES: [IpAddr; 8] = [
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)), // personal (loopback view)
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2)), // acme (configured view)
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 7)), // view of a missing org → loopback
    IpAddr::V4(std::net::Ipv4Addr::new(10, 9, 9, 9)),  // no view: REFUSED
    IpAddr::V6(Ipv6Addr::new(0xfdaa, 0, 2, 0, 0, 0, 0, 0x99)), // inside acme's /48
    IpAddr::V6(Ipv6Addr::new(0xfdaa, 0, 3, 0, 0, 0, 0, 0x5)), // inside beta's /48
    IpAddr::V6(Ipv6Addr::LOCALHOST),                   // ::1
    IpAddr::V6(Ipv6Addr::new(0xfdaa, 0, 9, 0, 0, 0, 0, 1)), // in the ULA, no org
];

/// A source address chosen by the first bytes of `data`: one of [`SOURCES`], or any IPv4 or
/// IPv6 address. Returns the address and the bytes left.
pub fn source(data: &[u8]) -> (IpAddr, &[u8]) {
    match data.split_first() {
        None => (SOURCES[0], data),
        Some((&b, rest)) if b < 0xF0 => (SOURCES[usize::from(b) % SOURCES.len()], rest),
        Some((&b, rest)) if b < 0xF8 && rest.len() >= 4 => {
            let v4: [u8; 4] = rest[..4].try_into().expect("4 bytes");
            (IpAddr::from(v4), &rest[4..])
        }
        Some((_, rest)) if rest.len() >= 16 => {
            let v6: [u8; 16] = rest[..16].try_into().expect("16 bytes");
            (IpAddr::from(v6), &rest[16..])
        }
        Some((_, rest)) => (SOURCES[0], rest),
    }
}

/// Writes a query: header (id, `flags`, QDCOUNT 1, ARCOUNT 1 when `opt` is given), the name's
/// labels as given (case kept; a label longer than 63 bytes is written as is, which makes the
/// packet malformed on purpose), type, class IN, then `opt`'s bytes (a whole OPT record).
pub fn query(
    id: u16,
    flags: [u8; 2],
    labels: &[Vec<u8>],
    qtype: u16,
    opt: Option<&[u8]>,
) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&flags);
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(opt.is_some())]);
    for label in labels {
        q.push(label.len() as u8);
        q.extend_from_slice(label);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    if let Some(opt) = opt {
        q.extend_from_slice(opt);
    }
    q
}

/// An OPT record: root owner, UDP size, extended rcode 0, `version`, `flags` (DO = 0x8000), and
/// `options` (already encoded) as RDATA.
pub fn opt_record(size: u16, version: u8, flags: u16, options: &[u8]) -> Vec<u8> {
    let mut o = vec![0, 0, 41];
    o.extend_from_slice(&size.to_be_bytes());
    o.extend_from_slice(&[0, version]);
    o.extend_from_slice(&flags.to_be_bytes());
    o.extend_from_slice(&(options.len() as u16).to_be_bytes());
    o.extend_from_slice(options);
    o
}

/// The end of the question section of a query whose name is plain labels (no pointer).
pub fn question_end(q: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let len = *q.get(at)?;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        at += 1 + usize::from(len);
    }
    let end = at + 5;
    (end <= q.len()).then_some(end)
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

/// Compares the fast path's reply with the full handler's to the same query `q`, as
/// `tests/it/fastpath.rs` does: same header, same question bytes, same OPT, same authority and
/// additional records, same answers (a group's members in any order; a truncated group's two
/// windows of the same size and owner, without repeats), same size whenever there are answers,
/// and the same bytes when there is at most one answer (negative answers included).
/// Returns the kind of answer, or what differs.
pub fn compare(fast_raw: &[u8], full_raw: &[u8], q: &[u8]) -> Result<&'static str, String> {
    let fast =
        Message::from_vec(fast_raw).map_err(|e| format!("fast reply does not parse: {e}"))?;
    let full =
        Message::from_vec(full_raw).map_err(|e| format!("full reply does not parse: {e}"))?;
    let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_owned()) };
    check(
        fast.metadata == full.metadata,
        &format!("header: fast {:?} full {:?}", fast.metadata, full.metadata),
    )?;
    let qend = question_end(q).ok_or("query has no plain question")?;
    check(
        fast_raw.get(12..qend) == Some(&q[12..qend]),
        "question echo (fast)",
    )?;
    check(
        full_raw.get(12..qend) == Some(&q[12..qend]),
        "question echo (full)",
    )?;
    check(
        fast.edns == full.edns,
        &format!("OPT: fast {:?} full {:?}", fast.edns, full.edns),
    )?;
    let keys = |rs: &[Record]| rs.iter().map(key).collect::<Vec<_>>();
    check(
        keys(&fast.authorities) == keys(&full.authorities),
        &format!(
            "authority: fast {:?} full {:?}",
            keys(&fast.authorities),
            keys(&full.authorities)
        ),
    )?;
    check(
        keys(&fast.additionals) == keys(&full.additionals),
        "additional",
    )?;
    let (mut fa, mut fu) = (keys(&fast.answers), keys(&full.answers));
    check(
        fa.len() == fu.len(),
        &format!("answer count: fast {} full {}", fa.len(), fu.len()),
    )?;
    let same_size = check(
        fast_raw.len() == full_raw.len(),
        &format!("size: fast {} full {}", fast_raw.len(), full_raw.len()),
    );
    if fa.len() > 1 {
        if fast.metadata.truncation {
            let n = fa.len();
            fa.sort();
            fa.dedup();
            fu.sort();
            fu.dedup();
            check((fa.len(), fu.len()) == (n, n), "repeated records")?;
            let owner = &fa[0][..fa[0].find(' ').unwrap_or(0)];
            check(
                fu.iter().all(|k| k.starts_with(owner)),
                "truncated group owners",
            )?;
            same_size?;
            return Ok("truncated group");
        }
        fa.sort();
        fu.sort();
        check(fa == fu, "group members")?;
        same_size?;
        return Ok("group");
    }
    check(fa == fu, &format!("answers: fast {fa:?} full {fu:?}"))?;
    // No rotation to tell them apart: byte for byte the same, compression included (the SOA of
    // a negative answer too).
    check(
        fast_raw == full_raw,
        &format!("bytes: fast {fast_raw:02x?} full {full_raw:02x?}"),
    )?;
    if fa.len() == 1 {
        same_size?;
        return Ok(if fast.answers[0].record_type() == RecordType::TXT {
            "txt"
        } else {
            "answer"
        });
    }
    if fast.metadata.truncation {
        return Ok("truncated");
    }
    Ok(match fast.metadata.response_code {
        ResponseCode::NXDomain => "nxdomain",
        ResponseCode::NoError => "nodata",
        _ => "other",
    })
}
