//! Change sets after they commit: the change log in the database, the in-process announcements,
//! and the task that follows the stored generation (other replicas' writes, lost announcements).
//!
//! Three layers, each a fallback for the one before:
//! - [`Changes`]: a writer announces its [`ChangeSet`] right after its commit. A bounded buffer
//!   keeps the recent ones by generation, and a `watch` carries the newest generation announced.
//! - The `change_log` table, written in the same transaction as each bump: whatever the buffer
//!   misses (an announcement that came out of order or never came, another replica's write) is
//!   read from it with `WHERE generation > $at ORDER BY generation`.
//! - The watcher task reads the stored generation every second, and on PostgreSQL also on each
//!   NOTIFY. A NOTIFY is only a hint: its payload is never trusted, since any role may send one
//!   (issue 9). The task never reads or writes change sets itself.
//!
//! - With a hot standby (`read_database_url`), the watcher reads the standby's generation every
//!   `read_poll_period` instead (a standby delivers no NOTIFY; the primary's NOTIFY stays a hint),
//!   and the change log is read from the standby, except the sets between what the standby holds
//!   and this process's own newer commits, which come from the primary ([`Side`]).
//!
//! This module never decides when a consumer reloads: the feed does, from what it reads here.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use super::{Backend, Store, StoreError};
use crate::model::{
    Change, ChangeSet, Generation, GroupName, Org, OrgSlug, Peer, PeerName, RegionCode, TokenName,
};
use crate::wireguard::PublicKey;

/// Change-log entries younger than this are kept (so a replica that lags by less catches up
/// without a full reload).
pub(super) const CHANGE_LOG_MAX_AGE_SECS: i64 = 3600;

/// The newest this many change-log entries are kept whatever their age.
pub(super) const CHANGE_LOG_KEEP: i64 = 1024;

/// Every this many generations, a write prunes the change log.
pub(super) const PRUNE_EVERY: i64 = 64;

/// A prune looks at no more than this many of the oldest entries (more than `PRUNE_EVERY`, so it
/// keeps up with the writes).
pub(super) const PRUNE_BATCH: i64 = 512;

/// How many recent change sets [`Changes`] keeps in memory.
const RECENT_CAP: usize = 4096;

/// How many changes (peer rows, orgs) the recent change sets may hold together; beyond it the
/// oldest sets go, so a token delete with a million peers does not stay in memory. The newest set
/// always stays.
const RECENT_MAX_CHANGES: usize = 1 << 16;

/// How often the watcher reads the stored generation on PostgreSQL (where NOTIFY may be lost).
const POLL_EVERY: Duration = Duration::from_secs(1);

/// How often it does on SQLite, where one server owns the data directory (a lock keeps a second
/// one out) and announces its own writes: only a safety net, so kept rare enough to cost the
/// DNS path nothing measurable.
const SQLITE_POLL_EVERY: Duration = Duration::from_secs(10);

/// The bounds of a prune at `generation`, at unix time `now`: entries below the first and older
/// than the second may go.
pub(super) fn prune_bounds(generation: i64, now: i64) -> (i64, i64) {
    (
        generation - CHANGE_LOG_KEEP + 1,
        now - CHANGE_LOG_MAX_AGE_SECS,
    )
}

/// The stored form of a change set: a JSON array of [`Change`].
pub(super) fn encode_changes(changes: &[Change]) -> String {
    serde_json::to_string(changes).expect("plain data serializes to JSON")
}

/// Decodes what [`encode_changes`] wrote. Keys are trusted (checked when they were written), so
/// this does no curve arithmetic.
fn decode_changes(text: &str) -> Result<Vec<Change>, serde_json::Error> {
    let stored: Vec<StoredChange> = serde_json::from_str(text)?;
    Ok(stored.into_iter().map(StoredChange::into_change).collect())
}

/// [`Change`] as the change log holds it: the same JSON, read with trusted keys.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum StoredChange {
    OrgCreated(Org),
    PeerUpserted(StoredPeer),
    PeerRemoved(StoredPeer),
}

