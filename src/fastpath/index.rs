//! The fast path's lookup table: every view's dynamic names in one flat, open-addressed hash table.
//!
//! Built once per snapshot from the store's [`Dump`]. Everything lives in a handful of flat
//! arrays (entries, name bytes, addresses, TXT bytes, table slots), so a build makes a few large
//! allocations instead of one per name, and a lookup touches two or three cache lines: the slot,
//! the entry and the name bytes.
//!
//! The key is (view, name). The hash folds case (`byte | 0x20`), so a query's name is hashed and
//! compared straight from the packet, without copying or lowercasing it: stored names are
//! lowercase wire format (`\x06node-1\x05_peer\x08internal\x00`), and the comparison is ASCII
//! case-insensitive. Label length bytes (≤ 63) are never ASCII letters, so case folding never
//! changes them. The hash is seeded per index from the OS, so names chosen by token holders cannot
//! be crafted to collide.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::IpNet;

use crate::config::ViewConfig;
use crate::model::OrgSlug;
use crate::store::Dump;

/// The longest domain name in wire format (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;

/// The most RDATA the `_peer.internal` TXT record carries: what still fits a TCP message with the
/// largest question, the owner pointer, the record header and an OPT record.
pub const MAX_TXT_RDATA: usize = 65_000;

/// The largest UDP payload answered with when the client's EDNS allows more: the full handler's
/// cap too, so a group that fits a 4096-byte EDNS answer is not truncated.
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 4096;

/// A served zone, as the fast path needs it.
#[derive(Debug, Clone)]
pub struct FastZone {
    /// The apex in lowercase wire format, e.g. `\x08internal\x00`.
    pub origin: Box<[u8]>,
    /// The SOA for negative answers as a complete resource record in wire format (owner name
    /// uncompressed), copied as is into the authority section of NXDOMAIN and NODATA answers.
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

/// One (view, name) of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) name_off: u32,
    pub(crate) view: u32,
    pub(crate) a: u32,
    pub(crate) b: u32,
    pub(crate) c: u32,
    pub(crate) name_len: u8,
    pub(crate) kind: Kind,
    /// Index into `zones`.
    pub(crate) zone: u8,
}

/// A zone as kept by the index.
#[derive(Debug)]
pub(crate) struct ZoneData {
    pub(crate) origin: Box<[u8]>,
    pub(crate) soa: Box<[u8]>,
    pub(crate) delegate_misses: bool,
}

/// The fast path's immutable lookup structure for one snapshot. See the module docs.
#[derive(Debug)]
pub struct Index {
    seed: u64,
    /// `(tag << 32) | (entry + 1)`; 0 = empty.
    slots: Box<[u64]>,
    mask: usize,
    pub(crate) entries: Box<[Entry]>,
    names: Box<[u8]>,
    pub(crate) addrs: Box<[[u8; 16]]>,
    pub(crate) txt: Box<[u8]>,
    pub(crate) rotations: Box<[AtomicU32]>,
    pub(crate) zones: Box<[ZoneData]>,
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
    views: Box<[OrgSlug]>,
}

impl Index {
    /// Builds the index of `dump`. Pure apart from drawing the hash seed; a few large
    /// allocations, linear in the number of peers.
    pub fn build(dump: &Dump, settings: &IndexSettings) -> Index {
        Builder::new(dump, settings).finish()
    }

    /// The orgs, in view order.
    pub fn views(&self) -> &[OrgSlug] {
        &self.views
    }

