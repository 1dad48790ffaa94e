//! [`Base`]: the store-independent part of every snapshot, built once from the settings.
//!
//! The zones and their negative SOAs, every static name with its records (and the empty
//! non-terminals above them), and the answer table's settings: which names the fast path leaves
//! to the full handler, the TTL, the views.

use std::collections::BTreeMap;

use hickory_server::proto::rr::rdata::AAAA;
use hickory_server::proto::rr::{Name, RData, Record};
use hickory_server::proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use super::name::{self, wire_from_labels};
use super::zone::{self, StaticZone};
use super::{Base, FastZone, IndexSettings, RrSet, SnapshotSettings, StaticEntry, StaticMap, Zone};

/// A static name with its record sets.
struct StaticName {
    key: Box<[u8]>,
    zone: u16,
    rrsets: Vec<RrSet>,
}

pub(super) fn base(settings: &SnapshotSettings) -> Base {
    let mut static_zones: Vec<StaticZone> = settings.zones.to_vec();
    let internal_origin = Name::from_ascii(zone::INTERNAL_ORIGIN).expect("valid literal");
    if !static_zones.iter().any(|z| z.origin == internal_origin) {
        static_zones.push(zone::builtin_internal());
    }
    let zones: Vec<Zone> = static_zones.iter().map(make_zone).collect();
    let internal = zones
        .iter()
        .position(|z| z.origin == internal_origin)
        .expect("internal. was added above") as u16;
    let statics = static_names(&static_zones, &zones);
    let index_settings = fast_settings(settings, &zones, &statics, internal);
    let mut map = StaticMap::with_capacity_and_hasher(statics.len(), Default::default());
    for item in statics {
        let mut rrsets = item.rrsets;
        rrsets.sort_by_key(|s| u16::from(s.record_type));
        map.insert(
            item.key,
            StaticEntry {
                zone: item.zone,
                rrsets: rrsets.into_boxed_slice(),
                rotation: Default::default(),
            },
        );
    }
    Base {
        ttl: settings.ttl,
        internal,
        zones: zones.into_boxed_slice(),
        statics: map,
        index_settings,
        views: settings.views.clone(),
    }
}

/// The per-org records of a static name: `ns.internal` and `gateway.internal` answer the org's
/// resolver (`::3`) and gateway (`::1`) addresses, beside whatever a zone file gives them.
pub(crate) fn org_record(wire: &[u8], org: &crate::model::Org, ttl: u32) -> Option<Record> {
    let address = if wire == NS_INTERNAL {
        org.dns_addr()
    } else if wire == GATEWAY_INTERNAL {
        org.gateway_addr()
    } else {
        return None;
    };
    let owner = name::from_wire(wire)?;
    Some(Record::from_rdata(owner, ttl, RData::AAAA(AAAA(address))))
}

const NS_INTERNAL: &[u8] = b"\x02ns\x08internal\x00";
const GATEWAY_INTERNAL: &[u8] = b"\x07gateway\x08internal\x00";

/// What the fast path's index is built from: the same zones and their negative SOA bytes; every
/// static name (with the per-org `ns` and `gateway`) is left to the full handler, which merges
/// static and per-org records.
fn fast_settings(
    settings: &SnapshotSettings,
    zones: &[Zone],
    statics: &[StaticName],
    internal: u16,
) -> IndexSettings {
    let mut fast_zones: Vec<FastZone> = zones
        .iter()
        .map(|z| FastZone {
            origin: z.origin_wire.clone(),
            soa_negative: z.soa_negative_wire.clone(),
            static_names: vec![z.origin_wire.clone()],
            // The full handler answers a miss with NXDOMAIN in every zone (no wildcards or cuts).
            delegate_misses: false,
        })
        .collect();
    for item in statics {
        fast_zones[usize::from(item.zone)]
            .static_names
            .push(item.key.clone());
    }
    for label in [&b"ns"[..], b"gateway"] {
        fast_zones[usize::from(internal)]
            .static_names
            .push(wire_from_labels(&[label, b"internal"]));
    }
    IndexSettings {
        ttl: settings.ttl,
        views: settings.views.clone(),
        zones: fast_zones,
        max_udp_payload: settings.max_udp_payload,
    }
}

