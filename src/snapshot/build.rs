//! [`Snapshot::build`]: store rows and static zones → one name map per org.
//!
//! Everything a query needs is computed here, once per rebuild: owner names, records, answer
//! bytes, group membership, the `_peer.internal` TXT, empty non-terminals and the source-address
//! routing table.

use std::collections::{BTreeMap, HashMap};

use hickory_server::proto::rr::rdata::{AAAA, TXT};
use hickory_server::proto::rr::{Name, RData, Record};
use hickory_server::proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use ipnet::IpNet;

use super::name::{self, MAX_TXT_RDATA, wire_from_labels};
use super::zone::{self, StaticZone};
use super::{Entry, NameMap, RrSet, Snapshot, SnapshotSettings, View, Zone, prefix48};
use crate::model::{Org, Peer};
use crate::store::Dump;

/// A static name with its prebuilt record sets, cloned into every view.
struct StaticName {
    key: Box<[u8]>,
    zone: u16,
    rrsets: Vec<RrSet>,
}

/// Owner names shared by every view of one build.
struct Bases {
    peer: Name,
    group: Name,
    peer_list: Name,
    ns: Name,
    gateway: Name,
}

pub(super) fn build(dump: &Dump, settings: &SnapshotSettings) -> Snapshot {
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
    let bases = Bases {
        peer: name_of("_peer.internal."),
        group: name_of("_g.internal."),
        peer_list: name_of("_peer.internal."),
        ns: name_of("ns.internal."),
        gateway: name_of("gateway.internal."),
    };

    // Peers by org, in one pass.
    let org_index: HashMap<&str, usize, foldhash::fast::RandomState> = dump
        .orgs
        .iter()
        .enumerate()
        .map(|(i, o)| (o.slug.as_str(), i))
        .collect();
    let mut peers_by_org: Vec<Vec<&Peer>> = vec![Vec::new(); dump.orgs.len()];
    for peer in &dump.peers {
        if let Some(&i) = org_index.get(peer.org.as_str()) {
            peers_by_org[i].push(peer);
        }
    }

    let views: Vec<View> = dump
        .orgs
        .iter()
        .zip(peers_by_org)
        .map(|(org, peers)| build_view(org, peers, &statics, &bases, settings.ttl, internal))
        .collect();

    // Source routing: each org's /48, then the configured networks, most specific first.
    let mut by_prefix = HashMap::with_capacity_and_hasher(views.len(), Default::default());
    let mut sources: Vec<(IpNet, u32)> = Vec::new();
    for (i, org) in dump.orgs.iter().enumerate() {
        if org.prefix.prefix_len() == 48 {
            by_prefix.insert(prefix48(u128::from(org.prefix.network())), i as u32);
        } else {
            sources.push((IpNet::V6(org.prefix), i as u32));
        }
    }
    let mut missing_view_orgs = Vec::new();
    for view in &settings.views {
        match org_index.get(view.org.as_str()) {
            Some(&i) => sources.push((view.source.trunc(), i as u32)),
            None => missing_view_orgs.push(view.org.clone()),
        }
    }
    sources.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));

    let fast =
        crate::fastpath::Index::build(dump, &fast_settings(settings, &zones, &statics, internal));

    Snapshot {
        generation: dump.generation,
        ttl: settings.ttl,
        zones: zones.into_boxed_slice(),
        views: views.into_boxed_slice(),
        by_prefix,
        sources: sources.into_boxed_slice(),
        missing_view_orgs: missing_view_orgs.into_boxed_slice(),
        fast,
    }
}