impl StoredChange {
    fn into_change(self) -> Change {
        match self {
            StoredChange::OrgCreated(org) => Change::OrgCreated(org),
            StoredChange::PeerUpserted(p) => Change::PeerUpserted(p.into_peer()),
            StoredChange::PeerRemoved(p) => Change::PeerRemoved(p.into_peer()),
        }
    }
}

/// [`Peer`]'s JSON with the key decoded by [`PublicKey::from_trusted_base64`].
#[derive(Deserialize)]
struct StoredPeer {
    org: OrgSlug,
    name: PeerName,
    group: GroupName,
    region: RegionCode,
    #[serde(deserialize_with = "trusted_key")]
    pubkey: PublicKey,
    address: Ipv6Addr,
    token: TokenName,
    created_at: i64,
    updated_at: i64,
    #[serde(default)]
    key_expires_at: Option<i64>,
}

impl StoredPeer {
    fn into_peer(self) -> Peer {
        Peer {
            org: self.org,
            name: self.name,
            group: self.group,
            region: self.region,
            pubkey: self.pubkey,
            address: self.address,
            token: self.token,
            created_at: self.created_at,
            updated_at: self.updated_at,
            key_expires_at: self.key_expires_at,
        }
    }
}

fn trusted_key<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    PublicKey::from_trusted_base64(&s).map_err(serde::de::Error::custom)
}

/// The in-process change channel: the newest committed [`Generation`] this process knows of, and
/// the change sets committed recently. Cheap to clone; every clone feeds the same channel.
#[derive(Debug, Clone)]
pub struct Changes {
    tx: watch::Sender<Generation>,
    recent: Arc<Mutex<Recent>>,
}

/// The recent change sets by generation, and how many changes they hold together.
#[derive(Debug, Default)]
struct Recent {
    sets: BTreeMap<Generation, Arc<ChangeSet>>,
    n_changes: usize,
}

impl Changes {
    /// A channel starting at `start`.
    pub fn new(start: Generation) -> Self {
        let (tx, _) = watch::channel(start);
        Changes {
            tx,
            recent: Arc::default(),
        }
    }

    /// Announces `generation` if it is newer than what was announced before.
    pub fn publish(&self, generation: Generation) {
        self.tx.send_if_modified(|cur| {
            if generation > *cur {
                *cur = generation;
                true
            } else {
                false
            }
        });
    }

    /// Keeps a committed change set among the recent ones and announces its generation. Writers
    /// may announce out of order; the feed only hands out runs without gaps.
    pub fn publish_set(&self, set: Arc<ChangeSet>) {
        let generation = set.generation;
        {
            let mut recent = self.recent();
            recent.n_changes += set.changes.len();
            if let Some(old) = recent.sets.insert(generation, set) {
                recent.n_changes -= old.changes.len();
            }
            while recent.sets.len() > RECENT_CAP
                || (recent.n_changes > RECENT_MAX_CHANGES && recent.sets.len() > 1)
            {
                if let Some((_, old)) = recent.sets.pop_first() {
                    recent.n_changes -= old.changes.len();
                }
            }
        }
        // Announce even when a newer generation was announced first, so feeds waiting for this
        // one (the gap before the newer one) wake up.
        self.tx.send_modify(|cur| *cur = (*cur).max(generation));
    }

    /// A receiver that sees every later announcement.
    pub fn subscribe(&self) -> watch::Receiver<Generation> {
        self.tx.subscribe()
    }

    /// The recent change sets from `first` on, as far as they follow each other without a gap;
    /// empty when `first` itself is not in memory.
    pub fn recent_from(&self, first: Generation) -> Vec<Arc<ChangeSet>> {
        let recent = self.recent();
        let mut out = Vec::new();
        let mut want = first;
        for (generation, set) in recent.sets.range(first..) {
            if *generation != want {
                break;
            }
            out.push(Arc::clone(set));
            want = Generation(want.0 + 1);
        }
        out
    }

    /// The change set of `generation`, if memory still holds it.
    pub(super) fn recent_at(&self, generation: Generation) -> Option<Arc<ChangeSet>> {
        self.recent().sets.get(&generation).cloned()
    }

