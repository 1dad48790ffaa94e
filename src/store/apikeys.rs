//! API keys (issue 16): named admin credentials with a scope (one org or every org, `"*"`), a
//! role ([`Role`]) and an optional expiry. The key (`sixpn_ak_` and 64 hex digits) is shown once
//! and stored only as its SHA-256 hash, like a WireGuard token's secret.
//!
//! Nothing is cached: [`Store::authenticate_api_key`] reads the key's row on every admin
//! request, so a revocation or an expiry takes effect on every replica at the next request (the
//! database is the one place they are written).

use std::fmt;

use subtle::ConstantTimeEq;

use super::secret;
use super::{Store, StoreError, is_unique_violation};
use crate::model::OrgSlug;
use crate::wireguard::derived;

/// The recognisable prefix of every API key.
pub const API_KEY_PREFIX: &str = "sixpn_ak_";

/// `last_used_at` is written at most this often per key.
const LAST_USED_RESOLUTION: i64 = 10;

/// What an API key may do, from most to least. Each role may do everything the ones below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read only: orgs, WireGuard tokens (never their secrets) and peers.
    Viewer,
    /// Also mints, lists and deletes WireGuard tokens, deletes peers and reads the audit log.
    Operator,
    /// Everything in its orgs, API keys included (and creating orgs with scope `"*"`).
    Owner,
}

impl Role {
    /// Every role, from least to most.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Owner];

    /// The role's name as the API and the database write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("must be one of owner, operator, viewer; got {s:?}"))
    }
}

/// The orgs an API key reaches: one, or every org (`"*"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyScope {
    /// Every org, present and future.
    All,
    /// One org.
    Org(OrgSlug),
}

impl KeyScope {
    /// Whether the scope reaches `org`.
    pub fn covers(&self, org: &OrgSlug) -> bool {
        match self {
            KeyScope::All => true,
            KeyScope::Org(own) => own == org,
        }
    }

    /// Whether the scope reaches everything `other` reaches.
    pub fn contains(&self, other: &KeyScope) -> bool {
        match (self, other) {
            (KeyScope::All, _) => true,
            (KeyScope::Org(a), KeyScope::Org(b)) => a == b,
            (KeyScope::Org(_), KeyScope::All) => false,
        }
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyScope::All => f.write_str("*"),
            KeyScope::Org(org) => org.fmt(f),
        }
    }
}

impl std::str::FromStr for KeyScope {
    type Err = crate::model::LabelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "*" {
            Ok(KeyScope::All)
        } else {
            s.parse().map(KeyScope::Org)
        }
    }
}

/// An API key's secret. `Debug` is redacted; there is no `Display` or `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    /// A new key: the prefix and 32 random bytes in hex.
    ///
    /// # Panics
    /// Only if the OS random source fails, which leaves nothing safe to do.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source must work to create a key");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        ApiKeySecret(format!("{API_KEY_PREFIX}{hex}"))
    }

    /// The key itself, to show its creator once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret(<redacted>)")
    }
}

/// Whether `secret` has the form of an API key: `sixpn_ak_` and 64 lowercase hex digits.
/// Anything else cannot be one, and is refused without a database query.
pub fn is_api_key_shaped(secret: &str) -> bool {
    secret.strip_prefix(API_KEY_PREFIX).is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// What is asked for when creating a key.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// A DNS label, unique among live keys.
    pub name: String,
    /// The orgs it reaches.
    pub scope: KeyScope,
    /// What it may do there.
    pub role: Role,
    /// Expiry, unix seconds.
    pub expires_at: Option<i64>,
}

/// A key as lists show it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    /// Its name.
    pub name: String,
    /// The orgs it reaches.
    pub scope: KeyScope,
    /// What it may do there.
    pub role: Role,
    /// Expiry, unix seconds.
    pub expires_at: Option<i64>,
    /// Creation, unix seconds.
    pub created_at: i64,
    /// Who created it: `bootstrap` or `key:<name>`.
    pub created_by: String,
    /// Last successful authentication (10 s resolution).
    pub last_used_at: Option<i64>,
}

/// A key that authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyAuth {
    /// Row id (for rate limits).
    pub id: i64,
    /// Its name.
    pub name: String,
    /// The orgs it reaches.
    pub scope: KeyScope,
    /// What it may do there.
    pub role: Role,
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: i64,
    name: String,
    secret_hash: String,
    org: String,
    role: String,
    expires_at: Option<i64>,
    created_at: i64,
    created_by: String,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    derive_key: Option<String>,
}

