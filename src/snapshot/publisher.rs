//! The publisher: the store's change feed → the DNS model → published snapshots.
//!
//! It never sleeps to debounce. Each turn takes everything the feed has (a burst of writes is one
//! batch), applies it to the [`Model`] and patches the answer table, or, when the feed says so
//! (start, a gap it cannot bridge, a restore), rebuilds everything from a full dump. All of that
//! CPU work runs on a blocking thread, never on the async workers that serve DNS and the API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use tokio::sync::{mpsc, watch};

use super::disk::{Pacer, StateFile};
use super::{
    Base, Model, Reconfigure, Snapshot, SnapshotError, SnapshotHandle, SnapshotSettings, Touched,
};
use crate::config::GroupsConfig;
use crate::model::{GroupName, OrgSlug};
use crate::store::{Feed, Store, StoreError, Update};

/// One read of which peers were seen alive within the health window (see `[groups]`).
type Seen = Vec<(OrgSlug, GroupName, std::net::Ipv6Addr)>;

/// First wait after a failed read; doubled on each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between read attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a replaced snapshot waits for in-flight queries before being freed anyway (the last
/// query then frees it).
const RETIRE_WAIT: Duration = Duration::from_secs(2);
/// At a stop, how long the publisher may take to apply what the store announced but it has not
/// applied yet, before it saves the state (an unreachable store must not hold up the stop).
const FINAL_CATCH_UP: Duration = Duration::from_secs(3);

/// Where the publisher reads changes from: the store's [`Feed`], or a fake in tests.
pub(crate) trait UpdateSource: Send + 'static {
    /// The next batch of changes, or a full state.
    fn next(&mut self) -> impl Future<Output = Result<Update, StoreError>> + Send;
    /// Makes the next update a full state.
    fn force_reload(&mut self);
    /// Whether something newer than what was handed out is known to be committed.
    fn behind(&self) -> bool;
}

impl UpdateSource for Feed {
    fn next(&mut self) -> impl Future<Output = Result<Update, StoreError>> + Send {
        Feed::next(self)
    }

    fn force_reload(&mut self) {
        Feed::force_reload(self)
    }

    fn behind(&self) -> bool {
        Feed::behind(self)
    }
}

/// How long the first load keeps trying a store that does not answer yet or whose schema is
/// behind (see [`first_load`]).
const FIRST_LOAD_PATIENCE: Duration = Duration::from_secs(15);