    /// Forgets every change set held in memory: after the stored generation went backwards
    /// (restore, failover) they belong to another history.
    pub(super) fn forget_recent(&self) {
        *self.recent() = Recent::default();
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // Nothing panics while holding the lock, so it is never poisoned.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest generation announced so far.
    pub(super) fn announced(&self) -> Generation {
        *self.tx.borrow()
    }

    /// Takes note of the generation read from the database; `before` is what was announced just
    /// before the read. Everything announced had committed, so a read below it means the database
    /// went backwards (restore, failover): the change sets in memory belong to another history and
    /// go, the announced generation comes down to the stored one, and every receiver is woken so
    /// that feeds find out and reload.
    pub(super) fn observe_stored(&self, before: Generation, stored: Generation) {
        if stored < before {
            tracing::warn!(%stored, announced = %before, "the stored generation went backwards");
            self.forget_recent();
            self.tx.send_modify(|cur| {
                // A write announced meanwhile is newer than the read: leave it.
                if *cur == before {
                    *cur = stored;
                }
            });
        } else {
            self.publish(stored);
        }
    }
}

/// What the change log holds after a generation.
#[derive(Debug)]
pub(super) enum LogRead {
    /// The change sets right after it, consecutive and in order (empty: nothing newer).
    Sets(Vec<Arc<ChangeSet>>),
    /// The log cannot continue from there: it was pruned past it, or the stored generation is
    /// below it (restore, failover). Only a full reload helps.
    Gap,
}

/// Which database a change-log read goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// The reader: the standby when there is one (it may lag behind what this process
    /// committed), else the database.
    Reader,
    /// The primary (`database_url`), which holds every committed change set.
    Primary,
}

#[derive(sqlx::FromRow)]
struct LogRow {
    generation: i64,
    changes: String,
}

