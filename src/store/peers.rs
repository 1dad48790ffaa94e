//! Peers: registered by a node through its token, one address each in the org's /48.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::tokens::AuthToken;
use super::{AuditAction, Store, StoreError, bad_column, is_unique_violation, parse_col, sql};
use crate::model::{Change, Generation, GroupName, OrgSlug, Peer, PeerName, RegionCode};
use crate::wireguard::PublicKey;

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

/// The host part of a peer's address: peers live in `<org prefix>:1::/64`, numbered from 1.
pub fn peer_address(org_prefix: Ipv6Net, n: u64) -> Ipv6Addr {
    crate::model::prefix_host(org_prefix, (1u128 << 64) | u128::from(n))
}

/// When a key set at `now` expires under `token`'s key lifetime (see [`AuthToken::key_expiry`]).
fn key_expires_at(token: &AuthToken, now: i64) -> Option<i64> {
    token
        .key_expiry
        .map(|secs| now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)))
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
pub(super) struct PeerRow {
    pub(super) org_id: i64,
    pub(super) org_slug: String,
    name: String,
    group_name: String,
    region: String,
    pubkey: String,
    address: String,
    token_name: String,
    created_at: i64,
    updated_at: i64,
    key_expires_at: Option<i64>,
}

impl PeerRow {
    pub(super) fn into_peer(self) -> Result<Peer, StoreError> {
        let org = parse_col(&self.org_slug, "orgs.slug")?;
        self.into_peer_in(org)
    }

    /// The peer, with its org's slug already parsed (`load_all` parses each org's once).
    pub(super) fn into_peer_in(self, org: OrgSlug) -> Result<Peer, StoreError> {
        Ok(Peer {
            org,
            name: parse_col(&self.name, "peers.name")?,
            group: parse_col(&self.group_name, "peers.group_name")?,
            region: parse_col(&self.region, "peers.region")?,
            // Checked by `PublicKey::parse` on the way in: decode only (issue 9).
            pubkey: PublicKey::from_trusted_base64(&self.pubkey)
                .map_err(|e| bad_column("peers.pubkey", &self.pubkey, e))?,
            address: parse_col(&self.address, "peers.address")?,
            token: parse_col(&self.token_name, "tokens.name")?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            key_expires_at: self.key_expires_at,
        })
    }
}

pub(super) const PEER_SELECT: &str = "SELECT p.org_id, o.slug AS org_slug, p.name, p.group_name, p.region, p.pubkey, \
     p.address, t.name AS token_name, p.created_at, p.updated_at, p.key_expires_at \
     FROM peers p JOIN orgs o ON o.id = p.org_id JOIN tokens t ON t.id = p.token_id";

/// [`PEER_SELECT`] with what lists show besides: the last handshake and whether the peer is
/// ephemeral.
pub(super) const PEER_LIST_SELECT: &str = "SELECT p.org_id, o.slug AS org_slug, p.name, p.group_name, p.region, p.pubkey, \
     p.address, t.name AS token_name, p.created_at, p.updated_at, p.key_expires_at, p.last_handshake_at, p.ephemeral \
     FROM peers p JOIN orgs o ON o.id = p.org_id JOIN tokens t ON t.id = p.token_id";

#[derive(sqlx::FromRow)]
pub(super) struct PeerListRow {
    #[sqlx(flatten)]
    peer: PeerRow,
    last_handshake_at: Option<i64>,
    ephemeral: i64,
}

impl PeerListRow {
    pub(super) fn into_listed(self) -> Result<super::ListedPeer, StoreError> {
        Ok(super::ListedPeer {
            peer: self.peer.into_peer()?,
            last_seen_at: self.last_handshake_at,
            ephemeral: self.ephemeral != 0,
        })
    }
}

/// A unique violation on a peer insert or update as the domain error it means. The generation
/// lock makes the checks before it exact, so this is a safety net, not the usual path.
fn peer_conflict(e: sqlx::Error, name: &PeerName) -> StoreError {
    if is_unique_violation(&e) {
        let text = match &e {
            sqlx::Error::Database(d) => format!("{} {}", d.constraint().unwrap_or(""), d.message()),
            _ => String::new(),
        };
        if text.contains("pubkey") {
            return StoreError::PubkeyInUse;
        }
        if text.contains("name") {
            return StoreError::PeerNameTaken(name.clone());
        }
    }
    StoreError::Database(e)
}

