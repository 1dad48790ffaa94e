//! Keyset paging for the admin lists (issue 20): orgs, WireGuard tokens, peers and API keys.
//!
//! Each list is ordered by its unique name within its scope and a page is "the first `limit`
//! names after `after`", read through an index that starts with the scope and ends with the
//! name (`orgs.slug`, `tokens_live_name`, `peers (org_id, name)`, `api_keys_live_name`, and
//! for the peer filters `peers_org_group`, `peers_org_region`, `peers_token_name`). A page
//! costs O(page) however long the list, and never OFFSET: a row added or removed between two
//! pages neither repeats nor hides another one.

use super::peers::{PEER_LIST_SELECT, PeerListRow};
use super::{Store, StoreError, sql};
use crate::model::{GroupName, OrgSlug, Peer, RegionCode, TokenName};

/// One page of a list, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, by name.
    pub items: Vec<T>,
    /// The last name of this page when another page follows: pass it as `after`. `None` on
    /// the last page.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Takes `rows` read with a limit of `limit + 1`: the extra row only says another page
    /// follows, and is dropped.
    pub(super) fn from_rows(mut items: Vec<T>, limit: u32, name: impl Fn(&T) -> String) -> Self {
        let limit = limit as usize;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(name)
        } else {
            None
        };
        Page { items, next }
    }
}

/// Which of an org's peers a page lists. Empty: all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerFilter {
    /// Only peers of this group.
    pub group: Option<GroupName>,
    /// Only peers of this region.
    pub region: Option<RegionCode>,
    /// Only peers the live token of this name created.
    pub token: Option<TokenName>,
    /// Only peers seen alive at or after these unix seconds (`Live::Since`), or only those not
    /// (`Live::Before`): never seen, or last seen earlier.
    pub live: Option<Live>,
}

/// The liveness half of a [`PeerFilter`], against a cutoff in unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Seen alive at or after the cutoff.
    Since(i64),
    /// Never seen, or last seen before the cutoff.
    Before(i64),
}

/// A peer as a list shows it: with what gateways last saw of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPeer {
    /// The peer.
    pub peer: Peer,
    /// When a gateway last saw it alive, unix seconds (`None`: never).
    pub last_seen_at: Option<i64>,
    /// Whether it is removed once idle.
    pub ephemeral: bool,
}

/// The most rows a page may ask for; callers cap their limit well below (the API at 10,000).
const MAX_PAGE: u32 = 100_000;

impl Store {
    /// A page of the org's peers by name: at most `limit` after `after` that pass `filter`.
    ///
    /// # Errors
    /// [`StoreError::OrgNotFound`], [`StoreError::Database`].
    pub async fn list_peers_page(
        &self,
        org: &OrgSlug,
        filter: &PeerFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<ListedPeer>, StoreError> {
        let org_row = self.org_row(org).await?;
        let limit = page_limit(limit);
        // Every clause compares one indexed column; the binds follow the `$n` in order.
        let mut text = format!("{PEER_LIST_SELECT} WHERE p.org_id = $1 AND p.name > $2");
        let mut binds: Vec<Bind> = vec![
            Bind::Int(org_row.id),
            Bind::Text(after.unwrap_or("").to_owned()),
        ];
        if let Some(group) = &filter.group {
            clause(
                &mut text,
                &mut binds,
                "p.group_name = ",
                Bind::Text(group.to_string()),
                "",
            );
        }
        if let Some(region) = &filter.region {
            clause(
                &mut text,
                &mut binds,
                "p.region = ",
                Bind::Text(region.to_string()),
                "",
            );
        }
        if let Some(token) = &filter.token {
            // The live token of that name: a deleted token's peers went with it.
            clause(
                &mut text,
                &mut binds,
                "p.token_id IN (SELECT t2.id FROM tokens t2 WHERE t2.deleted_at IS NULL AND t2.name = ",
                Bind::Text(token.to_string()),
                "",
            );
            clause(
                &mut text,
                &mut binds,
                " AND t2.org_id = ",
                Bind::Int(org_row.id),
                ")",
            );
        }
        match filter.live {
            Some(Live::Since(at)) => {
                clause(
                    &mut text,
                    &mut binds,
                    "p.last_handshake_at >= ",
                    Bind::Int(at),
                    "",
                );
            }
            Some(Live::Before(at)) => clause(
                &mut text,
                &mut binds,
                "(p.last_handshake_at IS NULL OR p.last_handshake_at < ",
                Bind::Int(at),
                ")",
            ),
            None => {}
        }
        text.push_str(" ORDER BY p.name");
        clause(
            &mut text,
            &mut binds,
            " LIMIT ",
            Bind::Int(i64::from(limit) + 1),
            "",
        );
        let rows: Vec<PeerListRow> = self.page_rows(text, binds).await?;
        let items = rows
            .into_iter()
            .map(PeerListRow::into_listed)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(items, limit, |p| p.peer.name.to_string()))
    }
}

/// Appends `head$n tail` to `text`, `$n` being the place of `bind`, and `AND` before `head`
/// unless it is a `LIMIT` or continues a clause (starts with a blank).
fn clause(text: &mut String, binds: &mut Vec<Bind>, head: &str, bind: Bind, tail: &str) {
    binds.push(bind);
    let and = if head.starts_with(' ') { "" } else { " AND " };
    text.push_str(&format!("{and}{head}${}{tail}", binds.len()));
}

/// A value bound to a `$n` of a query built at run time.
pub(super) enum Bind {
    Int(i64),
    Text(String),
}

/// What [`Store::list_orgs_page`] may list.
#[derive(Debug, Clone, Copy)]
pub enum OrgsWithin<'a> {
    /// Every org.
    All,
    /// This org only (a key of one org).
    Only(&'a OrgSlug),
}

impl Store {
    /// Runs a query built at run time with `binds` for its `$1`, `$2`, ... in order.
    pub(super) async fn page_rows<R>(
        &self,
        text: String,
        binds: Vec<Bind>,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        Ok(read!(self, |pool| {
            let mut query = sqlx::query_as(sql(text));
            for bind in binds {
                query = match bind {
                    Bind::Int(n) => query.bind(n),
                    Bind::Text(s) => query.bind(s),
                };
            }
            query.fetch_all(pool).await?
        }))
    }
}

/// `limit` as the store reads it: at least one, at most [`MAX_PAGE`].
pub(super) fn page_limit(limit: u32) -> u32 {
    limit.clamp(1, MAX_PAGE)
}
