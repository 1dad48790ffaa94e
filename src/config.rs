//! Configuration: a TOML file, the environment and command-line flags, in that order of strength
//! (flag > env > file > default).
//!
//! [`Config`] is the validated result. Each subsystem receives only its own section.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{IpNet, Ipv6Net};
use serde::Deserialize;

use crate::model::{OrgSlug, RegionCode};
use crate::wireguard::PublicKey;

/// What can go wrong while loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read. The I/O error is part of the message, not a `source`:
    /// `error: …` shows the chain, and it would say the cause twice (issue 23).
    #[error("reading config file {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The config file is not valid TOML for sixpn.
    #[error("parsing config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// An environment variable holds a value of the wrong shape.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The values are individually fine but do not fit together.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The longest admin token accepted in the configuration, and compared when presented: a longer
/// presented one is refused unread.
pub const MAX_ADMIN_TOKEN_LEN: usize = 512;

/// The shortest admin token accepted in the configuration (issue 22): the break-glass credential
/// of every org must not be guessable. A generated one is 76 characters.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// The default of `[dns] rrl_responses_per_second`: far above what a node's resolver draws
/// (a node is counted alone), far below a flood.
pub const DEFAULT_RRL_RATE: u32 = 200;
/// The most `[dns] rrl_responses_per_second` can be.
pub const MAX_RRL_RATE: u32 = 100_000;
/// The default of `[dns] rrl_slip` (BIND's and Knot's default).
pub const DEFAULT_RRL_SLIP: u32 = 2;
/// The default of `[dns] rrl_window`, in seconds.
pub const DEFAULT_RRL_WINDOW: u32 = 5;
/// The longest `[dns] rrl_window`, in seconds.
pub const MAX_RRL_WINDOW: u32 = 60;

/// How often the gateway reconciles in full by default (`[gateway] resync_period`).
pub const DEFAULT_RESYNC_PERIOD: Duration = Duration::from_secs(30);

/// Default `read_poll_period`: how often a replica reads the stored generation from its hot
/// standby.
pub const DEFAULT_READ_POLL_PERIOD: Duration = Duration::from_millis(100);

/// How the gateway records peer liveness: read the interface every `period`, and write a
/// peer's times to the store only when they moved by more than `resolution` seconds. Not a key
/// of its own: it follows `[groups]` ([`GroupsConfig::liveness_timing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// How often the interface is read.
    pub period: Duration,
    /// Seconds a recorded time must move by before it is written again.
    pub resolution: i64,
}

impl Default for Liveness {
    /// Without health-aware groups: every 10 s, to 30 s (what ephemeral peers, idle for
    /// minutes, need).
    fn default() -> Self {
        Liveness {
            period: Duration::from_secs(10),
            resolution: 30,
        }
    }
}

/// The whole configuration of `sixpn serve`. `Debug` hides the admin token and the database
/// URL's password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where SQLite, the generated admin token and generated keys live.
    pub data_dir: PathBuf,
    /// `sqlite:…` or `postgres://…`; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// A PostgreSQL hot standby of `database_url` this replica reads from (full loads, the
    /// change feed, liveness reads); writes go to `database_url`. Default: unset.
    pub read_database_url: Option<String>,
    /// How often the stored generation is read from `read_database_url` (a standby delivers no
    /// NOTIFY). Default 100 ms.
    #[serde(deserialize_with = "duration")]
    pub read_poll_period: Duration,
    /// The ULA prefix the orgs' /48s are carved from.
    pub ula_prefix: Ipv6Net,
    /// The admin credential; default: generated on first start into `data_dir/admin-token`.
    pub admin_token: Option<String>,
    /// The HTTP API.
    pub api: ApiConfig,
    /// The authoritative DNS server.
    pub dns: DnsConfig,
    /// Peer lifecycle: ephemeral peers.
    pub peers: PeersConfig,
    /// Group answers: health-aware groups.
    pub groups: GroupsConfig,
    /// Per-org limits (issue 23).
    pub orgs: OrgsConfig,
    /// The audit log's retention (issue 23).
    pub audit: AuditConfig,
    /// Gateway regions peers can connect to.
    pub regions: Vec<RegionConfig>,
    /// When present, keep this WireGuard interface in step with the store.
    pub gateway: Option<GatewayConfig>,
    /// Logging: the filter (re-read on `SIGHUP`).
    pub log: LogConfig,
    /// The admin console at `/ui` (issue 19).
    pub ui: UiConfig,
}

/// The `[ui]` section: the admin console (issue 19).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Serve the console at `/ui` (default true). Off: `/ui` is a `404` like any unknown path.
    /// Takes a restart.
    pub enabled: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig { enabled: true }
    }
}

/// The `[log]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `info,sixpn::gateway=debug`; `RUST_LOG`, when set,
    /// wins. Unset: `info`.
    pub filter: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("sixpn-data"),
            database_url: None,
            read_database_url: None,
            read_poll_period: DEFAULT_READ_POLL_PERIOD,
            ula_prefix: "fdaa::/16".parse().expect("valid literal"),
            admin_token: None,
            api: ApiConfig::default(),
            dns: DnsConfig::default(),
            peers: PeersConfig::default(),
            groups: GroupsConfig::default(),
            orgs: OrgsConfig::default(),
            audit: AuditConfig::default(),
            regions: Vec::new(),
            gateway: None,
            log: LogConfig::default(),
            ui: UiConfig::default(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field(
                "read_database_url",
                &self.read_database_url.as_deref().map(redact_url),
            )
            .field("read_poll_period", &self.read_poll_period)
            .field("ula_prefix", &self.ula_prefix)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("api", &self.api)
            .field("dns", &self.dns)
            .field("peers", &self.peers)
            .field("groups", &self.groups)
            .field("orgs", &self.orgs)
            .field("audit", &self.audit)
            .field("regions", &self.regions)
            .field("gateway", &self.gateway)
            .field("ui", &self.ui)
            .finish()
    }
}