/// The audit detail of a re-key: the new key, and `source_changed=OLD->NEW` when the client's
/// address differs from the one the peer was last created or re-keyed from (issue 23: a node
/// re-keying another's peer shows as such). Logged at WARN too.
fn rekey_detail(peer: &Peer, last: Option<String>, now: Option<String>) -> String {
    let mut detail = format!("pubkey={}", peer.pubkey.to_base64());
    if let (Some(last), Some(now)) = (last, now)
        && last != now
    {
        tracing::warn!(org = %peer.org, peer = %peer.name, previous_source = %last, source = %now,
            "peer re-keyed from another address than its last create or re-key");
        detail.push_str(&format!(" source_changed={last}->{now}"));
    }
    detail
}

impl Store {
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
        self.register_peer_opts(token, new, false)
            .await
            .map(|(peer, generation, _)| (peer, generation))
    }

    /// Creates a peer like [`Store::register_peer`]; it is ephemeral when `ephemeral` is set or
    /// the token was minted ephemeral (read in the transaction). Returns whether it is.
    /// Logged in the audit log as created by the token.
    ///
    /// # Errors
    /// As [`Store::register_peer`].
    pub async fn register_peer_opts(
        &self,
        token: &AuthToken,
        new: NewPeer,
        ephemeral: bool,
    ) -> Result<(Peer, Generation, bool), StoreError> {
        let now = crate::model::now_unix();
        let expires = key_expires_at(token, now);
        let out: Result<(Peer, Generation, bool), StoreError> = write_tx!(
            self,
            |tx, is_pg, log| {
                lock_generation!(tx, is_pg);
                let live: Option<(i64, Option<i64>, i64)> = sqlx::query_as(
                    "SELECT org_id, deleted_at, ephemeral FROM tokens WHERE id = $1",
                )
                .bind(token.id)
                .fetch_optional(&mut *tx)
                .await?;
                let (org_id, ephemeral) = match live {
                    Some((org_id, None, by_token)) => (Some(org_id), ephemeral || by_token != 0),
                    _ => (None, ephemeral),
                };
                match org_id {
                    None => Err(StoreError::TokenDeleted),
                    Some(org_id) => {
                        let name_taken: Option<i64> = sqlx::query_scalar(
                            "SELECT id FROM peers WHERE org_id = $1 AND name = $2",
                        )
                        .bind(org_id)
                        .bind(new.name.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                        let key_taken: Option<i64> =
                            sqlx::query_scalar("SELECT id FROM peers WHERE pubkey = $1")
                                .bind(new.pubkey.to_base64())
                                .fetch_optional(&mut *tx)
                                .await?;
                        // Both caps read counters the database keeps (migration 0009): a write
                        // costs the same at a million peers as at a thousand. The generation lock
                        // taken above orders every writer of peers, so the counts are exact.
                        let (org_live, token_live): (i64, i64) = sqlx::query_as(
                            "SELECT o.peer_count, t.peer_count FROM orgs o, tokens t \
                             WHERE o.id = $1 AND t.id = $2",
                        )
                        .bind(org_id)
                        .bind(token.id)
                        .fetch_one(&mut *tx)
                        .await?;
                        if name_taken.is_some() {
                            Err(StoreError::PeerNameTaken(new.name.clone()))
                        } else if key_taken.is_some() {
                            Err(StoreError::PubkeyInUse)
                        } else if let Some(cap) =
                            token.max_peers.filter(|cap| token_live >= i64::from(*cap))
                        {
                            Err(StoreError::PeerCapReached(cap))
                        } else if u64::try_from(org_live).unwrap_or(0) >= self.org_max_peers {
                            Err(StoreError::OrgPeerCapReached {
                                org: token.org.clone(),
                                cap: self.org_max_peers,
                            })
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
                                "INSERT INTO peers (org_id, token_id, name, group_name, region, pubkey, address, created_at, updated_at, ephemeral, last_source, key_expires_at) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11)",
                            )
                            .bind(org_id)
                            .bind(token.id)
                            .bind(new.name.as_str())
                            .bind(new.group.as_str())
                            .bind(new.region.as_str())
                            .bind(new.pubkey.to_base64())
                            .bind(address.to_string())
                            .bind(now)
                            .bind(i64::from(ephemeral))
                            .bind(self.source.map(|a| a.to_string()))
                            .bind(expires)
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| peer_conflict(e, &new.name))?;
                                let detail = format!(
                                    "address={address} group={}{}",
                                    new.group,
                                    if ephemeral { " ephemeral" } else { "" }
                                );
                                audit!(
                                    self,
                                    tx,
                                    org_id,
                                    token.name.as_str(),
                                    AuditAction::PeerCreated,
                                    new.name.as_str(),
                                    Some(detail)
                                );
                                let peer = Peer {
                                    org: token.org.clone(),
                                    name: new.name.clone(),
                                    group: new.group.clone(),
                                    region: new.region.clone(),
                                    pubkey: new.pubkey,
                                    address,
                                    token: token.name.clone(),
                                    created_at: now,
                                    updated_at: now,
                                    key_expires_at: expires,
                                };
                                let generation = record_changes!(
                                    tx,
                                    is_pg,
                                    log,
                                    vec![Change::PeerUpserted(peer.clone())]
                                );
                                Ok((peer, generation, ephemeral))
                            }
                        }
                    }
                }
            }
        );
        out
    }

    /// Re-keys a peer that `token` created; its address stays. Its key expiry starts over from
    /// now under the token's key lifetime ([`AuthToken::key_expiry`]), which revives a peer
    /// whose key had expired.
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
        let expires = key_expires_at(token, now);
        let peer_text = format!("{PEER_SELECT} WHERE p.id = $1");
        write_tx!(self, |tx, is_pg, log| {
            lock_generation!(tx, is_pg);
            let found: Option<(i64, Option<String>)> = sqlx::query_as(
                "SELECT p.id, p.last_source FROM peers p JOIN tokens t ON t.id = p.token_id \
                 WHERE p.token_id = $1 AND p.name = $2 AND t.deleted_at IS NULL",
            )
            .bind(token.id)
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let (id, last_source) = found.unzip();
            let source = self.source.map(|a| a.to_string());
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
                    // The client's address is kept while the server itself acts (no source).
                    sqlx::query(
                        "UPDATE peers SET pubkey = $1, updated_at = $2, \
                         last_source = COALESCE($3, last_source), key_expires_at = $4 WHERE id = $5",
                    )
                    .bind(pubkey.to_base64())
                    .bind(now)
                    .bind(source.as_deref())
                    .bind(expires)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| peer_conflict(e, name))?;
                    let row: PeerRow = sqlx::query_as(sql(peer_text))
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?;
                    let org_id = row.org_id;
                    let peer = row.into_peer()?;
                    audit!(
                        self,
                        tx,
                        org_id,
                        token.name.as_str(),
                        AuditAction::PeerRekeyed,
                        name.as_str(),
                        Some(rekey_detail(&peer, last_source.flatten(), source))
                    );
                    let generation =
                        record_changes!(tx, is_pg, log, vec![Change::PeerUpserted(peer.clone())]);
                    Ok((peer, generation))
                }
            }
        })
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
        self.delete_peer_owned_by(
            Owner::Token,
            token.id,
            name,
            token.name.as_str(),
            AuditAction::PeerDeleted,
        )
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
        self.delete_peer_owned_by(
            Owner::Org,
            org_row.id,
            name,
            "admin",
            AuditAction::PeerDeleted,
        )
        .await
    }

    /// Deletes the peer `name` whose token or org (per `owner`) is `owner_id`, logging `action`
    /// by `actor` in the audit log.
    async fn delete_peer_owned_by(
        &self,
        owner: Owner,
        owner_id: i64,
        name: &PeerName,
        actor: &str,
        action: AuditAction,
    ) -> Result<Generation, StoreError> {
        let text = match owner {
            Owner::Token => format!("{PEER_SELECT} WHERE p.token_id = $1 AND p.name = $2"),
            Owner::Org => format!("{PEER_SELECT} WHERE p.org_id = $1 AND p.name = $2"),
        };
        let delete = match owner {
            Owner::Token => "DELETE FROM peers WHERE token_id = $1 AND name = $2",
            Owner::Org => "DELETE FROM peers WHERE org_id = $1 AND name = $2",
        };
        write_tx!(self, |tx, is_pg, log| {
            lock_generation!(tx, is_pg);
            let row: Option<PeerRow> = sqlx::query_as(sql(text))
                .bind(owner_id)
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            match row {
                None => Err(StoreError::PeerNotFound(name.clone())),
                Some(row) => {
                    let org_id = row.org_id;
                    let peer = row.into_peer()?;
                    audit!(
                        self,
                        tx,
                        org_id,
                        actor,
                        action,
                        name.as_str(),
                        Some(format!("address={}", peer.address))
                    );
                    sqlx::query(delete)
                        .bind(owner_id)
                        .bind(name.as_str())
                        .execute(&mut *tx)
                        .await?;
                    Ok(record_changes!(
                        tx,
                        is_pg,
                        log,
                        vec![Change::PeerRemoved(peer)]
                    ))
                }
            }
        })
    }
}

