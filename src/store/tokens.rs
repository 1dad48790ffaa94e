//! WireGuard tokens: minted by an admin, presented by nodes, stored only as a hash.
//!
//! Deleting a token deletes every peer it created, in the same transaction.

use super::peers::{PEER_SELECT, PeerRow};
use super::secret::{self, TokenSecret};
use super::{
    AuditAction, Store, StoreError, is_foreign_key_violation, is_unique_violation, parse_col, sql,
};
use crate::model::{Change, Generation, GroupName, OrgSlug, TokenInfo, TokenName};
use crate::wireguard::derived;
use ipnet::Ipv6Net;

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
    /// Every peer it creates is ephemeral.
    pub ephemeral: bool,
    /// Key lifetime, seconds, of the peers it creates or re-keys (issue 23): the token's own
    /// `key_expiry`. The peer API fills in the org-wide default (`[peers] key_expiry`) when the
    /// token has none. `None`: keys never expire.
    pub key_expiry: Option<u64>,
    /// Set when a derived (attenuated) token authenticated: the only peer names it may touch
    /// (every one must match; none: any name). Its group and expiry are already folded into
    /// `group` and the check at authentication.
    pub only_peers: Option<Vec<String>>,
}

impl AuthToken {
    /// Whether this token may create, re-key, show or delete the peer `name`.
    pub fn allows_peer(&self, name: &str) -> bool {
        self.only_peers
            .as_ref()
            .is_none_or(|names| names.iter().all(|n| n.eq_ignore_ascii_case(name)))
    }
}

/// A parent token found by its hash for a derived token: the token and its public root key.
#[derive(Debug, Clone)]
pub struct DerivedParent {
    /// The parent, as it authenticates.
    pub token: AuthToken,
    /// Its public root key (hex), if the server has seen its secret since issue 16.
    pub derive_key: Option<String>,
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
    /// Key lifetime, seconds, of the peers it creates or re-keys; `None`: the org default.
    pub key_expiry: Option<u64>,
}

/// `last_used_at` is written at most this often per token, so reads stay cheap.
const LAST_USED_RESOLUTION: i64 = 10;

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
    ephemeral: i64,
    derive_key: Option<String>,
    key_expiry: Option<i64>,
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
            ephemeral: self.ephemeral != 0,
            key_expiry: self.key_expiry.map(|s| s.max(1) as u64),
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
            ephemeral: info.ephemeral,
            key_expiry: info.key_expiry,
            only_peers: None,
        })
    }
}

const TOKEN_SELECT: &str = "SELECT t.id, o.slug AS org_slug, o.prefix AS org_prefix, t.name, t.group_name, \
     t.expires_at, t.max_peers, t.created_at, t.last_used_at, t.deleted_at, \
     t.peer_count AS live_peers, t.ephemeral, t.derive_key, t.key_expiry \
     FROM tokens t JOIN orgs o ON o.id = t.org_id";

/// [`TOKEN_SELECT`] without the live peer count: for authentication, on every peer API request.
const TOKEN_AUTH_SELECT: &str = "SELECT t.id, o.slug AS org_slug, o.prefix AS org_prefix, t.name, t.group_name, \
     t.expires_at, t.max_peers, t.created_at, t.last_used_at, t.deleted_at, \
     CAST(0 AS BIGINT) AS live_peers, t.ephemeral, t.derive_key, t.key_expiry \
     FROM tokens t JOIN orgs o ON o.id = t.org_id";

impl Store {
    /// Mints a token; the secret is returned once and only its hash is stored.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::TokenNameTaken`].
    pub async fn mint_token(
        &self,
        org: &OrgSlug,
        new: NewToken,
    ) -> Result<(TokenInfo, TokenSecret), StoreError> {
        self.mint_token_opts(org, new, false).await
    }