impl Store {
    /// Reads up to `limit` change sets after `after` from the change log, in one read snapshot
    /// together with the stored generation.
    ///
    /// `held` is the change set the caller applied last, when it has it (its generation is
    /// `after`). If the log still holds an entry for `after` that differs from it, the database
    /// switched to another history that has already grown past `after` (a restore or failover
    /// overtaken between two looks): a gap, like a generation below `after`.
    ///
    /// Read from a standby ([`Side::Reader`] with `read_database_url`), a stored generation below
    /// `after` only means the standby has not replayed this process's commits yet: nothing newer.
    pub(super) async fn read_change_log(
        &self,
        after: Generation,
        held: Option<&ChangeSet>,
        limit: i64,
        side: Side,
    ) -> Result<LogRead, StoreError> {
        let (backend, lagging) = match side {
            Side::Reader => (self.reader(), self.read.is_some()),
            Side::Primary => (self.backend.clone(), false),
        };
        let after_i = after.0 as i64;
        let held = held.filter(|set| set.generation == after);
        // Start at `after` itself when there is something to compare it with.
        let from = if held.is_some() { after_i } else { after_i + 1 };
        let (stored, rows): (i64, Vec<LogRow>) = read_tx_on!(&backend, |tx| {
            let stored: i64 = sqlx::query_scalar("SELECT generation FROM meta WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
            let rows = if stored >= from {
                sqlx::query_as(
                    "SELECT generation, changes FROM change_log WHERE generation >= $1 \
                     ORDER BY generation LIMIT $2",
                )
                .bind(from)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
            } else {
                Vec::new()
            };
            (stored, rows)
        });
        if stored < after_i {
            if lagging {
                return Ok(LogRead::Sets(Vec::new()));
            }
            return Ok(LogRead::Gap);
        }
        let mut rows = rows.into_iter().peekable();
        // Without an entry for `after` (pruned) there is nothing to compare with.
        if let (Some(held), Some(row)) = (held, rows.peek())
            && row.generation == after_i
        {
            if decode_row(row)?.changes != held.changes {
                tracing::warn!(generation = %after, "the change log holds another history");
                return Ok(LogRead::Gap);
            }
            rows.next();
        }
        let mut sets = Vec::with_capacity(rows.len());
        for (want, row) in (after_i + 1..).zip(rows) {
            if row.generation != want {
                return Ok(LogRead::Gap);
            }
            sets.push(Arc::new(decode_row(&row)?));
        }
        if sets.is_empty() && stored > after_i {
            // Newer generations exist but their entries do not: pruned.
            return Ok(LogRead::Gap);
        }
        Ok(LogRead::Sets(sets))
    }
}

/// A change-log row as the change set it holds.
fn decode_row(row: &LogRow) -> Result<ChangeSet, StoreError> {
    let changes = decode_changes(&row.changes)
        .map_err(|e| super::bad_column("change_log.changes", &format!("#{}", row.generation), e))?;
    Ok(ChangeSet {
        generation: Generation(row.generation as u64),
        changes,
    })
}

/// Starts the task that follows the stored generation: every [`POLL_EVERY`], and on PostgreSQL
/// also on each NOTIFY on `sixpn_changes` (a hint: the payload is ignored, and a lost notification
/// is made up for by the poll). It catches other replicas' writes and announcements a writer never
/// made.
///
/// On PostgreSQL the first LISTEN is set up before this returns, so no commit made after the store
/// opened waits for the poll; the generation is read once more after it, to catch commits made in
/// between. A dropped LISTEN connection is replaced. The task ends when `stop` is cancelled (the
/// store drops its guard when the last clone goes) or the pool is closed.
///
/// With a hot standby (`read`), the stored generation is read from the standby every
/// `read_poll_period` (a standby delivers no NOTIFY), and only announced when newer (the standby
/// may lag behind this process's own commits); a NOTIFY from the primary, while that connection
/// is up, makes it read at once. A LISTEN that fails is retried every second, not every poll.
pub(super) async fn spawn_watcher(
    backend: &Backend,
    read: Option<super::ReadSide>,
    changes: Changes,
    stop: tokio_util::sync::CancellationToken,
) {
    if let (Backend::Postgres(primary), Some(read)) = (backend, read) {
        spawn_standby_watcher(primary.clone(), read, changes, stop);
        return;
    }
    match backend.clone() {
        Backend::Sqlite(pool) => {
            tokio::spawn(async move {
                let mut poll = tokio::time::interval(SQLITE_POLL_EVERY);
                poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = poll.tick() => {}
                        _ = stop.cancelled() => return,
                    }
                    if pool.is_closed() {
                        return;
                    }
                    let before = changes.announced();
                    match sqlx::query_scalar::<_, i64>("SELECT generation FROM meta WHERE id = 1")
                        .fetch_one(&pool)
                        .await
                    {
                        Ok(g) => changes.observe_stored(before, Generation(g as u64)),
                        Err(e) => tracing::debug!(error = %e, "reading the generation failed"),
                    }
                }
            });
        }
        Backend::Postgres(pool) => {
            let channel = super::NOTIFY_CHANNEL;
            let mut listener = listen(&pool, channel).await;
            poll_pg(&pool, &changes).await;
            tokio::spawn(async move {
                let mut poll = interval();
                loop {
                    if listener.is_none() {
                        listener = listen(&pool, channel).await;
                        if listener.is_some() {
                            poll_pg(&pool, &changes).await;
                        }
                    }
                    tokio::select! {
                        note = async {
                            match listener.as_mut() {
                                Some(l) => l.try_recv().await,
                                None => std::future::pending().await,
                            }
                        } => match note {
                            // A hint: read what is stored, whatever the payload says.
                            Ok(Some(_)) => {}
                            // The connection dropped: notifications may be lost meanwhile.
                            Ok(None) | Err(_) => listener = None,
                        },
                        _ = poll.tick() => {}
                        _ = stop.cancelled() => return,
                    }
                    if pool.is_closed() {
                        return;
                    }
                    poll_pg(&pool, &changes).await;
                }
            });
        }
    }
}

