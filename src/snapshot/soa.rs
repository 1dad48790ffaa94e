//! A zone's negative SOA, taken apart once and written into negative answers compressed against
//! the question, byte for byte as the full handler's encoder writes it (hickory-proto 0.26, told
//! the question's names by `dns::fit::compress_against_question`).
//!
//! The compressed record depends on the question only through where the question has the
//! zone's apex and the suffixes of MNAME and RNAME. For the questions a negative answer nearly
//! always has, one label above a known parent (`<name>._peer.internal`, `<name>._g.internal`,
//! `<name>.<zone>`) or the apex itself, that layout is fixed up to a shift: every pointer moves
//! by the question's length. So [`Soa::parse`] writes the record once per such [`Shape`] (with
//! the general writer, for a stand-in question), and [`Soa::write`] copies it and moves its
//! pointers, a copy of about 50 bytes. Any other question, or one that is itself a suffix of
//! MNAME or RNAME (`ns.internal`), takes the general writer, which walks the names' suffixes
//! and looks each one up in the question.

use super::table::eq_lower;

/// The header's length: the question starts right after it.
const HEADER: usize = 12;

/// The most labels MNAME and RNAME may have together for the fast path to write them: the
/// encoder remembers at most 64 names to point at, and the question's take up to
/// [`MAX_QUESTION_LABELS`] of them.
const MAX_SOA_LABELS: usize = 30;

/// Questions with more labels than this get their negative answers from the full handler (see
/// [`MAX_SOA_LABELS`]).
pub const MAX_QUESTION_LABELS: usize = 24;

/// A zone's negative SOA taken apart, so that the fast path writes it compressed as the full
/// handler's encoder does (its owner and names point into the question where they can).
#[derive(Debug)]
pub(crate) struct Soa {
    /// The length of the zone's apex in wire format (1: the root).
    origin_len: usize,
    /// TYPE, CLASS and TTL: the 8 bytes after the owner.
    head: [u8; 8],
    /// MNAME, lowercase wire format, uncompressed.
    mname: Box<[u8]>,
    /// RNAME, lowercase wire format, uncompressed.
    rname: Box<[u8]>,
    /// SERIAL as the zone file has it.
    pub(crate) serial: u32,
    /// REFRESH, RETRY, EXPIRE and MINIMUM.
    timers: [u8; 16],
    /// The record's length with no compression: the room a negative answer needs before it
    /// is written (the encoder writes each name in full before replacing it by a pointer).
    pub(crate) max_len: usize,
    /// The record prebuilt for the common shapes of question.
    shapes: Box<[Shape]>,
}

/// The SOA record as written after a question of one shape (see the module docs).
#[derive(Debug)]
struct Shape {
    /// The question's lowercase wire name without its first label (`exact`: the whole name).
    parent: Box<[u8]>,
    /// Whether the question is `parent` itself rather than one label more.
    exact: bool,
    /// The record written after a question of `base` bytes, serial zeroed.
    bytes: Box<[u8]>,
    /// The stand-in question's length.
    base: usize,
    /// Offsets in `bytes` of the pointers, which move with the question's length.
    pointers: [u8; 3],
    n_pointers: u8,
    /// Where the serial goes in `bytes`.
    serial_at: u8,
}

impl Soa {
    /// Takes apart `rr`, the SOA record of the zone `origin` (uncompressed wire format), and
    /// prebuilds it for questions at the apex, one label below it, and one label below each of
    /// `parents` (lowercase wire names inside the zone). `None`: it does not parse, or its names
    /// have too many labels to model their compression.
    pub(crate) fn parse(rr: &[u8], origin: &[u8], parents: &[&[u8]]) -> Option<Soa> {
        let rest = rr.strip_prefix(origin)?;
        let head: [u8; 8] = rest.get(..8)?.try_into().ok()?;
        if head[..2] != [0, 6] {
            return None;
        }
        let rdlen = usize::from(u16::from_be_bytes([*rest.get(8)?, *rest.get(9)?]));
        let rdata = rest.get(10..)?;
        if rdata.len() != rdlen {
            return None;
        }
        let mname_len = wire_name_len(rdata)?;
        let rname_len = wire_name_len(&rdata[mname_len..])?;
        let (mname, tail) = rdata.split_at(mname_len);
        let (rname, tail) = tail.split_at(rname_len);
        if tail.len() != 20 || labels(mname) + labels(rname) > MAX_SOA_LABELS {
            return None;
        }
        let lower = |n: &[u8]| n.to_ascii_lowercase().into_boxed_slice();
        let mut soa = Soa {
            origin_len: origin.len(),
            head,
            mname: lower(mname),
            rname: lower(rname),
            serial: u32::from_be_bytes(tail[..4].try_into().ok()?),
            timers: tail[4..].try_into().ok()?,
            max_len: rr.len(),
            shapes: Box::new([]),
        };
        let origin = origin.to_ascii_lowercase();
        let mut shapes = Vec::new();
        shapes.extend(soa.shape(&origin, true));
        shapes.extend(soa.shape(&origin, false));
        for parent in parents {
            if parent.len() > origin.len() && parent.ends_with(&origin) {
                shapes.extend(soa.shape(parent, false));
            }
        }
        soa.shapes = shapes.into_boxed_slice();
        Some(soa)
    }