/// Whether two listen addresses would take the same port: the same non-zero port on the same
/// address, or on an address and a wildcard (port 0 asks for a fresh port each time).
fn listeners_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// A database URL without its password (`postgres://user:***@host/db`), for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The `[api]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address the HTTP API listens on. With `admin_listen` set, only the peer API
    /// (`/api/v3`), `/healthz`, `/readyz` and `/api/openapi.json` are served here.
    pub listen: SocketAddr,
    /// When set, the admin plane (`/api/v1/*`, `/metrics`, the console) is served only on this
    /// address, with the same TLS settings and its own connection caps; default: unset, one
    /// listener (`listen`) serves everything.
    pub admin_listen: Option<SocketAddr>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// A client must send a whole request head (request line and headers) within this time
    /// after the connection opens or the previous answer; else the connection is closed.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// A connection on which nothing is read or written for this long, while none of its
    /// requests is being handled, is closed.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// A request body must arrive whole within this time, else `408`.
    #[serde(deserialize_with = "duration")]
    pub body_read_timeout: Duration,
    /// Most connections open at once; more are answered `503` and closed.
    pub max_connections: usize,
    /// Most connections open at once from one source (an IPv4 address or an IPv6 /64).
    pub max_connections_per_ip: usize,
    /// A connection younger than this is never closed to make room for a new one at a cap: the
    /// new one is refused instead. Long enough for a TLS handshake and a request head over a
    /// slow WAN.
    #[serde(deserialize_with = "duration")]
    pub eviction_floor: Duration,
    /// New connections per second accepted from one source (0: no limit); more are refused at
    /// once.
    pub accept_rate: f64,
    /// New connections one source may open at once before `accept_rate` applies.
    pub accept_burst: u32,
    /// Peer-API requests per second allowed per WireGuard token (0: no limit).
    pub token_rate: f64,
    /// Requests a WireGuard token may send at once before `token_rate` applies.
    pub token_burst: u32,
    /// Failed authentications per second allowed per source address (0: no limit); over it,
    /// the address gets `429` until its budget refills.
    pub failed_auth_rate: f64,
    /// Failed authentications a source address may make at once before `failed_auth_rate` applies.
    pub failed_auth_burst: u32,
    /// Whether the configured admin token (the bootstrap token: a break-glass `owner` of every
    /// org) is accepted; `false` refuses it (401) once API keys exist (issue 16).
    pub bootstrap_token: bool,
    /// Wrong admin tokens per second allowed from all sources together (0: no limit); over it,
    /// wrong admin tokens get `429` until the budget refills (the right one still gets through).
    pub failed_admin_auth_rate: f64,
    /// Wrong admin tokens allowed at once, from all sources together, before
    /// `failed_admin_auth_rate` applies.
    pub failed_admin_auth_burst: u32,
    /// PEM certificate chain for HTTPS; with `tls_key`, the API serves HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:4280".parse().expect("valid literal"),
            admin_listen: None,
            body_limit: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(15),
            max_connections: 1024,
            max_connections_per_ip: 256,
            eviction_floor: Duration::from_secs(3),
            // A source's own churn then holds at most 64 + 32 × 3 = 160 connections younger than
            // the floor, below its cap; a NAT of busy clients still opens 32 a second.
            accept_rate: 32.0,
            accept_burst: 64,
            // Above what one token's honest use reaches (a fleet of thousands of pods starting at
            // once, 32 parallel clients registering as fast as the store commits, about 1,000 a
            // second on SQLite), below what a runaway loop on a leaked token sends; lower it
            // where tokens are handed to less trusted hands.
            token_rate: 2000.0,
            token_burst: 4000,
            failed_auth_rate: 1.0,
            failed_auth_burst: 20,
            bootstrap_token: true,
            // A minute of wrong admin tokens at once, then one a second: 86,400 guesses a day
            // from the whole internet, whatever the number of addresses guessing.
            failed_admin_auth_rate: 1.0,
            failed_admin_auth_burst: 60,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// The `[peers]` section (issue 10).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    /// An ephemeral peer with no handshake on its gateway for this long (counted from its
    /// creation or last re-key when it never connected) is removed.
    #[serde(deserialize_with = "duration")]
    pub ephemeral_idle: Duration,
    /// The org-wide key lifetime (issue 23): a peer created or re-keyed with a token that sets no
    /// `key_expiry` of its own is served only this long after. Unset (the default): keys never
    /// expire unless their token says so.
    #[serde(deserialize_with = "opt_duration")]
    pub key_expiry: Option<Duration>,
    /// How long a peer whose key expired stays listed (as expired, and revivable by a re-key)
    /// before the reaper removes it.
    #[serde(deserialize_with = "duration")]
    pub expired_grace: Duration,
}

/// The default of `[peers] expired_grace`: a week.
pub const DEFAULT_EXPIRED_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for PeersConfig {
    fn default() -> Self {
        PeersConfig {
            ephemeral_idle: Duration::from_secs(30 * 60),
            key_expiry: None,
            expired_grace: DEFAULT_EXPIRED_GRACE,
        }
    }
}

/// The default of `[orgs] max_peers`.
pub const DEFAULT_ORG_MAX_PEERS: u64 = 100_000;

/// The `[orgs]` section (issue 23): bounded by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrgsConfig {
    /// The most live peers one org may have; a create beyond it is refused with 409.
    pub max_peers: u64,
}

