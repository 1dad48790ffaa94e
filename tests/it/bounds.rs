//! Issue 23, point 4, "bounded by default", and the `org delete` and `token show` commands of its
//! point 8: the org's and a token's caps on live peers answer 409 naming the cap (the CLI exits
//! with its conflict code), the counters behind them hold under concurrent creates, the audit log
//! is pruned past its retention, and orgs can be deleted (with `--cascade`, everything in them).
//! Each runs on SQLite and, when `SIXPN_TEST_POSTGRES_URL` is set, on PostgreSQL.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::support::{
    ADMIN_TOKEN, Api, TestDb, dns_query_from, eventually_async, server_config, sixpn_cli,
};
use sixpn::model::{GroupName, OrgSlug, RegionCode, TokenName};
use sixpn::store::{NewPeer, NewToken, Store, StoreError};

/// The CLI's conflict exit code (README's table, `src/cli/exit.rs`).
const EXIT_CONFLICT: i32 = 4;

/// Starts an in-process server on `db` with `tune` applied to its configuration.
async fn server(
    db: &TestDb,
    tune: impl FnOnce(&mut sixpn::config::Config),
) -> (sixpn::serve::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = server_config(dir.path(), Some(&db.url));
    tune(&mut config);
    let running = sixpn::serve::start(config).await.expect("server starts");
    (running, dir)
}

