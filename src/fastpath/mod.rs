//! The UDP fast path: answers the hot queries straight from prebuilt bytes, in front of the full
//! hickory handler.
//!
//! [`answer`] is pure and allocation-free: it parses only the header, the question and a plain
//! OPT record, looks the name up in the snapshot's answer table ([`Index`]: one hash table for every view, keyed by the
//! wire-format name, compared without case), and writes the reply into the caller's buffer:
//! the question echoed byte for byte as asked (mixed case included), id kept, flags patched
//! (QR, AA, RD copied, CD copied, RA clear), prebuilt AAAA/TXT records, group members in
//! rotated order, the zone's SOA in the authority section of NXDOMAIN and NODATA answers, and an
//! OPT record when the query had one.
//!
//! Answers are compact, and laid out byte for byte as the full handler's encoder lays them out
//! (hickory-proto 0.26, told the question's names by `dns::fit::compress_against_question`), so
//! both paths truncate at the same record and a test can compare them:
//! - each answer's owner is a pointer to the question (`C0 0C`), and after 120 names
//!   (hickory-proto's `COMPRESSED_NAME_LIMIT`) the owner in full (lowercase, as stored);
//! - the SOA of a negative answer has its owner (the zone's apex) point into the question, and
//!   its MNAME and RNAME point at the longest suffix the question (or, for RNAME, MNAME) has;
//!   its serial is the zone's, moved on by the store generation for `internal.`
//!   ([`Index::soa_serial`]). For the common questions (`<name>._peer.internal`,
//!   `<name>._g.internal`, `<name>.<zone>`, the apex) the record is prebuilt and only its
//!   pointers move with the question's length ([`crate::snapshot::soa`]). A negative answer
//!   whose question has more than [`crate::snapshot::soa::MAX_QUESTION_LABELS`] labels, or that
//!   would not fit uncompressed, is delegated.
//!
//! A peer hit with EDNS (`node-1._peer.internal AAAA`) is 78 bytes: header 12, question 27,
//! answer 28, OPT 11.
//!
//! Anything it does not fully handle is [`Outcome::Delegate`]d to the full handler, so
//! correctness never rests on this module alone: opcodes other than QUERY, classes other than IN,
//! QDCOUNT ≠ 1, answer/authority records in the query, more than one additional record, EDNS
//! versions ≠ 0, EDNS options other than COOKIE and PADDING, the DO bit, meta query types (ANY, AXFR, IXFR, …),
//! static zone names, names outside every zone, sources in no view and malformed input.
//! Responses (QR set) are [`Outcome::Drop`]ped, as the full server does.
//!
//! # UDP size and truncation
//! Without EDNS a reply is at most 512 bytes. With EDNS the client's size is clamped to
//! `512..=max_udp_payload` (default 4096, [`crate::snapshot::table::DEFAULT_MAX_UDP_PAYLOAD`], as the full handler);
//! the reply's OPT advertises that size. When the records do not all fit, the reply is header,
//! question and OPT with TC and no records, as Knot and BIND send it (a partial RRset is of no
//! use to a resolver; see `dns::fit`), so the client retries over TCP.
//!
//! [`server`] runs the batched socket loop (`recvmmsg`/`sendmmsg`, one `SO_REUSEPORT` socket per
//! core) and hands delegated packets to a callback; [`rrl`] limits the rate of negative answers
//! per source, on this path and on the delegated one.

pub mod rrl;
pub mod server;
mod sys;

pub use sys::raise_open_file_limit;

use std::net::IpAddr;

pub use rrl::{Rrl, RrlSettings, RrlTuner};
pub use server::{Delegate, FastServer, FastServerConfig, IndexSource};

use crate::snapshot::table::{Hit, Index, Kind, MAX_NAME};

/// What [`answer`] did with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The reply is the first `n` bytes of the output buffer.
    Reply(usize),
    /// Not handled here: give the packet to the full handler.
    Delegate,
    /// Not a query (QR set): send nothing.
    Drop,
}

