//! `sixpn serve`: wires store → snapshot publisher → API + DNS (+ gateway) under one
//! cancellation token.
//!
//! [`start`] binds every listener first (port 0 is fine), so tests and callers learn the real
//! addresses before anything is served; [`run`] adds signal handling for the binary.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, redact_url, scrub_password};

pub mod bootstrap;
pub mod reload;
use crate::store::Store;

/// A running server.
pub struct Running {
    /// Where the HTTP API listens: everything, or with `[api] admin_listen` the peer API and
    /// the probes only.
    pub api_addr: SocketAddr,
    /// Where the admin plane (`/api/v1`, `/metrics`) listens when `[api] admin_listen` is set.
    pub admin_addr: Option<SocketAddr>,
    /// Where the DNS server listens (UDP and TCP on each).
    pub dns_addrs: Vec<SocketAddr>,
    /// The generated admin-token file, when the admin token was not configured.
    pub admin_token_file: Option<PathBuf>,
    /// The store the server runs on.
    pub store: Store,
    /// The regions peers are handed, with their gateway keys.
    pub regions: Vec<crate::model::Region>,
    cancel: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    /// What a configuration reload changes; taken by [`Running::take_reloader`].
    reloader: Option<reload::Reloader>,
    /// Stops the DNS snapshot publisher, once the API has answered its last request.
    publisher_stop: CancellationToken,
    /// The publisher's task: it ends once it has saved the DNS state.
    publisher: Option<tokio::task::JoinHandle<()>>,
    /// The data directory's lock, released when the server is dropped.
    _lock: std::fs::File,
}

impl Running {
    /// A token that stops the server when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The handle that applies a reloaded configuration (once; later calls get `None`).
    pub fn take_reloader(&mut self) -> Option<reload::Reloader> {
        self.reloader.take()
    }

