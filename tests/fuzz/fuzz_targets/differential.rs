//! The differential target: a structured query goes to the UDP fast path and, when the fast path
//! answers it (`Outcome::Reply`), to the full hickory handler too; the two answers must agree as
//! `tests/it/fastpath.rs` compares them (`sixpn_fuzz::compare`: same header, question bytes,
//! OPT, authority and additional records, same answers modulo the rotation of a group, same
//! size). When the fast path drops a query the full handler must send nothing. Queries the fast
//! path delegates are not compared (the full handler answers them alone; see `full_handler`).
//!
//! Queries are built from: a known name or labels from known pieces and a small alphabet, letters
//! in random case; a known or raw query type; RD/AD/CD bits; no OPT or an OPT with any UDP size,
//! version and DO bit, and COOKIE (any length), PADDING or other options; a source from each view
//! and each kind of miss.

#![no_main]

use std::net::SocketAddr;

use arbitrary::Arbitrary;
use hickory_server::net::xfer::Protocol;
use libfuzzer_sys::fuzz_target;
use sixpn::fastpath::{self, Outcome};

const NAMES: &[&str] = &[
    "solo._peer.internal",
    "n-300._peer.internal",
    "n-256._peer.internal",
    "a-1._peer.internal",
    "web-1._peer.internal",
    "nope._peer.internal",
    "x.solo._peer.internal",
    "_peer.internal",
    "_g.internal",
    "g1._g.internal",
    "g2._g.internal",
    "g3._g.internal",
    "g50._g.internal",
    "g120._g.internal",
    "g121._g.internal",
    "g300._g.internal",
    "web._g.internal",
    "solo._g.internal",
    "internal",
    "ns.internal",
    "gateway.internal",
    "nope.internal",
    "x.ns.internal",
    "example.com",
    "internal.example",
];

const PIECES: &[&str] = &[
    "_peer", "_g", "internal", "solo", "n-300", "a-1", "web-1", "web", "g3", "g121", "g300", "ns",
    "gateway", "x", "*", "example", "com",
];

const ALPHABET: &[u8] = b"abgnpsx0123-_*.\\ \xc3\xa9";

const TYPES: &[u16] = &[28, 1, 16, 15, 6, 2, 5, 255, 33, 12, 252, 251, 41, 0, 99, 65];

const SIZES: &[u16] = &[
    0, 100, 511, 512, 513, 1000, 1232, 1400, 4095, 4096, 4097, 65535,
];

#[derive(Debug, Arbitrary)]
enum Name {
    Known(u8),
    Labels(Vec<Label>),
}

#[derive(Debug, Arbitrary)]
enum Label {
    Piece(u8),
    Chars(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum QType {
    Known(u8),
    Raw(u16),
}

#[derive(Debug, Arbitrary)]
enum Size {
    Known(u8),
    Raw(u16),
}

#[derive(Debug, Arbitrary)]
enum EdnsOption {
    /// A COOKIE of `1 + len % 40` bytes (8 is a client cookie; 16–40 client + server).
    Cookie(u8),
    /// PADDING of `len` zero bytes (0 is malformed for the fast path, legal for hickory).
    Padding(u8),
    Other(u16, Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Edns {
    size: Size,
    version: u8,
    dnssec_ok: bool,
    options: Vec<EdnsOption>,
}

#[derive(Debug, Arbitrary)]
struct Case {
    id: u16,
    flags: u8,
    name: Name,
    case_seed: u64,
    qtype: QType,
    edns: Option<Edns>,
    source: u8,
}

fn labels(name: &Name) -> Vec<Vec<u8>> {
    match name {
        Name::Known(i) => NAMES[usize::from(*i) % NAMES.len()]
            .split('.')
            .map(|l| l.as_bytes().to_vec())
            .collect(),
        Name::Labels(labels) => labels
            .iter()
            .take(8)
            .map(|label| match label {
                Label::Piece(i) => PIECES[usize::from(*i) % PIECES.len()].as_bytes().to_vec(),
                Label::Chars(chars) => chars
                    .iter()
                    .take(70)
                    .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()])
                    .collect(),
            })
            .collect(),
    }
}

fn opt(edns: &Edns) -> Vec<u8> {
    let size = match edns.size {
        Size::Known(i) => SIZES[usize::from(i) % SIZES.len()],
        Size::Raw(s) => s,
    };
    // Mostly version 0, sometimes another.
    let version = if edns.version >= 0xF0 {
        edns.version & 0x0F
    } else {
        0
    };
    let mut options = Vec::new();
    for option in edns.options.iter().take(4) {
        let (code, data) = match option {
            EdnsOption::Cookie(len) => (10u16, (0..1 + len % 40).collect::<Vec<u8>>()),
            EdnsOption::Padding(len) => (12, vec![0; usize::from(*len)]),
            EdnsOption::Other(code, data) => (*code, data.iter().copied().take(64).collect()),
        };
        options.extend_from_slice(&code.to_be_bytes());
        options.extend_from_slice(&(data.len() as u16).to_be_bytes());
        options.extend_from_slice(&data);
    }
    sixpn_fuzz::opt_record(
        size,
        version,
        if edns.dnssec_ok { 0x8000 } else { 0 },
        &options,
    )
}

fn mixed_case(labels: &mut [Vec<u8>], seed: u64) {
    let mut bit = 0;
    for label in labels {
        for b in label.iter_mut() {
            if b.is_ascii_lowercase() && seed >> (bit % 64) & 1 == 1 {
                *b = b.to_ascii_uppercase();
            }
            bit += 1;
        }
    }
}

fuzz_target!(|case: Case| {
    let mut name = labels(&case.name);
    mixed_case(&mut name, case.case_seed);
    let qtype = match case.qtype {
        QType::Known(i) => TYPES[usize::from(i) % TYPES.len()],
        QType::Raw(t) => t,
    };
    // RD, and AD/CD as dig sends them.
    let flags = [case.flags & 0x01, case.flags & 0x30];
    let opt = case.edns.as_ref().map(opt);
    let q = sixpn_fuzz::query(case.id, flags, &name, qtype, opt.as_deref());
    let src = SocketAddr::new(
        sixpn_fuzz::SOURCES[usize::from(case.source) % sixpn_fuzz::SOURCES.len()],
        5353,
    );

    let snapshot = sixpn_fuzz::handle().load();
    let mut out = vec![0u8; 4096];
    let outcome = fastpath::answer(snapshot.fast(), src.ip(), &q, &mut out);
    if outcome == Outcome::Delegate {
        return;
    }
    let full = sixpn_fuzz::runtime().block_on(sixpn::dns::udp::full_answer(
        sixpn_fuzz::handler(),
        q.clone(),
        src,
        Protocol::Udp,
    ));
    match outcome {
        Outcome::Delegate => unreachable!("returned above"),
        Outcome::Drop => assert!(full.is_none(), "fast drops, full answers: {case:?}"),
        Outcome::Reply(n) => {
            let Some(full) = full else {
                panic!("fast answers, full sends nothing: {case:?}\nquery {q:02x?}");
            };
            if let Err(diff) = sixpn_fuzz::compare(&out[..n], &full, &q) {
                panic!(
                    "fast and full disagree: {diff}\ncase {case:?}\nsource {src}\nquery {q:02x?}\nfast  {:02x?}\nfull  {full:02x?}",
                    &out[..n]
                );
            }
        }
    }
});
