//! The store: orgs, WireGuard tokens and peers, on SQLite (embedded default) or PostgreSQL.
//!
//! The store is the source of truth; everything else (DNS snapshot, gateway interface) is derived
//! from it: once from [`Store::load_all`], then change set by change set through a [`Feed`].
//!
//! The code is split by resource: `orgs`, `tokens`, `peers`; `changes` holds the change log and
//! the in-process announcements, `feed` what consumers read. This file keeps the [`Store`] handle,
//! its errors, the transaction macros and the helpers they share.
//!
//! Invariants:
//! - Every committed write that changes what consumers see (peers, orgs) bumps the stored
//!   generation by one and writes its change set to the change log in the same transaction, then
//!   announces it in process (on PostgreSQL also `pg_notify`, a wake-up hint for other replicas).
//! - Writers take the generation row first, so generations commit in order: a reader that sees
//!   `g + 1` committed also sees `g`.
//! - Rows read back are trusted: keys were checked on the way in, so loading does no curve
//!   arithmetic ([`crate::wireguard::PublicKey::from_trusted_base64`]).
//! - Only this module knows SQL. Unique-constraint violations become domain errors here.
//! - With `read_database_url`, full loads, the change feed and liveness reads go to a PostgreSQL
//!   hot standby ([`ReadReplica`]); writes and the API's reads go to the primary. What consumers
//!   see never goes backwards because the standby lags (see `feed`).
//! - A token secret is never stored: only its SHA-256 hash.
//! - `orgs.peer_count` and `tokens.peer_count` equal their live peers: triggers on `peers` keep
//!   them in the transaction of every insert and delete (migration 0009), so the caps on live
//!   peers are checked in O(1).

pub mod backup;
mod secret;

use ipnet::Ipv6Net;
use tokio::sync::watch;

pub use apikeys::{
    API_KEY_PREFIX, ApiKeyAuth, ApiKeyInfo, ApiKeySecret, KeyScope, NewApiKey, Role,
    is_api_key_shaped,
};
pub use audit::{AuditAction, AuditEntry, AuditPage, PRUNE_BATCH as AUDIT_PRUNE_BATCH};
pub use changes::Changes;
pub use console::{GroupMember, GroupSummary};
pub use feed::{Feed, Update};
pub use orgs::{OrgCounts, OrgDeleted};
pub use page::{ListedPeer, Live, OrgsWithin, Page, PeerFilter};
pub use peers::{HANDSHAKE_RESOLUTION, NewPeer, peer_address};
pub use secret::TokenSecret;
pub use tokens::{AuthToken, DerivedParent, NewToken};

use crate::model::{Generation, Org, OrgSlug, Peer, PeerName, TokenName};
use orgs::OrgRow;
use peers::{PEER_SELECT, PeerRow};

/// Everything the store can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No org with that slug.
    #[error("org {0} does not exist")]
    OrgNotFound(OrgSlug),
    /// An org with that slug exists already.
    #[error("org {0} already exists")]
    OrgExists(OrgSlug),
    /// No live token with that name in the org.
    #[error("token {0} does not exist")]
    TokenNotFound(TokenName),
    /// A live token with that name exists already in the org.
    #[error("a token named {0} already exists in this org")]
    TokenNameTaken(TokenName),
    /// The secret matches no token ever minted.
    #[error("unknown token")]
    UnknownToken,
    /// The token was deleted.
    #[error("token has been deleted")]
    TokenDeleted,
    /// The token is past its expiry.
    #[error("token expired")]
    TokenExpired,
    /// No peer with that name that the caller may see.
    #[error("peer {0} does not exist")]
    PeerNotFound(PeerName),
    /// The org already has a peer with that name.
    #[error("peer {0} already exists")]
    PeerNameTaken(PeerName),
    /// A live peer already uses that public key.
    #[error("public key is already used by another peer")]
    PubkeyInUse,
    /// The token has as many live peers as it may.
    #[error("token has reached its cap of {0} live peers")]
    PeerCapReached(u32),
    /// The org has as many live peers as `[orgs] max_peers` allows.
    #[error("org {org} has reached its cap of {cap} live peers ([orgs] max_peers)")]
    OrgPeerCapReached {
        /// The org.
        org: OrgSlug,
        /// `[orgs] max_peers`.
        cap: u64,
    },
    /// The org still has peers or live tokens, and the delete was not a cascade.
    #[error("org {org} still has {peers} peer(s) and {tokens} token(s)")]
    OrgNotEmpty {
        /// The org.
        org: OrgSlug,
        /// Its live peers.
        peers: u64,
        /// Its live tokens.
        tokens: u64,
    },
    /// The database has not been migrated and prepared yet (a server that started while its
    /// primary was away or slow, see [`Store::open_lazy`]): nothing is read or written until it
    /// has, so that no request sees a half-prepared database (an org that does not exist yet).
    /// Holds why, in a few words, when the last attempt failed.
    #[error("the database is not ready yet: {}", .0.unwrap_or("it is being prepared"))]
    NotReady(Option<&'static str>),
    /// The default org cannot be deleted (every server recreates it at start).
    #[error("org {0} is the default org and cannot be deleted")]
    DefaultOrg(OrgSlug),
    /// The org's address space is used up.
    #[error("no free address left in the org's prefix")]
    AddressesExhausted,
    /// The ULA prefix has no free /48 left.
    #[error("no free /48 left in the ULA prefix")]
    PrefixesExhausted,
    /// No live API key with that name that the caller may see.
    #[error("API key {0} does not exist")]
    ApiKeyNotFound(String),
    /// A live API key with that name exists already.
    #[error("an API key named {0} already exists: pick another name or revoke it first")]
    ApiKeyNameTaken(String),
    /// The presented API key matches no key ever created.
    #[error("unknown API key")]
    ApiKeyUnknown,
    /// The presented API key was revoked.
    #[error("API key has been revoked")]
    ApiKeyRevoked,
    /// The presented API key is past its expiry.
    #[error("API key expired")]
    ApiKeyExpired,
    /// The database URL is not `sqlite:…` or `postgres://…`.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    BadUrl(String),
    /// `read_database_url` with a store that is not PostgreSQL, or a read URL that is not
    /// PostgreSQL.
    #[error(
        "read_database_url needs PostgreSQL on both sides (database_url the primary, read_database_url its hot standby)"
    )]
    ReadReplicaNeedsPostgres,
    /// A PostgreSQL URL with several hosts or `target_session_attrs`, which sqlx 0.9 cannot
    /// follow (it would connect to the first host whatever its role).
    #[error(
        "{0}: sqlx 0.9 does not support several hosts or target_session_attrs; point database_url at the primary and repoint it with SIGHUP after a failover (deploy/regions.md)"
    )]
    MultiHostUrl(&'static str),
    /// `database_url` or `read_database_url` changed on reload and the store cannot switch to
    /// it; the store keeps its databases.
    #[error("cannot switch databases: {0}")]
    Reopen(String),
    /// Migrations failed.
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Whether the database cannot be reached or used right now (down, unreachable, its file
    /// unreadable, its disk full), as opposed to refusing a request or a bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e)
            | StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => is_unavailable(e),
            StoreError::NotReady(_) => true,
            _ => false,
        }
    }

    /// Whether the database lacks a table or column this version uses: a hot standby that has
    /// not replayed the primary's migrations yet (a first start that migrates the primary while
    /// DNS loads from the standby), or a database not migrated at all.
    pub fn is_schema_behind(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                // PostgreSQL: undefined_table, undefined_column.
                code == "42P01" || code == "42703"
            }),
            _ => false,
        }
    }
}

