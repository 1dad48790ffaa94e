//! `sixpn serve`: wires store → snapshot publisher → API + DNS (+ gateway) under one
//! cancellation token.
//!
//! [`start`] binds every listener first (port 0 is fine), so tests and callers learn the real
//! addresses before anything is served; [`run`] adds signal handling for the binary.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::model::Region;
use crate::store::Store;
use crate::wireguard::PrivateKey;

/// A running server.
pub struct Running {
    /// Where the HTTP API listens.
    pub api_addr: SocketAddr,
    /// Where the DNS server listens (UDP and TCP on each).
    pub dns_addrs: Vec<SocketAddr>,
    /// The generated admin-token file, when the admin token was not configured.
    pub admin_token_file: Option<PathBuf>,
    /// The store the server runs on.
    pub store: Store,
    cancel: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Running {
    /// A token that stops the server when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits until every part has stopped; the first failure stops the rest and is returned.
    ///
    /// # Errors
    /// The first part that failed.
    pub async fn wait(mut self) -> anyhow::Result<()> {
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

/// Starts everything `config` asks for and returns once it is all listening.
///
/// # Errors
/// A listener that cannot bind, a store that cannot open, a key file that cannot be read.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let data_dir = config
        .data_dir
        .canonicalize()
        .unwrap_or_else(|_| config.data_dir.clone());

    let url = config.database_url();
    // The store's errors may quote the URL (an unsupported scheme, a parse error): its password
    // never reaches the message (issue 11).
    let store = Store::open(&url, config.ula_prefix)
        .await
        .map_err(|e| anyhow::anyhow!("{}", scrub_password(&e.to_string(), &url)))
        .with_context(|| format!("opening the store at {}", redact_url(&url)))?;

    let (admin_token, admin_token_file) = admin_token(&config, &data_dir)?;
    let gateway_key = match &config.gateway {
        Some(gw) => {
            let path = gw
                .private_key_file
                .clone()
                .unwrap_or_else(|| data_dir.join("gateway.key"));
            Some(load_or_generate_key(&path)?)
        }
        None => None,
    };
    let regions = resolve_regions(&config, &data_dir, gateway_key.as_ref())?;

    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();

    let snapshot = crate::snapshot::start(
        store.clone(),
        crate::snapshot::SnapshotSettings::from_config(&config.dns)?,
        cancel.clone(),
    )
    .await
    .context("building the first DNS snapshot")?;

    let listeners = crate::dns::bind(&config.dns.listen)
        .await
        .with_context(|| format!("binding DNS on {:?}", config.dns.listen))?;
    let dns_addrs = listeners.local_addrs();
    {
        let snapshot = snapshot.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            crate::dns::serve(listeners, snapshot, cancel)
                .await
                .context("DNS server")
        });
    }

    let gateway = match (&config.gateway, gateway_key) {
        (Some(gw), Some(key)) => Some(
            crate::gateway::start_with_key(gw, key, store.clone(), cancel.clone())
                .await
                .with_context(|| format!("starting the gateway on {}", gw.interface))?,
        ),
        _ => None,
    };

    let state = crate::api::ApiState {
        store: store.clone(),
        regions: Arc::new(regions.clone()),
        admin_token: crate::api::AdminToken::new(admin_token),
        published: snapshot.published(),
        gateway,
        body_limit: config.api.body_limit,
        body_timeout: config.api.body_read_timeout,
        rate_limits: crate::api::RateLimits::from_config(&config.api),
    };
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding the API on {}", config.api.listen))?;
    let api_addr = listener.local_addr()?;
    {
        let cancel = cancel.clone();
        let app = crate::api::router(state);
        let limits = crate::api::server::ServerLimits::from_config(&config.api);
        tasks.spawn(async move {
            crate::api::server::serve(listener, app, limits, cancel)
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
    tracing::info!(api = %api_addr, "API listening (http://{api_addr})");
    for addr in &dns_addrs {
        tracing::info!(dns = %addr, "DNS listening (UDP and TCP)");
    }
    match &admin_token_file {
        Some(path) => tracing::info!(file = %path.display(), "admin token file"),
        None => tracing::info!("admin token from configuration"),
    }
    for r in &regions {
        tracing::info!(region = %r.code, endpoint = %r.endpoint(), public_key = %r.public_key, default = r.default, "region");
    }

    Ok(Running {
        api_addr,
        dns_addrs,
        admin_token_file,
        store,
        cancel,
        tasks,
    })
}

/// Runs the server until ctrl-c or SIGTERM.
///
/// # Errors
/// As [`start`], or a part failing while running.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    let cancel = running.cancel_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        cancel.cancel();
    });
    running.wait().await
}

