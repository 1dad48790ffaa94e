//! The DNS model: what every org's names are, kept up to date one change at a time.
//!
//! [`Model`] is the only input the answer table ([`super::Index`]) is derived from, both
//! when it is built whole (start, resync) and when it is patched ([`Model::apply`] reports which
//! names a change touched; the index rebuilds only the pieces that hold them). Because both ways
//! read the same model through the same [`Model::content`], a patched table answers exactly like
//! one built from scratch.
//!
//! Per org it keeps the peers by name and each group's members by address, in ordered maps, so a
//! change costs O(log n) here and the bounded answers are cheap to recompute:
//! - a group's answer holds its first [`MAX_GROUP_ANSWER`] members by address, that is the oldest
//!   (more never fit a DNS message, not even over TCP);
//! - the `_peer.internal` TXT holds the names, in order, that fit [`MAX_TXT_RDATA`] bytes.
//!
//! This module never touches sockets or hickory types.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;

use super::name::{MAX_TXT_RDATA, split_txt_into};
use crate::model::{Change, Generation, GroupName, Org, OrgSlug, PeerName};
use crate::store::Dump;

/// The most members a group's answer holds: as many AAAA records as the largest DNS message
/// (65,535 bytes over TCP) can carry. A bigger group answers with its oldest members (the lowest
/// addresses).
pub const MAX_GROUP_ANSWER: usize = 2_340;

/// A peer name as the model keeps it: inline up to 24 bytes (nearly every name), so a million
/// peers cost no million small allocations.
type Name = compact_str::CompactString;

/// One org's peers and groups.
///
/// Compact on purpose (it holds one entry per peer, twice): names inline, groups interned as
/// numbers, addresses as bytes.
#[derive(Debug, Clone, Default)]
pub struct OrgNames {
    org: Option<Org>,
    /// Peer name → its group (by id) and address.
    peers: BTreeMap<Name, Member>,
    /// (group id, address): each group's members in address order, which is creation order
    /// (addresses are handed out counting up).
    members: std::collections::BTreeSet<(u32, [u8; 16])>,
    /// Group name → id; ids are never reused while the model lives.
    group_ids: HashMap<GroupName, u32, foldhash::fast::RandomState>,
    /// Id → group name and member count.
    groups: Vec<(GroupName, u32)>,
    /// Health-aware orgs (`[groups] healthy_only`): the members seen alive within the window,
    /// by address, with their group. `None`: not health-aware, or no report yet.
    healthy: Option<HashMap<[u8; 16], u32, foldhash::fast::RandomState>>,
    /// Key deadlines (unix seconds) of the peers that have one (issue 23). The change feed
    /// times them; the model keeps them only so that the saved state leaves out, when read
    /// back, the peers whose key expired meanwhile.
    expiring: HashMap<Name, i64, foldhash::fast::RandomState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    group: u32,
    address: [u8; 16],
}

/// What [`OrgNames::remove`] took out.
struct Removed {
    group: GroupName,
    address: Ipv6Addr,
}

impl OrgNames {
    /// The org.
    pub fn org(&self) -> &Org {
        self.org.as_ref().expect("set when the org is added")
    }

    /// The number of peers.
    pub fn n_peers(&self) -> usize {
        self.peers.len()
    }
}

/// A name whose answer a change may have changed, in one view (an org, by index).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NameKey {
    /// `<peer>._peer.internal`.
    Peer(u32, PeerName),
    /// `<group>._g.internal`.
    Group(u32, GroupName),
    /// `_peer.internal` (the TXT list of names).
    PeerList(u32),
    /// `_g.internal` (an empty non-terminal).
    Groups(u32),
}

impl NameKey {
    /// The view the name belongs to.
    pub fn view(&self) -> u32 {
        match self {
            NameKey::Peer(v, _) | NameKey::Group(v, _) => *v,
            NameKey::PeerList(v) | NameKey::Groups(v) => *v,
        }
    }
}

/// What a name answers, derived from the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// One AAAA.
    Peer(Ipv6Addr),
    /// AAAA records, in base order (answers rotate).
    Group(Vec<[u8; 16]>),
    /// One TXT record: this RDATA.
    Txt(Vec<u8>),
    /// No records: NODATA for every type (an empty non-terminal).
    Empty,
}

