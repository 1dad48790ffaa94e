//! Reads for the admin console (issue 19) that stay cheap at 100k peers: the peer count the
//! database keeps (migration 0009), a grouped read of an org's group sizes per region (the
//! console caches it for a few seconds, so its cost does not grow with the pages served), and
//! each shown group's first members, read fresh through the `(org_id, group_name, name)` index.
//! The peer list itself is [`Store::list_peers_page`] (keyset pages).

use super::{Store, StoreError, sql};
use crate::model::OrgSlug;

/// One group of an org within one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// The region.
    pub region: String,
    /// The group.
    pub group: String,
    /// Its peers in that region.
    pub members: u64,
    /// Those seen alive since the cutoff.
    pub live: u64,
}

/// A member of a group, as the console names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The group.
    pub group: String,
    /// The peer's name.
    pub name: String,
    /// The peer's region.
    pub region: String,
    /// When a gateway last saw it alive (unix seconds; `None`: never).
    pub last_seen_at: Option<i64>,
}

impl Store {
    /// The org's live peers: the counter the database keeps in the transaction of every
    /// insert and delete (migration 0009), O(1).
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::Database`].
    pub async fn org_peer_count(&self, org: &OrgSlug) -> Result<u64, StoreError> {
        let row: Option<(i64,)> = read!(self, |pool| {
            sqlx::query_as("SELECT peer_count FROM orgs WHERE slug = $1")
                .bind(org.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.map(|(n,)| n.max(0) as u64)
            .ok_or_else(|| StoreError::OrgNotFound(org.clone()))
    }

    /// Every (region, group) of the org with its members and how many were seen alive at or
    /// after `live_since` (unix seconds). One `GROUP BY` over the org's peers: O(the org), so the
    /// console reads it at most once per few seconds per org, not per page.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::Database`].
    pub async fn org_group_summary(
        &self,
        org: &OrgSlug,
        live_since: i64,
    ) -> Result<Vec<GroupSummary>, StoreError> {
        let org_row = self.org_row(org).await?;
        const COUNTS: &str = "SELECT region, group_name, COUNT(*), \
             COALESCE(SUM(CASE WHEN last_handshake_at >= $2 THEN 1 ELSE 0 END), 0) \
             FROM peers WHERE org_id = $1 GROUP BY region, group_name";
        let rows: Vec<(String, String, i64, i64)> = read!(self, |pool| {
            sqlx::query_as(COUNTS)
                .bind(org_row.id)
                .bind(live_since)
                .fetch_all(pool)
                .await?
        });
        let mut out: Vec<GroupSummary> = rows
            .into_iter()
            .map(|(region, group, members, live)| GroupSummary {
                region,
                group,
                members: members.max(0) as u64,
                live: live.max(0) as u64,
            })
            .collect();
        out.sort_unstable_by(|a, b| (&a.region, &a.group).cmp(&(&b.region, &b.group)));
        Ok(out)
    }

    /// The first `per_group` members by name of each of `groups` in the org, read now: one
    /// statement of a `LIMIT`ed range of the `(org_id, group_name, name)` index per group, so
    /// O(groups × per_group) whatever the org's size.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::Database`].
    pub async fn group_members(
        &self,
        org: &OrgSlug,
        groups: &[&str],
        per_group: u32,
    ) -> Result<Vec<GroupMember>, StoreError> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let org_row = self.org_row(org).await?;
        let mut text = String::new();
        for i in 0..groups.len() {
            if i > 0 {
                text.push_str(" UNION ALL ");
            }
            text.push_str(&format!(
                "SELECT * FROM (SELECT group_name, name, region, last_handshake_at FROM peers \
                 WHERE org_id = $1 AND group_name = ${} ORDER BY name LIMIT $2) g{i}",
                i + 3
            ));
        }
        let rows: Vec<(String, String, String, Option<i64>)> = read!(self, |pool| {
            let mut query = sqlx::query_as(sql(text.clone()))
                .bind(org_row.id)
                .bind(i64::from(per_group));
            for g in groups {
                query = query.bind(*g);
            }
            query.fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|(group, name, region, last_seen_at)| GroupMember {
                group,
                name,
                region,
                last_seen_at,
            })
            .collect())
    }
}
