//! Issue 9: the incrementally maintained snapshot answers exactly like one built from scratch.
//!
//! Random sequences of creates, re-keys, group moves, deletes, token deletes and org creates are
//! applied one change set at a time ([`Model::apply`] + [`Snapshot::apply`]); after every few steps
//! the result is compared, name by name and through both query paths, with a snapshot built from
//! scratch from the same rows ([`Snapshot::build`]). Seeds are fixed, so a failure reproduces.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::{Name, RecordType};
use sixpn::dns::Lookup;
use sixpn::fastpath::{self, Outcome};
use sixpn::model::{Change, ChangeSet, Generation, Org, Peer};
use sixpn::snapshot::{Base, Model, Snapshot, SnapshotSettings, Touched};
use sixpn::store::Dump;
use sixpn::wireguard::PrivateKey;

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const NAMES: usize = 40;
const GROUPS: [&str; 4] = ["web", "db", "k8s", "x"];
const TOKENS: [&str; 3] = ["a", "b", "c"];

fn org(i: usize) -> Org {
    Org {
        slug: format!("org-{i}").parse().unwrap(),
        prefix: format!("fdaa:0:{:x}::/48", i + 1).parse().unwrap(),
        created_at: 0,
    }
}

/// The reference: what the store would hold.
#[derive(Default)]
struct Rows {
    orgs: Vec<Org>,
    peers: BTreeMap<(String, String), Peer>,
    next_host: u64,
    next_key: u8,
}

impl Rows {
    fn dump(&self, generation: u64) -> Dump {
        Dump {
            generation: Generation(generation),
            orgs: self.orgs.clone(),
            peers: self.peers.values().cloned().collect(),
        }
    }

    /// One random change (possibly a no-op write that changes nothing).
    fn random_change(&mut self, rng: &mut Rng) -> Vec<Change> {
        let o = rng.below(self.orgs.len());
        let this = self.orgs[o].clone();
        let name = format!("peer-{}", rng.below(NAMES));
        let key = (this.slug.to_string(), name.clone());
        match rng.below(10) {
            0..=3 => {
                if self.peers.contains_key(&key) {
                    return Vec::new();
                }
                self.next_host += 1;
                self.next_key = self.next_key.wrapping_add(1).max(1);
                let peer = Peer {
                    org: this.slug.clone(),
                    name: name.parse().unwrap(),
                    group: GROUPS[rng.below(GROUPS.len())].parse().unwrap(),
                    region: "local".parse().unwrap(),
                    pubkey: PrivateKey::from_bytes([self.next_key; 32]).public_key(),
                    address: sixpn::model::prefix_host(
                        this.prefix,
                        (1u128 << 64) | u128::from(self.next_host),
                    ),
                    token: TOKENS[rng.below(TOKENS.len())].parse().unwrap(),
                    created_at: 0,
                    updated_at: 0,
                    key_expires_at: None,
                };
                self.peers.insert(key, peer.clone());
                vec![Change::PeerUpserted(peer)]
            }
            4 | 5 => match self.peers.get_mut(&key) {
                Some(peer) => {
                    // A re-key, and now and then a move to another group.
                    self.next_key = self.next_key.wrapping_add(1).max(1);
                    peer.pubkey = PrivateKey::from_bytes([self.next_key; 32]).public_key();
                    if rng.below(3) == 0 {
                        peer.group = GROUPS[rng.below(GROUPS.len())].parse().unwrap();
                    }
                    vec![Change::PeerUpserted(peer.clone())]
                }
                None => Vec::new(),
            },
            6 | 7 => match self.peers.remove(&key) {
                Some(peer) => vec![Change::PeerRemoved(peer)],
                None => Vec::new(),
            },
            8 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let gone: Vec<_> = self
                    .peers
                    .iter()
                    .filter(|(k, p)| k.0 == this.slug.as_str() && p.token.as_str() == token)
                    .map(|(k, _)| k.clone())
                    .collect();
                gone.iter()
                    .map(|k| Change::PeerRemoved(self.peers.remove(k).unwrap()))
                    .collect()
            }
            _ => {
                if self.orgs.len() >= 6 {
                    return Vec::new();
                }
                let new = org(self.orgs.len());
                self.orgs.push(new.clone());
                vec![Change::OrgCreated(new)]
            }
        }
    }
}

fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// Every name worth asking about in `rows`' orgs, and what sources ask.
fn names() -> Vec<String> {
    let mut out: Vec<String> = (0..NAMES)
        .map(|i| format!("peer-{i}._peer.internal."))
        .collect();
    out.extend(GROUPS.iter().map(|g| format!("{g}._g.internal.")));
    out.extend(
        [
            "_peer.internal.",
            "_g.internal.",
            "ns.internal.",
            "gateway.internal.",
            "internal.",
            "nope.internal.",
            "example.com.",
        ]
        .map(String::from),
    );
    out
}

fn sources(rows: &Rows) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = rows
        .orgs
        .iter()
        .map(|o| IpAddr::V6(sixpn::model::prefix_host(o.prefix, 0x99)))
        .collect();
    out.push("127.0.0.1".parse().unwrap());
    out.push("fdaa:0:ff::1".parse::<Ipv6Addr>().unwrap().into());
    out
}

