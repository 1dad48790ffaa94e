//! The gateway: keeps a WireGuard interface equal to the store for its region.
//!
//! [`start`] takes an existing WireGuard interface (made by `wireguard-go`, boringtun or the
//! kernel module) and from then on owns its configuration:
//! - the private key (from `private_key_file`, generated with mode 0600 when missing) and the
//!   listen port;
//! - for every org, the gateway's `::1` and the resolver's `::3` as /128s on the interface, a
//!   route for the org's /48 through it, and policy rules that keep each org's traffic within
//!   its own /48 and keep every other interface away from the orgs' /48s ([`netif`]);
//! - one peer per live peer of the gateway's region: its public key with its address as the only
//!   allowed IP ([`reconcile`]).
//!
//! It follows the store's change feed ([`crate::store::Feed`]): each batch of changes becomes one
//! request naming only the peers it added, re-keyed or removed, so a write costs the same at a
//! million peers as at ten. As the safety net, a full reconcile runs at start, every
//! [`RESYNC_PERIOD`] (to repair drift), after a failure, and as soon as a cheap probe every
//! [`PROBE_PERIOD`] finds the interface blank (a restarted `wireguard-go`); it reads the interface
//! first and sends only the differences. Either way an unchanged peer is never touched, and a
//! re-keyed peer's address moves to its new key in the same request that removes the old key.
//!
//! The interface is driven through the cross-platform UAPI socket ([`uapi`]) when it has one;
//! otherwise through wireguard-tools' `wg` command ([`wgtool`]), which reaches the kernel module
//! over netlink. This module never logs a private key; it logs peer names and public keys at
//! `info` when it changes them.

pub mod netif;
pub mod reconcile;
pub mod uapi;
pub mod wgtool;

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::model::{
    Change as StoreChange, ChangeSet, Generation, OrgSlug, PeerName, PeerStatus, RegionCode,
};
use crate::store::{Dump, Store, StoreError, Update};
use crate::wireguard::{KeyError, PrivateKey, PublicKey};

use self::netif::{NetifError, OrgAddrs};
use self::reconcile::{Change, Wanted};
use self::uapi::{Device, DeviceUpdate, PeerInfo, RawKey, UapiClient, UapiError};
use self::wgtool::{WgTool, WgToolError};

/// How often the gateway reconciles in full by default (`[gateway] resync_period`), to repair drift.
pub const RESYNC_PERIOD: Duration = crate::config::DEFAULT_RESYNC_PERIOD;

/// How often the gateway checks that the interface still has its key and port (a restarted
/// `wireguard-go` comes back blank) and retries a failed reconcile.
pub const PROBE_PERIOD: Duration = Duration::from_secs(3);

/// How long [`start`] waits for the interface's UAPI socket to appear.
const SOCKET_WAIT: Duration = Duration::from_secs(10);

/// How often the gateway reads its peers' last handshakes and records those that moved (by more
/// than [`crate::store::HANDSHAKE_RESOLUTION`]) in the store, for the reaper of every replica.
pub const HANDSHAKE_PERIOD: Duration = Duration::from_secs(10);

/// How the gateway records peer liveness: read the interface every `period`, and write a
/// peer's time again only when it moved by more than `resolution` seconds. The default
/// ([`HANDSHAKE_PERIOD`], [`crate::store::HANDSHAKE_RESOLUTION`]) suits ephemeral peers;
/// health-aware groups need finer times (`[groups] health_window`).
pub use crate::config::Liveness;

