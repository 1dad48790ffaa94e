//! The store: orgs, WireGuard tokens and peers, on SQLite (embedded default) or PostgreSQL.
//!
//! The store is the source of truth; everything else (DNS snapshot, gateway interface) is derived
//! from [`Store::load_all`] and rebuilt when [`Store::changes`] reports a new [`Generation`].
//!
//! Invariants:
//! - Every committed write that changes peers bumps the stored generation in the same
//!   transaction and then publishes it on the change channel (on PostgreSQL also `pg_notify`, so
//!   other replicas see it).
//! - Only this module knows SQL. Unique-constraint violations become domain errors here.
//! - A token secret is never stored: only its SHA-256 hash.

mod changes;
mod feed;
mod secret;

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use tokio::sync::watch;

pub use changes::Changes;
pub use feed::{Feed, Update};
pub use secret::TokenSecret;

use crate::model::{
    Generation, GroupName, Org, OrgSlug, Peer, PeerName, RegionCode, TokenInfo, TokenName,
};
use crate::wireguard::PublicKey;

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
    /// The org's address space is used up.
    #[error("no free address left in the org's prefix")]
    AddressesExhausted,
    /// The ULA prefix has no free /48 left.
    #[error("no free /48 left in the ULA prefix")]
    PrefixesExhausted,
    /// The database URL is not `sqlite:…` or `postgres://…`.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    BadUrl(String),
    /// Migrations failed.
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// A token that authenticated: what the peer API may do on its behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthToken {
    /// Row id.
    pub id: i64,
    /// The org it belongs to.
    pub org: OrgSlug,
    /// The org's /48.
    pub org_prefix: Ipv6Net,
    /// The token's name.
    pub name: TokenName,
    /// The group it is confined to, if any.
    pub group: Option<GroupName>,
    /// Its cap on live peers, if any.
    pub max_peers: Option<u32>,
}

/// What an admin asks for when minting a token.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Name, unique among the org's live tokens.
    pub name: TokenName,
    /// Group confinement.
    pub group: Option<GroupName>,
    /// Expiry, unix seconds.
    pub expires_at: Option<i64>,
    /// Cap on live peers.
    pub max_peers: Option<u32>,
}