const HEADER: usize = 12;
const TYPE_AAAA: u16 = 28;
const TYPE_TXT: u16 = 16;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const OPT_LEN: usize = 11;
const AAAA_LEN: usize = 28;
const RCODE_NXDOMAIN: u8 = 3;

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Answers `query`, received from `src`, into `out` (see the module docs).
///
/// `out` should hold at least the largest UDP reply (`index`'s `max_udp_payload`); a smaller
/// buffer caps the reply size as a smaller EDNS size would.
pub fn answer(index: &Index, src: IpAddr, query: &[u8], out: &mut [u8]) -> Outcome {
    if query.len() < HEADER {
        return Outcome::Delegate;
    }
    let (b2, b3) = (query[2], query[3]);
    if b2 & 0x80 != 0 {
        return Outcome::Drop;
    }
    // Opcode QUERY, TC clear; counts 1/0/0/(0|1).
    if b2 & 0x7A != 0 || be16(query, 4) != 1 || be16(query, 6) != 0 || be16(query, 8) != 0 {
        return Outcome::Delegate;
    }
    let arcount = be16(query, 10);
    if arcount > 1 {
        return Outcome::Delegate;
    }
    // The question name: plain labels, no compression, at most 255 bytes.
    let mut at = HEADER;
    loop {
        let Some(&len) = query.get(at) else {
            return Outcome::Delegate;
        };
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 {
            return Outcome::Delegate;
        }
        at += 1 + usize::from(len);
    }
    let name_end = at;
    if name_end - HEADER > MAX_NAME || query.len() < name_end + 4 {
        return Outcome::Delegate;
    }
    let qname = &query[HEADER..name_end];
    let qtype = be16(query, name_end);
    if be16(query, name_end + 2) != CLASS_IN || is_meta_type(qtype) {
        return Outcome::Delegate;
    }
    let qend = name_end + 4;
    // A plain OPT, or nothing, then the end of the packet.
    let limit = if arcount == 1 {
        let opt = &query[qend..];
        // root owner, type, class = size, ext-rcode, version, flags (DO = 0x8000), rdlength
        if opt.len() < OPT_LEN || opt[0] != 0 || be16(opt, 1) != TYPE_OPT {
            return Outcome::Delegate;
        }
        if opt[5] != 0 || opt[6] != 0 || be16(opt, 7) & 0x8000 != 0 {
            return Outcome::Delegate;
        }
        if !opaque_options(&opt[OPT_LEN..], be16(opt, 9)) {
            return Outcome::Delegate;
        }
        be16(opt, 3).clamp(512, index.max_udp_payload)
    } else {
        if query.len() != qend {
            return Outcome::Delegate;
        }
        512
    };
    let edns = arcount == 1;
    let Some(view) = index.view_for(src) else {
        return Outcome::Delegate;
    };
    if index.internal_zone == u8::MAX {
        return Outcome::Delegate;
    }
    let limit = usize::from(limit).min(out.len());
    let opt_len = if edns { OPT_LEN } else { 0 };
    if limit < qend + opt_len {
        return Outcome::Delegate;
    }
    // Header and question, as asked.
    out[..qend].copy_from_slice(&query[..qend]);
    out[2] = 0x84 | (b2 & 0x01); // QR, AA, RD copied; opcode 0, TC clear
    out[3] = b3 & 0x10; // CD copied; RA, Z, AD clear; rcode NOERROR
    let room = limit - opt_len;
    let fit = || aaaa_fit(room - qend, qname.len(), opt_len);
    let soa = |out: &mut [u8], zone: u8| write_soa(index, out, qname, qend, room, zone);

    let (pos, an, ns, tc) = match index.get(view, qname) {
        Some(hit) => match (hit.kind(), qtype) {
            (Kind::Delegate, _) => return Outcome::Delegate,
            (Kind::Peer, TYPE_AAAA) => {
                let fit = fit();
                write_aaaa(index, out, qend, hit.name(), hit.addrs(), 0, fit)
            }
            (Kind::Group, TYPE_AAAA) => {
                let recs = hit.addrs();
                let start = hit.next_rotation() as usize % recs.len().max(1);
                let fit = fit();
                write_aaaa(index, out, qend, hit.name(), recs, start, fit)
            }
            (Kind::Txt, TYPE_TXT) => write_txt(index, out, qend, room, opt_len, hit),
            _ => match soa(out, hit.zone()) {
                Some(written) => written,
                None => return Outcome::Delegate,
            },
        },
        None => {
            let Some(zone) = index.zone_of(qname) else {
                return Outcome::Delegate;
            };
            if index.zones[usize::from(zone)].delegate_misses {
                return Outcome::Delegate;
            }
            out[3] |= RCODE_NXDOMAIN;
            match soa(out, zone) {
                Some(written) => written,
                None => return Outcome::Delegate,
            }
        }
    };
    let mut pos = pos;
    if tc {
        out[2] |= 0x02;
    }
    out[6..8].copy_from_slice(&an.to_be_bytes());
    out[8..10].copy_from_slice(&ns.to_be_bytes());
    out[10..12].copy_from_slice(&u16::from(edns).to_be_bytes());
    if edns {
        let size = (limit as u16).to_be_bytes();
        out[pos..pos + OPT_LEN].copy_from_slice(&[0, 0, 41, size[0], size[1], 0, 0, 0, 0, 0, 0]);
        pos += OPT_LEN;
    }
    Outcome::Reply(pos)
}

