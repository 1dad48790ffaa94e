//! The audit log: who changed which token or peer, when and from where. Rows are written by the
//! write methods of `tokens` and `peers` inside their own transactions (the `audit!` macro);
//! this file reads them back.

use super::{Store, StoreError};
use crate::model::OrgSlug;

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// A token was minted.
    TokenMinted,
    /// A token was deleted (its peers each get a [`AuditAction::PeerDeleted`] row too).
    TokenDeleted,
    /// A peer was created.
    PeerCreated,
    /// A peer got a new public key.
    PeerRekeyed,
    /// A peer was deleted by its token, an admin, or with its token.
    PeerDeleted,
    /// An ephemeral peer was removed for being idle.
    PeerReaped,
    /// An org was deleted (with `cascade`, its tokens and peers too). Its own log goes with it,
    /// so this entry is written to the default org's log.
    OrgDeleted,
}

impl AuditAction {
    /// The name stored and shown: `token_minted`, `peer_created`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::TokenMinted => "token_minted",
            AuditAction::TokenDeleted => "token_deleted",
            AuditAction::PeerCreated => "peer_created",
            AuditAction::PeerRekeyed => "peer_rekeyed",
            AuditAction::PeerDeleted => "peer_deleted",
            AuditAction::PeerReaped => "peer_reaped",
            AuditAction::OrgDeleted => "org_deleted",
        }
    }
}

/// One audit log row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEntry {
    /// Position in the log; newer changes have larger ids.
    pub id: i64,
    /// When, unix seconds.
    pub at: i64,
    /// Who: `admin`, the token's name, or `reaper`.
    pub actor: String,
    /// The client's address, when a client acted.
    pub source: Option<String>,
    /// What (see [`AuditAction::as_str`]).
    pub action: String,
    /// The token's or peer's name.
    pub target: String,
    /// More about the change, free text.
    pub detail: Option<String>,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// The cursor for the next (older) page: pass it as `before`. `None` on the last page.
    pub next: Option<i64>,
}

impl Store {
    /// The org's audit log, newest first: at most `limit` entries with an id below `before`.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::Database`].
    pub async fn audit_log(
        &self,
        org: &OrgSlug,
        before: Option<i64>,
        limit: u32,
    ) -> Result<AuditPage, StoreError> {
        let org_row = self.org_row(org).await?;
        let limit = i64::from(limit.max(1));
        // One more than asked tells whether an older page exists.
        let mut entries: Vec<AuditEntry> = read!(self, |pool| {
            sqlx::query_as(
                "SELECT id, at, actor, source, action, target, detail FROM audit_log \
                 WHERE org_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            )
            .bind(org_row.id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit + 1)
            .fetch_all(pool)
            .await?
        });
        let next = if entries.len() as i64 > limit {
            entries.truncate(limit as usize);
            entries.last().map(|e| e.id)
        } else {
            None
        };
        Ok(AuditPage { entries, next })
    }
}

/// Most audit entries one pruning statement deletes: each batch is a short transaction of its
/// own, so writers never wait behind a long prune.
pub const PRUNE_BATCH: i64 = 1000;

impl Store {
    /// Deletes at most [`PRUNE_BATCH`] audit entries (of every org) older than `cutoff` (unix
    /// seconds), oldest first, in one short statement over the index on `at`. Returns how many
    /// went; the caller repeats while a full batch comes back.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn prune_audit_batch(&self, cutoff: i64) -> Result<u64, StoreError> {
        let n = read!(self, |pool| {
            sqlx::query(
                "DELETE FROM audit_log WHERE id IN \
                 (SELECT id FROM audit_log WHERE at < $1 ORDER BY at LIMIT $2)",
            )
            .bind(cutoff)
            .bind(PRUNE_BATCH)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n)
    }
}