    /// Waits until every part has stopped; the first failure stops the rest and is returned.
    /// Once the API has answered its last request, the DNS publisher applies the last changes
    /// and saves the DNS state; only then is the data directory's lock released.
    ///
    /// # Errors
    /// The first part that failed.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        self.finish().await
    }

    /// Like [`Running::wait`], then closes the store (SQLite moves its write-ahead log into the
    /// database file), all before the data directory's lock is released.
    ///
    /// # Errors
    /// As [`Running::wait`].
    pub async fn wait_and_close(mut self) -> anyhow::Result<()> {
        let res = self.finish().await;
        self.store.close().await;
        res
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        let res = self.join_parts().await;
        // Every request has been answered: what the API acknowledged is committed, and the
        // publisher saves it before the lock goes.
        self.publisher_stop.cancel();
        if let Some(publisher) = self.publisher.take()
            && let Err(error) = publisher.await
        {
            tracing::error!(%error, "the DNS publisher failed at shutdown");
        }
        res
    }

    async fn join_parts(&mut self) -> anyhow::Result<()> {
        let mut first_err = None;
        while let Some(res) = self.tasks.join_next().await {
            let res = res.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = res {
                self.cancel.cancel();
                first_err.get_or_insert(e);
            } else if !self.cancel.is_cancelled() {
                // A part that ends on its own ends the server: the rest are no use without it.
                self.cancel.cancel();
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stops the server and waits for it.
    ///
    /// # Errors
    /// As [`Running::wait`].
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        self.wait().await
    }
}

/// How long a server with a last-known-good DNS state waits for its store at start before it
/// serves DNS from that state (and keeps trying the store in the background).
const STORE_PATIENCE: std::time::Duration = std::time::Duration::from_millis(600);

/// Starts everything `config` asks for and returns once it is all listening.
///
/// # Errors
/// A listener that cannot bind, a store that cannot open, a key file that cannot be read,
/// another server already running on the data directory.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let data_dir = bootstrap::prepare_data_dir(&config)?;
    let lock = lock_data_dir(&data_dir)?;
    // The API's and DNS TCP's connection caps must fit the open-file limit, whose soft value is
    // often 1,024 (issues 11 and 22): each gets at most its share, the rest stays for the store.
    let mut api_limits = crate::api::server::ServerLimits::from_config(&config.api);
    let mut dns_tcp = crate::dns::TcpLimits::from_config(&config.dns, config.ula_prefix);
    if let Some(limit) = crate::fastpath::raise_open_file_limit() {
        fit_open_file_limit(limit, &mut api_limits, &mut dns_tcp);
    }
    let dns_tcp = crate::dns::TcpGate::new(dns_tcp);
    // A bad certificate or key fails the start before anything else is touched.
    let tls = match (&config.api.tls_cert, &config.api.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(crate::api::server::load_tls(cert, key)?)),
        _ => None,
    };

    let url = config.database_url();
    // DNS never waits for the database (issue 13): when the store cannot be reached but this
    // data directory holds the last-known-good DNS state of the same database URL, the server
    // starts anyway, serves DNS from that state, answers writes with 503 and follows the store
    // once it answers.
    let state_path = data_dir.join(crate::snapshot::disk::FILE_NAME);
    let fingerprint = crate::snapshot::disk::url_fingerprint(&redact_url(&url));
    let saved = crate::snapshot::disk::StateFile::load_any(&state_path)
        .filter(|(_, identity)| identity.starts_with(&format!("{fingerprint}/")));
    // With a saved state, the store gets a moment to answer before DNS starts from the state
    // (sqlx retries a refused connection until its pool timeout); without one, it gets its
    // usual time.
    // `read_database_url` and `read_poll_period`, for the store, when a read replica is set.
    let read = config
        .read_database_url
        .as_ref()
        .map(|url| crate::store::ReadReplica {
            url: url.clone(),
            poll_period: config.read_poll_period,
        });
    let read = read.as_ref();
    // With a read replica, DNS can load from the standby: the primary gets the same moment.
    let opened = match &saved {
        Some(_) => tokio::time::timeout(
            STORE_PATIENCE,
            Store::open_with(&url, read, config.ula_prefix),
        )
        .await
        .unwrap_or_else(|_| {
            Err(crate::store::StoreError::Database(
                sqlx::Error::PoolTimedOut,
            ))
        }),
        _ if read.is_some() => tokio::time::timeout(
            STORE_PATIENCE,
            Store::open_with(&url, read, config.ula_prefix),
        )
        .await
        .unwrap_or_else(|_| {
            Err(crate::store::StoreError::Database(
                sqlx::Error::PoolTimedOut,
            ))
        }),
        _ => Store::open_with(&url, read, config.ula_prefix).await,
    };
    let mut primary_away = false;
    let (store, fallback) = match (opened, saved) {
        // The primary answers but the standby the first load reads may not: DNS then starts
        // from the last-known-good state and follows the standby once it answers.
        (Ok(store), Some((model, _))) if read.is_some() => {
            match tokio::time::timeout(STORE_PATIENCE, store.generation()).await {
                Ok(Ok(_)) => (store, None),
                _ => {
                    tracing::warn!(
                        generation = %model.generation(),
                        "the read replica does not answer: serving DNS from the last-known-good state until it does"
                    );
                    (store, Some(model))
                }
            }
        }
        (Ok(store), _) => (store, None),
        // With a read replica, DNS loads from the standby while the primary is away.
        (Err(error), None) if error.is_unavailable() && read.is_some() => {
            tracing::warn!(
                error = %scrub_password(&error.to_string(), &url),
                "the primary database does not answer: DNS loads from read_database_url, writes answer 503 until the primary does"
            );
            primary_away = true;
            let store = Store::open_lazy_with(&url, read, config.ula_prefix).await?;
            (store, None)
        }
        (Err(error), Some((model, _))) if error.is_unavailable() => {
            tracing::warn!(
                error = %scrub_password(&error.to_string(), &url),
                generation = %model.generation(),
                "the database does not answer: serving DNS from the last-known-good state, writes answer 503 until it does"
            );
            let store = Store::open_lazy_with(&url, read, config.ula_prefix).await?;
            // The saved state is this database's: an earlier run prepared it.
            store.assume_prepared();
            (store, Some(model))
        }
        // The store's errors may quote the URL (an unsupported scheme, a parse error): its
        // password never reaches the message (issue 11).
        (Err(error), _) => {
            return Err(anyhow::anyhow!(
                "{}",
                scrub_password(&error.to_string(), &url)
            ))
            .with_context(|| format!("opening the store at {}", redact_url(&url)));
        }
    };
    let degraded = fallback.is_some() || primary_away;
    let store = store.with_org_max_peers(config.orgs.max_peers);

    let resolved = bootstrap::resolve(&config, &data_dir, &store, degraded).await?;
    // Before anything answers: a probe that sees the API up has the warnings in the log.
    warn_public_listener(&config, &resolved.regions, tls.is_some());

    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();

    let state = crate::snapshot::disk::StateFile::for_store(&state_path, &fingerprint, &store);
    // The publisher stops after the API (see `Running::finish`), or when the start fails.
    let publisher_stop = CancellationToken::new();
    let stop_publisher_on_error = publisher_stop.clone().drop_guard();
    let (snapshot, publisher) = crate::snapshot::start_persisted(
        store.clone(),
        crate::snapshot::SnapshotSettings::from_config(&config.dns)?,
        Some(state),
        fallback,
        &config.groups,
        publisher_stop.clone(),
    )
    .await
    .context("building the first DNS snapshot")?;

    let mut listeners = crate::dns::bind(&config.dns.listen)
        .await
        .with_context(|| format!("binding DNS on {:?}", config.dns.listen))?;
    // One tuner for every DNS listener (each org's ::3 too): a reload retunes them all.
    let rrl = crate::fastpath::RrlTuner::new(crate::fastpath::RrlSettings::from_config(
        &config.dns,
        config.ula_prefix,
    ));
    listeners.set_rrl_tuner(rrl.clone());
    let dns_addrs = listeners.local_addrs();
    {
        let (snapshot, dns_tcp) = (snapshot.clone(), dns_tcp.clone());
        let cancel = cancel.clone();
        tasks.spawn(async move {
            crate::dns::serve_with(listeners, snapshot, &dns_tcp, cancel)
                .await
                .context("DNS server")
        });
    }

    // Every replica reaps idle ephemeral peers; the store makes that safe (issue 10). A reload
    // that changes `[peers] ephemeral_idle` restarts the reaper with the new value.
    let (ephemeral_idle, mut idle_rx) = tokio::sync::watch::channel(config.peers.ephemeral_idle);
    {
        let (store, cancel) = (store.clone(), cancel.clone());
        tasks.spawn(async move {
            loop {
                let idle = *idle_rx.borrow_and_update();
                let pass = cancel.child_token();
                let reaper = crate::reaper::run(store.clone(), idle, pass.clone());
                tokio::select! {
                    () = reaper => return Ok(()),
                    changed = idle_rx.changed() => {
                        pass.cancel();
                        if changed.is_err() {
                            cancel.cancelled().await;
                            return Ok(());
                        }
                    }
                }
            }
        });
    }
    // And prunes the audit log past `[audit] retention` (issue 23); a batch deleted twice by two
    // replicas is simply empty the second time.
    if let Some(retention) = config.audit.retention {
        let (store, cancel) = (store.clone(), cancel.clone());
        tasks.spawn(async move {
            crate::reaper::run_audit_retention(store, retention, cancel).await;
            Ok(())
        });
    }
    // And removes peers whose key expired longer than `[peers] expired_grace` ago (issue 23).
    {
        let (store, grace, cancel) = (store.clone(), config.peers.expired_grace, cancel.clone());
        tasks.spawn(async move {
            crate::reaper::run_expired(store, grace, cancel).await;
            Ok(())
        });
    }
    let gateway = match (&config.gateway, &resolved.gateway_key) {
        (Some(gw), Some(key)) => {
            let (period, resolution) = config.groups.liveness_timing();
            let gw = crate::config::GatewayConfig {
                liveness: crate::gateway::Liveness { period, resolution },
                ..gw.clone()
            };
            Some(
                crate::gateway::start_with_key(&gw, key.clone(), store.clone(), cancel.clone())
                    .await
                    .with_context(|| format!("starting the gateway on {}", gw.interface))?,
            )
        }
        _ => None,
    };
    // An IPv6 wildcard on port 53 in `[dns] listen` (older configs) already answers on every
    // org's ::3, and would keep the per-address sockets from binding.
    let wildcard_53 = dns_addrs.iter().any(|a| {
        a.is_ipv6() && a.ip().is_unspecified() && a.port() == crate::dns::listeners::RESOLVER_PORT
    });
    if gateway.is_some() && wildcard_53 {
        tracing::info!(
            "org resolvers: [dns] listen holds [::]:53, which answers on every org's ::3 (and on every other interface too; leave dns.listen at its default to serve only the ::3 addresses)"
        );
    } else if gateway.is_some() {
        // Each org's resolver address, which the gateway puts on its interface (issue 12).
        let snapshot = snapshot.clone();
        let rrl = rrl.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            crate::dns::listeners::serve_org_resolvers(
                snapshot,
                crate::dns::listeners::RESOLVER_PORT,
                rrl,
                dns_tcp,
                cancel,
            )
            .await
            .context("org resolvers")
        });
    }

    let state = crate::api::ApiState {
        store: store.clone(),
        regions: Arc::new(resolved.regions.clone()),
        admin_token: crate::api::AdminToken::new(resolved.admin_token.clone())
            .enabled(config.api.bootstrap_token),
        published: snapshot.published(),
        gateway,
        body_limit: config.api.body_limit,
        body_timeout: config.api.body_read_timeout,
        rate_limits: crate::api::RateLimits::from_config(&config.api),
        key_expiry: config.peers.key_expiry,
        live_window: config.groups.health_window,
        snapshot: Some(snapshot.clone()),
        console: config.ui.enabled,
    };
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding the API on {}", config.api.listen))?;
    let api_addr = listener.local_addr()?;
    // With `admin_listen`, the admin plane gets a listener of its own (same TLS, its own
    // connection caps) and leaves the public one (issue 22).
    let admin_listener = match config.api.admin_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the admin API on {addr}"))?,
        ),
        None => None,
    };
    let admin_addr = admin_listener
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // One connection budget for the API (its share of the open-file limit): with an admin
    // listener, an eighth of it is the admin plane's and the rest the public listener's.
    let (limits, admin_limits) = if admin_listener.is_some() {
        split_api_limits(api_limits)
    } else {
        (api_limits, api_limits)
    };
    let (app, admin_app, api_handle) = match admin_listener {
        Some(admin_listener) => {
            let routers = crate::api::split_routers(state);
            (
                routers.public,
                Some((admin_listener, routers.admin)),
                routers.handle,
            )
        }
        None => {
            let (router, handle) = crate::api::router_with_handle(state);
            (router, None, handle)
        }
    };
    // New certificate files are picked up on their own, not only on SIGHUP (issue 18).
    if let Some(tls) = &tls {
        let (tls, cancel) = (Arc::clone(tls), cancel.clone());
        tasks.spawn(async move {
            tls.watch(crate::api::server::TLS_WATCH_PERIOD, cancel)
                .await;
            Ok(())
        });
    }
    let reloader = reload::Reloader::new(
        config.clone(),
        tls.clone(),
        snapshot.clone(),
        api_handle,
        ephemeral_idle,
        rrl,
        store.clone(),
    );
    let tls = tls.map(|tls| Arc::clone(&tls.config));
    if let Some((admin_listener, admin_app)) = admin_app {
        let (cancel, tls) = (cancel.clone(), tls.clone());
        tasks.spawn(async move {
            crate::api::server::serve_with_tls(admin_listener, admin_app, admin_limits, tls, cancel)
                .await
                .context("admin API server")
        });
    }
    {
        let cancel = cancel.clone();
        tasks.spawn(async move {
            crate::api::server::serve_with_tls(listener, app, limits, tls, cancel)
                .await
                .context("API server")
        });
    }

    tracing::info!(
        data_dir = %data_dir.display(),
        database = %redact_url(&url),
        backend = store.backend_name(),
        "store open"
    );
    match admin_addr {
        Some(admin) => {
            tracing::info!(api = %api_addr, "peer API listening ({scheme}://{api_addr})");
            tracing::info!(admin = %admin, "admin API and /metrics listening ({scheme}://{admin})");
        }
        None => tracing::info!(api = %api_addr, "API listening ({scheme}://{api_addr})"),
    }
    for addr in &dns_addrs {
        tracing::info!(dns = %addr, "DNS listening (UDP and TCP)");
    }
    match &resolved.admin_token_file {
        Some(path) => tracing::info!(file = %path.display(), "admin token file"),
        None => tracing::info!("admin token from configuration"),
    }
    for r in &resolved.regions {
        tracing::info!(region = %r.code, endpoint = %r.endpoint(), public_key = %r.public_key, default = r.default, "region");
    }

    Ok(Running {
        api_addr,
        admin_addr,
        dns_addrs,
        admin_token_file: resolved.admin_token_file,
        store,
        regions: resolved.regions,
        cancel,
        tasks,
        reloader: Some(reloader),
        publisher_stop: stop_publisher_on_error.disarm(),
        publisher: Some(publisher),
        _lock: lock,
    })
}

