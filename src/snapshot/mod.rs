//! The DNS snapshot: an immutable, query-ready copy of every org's names, and its publisher.
//!
//! [`Snapshot::build`] turns a [`Dump`] of the store into one [`View`] per org: a hash map from a
//! lowercase wire-format name (see [`name`]) to an [`Entry`] whose records are prebuilt, both as
//! hickory [`Record`]s and as answer bytes ready to copy into a packet. A query costs one
//! `Arc` load, one view choice by source address and one map lookup; nothing is built per query.
//!
//! [`SnapshotHandle`] holds the current snapshot behind an `ArcSwap` and announces the generation
//! of every published snapshot on a `watch` channel, so a caller can wait until its write is
//! visible. [`start`] runs the publisher: it rebuilds the whole snapshot whenever the store
//! reports a change (a burst of writes gives one rebuild) and never patches it.
//!
//! This module never touches sockets; it holds hickory record types only as prebuilt data
//! for `dns/`.
//!
//! # Answering from raw packets
//! Everything a packet-level responder needs is precomputed and reachable without allocation:
//! 1. [`SnapshotHandle::load`], then [`Snapshot::view_for`] with the source address (`None`:
//!    REFUSED).
//! 2. Copy the question name's labels lowercased into a stack buffer (as [`name::wire_lower`]
//!    does) and call [`View::get`] with it.
//! 3. No entry: [`Snapshot::zone_for`] on the same bytes gives the zone (`None`: REFUSED) and
//!    [`Zone::soa_negative_wire`] the authority record of the NXDOMAIN.
//! 4. An entry: [`Entry::rrset`] for the type; none means NODATA with the SOA of
//!    [`Entry::zone`]. A set's [`RrSet::wire`] holds its answer records with the owner as a
//!    pointer to offset 12 (the question), so they copy straight after an echoed question;
//!    [`RrSet::uniform_len`] (28 for AAAA) gives record boundaries and [`Entry::next_rotation`]
//!    the round-robin start.
//!
//! The full path's truncation rule (how many records fit a given size, keeping the OPT) is
//! `dns::answers_that_fit`; a fast path that uses it answers record for record the same.

mod build;
pub mod name;
mod publisher;
pub mod zone;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::proto::rr::{Name, Record, RecordType};
use ipnet::IpNet;
use tokio::sync::watch;

use crate::config::{DnsConfig, ViewConfig};
use crate::model::{Generation, OrgSlug};
use crate::store::{Dump, StoreError};

pub use publisher::start;
pub use zone::StaticZone;

/// The hash map type of a view: lowercase wire-format name → entry.
pub type NameMap = std::collections::HashMap<Box<[u8]>, Entry, foldhash::fast::RandomState>;

