//! The UDP fast path: answers the hot queries straight from prebuilt bytes, in front of the full
//! hickory handler.
//!
//! [`answer`] is pure and allocation-free: it parses only the header, the question and a plain
//! OPT record, looks the name up in an [`Index`] (one hash table for every view, keyed by the
//! wire-format name, compared without case), and writes the reply into the caller's buffer:
//! the question echoed byte for byte as asked (mixed case included), id kept, flags patched
//! (QR, AA, RD copied, CD copied, RA clear), prebuilt AAAA/TXT records, group members in
//! rotated order, the zone's SOA in the authority section of NXDOMAIN and NODATA answers, and an
//! OPT record when the query had one.
//!
//! Answer records are laid out byte for byte as the full handler's encoder (hickory-proto 0.26)
//! lays them out, so both paths truncate at the same record and a test can compare them: the
//! first answer carries its owner name in full (lowercase, as stored; hickory never compresses
//! against the question), the next ones a pointer to it, and after
//! 120 names (hickory-proto's `COMPRESSED_NAME_LIMIT`) the owner in full again.
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
//! `512..=max_udp_payload` (default 4096, [`index::DEFAULT_MAX_UDP_PAYLOAD`], as the full handler);
//! the reply's OPT advertises that size. When the records do not all fit, the reply keeps the
//! records that fit, sets TC and keeps the OPT, so the client retries over TCP.
//!
//! [`server`] runs the batched socket loop (`recvmmsg`/`sendmmsg`, one `SO_REUSEPORT` socket per
//! core) and hands delegated packets to a callback; [`rrl`] limits the rate of negative answers
//! per source, on this path and on the delegated one.

pub mod index;
pub mod rrl;
pub mod server;
mod sys;

pub use sys::{raise_open_file_limit, release_free_memory};

use std::net::IpAddr;

pub use index::{FastZone, Hit, Index, IndexSettings};
pub use rrl::{Rrl, RrlSettings, RrlTuner};
pub use server::{Delegate, FastServer, FastServerConfig, IndexSource};

use index::Kind;

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
    if name_end - HEADER > index::MAX_NAME || query.len() < name_end + 4 {
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
            (Kind::Txt, TYPE_TXT) => write_txt(index, out, qend, room, hit),
            _ => write_soa(index, out, qend, room, hit.zone()),
        },
        None => {
            let Some(zone) = index.zone_of(qname) else {
                return Outcome::Delegate;
            };
            if index.zones[usize::from(zone)].delegate_misses {
                return Outcome::Delegate;
            }
            out[3] |= RCODE_NXDOMAIN;
            write_soa(index, out, qend, room, zone)
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

/// How many AAAA answers (owner = the question name, `owner_len` bytes) the full handler puts in
/// `avail` bytes (after header and question, OPT reserved), so both paths truncate alike.
///
/// hickory's encoder does not compress against the question: the first answer carries its owner
/// in full (`owner_len` + 26 bytes), the next ones a pointer (28 bytes), and after
/// [`COMPRESSED_NAME_LIMIT`] names the owner in full again; a name must also fit whole before it
/// is replaced by a pointer (the `fit_loop` model, used when that can bind: owners > 28 bytes).
#[inline]
fn aaaa_fit(avail: usize, owner_len: usize, reserve: usize) -> usize {
    if owner_len > AAAA_LEN {
        return fit_loop(avail, owner_len, reserve);
    }
    let first = owner_len + AAAA_LEN - 2;
    if avail < first {
        return 0;
    }
    let k = (avail - first) / AAAA_LEN;
    if k < COMPRESSED_NAME_LIMIT - 1 {
        return k + 1;
    }
    let rest = avail - first - (COMPRESSED_NAME_LIMIT - 1) * AAAA_LEN;
    COMPRESSED_NAME_LIMIT + rest / first
}

/// The record-by-record model of hickory's layout (see [`aaaa_fit`]).
fn fit_loop(avail: usize, owner_len: usize, reserve: usize) -> usize {
    let (mut offset, mut fit) = (0usize, 0usize);
    loop {
        let name_len = if fit == 0 || fit >= COMPRESSED_NAME_LIMIT {
            owner_len
        } else {
            2
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

/// Writes `recs` as AAAA answers owned by `owner` (lowercase wire name), starting at `start`
/// (wrapping), at most `fit` of them, laid out as hickory's encoder does (see the module docs).
/// Returns (end, ancount, nscount, truncated).
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
    let n = recs.len().min(fit);
    // Later answers point at the first answer's owner.
    let pointer = (0xC000 | pos as u16).to_be_bytes();
    let (tail, head) = recs.split_at(start);
    for (k, addr) in head.iter().chain(tail).take(n).enumerate() {
        if k == 0 || k >= COMPRESSED_NAME_LIMIT {
            out[pos..pos + owner.len()].copy_from_slice(owner);
            pos += owner.len();
        } else {
            out[pos..pos + 2].copy_from_slice(&pointer);
            pos += 2;
        }
        out[pos..pos + 10].copy_from_slice(&index.aaaa_tail);
        out[pos + 10..pos + 26].copy_from_slice(addr);
        pos += 26;
    }
    (pos, n as u16, 0, n < recs.len())
}

#[inline]
fn write_txt(
    index: &Index,
    out: &mut [u8],
    pos: usize,
    room: usize,
    hit: Hit<'_>,
) -> (usize, u16, u16, bool) {
    let owner = hit.name();
    let rdata = hit.txt();
    let len = owner.len() + 10 + rdata.len();
    if room - pos < len {
        return (pos, 0, 0, true);
    }
    let mut at = pos;
    out[at..at + owner.len()].copy_from_slice(owner);
    at += owner.len();
    out[at..at + 8].copy_from_slice(&index.txt_tail);
    out[at + 8..at + 10].copy_from_slice(&(rdata.len() as u16).to_be_bytes());
    out[at + 10..at + 10 + rdata.len()].copy_from_slice(rdata);
    (pos + len, 1, 0, false)
}

#[inline]
fn write_soa(
    index: &Index,
    out: &mut [u8],
    pos: usize,
    room: usize,
    zone: u8,
) -> (usize, u16, u16, bool) {
    let Some(z) = index.zones.get(usize::from(zone)) else {
        return (pos, 0, 0, false);
    };
    let soa = &z.soa;
    if room - pos < soa.len() {
        return (pos, 0, 0, true);
    }
    out[pos..pos + soa.len()].copy_from_slice(soa);
    (pos + soa.len(), 0, 1, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_form_fit_matches_the_layout_model() {
        for owner_len in 2..=60 {
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
