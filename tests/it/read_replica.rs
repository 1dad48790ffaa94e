//! Issue 17: a replica that reads from a PostgreSQL hot standby (`read_database_url`) and writes
//! to the primary (`database_url`). Real clusters: a primary and a streaming standby made with
//! `pg_basebackup -R`; the standby's replay is paused to make it lag on purpose.
//!
//! - It serves DNS from the standby, and sees a write made through another replica once the
//!   standby replays it (a paused standby proves the reads go there).
//! - Its own writes are in its DNS before the `200`, even while its standby lags, and when the
//!   standby later brings them, its published generation never goes backwards.
//! - With the primary stopped, a write answers `503` with a JSON `error` within 1 s, DNS keeps
//!   answering, and `/readyz` names the part that is down.
//! - Beside SQLite, `read_database_url` is refused at start.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::support::postgres::Cluster;
use crate::support::{Api, Serve, dns_query_async, eventually_async, server_config};

/// A primary and its streaming standby, both ready; `None` when PostgreSQL's tools are missing.
async fn primary_and_standby(what: &str) -> Option<(Cluster, Cluster)> {
    let primary = Cluster::start(None, what)?;
    primary.ready().await;
    let standby = primary.standby(what)?;
    standby.ready().await;
    Some((primary, standby))
}

/// Starts an in-process replica on `primary`, reading from `standby` when given.
async fn replica(
    data: &std::path::Path,
    primary: &Cluster,
    standby: Option<&Cluster>,
) -> sixpn::serve::Running {
    let mut config = server_config(data, Some(&primary.url("")));
    if let Some(standby) = standby {
        config.read_database_url = Some(standby.url(""));
        config.read_poll_period = Duration::from_millis(50);
    }
    sixpn::serve::start(config).await.expect("replica starts")
}

/// Waits until `server` says it is ready (`/readyz` 200): a replica whose primary answered
/// slowly at start (a loaded machine) prepares the database in the background and answers 503
/// meanwhile, which a client retries.
async fn until_ready(server: &sixpn::serve::Running) {
    let base = format!("http://{}", server.api_addr);
    eventually_async(Duration::from_secs(30), "the replica is ready", || {
        let base = base.clone();
        async move {
            match get(&base, "/readyz").await {
                (200, _) => Ok(()),
                (status, body) => Err(format!("{status} {body}")),
            }
        }
    })
    .await;
}

/// Whether `name` answers (AAAA, NOERROR with an answer) on `dns`.
async fn resolves(dns: SocketAddr, name: &str) -> bool {
    let msg = dns_query_async(dns, name, RecordType::AAAA).await;
    msg.metadata.response_code == ResponseCode::NoError && !msg.answers.is_empty()
}

