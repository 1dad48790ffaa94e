//! Copies and checks of a SQLite store, for `sixpn backup` and `sixpn restore`, and the file
//! modes of a SQLite store's files.
//!
//! A backup is `VACUUM INTO` on a connection of its own: one read transaction, so the copy is
//! the database as of one commit, while the server goes on writing (WAL mode lets readers and
//! the writer pass each other). A copy is then checked ([`inspect_sqlite`]): `PRAGMA
//! integrity_check`, the migrations table (it is a sixpn store, of a schema this binary knows)
//! and the generation row. The file handling around it (temporary names, modes, renames, the
//! data directory's lock) is the CLI's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode};

use super::SQLITE_MIGRATOR;
use crate::model::Generation;

/// What a check of a SQLite store file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFileInfo {
    /// The generation stored in it.
    pub generation: Generation,
    /// Its peers.
    pub peers: u64,
    /// Its orgs.
    pub orgs: u64,
    /// The newest migration applied to it.
    pub schema_version: i64,
}

/// Why a SQLite store file cannot be copied or used.
#[derive(Debug, thiserror::Error)]
pub enum FileCheckError {
    /// There is no file.
    #[error("{0}: no such file")]
    Missing(PathBuf),
    /// The file is not a SQLite database at all.
    #[error("{path} is not a SQLite database ({message})")]
    NotSqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's message.
        message: String,
    },
    /// A SQLite database, but not one sixpn made.
    #[error("{path} is not a sixpn store: {what}")]
    NotSixpn {
        /// The file.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// A sixpn store migrated by a newer sixpn than this one.
    #[error(
        "{path} has schema version {found}, newer than this sixpn knows ({known}): use the sixpn \
         version that wrote it, or a newer one"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its newest migration.
        found: i64,
        /// The newest this binary has.
        known: i64,
    },
    /// A migration was applied with other contents than this binary's, or failed half-way.
    #[error("{path}: migration {version} {why}")]
    BadMigration {
        /// The file.
        path: PathBuf,
        /// The migration.
        version: i64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `PRAGMA integrity_check` found damage.
    #[error("{path} fails SQLite's integrity check: {problems}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The first problems SQLite reported, `; `-separated.
        problems: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Database {
        /// The file.
        path: PathBuf,
        /// The error.
        source: sqlx::Error,
    },
}

impl FileCheckError {
    /// Whether the file is not what was asked for (not a sixpn store, a newer schema), as opposed
    /// to damaged or unreadable.
    pub fn is_wrong_file(&self) -> bool {
        matches!(
            self,
            FileCheckError::NotSqlite { .. }
                | FileCheckError::NotSixpn { .. }
                | FileCheckError::NewerSchema { .. }
                | FileCheckError::BadMigration { .. }
        )
    }
}

/// The file of a `sqlite:` URL (`sqlite://PATH` or `sqlite:PATH`, without `?…` options);
/// `None` for another scheme or an in-memory database.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// The files SQLite keeps next to a database: its write-ahead log, the log's index and the
/// rollback journal.
pub fn sqlite_side_files(db: &Path) -> [PathBuf; 3] {
    ["-wal", "-shm", "-journal"].map(|suffix| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// Makes the database file `db` private before SQLite opens it: its folder is created (mode
/// 0700) when missing, the file itself is created empty with mode 0600 (SQLite takes an empty
/// file for a new database, and gives its `-wal`, `-shm` and `-journal` files the database
/// file's mode), and an existing file or side file open to group or others is narrowed to 0600.
///
/// # Errors
/// Creating the folder or the file.
pub fn prepare_private_file(db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for path in std::iter::once(db.to_owned()).chain(sqlite_side_files(db)) {
        narrow_mode(&path);
    }
    Ok(())
}

/// Sets a regular file open to group or others to 0600 (logged); anything else is left alone.
pub fn narrow_mode(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if !meta.is_file() || mode & 0o077 == 0 {
        return;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        Ok(()) => {
            tracing::info!(file = %path.display(), was = format!("{mode:04o}"), "made the file private (mode 0600)")
        }
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, mode = format!("{mode:04o}"), "the file is open to group or others and cannot be made private; chmod 600 it")
        }
    }
}