    /// Mints a token like [`Store::mint_token`]; with `ephemeral`, every peer it creates is
    /// ephemeral. Logged in the audit log as minted by `admin`.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::TokenNameTaken`].
    pub async fn mint_token_opts(
        &self,
        org: &OrgSlug,
        new: NewToken,
        ephemeral: bool,
    ) -> Result<(TokenInfo, TokenSecret), StoreError> {
        let org_row = self.org_row(org).await?;
        let secret = TokenSecret::generate();
        let hash = secret::hash_secret(secret.expose());
        let derive_key = derived::root_public_hex(derived::Kind::Token, secret.expose());
        let now = crate::model::now_unix();
        let res: Result<(), StoreError> = async {
            write_tx!(self, |tx, is_pg, log| {
                sqlx::query(
                    "INSERT INTO tokens (org_id, name, secret_hash, group_name, expires_at, max_peers, created_at, ephemeral, derive_key, key_expiry) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(org_row.id)
                .bind(new.name.as_str())
                .bind(&hash)
                .bind(new.group.as_ref().map(|g| g.as_str().to_owned()))
                .bind(new.expires_at)
                .bind(new.max_peers.map(i64::from))
                .bind(now)
                .bind(i64::from(ephemeral))
                .bind(&derive_key)
                .bind(new.key_expiry.map(|s| i64::try_from(s).unwrap_or(i64::MAX)))
                .execute(&mut *tx)
                .await?;
                let mut detail = Vec::new();
                if let Some(group) = &new.group {
                    detail.push(format!("group={group}"));
                }
                if let Some(cap) = new.max_peers {
                    detail.push(format!("max_peers={cap}"));
                }
                if ephemeral {
                    detail.push("ephemeral".to_owned());
                }
                if let Some(secs) = new.key_expiry {
                    detail.push(format!(
                        "key_expiry={}",
                        humantime::format_duration(std::time::Duration::from_secs(secs))
                    ));
                }
                audit!(
                    self,
                    tx,
                    org_row.id,
                    "admin",
                    AuditAction::TokenMinted,
                    new.name.as_str(),
                    (!detail.is_empty()).then(|| detail.join(" "))
                );
                Ok(())
            })
        }
        .await;
        match res {
            Ok(()) => {}
            Err(StoreError::Database(e)) if is_unique_violation(&e) => {
                return Err(StoreError::TokenNameTaken(new.name));
            }
            // The org was deleted between the look-up and the insert.
            Err(StoreError::Database(e)) if is_foreign_key_violation(&e) => {
                return Err(StoreError::OrgNotFound(org.clone()));
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
            ephemeral,
            key_expiry: new.key_expiry,
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

    /// One live token of the org, with its live peer count (never its secret: the store has none).
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::TokenNotFound`].
    pub async fn get_token(
        &self,
        org: &OrgSlug,
        name: &TokenName,
    ) -> Result<TokenInfo, StoreError> {
        let org_row = self.org_row(org).await?;
        let text =
            format!("{TOKEN_SELECT} WHERE t.org_id = $1 AND t.name = $2 AND t.deleted_at IS NULL");
        let row: Option<TokenRow> = read!(self, |pool| {
            sqlx::query_as(sql(text))
                .bind(org_row.id)
                .bind(name.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::TokenNotFound(name.clone()))?
            .info()
    }

    /// A page of the org's live tokens by name, with their live peer counts: at most `limit`
    /// after `after`.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::Database`].
    pub async fn list_tokens_page(
        &self,
        org: &OrgSlug,
        after: Option<&str>,
        limit: u32,
    ) -> Result<super::Page<TokenInfo>, StoreError> {
        use super::page::Bind;
        let org_row = self.org_row(org).await?;
        let limit = super::page::page_limit(limit);
        let text = format!(
            "{TOKEN_SELECT} WHERE t.org_id = $1 AND t.deleted_at IS NULL AND t.name > $2 \
             ORDER BY t.name LIMIT $3"
        );
        let binds = vec![
            Bind::Int(org_row.id),
            Bind::Text(after.unwrap_or("").to_owned()),
            Bind::Int(i64::from(limit) + 1),
        ];
        let rows: Vec<TokenRow> = self.page_rows(text, binds).await?;
        let tokens = rows
            .iter()
            .map(TokenRow::info)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(super::Page::from_rows(tokens, limit, |t| {
            t.name.to_string()
        }))
    }

    /// Deletes a token and, in the same transaction, every peer it created (logged as one
    /// [`Change::PeerRemoved`] per peer, with its full row). Returns the number of peers deleted
    /// and the generation that reflects the delete: a new one when peers went, the current one
    /// when the token had none (nothing a consumer sees changed).
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
        let peer_text = format!("{PEER_SELECT} WHERE p.token_id = $1 ORDER BY p.name");
        write_tx!(self, |tx, is_pg, log| {
            let current = lock_generation!(tx, is_pg);
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
                    let rows: Vec<PeerRow> = sqlx::query_as(sql(peer_text))
                        .bind(id)
                        .fetch_all(&mut *tx)
                        .await?;
                    let removed = rows
                        .into_iter()
                        .map(|row| row.into_peer().map(Change::PeerRemoved))
                        .collect::<Result<Vec<_>, _>>()?;
                    audit!(
                        self,
                        tx,
                        org_row.id,
                        "admin",
                        AuditAction::TokenDeleted,
                        name.as_str(),
                        Some(format!("deleted_peers={}", removed.len()))
                    );
                    for change in &removed {
                        if let Change::PeerRemoved(peer) = change {
                            audit!(
                                self,
                                tx,
                                org_row.id,
                                "admin",
                                AuditAction::PeerDeleted,
                                peer.name.as_str(),
                                Some(format!("with token {name}"))
                            );
                        }
                    }
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
                    let generation = if removed.is_empty() {
                        current
                    } else {
                        record_changes!(tx, is_pg, log, removed)
                    };
                    Ok((deleted, generation))
                }
            }
        })
    }