    /// The record prebuilt for questions `parent` (`exact`) or `<label>.parent`, by the general
    /// writer for a stand-in question. `None` where the general writer must run every time.
    fn shape(&self, parent: &[u8], exact: bool) -> Option<Shape> {
        let mut question = Vec::with_capacity(parent.len() + 2);
        if !exact {
            // A label no SOA name has as its own: the stand-in question is no suffix of them.
            question.extend_from_slice(&[1, 0xFF]);
        }
        question.extend_from_slice(parent);
        if question.len() > super::name::MAX_WIRE_NAME || self.clashes(&question) {
            return None;
        }
        let pos = HEADER + question.len() + 4;
        let mut out = vec![0u8; pos + self.max_len];
        out[HEADER..HEADER + question.len()].copy_from_slice(&question);
        let end = self.write_walking(&mut out, &question, pos, 0)?;
        let bytes: Box<[u8]> = out[pos..end].into();
        // Find the pointers: the owner, then MNAME's and RNAME's ends.
        let mut pointers = [0u8; 3];
        let mut n = 0;
        let mut at = 0;
        let mut push = |at: usize| {
            pointers[n] = at as u8;
            n += 1;
        };
        if bytes[0] & 0xC0 == 0xC0 {
            push(0);
            at = 2;
        } else {
            at += 1; // the root
        }
        at += 10;
        for _ in 0..2 {
            loop {
                let len = bytes[at];
                if len & 0xC0 == 0xC0 {
                    push(at);
                    at += 2;
                    break;
                }
                at += 1 + usize::from(len);
                if len == 0 {
                    break;
                }
            }
        }
        if bytes.len() > usize::from(u8::MAX) {
            return None;
        }
        Some(Shape {
            parent: parent.into(),
            exact,
            serial_at: at as u8,
            bytes,
            base: question.len(),
            pointers,
            n_pointers: n as u8,
        })
    }

    /// Whether `qname` (any case) is a suffix of MNAME or RNAME, so that a pointer may target
    /// the whole question: not a prebuilt shape's layout.
    #[inline]
    fn clashes(&self, qname: &[u8]) -> bool {
        let tail = |name: &[u8]| {
            name.len() >= qname.len() && eq_lower(qname, &name[name.len() - qname.len()..])
        };
        tail(&self.mname) || tail(&self.rname)
    }

    /// Writes the SOA record for a negative answer to `qname` (wire format, any case, at most
    /// 255 bytes, starting at offset 12 of `out`) at `pos`, with `serial`, compressed as the
    /// full handler's encoder compresses it; returns the end. `out` must have
    /// [`Soa::max_len`](Soa) bytes of room at `pos`. `None`: the question has more than
    /// [`MAX_QUESTION_LABELS`] labels (the full handler answers).
    #[inline]
    pub(crate) fn write(
        &self,
        out: &mut [u8],
        qname: &[u8],
        pos: usize,
        serial: u32,
    ) -> Option<usize> {
        if pos == HEADER + qname.len() + 4
            && let Some(shape) = self.shapes.iter().find(|s| s.fits(qname))
            && !self.clashes(qname)
        {
            let bytes = &shape.bytes;
            let end = pos + bytes.len();
            let record = &mut out[pos..end];
            record.copy_from_slice(bytes);
            let shift = (qname.len() - shape.base) as u16;
            for &p in &shape.pointers[..usize::from(shape.n_pointers)] {
                let p = usize::from(p);
                let moved = u16::from_be_bytes([record[p], record[p + 1]]) + shift;
                record[p..p + 2].copy_from_slice(&moved.to_be_bytes());
            }
            let s = usize::from(shape.serial_at);
            record[s..s + 4].copy_from_slice(&serial.to_be_bytes());
            return Some(end);
        }
        self.write_walking(out, qname, pos, serial)
    }