/// Whether the OPT RDATA `rdata` is exactly `rdlen` bytes of well-formed options that the full
/// handler ignores too (it answers with a fresh OPT): COOKIE and PADDING. Others (e.g. client
/// subnet, NSID) are parsed by hickory and may turn a query into FORMERR, so they are delegated.
#[inline]
fn opaque_options(mut rdata: &[u8], rdlen: u16) -> bool {
    if rdata.len() != usize::from(rdlen) {
        return false;
    }
    while !rdata.is_empty() {
        if rdata.len() < 4 {
            return false;
        }
        let (code, len) = (be16(rdata, 0), usize::from(be16(rdata, 2)));
        if !matches!(code, 10 | 12) || len == 0 || rdata.len() < 4 + len {
            return false;
        }
        rdata = &rdata[4 + len..];
    }
    true
}

/// hickory-proto's `COMPRESSED_NAME_LIMIT`: its encoder stops compressing after this many names.
const COMPRESSED_NAME_LIMIT: usize = 120;

/// A compression pointer to the question name.
const QUESTION_POINTER: [u8; 2] = [0xC0, HEADER as u8];

/// How many AAAA answers (owner = the question name, `owner_len` bytes) the full handler puts in
/// `avail` bytes (after header and question, OPT reserved), so both paths truncate alike.
///
/// The first [`COMPRESSED_NAME_LIMIT`] answers point at the question (28 bytes each), later ones
/// carry the owner in full (`owner_len` + 26). The encoder writes a name in full before it
/// replaces it by a pointer, so the full name must fit at that moment, OPT reserve aside (the
/// [`fit_loop`] model).
#[inline]
fn aaaa_fit(avail: usize, owner_len: usize, reserve: usize) -> usize {
    // The first records: 28 bytes each, and the owner in full must fit at each one's start.
    let need = AAAA_LEN.max((owner_len + AAAA_LEN).saturating_sub(AAAA_LEN + reserve));
    if avail < need {
        return 0;
    }
    let pointed = (avail - need) / AAAA_LEN + 1;
    if pointed < COMPRESSED_NAME_LIMIT {
        return pointed;
    }
    let full = owner_len + AAAA_LEN - 2;
    COMPRESSED_NAME_LIMIT + (avail - COMPRESSED_NAME_LIMIT * AAAA_LEN) / full
}

/// The record-by-record model of hickory's layout (see [`aaaa_fit`]).
#[cfg(test)]
fn fit_loop(avail: usize, owner_len: usize, reserve: usize) -> usize {
    let (mut offset, mut fit) = (0usize, 0usize);
    loop {
        let name_len = if fit < COMPRESSED_NAME_LIMIT {
            2
        } else {
            owner_len
        };
        let end = offset + name_len + AAAA_LEN - 2;
        if offset + owner_len > avail + reserve || end > avail {
            return fit;
        }
        offset = end;
        fit += 1;
    }
}

/// Query types the full handler must see: 0, OPT, and the meta range (TKEY, TSIG, IXFR, AXFR,
/// MAILB, MAILA, ANY).
#[inline(always)]
fn is_meta_type(t: u16) -> bool {
    t == 0 || t == TYPE_OPT || (128..=255).contains(&t)
}

