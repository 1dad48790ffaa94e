//! Reloading the configuration of a running server (`SIGHUP`, `systemctl reload`; issue 18).
//!
//! The new configuration is read, parsed and validated whole, and its zones are loaded, before
//! anything changes: a file that fails any of that is refused with the key or file at fault, and
//! the running configuration stays. Then each part takes what it can change in place:
//!
//! | what                                   | how                                               |
//! |----------------------------------------|---------------------------------------------------|
//! | `[api] tls_cert`, `tls_key`            | the next handshake gets the new pair ([`ApiTls`]) |
//! | `[api]` rate limits (`token_*`, `failed_auth_*`, `failed_admin_auth_*`) | retuned in place |
//! | `[dns] views`, `ttl`, `zones_dir`, `max_udp_payload` | DNS rebuilt from memory, no store read |
//! | `[groups]`                             | the liveness poller and the groups follow         |
//! | `[dns] rrl_*`                          | every DNS listener's table is retuned in place    |
//! | `[peers] ephemeral_idle`               | the reaper's next pass uses it                    |
//! | `[log] filter`                         | the running filter is replaced (`RUST_LOG` wins)  |
//! | `database_url`, `read_database_url` (PostgreSQL) | the pools switch to the new servers (issue 17, failover), DNS serving the current snapshot meanwhile; one full reload when the history changed |
//!
//! The database switch is checked on connections of its own first ([`Store::reopen`]): a new
//! server that does not answer, a primary still in recovery, a standby of another database, or a
//! change of kind (SQLite, adding or removing `read_database_url`) leaves the store on its old
//! servers and logs why; the other keys of the reload still apply, and the next `SIGHUP` tries
//! the switch again.
//!
//! Everything else (addresses, the data directory, the ULA prefix, `read_poll_period`, the admin
//! token, connection caps and timeouts, regions and the gateway) is read at start only: a
//! reload that changes one of those keys logs it by name, with "needs a restart". Connections
//! already open are never dropped by a reload.

use std::sync::Arc;

use tokio::sync::watch;

use crate::api::ApiHandle;
use crate::api::server::ApiTls;
use crate::config::Config;
use crate::snapshot::{Reconfigure, SnapshotHandle, SnapshotSettings};
use crate::store::Store;

/// What a running server can change on reload, and the configuration it runs on.
#[derive(Debug)]
pub struct Reloader {
    current: Config,
    tls: Option<Arc<ApiTls>>,
    snapshot: SnapshotHandle,
    api: ApiHandle,
    ephemeral_idle: watch::Sender<std::time::Duration>,
    rrl: crate::fastpath::RrlTuner,
    store: Store,
}

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The keys whose new values are in force.
    pub applied: Vec<&'static str>,
    /// The keys that changed but are read at start only.
    pub needs_restart: Vec<&'static str>,
    /// The keys whose new values could not be put in force (the old ones stay), and why.
    pub failed: Vec<(&'static str, String)>,
}

impl Reloader {
    /// A reloader for a server started with `current`.
    pub fn new(
        current: Config,
        tls: Option<Arc<ApiTls>>,
        snapshot: SnapshotHandle,
        api: ApiHandle,
        ephemeral_idle: watch::Sender<std::time::Duration>,
        rrl: crate::fastpath::RrlTuner,
        store: Store,
    ) -> Reloader {
        Reloader {
            current,
            tls,
            snapshot,
            api,
            ephemeral_idle,
            rrl,
            store,
        }
    }

