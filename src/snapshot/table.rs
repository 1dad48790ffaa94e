//! The answer table: every view's dynamic names in one hash table, split into shards.
//!
//! Derived from the DNS [`Model`] only: built whole at start and on resync
//! ([`Index::from_model`]), and patched after each batch of changes ([`Index::apply`]), which
//! rebuilds just the shards holding the names the batch touched and shares every other shard
//! with the previous index. A write therefore costs O(changes), whatever the fleet's size. The
//! fast path answers from it directly; the full handler reads the same entries and builds hickory
//! records from them only when asked, so there is one data model, not two.
//!
//! A shard is a flat, open-addressed hash table over a handful of arrays (entries, name bytes,
//! addresses, TXT bytes), so a lookup touches the shard pointer, the slot, the entry and the
//! name bytes. It is compact because there is one entry per peer: a 4-byte slot and a 16-byte
//! entry beside the name and the address.
//!
//! The key is (view, name). The hash folds case (`byte | 0x20`), so a query's name is hashed and
//! compared straight from the packet, without copying or lowercasing it: stored names are
//! lowercase wire format (`\x06node-1\x05_peer\x08internal\x00`), and the comparison is ASCII
//! case-insensitive. Label length bytes (≤ 63) are never ASCII letters, so case folding never
//! changes them. The hash is seeded per index from the OS (and kept by patched indexes), so names
//! chosen by token holders cannot be crafted to collide.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::IpNet;

use super::model::{Content, Model, NameKey, Touched};
use super::soa::Soa;
use crate::config::ViewConfig;
use crate::model::OrgSlug;
use crate::store::Dump;

/// The longest domain name in wire format (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = super::name::MAX_WIRE_NAME;

/// The largest UDP payload answered with when the client's EDNS allows more: the full handler's
/// cap too, so a group that fits a 4096-byte EDNS answer is not truncated.
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = crate::config::DEFAULT_MAX_UDP_PAYLOAD;

/// A served zone, as the fast path needs it.
#[derive(Debug, Clone)]
pub struct FastZone {
    /// The apex in lowercase wire format, e.g. `\x08internal\x00`.
    pub origin: Box<[u8]>,
    /// The SOA for negative answers as a complete resource record in wire format (no compression
    /// anywhere). The index takes it apart ([`Soa`]); the fast path writes it into the authority
    /// section of NXDOMAIN and NODATA answers with its names compressed against the question, and
    /// the serial of `internal.` moved on by the generation ([`Index::soa_serial`]).
    pub soa_negative: Box<[u8]>,
    /// Names of the zone that have static records (lowercase wire format), the apex included.
    /// Queries for them, and for their ancestors inside the zone (empty non-terminals), go to the
    /// full handler.
    pub static_names: Vec<Box<[u8]>>,
    /// When set, names of this zone that are not in the index go to the full handler instead of
    /// getting NXDOMAIN here: set it for a zone with wildcards, delegations (NS below the apex)
    /// or DNAMEs, whose misses need real zone logic.
    pub delegate_misses: bool,
}

/// What an [`Index`] is built from besides the store's rows.
#[derive(Debug, Clone)]
pub struct IndexSettings {
    /// TTL of the generated AAAA and TXT records, seconds.
    pub ttl: u32,
    /// Source CIDR → org views, beside each org's own /48.
    pub views: Vec<ViewConfig>,
    /// The served zones. The dynamic names live in the zone whose origin is `internal.`; without
    /// it, every query goes to the full handler.
    pub zones: Vec<FastZone>,
    /// The largest UDP payload answered with (the client's EDNS size is clamped to
    /// `512..=max_udp_payload`).
    pub max_udp_payload: u16,
}

/// `\x08internal\x00`.
pub(crate) const INTERNAL: &[u8] = b"\x08internal\x00";
const PEER_SUFFIX: &[u8] = b"\x05_peer\x08internal\x00";
const GROUP_SUFFIX: &[u8] = b"\x02_g\x08internal\x00";

/// What a name holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// One AAAA record: `addrs[a]`.
    Peer = 0,
    /// AAAA records `addrs[a..a + b]`, rotated by `rotations[c]`.
    Group = 1,
    /// One TXT record whose RDATA is `txt[a..a + b]`.
    Txt = 2,
    /// No records (empty non-terminal): NODATA for every type.
    Empty = 3,
    /// A static name: the full handler answers.
    Delegate = 4,
}

