//! Domain names as lookup keys: lowercase, uncompressed wire format (`\x06node-1\x05_peer\x08internal\x00`).
//!
//! The snapshot indexes every name by these bytes, so a query path (hickory's or a raw-packet fast
//! path) can look a name up by copying its labels into a stack buffer, lowercased, with no
//! allocation and no string building. Also here: the `_peer.internal` TXT splitting.

use hickory_server::proto::rr::Name;

/// The longest a domain name can be in wire format (RFC 1035 §2.3.4).
pub const MAX_WIRE_NAME: usize = 255;

pub use crate::fastpath::index::MAX_TXT_RDATA;

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
}
