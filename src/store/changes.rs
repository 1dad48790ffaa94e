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

/// Follows other replicas' commits on PostgreSQL: LISTEN for the NOTIFY each write transaction
/// sends, and, because a notification can be lost (a dropped connection loses whatever was sent
/// meanwhile), also read the stored generation every second.
///
/// The first LISTEN is set up before this returns, so no commit made after the store opened is
/// missed; the generation is read once more after it, to catch commits made in between. The task
/// ends when `stop` is cancelled (the store drops its guard when the last clone goes).
pub(super) async fn spawn_pg_listener(
    pool: sqlx::PgPool,
    channel: &'static str,
    changes: Changes,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut listener = listen(&pool, channel).await;
    poll_once(&pool, &changes).await;
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(std::time::Duration::from_secs(1));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if listener.is_none() {
                listener = listen(&pool, channel).await;
                if listener.is_some() {
                    poll_once(&pool, &changes).await;
                }
            }
            tokio::select! {
                note = async {
                    match listener.as_mut() {
                        Some(l) => l.try_recv().await,
                        None => std::future::pending().await,
                    }
                } => match note {
                    Ok(Some(n)) => match n.payload().parse::<u64>() {
                        Ok(g) => changes.publish(Generation(g)),
                        Err(_) => poll_once(&pool, &changes).await,
                    },
                    // The connection dropped: notifications may be lost, so read the generation.
                    Ok(None) | Err(_) => {
                        listener = None;
                        poll_once(&pool, &changes).await;
                    }
                },
                _ = poll.tick() => poll_once(&pool, &changes).await,
                _ = stop.cancelled() => return,
            }
            if pool.is_closed() {
                return;
            }
        }
    });
}

/// A connection that LISTENs on `channel`, or `None` (logged) when that fails.
async fn listen(pool: &sqlx::PgPool, channel: &str) -> Option<sqlx::postgres::PgListener> {
    match sqlx::postgres::PgListener::connect_with(pool).await {
        Ok(mut l) => match l.listen(channel).await {
            Ok(()) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN failed; polling");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot open LISTEN connection; polling");
            None
        }
    }
}

async fn poll_once(pool: &sqlx::PgPool, changes: &Changes) {
    match sqlx::query_scalar::<_, i64>("SELECT generation FROM meta WHERE id = 1")
        .fetch_one(pool)
        .await
    {
        Ok(g) => changes.publish(Generation(g as u64)),
        Err(e) => tracing::debug!(error = %e, "reading the generation failed"),
    }
}
