//! Orgs: tenants, each with a random /48 carved from the configured ULA prefix.
//!
//! Creating an org changes what DNS serves (a new view), so it bumps the generation like a peer
//! write does. Deleting one ([`Store::delete_org`]) removes its tokens, peers and audit log with
//! it, and makes every consumer reload in full.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::{AuditAction, Store, StoreError, is_unique_violation, parse_col};
use crate::model::{Change, Generation, Org, OrgSlug};

#[derive(sqlx::FromRow)]
pub(super) struct OrgRow {
    pub(super) id: i64,
    slug: String,
    prefix: String,
    created_at: i64,
}

impl OrgRow {
    pub(super) fn into_org(self) -> Result<Org, StoreError> {
        Ok(Org {
            slug: parse_col(&self.slug, "orgs.slug")?,
            prefix: parse_col(&self.prefix, "orgs.prefix")?,
            created_at: self.created_at,
        })
    }
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
    pub(super) async fn ensure_default_org(&self) -> Result<(), StoreError> {
        let slug: OrgSlug = crate::model::DEFAULT_ORG.parse().expect("valid label");
        match self.create_org(&slug).await {
            Ok(_) | Err(StoreError::OrgExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates an org with a fresh random /48. A new org changes what DNS serves (its /48
    /// becomes a view), so the same transaction bumps the generation and logs
    /// [`Change::OrgCreated`].
    ///
    /// # Errors
    /// [`StoreError::OrgExists`] when the slug is taken.
    pub async fn create_org(&self, slug: &OrgSlug) -> Result<Org, StoreError> {
        for _ in 0..16 {
            let prefix = random_org_prefix(self.ula_prefix);
            let now = crate::model::now_unix();
            let res: Result<Org, StoreError> = async {
                write_tx!(self, |tx, is_pg, log| {
                    lock_generation!(tx, is_pg);
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
                        let org = Org {
                            slug: slug.clone(),
                            prefix,
                            created_at: now,
                        };
                        record_changes!(tx, is_pg, log, vec![Change::OrgCreated(org.clone())]);
                        Ok(org)
                    }
                })
            }
            .await;
            match res {
                Ok(org) => return Ok(org),
                // The random /48 collided (or, without the lock, a concurrent creator took the
                // slug): look again.
                Err(StoreError::Database(e)) if is_unique_violation(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::PrefixesExhausted)
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

    /// A page of the orgs by slug: at most `limit` after `after`, within `within`.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn list_orgs_page(
        &self,
        within: super::OrgsWithin<'_>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<super::Page<Org>, StoreError> {
        use super::page::Bind;
        let limit = super::page::page_limit(limit);
        let after = Bind::Text(after.unwrap_or("").to_owned());
        let (text, binds) = match within {
            super::OrgsWithin::All => (
                "SELECT id, slug, prefix, created_at FROM orgs WHERE slug > $1 ORDER BY slug LIMIT $2",
                vec![after],
            ),
            super::OrgsWithin::Only(slug) => (
                "SELECT id, slug, prefix, created_at FROM orgs WHERE slug > $1 AND slug = $2 \
                 ORDER BY slug LIMIT $3",
                vec![after, Bind::Text(slug.to_string())],
            ),
        };
        let mut binds = binds;
        binds.push(Bind::Int(i64::from(limit) + 1));
        let rows: Vec<OrgRow> = self.page_rows(text.to_owned(), binds).await?;
        let orgs = rows
            .into_iter()
            .map(OrgRow::into_org)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(super::Page::from_rows(orgs, limit, |o| o.slug.to_string()))
    }

    /// One org.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`].
    pub async fn get_org(&self, slug: &OrgSlug) -> Result<Org, StoreError> {
        self.org_row(slug).await?.into_org()
    }

    pub(super) async fn org_row(&self, slug: &OrgSlug) -> Result<OrgRow, StoreError> {
        let row: Option<OrgRow> = read!(self, |pool| {
            sqlx::query_as("SELECT id, slug, prefix, created_at FROM orgs WHERE slug = $1")
                .bind(slug.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::OrgNotFound(slug.clone()))
    }
}

/// Live peers and tokens of one org, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgCounts {
    /// The org.
    pub org: OrgSlug,
    /// Its live peers.
    pub peers: u64,
    /// Its live (not deleted) tokens.
    pub tokens: u64,
}

impl Store {
    /// Live peers and tokens per org, by slug: the peer counter the database keeps, and a
    /// count of live tokens over an indexed column.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn org_counts(&self) -> Result<Vec<OrgCounts>, StoreError> {
        let rows: Vec<(String, i64, i64)> = read!(self, |pool| {
            sqlx::query_as(
                "SELECT o.slug, \
                 o.peer_count, \
                 (SELECT COUNT(*) FROM tokens t WHERE t.org_id = o.id AND t.deleted_at IS NULL) \
                 FROM orgs o ORDER BY o.slug",
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(slug, peers, tokens)| {
                Ok(OrgCounts {
                    org: parse_col(&slug, "orgs.slug")?,
                    peers: peers.max(0) as u64,
                    tokens: tokens.max(0) as u64,
                })
            })
            .collect()
    }
}

/// What [`Store::delete_org`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgDeleted {
    /// The org.
    pub org: OrgSlug,
    /// Its /48, free again.
    pub prefix: Ipv6Net,
    /// Peers deleted with it.
    pub peers: u64,
    /// Live tokens deleted with it.
    pub tokens: u64,
    /// API keys scoped to it, revoked with it.
    pub api_keys: u64,
    /// The generation that no longer has it.
    pub generation: Generation,
}

impl Store {
    /// Deletes an org. One that still has peers or live tokens is refused unless `cascade`, which
    /// deletes them in the same transaction. Its audit log goes with it; the delete itself is
    /// logged (`org_deleted`) in the default org's log. API keys scoped to it are revoked, so an
    /// org created later under the same slug does not inherit them.
    ///
    /// Removing a whole view is not a change set consumers patch in: the generation moves on with
    /// no change-log entry, and every consumer (DNS, gateways, other replicas) reloads in full,
    /// as after a pruned change log. An org delete is rare; the reload costs O(peers) once.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::OrgNotEmpty`], [`StoreError::DefaultOrg`].
    pub async fn delete_org(
        &self,
        slug: &OrgSlug,
        cascade: bool,
    ) -> Result<OrgDeleted, StoreError> {
        if slug.as_str() == crate::model::DEFAULT_ORG {
            return Err(StoreError::DefaultOrg(slug.clone()));
        }
        let now = crate::model::now_unix();
        let out: Result<OrgDeleted, StoreError> = write_tx!(self, |tx, is_pg, log| {
            lock_generation!(tx, is_pg);
            let row: Option<(i64, String, i64)> =
                sqlx::query_as("SELECT id, prefix, peer_count FROM orgs WHERE slug = $1")
                    .bind(slug.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            match row {
                None => Err(StoreError::OrgNotFound(slug.clone())),
                Some((id, prefix, peers)) => {
                    let tokens: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM tokens WHERE org_id = $1 AND deleted_at IS NULL",
                    )
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                    if !cascade && (peers > 0 || tokens > 0) {
                        Err(StoreError::OrgNotEmpty {
                            org: slug.clone(),
                            peers: peers.max(0) as u64,
                            tokens: tokens.max(0) as u64,
                        })
                    } else {
                        let peers = sqlx::query("DELETE FROM peers WHERE org_id = $1")
                            .bind(id)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        sqlx::query("DELETE FROM audit_log WHERE org_id = $1")
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query("DELETE FROM tokens WHERE org_id = $1")
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                        let api_keys = sqlx::query(
                            "UPDATE api_keys SET revoked_at = $1 WHERE org = $2 AND revoked_at IS NULL",
                        )
                        .bind(now)
                        .bind(slug.as_str())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        sqlx::query("DELETE FROM orgs WHERE id = $1")
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                        let default_id: Option<i64> =
                            sqlx::query_scalar("SELECT id FROM orgs WHERE slug = $1")
                                .bind(crate::model::DEFAULT_ORG)
                                .fetch_optional(&mut *tx)
                                .await?;
                        if let Some(default_id) = default_id {
                            audit!(
                                self,
                                tx,
                                default_id,
                                "admin",
                                AuditAction::OrgDeleted,
                                slug.as_str(),
                                Some(format!(
                                    "prefix={prefix} peers={peers} tokens={tokens} api_keys={api_keys}{}",
                                    if cascade { " cascade" } else { "" }
                                ))
                            );
                        }
                        // A new generation without a change-log entry: every consumer finds the
                        // gap and reloads (see the doc above).
                        let generation: i64 = sqlx::query_scalar(
                            "UPDATE meta SET generation = generation + 1 WHERE id = 1 RETURNING generation",
                        )
                        .fetch_one(&mut *tx)
                        .await?;
                        sqlx::query("DELETE FROM change_log WHERE generation >= $1")
                            .bind(generation)
                            .execute(&mut *tx)
                            .await?;
                        if is_pg {
                            sqlx::query("SELECT pg_notify($1, $2)")
                                .bind(super::NOTIFY_CHANNEL)
                                .bind(generation.to_string())
                                .execute(&mut *tx)
                                .await?;
                        }
                        Ok(OrgDeleted {
                            org: slug.clone(),
                            prefix: parse_col(&prefix, "orgs.prefix")?,
                            peers,
                            tokens: tokens.max(0) as u64,
                            api_keys,
                            generation: Generation(generation as u64),
                        })
                    }
                }
            }
        });
        if let Ok(deleted) = &out {
            // No change set to announce; the generation wakes every feed, which reloads.
            self.changes.publish(deleted.generation);
        }
        out
    }
}
