//! The change feed: what a consumer of the store (the DNS publisher, the gateway) reads to stay
//! equal to it, one batch of deltas at a time.
//!
//! A consumer holds a [`Feed`] and loops on [`Feed::next`]. The first call gives the full state
//! ([`Update::Reload`]); later calls give the change sets committed since, in generation order and
//! without gaps ([`Update::Changes`]), or a full state again when the feed cannot prove it has every
//! set in between (a pruned change log, a generation that went backwards after a restore).

use std::sync::Arc;

use tokio::sync::watch;

use super::{Dump, Store, StoreError};
use crate::model::{ChangeSet, Generation};

/// What [`Feed::next`] hands a consumer.
#[derive(Debug)]
pub enum Update {
    /// The change sets right after the consumer's generation, consecutive and in order.
    Changes(Vec<Arc<ChangeSet>>),
    /// Start over from this full state.
    Reload(Dump),
}

/// A consumer's position in the store's change feed. See the module docs.
#[derive(Debug)]
pub struct Feed {
    store: Store,
    changes: watch::Receiver<Generation>,
    at: Option<Generation>,
}

impl Feed {
    pub(super) fn new(store: Store) -> Feed {
        let mut changes = store.changes();
        changes.mark_unchanged();
        Feed {
            store,
            changes,
            at: None,
        }
    }

    /// The generation the consumer holds once it applied everything this feed handed it.
    pub fn at(&self) -> Option<Generation> {
        self.at
    }

    /// Makes the next [`Feed::next`] a full [`Update::Reload`] (a periodic safety net).
    pub fn force_reload(&mut self) {
        self.at = None;
    }

    /// Waits until something newer than [`Feed::at`] is committed, then returns it. Cancel safe:
    /// a call dropped before it returns changes nothing.
    ///
    /// # Errors
    /// [`StoreError`] when reading the store fails; the consumer retries later.
    pub async fn next(&mut self) -> Result<Update, StoreError> {
        if let Some(at) = self.at {
            // Wait for a newer generation than the one held.
            let _ = self.changes.wait_for(|g| *g > at).await;
        }
        self.changes.mark_unchanged();
        let dump = self.store.load_all().await?;
        self.at = Some(dump.generation);
        Ok(Update::Reload(dump))
    }
}

impl Store {
    /// A new consumer position: its first [`Feed::next`] is a full reload.
    pub fn feed(&self) -> Feed {
        Feed::new(self.clone())
    }
}