    /// Looks up a presented secret and records its use.
    ///
    /// # Errors
    /// [`StoreError::UnknownToken`], [`StoreError::TokenDeleted`], [`StoreError::TokenExpired`].
    pub async fn authenticate(&self, secret: &str) -> Result<AuthToken, StoreError> {
        let hash = secret::hash_secret(secret);
        let row = self.authenticate_hash(&hash).await?;
        if row.derive_key.is_none() {
            // Minted before issue 16: keep its public root key now that the secret is at hand,
            // so tokens derived from it verify from now on.
            let key = derived::root_public_hex(derived::Kind::Token, secret);
            read!(self, |pool| {
                sqlx::query(
                    "UPDATE tokens SET derive_key = $1 WHERE id = $2 AND derive_key IS NULL",
                )
                .bind(&key)
                .bind(row.id)
                .execute(pool)
                .await?;
            });
        }
        row.auth()
    }

    /// The parent of a derived token, by its secret's hash (what the derived token names), with
    /// the same checks and bookkeeping as [`Store::authenticate`].
    ///
    /// # Errors
    /// [`StoreError::UnknownToken`], [`StoreError::TokenDeleted`], [`StoreError::TokenExpired`].
    pub async fn authenticate_parent(&self, hash: &str) -> Result<DerivedParent, StoreError> {
        let row = self.authenticate_hash(hash).await?;
        Ok(DerivedParent {
            token: row.auth()?,
            derive_key: row.derive_key,
        })
    }

    async fn authenticate_hash(&self, hash: &str) -> Result<TokenRow, StoreError> {
        let text = format!("{TOKEN_AUTH_SELECT} WHERE t.secret_hash = $1");
        let row: Option<TokenRow> = read!(self, |pool| {
            sqlx::query_as(sql(text))
                .bind(hash)
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
        Ok(row)
    }
}
