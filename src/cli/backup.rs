//! `sixpn backup FILE` and `sixpn restore FILE`: a consistent copy of a SQLite store, taken
//! while the server runs, and putting one back in place for a stopped server.
//!
//! Both find the store as `sixpn serve` does (config file, `SIXPN_*` variables, flags). Neither
//! leaves a half-written file behind: the copy is made under a temporary name (mode 0600) in the
//! destination's folder, checked, synced and renamed. PostgreSQL has its own tools (`pg_dump`,
//! `pg_restore`); for it both commands say so and fail.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::exit::{Failure, fail};
use super::{BackupArgs, RestoreArgs, StoreArgs};
use crate::config::{Config, Overrides, redact_url};
use crate::store::backup::{
    FileCheckError, backup_sqlite, inspect_sqlite, sqlite_path, sqlite_side_files,
};

/// `sixpn backup FILE`.
///
/// # Errors
/// One line: a PostgreSQL store, no store, FILE exists (without `--force`), the copy failed or
/// failed its checks.
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let (_, db) = sqlite_store(&args.store, "backup")?;
    if !db.is_file() {
        return Err(fail(
            Failure::NotFound,
            format!(
                "no SQLite store at {}: point --data-dir (SIXPN_DATA_DIR), --database-url or \
                 --config at the server's",
                db.display()
            ),
        ));
    }
    let dest = args.file;
    if is_store_file(&dest, &db) {
        return Err(fail(
            Failure::Usage,
            format!(
                "{} is the store itself (or one of its files); give the backup another name",
                dest.display()
            ),
        ));
    }
    if dest.exists() && !args.force {
        return Err(fail(
            Failure::Conflict,
            format!("{} exists; pass --force to replace it", dest.display()),
        ));
    }
    let tmp = temp_beside(&dest, "backup")?;
    let res = async {
        let info = backup_sqlite(&db, &tmp)
            .await
            .map_err(|e| check_failure(e, "the copy"))?;
        sync_file(&tmp)?;
        place(&tmp, &dest, args.force)?;
        anyhow::Ok(info)
    }
    .await;
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let info = res?;
    let size = std::fs::metadata(&dest).map_or(0, |m| m.len());
    super::output::print(&format!(
        "backed up {} to {} ({size} bytes): generation {}, {} orgs, {} peers, schema version {}; integrity check ok\n",
        db.display(),
        dest.display(),
        info.generation,
        info.orgs,
        info.peers,
        info.schema_version
    ))
}

/// `sixpn restore FILE`.
///
/// # Errors
/// One line: a PostgreSQL store, a server running on the data directory, FILE missing, not a
/// sixpn store, of a newer schema or damaged, or the replacement failing.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let (config, db) = sqlite_store(&args.store, "restore")?;
    let src = args.file;
    if !src.is_file() {
        return Err(fail(
            Failure::NotFound,
            format!("{}: no such file", src.display()),
        ));
    }
    let data_dir = crate::serve::bootstrap::prepare_data_dir(&config)?;
    // Held until the store is replaced: no server starts on it meanwhile.
    let _lock = crate::serve::lock_data_dir(&data_dir).map_err(|e| {
        match e.downcast_ref::<crate::serve::DataDirLocked>() {
            Some(locked) => fail(
                Failure::Conflict,
                format!(
                    "a sixpn server ({}) is running on data directory {}: stop it first \
                     (sixpn restore replaces the store of a stopped server)",
                    locked.holder,
                    data_dir.display()
                ),
            ),
            None => e,
        }
    })?;
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = temp_beside(&db, "restore")?;
    let res = async {
        copy_into(&src, &tmp)?;
        let info = inspect_sqlite(&tmp, false)
            .await
            .map_err(|e| check_failure(e, &src.display().to_string()))?;
        sync_file(&tmp)?;
        // The old store's log and journal would be replayed into the new file: they go first.
        for side in sqlite_side_files(&db) {
            remove_if_there(&side)?;
        }
        std::fs::rename(&tmp, &db)
            .with_context(|| format!("renaming {} to {}", tmp.display(), db.display()))?;
        sync_dir(&db);
        anyhow::Ok(info)
    }
    .await;
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let info = res?;
    // The saved DNS state is of the replaced store (the same database identity): the server
    // rebuilds it from the restored one.
    let state = data_dir.join(crate::snapshot::disk::FILE_NAME);
    remove_if_there(&state)?;
    remove_if_there(&state.with_extension("bin.tmp"))?;
    sync_dir(&state);
    super::output::print(&format!(
        "restored {} into {}: generation {}, {} orgs, {} peers, schema version {}; start the server\n",
        src.display(),
        db.display(),
        info.generation,
        info.orgs,
        info.peers,
        info.schema_version
    ))
}