/// Copies the SQLite store `db` (which a server may be writing) into `into`, an empty file the
/// caller made (with the mode the copy must have), as of one commit, and checks the copy
/// ([`inspect_sqlite`], allowing a newer schema: a copy is a copy). The copy is in rollback
/// journal mode, one file; the server puts it back in WAL mode when it opens it.
///
/// # Errors
/// [`FileCheckError`]: `db` is missing or not a sixpn store, the copy failed or fails its checks.
pub async fn backup_sqlite(db: &Path, into: &Path) -> Result<StoreFileInfo, FileCheckError> {
    if !db.is_file() {
        return Err(FileCheckError::Missing(db.to_owned()));
    }
    let fail = |source| FileCheckError::Database {
        path: db.to_owned(),
        source,
    };
    // Read-write (never created): a read-only connection could not take part in WAL locking
    // when the server is stopped and SQLite has removed its -shm file.
    let options = SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(30));
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| classify(db, e))?;
    let copied = async {
        check_schema(&mut conn, db, true).await?;
        let target = into.to_str().ok_or_else(|| {
            fail(sqlx::Error::Configuration(
                format!("{} is not UTF-8", into.display()).into(),
            ))
        })?;
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&mut conn)
            .await
            .map_err(fail)?;
        Ok::<(), FileCheckError>(())
    }
    .await;
    let _ = conn.close().await;
    copied?;
    inspect_sqlite(into, true).await
}

/// Checks that `path` is a whole sixpn store: `PRAGMA integrity_check` passes, every migration
/// applied to it is one of this binary's with the same contents (a newer one is allowed only
/// with `allow_newer`), and it has its generation row. Leaves it in rollback journal mode (one
/// file, no `-wal` or `-shm` beside it once closed).
///
/// # Errors
/// [`FileCheckError`] saying what is wrong.
pub async fn inspect_sqlite(
    path: &Path,
    allow_newer: bool,
) -> Result<StoreFileInfo, FileCheckError> {
    if !path.is_file() {
        return Err(FileCheckError::Missing(path.to_owned()));
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Delete)
        .busy_timeout(Duration::from_secs(30));
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| classify(path, e))?;
    let info = inspect_open(&mut conn, path, allow_newer).await;
    let _ = conn.close().await;
    info
}

async fn inspect_open(
    conn: &mut SqliteConnection,
    path: &Path,
    allow_newer: bool,
) -> Result<StoreFileInfo, FileCheckError> {
    let fail = |source| FileCheckError::Database {
        path: path.to_owned(),
        source,
    };
    let problems: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check(10)")
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| classify(path, e))?;
    if problems != ["ok"] {
        return Err(FileCheckError::Corrupt {
            path: path.to_owned(),
            problems: problems.join("; "),
        });
    }
    let schema_version = check_schema(conn, path, allow_newer).await?;
    let generation: i64 = sqlx::query_scalar("SELECT generation FROM meta WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(fail)?
        .ok_or_else(|| FileCheckError::NotSixpn {
            path: path.to_owned(),
            what: "its meta table has no generation row".into(),
        })?;
    let peers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM peers")
        .fetch_one(&mut *conn)
        .await
        .map_err(fail)?;
    let orgs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orgs")
        .fetch_one(&mut *conn)
        .await
        .map_err(fail)?;
    Ok(StoreFileInfo {
        generation: Generation(u64::try_from(generation).unwrap_or(0)),
        peers: u64::try_from(peers).unwrap_or(0),
        orgs: u64::try_from(orgs).unwrap_or(0),
        schema_version,
    })
}

