//! Issue 13: DNS never waits for the database. A server restarted while its database is away
//! answers every name it answered before at once (from the last-known-good state in its data
//! directory), refuses writes with 503 and a JSON `error`, and catches up when the database
//! returns, without a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::{Api, dns_query};

async fn start(
    data_dir: &Path,
    database_url: Option<&str>,
) -> anyhow::Result<sixpn::serve::Running> {
    let mut config = sixpn::config::Config {
        data_dir: data_dir.to_owned(),
        database_url: database_url.map(str::to_owned),
        admin_token: Some("outage-admin".into()),
        ..Default::default()
    };
    config.api.listen = "127.0.0.1:0".parse().unwrap();
    config.dns.listen = vec!["127.0.0.1:0".parse().unwrap()];
    sixpn::serve::start(config).await
}

fn answers(dns: SocketAddr, name: &str, rtype: RecordType) -> Vec<String> {
    let msg = dns_query(dns, name, rtype);
    if msg.metadata.response_code != ResponseCode::NoError {
        return Vec::new();
    }
    let mut out: Vec<String> = msg
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::AAAA(a) => a.0.to_string(),
            other => other.to_string(),
        })
        .collect();
    out.sort();
    out
}

/// What a node and HAProxy ask: the peers, the group, the list of names.
fn everything(dns: SocketAddr) -> Vec<Vec<String>> {
    let mut out = vec![
        answers(dns, "web._g.internal", RecordType::AAAA),
        answers(dns, "_peer.internal", RecordType::TXT),
    ];
    for i in 0..3 {
        out.push(answers(
            dns,
            &format!("node-{i}._peer.internal"),
            RecordType::AAAA,
        ));
    }
    out
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Waits until the server saved its DNS state (it writes at most every 2 s).
async fn wait_saved(data_dir: &Path) {
    let path = data_dir.join(sixpn::snapshot::disk::FILE_NAME);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !path.exists() {
        assert!(Instant::now() < deadline, "the DNS state was never saved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A write that came just before may be saved a little later: give the pacer its interval.
    tokio::time::sleep(Duration::from_millis(2500)).await;
}

async fn write_is_refused(api: &Api, token: &str) {
    let (status, body) = api.register(token, "during-outage", "web").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_sqlite_unreadable_serves_last_known_good_then_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, None).await.unwrap();
    let api = Api::new(&format!("http://{}", server.api_addr), "outage-admin");
    let token = api.mint("personal", "k8s", Some("web")).await;
    for i in 0..3 {
        let (status, body) = api.register(&token, &format!("node-{i}"), "web").await;
        assert_eq!(status, 200, "{body}");
    }
    let dns = server.dns_addrs[0];
    let before = blocking(move || everything(dns)).await;
    assert!(before.iter().all(|a| !a.is_empty()), "{before:?}");
    wait_saved(&data).await;
    server.shutdown().await.unwrap();

    // The database file becomes unreadable: a directory stands where it was.
    let db = data.join("sixpn.db");
    let away = dir.path().join("away");
    std::fs::create_dir(&away).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        if from.exists() {
            std::fs::rename(&from, away.join(format!("sixpn.db{suffix}"))).unwrap();
        }
    }
    std::fs::create_dir(&db).unwrap();

    let started = Instant::now();
    let server = start(&data, None)
        .await
        .expect("starts without its database");
    let dns = server.dns_addrs[0];
    let during = blocking(move || everything(dns)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(during, before, "every name answers as before");
    let api = Api::new(&format!("http://{}", server.api_addr), "outage-admin");
    write_is_refused(&api, &token).await;

    // The database comes back: the server follows it without a restart.
    std::fs::remove_dir(&db).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let from = away.join(format!("sixpn.db{suffix}"));
        if from.exists() {
            std::fs::rename(&from, format!("{}{suffix}", db.display())).unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = api.register(&token, "after-outage", "web").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes never came back: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after =
        blocking(move || answers(dns, "after-outage._peer.internal", RecordType::AAAA)).await;
    assert_eq!(after.len(), 1, "the new peer resolves at once");
    server.shutdown().await.unwrap();
}

/// A throwaway PostgreSQL this test may stop and start (never the machine's own).
struct Postgres {
    child: Option<Child>,
    port: u16,
    data: PathBuf,
    dir: tempfile::TempDir,
}

impl Postgres {
    fn bin(tool: &str) -> Option<PathBuf> {
        let from_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
        });
        from_path.or_else(|| {
            let dir = std::fs::read_dir("/usr/lib/postgresql").ok()?;
            dir.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin").join(tool))
                .find(|p| p.is_file())
        })
    }

    fn new() -> Option<Postgres> {
        let initdb = Postgres::bin("initdb")?;
        Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .ok()?
            .status
            .success()
            .then_some(())?;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&initdb)
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = crate::support::free_port();
        let mut pg = Postgres {
            child: None,
            port,
            data,
            dir,
        };
        pg.start();
        Some(pg)
    }

    fn start(&mut self) {
        let postgres = Postgres::bin("postgres").expect("postgres next to initdb");
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&postgres)
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A fast shutdown of this instance only (by its data directory).
            let pg_ctl = Postgres::bin("pg_ctl").expect("pg_ctl next to initdb");
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pg_ctl)
                .args(["stop", "-m", "fast", "-D"])
                .arg(&self.data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_postgres_down_serves_last_known_good_then_catches_up() {
    let Some(mut pg) = Postgres::new() else {
        eprintln!("note: initdb/postgres or the postgres user missing; outage test skipped");
        return;
    };
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = loop {
        // PostgreSQL refuses connections for a moment after it starts listening.
        match start(&data, Some(&url)).await {
            Ok(server) => break server,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let api = Api::new(&format!("http://{}", server.api_addr), "outage-admin");
    let token = api.mint("personal", "k8s", Some("web")).await;
    for i in 0..3 {
        let (status, body) = api.register(&token, &format!("node-{i}"), "web").await;
        assert_eq!(status, 200, "{body}");
    }
    let dns = server.dns_addrs[0];
    let before = blocking(move || everything(dns)).await;
    wait_saved(&data).await;
    server.shutdown().await.unwrap();

    pg.stop();
    let started = Instant::now();
    let server = start(&data, Some(&url))
        .await
        .expect("starts without its database");
    eprintln!("started in {:?}", started.elapsed());
    let dns = server.dns_addrs[0];
    let during = blocking(move || everything(dns)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(during, before, "every name answers as before");
    let api = Api::new(&format!("http://{}", server.api_addr), "outage-admin");
    write_is_refused(&api, &token).await;

    pg.start();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = api.register(&token, "after-outage", "web").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes never came back: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after =
        blocking(move || answers(dns, "after-outage._peer.internal", RecordType::AAAA)).await;
    assert_eq!(after.len(), 1, "the new peer resolves at once");
    server.shutdown().await.unwrap();
}