/// What can go wrong while preparing or refreshing snapshots.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The zones folder could not be read.
    #[error("reading zones folder {path}: {source}")]
    ZonesDir {
        /// The folder.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A zone file is invalid.
    #[error("zone {file}: {message}")]
    Zone {
        /// The file (or `built-in …`).
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// The first load from the store failed.
    #[error("loading the store for the first DNS snapshot: {0}")]
    Load(#[source] StoreError),
}

/// What a snapshot is built from besides the store's rows.
#[derive(Debug, Clone)]
pub struct SnapshotSettings {
    /// TTL of the generated records (peers, groups, `_peer` TXT, `ns`, `gateway`), seconds.
    pub ttl: u32,
    /// Source CIDR → org views, beside each org's own /48.
    pub views: Vec<ViewConfig>,
    /// Static zones merged into every view; always holds `internal.`.
    pub zones: Arc<[StaticZone]>,
}

impl Default for SnapshotSettings {
    /// TTL 5, loopback → `personal`, the built-in `internal.` zone.
    fn default() -> Self {
        let dns = DnsConfig::default();
        SnapshotSettings {
            ttl: dns.ttl,
            views: dns.views,
            zones: Arc::from(vec![zone::builtin_internal()]),
        }
    }
}

impl SnapshotSettings {
    /// Settings from the `[dns]` section: zones from `zones_dir`, else from `./zones` when that
    /// folder exists, else the built-in `internal.zone`.
    ///
    /// # Errors
    /// [`SnapshotError::ZonesDir`] or [`SnapshotError::Zone`].
    pub fn from_config(dns: &DnsConfig) -> Result<SnapshotSettings, SnapshotError> {
        let default_dir = std::path::Path::new("zones");
        let zones = match &dns.zones_dir {
            Some(dir) => zone::load_zones_dir(dir)?,
            None if default_dir.is_dir() => zone::load_zones_dir(default_dir)?,
            None => vec![zone::builtin_internal()],
        };
        Ok(SnapshotSettings {
            ttl: dns.ttl,
            views: dns.views.clone(),
            zones: Arc::from(zone::with_internal(zones)?),
        })
    }
}

/// An immutable, query-ready copy of every org's names at one generation.
#[derive(Debug)]
pub struct Snapshot {
    generation: Generation,
    ttl: u32,
    zones: Box<[Zone]>,
    views: Box<[View]>,
    /// Org /48 (the address's top 48 bits) → index into `views`.
    by_prefix: std::collections::HashMap<u64, u32, foldhash::fast::RandomState>,
    /// Other source networks → index into `views`, most specific first.
    sources: Box<[(IpNet, u32)]>,
    /// Orgs named by a configured view that do not exist.
    missing_view_orgs: Box<[OrgSlug]>,
    /// The UDP fast path's table of the same names (see [`crate::fastpath`]).
    fast: crate::fastpath::Index,
}

impl Snapshot {
    /// Builds the snapshot of `dump`. Pure: no I/O, the same input gives the same answers.
    pub fn build(dump: &Dump, settings: &SnapshotSettings) -> Snapshot {
        build::build(dump, settings)
    }

    /// The store generation the snapshot was built from.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// TTL of the generated records.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// The served zones; an [`Entry::zone`] indexes this.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// One view per org.
    pub fn views(&self) -> &[View] {
        &self.views
    }

    /// The view of `org`, if the org exists.
    pub fn view_of(&self, org: &OrgSlug) -> Option<&View> {
        self.views.iter().find(|v| &v.org == org)
    }

    /// The view a query from `src` is answered in: the org whose /48 holds `src`, else the most
    /// specific configured source network holding it. `None`: the query is refused.
    pub fn view_for(&self, src: IpAddr) -> Option<&View> {
        let src = src.to_canonical();
        if let IpAddr::V6(v6) = src
            && let Some(&i) = self.by_prefix.get(&prefix48(u128::from(v6)))
        {
            return Some(&self.views[i as usize]);
        }
        self.sources
            .iter()
            .find(|(net, _)| net.contains(&src))
            .map(|&(_, i)| &self.views[i as usize])
    }

    /// The most specific served zone holding the lowercase wire name `wire`, with its index.
    pub fn zone_for(&self, wire: &[u8]) -> Option<(u16, &Zone)> {
        let mut best: Option<(u16, &Zone)> = None;
        for (i, zone) in self.zones.iter().enumerate() {
            if name::is_within(wire, &zone.origin_wire)
                && best.is_none_or(|(_, b)| zone.origin_wire.len() > b.origin_wire.len())
            {
                best = Some((i as u16, zone));
            }
        }
        best
    }

    /// Orgs named by a configured view that do not exist (their sources are refused).
    pub fn missing_view_orgs(&self) -> &[OrgSlug] {
        &self.missing_view_orgs
    }

    /// The UDP fast path's index of this snapshot: the same peers, groups, `_peer` TXT and views,
    /// with static names left to the full handler.
    pub fn fast(&self) -> &crate::fastpath::Index {
        &self.fast
    }
}

/// The top 48 bits of an IPv6 address: an org prefix key.
fn prefix48(addr: u128) -> u64 {
    (addr >> 80) as u64
}

/// A served zone.
#[derive(Debug)]
pub struct Zone {
    origin: Name,
    origin_wire: Box<[u8]>,
    soa_negative: Record,
    soa_negative_wire: Box<[u8]>,
}

impl Zone {
    /// The apex, lowercase.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The apex in lowercase wire format.
    pub fn origin_wire(&self) -> &[u8] {
        &self.origin_wire
    }

    /// The SOA for the authority section of NXDOMAIN and NODATA answers, its TTL lowered to the
    /// SOA minimum (RFC 2308 §3).
    pub fn soa_negative(&self) -> &Record {
        &self.soa_negative
    }

    /// [`Zone::soa_negative`] as a complete resource record in wire format (full owner name, no
    /// compression), ready to copy into the authority section of a packet.
    pub fn soa_negative_wire(&self) -> &[u8] {
        &self.soa_negative_wire
    }
}

/// One org's names.
#[derive(Debug)]
pub struct View {
    org: OrgSlug,
    names: NameMap,
}

impl View {
    /// The org whose view this is.
    pub fn org(&self) -> &OrgSlug {
        &self.org
    }

    /// The entry for a lowercase wire-format name (see [`name::wire_lower`]).
    pub fn get(&self, wire: &[u8]) -> Option<&Entry> {
        self.names.get(wire)
    }

    /// Every name of the view with its entry.
    pub fn names(&self) -> &NameMap {
        &self.names
    }
}

/// Everything known about one name in one view.
#[derive(Debug)]
pub struct Entry {
    zone: u16,
    rrsets: RrSets,
    rotation: AtomicU32,
}

/// An entry's record sets. Nearly every name has exactly one, kept inline so a lookup follows
/// no extra pointer and a rebuild makes one allocation fewer per name.
#[derive(Debug)]
enum RrSets {
    None,
    One(RrSet),
    Many(Box<[RrSet]>),
}

impl Entry {
    fn new(zone: u16, mut rrsets: Vec<RrSet>) -> Entry {
        let rrsets = match rrsets.len() {
            0 => RrSets::None,
            1 => RrSets::One(rrsets.remove(0)),
            _ => {
                rrsets.sort_by_key(|s| u16::from(s.record_type));
                RrSets::Many(rrsets.into_boxed_slice())
            }
        };
        Entry {
            zone,
            rrsets,
            rotation: AtomicU32::new(0),
        }
    }

    /// Index of the zone the name belongs to, into [`Snapshot::zones`].
    pub fn zone(&self) -> u16 {
        self.zone
    }

    /// The name's record sets, ordered by type. Empty for an empty non-terminal (NODATA).
    pub fn rrsets(&self) -> &[RrSet] {
        match &self.rrsets {
            RrSets::None => &[],
            RrSets::One(set) => std::slice::from_ref(set),
            RrSets::Many(sets) => sets,
        }
    }

    /// The record set of type `record_type`.
    pub fn rrset(&self, record_type: RecordType) -> Option<&RrSet> {
        self.rrsets().iter().find(|s| s.record_type == record_type)
    }

    /// The next answer's rotation counter: answer `k` starts at record `k % len` (round robin).
    /// One relaxed atomic add; shared by every query path so the order keeps rotating.
    pub fn next_rotation(&self) -> u32 {
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds `set`, joining a set of the same type.
    fn merge(&mut self, set: RrSet) {
        let mut sets = match std::mem::replace(&mut self.rrsets, RrSets::None) {
            RrSets::None => Vec::new(),
            RrSets::One(one) => vec![one],
            RrSets::Many(many) => many.into_vec(),
        };
        match sets.iter_mut().find(|s| s.record_type == set.record_type) {
            Some(existing) => {
                let mut records = std::mem::take(&mut existing.records).into_vec();
                records.extend(set.records.into_vec());
                *existing = RrSet::new(records);
            }
            None => sets.push(set),
        }
        *self = Entry::new(self.zone, sets);
    }
}

/// The records of one name and type, prebuilt.
#[derive(Debug, Clone)]
pub struct RrSet {
    record_type: RecordType,
    records: Box<[Record]>,
    wire: Box<[u8]>,
    uniform_len: u16,
}

/// Bytes of an answer record before its RDATA when its owner is a compression pointer:
/// pointer (2), type (2), class (2), TTL (4), RDLENGTH (2).
pub const WIRE_RR_HEADER: usize = 12;

impl RrSet {
    /// Builds the set; `records` must be non-empty and share owner name and type.
    fn new(records: Vec<Record>) -> RrSet {
        let record_type = records[0].record_type();
        let mut wire = Vec::with_capacity(records.len() * (WIRE_RR_HEADER + 16));
        let mut lens = records.iter().map(|r| build::encode_answer(r, &mut wire));
        let first = lens.next().unwrap_or(0);
        let uniform = lens.all(|l| l == first);
        RrSet {
            record_type,
            records: records.into_boxed_slice(),
            wire: wire.into_boxed_slice(),
            uniform_len: if uniform { first as u16 } else { 0 },
        }
    }

    /// The record type.
    pub fn record_type(&self) -> RecordType {
        self.record_type
    }

    /// The records, in their base order (answers rotate from [`Entry::next_rotation`]).
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The records as answer bytes, concatenated in base order. Each record's owner is the
    /// compression pointer `0xC00C` (the question name right after the header), followed by type,
    /// class, TTL, RDLENGTH and the uncompressed RDATA.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// The length of each record in [`RrSet::wire`] when they all have the same length (AAAA:
    /// 28), else 0.
    pub fn uniform_len(&self) -> usize {
        usize::from(self.uniform_len)
    }

    /// The length of each record in [`RrSet::wire`], in base order.
    pub fn wire_lens(&self) -> impl Iterator<Item = usize> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let len_at = at + WIRE_RR_HEADER - 2;
            let rdlen = u16::from_be_bytes([*self.wire.get(len_at)?, *self.wire.get(len_at + 1)?]);
            let len = WIRE_RR_HEADER + usize::from(rdlen);
            at += len;
            Some(len)
        })
    }
}