/// What one batch of changes touched: names, and whether the set of orgs changed.
#[derive(Debug, Default)]
pub struct Touched {
    /// Names whose answers may differ now (present or gone).
    pub names: Vec<NameKey>,
    /// Orgs were added: view routing and per-view static names must be redone.
    pub orgs_added: bool,
}

/// Every org's names at one generation. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Model {
    generation: Generation,
    orgs: Vec<OrgNames>,
    by_slug: HashMap<OrgSlug, u32, foldhash::fast::RandomState>,
}

impl Model {
    /// The model of a full dump.
    pub fn from_dump(dump: &Dump) -> Model {
        let mut model = Model {
            generation: dump.generation,
            ..Model::default()
        };
        for org in &dump.orgs {
            model.add_org(org.clone());
        }
        let mut batches: Vec<Vec<(Name, Member)>> = vec![Vec::new(); model.orgs.len()];
        for peer in &dump.peers {
            if let Some(&view) = model.by_slug.get(&peer.org) {
                let org = &mut model.orgs[view as usize];
                let member = Member {
                    group: org.group_id(&peer.group),
                    address: peer.address.octets(),
                };
                batches[view as usize].push((Name::new(peer.name.as_str()), member));
                if let Some(deadline) = peer.key_expires_at {
                    org.expiring.insert(Name::new(peer.name.as_str()), deadline);
                }
            }
        }
        for (org, batch) in model.orgs.iter_mut().zip(batches) {
            org.fill(batch);
        }
        model
    }

    /// The generation the model holds.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The orgs, in view order (an org's view index never changes while the model lives).
    pub fn orgs(&self) -> &[OrgNames] {
        &self.orgs
    }

    /// The view index of `org`.
    pub fn view_of(&self, org: &OrgSlug) -> Option<u32> {
        self.by_slug.get(org).copied()
    }