/// How log lines are written: `text` for people, `json` (one object per line) for log
/// shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines; coloured only on a terminal without `NO_COLOR`.
    #[default]
    Text,
    /// One JSON object per line, never coloured.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" | "" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// The tracing filter: `RUST_LOG` (default `info`). hickory-server logs two INFO lines per DNS
/// query, so unless `RUST_LOG` names hickory itself, hickory's crates are held to `warn` while
/// the filter is at `info` or quieter: their per-query lines then show only at `debug` (issue 13).
pub fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;
    let text = rust_log.map(str::trim).filter(|t| !t.is_empty());
    let mut filter = text
        .and_then(|t| EnvFilter::try_new(t).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let names_hickory = text.is_some_and(|t| t.contains("hickory"));
    let verbose = filter
        .max_level_hint()
        .is_some_and(|level| level >= LevelFilter::DEBUG);
    if !names_hickory && !verbose {
        for directive in crate::dns::LOG_FILTER.split(',') {
            if let Ok(directive) = directive.parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}

/// Whether log lines on stderr get ANSI colours: only on a terminal, and never when `NO_COLOR`
/// is set to anything non-empty (<https://no-color.org>).
pub fn log_colours(no_color: Option<&std::ffi::OsStr>, stderr_is_terminal: bool) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Sets up logging on stderr for the binary: [`log_filter`] over `RUST_LOG`, the format from
/// `format` or else `SIXPN_LOG_FORMAT` (`text` by default), colours per [`log_colours`].
///
/// # Errors
/// An unknown format name in `SIXPN_LOG_FORMAT`.
pub fn init_logging(format: Option<LogFormat>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let format = match format {
        Some(format) => format,
        None => match std::env::var("SIXPN_LOG_FORMAT") {
            Ok(text) => text
                .parse()
                .map_err(|e| anyhow::anyhow!("SIXPN_LOG_FORMAT: {e}"))?,
            Err(_) => LogFormat::Text,
        },
    };
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_ansi(false).init(),
        LogFormat::Text => builder
            .with_ansi(log_colours(
                std::env::var_os("NO_COLOR").as_deref(),
                std::io::stderr().is_terminal(),
            ))
            .init(),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// The admin credential: configured, or read from (or generated into) `data_dir/admin-token`.
fn admin_token(config: &Config, data_dir: &Path) -> anyhow::Result<(String, Option<PathBuf>)> {
    if let Some(token) = &config.admin_token {
        return Ok((token.clone(), None));
    }
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_owned(), Some(path))),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).context("reading the OS random source")?;
    let token: String = format!(
        "sixpn_admin_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    write_secret_file(&path, &format!("{token}\n"))?;
    Ok((token, Some(path)))
}

/// Writes `contents` to a new file readable only by its owner (mode 0600 from creation).
fn write_secret_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads a WireGuard private key file, or generates one (mode 0600) when it does not exist.
///
/// # Errors
/// An unreadable or malformed file.
pub fn load_or_generate_key(path: &Path) -> anyhow::Result<PrivateKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::parse(text.trim())
            .with_context(|| format!("{} is not a WireGuard private key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let key = PrivateKey::generate().context("reading the OS random source")?;
            write_secret_file(path, &format!("{}\n", key.to_base64()))?;
            tracing::info!(file = %path.display(), public_key = %key.public_key(), "generated gateway key");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Turns `[[regions]]` into [`Region`]s with known public keys. With none configured there is one
/// region, `local` (or the gateway's), at 127.0.0.1, keyed by the gateway key or a key generated
/// into the data directory.
fn resolve_regions(
    config: &Config,
    data_dir: &Path,
    gateway_key: Option<&PrivateKey>,
) -> anyhow::Result<Vec<Region>> {
    let gateway_region = config.gateway.as_ref().map(|g| &g.region);
    if config.regions.is_empty() {
        let key = match gateway_key {
            Some(k) => k.clone(),
            None => load_or_generate_key(&data_dir.join("gateway.key"))?,
        };
        let code = gateway_region
            .cloned()
            .unwrap_or_else(|| "local".parse().expect("valid label"));
        let port = config.gateway.as_ref().map_or(51820, |g| g.listen_port);
        return Ok(vec![Region {
            code,
            endpoint_host: "127.0.0.1".into(),
            port,
            public_key: key.public_key(),
            default: true,
        }]);
    }
    let any_default = config.regions.iter().any(|r| r.default);
    let mut out = Vec::with_capacity(config.regions.len());
    for (i, r) in config.regions.iter().enumerate() {
        let public_key = match (&r.public_key, gateway_region) {
            (Some(k), _) => *k,
            (None, Some(g)) if *g == r.code => gateway_key
                .map(PrivateKey::public_key)
                .context("the gateway key is missing")?,
            (None, _) => bail!(
                "region {} has no public_key (only the region this server is the gateway of may leave it out)",
                r.code
            ),
        };
        let (host, port) = split_endpoint(&r.endpoint)
            .with_context(|| format!("region {}: endpoint {:?}", r.code, r.endpoint))?;
        out.push(Region {
            code: r.code.clone(),
            endpoint_host: host,
            port,
            public_key,
            default: r.default || (!any_default && i == 0),
        });
    }
    Ok(out)
}

/// Splits `host:port`, `[v6]:port`, or a bare host (port 51820).
fn split_endpoint(endpoint: &str) -> anyhow::Result<(String, u16)> {
    let endpoint = endpoint.trim();
    if endpoint.is_empty() {
        bail!("is empty");
    }
    if let Some(rest) = endpoint.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').context("missing ']'")?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().context("bad port")?,
            None if tail.is_empty() => 51820,
            None => bail!("unexpected text after ']'"),
        };
        return Ok((host.to_owned(), port));
    }
    match endpoint.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Ok((host.to_owned(), port.parse().context("bad port")?))
        }
        // A bare IPv6 address without brackets.
        Some(_) => Ok((endpoint.to_owned(), 51820)),
        None => Ok((endpoint.to_owned(), 51820)),
    }
}