/// Holds the current snapshot and announces each one published. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SnapshotHandle {
    inner: Arc<HandleInner>,
}

#[derive(Debug)]
struct HandleInner {
    current: ArcSwap<Snapshot>,
    published: watch::Sender<Generation>,
}

impl SnapshotHandle {
    /// A handle whose current snapshot is `first` (no store needed, e.g. in tests).
    pub fn new(first: Snapshot) -> SnapshotHandle {
        let (published, _) = watch::channel(first.generation);
        SnapshotHandle {
            inner: Arc::new(HandleInner {
                current: ArcSwap::from_pointee(first),
                published,
            }),
        }
    }

    /// The current snapshot: one atomic load and reference-count increment.
    pub fn load(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// The generation of the newest published snapshot; changes on every publish.
    pub fn published(&self) -> watch::Receiver<Generation> {
        self.inner.published.subscribe()
    }

    /// Makes `snapshot` current: every query that starts after this returns sees it. Returns the
    /// snapshot it replaced (freeing a large one takes a while: the publisher does it on a
    /// blocking thread).
    pub fn publish(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        let generation = snapshot.generation;
        let previous = self.inner.current.swap(Arc::new(snapshot));
        self.inner.published.send_replace(generation);
        previous
    }

    /// Waits until a snapshot of at least `generation` is published.
    pub async fn wait_for(&self, generation: Generation) {
        let mut rx = self.published();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|g| *g >= generation).await;
    }

    /// Like [`SnapshotHandle::wait_for`], giving up after `timeout`; returns whether it got there.
    pub async fn wait_for_timeout(&self, generation: Generation, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.wait_for(generation))
            .await
            .is_ok()
    }
}
