//! The zone loader (`snapshot::zone::parse_zone`, what `zones/*.zone` goes through at start) on
//! arbitrary text, then, for a zone it accepts, the snapshot built with it and a few queries.
//!
//! Input: one byte choosing the zone's origin (its file name), then the text (UTF-8; other inputs
//! are skipped, as `load_zones_dir` reads files with `read_to_string`). Texts containing
//! `$INCLUDE` are skipped: hickory's parser reads an absolute include path from disk, which is an
//! operator's feature, not input to fuzz (and would make the target read the fuzzing machine's
//! files).
//!
//! Fails when parsing panics, when an accepted zone breaks what the loader promises (origin
//! lowercase, exactly one SOA and at the apex, every record inside the origin, class IN, owner
//! names lowercase), or when a snapshot built with it panics or answers something hickory cannot
//! parse (the apex SOA and the first records' names and types, through the full handler).

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, RData};
use hickory_server::net::xfer::Protocol;
use libfuzzer_sys::fuzz_target;
use sixpn::dns::Handler;
use sixpn::snapshot::{Snapshot, SnapshotHandle, SnapshotSettings, zone};
use sixpn::store::Dump;

const ORIGINS: &[&str] = &[
    "internal",
    "example",
    "sub.internal",
    "_peer.internal",
    "a.b.c",
    "EXAMPLE",
];

/// Found by this target: `empty 5 IN TXT` (a TXT record with no character-string) is accepted by
/// `parse_zone`, and the answer to `empty.internal. TXT` then holds a TXT record with RDLENGTH 0,
/// which RFC 1035 does not allow and hickory's own decoder refuses ("unexpected record with length
/// 0 in non-update message"). Seed: `corpus/zone_loader/txt-without-strings`. Skipped until the
/// loader refuses such records; remove this check then.
fn known_txt_without_strings(zone: &zone::StaticZone) -> bool {
    zone.records
        .iter()
        .any(|r| matches!(&r.data, RData::TXT(txt) if txt.txt_data.is_empty()))
}

/// Four peers of the shared fixture, built once (each peer's key costs a scalar multiplication).
fn small_dump() -> &'static Dump {
    static DUMP: OnceLock<Dump> = OnceLock::new();
    DUMP.get_or_init(|| {
        let mut dump = sixpn_fuzz::dump();
        dump.peers.truncate(4);
        dump
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    if text.to_ascii_lowercase().contains("include") {
        return;
    }
    let origin = ORIGINS[usize::from(pick) % ORIGINS.len()];
    let Ok(parsed) = zone::parse_zone(text, None, origin) else {
        return;
    };
    assert_eq!(
        parsed.origin,
        parsed.origin.to_lowercase(),
        "origin not lowercase"
    );
    let soas: Vec<_> = parsed
        .records
        .iter()
        .filter(|r| matches!(r.data, RData::SOA(_)))
        .collect();
    assert_eq!(soas.len(), 1, "accepted a zone without exactly one SOA");
    assert_eq!(soas[0].name, parsed.origin, "SOA not at the apex");
    for record in &parsed.records {
        assert!(
            parsed.origin.zone_of(&record.name),
            "{} outside {}",
            record.name,
            parsed.origin
        );
        assert_eq!(record.dns_class, DNSClass::IN, "class");
        assert_eq!(
            record.name,
            record.name.to_lowercase(),
            "owner not lowercase"
        );
    }
    let _ = parsed.soa();
    if known_txt_without_strings(&parsed) {
        return;
    }

    // The zone as `serve` would use it.
    let Ok(zones) = zone::with_internal(vec![parsed.clone()]) else {
        return;
    };
    let settings = SnapshotSettings {
        ttl: 5,
        zones: Arc::from(zones),
        ..SnapshotSettings::default()
    };
    let handle = SnapshotHandle::new(Snapshot::build(small_dump(), &settings));
    let handler = Handler::new(handle.clone());
    let src = SocketAddr::new(sixpn_fuzz::SOURCES[0], 5353);
    let mut asks = vec![(parsed.origin.clone(), 6u16)];
    asks.extend(
        parsed
            .records
            .iter()
            .take(3)
            .map(|r| (r.name.clone(), u16::from(r.record_type()))),
    );
    for (name, qtype) in asks {
        let labels: Vec<Vec<u8>> = name.iter().map(<[u8]>::to_vec).collect();
        let q = sixpn_fuzz::query(
            1,
            [1, 0],
            &labels,
            qtype,
            Some(&sixpn_fuzz::opt_record(4096, 0, 0, &[])),
        );
        let mut out = vec![0u8; 4096];
        let _ = sixpn::fastpath::answer(handle.load().fast(), src.ip(), &q, &mut out);
        let answer = sixpn_fuzz::runtime()
            .block_on(sixpn::dns::udp::full_answer(
                &handler,
                q,
                src,
                Protocol::Udp,
            ))
            .expect("a query gets an answer");
        if let Err(e) = Message::from_vec(&answer) {
            panic!("answer for {name} type {qtype} does not parse: {e}: {answer:02x?}");
        }
    }
});