/// `text` with the password of `url` (if it has one) replaced by `***`.
fn scrub_password(text: &str, url: &str) -> String {
    let password = url.find("://").and_then(|s| {
        let at = url.rfind('@').filter(|at| *at > s)?;
        url[s + 3..at].split_once(':').map(|(_, pw)| pw)
    });
    match password {
        Some(pw) if !pw.is_empty() => text.replace(pw, "***"),
        _ => text.to_owned(),
    }
}

/// A database URL without its password, for logs.
fn redact_url(url: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            split_endpoint("203.0.113.7:51820").unwrap(),
            ("203.0.113.7".into(), 51820)
        );
        assert_eq!(
            split_endpoint("gw.example.com").unwrap(),
            ("gw.example.com".into(), 51820)
        );
        assert_eq!(
            split_endpoint("[2001:db8::1]:5000").unwrap(),
            ("2001:db8::1".into(), 5000)
        );
        assert_eq!(
            split_endpoint("2001:db8::1").unwrap(),
            ("2001:db8::1".into(), 51820)
        );
        assert!(split_endpoint("host:notaport").is_err());
        assert!(split_endpoint("").is_err());
    }

    #[test]
    fn hickory_is_quiet_at_info() {
        // issue 13: `RUST_LOG=info` (what the README suggests) logged two lines per DNS query.
        for rust_log in [
            None,
            Some("info"),
            Some(""),
            Some("warn"),
            Some("sixpn=info"),
        ] {
            let filter = log_filter(rust_log).to_string();
            assert!(
                filter.contains("hickory_server=warn"),
                "{rust_log:?}: {filter}"
            );
        }
        // Asking for debug, or naming hickory, is obeyed.
        assert!(
            !log_filter(Some("debug"))
                .to_string()
                .contains("hickory_server=warn")
        );
        assert!(
            log_filter(Some("info,hickory_server=info"))
                .to_string()
                .contains("hickory_server=info")
        );
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(log_colours(None, true));
        assert!(!log_colours(None, false));
        assert!(!log_colours(Some(OsStr::new("1")), true));
        assert!(log_colours(Some(OsStr::new("")), true));
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
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

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@db/x"),
            "postgres://u:***@db/x"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact_url("sqlite://a/b.db"), "sqlite://a/b.db");
    }
}