/// A full copy of what DNS and the gateway need, at one generation.
#[derive(Debug, Clone, Default)]
pub struct Dump {
    /// The generation the rows belong to.
    pub generation: Generation,
    /// Every org.
    pub orgs: Vec<Org>,
    /// Every live peer.
    pub peers: Vec<Peer>,
}

/// Connection to the database, cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    changes: Changes,
    ula_prefix: Ipv6Net,
    /// The database's identity (see [`Store::identity`]); empty until the database answered.
    identity: std::sync::Arc<std::sync::RwLock<String>>,
    /// What switching to another PostgreSQL server on reload needs ([`Store::reopen`]).
    reopen: std::sync::Arc<Reopen>,
    /// The client address the audit log records for writes through this handle (see
    /// [`Store::with_source`]); `None`: the server itself, or unknown.
    source: Option<std::net::IpAddr>,
    /// Who the audit log names for the admin writes made through this handle (see
    /// [`Store::with_actor`]); `None`: each write names its own default actor.
    actor: Option<std::sync::Arc<str>>,
    /// `[orgs] max_peers`: the most live peers one org may have (see [`Store::with_org_max_peers`]).
    org_max_peers: u64,
    /// Stops the task that follows the stored generation when the last clone is dropped.
    _watcher: Option<std::sync::Arc<tokio_util::sync::DropGuard>>,
    /// The token that guard cancels.
    watch_stop: tokio_util::sync::CancellationToken,
    /// The hot standby this replica reads from (`read_database_url`), when there is one.
    read: Option<ReadSide>,
    /// Bounds the PostgreSQL write transactions open at once (see [`WRITERS`]).
    write_gate: std::sync::Arc<tokio::sync::Semaphore>,
    /// Whether [`Store::init`] has prepared the database; [`read!`] and [`write_tx!`] refuse
    /// with [`StoreError::NotReady`] until it has.
    readiness: std::sync::Arc<Readiness>,
}

/// Whether the database has been migrated and prepared, and if not, why the last try failed.
#[derive(Debug, Default)]
struct Readiness {
    ready: std::sync::atomic::AtomicBool,
    /// [`unavailable_reason`] of the last failed [`Store::init`].
    reason: std::sync::Mutex<Option<&'static str>>,
}

impl Readiness {
    fn ready() -> std::sync::Arc<Readiness> {
        let r = Readiness::default();
        r.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        std::sync::Arc::new(r)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.ready.load(std::sync::atomic::Ordering::Acquire) {
            Ok(())
        } else {
            Err(StoreError::NotReady(
                *self.reason.lock().unwrap_or_else(|e| e.into_inner()),
            ))
        }
    }

    fn failed(&self, error: &StoreError) {
        let reason = match error {
            StoreError::Database(e)
            | StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => unavailable_reason(e),
            _ => None,
        };
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }
}

/// At most this many PostgreSQL write transactions hold a connection at once (half the pool):
/// writers that bump the generation queue on its row lock anyway, so more would only hold
/// connections idle, and a burst of them would starve the reads and make waiting for a
/// connection (bounded by [`PRIMARY_ACQUIRE_TIMEOUT`], so that a primary that is away fails
/// fast) fail under load. Writers beyond it wait here, for at most [`WRITE_QUEUE_TIMEOUT`].
const WRITERS: usize = 8;