/// What the fast path's index is built from: the same zones and their negative SOA bytes; every
/// static name (with the per-org `ns` and `gateway`) is left to the full handler, which merges
/// static and dynamic records.
fn fast_settings(
    settings: &SnapshotSettings,
    zones: &[Zone],
    statics: &[StaticName],
    internal: u16,
) -> crate::fastpath::IndexSettings {
    let mut fast_zones: Vec<crate::fastpath::FastZone> = zones
        .iter()
        .map(|z| crate::fastpath::FastZone {
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
    crate::fastpath::IndexSettings {
        ttl: settings.ttl,
        views: settings.views.clone(),
        zones: fast_zones,
        max_udp_payload: crate::fastpath::index::DEFAULT_MAX_UDP_PAYLOAD,
    }
}

fn name_of(s: &str) -> Name {
    Name::from_ascii(s).expect("valid literal")
}

fn build_view(
    org: &Org,
    mut peers: Vec<&Peer>,
    statics: &[StaticName],
    bases: &Bases,
    ttl: u32,
    internal: u16,
) -> View {
    if !peers.is_sorted_by(|a, b| a.name <= b.name) {
        peers.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    }
    let mut groups: HashMap<&str, Vec<&Peer>, foldhash::fast::RandomState> = HashMap::default();
    for peer in &peers {
        groups.entry(peer.group.as_str()).or_default().push(peer);
    }
    let mut names = NameMap::with_capacity_and_hasher(
        peers.len() + groups.len() + statics.len() + 8,
        Default::default(),
    );

    for peer in &peers {
        let label = peer.name.as_str().as_bytes();
        let Ok(owner) = bases.peer.prepend_label(label) else {
            continue; // A PeerName is always a valid label; nothing to answer otherwise.
        };
        let key = wire_from_labels(&[label, b"_peer", b"internal"]);
        let record = Record::from_rdata(owner, ttl, RData::AAAA(AAAA(peer.address)));
        insert(&mut names, key, internal, RrSet::new(vec![record]));
    }

    for (group, members) in &groups {
        let label = group.as_bytes();
        let Ok(owner) = bases.group.prepend_label(label) else {
            continue;
        };
        let records = members
            .iter()
            .map(|p| Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(p.address))))
            .collect();
        let key = wire_from_labels(&[label, b"_g", b"internal"]);
        insert(&mut names, key, internal, RrSet::new(records));
    }

    let strings = name::split_txt(peers.iter().map(|p| p.name.as_str()), MAX_TXT_RDATA);
    let peer_list_key = wire_from_labels(&[b"_peer", b"internal"]);
    if strings.is_empty() {
        ensure(&mut names, peer_list_key, internal);
    } else {
        let record =
            Record::from_rdata(bases.peer_list.clone(), ttl, RData::TXT(TXT::new(strings)));
        insert(
            &mut names,
            peer_list_key,
            internal,
            RrSet::new(vec![record]),
        );
    }
    ensure(
        &mut names,
        wire_from_labels(&[b"_g", b"internal"]),
        internal,
    );

    for (base, address) in [
        (&bases.ns, org.dns_addr()),
        (&bases.gateway, org.gateway_addr()),
    ] {
        if let Some(key) = name::wire_key(base) {
            let record = Record::from_rdata(base.clone(), ttl, RData::AAAA(AAAA(address)));
            insert(&mut names, key, internal, RrSet::new(vec![record]));
        }
    }

    for item in statics {
        match names.get_mut(&item.key) {
            Some(entry) => {
                for set in &item.rrsets {
                    entry.merge(set.clone());
                }
            }
            None => {
                names.insert(item.key.clone(), Entry::new(item.zone, item.rrsets.clone()));
            }
        }
    }

    View {
        org: org.slug.clone(),
        names,
    }
}

/// Adds `set` at `key`, merging with what is there.
fn insert(names: &mut NameMap, key: Box<[u8]>, zone: u16, set: RrSet) {
    match names.get_mut(&key) {
        Some(entry) => entry.merge(set),
        None => {
            names.insert(key, Entry::new(zone, vec![set]));
        }
    }
}

