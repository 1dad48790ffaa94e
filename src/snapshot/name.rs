//! Domain names as lookup keys: lowercase, uncompressed wire format (`\x06node-1\x05_peer\x08internal\x00`).
//!
//! The snapshot indexes every name by these bytes, so a query path (hickory's or a raw-packet fast
//! path) can look a name up by copying its labels into a stack buffer, lowercased, with no
//! allocation and no string building. Also here: the `_peer.internal` TXT splitting.

use hickory_server::proto::rr::Name;

/// The longest a domain name can be in wire format (RFC 1035 §2.3.4).
pub const MAX_WIRE_NAME: usize = 255;

/// The most RDATA the `_peer.internal` TXT record carries: what still fits a TCP message with the
/// largest question, the owner pointer, the record header and an OPT record.
pub const MAX_TXT_RDATA: usize = 65_000;

/// Writes `name` into `buf` in lowercase wire format and returns the written bytes.
///
/// Returns `None` only for a name longer than [`MAX_WIRE_NAME`], which a parsed [`Name`] never is.
pub fn wire_lower<'b>(name: &Name, buf: &'b mut [u8; MAX_WIRE_NAME]) -> Option<&'b [u8]> {
    let mut at = 0;
    for label in name.iter() {
        let end = at + 1 + label.len();
        if label.len() > 63 || end >= MAX_WIRE_NAME {
            return None;
        }
        buf[at] = label.len() as u8;
        for (dst, src) in buf[at + 1..end].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        at = end;
    }
    buf[at] = 0;
    Some(&buf[..=at])
}

/// The lowercase wire form of `name`, owned.
pub fn wire_key(name: &Name) -> Option<Box<[u8]>> {
    let mut buf = [0u8; MAX_WIRE_NAME];
    wire_lower(name, &mut buf).map(Box::from)
}