/// A handshake time is written only when it moved by more than this since the stored one, so a
/// gateway reporting every few seconds costs the store one write per peer per this period.
pub const HANDSHAKE_RESOLUTION: i64 = 30;

/// Most ephemeral peers one reaping transaction removes; the rest wait for the next pass.
const REAP_BATCH: i64 = 500;

impl Store {
    /// Records when a gateway last saw each peer alive (a handshake, or traffic) as
    /// `(public key, unix seconds)`, in one transaction, skipping peers whose stored time is
    /// less than `resolution` seconds older (gateways pass [`HANDSHAKE_RESOLUTION`]). Not a
    /// change consumers see: the generation stays. Returns how many peers changed.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn record_handshakes(
        &self,
        seen: &[(PublicKey, i64)],
        resolution: i64,
    ) -> Result<u64, StoreError> {
        if seen.is_empty() {
            return Ok(0);
        }
        write_tx!(self, |tx, is_pg, log| {
            let mut n = 0;
            for (key, at) in seen {
                n += sqlx::query(
                    "UPDATE peers SET last_handshake_at = $1 WHERE pubkey = $2 \
                     AND (last_handshake_at IS NULL OR last_handshake_at < $3)",
                )
                .bind(at)
                .bind(key.to_base64())
                .bind(at - resolution)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            Ok(n)
        })
    }

    /// The stored last handshake of an org's peer (`None`: never seen), and whether it is
    /// ephemeral.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::PeerNotFound`].
    pub async fn peer_liveness(
        &self,
        org: &OrgSlug,
        name: &PeerName,
    ) -> Result<(Option<i64>, bool), StoreError> {
        let org_row = self.org_row(org).await?;
        let row: Option<(Option<i64>, i64)> = read!(self, |pool| {
            sqlx::query_as(
                "SELECT last_handshake_at, ephemeral FROM peers WHERE org_id = $1 AND name = $2",
            )
            .bind(org_row.id)
            .bind(name.as_str())
            .fetch_optional(pool)
            .await?
        });
        let (at, ephemeral) = row.ok_or_else(|| StoreError::PeerNotFound(name.clone()))?;
        Ok((at, ephemeral != 0))
    }

    /// Removes ephemeral peers idle since before `now - idle`: no handshake recorded since then,
    /// and neither created nor re-keyed since then (a peer that never connected counts from its
    /// creation). One ordinary write transaction: it takes the generation lock, so several
    /// replicas reaping at once remove each peer once, and DNS and gateways follow through the
    /// change feed. Each removal is logged as `peer_reaped` by `reaper`. Returns the peers
    /// removed and the generation (unchanged when none was idle); at most a batch per call.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn reap_idle_peers(
        &self,
        idle: std::time::Duration,
    ) -> Result<(Vec<Peer>, Generation), StoreError> {
        let cutoff = crate::model::now_unix() - i64::try_from(idle.as_secs()).unwrap_or(i64::MAX);
        let text = format!(
            "{PEER_SELECT} WHERE p.ephemeral = 1 AND p.updated_at < $1 \
             AND (p.last_handshake_at IS NULL OR p.last_handshake_at < $1) \
             ORDER BY p.id LIMIT $2"
        );
        write_tx!(self, |tx, is_pg, log| {
            let current = lock_generation!(tx, is_pg);
            let rows: Vec<PeerRow> = sqlx::query_as(sql(text))
                .bind(cutoff)
                .bind(REAP_BATCH)
                .fetch_all(&mut *tx)
                .await?;
            let mut reaped = Vec::with_capacity(rows.len());
            for row in rows {
                let org_id = row.org_id;
                let peer = row.into_peer()?;
                // The condition again: on PostgreSQL a handshake recorded since the select
                // (committed meanwhile) is seen here, and the peer stays.
                let deleted = sqlx::query(
                    "DELETE FROM peers WHERE org_id = $1 AND name = $2 AND ephemeral = 1 \
                     AND updated_at < $3 AND (last_handshake_at IS NULL OR last_handshake_at < $3)",
                )
                .bind(org_id)
                .bind(peer.name.as_str())
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if deleted == 0 {
                    continue;
                }
                audit!(
                    self,
                    tx,
                    org_id,
                    "reaper",
                    AuditAction::PeerReaped,
                    peer.name.as_str(),
                    Some(format!(
                        "address={} idle for {}",
                        peer.address,
                        humantime::format_duration(idle)
                    ))
                );
                reaped.push(peer);
            }
            let generation = if reaped.is_empty() {
                current
            } else {
                record_changes!(
                    tx,
                    is_pg,
                    log,
                    reaped.iter().cloned().map(Change::PeerRemoved).collect()
                )
            };
            Ok((reaped, generation))
        })
    }
}