/// What can stop the gateway from starting or reconciling.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `[gateway]` names no private key file.
    #[error("gateway.private_key_file is not set: name a file (it is generated when missing)")]
    NoKeyFile,
    /// The private key file could not be read or written.
    #[error("gateway private key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The private key file does not hold a WireGuard private key.
    #[error("gateway private key file {path}: {source} (expected `wg genkey` output)")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why the text is not a key.
        source: KeyError,
    },
    /// No randomness for a new key.
    #[error("generating the gateway key: {0}")]
    Random(getrandom::Error),
    /// The WireGuard interface could not be read or changed.
    #[error(transparent)]
    Uapi(#[from] UapiError),
    /// `wg` failed on an interface without a UAPI socket (kernel WireGuard).
    #[error(transparent)]
    WgTool(#[from] WgToolError),
    /// The interface's addresses or routes could not be set.
    #[error(transparent)]
    Netif(#[from] NetifError),
    /// The store failed.
    #[error("reading the store: {0}")]
    Store(#[from] StoreError),
}

/// A handle to the running gateway, cheap to clone.
#[derive(Debug, Clone)]
pub struct GatewayHandle {
    inner: Arc<Inner>,
}

/// How the gateway reads and changes the interface.
#[derive(Debug, Clone)]
enum Link {
    /// The UAPI socket of a userspace implementation.
    Uapi(UapiClient),
    /// The `wg` command, for an interface with no socket (the kernel module, over netlink).
    Wg(WgTool),
}

impl Link {
    async fn get(&self) -> Result<Device, GatewayError> {
        Ok(match self {
            Link::Uapi(c) => c.get().await?,
            Link::Wg(w) => w.get().await?,
        })
    }

    async fn set(&self, update: &DeviceUpdate) -> Result<(), GatewayError> {
        match self {
            Link::Uapi(c) => c.set(update).await?,
            Link::Wg(w) => w.set(update).await?,
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match self {
            Link::Uapi(c) => format!("UAPI socket {}", c.path().display()),
            Link::Wg(_) => "the wg command (no UAPI socket: kernel WireGuard)".to_owned(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    link: Link,
    interface: String,
    region: RegionCode,
    public_key: PublicKey,
    applied: watch::Receiver<Generation>,
}

impl GatewayHandle {
    /// The gateway's WireGuard public key: the `key` nodes of its region are given.
    pub fn public_key(&self) -> PublicKey {
        self.inner.public_key
    }

    /// The interface the gateway keeps in step.
    pub fn interface(&self) -> &str {
        &self.inner.interface
    }

    /// The region whose peers the interface carries.
    pub fn region(&self) -> &RegionCode {
        &self.inner.region
    }

    /// The newest store generation whose peers are on the interface. Wait on it
    /// (`wait_for(|g| *g >= generation)`) to know a change reached WireGuard.
    pub fn applied(&self) -> watch::Receiver<Generation> {
        self.inner.applied.clone()
    }

    /// Live status of the peer with this public key on the interface, if it is there.
    /// `None` also when the interface cannot be read (logged at `warn`).
    pub async fn peer_status(&self, key: &PublicKey) -> Option<PeerStatus> {
        match self.inner.link.get().await {
            Ok(device) => device
                .peers
                .iter()
                .find(|p| p.public_key == *key.as_bytes())
                .map(status_of),
            Err(e) => {
                tracing::warn!(error = %e, "reading peer status");
                None
            }
        }
    }

    /// Live status of every peer on the interface, by raw public key (one UAPI read, for lists).
    ///
    /// # Errors
    /// [`GatewayError::Uapi`] when the interface cannot be read.
    pub async fn peer_statuses(&self) -> Result<HashMap<RawKey, PeerStatus>, GatewayError> {
        let device = self.inner.link.get().await?;
        Ok(device
            .peers
            .iter()
            .map(|p| (p.public_key, status_of(p)))
            .collect())
    }
}

fn status_of(peer: &PeerInfo) -> PeerStatus {
    PeerStatus {
        last_handshake: peer.last_handshake_unix(),
        rx_bytes: peer.rx_bytes,
        tx_bytes: peer.tx_bytes,
        endpoint: peer.endpoint.clone(),
    }
}

/// Reads the gateway's private key from `path`, or generates one and writes it there with mode
/// 0600 (creating the parent directory) when the file does not exist.
///
/// # Errors
/// [`GatewayError::KeyFile`], [`GatewayError::BadKey`] or [`GatewayError::Random`].
pub fn load_or_create_key(path: &Path) -> Result<PrivateKey, GatewayError> {
    let key_file = |source| GatewayError::KeyFile {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = PrivateKey::parse(&text).map_err(|source| GatewayError::BadKey {
                path: path.to_owned(),
                source,
            })?;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %path.display(), "gateway private key file is readable by others; chmod 600 it");
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = PrivateKey::generate().map_err(GatewayError::Random)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(key_file)?;
            }
            // `create_new`: never overwrite a key another process wrote meanwhile.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(key_file)?;
            file.write_all(format!("{}\n", key.to_base64()).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(key_file)?;
            tracing::info!(path = %path.display(), public_key = %key.public_key(), "generated gateway key pair");
            Ok(key)
        }
        Err(e) => Err(key_file(e)),
    }
}

/// Everything one reconcile needs, and what the interface was last made to hold.
struct Reconciler {
    link: Link,
    interface: String,
    region: RegionCode,
    key: PrivateKey,
    listen_port: u16,
    /// The region's peers as last applied: (org, name) → key and address.
    wanted: HashMap<(OrgSlug, PeerName), (PublicKey, std::net::Ipv6Addr)>,
    /// Every org's addresses as last applied.
    orgs: Vec<OrgAddrs>,
}

impl Reconciler {
    /// Brings the interface up to the store: a full reconcile for a full state, or just the
    /// changed peers for a batch of changes. Returns the generation it now reflects.
    async fn update(&mut self, update: Update) -> Result<Generation, GatewayError> {
        match update {
            Update::Reload(dump) => self.full(dump).await,
            Update::Changes(sets) => self.apply(&sets).await,
        }
    }

    /// Applies change sets naming only the peers they changed; the interface is not read (the
    /// periodic full reconcile repairs whatever drifted meanwhile).
    async fn apply(&mut self, sets: &[Arc<ChangeSet>]) -> Result<Generation, GatewayError> {
        let mut changes: Vec<Change> = Vec::new();
        let mut orgs_added = false;
        for set in sets {
            for change in &set.changes {
                match change {
                    StoreChange::OrgCreated(org) => {
                        orgs_added = true;
                        self.orgs.push(org_addrs(org));
                    }
                    StoreChange::PeerUpserted(peer) => {
                        let key = (peer.org.clone(), peer.name.clone());
                        let old = if peer.region == self.region {
                            self.wanted.insert(key, (peer.pubkey, peer.address))
                        } else {
                            // Moved away from this region (or never here).
                            self.wanted.remove(&key)
                        };
                        let wanted = Wanted {
                            org: peer.org.clone(),
                            name: peer.name.clone(),
                            pubkey: peer.pubkey,
                            address: peer.address,
                        };
                        match old {
                            _ if peer.region != self.region => {
                                if let Some((old_key, _)) = old {
                                    changes.push(Change::Remove(*old_key.as_bytes()));
                                }
                            }
                            None => changes.push(Change::Add(wanted)),
                            Some((old_key, _)) if old_key != peer.pubkey => {
                                changes.push(Change::Rekey {
                                    old_key: *old_key.as_bytes(),
                                    peer: wanted,
                                });
                            }
                            Some(_) => {}
                        }
                    }
                    StoreChange::PeerRemoved(peer) => {
                        if let Some((old_key, _)) =
                            self.wanted.remove(&(peer.org.clone(), peer.name.clone()))
                        {
                            changes.push(Change::Remove(*old_key.as_bytes()));
                        }
                    }
                }
            }
        }
        if orgs_added {
            for cmd in netif::ensure(&self.interface, &self.orgs).await? {
                tracing::info!(interface = %self.interface, %cmd, "configured the interface");
            }
        }
        if !changes.is_empty() {
            self.link.set(&reconcile::to_update(&changes)).await?;
            for change in &changes {
                log_change(&self.interface, change);
            }
        }
        let generation = sets.last().map_or(Generation(0), |s| s.generation);
        tracing::debug!(interface = %self.interface, %generation, n_changes = changes.len(), "applied changes");
        Ok(generation)
    }

    /// Makes the interface equal to `dump`: reads it, then sends one request with only the
    /// differences.
    async fn full(&mut self, dump: Dump) -> Result<Generation, GatewayError> {
        let device = self.link.get().await?;

        let mut update = DeviceUpdate::default();
        let public_key = self.key.public_key();
        if device.private_key.as_ref().map(PrivateKey::public_key) != Some(public_key) {
            tracing::info!(interface = %self.interface, public_key = %public_key, "setting the interface's private key");
            update.private_key = Some(self.key.clone());
        }
        if device.listen_port != self.listen_port {
            tracing::info!(interface = %self.interface, port = self.listen_port, "setting the listen port");
            update.listen_port = Some(self.listen_port);
        }
        if !update.is_empty() {
            self.link.set(&update).await?;
        }

        let orgs: Vec<OrgAddrs> = dump.orgs.iter().map(org_addrs).collect();
        for cmd in netif::ensure(&self.interface, &orgs).await? {
            tracing::info!(interface = %self.interface, %cmd, "configured the interface");
        }

        let wanted: Vec<Wanted> = dump
            .peers
            .into_iter()
            .filter(|p| p.region == self.region)
            .map(|p| Wanted {
                org: p.org,
                name: p.name,
                pubkey: p.pubkey,
                address: p.address,
            })
            .collect();
        let changes = reconcile::plan(&wanted, &device.peers);
        if !changes.is_empty() {
            self.link.set(&reconcile::to_update(&changes)).await?;
            for change in &changes {
                log_change(&self.interface, change);
            }
        }
        tracing::debug!(interface = %self.interface, generation = %dump.generation, n_peers = wanted.len(), n_changes = changes.len(), "reconciled");
        self.orgs = orgs;
        self.wanted = wanted
            .into_iter()
            .map(|w| ((w.org, w.name), (w.pubkey, w.address)))
            .collect();
        Ok(dump.generation)
    }

    /// Whether the interface lost its key or port (it was re-created), or cannot be read.
    async fn device_was_reset(&self) -> bool {
        match self.link.get().await {
            Ok(device) => {
                let reset = device.private_key.as_ref().map(PrivateKey::public_key)
                    != Some(self.key.public_key())
                    || device.listen_port != self.listen_port;
                if reset {
                    tracing::info!(interface = %self.interface, "the interface lost its configuration (restarted?); reconfiguring");
                    return true;
                }
                // Peers changed behind our back (`wg set` by hand): the change feed never
                // mentions them, so only a full reconcile puts the interface back.
                let wanted: std::collections::HashSet<&[u8; 32]> = self
                    .wanted
                    .values()
                    .map(|(key, _)| key.as_bytes())
                    .collect();
                let drifted = device.peers.len() != wanted.len()
                    || device.peers.iter().any(|p| !wanted.contains(&p.public_key));
                if drifted {
                    tracing::info!(interface = %self.interface, on_interface = device.peers.len(), wanted = wanted.len(),
                        "the interface's peers differ from the store's; reconciling");
                }
                drifted
            }
            Err(_) => true,
        }
    }
}

fn org_addrs(org: &crate::model::Org) -> OrgAddrs {
    OrgAddrs {
        prefix: org.prefix,
        gateway: org.gateway_addr(),
        dns: org.dns_addr(),
    }
}

fn log_change(interface: &str, change: &Change) {
    let b64 = |raw: &RawKey| base64_key(raw);
    match change {
        Change::Add(p) => {
            tracing::info!(interface, org = %p.org, peer = %p.name, pubkey = %p.pubkey, address = %p.address, "added peer")
        }
        Change::Rekey { old_key, peer: p } => {
            tracing::info!(interface, org = %p.org, peer = %p.name, pubkey = %p.pubkey, old_pubkey = %b64(old_key), address = %p.address, "re-keyed peer")
        }
        Change::FixAllowedIps { peer: p, had } => {
            tracing::info!(interface, org = %p.org, peer = %p.name, pubkey = %p.pubkey, ?had, address = %p.address, "repaired peer's allowed IPs")
        }
        Change::Remove(key) => tracing::info!(interface, pubkey = %b64(key), "removed peer"),
    }
}

fn base64_key(raw: &RawKey) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Starts the gateway on `config.interface` with the key from `config.private_key_file`
/// (generated when missing, see [`load_or_create_key`]); see [`start_with_key`].
///
/// # Errors
/// [`GatewayError::NoKeyFile`] when no key file is configured, else as [`start_with_key`].
pub async fn start(
    config: &GatewayConfig,
    store: Store,
    cancel: CancellationToken,
) -> Result<GatewayHandle, GatewayError> {
    let key_path = config
        .private_key_file
        .as_deref()
        .ok_or(GatewayError::NoKeyFile)?;
    let key = load_or_create_key(key_path)?;
    start_with_key(config, key, store, cancel).await
}

/// Starts the gateway on `config.interface` with `key` (`config.private_key_file` is ignored)
/// and returns once the interface reflects the store.
///
/// The interface must exist within a few seconds: its UAPI socket (`<uapi_dir>/<interface>.sock`,
/// default `/run/wireguard`) must answer, or else `wg show <interface>` must know it (kernel).
/// The reconcile loop runs on a spawned task until `cancel` fires; later failures are logged and
/// retried, never fatal.
///
/// # Errors
/// [`GatewayError`] when the interface, `ip` or the store fails on the first reconcile.
pub async fn start_with_key(
    config: &GatewayConfig,
    key: PrivateKey,
    store: Store,
    cancel: CancellationToken,
) -> Result<GatewayHandle, GatewayError> {
    let public_key = key.public_key();
    let link = connect(config).await?;

    let mut reconciler = Reconciler {
        link: link.clone(),
        interface: config.interface.clone(),
        region: config.region.clone(),
        key,
        listen_port: config.listen_port,
        wanted: HashMap::new(),
        orgs: Vec::new(),
    };
    let resync_period = config.resync_period;
    let mut feed = store.feed();
    let first = feed.next().await?;
    let generation = reconciler.update(first).await?;
    tracing::info!(interface = %config.interface, region = %config.region, public_key = %public_key, port = config.listen_port, %generation, via = %link.describe(), "gateway started");
    warn_if_not_forwarding();
    let (applied_tx, applied) = watch::channel(generation);

    tokio::spawn(record_handshakes(
        link.clone(),
        store,
        config.liveness,
        cancel.clone(),
    ));
    tokio::spawn(async move {
        let mut probe = tokio::time::interval(PROBE_PERIOD);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe.reset();
        let mut last_full = tokio::time::Instant::now();
        // `healthy`: read the feed; `failed`: the last attempt failed (logged once per outage).
        let mut healthy = true;
        let mut failed = false;
        loop {
            let update = tokio::select! {
                () = cancel.cancelled() => break,
                // After a failure, wait for the next probe before trying again.
                update = feed.next(), if healthy => update,
                _ = probe.tick() => {
                    // The safety net: a full reconcile now and then, and on the next probe after
                    // a failure or when the interface came back blank.
                    if !healthy || last_full.elapsed() >= resync_period || reconciler.device_was_reset().await {
                        feed.force_reload();
                        healthy = true;
                    }
                    continue;
                }
            };
            let full = matches!(update, Ok(Update::Reload(_)));
            let res = match update {
                Ok(update) => reconciler.update(update).await,
                Err(e) => Err(e.into()),
            };
            match res {
                Ok(generation) => {
                    if failed {
                        tracing::info!(interface = %reconciler.interface, %generation, "gateway reconcile succeeded again");
                    }
                    failed = false;
                    if full {
                        last_full = tokio::time::Instant::now();
                    }
                    applied_tx.send_if_modified(|cur| {
                        let newer = generation > *cur;
                        if newer {
                            *cur = generation;
                        }
                        newer
                    });
                }
                Err(e) => {
                    crate::metrics::count_gateway_sync_error();
                    // Warn once per outage; the retries every PROBE_PERIOD log at debug. What
                    // failed is redone by a full reconcile.
                    if !failed {
                        tracing::warn!(interface = %reconciler.interface, error = %e, "gateway reconcile failed; retrying every {PROBE_PERIOD:?}");
                    } else {
                        tracing::debug!(interface = %reconciler.interface, error = %e, "gateway reconcile failed again");
                    }
                    healthy = false;
                    failed = true;
                }
            }
        }
        tracing::info!(interface = %reconciler.interface, "gateway stopped");
    });

    Ok(GatewayHandle {
        inner: Arc::new(Inner {
            link,
            interface: config.interface.clone(),
            region: config.region.clone(),
            public_key,
            applied,
        }),
    })
}

/// Every `liveness.period` until `cancel` fires: reads the interface and records in the store
/// when each peer was last seen alive: its last handshake, or now when it sent traffic since the
/// previous read (WireGuard re-handshakes only every two minutes of traffic). Only times that
/// moved by more than `liveness.resolution` seconds since this task last wrote them are
/// written, in one batch. Failures are logged at debug and retried on the next tick (the
/// reconcile loop reports outages).
async fn record_handshakes(
    link: Link,
    store: Store,
    liveness: Liveness,
    cancel: CancellationToken,
) {
    let mut ticks = tokio::time::interval(liveness.period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Per peer: the time last written, and the received bytes at the previous read.
    let mut written: HashMap<RawKey, i64> = HashMap::new();
    let mut rx: HashMap<RawKey, u64> = HashMap::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let device = match link.get().await {
            Ok(device) => device,
            Err(e) => {
                tracing::debug!(error = %e, "reading handshakes");
                continue;
            }
        };
        let now = crate::model::now_unix();
        let mut moved: Vec<(RawKey, i64)> = Vec::new();
        for peer in &device.peers {
            let traffic = rx
                .insert(peer.public_key, peer.rx_bytes)
                .is_some_and(|before| peer.rx_bytes > before);
            let seen = if traffic {
                Some(now)
            } else {
                peer.last_handshake_unix()
            };
            if let Some(at) = seen
                && written
                    .get(&peer.public_key)
                    .is_none_or(|w| at - w > liveness.resolution)
            {
                moved.push((peer.public_key, at));
            }
        }
        // Forget peers that left the interface, so the maps stay its size.
        rx.retain(|key, _| device.peers.iter().any(|p| p.public_key == *key));
        written.retain(|key, _| rx.contains_key(key));
        if moved.is_empty() {
            continue;
        }
        let seen: Vec<(PublicKey, i64)> = moved
            .iter()
            .filter_map(|(key, at)| {
                Some((PublicKey::from_trusted_base64(&base64_key(key)).ok()?, *at))
            })
            .collect();
        match store.record_handshakes(&seen, liveness.resolution).await {
            Ok(n) => {
                tracing::debug!(seen = seen.len(), recorded = n, "peer liveness recorded");
                written.extend(moved);
            }
            Err(e) => tracing::debug!(error = %e, "recording handshakes"),
        }
    }
}

/// Peers reach each other through the gateway only when the host forwards IPv6. Changing a
/// host-wide sysctl is the operator's call (deploy/gateway/99-sixpn.conf), so only say so.
fn warn_if_not_forwarding() {
    const PATH: &str = "/proc/sys/net/ipv6/conf/all/forwarding";
    if std::fs::read_to_string(PATH).is_ok_and(|v| v.trim() == "0") {
        tracing::warn!(
            "IPv6 forwarding is off ({PATH} = 0): peers reach the gateway but not each other; \
             set net.ipv6.conf.all.forwarding = 1 to route between them"
        );
    }
}

/// Finds the interface: its UAPI socket when it answers, else `wg` when it knows the interface
/// (the kernel module). Waits up to [`SOCKET_WAIT`], since the daemon may start alongside us.
async fn connect(config: &GatewayConfig) -> Result<Link, GatewayError> {
    let uapi = UapiClient::new(config.uapi_dir.as_deref(), &config.interface);
    let wg = WgTool::new(&config.interface);
    let deadline = tokio::time::Instant::now() + SOCKET_WAIT;
    loop {
        let err = match uapi.get().await {
            Ok(_) => return Ok(Link::Uapi(uapi)),
            Err(e @ UapiError::Connect { .. }) => e,
            Err(e) => return Err(e.into()),
        };
        if wg.get().await.is_ok() {
            return Ok(Link::Wg(wg));
        }
        if tokio::time::Instant::now() >= deadline {
            // Report the socket error: a userspace daemon is the usual setup.
            return Err(err.into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_liveness_is_the_gateways_and_the_stores() {
        let default = Liveness::default();
        assert_eq!(default.period, HANDSHAKE_PERIOD);
        assert_eq!(default.resolution, crate::store::HANDSHAKE_RESOLUTION);
    }

    #[test]
    fn key_file_is_generated_0600_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/gateway.key");
        let key = load_or_create_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create_key(&path).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            PrivateKey::parse(&text).unwrap().public_key(),
            key.public_key()
        );
    }

    #[test]
    fn bad_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.key");
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(matches!(
            load_or_create_key(&path),
            Err(GatewayError::BadKey { .. })
        ));
        let unreadable = dir.path().join("a-directory");
        std::fs::create_dir(&unreadable).unwrap();
        assert!(matches!(
            load_or_create_key(&unreadable),
            Err(GatewayError::KeyFile { .. })
        ));
    }
}
