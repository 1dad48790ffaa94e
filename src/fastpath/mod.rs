//! The UDP fast path: answers the hot queries straight from prebuilt bytes, in front of the full
//! hickory handler.
//!
//! [`answer`] is pure and allocation-free: it parses only the header, the question and a plain
//! OPT record, looks the name up in an [`Index`] (one hash table for every view, keyed by the
//! wire-format name, compared without case), and writes the reply into the caller's buffer:
//! the question echoed byte for byte as asked (mixed case included), id kept, flags patched
//! (QR, AA, RD copied, CD copied, RA clear), prebuilt AAAA/TXT records whose owner is a
//! compression pointer to the question, group members in rotated order, the zone's SOA in the
//! authority section of NXDOMAIN and NODATA answers, and an OPT record when the query had one.
//!
//! Anything it does not fully handle is [`Outcome::Delegate`]d to the full handler, so
//! correctness never rests on this module alone: opcodes other than QUERY, classes other than IN,
//! QDCOUNT ≠ 1, answer/authority records in the query, more than one additional record, EDNS
//! versions ≠ 0, EDNS options (e.g. cookies), the DO bit, meta query types (ANY, AXFR, IXFR, …),
//! static zone names, names outside every zone, sources in no view and malformed input.
//! Responses (QR set) are [`Outcome::Drop`]ped, as the full server does.
//!
//! # UDP size and truncation
//! Without EDNS a reply is at most 512 bytes. With EDNS the client's size is clamped to
//! `512..=max_udp_payload` (default 1232, [`index::DEFAULT_MAX_UDP_PAYLOAD`]); the reply's OPT
//! advertises that size. When the records do not all fit, the reply keeps the whole records that
//! fit, sets TC and keeps the OPT, so the client retries over TCP.
//!
//! [`server`] runs the batched socket loop (`recvmmsg`/`sendmmsg`, one `SO_REUSEPORT` socket per
//! core) and hands delegated packets to a callback.

pub mod index;
pub mod server;
mod sys;

use std::net::IpAddr;

pub use index::{FastZone, Index, IndexSettings};
pub use server::{Delegate, FastServer, FastServerConfig, IndexSource};

use index::{Entry, Kind};

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
        // root owner, type, class = size, ext-rcode, version, flags (DO = 0x8000), rdlength = 0
        if opt.len() != OPT_LEN || opt[0] != 0 || be16(opt, 1) != TYPE_OPT {
            return Outcome::Delegate;
        }
        if opt[5] != 0 || opt[6] != 0 || be16(opt, 7) & 0x8000 != 0 || be16(opt, 9) != 0 {
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

    let (pos, an, ns, tc) = match index.get(view, qname) {
        Some(e) => match (e.kind, qtype) {
            (Kind::Delegate, _) => return Outcome::Delegate,
            (Kind::Peer, TYPE_AAAA) => {
                let recs = &index.addrs[e.a as usize..e.a as usize + 1];
                write_aaaa(index, out, qend, room, recs, 0)
            }
            (Kind::Group, TYPE_AAAA) => {
                let recs = &index.addrs[e.a as usize..(e.a + e.b) as usize];
                let start = index.next_rotation(e.c) % e.b;
                write_aaaa(index, out, qend, room, recs, start as usize)
            }
            (Kind::Txt, TYPE_TXT) => write_txt(index, out, qend, room, e),
            _ => write_soa(index, out, qend, room, e.zone),
        },
        None => {
            let Some(zone) = zone_of(index, qname) else {
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

/// Query types the full handler must see: 0, OPT, and the meta range (TKEY, TSIG, IXFR, AXFR,
/// MAILB, MAILA, ANY).
#[inline(always)]
fn is_meta_type(t: u16) -> bool {
    t == 0 || t == TYPE_OPT || (128..=255).contains(&t)
}

/// Writes `recs` as AAAA answers starting at `start` (wrapping), as many as fit `room`.
/// Returns (end, ancount, nscount, truncated).
#[inline]
fn write_aaaa(
    index: &Index,
    out: &mut [u8],
    mut pos: usize,
    room: usize,
    recs: &[[u8; 16]],
    start: usize,
) -> (usize, u16, u16, bool) {
    let fit = (room - pos) / AAAA_LEN;
    let n = recs.len().min(fit);
    let (tail, head) = recs.split_at(start);
    for addr in head.iter().chain(tail).take(n) {
        let rr = &mut out[pos..pos + AAAA_LEN];
        rr[..12].copy_from_slice(&index.aaaa_head);
        rr[12..].copy_from_slice(addr);
        pos += AAAA_LEN;
    }
    (pos, n as u16, 0, n < recs.len())
}

#[inline]
fn write_txt(
    index: &Index,
    out: &mut [u8],
    pos: usize,
    room: usize,
    e: &Entry,
) -> (usize, u16, u16, bool) {
    let rdata = &index.txt[e.a as usize..(e.a + e.b) as usize];
    let len = 12 + rdata.len();
    if room - pos < len {
        return (pos, 0, 0, true);
    }
    out[pos..pos + 10].copy_from_slice(&index.txt_head);
    out[pos + 10..pos + 12].copy_from_slice(&(rdata.len() as u16).to_be_bytes());
    out[pos + 12..pos + len].copy_from_slice(rdata);
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

/// The most specific zone holding `qname` (any case).
#[inline]
fn zone_of(index: &Index, qname: &[u8]) -> Option<u8> {
    let mut best: Option<(u8, usize)> = None;
    for (i, z) in index.zones.iter().enumerate() {
        if index::is_within(qname, &z.origin) && best.is_none_or(|(_, l)| z.origin.len() > l) {
            best = Some((i as u8, z.origin.len()));
        }
    }
    best.map(|(i, _)| i)
}
