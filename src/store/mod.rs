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
mod secret;

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use tokio::sync::watch;

pub use changes::Changes;
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

impl Store {
    /// Opens (creating and migrating when needed) the database at `url` and makes sure the
    /// default org exists. `ula_prefix` is where new orgs' /48s come from.
    ///
    /// # Errors
    /// [`StoreError::BadUrl`], [`StoreError::Migrate`] or [`StoreError::Database`].
    pub async fn open(url: &str, ula_prefix: Ipv6Net) -> Result<Store, StoreError> {
        let _ = (url, ula_prefix);
        todo!()
    }

    /// The change channel: its value is the newest generation committed (by this process, or by
    /// another replica when on PostgreSQL).
    pub fn changes(&self) -> watch::Receiver<Generation> {
        self.changes.subscribe()
    }

    /// Creates an org with a fresh random /48.
    pub async fn create_org(&self, slug: &OrgSlug) -> Result<Org, StoreError> {
        let _ = slug;
        todo!()
    }

    /// Every org, by slug.
    pub async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        todo!()
    }

    /// One org.
    pub async fn get_org(&self, slug: &OrgSlug) -> Result<Org, StoreError> {
        let _ = slug;
        todo!()
    }

    /// Mints a token; the secret is returned once and only its hash is stored.
    pub async fn mint_token(
        &self,
        org: &OrgSlug,
        new: NewToken,
    ) -> Result<(TokenInfo, TokenSecret), StoreError> {
        let _ = (org, new);
        todo!()
    }

    /// The org's live tokens with their live peer counts.
    pub async fn list_tokens(&self, org: &OrgSlug) -> Result<Vec<TokenInfo>, StoreError> {
        let _ = org;
        todo!()
    }

    /// Deletes a token and, in the same transaction, every peer it created.
    /// Returns the number of peers deleted and the new generation.
    pub async fn delete_token(
        &self,
        org: &OrgSlug,
        name: &TokenName,
    ) -> Result<(u64, Generation), StoreError> {
        let _ = (org, name);
        todo!()
    }

    /// Looks up a presented secret and records its use.
    pub async fn authenticate(&self, secret: &str) -> Result<AuthToken, StoreError> {
        let _ = secret;
        todo!()
    }

    /// Creates a peer for `token`, allocating its address.
    pub async fn register_peer(
        &self,
        token: &AuthToken,
        new: NewPeer,
    ) -> Result<(Peer, Generation), StoreError> {
        let _ = (token, new);
        todo!()
    }

    /// Re-keys a peer that `token` created; its address stays.
    pub async fn rekey_peer(
        &self,
        token: &AuthToken,
        name: &PeerName,
        pubkey: PublicKey,
    ) -> Result<(Peer, Generation), StoreError> {
        let _ = (token, name, pubkey);
        todo!()
    }

    /// A peer that `token` created.
    pub async fn token_peer(&self, token: &AuthToken, name: &PeerName) -> Result<Peer, StoreError> {
        let _ = (token, name);
        todo!()
    }

    /// Deletes a peer that `token` created.
    pub async fn delete_token_peer(
        &self,
        token: &AuthToken,
        name: &PeerName,
    ) -> Result<Generation, StoreError> {
        let _ = (token, name);
        todo!()
    }

    /// The org's peers, by name.
    pub async fn list_peers(&self, org: &OrgSlug) -> Result<Vec<Peer>, StoreError> {
        let _ = org;
        todo!()
    }

    /// One peer of the org.
    pub async fn get_peer(&self, org: &OrgSlug, name: &PeerName) -> Result<Peer, StoreError> {
        let _ = (org, name);
        todo!()
    }

    /// Deletes one peer of the org (admin).
    pub async fn delete_peer(&self, org: &OrgSlug, name: &PeerName) -> Result<Generation, StoreError> {
        let _ = (org, name);
        todo!()
    }

    /// Every org and live peer, read in one transaction, with the generation they belong to.
    pub async fn load_all(&self) -> Result<Dump, StoreError> {
        todo!()
    }

    /// The generation stored in the database.
    pub async fn generation(&self) -> Result<Generation, StoreError> {
        todo!()
    }
}