/// One (view, name) of a shard: 16 bytes.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Where the name starts in `names`.
    name_off: u32,
    view: u32,
    /// A peer: its address in `addrs`. A group or TXT name: its span in `spans`.
    a: u32,
    name_len: u8,
    kind: Kind,
    zone: u8,
}

/// The records of a group (AAAA addresses in `addrs`) or of a TXT name (RDATA bytes in `txt`).
#[derive(Debug)]
pub(crate) struct Span {
    off: u32,
    len: u32,
    /// The round-robin counter of a group (unused for TXT).
    rotation: AtomicU32,
}

/// A zone as kept by the index.
#[derive(Debug)]
pub(crate) struct ZoneData {
    pub(crate) origin: Box<[u8]>,
    /// `None`: the SOA did not parse, or has names with too many labels to model their
    /// compression; the fast path leaves the zone's negative answers to the full handler.
    pub(crate) soa: Option<Soa>,
    pub(crate) delegate_misses: bool,
}

/// How many bits of a name's hash pick its shard.
const SHARD_BITS: u32 = 12;
/// The number of shards: a change rebuilds the few shards holding the names it touched, about
/// n / 4096 entries each, and copies this many pointers.
pub const N_SHARDS: usize = 1 << SHARD_BITS;

/// One piece of the table: an open-addressed hash table over its own flat arrays (entries, name
/// bytes, addresses, spans, TXT bytes), immutable once built and shared by every index that did
/// not change it.
#[derive(Debug)]
pub(crate) struct Shard {
    /// `(tag << idx_bits) | (entry + 1)`; 0 = empty. The tag is as many bits of the hash (bits
    /// the shard and the slot position do not use) as the entry number leaves.
    slots: Box<[u32]>,
    mask: usize,
    idx_bits: u32,
    entries: Box<[Entry]>,
    names: Box<[u8]>,
    addrs: Box<[[u8; 16]]>,
    spans: Box<[Span]>,
    txt: Box<[u8]>,
    live: u32,
}

/// The tag of hash `h` in a shard whose entry numbers take `idx_bits` bits, in place.
#[inline(always)]
fn slot_tag(h: u64, idx_bits: u32) -> u32 {
    ((h >> 44) as u32).wrapping_shl(idx_bits)
}

impl Shard {
    fn empty() -> Shard {
        Shard {
            slots: Box::new([0]),
            mask: 0,
            idx_bits: 1,
            entries: Box::new([]),
            names: Box::new([]),
            addrs: Box::new([]),
            spans: Box::new([]),
            txt: Box::new([]),
            live: 0,
        }
    }

    #[inline(always)]
    fn get(&self, h: u64, view: u32, name: &[u8]) -> Option<&Entry> {
        let tag = slot_tag(h, self.idx_bits);
        let idx_mask = (1u32 << self.idx_bits) - 1;
        let mut i = (h as usize) & self.mask;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            if slot & !idx_mask == tag {
                let e = &self.entries[((slot & idx_mask) - 1) as usize];
                if e.view == view && eq_lower(name, self.name_of(e)) {
                    return Some(e);
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    #[inline(always)]
    fn name_of(&self, e: &Entry) -> &[u8] {
        let off = e.name_off as usize;
        &self.names[off..off + usize::from(e.name_len)]
    }

    /// The entries reachable from the table (a replaced duplicate is not).
    fn live_entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        let idx_mask = (1u32 << self.idx_bits) - 1;
        self.slots
            .iter()
            .filter(|&&s| s != 0)
            .map(move |&s| &self.entries[((s & idx_mask) - 1) as usize])
    }

    #[inline]
    fn span(&self, e: &Entry) -> (usize, usize) {
        let s = &self.spans[e.a as usize];
        (s.off as usize, s.len as usize)
    }

    fn rotation_of(&self, e: &Entry) -> u32 {
        match e.kind {
            Kind::Group => self.spans[e.a as usize].rotation.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    fn content_of(&self, e: &Entry) -> ContentRef<'_> {
        match e.kind {
            Kind::Peer => ContentRef::Peer(&self.addrs[e.a as usize]),
            Kind::Group => {
                let (a, n) = self.span(e);
                ContentRef::Group(&self.addrs[a..a + n])
            }
            Kind::Txt => {
                let (a, n) = self.span(e);
                ContentRef::Txt(&self.txt[a..a + n])
            }
            Kind::Empty => ContentRef::Empty,
            Kind::Delegate => ContentRef::Delegate,
        }
    }
}

/// A name found in the index: its entry and the shard holding its data.
#[derive(Debug, Clone, Copy)]
pub struct Hit<'a> {
    shard: &'a Shard,
    entry: &'a Entry,
}

impl<'a> Hit<'a> {
    /// What the name holds.
    #[inline]
    pub(crate) fn kind(&self) -> Kind {
        self.entry.kind
    }

    /// The index of the zone the name is in.
    #[inline]
    pub fn zone(&self) -> u8 {
        self.entry.zone
    }

    /// The name, lowercase wire format.
    #[inline]
    pub fn name(&self) -> &'a [u8] {
        self.shard.name_of(self.entry)
    }

    /// The AAAA addresses of a peer (one) or group (its members, base order); empty otherwise.
    #[inline]
    pub fn addrs(&self) -> &'a [[u8; 16]] {
        match self.entry.kind {
            Kind::Peer => std::slice::from_ref(&self.shard.addrs[self.entry.a as usize]),
            Kind::Group => {
                let (a, n) = self.shard.span(self.entry);
                &self.shard.addrs[a..a + n]
            }
            _ => &[],
        }
    }