/// How long a write waits for its turn among [`WRITERS`] before it answers 503.
const WRITE_QUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A turn among the [`WRITERS`], or `PoolTimedOut` after [`WRITE_QUEUE_TIMEOUT`].
async fn write_turn(
    gate: &std::sync::Arc<tokio::sync::Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, sqlx::Error> {
    match tokio::time::timeout(WRITE_QUEUE_TIMEOUT, gate.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(sqlx::Error::PoolTimedOut),
    }
}

/// `read_database_url` and `read_poll_period`: a PostgreSQL hot standby a replica reads its
/// full loads, change feed and liveness reads from, while writes go to the primary.
#[derive(Debug, Clone)]
pub struct ReadReplica {
    /// `postgres://…` of the standby.
    pub url: String,
    /// How often the stored generation is read from the standby (it delivers no NOTIFY).
    pub poll_period: std::time::Duration,
}

/// The pool of the standby and its poll period.
#[derive(Debug, Clone)]
pub(crate) struct ReadSide {
    pool: sqlx::PgPool,
    poll_period: std::time::Duration,
}

/// How long a PostgreSQL primary connection is waited for before a call fails (a write then
/// answers 503): short, so that a primary that is away fails writes within a second instead of
/// queueing them. The pool retries refused connections until then.
pub const PRIMARY_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(750);

/// How long [`Store::open`] keeps trying a database that does not answer yet.
const OPEN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");
static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// The PostgreSQL NOTIFY channel that wakes other replicas after a commit. Only a hint: its
/// payload is never trusted (issue 9).
const NOTIFY_CHANNEL: &str = "sixpn_changes";

/// Runs `$body` inside a write transaction on whichever backend the store has. The body
/// evaluates to a `Result`: `Ok` commits, a domain `Err` rolls back, and `?` inside it returns
/// from the enclosing function (dropping, and so rolling back, the transaction).
///
/// The body is written once and expanded for each backend; inside it `$tx` is the transaction,
/// `$is_pg` says which backend it is and `$log` is where [`record_changes!`] leaves the change set
/// to announce. On SQLite the transaction is `BEGIN IMMEDIATE`, so writers queue for the write
/// lock up front instead of failing on a lock upgrade.
///
/// The commit and the in-process announcement of the change set run in a task of their own: a
/// caller dropped meanwhile (axum drops a handler whose client went away) cannot leave a committed
/// change set unannounced. (A feed would still find it in the change log; this keeps it fast.)
macro_rules! write_tx {
    ($self:ident, |$tx:ident, $is_pg:ident, $log:ident| $body:block) => {
        match $self.readiness.check().map(|()| &$self.backend)? {
            $crate::store::Backend::Sqlite(pool) => {
                #[allow(unused_variables)]
                let $is_pg = false;
                #[allow(unused_mut)]
                let mut $log: Option<std::sync::Arc<$crate::model::ChangeSet>> = None;
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out: Result<_, StoreError> = $body;
                if out.is_ok() {
                    let changes = $self.changes.clone();
                    tokio::spawn(async move {
                        $tx.commit().await?;
                        if let Some(set) = $log {
                            changes.publish_set(set);
                        }
                        Ok::<(), sqlx::Error>(())
                    })
                    .await
                    .map_err($crate::store::commit_task_failed)??;
                }
                out
            }
            $crate::store::Backend::Postgres(pool) => {
                #[allow(unused_variables)]
                let $is_pg = true;
                #[allow(unused_mut)]
                let mut $log: Option<std::sync::Arc<$crate::model::ChangeSet>> = None;
                let _turn = $crate::store::write_turn(&$self.write_gate).await?;
                let mut $tx = $crate::store::begin_pg(pool, None).await?;
                let out: Result<_, StoreError> = $body;
                if out.is_ok() {
                    let changes = $self.changes.clone();
                    tokio::spawn(async move {
                        $tx.commit().await?;
                        if let Some(set) = $log {
                            changes.publish_set(set);
                        }
                        Ok::<(), sqlx::Error>(())
                    })
                    .await
                    .map_err($crate::store::commit_task_failed)??;
                }
                out
            }
        }
    };
}

/// Runs `$body` with `$pool` a pool of whichever backend the store has; [`StoreError::NotReady`]
/// before the database has been prepared.
macro_rules! read {
    ($self:ident, |$pool:ident| $body:block) => {
        match $self.readiness.check().map(|()| &$self.backend)? {
            $crate::store::Backend::Sqlite($pool) => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` inside a read-only transaction that sees one consistent snapshot (a deferred
/// transaction in SQLite's WAL mode, a repeatable-read one on PostgreSQL), then ends it. Inside
/// the body `$tx` is the transaction; `?` returns from the enclosing function.
///
/// `$backend` is the [`Backend`] to read: the primary's, or the standby's from [`Store::reader`].
macro_rules! read_tx_on {
    ($backend:expr, |$tx:ident| $body:block) => {
        match $backend {
            $crate::store::Backend::Sqlite(pool) => {
                let mut $tx = pool.begin_with("BEGIN").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::store::Backend::Postgres(pool) => {
                let mut $tx = $crate::store::begin_pg(
                    pool,
                    Some("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
                )
                .await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

/// Takes the generation row for the rest of a write transaction and returns the generation it
/// holds. Done first in each transaction that may change what consumers see: the lock on `meta`
/// then orders all such writers (on SQLite `BEGIN IMMEDIATE` already does), so checks made later
/// in the transaction cannot race and generations commit in order.
macro_rules! lock_generation {
    ($tx:ident, $is_pg:ident) => {{
        let generation: i64 = sqlx::query_scalar(if $is_pg {
            "SELECT generation FROM meta WHERE id = 1 FOR UPDATE"
        } else {
            "SELECT generation FROM meta WHERE id = 1"
        })
        .fetch_one(&mut *$tx)
        .await?;
        $crate::model::Generation(generation as u64)
    }};
}

/// Bumps the generation, writes `$changes` (a `Vec<Change>`) to the change log under it, prunes
/// the log now and then, queues the PostgreSQL NOTIFY (a wake-up hint delivered on commit) and
/// leaves the change set in `$log` for [`write_tx!`] to announce after the commit. Evaluates to
/// the new [`Generation`]. Call it once per transaction, after [`lock_generation!`].
macro_rules! record_changes {
    ($tx:ident, $is_pg:ident, $log:ident, $changes:expr) => {{
        let changes: Vec<$crate::model::Change> = $changes;
        let generation: i64 = sqlx::query_scalar(
            "UPDATE meta SET generation = generation + 1 WHERE id = 1 RETURNING generation",
        )
        .fetch_one(&mut *$tx)
        .await?;
        let now = $crate::model::now_unix();
        // Normally finds nothing. After the stored generation was set back by hand, entries of
        // the abandoned history from here on would otherwise block the insert, or be read as
        // this history's next change sets.
        sqlx::query("DELETE FROM change_log WHERE generation >= $1")
            .bind(generation)
            .execute(&mut *$tx)
            .await?;
        sqlx::query("INSERT INTO change_log (generation, changes, created_at) VALUES ($1, $2, $3)")
            .bind(generation)
            .bind($crate::store::changes::encode_changes(&changes))
            .bind(now)
            .execute(&mut *$tx)
            .await?;
        if generation % $crate::store::changes::PRUNE_EVERY == 0 {
            let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(generation) FROM change_log")
                .fetch_one(&mut *$tx)
                .await?;
            if let Some(oldest) = oldest {
                let (keep_from, cutoff) = $crate::store::changes::prune_bounds(generation, now);
                // A bounded range from the oldest entry: each prune costs at most PRUNE_BATCH
                // rows however long the log is, and runs often enough to keep up.
                sqlx::query(
                    "DELETE FROM change_log WHERE generation >= $1 AND generation < $2 \
                     AND generation < $3 AND created_at < $4",
                )
                .bind(oldest)
                .bind(oldest + $crate::store::changes::PRUNE_BATCH)
                .bind(keep_from)
                .bind(cutoff)
                .execute(&mut *$tx)
                .await?;
            }
        }
        if $is_pg {
            // The payload is informational only: receivers never trust it (issue 9).
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind($crate::store::NOTIFY_CHANNEL)
                .bind(generation.to_string())
                .execute(&mut *$tx)
                .await?;
        }
        let generation = $crate::model::Generation(generation as u64);
        $log = Some(std::sync::Arc::new($crate::model::ChangeSet {
            generation,
            changes,
        }));
        generation
    }};
}

/// Writes one audit log row inside the write transaction `$tx`: `$org_id` (an `i64`
/// expression), the actor's name, the store handle's source address, the [`AuditAction`], the
/// target's name and an optional detail.
macro_rules! audit {
    ($self:ident, $tx:ident, $org_id:expr, $actor:expr, $action:expr, $target:expr, $detail:expr) => {{
        let detail: Option<String> = $detail;
        sqlx::query(
            "INSERT INTO audit_log (org_id, at, actor, source, action, target, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind($org_id)
        .bind($crate::model::now_unix())
        .bind($self.actor.as_deref().unwrap_or($actor))
        .bind($self.source.map(|a| a.to_string()))
        .bind($crate::store::AuditAction::as_str($action))
        .bind($target)
        .bind(detail)
        .execute(&mut *$tx)
        .await?;
    }};
}

// These modules come after the macros above, which they use.
mod apikeys;
mod audit;
mod changes;
mod console;
mod expiry;
mod feed;
mod orgs;
mod page;
mod peers;
mod reopen;
mod tokens;

use reopen::Reopen;
pub use reopen::Reopened;

/// Whether a database error means "the database cannot serve right now" (503, worth a retry)
/// rather than a bug (500): the pool is exhausted or closed, the connection broke, the disk is
/// full, the database is locked, read-only or shutting down.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    unavailable_reason(err).is_some()
}

/// Why the database cannot serve right now, in a few words an API client may read (no detail
/// of the server's setup), or `None` when `err` is not that kind of failure (a bug, a refused
/// request). A corrupt SQLite file counts: the server cannot fix it, but neither can the
/// client, and the same request may succeed once the operator restored the file (issue 23).
pub fn unavailable_reason(err: &sqlx::Error) -> Option<&'static str> {
    match err {
        sqlx::Error::PoolTimedOut => Some("the database did not answer in time"),
        sqlx::Error::PoolClosed => Some("the server is shutting down"),
        sqlx::Error::WorkerCrashed => Some("the connection to the database failed"),
        // The other side broke off mid-protocol: seen when a middlebox (a proxy, a load
        // balancer) in front of an unreachable database accepts and closes ("unexpected
        // response from SSLRequest"), or a connection is cut mid-message (issue 17, partition).
        sqlx::Error::Protocol(_) => Some("the connection to the database failed"),
        sqlx::Error::Io(_) => Some("the database cannot be reached"),
        sqlx::Error::Tls(_) => Some("the TLS connection to the database failed"),
        sqlx::Error::BeginFailed => Some("the database could not start a transaction"),
        sqlx::Error::Database(db) => {
            let code = db.code()?;
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                sqlite_unavailable_reason(code.parse().ok()?)
            } else {
                sqlstate_unavailable_reason(&code)
            }
        }
        _ => None,
    }
}

/// Where a PostgreSQL connection goes, for logs: `user@host:port/database` (never a password).
fn pg_target(opts: &sqlx::postgres::PgConnectOptions) -> String {
    let at = match opts.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", opts.get_host(), opts.get_port()),
    };
    format!(
        "{}@{at}/{}",
        opts.get_username(),
        opts.get_database().unwrap_or(opts.get_username())
    )
}

/// The real cause behind a pool's timeout: the pool retries a refused connection until its
/// acquire timeout and then reports only "pool timed out", so one direct attempt says why
/// ("connection refused", "password authentication failed"). Other errors are returned as they
/// are.
async fn pg_cause(opts: &sqlx::postgres::PgConnectOptions, error: StoreError) -> StoreError {
    use sqlx::Connection as _;
    // At start the first call is the migration, which wraps the pool's error.
    if !matches!(
        error,
        StoreError::Database(sqlx::Error::PoolTimedOut)
            | StoreError::Migrate(sqlx::migrate::MigrateError::Execute(
                sqlx::Error::PoolTimedOut
            ))
    ) {
        return error;
    }
    match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sqlx::PgConnection::connect_with(opts),
    )
    .await
    {
        Ok(Err(cause)) => StoreError::Database(cause),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            error
        }
        Err(_) => error,
    }
}

/// SQLite result codes (possibly extended) that mean the database cannot serve now.
#[cfg(test)]
pub(crate) fn unavailable_sqlite_code(code: i64) -> bool {
    sqlite_unavailable_reason(code).is_some()
}

/// Why SQLite result code `code` (possibly extended) means the database cannot serve now.
fn sqlite_unavailable_reason(code: i64) -> Option<&'static str> {
    // The primary code is the low byte of an extended one.
    Some(match code & 0xff {
        5 /* BUSY */ | 6 /* LOCKED */ => "the database is locked by another writer",
        7 /* NOMEM */ => "the server is out of memory",
        8 /* READONLY */ => "the database file is read-only",
        10 /* IOERR */ => "the database file cannot be read or written (I/O error)",
        11 /* CORRUPT */ => "the database file is corrupt; the operator must restore it",
        13 /* FULL */ => "the disk holding the database is full",
        14 /* CANTOPEN */ => "the database file cannot be opened",
        26 /* NOTADB */ => "the database file is not a SQLite database; the operator must restore it",
        _ => return None,
    })
}

/// PostgreSQL SQLSTATEs that mean the database cannot serve now.
#[cfg(test)]
pub(crate) fn unavailable_sqlstate(code: &str) -> bool {
    sqlstate_unavailable_reason(code).is_some()
}

/// Why SQLSTATE `code` means the database cannot serve now: connection exceptions, insufficient
/// resources (disk full, out of memory, too many connections), operator intervention (shutdown,
/// cannot connect now), system errors, a read-only (standby) server, and serialization failures
/// and deadlocks worth a retry.
fn sqlstate_unavailable_reason(code: &str) -> Option<&'static str> {
    Some(match code {
        "53100" => "the database server's disk is full",
        "25006" => "the database is read-only (a standby?)",
        "40001" | "40P01" => "the write collided with another one",
        c if c.starts_with("08") => "the connection to the database failed",
        c if c.starts_with("53") => "the database server is out of resources",
        c if c.starts_with("57P") => {
            "the database server is shutting down or not accepting connections"
        }
        c if c.starts_with("58") => "the database server reports a system error",
        _ => return None,
    })
}

/// Parses a column written by this module; a failure means the row was edited by hand.
fn parse_col<T: std::str::FromStr>(s: &str, column: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| bad_column(column, s, e))
}

/// The error for a column that does not hold what this module wrote.
fn bad_column(column: &str, s: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(
        format!("column {column} holds {s:?}: {e}").into(),
    ))
}

/// Begins a transaction on PostgreSQL (with `statement`, or a plain `BEGIN`) in a task of its
/// own. sqlx 0.9's PostgreSQL `begin` is not cancel safe: a caller dropped between sending `BEGIN`
/// and reading its answer returns the connection to the pool inside a transaction nothing ends,
/// and the next user of that connection runs in it (a read-only one then fails every write).
/// The task always finishes the `BEGIN`; if the caller is gone by then, the transaction is
/// dropped there, which rolls it back. (SQLite's driver handles this case itself.)
async fn begin_pg(
    pool: &sqlx::PgPool,
    statement: Option<&'static str>,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let pool = pool.clone();
    tokio::spawn(async move {
        match statement {
            Some(statement) => pool.begin_with(statement).await,
            None => pool.begin().await,
        }
    })
    .await
    .map_err(commit_task_failed)?
}

/// The error for a task that did not finish a transaction's begin or commit (the runtime shut
/// down, or it panicked).
fn commit_task_failed(e: tokio::task::JoinError) -> sqlx::Error {
    sqlx::Error::Protocol(format!("transaction task failed: {e}"))
}

fn sql(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// A row naming a parent that is gone: e.g. a token minted into an org deleted meanwhile.
fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

impl Store {
    /// Opens (creating and migrating when needed) the database at `url` and makes sure the
    /// default org exists. `ula_prefix` is where new orgs' /48s come from.
    ///
    /// SQLite URLs are `sqlite://PATH` (the file and its folder are created); PostgreSQL URLs are
    /// `postgres://…` or `postgresql://…`.
    ///
    /// # Errors
    /// [`StoreError::BadUrl`], [`StoreError::Migrate`] or [`StoreError::Database`].
    pub async fn open(url: &str, ula_prefix: Ipv6Net) -> Result<Store, StoreError> {
        Store::open_with(url, None, ula_prefix).await
    }

    /// Like [`Store::open`], reading from the hot standby `read` when given (see
    /// [`ReadReplica`]): full loads, the change feed and liveness reads go there, writes and the
    /// API's reads to the primary at `url`. A PostgreSQL primary that does not answer is retried
    /// for up to 10 s.
    ///
    /// # Errors
    /// Like [`Store::open`]; [`StoreError::ReadReplicaNeedsPostgres`] for a read replica beside
    /// SQLite.
    pub async fn open_with(
        url: &str,
        read: Option<&ReadReplica>,
        ula_prefix: Ipv6Net,
    ) -> Result<Store, StoreError> {
        let mut store = Store::connect(url, read, ula_prefix, false).await?;
        // PostgreSQL: say where it connects, warn with the cause while it keeps trying, and fail
        // with the cause ("connection refused") rather than the pool's timeout alone (issue 23).
        let pg: Option<sqlx::postgres::PgConnectOptions> = match store.backend {
            Backend::Postgres(_) => url.parse().ok(),
            Backend::Sqlite(_) => None,
        };
        if let Some(opts) = &pg {
            tracing::info!(database = %pg_target(opts), "connecting to PostgreSQL");
        }
        let started = std::time::Instant::now();
        let deadline = started + OPEN_PATIENCE;
        let mut warned = false;
        let generation = loop {
            match store.init().await {
                Ok(generation) => break generation,
                // The PostgreSQL pool gives up on a connection quickly (so that writes fail
                // fast); at start the database gets its usual patience.
                Err(e)
                    if pg.is_some()
                        && e.is_unavailable()
                        && std::time::Instant::now() < deadline =>
                {
                    if let Some(opts) = pg.as_ref().filter(|_| {
                        !warned && started.elapsed() >= std::time::Duration::from_secs(2)
                    }) {
                        warned = true;
                        let error = pg_cause(opts, e).await;
                        tracing::warn!(database = %pg_target(opts), %error, "PostgreSQL does not answer yet; still trying");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => {
                    return Err(match &pg {
                        Some(opts) => pg_cause(opts, e).await,
                        None => e,
                    });
                }
            }
        };
        store.changes = Changes::new(generation);
        store.start_watcher().await;
        Ok(store)
    }

    /// Like [`Store::open`], but without waiting for the database: the store is returned at once,
    /// and a background task keeps trying to reach, migrate and prepare the database (every
    /// second) until it answers. Until then every call fails with the connection's error (the
    /// API answers 503) and [`Store::identity`] is empty. For a server that must serve DNS from
    /// its last-known-good state while the database is down.
    ///
    /// # Errors
    /// [`StoreError::BadUrl`].
    pub async fn open_lazy(url: &str, ula_prefix: Ipv6Net) -> Result<Store, StoreError> {
        Store::open_lazy_with(url, None, ula_prefix).await
    }

    /// [`Store::open_lazy`] with a hot standby to read from (see [`Store::open_with`]). The
    /// standby is followed at once, whether the primary answers or not: DNS then loads and
    /// follows it while writes answer 503.
    ///
    /// # Errors
    /// [`StoreError::BadUrl`], [`StoreError::ReadReplicaNeedsPostgres`].
    pub async fn open_lazy_with(
        url: &str,
        read: Option<&ReadReplica>,
        ula_prefix: Ipv6Net,
    ) -> Result<Store, StoreError> {
        let store = Store::connect(url, read, ula_prefix, true).await?;
        let pending = store.clone();
        if store.read.is_some() {
            store.start_watcher().await;
        }
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                match pending.init().await {
                    Ok(generation) => {
                        pending.changes.publish(generation);
                        if pending.read.is_none() {
                            pending.start_watcher().await;
                        }
                        tracing::info!(%generation, "the database answers; following it");
                        return;
                    }
                    Err(error) => {
                        if !warned {
                            tracing::warn!(%error, "the database does not answer yet; retrying every second");
                            warned = true;
                        }
                        if pending.watch_stop.is_cancelled() {
                            return;
                        }
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(store)
    }

    /// Builds the pool: connecting at once, or at first use (`lazy`).
    async fn connect(
        url: &str,
        read: Option<&ReadReplica>,
        ula_prefix: Ipv6Net,
        lazy: bool,
    ) -> Result<Store, StoreError> {
        let is_pg = |url: &str| url.starts_with("postgres://") || url.starts_with("postgresql://");
        if read.is_some_and(|r| !is_pg(&r.url)) || (read.is_some() && !is_pg(url)) {
            return Err(StoreError::ReadReplicaNeedsPostgres);
        }
        for url in std::iter::once(url).chain(read.map(|r| r.url.as_str())) {
            if is_pg(url) {
                reopen::refuse_multi_host(url)?;
            }
        }
        let switch = std::sync::Arc::new(Reopen::default());
        let read = match read {
            Some(r) => {
                let opts: sqlx::postgres::PgConnectOptions = r.url.parse()?;
                // Lazy: a standby that is away at start fails the first load (or DNS serves the
                // last-known-good state) rather than the open.
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(8)
                    .min_connections(1)
                    .acquire_timeout(std::time::Duration::from_secs(2));
                let pool = reopen::drop_stale(pool, &switch).connect_lazy_with(opts);
                Some(ReadSide {
                    pool,
                    poll_period: r.poll_period,
                })
            }
            None => None,
        };
        let backend = if is_pg(url) {
            let opts: sqlx::postgres::PgConnectOptions = url.parse()?;
            // Lazy even for `open`, which retries `init` itself: the short acquire timeout
            // (writes fail fast while the primary is away) must not cut the start's patience.
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(16)
                // Warm connections: a replica reads the change log the moment another one writes.
                .min_connections(2)
                .acquire_timeout(PRIMARY_ACQUIRE_TIMEOUT);
            let pool = reopen::drop_stale(pool, &switch).connect_lazy_with(opts);
            Backend::Postgres(pool)
        } else if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
            let path = std::path::Path::new(path);
            // The folder 0700 and the file 0600 before SQLite creates either (its -wal, -shm and
            // -journal files take the file's mode), whatever the umask or the folder's mode.
            if path.as_os_str() != ":memory:" {
                backup::prepare_private_file(path).map_err(|e| StoreError::Database(e.into()))?;
            }
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: an acknowledged write survives power loss, not only a process crash.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(std::time::Duration::from_secs(30));
            let options = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(std::time::Duration::from_secs(if lazy { 2 } else { 30 }));
            let pool = if lazy {
                options.connect_lazy_with(opts)
            } else {
                options.connect_with(opts).await?
            };
            Backend::Sqlite(pool)
        } else {
            return Err(StoreError::BadUrl(url.to_owned()));
        };
        let watch_stop = tokio_util::sync::CancellationToken::new();
        Ok(Store {
            backend,
            changes: Changes::new(Generation(0)),
            ula_prefix,
            identity: Default::default(),
            readiness: Default::default(),
            reopen: switch,
            source: None,
            actor: None,
            org_max_peers: crate::config::DEFAULT_ORG_MAX_PEERS,
            _watcher: Some(std::sync::Arc::new(watch_stop.clone().drop_guard())),
            watch_stop,
            read,
            write_gate: std::sync::Arc::new(tokio::sync::Semaphore::new(WRITERS)),
        })
    }

    /// Migrates, learns the identity and makes sure the default org exists; returns the stored
    /// generation.
    async fn init(&self) -> Result<Generation, StoreError> {
        let result = self.ungated().prepare().await;
        match &result {
            Ok(_) => self
                .readiness
                .ready
                .store(true, std::sync::atomic::Ordering::Release),
            Err(e) => self.readiness.failed(e),
        }
        result
    }

    /// Lets calls through before [`Store::init`] has finished, for a lazily opened store whose
    /// database an earlier run prepared (a server restarting with its saved DNS state, which is
    /// tied to this database): its tables are there, so requests are served as soon as the
    /// database answers instead of waiting for the background preparation. A first start keeps
    /// the gate, so no request sees a database that is still being migrated.
    pub fn assume_prepared(&self) {
        self.readiness
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// This store without the readiness gate, for [`Store::init`] itself.
    fn ungated(&self) -> Store {
        Store {
            readiness: Readiness::ready(),
            ..self.clone()
        }
    }

    /// What [`Store::init`] does.
    async fn prepare(&self) -> Result<Generation, StoreError> {
        match &self.backend {
            Backend::Postgres(pool) => PG_MIGRATOR.run(pool).await?,
            Backend::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await?,
        }
        let identity = self.ensure_identity().await?;
        *self.identity.write().unwrap_or_else(|e| e.into_inner()) = identity;
        if let Backend::Postgres(pool) = &self.backend {
            // What a later switch to another server compares against (failover).
            self.reopen
                .note_timeline(reopen::primary_timeline(pool).await);
        }
        self.ensure_default_org().await?;
        // Read after the default org, which may have just been created. From the primary: a
        // standby that is away must not hold up the open, and one that lags is caught up by the
        // feed (which reads the sets it lacks from the primary).
        let g: i64 = read!(self, |pool| {
            sqlx::query_scalar("SELECT generation FROM meta WHERE id = 1")
                .fetch_one(pool)
                .await?
        });
        Ok(Generation(g as u64))
    }

    /// Starts following the stored generation (other replicas' and processes' writes).
    async fn start_watcher(&self) {
        changes::spawn_watcher(
            &self.backend,
            self.read.clone(),
            self.changes.clone(),
            self.watch_stop.clone(),
        )
        .await;
    }

    /// Where full loads, the change feed and liveness reads go: the standby when there is one
    /// (`read_database_url`), else the database itself.
    fn reader(&self) -> Backend {
        match &self.read {
            Some(read) => Backend::Postgres(read.pool.clone()),
            None => self.backend.clone(),
        }
    }

    /// Whether this store reads from a hot standby (`read_database_url`).
    pub fn has_read_replica(&self) -> bool {
        self.read.is_some()
    }

    /// The standby's poll period, when there is a standby.
    pub(crate) fn read_poll_period(&self) -> Option<std::time::Duration> {
        self.read.as_ref().map(|r| r.poll_period)
    }

    /// Checks that the primary (`database_url`) answers a trivial read.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn ping_primary(&self) -> Result<(), StoreError> {
        read!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT generation FROM meta WHERE id = 1")
                .fetch_one(pool)
                .await?;
        });
        Ok(())
    }

    /// The database's identity: random, set once when a server first opens it, the same for
    /// every replica. Tells one database from another (a restore keeps it).
    pub fn identity(&self) -> String {
        self.identity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn ensure_identity(&self) -> Result<String, StoreError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| StoreError::Database(sqlx::Error::Io(e.into())))?;
        let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let identity: String = read!(self, |pool| {
            sqlx::query("UPDATE meta SET identity = $1 WHERE id = 1 AND identity IS NULL")
                .bind(&fresh)
                .execute(pool)
                .await?;
            sqlx::query_scalar("SELECT identity FROM meta WHERE id = 1")
                .fetch_one(pool)
                .await?
        });
        Ok(identity)
    }

    /// The gateway public key of `region` as stored by the first server that claimed it, storing
    /// `candidate` when none is stored yet. Replicas call this for a region whose key they
    /// generated, so all of them hand out the same key.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn claim_region_key(
        &self,
        region: &crate::model::RegionCode,
        candidate: &crate::wireguard::PublicKey,
    ) -> Result<crate::wireguard::PublicKey, StoreError> {
        let now = crate::model::now_unix();
        let stored: String = read!(self, |pool| {
            sqlx::query(
                "INSERT INTO region_keys (region, public_key, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (region) DO NOTHING",
            )
            .bind(region.as_str())
            .bind(candidate.to_base64())
            .bind(now)
            .execute(pool)
            .await?;
            sqlx::query_scalar("SELECT public_key FROM region_keys WHERE region = $1")
                .bind(region.as_str())
                .fetch_one(pool)
                .await?
        });
        crate::wireguard::PublicKey::from_trusted_base64(&stored)
            .map_err(|e| bad_column("region_keys.public_key", &stored, e))
    }

    /// This handle, recording `source` as the client address of the writes made through it in
    /// the audit log. Cheap: the pool and channels are shared.
    pub fn with_source(&self, source: Option<std::net::IpAddr>) -> Store {
        Store {
            source,
            ..self.clone()
        }
    }

    /// This handle, naming `actor` (`bootstrap`, `key:<name>`) in the audit log for the admin
    /// writes made through it, where they would otherwise name `admin`. Cheap.
    pub fn with_actor(&self, actor: &str) -> Store {
        Store {
            actor: Some(actor.into()),
            ..self.clone()
        }
    }

    /// This handle, refusing a peer create once the org has `max_peers` live peers
    /// (`[orgs] max_peers`). Checked in O(1) against a counter the database keeps. Cheap.
    pub fn with_org_max_peers(&self, max_peers: u64) -> Store {
        Store {
            org_max_peers: max_peers,
            ..self.clone()
        }
    }

    /// Which backend this is: `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Closes the pool; later calls fail. SQLite first moves its write-ahead log into the
    /// database file and empties it, so the file alone holds every committed row.
    pub async fn close(&self) {
        if let Backend::Sqlite(pool) = &self.backend
            && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await
        {
            tracing::warn!(error = %e, "checkpointing the SQLite write-ahead log at close");
        }
        if let Some(read) = &self.read {
            read.pool.close().await;
        }
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }

    /// The change channel: its value is the newest generation known to be committed, by this
    /// process right after its commits, and by other replicas or processes once the store's
    /// watcher reads the stored generation (on a NOTIFY and every second on PostgreSQL, every 10 s
    /// on SQLite) or [`Store::generation`] is called. It only comes down when the stored
    /// generation did (a restore). To follow the changes themselves,
    /// use [`Store::feed`].
    pub fn changes(&self) -> watch::Receiver<Generation> {
        self.changes.subscribe()
    }

    /// Every org and live peer, read in one transaction, with the generation they belong to.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn load_all(&self) -> Result<Dump, StoreError> {
        self.load_all_from(changes::Side::Reader).await
    }

    /// [`Store::load_all`] from the reader (the standby, if any) or the primary.
    async fn load_all_from(&self, side: changes::Side) -> Result<Dump, StoreError> {
        let backend = match side {
            changes::Side::Reader => self.reader(),
            changes::Side::Primary => self.backend.clone(),
        };
        // No ORDER BY: consumers index the rows themselves, and sorting a million rows is most of
        // the query's cost.
        let peer_text = PEER_SELECT.to_owned();
        let (generation, org_rows, peer_rows): (i64, Vec<OrgRow>, Vec<PeerRow>) =
            read_tx_on!(&backend, |tx| {
                let g = sqlx::query_scalar("SELECT generation FROM meta WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?;
                let o =
                    sqlx::query_as("SELECT id, slug, prefix, created_at FROM orgs ORDER BY slug")
                        .fetch_all(&mut *tx)
                        .await?;
                let p = sqlx::query_as(sql(peer_text)).fetch_all(&mut *tx).await?;
                (g, o, p)
            });
        // Converting a million rows is CPU work: off the async worker threads.
        let convert = move || -> Result<Dump, StoreError> {
            let orgs: Vec<Org> = org_rows
                .into_iter()
                .map(OrgRow::into_org)
                .collect::<Result<_, _>>()?;
            let mut peers = Vec::with_capacity(peer_rows.len());
            for row in peer_rows {
                // Parse each org's slug once, not once per peer.
                let slug = match orgs.iter().find(|o| o.slug.as_str() == row.org_slug) {
                    Some(org) => org.slug.clone(),
                    None => parse_col(&row.org_slug, "orgs.slug")?,
                };
                peers.push(row.into_peer_in(slug)?);
            }
            Ok(Dump {
                generation: Generation(generation as u64),
                orgs,
                peers,
            })
        };
        tokio::task::spawn_blocking(convert)
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
    }

    /// The generation stored in the database. Like a tick of the store's watcher, the read is
    /// also announced on the change channel, so feeds wake at once for writes another process or
    /// replica committed (or notice a restore) instead of at the next poll.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    ///
    /// With a read replica the generation is the standby's, which may lag behind what this
    /// process committed: it is announced only when newer.
    pub async fn generation(&self) -> Result<Generation, StoreError> {
        let before = self.changes.announced();
        let g: i64 = match &self.reader() {
            Backend::Sqlite(pool) => {
                sqlx::query_scalar("SELECT generation FROM meta WHERE id = 1")
                    .fetch_one(pool)
                    .await?
            }
            Backend::Postgres(pool) => {
                sqlx::query_scalar("SELECT generation FROM meta WHERE id = 1")
                    .fetch_one(pool)
                    .await?
            }
        };
        let g = Generation(g as u64);
        if self.read.is_some() {
            self.changes.publish(g);
        } else {
            self.changes.observe_stored(before, g);
        }
        Ok(g)
    }
}