    /// [`Soa::write`] for any question: looks each suffix of MNAME and RNAME up in the question.
    pub(crate) fn write_walking(
        &self,
        out: &mut [u8],
        qname: &[u8],
        pos: usize,
        serial: u32,
    ) -> Option<usize> {
        let q = Question::new(qname)?;
        let mut at = pos;
        // The owner is the zone's apex, a suffix of the question (the root is one zero byte).
        if self.origin_len == 1 {
            out[at] = 0;
            at += 1;
        } else {
            let target = HEADER + qname.len() - self.origin_len;
            out[at..at + 2].copy_from_slice(&(0xC000 | target as u16).to_be_bytes());
            at += 2;
        }
        out[at..at + 8].copy_from_slice(&self.head);
        let rdata = at + 10;
        let (end, stored) = write_name(out, rdata, &self.mname, &q, None);
        let (end, _) = write_name(
            out,
            end,
            &self.rname,
            &q,
            Some((&self.mname, rdata, stored)),
        );
        out[end..end + 4].copy_from_slice(&serial.to_be_bytes());
        out[end + 4..end + 20].copy_from_slice(&self.timers);
        let end = end + 20;
        out[at + 8..at + 10].copy_from_slice(&((end - rdata) as u16).to_be_bytes());
        Some(end)
    }
}

impl Shape {
    /// Whether `qname` (any case) has this shape.
    #[inline]
    fn fits(&self, qname: &[u8]) -> bool {
        if self.exact {
            return eq_lower(qname, &self.parent);
        }
        let first = usize::from(qname[0]);
        first != 0
            && qname.len() == first + 1 + self.parent.len()
            && eq_lower(&qname[first + 1..], &self.parent)
    }
}

/// The question name and where its labels start, for compressing against it.
struct Question<'q> {
    name: &'q [u8],
    starts: [u8; MAX_QUESTION_LABELS],
    n: usize,
}