/// Writes `recs` as AAAA answers owned by the question, `owner` being its lowercase wire name,
/// starting at `start` (wrapping), laid out as hickory's encoder does (see the module docs), if
/// all of them fit (`fit` is how many would); else none, truncated. Returns (end, ancount,
/// nscount, truncated).
#[inline]
fn write_aaaa(
    index: &Index,
    out: &mut [u8],
    mut pos: usize,
    owner: &[u8],
    recs: &[[u8; 16]],
    start: usize,
    fit: usize,
) -> (usize, u16, u16, bool) {
    if fit < recs.len() {
        // Not all fit: TC and no records (a partial RRset is of no use to a resolver).
        return (pos, 0, 0, true);
    }
    let n = recs.len();
    let (tail, head) = recs.split_at(start);
    for (k, addr) in head.iter().chain(tail).take(n).enumerate() {
        if k < COMPRESSED_NAME_LIMIT {
            out[pos..pos + 2].copy_from_slice(&QUESTION_POINTER);
            pos += 2;
        } else {
            out[pos..pos + owner.len()].copy_from_slice(owner);
            pos += owner.len();
        }
        out[pos..pos + 10].copy_from_slice(&index.aaaa_tail);
        out[pos + 10..pos + 26].copy_from_slice(addr);
        pos += 26;
    }
    (pos, n as u16, 0, false)
}

/// Writes the TXT answer of `hit` (owner: a pointer to the question) if it fits: the owner in
/// full must fit before the OPT reserve (`opt_len`), the record after it.
#[inline]
fn write_txt(
    index: &Index,
    out: &mut [u8],
    pos: usize,
    room: usize,
    opt_len: usize,
    hit: Hit<'_>,
) -> (usize, u16, u16, bool) {
    let rdata = hit.txt();
    let len = 12 + rdata.len();
    if room - pos < len || room + opt_len - pos < hit.name().len() {
        return (pos, 0, 0, true);
    }
    out[pos..pos + 2].copy_from_slice(&QUESTION_POINTER);
    out[pos + 2..pos + 10].copy_from_slice(&index.txt_tail);
    out[pos + 10..pos + 12].copy_from_slice(&(rdata.len() as u16).to_be_bytes());
    out[pos + 12..pos + len].copy_from_slice(rdata);
    (pos + len, 1, 0, false)
}

/// Writes the SOA of `zone` into the authority section at `pos`, compressed as hickory's encoder
/// compresses it when it knows the question's names (see the module docs and
/// `snapshot::soa`). `None`: the full handler must answer (a zone without a usable SOA, a
/// question with too many labels, or too little room for the record uncompressed).
#[inline]
fn write_soa(
    index: &Index,
    out: &mut [u8],
    qname: &[u8],
    pos: usize,
    room: usize,
    zone: u8,
) -> Option<(usize, u16, u16, bool)> {
    let soa = index.zones.get(usize::from(zone))?.soa.as_ref()?;
    if room - pos < soa.max_len {
        return None;
    }
    let serial = index.soa_serial(zone).unwrap_or(soa.serial);
    let end = soa.write(out, qname, pos, serial)?;
    Some((end, 0, 1, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_form_fit_matches_the_layout_model() {
        for owner_len in (2..=60).chain([100, 200, 255]) {
            for reserve in [0, OPT_LEN] {
                for avail in 0..6000 {
                    assert_eq!(
                        aaaa_fit(avail, owner_len, reserve),
                        fit_loop(avail, owner_len, reserve),
                        "owner {owner_len} avail {avail}"
                    );
                }
            }
        }
    }

    #[test]
    fn only_cookie_and_padding_options_pass() {
        assert!(opaque_options(&[], 0));
        assert!(opaque_options(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8], 12));
        assert!(opaque_options(&[0, 12, 0, 1, 0, 0, 10, 0, 1, 9], 10));
        assert!(
            !opaque_options(&[0, 8, 0, 4, 0, 1, 24, 0], 8),
            "client subnet"
        );
        assert!(
            !opaque_options(&[0, 10, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8], 12),
            "overrun"
        );
        assert!(
            !opaque_options(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8], 13),
            "rdlength"
        );
        assert!(!opaque_options(&[0, 10, 0], 3), "short");
    }
}