/// Runs the CLI against `base` with the admin token and `extra` variables.
fn cli(base: &str, args: &[&str], extra: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![("SIXPN_API_URL", base), ("SIXPN_ADMIN_TOKEN", ADMIN_TOKEN)];
    env.extend_from_slice(extra);
    tokio::task::block_in_place(|| sixpn_cli(dir.path(), args, &env))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Mints a token through the admin API with `body`; its secret.
async fn mint(base: &str, org: &str, body: Value) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/orgs/{org}/wireguard_tokens"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

/// An admin API call; status and JSON body.
async fn call(method: reqwest::Method, url: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn caps_are_409_naming_the_cap(db: TestDb) {
    let (server, _dir) = server(&db, |c| {
        c.orgs.max_peers = 3;
        c.api.token_rate = 0.0;
    })
    .await;
    let base = format!("http://{}", server.api_addr);
    let api = Api::of(&server);

    // `token create` without --max-peers says on stderr that the token is uncapped; --json
    // stdout stays pure JSON.
    let out = cli(
        &base,
        &["token", "create", "--name", "fleet", "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let minted: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON only");
    assert!(minted["max_peers"].is_null(), "{minted}");
    let note = stderr(&out);
    assert!(note.contains("uncapped"), "{note}");
    assert_eq!(
        note.lines().filter(|l| l.contains("uncapped")).count(),
        1,
        "{note}"
    );
    let fleet = minted["token"].as_str().unwrap().to_owned();
    let out = cli(
        &base,
        &["token", "create", "--name", "capped", "--max-peers", "2"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("uncapped"), "{}", stderr(&out));

    // The org's cap: three peers, the fourth is 409 naming `[orgs] max_peers` and its value.
    for i in 0..3 {
        let (status, body) = api.register(&fleet, &format!("n{i}"), "web").await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = api.register(&fleet, "n3", "web").await;
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("[orgs] max_peers = 3"), "{error}");
    // The CLI exits with its conflict code and shows the server's reason.
    let out = cli(
        &base,
        &["token", "start", "n3", "", "", "-"],
        &[("SIXPN_WIREGUARD_TOKEN", &fleet)],
    );
    assert_eq!(out.status.code(), Some(EXIT_CONFLICT), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("[orgs] max_peers = 3"),
        "{}",
        stderr(&out)
    );

    // A delete frees a place (the counter goes down with it); a token delete frees its peers'.
    let (status, body) = call(
        reqwest::Method::DELETE,
        &format!("{base}/api/v1/orgs/personal/peers/n0"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let capped = mint(
        &base,
        "personal",
        json!({"name": "capped-2", "max_peers": 1}),
    )
    .await;
    let (status, body) = api.register(&capped, "c0", "web").await;
    assert_eq!(status, 200, "{body}");
    // The token's own cap: 409 naming its max_peers, not 429 (the org has room again after a
    // token delete below, so this is the token's cap speaking).
    api.delete_token("personal", "fleet").await;
    let (status, body) = api.register(&capped, "c1", "web").await;
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("max_peers = 1"), "{error}");
    assert!(!error.contains("[orgs]"), "{error}");
    let out = cli(
        &base,
        &["token", "start", "c1", "", "", "-"],
        &[("SIXPN_WIREGUARD_TOKEN", &capped)],
    );
    assert_eq!(out.status.code(), Some(EXIT_CONFLICT), "{}", stderr(&out));
    assert!(stderr(&out).contains("max_peers = 1"), "{}", stderr(&out));

    // `token show`: one token, its counts, never a secret.
    let out = cli(&base, &["token", "show", "capped-2", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["name"], "capped-2");
    assert_eq!(shown["max_peers"], 1);
    assert_eq!(shown["live_peers"], 1);
    assert!(shown.get("token").is_none(), "{shown}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&capped));
    let out = cli(&base, &["token", "show", "capped"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("capped") && text.contains("max peers"),
        "{text}"
    );
    let out = cli(&base, &["token", "show", "fleet"], &[]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a deleted token: {}",
        stderr(&out)
    );
    // After the token delete the org has 1 live peer (c0): two more fit, then the cap again.
    let more = mint(&base, "personal", json!({"name": "more"})).await;
    for name in ["m0", "m1"] {
        let (status, body) = api.register(&more, name, "web").await;
        assert_eq!(status, 200, "{name}: {body}");
    }
    let (status, body) = api.register(&more, "m2", "web").await;
    assert_eq!(status, 409, "{body}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue23_caps_are_409_naming_the_cap_sqlite() {
    caps_are_409_naming_the_cap(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue23_caps_are_409_naming_the_cap_postgres() {
    if let Some(db) = TestDb::postgres_if_configured("issue 23 caps on PostgreSQL").await {
        caps_are_409_naming_the_cap(db).await;
    }
}

/// 60 concurrent creates against `[orgs] max_peers = 3` (and as many against a token capped at
/// 2 in another org): exactly 3 (2) succeed, every other one is refused with the cap.
async fn concurrent_creates(db: TestDb) {
    let prefix: ipnet::Ipv6Net = "fdaa::/16".parse().unwrap();
    let store = Store::open(&db.url, prefix)
        .await
        .unwrap()
        .with_org_max_peers(3);
    let org: OrgSlug = "personal".parse().unwrap();
    let other: OrgSlug = "other".parse().unwrap();
    store.create_org(&other).await.unwrap();
    let mint = |org: OrgSlug, name: &str, max_peers: Option<u32>| {
        let store = store.clone();
        let name: TokenName = name.parse().unwrap();
        async move {
            let new = NewToken {
                name,
                group: None,
                expires_at: None,
                max_peers,
                key_expiry: None,
            };
            let (_, secret) = store.mint_token(&org, new).await.unwrap();
            store.authenticate(secret.expose()).await.unwrap()
        }
    };
    let open = mint(org.clone(), "open", None).await;
    let capped = mint(other.clone(), "capped", Some(2)).await;
    let mut tasks = Vec::new();
    for (i, token) in std::iter::repeat_n(&open, 60)
        .chain(std::iter::repeat_n(&capped, 60))
        .enumerate()
    {
        let (store, token) = (store.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let new = NewPeer {
                name: format!("p{i}").parse().unwrap(),
                group: "web".parse::<GroupName>().unwrap(),
                region: "local".parse::<RegionCode>().unwrap(),
                pubkey: sixpn::wireguard::PrivateKey::generate()
                    .unwrap()
                    .public_key(),
            };
            store.register_peer(&token, new).await
        }));
    }
    let (mut org_ok, mut org_capped, mut token_ok, mut token_capped) = (0, 0, 0, 0);
    for (i, task) in tasks.into_iter().enumerate() {
        match (i < 60, task.await.unwrap()) {
            (true, Ok(_)) => org_ok += 1,
            (true, Err(StoreError::OrgPeerCapReached { cap: 3, .. })) => org_capped += 1,
            (false, Ok(_)) => token_ok += 1,
            (false, Err(StoreError::PeerCapReached(2))) => token_capped += 1,
            (_, Err(e)) => panic!("create {i}: {e}"),
        }
    }
    assert_eq!((org_ok, org_capped), (3, 57));
    assert_eq!((token_ok, token_capped), (2, 58));
    assert_eq!(store.list_peers(&org).await.unwrap().len(), 3);
    let counts = store.org_counts().await.unwrap();
    let personal = counts.iter().find(|c| c.org == org).unwrap();
    assert_eq!(personal.peers, 3, "the counter agrees with the rows");
    let listed = store.list_tokens(&other).await.unwrap();
    assert_eq!(listed[0].live_peers, 2, "the token's counter agrees");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue23_concurrent_creates_respect_the_caps_sqlite() {
    concurrent_creates(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue23_concurrent_creates_respect_the_caps_postgres() {
    if let Some(db) = TestDb::postgres_if_configured("issue 23 concurrent caps").await {
        concurrent_creates(db).await;
    }
}

/// Runs `statement` on the database at `url` (the test's own connection, beside the server's).
async fn execute(url: &str, statement: &str) {
    use sqlx::Connection;
    let statement = sqlx::AssertSqlSafe(statement.to_owned());
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(statement).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(statement).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }
}

async fn audit_retention(db: TestDb) {
    // 60 s of retention: the reaper looks every second (a hundredth of it, at least 1 s).
    let (server, _dir) = server(&db, |c| c.audit.retention = Some(Duration::from_secs(60))).await;
    let base = format!("http://{}", server.api_addr);
    let api = Api::of(&server);
    api.mint("personal", "old", None).await;
    api.mint("personal", "new", None).await;
    // Make one entry two hours old, as if it had been written then.
    let now = sixpn::model::now_unix();
    execute(
        &db.url,
        &format!(
            "UPDATE audit_log SET at = {} WHERE target = 'old'",
            now - 7200
        ),
    )
    .await;
    let audit = format!("{base}/api/v1/orgs/personal/audit");
    eventually_async(
        Duration::from_secs(20),
        "the old entry is pruned",
        || async {
            let (status, page) = call(reqwest::Method::GET, &audit).await;
            assert_eq!(status, 200, "{page}");
            let targets: Vec<&str> = page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["target"].as_str().unwrap())
                .collect();
            assert!(
                targets.contains(&"new"),
                "a recent entry stays: {targets:?}"
            );
            if targets.contains(&"old") {
                Err(format!("{targets:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await;
    let metrics = crate::support::scrape(&base).await;
    assert!(crate::support::total(&metrics, "sixpn_audit_pruned_total", &[]) >= 1.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue23_audit_entries_past_the_retention_are_pruned_sqlite() {
    audit_retention(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue23_audit_entries_past_the_retention_are_pruned_postgres() {
    if let Some(db) = TestDb::postgres_if_configured("issue 23 audit retention").await {
        audit_retention(db).await;
    }
}

#[test]
fn issue23_audit_retention_reads_off_and_durations() {
    let read = |text: &str| {
        sixpn::config::Config::from_toml(text)
            .unwrap()
            .audit
            .retention
    };
    assert_eq!(read(""), Some(Duration::from_secs(90 * 86_400)));
    assert_eq!(
        read("[audit]\nretention = \"30d\""),
        Some(Duration::from_secs(30 * 86_400))
    );
    assert_eq!(read("[audit]\nretention = \"off\""), None);
    assert_eq!(read("[audit]\nretention = 0"), None);
    assert_eq!(read("[audit]\nretention = \"0\""), None);
    assert!(sixpn::config::Config::from_toml("[audit]\nretention = \"soon\"").is_err());
    let config = sixpn::config::Config::from_toml("").unwrap();
    assert_eq!(config.orgs.max_peers, 100_000);
    let zero = sixpn::config::Config::from_toml("[orgs]\nmax_peers = 0").unwrap();
    assert!(zero.validate().is_err());
}

async fn org_delete(db: TestDb) {
    // Queries from 127.0.0.2 get acme's view.
    let (server, _dir) = server(&db, |c| {
        c.dns.views =
            sixpn::config::parse_views("127.0.0.1/32=personal,127.0.0.2/32=acme").expect("views");
    })
    .await;
    let base = format!("http://{}", server.api_addr);
    let dns = server.dns_addrs[0];
    let api = Api::of(&server);
    api.create_org("acme").await;
    let token = api.mint("acme", "k8s", None).await;
    let (status, body) = api.register(&token, "web-1", "web").await;
    assert_eq!(status, 200, "{body}");
    let resolves = || {
        tokio::task::block_in_place(|| {
            !dns_query_from("127.0.0.2", dns, "web-1._peer.internal.", RecordType::AAAA)
                .answers
                .is_empty()
        })
    };
    assert!(resolves());

    // A key scoped to the org, revoked with it.
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/api_keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "acme-viewer", "org": "acme", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let key = resp.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let key_lists_tokens = |key: String| {
        let url = format!("{base}/api/v1/orgs/acme/wireguard_tokens");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(key_lists_tokens(key.clone()).await, 200);
    // A viewer cannot delete the org (owner of every org only).
    let resp = reqwest::Client::new()
        .delete(format!("{base}/api/v1/orgs/acme?cascade=true"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let (status, body) = call(
        reqwest::Method::DELETE,
        &format!("{base}/api/v1/orgs/acme?cascade=maybe"),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // Not empty: 409 naming what is left, and the CLI's conflict code.
    let (status, body) = call(reqwest::Method::DELETE, &format!("{base}/api/v1/orgs/acme")).await;
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("1 peer(s) and 1 token(s)") && error.contains("cascade"),
        "{error}"
    );
    let out = cli(&base, &["org", "delete", "acme", "--yes"], &[]);
    assert_eq!(out.status.code(), Some(EXIT_CONFLICT), "{}", stderr(&out));
    // Without --yes and without a terminal, it refuses before asking the server.
    let out = cli(&base, &["org", "delete", "acme", "--cascade"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert!(resolves(), "nothing was deleted");
    // The default org and a missing one.
    let out = cli(&base, &["org", "delete", "personal", "--yes"], &[]);
    assert_eq!(out.status.code(), Some(EXIT_CONFLICT), "{}", stderr(&out));
    let out = cli(&base, &["org", "delete", "nosuch", "--yes"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // Cascade: the peer vanishes from DNS by the time the answer comes, the token stops working.
    let out = cli(
        &base,
        &["org", "delete", "acme", "--cascade", "--yes", "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let deleted: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(deleted["deleted"], "acme");
    assert_eq!(deleted["deleted_peers"], 1);
    assert_eq!(deleted["deleted_tokens"], 1);
    assert_eq!(deleted["revoked_api_keys"], 1);
    assert!(!resolves(), "the deleted org's peer no longer resolves");
    let orgs: Vec<Value> = serde_json::from_value(
        call(reqwest::Method::GET, &format!("{base}/api/v1/orgs"))
            .await
            .1,
    )
    .unwrap();
    assert!(orgs.iter().all(|o| o["slug"] != "acme"), "{orgs:?}");
    let (status, body) = api.register(&token, "web-2", "web").await;
    assert_eq!(status, 401, "the org's token is gone: {body}");
    // The delete is in the default org's audit log, by the admin.
    let (_, page) = call(
        reqwest::Method::GET,
        &format!("{base}/api/v1/orgs/personal/audit"),
    )
    .await;
    let entry = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "org_deleted")
        .unwrap_or_else(|| panic!("no org_deleted entry: {page}"));
    assert_eq!(entry["target"], "acme");
    assert!(
        entry["detail"].as_str().unwrap().contains("peers=1"),
        "{entry}"
    );

    // The slug is free again: a new acme starts empty (the old key does not reach it), and its
    // peers resolve in its view.
    api.create_org("acme").await;
    assert_eq!(
        key_lists_tokens(key.clone()).await,
        401,
        "the org's key was revoked"
    );
    let (status, body) = call(
        reqwest::Method::GET,
        &format!("{base}/api/v1/orgs/acme/wireguard_tokens/k8s"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let token = api.mint("acme", "k8s", None).await;
    let (status, body) = api.register(&token, "web-1", "web").await;
    assert_eq!(status, 200, "{body}");
    assert!(resolves(), "the new org's peer resolves");
    // An empty org goes without --cascade.
    api.create_org("empty").await;
    let out = cli(&base, &["org", "delete", "empty", "--yes"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue23_org_delete_and_cascade_sqlite() {
    org_delete(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue23_org_delete_and_cascade_postgres() {
    if let Some(db) = TestDb::postgres_if_configured("issue 23 org delete").await {
        org_delete(db).await;
    }
}

/// A database that already holds peers when migration 0009 runs: the counters start from the
/// rows (the backfill), and the caps hold from the first create.
async fn counters_are_backfilled(db: TestDb) {
    let dir = if db.url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let mut before = sqlx::migrate::Migrator::new(std::path::Path::new(&format!(
        "{}/src/store/migrations/{dir}",
        env!("CARGO_MANIFEST_DIR")
    )))
    .await
    .unwrap();
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version < 9)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    {
        use sqlx::Connection;
        if dir == "postgres" {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            before.run(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        } else {
            let opts: sqlx::sqlite::SqliteConnectOptions = db.url.parse().unwrap();
            let mut conn = sqlx::SqliteConnection::connect_with(&opts.create_if_missing(true))
                .await
                .unwrap();
            before.run(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }
    execute(
        &db.url,
        "INSERT INTO orgs (slug, prefix, next_host, created_at) VALUES ('personal', 'fdaa:1:2::/48', 3, 0)",
    )
    .await;
    execute(
        &db.url,
        "INSERT INTO tokens (org_id, name, secret_hash, max_peers, created_at) \
         SELECT id, 'old', 'hash', 3, 0 FROM orgs",
    )
    .await;
    for (n, key) in [(1, "a"), (2, "b")] {
        execute(
            &db.url,
            &format!(
                "INSERT INTO peers (org_id, token_id, name, group_name, region, pubkey, address, created_at, updated_at) \
                 SELECT o.id, t.id, 'p{n}', 'web', 'local', '{key}', 'fdaa:1:2:1::{n}', 0, 0 \
                 FROM orgs o, tokens t"
            ),
        )
        .await;
    }
    let store = Store::open(&db.url, "fdaa::/16".parse().unwrap())
        .await
        .unwrap();
    let org: OrgSlug = "personal".parse().unwrap();
    let counts = store.org_counts().await.unwrap();
    assert_eq!(counts.iter().find(|c| c.org == org).unwrap().peers, 2);
    let tokens = store.list_tokens(&org).await.unwrap();
    assert_eq!(tokens[0].live_peers, 2, "{tokens:?}");
    // The backfilled counter is what the cap reads: one more fits under 3, then none.
    let store = store.with_org_max_peers(3);
    let (_, secret) = store
        .mint_token(
            &org,
            NewToken {
                name: "new".parse().unwrap(),
                group: None,
                expires_at: None,
                max_peers: None,
                key_expiry: None,
            },
        )
        .await
        .unwrap();
    let token = store.authenticate(secret.expose()).await.unwrap();
    let peer = |name: &str| NewPeer {
        name: name.parse().unwrap(),
        group: "web".parse().unwrap(),
        region: "local".parse().unwrap(),
        pubkey: sixpn::wireguard::PrivateKey::generate()
            .unwrap()
            .public_key(),
    };
    store.register_peer(&token, peer("p3")).await.unwrap();
    assert!(matches!(
        store.register_peer(&token, peer("p4")).await,
        Err(StoreError::OrgPeerCapReached { cap: 3, .. })
    ));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue23_counters_are_backfilled_from_existing_rows_sqlite() {
    counters_are_backfilled(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue23_counters_are_backfilled_from_existing_rows_postgres() {
    if let Some(db) = TestDb::postgres_if_configured("issue 23 counter backfill").await {
        counters_are_backfilled(db).await;
    }
}