/// `GET {base}{path}`: status and JSON body.
async fn get(base: &str, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The generation `/healthz` says DNS has published.
async fn published(base: &str) -> u64 {
    let (status, body) = get(base, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    body["generation"].as_u64().expect("generation")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue17_a_replica_follows_its_standby_and_its_own_writes_never_wait_for_it() {
    let Some((primary, standby)) = primary_and_standby("issue17 read replica").await else {
        return;
    };
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // `a` reads and writes the primary; `b` reads from the standby.
    let a = replica(dirs.0.path(), &primary, None).await;
    let b = replica(dirs.1.path(), &primary, Some(&standby)).await;
    until_ready(&a).await;
    until_ready(&b).await;
    assert!(b.store.has_read_replica());
    let (api_a, api_b) = (Api::of(&a), Api::of(&b));
    let base_b = api_b.base.clone();
    let dns_b = b.dns_addrs[0];

    // A write through `a` reaches `b`'s DNS through the standby.
    let token = api_a.mint("personal", "k8s", Some("web")).await;
    let (status, body) = api_a.register(&token, "node-a1", "web").await;
    assert_eq!(status, 200, "{body}");
    eventually_async(Duration::from_secs(5), "b resolves node-a1", || async {
        if resolves(dns_b, "node-a1._peer.internal").await {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;

    // The standby stops replaying: `b` no longer sees `a`'s writes, which proves it reads the
    // standby and not the primary.
    standby.execute("SELECT pg_wal_replay_pause()").await;
    let (status, body) = api_a.register(&token, "node-a2", "web").await;
    assert_eq!(status, 200, "{body}");
    assert!(resolves(a.dns_addrs[0], "node-a2._peer.internal").await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !resolves(dns_b, "node-a2._peer.internal").await,
        "b reads from its paused standby"
    );

    // `b`'s own write is in its DNS when the 200 comes, although the standby holds neither it
    // nor `a`'s write before it (that one comes from the primary, to close the gap).
    let (status, body) = api_b.register(&token, "node-b1", "web").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        resolves(dns_b, "node-b1._peer.internal").await,
        "own write in DNS before the 200"
    );
    assert!(resolves(dns_b, "node-a2._peer.internal").await);
    let after_own = published(&base_b).await;

    // The standby replays again: `b` goes on from there, never back.
    standby.execute("SELECT pg_wal_replay_resume()").await;
    let (status, body) = api_a.register(&token, "node-a3", "web").await;
    assert_eq!(status, 200, "{body}");
    let mut last = after_own;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let g = published(&base_b).await;
        assert!(
            g >= last,
            "b's published generation went back from {last} to {g}"
        );
        last = g;
        if resolves(dns_b, "node-a3._peer.internal").await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b sees node-a3 within 5 s of the standby resuming"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for name in ["node-a1", "node-a2", "node-b1"] {
        assert!(
            resolves(dns_b, &format!("{name}._peer.internal")).await,
            "{name}"
        );
    }
    let (status, body) = get(&base_b, "/readyz").await;
    assert_eq!(status, 200, "{body}");

    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue17_primary_away_writes_fail_within_a_second_and_dns_answers() {
    let Some((mut primary, mut standby)) = primary_and_standby("issue17 primary away").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let b = replica(dir.path(), &primary, Some(&standby)).await;
    until_ready(&b).await;
    let api = Api::of(&b);
    let dns = b.dns_addrs[0];
    let token = api.mint("personal", "k8s", Some("web")).await;
    let (status, body) = api.register(&token, "node-1", "web").await;
    assert_eq!(status, 200, "{body}");

    primary.stop();
    for i in 0..3 {
        let started = Instant::now();
        let (status, body) = api.register(&token, &format!("away-{i}"), "web").await;
        let took = started.elapsed();
        assert_eq!(status, 503, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        assert!(took < Duration::from_secs(1), "503 after {took:?}");
    }
    assert!(resolves(dns, "node-1._peer.internal").await, "DNS answers");
    let (status, body) = get(&api.base, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["down"], serde_json::json!(["primary"]), "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("primary"),
        "{body}"
    );

    // A replica that starts while the primary is away loads DNS from the standby.
    let dir_c = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let c = replica(dir_c.path(), &primary, Some(&standby)).await;
    eprintln!("started without its primary in {:?}", started.elapsed());
    assert!(
        resolves(c.dns_addrs[0], "node-1._peer.internal").await,
        "loaded from the standby"
    );
    let (status, body) = Api::of(&c).register(&token, "away-c", "web").await;
    assert_eq!(status, 503, "{body}");
    c.shutdown().await.unwrap();

    // The primary comes back: writes resume, and the standby brings them to DNS.
    primary.start_again();
    primary.ready().await;
    eventually_async(Duration::from_secs(20), "writes resume", || async {
        match api.register(&token, "node-2", "web").await {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    assert!(resolves(dns, "node-2._peer.internal").await);

    // Now the standby is away: DNS still answers, `/readyz` names it.
    standby.stop();
    assert!(resolves(dns, "node-2._peer.internal").await);
    eventually_async(
        Duration::from_secs(10),
        "readyz names the replica",
        || async {
            let (status, body) = get(&api.base, "/readyz").await;
            if status == 503 && body["down"] == serde_json::json!(["read_replica"]) {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await;

    b.shutdown().await.unwrap();
}

#[test]
fn issue17_read_database_url_beside_sqlite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Serve::new(dir.path())
        .env(
            "SIXPN_READ_DATABASE_URL",
            "postgres://sixpn@standby.invalid/sixpn",
        )
        .output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve must refuse: {stderr}");
    assert!(
        stderr.contains("read_database_url") && stderr.contains("PostgreSQL"),
        "the error names the key and what it needs: {stderr}"
    );
}
