//! Switching a running store to another PostgreSQL server (issue 17, failover): the operator
//! points `database_url` (and `read_database_url`) at the promoted standby and sends `SIGHUP`.
//!
//! [`Store::reopen`] first checks the new servers on connections of their own: the primary
//! answers, is not in recovery, carries the schema and a sixpn identity; the standby answers and
//! holds the same database. Anything wrong fails the switch, and the store keeps its servers.
//! Then the pools take the new connection options, and every connection opened before the switch
//! is closed the next time it is acquired or released (the pools' `before_acquire` and
//! `after_release` hooks compare its age with the time of the switch). Every clone of the store
//! (the API, the DNS publisher's feed, the gateway, the reapers, the watcher) follows at once:
//! they share the pools.
//!
//! Whether consumers reload is decided from the history, not the URL: when the new primary's
//! identity or timeline differs from the old one's (or either is unknown), or its stored
//! generation is below what this process announced, every feed does one full reload. The
//! timeline is the current WAL file's (`pg_walfile_name(pg_current_wal_lsn())`): it changes the
//! moment a standby is promoted, where `pg_control_checkpoint()` only changes at the next
//! checkpoint. A URL that changes for the same server (a new password, an address) reloads
//! nothing.
//!
//! Generations never go backwards (the choice documented in deploy/regions.md): a new primary
//! whose stored generation is below what this process announced (asynchronous replication lost
//! the newest commits) has its generation advanced to that value before the switch, so the
//! reload that follows is never older than what DNS served. What the lost commits held is gone
//! from DNS too, as it is from the database.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Backend, PG_MIGRATOR, Store, StoreError, pg_target};
use crate::model::Generation;

/// How long each new server is given to answer during a switch.
const REOPEN_PATIENCE: Duration = Duration::from_secs(5);

/// The state a switch shares with the pools' hooks and the feeds.
#[derive(Debug)]
pub(super) struct Reopen {
    /// When the pools were last pointed at other servers: connections older than that are
    /// closed instead of used.
    at: Mutex<Option<Instant>>,
    /// The primary's timeline as last read (at start and at each switch); `None`: unknown.
    timeline: Mutex<Option<i64>>,
    /// Bumped when the database's history changed under the store: every feed reloads once.
    history: watch::Sender<u64>,
}

impl Default for Reopen {
    fn default() -> Self {
        Reopen {
            at: Mutex::new(None),
            timeline: Mutex::new(None),
            history: watch::Sender::new(0),
        }
    }
}

impl Reopen {
    /// Whether a connection `age` old was opened before the last switch.
    fn stale(&self, age: Duration) -> bool {
        lock(&self.at).is_some_and(|at| age > at.elapsed())
    }

    pub(super) fn note_timeline(&self, timeline: Option<i64>) {
        *lock(&self.timeline) = timeline;
    }