impl ApiKeyRow {
    fn info(self) -> Result<ApiKeyInfo, StoreError> {
        Ok(ApiKeyInfo {
            scope: super::parse_col(&self.org, "api_keys.org")?,
            role: super::parse_col(&self.role, "api_keys.role")?,
            name: self.name,
            expires_at: self.expires_at,
            created_at: self.created_at,
            created_by: self.created_by,
            last_used_at: self.last_used_at,
        })
    }
}

const KEY_SELECT: &str = "SELECT id, name, secret_hash, org, role, expires_at, created_at, \
     created_by, last_used_at, revoked_at, derive_key FROM api_keys";

impl Store {
    /// Creates an API key; the key is returned once and only its hash is stored. A key for one
    /// org needs that org to exist.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::ApiKeyNameTaken`].
    pub async fn create_api_key(
        &self,
        new: NewApiKey,
        created_by: &str,
    ) -> Result<(ApiKeyInfo, ApiKeySecret), StoreError> {
        if let KeyScope::Org(org) = &new.scope {
            self.org_row(org).await?;
        }
        let secret = ApiKeySecret::generate();
        let hash = secret::hash_secret(secret.expose());
        let derive_key = derived::root_public_hex(derived::Kind::ApiKey, secret.expose());
        let now = crate::model::now_unix();
        let res: Result<_, sqlx::Error> = read!(self, |pool| {
            sqlx::query(
                "INSERT INTO api_keys (name, secret_hash, org, role, expires_at, created_at, created_by, derive_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&new.name)
            .bind(&hash)
            .bind(new.scope.to_string())
            .bind(new.role.as_str())
            .bind(new.expires_at)
            .bind(now)
            .bind(created_by)
            .bind(&derive_key)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });
        match res {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::ApiKeyNameTaken(new.name));
            }
            Err(e) => return Err(e.into()),
        }
        let info = ApiKeyInfo {
            name: new.name,
            scope: new.scope,
            role: new.role,
            expires_at: new.expires_at,
            created_at: now,
            created_by: created_by.to_owned(),
            last_used_at: None,
        };
        Ok((info, secret))
    }

    /// The live (not revoked) keys whose scope lies within `within`, by name. Expired keys are
    /// listed (with their expiry) until revoked.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn list_api_keys(&self, within: &KeyScope) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let rows: Vec<ApiKeyRow> = match within {
            KeyScope::All => {
                let text = format!("{KEY_SELECT} WHERE revoked_at IS NULL ORDER BY name");
                read!(self, |pool| {
                    sqlx::query_as(super::sql(text)).fetch_all(pool).await?
                })
            }
            KeyScope::Org(org) => {
                let text =
                    format!("{KEY_SELECT} WHERE revoked_at IS NULL AND org = $1 ORDER BY name");
                read!(self, |pool| {
                    sqlx::query_as(super::sql(text))
                        .bind(org.as_str())
                        .fetch_all(pool)
                        .await?
                })
            }
        };
        rows.into_iter().map(ApiKeyRow::info).collect()
    }

    /// A page of the live keys within `within` by name: at most `limit` after `after`.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn list_api_keys_page(
        &self,
        within: &KeyScope,
        after: Option<&str>,
        limit: u32,
    ) -> Result<super::Page<ApiKeyInfo>, StoreError> {
        use super::page::Bind;
        let limit = super::page::page_limit(limit);
        let mut binds = vec![Bind::Text(after.unwrap_or("").to_owned())];
        let mut text = format!("{KEY_SELECT} WHERE revoked_at IS NULL AND name > $1");
        if let KeyScope::Org(org) = within {
            binds.push(Bind::Text(org.to_string()));
            text.push_str(" AND org = $2");
        }
        binds.push(Bind::Int(i64::from(limit) + 1));
        text.push_str(&format!(" ORDER BY name LIMIT ${}", binds.len()));
        let rows: Vec<ApiKeyRow> = self.page_rows(text, binds).await?;
        let keys = rows
            .into_iter()
            .map(ApiKeyRow::info)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(super::Page::from_rows(keys, limit, |k| k.name.clone()))
    }

    /// The live key named `name`, if its scope lies within `within` (else it is not found).
    ///
    /// # Errors
    /// [`StoreError::ApiKeyNotFound`].
    pub async fn get_api_key(
        &self,
        name: &str,
        within: &KeyScope,
    ) -> Result<ApiKeyInfo, StoreError> {
        let text = format!("{KEY_SELECT} WHERE revoked_at IS NULL AND name = $1");
        let row: Option<ApiKeyRow> = read!(self, |pool| {
            sqlx::query_as(super::sql(text))
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        let info = row
            .map(ApiKeyRow::info)
            .transpose()?
            .filter(|info| within.contains(&info.scope));
        info.ok_or_else(|| StoreError::ApiKeyNotFound(name.to_owned()))
    }

    /// Revokes the live key named `name` if its scope lies within `within`. From the commit on,
    /// every replica refuses it (each reads the row on every request).
    ///
    /// # Errors
    /// [`StoreError::ApiKeyNotFound`].
    pub async fn revoke_api_key(&self, name: &str, within: &KeyScope) -> Result<(), StoreError> {
        let info = self.get_api_key(name, within).await?;
        let now = crate::model::now_unix();
        let done = read!(self, |pool| {
            sqlx::query(
                "UPDATE api_keys SET revoked_at = $1 WHERE name = $2 AND org = $3 \
                 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(name)
            .bind(info.scope.to_string())
            .execute(pool)
            .await?
            .rows_affected()
        });
        if done == 0 {
            return Err(StoreError::ApiKeyNotFound(name.to_owned()));
        }
        Ok(())
    }

    /// Looks up a presented API key and records its use.
    ///
    /// # Errors
    /// [`StoreError::ApiKeyUnknown`], [`StoreError::ApiKeyRevoked`],
    /// [`StoreError::ApiKeyExpired`].
    pub async fn authenticate_api_key(&self, secret: &str) -> Result<ApiKeyAuth, StoreError> {
        if !is_api_key_shaped(secret) {
            return Err(StoreError::ApiKeyUnknown);
        }
        let hash = secret::hash_secret(secret);
        let (auth, derive_key) = self.authenticate_api_key_hash(&hash).await?;
        if derive_key.is_none() {
            // Created before offline attenuation: keep its public root key now.
            let key = derived::root_public_hex(derived::Kind::ApiKey, secret);
            read!(self, |pool| {
                sqlx::query(
                    "UPDATE api_keys SET derive_key = $1 WHERE id = $2 AND derive_key IS NULL",
                )
                .bind(&key)
                .bind(auth.id)
                .execute(pool)
                .await?;
            });
        }
        Ok(auth)
    }

    /// The parent of a derived API key, by its key's hash, checked like
    /// [`Store::authenticate_api_key`]; with its public root key (hex), if known.
    ///
    /// # Errors
    /// [`StoreError::ApiKeyUnknown`], [`StoreError::ApiKeyRevoked`], [`StoreError::ApiKeyExpired`].
    pub async fn authenticate_api_key_hash(
        &self,
        hash: &str,
    ) -> Result<(ApiKeyAuth, Option<String>), StoreError> {
        let text = format!("{KEY_SELECT} WHERE secret_hash = $1");
        let row: Option<ApiKeyRow> = read!(self, |pool| {
            sqlx::query_as(super::sql(text))
                .bind(hash)
                .fetch_optional(pool)
                .await?
        });
        // The index found the row by the hash; compare once more in constant time, so nothing
        // here depends on how much of a hash matched.
        let row = row
            .filter(|row| bool::from(row.secret_hash.as_bytes().ct_eq(hash.as_bytes())))
            .ok_or(StoreError::ApiKeyUnknown)?;
        if row.revoked_at.is_some() {
            return Err(StoreError::ApiKeyRevoked);
        }
        let now = crate::model::now_unix();
        if row.expires_at.is_some_and(|t| t <= now) {
            return Err(StoreError::ApiKeyExpired);
        }
        if row
            .last_used_at
            .is_none_or(|t| now - t >= LAST_USED_RESOLUTION)
        {
            read!(self, |pool| {
                sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(row.id)
                    .execute(pool)
                    .await?;
            });
        }
        let id = row.id;
        let derive_key = row.derive_key.clone();
        let info = row.info()?;
        Ok((
            ApiKeyAuth {
                id,
                name: info.name,
                scope: info.scope,
                role: info.role,
            },
            derive_key,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_key_shaped_and_redacted() {
        for _ in 0..10 {
            let key = ApiKeySecret::generate();
            assert!(is_api_key_shaped(key.expose()));
            assert_eq!(format!("{key:?}"), "ApiKeySecret(<redacted>)");
        }
        assert!(!is_api_key_shaped("sixpn_ak_"));
        assert!(!is_api_key_shaped(&format!("sixpn_wg_{}", "a".repeat(64))));
        assert!(!is_api_key_shaped(&format!("sixpn_ak_{}", "A".repeat(64))));
    }

    #[test]
    fn roles_and_scopes() {
        assert!(Role::Owner > Role::Operator && Role::Operator > Role::Viewer);
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("admin".parse::<Role>().is_err());
        let acme: KeyScope = "acme".parse().unwrap();
        assert_eq!("*".parse::<KeyScope>(), Ok(KeyScope::All));
        assert!(KeyScope::All.contains(&acme));
        assert!(!acme.contains(&KeyScope::All));
        assert!(acme.contains(&acme));
        assert!(!acme.contains(&"beta".parse().unwrap()));
        assert!("a b".parse::<KeyScope>().is_err());
    }
}
