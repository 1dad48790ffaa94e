//! The console's view of an org's groups at 100k peers (issue 19): the grouped read
//! [`Store::org_group_summary`] costs O(the org), so it is made at most once per [`REFRESH`] per
//! org, whatever the number of open pages (single flight: pages that find it stale wait for the
//! one read in progress). The overview's live and group counts, the org page's groups section and
//! the network picture are drawn from it; each then costs O(groups shown), not O(peers).
//! Counts may lag a write by up to [`REFRESH`]; the names shown are read fresh (the peer list
//! as a keyset page, each shown group's first [`FIRST`] members by name).
//!
//! [`Renders`] shares one render of an org page between the open consoles that fetch it again
//! after a change (the same org, query and role at the same generation, within
//! [`RENDER_SHARED`]), so the live feed costs one render per change, not one per console.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{OrgSlug, now_unix};
use crate::store::{GroupSummary, Store, StoreError};

/// How long one read of an org's groups serves every page.
pub(super) const REFRESH: Duration = Duration::from_secs(2);

/// Members named per group (read fresh, [`Store::group_members`]).
pub(super) const FIRST: u32 = 20;

/// One read of an org's groups.
#[derive(Debug)]
pub(super) struct Summary {
    /// Per (region, group), ordered by region then group.
    pub(super) groups: Vec<GroupSummary>,
}

impl Summary {
    /// Peers seen alive within the live window when it was read.
    pub(super) fn live(&self) -> u64 {
        self.groups.iter().map(|g| g.live).sum()
    }

    /// Distinct groups over every region.
    pub(super) fn n_groups(&self) -> usize {
        let names: std::collections::HashSet<&str> =
            self.groups.iter().map(|g| g.group.as_str()).collect();
        names.len()
    }
}

/// The last read per org; see the module doc.
#[derive(Debug, Default)]
pub(super) struct Summaries {
    per_org: std::sync::Mutex<HashMap<OrgSlug, Arc<tokio::sync::Mutex<Option<Read>>>>>,
    /// The org pages' shared renders.
    pub(super) renders: Renders,
}

#[derive(Debug)]
struct Read {
    at: Instant,
    summary: Arc<Summary>,
}

impl Summaries {
    /// The org's summary, read again when the last one is older than [`REFRESH`]; a peer seen
    /// alive within `live_window` seconds counts as live.
    pub(super) async fn get(
        &self,
        store: &Store,
        org: &OrgSlug,
        live_window: i64,
    ) -> Result<Arc<Summary>, StoreError> {
        let slot = {
            let mut per_org = self
                .per_org
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(per_org.entry(org.clone()).or_default())
        };
        // Held across the read: the single flight.
        let mut last = slot.lock().await;
        if let Some(read) = &*last
            && read.at.elapsed() < REFRESH
        {
            return Ok(Arc::clone(&read.summary));
        }
        let read = store.org_group_summary(org, now_unix() - live_window);
        let groups = match super::super::metrics::timed("org_group_summary", read).await {
            Ok(groups) => groups,
            Err(err) => {
                if matches!(err, StoreError::OrgNotFound(_)) {
                    drop(last);
                    self.forget(org);
                }
                return Err(err);
            }
        };
        let summary = Arc::new(Summary { groups });
        *last = Some(Read {
            at: Instant::now(),
            summary: Arc::clone(&summary),
        });
        Ok(summary)
    }

    /// Drops what is kept of a gone org.
    fn forget(&self, org: &OrgSlug) {
        self.per_org
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(org);
    }
}

/// How long a render of an org page is shared (at one generation): the ages it shows ("5 s ago")
/// and the live counts may be this much older than the request.
pub(super) const RENDER_SHARED: Duration = Duration::from_secs(1);

/// What makes two org pages the same: the org, the published generation, the query string and
/// whether the viewer may write.
pub(super) type RenderKey = (OrgSlug, u64, Vec<(String, String)>, bool);

/// The key of an org page's render.
pub(super) fn render_key(
    org: &OrgSlug,
    generation: u64,
    query: &HashMap<String, String>,
    write: bool,
) -> RenderKey {
    let mut q: Vec<(String, String)> = query.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    q.sort_unstable();
    (org.clone(), generation, q, write)
}

/// A shared render: made once by the first request, waited for by the ones that arrive meanwhile.
type Shared = Arc<tokio::sync::OnceCell<Arc<String>>>;

/// The org pages rendered within the last [`RENDER_SHARED`], by [`RenderKey`].
#[derive(Debug, Default)]
pub(super) struct Renders {
    cells: std::sync::Mutex<HashMap<RenderKey, (Instant, Shared)>>,
}

impl Renders {
    /// The cell of `key`: the one made within [`RENDER_SHARED`], else a new one (and renders
    /// older than that are dropped).
    pub(super) fn cell(&self, key: RenderKey) -> Shared {
        let mut cells = self
            .cells
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cells.retain(|_, (at, _)| at.elapsed() < RENDER_SHARED);
        Arc::clone(
            &cells
                .entry(key)
                .or_insert_with(|| (Instant::now(), Arc::default()))
                .1,
        )
    }
}
