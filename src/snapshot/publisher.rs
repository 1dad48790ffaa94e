//! The publisher: store changes → whole rebuilds → published snapshots.
//!
//! It never sleeps to debounce. After waking it marks the change channel seen and then reads
//! the newest state, so every write committed before the read is in this rebuild and every write
//! committed during it wakes exactly one more: a burst of writes costs at most two rebuilds.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Snapshot, SnapshotError, SnapshotHandle, SnapshotSettings};
use crate::store::Store;

/// First wait after a failed reload; doubled on each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between reload attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Builds the first snapshot from `store`, then keeps rebuilding and publishing in a background
/// task until `cancel` fires. Reload failures after the first are logged and retried with
/// backoff; the task never dies on them.
///
/// # Errors
/// [`SnapshotError::Load`] when the first load fails.
pub async fn start(
    store: Store,
    settings: SnapshotSettings,
    cancel: CancellationToken,
) -> Result<SnapshotHandle, SnapshotError> {
    let mut changes = store.changes();
    changes.borrow_and_update();
    let dump = store.load_all().await.map_err(SnapshotError::Load)?;
    let first = rebuild(&dump, &settings, None);
    let handle = SnapshotHandle::new(first);
    tokio::spawn(run(store, settings, changes, handle.clone(), cancel));
    Ok(handle)
}

async fn run(
    store: Store,
    settings: SnapshotSettings,
    mut changes: tokio::sync::watch::Receiver<crate::model::Generation>,
    handle: SnapshotHandle,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            res = changes.changed() => if res.is_err() {
                tracing::info!("store change channel closed; DNS snapshot publisher stops");
                return;
            },
            () = cancel.cancelled() => return,
        }
        let mut backoff = MIN_BACKOFF;
        loop {
            // Everything announced so far is covered by the read below.
            changes.borrow_and_update();
            match store.load_all().await {
                Ok(dump) => {
                    let current = handle.load();
                    if dump.generation < current.generation() {
                        tracing::debug!(
                            generation = %dump.generation,
                            published = %current.generation(),
                            "store read is older than the published snapshot; skipped"
                        );
                    } else {
                        handle.publish(rebuild(&dump, &settings, Some(&current)));
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, ?backoff, "reloading the store for DNS failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = cancel.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

fn rebuild(
    dump: &crate::store::Dump,
    settings: &SnapshotSettings,
    previous: Option<&Snapshot>,
) -> Snapshot {
    let started = Instant::now();
    let snapshot = Snapshot::build(dump, settings);
    tracing::debug!(
        generation = %snapshot.generation(),
        orgs = dump.orgs.len(),
        peers = dump.peers.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "DNS snapshot rebuilt"
    );
    let missing = snapshot.missing_view_orgs();
    if !missing.is_empty() && previous.is_none_or(|p| p.missing_view_orgs() != missing) {
        let orgs: Vec<&str> = missing.iter().map(|o| o.as_str()).collect();
        tracing::warn!(
            orgs = %orgs.join(","),
            "[[dns.views]] name orgs that do not exist; queries from those sources are refused"
        );
    }
    snapshot
}