/// Warns when `[api] listen` takes connections from other hosts while the setup is still the
/// loopback default: the default region sending nodes to a gateway on 127.0.0.1, or the peer
/// API (tokens in every request) over plain HTTP. Each warning names the key to set (issue 23).
fn warn_public_listener(config: &Config, regions: &[crate::model::Region], tls: bool) {
    let listen = config.api.listen;
    if listen.ip().is_loopback() {
        return;
    }
    let default = regions
        .iter()
        .find(|r| r.default)
        .or_else(|| regions.first());
    if let Some(region) = default {
        let host = region
            .endpoint_host
            .trim_start_matches('[')
            .trim_end_matches(']');
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
        if loopback {
            tracing::warn!(
                api = %listen,
                region = %region.code,
                endpoint = %region.endpoint(),
                "[api] listen takes connections from other hosts, but the default region hands nodes the gateway endpoint {}, which only works on this host: set [[regions]] endpoint (with default = true) to the gateway's public host:port",
                region.endpoint()
            );
        }
    }
    if !tls {
        tracing::warn!(
            api = %listen,
            "[api] listen takes connections from other hosts over plain HTTP: WireGuard tokens and admin credentials cross the network in clear; set [api] tls_cert and tls_key (or serve it behind a TLS proxy)"
        );
    }
}

