//! The change feed: what a consumer of the store (the DNS publisher, the gateway) reads to stay
//! equal to it, one batch of deltas at a time.
//!
//! A consumer holds a [`Feed`] and loops on [`Feed::next`]. The first call gives the full state
//! ([`Update::Reload`]); later calls give the change sets committed since, in generation order and
//! without gaps ([`Update::Changes`]), or a full state again when the feed cannot prove it has every
//! set in between (a pruned change log, a generation that went backwards after a restore, a
//! restored history that already grew past the consumer's generation).
//!
//! Change sets come from memory (what writers of this process announced after their commits) as
//! far as it reaches without a gap, and from the change log in the database beyond that. A feed
//! wakes on every announcement: a local commit, or the store's watcher noticing a newer stored
//! generation (another replica or process, a NOTIFY hint, the 1 s poll). It never trusts an
//! announcement's number for content; it only reads what is committed.
//!
//! It also serves key expiry ([`super::expiry`]): peers whose key expired are left out, and at
//! each deadline the feed hands out a change set that removes the peers due, as of the
//! generation the consumer already holds.
//! With a hot standby (`read_database_url`) the log and full loads are read from the standby,
//! which may lag behind what this process committed. The feed then never goes backwards: a
//! standby behind the feed's position has "nothing newer yet"; the sets between what the standby
//! holds and this process's own newer commits are read from the primary (so a write is in DNS
//! before its `200` whatever the standby's lag); and a full reload waits until the standby
//! reaches the newest generation the feed handed out (else it reads the primary).

use std::sync::Arc;

use tokio::sync::watch;

use super::changes::{LogRead, Side};
use super::expiry::{Expiry, now_ms};
use super::{Dump, Store, StoreError};
use crate::model::{ChangeSet, Generation};

/// What [`Feed::next`] hands a consumer.
#[derive(Debug)]
pub enum Update {
    /// The change sets right after the consumer's generation, consecutive and in order. A set
    /// of key expiries (only removals) repeats the generation the consumer holds: nothing was
    /// committed, only what is served changed.
    Changes(Vec<Arc<ChangeSet>>),
    /// Start over from this full state.
    Reload(Dump),
}

/// At most this many change sets are read from the change log per [`Feed::next`].
const LOG_BATCH: i64 = 10_000;

/// How long a full reload waits for a lagging standby to reach what the feed handed out before
/// it reads the primary instead.
const STANDBY_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// A consumer's position in the store's change feed. See the module docs.
#[derive(Debug)]
pub struct Feed {
    store: Store,
    changes: watch::Receiver<Generation>,
    at: Option<Generation>,
    /// Something was announced that the in-process buffer may not hold: read the change log
    /// before waiting again.
    check_log: bool,
    /// The change set this feed handed out last (generation `at`); `None` after a reload. Lets
    /// the feed notice that the store switched to another history that already grew past `at`.
    last: Option<Arc<ChangeSet>>,
    /// Changes when the store switched to servers with another history (failover, see
    /// `reopen`): the next [`Feed::next`] is one full reload.
    history: watch::Receiver<u64>,
    /// A change of `history` woke the wait (which marks it seen): reload.
    switched: bool,
    /// Deadlines of the peers handed out with an expiring key.
    expiry: Expiry,
    /// The newest generation this feed ever handed out, across reloads: with a standby, what a
    /// reload must reach so that the consumer never goes backwards.
    floor: Generation,
}

impl Feed {
    pub(super) fn new(store: Store) -> Feed {
        let mut changes = store.changes();
        changes.mark_unchanged();
        let mut history = store.reopen.history();
        history.mark_unchanged();
        Feed {
            store,
            changes,
            history,
            switched: false,
            at: None,
            check_log: false,
            last: None,
            expiry: Expiry::default(),
            floor: Generation(0),
        }
    }

    /// The generation the consumer holds once it applied everything this feed handed it.
    pub fn at(&self) -> Option<Generation> {
        self.at
    }

    /// Whether a generation newer than [`Feed::at`] has been announced (committed by this process,
    /// or seen stored by the store's watcher): [`Feed::next`] would return at once. `false`
    /// before the first [`Feed::next`].
    pub fn behind(&self) -> bool {
        self.at.is_some_and(|at| *self.changes.borrow() > at)
    }

    /// Makes the next [`Feed::next`] a full [`Update::Reload`] (a periodic safety net).
    pub fn force_reload(&mut self) {
        self.at = None;
    }

    /// Waits until something newer than [`Feed::at`] is committed, then returns it: every change
    /// set available without a gap after [`Feed::at`] in one batch (never an empty one), or a
    /// full [`Update::Reload`] on the first call, after [`Feed::force_reload`], and when the
    /// change sets in between cannot be had (the change log was pruned past [`Feed::at`], the
    /// stored generation went below it after a restore, or the store holds another history whose
    /// set for [`Feed::at`] differs from the one this feed handed out).
    ///
    /// Change sets come from memory when this process committed them and announced them in
    /// order, and from the change log otherwise (another replica's writes, an announcement that
    /// came late or never). Cancel safe: a call dropped before it returns changes nothing.
    ///
    /// # Errors
    /// [`StoreError`] when reading the store fails; the consumer retries later.
    pub async fn next(&mut self) -> Result<Update, StoreError> {
        loop {
            let now = now_ms();
            if let Some(at) = self.at
                && let Some(due) = self.expiry.take_due(now, at)
            {
                return Ok(Update::Changes(vec![Arc::new(due)]));
            }
            let update = match self.expiry.wait(now) {
                None => self.next_committed().await?,
                Some(wait) => tokio::select! {
                    update = self.next_committed() => update?,
                    () = tokio::time::sleep(wait) => continue,
                },
            };
            return Ok(self.expiry.filter(update, now_ms()));
        }
    }

