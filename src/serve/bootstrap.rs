//! The I/O of starting a server, before anything is served: the data directory, the admin
//! credential, the gateway key and the regions with their keys (which may be claimed in the
//! store). [`crate::config`] only parses and validates; this module acts on what it says.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::config::{Config, check_admin_token};
use crate::model::Region;
use crate::store::Store;
use crate::wireguard::PrivateKey;

/// What `serve` runs with besides the [`Config`] itself: the data directory (created), the
/// admin credential, the gateway key and the regions with their keys.
#[derive(Clone)]
pub struct Resolved {
    /// The data directory, created (mode 0700) and made absolute when possible.
    pub data_dir: PathBuf,
    /// The admin credential.
    pub admin_token: String,
    /// The file the admin credential was read from or generated into; `None` when configured.
    pub admin_token_file: Option<PathBuf>,
    /// The gateway's private key, in gateway mode.
    pub gateway_key: Option<PrivateKey>,
    /// The regions peers can use, each with its gateway's public key; exactly one is default.
    pub regions: Vec<Region>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("data_dir", &self.data_dir)
            .field("admin_token", &"<redacted>")
            .field("admin_token_file", &self.admin_token_file)
            .field(
                "gateway_key",
                &self.gateway_key.as_ref().map(|_| "<redacted>"),
            )
            .field("regions", &self.regions)
            .finish()
    }
}

/// The files sixpn writes into its data directory besides the SQLite database (whose files
/// the store makes private itself) and the secrets (written 0600 by [`write_secret_file`]).
const PRIVATE_FILES: [&str; 3] = ["sixpn.lock", "dns-state.bin", "dns-state.bin.tmp"];

/// Creates the data directory (mode 0700 when it is new) and returns its absolute path.
///
/// Every file sixpn writes there is 0600 whoever made the directory; a directory open to group
/// or others (an operator's `mkdir`, systemd's `StateDirectory=`: 0755) gets a warning, and files
/// an older sixpn left open to them are made private.
///
/// # Errors
/// The directory cannot be created.
pub fn prepare_data_dir(config: &Config) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let dir = config
        .data_dir
        .canonicalize()
        .unwrap_or_else(|_| config.data_dir.clone());
    if let Ok(meta) = std::fs::metadata(&dir) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                data_dir = %dir.display(),
                mode = format!("{mode:04o}"),
                "the data directory is open to group or others: its files are 0600, but their names and sizes show; chmod 700 it (systemd: StateDirectoryMode=0700)"
            );
        }
    }
    for name in PRIVATE_FILES {
        crate::store::backup::narrow_mode(&dir.join(name));
    }
    Ok(dir)
}

/// Resolves the admin credential, the gateway key and the regions of `config`, with `data_dir`
/// from [`prepare_data_dir`].
///
/// With no `[[regions]]` there is one region, `local` (or the gateway's), at 127.0.0.1. Its key
/// is the gateway's; without a gateway it is generated into the data directory and then
/// *claimed* in the store ([`Store::claim_region_key`]): the first server to claim it wins, so
/// every replica of one database hands out the same key (issue 13).
///
/// # Errors
/// An unreadable or malformed key or token file, a region without a key, a bad endpoint, the
/// store failing (unless `degraded`: the server started without its database).
pub async fn resolve(
    config: &Config,
    data_dir: &Path,
    store: &Store,
    degraded: bool,
) -> anyhow::Result<Resolved> {
    let (admin_token, admin_token_file) = admin_token(config, data_dir)?;
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
    let mut regions = resolve_regions(config, data_dir, gateway_key.as_ref())?;
    // The key of the default region was generated here: agree on one through the store (not
    // while the server started without it: writes answer 503 then, so no node gets a key).
    if config.regions.is_empty() && gateway_key.is_none() && !degraded {
        for region in &mut regions {
            let claimed = match store
                .claim_region_key(&region.code, &region.public_key)
                .await
            {
                Ok(claimed) => claimed,
                Err(error) => {
                    return Err(error).with_context(|| {
                        format!("claiming the gateway key of region {}", region.code)
                    });
                }
            };
            if claimed != region.public_key {
                tracing::info!(region = %region.code, public_key = %claimed, "using the region key another server stored");
            }
            region.public_key = claimed;
        }
    }
    Ok(Resolved {
        data_dir: data_dir.to_owned(),
        admin_token,
        admin_token_file,
        gateway_key,
        regions,
    })
}

/// The admin credential: configured, or read from (or generated into) `data_dir/admin-token`.
fn admin_token(config: &Config, data_dir: &Path) -> anyhow::Result<(String, Option<PathBuf>)> {
    if let Some(token) = &config.admin_token {
        return Ok((token.clone(), None));
    }
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            let token = text.trim().to_owned();
            check_admin_token(&token, &path.display().to_string())?;
            return Ok((token, Some(path)));
        }
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

/// Writes a secret file atomically, readable only by its owner: a temporary file in the same
/// directory (mode 0600 from creation), fsync, rename over `path`, fsync of the directory. A
/// crash leaves either the old file or the new one, never half of one.
///
/// # Errors
/// Creating, writing or renaming the file, naming it.
pub fn write_secret_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(contents.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        // The rename is durable once the directory is synced (best effort).
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        anyhow::Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
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
    fn secret_files_are_written_whole_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token");
        write_secret_file(&path, "one\n").unwrap();
        write_secret_file(&path, "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_new_data_dir_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("a/data"),
            ..Config::default()
        };
        let made = prepare_data_dir(&config).unwrap();
        let mode = std::fs::metadata(&made).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