impl Default for OrgsConfig {
    fn default() -> Self {
        OrgsConfig {
            max_peers: DEFAULT_ORG_MAX_PEERS,
        }
    }
}

/// The `[audit]` section (issue 23).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Audit entries older than this are deleted by the reaper; `None` (`0` or `"off"`): kept
    /// forever.
    #[serde(deserialize_with = "duration_or_off")]
    pub retention: Option<Duration>,
}

/// The default of `[audit] retention`: 90 days.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 86_400);

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention: Some(DEFAULT_AUDIT_RETENTION),
        }
    }
}

/// A duration like [`duration`], or `0`, `"0"` or `"off"` for none.
fn duration_or_off<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Secs(0) => Ok(None),
        Raw::Secs(secs) => Ok(Some(Duration::from_secs(secs))),
        Raw::Text(text) if matches!(text.trim(), "0" | "off") => Ok(None),
        Raw::Text(text) => humantime::parse_duration(text.trim())
            .map(|d| (!d.is_zero()).then_some(d))
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{e}: expected a duration such as \"90d\" or \"12h\", or \"off\""
                ))
            }),
    }
}

/// The `[groups]` section (issue 10): health-aware group answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    /// Orgs whose `<group>._g.internal` answers list only healthy members: org slugs, or `"*"`
    /// for every org. Empty (the default): every member, healthy or not.
    pub healthy_only: Vec<String>,
    /// A member is healthy when its gateway saw it (a handshake, or traffic) within this long.
    #[serde(deserialize_with = "duration")]
    pub health_window: Duration,
}

/// The default of `[groups] health_window`.
pub const DEFAULT_HEALTH_WINDOW: Duration = Duration::from_secs(180);

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            healthy_only: Vec::new(),
            health_window: DEFAULT_HEALTH_WINDOW,
        }
    }
}

impl GroupsConfig {
    /// Whether any org's groups are health-aware.
    pub fn enabled(&self) -> bool {
        !self.healthy_only.is_empty()
    }

    /// Whether `org`'s groups are health-aware.
    pub fn is_health_aware(&self, org: &str) -> bool {
        self.healthy_only.iter().any(|o| o == "*" || o == org)
    }

    /// How often a gateway reads its peers' liveness, and by how much a peer's recorded time
    /// must have moved before it is written again: fine enough that a live peer (it sends a
    /// keepalive every 15 to 25 seconds) never looks older than the window. Without
    /// health-aware groups, every 10 s and 30 s (only ephemeral peers, idle for minutes, use
    /// the times then).
    pub fn liveness_timing(&self) -> (Duration, i64) {
        if !self.enabled() {
            let Liveness { period, resolution } = Liveness::default();
            return (period, resolution);
        }
        let window = self.health_window.as_secs();
        let period = Duration::from_secs((window / 12).clamp(1, 10));
        (period, (window as i64 / 8).clamp(1, 30))
    }

    /// How often each server re-reads which members are healthy.
    pub fn poll_period(&self) -> Duration {
        Duration::from_secs((self.health_window.as_secs() / 12).clamp(1, 10))
    }
}

/// Reads a humantime duration (`"10s"`, `"2m"`) or a whole number of seconds.
fn duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Secs(secs) => Ok(Duration::from_secs(secs)),
        Raw::Text(text) => humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "{e}: expected a duration such as \"10s\" or \"2m\""
            ))
        }),
    }
}

/// Like [`duration`], for an optional key.
fn opt_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

/// The `[dns]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Addresses the DNS server listens on, UDP and TCP each.
    pub listen: Vec<SocketAddr>,
    /// TTL of peer and group answers, seconds.
    pub ttl: u32,
    /// Source CIDR → org views, beside each org's own /48.
    pub views: Vec<ViewConfig>,
    /// Folder of static `*.zone` files merged into every view (`SIXPN_ZONES_DIR`); unset: the
    /// built-in `internal.zone` alone. Nothing is read from the working directory.
    pub zones_dir: Option<PathBuf>,
    /// The largest UDP answer (EDNS payload) given, whatever a client advertises: 512 to 65,535.
    /// A group answer that does not fit is truncated (TC) and the client retries over TCP.
    pub max_udp_payload: u16,
    /// Response-rate limit: negative UDP answers (NXDOMAIN, REFUSED, FORMERR) a second per
    /// source (an IPv4 /24, an IPv6 /56, or one address inside `ula_prefix`); 0 turns it off.
    pub rrl_responses_per_second: u32,
    /// Every `rrl_slip`-th answer over the limit is sent truncated (TC, so a real client retries
    /// over TCP) instead of dropped; 0 drops them all, 1 truncates them all.
    pub rrl_slip: u32,
    /// How long a flood is remembered: a source over the limit stays limited until its rate over
    /// this window is back under it (1 s to 60 s, whole seconds).
    #[serde(deserialize_with = "duration")]
    pub rrl_window: Duration,
    /// Most DNS TCP connections open at once, over every DNS listener of the process (each org's
    /// `::3` too); a newcomer beyond it takes the place of the longest-idle connection older than
    /// a few seconds, or is refused. Clamped at start to its share of the open-file limit.
    pub tcp_max_connections: usize,
    /// Most DNS TCP connections open at once from one source: an IPv4 address or an IPv6 /64
    /// (inside `ula_prefix`, one tunnel address); more are refused.
    pub tcp_max_connections_per_source: usize,
}

/// The default of `[dns] tcp_max_connections`.
pub const DEFAULT_DNS_TCP_MAX_CONNECTIONS: usize = 1024;

/// The default of `[dns] tcp_max_connections_per_source`.
pub const DEFAULT_DNS_TCP_MAX_CONNECTIONS_PER_SOURCE: usize = 32;