    /// [`Feed::next`] before key expiry: what the store committed. Cancel safe.
    async fn next_committed(&mut self) -> Result<Update, StoreError> {
        let Some(at) = self.at else {
            return self.reload().await;
        };
        loop {
            if self.switched || self.history.has_changed().unwrap_or(false) {
                tracing::info!(%at, "the store switched to servers with another history: one full reload");
                return self.reload().await;
            }
            // Seen before looking, so that anything announced from here on wakes the wait below.
            let announced = *self.changes.borrow_and_update();
            let mut sets = self.store.changes.recent_from(Generation(at.0 + 1));
            if self.diverged_in_memory(at) {
                // Memory holds another set for `at` than the one handed out: the store's history
                // changed. Let the log decide.
                sets.clear();
                self.check_log = true;
            }
            let held = sets.last().map_or(at, |set| set.generation);
            if announced > held || (self.check_log && sets.is_empty()) {
                // Memory does not reach what was announced (another replica's write, a set
                // announced late or never), or something asked for a look (a restore): the log.
                let held_set = sets.last().or(self.last.as_ref()).map(|set| &**set);
                match self
                    .store
                    .read_change_log(held, held_set, LOG_BATCH, Side::Reader)
                    .await?
                {
                    LogRead::Gap => {
                        tracing::info!(%at, "change log does not continue from here; reloading");
                        return self.reload().await;
                    }
                    LogRead::Sets(more) => {
                        // A full batch may have more behind it.
                        self.check_log = more.len() as i64 == LOG_BATCH;
                        sets.extend(more);
                    }
                }
            } else {
                self.check_log = false;
            }
            let reached = sets.last().map_or(at, |set| set.generation);
            if self.store.read.is_some() && announced > reached {
                // The standby has not replayed up to a commit of this process yet: the sets in
                // between come from the primary, so that the commit is in DNS at once.
                let held_set = sets.last().or(self.last.as_ref()).map(|set| &**set);
                match self
                    .store
                    .read_change_log(reached, held_set, LOG_BATCH, Side::Primary)
                    .await
                {
                    Ok(LogRead::Sets(more)) => sets.extend(more),
                    Ok(LogRead::Gap) => {
                        tracing::info!(at = %reached, "the primary's change log does not continue from here; reloading");
                        return self.reload().await;
                    }
                    // The standby's sets still count; the polls go on.
                    Err(error) => {
                        tracing::debug!(%error, "reading the change log from the primary failed")
                    }
                }
            }
            if let Some(last) = sets.last() {
                self.at = Some(last.generation);
                self.floor = self.floor.max(last.generation);
                self.last = Some(Arc::clone(last));
                return Ok(Update::Changes(sets));
            }
            // Nothing newer is stored (yet, or the stored generation went back to exactly `at`):
            // wait for the next announcement.
            self.wait().await;
        }
    }

    /// Whether memory holds a change set for `at` other than the one this feed handed out.
    fn diverged_in_memory(&self, at: Generation) -> bool {
        let Some(last) = &self.last else {
            return false;
        };
        match self.store.changes.recent_at(at) {
            Some(set) => !Arc::ptr_eq(&set, last) && set.changes != last.changes,
            None => false,
        }
    }

    /// Waits for the next announcement.
    async fn wait(&mut self) {
        // With a standby, a commit of this process announced beyond what could be read yet
        // (the primary away) is looked for again at the standby's poll period.
        let behind = *self.changes.borrow() > self.at.unwrap_or_default();
        let (changes, history, switched) =
            (&mut self.changes, &mut self.history, &mut self.switched);
        // A switch to other servers wakes the feed too. The senders live in the store this feed
        // holds, so they are never dropped meanwhile.
        let woken = async {
            tokio::select! {
                _ = changes.changed() => {}
                _ = history.changed() => *switched = true,
            }
        };
        match self.store.read_poll_period() {
            Some(period) if behind => {
                let _ = tokio::time::timeout(period, woken).await;
            }
            _ => woken.await,
        }
        self.check_log = true;
    }

    async fn reload(&mut self) -> Result<Update, StoreError> {
        self.changes.mark_unchanged();
        self.history.mark_unchanged();
        self.switched = false;
        let mut dump = self.store.load_all().await?;
        if let Some(period) = self.store.read_poll_period() {
            // A standby behind what this feed handed out: wait for it to replay, rather than
            // take DNS backwards; past a bound, read the primary.
            let deadline = tokio::time::Instant::now() + STANDBY_CATCH_UP;
            while dump.generation < self.floor {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(standby = %dump.generation, floor = %self.floor, "the standby lags too far behind; reloading from the primary");
                    dump = self.store.load_all_from(Side::Primary).await?;
                    break;
                }
                tokio::time::sleep(period).await;
                dump = self.store.load_all().await?;
            }
            self.floor = self.floor.max(dump.generation);
        } else {
            self.floor = dump.generation;
        }
        if self.store.read.is_none() && self.at.is_some_and(|at| dump.generation < at) {
            // The database went back in time: what memory holds belongs to another history.
            self.store.changes.forget_recent();
        }
        self.at = Some(dump.generation);
        self.check_log = false;
        self.last = None;
        Ok(Update::Reload(dump))
    }
}

impl Store {
    /// A new consumer position: its first [`Feed::next`] is a full reload.
    pub fn feed(&self) -> Feed {
        Feed::new(self.clone())
    }
}