/// The watcher of a replica with a hot standby (see [`spawn_watcher`]).
fn spawn_standby_watcher(
    primary: sqlx::PgPool,
    read: super::ReadSide,
    changes: Changes,
    stop: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        let channel = super::NOTIFY_CHANNEL;
        let mut poll = tokio::time::interval(read.poll_period);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listener: Option<sqlx::postgres::PgListener> = None;
        // A LISTEN being set up, in a task of its own: a primary that is away must not hold up
        // the standby's polls.
        let mut pending: Option<
            tokio::task::JoinHandle<Result<sqlx::postgres::PgListener, sqlx::Error>>,
        > = None;
        let mut next_listen = tokio::time::Instant::now();
        let mut warned = false;
        loop {
            if listener.is_none() && pending.is_none() && tokio::time::Instant::now() >= next_listen
            {
                let primary = primary.clone();
                pending = Some(tokio::spawn(async move {
                    listen_quiet(&primary, channel).await
                }));
                next_listen = tokio::time::Instant::now() + POLL_EVERY;
            }
            tokio::select! {
                note = async {
                    match listener.as_mut() {
                        Some(l) => l.try_recv().await,
                        None => std::future::pending().await,
                    }
                } => match note {
                    // A hint: the standby may not have replayed it yet; the polls catch up.
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => listener = None,
                },
                done = async {
                    match pending.as_mut() {
                        Some(task) => task.await,
                        None => std::future::pending().await,
                    }
                } => {
                    pending = None;
                    match done {
                        Ok(Ok(l)) => {
                            if warned {
                                tracing::info!("LISTEN on the primary is back");
                            }
                            warned = false;
                            listener = Some(l);
                        }
                        Ok(Err(error)) => {
                            if !warned {
                                tracing::warn!(%error, "cannot LISTEN on the primary; following the standby by polling");
                                warned = true;
                            }
                        }
                        Err(_) => {}
                    }
                    continue;
                },
                _ = poll.tick() => {}
                _ = stop.cancelled() => {
                    if let Some(task) = pending.take() {
                        task.abort();
                    }
                    return;
                }
            }
            if read.pool.is_closed() {
                return;
            }
            match sqlx::query_scalar::<_, i64>("SELECT generation FROM meta WHERE id = 1")
                .fetch_one(&read.pool)
                .await
            {
                // Only ever up: below what was announced is the standby lagging.
                Ok(g) => changes.publish(Generation(g as u64)),
                Err(e) => {
                    tracing::debug!(error = %e, "reading the generation from the standby failed")
                }
            }
        }
    });
}

/// A connection that LISTENs on `channel` on `pool`.
async fn listen_quiet(
    pool: &sqlx::PgPool,
    channel: &str,
) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut l = sqlx::postgres::PgListener::connect_with(pool).await?;
    l.listen(channel).await?;
    Ok(l)
}

fn interval() -> tokio::time::Interval {
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll
}

/// A connection that LISTENs on `channel`, or `None` (logged) when that fails.
async fn listen(pool: &sqlx::PgPool, channel: &str) -> Option<sqlx::postgres::PgListener> {
    match sqlx::postgres::PgListener::connect_with(pool).await {
        Ok(mut l) => match l.listen(channel).await {
            Ok(()) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN failed; polling");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot open LISTEN connection; polling");
            None
        }
    }
}