/// The default of `[dns] max_udp_payload`: about 145 AAAA records in one answer.
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 4096;

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: vec!["127.0.0.1:5354".parse().expect("valid literal")],
            ttl: 5,
            views: vec![
                ViewConfig {
                    source: "127.0.0.0/8".parse().expect("valid literal"),
                    org: crate::model::DEFAULT_ORG.parse().expect("valid label"),
                },
                ViewConfig {
                    source: "::1/128".parse().expect("valid literal"),
                    org: crate::model::DEFAULT_ORG.parse().expect("valid label"),
                },
            ],
            zones_dir: None,
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
            rrl_responses_per_second: DEFAULT_RRL_RATE,
            rrl_slip: DEFAULT_RRL_SLIP,
            rrl_window: Duration::from_secs(u64::from(DEFAULT_RRL_WINDOW)),
            tcp_max_connections: DEFAULT_DNS_TCP_MAX_CONNECTIONS,
            tcp_max_connections_per_source: DEFAULT_DNS_TCP_MAX_CONNECTIONS_PER_SOURCE,
        }
    }
}

/// One `[[dns.views]]` entry: queries from `source` are answered in the view of `org`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    /// Source network of the queries.
    pub source: IpNet,
    /// The org whose view they get.
    pub org: OrgSlug,
}

/// Views written as `SIXPN_DNS_VIEWS` has them: `CIDR=org`, comma-separated
/// (`172.16.0.0/12=personal,10.0.0.0/8=acme`). They replace the configured views, as
/// `[[dns.views]]` replace the default one.
///
/// # Errors
/// What is wrong with the first entry that does not parse.
pub fn parse_views(text: &str) -> Result<Vec<ViewConfig>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (source, org) = entry.split_once('=').ok_or_else(|| {
                format!("{entry:?} is not CIDR=org (e.g. 172.16.0.0/12=personal)")
            })?;
            let source = source.trim();
            let source: IpNet = source
                .parse()
                .or_else(|_| source.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{source:?} is not a network such as 10.0.0.0/8"))?;
            let org = org
                .trim()
                .parse()
                .map_err(|e| format!("{:?} is not an org name: {e}", org.trim()))?;
            Ok(ViewConfig { source, org })
        })
        .collect()
}

/// One `[[regions]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Region code, e.g. `ams`.
    pub code: RegionCode,
    /// The gateway's public endpoint, `host:port` (port 51820 when left out).
    pub endpoint: String,
    /// The gateway's WireGuard public key. May be left out for the region the local gateway
    /// serves: it is then derived from the gateway's private key.
    pub public_key: Option<PublicKey>,
    /// Whether peers that name no region land here.
    #[serde(default)]
    pub default: bool,
}

/// The `[gateway]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The WireGuard interface to keep in step, e.g. `wg0`.
    pub interface: String,
    /// The region whose peers the interface carries.
    pub region: RegionCode,
    /// The gateway's private key file (`wg genkey` output); generated when missing.
    pub private_key_file: Option<PathBuf>,
    /// The UDP port WireGuard listens on.
    #[serde(default = "default_wg_port")]
    pub listen_port: u16,
    /// Where the userspace implementation's UAPI socket lives; default `/run/wireguard`.
    #[serde(default)]
    pub uapi_dir: Option<PathBuf>,
    /// How often a full reconcile repairs drift (changes themselves are applied at once, peer by
    /// peer); default 30 s.
    #[serde(default = "default_resync_period", deserialize_with = "duration")]
    pub resync_period: Duration,
    /// How often peer liveness is read and recorded: not a key of its own, it follows
    /// `[groups]` ([`GroupsConfig::liveness_timing`]).
    #[serde(skip)]
    pub liveness: Liveness,
}

fn default_resync_period() -> Duration {
    DEFAULT_RESYNC_PERIOD
}

fn default_wg_port() -> u16 {
    51820
}

/// Values given on the command line; each one that is `Some` wins over env and file. `Debug`
/// hides the database URL's password.
#[derive(Clone, Default)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--database-url`.
    pub database_url: Option<String>,
    /// `--api-listen`.
    pub api_listen: Option<SocketAddr>,
    /// `--admin-listen`.
    pub admin_listen: Option<SocketAddr>,
    /// `--dns-listen` (repeatable).
    pub dns_listen: Vec<SocketAddr>,
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overrides")
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("api_listen", &self.api_listen)
            .field("admin_listen", &self.admin_listen)
            .field("dns_listen", &self.dns_listen)
            .finish()
    }
}