/// The first full state. A store that is away or whose schema is behind is tried again for
/// [`FIRST_LOAD_PATIENCE`]: a first start with a read replica migrates the primary while DNS
/// loads from the standby, which has the new tables only once it has replayed that migration.
async fn first_load(source: &mut impl UpdateSource) -> Result<Update, SnapshotError> {
    let deadline = Instant::now() + FIRST_LOAD_PATIENCE;
    let mut warned = false;
    loop {
        match source.next().await {
            Ok(first) => return Ok(first),
            Err(e) if (e.is_unavailable() || e.is_schema_behind()) && Instant::now() < deadline => {
                if !warned {
                    tracing::warn!(error = %e, "the first DNS load failed; trying again (a standby that has not replayed the migrations yet, or a store that does not answer yet)");
                    warned = true;
                }
                source.force_reload();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(SnapshotError::Load(e)),
        }
    }
}

/// Builds the first snapshot from `store`, then keeps applying its changes and publishing in a
/// background task until `cancel` fires. Read failures after the first are logged and retried
/// with backoff; the task never dies on them.
///
/// # Errors
/// [`SnapshotError::Load`] when the first load fails.
pub async fn start(
    store: Store,
    settings: SnapshotSettings,
    cancel: CancellationToken,
) -> Result<SnapshotHandle, SnapshotError> {
    let (handle, _task) =
        start_with(store.feed(), settings, Persistence::default(), None, cancel).await?;
    Ok(handle)
}

/// Like [`start`], keeping the last-known-good state in `state` (see [`super::disk`]), and, when
/// `fallback` is given (the store did not answer), serving from it at once until the store
/// answers. Returns the handle and the publisher's task.
///
/// When `cancel` fires, the publisher first applies what the store has announced and it has not
/// applied yet (for at most [`FINAL_CATCH_UP`]), then writes the state one last time, and only
/// then ends its task: a server cancels it once its API has answered its last request and awaits
/// the task before it lets go of its data directory, so the saved state holds every write it
/// acknowledged.
///
/// # Errors
/// [`SnapshotError::Load`] when the first load fails and there is no fallback.
///
/// With health-aware groups configured (`groups`), it also re-reads every
/// [`GroupsConfig::poll_period`] which peers were seen alive within the window and patches the
/// groups whose healthy members changed.
pub async fn start_persisted(
    store: Store,
    settings: SnapshotSettings,
    state: Option<StateFile>,
    fallback: Option<Model>,
    groups: &GroupsConfig,
    cancel: CancellationToken,
) -> Result<(SnapshotHandle, tokio::task::JoinHandle<()>), SnapshotError> {
    let persistence = Persistence { state, fallback };
    // The poller runs whatever the settings: with health-aware groups off it waits for a reload
    // that turns them on.
    let (groups_tx, groups_rx) = watch::channel(groups.clone());
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(poll_health(store.clone(), groups_rx, tx, cancel.clone()));
    let health = Health {
        groups: groups_tx,
        reports: rx,
    };
    start_with(store.feed(), settings, persistence, Some(health), cancel).await
}

/// Health-aware groups: their settings (which the poller follows) and the poller's reports.
pub(crate) struct Health {
    groups: watch::Sender<GroupsConfig>,
    reports: mpsc::Receiver<Seen>,
}

/// Every poll period, while health-aware groups are on: reads the peers seen alive within the
/// window and hands them to the publisher. A failed read is logged and skipped (the last report
/// stays in force). Follows `groups` as reloads change it.
async fn poll_health(
    store: Store,
    mut groups: watch::Receiver<GroupsConfig>,
    tx: mpsc::Sender<Seen>,
    cancel: CancellationToken,
) {
    // A sender that went away never changes the settings again.
    let changed = |groups: &mut watch::Receiver<GroupsConfig>| {
        let mut groups = groups.clone();
        async move {
            if groups.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    loop {
        let current = groups.borrow_and_update().clone();
        if !current.enabled() {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = changed(&mut groups) => continue,
            }
        }
        let window = i64::try_from(current.health_window.as_secs()).unwrap_or(i64::MAX);
        match store
            .seen_since(crate::model::now_unix().saturating_sub(window))
            .await
        {
            Ok(seen) => {
                if tx.send(seen).await.is_err() {
                    return;
                }
            }
            Err(error) => tracing::debug!(%error, "reading peer liveness for health-aware groups"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(current.poll_period()) => {}
            () = changed(&mut groups) => {}
        }
    }
}

/// Where the publisher keeps its last-known-good state, and what to serve if the store is down.
#[derive(Debug, Default)]
pub(crate) struct Persistence {
    state: Option<StateFile>,
    fallback: Option<Model>,
}

pub(crate) async fn start_with(
    mut source: impl UpdateSource,
    settings: SnapshotSettings,
    persistence: Persistence,
    health: Option<Health>,
    cancel: CancellationToken,
) -> Result<(SnapshotHandle, tokio::task::JoinHandle<()>), SnapshotError> {
    let base = Base::new(&settings);
    source.force_reload();
    // Since when DNS answers from a state the store has not confirmed (`None`: current).
    let mut stale_since = None;
    // The generation on disk, when the state was read from there.
    let mut saved = None;
    let (model, snapshot) = match persistence.fallback {
        // The store did not answer at start: serve the saved state at once and let the loop
        // below replace it as soon as the store answers.
        Some(fallback) => {
            let saved_age = persistence
                .state
                .as_ref()
                .and_then(|s| {
                    std::fs::metadata(&s.path)
                        .ok()?
                        .modified()
                        .ok()?
                        .elapsed()
                        .ok()
                })
                .unwrap_or_default();
            stale_since = Some(
                Instant::now()
                    .checked_sub(saved_age)
                    .unwrap_or_else(Instant::now),
            );
            metrics::gauge!("sixpn_snapshot_stale_seconds").set(saved_age.as_secs_f64());
            tracing::warn!(generation = %fallback.generation(), saved_s_ago = saved_age.as_secs(), "serving DNS from the last-known-good state until the store answers");
            // Already on disk: writing it again would only make it look newer than it is.
            saved = Some(fallback.generation());
            let snapshot = Snapshot::from_model(Arc::clone(&base), &fallback);
            (fallback, snapshot)
        }
        None => {
            let first = first_load(&mut source).await?;
            // Current from the start: the gauge shows so (0) instead of being absent.
            metrics::gauge!("sixpn_snapshot_stale_seconds").set(0.0);
            let base = Arc::clone(&base);
            tokio::task::spawn_blocking(move || step(&base, None, Model::default(), first))
                .await
                .map_err(|e| SnapshotError::Load(StoreError::BadUrl(format!("first build: {e}"))))?
        }
    };
    warn_missing_views(&snapshot, None);
    let handle = SnapshotHandle::new(snapshot);
    let (reconfigure, inbox) = mpsc::unbounded_channel();
    let _ = handle.inner.reconfigure.set(reconfigure);
    let sides = Sides {
        state: persistence.state,
        health,
        stale_since,
        inbox,
        saved,
    };
    let task = tokio::spawn(run(source, base, model, handle.clone(), sides, cancel));
    Ok((handle, task))
}

/// What the publisher's loop keeps besides the model: where it saves the state, health-aware
/// groups, since when DNS has been answering without the store's confirmation, and the
/// generation on disk.
struct Sides {
    state: Option<StateFile>,
    health: Option<Health>,
    stale_since: Option<Instant>,
    /// New settings from a configuration reload.
    inbox: mpsc::UnboundedReceiver<Reconfigure>,
    saved: Option<crate::model::Generation>,
}

async fn run(
    mut source: impl UpdateSource,
    mut base: Arc<Base>,
    mut model: Model,
    handle: SnapshotHandle,
    sides: Sides,
    cancel: CancellationToken,
) {
    let Sides {
        state,
        mut health,
        mut stale_since,
        mut inbox,
        // The generation on disk (or being written there); `None` until the first write.
        mut saved,
    } = sides;
    // The last liveness report, for re-applying health-aware groups after a reload.
    let mut last_seen: Seen = Vec::new();
    let mut backoff = MIN_BACKOFF;
    let mut pacer = Pacer::new();
    // The write of the state in progress: one at a time, they share a temporary file.
    let mut writing = None;
    loop {
        let unsaved = state.is_some() && saved != Some(model.generation());
        let update = tokio::select! {
            update = source.next() => update,
            () = tokio::time::sleep(pacer.wait()), if unsaved => {
                if let Some(state) = &state {
                    match save(state, std::mem::take(&mut model), &mut pacer, &mut writing).await {
                        Some(kept) => {
                            saved = Some(kept.generation());
                            model = kept;
                        }
                        None => {
                            // The model went with the failed task: start over from a full state.
                            tracing::error!("encoding the DNS state failed; reloading");
                            source.force_reload();
                        }
                    }
                }
                continue;
            }
            Some(seen) = async { health.as_mut()?.reports.recv().await }, if health.is_some() => {
                let Some(Health { groups, .. }) = &health else { continue };
                let groups = groups.borrow().clone();
                let current = handle.load();
                let built = tokio::task::spawn_blocking(move || {
                    let mut touched = Touched::default();
                    model.set_health(|org| groups.is_health_aware(org), &seen, &mut touched);
                    let snapshot = (!touched.names.is_empty()).then(|| current.apply(&model, &touched));
                    (model, snapshot, touched.names.len(), seen)
                })
                .await;
                match built {
                    Ok((next_model, snapshot, names, seen)) => {
                        model = next_model;
                        last_seen = seen;
                        if let Some(snapshot) = snapshot {
                            tracing::debug!(groups = names, "health-aware groups changed");
                            retire(handle.publish(snapshot), false);
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, "applying peer health failed; reloading");
                        model = Model::default();
                        source.force_reload();
                    }
                }
                continue;
            }
            Some(next) = inbox.recv() => {
                // A reload: the whole table is rebuilt from the model with the new settings
                // (views, TTL, zones, payload size) and the health-aware groups re-applied to
                // the last liveness report. No store read; the generation stays.
                let Reconfigure { settings, groups } = next;
                if let Some(health) = &health {
                    health.groups.send_replace(groups.clone());
                }
                let previous = handle.load();
                let seen = std::mem::take(&mut last_seen);
                let built = tokio::task::spawn_blocking(move || {
                    let base = Base::new(&settings);
                    let mut touched = Touched::default();
                    model.set_health(|org| groups.is_health_aware(org), &seen, &mut touched);
                    let snapshot = Snapshot::from_model(Arc::clone(&base), &model);
                    (model, base, snapshot, seen)
                })
                .await;
                match built {
                    Ok((next_model, next_base, snapshot, seen)) => {
                        model = next_model;
                        base = next_base;
                        last_seen = seen;
                        warn_missing_views(&snapshot, Some(&previous));
                        tracing::info!(generation = %model.generation(), "DNS rebuilt with the reloaded settings");
                        retire(handle.publish(snapshot), true);
                    }
                    Err(error) => {
                        tracing::error!(%error, "rebuilding DNS with the reloaded settings failed; reloading from the store");
                        model = Model::default();
                        source.force_reload();
                    }
                }
                continue;
            }
            () = cancel.cancelled() => {
                if let Some(state) = &state {
                    stop(&mut source, &base, model, &handle, state, saved, writing).await;
                }
                return;
            }
        };
        let update = match update {
            Ok(update) => {
                backoff = MIN_BACKOFF;
                if stale_since.take().is_some() {
                    metrics::gauge!("sixpn_snapshot_stale_seconds").set(0.0);
                    tracing::info!("the store answers again; DNS is catching up");
                }
                update
            }
            Err(error) => {
                let stale_for = stale_since.get_or_insert_with(Instant::now).elapsed();
                metrics::gauge!("sixpn_snapshot_stale_seconds").set(stale_for.as_secs_f64());
                tracing::warn!(%error, ?backoff, stale_s = stale_for.as_secs(), "reading store changes for DNS failed; DNS answers from what it has; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = cancel.cancelled() => {
                        if let Some(state) = &state {
                            stop(&mut source, &base, model, &handle, state, saved, writing).await;
                        }
                        return;
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        model = match publish(&base, &handle, model, update).await {
            Some(next_model) => next_model,
            None => {
                // The model went with the failed task: start over from a full state.
                source.force_reload();
                Model::default()
            }
        };
    }
}

/// Applies `update` to `model` on a blocking thread and publishes the result; `None` when that
/// failed (the model is lost with the task).
async fn publish(
    base: &Arc<Base>,
    handle: &SnapshotHandle,
    model: Model,
    update: Update,
) -> Option<Model> {
    let current = handle.load();
    let base = Arc::clone(base);
    let previous = Arc::clone(&current);
    let reload = matches!(update, Update::Reload(_));
    let built =
        tokio::task::spawn_blocking(move || step(&base, Some(&current), model, update)).await;
    match built {
        Ok((next_model, snapshot)) => {
            warn_missing_views(&snapshot, Some(&previous));
            // The whole old table goes: give its memory back to the system afterwards.
            retire(handle.publish(snapshot), reload);
            Some(next_model)
        }
        Err(error) => {
            tracing::error!(%error, "DNS snapshot update failed; reloading");
            None
        }
    }
}

/// The publisher's stop: applies what the store announced and the model lacks (for at most
/// [`FINAL_CATCH_UP`]; a store that fails or does not answer ends it early), waits for a write
/// of the state in progress, and writes the state one last time, unless it is on disk already.
async fn stop(
    source: &mut impl UpdateSource,
    base: &Arc<Base>,
    mut model: Model,
    handle: &SnapshotHandle,
    state: &StateFile,
    saved: Option<crate::model::Generation>,
    writing: Option<tokio::task::JoinHandle<()>>,
) {
    let deadline = tokio::time::Instant::now() + FINAL_CATCH_UP;
    while source.behind() {
        match tokio::time::timeout_at(deadline, source.next()).await {
            Ok(Ok(update)) => match publish(base, handle, model, update).await {
                Some(next_model) => model = next_model,
                // Nothing whole is left to save; the state on disk stays as it is.
                None => return,
            },
            Ok(Err(error)) => {
                tracing::warn!(%error, "reading the last changes at shutdown failed; saving the DNS state as it is");
                break;
            }
            Err(_) => {
                tracing::warn!(timeout = ?FINAL_CATCH_UP, "the last changes did not arrive in time at shutdown; saving the DNS state as it is");
                break;
            }
        }
    }
    if let Some(writing) = writing {
        let _ = writing.await;
    }
    let generation = model.generation();
    // Generation 0 is an empty model (nothing read yet, or a failed update): never worth saving.
    if saved == Some(generation) || generation.0 == 0 {
        return;
    }
    let Some(identity) = state.current_identity() else {
        return;
    };
    let state = state.clone();
    let written = tokio::task::spawn_blocking(move || {
        let bytes = model.encode_unsealed(&identity);
        state.save_unsealed(bytes).map(|took| (state, took))
    })
    .await;
    match written {
        Ok(Ok((state, took))) => {
            tracing::info!(path = %state.path.display(), %generation, took_ms = took.as_millis() as u64, "saved the DNS state at shutdown");
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot save the DNS state at shutdown");
        }
        Err(error) => tracing::error!(%error, "saving the DNS state at shutdown failed"),
    }
}

/// Writes `model` as the last-known-good state: encoded on a blocking thread (it needs the model),
/// sealed and written on another one (`writing`, awaited before the next write) while the
/// publisher goes on.
async fn save(
    state: &StateFile,
    model: Model,
    pacer: &mut Pacer,
    writing: &mut Option<tokio::task::JoinHandle<()>>,
) -> Option<Model> {
    let Some(identity) = state.current_identity() else {
        // The store has not answered yet: nothing of its own to save.
        pacer.wrote(Duration::ZERO);
        return Some(model);
    };
    let started = Instant::now();
    let encoded = tokio::task::spawn_blocking(move || {
        let bytes = model.encode_unsealed(&identity);
        (model, bytes)
    })
    .await;
    let Ok((model, bytes)) = encoded else {
        return None;
    };
    let state = state.clone();
    let generation = model.generation();
    let encode_took = started.elapsed();
    pacer.wrote(encode_took);
    if let Some(previous) = writing.take() {
        let _ = previous.await;
    }
    *writing = Some(tokio::task::spawn_blocking(move || {
        match state.save_unsealed(bytes) {
            Ok(took) => {
                tracing::debug!(path = %state.path.display(), %generation, took_ms = (encode_took + took).as_millis() as u64, "saved the DNS state")
            }
            Err(error) => {
                tracing::warn!(path = %state.path.display(), %error, "cannot save the DNS state")
            }
        }
    }));
    Some(model)
}

/// Applies one update: a patch of `current` for changes, a full build for a reload.
fn step(
    base: &Arc<Base>,
    current: Option<&Snapshot>,
    mut model: Model,
    update: Update,
) -> (Model, Snapshot) {
    let started = Instant::now();
    match (update, current) {
        (Update::Changes(sets), Some(current)) => {
            let mut touched = Touched::default();
            for set in &sets {
                model.apply(set.generation, &set.changes, &mut touched);
            }
            let snapshot = current.apply(&model, &touched);
            tracing::debug!(
                generation = %snapshot.generation(),
                sets = sets.len(),
                names = touched.names.len(),
                elapsed_us = started.elapsed().as_micros() as u64,
                "DNS snapshot patched"
            );
            (model, snapshot)
        }
        (Update::Changes(sets), None) => {
            // Nothing to patch yet: the feed always starts with a reload, so this is a bug.
            tracing::error!(
                sets = sets.len(),
                "changes before the first full state; ignored"
            );
            let snapshot = Snapshot::from_model(Arc::clone(base), &model);
            (model, snapshot)
        }
        (Update::Reload(dump), _) => {
            let old = model;
            let mut model = Model::from_dump(&dump);
            model.inherit_health(&old);
            drop((dump, old));
            let snapshot = Snapshot::from_model(Arc::clone(base), &model);
            super::memory::release_free_memory();
            tracing::info!(
                generation = %snapshot.generation(),
                orgs = model.orgs().len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "DNS snapshot built from a full read of the store"
            );
            (model, snapshot)
        }
    }
}

/// Drops a replaced snapshot on a blocking thread once the queries still reading it are done:
/// freeing a big one (after a full rebuild) takes a while, which must not land on a DNS task.
/// With `trim` (the whole table was replaced), the freed memory goes back to the system.
fn retire(old: Arc<Snapshot>, trim: bool) {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + RETIRE_WAIT;
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let last = Arc::strong_count(&old) == 1;
        drop(old);
        if trim && last {
            super::memory::release_free_memory();
        }
    });
}

fn warn_missing_views(snapshot: &Snapshot, previous: Option<&Snapshot>) {
    let missing = snapshot.missing_view_orgs();
    if !missing.is_empty() && previous.is_none_or(|p| p.missing_view_orgs() != missing) {
        let orgs: Vec<&str> = missing.iter().map(|o| o.as_str()).collect();
        tracing::warn!(
            orgs = %orgs.join(","),
            "[[dns.views]] name orgs that do not exist; queries from those sources are refused"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;

    use super::*;
    use crate::model::{Change, ChangeSet, Generation, Org, Peer};
    use crate::store::Dump;

    /// A feed stand-in: hands out what the test sends; a reload request is recorded.
    struct Fake {
        rx: mpsc::UnboundedReceiver<Result<Update, StoreError>>,
        reloads: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl UpdateSource for Fake {
        async fn next(&mut self) -> Result<Update, StoreError> {
            match self.rx.recv().await {
                Some(update) => update,
                None => std::future::pending().await,
            }
        }

        fn force_reload(&mut self) {
            self.reloads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }

        fn behind(&self) -> bool {
            !self.rx.is_empty()
        }
    }

    fn org() -> Org {
        Org {
            slug: "personal".parse().unwrap(),
            prefix: "fdaa:0:1::/48".parse().unwrap(),
            created_at: 0,
        }
    }

    fn peer(n: u8) -> Peer {
        Peer {
            org: org().slug,
            name: format!("node-{n}").parse().unwrap(),
            group: "web".parse().unwrap(),
            region: "local".parse().unwrap(),
            pubkey: crate::wireguard::PrivateKey::from_bytes([n; 32]).public_key(),
            address: crate::model::prefix_host(org().prefix, (1u128 << 64) | u128::from(n)),
            token: "t".parse().unwrap(),
            created_at: 0,
            updated_at: 0,
            key_expires_at: None,
        }
    }

    fn dump(generation: u64, peers: Vec<Peer>) -> Update {
        Update::Reload(Dump {
            generation: Generation(generation),
            orgs: vec![org()],
            peers,
        })
    }

    fn fake() -> (Fake, mpsc::UnboundedSender<Result<Update, StoreError>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let fake = Fake {
            rx,
            reloads: Default::default(),
        };
        (fake, tx)
    }

    fn members(snapshot: &Snapshot, group: &str) -> usize {
        let wire = crate::snapshot::name::wire_from_labels(&[group.as_bytes(), b"_g", b"internal"]);
        snapshot.get(0, &wire).map_or(0, |h| h.addrs().len())
    }

    #[tokio::test]
    async fn a_batch_of_changes_is_one_publish() {
        let (source, tx) = fake();
        tx.send(Ok(dump(1, vec![peer(1)]))).unwrap();
        let cancel = CancellationToken::new();
        let handle = start_with(
            source,
            SnapshotSettings::default(),
            Persistence::default(),
            None,
            cancel.clone(),
        )
        .await
        .unwrap()
        .0;
        assert_eq!(handle.load().generation(), Generation(1));
        let mut published = handle.published();
        let sets = (2..=50u8)
            .map(|g| {
                Arc::new(ChangeSet {
                    generation: Generation(u64::from(g)),
                    changes: vec![Change::PeerUpserted(peer(g))],
                })
            })
            .collect();
        tx.send(Ok(Update::Changes(sets))).unwrap();
        published.changed().await.unwrap();
        let snapshot = handle.load();
        assert_eq!(
            snapshot.generation(),
            Generation(50),
            "one publish for the batch"
        );
        assert_eq!(members(&snapshot, "web"), 50);
        cancel.cancel();
    }

    #[tokio::test]
    async fn read_errors_are_retried_and_a_reload_replaces_everything() {
        let (source, tx) = fake();
        tx.send(Ok(dump(1, vec![peer(1), peer(2)]))).unwrap();
        let cancel = CancellationToken::new();
        let handle = start_with(
            source,
            SnapshotSettings::default(),
            Persistence::default(),
            None,
            cancel.clone(),
        )
        .await
        .unwrap()
        .0;
        for _ in 0..3 {
            tx.send(Err(StoreError::BadUrl("database is down".into())))
                .unwrap();
        }
        tx.send(Ok(dump(7, vec![peer(3)]))).unwrap();
        handle.wait_for(Generation(7)).await;
        let snapshot = handle.load();
        assert_eq!(members(&snapshot, "web"), 1);
        cancel.cancel();
    }

    #[tokio::test]
    async fn first_load_failure_is_an_error() {
        let (source, tx) = fake();
        tx.send(Err(StoreError::BadUrl("down".into()))).unwrap();
        let res = start_with(
            source,
            SnapshotSettings::default(),
            Persistence::default(),
            None,
            CancellationToken::new(),
        )
        .await;
        assert!(matches!(res, Err(SnapshotError::Load(_))));
    }

    #[tokio::test]
    async fn a_down_store_serves_the_saved_state_then_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path(), "db-1");
        let saved = Model::from_dump(&match dump(4, vec![peer(1), peer(2)]) {
            Update::Reload(d) => d,
            Update::Changes(_) => unreachable!(),
        });
        state.save(&saved).unwrap();
        let (source, tx) = fake();
        tx.send(Err(StoreError::BadUrl("down".into()))).unwrap();
        let cancel = CancellationToken::new();
        let handle = start_with(
            source,
            SnapshotSettings::default(),
            Persistence {
                state: Some(state.clone()),
                fallback: state.load(),
            },
            None,
            cancel.clone(),
        )
        .await
        .unwrap()
        .0;
        assert_eq!(handle.load().generation(), Generation(4));
        assert_eq!(
            members(&handle.load(), "web"),
            2,
            "answers from disk at once"
        );
        // The store answers again: its state replaces the saved one, and is saved in turn.
        tx.send(Ok(dump(9, vec![peer(3)]))).unwrap();
        handle.wait_for(Generation(9)).await;
        assert_eq!(members(&handle.load(), "web"), 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while state.load().map(|m| m.generation()) != Some(Generation(9)) {
            assert!(std::time::Instant::now() < deadline, "state saved");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_stop_applies_what_was_announced_and_saves_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path(), "db-1");
        let (source, tx) = fake();
        tx.send(Ok(dump(1, vec![peer(1)]))).unwrap();
        let cancel = CancellationToken::new();
        let (handle, task) = start_with(
            source,
            SnapshotSettings::default(),
            Persistence {
                state: Some(state.clone()),
                fallback: None,
            },
            None,
            cancel.clone(),
        )
        .await
        .unwrap();
        // Gets the first state written, so the stop has a newer one to write.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while state.load().map(|m| m.generation()) != Some(Generation(1)) {
            assert!(std::time::Instant::now() < deadline, "first state saved");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A write is announced, and the stop comes before the publisher took it (well within the
        // two seconds between two writes of the state).
        let set = Arc::new(ChangeSet {
            generation: Generation(2),
            changes: vec![Change::PeerUpserted(peer(2))],
        });
        cancel.cancel();
        tx.send(Ok(Update::Changes(vec![set]))).unwrap();
        task.await.unwrap();
        assert_eq!(handle.load().generation(), Generation(2));
        let saved = state.load().expect("saved at the stop");
        assert_eq!(saved.generation(), Generation(2));
    }
}