    /// A receiver that sees every change of history (see [`Reopen::history`]).
    pub(super) fn history(&self) -> watch::Receiver<u64> {
        self.history.subscribe()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `options` with hooks that close connections opened before the last switch of `reopen`.
pub(super) fn drop_stale(
    options: sqlx::postgres::PgPoolOptions,
    reopen: &std::sync::Arc<Reopen>,
) -> sqlx::postgres::PgPoolOptions {
    let (before, after) = (reopen.clone(), reopen.clone());
    options
        .before_acquire(move |_, meta| {
            let keep = !before.stale(meta.age);
            Box::pin(async move { Ok(keep) })
        })
        .after_release(move |_, meta| {
            let keep = !after.stale(meta.age);
            Box::pin(async move { Ok(keep) })
        })
}

/// Refuses a PostgreSQL URL that names several hosts or `target_session_attrs`: sqlx 0.9 parses
/// neither (it would ignore the attribute and connect to whatever the first host is).
pub(super) fn refuse_multi_host(url: &str) -> Result<(), StoreError> {
    let lower = url.to_ascii_lowercase();
    if lower.contains("target_session_attrs") {
        return Err(StoreError::MultiHostUrl("target_session_attrs"));
    }
    // `postgres://user:pw@a:5432,b:5432/db`: a comma in the authority.
    let rest = lower.split_once("://").map_or(lower.as_str(), |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let query = lower.split_once('?').map_or("", |(_, q)| q);
    let listed = query.split('&').any(|pair| {
        pair.split_once('=').is_some_and(|(key, value)| {
            matches!(key, "host" | "hostaddr" | "port")
                && (value.contains(',') || value.contains("%2c"))
        })
    });
    if hosts.contains(',') || listed {
        return Err(StoreError::MultiHostUrl("several hosts"));
    }
    Ok(())
}

/// The timeline the server behind `executor` writes on, when it is a primary and says so.
pub(super) async fn primary_timeline(pool: &sqlx::PgPool) -> Option<i64> {
    // NULL on a standby (where pg_current_wal_lsn() fails).
    sqlx::query_scalar::<_, Option<i64>>(
        "SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE \
         ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8 END",
    )
    .fetch_one(pool)
    .await
    .ok()
    .flatten()
}

/// What [`Store::reopen`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reopened {
    /// Why every consumer reloads once; `None` when the new primary continues the same history.
    pub reload: Option<String>,
    /// The generation the new primary holds (after an advance, see the module docs).
    pub generation: Generation,
    /// The new primary's timeline, when it says.
    pub timeline: Option<i64>,
}

/// A pool of one connection to `opts`, connected within [`REOPEN_PATIENCE`], naming `what` and
/// the target on failure. (A pool rather than a bare connection: its futures are `Send` for any
/// lifetime, which the migrator's on a connection are not.)
async fn connect(
    what: &str,
    opts: &sqlx::postgres::PgConnectOptions,
) -> Result<sqlx::PgPool, StoreError> {
    let connecting = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(REOPEN_PATIENCE)
        .connect_with(opts.clone());
    match tokio::time::timeout(REOPEN_PATIENCE, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(StoreError::Reopen(format!(
            "{what} ({}) cannot be reached: {e}",
            pg_target(opts)
        ))),
        Err(_) => Err(StoreError::Reopen(format!(
            "{what} ({}) does not answer within {} s",
            pg_target(opts),
            REOPEN_PATIENCE.as_secs()
        ))),
    }
}

impl Store {
    /// Points the store at another PostgreSQL primary `url` and, when the store reads from a
    /// standby, at the standby `read_url` (see the module docs): checked first, then switched
    /// for every clone of the store at once. Feeds reload once when the history changed.
    ///
    /// # Errors
    /// [`StoreError::Reopen`] (the store keeps its servers): a SQLite store, adding or removing
    /// the standby (a restart does that), a server that does not answer, a primary in recovery,
    /// a database no sixpn server ever opened, a standby of another database;
    /// [`StoreError::MultiHostUrl`], [`StoreError::Migrate`], [`StoreError::Database`].
    pub async fn reopen(&self, url: &str, read_url: Option<&str>) -> Result<Reopened, StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Err(StoreError::Reopen(
                "only a PostgreSQL store switches without a restart".into(),
            ));
        };
        let is_pg = |url: &str| url.starts_with("postgres://") || url.starts_with("postgresql://");
        if !is_pg(url) || read_url.is_some_and(|u| !is_pg(u)) {
            return Err(StoreError::Reopen(
                "switching from PostgreSQL to another kind of database needs a restart".into(),
            ));
        }
        if self.read.is_some() != read_url.is_some() {
            return Err(StoreError::Reopen(
                "adding or removing read_database_url needs a restart".into(),
            ));
        }
        for url in std::iter::once(url).chain(read_url) {
            refuse_multi_host(url)?;
        }
        let opts: sqlx::postgres::PgConnectOptions = url.parse()?;
        let conn = connect("the new primary", &opts).await?;
        let checked = self.check_primary(&conn, &opts).await;
        let (identity, stored, timeline) = match checked {
            Ok(found) => found,
            Err(e) => {
                conn.close().await;
                return Err(e);
            }
        };
        // The standby must hold the same database (a standby of the new primary, or of the old
        // one that will follow it).
        let read_opts = match read_url {
            Some(read_url) => {
                let read_opts: sqlx::postgres::PgConnectOptions = read_url.parse()?;
                let read_conn = match connect("the new read replica", &read_opts).await {
                    Ok(read_conn) => read_conn,
                    Err(e) => {
                        conn.close().await;
                        return Err(e);
                    }
                };
                let held: Result<Option<String>, sqlx::Error> =
                    sqlx::query_scalar("SELECT identity FROM meta WHERE id = 1")
                        .fetch_one(&read_conn)
                        .await;
                read_conn.close().await;
                match held {
                    Ok(held) if held.as_deref() == Some(identity.as_str()) => Some(read_opts),
                    Ok(_) => {
                        conn.close().await;
                        return Err(StoreError::Reopen(format!(
                            "read_database_url ({}) holds another database than database_url: it must be a standby of the new primary",
                            pg_target(&read_opts)
                        )));
                    }
                    Err(e) => {
                        conn.close().await;
                        return Err(StoreError::Reopen(format!(
                            "read_database_url ({}) cannot be read: {e}",
                            pg_target(&read_opts)
                        )));
                    }
                }
            }
            None => None,
        };
        // Why consumers must reload once.
        let old_identity = self.identity();
        let old_timeline = *lock(&self.reopen.timeline);
        let announced = self.changes.announced();
        let mut reasons = Vec::new();
        if old_identity != identity {
            reasons.push("the database identity changed".to_owned());
        }
        match (old_timeline, timeline) {
            (Some(old), Some(new)) if old == new => {}
            (Some(old), Some(new)) => reasons.push(format!("the timeline changed ({old} → {new})")),
            _ => reasons.push("the timeline is not known".to_owned()),
        }
        let mut generation = Generation(stored as u64);
        if generation < announced {
            // Never backwards: advance the new primary's generation to what was announced.
            let advanced =
                sqlx::query("UPDATE meta SET generation = $1 WHERE id = 1 AND generation < $1")
                    .bind(announced.0 as i64)
                    .execute(&conn)
                    .await;
            if let Err(e) = advanced {
                conn.close().await;
                return Err(StoreError::Database(e));
            }
            reasons.push(format!(
                "the new primary's generation {generation} is behind the {announced} served here; advanced to it"
            ));
            generation = announced;
        }
        conn.close().await;
        // The switch: options first, then the time that makes older connections stale.
        pool.set_connect_options(opts);
        if let (Some(read), Some(read_opts)) = (&self.read, read_opts) {
            read.pool.set_connect_options(read_opts);
        }
        *lock(&self.reopen.at) = Some(Instant::now());
        self.reopen.note_timeline(timeline);
        *self.identity.write().unwrap_or_else(|e| e.into_inner()) = identity;
        let reload = (!reasons.is_empty()).then(|| reasons.join("; "));
        if reload.is_some() {
            self.changes.forget_recent();
            self.reopen.history.send_modify(|h| *h += 1);
        }
        self.changes.publish(generation);
        Ok(Reopened {
            reload,
            generation,
            timeline,
        })
    }