    /// Every name the model holds, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = NameKey> + '_ {
        self.orgs.iter().enumerate().flat_map(|(v, o)| {
            let v = v as u32;
            let peers = o
                .peers
                .keys()
                .filter_map(move |p| Some(NameKey::Peer(v, p.parse().ok()?)));
            let groups = o
                .groups
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(move |(g, _)| NameKey::Group(v, g.clone()));
            [NameKey::PeerList(v), NameKey::Groups(v)]
                .into_iter()
                .chain(peers)
                .chain(groups)
        })
    }

    /// Applies one change set's changes and moves to its generation, recording what they touched.
    pub fn apply(&mut self, generation: Generation, changes: &[Change], touched: &mut Touched) {
        for change in changes {
            match change {
                Change::OrgCreated(org) => {
                    if !self.by_slug.contains_key(&org.slug) {
                        self.add_org(org.clone());
                        touched.orgs_added = true;
                    }
                }
                Change::PeerUpserted(peer) => {
                    let Some(&v) = self.by_slug.get(&peer.org) else {
                        continue;
                    };
                    let org = &mut self.orgs[v as usize];
                    if let Some(old) = org.remove(&peer.name) {
                        if old.group != peer.group || old.address != peer.address {
                            touched.names.push(NameKey::Group(v, old.group));
                        } else {
                            // A re-key: nothing DNS serves changed.
                            org.insert(&peer.name, &peer.group, peer.address);
                            org.set_expiry(&peer.name, peer.key_expires_at);
                            continue;
                        }
                    } else {
                        touched.names.push(NameKey::PeerList(v));
                    }
                    org.insert(&peer.name, &peer.group, peer.address);
                    org.set_expiry(&peer.name, peer.key_expires_at);
                    touched.names.push(NameKey::Peer(v, peer.name.clone()));
                    touched.names.push(NameKey::Group(v, peer.group.clone()));
                }
                Change::PeerRemoved(peer) => {
                    let Some(&v) = self.by_slug.get(&peer.org) else {
                        continue;
                    };
                    if let Some(old) = self.orgs[v as usize].remove(&peer.name) {
                        touched.names.push(NameKey::Peer(v, peer.name.clone()));
                        touched.names.push(NameKey::Group(v, old.group));
                        touched.names.push(NameKey::PeerList(v));
                    }
                }
            }
        }
        self.generation = generation;
    }

    /// What `key` answers now; `None` when the name does not exist.
    pub fn content(&self, key: &NameKey) -> Option<Content> {
        let org = self.orgs.get(key.view() as usize)?;
        match key {
            NameKey::Peer(_, name) => org
                .peers
                .get(name.as_str())
                .map(|m| Content::Peer(Ipv6Addr::from(m.address))),
            NameKey::Group(_, group) => {
                let id = *org.group_ids.get(group)?;
                if org.groups[id as usize].1 == 0 {
                    return None;
                }
                let members = org.members.range((id, [0; 16])..(id + 1, [0; 16]));
                if let Some(healthy) = &org.healthy {
                    let live: Vec<[u8; 16]> = members
                        .clone()
                        .filter(|(_, a)| healthy.contains_key(a))
                        .take(MAX_GROUP_ANSWER)
                        .map(|&(_, a)| a)
                        .collect();
                    // No member healthy: fail open, every member (see `set_health`).
                    if !live.is_empty() {
                        return Some(Content::Group(live));
                    }
                }
                Some(Content::Group(
                    members.take(MAX_GROUP_ANSWER).map(|&(_, a)| a).collect(),
                ))
            }
            NameKey::PeerList(_) if org.peers.is_empty() => Some(Content::Empty),
            NameKey::PeerList(_) => {
                let mut rdata = Vec::new();
                split_txt_into(
                    org.peers.keys().map(Name::as_str),
                    MAX_TXT_RDATA,
                    &mut rdata,
                );
                Some(Content::Txt(rdata))
            }
            NameKey::Groups(_) => Some(Content::Empty),
        }
    }

    /// Applies a health report: `seen` holds every peer a gateway saw alive within the window
    /// (org, group, address); orgs for which `aware` holds list only those in their group
    /// answers from now on. Records the groups whose answers changed.
    ///
    /// A group none of whose members is healthy answers with all of them (fail open, as load
    /// balancers do in "panic mode"): a gateway that stops reporting, or an outage of every
    /// node at once, must not empty a group that HAProxy would then mark down whole.
    pub fn set_health(
        &mut self,
        aware: impl Fn(&str) -> bool,
        seen: &[(OrgSlug, GroupName, Ipv6Addr)],
        touched: &mut Touched,
    ) {
        let mut by_org: HashMap<&OrgSlug, Vec<(&GroupName, [u8; 16])>> = HashMap::new();
        for (org, group, address) in seen {
            by_org
                .entry(org)
                .or_default()
                .push((group, address.octets()));
        }
        for (v, org) in self.orgs.iter_mut().enumerate() {
            let v = v as u32;
            let slug = &org.org().slug;
            let next = aware(slug.as_str()).then(|| {
                let mut live: HashMap<[u8; 16], u32, foldhash::fast::RandomState> =
                    HashMap::default();
                for (group, address) in by_org.get(slug).into_iter().flatten() {
                    if let Some(&id) = org.group_ids.get(*group) {
                        live.insert(*address, id);
                    }
                }
                live
            });
            let mut changed: Vec<u32> = Vec::new();
            match (&org.healthy, &next) {
                (None, None) => {}
                (Some(_), None) | (None, Some(_)) => changed.extend(0..org.groups.len() as u32),
                (Some(old), Some(new)) => {
                    for (a, g) in new {
                        if old.get(a) != Some(g) {
                            changed.push(*g);
                        }
                    }
                    for (a, g) in old {
                        if new.get(a) != Some(g) {
                            changed.push(*g);
                        }
                    }
                }
            }
            changed.sort_unstable();
            changed.dedup();
            for id in changed {
                let (group, n) = &org.groups[id as usize];
                if *n > 0 {
                    touched.names.push(NameKey::Group(v, group.clone()));
                }
            }
            org.healthy = next;
        }
    }

    /// Takes over `old`'s health reports (a full reload builds a new model; the health of its
    /// members is not in the store's dump but in the last report).
    pub fn inherit_health(&mut self, old: &Model) {
        for org in &mut self.orgs {
            let Some(&v) = old.by_slug.get(&org.org().slug) else {
                continue;
            };
            let before = &old.orgs[v as usize];
            let Some(healthy) = &before.healthy else {
                continue;
            };
            let mut live = HashMap::default();
            for (a, g) in healthy {
                if let Some(&id) = org.group_ids.get(&before.groups[*g as usize].0) {
                    live.insert(*a, id);
                }
            }
            org.healthy = Some(live);
        }
    }

    fn add_org(&mut self, org: Org) {
        let view = self.orgs.len() as u32;
        self.by_slug.insert(org.slug.clone(), view);
        self.orgs.push(OrgNames {
            org: Some(org),
            ..OrgNames::default()
        });
    }
}