    /// The number of (view, name) entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index holds no names.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
    pub(crate) fn get(&self, view: u32, name: &[u8]) -> Option<&Entry> {
        let h = hash_name(self.seed, view, name);
        let tag = h >> 32;
        let mut i = (h as usize) & self.mask;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            if slot >> 32 == tag {
                let e = &self.entries[(slot as u32 - 1) as usize];
                if e.view == view && eq_lower(name, self.name_of(e)) {
                    return Some(e);
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The entry's name, lowercase wire format.
    #[inline]
    pub(crate) fn name_of(&self, e: &Entry) -> &[u8] {
        let off = e.name_off as usize;
        &self.names[off..off + usize::from(e.name_len)]
    }

    /// The next rotation of group `c`.
    #[inline]
    pub(crate) fn next_rotation(&self, c: u32) -> u32 {
        self.rotations[c as usize].fetch_add(1, Ordering::Relaxed)
    }
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

struct Builder<'d> {
    dump: &'d Dump,
    settings: &'d IndexSettings,
    entries: Vec<Entry>,
    names: Vec<u8>,
    addrs: Vec<[u8; 16]>,
    txt: Vec<u8>,
    n_groups: u32,
    internal_zone: u8,
}

impl<'d> Builder<'d> {
    fn new(dump: &'d Dump, settings: &'d IndexSettings) -> Builder<'d> {
        let internal_zone = settings
            .zones
            .iter()
            .position(|z| &*z.origin == INTERNAL)
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(u8::MAX);
        let n = dump.peers.len();
        Builder {
            dump,
            settings,
            entries: Vec::with_capacity(n + n / 8 + 16),
            names: Vec::with_capacity(n * 24 + 64),
            addrs: Vec::with_capacity(2 * n),
            txt: Vec::new(),
            n_groups: 0,
            internal_zone,
        }
    }

    fn push(&mut self, view: u32, name: &[u8], kind: Kind, zone: u8, a: u32, b: u32) {
        let name_off = self.names.len() as u32;
        self.names.extend_from_slice(name);
        self.entries.push(Entry {
            name_off,
            view,
            a,
            b,
            c: 0,
            name_len: name.len() as u8,
            kind,
            zone,
        });
    }

    /// Pushes `<label><suffix>` (label lowercased already).
    fn push_label(&mut self, view: u32, label: &str, suffix: &[u8], kind: Kind, a: u32, b: u32) {
        let name_off = self.names.len() as u32;
        self.names.push(label.len() as u8);
        self.names.extend_from_slice(label.as_bytes());
        self.names.extend_from_slice(suffix);
        let name_len = (self.names.len() - name_off as usize) as u8;
        self.entries.push(Entry {
            name_off,
            view,
            a,
            b,
            c: 0,
            name_len,
            kind,
            zone: self.internal_zone,
        });
    }

    fn finish(mut self) -> Index {
        let dump = self.dump;
        let settings = self.settings;
        let views: Vec<OrgSlug> = dump.orgs.iter().map(|o| o.slug.clone()).collect();
        let view_of: HashMap<&str, u32> = views
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i as u32))
            .collect();
        // Each org's /48, then the configured networks of existing orgs (a view of a missing
        // org is left out), most specific first; the sort is stable, so equal networks keep
        // their order. The same routing as the full handler's snapshot.
        let mut by_prefix: Vec<(u64, u32)> = Vec::with_capacity(dump.orgs.len());
        let mut sources: Vec<(IpNet, u32)> = Vec::new();
        for (i, org) in dump.orgs.iter().enumerate() {
            if org.prefix.prefix_len() == 48 {
                by_prefix.push((prefix48(&org.prefix.network()), i as u32));
            } else {
                sources.push((IpNet::V6(org.prefix), i as u32));
            }
        }
        by_prefix.sort_unstable();
        by_prefix.dedup_by_key(|&mut (p, _)| p);
        for v in &settings.views {
            if let Some(&view) = view_of.get(v.org.as_str()) {
                sources.push((v.source.trunc(), view));
            }
        }
        sources.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));

        if self.internal_zone != u8::MAX {
            self.dynamic_names(&view_of, views.len());
        }
        self.static_names(views.len());

        let mut index = Index {
            seed: RandomState::new().hash_one(0x5158_u64),
            slots: Box::new([]),
            mask: 0,
            entries: Box::new([]),
            names: self.names.into_boxed_slice(),
            addrs: self.addrs.into_boxed_slice(),
            txt: self.txt.into_boxed_slice(),
            rotations: (0..self.n_groups).map(|_| AtomicU32::new(0)).collect(),
            zones: settings
                .zones
                .iter()
                .map(|z| ZoneData {
                    origin: z.origin.clone(),
                    soa: z.soa_negative.clone(),
                    delegate_misses: z.delegate_misses,
                })
                .collect(),
            internal_zone: self.internal_zone,
            by_prefix: by_prefix.into_boxed_slice(),
            sources: sources.into_boxed_slice(),
            aaaa_tail: rr_tail(28, settings.ttl, 16),
            txt_tail: {
                let mut t = [0u8; 8];
                t.copy_from_slice(&rr_tail(16, settings.ttl, 0)[..8]);
                t
            },
            max_udp_payload: settings.max_udp_payload.max(512),
            views: views.into_boxed_slice(),
        };
        index.fill_table(self.entries);
        index
    }

    /// Peers, groups, `_peer.internal` TXT and the `_g.internal` empty non-terminal, per view.
    fn dynamic_names(&mut self, view_of: &HashMap<&str, u32>, n_views: usize) {
        let dump = self.dump;
        // Pass 1: peers, and a group id plus member count per (view, group).
        let mut group_ids: HashMap<(u32, &str), u32> = HashMap::new();
        let mut group_keys: Vec<(u32, &str)> = Vec::new();
        let mut group_sizes: Vec<u32> = Vec::new();
        let mut peer_group: Vec<u32> = Vec::with_capacity(dump.peers.len());
        let mut per_view: Vec<Vec<&str>> = vec![Vec::new(); n_views];
        for peer in &dump.peers {
            let Some(&view) = view_of.get(peer.org.as_str()) else {
                peer_group.push(u32::MAX);
                continue;
            };
            let addr = self.addrs.len() as u32;
            self.addrs.push(peer.address.octets());
            self.push_label(view, peer.name.as_str(), PEER_SUFFIX, Kind::Peer, addr, 1);
            per_view[view as usize].push(peer.name.as_str());
            let next = group_keys.len() as u32;
            let g = *group_ids.entry((view, peer.group.as_str())).or_insert(next);
            if g == next {
                group_keys.push((view, peer.group.as_str()));
                group_sizes.push(0);
            }
            group_sizes[g as usize] += 1;
            peer_group.push(g);
        }
        // Pass 2: each group's members, contiguous after the peers' own addresses.
        let mut starts: Vec<u32> = Vec::with_capacity(group_sizes.len());
        let mut at = self.addrs.len() as u32;
        for &n in &group_sizes {
            starts.push(at);
            at += n;
        }
        let base = self.addrs.len();
        self.addrs.resize(at as usize, [0; 16]);
        let mut fill: Vec<u32> = starts.clone();
        for (peer, &g) in dump.peers.iter().zip(&peer_group) {
            if g == u32::MAX {
                continue;
            }
            let slot = &mut fill[g as usize];
            self.addrs[*slot as usize] = peer.address.octets();
            *slot += 1;
        }
        debug_assert!(self.addrs.len() >= base);
        for (g, &(view, group)) in group_keys.iter().enumerate() {
            let name_off = self.names.len() as u32;
            self.names.push(group.len() as u8);
            self.names.extend_from_slice(group.as_bytes());
            self.names.extend_from_slice(GROUP_SUFFIX);
            let name_len = (self.names.len() - name_off as usize) as u8;
            self.entries.push(Entry {
                name_off,
                view,
                a: starts[g],
                b: group_sizes[g],
                c: g as u32,
                name_len,
                kind: Kind::Group,
                zone: self.internal_zone,
            });
        }
        self.n_groups = group_keys.len() as u32;
        // `_peer.internal` TXT (or an empty non-terminal for an org without peers) and
        // `_g.internal`, an empty non-terminal, in every view.
        for (view, names) in per_view.iter_mut().enumerate() {
            // The store lists peers by name already; sort only if it did not.
            if !names.is_sorted() {
                names.sort_unstable();
            }
            let view = view as u32;
            let zone = self.internal_zone;
            if names.is_empty() {
                self.push(view, PEER_SUFFIX, Kind::Empty, zone, 0, 0);
            } else {
                let off = self.txt.len();
                split_txt_into(names.iter().copied(), MAX_TXT_RDATA, &mut self.txt);
                let len = self.txt.len() - off;
                self.push(view, PEER_SUFFIX, Kind::Txt, zone, off as u32, len as u32);
            }
            self.push(view, GROUP_SUFFIX, Kind::Empty, zone, 0, 0);
        }
    }

    /// Static names and their ancestors inside their zone, in every view: delegated. Replaces a
    /// dynamic entry of the same name (the full handler merges both).
    fn static_names(&mut self, n_views: usize) {
        let settings = self.settings;
        let mut seen: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        for (z, zone) in settings.zones.iter().enumerate() {
            let z = z as u8;
            for name in &zone.static_names {
                let mut cur: &[u8] = name;
                // Walk up to the apex (inclusive); stop if the name is outside the zone.
                while is_within(cur, &zone.origin) {
                    if !seen.insert(cur) {
                        break;
                    }
                    for view in 0..n_views as u32 {
                        self.push(view, cur, Kind::Delegate, z, 0, 0);
                    }
                    if cur.len() == zone.origin.len() {
                        break;
                    }
                    cur = &cur[1 + usize::from(cur[0])..];
                }
            }
        }
    }
}