    /// The TXT RDATA of `_peer.internal`; empty otherwise.
    #[inline]
    pub fn txt(&self) -> &'a [u8] {
        match self.entry.kind {
            Kind::Txt => {
                let (a, n) = self.shard.span(self.entry);
                &self.shard.txt[a..a + n]
            }
            _ => &[],
        }
    }

    /// Whether the name's records are static (the full handler answers it).
    #[inline]
    pub fn is_static(&self) -> bool {
        self.entry.kind == Kind::Delegate
    }

    /// The next answer's rotation: answer `k` of a group starts at member `k % len`. One relaxed
    /// atomic add, shared by both query paths so the order keeps rotating.
    #[inline]
    pub fn next_rotation(&self) -> u32 {
        match self.entry.kind {
            Kind::Group => self.shard.spans[self.entry.a as usize]
                .rotation
                .fetch_add(1, Ordering::Relaxed),
            _ => 0,
        }
    }
}

/// The fast path's immutable lookup structure for one snapshot. See the module docs.
#[derive(Debug)]
pub struct Index {
    seed: u64,
    shards: Box<[Arc<Shard>]>,
    pub(crate) zones: Arc<[ZoneData]>,
    /// The zone index of `internal.`, or `u8::MAX`.
    pub(crate) internal_zone: u8,
    /// Org /48 (top 48 bits) → view, sorted by prefix.
    by_prefix: Box<[(u64, u32)]>,
    /// Configured source networks → view, most specific first.
    sources: Box<[(IpNet, u32)]>,
    /// `00 1C 00 01 TTL 00 10`: an AAAA record after its owner, up to its RDATA.
    pub(crate) aaaa_tail: [u8; 10],
    /// `00 10 00 01 TTL`: a TXT record after its owner, up to its RDLENGTH.
    pub(crate) txt_tail: [u8; 8],
    pub(crate) max_udp_payload: u16,
    /// The store generation the index was built or patched from: it moves the SOA serial of
    /// `internal.` on ([`Index::soa_serial`]).
    generation: u64,
    views: Box<[OrgSlug]>,
    /// Configured source views, for routing views added later.
    view_config: Arc<[ViewConfig]>,
    /// Static names (and their ancestors in their zone) with their zone: delegated in every view.
    statics: Arc<[(Box<[u8]>, u8)]>,
}