    /// Checks that `conn` is a writable primary holding a sixpn database (migrating it when an
    /// older schema); returns its identity, stored generation and timeline.
    async fn check_primary(
        &self,
        conn: &sqlx::PgPool,
        opts: &sqlx::postgres::PgConnectOptions,
    ) -> Result<(String, i64, Option<i64>), StoreError> {
        let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(conn)
            .await?;
        if in_recovery {
            return Err(StoreError::Reopen(format!(
                "database_url ({}) is a standby in recovery: promote it first (pg_ctl promote)",
                pg_target(opts)
            )));
        }
        let has_meta: bool = sqlx::query_scalar("SELECT to_regclass('meta') IS NOT NULL")
            .fetch_one(conn)
            .await?;
        let row: Option<(Option<String>, i64)> = if has_meta {
            sqlx::query_as("SELECT identity, generation FROM meta WHERE id = 1")
                .fetch_optional(conn)
                .await?
        } else {
            None
        };
        let Some((Some(identity), stored)) = row else {
            return Err(StoreError::Reopen(format!(
                "database_url ({}) holds no sixpn database: start a server on it first, or restart this one",
                pg_target(opts)
            )));
        };
        PG_MIGRATOR.run(conn).await?;
        let timeline = primary_timeline(conn).await;
        Ok((identity, stored, timeline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_hosts_are_refused() {
        for url in [
            "postgres://u:p@a:5432,b:5432/db",
            "postgres://u@a/db?target_session_attrs=read-write",
            "postgresql://a,b/db",
            "postgres://u@/db?host=a%2Cb",
        ] {
            assert!(
                matches!(refuse_multi_host(url), Err(StoreError::MultiHostUrl(_))),
                "{url}"
            );
        }
        for url in [
            "postgres://u:p,q@a:5432/db",
            "postgres://u@a/db?application_name=x,y",
            "postgres://u@a/db?sslmode=require",
            "postgres://u@a/db?host=/run/pg&application_name=x,y",
            "postgres://u@/db?host=%2Frun%2Fpg",
        ] {
            assert!(refuse_multi_host(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn connections_older_than_the_switch_are_stale() {
        let reopen = Reopen::default();
        assert!(!reopen.stale(Duration::from_secs(3600)));
        *lock(&reopen.at) = Some(Instant::now() - Duration::from_secs(10));
        assert!(reopen.stale(Duration::from_secs(11)));
        assert!(!reopen.stale(Duration::from_secs(9)));
    }
}