/// The share of the open-file limit, in percent, that DNS TCP connections may hold
/// (`[dns] tcp_max_connections`); the API's connections (`[api] max_connections`) get as much.
/// The rest, a fifth at least, stays for the store's pool, the gateway, the listening sockets,
/// the fast path and the process itself, so neither flood can starve them.
pub const OPEN_FILE_SHARE_PERCENT: u64 = 40;

/// Lowers the API's and DNS TCP's connection caps to their share of the open-file limit
/// `limit` ([`OPEN_FILE_SHARE_PERCENT`] each), with a warning naming each key lowered; the
/// per-source caps never exceed the caps.
fn fit_open_file_limit(
    limit: u64,
    api: &mut crate::api::server::ServerLimits,
    dns_tcp: &mut crate::dns::TcpLimits,
) {
    let share = usize::try_from(limit.saturating_mul(OPEN_FILE_SHARE_PERCENT) / 100)
        .unwrap_or(usize::MAX)
        .max(1);
    for (key, cap) in [
        ("[api] max_connections", &mut api.max_connections),
        ("[dns] tcp_max_connections", &mut dns_tcp.max_connections),
    ] {
        if *cap > share {
            tracing::warn!(
                open_file_limit = limit,
                configured = *cap,
                using = share,
                "{key} is above {OPEN_FILE_SHARE_PERCENT} % of the open-file limit: lowered to {share}; raise the limit (LimitNOFILE=) to allow more"
            );
            *cap = share;
        }
    }
    api.max_connections_per_ip = api.max_connections_per_ip.min(api.max_connections);
    dns_tcp.max_per_source = dns_tcp.max_per_source.min(dns_tcp.max_connections);
}