impl OrgNames {
    /// `group`'s id, interning it when new.
    fn group_id(&mut self, group: &GroupName) -> u32 {
        let next = self.groups.len() as u32;
        let id = *self.group_ids.entry(group.clone()).or_insert(next);
        if id == next {
            self.groups.push((group.clone(), 0));
        }
        id
    }

    /// Fills an org that holds no peers yet with `batch` (group ids from [`Self::group_id`]);
    /// a later entry of a name wins, as with one [`Self::insert`] after another.
    ///
    /// Built in bulk, the ordered maps come out with full nodes: at a million peers that is
    /// about a third less memory than inserting one by one in the store's order.
    fn fill(&mut self, batch: Vec<(Name, Member)>) {
        debug_assert!(self.peers.is_empty());
        // `collect` sorts stably and keeps the last of equal keys.
        self.peers = batch.into_iter().collect();
        for m in self.peers.values() {
            self.groups[m.group as usize].1 += 1;
        }
        self.members = self.peers.values().map(|m| (m.group, m.address)).collect();
    }

    fn insert(&mut self, name: &PeerName, group: &GroupName, address: Ipv6Addr) {
        let id = self.group_id(group);
        let name = Name::new(name.as_str());
        let member = Member {
            group: id,
            address: address.octets(),
        };
        if let Some(old) = self.peers.insert(name, member) {
            self.members.remove(&(old.group, old.address));
            self.groups[old.group as usize].1 -= 1;
        }
        self.members.insert((id, member.address));
        self.groups[id as usize].1 += 1;
    }

    /// Records `name`'s key deadline, or that it has none.
    fn set_expiry(&mut self, name: &PeerName, deadline: Option<i64>) {
        match deadline {
            Some(t) => {
                self.expiring.insert(Name::new(name.as_str()), t);
            }
            None => {
                self.expiring.remove(name.as_str());
            }
        }
    }

    fn remove(&mut self, name: &PeerName) -> Option<Removed> {
        self.expiring.remove(name.as_str());
        let old = self.peers.remove(name.as_str())?;
        self.members.remove(&(old.group, old.address));
        let group = &mut self.groups[old.group as usize];
        group.1 -= 1;
        Some(Removed {
            group: group.0.clone(),
            address: Ipv6Addr::from(old.address),
        })
    }
}

/// The on-disk form of a model (the last-known-good DNS state, see `snapshot::disk`): a magic,
/// a version, the generation, the store's identity, then per org its slug, prefix and creation
/// time and its peers (name, group, address, and since version 2 the key deadline, 0: none), and
/// a SHA-256 of everything before it. Read back, a peer whose key expired meanwhile is left out.
pub mod encoding {
    use super::*;

