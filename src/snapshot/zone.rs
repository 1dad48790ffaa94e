//! Static zones: `zones/*.zone` files (or the built-in `internal.zone`), parsed once at start.
//!
//! A zone's origin is its file name without `.zone`. Its records are merged into every org's view
//! by [`super::Snapshot::build`]; this module only parses and checks them.

use std::path::{Path, PathBuf};

use hickory_server::proto::rr::{DNSClass, Name, RData, Record};
use hickory_server::proto::serialize::binary::{BinDecodable, BinEncodable};
use hickory_server::proto::serialize::txt::Parser;

use super::SnapshotError;

/// The `internal.` zone shipped in the binary, used when no `zones/` folder is configured or found,
/// and for `internal.` when a folder has no `internal.zone`.
pub const BUILTIN_INTERNAL_ZONE: &str = include_str!("../../zones/internal.zone");

/// The zone the dynamic names (`_peer`, `_g`, `ns`, `gateway`) live in.
pub const INTERNAL_ORIGIN: &str = "internal.";

/// One parsed zone file.
#[derive(Debug, Clone)]
pub struct StaticZone {
    /// The zone apex, lowercase and fully qualified.
    pub origin: Name,
    /// Every record of the zone, the apex SOA included.
    pub records: Vec<Record>,
    /// Where it came from, for messages.
    pub file: String,
}

impl StaticZone {
    /// The apex SOA record.
    pub fn soa(&self) -> &Record {
        self.records
            .iter()
            .find(|r| matches!(r.data, RData::SOA(_)))
            .expect("parse checks that every zone has an apex SOA")
    }
}

/// Parses zone file text whose origin is `origin` (e.g. `internal`).
///
/// # Errors
/// [`SnapshotError::Zone`] when the text does not parse, has no SOA at its apex, has a record
/// outside its origin or of a class other than IN.
pub fn parse_zone(
    text: &str,
    path: Option<PathBuf>,
    origin: &str,
) -> Result<StaticZone, SnapshotError> {
    let file = path.as_ref().map_or_else(
        || format!("built-in {origin}.zone"),
        |p| p.display().to_string(),
    );
    let err = |message: String| SnapshotError::Zone {
        file: file.clone(),
        message,
    };
    let origin_name = Name::from_ascii(origin)
        .map_err(|e| err(format!("file name is not a domain name: {e}")))?
        .to_lowercase();
    let (origin_name, sets) = Parser::new(text, path, Some(origin_name))
        .parse()
        .map_err(|e| err(e.to_string()))?;
    let origin_name = origin_name.to_lowercase();
    let mut records = Vec::new();
    for set in sets.into_values() {
        for record in set.records_without_rrsigs() {
            if !origin_name.zone_of(&record.name) {
                return Err(err(format!(
                    "{} is outside the zone {origin_name}",
                    record.name
                )));
            }
            if record.dns_class != DNSClass::IN {
                return Err(err(format!(
                    "{} has class {}; only IN is served",
                    record.name, record.dns_class
                )));
            }
            let mut record = record.clone();
            record.name = record.name.to_lowercase();
            records.push(record);
        }
    }
    // A TXT record holds at least one character-string (RFC 1035 §3.3.14); an empty one would
    // be answered as RDATA that resolvers refuse to decode (found by fuzzing, issue 11).
    if let Some(empty) = records
        .iter()
        .find(|r| matches!(&r.data, RData::TXT(txt) if txt.txt_data.is_empty()))
    {
        return Err(err(format!(
            "TXT record {} has no strings: give it at least one, e.g. \"\"",
            empty.name
        )));
    }
    // Every record must read back from the wire as it was written: the zone-file parser accepts
    // some RDATA that the wire decoder refuses (a CAA tag with dots, found by fuzzing), and a
    // resolver would refuse the answer holding it.
    for record in &records {
        let survives = record
            .to_bytes()
            .ok()
            .and_then(|bytes| Record::from_bytes(&bytes).ok())
            .is_some_and(|back| back.data == record.data);
        if !survives {
            return Err(err(format!(
                "the {} record of {} cannot be sent as it is written (its RDATA does not survive \
                 the wire format): check its fields",
                record.record_type(),
                record.name
            )));
        }
    }
    let n_soa = records
        .iter()
        .filter(|r| matches!(r.data, RData::SOA(_)))
        .count();
    let apex_soa = records
        .iter()
        .any(|r| matches!(r.data, RData::SOA(_)) && r.name == origin_name);
    if n_soa != 1 || !apex_soa {
        return Err(err(format!(
            "needs exactly one SOA record, at the apex {origin_name}"
        )));
    }
    Ok(StaticZone {
        origin: origin_name,
        records,
        file,
    })
}

/// The built-in `internal.` zone.
pub fn builtin_internal() -> StaticZone {
    parse_zone(BUILTIN_INTERNAL_ZONE, None, "internal").expect("the built-in zone file is valid")
}

