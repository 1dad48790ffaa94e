//! Domain names as lookup keys: lowercase, uncompressed wire format (`\x06node-1\x05_peer\x08internal\x00`).
//!
//! The snapshot indexes every name by these bytes, so a query path (hickory's or a raw-packet fast
//! path) can look a name up by copying its labels into a stack buffer, lowercased, with no
//! allocation and no string building. Also here: the `_peer.internal` TXT splitting.

use hickory_server::proto::rr::Name;

/// The longest a domain name can be in wire format (RFC 1035 §2.3.4).
pub const MAX_WIRE_NAME: usize = 255;

/// The longest TXT RDATA the `_peer.internal` answer carries: what still fits a TCP message with
/// the largest question, one owner name, the record header and an OPT record.
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

/// Splits the comma-separated list of `names` into TXT character-strings of at most 255 bytes.
///
/// The concatenation of the strings is the list itself (`a,b,c`); a string never breaks inside a
/// name, so the separating comma ends the string before the break. When the list would make the
/// RDATA longer than `max_rdata` bytes, it stops at the last name that fits.
pub fn split_txt<'n>(names: impl IntoIterator<Item = &'n str>, max_rdata: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    // RDATA bytes used by the strings already closed (each costs 1 length byte + its text).
    let mut closed = 0usize;
    for name in names {
        // Keep room for the comma that ends the string if another name follows. A name is at
        // most 63 bytes, so name + ',' always fits an empty string.
        let needs_new = !cur.is_empty() && cur.len() + 1 + name.len() + 1 > 255;
        let rdata_after = if needs_new {
            closed + (1 + cur.len() + 1) + (1 + name.len())
        } else {
            closed + 1 + cur.len() + usize::from(!cur.is_empty()) + name.len()
        };
        if rdata_after > max_rdata {
            break;
        }
        if !cur.is_empty() {
            cur.push(',');
        }
        if needs_new {
            closed += 1 + cur.len();
            out.push(std::mem::take(&mut cur));
        }
        cur.push_str(name);
    }
    if !cur.is_empty() {
        out.push(cur);
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
    fn txt_split_keeps_names_whole_and_concatenates_to_the_list() {
        let names: Vec<String> = (0..200).map(|i| format!("peer-{i:04}")).collect();
        let strings = split_txt(names.iter().map(String::as_str), MAX_TXT_RDATA);
        assert!(strings.len() > 1);
        assert!(strings.iter().all(|s| !s.is_empty() && s.len() <= 255));
        assert_eq!(strings.concat(), names.join(","));
        for s in &strings {
            for part in s.split(',').filter(|p| !p.is_empty()) {
                assert!(names.iter().any(|n| n == part), "{part} was cut");
            }
        }
    }

    #[test]
    fn txt_split_small_and_empty() {
        assert_eq!(
            split_txt(["a", "b"], MAX_TXT_RDATA),
            vec!["a,b".to_string()]
        );
        assert!(split_txt([], MAX_TXT_RDATA).is_empty());
        let long = "x".repeat(63);
        let five = [long.as_str(); 5];
        let strings = split_txt(five, MAX_TXT_RDATA);
        assert_eq!(strings.len(), 2);
        assert_eq!(strings[0].len(), 3 * 63 + 3, "three names and their commas");
        assert_eq!(strings.concat(), five.join(","));
    }

    #[test]
    fn txt_split_respects_the_rdata_cap() {
        let names: Vec<String> = (0..10_000).map(|i| format!("peer-{i:05}")).collect();
        let strings = split_txt(names.iter().map(String::as_str), 1000);
        let rdata: usize = strings.iter().map(|s| 1 + s.len()).sum();
        assert!(rdata <= 1000, "{rdata}");
        assert!(rdata > 900, "{rdata}");
        let list = strings.concat();
        assert!(!list.ends_with(','));
        assert!(names.join(",").starts_with(&list));
    }
}