/// Asserts that `patched` answers every question exactly as `fresh` does.
fn assert_same(patched: &Snapshot, fresh: &Snapshot, rows: &Rows, step: usize) {
    assert_eq!(patched.generation(), fresh.generation());
    let mut out_a = vec![0u8; 4096];
    let mut out_b = vec![0u8; 4096];
    for src in sources(rows) {
        for name in names() {
            let qname = Name::from_ascii(&name).unwrap();
            for (qtype, rtype) in [
                (28u16, RecordType::AAAA),
                (16, RecordType::TXT),
                (1, RecordType::A),
            ] {
                let ctx = format!("step {step}: {src} {name} {rtype}");
                // The fast path. Group answers rotate, and the patched snapshot's counters have
                // moved: compare their members in base order instead of the bytes.
                let wire = sixpn::snapshot::name::wire_key(&qname).unwrap();
                let hit_a = patched.view_for(src).and_then(|v| patched.get(v, &wire));
                let hit_b = fresh.view_for(src).and_then(|v| fresh.get(v, &wire));
                assert_eq!(
                    hit_a.map(|h| (
                        h.addrs().to_vec(),
                        h.txt().to_vec(),
                        h.is_static(),
                        h.zone()
                    )),
                    hit_b.map(|h| (
                        h.addrs().to_vec(),
                        h.txt().to_vec(),
                        h.is_static(),
                        h.zone()
                    )),
                    "{ctx}: entry"
                );
                if !name.contains("._g.") {
                    let q = query(&name, qtype);
                    let a = fastpath::answer(patched.fast(), src, &q, &mut out_a);
                    let b = fastpath::answer(fresh.fast(), src, &q, &mut out_b);
                    assert_eq!(a, b, "{ctx}: fast outcome");
                    if let Outcome::Reply(n) = a {
                        assert_eq!(out_a[..n], out_b[..n], "{ctx}: fast bytes");
                    }
                }
                // The full path.
                let la = sixpn::dns::lookup(patched, src, &qname, rtype);
                let lb = sixpn::dns::lookup(fresh, src, &qname, rtype);
                assert_eq!(
                    summary(patched, &la),
                    summary(fresh, &lb),
                    "{ctx}: full path"
                );
            }
        }
    }
}

fn summary(snapshot: &Snapshot, lookup: &Lookup<'_>) -> String {
    match lookup {
        Lookup::Answer(set) => format!("answer {:?}", set.records(snapshot.ttl(), 0, set.len())),
        other => format!("{other:?}"),
    }
}

fn run(seed: u64, steps: usize, check_every: usize) {
    let mut rng = Rng(seed);
    let mut rows = Rows::default();
    rows.orgs.push(org(0));
    rows.orgs.push(org(1));
    let settings = SnapshotSettings::default();
    let mut settings_views = settings.clone();
    settings_views.views.push(sixpn::config::ViewConfig {
        source: "fdaa:0:ff::/48".parse().unwrap(),
        org: "org-3".parse().unwrap(),
    });
    let base = Base::new(&settings_views);
    let mut generation = 1;
    let mut model = Model::from_dump(&rows.dump(generation));
    let mut patched = Snapshot::from_model(Arc::clone(&base), &model);
    for step in 0..steps {
        // A batch of one to three change sets, as the feed hands them out.
        let mut touched = Touched::default();
        for _ in 0..=rng.below(3) {
            let changes = rows.random_change(&mut rng);
            if changes.is_empty() {
                continue;
            }
            generation += 1;
            let set = ChangeSet {
                generation: Generation(generation),
                changes,
            };
            model.apply(set.generation, &set.changes, &mut touched);
        }
        patched = patched.apply(&model, &touched);
        if step % check_every == 0 || step + 1 == steps {
            let fresh = Snapshot::build(&rows.dump(model.generation().0), &settings_views);
            assert_same(&patched, &fresh, &rows, step);
        }
    }
}

#[test]
fn issue9_patched_snapshot_equals_a_fresh_build() {
    for seed in 1..=12u64 {
        run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), 300, 7);
    }
}

#[test]
fn issue9_large_org_patches_stay_equal() {
    // Enough peers that every shard holds several names, and groups past one packet.
    let mut rows = Rows::default();
    rows.orgs.push(org(0));
    let big = org(0);
    for i in 0..20_000u64 {
        let peer = Peer {
            org: big.slug.clone(),
            name: format!("n{i}").parse().unwrap(),
            group: GROUPS[(i % 2) as usize].parse().unwrap(),
            region: "local".parse().unwrap(),
            pubkey: PrivateKey::from_bytes([7; 32]).public_key(),
            address: sixpn::model::prefix_host(big.prefix, (1u128 << 64) | u128::from(i + 1)),
            token: "a".parse().unwrap(),
            created_at: 0,
            updated_at: 0,
            key_expires_at: None,
        };
        rows.peers
            .insert((big.slug.to_string(), peer.name.to_string()), peer);
    }
    rows.next_host = 20_001;
    let settings = SnapshotSettings::default();
    let mut model = Model::from_dump(&rows.dump(1));
    let mut patched = Snapshot::build(&rows.dump(1), &settings);
    let mut rng = Rng(42);
    for g in 2..200u64 {
        let mut touched = Touched::default();
        let changes = rows.random_change(&mut rng);
        model.apply(Generation(g), &changes, &mut touched);
        patched = patched.apply(&model, &touched);
    }
    let fresh = Snapshot::build(&rows.dump(model.generation().0), &settings);
    assert_same(&patched, &fresh, &rows, 200);
    // Every peer name, not only the small pool.
    let src: IpAddr = IpAddr::V6(sixpn::model::prefix_host(big.prefix, 9));
    for key in rows.peers.keys().step_by(97) {
        let wire =
            sixpn::snapshot::name::wire_from_labels(&[key.1.as_bytes(), b"_peer", b"internal"]);
        let a = patched
            .get(patched.view_for(src).unwrap(), &wire)
            .map(|h| h.addrs().to_vec());
        let b = fresh
            .get(fresh.view_for(src).unwrap(), &wire)
            .map(|h| h.addrs().to_vec());
        assert_eq!(a, b, "{}", key.1);
        assert!(a.is_some());
    }
}