/// Checks the migrations table against this binary's migrations; returns the newest applied.
async fn check_schema(
    conn: &mut SqliteConnection,
    path: &Path,
    allow_newer: bool,
) -> Result<i64, FileCheckError> {
    let not_sixpn = |what: &str| FileCheckError::NotSixpn {
        path: path.to_owned(),
        what: what.to_owned(),
    };
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name IN ('_sqlx_migrations', 'meta', 'orgs', 'peers')",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| classify(path, e))?;
    for table in ["_sqlx_migrations", "meta", "orgs", "peers"] {
        if !tables.iter().any(|t| t == table) {
            return Err(not_sixpn(&format!("it has no {table} table")));
        }
    }
    let applied: Vec<(i64, Vec<u8>, bool)> =
        sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await
            .map_err(|source| FileCheckError::Database {
                path: path.to_owned(),
                source,
            })?;
    let known = SQLITE_MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .max()
        .unwrap_or(0);
    let newest = applied.last().map_or(0, |(v, _, _)| *v);
    if newest == 0 {
        return Err(not_sixpn("no migration was ever applied to it"));
    }
    if newest > known && !allow_newer {
        return Err(FileCheckError::NewerSchema {
            path: path.to_owned(),
            found: newest,
            known,
        });
    }
    for (version, checksum, success) in &applied {
        let bad = |why| FileCheckError::BadMigration {
            path: path.to_owned(),
            version: *version,
            why,
        };
        if !success {
            return Err(bad("failed half-way"));
        }
        let ours = SQLITE_MIGRATOR
            .iter()
            .find(|m| m.version == *version && m.migration_type.is_up_migration());
        match ours {
            Some(m) if *m.checksum != **checksum => {
                return Err(bad(
                    "differs from this sixpn's (not a sixpn store, or edited)",
                ));
            }
            Some(_) => {}
            None if *version > known => {}
            None => return Err(bad("is unknown to this sixpn")),
        }
    }
    Ok(newest)
}

/// SQLite's "not a database" (26) as [`FileCheckError::NotSqlite`]; anything else as it is.
fn classify(path: &Path, e: sqlx::Error) -> FileCheckError {
    if let sqlx::Error::Database(db) = &e
        && db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
        && db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| c & 0xff == 26)
    {
        return FileCheckError::NotSqlite {
            path: path.to_owned(),
            message: db.message().to_owned(),
        };
    }
    FileCheckError::Database {
        path: path.to_owned(),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/sixpn/sixpn.db"),
            Some(PathBuf::from("/var/lib/sixpn/sixpn.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:data/x.db?mode=rwc"),
            Some(PathBuf::from("data/x.db"))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://db/sixpn"), None);
    }

    #[tokio::test]
    async fn a_store_file_is_private_and_its_copy_checks_out() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sub/sixpn.db");
        let url = format!("sqlite://{}", db.display());
        let store = crate::store::Store::open(&url, "fdaa::/16".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(db.parent().unwrap()), 0o700);
        for side in &sqlite_side_files(&db)[..2] {
            assert_eq!(mode(side), 0o600, "{}", side.display());
        }
        let generation = store.generation().await.unwrap();
        let copy = dir.path().join("copy.db");
        std::fs::File::create(&copy).unwrap();
        let info = backup_sqlite(&db, &copy).await.unwrap();
        assert_eq!(info.generation, generation);
        assert_eq!(info.orgs, 1);
        assert!(info.schema_version >= 7);
        // One file: no -wal or -shm beside the copy.
        for side in sqlite_side_files(&copy) {
            assert!(!side.exists(), "{}", side.display());
        }
        assert_eq!(inspect_sqlite(&copy, false).await.unwrap(), info);
        store.close().await;

        // A copy from a newer sixpn is refused, unless asked.
        let mut conn = SqliteConnection::connect(&format!("sqlite://{}", copy.display()))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'future', TRUE, X'00', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let err = inspect_sqlite(&copy, false).await.unwrap_err();
        assert!(
            matches!(err, FileCheckError::NewerSchema { found: 9999, .. }),
            "{err}"
        );
        assert!(err.is_wrong_file());
        assert_eq!(
            inspect_sqlite(&copy, true).await.unwrap().schema_version,
            9999
        );
    }

    #[tokio::test]
    async fn other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
        let err = inspect_sqlite(&garbage, false).await.unwrap_err();
        assert!(matches!(err, FileCheckError::NotSqlite { .. }), "{err}");

        let other = dir.path().join("other.db");
        let mut conn = SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", other.display()))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let err = inspect_sqlite(&other, false).await.unwrap_err();
        assert!(matches!(err, FileCheckError::NotSixpn { .. }), "{err}");
        assert!(err.to_string().contains("not a sixpn store"), "{err}");

        let err = inspect_sqlite(&dir.path().join("none"), false)
            .await
            .unwrap_err();
        assert!(matches!(err, FileCheckError::Missing(_)), "{err}");
    }
}