impl Store {
    /// Removes peers whose key expired before `now - grace` (issue 23) and were not re-keyed
    /// since. Like [`Store::reap_idle_peers`]: one ordinary write transaction under the
    /// generation lock, each removal logged as `peer_reaped` by `reaper`, at most a batch per
    /// call; the read uses the index on `key_expires_at`, so it costs the expired peers, not
    /// the table. Returns the peers removed and the generation (unchanged when none was due).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn reap_expired_peers(
        &self,
        grace: std::time::Duration,
    ) -> Result<(Vec<Peer>, Generation), StoreError> {
        let cutoff = crate::model::now_unix()
            .saturating_sub(i64::try_from(grace.as_secs()).unwrap_or(i64::MAX));
        let text = format!(
            "{PEER_SELECT} WHERE p.key_expires_at IS NOT NULL AND p.key_expires_at < $1 \
             ORDER BY p.key_expires_at LIMIT $2"
        );
        write_tx!(self, |tx, is_pg, log| {
            let current = lock_generation!(tx, is_pg);
            let rows: Vec<PeerRow> = sqlx::query_as(sql(text))
                .bind(cutoff)
                .bind(REAP_BATCH)
                .fetch_all(&mut *tx)
                .await?;
            let mut reaped = Vec::with_capacity(rows.len());
            for row in rows {
                let org_id = row.org_id;
                let peer = row.into_peer()?;
                // The condition again: a re-key committed since the select keeps the peer.
                let deleted = sqlx::query(
                    "DELETE FROM peers WHERE org_id = $1 AND name = $2 \
                     AND key_expires_at IS NOT NULL AND key_expires_at < $3",
                )
                .bind(org_id)
                .bind(peer.name.as_str())
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if deleted == 0 {
                    continue;
                }
                audit!(
                    self,
                    tx,
                    org_id,
                    "reaper",
                    AuditAction::PeerReaped,
                    peer.name.as_str(),
                    Some(format!(
                        "address={} key expired at {} (grace {})",
                        peer.address,
                        peer.key_expires_at.unwrap_or_default(),
                        humantime::format_duration(grace)
                    ))
                );
                reaped.push(peer);
            }
            let generation = if reaped.is_empty() {
                current
            } else {
                record_changes!(
                    tx,
                    is_pg,
                    log,
                    reaped.iter().cloned().map(Change::PeerRemoved).collect()
                )
            };
            Ok((reaped, generation))
        })
    }
}