/// Makes sure `key` exists (as an empty non-terminal when it has no records).
fn ensure(names: &mut NameMap, key: Box<[u8]>, zone: u16) {
    names
        .entry(key)
        .or_insert_with(|| Entry::new(zone, Vec::new()));
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
    let origin_wire = name::wire_key(&zone.origin).unwrap_or_else(|| Box::from(&b"\0"[..]));
    let mut wire = origin_wire.to_vec();
    let mut answer = Vec::new();
    encode_answer(&soa_negative, &mut answer);
    // Replace the compression pointer with the full owner name.
    wire.extend_from_slice(&answer[2..]);
    Zone {
        origin: zone.origin.clone(),
        origin_wire,
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

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;
    use std::sync::Arc;

    use hickory_server::proto::rr::RecordType;

    use super::*;
    use crate::config::ViewConfig;
    use crate::model::Generation;

    fn org(slug: &str, n: u16) -> Org {
        Org {
            slug: slug.parse().unwrap(),
            prefix: format!("fdaa:0:{n:x}::/48").parse().unwrap(),
            created_at: 0,
        }
    }

    fn peer(org: &Org, name: &str, group: &str, host: u16) -> Peer {
        Peer {
            org: org.slug.clone(),
            name: name.parse().unwrap(),
            group: group.parse().unwrap(),
            region: "local".parse().unwrap(),
            pubkey: crate::wireguard::PrivateKey::from_bytes([7; 32]).public_key(),
            address: crate::model::prefix_host(org.prefix, (1u128 << 64) | u128::from(host)),
            token: "t".parse().unwrap(),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn key(s: &str) -> Box<[u8]> {
        name::wire_key(&Name::from_ascii(s).unwrap()).unwrap()
    }

    fn dump() -> Dump {
        let a = org("personal", 1);
        let b = org("acme", 2);
        Dump {
            generation: Generation(7),
            peers: vec![
                peer(&a, "node-2", "k8s", 2),
                peer(&a, "node-1", "k8s", 1),
                peer(&a, "db", "storage", 3),
                peer(&b, "web", "k8s", 1),
            ],
            orgs: vec![a, b],
        }
    }

    #[test]
    fn peers_groups_txt_and_ents() {
        let snap = Snapshot::build(&dump(), &SnapshotSettings::default());
        assert_eq!(snap.generation(), Generation(7));
        let view = snap.view_of(&"personal".parse().unwrap()).unwrap();

        let node1 = view.get(&key("node-1._peer.internal.")).unwrap();
        let aaaa = node1.rrset(RecordType::AAAA).unwrap();
        assert_eq!(aaaa.records().len(), 1);
        assert_eq!(aaaa.records()[0].ttl, 5);
        assert_eq!(aaaa.uniform_len(), 28);
        assert_eq!(&aaaa.wire()[..4], &[0xC0, 0x0C, 0, 28]);
        assert_eq!(
            &aaaa.wire()[12..],
            &"fdaa:0:1:1::1".parse::<Ipv6Addr>().unwrap().octets()
        );

        let k8s = view.get(&key("k8s._g.internal.")).unwrap();
        let members: Vec<_> = k8s
            .rrset(RecordType::AAAA)
            .unwrap()
            .records()
            .iter()
            .map(|r| r.data.clone())
            .collect();
        assert_eq!(members.len(), 2, "only this org's k8s members");
        assert_eq!(
            k8s.rrset(RecordType::AAAA)
                .unwrap()
                .wire_lens()
                .collect::<Vec<_>>(),
            [28, 28]
        );

        let list = view.get(&key("_peer.internal.")).unwrap();
        let RData::TXT(txt) = &list.rrset(RecordType::TXT).unwrap().records()[0].data else {
            panic!("not TXT")
        };
        assert_eq!(txt.to_string(), "db,node-1,node-2");

        let ent = view.get(&key("_g.internal.")).unwrap();
        assert!(ent.rrsets().is_empty());
        assert!(
            view.get(&key("web._peer.internal.")).is_none(),
            "other org's peer"
        );
        assert!(
            view.get(&key("internal."))
                .unwrap()
                .rrset(RecordType::SOA)
                .is_some()
        );
        let ns = view
            .get(&key("ns.internal."))
            .unwrap()
            .rrset(RecordType::AAAA)
            .unwrap();
        assert_eq!(
            ns.records()[0].data,
            RData::AAAA(AAAA("fdaa:0:1::3".parse().unwrap()))
        );
    }

    #[test]
    fn views_route_by_prefix_and_configured_source() {
        let mut settings = SnapshotSettings::default();
        settings.views.push(ViewConfig {
            source: "127.0.0.3/32".parse().unwrap(),
            org: "acme".parse().unwrap(),
        });
        settings.views.push(ViewConfig {
            source: "10.0.0.0/8".parse().unwrap(),
            org: "nope".parse().unwrap(),
        });
        let snap = Snapshot::build(&dump(), &settings);
        let org_at = |ip: &str| {
            snap.view_for(ip.parse().unwrap())
                .map(|v| v.org().to_string())
        };
        assert_eq!(org_at("127.0.0.1").as_deref(), Some("personal"));
        assert_eq!(
            org_at("127.0.0.3").as_deref(),
            Some("acme"),
            "most specific wins"
        );
        assert_eq!(
            org_at("::ffff:127.0.0.3").as_deref(),
            Some("acme"),
            "mapped v4"
        );
        assert_eq!(org_at("::1").as_deref(), Some("personal"));
        assert_eq!(org_at("fdaa:0:2:1::9").as_deref(), Some("acme"));
        assert_eq!(org_at("fdaa:0:1::3").as_deref(), Some("personal"));
        assert_eq!(org_at("fdaa:0:3::1"), None);
        assert_eq!(org_at("10.1.2.3"), None, "view of a missing org");
        assert_eq!(snap.missing_view_orgs(), &["nope".parse().unwrap()]);
    }

    #[test]
    fn static_records_merge_into_every_view_with_ents() {
        let text = "$ORIGIN internal.\n$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\n@ IN NS ns\n\
                    api.svc IN AAAA fdaa::10\napi.svc IN AAAA fdaa::11\nGateway IN TXT \"hi\"\n";
        let zone = zone::parse_zone(text, None, "internal").unwrap();
        let settings = SnapshotSettings {
            zones: Arc::from(vec![zone]),
            ..SnapshotSettings::default()
        };
        let snap = Snapshot::build(&dump(), &settings);
        for view in snap.views() {
            let api = view.get(&key("api.svc.internal.")).unwrap();
            assert_eq!(api.rrset(RecordType::AAAA).unwrap().records().len(), 2);
            assert!(
                view.get(&key("svc.internal.")).unwrap().rrsets().is_empty(),
                "ENT"
            );
            let gw = view.get(&key("gateway.internal.")).unwrap();
            assert!(gw.rrset(RecordType::TXT).is_some(), "static merged");
            assert!(gw.rrset(RecordType::AAAA).is_some(), "dynamic kept");
        }
        let zone = &snap.zones()[0];
        assert_eq!(zone.soa_negative().ttl, 5, "min(SOA TTL, minimum)");
        assert!(
            zone.soa_negative_wire()
                .starts_with(b"\x08internal\x00\x00\x06\x00\x01")
        );
        assert_eq!(snap.zone_for(&key("x.y.internal.")).map(|z| z.0), Some(0));
        assert!(snap.zone_for(&key("example.com.")).is_none());
    }

    #[test]
    fn empty_org_answers_nodata_for_the_peer_list() {
        let a = org("personal", 1);
        let dump = Dump {
            generation: Generation(1),
            orgs: vec![a],
            peers: vec![],
        };
        let snap = Snapshot::build(&dump, &SnapshotSettings::default());
        let list = snap.views()[0].get(&key("_peer.internal.")).unwrap();
        assert!(list.rrsets().is_empty());
    }
}
