//! Issue 18: `sixpn backup` copies a running SQLite store consistently while it takes writes at
//! full rate, `sixpn restore` puts a copy back for a stopped server and refuses what it must, and
//! on PostgreSQL (pg_dump/pg_restore) a running server that sees the generation go back reloads
//! once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use sqlx::Connection as _;

use crate::support::{
    Api, Serve, ServerProcess, TestDb, dns_query_async, eventually_async, sixpn_cli,
};

/// How many peers the acceptance test creates, and how many backups run meanwhile.
const CREATES: usize = 10_000;
const BACKUPS: usize = 5;

/// A config that lets one token write as fast as the server can take it.
fn unthrottled_config(dir: &Path) -> PathBuf {
    let path = dir.join("sixpn.toml");
    std::fs::write(
        &path,
        "[api]\ntoken_rate = 0\naccept_rate = 0\nmax_connections_per_ip = 1024\n",
    )
    .unwrap();
    path
}

/// Runs the CLI off the async workers.
async fn cli(dir: &Path, args: Vec<String>, env: Vec<(String, String)>) -> std::process::Output {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        sixpn_cli(&dir, &args, &env)
    })
    .await
    .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Opens a backup read-only, checks it with `PRAGMA integrity_check` and returns its peers' names.
async fn check_copy(path: &Path) -> HashSet<String> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let check: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(check, ["ok"], "{}", path.display());
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM peers")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    names.into_iter().collect()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_backups_during_10k_creates_are_whole_and_a_restore_keeps_every_acknowledged_peer()
{
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = unthrottled_config(dir.path());
    let serve = Serve::new(&data).args(["--config", config.to_str().unwrap()]);
    let server = serve.clone().spawn();
    let api = Api::new(&server.api, &server.admin_token);
    let token = api.mint("personal", "bulk", Some("web")).await;
    let data_env = vec![("SIXPN_DATA_DIR".to_owned(), data.display().to_string())];

    // 32 writers create CREATES peers between them; each acknowledged name is recorded.
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(Vec::<String>::with_capacity(CREATES)));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (api, token, next, acked) = (api.clone(), token.clone(), next.clone(), acked.clone());
        writers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= CREATES {
                    return;
                }
                let name = format!("p{i}");
                let (status, body) = api.register(&token, &name, "web").await;
                assert_eq!(status, 200, "{name}: {body}");
                acked.lock().unwrap().push(name);
            }
        });
    }

    // Meanwhile, BACKUPS backups, spread over the run.
    let mut copies = Vec::new();
    for k in 0..BACKUPS {
        let threshold = (k + 1) * CREATES / (BACKUPS + 2);
        eventually_async(Duration::from_secs(300), "creates progress", || async {
            match acked.lock().unwrap().len() {
                n if n >= threshold => Ok(()),
                n => Err(format!("{n} acknowledged")),
            }
        })
        .await;
        // Every name acknowledged before the backup starts must be in the copy.
        let before: Vec<String> = acked.lock().unwrap().clone();
        assert!(
            before.len() < CREATES,
            "backup {k} starts while the creates still run"
        );
        let copy = dir.path().join(format!("backup-{k}.db"));
        let started = Instant::now();
        let out = cli(
            dir.path(),
            vec!["backup".into(), copy.display().to_string()],
            data_env.clone(),
        )
        .await;
        assert!(out.status.success(), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("integrity check ok"), "{stdout}");
        eprintln!(
            "backup {k}: {} acknowledged before, took {:?}, {} after",
            before.len(),
            started.elapsed(),
            acked.lock().unwrap().len()
        );
        assert_eq!(mode(&copy), 0o600, "the copy is private");
        let names = check_copy(&copy).await;
        let missing: Vec<&String> = before.iter().filter(|n| !names.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "backup {k} lacks {} acknowledged peers, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        copies.push((copy, before, names));
    }
    while let Some(res) = writers.join_next().await {
        res.unwrap();
    }
    assert_eq!(acked.lock().unwrap().len(), CREATES);

    // A second backup to the same file is refused without --force, and replaces it with it.
    let (last, before_last, in_last) = copies.pop().unwrap();
    let out = cli(
        dir.path(),
        vec!["backup".into(), last.display().to_string()],
        data_env.clone(),
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("--force"), "{}", text(&out));
    assert_eq!(
        check_copy(&last).await,
        in_last,
        "the refused run left it alone"
    );

    // A restore while the server runs is refused.
    let restore = vec!["restore".to_owned(), last.display().to_string()];
    let out = cli(dir.path(), restore.clone(), data_env.clone()).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("stop it first"), "{}", text(&out));

    // Stopped, the server's store is replaced by the last copy.
    server.stop();
    let out = cli(dir.path(), restore, data_env.clone()).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !data.join("dns-state.bin").exists(),
        "saved DNS state removed"
    );
    assert!(!data.join("sixpn.db-wal").exists(), "stale WAL removed");
    assert_eq!(mode(&data.join("sixpn.db")), 0o600);

    // The restored server has every peer acknowledged before that backup started, and exactly
    // the copy's peers.
    let server = serve.spawn();
    let api = Api::new(&server.api, &server.admin_token);
    let lost = Arc::new(Mutex::new(Vec::new()));
    let names = Arc::new(Mutex::new(before_last.clone()));
    let mut checkers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (base, names, lost) = (api.base.clone(), names.clone(), lost.clone());
        let http = reqwest::Client::new();
        checkers.spawn(async move {
            loop {
                let Some(name) = names.lock().unwrap().pop() else {
                    return;
                };
                let res = http
                    .get(format!("{base}/api/v1/orgs/personal/peers/{name}"))
                    .bearer_auth(crate::support::ADMIN_TOKEN)
                    .send()
                    .await
                    .unwrap();
                if res.status() != 200 {
                    lost.lock().unwrap().push((name, res.status().as_u16()));
                }
            }
        });
    }
    while let Some(res) = checkers.join_next().await {
        res.unwrap();
    }
    let lost = lost.lock().unwrap().clone();
    assert!(
        lost.is_empty(),
        "{} peers acknowledged before the backup are missing after the restore, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // A peer created after the copy was taken is not there; one in it resolves.
    let after: Vec<String> = (0..CREATES)
        .map(|i| format!("p{i}"))
        .filter(|n| !in_last.contains(n))
        .take(1)
        .collect();
    assert_eq!(after.len(), 1, "the last copy was taken before the end");
    let status = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/orgs/personal/peers/{}",
            api.base, after[0]
        ))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    let one = before_last.first().unwrap();
    let answer = dns_query_async(
        server.dns,
        &format!("{one}._peer.internal"),
        RecordType::AAAA,
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer.answers.len(), 1);
    // And it takes writes again.
    let (status, body) = api.register(&token, "after-restore", "web").await;
    assert_eq!(status, 200, "{body}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_backup_and_restore_refuse_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let data_env = env(&[("SIXPN_DATA_DIR", data.to_str().unwrap())]);
    let args = |v: &[&str]| -> Vec<String> { v.iter().map(|s| (*s).to_owned()).collect() };

    // No store yet.
    let out = cli(dir.path(), args(&["backup", "b.db"]), data_env.clone()).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("no SQLite store"), "{}", text(&out));

    // PostgreSQL: the commands name pg_dump and pg_restore.
    let pg = env(&[
        ("SIXPN_DATA_DIR", data.to_str().unwrap()),
        (
            "SIXPN_DATABASE_URL",
            "postgres://sixpn:s3cret@db.invalid/sixpn",
        ),
    ]);
    for (command, tool) in [("backup", "pg_dump"), ("restore", "pg_restore")] {
        let out = cli(dir.path(), args(&[command, "x.dump"]), pg.clone()).await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(tool), "{}", text(&out));
        assert!(!text(&out).contains("s3cret"), "{}", text(&out));
    }

    // A store to work on: a server that ran once.
    let server = ServerProcess::spawn(&data, &[]);
    server.stop();
    let out = cli(dir.path(), args(&["backup", "good.db"]), data_env.clone()).await;
    assert!(out.status.success(), "{}", text(&out));
    // The store itself is never a backup's target.
    let db = data.join("sixpn.db");
    let out = cli(
        dir.path(),
        args(&["backup", "--force", db.to_str().unwrap()]),
        data_env.clone(),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let store_before = std::fs::read(&db).unwrap();

    // Files that are not a sixpn store of a schema this sixpn knows are refused, and the store
    // stays as it was.
    std::fs::write(dir.path().join("garbage.db"), vec![b'x'; 8192]).unwrap();
    let other = dir.path().join("other.db");
    {
        let url = format!("sqlite://{}?mode=rwc", other.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE notes (body TEXT)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let newer = dir.path().join("newer.db");
    std::fs::copy(dir.path().join("good.db"), &newer).unwrap();
    {
        let url = format!("sqlite://{}", newer.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99999, 'from the future', TRUE, X'00', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    for (file, says) in [
        ("garbage.db", "not a SQLite database"),
        ("other.db", "not a sixpn store"),
        ("newer.db", "newer than this sixpn knows"),
    ] {
        let out = cli(dir.path(), args(&["restore", file]), data_env.clone()).await;
        assert_eq!(out.status.code(), Some(2), "{file}: {}", text(&out));
        assert!(text(&out).contains(says), "{file}: {}", text(&out));
    }
    let out = cli(
        dir.path(),
        args(&["restore", "missing.db"]),
        data_env.clone(),
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(std::fs::read(&db).unwrap(), store_before, "store untouched");
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .chain(std::fs::read_dir(dir.path()).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The good copy restores.
    let out = cli(dir.path(), args(&["restore", "good.db"]), data_env.clone()).await;
    assert!(out.status.success(), "{}", text(&out));
}

/// Whether `name` answers AAAA on `dns`.
async fn resolves(dns: std::net::SocketAddr, name: &str) -> bool {
    let answer = dns_query_async(dns, &format!("{name}._peer.internal"), RecordType::AAAA).await;
    answer.metadata.response_code == ResponseCode::NoError && !answer.answers.is_empty()
}

/// Runs a PostgreSQL client tool; panics with its output when it fails.
fn pg_tool(tool: &str, args: &[&str]) {
    let out = std::process::Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue18_postgres_restore_under_running_replicas_reloads_each_once() {
    let Some(db) = TestDb::postgres_if_configured("the pg_dump/pg_restore test").await else {
        return;
    };
    if std::process::Command::new("pg_restore")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("note: pg_dump/pg_restore missing; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let replica = |name: &str| {
        Serve::new(&dir.path().join(name))
            .env("SIXPN_DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn,sixpn::snapshot=info")
            .capture_stderr()
            .spawn()
    };
    let (a, b) = (replica("a"), replica("b"));
    let api_a = Api::new(&a.api, &a.admin_token);
    let api_b = Api::new(&b.api, &b.admin_token);
    let token = api_a.mint("personal", "k8s", Some("web")).await;
    for name in ["before-1", "before-2"] {
        let (status, body) = api_a.register(&token, name, "web").await;
        assert_eq!(status, 200, "{body}");
    }
    let dump = dir.path().join("sixpn.dump");
    pg_tool(
        "pg_dump",
        &["--format=custom", "--file", dump.to_str().unwrap(), &db.url],
    );
    let (status, body) = api_b.register(&token, "after-dump", "web").await;
    assert_eq!(status, 200, "{body}");
    for server in [&a, &b] {
        let dns = server.dns;
        eventually_async(
            Duration::from_secs(10),
            "after-dump resolves",
            || async move {
                if resolves(dns, "after-dump").await {
                    Ok(())
                } else {
                    Err("not yet".into())
                }
            },
        )
        .await;
    }

    // The restore, while both run: the generation goes back.
    pg_tool(
        "pg_restore",
        &[
            "--clean",
            "--if-exists",
            "--single-transaction",
            "--dbname",
            &db.url,
            dump.to_str().unwrap(),
        ],
    );
    for server in [&a, &b] {
        let dns = server.dns;
        eventually_async(
            Duration::from_secs(15),
            "each replica serves the restored state",
            || async move {
                match (
                    resolves(dns, "before-1").await,
                    resolves(dns, "before-2").await,
                    resolves(dns, "after-dump").await,
                ) {
                    (true, true, false) => Ok(()),
                    seen => Err(format!("{seen:?}")),
                }
            },
        )
        .await;
    }
    // Writes go on from the restored generation, and every replica follows them.
    let (status, body) = api_b.register(&token, "after-restore", "web").await;
    assert_eq!(status, 200, "{body}");
    for server in [&a, &b] {
        let dns = server.dns;
        eventually_async(
            Duration::from_secs(10),
            "after-restore resolves",
            || async move {
                if resolves(dns, "after-restore").await {
                    Ok(())
                } else {
                    Err("not yet".into())
                }
            },
        )
        .await;
    }
    // Each replica read the store in full twice: at start, and once after the restore.
    for (name, server) in [("a", a), ("b", b)] {
        let log = server.stop();
        let full = log
            .matches("DNS snapshot built from a full read of the store")
            .count();
        assert_eq!(full, 2, "replica {name} full reads:\n{log}");
    }
}