    /// Applies `next` (already parsed and validated) as far as a running server can, and
    /// remembers it.
    ///
    /// # Errors
    /// Nothing is changed when the new zones or TLS files cannot be used; the message names the
    /// file at fault. A database switch that fails is not an error: it is in
    /// [`Outcome::failed`], and the rest applies.
    pub async fn apply(&mut self, mut next: Config) -> anyhow::Result<Outcome> {
        let old = &self.current;
        let mut outcome = Outcome {
            needs_restart: needs_restart(old, &next),
            ..Outcome::default()
        };
        // Everything that can fail is checked before anything changes.
        let dns_changed = differs(&old.dns.views, &next.dns.views)
            || old.dns.ttl != next.dns.ttl
            || old.dns.zones_dir != next.dns.zones_dir
            || old.dns.max_udp_payload != next.dns.max_udp_payload;
        let groups_changed = differs(&old.groups, &next.groups);
        // Zone files may have changed with the same `zones_dir`: they are read again whenever a
        // zones folder is set.
        let settings = SnapshotSettings::from_config(&next.dns)?;
        let tls_paths = match (&next.api.tls_cert, &next.api.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => None,
        };
        if let (Some(tls), Some((cert, key))) = (&self.tls, &tls_paths)
            && tls.reload_from(cert, key)?
        {
            outcome.applied.push("api.tls_cert");
        }
        if dns_changed || groups_changed || next.dns.zones_dir.is_some() {
            self.snapshot.reconfigure(Reconfigure {
                settings,
                groups: next.groups.clone(),
            });
            if differs(&old.dns.views, &next.dns.views) {
                outcome.applied.push("dns.views");
            }
            if old.dns.ttl != next.dns.ttl {
                outcome.applied.push("dns.ttl");
            }
            if old.dns.zones_dir != next.dns.zones_dir || next.dns.zones_dir.is_some() {
                outcome.applied.push("dns.zones_dir");
            }
            if old.dns.max_udp_payload != next.dns.max_udp_payload {
                outcome.applied.push("dns.max_udp_payload");
            }
            if groups_changed {
                outcome.applied.push("groups");
            }
        }
        let limits = crate::api::RateLimits::from_config(&next.api);
        if differs(&crate::api::RateLimits::from_config(&old.api), &limits) {
            self.api.retune(limits);
            outcome.applied.push("api rate limits");
        }
        let rrl = crate::fastpath::RrlSettings::from_config(&next.dns, next.ula_prefix);
        if differs(&self.rrl.settings(), &rrl) {
            self.rrl.retune(rrl);
            outcome.applied.push("dns rrl");
        }
        if old.peers.ephemeral_idle != next.peers.ephemeral_idle {
            self.ephemeral_idle.send_replace(next.peers.ephemeral_idle);
            outcome.applied.push("peers.ephemeral_idle");
        }
        if old.log.filter != next.log.filter {
            crate::logging::set_filter(next.log.filter.as_deref());
            outcome.applied.push("log.filter");
        }
        if old.database_url() != next.database_url()
            || old.read_database_url != next.read_database_url
        {
            let url = next.database_url();
            match self
                .store
                .reopen(&url, next.read_database_url.as_deref())
                .await
            {
                Ok(done) => {
                    tracing::info!(
                        database = %crate::config::redact_url(&url),
                        read_database = ?next.read_database_url.as_deref().map(crate::config::redact_url),
                        generation = %done.generation,
                        timeline = ?done.timeline,
                        reload = done.reload.as_deref().unwrap_or("none: the same history"),
                        "switched databases"
                    );
                    if old.database_url() != next.database_url() {
                        outcome.applied.push("database_url");
                    }
                    if old.read_database_url != next.read_database_url {
                        outcome.applied.push("read_database_url");
                    }
                }
                Err(error) => {
                    let mut why = crate::config::scrub_password(&error.to_string(), &url);
                    if let Some(read) = &next.read_database_url {
                        why = crate::config::scrub_password(&why, read);
                    }
                    outcome.failed.push(("database_url", why));
                    // The store stays where it was; so does the configuration it runs on, and
                    // the next reload tries again.
                    next.database_url = old.database_url.clone();
                    next.read_database_url = old.read_database_url.clone();
                }
            }
        }
        self.current = next;
        Ok(outcome)
    }
}

/// Whether two values differ, by their `Debug` form (the configuration types carry no `Eq`).
fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// The keys read at start only whose values differ between `old` and `new`.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |key: &'static str, changed: bool| {
        if changed {
            keys.push(key);
        }
    };
    check("data_dir", old.data_dir != new.data_dir);
    check(
        "read_poll_period",
        old.read_poll_period != new.read_poll_period,
    );
    check("ula_prefix", old.ula_prefix != new.ula_prefix);
    check("admin_token", old.admin_token != new.admin_token);
    let (a, b) = (&old.api, &new.api);
    check("api.listen", a.listen != b.listen);
    check("api.admin_listen", a.admin_listen != b.admin_listen);
    check("api.body_limit", a.body_limit != b.body_limit);
    check(
        "api.header_read_timeout",
        a.header_read_timeout != b.header_read_timeout,
    );
    check("api.idle_timeout", a.idle_timeout != b.idle_timeout);
    check(
        "api.body_read_timeout",
        a.body_read_timeout != b.body_read_timeout,
    );
    check(
        "api.max_connections",
        a.max_connections != b.max_connections,
    );
    check(
        "api.max_connections_per_ip",
        a.max_connections_per_ip != b.max_connections_per_ip,
    );
    check("api.eviction_floor", a.eviction_floor != b.eviction_floor);
    check(
        "api.accept_rate",
        a.accept_rate.to_bits() != b.accept_rate.to_bits(),
    );
    check("api.accept_burst", a.accept_burst != b.accept_burst);
    check(
        "api.bootstrap_token",
        a.bootstrap_token != b.bootstrap_token,
    );
    check("ui.enabled", old.ui.enabled != new.ui.enabled);
    // Turning HTTPS on or off changes the listener, not just its certificate.
    check(
        "api.tls_cert",
        (a.tls_cert.is_some() && a.tls_key.is_some())
            != (b.tls_cert.is_some() && b.tls_key.is_some()),
    );
    let (a, b) = (&old.dns, &new.dns);
    check("dns.listen", a.listen != b.listen);
    check(
        "dns.tcp_max_connections",
        a.tcp_max_connections != b.tcp_max_connections,
    );
    check(
        "dns.tcp_max_connections_per_source",
        a.tcp_max_connections_per_source != b.tcp_max_connections_per_source,
    );
    check("regions", differs(&old.regions, &new.regions));
    check("gateway", differs(&old.gateway, &new.gateway));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_at_start_are_named() {
        let old = Config::default();
        let mut new = Config::default();
        assert!(needs_restart(&old, &new).is_empty());
        new.api.listen = "127.0.0.1:1".parse().unwrap();
        new.dns.rrl_slip = 0;
        new.dns.ttl = 60;
        new.dns.tcp_max_connections = 10;
        new.log.filter = Some("debug".into());
        assert_eq!(
            needs_restart(&old, &new),
            ["api.listen", "dns.tcp_max_connections"]
        );
    }
}