impl Store {
    /// Every peer of the org by name: whether it is ephemeral, and when a gateway last saw it
    /// alive (`None`: never). One indexed read, for the console's pages.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::Database`].
    pub async fn org_liveness(
        &self,
        org: &OrgSlug,
    ) -> Result<std::collections::HashMap<String, (Option<i64>, bool)>, StoreError> {
        let org_row = self.org_row(org).await?;
        let rows: Vec<(String, Option<i64>, i64)> = read!(self, |pool| {
            sqlx::query_as("SELECT name, last_handshake_at, ephemeral FROM peers WHERE org_id = $1")
                .bind(org_row.id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(name, at, ephemeral)| (name, (at, ephemeral != 0)))
            .collect())
    }
}

impl Store {
    /// Every peer a gateway saw alive at or after `since` (unix seconds), as (org, group,
    /// address): health-aware groups list only these. One indexed read that costs the live
    /// peers, not the table.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn seen_since(
        &self,
        since: i64,
    ) -> Result<Vec<(OrgSlug, crate::model::GroupName, std::net::Ipv6Addr)>, StoreError> {
        // A liveness read: from the standby when there is one.
        const SEEN: &str = "SELECT o.slug, p.group_name, p.address FROM peers p \
                            JOIN orgs o ON o.id = p.org_id WHERE p.last_handshake_at >= $1";
        let rows: Vec<(String, String, String)> = match &self.reader() {
            super::Backend::Sqlite(pool) => {
                sqlx::query_as(SEEN).bind(since).fetch_all(pool).await?
            }
            super::Backend::Postgres(pool) => {
                sqlx::query_as(SEEN).bind(since).fetch_all(pool).await?
            }
        };
        rows.into_iter()
            .map(|(org, group, address)| {
                Ok((
                    parse_col(&org, "orgs.slug")?,
                    parse_col(&group, "peers.group_name")?,
                    parse_col(&address, "peers.address")?,
                ))
            })
            .collect()
    }
}