/// A name's data, borrowed from a model or an old shard.
#[derive(Debug, Clone, Copy)]
enum ContentRef<'a> {
    Peer(&'a [u8; 16]),
    Group(&'a [[u8; 16]]),
    Txt(&'a [u8]),
    Empty,
    Delegate,
}

impl<'a> ContentRef<'a> {
    fn of(content: &'a Content) -> ContentRef<'a> {
        match content {
            Content::Peer(_) => unreachable!("peer content is converted by the caller"),
            Content::Group(addrs) => ContentRef::Group(addrs),
            Content::Txt(rdata) => ContentRef::Txt(rdata),
            Content::Empty => ContentRef::Empty,
        }
    }
}

/// Collects one shard's entries and data, then builds its table.
#[derive(Default)]
struct ShardBuilder {
    entries: Vec<Entry>,
    hashes: Vec<u64>,
    names: Vec<u8>,
    addrs: Vec<[u8; 16]>,
    spans: Vec<Span>,
    txt: Vec<u8>,
}

impl ShardBuilder {
    fn push(
        &mut self,
        h: u64,
        view: u32,
        name: &[u8],
        zone: u8,
        content: ContentRef<'_>,
        rotation: u32,
    ) {
        let name_off = self.names.len() as u32;
        self.names.extend_from_slice(name);
        let mut span = |off: usize, len: usize, rotation: u32| {
            self.spans.push(Span {
                off: off as u32,
                len: len as u32,
                rotation: AtomicU32::new(rotation),
            });
            self.spans.len() as u32 - 1
        };
        let (kind, a) = match content {
            ContentRef::Peer(addr) => {
                self.addrs.push(*addr);
                (Kind::Peer, self.addrs.len() as u32 - 1)
            }
            ContentRef::Group(addrs) => {
                let a = span(self.addrs.len(), addrs.len(), rotation);
                self.addrs.extend_from_slice(addrs);
                (Kind::Group, a)
            }
            ContentRef::Txt(rdata) => {
                let a = span(self.txt.len(), rdata.len(), 0);
                self.txt.extend_from_slice(rdata);
                (Kind::Txt, a)
            }
            ContentRef::Empty => (Kind::Empty, 0),
            ContentRef::Delegate => (Kind::Delegate, 0),
        };
        self.entries.push(Entry {
            name_off,
            view,
            a,
            name_len: name.len() as u8,
            kind,
            zone,
        });
        self.hashes.push(h);
    }

    /// The shard; a later entry with the same (view, name) replaces an earlier one (static names
    /// over dynamic ones).
    fn finish(self) -> Shard {
        let cap = (self.entries.len() * 2).next_power_of_two().max(2);
        let mut slots = vec![0u32; cap];
        let mask = cap - 1;
        // Entry numbers are stored plus one.
        let idx_bits = u32::BITS - (self.entries.len() as u32).leading_zeros();
        let idx_mask = (1u32 << idx_bits) - 1;
        let name_of = |e: &Entry| {
            &self.names[e.name_off as usize..e.name_off as usize + usize::from(e.name_len)]
        };
        let mut live = 0;
        for (i, (e, &h)) in self.entries.iter().zip(&self.hashes).enumerate() {
            let tag = slot_tag(h, idx_bits);
            let mut s = (h as usize) & mask;
            loop {
                let slot = slots[s];
                if slot == 0 {
                    slots[s] = tag | (i as u32 + 1);
                    live += 1;
                    break;
                }
                if slot & !idx_mask == tag {
                    let o = &self.entries[((slot & idx_mask) - 1) as usize];
                    if o.view == e.view && name_of(o) == name_of(e) {
                        slots[s] = tag | (i as u32 + 1);
                        break;
                    }
                }
                s = (s + 1) & mask;
            }
        }
        Shard {
            slots: slots.into_boxed_slice(),
            mask,
            idx_bits,
            entries: self.entries.into_boxed_slice(),
            names: self.names.into_boxed_slice(),
            addrs: self.addrs.into_boxed_slice(),
            spans: self.spans.into_boxed_slice(),
            txt: self.txt.into_boxed_slice(),
            live,
        }
    }
}

/// Writes `key`'s lowercase wire name into `buf` (cleared first).
fn key_name(key: &NameKey, buf: &mut Vec<u8>) {
    buf.clear();
    let (label, suffix): (&str, &[u8]) = match key {
        NameKey::Peer(_, name) => (name.as_str(), PEER_SUFFIX),
        NameKey::Group(_, group) => (group.as_str(), GROUP_SUFFIX),
        NameKey::PeerList(_) => ("", PEER_SUFFIX),
        NameKey::Groups(_) => ("", GROUP_SUFFIX),
    };
    if !label.is_empty() {
        buf.push(label.len() as u8);
        buf.extend_from_slice(label.as_bytes());
    }
    buf.extend_from_slice(suffix);
}

/// A change to one name, waiting to be written into its shard.
struct Pending {
    h: u64,
    view: u32,
    name: Vec<u8>,
    content: Option<Content>,
}

impl Index {
    /// Builds the index of `dump`. Pure apart from drawing the hash seed.
    pub fn build(dump: &Dump, settings: &IndexSettings) -> Index {
        Index::from_model(&Model::from_dump(dump), settings)
    }

    /// Builds the whole index of `model`: every name of every org, plus the static names
    /// (delegated) in every view.
    pub fn from_model(model: &Model, settings: &IndexSettings) -> Index {
        let internal_zone = settings
            .zones
            .iter()
            .position(|z| &*z.origin == INTERNAL)
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(u8::MAX);
        let mut index = Index {
            seed: RandomState::new().hash_one(0x5158_u64),
            shards: Box::new([]),
            zones: settings
                .zones
                .iter()
                .map(|z| ZoneData {
                    origin: z.origin.clone(),
                    soa: Soa::parse(&z.soa_negative, &z.origin, &[PEER_SUFFIX, GROUP_SUFFIX]),
                    delegate_misses: z.delegate_misses,
                })
                .collect(),
            internal_zone,
            by_prefix: Box::new([]),
            sources: Box::new([]),
            aaaa_tail: rr_tail(28, settings.ttl, 16),
            txt_tail: {
                let mut t = [0u8; 8];
                t.copy_from_slice(&rr_tail(16, settings.ttl, 0)[..8]);
                t
            },
            max_udp_payload: settings.max_udp_payload.max(512),
            generation: model.generation().0,
            views: Box::new([]),
            view_config: settings.views.clone().into(),
            statics: static_keys(&settings.zones).into(),
        };
        index.route(model);
        let mut builders: Vec<ShardBuilder> =
            (0..N_SHARDS).map(|_| ShardBuilder::default()).collect();
        let mut name = Vec::with_capacity(MAX_NAME);
        if internal_zone != u8::MAX {
            for key in model.keys() {
                let Some(content) = model.content(&key) else {
                    continue;
                };
                key_name(&key, &mut name);
                let h = hash_name(index.seed, key.view(), &name);
                let builder = &mut builders[shard_of(h)];
                match &content {
                    Content::Peer(addr) => builder.push(
                        h,
                        key.view(),
                        &name,
                        internal_zone,
                        ContentRef::Peer(&addr.octets()),
                        0,
                    ),
                    other => builder.push(
                        h,
                        key.view(),
                        &name,
                        internal_zone,
                        ContentRef::of(other),
                        0,
                    ),
                }
            }
        }
        for view in 0..index.views.len() as u32 {
            for (name, zone) in index.statics.iter() {
                let h = hash_name(index.seed, view, name);
                builders[shard_of(h)].push(h, view, name, *zone, ContentRef::Delegate, 0);
            }
        }
        let empty = Arc::new(Shard::empty());
        index.shards = builders
            .into_iter()
            .map(|b| {
                if b.entries.is_empty() {
                    Arc::clone(&empty)
                } else {
                    Arc::new(b.finish())
                }
            })
            .collect();
        index
    }

    /// The index of `model` after a change that touched `touched`, sharing every shard the
    /// change did not touch with `self`. `model` must be the model `self` was built or last
    /// patched from, with the change applied.
    pub fn apply(&self, model: &Model, touched: &Touched) -> Index {
        let mut next = Index {
            seed: self.seed,
            shards: self.shards.clone(),
            zones: Arc::clone(&self.zones),
            internal_zone: self.internal_zone,
            by_prefix: self.by_prefix.clone(),
            sources: self.sources.clone(),
            aaaa_tail: self.aaaa_tail,
            txt_tail: self.txt_tail,
            max_udp_payload: self.max_udp_payload,
            generation: model.generation().0,
            views: self.views.clone(),
            view_config: Arc::clone(&self.view_config),
            statics: Arc::clone(&self.statics),
        };
        let mut pending: Vec<Pending> = Vec::new();
        let old_views = self.views.len() as u32;
        if touched.orgs_added {
            next.route(model);
        }
        let mut keys: Vec<&NameKey> = touched.names.iter().collect();
        let new_views: Vec<NameKey> = (old_views..next.views.len() as u32)
            .flat_map(|v| [NameKey::PeerList(v), NameKey::Groups(v)])
            .collect();
        keys.extend(new_views.iter());
        keys.sort_unstable();
        keys.dedup();
        if self.internal_zone != u8::MAX {
            for key in keys {
                let mut name = Vec::with_capacity(64);
                key_name(key, &mut name);
                let h = hash_name(self.seed, key.view(), &name);
                pending.push(Pending {
                    h,
                    view: key.view(),
                    name,
                    content: model.content(key),
                });
            }
        }
        // Static names of new views.
        let mut statics: Vec<(u64, u32, &[u8], u8)> = Vec::new();
        for view in old_views..next.views.len() as u32 {
            for (name, zone) in self.statics.iter() {
                statics.push((hash_name(self.seed, view, name), view, name, *zone));
            }
        }
        let mut by_shard: Vec<(usize, usize)> = pending
            .iter()
            .enumerate()
            .map(|(i, p)| (shard_of(p.h), i))
            .collect();
        by_shard.extend(
            statics
                .iter()
                .enumerate()
                .map(|(i, s)| (shard_of(s.0), usize::MAX - i)),
        );
        by_shard.sort_unstable();
        let mut at = 0;
        while at < by_shard.len() {
            let shard = by_shard[at].0;
            let end = at
                + by_shard[at..]
                    .iter()
                    .take_while(|(s, _)| *s == shard)
                    .count();
            let items = &by_shard[at..end];
            let changed = |e: &Entry, old: &Shard| {
                items.iter().any(|&(_, i)| {
                    i < pending.len() && {
                        let p = &pending[i];
                        p.view == e.view && p.name == old.name_of(e)
                    }
                })
            };
            let old = &self.shards[shard];
            let mut builder = ShardBuilder::default();
            let mut rotations: Vec<(usize, u32)> = Vec::new();
            for e in old.live_entries() {
                if e.kind != Kind::Delegate && changed(e, old) {
                    if e.kind == Kind::Group {
                        let i = items.iter().map(|&(_, i)| i).find(|&i| {
                            i < pending.len()
                                && pending[i].view == e.view
                                && pending[i].name == old.name_of(e)
                        });
                        if let Some(i) = i {
                            rotations.push((i, old.rotation_of(e)));
                        }
                    }
                    continue;
                }
                let name = old.name_of(e);
                let h = hash_name(self.seed, e.view, name);
                builder.push(
                    h,
                    e.view,
                    name,
                    e.zone,
                    old.content_of(e),
                    old.rotation_of(e),
                );
            }
            for &(_, i) in items {
                if i >= pending.len() {
                    continue;
                }
                let p = &pending[i];
                let Some(content) = &p.content else {
                    continue;
                };
                // A static name of the same (view, name) stays delegated.
                if old
                    .get(p.h, p.view, &p.name)
                    .is_some_and(|e| e.kind == Kind::Delegate)
                {
                    continue;
                }
                let rotation = rotations.iter().find(|r| r.0 == i).map_or(0, |r| r.1);
                match content {
                    Content::Peer(addr) => builder.push(
                        p.h,
                        p.view,
                        &p.name,
                        self.internal_zone,
                        ContentRef::Peer(&addr.octets()),
                        rotation,
                    ),
                    other => builder.push(
                        p.h,
                        p.view,
                        &p.name,
                        self.internal_zone,
                        ContentRef::of(other),
                        rotation,
                    ),
                }
            }
            for &(_, i) in items {
                if i < pending.len() {
                    continue;
                }
                let (h, view, name, zone) = statics[usize::MAX - i];
                builder.push(h, view, name, zone, ContentRef::Delegate, 0);
            }
            next.shards[shard] = if builder.entries.is_empty() {
                Arc::new(Shard::empty())
            } else {
                Arc::new(builder.finish())
            };
            at = end;
        }
        next
    }

    /// Recomputes the view list and source routing from `model`'s orgs: each org's /48, then
    /// the configured networks of existing orgs (a view of a missing org is left out), most
    /// specific first; equal networks keep their configured order.
    fn route(&mut self, model: &Model) {
        let orgs = model.orgs();
        let mut by_prefix: Vec<(u64, u32)> = Vec::with_capacity(orgs.len());
        let mut sources: Vec<(IpNet, u32)> = Vec::new();
        for (i, org) in orgs.iter().enumerate() {
            let prefix = org.org().prefix;
            if prefix.prefix_len() == 48 {
                by_prefix.push((prefix48(&prefix.network()), i as u32));
            } else {
                sources.push((IpNet::V6(prefix), i as u32));
            }
        }
        by_prefix.sort_unstable();
        by_prefix.dedup_by_key(|&mut (p, _)| p);
        for v in self.view_config.iter() {
            if let Some(view) = model.view_of(&v.org) {
                sources.push((v.source.trunc(), view));
            }
        }
        sources.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        self.by_prefix = by_prefix.into_boxed_slice();
        self.sources = sources.into_boxed_slice();
        self.views = orgs.iter().map(|o| o.org().slug.clone()).collect();
    }

    /// The SOA serial of zone `zone` (an index into the settings' zones): the zone file's, and
    /// for `internal.`, whose names change with every write, the zone file's plus the store
    /// generation, modulo 2^32. The generation only grows (it is stored with the data and
    /// survives restarts), so the serial moves forward with every change in RFC 1982 terms
    /// (less than 2^31 at a time) and never goes back.
    #[inline]
    pub fn soa_serial(&self, zone: u8) -> Option<u32> {
        let soa = self.zones.get(usize::from(zone))?.soa.as_ref()?;
        Some(soa_serial(
            soa.serial,
            zone == self.internal_zone,
            self.generation,
        ))
    }

    /// The orgs, in view order.
    pub fn views(&self) -> &[OrgSlug] {
        &self.views
    }

    /// The number of (view, name) entries.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.live as usize).sum()
    }

    /// Whether the index holds no names.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The view a query from `src` is answered in: the org whose /48 holds `src`, else the most
    /// specific configured source network holding it. `None`: refused.
    pub fn view_for(&self, src: IpAddr) -> Option<u32> {
        let src = src.to_canonical();
        if let IpAddr::V6(v6) = src {
            let key = prefix48(&v6);
            if let Ok(i) = self.by_prefix.binary_search_by_key(&key, |&(p, _)| p) {
                return Some(self.by_prefix[i].1);
            }
        }
        self.sources
            .iter()
            .find(|(net, _)| net.contains(&src))
            .map(|&(_, view)| view)
    }

    /// The entry for `name` (wire format, any case) in `view`.
    #[inline]
    pub fn get(&self, view: u32, name: &[u8]) -> Option<Hit<'_>> {
        let h = hash_name(self.seed, view, name);
        let shard = &self.shards[shard_of(h)];
        shard.get(h, view, name).map(|entry| Hit { shard, entry })
    }

    /// Every (view, name) with its hit, in no particular order (for tests and tools).
    pub fn iter(&self) -> impl Iterator<Item = (u32, Hit<'_>)> + '_ {
        self.shards.iter().flat_map(|shard| {
            shard
                .live_entries()
                .map(move |entry| (entry.view, Hit { shard, entry }))
        })
    }

    /// The most specific zone holding `qname` (wire format, any case), by index.
    #[inline]
    pub fn zone_of(&self, qname: &[u8]) -> Option<u8> {
        let mut best: Option<(u8, usize)> = None;
        for (i, z) in self.zones.iter().enumerate() {
            if is_within(qname, &z.origin) && best.is_none_or(|(_, l)| z.origin.len() > l) {
                best = Some((i as u8, z.origin.len()));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// The SOA serial of a zone whose file says `file_serial` (see [`Index::soa_serial`]).
#[inline]
pub fn soa_serial(file_serial: u32, internal: bool, generation: u64) -> u32 {
    if internal {
        file_serial.wrapping_add(generation as u32)
    } else {
        file_serial
    }
}

/// The shard a name's hash falls in: bits the slot position inside a shard does not use.
#[inline(always)]
fn shard_of(h: u64) -> usize {
    ((h >> 32) as usize) & (N_SHARDS - 1)
}

/// Every static name and its ancestors inside its zone (empty non-terminals), with the zone:
/// the full handler answers them, in every view.
fn static_keys(zones: &[FastZone]) -> Vec<(Box<[u8]>, u8)> {
    let mut seen: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (z, zone) in zones.iter().enumerate() {
        let z = z as u8;
        for name in &zone.static_names {
            let mut cur: &[u8] = name;
            // Walk up to the apex (inclusive); stop if the name is outside the zone.
            while is_within(cur, &zone.origin) {
                if !seen.insert(cur) {
                    break;
                }
                out.push((Box::<[u8]>::from(cur), z));
                if cur.len() == zone.origin.len() {
                    break;
                }
                cur = &cur[1 + usize::from(cur[0])..];
            }
        }
    }
    out
}

fn prefix48(a: &Ipv6Addr) -> u64 {
    (u128::from(*a) >> 80) as u64
}

const K1: u64 = 0x9E37_79B9_7F4A_7C15;
const K2: u64 = 0xD6E8_FEB8_6659_FD93;
const CASE: u64 = 0x2020_2020_2020_2020;

#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Whether `name` (any case) equals `lower`, a lowercase ASCII wire name: ASCII
/// case-insensitive equality, eight bytes at a time. A byte may differ from `lower`'s only by
/// the 0x20 bit, and only where `lower` has a letter.
#[inline]
pub(crate) fn eq_lower(name: &[u8], lower: &[u8]) -> bool {
    if name.len() != lower.len() {
        return false;
    }
    #[inline(always)]
    fn word_ok(q: u64, s: u64) -> bool {
        const HIGH: u64 = 0x8080_8080_8080_8080;
        // High bit of each byte: s >= 'a', and 'z' >= s (bytes of `lower` are < 0x80).
        let ge_a = (s | HIGH).wrapping_sub(0x6161_6161_6161_6161) & HIGH;
        let le_z = (0x7A7A_7A7A_7A7A_7A7A | HIGH).wrapping_sub(s) & HIGH;
        let letters = (ge_a & le_z) >> 2; // 0x20 where `lower` has a letter
        (q ^ s) & !letters == 0
    }
    let n = name.len();
    if n < 8 {
        return name
            .iter()
            .zip(lower)
            .all(|(&q, &l)| q == l || (l.is_ascii_lowercase() && q == l.to_ascii_uppercase()));
    }
    #[inline(always)]
    fn word(b: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(w)
    }
    // Whole words, then the last eight bytes (overlapping the previous word).
    let mut at = 0;
    while at + 8 <= n {
        if !word_ok(word(name, at), word(lower, at)) {
            return false;
        }
        at += 8;
    }
    at == n || word_ok(word(name, n - 8), word(lower, n - 8))
}

/// Case-folding hash of a wire name in a view (see the module docs).
#[inline]
fn hash_name(seed: u64, view: u32, name: &[u8]) -> u64 {
    let n = name.len();
    let mut h = seed ^ (u64::from(view) << 8) ^ n as u64;
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&name[at..at + 8]);
        u64::from_le_bytes(w) | CASE
    };
    if n < 8 {
        let mut w = [0u8; 8];
        w[..n].copy_from_slice(name);
        return fold_mul(h ^ (u64::from_le_bytes(w) | CASE), K2);
    }
    // Whole words, then the last eight bytes (overlapping): no padding copies.
    let mut at = 0;
    while at + 8 <= n {
        h = fold_mul(h ^ word(at), K1);
        at += 8;
    }
    if at < n {
        h = fold_mul(h ^ word(n - 8), K2);
    }
    fold_mul(h, K1)
}

/// `TYPE 00 01 TTL RDLEN`: a record after its owner name (class IN).
fn rr_tail(rtype: u16, ttl: u32, rdlen: u16) -> [u8; 10] {
    let mut h = [0u8; 10];
    h[0..2].copy_from_slice(&rtype.to_be_bytes());
    h[2..4].copy_from_slice(&1u16.to_be_bytes());
    h[4..8].copy_from_slice(&ttl.to_be_bytes());
    h[8..10].copy_from_slice(&rdlen.to_be_bytes());
    h
}

/// Whether wire name `name` (any case) equals `origin` (lowercase) or lies below it, on label
/// boundaries.
pub(crate) fn is_within(name: &[u8], origin: &[u8]) -> bool {
    let mut cur = name;
    loop {
        if cur.len() < origin.len() {
            return false;
        }
        if cur.len() == origin.len() {
            return eq_lower(cur, origin);
        }
        let Some(&len) = cur.first() else {
            return false;
        };
        if len == 0 {
            return false;
        }
        cur = match cur.get(1 + usize::from(len)..) {
            Some(rest) => rest,
            None => return false,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_is_on_label_boundaries() {
        let n = b"\x06node-1\x05_peer\x08internal\x00";
        assert!(is_within(n, INTERNAL));
        assert!(is_within(b"\x08INTERNAL\x00", INTERNAL));
        assert!(!is_within(b"\x09xinternal\x00", INTERNAL));
        assert!(!is_within(b"\x07example\x00", INTERNAL));
        assert!(!is_within(b"\x00", INTERNAL));
    }

    #[test]
    fn eq_lower_is_exact_ascii_case_folding() {
        let lower = b"\x06node-1\x05_peer\x08internal\x00";
        assert!(eq_lower(b"\x06NoDe-1\x05_PEER\x08INTERNAL\x00", lower));
        assert!(eq_lower(lower, lower));
        assert!(
            !eq_lower(b"\x06node-1\x05_peer\x08internal", lower),
            "length"
        );
        // Every single-byte change that is not a letter's case is a difference.
        for i in 0..lower.len() {
            for b in 0..=255u8 {
                let mut q = lower.to_vec();
                q[i] = b;
                let same = b == lower[i]
                    || (lower[i].is_ascii_lowercase() && b == lower[i].to_ascii_uppercase());
                assert_eq!(eq_lower(&q, lower), same, "byte {i} = {b:#x}");
                assert_eq!(q.eq_ignore_ascii_case(lower), same, "reference, byte {i}");
            }
        }
    }

    #[test]
    fn hash_folds_case() {
        let a = hash_name(7, 1, b"\x06NoDe-1\x05_PEER\x08internal\x00");
        let b = hash_name(7, 1, b"\x06node-1\x05_peer\x08internal\x00");
        assert_eq!(a, b);
        assert_ne!(a, hash_name(7, 2, b"\x06node-1\x05_peer\x08internal\x00"));
    }
}
