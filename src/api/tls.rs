//! The API's TLS certificate and key, swapped in place when they change (issue 18).
//!
//! cert-manager and ACME clients rotate certificates every 60 to 90 days by replacing the files.
//! [`ApiTls`] reads the pair from `[api] tls_cert`/`tls_key` and gives rustls a resolver that
//! answers every handshake with the current pair (one atomic load), so a new pair takes effect
//! for the next handshake while connections already open keep the session they made.
//!
//! The pair is re-read on `SIGHUP` ([`ApiTls::reload`]) and when either file changes on disk
//! ([`ApiTls::watch`], a `stat` of both every few seconds; a Kubernetes Secret volume swaps a
//! symlink, which changes the inode). A pair that cannot be used (unreadable, not PEM, a key that
//! does not belong to the certificate, or a half-written file) is refused with its reason and
//! the running pair stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

/// Why the API's certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {what} {path}: {source}")]
    Read {
        /// `api.tls_cert` or `api.tls_key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM data.
    #[error("{what} {path}: {message}")]
    Pem {
        /// `api.tls_cert` or `api.tls_key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("api.tls_cert {cert} with api.tls_key {key}: {source}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
}

/// How often [`ApiTls::watch`] looks at the files.
pub const WATCH_PERIOD: Duration = Duration::from_secs(5);

/// The API's server-side TLS: the rustls configuration every connection uses, and the pair it
/// presents, which [`ApiTls::reload`] swaps.
#[derive(Debug)]
pub struct ApiTls {
    /// The configuration for `tokio_rustls::TlsAcceptor` (HTTP/1.1 by ALPN).
    pub config: Arc<rustls::ServerConfig>,
    current: Arc<CurrentPair>,
    provider: Arc<CryptoProvider>,
    files: Mutex<Files>,
}

/// The files the pair comes from, and what they looked like when last read.
#[derive(Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    stamp: Option<Stamp>,
}

/// Enough of both files' metadata to see a replacement: modification time, size and inode.
type Stamp = [(std::time::SystemTime, u64, u64); 2];

fn stamp(cert: &Path, key: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let one = |path: &Path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len(), meta.ino()))
    };
    Some([one(cert)?, one(key)?])
}

/// The pair every handshake gets.
#[derive(Debug)]
struct CurrentPair(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for CurrentPair {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The server-side TLS configuration from a PEM certificate chain and its PEM private key
/// (PKCS#8, PKCS#1 or SEC1), offering HTTP/1.1 by ALPN.
///
/// # Errors
/// [`TlsError`] names the file at fault: missing or unreadable, no PEM certificate or key in it,
/// or a key that does not belong to the certificate.
pub fn load_tls(cert: &Path, key: &Path) -> Result<ApiTls, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let stamp = stamp(cert, key);
    let pair = read_pair(cert, key, &provider)?;
    let current = Arc::new(CurrentPair(ArcSwap::from_pointee(pair)));
    let config_error = |source| TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ApiTls {
        config: Arc::new(config),
        current,
        provider,
        files: Mutex::new(Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
            stamp,
        }),
    })
}

/// Reads and checks one pair: a PEM chain and the private key of its first certificate.
fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let pem_error = |what: &'static str, path: &Path, message: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        message,
    };
    let cert_pem = read("api.tls_cert", cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("api.tls_cert", cert, format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(pem_error(
            "api.tls_cert",
            cert,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let key_pem = read("api.tls_key", key)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        pem_error(
            "api.tls_key",
            key,
            format!("holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    CertifiedKey::from_der(chain, private_key, provider).map_err(|source| TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
}

impl ApiTls {
    /// Re-reads the pair from `cert` and `key` (new paths from a reloaded configuration, or the
    /// same ones) and presents it from the next handshake on. Returns whether the pair changed.
    ///
    /// # Errors
    /// As [`load_tls`]; the running pair then stays.
    pub fn reload_from(&self, cert: &Path, key: &Path) -> Result<bool, TlsError> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let stamp = stamp(cert, key);
        let pair = read_pair(cert, key, &self.provider)?;
        let changed = {
            let old = self.current.0.load();
            old.cert != pair.cert
        } || files.cert != cert
            || files.key != key;
        self.current.0.store(Arc::new(pair));
        *files = Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
            stamp,
        };
        Ok(changed)
    }

    /// Re-reads the pair from the files it came from.
    ///
    /// # Errors
    /// As [`load_tls`]; the running pair then stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (cert, key) = self.paths();
        self.reload_from(&cert, &key)
    }

    /// The certificate and key files in use.
    pub fn paths(&self) -> (PathBuf, PathBuf) {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        (files.cert.clone(), files.key.clone())
    }

    /// Whether either file looks different from when the pair was last read.
    fn files_changed(&self) -> bool {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        stamp(&files.cert, &files.key) != files.stamp
    }

    /// Re-reads the pair whenever a file changes on disk, every `period`, until `cancel`. A
    /// pair that cannot be used is logged once per change and the running pair stays (a
    /// half-written file is read again at the next change, or the next look once it is whole).
    pub async fn watch(self: Arc<Self>, period: Duration, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut failed_stamp = None;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if !self.files_changed() {
                continue;
            }
            let (cert, key) = self.paths();
            let now = stamp(&cert, &key);
            match self.reload() {
                Ok(changed) => {
                    failed_stamp = None;
                    if changed {
                        tracing::info!(cert = %cert.display(), "the API's TLS certificate changed on disk: new connections get the new one");
                    }
                }
                Err(error) if failed_stamp != Some(now) => {
                    failed_stamp = Some(now);
                    tracing::warn!(%error, "the API's TLS files changed on disk but cannot be used: keeping the running certificate");
                }
                Err(_) => {}
            }
        }
    }
}
