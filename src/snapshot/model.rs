//! The DNS model: what every org's names are, kept up to date one change at a time.
//!
//! [`Model`] is the only input the answer table ([`crate::fastpath::Index`]) is derived from, both
//! when it is built whole (start, resync) and when it is patched ([`Model::apply`] reports which
//! names a change touched; the index rebuilds only the pieces that hold them). Because both ways
//! read the same model through the same [`Model::content`], a patched table answers exactly like
//! one built from scratch.
//!
//! Per org it keeps the peers by name and each group's members by name, in ordered maps, so a
//! change costs O(log n) here and the bounded answers are cheap to recompute:
//! - a group's answer holds its first [`MAX_GROUP_ANSWER`] members by name (more never fit a DNS
//!   message, not even over TCP);
//! - the `_peer.internal` TXT holds the names, in order, that fit [`MAX_TXT_RDATA`] bytes.
//!
//! This module never touches sockets or hickory types.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;

use crate::fastpath::index::{MAX_TXT_RDATA, split_txt_into};
use crate::model::{Change, Generation, GroupName, Org, OrgSlug, PeerName};
use crate::store::Dump;

/// The most members a group's answer holds: as many AAAA records as the largest DNS message
/// (65,535 bytes over TCP) can carry. A bigger group answers with its first members by name.
pub const MAX_GROUP_ANSWER: usize = 2_340;

/// One org's peers and groups.
#[derive(Debug, Clone)]
pub struct OrgNames {
    org: Org,
    peers: BTreeMap<PeerName, Member>,
    groups: HashMap<GroupName, BTreeMap<PeerName, Ipv6Addr>, foldhash::fast::RandomState>,
}

#[derive(Debug, Clone)]
struct Member {
    group: GroupName,
    address: Ipv6Addr,
}

impl OrgNames {
    /// The org.
    pub fn org(&self) -> &Org {
        &self.org
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
            let peers = o.peers.keys().map(move |p| NameKey::Peer(v, p.clone()));
            let groups = o.groups.keys().map(move |g| NameKey::Group(v, g.clone()));
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
            NameKey::Peer(_, name) => org.peers.get(name).map(|m| Content::Peer(m.address)),
            NameKey::Group(_, group) => org.groups.get(group).map(|members| {
                Content::Group(
                    members
                        .values()
                        .take(MAX_GROUP_ANSWER)
                        .map(|a| a.octets())
                        .collect(),
                )
            }),
            NameKey::PeerList(_) if org.peers.is_empty() => Some(Content::Empty),
            NameKey::PeerList(_) => {
                let mut rdata = Vec::new();
                split_txt_into(
                    org.peers.keys().map(PeerName::as_str),
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
            org,
            peers: BTreeMap::new(),
            groups: HashMap::default(),
        });
    }
}

impl OrgNames {
    fn insert(&mut self, name: &PeerName, group: &GroupName, address: Ipv6Addr) {
        self.peers.insert(
            name.clone(),
            Member {
                group: group.clone(),
                address,
            },
        );
        self.groups
            .entry(group.clone())
            .or_default()
            .insert(name.clone(), address);
    }

    fn remove(&mut self, name: &PeerName) -> Option<Member> {
        let old = self.peers.remove(name)?;
        if let Some(members) = self.groups.get_mut(&old.group) {
            members.remove(name);
            if members.is_empty() {
                self.groups.remove(&old.group);
            }
        }
        Some(old)
    }
}