impl<'q> Question<'q> {
    /// `None` for a name of more than [`MAX_QUESTION_LABELS`] labels.
    #[inline]
    fn new(name: &'q [u8]) -> Option<Question<'q>> {
        let mut q = Question {
            name,
            starts: [0; MAX_QUESTION_LABELS],
            n: 0,
        };
        let mut at = 0;
        while name[at] != 0 {
            *q.starts.get_mut(q.n)? = at as u8;
            q.n += 1;
            at += 1 + usize::from(name[at]);
        }
        Some(q)
    }

    /// Where in the message the question has `suffix` (lowercase, a whole name's tail from a
    /// label on), compared without case: the encoder was given the question's names lowercased.
    #[inline]
    fn find(&self, suffix: &[u8]) -> Option<usize> {
        let at = self.name.len().checked_sub(suffix.len())?;
        (self.starts[..self.n].contains(&(at as u8)) && eq_lower(&self.name[at..], suffix))
            .then_some(HEADER + at)
    }
}

/// Writes the lowercase wire name `name` at `pos` as hickory's encoder does: its longest suffix
/// that the question has, or that `prior` (a name written at a position, of which the encoder
/// remembered the first few suffixes) has, becomes a pointer. Returns the end and how many
/// suffixes the encoder remembered of this name (those before the pointer).
#[inline]
fn write_name(
    out: &mut [u8],
    pos: usize,
    name: &[u8],
    q: &Question<'_>,
    prior: Option<(&[u8], usize, usize)>,
) -> (usize, usize) {
    let mut at = 0;
    let mut stored = 0;
    while name[at] != 0 {
        let suffix = &name[at..];
        let target = q.find(suffix).or_else(|| {
            prior.and_then(|(p, p_pos, p_stored)| find_in(p, p_stored, suffix).map(|o| p_pos + o))
        });
        if let Some(target) = target {
            out[pos..pos + at].copy_from_slice(&name[..at]);
            out[pos + at..pos + at + 2].copy_from_slice(&(0xC000 | target as u16).to_be_bytes());
            return (pos + at + 2, stored);
        }
        stored += 1;
        at += 1 + usize::from(name[at]);
    }
    out[pos..pos + name.len()].copy_from_slice(name);
    (pos + name.len(), stored)
}

/// The offset in `name` of the suffix equal to `suffix` among its first `n` suffixes.
#[inline]
fn find_in(name: &[u8], n: usize, suffix: &[u8]) -> Option<usize> {
    let mut at = 0;
    for _ in 0..n {
        if name.len() - at == suffix.len() && &name[at..] == suffix {
            return Some(at);
        }
        at += 1 + usize::from(name[at]);
    }
    None
}

/// The length of the uncompressed wire name at the start of `b`, terminator included.
fn wire_name_len(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let len = usize::from(*b.get(at)?);
        if len == 0 {
            return Some(at + 1);
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
}

/// The number of labels of a valid wire name (the root has none).
fn labels(name: &[u8]) -> usize {
    let (mut at, mut n) = (0, 0);
    while let Some(&len) = name.get(at) {
        if len == 0 {
            break;
        }
        at += 1 + usize::from(len);
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::name::wire_from_labels;

    /// The SOA record of `origin` with `mname` and `rname`, uncompressed.
    fn rr(origin: &[u8], mname: &[u8], rname: &[u8]) -> Vec<u8> {
        let mut r = origin.to_vec();
        r.extend_from_slice(&[0, 6, 0, 1, 0, 0, 0x0E, 0x10]);
        let rdlen = mname.len() + rname.len() + 20;
        r.extend_from_slice(&(rdlen as u16).to_be_bytes());
        r.extend_from_slice(mname);
        r.extend_from_slice(rname);
        r.extend_from_slice(&[0, 0, 0, 7]);
        r.extend_from_slice(&(1..=16).collect::<Vec<u8>>());
        r
    }

    fn wire(name: &str) -> Vec<u8> {
        let labels: Vec<&[u8]> = name
            .split('.')
            .filter(|l| !l.is_empty())
            .map(str::as_bytes)
            .collect();
        let mut w = Vec::new();
        for l in labels {
            w.push(l.len() as u8);
            w.extend_from_slice(l);
        }
        w.push(0);
        w
    }

    /// Both writers, after `qname` at offset 12.
    fn both(soa: &Soa, qname: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let pos = HEADER + qname.len() + 4;
        let run = |walk: bool| {
            let mut out = vec![0xAAu8; pos + soa.max_len];
            out[HEADER..HEADER + qname.len()].copy_from_slice(qname);
            let end = if walk {
                soa.write_walking(&mut out, qname, pos, 0x0102_0304)
            } else {
                soa.write(&mut out, qname, pos, 0x0102_0304)
            }?;
            Some(out[pos..end].to_vec())
        };
        (run(false), run(true))
    }

    #[test]
    fn prebuilt_shapes_write_the_same_bytes_as_the_walk() {
        let internal = wire("internal");
        let peer = wire_from_labels(&[b"_peer", b"internal"]);
        let group = wire_from_labels(&[b"_g", b"internal"]);
        let parents: [&[u8]; 2] = [&peer, &group];
        let soas = [
            ("ns.internal", "hostmaster.internal"),
            ("ns1.internal", "hostmaster.example.org"),
            ("ns.example.org", "admin.ns.example.org"),
            ("node-1._peer.internal", "x.node-1._peer.internal"),
            ("_peer.internal", "_g.internal"),
            ("internal", "internal"),
        ];
        let questions = [
            "internal",
            "INTERNAL",
            "node-1._peer.internal",
            "NODE-1._PEER.Internal",
            "nx-849350033._peer.internal",
            "web._g.internal",
            "x._g.internal",
            "ns.internal",
            "NS.internal",
            "hostmaster.internal",
            "_peer.internal",
            "_g.internal",
            "a.b._peer.internal",
            "ns1.internal",
            "foo.internal",
            "admin.internal",
            "x.node-1._peer.internal",
            "y.x.node-1._peer.internal",
        ];
        let mut prebuilt = 0;
        for (mname, rname) in soas {
            let soa = Soa::parse(
                &rr(&internal, &wire(mname), &wire(rname)),
                &internal,
                &parents,
            )
            .expect("parses");
            assert!(
                soa.shapes.len() >= 3,
                "{mname} {rname}: {}",
                soa.shapes.len()
            );
            for question in questions {
                let qname = wire(question);
                let (fast, walk) = both(&soa, &qname);
                assert_eq!(fast, walk, "{mname} {rname}: {question}");
                let used = soa.shapes.iter().any(|s| s.fits(&qname)) && !soa.clashes(&qname);
                prebuilt += usize::from(used);
            }
            // A long first label moves the pointers past one byte of offset.
            let long = format!("{}._peer.internal", "q".repeat(63));
            let (fast, walk) = both(&soa, &wire(&long));
            assert_eq!(fast, walk, "{mname} {rname}: long");
        }
        assert!(prebuilt > 40, "the prebuilt records were used ({prebuilt})");
    }

    #[test]
    fn the_root_zone_and_deep_questions() {
        let root = [0u8];
        let soa = Soa::parse(
            &rr(
                &root,
                &wire("a.root-servers.net"),
                &wire("nstld.verisign-grs.com"),
            ),
            &root,
            &[],
        )
        .expect("parses");
        for question in ["", "com", "example.com", "A.Root-Servers.NET", "net"] {
            let (fast, walk) = both(&soa, &wire(question));
            assert_eq!(fast, walk, "{question:?}");
        }
        // Deeper than MAX_QUESTION_LABELS: the full handler answers.
        let deep = vec!["a"; MAX_QUESTION_LABELS + 1].join(".");
        assert_eq!(both(&soa, &wire(&deep)), (None, None));
    }
}
