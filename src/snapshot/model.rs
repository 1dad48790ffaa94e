//! The DNS model: what every org's names are, kept up to date one change at a time.
//!
//! [`Model`] is the only input the answer table ([`crate::fastpath::Index`]) is derived from, both
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

use crate::fastpath::index::{MAX_TXT_RDATA, split_txt_into};
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
        for peer in &dump.peers {
            if let Some(&view) = model.by_slug.get(&peer.org) {
                model.orgs[view as usize].insert(&peer.name, &peer.group, peer.address);
            }
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
                            continue;
                        }
                    } else {
                        touched.names.push(NameKey::PeerList(v));
                    }
                    org.insert(&peer.name, &peer.group, peer.address);
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
                Some(Content::Group(
                    org.members
                        .range((id, [0; 16])..(id + 1, [0; 16]))
                        .take(MAX_GROUP_ANSWER)
                        .map(|&(_, a)| a)
                        .collect(),
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
    fn insert(&mut self, name: &PeerName, group: &GroupName, address: Ipv6Addr) {
        let next = self.groups.len() as u32;
        let id = *self.group_ids.entry(group.clone()).or_insert(next);
        if id == next {
            self.groups.push((group.clone(), 0));
        }
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

    fn remove(&mut self, name: &PeerName) -> Option<Removed> {
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
/// time and its peers (name, group, address), and a SHA-256 of everything before it.
pub mod encoding {
    use super::*;

    const MAGIC: &[u8; 8] = b"SIXPNDNS";
    const VERSION: u32 = 1;

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
            if version != VERSION {
                return Err(format!("version {version}, expected {VERSION}"));
            }
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
                for _ in 0..n_peers {
                    let name: PeerName = r.label()?;
                    let group: GroupName = r.label()?;
                    let address = Ipv6Addr::from(r.take::<16>()?);
                    model.orgs[view].insert(&name, &group, address);
                }
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
}
