//! `kill -9` of `sixpn serve` during a stream of writes loses no acknowledged peer, on SQLite
//! and on PostgreSQL.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{Api, ServerProcess, TestDb, eventually_async};

async fn crash_during_writes(db_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let mut extra = vec![];
    if let Some(url) = db_url {
        extra.push(("SIXPN_DATABASE_URL", url));
    }
    let mut server = ServerProcess::spawn(dir.path(), &extra);
    let api = Api::new(&server.api, &server.admin_token);
    let token = api.mint("personal", "crash", Some("web")).await;

    // Four writers register peers until the server dies; each records what was acknowledged.
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let api = api.clone();
        let token = token.clone();
        let acked = acked.clone();
        writers.spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                let (status, body) = api.register(&token, &name, "web").await;
                match status {
                    200 => {
                        assert!(body["us"].is_string());
                        acked.lock().unwrap().insert(name);
                    }
                    0 => return, // connection refused or reset: the server is gone
                    other => panic!("unexpected {other}: {body}"),
                }
            }
        });
    }
    // Let some writes land, then SIGKILL in the middle of the stream.
    eventually_async(
        Duration::from_secs(30),
        "40 writes acknowledged",
        || async {
            match acked.lock().unwrap().len() {
                n if n >= 40 => Ok(()),
                n => Err(format!("{n} so far")),
            }
        },
    )
    .await;
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    while writers.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 40);

    server.restart();
    let api = Api::new(&server.api, &server.admin_token);
    let stored: HashSet<String> = api
        .peers("personal")
        .await
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "acknowledged peers lost after kill -9: {lost:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_peer_sqlite() {
    crash_during_writes(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_peer_postgres() {
    let Some(db) = TestDb::postgres_if_configured("PostgreSQL crash test").await else {
        return;
    };
    crash_during_writes(Some(&db.url)).await;
}