/// The API's connection caps split between the public listener and the admin listener (an
/// eighth, at least one connection), so both together stay within the API's share.
fn split_api_limits(
    api: crate::api::server::ServerLimits,
) -> (
    crate::api::server::ServerLimits,
    crate::api::server::ServerLimits,
) {
    let admin_max = (api.max_connections / 8).max(1);
    let public_max = api.max_connections.saturating_sub(admin_max).max(1);
    let public = crate::api::server::ServerLimits {
        max_connections: public_max,
        max_connections_per_ip: api.max_connections_per_ip.min(public_max),
        ..api
    };
    let admin = crate::api::server::ServerLimits {
        max_connections: admin_max,
        max_connections_per_ip: api.max_connections_per_ip.min(admin_max),
        ..api
    };
    (public, admin)
}

/// Another process holds the data directory's lock (see [`lock_data_dir`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "another sixpn server ({holder}) is already running on data directory {} (it holds {}); \
     stop it first, or give this one another data_dir",
    data_dir.display(),
    lock_file.display()
)]
pub struct DataDirLocked {
    /// `process PID`, or `another process`.
    pub holder: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Its lock file.
    pub lock_file: PathBuf,
}

/// Takes the data directory's lock file, `sixpn.lock`: an advisory `flock` held while the
/// server runs, with the holder's PID in the file. One data directory serves one server: a
/// second one on the same SQLite database would never see the first one's writes (issue 13).
///
/// # Errors
/// Another process holds the lock ([`DataDirLocked`], naming its PID), or the file cannot be
/// opened.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read as _, Seek as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = data_dir.join("sixpn.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "another process".to_owned(),
                pid => format!("process {pid}"),
            };
            return Err(DataDirLocked {
                holder,
                data_dir: data_dir.to_owned(),
                lock_file: path,
            }
            .into());
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(file)
}