impl Config {
    /// Loads the file (if any), then applies the environment, then `flags`, then validates.
    ///
    /// # Errors
    /// [`ConfigError`] names the file or variable at fault.
    pub fn load(path: Option<&Path>, flags: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.apply_flags(flags);
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// The parser's message.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies `SIXPN_*` variables as read by `get`.
    ///
    /// # Errors
    /// [`ConfigError::Env`] for a value of the wrong shape.
    pub fn apply_env(
        &mut self,
        get: impl Fn(&'static str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let non_empty = |k: &'static str| get(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = non_empty("SIXPN_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = non_empty("SIXPN_DATABASE_URL") {
            self.database_url = Some(v);
        }
        if let Some(v) = non_empty("SIXPN_READ_DATABASE_URL") {
            self.read_database_url = Some(v.trim().to_owned());
        }
        if let Some(v) = non_empty("SIXPN_DNS_VIEWS") {
            self.dns.views = parse_views(&v).map_err(|message| ConfigError::Env {
                var: "SIXPN_DNS_VIEWS",
                message,
            })?;
        }
        if let Some(v) = non_empty("SIXPN_ZONES_DIR") {
            self.dns.zones_dir = Some(PathBuf::from(v.trim()));
        }
        if let Some(v) = non_empty("SIXPN_ADMIN_TOKEN") {
            // A token read from a file often brings its newline.
            self.admin_token = Some(v.trim().to_owned());
        }
        if let Some(v) = non_empty("SIXPN_API_LISTEN") {
            self.api.listen = v.trim().parse().map_err(|e| ConfigError::Env {
                var: "SIXPN_API_LISTEN",
                message: format!("{e} (expected e.g. 127.0.0.1:4280)"),
            })?;
        }
        if let Some(v) = non_empty("SIXPN_ADMIN_LISTEN") {
            self.api.admin_listen = Some(v.trim().parse().map_err(|e| ConfigError::Env {
                var: "SIXPN_ADMIN_LISTEN",
                message: format!("{e} (expected e.g. 127.0.0.1:4281)"),
            })?);
        }
        if let Some(v) = non_empty("SIXPN_DNS_LISTEN") {
            self.dns.listen = v
                .split(',')
                .map(|s| s.trim().parse())
                .collect::<Result<_, _>>()
                .map_err(|e| ConfigError::Env {
                    var: "SIXPN_DNS_LISTEN",
                    message: format!("{e} (expected e.g. 127.0.0.1:5354, comma-separated)"),
                })?;
        }
        if let Some(v) = non_empty("SIXPN_ULA_PREFIX") {
            self.ula_prefix = v.trim().parse().map_err(|e| ConfigError::Env {
                var: "SIXPN_ULA_PREFIX",
                message: format!("{e} (expected e.g. fdaa::/16)"),
            })?;
        }
        Ok(())
    }

    fn apply_flags(&mut self, flags: &Overrides) {
        if let Some(v) = &flags.data_dir {
            self.data_dir = v.clone();
        }
        if let Some(v) = &flags.database_url {
            self.database_url = Some(v.clone());
        }
        if let Some(v) = flags.api_listen {
            self.api.listen = v;
        }
        if let Some(v) = flags.admin_listen {
            self.api.admin_listen = Some(v);
        }
        if !flags.dns_listen.is_empty() {
            self.dns.listen = flags.dns_listen.clone();
        }
    }

    /// Checks that the values fit together.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] says what to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(filter) = &self.log.filter
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(filter)
        {
            return Err(ConfigError::Invalid(format!(
                "[log] filter {filter:?} is not a tracing filter ({e}); use e.g. \"info\" or \"info,sixpn::gateway=debug\""
            )));
        }
        if let Some(read) = &self.read_database_url {
            let is_pg = |u: &str| u.starts_with("postgres://") || u.starts_with("postgresql://");
            if !is_pg(&self.database_url()) {
                return Err(ConfigError::Invalid(
                    "read_database_url (SIXPN_READ_DATABASE_URL) needs a PostgreSQL database_url: \
                     a read replica is a hot standby of a PostgreSQL primary; SQLite has none"
                        .into(),
                ));
            }
            if !is_pg(read) {
                return Err(ConfigError::Invalid(format!(
                    "read_database_url {} is not a PostgreSQL URL (postgres://…)",
                    redact_url(read)
                )));
            }
        }
        if self.read_poll_period < Duration::from_millis(10)
            || self.read_poll_period > Duration::from_secs(10)
        {
            return Err(ConfigError::Invalid(format!(
                "read_poll_period {} is out of range: use 10ms to 10s (default 100ms)",
                humantime::format_duration(self.read_poll_period)
            )));
        }
        if self.ula_prefix.prefix_len() > 16 {
            return Err(ConfigError::Invalid(format!(
                "ula_prefix {} is too long: orgs need 32 bits of /48s, use a /16 such as fdaa::/16",
                self.ula_prefix
            )));
        }
        if self.groups.enabled() && self.groups.health_window < Duration::from_secs(30) {
            return Err(ConfigError::Invalid(
                "[groups] health_window must be at least 30s: a live peer shows up every 15-25 s \
                 (its keepalive), so a shorter window would drop live members"
                    .into(),
            ));
        }
        for org in &self.groups.healthy_only {
            if org != "*" && org.parse::<OrgSlug>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "[groups] healthy_only: {org:?} is neither \"*\" nor an org name"
                )));
            }
        }
        if self.peers.ephemeral_idle < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "[peers] ephemeral_idle must be at least 1s".into(),
            ));
        }
        if self.orgs.max_peers == 0 {
            return Err(ConfigError::Invalid(
                "[orgs] max_peers must be at least 1 (it caps each org's live peers)".into(),
            ));
        }
        if self
            .peers
            .key_expiry
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            return Err(ConfigError::Invalid(
                "[peers] key_expiry must be at least 1s".into(),
            ));
        }
        if self.regions.iter().filter(|r| r.default).count() > 1 {
            return Err(ConfigError::Invalid(
                "more than one region has default = true".into(),
            ));
        }
        let mut codes: Vec<_> = self.regions.iter().map(|r| &r.code).collect();
        codes.sort();
        codes.dedup();
        if codes.len() != self.regions.len() {
            return Err(ConfigError::Invalid("two regions share a code".into()));
        }
        if let Some(gw) = &self.gateway
            && !self.regions.is_empty()
            && !self.regions.iter().any(|r| r.code == gw.region)
        {
            return Err(ConfigError::Invalid(format!(
                "gateway.region {} is not one of the configured [[regions]]",
                gw.region
            )));
        }
        if let Some(token) = &self.admin_token {
            check_admin_token(token, "admin_token (SIXPN_ADMIN_TOKEN)")?;
        }
        for (key, rate) in [
            ("api.token_rate", self.api.token_rate),
            ("api.failed_auth_rate", self.api.failed_auth_rate),
            (
                "api.failed_admin_auth_rate",
                self.api.failed_admin_auth_rate,
            ),
            ("api.accept_rate", self.api.accept_rate),
        ] {
            if !rate.is_finite() || rate < 0.0 {
                return Err(ConfigError::Invalid(format!(
                    "{key} must be a number of requests per second, 0 or more (0 turns the limit off)"
                )));
            }
        }
        if self.api.max_connections == 0 || self.api.max_connections_per_ip == 0 {
            return Err(ConfigError::Invalid(
                "api.max_connections and api.max_connections_per_ip must be at least 1".into(),
            ));
        }
        if self.api.header_read_timeout.is_zero()
            || self.api.idle_timeout.is_zero()
            || self.api.body_read_timeout.is_zero()
        {
            return Err(ConfigError::Invalid(
                "api.header_read_timeout, api.idle_timeout and api.body_read_timeout must be \
                 longer than zero"
                    .into(),
            ));
        }
        if self.dns.listen.is_empty() {
            return Err(ConfigError::Invalid("dns.listen is empty".into()));
        }
        if self.dns.max_udp_payload < 512 {
            return Err(ConfigError::Invalid(format!(
                "dns.max_udp_payload {} is below 512, the smallest UDP answer DNS allows",
                self.dns.max_udp_payload
            )));
        }
        if self.dns.rrl_responses_per_second > MAX_RRL_RATE {
            return Err(ConfigError::Invalid(format!(
                "dns.rrl_responses_per_second {} is above {}; use 0 to turn the limit off",
                self.dns.rrl_responses_per_second, MAX_RRL_RATE
            )));
        }
        let window = self.dns.rrl_window;
        if window.subsec_nanos() != 0
            || !(1..=u64::from(MAX_RRL_WINDOW)).contains(&window.as_secs())
        {
            return Err(ConfigError::Invalid(format!(
                "dns.rrl_window {} must be whole seconds from 1s to {}s",
                humantime::format_duration(window),
                MAX_RRL_WINDOW
            )));
        }
        if let Some(admin) = self.api.admin_listen
            && listeners_clash(self.api.listen, admin)
        {
            return Err(ConfigError::Invalid(format!(
                "api.admin_listen {admin} must differ from api.listen {}: the admin plane gets \
                 a listener of its own (e.g. 127.0.0.1:4281), or leave admin_listen unset to \
                 serve everything on api.listen",
                self.api.listen
            )));
        }
        if self.dns.tcp_max_connections == 0 || self.dns.tcp_max_connections_per_source == 0 {
            return Err(ConfigError::Invalid(
                "dns.tcp_max_connections and dns.tcp_max_connections_per_source must be at least 1"
                    .into(),
            ));
        }
        if self.dns.tcp_max_connections_per_source > self.dns.tcp_max_connections {
            return Err(ConfigError::Invalid(format!(
                "dns.tcp_max_connections_per_source {} is above dns.tcp_max_connections {}",
                self.dns.tcp_max_connections_per_source, self.dns.tcp_max_connections
            )));
        }
        match (&self.api.tls_cert, &self.api.tls_key) {
            (Some(_), None) => {
                return Err(ConfigError::Invalid(
                    "api.tls_cert is set but api.tls_key is not: set both for HTTPS, or neither"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "api.tls_key is set but api.tls_cert is not: set both for HTTPS, or neither"
                        .into(),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// The SQLite or PostgreSQL URL the store opens.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("sixpn.db").display()),
        }
    }
}

/// Checks an admin token from the configuration or the `admin-token` file: long enough not to be
/// guessed, short enough to be compared, and carried by an `Authorization` header.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `what` and how to make a good one.
pub fn check_admin_token(token: &str, what: &str) -> Result<(), ConfigError> {
    if token.len() < MIN_ADMIN_TOKEN_LEN {
        return Err(ConfigError::Invalid(format!(
            "{what} is {} characters long; an admin token needs at least {MIN_ADMIN_TOKEN_LEN} \
             (make one with `openssl rand -hex 32`, or leave it unset and sixpn generates one \
             into <data_dir>/admin-token)",
            token.len()
        )));
    }
    if token.len() > MAX_ADMIN_TOKEN_LEN {
        return Err(ConfigError::Invalid(format!(
            "{what} is longer than {MAX_ADMIN_TOKEN_LEN} characters; use a shorter random token"
        )));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::Invalid(format!(
            "{what} contains blank or control characters, which no Authorization header can carry"
        )));
    }
    Ok(())
}

