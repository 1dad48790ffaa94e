//! Issue 9, point 6: several `sixpn serve` replicas on one PostgreSQL database.
//!
//! - Three replicas; every connection the replicas hold is killed (`pg_terminate_backend`) twice
//!   while writes go on: each replica catches up, and none ever stops answering a name it has
//!   answered (it never serves an older generation than one it served).
//! - The same name created through two replicas at once: one 200 and one 409.
//!
//! Skipped (with a note) unless `SIXPN_TEST_POSTGRES_URL` is set.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::{Api, TestDb, dns_query, eventually_async, start_server};

fn aaaa(dns: SocketAddr, name: &str) -> Option<Ipv6Addr> {
    let msg = dns_query(dns, name, RecordType::AAAA);
    if msg.metadata.response_code != ResponseCode::NoError {
        return None;
    }
    msg.answers.iter().find_map(|r| match &r.data {
        RData::AAAA(a) => Some(a.0),
        _ => None,
    })
}

/// Kills every connection to `db` but the caller's: the replicas' pools and LISTEN sessions.
async fn kill_connections(admin_url: &str, db: &str) -> u64 {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(db)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    killed.into_iter().filter(|k| *k).count() as u64
}

/// Registers `name`, retrying while the writer's connections come back; a 409 after a retry
/// means the first attempt committed.
async fn register_retrying(api: &Api, token: &str, name: &str) -> Ipv6Addr {
    eventually_async(Duration::from_secs(20), name, || async {
        let (status, body) = api.register(token, name, "web").await;
        match status {
            200 => Ok(body["us"].as_str().unwrap().parse().unwrap()),
            409 => {
                let peers = api.peers("personal").await;
                let peer = peers
                    .iter()
                    .find(|p| p["name"] == name)
                    .expect("a 409 on retry: the first attempt committed");
                Ok(peer["address"].as_str().unwrap().parse().unwrap())
            }
            _ => Err(format!("{status} {body}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue9_replicas_catch_up_after_their_connections_are_killed() {
    let Some(db) = TestDb::postgres_if_configured("replica test").await else {
        return;
    };
    let (a, _da) = start_server(Some(&db.url)).await;
    let (b, _db) = start_server(Some(&db.url)).await;
    let (c, _dc) = start_server(Some(&db.url)).await;
    let api_a = Api::of(&a);
    let api_b = Api::of(&b);
    let token = api_a.mint("personal", "k8s", Some("web")).await;
    let (admin_url, db_name) = db.postgres_server().unwrap();

    // Watch replicas B and C: a name once answered must keep answering.
    let written: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watchers: Vec<_> = [b.dns_addrs[0], c.dns_addrs[0]]
        .into_iter()
        .map(|dns| {
            let written = Arc::clone(&written);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut seen: HashMap<String, Ipv6Addr> = HashMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let names = written.lock().unwrap().clone();
                    for name in names {
                        let qname = format!("{name}._peer.internal");
                        match (aaaa(dns, &qname), seen.get(&name)) {
                            (Some(addr), None) => {
                                seen.insert(name, addr);
                            }
                            (Some(addr), Some(was)) => assert_eq!(addr, *was, "{name} moved"),
                            (None, Some(_)) => panic!("{dns} stopped answering {name}"),
                            (None, None) => {}
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                seen.len()
            })
        })
        .collect();

    let mut addresses = Vec::new();
    for i in 0..60 {
        if i == 20 || i == 40 {
            let killed = kill_connections(admin_url, db_name).await;
            assert!(killed > 0, "killed the replicas' connections");
        }
        let name = format!("node-{i}");
        let api = if i % 2 == 0 { &api_a } else { &api_b };
        let us = register_retrying(api, &token, &name).await;
        written.lock().unwrap().push(name.clone());
        addresses.push((name, us));
    }

    // Every replica catches up: all names answer within a few seconds of the last write.
    for dns in [a.dns_addrs[0], b.dns_addrs[0], c.dns_addrs[0]] {
        let addresses = addresses.clone();
        let missing = move || {
            addresses
                .iter()
                .find(|(name, us)| aaaa(dns, &format!("{name}._peer.internal")) != Some(*us))
                .map(|(name, _)| name.clone())
        };
        eventually_async(Duration::from_secs(5), &format!("{dns} catches up"), || {
            let missing = missing.clone();
            async move {
                match tokio::task::spawn_blocking(missing).await.unwrap() {
                    None => Ok(()),
                    Some(name) => Err(format!("{name} missing")),
                }
            }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for watcher in watchers {
        let seen = watcher.join().expect("no replica went back in time");
        assert!(seen > 0);
    }
    for server in [a, b, c] {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue9_same_name_through_two_replicas_gives_one_200_and_one_409() {
    let Some(db) = TestDb::postgres_if_configured("replica test").await else {
        return;
    };
    let (a, _da) = start_server(Some(&db.url)).await;
    let (b, _db) = start_server(Some(&db.url)).await;
    let api_a = Api::of(&a);
    let api_b = Api::of(&b);
    let token = api_a.mint("personal", "k8s", Some("web")).await;
    for i in 0..10 {
        let name = format!("race-{i}");
        let (ra, rb) = tokio::join!(
            api_a.register(&token, &name, "web"),
            api_b.register(&token, &name, "web")
        );
        let mut statuses = [ra.0, rb.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "{name}: {} / {}", ra.1, rb.1);
    }
    assert_eq!(api_a.peers("personal").await.len(), 10);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
