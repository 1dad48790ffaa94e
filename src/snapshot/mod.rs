//! The DNS snapshot: an immutable, query-ready copy of every org's names, and its publisher.
//!
//! Data flow: the store's change feed → [`Model`] (every org's peers and groups, patched one
//! change at a time) → the answer table ([`table::Index`], rebuilt only where a change
//! landed) → [`Snapshot`] → `ArcSwap`. The table is the one DNS data model: the UDP fast path
//! copies its bytes into packets, the full hickory handler (`dns/`) reads the same entries and
//! builds records from them only for the questions it gets. Static zones (`zones/`) are parsed
//! once into [`Base`], shared by every snapshot.
//!
//! [`SnapshotHandle`] holds the current snapshot behind an `ArcSwap` and announces the generation
//! of every published snapshot on a `watch` channel, so a caller can wait until its write is
//! visible. [`start`] runs the publisher: a full build at start and on resync, and otherwise a
//! patch per batch of changes that costs O(changes), not O(peers).
//!
//! This module never touches sockets.

mod build;
pub mod disk;
mod memory;
pub mod model;
pub mod name;
mod publisher;
pub mod soa;
pub mod table;
pub mod zone;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::proto::rr::{Name, Record, RecordType};
use tokio::sync::watch;

use crate::config::{DnsConfig, ViewConfig};
use crate::model::{Generation, Org, OrgSlug};
use crate::store::{Dump, StoreError};
pub use model::{Model, Touched};
pub use table::{FastZone, Hit, Index, IndexSettings};

pub(crate) use build::org_record;
pub use publisher::{start, start_persisted};
pub use zone::StaticZone;

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
    /// The largest UDP answer (`[dns] max_udp_payload`), for the fast path and the full handler.
    pub max_udp_payload: u16,
}

impl Default for SnapshotSettings {
    /// TTL 5, loopback → `personal`, the built-in `internal.` zone.
    fn default() -> Self {
        let dns = DnsConfig::default();
        SnapshotSettings {
            ttl: dns.ttl,
            views: dns.views,
            zones: Arc::from(vec![zone::builtin_internal()]),
            max_udp_payload: dns.max_udp_payload,
        }
    }
}

impl SnapshotSettings {
    /// Settings from the `[dns]` section: zones from `zones_dir` when it is set, else the
    /// built-in `internal.zone`. Nothing is read from the working directory (issue 22: a stray
    /// `./zones` must not change every org's answers); the folder and each file loaded are
    /// logged.
    ///
    /// # Errors
    /// [`SnapshotError::ZonesDir`] or [`SnapshotError::Zone`].
    pub fn from_config(dns: &DnsConfig) -> Result<SnapshotSettings, SnapshotError> {
        let zones = match &dns.zones_dir {
            Some(dir) => {
                let zones = zone::load_zones_dir(dir)?;
                tracing::info!(dir = %dir.display(), zones = zones.len(), "static zones loaded");
                for z in &zones {
                    tracing::info!(file = %z.file, origin = %z.origin, records = z.records.len(), "static zone");
                }
                zones
            }
            None => vec![zone::builtin_internal()],
        };
        Ok(SnapshotSettings {
            ttl: dns.ttl,
            views: dns.views.clone(),
            zones: Arc::from(zone::with_internal(zones)?),
            max_udp_payload: dns.max_udp_payload,
        })
    }
}

/// What every snapshot of one server shares: the zones, the static names with their records, and
/// the answer table's settings. Built once from [`SnapshotSettings`].
#[derive(Debug)]
pub struct Base {
    ttl: u32,
    /// The index of `internal.` in `zones`.
    internal: u16,
    zones: Box<[Zone]>,
    statics: StaticMap,
    index_settings: IndexSettings,
    views: Vec<ViewConfig>,
}

/// Static names (lowercase wire format) → their records, shared by every view.
pub type StaticMap = std::collections::HashMap<Box<[u8]>, StaticEntry, foldhash::fast::RandomState>;

impl Base {
    /// Prepares everything that does not depend on the store.
    pub fn new(settings: &SnapshotSettings) -> Arc<Base> {
        Arc::new(build::base(settings))
    }
}

/// An immutable, query-ready copy of every org's names at one generation.
///
/// Its answer table ([`Snapshot::fast`]) serves both query paths: the UDP fast path writes its
/// bytes directly, the full handler builds hickory records from the same entries when asked.
#[derive(Debug)]
pub struct Snapshot {
    generation: Generation,
    base: Arc<Base>,
    orgs: Arc<[Org]>,
    /// Orgs named by a configured view that do not exist.
    missing_view_orgs: Arc<[OrgSlug]>,
    /// Each zone's SOA at this generation: (apex record, negative record), the serial of
    /// `internal.` moved on by the generation ([`Index::soa_serial`]).
    soas: Box<[(Record, Record)]>,
    fast: Index,
}

