//! The last-known-good DNS state on disk, so DNS answers at once after a restart even while the
//! database is unreachable.
//!
//! The publisher writes what the snapshot is built from (the [`Model`]: orgs, peer names, groups
//! and addresses; no keys) to `<data_dir>/dns-state.bin`, atomically (a temporary file of mode
//! 0600, fsync, rename, fsync of the folder), tagged with its generation and the identity of the
//! store it came from. At start the server reads it back and serves from it until the store
//! answers; a file of another store (a different identity) is never used.
//!
//! Writing costs O(peers), so it runs on a blocking thread and at most as often as keeps it under
//! a few percent of one core: after a change, waiting at least [`MIN_INTERVAL`] and at least
//! twenty times as long as the last write took; and once more when the server stops, after its
//! API answered its last request (see the publisher).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Model;

/// The file name in the data directory.
pub const FILE_NAME: &str = "dns-state.bin";

/// The shortest time between two writes.
pub const MIN_INTERVAL: Duration = Duration::from_secs(2);

/// Where and for which store the state is kept.
#[derive(Debug, Clone)]
pub struct StateFile {
    /// The file.
    pub path: PathBuf,
    /// The identity of the store whose state it holds.
    pub identity: String,
    /// When set, the identity is `<fingerprint>/<the store's identity>`, read when saving (a
    /// store opened while its database was down learns its identity later; nothing is saved
    /// before).
    follow: Option<(String, crate::store::Store)>,
}

/// A short fingerprint of a database URL (with its password removed): a state file written for
/// one URL is never served for another.
pub fn url_fingerprint(redacted_url: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(redacted_url.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl StateFile {
    /// The state file at `path` for `store`, reached at a URL with `fingerprint`
    /// ([`url_fingerprint`]).
    pub fn for_store(path: &Path, fingerprint: &str, store: &crate::store::Store) -> StateFile {
        StateFile {
            path: path.to_owned(),
            identity: String::new(),
            follow: Some((fingerprint.to_owned(), store.clone())),
        }
    }

    /// The identity to write now; `None` while the store's is not known yet.
    pub fn current_identity(&self) -> Option<String> {
        match &self.follow {
            None => Some(self.identity.clone()),
            Some((fingerprint, store)) => {
                let id = store.identity();
                (!id.is_empty()).then(|| format!("{fingerprint}/{id}"))
            }
        }
    }

    /// The state file in `data_dir` for the store `identity`.
    pub fn new(data_dir: &Path, identity: impl Into<String>) -> StateFile {
        StateFile {
            path: data_dir.join(FILE_NAME),
            identity: identity.into(),
            follow: None,
        }
    }

    /// Writes `model` atomically. Returns how long it took.
    ///
    /// # Errors
    /// The I/O error.
    pub fn save(&self, model: &Model) -> std::io::Result<Duration> {
        let identity = self.current_identity().unwrap_or_default();
        self.save_unsealed(model.encode_unsealed(&identity))
    }

    /// Writes what [`Model::encode_unsealed`] made (with this file's identity), sealing it here.
    ///
    /// # Errors
    /// The I/O error.
    pub fn save_unsealed(&self, unsealed: Vec<u8>) -> std::io::Result<Duration> {
        let started = Instant::now();
        let bytes = super::model::encoding::seal(unsealed);
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("bin.tmp");
        {
            use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
            // Private (0600) from creation whatever the umask or the folder's mode, and again
            // when an older temporary file is reused: the rename keeps the mode.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        // The rename itself must survive a crash.
        std::fs::File::open(dir)?.sync_all()?;
        Ok(started.elapsed())
    }

    /// Reads the state back, if there is one for this store. A missing file is `Ok(None)`; a
    /// damaged one or one of another store is logged and `Ok(None)` too.
    pub fn load(&self) -> Option<Model> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "cannot read the saved DNS state; ignoring it");
                return None;
            }
        };
        let expected = self.current_identity()?;
        match Model::decode(&bytes) {
            Ok((model, identity)) if identity == expected => Some(model),
            Ok((_, identity)) => {
                tracing::warn!(path = %self.path.display(), file = %identity, store = %expected, "the saved DNS state belongs to another database; ignoring it");
                None
            }
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "the saved DNS state is damaged; ignoring it");
                None
            }
        }
    }

    /// Reads the state back whatever store it came from, with that store's identity (for a
    /// server that cannot reach its store yet to serve from, see [`StateFile::load`]).
    pub fn load_any(path: &Path) -> Option<(Model, String)> {
        let bytes = std::fs::read(path).ok()?;
        match Model::decode(&bytes) {
            Ok(found) => Some(found),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "the saved DNS state is damaged; ignoring it");
                None
            }
        }
    }
}

/// Decides when the publisher writes the state: not more often than [`MIN_INTERVAL`] nor than
/// twenty times the last write's duration.
#[derive(Debug)]
pub(crate) struct Pacer {
    last: Option<Instant>,
    last_took: Duration,
}

impl Pacer {
    pub(crate) fn new() -> Pacer {
        Pacer {
            last: None,
            last_took: Duration::ZERO,
        }
    }

    /// How long to wait before the next write may start.
    pub(crate) fn wait(&self) -> Duration {
        let gap = MIN_INTERVAL.max(self.last_took * 20);
        self.last
            .map_or(Duration::ZERO, |t| gap.saturating_sub(t.elapsed()))
    }

    pub(crate) fn wrote(&mut self, took: Duration) {
        self.last = Some(Instant::now());
        self.last_took = took;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Generation, Org};
    use crate::store::Dump;

    #[test]
    fn saved_state_is_read_back_only_for_the_same_store() {
        let dir = tempfile::tempdir().unwrap();
        let dump = Dump {
            generation: Generation(5),
            orgs: vec![Org {
                slug: "personal".parse().unwrap(),
                prefix: "fdaa:9:9::/48".parse().unwrap(),
                created_at: 1,
            }],
            peers: vec![],
        };
        let model = Model::from_dump(&dump);
        let file = StateFile::new(dir.path(), "db-a");
        assert!(file.load().is_none(), "nothing saved yet");
        file.save(&model).unwrap();
        assert_eq!(file.load().unwrap().generation(), Generation(5));
        assert!(StateFile::new(dir.path(), "db-b").load().is_none());
        let (any, identity) = StateFile::load_any(&file.path).unwrap();
        assert_eq!(
            (any.generation(), identity.as_str()),
            (Generation(5), "db-a")
        );
        std::fs::write(&file.path, b"garbage").unwrap();
        assert!(file.load().is_none());
    }
}