/// Loads every `*.zone` file of `dir`, adding the built-in `internal.` zone when the folder has none.
///
/// # Errors
/// [`SnapshotError::ZonesDir`] when the folder cannot be read, [`SnapshotError::Zone`] for a bad
/// file, a zone given twice, or a zone inside `_peer.internal.` or `_g.internal.` (those names are
/// generated).
pub fn load_zones_dir(dir: &Path) -> Result<Vec<StaticZone>, SnapshotError> {
    let read_err = |source: std::io::Error| SnapshotError::ZonesDir {
        path: dir.to_owned(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.extension().is_some_and(|e| e == "zone") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let mut zones = Vec::with_capacity(paths.len() + 1);
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|source| SnapshotError::Zone {
            file: path.display().to_string(),
            message: source.to_string(),
        })?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        zones.push(parse_zone(&text, Some(path), &stem)?);
    }
    with_internal(zones)
}

/// Checks a set of zones and makes sure `internal.` is among them.
///
/// # Errors
/// As [`load_zones_dir`].
pub fn with_internal(mut zones: Vec<StaticZone>) -> Result<Vec<StaticZone>, SnapshotError> {
    let internal = Name::from_ascii(INTERNAL_ORIGIN).expect("valid literal");
    if !zones.iter().any(|z| z.origin == internal) {
        zones.push(builtin_internal());
    }
    let generated = [
        Name::from_ascii("_peer.internal.").expect("valid literal"),
        Name::from_ascii("_g.internal.").expect("valid literal"),
    ];
    for (i, zone) in zones.iter().enumerate() {
        if generated.iter().any(|g| g.zone_of(&zone.origin)) {
            return Err(SnapshotError::Zone {
                file: zone.file.clone(),
                message: format!("{} is generated by sixpn and cannot be a zone", zone.origin),
            });
        }
        if zones[..i].iter().any(|z| z.origin == zone.origin) {
            return Err(SnapshotError::Zone {
                file: zone.file.clone(),
                message: format!("zone {} is given twice", zone.origin),
            });
        }
    }
    Ok(zones)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_zone_has_soa_and_ns() {
        let zone = builtin_internal();
        assert_eq!(zone.origin.to_ascii(), "internal.");
        let RData::SOA(soa) = &zone.soa().data else {
            unreachable!()
        };
        assert!(soa.minimum <= 30, "negative TTL must be short");
        assert!(zone.records.iter().any(|r| matches!(r.data, RData::NS(_))));
    }

    #[test]
    fn zone_without_soa_is_rejected() {
        let err = parse_zone("$TTL 5\n@ IN NS ns.internal.\n", None, "internal").unwrap_err();
        assert!(err.to_string().contains("SOA"), "{err}");
    }

    #[test]
    fn record_outside_origin_is_rejected() {
        let text = "$TTL 5\n@ IN SOA ns hm 1 2 3 4 5\nfoo.example. IN A 192.0.2.1\n";
        let err = parse_zone(text, None, "internal").unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
    }

    #[test]
    fn names_are_lowercased() {
        let text = "$TTL 5\n@ IN SOA ns hm 1 2 3 4 5\nWWW IN A 192.0.2.1\n";
        let zone = parse_zone(text, None, "Example.TEST").unwrap();
        assert_eq!(zone.origin.to_ascii(), "example.test.");
        assert!(
            zone.records
                .iter()
                .any(|r| r.name.to_ascii() == "www.example.test.")
        );
    }

    #[test]
    fn generated_subtrees_cannot_be_zones() {
        let text = "$TTL 5\n@ IN SOA ns hm 1 2 3 4 5\n";
        let zone = parse_zone(text, None, "_g.internal").unwrap();
        assert!(with_internal(vec![zone]).is_err());
        let other = parse_zone(text, None, "example.test").unwrap();
        let zones = with_internal(vec![other]).unwrap();
        assert_eq!(zones.len(), 2, "internal. is added");
    }

    #[test]
    fn issue11_records_that_do_not_survive_the_wire_are_refused() {
        // A CAA tag must be letters and digits (RFC 8659); the text parser takes this one, the
        // wire decoder does not (found by fuzzing).
        let text = "$ORIGIN internal.\n$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\n\
                    x IN CAA 10 mx.example._aaaa ns1\n";
        let err = parse_zone(text, None, "internal").unwrap_err().to_string();
        assert!(err.contains("CAA"), "{err}");
        let good = "$ORIGIN internal.\n$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\n\
                    x IN CAA 0 issue \"ca.example.net\"\n";
        parse_zone(good, None, "internal").unwrap();
    }

    #[test]
    fn issue11_txt_without_strings_is_refused() {
        let text = "$ORIGIN internal.\n$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\nempty 5 IN TXT\n";
        let err = parse_zone(text, None, "internal").unwrap_err().to_string();
        assert!(err.contains("no strings"), "{err}");
    }
}