impl Snapshot {
    /// Builds the snapshot of `dump`. Pure: no I/O, the same input gives the same answers.
    pub fn build(dump: &Dump, settings: &SnapshotSettings) -> Snapshot {
        Snapshot::from_model(Base::new(settings), &Model::from_dump(dump))
    }

    /// Builds the whole snapshot of `model`.
    pub fn from_model(base: Arc<Base>, model: &Model) -> Snapshot {
        let fast = Index::from_model(model, &base.index_settings);
        let (orgs, missing_view_orgs) = orgs_of(&base, model);
        Snapshot {
            generation: model.generation(),
            soas: soas_of(&base, model.generation()),
            base,
            orgs,
            missing_view_orgs,
            fast,
        }
    }

    /// The snapshot of `model` after a batch of changes that touched `touched`: only the pieces
    /// of the answer table holding those names are rebuilt, the rest is shared with `self`.
    pub fn apply(&self, model: &Model, touched: &Touched) -> Snapshot {
        let fast = self.fast.apply(model, touched);
        let (orgs, missing_view_orgs) = if touched.orgs_added {
            orgs_of(&self.base, model)
        } else {
            (Arc::clone(&self.orgs), Arc::clone(&self.missing_view_orgs))
        };
        Snapshot {
            generation: model.generation(),
            base: Arc::clone(&self.base),
            soas: soas_of(&self.base, model.generation()),
            orgs,
            missing_view_orgs,
            fast,
        }
    }

    /// The store generation the snapshot was built from.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// TTL of the generated records.
    pub fn ttl(&self) -> u32 {
        self.base.ttl
    }

    /// The shared, store-independent part.
    pub fn base(&self) -> &Arc<Base> {
        &self.base
    }

    /// The served zones; [`Hit::zone`] and [`StaticEntry::zone`] index this.
    pub fn zones(&self) -> &[Zone] {
        &self.base.zones
    }

    /// The apex SOA record of zone `zone` (an index into [`Snapshot::zones`]) at this
    /// generation.
    pub fn soa(&self, zone: u16) -> Option<&Record> {
        self.soas.get(usize::from(zone)).map(|(apex, _)| apex)
    }

    /// The SOA for the authority section of NXDOMAIN and NODATA answers in zone `zone`, its
    /// TTL lowered to the SOA minimum (RFC 2308 §3), at this generation.
    pub fn soa_negative(&self, zone: u16) -> Option<&Record> {
        self.soas
            .get(usize::from(zone))
            .map(|(_, negative)| negative)
    }

    /// The orgs, in view order.
    pub fn orgs(&self) -> &[Org] {
        &self.orgs
    }

    /// The view index of `org`, if the org exists.
    pub fn view_of(&self, org: &OrgSlug) -> Option<u32> {
        self.orgs
            .iter()
            .position(|o| &o.slug == org)
            .map(|i| i as u32)
    }

    /// The view a query from `src` is answered in: the org whose /48 holds `src`, else the most
    /// specific configured source network holding it. `None`: the query is refused.
    pub fn view_for(&self, src: IpAddr) -> Option<u32> {
        self.fast.view_for(src)
    }

    /// The most specific served zone holding the lowercase wire name `wire`, with its index.
    pub fn zone_for(&self, wire: &[u8]) -> Option<(u16, &Zone)> {
        let i = self.fast.zone_of(wire)?;
        Some((u16::from(i), &self.base.zones[usize::from(i)]))
    }

    /// The dynamic entry of a lowercase wire name in `view` (static names are
    /// [`Hit::is_static`]; their records are in [`Snapshot::static_entry`]).
    pub fn get(&self, view: u32, wire: &[u8]) -> Option<Hit<'_>> {
        self.fast.get(view, wire)
    }

    /// The records a static zone gives a lowercase wire name, the same in every view.
    pub fn static_entry(&self, wire: &[u8]) -> Option<&StaticEntry> {
        self.base.statics.get(wire)
    }

    /// Orgs named by a configured view that do not exist (their sources are refused).
    pub fn missing_view_orgs(&self) -> &[OrgSlug] {
        &self.missing_view_orgs
    }

    /// The answer table of this snapshot, shared by the UDP fast path and the full handler.
    pub fn fast(&self) -> &Index {
        &self.fast
    }
}

/// Each zone's (apex, negative) SOA records with the serial of `generation`.
fn soas_of(base: &Base, generation: Generation) -> Box<[(Record, Record)]> {
    base.zones
        .iter()
        .enumerate()
        .map(|(i, zone)| {
            let internal = i == usize::from(base.internal);
            let serial = |record: &Record| {
                let mut record = record.clone();
                if let hickory_server::proto::rr::RData::SOA(soa) = &mut record.data {
                    soa.serial = table::soa_serial(soa.serial, internal, generation.0);
                }
                record
            };
            (serial(&zone.soa), serial(&zone.soa_negative))
        })
        .collect()
}