    const MAGIC: &[u8; 8] = b"SIXPNDNS";
    const VERSION: u32 = 2;

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }

    impl Model {
        /// Encodes the model, tagged with the identity of the store it came from.
        pub fn encode(&self, identity: &str) -> Vec<u8> {
            seal(self.encode_unsealed(identity))
        }

        /// [`Model::encode`] without its checksum (see [`seal`]): the part that needs the model,
        /// so the rest can run elsewhere.
        pub fn encode_unsealed(&self, identity: &str) -> Vec<u8> {
            let n_peers: usize = self.orgs.iter().map(|o| o.peers.len()).sum();
            let mut out = Vec::with_capacity(64 + n_peers * 40);
            out.extend_from_slice(MAGIC);
            out.extend_from_slice(&VERSION.to_le_bytes());
            out.extend_from_slice(&self.generation.0.to_le_bytes());
            out.extend_from_slice(&(identity.len() as u32).to_le_bytes());
            out.extend_from_slice(identity.as_bytes());
            out.extend_from_slice(&(self.orgs.len() as u32).to_le_bytes());
            for org in &self.orgs {
                let o = org.org();
                put_str(&mut out, o.slug.as_str());
                out.extend_from_slice(&o.prefix.network().octets());
                out.push(o.prefix.prefix_len());
                out.extend_from_slice(&o.created_at.to_le_bytes());
                out.extend_from_slice(&(org.peers.len() as u64).to_le_bytes());
                for (name, member) in &org.peers {
                    put_str(&mut out, name.as_str());
                    put_str(&mut out, org.groups[member.group as usize].0.as_str());
                    out.extend_from_slice(&member.address);
                    let deadline = org.expiring.get(name).copied().unwrap_or(0);
                    out.extend_from_slice(&deadline.to_le_bytes());
                }
            }
            out
        }

        /// Decodes what [`Model::encode`] wrote; returns the model and the store identity.
        ///
        /// # Errors
        /// A message saying what is wrong (truncated, corrupted, another version).
        pub fn decode(bytes: &[u8]) -> Result<(Model, String), String> {
            use sha2::Digest as _;
            if bytes.len() < MAGIC.len() + 32 || &bytes[..MAGIC.len()] != MAGIC {
                return Err("not a sixpn DNS state file".into());
            }
            let (body, digest) = bytes.split_at(bytes.len() - 32);
            if sha2::Sha256::digest(body)[..] != *digest {
                return Err("checksum mismatch (truncated or corrupted)".into());
            }
            let mut r = Reader {
                bytes: body,
                at: MAGIC.len(),
            };
            let version = u32::from_le_bytes(r.take()?);
            // Version 1 had no key deadlines.
            if version != VERSION && version != 1 {
                return Err(format!("version {version}, expected {VERSION}"));
            }
            let now = crate::model::now_unix();
            let generation = Generation(u64::from_le_bytes(r.take()?));
            let id_len = u32::from_le_bytes(r.take()?) as usize;
            let identity = String::from_utf8(r.bytes(id_len)?.to_vec())
                .map_err(|_| "identity is not UTF-8".to_string())?;
            let n_orgs = u32::from_le_bytes(r.take()?);
            let mut model = Model {
                generation,
                ..Model::default()
            };
            for _ in 0..n_orgs {
                let slug: OrgSlug = r.label()?;
                let network = Ipv6Addr::from(r.take::<16>()?);
                let len = r.take::<1>()?[0];
                let prefix = ipnet::Ipv6Net::new(network, len).map_err(|e| e.to_string())?;
                let created_at = i64::from_le_bytes(r.take()?);
                let view = model.orgs.len();
                model.add_org(Org {
                    slug,
                    prefix,
                    created_at,
                });
                let n_peers = u64::from_le_bytes(r.take()?);
                let org = &mut model.orgs[view];
                // Not trusting the count for the capacity: a corrupted one fails below.
                let mut batch = Vec::with_capacity(n_peers.min(1 << 20) as usize);
                for _ in 0..n_peers {
                    let name: PeerName = r.label()?;
                    let group: GroupName = r.label()?;
                    let member = Member {
                        group: org.group_id(&group),
                        address: r.take::<16>()?,
                    };
                    let deadline = if version >= 2 {
                        i64::from_le_bytes(r.take()?)
                    } else {
                        0
                    };
                    if deadline != 0 {
                        if deadline <= now {
                            // Expired since it was saved: not served.
                            continue;
                        }
                        org.expiring.insert(Name::new(name.as_str()), deadline);
                    }
                    batch.push((Name::new(name.as_str()), member));
                }
                org.fill(batch);
            }
            if r.at != body.len() {
                return Err("trailing bytes".into());
            }
            Ok((model, identity))
        }
    }

    /// Appends the checksum to what [`Model::encode_unsealed`] wrote.
    pub fn seal(mut out: Vec<u8>) -> Vec<u8> {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    struct Reader<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl<'a> Reader<'a> {
        fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
            let out = self
                .bytes
                .get(self.at..self.at + n)
                .ok_or_else(|| "truncated".to_string())?;
            self.at += n;
            Ok(out)
        }

        fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
            let mut out = [0u8; N];
            out.copy_from_slice(self.bytes(N)?);
            Ok(out)
        }

        fn label<T: std::str::FromStr>(&mut self) -> Result<T, String>
        where
            T::Err: std::fmt::Display,
        {
            let len = usize::from(self.take::<1>()?[0]);
            let s = std::str::from_utf8(self.bytes(len)?).map_err(|e| e.to_string())?;
            s.parse().map_err(|e: T::Err| format!("{s:?}: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Peer;

    #[test]
    fn encode_decode_round_trips_and_detects_damage() {
        let org = Org {
            slug: "acme".parse().unwrap(),
            prefix: "fdaa:1:2::/48".parse().unwrap(),
            created_at: 42,
        };
        let peer = Peer {
            org: org.slug.clone(),
            name: "node-1".parse().unwrap(),
            group: "web".parse().unwrap(),
            region: "local".parse().unwrap(),
            pubkey: crate::wireguard::PrivateKey::from_bytes([3; 32]).public_key(),
            address: "fdaa:1:2:1::1".parse().unwrap(),
            token: "t".parse().unwrap(),
            created_at: 0,
            updated_at: 0,
            key_expires_at: None,
        };
        let dump = Dump {
            generation: Generation(9),
            orgs: vec![org],
            peers: vec![peer],
        };
        let model = Model::from_dump(&dump);
        let bytes = model.encode("db-1");
        let (back, identity) = Model::decode(&bytes).unwrap();
        assert_eq!(identity, "db-1");
        assert_eq!(back.generation(), Generation(9));
        let key = NameKey::Peer(0, "node-1".parse().unwrap());
        assert_eq!(back.content(&key), model.content(&key));
        assert_eq!(back.keys().count(), model.keys().count());
        let mut damaged = bytes.clone();
        damaged[20] ^= 1;
        assert!(Model::decode(&damaged).is_err());
        assert!(Model::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn the_saved_state_leaves_out_keys_that_expired_meanwhile() {
        let org = Org {
            slug: "acme".parse().unwrap(),
            prefix: "fdaa:1:2::/48".parse().unwrap(),
            created_at: 1,
        };
        let now = crate::model::now_unix();
        let mut later = peer(&org, 1, "web");
        later.key_expires_at = Some(now + 3_600);
        let mut past = peer(&org, 2, "web");
        past.key_expires_at = Some(now - 1);
        let lasting = peer(&org, 3, "web");
        let mut model = Model::from_dump(&Dump {
            generation: Generation(1),
            orgs: vec![org.clone()],
            peers: vec![later, past.clone(), lasting],
        });
        assert_eq!(group_members(&model, 0, "web"), [1, 2, 3]);
        let (back, _) = Model::decode(&model.encode("db")).unwrap();
        assert_eq!(group_members(&back, 0, "web"), [1, 3]);
        // A re-key without expiry clears the deadline; the peer is kept on the way back.
        past.key_expires_at = None;
        model.apply(
            Generation(2),
            &[Change::PeerUpserted(past)],
            &mut Touched::default(),
        );
        let (back, _) = Model::decode(&model.encode("db")).unwrap();
        assert_eq!(group_members(&back, 0, "web"), [1, 2, 3]);
    }

    fn peer(org: &Org, n: u8, group: &str) -> Peer {
        Peer {
            org: org.slug.clone(),
            name: format!("node-{n}").parse().unwrap(),
            group: group.parse().unwrap(),
            region: "local".parse().unwrap(),
            pubkey: crate::wireguard::PrivateKey::from_bytes([n; 32]).public_key(),
            address: format!("fdaa:1:2:1::{n}").parse().unwrap(),
            token: "t".parse().unwrap(),
            created_at: 0,
            updated_at: 0,
            key_expires_at: None,
        }
    }

    fn group_members(model: &Model, view: u32, group: &str) -> Vec<u8> {
        match model.content(&NameKey::Group(view, group.parse().unwrap())) {
            Some(Content::Group(addrs)) => addrs.iter().map(|a| a[15]).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bulk_fill_equals_inserting_one_by_one() {
        let org = Org {
            slug: "acme".parse().unwrap(),
            prefix: "fdaa:1:2::/48".parse().unwrap(),
            created_at: 1,
        };
        // A duplicate name: the later row wins, as with inserts.
        let mut moved = peer(&org, 2, "db");
        moved.address = "fdaa:1:2:1::9".parse().unwrap();
        let peers = vec![
            peer(&org, 3, "web"),
            peer(&org, 1, "web"),
            peer(&org, 2, "web"),
            moved,
        ];
        let dump = Dump {
            generation: Generation(1),
            orgs: vec![org.clone()],
            peers: peers.clone(),
        };
        let bulk = Model::from_dump(&dump);
        let mut one_by_one = Model::default();
        one_by_one.add_org(org);
        for p in &peers {
            one_by_one.orgs[0].insert(&p.name, &p.group, p.address);
        }
        let mut keys: Vec<NameKey> = bulk.keys().collect();
        keys.sort();
        let mut other: Vec<NameKey> = one_by_one.keys().collect();
        other.sort();
        assert_eq!(keys, other);
        for key in &keys {
            assert_eq!(bulk.content(key), one_by_one.content(key), "{key:?}");
        }
        assert_eq!(group_members(&bulk, 0, "web"), [1, 3]);
        assert_eq!(group_members(&bulk, 0, "db"), [9]);
    }

    #[test]
    fn health_aware_groups_list_live_members_and_fail_open() {
        let acme = Org {
            slug: "acme".parse().unwrap(),
            prefix: "fdaa:1:2::/48".parse().unwrap(),
            created_at: 1,
        };
        let other = Org {
            slug: "other".parse().unwrap(),
            prefix: "fdaa:1:3::/48".parse().unwrap(),
            created_at: 1,
        };
        let dump = Dump {
            generation: Generation(1),
            orgs: vec![acme.clone(), other.clone()],
            peers: vec![
                peer(&acme, 1, "web"),
                peer(&acme, 2, "web"),
                peer(&acme, 3, "db"),
                peer(&other, 4, "web"),
            ],
        };
        let mut model = Model::from_dump(&dump);
        let seen = |list: &[(&Org, u8, &str)]| -> Vec<(OrgSlug, GroupName, Ipv6Addr)> {
            list.iter()
                .map(|(o, n, g)| {
                    let p = peer(o, *n, g);
                    (p.org, p.group, p.address)
                })
                .collect()
        };
        let only_acme = |org: &str| org == "acme";
        // Node 2 is live: web lists it alone; db has no live member and lists everyone.
        let mut touched = Touched::default();
        model.set_health(
            only_acme,
            &seen(&[(&acme, 2, "web"), (&other, 4, "web")]),
            &mut touched,
        );
        assert_eq!(group_members(&model, 0, "web"), [2]);
        assert_eq!(group_members(&model, 0, "db"), [3]);
        // An org that is not health-aware lists every member (node 4 is live, but that is
        // not why it is listed), and is not touched.
        assert_eq!(group_members(&model, 1, "web"), [4]);
        assert!(
            touched.names.iter().all(|k| k.view() == 0),
            "{:?}",
            touched.names
        );
        // Node 1 comes alive, node 2 goes quiet: only web changed.
        let mut touched = Touched::default();
        model.set_health(only_acme, &seen(&[(&acme, 1, "web")]), &mut touched);
        assert_eq!(group_members(&model, 0, "web"), [1]);
        assert_eq!(touched.names, [NameKey::Group(0, "web".parse().unwrap())]);
        // The same report again changes nothing.
        let mut touched = Touched::default();
        model.set_health(only_acme, &seen(&[(&acme, 1, "web")]), &mut touched);
        assert!(touched.names.is_empty());
        // A reload keeps the last report.
        let mut reloaded = Model::from_dump(&dump);
        reloaded.inherit_health(&model);
        assert_eq!(group_members(&reloaded, 0, "web"), [1]);
        // Nobody live: fail open.
        let mut touched = Touched::default();
        model.set_health(only_acme, &[], &mut touched);
        assert_eq!(group_members(&model, 0, "web"), [1, 2]);
        // Health-awareness turned off: every member, and its groups are touched.
        model.set_health(
            only_acme,
            &seen(&[(&acme, 1, "web")]),
            &mut Touched::default(),
        );
        let mut touched = Touched::default();
        model.set_health(|_| false, &[], &mut touched);
        assert_eq!(group_members(&model, 0, "web"), [1, 2]);
        assert!(
            touched
                .names
                .contains(&NameKey::Group(0, "web".parse().unwrap()))
        );
    }
}