/// Tells systemd (a `Type=notify` unit) about the server's state: `READY=1` once API and DNS
/// listen, `STOPPING=1` when shutdown begins. Does nothing without `$NOTIFY_SOCKET`; a failure
/// is logged, never fatal.
fn sd_notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET")
        && let Err(error) = notify_socket(&path, state)
    {
        tracing::warn!(%error, state, "telling systemd (NOTIFY_SOCKET) failed");
    }
}

/// Sends `state` in one datagram to the `sd_notify` socket `path` (`@name`: abstract namespace).
fn notify_socket(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    if let Some(name) = path.as_encoded_bytes().strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

/// Runs the server until ctrl-c or SIGTERM. On `SIGHUP`, `load` reads the configuration again
/// and the server applies what it can without a restart ([`reload`]); a configuration that does
/// not load is refused whole, and the running one stays.
///
/// # Errors
/// As [`start`], or a part failing while running.
pub async fn run<F>(config: Config, load: F) -> anyhow::Result<()>
where
    F: Fn() -> Result<Config, crate::config::ConfigError> + Send + 'static,
{
    use tokio::signal::unix::{SignalKind, signal};
    // The handlers go in before anything listens: a SIGTERM right after `/healthz` first answers
    // (or during the start) stops the server cleanly instead of killing it, and an early SIGHUP
    // is not fatal.
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let hup = signal(SignalKind::hangup());
    let mut running = tokio::select! {
        started = start(config) => started?,
        _ = term.recv() => {
            tracing::info!("SIGTERM while starting: stopping");
            return Ok(());
        }
        _ = int.recv() => {
            tracing::info!("SIGINT while starting: stopping");
            return Ok(());
        }
    };
    sd_notify("READY=1");
    let cancel = running.cancel_token();
    match (running.take_reloader(), hup) {
        (Some(reloader), Ok(hup)) => {
            tokio::spawn(reload_on_sighup(reloader, hup, load, cancel.clone()));
        }
        (_, Err(error)) => {
            tracing::warn!(%error, "cannot listen for SIGHUP: configuration reloads are off");
        }
        (None, Ok(_)) => {}
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("shutting down"),
            _ = int.recv() => tracing::info!("shutting down"),
            () = cancel.cancelled() => {}
        }
        sd_notify("STOPPING=1");
        cancel.cancel();
    });
    // Close the store at a clean stop: SQLite checkpoints its WAL, so `sixpn.db` alone then
    // holds every row (a copy or a backup of that one file is whole; issue 23). The DNS state is
    // saved first, and the lock is released last.
    running.wait_and_close().await
}