impl Index {
    /// Builds the hash table over `entries`; a later entry with the same (view, name) replaces an
    /// earlier one (static names over dynamic ones).
    fn fill_table(&mut self, mut entries: Vec<Entry>) {
        let cap = (entries.len() * 2).next_power_of_two().max(16);
        let mut slots = vec![0u64; cap];
        let mask = cap - 1;
        for (i, e) in entries.iter().enumerate() {
            let name =
                &self.names[e.name_off as usize..e.name_off as usize + usize::from(e.name_len)];
            let h = hash_name(self.seed, e.view, name);
            let tag = h >> 32;
            let mut s = (h as usize) & mask;
            loop {
                let slot = slots[s];
                if slot == 0 {
                    slots[s] = (tag << 32) | (i as u64 + 1);
                    break;
                }
                if slot >> 32 == tag {
                    let j = (slot as u32 - 1) as usize;
                    let o = &entries[j];
                    let other = &self.names
                        [o.name_off as usize..o.name_off as usize + usize::from(o.name_len)];
                    if o.view == e.view && other == name {
                        slots[s] = (tag << 32) | (i as u64 + 1);
                        break;
                    }
                }
                s = (s + 1) & mask;
            }
        }
        // A replaced entry stays in the array, unreachable; there are at most a few (static names).
        entries.shrink_to_fit();
        self.slots = slots.into_boxed_slice();
        self.mask = mask;
        self.entries = entries.into_boxed_slice();
    }
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

/// Appends the TXT RDATA of the comma-separated `names`: character-strings of at most 255 bytes
/// that never break inside a name (the comma ends the string before a break, and always fits), stopping at the last
/// name that keeps the RDATA within `max_rdata` bytes.
pub fn split_txt_into<'n>(
    names: impl IntoIterator<Item = &'n str>,
    max_rdata: usize,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    // Offset of the current string's length byte, if a string is open.
    let mut open: Option<usize> = None;
    for name in names {
        let cur_len = open.map_or(0, |o| out.len() - o - 1);
        // Keep room for the comma that ends the string if another name follows (the full
        // handler's snapshot splits the same way).
        let needs_new = open.is_none() || cur_len + 1 + name.len() + 1 > 255;
        let used = out.len() - start;
        let after = if open.is_none() {
            used + 1 + name.len()
        } else if needs_new {
            used + 1 + 1 + name.len()
        } else {
            used + 1 + name.len()
        };
        if after > max_rdata {
            break;
        }
        match open {
            Some(o) if !needs_new => {
                out.push(b',');
                out.extend_from_slice(name.as_bytes());
                out[o] = (out.len() - o - 1) as u8;
            }
            Some(o) => {
                // The comma closes the previous string.
                out.push(b',');
                out[o] = (out.len() - o - 1) as u8;
                let o = out.len();
                out.push(0);
                out.extend_from_slice(name.as_bytes());
                out[o] = name.len() as u8;
                open = Some(o);
            }
            None => {
                let o = out.len();
                out.push(name.len() as u8);
                out.extend_from_slice(name.as_bytes());
                open = Some(o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(rdata: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < rdata.len() {
            let n = usize::from(rdata[at]);
            out.push(String::from_utf8(rdata[at + 1..at + 1 + n].to_vec()).unwrap());
            at += 1 + n;
        }
        out
    }

    #[test]
    fn txt_split_keeps_names_whole() {
        let names: Vec<String> = (0..200).map(|i| format!("peer-{i:04}")).collect();
        let mut rdata = Vec::new();
        split_txt_into(names.iter().map(String::as_str), MAX_TXT_RDATA, &mut rdata);
        let s = strings(&rdata);
        assert!(s.len() > 1);
        assert!(s.iter().all(|s| !s.is_empty() && s.len() <= 255));
        assert_eq!(s.concat(), names.join(","));
        for st in &s {
            for part in st.split(',').filter(|p| !p.is_empty()) {
                assert!(names.iter().any(|n| n == part), "{part} was cut");
            }
        }
    }

    #[test]
    fn txt_split_small_empty_and_capped() {
        let mut r = Vec::new();
        split_txt_into(["a", "b"], MAX_TXT_RDATA, &mut r);
        assert_eq!(r, b"\x03a,b");
        let mut r = Vec::new();
        split_txt_into([], MAX_TXT_RDATA, &mut r);
        assert!(r.is_empty());
        let long = "x".repeat(63);
        let mut r = Vec::new();
        split_txt_into([long.as_str(); 5], MAX_TXT_RDATA, &mut r);
        let s = strings(&r);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].len(), 3 * 63 + 3, "three names and their commas");
        assert_eq!(s.concat(), [long.as_str(); 5].join(","));
        let names: Vec<String> = (0..10_000).map(|i| format!("peer-{i:05}")).collect();
        let mut r = Vec::new();
        split_txt_into(names.iter().map(String::as_str), 1000, &mut r);
        assert!(r.len() <= 1000 && r.len() > 900, "{}", r.len());
        let list = strings(&r).concat();
        assert!(!list.ends_with(','));
        assert!(names.join(",").starts_with(&list));
    }

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
