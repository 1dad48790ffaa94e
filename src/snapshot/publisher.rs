//! The publisher: store changes → whole rebuilds → published snapshots.
//!
//! It never sleeps to debounce. After waking it marks the change channel seen and then reads
//! the newest state, so every write committed before the read is in this rebuild and every write
//! committed during it wakes exactly one more: a burst of writes costs at most two rebuilds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Snapshot, SnapshotError, SnapshotHandle, SnapshotSettings};
use crate::model::Generation;
use crate::store::{Dump, Store, StoreError};

/// First wait after a failed reload; doubled on each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between reload attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a replaced snapshot waits for in-flight queries before being freed anyway (the last
/// query then frees it).
const RETIRE_WAIT: Duration = Duration::from_secs(2);

/// Where the publisher reads dumps from: the store, or a fake in tests.
pub(crate) trait DumpSource: Send + Sync + 'static {
    /// Reads every org and peer at one generation.
    fn load(&self) -> impl Future<Output = Result<Dump, StoreError>> + Send;
}

impl DumpSource for Store {
    fn load(&self) -> impl Future<Output = Result<Dump, StoreError>> + Send {
        self.load_all()
    }
}

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
    let changes = store.changes();
    start_with(store, changes, settings, cancel).await
}

pub(crate) async fn start_with(
    source: impl DumpSource,
    mut changes: watch::Receiver<Generation>,
    settings: SnapshotSettings,
    cancel: CancellationToken,
) -> Result<SnapshotHandle, SnapshotError> {
    changes.borrow_and_update();
    let dump = source.load().await.map_err(SnapshotError::Load)?;
    let first = rebuild(&dump, &settings, None);
    let handle = SnapshotHandle::new(first);
    tokio::spawn(run(source, settings, changes, handle.clone(), cancel));
    Ok(handle)
}

async fn run(
    source: impl DumpSource,
    settings: SnapshotSettings,
    mut changes: watch::Receiver<Generation>,
    handle: SnapshotHandle,
    cancel: CancellationToken,
) {
    let settings = Arc::new(settings);
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
            match source.load().await {
                Ok(dump) => {
                    let current = handle.load();
                    if dump.generation < current.generation() {
                        tracing::debug!(
                            generation = %dump.generation,
                            published = %current.generation(),
                            "store read is older than the published snapshot; skipped"
                        );
                        break;
                    }
                    // A big rebuild takes a CPU for a while (about 1 s at 1M peers): keep it off
                    // the async worker threads that serve DNS and the API.
                    let settings = Arc::clone(&settings);
                    let built = tokio::task::spawn_blocking(move || {
                        rebuild(&dump, &settings, Some(&current))
                    })
                    .await;
                    match built {
                        Ok(snapshot) => retire(handle.publish(snapshot)),
                        Err(error) => {
                            tracing::error!(%error, "DNS snapshot rebuild failed; keeping the old one");
                        }
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

/// Drops a replaced snapshot on a blocking thread once the queries still reading it are done:
/// freeing a million-peer snapshot takes about a second, which must not land on a DNS task.
fn retire(old: Arc<Snapshot>) {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + RETIRE_WAIT;
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(old);
    });
}

fn rebuild(dump: &Dump, settings: &SnapshotSettings, previous: Option<&Snapshot>) -> Snapshot {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use super::*;
    use crate::model::Org;

    /// A store stand-in: its dump is at `generation`; the next `fail` loads fail.
    #[derive(Clone, Default)]
    struct Fake {
        generation: Arc<AtomicU64>,
        loads: Arc<AtomicUsize>,
        fail: Arc<AtomicUsize>,
    }

    impl DumpSource for Fake {
        async fn load(&self) -> Result<Dump, StoreError> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            let failing = self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(StoreError::BadUrl("database is down".into()));
            }
            Ok(Dump {
                generation: Generation(self.generation.load(Ordering::SeqCst)),
                orgs: vec![Org {
                    slug: "personal".parse().unwrap(),
                    prefix: "fdaa:0:1::/48".parse().unwrap(),
                    created_at: 0,
                }],
                peers: Vec::new(),
            })
        }
    }

    #[tokio::test]
    async fn a_burst_of_writes_gives_one_rebuild() {
        let fake = Fake::default();
        let (tx, rx) = watch::channel(Generation(0));
        let cancel = CancellationToken::new();
        let handle = start_with(
            fake.clone(),
            rx,
            SnapshotSettings::default(),
            cancel.clone(),
        )
        .await
        .unwrap();
        assert_eq!(
            fake.loads.load(Ordering::SeqCst),
            1,
            "first snapshot before returning"
        );
        // A burst: 100 commits before the publisher gets to run (single-threaded runtime).
        for g in 1..=100 {
            fake.generation.store(g, Ordering::SeqCst);
            tx.send_replace(Generation(g));
        }
        handle.wait_for(Generation(100)).await;
        assert_eq!(handle.load().generation(), Generation(100));
        assert_eq!(
            fake.loads.load(Ordering::SeqCst),
            2,
            "one rebuild for the burst"
        );
        cancel.cancel();
    }

    #[tokio::test]
    async fn load_errors_are_retried_with_backoff() {
        let fake = Fake::default();
        let (tx, rx) = watch::channel(Generation(0));
        let cancel = CancellationToken::new();
        let handle = start_with(
            fake.clone(),
            rx,
            SnapshotSettings::default(),
            cancel.clone(),
        )
        .await
        .unwrap();
        // Three failures cost 50 + 100 + 200 ms of backoff.
        fake.fail.store(3, Ordering::SeqCst);
        fake.generation.store(1, Ordering::SeqCst);
        tx.send_replace(Generation(1));
        handle.wait_for(Generation(1)).await;
        assert_eq!(fake.loads.load(Ordering::SeqCst), 1 + 3 + 1);
        // Still alive afterwards.
        fake.generation.store(2, Ordering::SeqCst);
        tx.send_replace(Generation(2));
        handle.wait_for(Generation(2)).await;
        cancel.cancel();
    }

    #[tokio::test]
    async fn first_load_failure_is_an_error() {
        let fake = Fake::default();
        fake.fail.store(1, Ordering::SeqCst);
        let (_tx, rx) = watch::channel(Generation(0));
        let res = start_with(
            fake,
            rx,
            SnapshotSettings::default(),
            CancellationToken::new(),
        )
        .await;
        assert!(matches!(res, Err(SnapshotError::Load(_))));
    }
}