/// Applies the configuration `load` gives on every `SIGHUP`, until `cancel`.
async fn reload_on_sighup<F>(
    mut reloader: reload::Reloader,
    mut hup: tokio::signal::unix::Signal,
    load: F,
    cancel: CancellationToken,
) where
    F: Fn() -> Result<Config, crate::config::ConfigError> + Send + 'static,
{
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        tracing::info!("SIGHUP: reloading the configuration");
        // Reading a few small files: quick enough to do in place.
        let loaded = match load() {
            Ok(next) => reloader.apply(next).await,
            Err(error) => Err(error.into()),
        };
        match loaded {
            Ok(outcome) => {
                for (key, why) in &outcome.failed {
                    tracing::error!(
                        key,
                        error = %why,
                        "reload: {key} not switched; the running databases stay"
                    );
                }
                for key in &outcome.needs_restart {
                    tracing::warn!(
                        key,
                        "reload: {key} changed but is read at start only; it takes effect at the next restart"
                    );
                }
                tracing::info!(applied = ?outcome.applied, "configuration reloaded");
            }
            Err(error) => tracing::error!(
                error = format!("{error:#}"),
                "reload refused: the new configuration is not valid; the running one stays"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_caps_fit_their_share_of_the_open_file_limit() {
        let config = Config::default();
        let mut api = crate::api::server::ServerLimits::from_config(&config.api);
        let mut dns = crate::dns::TcpLimits::from_config(&config.dns, config.ula_prefix);
        // Room enough: nothing changes.
        fit_open_file_limit(65_536, &mut api, &mut dns);
        assert_eq!((api.max_connections, dns.max_connections), (1024, 1024));
        assert_eq!((api.max_connections_per_ip, dns.max_per_source), (256, 32));
        fit_open_file_limit(u64::MAX, &mut api, &mut dns);
        assert_eq!((api.max_connections, dns.max_connections), (1024, 1024));
        // The common soft limit of 1,024: 409 each, 206 left for the rest.
        fit_open_file_limit(1024, &mut api, &mut dns);
        assert_eq!((api.max_connections, dns.max_connections), (409, 409));
        assert_eq!((api.max_connections_per_ip, dns.max_per_source), (256, 32));
        // A tiny limit: the per-source caps follow the caps down.
        fit_open_file_limit(50, &mut api, &mut dns);
        assert_eq!((api.max_connections, dns.max_connections), (20, 20));
        assert_eq!((api.max_connections_per_ip, dns.max_per_source), (20, 20));
    }

    #[test]
    fn sd_notify_sends_one_datagram_per_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        notify_socket(path.as_os_str(), "READY=1").unwrap();
        notify_socket(path.as_os_str(), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        // The abstract namespace, as systemd in a container may use.
        let name = format!("sixpn-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_listener = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
        notify_socket(std::ffi::OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[tokio::test]
    async fn issue11_a_bad_database_url_fails_without_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            database_url: Some("postgress://u:s3cr3t@db/x".into()),
            ..Config::default()
        };
        let err = match start(config).await {
            Ok(_) => panic!("a bad URL must not start"),
            Err(err) => format!("{err:#}"),
        };
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}