/// The lowercase wire form of a name given as labels, e.g. `[b"_peer", b"internal"]`.
pub fn wire_from_labels(labels: &[&[u8]]) -> Box<[u8]> {
    // Exact capacity: the boxed slice then needs no reallocation.
    let mut out = Vec::with_capacity(labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1);
    for label in labels {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out.into_boxed_slice()
}

/// The name without its first label, or `None` for the root. `wire` must be a valid wire name.
pub fn parent(wire: &[u8]) -> Option<&[u8]> {
    let len = usize::from(*wire.first()?);
    if len == 0 {
        return None;
    }
    wire.get(1 + len..)
}

/// Whether `name` equals `origin` or lies below it, on label boundaries.
pub fn is_within(name: &[u8], origin: &[u8]) -> bool {
    let mut cur = Some(name);
    while let Some(n) = cur {
        if n.len() < origin.len() {
            return false;
        }
        if n == origin {
            return true;
        }
        cur = parent(n);
    }
    false
}

/// The hickory [`Name`] of a lowercase wire name (fully qualified).
pub fn from_wire(wire: &[u8]) -> Option<Name> {
    let mut labels: Vec<&[u8]> = Vec::with_capacity(4);
    let mut cur = wire;
    loop {
        let len = usize::from(*cur.first()?);
        if len == 0 {
            break;
        }
        labels.push(cur.get(1..1 + len)?);
        cur = &cur[1 + len..];
    }
    let mut name = Name::from_labels(labels).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// The character-strings of a TXT RDATA (each a length byte and its bytes).
pub fn txt_strings(rdata: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(&len) = rdata.get(at) {
        let end = (at + 1 + usize::from(len)).min(rdata.len());
        out.push(&rdata[at + 1..end]);
        at = end;
    }
    out
}

/// Appends the TXT RDATA of the comma-separated `names`: character-strings of at most 255 bytes
/// that never break inside a name (the comma ends the string before a break, and always fits), stopping at the last
/// name that keeps the RDATA within `max_rdata` bytes.
pub fn split_txt_into<'n>(
    names: impl IntoIterator<Item = &'n str>,
    max_rdata: usize,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    // Offset of the current string's length byte, if a string is open.
    let mut open: Option<usize> = None;
    for name in names {
        let cur_len = open.map_or(0, |o| out.len() - o - 1);
        // Keep room for the comma that ends the string if another name follows (the full
        // handler's snapshot splits the same way).
        let needs_new = open.is_none() || cur_len + 1 + name.len() + 1 > 255;
        let used = out.len() - start;
        let after = if open.is_none() {
            used + 1 + name.len()
        } else if needs_new {
            used + 1 + 1 + name.len()
        } else {
            used + 1 + name.len()
        };
        if after > max_rdata {
            break;
        }
        match open {
            Some(o) if !needs_new => {
                out.push(b',');
                out.extend_from_slice(name.as_bytes());
                out[o] = (out.len() - o - 1) as u8;
            }
            Some(o) => {
                // The comma closes the previous string.
                out.push(b',');
                out[o] = (out.len() - o - 1) as u8;
                let o = out.len();
                out.push(0);
                out.extend_from_slice(name.as_bytes());
                out[o] = name.len() as u8;
                open = Some(o);
            }
            None => {
                let o = out.len();
                out.push(name.len() as u8);
                out.extend_from_slice(name.as_bytes());
                open = Some(o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn wire_lower_lowercases_and_terminates() {
        let mut buf = [0u8; MAX_WIRE_NAME];
        let got = wire_lower(&name("NoDe-1._PEER.internal."), &mut buf).unwrap();
        assert_eq!(got, b"\x06node-1\x05_peer\x08internal\x00");
        assert_eq!(wire_lower(&Name::root(), &mut buf).unwrap(), b"\x00");
        assert_eq!(
            &*wire_from_labels(&[b"node-1", b"_peer", b"internal"]),
            b"\x06node-1\x05_peer\x08internal\x00"
        );
    }

    #[test]
    fn parents_and_containment() {
        let n = b"\x06node-1\x05_peer\x08internal\x00";
        assert_eq!(parent(n), Some(&b"\x05_peer\x08internal\x00"[..]));
        assert_eq!(parent(b"\x00"), None);
        assert!(is_within(n, b"\x08internal\x00"));
        assert!(is_within(n, n));
        assert!(is_within(n, b"\x00"));
        assert!(!is_within(b"\x08internal\x00", n));
        // A suffix that is not on a label boundary is not containment.
        assert!(!is_within(b"\x09xinternal\x00", b"\x08internal\x00"));
        assert!(!is_within(b"\x07example\x00", b"\x08internal\x00"));
    }

    #[test]
    fn from_wire_round_trips() {
        let wire = b"\x06node-1\x05_peer\x08internal\x00";
        let n = from_wire(wire).unwrap();
        assert_eq!(n, name("node-1._peer.internal."));
        assert_eq!(&*wire_key(&n).unwrap(), wire);
        assert!(from_wire(b"\x05ab").is_none());
    }

    #[test]
    fn txt_strings_split_rdata() {
        assert_eq!(txt_strings(b"\x03a,b\x01c"), vec![&b"a,b"[..], b"c"]);
        assert!(txt_strings(b"").is_empty());
    }

    fn strings(rdata: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < rdata.len() {
            let n = usize::from(rdata[at]);
            out.push(String::from_utf8(rdata[at + 1..at + 1 + n].to_vec()).unwrap());
            at += 1 + n;
        }
        out
    }

    #[test]
    fn txt_split_keeps_names_whole() {
        let names: Vec<String> = (0..200).map(|i| format!("peer-{i:04}")).collect();
        let mut rdata = Vec::new();
        split_txt_into(names.iter().map(String::as_str), MAX_TXT_RDATA, &mut rdata);
        let s = strings(&rdata);
        assert!(s.len() > 1);
        assert!(s.iter().all(|s| !s.is_empty() && s.len() <= 255));
        assert_eq!(s.concat(), names.join(","));
        for st in &s {
            for part in st.split(',').filter(|p| !p.is_empty()) {
                assert!(names.iter().any(|n| n == part), "{part} was cut");
            }
        }
    }

    #[test]
    fn txt_split_small_empty_and_capped() {
        let mut r = Vec::new();
        split_txt_into(["a", "b"], MAX_TXT_RDATA, &mut r);
        assert_eq!(r, b"\x03a,b");
        let mut r = Vec::new();
        split_txt_into([], MAX_TXT_RDATA, &mut r);
        assert!(r.is_empty());
        let long = "x".repeat(63);
        let mut r = Vec::new();
        split_txt_into([long.as_str(); 5], MAX_TXT_RDATA, &mut r);
        let s = strings(&r);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].len(), 3 * 63 + 3, "three names and their commas");
        assert_eq!(s.concat(), [long.as_str(); 5].join(","));
        let names: Vec<String> = (0..10_000).map(|i| format!("peer-{i:05}")).collect();
        let mut r = Vec::new();
        split_txt_into(names.iter().map(String::as_str), 1000, &mut r);
        assert!(r.len() <= 1000 && r.len() > 900, "{}", r.len());
        let list = strings(&r).concat();
        assert!(!list.ends_with(','));
        assert!(names.join(",").starts_with(&list));
    }
}