fn orgs_of(base: &Base, model: &Model) -> (Arc<[Org]>, Arc<[OrgSlug]>) {
    let orgs: Arc<[Org]> = model.orgs().iter().map(|o| o.org().clone()).collect();
    let missing = base
        .views
        .iter()
        .filter(|v| model.view_of(&v.org).is_none())
        .map(|v| v.org.clone())
        .collect();
    (orgs, missing)
}

/// A served zone.
#[derive(Debug)]
pub struct Zone {
    origin: Name,
    origin_wire: Box<[u8]>,
    /// The apex SOA as the zone file gives it.
    soa: Record,
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
    /// SOA minimum (RFC 2308 §3), with the zone file's serial ([`Snapshot::soa_negative`] has
    /// the serial of a generation).
    pub fn soa_negative(&self) -> &Record {
        &self.soa_negative
    }

    /// [`Zone::soa_negative`] as a complete resource record in wire format (full owner name, no
    /// compression): what the fast path copies into the authority section.
    pub fn soa_negative_wire(&self) -> &[u8] {
        &self.soa_negative_wire
    }
}

/// A static name's record sets (from `zones/`), or none for an empty non-terminal.
#[derive(Debug)]
pub struct StaticEntry {
    zone: u16,
    rrsets: Box<[RrSet]>,
    rotation: AtomicU32,
}

impl StaticEntry {
    /// Index of the zone the name belongs to, into [`Snapshot::zones`].
    pub fn zone(&self) -> u16 {
        self.zone
    }

    /// The name's record sets, ordered by type. Empty for an empty non-terminal (NODATA).
    pub fn rrsets(&self) -> &[RrSet] {
        &self.rrsets
    }

    /// The record set of type `record_type`.
    pub fn rrset(&self, record_type: RecordType) -> Option<&RrSet> {
        self.rrsets.iter().find(|s| s.record_type == record_type)
    }

    /// The next answer's rotation counter (round robin over a multi-record set).
    pub fn next_rotation(&self) -> u32 {
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }
}

/// The records of one static name and type.
#[derive(Debug, Clone)]
pub struct RrSet {
    record_type: RecordType,
    records: Box<[Record]>,
    /// Each record's length as an answer whose owner is a 2-byte pointer.
    lens: Box<[u16]>,
}

/// Bytes of an answer record before its RDATA when its owner is a compression pointer:
/// pointer (2), type (2), class (2), TTL (4), RDLENGTH (2).
pub const WIRE_RR_HEADER: usize = 12;

impl RrSet {
    /// Builds the set; `records` must be non-empty and share owner name and type.
    fn new(records: Vec<Record>) -> RrSet {
        let record_type = records[0].record_type();
        let mut scratch = Vec::new();
        let lens = records
            .iter()
            .map(|r| {
                scratch.clear();
                build::encode_answer(r, &mut scratch) as u16
            })
            .collect();
        RrSet {
            record_type,
            records: records.into_boxed_slice(),
            lens,
        }
    }

    /// The record type.
    pub fn record_type(&self) -> RecordType {
        self.record_type
    }

    /// The records, in their base order (answers rotate).
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Each record's length as an answer (owner compressed to a pointer), in base order.
    pub fn wire_lens(&self) -> impl Iterator<Item = usize> + '_ {
        self.lens.iter().map(|&l| usize::from(l))
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
    /// The publisher's inbox for new settings; unset for a handle without a publisher.
    reconfigure: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Reconfigure>>,
}

/// New settings for a running publisher (a configuration reload, issue 18): the views, TTL,
/// zones and UDP payload size, and the health-aware groups.
#[derive(Debug, Clone)]
pub struct Reconfigure {
    /// What the snapshot is built from besides the store.
    pub settings: SnapshotSettings,
    /// Health-aware groups.
    pub groups: crate::config::GroupsConfig,
}

impl SnapshotHandle {
    /// A handle whose current snapshot is `first` (no store needed, e.g. in tests).
    pub fn new(first: Snapshot) -> SnapshotHandle {
        let (published, _) = watch::channel(first.generation);
        SnapshotHandle {
            inner: Arc::new(HandleInner {
                current: ArcSwap::from_pointee(first),
                published,
                reconfigure: std::sync::OnceLock::new(),
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

    /// Hands new settings to the publisher, which rebuilds the snapshot from what it holds (no
    /// store read) and publishes it. Returns `false` when this handle has no publisher.
    pub fn reconfigure(&self, next: Reconfigure) -> bool {
        self.inner
            .reconfigure
            .get()
            .is_some_and(|tx| tx.send(next).is_ok())
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
