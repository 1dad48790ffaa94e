//! Issue 13: DNS never waits for the database. A server restarted while its database is away
//! answers every name it answered before at once (from the last-known-good state in its data
//! directory), refuses writes with 503 and a JSON `error`, and catches up when the database
//! returns, without a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::postgres::Cluster;
use crate::support::wait::state_saved;
use crate::support::{Api, dns_query, eventually_async, start_server_on};

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

/// Waits until the server saved its DNS state with every write made so far (it writes at most
/// every 2 s).
async fn wait_saved(server: &sixpn::serve::Running, data_dir: &std::path::Path) {
    let generation = server.store.generation().await.unwrap();
    state_saved(data_dir, generation).await;
}

/// Before the outage: a server on `database_url` with three peers in group `web`, stopped once
/// their DNS state is saved. Returns the token and what the names answered.
async fn serve_three_peers(
    data: &std::path::Path,
    database_url: Option<&str>,
) -> (String, Vec<Vec<String>>) {
    let server = start_server_on(data, database_url)
        .await
        .expect("starts with its database");
    let api = Api::of(&server);
    let token = api.mint("personal", "k8s", Some("web")).await;
    for i in 0..3 {
        let (status, body) = api.register(&token, &format!("node-{i}"), "web").await;
        assert_eq!(status, 200, "{body}");
    }
    let dns = server.dns_addrs[0];
    let before = blocking(move || everything(dns)).await;
    assert!(before.iter().all(|a| !a.is_empty()), "{before:?}");
    wait_saved(&server, data).await;
    server.shutdown().await.unwrap();
    (token, before)
}

/// During the outage: a server restarted without its database answers every name as `before`
/// at once (well within the store's connect timeout), and refuses a write with 503.
async fn restart_without_database(
    data: &std::path::Path,
    database_url: Option<&str>,
    token: &str,
    before: &[Vec<String>],
) -> (sixpn::serve::Running, Api) {
    let started = Instant::now();
    let server = start_server_on(data, database_url)
        .await
        .expect("starts without its database");
    eprintln!("started in {:?}", started.elapsed());
    let dns = server.dns_addrs[0];
    let during = blocking(move || everything(dns)).await;
    // It waited for its store only its patience (0.6 s), not the pool's connect timeout (10 s
    // on PostgreSQL): started and answering well before that, even on a busy machine.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "started and answered after {:?}",
        started.elapsed()
    );
    assert_eq!(during, before, "every name answers as before");
    let api = Api::of(&server);
    write_is_refused(&api, token).await;
    (server, api)
}

/// Registers a peer until the server takes writes again (the database came back).
async fn writes_come_back(api: &Api, token: &str, within: Duration) {
    eventually_async(within, "writes come back", || async {
        match api.register(token, "after-outage", "web").await {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
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
    let (token, before) = serve_three_peers(&data, None).await;

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

    let (server, api) = restart_without_database(&data, None, &token, &before).await;
    let dns = server.dns_addrs[0];

    // The database comes back: the server follows it without a restart.
    std::fs::remove_dir(&db).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let from = away.join(format!("sixpn.db{suffix}"));
        if from.exists() {
            std::fs::rename(&from, format!("{}{suffix}", db.display())).unwrap();
        }
    }
    writes_come_back(&api, &token, Duration::from_secs(15)).await;
    let after =
        blocking(move || answers(dns, "after-outage._peer.internal", RecordType::AAAA)).await;
    assert_eq!(after.len(), 1, "the new peer resolves at once");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_postgres_down_serves_last_known_good_then_catches_up() {
    let Some(mut pg) = Cluster::start(None, "the PostgreSQL outage test") else {
        return;
    };
    pg.ready().await;
    let url = pg.url("");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (token, before) = serve_three_peers(&data, Some(&url)).await;

    pg.stop();
    let (server, api) = restart_without_database(&data, Some(&url), &token, &before).await;
    let dns = server.dns_addrs[0];

    pg.start_again();
    writes_come_back(&api, &token, Duration::from_secs(20)).await;
    let after =
        blocking(move || answers(dns, "after-outage._peer.internal", RecordType::AAAA)).await;
    assert_eq!(after.len(), 1, "the new peer resolves at once");
    server.shutdown().await.unwrap();
}
