//! The in-process change channel: the newest committed [`Generation`].

use tokio::sync::watch;

use crate::model::Generation;

/// Publishes committed generations. Cheap to clone; every clone feeds the same channel.
#[derive(Debug, Clone)]
pub struct Changes {
    tx: watch::Sender<Generation>,
}

impl Changes {
    /// A channel starting at `start`.
    pub fn new(start: Generation) -> Self {
        let (tx, _) = watch::channel(start);
        Changes { tx }
    }

    /// Announces `generation` if it is newer than what was announced before.
    pub fn publish(&self, generation: Generation) {
        self.tx.send_if_modified(|cur| {
            if generation > *cur {
                *cur = generation;
                true
            } else {
                false
            }
        });
    }

    /// A receiver that sees every later announcement.
    pub fn subscribe(&self) -> watch::Receiver<Generation> {
        self.tx.subscribe()
    }
}