/// The configuration as `sixpn serve` reads it, and its SQLite file; a PostgreSQL store is an
/// error that names the tool to use instead.
fn sqlite_store(args: &StoreArgs, what: &str) -> anyhow::Result<(Config, PathBuf)> {
    let overrides = Overrides {
        data_dir: args.data_dir.clone(),
        database_url: args.database_url.clone(),
        ..Overrides::default()
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    let url = config.database_url();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let tool = if what == "backup" {
            "pg_dump --format=custom --file=FILE \"$DATABASE_URL\""
        } else {
            "pg_restore --clean --if-exists --single-transaction --dbname=\"$DATABASE_URL\" FILE"
        };
        return Err(fail(
            Failure::Usage,
            format!(
                "the store is PostgreSQL ({}): sixpn {what} is for SQLite; use {tool} (README: \"Backup and restore\")",
                redact_url(&url)
            ),
        ));
    }
    let db = sqlite_path(&url).ok_or_else(|| {
        fail(
            Failure::Usage,
            format!("database_url {} names no SQLite file", redact_url(&url)),
        )
    })?;
    Ok((config, db))
}

/// The error for a copy or a file that failed its checks: a file that is not what was asked
/// for is a usage error (exit 2), anything else a plain failure.
fn check_failure(e: FileCheckError, what: &str) -> anyhow::Error {
    let failure = match &e {
        _ if e.is_wrong_file() => Failure::Usage,
        FileCheckError::Missing(_) => Failure::NotFound,
        _ => Failure::Other,
    };
    let message = match &e {
        FileCheckError::Corrupt { problems, .. } => {
            format!("{what} fails SQLite's integrity check: {problems}")
        }
        _ => e.to_string(),
    };
    fail(failure, message)
}

/// Whether `path` names the store `db` or one of its side files.
fn is_store_file(path: &Path, db: &Path) -> bool {
    let absolute = |p: &Path| -> Option<PathBuf> {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new(".")).canonicalize().ok()?;
        Some(dir.join(p.file_name()?))
    };
    let Some(path) = absolute(path) else {
        return false;
    };
    std::iter::once(db.to_owned())
        .chain(sqlite_side_files(db))
        .filter_map(|f| absolute(&f))
        .any(|f| f == path)
}

/// A new empty file (mode 0600) beside `path`, named after it, for a copy made before it is
/// renamed to `path`.
fn temp_beside(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{what}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    Ok(tmp)
}

/// Copies the file `src` into the existing file `dest`, keeping `dest`'s mode.
fn copy_into(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let mut from =
        std::fs::File::open(src).with_context(|| format!("reading {}", src.display()))?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    std::io::copy(&mut from, &mut to)
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    Ok(())
}

fn sync_file(path: &Path) -> anyhow::Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", path.display()))
}

/// Syncs the folder of `path`, so a rename or removal in it survives a crash (best effort).
fn sync_dir(path: &Path) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}

fn remove_if_there(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Puts the checked copy `tmp` at `dest`: replacing a file there with `force`, else only if
/// none appeared meanwhile (a hard link fails on an existing name).
fn place(tmp: &Path, dest: &Path, force: bool) -> anyhow::Result<()> {
    if force {
        std::fs::rename(tmp, dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    } else {
        match std::fs::hard_link(tmp, dest) {
            Ok(()) => {
                let _ = std::fs::remove_file(tmp);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(fail(
                    Failure::Conflict,
                    format!("{} exists; pass --force to replace it", dest.display()),
                ));
            }
            // A file system without hard links: a rename, the name was free a moment ago.
            Err(_) => std::fs::rename(tmp, dest)
                .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?,
        }
    }
    sync_dir(dest);
    Ok(())
}