/// What a node asks for when registering a peer (already validated).
#[derive(Debug, Clone)]
pub struct NewPeer {
    /// Name, unique in the org.
    pub name: PeerName,
    /// Group.
    pub group: GroupName,
    /// Region (checked against the configuration by the caller).
    pub region: RegionCode,
    /// Public key.
    pub pubkey: PublicKey,
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
    /// Stops the PostgreSQL listener task when the last clone of the store is dropped.
    _listener: Option<std::sync::Arc<tokio_util::sync::DropGuard>>,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// The host part of a peer's address: peers live in `<org prefix>:1::/64`, numbered from 1.
pub fn peer_address(org_prefix: Ipv6Net, n: u64) -> Ipv6Addr {
    crate::model::prefix_host(org_prefix, (1u128 << 64) | u128::from(n))
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");
static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// The PostgreSQL NOTIFY channel that carries new generations between replicas.
const NOTIFY_CHANNEL: &str = "sixpn_changes";

/// `last_used_at` is written at most this often per token, so reads stay cheap.
const LAST_USED_RESOLUTION: i64 = 10;

/// Runs `$body` inside a write transaction on whichever backend the store has. The body
/// evaluates to a `Result`: `Ok` commits, a domain `Err` rolls back, and `?` inside it returns
/// from the enclosing function (dropping, and so rolling back, the transaction).
///
/// The body is written once and expanded for each backend; inside it `$tx` is the transaction and
/// `$is_pg` says which backend it is. On SQLite the transaction is `BEGIN IMMEDIATE`, so writers
/// queue for the write lock up front instead of failing on a lock upgrade.
macro_rules! write_tx {
    ($self:ident, |$tx:ident, $is_pg:ident| $body:block) => {
        match &$self.backend {
            Backend::Sqlite(pool) => {
                #[allow(unused_variables)]
                let $is_pg = false;
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out: Result<_, StoreError> = $body;
                if out.is_ok() {
                    $tx.commit().await?;
                }
                out
            }
            Backend::Postgres(pool) => {
                #[allow(unused_variables)]
                let $is_pg = true;
                let mut $tx = pool.begin().await?;
                let out: Result<_, StoreError> = $body;
                if out.is_ok() {
                    $tx.commit().await?;
                }
                out
            }
        }
    };
}

/// Runs `$body` with `$conn` a pool of whichever backend the store has.
macro_rules! read {
    ($self:ident, |$pool:ident| $body:block) => {
        match &$self.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// Bumps the generation inside a write transaction and, on PostgreSQL, queues the NOTIFY that
/// is delivered on commit. Done first in each peer-changing transaction: the row lock on `meta`
/// then orders all such writers, so checks made later in the transaction cannot race.
macro_rules! bump_generation {
    ($tx:ident, $is_pg:ident) => {{
        let generation: i64 = sqlx::query_scalar(
            "UPDATE meta SET generation = generation + 1 WHERE id = 1 RETURNING generation",
        )
        .fetch_one(&mut *$tx)
        .await?;
        if $is_pg {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(generation.to_string())
                .execute(&mut *$tx)
                .await?;
        }
        Generation(generation as u64)
    }};
}

/// Whose peer a delete may touch.
#[derive(Debug, Clone, Copy)]
enum Owner {
    /// Only the peers a token created.
    Token,
    /// Any peer of an org (admin).
    Org,
}

#[derive(sqlx::FromRow)]
struct OrgRow {
    id: i64,
    slug: String,
    prefix: String,
    created_at: i64,
}

impl OrgRow {
    fn into_org(self) -> Result<Org, StoreError> {
        Ok(Org {
            slug: parse_col(&self.slug, "orgs.slug")?,
            prefix: parse_col(&self.prefix, "orgs.prefix")?,
            created_at: self.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: i64,
    org_slug: String,
    org_prefix: String,
    name: String,
    group_name: Option<String>,
    expires_at: Option<i64>,
    max_peers: Option<i64>,
    created_at: i64,
    last_used_at: Option<i64>,
    deleted_at: Option<i64>,
    live_peers: i64,
}

impl TokenRow {
    fn info(&self) -> Result<TokenInfo, StoreError> {
        Ok(TokenInfo {
            org: parse_col(&self.org_slug, "orgs.slug")?,
            name: parse_col(&self.name, "tokens.name")?,
            group: self
                .group_name
                .as_deref()
                .map(|g| parse_col(g, "tokens.group_name"))
                .transpose()?,
            expires_at: self.expires_at,
            max_peers: self.max_peers.map(|n| n.clamp(0, u32::MAX as i64) as u32),
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            live_peers: self.live_peers.max(0) as u64,
        })
    }

    fn auth(&self) -> Result<AuthToken, StoreError> {
        let info = self.info()?;
        Ok(AuthToken {
            id: self.id,
            org: info.org,
            org_prefix: parse_col(&self.org_prefix, "orgs.prefix")?,
            name: info.name,
            group: info.group,
            max_peers: info.max_peers,
        })
    }
}

const TOKEN_SELECT: &str = "SELECT t.id, o.slug AS org_slug, o.prefix AS org_prefix, t.name, t.group_name, \
     t.expires_at, t.max_peers, t.created_at, t.last_used_at, t.deleted_at, \
     (SELECT COUNT(*) FROM peers p WHERE p.token_id = t.id) AS live_peers \
     FROM tokens t JOIN orgs o ON o.id = t.org_id";

#[derive(sqlx::FromRow)]
struct PeerRow {
    org_slug: String,
    name: String,
    group_name: String,
    region: String,
    pubkey: String,
    address: String,
    token_name: String,
    created_at: i64,
    updated_at: i64,
}

impl PeerRow {
    fn into_peer(self) -> Result<Peer, StoreError> {
        Ok(Peer {
            org: parse_col(&self.org_slug, "orgs.slug")?,
            name: parse_col(&self.name, "peers.name")?,
            group: parse_col(&self.group_name, "peers.group_name")?,
            region: parse_col(&self.region, "peers.region")?,
            pubkey: parse_col(&self.pubkey, "peers.pubkey")?,
            address: parse_col(&self.address, "peers.address")?,
            token: parse_col(&self.token_name, "tokens.name")?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

const PEER_SELECT: &str = "SELECT o.slug AS org_slug, p.name, p.group_name, p.region, p.pubkey, \
     p.address, t.name AS token_name, p.created_at, p.updated_at \
     FROM peers p JOIN orgs o ON o.id = p.org_id JOIN tokens t ON t.id = p.token_id";

/// Parses a column written by this module; a failure means the row was edited by hand.
fn parse_col<T: std::str::FromStr>(s: &str, column: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| {
        StoreError::Database(sqlx::Error::Decode(
            format!("column {column} holds {s:?}: {e}").into(),
        ))
    })
}

fn sql(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// A random /48 inside `ula` (which is at most a /16).
fn random_org_prefix(ula: Ipv6Net) -> Ipv6Net {
    let mut bytes = [0u8; 16];
    // The random source failing leaves the all-zero choice, which a retry on conflict handles.
    let _ = getrandom::fill(&mut bytes);
    let random = u128::from_be_bytes(bytes);
    let host_bits = 128 - u32::from(ula.prefix_len());
    let keep = if host_bits >= 128 {
        0
    } else {
        u128::MAX << host_bits
    };
    let net = (u128::from(ula.network()) & keep) | (random & !keep);
    let net = net & (u128::MAX << 80);
    Ipv6Net::new(Ipv6Addr::from(net), 48).expect("48 is a valid prefix length")
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
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts: sqlx::postgres::PgConnectOptions = url.parse()?;
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            PG_MIGRATOR.run(&pool).await?;
            Backend::Postgres(pool)
        } else if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
            let path = std::path::Path::new(path);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(e.into()))?;
            }
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: an acknowledged write survives power loss, not only a process crash.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(std::time::Duration::from_secs(30));
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(std::time::Duration::from_secs(30))
                .connect_with(opts)
                .await?;
            SQLITE_MIGRATOR.run(&pool).await?;
            Backend::Sqlite(pool)
        } else {
            return Err(StoreError::BadUrl(url.to_owned()));
        };
        let mut store = Store {
            backend,
            changes: Changes::new(Generation(0)),
            ula_prefix,
            _listener: None,
        };
        let generation = store.generation().await?;
        store.changes = Changes::new(generation);
        store.ensure_default_org().await?;
        if let Backend::Postgres(pool) = &store.backend {
            let stop = tokio_util::sync::CancellationToken::new();
            changes::spawn_pg_listener(
                pool.clone(),
                NOTIFY_CHANNEL,
                store.changes.clone(),
                stop.clone(),
            )
            .await;
            store._listener = Some(std::sync::Arc::new(stop.drop_guard()));
        }
        Ok(store)
    }

    /// Which backend this is: `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Closes the pool; later calls fail.
    pub async fn close(&self) {
        read!(self, |pool| { pool.close().await })
    }

    /// The change channel: its value is the newest generation committed (by this process, or by
    /// another replica when on PostgreSQL).
    pub fn changes(&self) -> watch::Receiver<Generation> {
        self.changes.subscribe()
    }

    async fn ensure_default_org(&self) -> Result<(), StoreError> {
        let slug: OrgSlug = crate::model::DEFAULT_ORG.parse().expect("valid label");
        match self.create_org(&slug).await {
            Ok(_) | Err(StoreError::OrgExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates an org with a fresh random /48.
    ///
    /// # Errors
    /// [`StoreError::OrgExists`] when the slug is taken.
    pub async fn create_org(&self, slug: &OrgSlug) -> Result<Org, StoreError> {
        for _ in 0..16 {
            let prefix = random_org_prefix(self.ula_prefix);
            let now = crate::model::now_unix();
            let res: Result<Org, StoreError> = async {
                write_tx!(self, |tx, is_pg| {
                    let exists: Option<i64> =
                        sqlx::query_scalar("SELECT id FROM orgs WHERE slug = $1")
                            .bind(slug.as_str())
                            .fetch_optional(&mut *tx)
                            .await?;
                    if exists.is_some() {
                        Err(StoreError::OrgExists(slug.clone()))
                    } else {
                        sqlx::query(
                            "INSERT INTO orgs (slug, prefix, created_at) VALUES ($1, $2, $3)",
                        )
                        .bind(slug.as_str())
                        .bind(prefix.to_string())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        Ok(Org {
                            slug: slug.clone(),
                            prefix,
                            created_at: now,
                        })
                    }
                })
            }
            .await;
            match res {
                Ok(org) => {
                    // A new org changes every view (its /48 becomes a DNS view).
                    self.bump_outside().await?;
                    return Ok(org);
                }
                // A concurrent creator took the slug, or the random /48 collided: look again.
                Err(StoreError::Database(e)) if is_unique_violation(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::PrefixesExhausted)
    }

    /// Bumps the generation in a transaction of its own (for changes that are not peer writes
    /// but still change what DNS serves, such as a new org).
    async fn bump_outside(&self) -> Result<Generation, StoreError> {
        let generation = write_tx!(self, |tx, is_pg| { Ok(bump_generation!(tx, is_pg)) })?;
        self.changes.publish(generation);
        Ok(generation)
    }

    /// Every org, by slug.
    pub async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        let rows: Vec<OrgRow> = read!(self, |pool| {
            sqlx::query_as("SELECT id, slug, prefix, created_at FROM orgs ORDER BY slug")
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(OrgRow::into_org).collect()
    }

    /// One org.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`].
    pub async fn get_org(&self, slug: &OrgSlug) -> Result<Org, StoreError> {
        self.org_row(slug).await?.into_org()
    }

    async fn org_row(&self, slug: &OrgSlug) -> Result<OrgRow, StoreError> {
        let row: Option<OrgRow> = read!(self, |pool| {
            sqlx::query_as("SELECT id, slug, prefix, created_at FROM orgs WHERE slug = $1")
                .bind(slug.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::OrgNotFound(slug.clone()))
    }

    /// Mints a token; the secret is returned once and only its hash is stored.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::TokenNameTaken`].
    pub async fn mint_token(
        &self,
        org: &OrgSlug,
        new: NewToken,
    ) -> Result<(TokenInfo, TokenSecret), StoreError> {
        let org_row = self.org_row(org).await?;
        let secret = TokenSecret::generate();
        let hash = secret::hash_secret(secret.expose());
        let now = crate::model::now_unix();
        let res: Result<(), StoreError> = async {
            write_tx!(self, |tx, is_pg| {
                sqlx::query(
                    "INSERT INTO tokens (org_id, name, secret_hash, group_name, expires_at, max_peers, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(org_row.id)
                .bind(new.name.as_str())
                .bind(&hash)
                .bind(new.group.as_ref().map(|g| g.as_str().to_owned()))
                .bind(new.expires_at)
                .bind(new.max_peers.map(i64::from))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Ok(())
            })
        }
        .await;
        match res {
            Ok(()) => {}
            Err(StoreError::Database(e)) if is_unique_violation(&e) => {
                return Err(StoreError::TokenNameTaken(new.name));
            }
            Err(e) => return Err(e),
        }
        let info = TokenInfo {
            org: org.clone(),
            name: new.name,
            group: new.group,
            expires_at: new.expires_at,
            max_peers: new.max_peers,
            created_at: now,
            last_used_at: None,
            live_peers: 0,
        };
        Ok((info, secret))
    }

    /// The org's live tokens with their live peer counts, by name.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`].
    pub async fn list_tokens(&self, org: &OrgSlug) -> Result<Vec<TokenInfo>, StoreError> {
        let org_row = self.org_row(org).await?;
        let text =
            format!("{TOKEN_SELECT} WHERE t.org_id = $1 AND t.deleted_at IS NULL ORDER BY t.name");
        let rows: Vec<TokenRow> = read!(self, |pool| {
            sqlx::query_as(sql(text))
                .bind(org_row.id)
                .fetch_all(pool)
                .await?
        });
        rows.iter().map(TokenRow::info).collect()
    }

    /// Deletes a token and, in the same transaction, every peer it created.
    /// Returns the number of peers deleted and the new generation.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::TokenNotFound`].
    pub async fn delete_token(
        &self,
        org: &OrgSlug,
        name: &TokenName,
    ) -> Result<(u64, Generation), StoreError> {
        let org_row = self.org_row(org).await?;
        let now = crate::model::now_unix();
        let out = write_tx!(self, |tx, is_pg| {
            let generation = bump_generation!(tx, is_pg);
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM tokens WHERE org_id = $1 AND name = $2 AND deleted_at IS NULL",
            )
            .bind(org_row.id)
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            match id {
                None => Err(StoreError::TokenNotFound(name.clone())),
                Some(id) => {
                    let deleted = sqlx::query("DELETE FROM peers WHERE token_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    sqlx::query("UPDATE tokens SET deleted_at = $1 WHERE id = $2")
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    Ok((deleted, generation))
                }
            }
        });
        let (deleted, generation) = out?;
        self.changes.publish(generation);
        Ok((deleted, generation))
    }

    /// Looks up a presented secret and records its use.
    ///
    /// # Errors
    /// [`StoreError::UnknownToken`], [`StoreError::TokenDeleted`], [`StoreError::TokenExpired`].
    pub async fn authenticate(&self, secret: &str) -> Result<AuthToken, StoreError> {
        let hash = secret::hash_secret(secret);
        let text = format!("{TOKEN_SELECT} WHERE t.secret_hash = $1");
        let row: Option<TokenRow> = read!(self, |pool| {
            sqlx::query_as(sql(text))
                .bind(&hash)
                .fetch_optional(pool)
                .await?
        });
        let row = row.ok_or(StoreError::UnknownToken)?;
        if row.deleted_at.is_some() {
            return Err(StoreError::TokenDeleted);
        }
        let now = crate::model::now_unix();
        if row.expires_at.is_some_and(|t| t <= now) {
            return Err(StoreError::TokenExpired);
        }
        if row
            .last_used_at
            .is_none_or(|t| now - t >= LAST_USED_RESOLUTION)
        {
            read!(self, |pool| {
                sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(row.id)
                    .execute(pool)
                    .await?;
            });
        }
        row.auth()
    }

    /// Creates a peer for `token`, allocating its address.
    ///
    /// # Errors
    /// [`StoreError::PeerNameTaken`], [`StoreError::PubkeyInUse`], [`StoreError::PeerCapReached`],
    /// [`StoreError::TokenDeleted`] (deleted meanwhile), [`StoreError::AddressesExhausted`].
    pub async fn register_peer(
        &self,
        token: &AuthToken,
        new: NewPeer,
    ) -> Result<(Peer, Generation), StoreError> {
        let now = crate::model::now_unix();
        let out: Result<(Peer, Generation), StoreError> = write_tx!(self, |tx, is_pg| {
            let generation = bump_generation!(tx, is_pg);
            let live: Option<(i64, Option<i64>)> =
                sqlx::query_as("SELECT org_id, deleted_at FROM tokens WHERE id = $1")
                    .bind(token.id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let org_id = match live {
                Some((org_id, None)) => Some(org_id),
                _ => None,
            };
            match org_id {
                None => Err(StoreError::TokenDeleted),
                Some(org_id) => {
                    let name_taken: Option<i64> =
                        sqlx::query_scalar("SELECT id FROM peers WHERE org_id = $1 AND name = $2")
                            .bind(org_id)
                            .bind(new.name.as_str())
                            .fetch_optional(&mut *tx)
                            .await?;
                    let key_taken: Option<i64> =
                        sqlx::query_scalar("SELECT id FROM peers WHERE pubkey = $1")
                            .bind(new.pubkey.to_base64())
                            .fetch_optional(&mut *tx)
                            .await?;
                    let n_live: i64 =
                        sqlx::query_scalar("SELECT COUNT(*) FROM peers WHERE token_id = $1")
                            .bind(token.id)
                            .fetch_one(&mut *tx)
                            .await?;
                    if name_taken.is_some() {
                        Err(StoreError::PeerNameTaken(new.name.clone()))
                    } else if key_taken.is_some() {
                        Err(StoreError::PubkeyInUse)
                    } else if let Some(cap) =
                        token.max_peers.filter(|cap| n_live >= i64::from(*cap))
                    {
                        Err(StoreError::PeerCapReached(cap))
                    } else {
                        let host: i64 = sqlx::query_scalar(
                            "UPDATE orgs SET next_host = next_host + 1 WHERE id = $1 RETURNING next_host - 1",
                        )
                        .bind(org_id)
                        .fetch_one(&mut *tx)
                        .await?;
                        if host <= 0 {
                            Err(StoreError::AddressesExhausted)
                        } else {
                            let address = peer_address(token.org_prefix, host as u64);
                            sqlx::query(
                                "INSERT INTO peers (org_id, token_id, name, group_name, region, pubkey, address, created_at, updated_at) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                            )
                            .bind(org_id)
                            .bind(token.id)
                            .bind(new.name.as_str())
                            .bind(new.group.as_str())
                            .bind(new.region.as_str())
                            .bind(new.pubkey.to_base64())
                            .bind(address.to_string())
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                            Ok((
                                Peer {
                                    org: token.org.clone(),
                                    name: new.name.clone(),
                                    group: new.group.clone(),
                                    region: new.region.clone(),
                                    pubkey: new.pubkey,
                                    address,
                                    token: token.name.clone(),
                                    created_at: now,
                                    updated_at: now,
                                },
                                generation,
                            ))
                        }
                    }
                }
            }
        });
        let (peer, generation) = out?;
        self.changes.publish(generation);
        Ok((peer, generation))
    }

    /// Re-keys a peer that `token` created; its address stays.
    ///
    /// # Errors
    /// [`StoreError::PeerNotFound`] (also for another token's peer), [`StoreError::PubkeyInUse`].
    pub async fn rekey_peer(
        &self,
        token: &AuthToken,
        name: &PeerName,
        pubkey: PublicKey,
    ) -> Result<(Peer, Generation), StoreError> {
        let now = crate::model::now_unix();
        let out: Result<Generation, StoreError> = write_tx!(self, |tx, is_pg| {
            let generation = bump_generation!(tx, is_pg);
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT p.id FROM peers p JOIN tokens t ON t.id = p.token_id \
                 WHERE p.token_id = $1 AND p.name = $2 AND t.deleted_at IS NULL",
            )
            .bind(token.id)
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let key_owner: Option<i64> =
                sqlx::query_scalar("SELECT id FROM peers WHERE pubkey = $1")
                    .bind(pubkey.to_base64())
                    .fetch_optional(&mut *tx)
                    .await?;
            match id {
                None => Err(StoreError::PeerNotFound(name.clone())),
                Some(id) if key_owner.is_some_and(|owner| owner != id) => {
                    Err(StoreError::PubkeyInUse)
                }
                Some(id) => {
                    sqlx::query("UPDATE peers SET pubkey = $1, updated_at = $2 WHERE id = $3")
                        .bind(pubkey.to_base64())
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    Ok(generation)
                }
            }
        });
        let generation = out?;
        self.changes.publish(generation);
        let peer = self.token_peer(token, name).await?;
        Ok((peer, generation))
    }

    /// A peer that `token` created.
    ///
    /// # Errors
    /// [`StoreError::PeerNotFound`], also when another token created it.
    pub async fn token_peer(&self, token: &AuthToken, name: &PeerName) -> Result<Peer, StoreError> {
        let text = format!("{PEER_SELECT} WHERE p.token_id = $1 AND p.name = $2");
        let row: Option<PeerRow> = read!(self, |pool| {
            sqlx::query_as(sql(text))
                .bind(token.id)
                .bind(name.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::PeerNotFound(name.clone()))?
            .into_peer()
    }

    /// Deletes a peer that `token` created.
    ///
    /// # Errors
    /// [`StoreError::PeerNotFound`], also when another token created it.
    pub async fn delete_token_peer(
        &self,
        token: &AuthToken,
        name: &PeerName,
    ) -> Result<Generation, StoreError> {
        self.delete_peer_owned_by(Owner::Token, token.id, name)
            .await
    }

    /// The org's peers, by name.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`].
    pub async fn list_peers(&self, org: &OrgSlug) -> Result<Vec<Peer>, StoreError> {
        let org_row = self.org_row(org).await?;
        let text = format!("{PEER_SELECT} WHERE p.org_id = $1 ORDER BY p.name");
        let rows: Vec<PeerRow> = read!(self, |pool| {
            sqlx::query_as(sql(text))
                .bind(org_row.id)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(PeerRow::into_peer).collect()
    }

    /// One peer of the org.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::PeerNotFound`].
    pub async fn get_peer(&self, org: &OrgSlug, name: &PeerName) -> Result<Peer, StoreError> {
        let org_row = self.org_row(org).await?;
        let text = format!("{PEER_SELECT} WHERE p.org_id = $1 AND p.name = $2");
        let row: Option<PeerRow> = read!(self, |pool| {
            sqlx::query_as(sql(text))
                .bind(org_row.id)
                .bind(name.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::PeerNotFound(name.clone()))?
            .into_peer()
    }

    /// Deletes one peer of the org (admin).
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::PeerNotFound`].
    pub async fn delete_peer(
        &self,
        org: &OrgSlug,
        name: &PeerName,
    ) -> Result<Generation, StoreError> {
        let org_row = self.org_row(org).await?;
        self.delete_peer_owned_by(Owner::Org, org_row.id, name)
            .await
    }

    /// Deletes the peer `name` whose token or org (per `owner`) is `owner_id`.
    async fn delete_peer_owned_by(
        &self,
        owner: Owner,
        owner_id: i64,
        name: &PeerName,
    ) -> Result<Generation, StoreError> {
        let text = match owner {
            Owner::Token => "DELETE FROM peers WHERE token_id = $1 AND name = $2",
            Owner::Org => "DELETE FROM peers WHERE org_id = $1 AND name = $2",
        };
        let out: Result<Generation, StoreError> = write_tx!(self, |tx, is_pg| {
            let generation = bump_generation!(tx, is_pg);
            let n = sqlx::query(text)
                .bind(owner_id)
                .bind(name.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                Err(StoreError::PeerNotFound(name.clone()))
            } else {
                Ok(generation)
            }
        });
        let generation = out?;
        self.changes.publish(generation);
        Ok(generation)
    }

    /// Every org and live peer, read in one transaction, with the generation they belong to.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn load_all(&self) -> Result<Dump, StoreError> {
        let peer_text = format!("{PEER_SELECT} ORDER BY o.slug, p.name");
        // One consistent read snapshot: a deferred transaction in SQLite's WAL mode, a
        // repeatable-read one on PostgreSQL.
        let (generation, org_rows, peer_rows): (i64, Vec<OrgRow>, Vec<PeerRow>) =
            read!(self, |pool| {
                let begin = if self.backend_name() == "postgres" {
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
                } else {
                    "BEGIN"
                };
                let mut tx = pool.begin_with(begin).await?;
                let g = sqlx::query_scalar("SELECT generation FROM meta WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?;
                let o =
                    sqlx::query_as("SELECT id, slug, prefix, created_at FROM orgs ORDER BY slug")
                        .fetch_all(&mut *tx)
                        .await?;
                let p = sqlx::query_as(sql(peer_text)).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                (g, o, p)
            });
        Ok(Dump {
            generation: Generation(generation as u64),
            orgs: org_rows
                .into_iter()
                .map(OrgRow::into_org)
                .collect::<Result<_, _>>()?,
            peers: peer_rows
                .into_iter()
                .map(PeerRow::into_peer)
                .collect::<Result<_, _>>()?,
        })
    }

    /// The generation stored in the database.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn generation(&self) -> Result<Generation, StoreError> {
        let g: i64 = read!(self, |pool| {
            sqlx::query_scalar("SELECT generation FROM meta WHERE id = 1")
                .fetch_one(pool)
                .await?
        });
        Ok(Generation(g as u64))
    }
}