/// The static zones' names with prebuilt record sets, plus their empty non-terminals.
fn static_names(static_zones: &[StaticZone], zones: &[Zone]) -> Vec<StaticName> {
    let mut by_name: BTreeMap<(Box<[u8]>, u16), Vec<Record>> = BTreeMap::new();
    let mut zone_of: BTreeMap<Box<[u8]>, u16> = BTreeMap::new();
    for (i, zone) in static_zones.iter().enumerate() {
        for record in &zone.records {
            let Some(key) = name::wire_key(&record.name) else {
                continue;
            };
            zone_of.entry(key.clone()).or_insert(i as u16);
            by_name
                .entry((key, u16::from(record.record_type())))
                .or_default()
                .push(record.clone());
        }
    }
    let mut out: BTreeMap<Box<[u8]>, StaticName> = BTreeMap::new();
    for ((key, _), records) in by_name {
        let zone = zone_of[&key];
        out.entry(key.clone())
            .or_insert_with(|| StaticName {
                key,
                zone,
                rrsets: Vec::new(),
            })
            .rrsets
            .push(RrSet::new(records));
    }
    // Empty non-terminals: every ancestor of a name, up to its zone's apex.
    let mut ents = Vec::new();
    for item in out.values() {
        let origin = &zones[usize::from(item.zone)].origin_wire;
        let mut cur = name::parent(&item.key);
        while let Some(n) = cur {
            if n.len() < origin.len() || !name::is_within(n, origin) {
                break;
            }
            ents.push((Box::<[u8]>::from(n), item.zone));
            cur = name::parent(n);
        }
    }
    for (key, zone) in ents {
        out.entry(key.clone()).or_insert(StaticName {
            key,
            zone,
            rrsets: Vec::new(),
        });
    }
    out.into_values().collect()
}

fn make_zone(zone: &StaticZone) -> Zone {
    let soa = zone.soa();
    let negative_ttl = match &soa.data {
        RData::SOA(data) => soa.ttl.min(data.minimum),
        _ => soa.ttl,
    };
    let mut soa_negative = soa.clone();
    soa_negative.ttl = negative_ttl;
    // Lowercase names, as the question's names are recorded for compression (see
    // `dns::fit::compress_against_question`), so they point into the question where they can.
    if let RData::SOA(data) = &mut soa_negative.data {
        data.mname = data.mname.to_lowercase();
        data.rname = data.rname.to_lowercase();
    }
    let origin_wire = name::wire_key(&zone.origin).unwrap_or_else(|| Box::from(&b"\0"[..]));
    let mut wire = origin_wire.to_vec();
    let mut answer = Vec::new();
    encode_answer(&soa_negative, &mut answer);
    // Replace the compression pointer with the full owner name.
    wire.extend_from_slice(&answer[2..]);
    Zone {
        origin: zone.origin.clone(),
        origin_wire,
        soa: soa.clone(),
        soa_negative,
        soa_negative_wire: wire.into_boxed_slice(),
    }
}

/// Appends `record` as answer bytes (owner = pointer to the question, uncompressed RDATA) to
/// `out` and returns how many bytes it took.
pub(super) fn encode_answer(record: &Record, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0xC0, 0x0C]);
    out.extend_from_slice(&u16::from(record.record_type()).to_be_bytes());
    out.extend_from_slice(&u16::from(record.dns_class).to_be_bytes());
    out.extend_from_slice(&record.ttl.to_be_bytes());
    match &record.data {
        RData::AAAA(AAAA(address)) => {
            out.extend_from_slice(&16u16.to_be_bytes());
            out.extend_from_slice(&address.octets());
        }
        data => {
            let mut rdata = Vec::new();
            let mut encoder = BinEncoder::new(&mut rdata);
            encoder.set_name_encoding(NameEncoding::Uncompressed);
            if let Err(error) = data.emit(&mut encoder) {
                // Records come from parsed zone files or are built here within size limits.
                tracing::warn!(%error, name = %record.name, "cannot encode a record; serving it empty");
                rdata.clear();
            }
            let len = u16::try_from(rdata.len()).unwrap_or(0);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&rdata[..usize::from(len)]);
        }
    }
    out.len() - start
}