/// `text` with the password of `url` (if it has one) replaced by `***`.
pub fn scrub_password(text: &str, url: &str) -> String {
    let password = url.find("://").and_then(|s| {
        let at = url.rfind('@').filter(|at| *at > s)?;
        url[s + 3..at].split_once(':').map(|(_, pw)| pw)
    });
    match password {
        Some(pw) if !pw.is_empty() => text.replace(pw, "***"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.api.listen.to_string(), "127.0.0.1:4280");
        assert_eq!(c.dns.ttl, 5);
        assert!(c.database_url().starts_with("sqlite://"));
    }

    #[test]
    fn peers_key_expiry_and_grace() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.peers.key_expiry, None);
        assert_eq!(c.peers.expired_grace, DEFAULT_EXPIRED_GRACE);
        let c = Config::from_toml("[peers]\nkey_expiry = \"24h\"\nexpired_grace = 3600\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.peers.key_expiry, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(c.peers.expired_grace, Duration::from_secs(3600));
        let err = Config::from_toml("[peers]\nkey_expiry = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("duration"), "{err}");
        let c = Config::from_toml("[peers]\nkey_expiry = \"0s\"\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("key_expiry"), "{err}");
    }

    #[test]
    fn spec_example_parses() {
        let text = r#"
data_dir = "/var/lib/sixpn"
database_url = "postgres://sixpn@db/sixpn"
ula_prefix = "fdaa::/16"
[api]
listen = "127.0.0.1:4280"
[dns]
listen = ["127.0.0.1:5354"]
ttl = 5
[[dns.views]]
source = "127.0.0.0/8"
org = "personal"
[[regions]]
code = "ams"
endpoint = "203.0.113.7:51820"
public_key = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
default = true
[gateway]
interface = "wg0"
region = "ams"
private_key_file = "/etc/sixpn/gateway.key"
listen_port = 51820
"#;
        let c = Config::from_toml(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.regions[0].code.as_str(), "ams");
        assert_eq!(c.gateway.unwrap().listen_port, 51820);
    }

    #[test]
    fn issue11_debug_hides_the_admin_token_and_the_database_password() {
        let mut c = Config::from_toml(
            "admin_token = \"adm1n-s3cret\"\ndatabase_url = \"postgres://sixpn:pa55word@db/sixpn\"",
        )
        .unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("adm1n-s3cret"), "{debug}");
        assert!(!debug.contains("pa55word"), "{debug}");
        assert!(debug.contains("postgres://sixpn:***@db/sixpn"), "{debug}");
        c.admin_token = None;
        assert!(format!("{c:?}").contains("admin_token: None"));
        let flags = Overrides {
            database_url: Some("postgres://u:pa55word@db/x".into()),
            ..Default::default()
        };
        assert!(!format!("{flags:?}").contains("pa55word"));
    }

    #[test]
    fn api_limits_parse_and_validate() {
        let c = Config::from_toml(
            "[api]\nheader_read_timeout = \"5s\"\nidle_timeout = 30\ntoken_rate = 0\nmax_connections = 10",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.api.header_read_timeout, Duration::from_secs(5));
        assert_eq!(c.api.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.api.token_rate, 0.0);
        assert_eq!(c.api.token_burst, ApiConfig::default().token_burst);
        assert!(Config::from_toml("[api]\nidle_timeout = \"soon\"").is_err());
        let bad = Config::from_toml("[api]\ntoken_rate = -1.0").unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("token_rate")
        );
        let bad = Config::from_toml("[api]\nmax_connections = 0").unwrap();
        assert!(bad.validate().is_err());
        let mut bad = Config {
            admin_token: Some("x".repeat(MAX_ADMIN_TOKEN_LEN + 1)),
            ..Config::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("admin_token")
        );
        bad.admin_token = Some(format!("two words{}", "x".repeat(40)));
        assert!(bad.validate().is_err());
    }

    #[test]
    fn issue22_a_short_admin_token_is_refused() {
        let short = Config {
            admin_token: Some("abc".into()),
            ..Config::default()
        };
        let err = short.validate().unwrap_err().to_string();
        assert!(
            err.contains("SIXPN_ADMIN_TOKEN") && err.contains("at least 32"),
            "{err}"
        );
        let just = Config {
            admin_token: Some("x".repeat(MIN_ADMIN_TOKEN_LEN)),
            ..Config::default()
        };
        just.validate().unwrap();
    }

    #[test]
    fn issue23_views_from_the_environment() {
        let mut c = Config::default();
        c.apply_env(|k| {
            (k == "SIXPN_DNS_VIEWS").then(|| " 172.16.0.0/12=personal, 10.0.0.1=acme ".into())
        })
        .unwrap();
        let views: Vec<_> = c
            .dns
            .views
            .iter()
            .map(|v| (v.source.to_string(), v.org.to_string()))
            .collect();
        assert_eq!(
            views,
            [
                ("172.16.0.0/12".to_owned(), "personal".to_owned()),
                ("10.0.0.1/32".to_owned(), "acme".to_owned())
            ]
        );
        for bad in ["10.0.0.0/8", "nope=acme", "10.0.0.0/8=Not An Org"] {
            let err = Config::default()
                .apply_env(|k| (k == "SIXPN_DNS_VIEWS").then(|| bad.into()))
                .unwrap_err()
                .to_string();
            assert!(err.contains("SIXPN_DNS_VIEWS"), "{bad}: {err}");
        }
    }

    #[test]
    fn admin_listen_is_unset_by_default_and_must_differ_from_listen() {
        assert_eq!(Config::default().api.admin_listen, None);
        let c = Config::from_toml(
            "[api]\nlisten = \"0.0.0.0:4280\"\nadmin_listen = \"127.0.0.1:4281\"",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.api.admin_listen, Some("127.0.0.1:4281".parse().unwrap()));
        for clash in ["0.0.0.0:4280", "127.0.0.1:4280"] {
            let text = format!("[api]\nlisten = \"0.0.0.0:4280\"\nadmin_listen = \"{clash}\"");
            let err = Config::from_toml(&text).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains("admin_listen"), "{err}");
        }
        // Port 0 takes a fresh port for each listener.
        let mut c = Config::default();
        c.api.listen = "127.0.0.1:0".parse().unwrap();
        c.api.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        c.validate().unwrap();
        let mut c = Config::default();
        c.apply_env(|k| (k == "SIXPN_ADMIN_LISTEN").then(|| " 127.0.0.1:4281\n".to_string()))
            .unwrap();
        assert_eq!(c.api.admin_listen, Some("127.0.0.1:4281".parse().unwrap()));
        let err = Config::default()
            .apply_env(|k| (k == "SIXPN_ADMIN_LISTEN").then(|| "loopback".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("SIXPN_ADMIN_LISTEN"), "{err}");
        c.apply_flags(&Overrides {
            admin_listen: Some("127.0.0.1:4282".parse().unwrap()),
            ..Overrides::default()
        });
        assert_eq!(c.api.admin_listen, Some("127.0.0.1:4282".parse().unwrap()));
    }

    #[test]
    fn issue17_read_database_url_needs_postgres_on_both_sides() {
        let c = Config::from_toml(
            "database_url = \"postgres://u:pw@primary/x\"\n\
             read_database_url = \"postgres://u:pw@standby/x\"\nread_poll_period = \"50ms\"",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.read_database_url.as_deref(),
            Some("postgres://u:pw@standby/x")
        );
        assert_eq!(c.read_poll_period, Duration::from_millis(50));
        assert!(
            !format!("{c:?}").contains("pw@"),
            "the read URL's password is redacted"
        );
        assert_eq!(
            Config::default().read_poll_period,
            Duration::from_millis(100)
        );

        // Beside SQLite (the default store): refused, naming the key.
        let mut c = Config::default();
        c.apply_env(|k| {
            (k == "SIXPN_READ_DATABASE_URL").then(|| "postgres://standby/x\n".to_string())
        })
        .unwrap();
        assert_eq!(c.read_database_url.as_deref(), Some("postgres://standby/x"));
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("read_database_url") && err.contains("SQLite"),
            "{err}"
        );

        let bad = Config::from_toml(
            "database_url = \"postgres://primary/x\"\nread_database_url = \"sqlite:///tmp/x.db\"",
        )
        .unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("not a PostgreSQL URL")
        );
        let fast = Config::from_toml("read_poll_period = \"1ms\"").unwrap();
        assert!(
            fast.validate()
                .unwrap_err()
                .to_string()
                .contains("read_poll_period")
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(Config::from_toml("nonsense = 1").is_err());
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let mut c = Config::from_toml("[api]\nlisten = \"127.0.0.1:1\"").unwrap();
        c.apply_env(|k| (k == "SIXPN_API_LISTEN").then(|| "127.0.0.1:2".to_string()))
            .unwrap();
        assert_eq!(c.api.listen.port(), 2);
        c.apply_flags(&Overrides {
            api_listen: Some("127.0.0.1:3".parse().unwrap()),
            ..Default::default()
        });
        assert_eq!(c.api.listen.port(), 3);
        let err = c
            .apply_env(|k| (k == "SIXPN_DNS_LISTEN").then(|| "nope".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("SIXPN_DNS_LISTEN"));
    }

    #[test]
    fn issue11_store_errors_never_show_the_password() {
        let url = "postgress://u:s3cr3t@db/x";
        let err = format!("unsupported database URL {url:?}");
        let scrubbed = scrub_password(&err, url);
        assert!(!scrubbed.contains("s3cr3t"), "{scrubbed}");
        assert!(scrubbed.contains("u:***@db"));
        assert_eq!(
            scrub_password("no url here", "sqlite://a/b.db"),
            "no url here"
        );
    }

    #[test]
    fn rrl_keys_parse_and_validate() {
        let c = Config::from_toml(
            "ula_prefix = \"fdbb::/16\"\n[dns]\nrrl_responses_per_second = 0\nrrl_slip = 3\nrrl_window = \"15s\"",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            (
                c.dns.rrl_responses_per_second,
                c.dns.rrl_slip,
                c.dns.rrl_window
            ),
            (0, 3, Duration::from_secs(15))
        );
        for bad in [
            "rrl_window = 0",
            "rrl_window = \"1500ms\"",
            "rrl_window = \"2m\"",
            "rrl_responses_per_second = 100001",
        ] {
            let c = Config::from_toml(&format!("[dns]\n{bad}")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("dns.rrl_"), "{bad}: {err}");
        }
        assert!(Config::from_toml("[dns]\nrrl_responses_per_second = -1").is_err());
    }

    #[test]
    fn dns_payload_and_tls_keys_validate() {
        let c = Config::from_toml("[dns]\nmax_udp_payload = 65535").unwrap();
        c.validate().unwrap();
        assert_eq!(c.dns.max_udp_payload, 65535);
        assert_eq!(Config::default().dns.max_udp_payload, 4096);
        assert!(Config::from_toml("[dns]\nmax_udp_payload = 65536").is_err());
        let small = Config::from_toml("[dns]\nmax_udp_payload = 511").unwrap();
        assert!(small.validate().unwrap_err().to_string().contains("512"));
        let half = Config::from_toml("[api]\ntls_cert = \"/x.crt\"").unwrap();
        assert!(half.validate().unwrap_err().to_string().contains("tls_key"));
        let both = Config::from_toml("[api]\ntls_cert = \"/x.crt\"\ntls_key = \"/x.key\"").unwrap();
        both.validate().unwrap();
    }

    #[test]
    fn dns_tcp_caps_parse_and_validate() {
        let c = Config::default();
        assert_eq!(c.dns.tcp_max_connections, 1024);
        assert_eq!(c.dns.tcp_max_connections_per_source, 32);
        let c = Config::from_toml(
            "[dns]\ntcp_max_connections = 64\ntcp_max_connections_per_source = 8",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            (
                c.dns.tcp_max_connections,
                c.dns.tcp_max_connections_per_source
            ),
            (64, 8)
        );
        for bad in [
            "tcp_max_connections = 0",
            "tcp_max_connections_per_source = 0",
            "tcp_max_connections = 16\ntcp_max_connections_per_source = 17",
        ] {
            let c = Config::from_toml(&format!("[dns]\n{bad}")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("dns.tcp_max_connections"), "{bad}: {err}");
        }
        assert!(Config::from_toml("[dns]\ntcp_max_connections = -1").is_err());
    }
}