async fn poll_pg(pool: &sqlx::PgPool, changes: &Changes) {
    let before = changes.announced();
    match sqlx::query_scalar::<_, i64>("SELECT generation FROM meta WHERE id = 1")
        .fetch_one(pool)
        .await
    {
        Ok(g) => changes.observe_stored(before, Generation(g as u64)),
        Err(e) => tracing::debug!(error = %e, "reading the generation failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(g: u64) -> Arc<ChangeSet> {
        Arc::new(ChangeSet {
            generation: Generation(g),
            changes: Vec::new(),
        })
    }

    fn gens(sets: &[Arc<ChangeSet>]) -> Vec<u64> {
        sets.iter().map(|s| s.generation.0).collect()
    }

    #[test]
    fn recent_sets_are_handed_out_only_without_gaps() {
        let changes = Changes::new(Generation(1));
        let mut rx = changes.subscribe();
        changes.publish_set(set(4));
        assert_eq!(*rx.borrow_and_update(), Generation(4));
        // 2 and 3 are still in flight: nothing from 2 on.
        assert!(changes.recent_from(Generation(2)).is_empty());
        changes.publish_set(set(2));
        // An older set announced late still wakes receivers.
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), Generation(4));
        assert_eq!(gens(&changes.recent_from(Generation(2))), [2]);
        changes.publish_set(set(3));
        assert_eq!(gens(&changes.recent_from(Generation(2))), [2, 3, 4]);
        assert_eq!(gens(&changes.recent_from(Generation(3))), [3, 4]);
        assert!(changes.recent_from(Generation(5)).is_empty());
    }

    #[test]
    fn the_buffer_is_bounded() {
        let changes = Changes::new(Generation(0));
        for g in 1..=(RECENT_CAP as u64 + 10) {
            changes.publish_set(set(g));
        }
        assert!(changes.recent_from(Generation(1)).is_empty());
        assert_eq!(changes.recent_from(Generation(11)).len(), RECENT_CAP);

        // Big sets count by their changes; the newest always stays.
        let changes = Changes::new(Generation(0));
        let big = |g: u64, n: usize| {
            Arc::new(ChangeSet {
                generation: Generation(g),
                changes: vec![
                    Change::OrgCreated(Org {
                        slug: "acme".parse().unwrap(),
                        prefix: "fdaa:3:4::/48".parse().unwrap(),
                        created_at: 0,
                    });
                    n
                ],
            })
        };
        changes.publish_set(big(1, RECENT_MAX_CHANGES / 2));
        changes.publish_set(big(2, RECENT_MAX_CHANGES / 2));
        assert_eq!(gens(&changes.recent_from(Generation(1))), [1, 2]);
        changes.publish_set(big(3, 1));
        assert_eq!(gens(&changes.recent_from(Generation(2))), [2, 3]);
        assert!(changes.recent_from(Generation(1)).is_empty());
        changes.publish_set(big(4, RECENT_MAX_CHANGES + 1));
        assert_eq!(gens(&changes.recent_from(Generation(4))), [4]);
        assert!(changes.recent_from(Generation(3)).is_empty());
    }

    #[test]
    fn a_stored_generation_going_backwards_wakes_and_forgets() {
        let changes = Changes::new(Generation(0));
        let mut rx = changes.subscribe();
        changes.publish_set(set(1));
        changes.observe_stored(changes.announced(), Generation(5));
        assert_eq!(*rx.borrow_and_update(), Generation(5));
        changes.observe_stored(changes.announced(), Generation(5));
        assert!(
            !rx.has_changed().unwrap(),
            "the same value announces nothing"
        );
        changes.observe_stored(changes.announced(), Generation(2));
        assert_eq!(*rx.borrow_and_update(), Generation(2));
        assert!(changes.recent_from(Generation(1)).is_empty());
        // A write announced between the snapshot of `before` and the read stays announced.
        let before = changes.announced();
        changes.publish_set(set(3));
        changes.observe_stored(before, Generation(2));
        assert_eq!(*rx.borrow_and_update(), Generation(3));
    }

    #[test]
    fn the_log_format_round_trips_with_trusted_keys() {
        let peer = Peer {
            org: "personal".parse().unwrap(),
            name: "node-1".parse().unwrap(),
            group: "web".parse().unwrap(),
            region: "local".parse().unwrap(),
            pubkey: PublicKey::parse("s6k35vSpDrtq5ERd7XHOL4udSAJZaA6kXIK+kw6c9C0=").unwrap(),
            address: "fdaa:1:2:1::1".parse().unwrap(),
            token: "k8s".parse().unwrap(),
            created_at: 1,
            updated_at: 2,
            key_expires_at: Some(4),
        };
        let org = Org {
            slug: "acme".parse().unwrap(),
            prefix: "fdaa:3:4::/48".parse().unwrap(),
            created_at: 3,
        };
        let changes = vec![
            Change::OrgCreated(org),
            Change::PeerUpserted(peer.clone()),
            Change::PeerRemoved(peer),
        ];
        assert_eq!(decode_changes(&encode_changes(&changes)).unwrap(), changes);
    }
}
