//! Key expiry (issue 23): a token's `key_expiry` (or `[peers] key_expiry`) limits how long a
//! peer is served after its last create or re-key. Checked against real `sixpn serve` processes
//! on SQLite and PostgreSQL (DNS over UDP, the admin API, the CLI), and against a real
//! `wireguard-go` interface for the gateway.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use serde_json::{Value, json};

use crate::support::db::postgres_base_url;
use crate::support::{ADMIN_TOKEN, Serve, ServerProcess, TestDb, dns_query, sixpn_cli};

/// Unix time now, in seconds with a fraction.
fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Unix seconds of an RFC 3339 time.
fn unix(rfc3339: &str) -> f64 {
    humantime::parse_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?}: {e}"))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The AAAA addresses `name` answers on `dns`; `None` for NXDOMAIN.
fn resolve(dns: SocketAddr, name: &str) -> Option<Vec<std::net::Ipv6Addr>> {
    let reply = dns_query(dns, name, RecordType::AAAA);
    if reply.metadata.response_code == ResponseCode::NXDomain {
        return None;
    }
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NoError,
        "{name}"
    );
    Some(
        reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect(),
    )
}

/// A `sixpn serve` on `db` (SQLite in `dir` when `db` is SQLite) with `extra` env.
fn serve(dir: &Path, db: &TestDb, extra: &[(&str, &str)]) -> ServerProcess {
    let mut serve = Serve::new(dir).envs(extra);
    if db.url.starts_with("postgres") {
        serve = serve.env("SIXPN_DATABASE_URL", &db.url);
    } else {
        serve = serve.env(
            "SIXPN_DATABASE_URL",
            &format!("sqlite://{}", dir.join("sixpn.db").display()),
        );
    }
    serve.spawn()
}

/// The databases to run on: SQLite, and PostgreSQL when configured.
async fn backends() -> Vec<TestDb> {
    let mut dbs = vec![TestDb::sqlite()];
    match postgres_base_url() {
        Some(base) => dbs.push(TestDb::postgres(&base).await),
        None => eprintln!("note: SIXPN_TEST_POSTGRES_URL not set; PostgreSQL half skipped"),
    }
    dbs
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    bearer: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, url).bearer_auth(bearer);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let resp = request.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Mints a token in `personal` with `extra` fields; returns its secret and JSON.
async fn mint(http: &reqwest::Client, api: &str, name: &str, extra: Value) -> (String, Value) {
    let mut body = json!({ "name": name });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, minted) = send(
        http,
        reqwest::Method::POST,
        format!("{api}/api/v1/orgs/personal/wireguard_tokens"),
        ADMIN_TOKEN,
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{minted}");
    (minted["token"].as_str().unwrap().to_owned(), minted)
}

fn new_key() -> String {
    sixpn::wireguard::PrivateKey::generate()
        .unwrap()
        .public_key()
        .to_base64()
}

/// The admin API's view of one peer of `personal`.
async fn admin_peer(http: &reqwest::Client, api: &str, name: &str) -> Value {
    let (status, peer) = send(
        http,
        reqwest::Method::GET,
        format!("{api}/api/v1/orgs/personal/peers/{name}"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200, "{peer}");
    peer
}

/// Polls `name` on every server in `dns` until it stops resolving on all of them; returns when
/// (unix seconds) the last one stopped.
async fn wait_gone(dns: &[SocketAddr], name: &str, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    let mut gone_at = vec![None; dns.len()];
    loop {
        for (i, server) in dns.iter().enumerate() {
            if gone_at[i].is_none() {
                let (server, n) = (*server, name.to_owned());
                let answer = tokio::task::spawn_blocking(move || resolve(server, &n))
                    .await
                    .unwrap();
                if answer.is_none() {
                    gone_at[i] = Some(now_secs());
                }
            }
        }
        if let Some(last) = gone_at
            .iter()
            .copied()
            .collect::<Option<Vec<f64>>>()
            .map(|all| all.into_iter().fold(0.0, f64::max))
        {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "{name} still resolves after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Acceptance: a token with `key_expiry` 3 s. Its peer resolves, stops resolving within 1 s of
/// its `key_expires_at` (on every replica, with no write), stays listed as expired, and comes
/// back after a re-key. SQLite, and PostgreSQL with two replicas.
#[tokio::test]
async fn issue23_a_peer_stops_being_served_at_key_expiry_and_a_rekey_revives_it() {
    for db in backends().await {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut servers = vec![serve(dirs[0].path(), &db, &[])];
        if db.url.starts_with("postgres") {
            // A second replica on the same database: the expiry timer runs on each.
            servers.push(serve(dirs[1].path(), &db, &[]));
        }
        let api = servers[0].api.clone();
        let dns: Vec<SocketAddr> = servers.iter().map(|s| s.dns).collect();
        let http = reqwest::Client::new();

        let (token, minted) = mint(&http, &api, "short", json!({ "key_expiry": "3s" })).await;
        assert_eq!(minted["key_expiry"], 3, "{minted}");
        // A token without a key lifetime of its own, and no org default: keys never expire.
        let (lasting, _) = mint(&http, &api, "lasting", json!({})).await;

        let (status, created) = send(
            &http,
            reqwest::Method::POST,
            format!("{api}/api/v3/wire_guard_peers"),
            &token,
            Some(json!({ "name": "node-1", "group": "web", "pubkey": new_key() })),
        )
        .await;
        assert_eq!(status, 200, "{created}");
        let expires = unix(created["key_expires_at"].as_str().expect("key_expires_at"));
        let updated = unix(created["updated_at"].as_str().unwrap());
        assert_eq!(expires - updated, 3.0, "{created}");
        let (status, other) = send(
            &http,
            reqwest::Method::POST,
            format!("{api}/api/v3/wire_guard_peers"),
            &lasting,
            Some(json!({ "name": "node-2", "group": "web", "pubkey": new_key() })),
        )
        .await;
        assert_eq!(status, 200, "{other}");
        assert!(other["key_expires_at"].is_null(), "{other}");
        let address: std::net::Ipv6Addr = created["us"].as_str().unwrap().parse().unwrap();

        // Served now, by every replica: the peer's name and its group.
        for server in &dns {
            let server = *server;
            crate::support::eventually(Duration::from_secs(10), "replica serves node-1", || {
                resolve(server, "node-1._peer.internal") == Some(vec![address])
            });
            let group = resolve(server, "web._g.internal").unwrap();
            assert!(group.contains(&address), "{group:?}");
        }
        let before = admin_peer(&http, &api, "node-1").await;
        assert_eq!(before["expired"], false, "{before}");

        // Gone at the deadline: not before it, and within 1 s after it, on every replica.
        let gone = wait_gone(&dns, "node-1._peer.internal", Duration::from_secs(15)).await;
        assert!(
            gone >= expires - 0.05,
            "stopped resolving {:.2} s before its key expired",
            expires - gone
        );
        assert!(
            gone <= expires + 1.0,
            "stopped resolving {:.2} s after its key expired",
            gone - expires
        );
        eprintln!(
            "{}: node-1 stopped resolving on {} replica(s) {:+.3} s after its key expired",
            if db.url.starts_with("postgres") {
                "PostgreSQL"
            } else {
                "SQLite"
            },
            dns.len(),
            gone - expires
        );
        for server in &dns {
            let group = resolve(*server, "web._g.internal").unwrap();
            assert!(!group.contains(&address), "{group:?}");
            assert_eq!(group.len(), 1, "node-2 stays: {group:?}");
            assert!(resolve(*server, "node-2._peer.internal").is_some());
        }

        // Still listed, as expired: admin JSON and `sixpn peer list`.
        let after = admin_peer(&http, &api, "node-1").await;
        assert_eq!(after["expired"], true, "{after}");
        assert_eq!(
            after["key_expires_at"], created["key_expires_at"],
            "{after}"
        );
        let work = tempfile::tempdir().unwrap();
        let env = [
            ("SIXPN_API_URL", api.as_str()),
            ("SIXPN_ADMIN_TOKEN", ADMIN_TOKEN),
        ];
        let list = sixpn_cli(work.path(), &["peer", "list"], &env);
        assert!(list.status.success(), "{list:?}");
        let text = String::from_utf8_lossy(&list.stdout);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .to_owned()
        };
        assert!(line("node-1").ends_with("expired"), "{text}");
        assert!(line("node-2").ends_with("active"), "{text}");
        let json_list = sixpn_cli(work.path(), &["peer", "list", "--json"], &env);
        let peers: Vec<Value> = serde_json::from_slice(&json_list.stdout).unwrap();
        let node1 = peers.iter().find(|p| p["name"] == "node-1").unwrap();
        assert_eq!(node1["expired"], true, "{node1}");

        // A re-key with the (valid) token revives it at once, with a new deadline.
        let (status, rekeyed) = send(
            &http,
            reqwest::Method::PUT,
            format!("{api}/api/v3/wire_guard_peers/node-1"),
            &token,
            Some(json!({ "pubkey": new_key() })),
        )
        .await;
        assert_eq!(status, 200, "{rekeyed}");
        let new_expires = unix(rekeyed["key_expires_at"].as_str().unwrap());
        assert!(new_expires > expires, "{rekeyed}");
        assert_eq!(
            resolve(dns[0], "node-1._peer.internal"),
            Some(vec![address]),
            "the re-keyed peer resolves when the API answers"
        );
        for server in &dns {
            let server = *server;
            crate::support::eventually(
                Duration::from_secs(5),
                "replica serves node-1 again",
                || resolve(server, "node-1._peer.internal") == Some(vec![address]),
            );
        }
        assert_eq!(admin_peer(&http, &api, "node-1").await["expired"], false);
        // ... and it expires again on its new deadline.
        let gone = wait_gone(&dns, "node-1._peer.internal", Duration::from_secs(15)).await;
        assert!(
            gone >= new_expires - 0.05 && gone <= new_expires + 1.0,
            "gone at {gone}, deadline {new_expires}"
        );

        // A restart (a full load of the store) keeps serving it as expired.
        servers[0].restart();
        let api = servers[0].api.clone();
        // A new client: the old one's kept-alive connection went with the old process.
        let http = reqwest::Client::new();
        assert!(resolve(servers[0].dns, "node-1._peer.internal").is_none());
        assert!(resolve(servers[0].dns, "node-2._peer.internal").is_some());
        assert_eq!(admin_peer(&http, &api, "node-1").await["expired"], true);
    }
}

/// `[peers] key_expiry` is the default for tokens without one; the reaper removes expired peers
/// after `[peers] expired_grace` (logged as `peer_reaped`), but not a peer re-keyed in time.
#[tokio::test]
async fn issue23_org_default_key_expiry_and_the_reaper_after_the_grace() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sixpn.toml");
        std::fs::write(
            &config,
            "[peers]\nkey_expiry = \"2s\"\nexpired_grace = \"1s\"\n",
        )
        .unwrap();
        let server = serve(
            dir.path(),
            &db,
            &[("SIXPN_CONFIG", config.to_str().unwrap())],
        );
        let api = server.api.clone();
        let http = reqwest::Client::new();
        let (token, minted) = mint(&http, &api, "fleet", json!({})).await;
        assert!(minted["key_expiry"].is_null(), "{minted}");
        // A token's own lifetime wins over the default.
        let (long, _) = mint(&http, &api, "long", json!({ "key_expiry": 3600 })).await;

        let (status, created) = send(
            &http,
            reqwest::Method::POST,
            format!("{api}/api/v3/wire_guard_peers"),
            &token,
            Some(json!({ "name": "short-lived", "pubkey": new_key() })),
        )
        .await;
        assert_eq!(status, 200, "{created}");
        let lifetime = unix(created["key_expires_at"].as_str().unwrap())
            - unix(created["updated_at"].as_str().unwrap());
        assert_eq!(lifetime, 2.0, "{created}");
        let (status, kept) = send(
            &http,
            reqwest::Method::POST,
            format!("{api}/api/v3/wire_guard_peers"),
            &long,
            Some(json!({ "name": "long-lived", "pubkey": new_key() })),
        )
        .await;
        assert_eq!(status, 200, "{kept}");
        let lifetime = unix(kept["key_expires_at"].as_str().unwrap())
            - unix(kept["updated_at"].as_str().unwrap());
        assert_eq!(lifetime, 3600.0, "{kept}");

        // Expired after 2 s, reaped 1 s later (the reaper looks every second).
        crate::support::eventually_async(
            Duration::from_secs(20),
            "the expired peer is reaped",
            || async {
                let (_, peers) = send(
                    &http,
                    reqwest::Method::GET,
                    format!("{api}/api/v1/orgs/personal/peers"),
                    ADMIN_TOKEN,
                    None,
                )
                .await;
                let names: Vec<&str> = peers
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                if names == ["long-lived"] {
                    Ok(())
                } else {
                    Err(format!("{names:?}"))
                }
            },
        )
        .await;
        let (_, audit) = send(
            &http,
            reqwest::Method::GET,
            format!("{api}/api/v1/orgs/personal/audit"),
            ADMIN_TOKEN,
            None,
        )
        .await;
        let reaped = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "peer_reaped" && e["target"] == "short-lived")
            .unwrap_or_else(|| panic!("{audit}"));
        assert_eq!(reaped["actor"], "reaper", "{reaped}");
        assert!(
            reaped["detail"].as_str().unwrap().contains("key expired"),
            "{reaped}"
        );
        drop(server);
    }
}

/// `token list` marks tokens whose `expires_at` has passed, in text and JSON; a bad
/// `key_expiry` is a 422 naming the field; `token create --key-expiry` sets it.
#[tokio::test]
async fn issue23_token_list_marks_expired_tokens() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let server = serve(dir.path(), &db, &[]);
        let api = server.api.clone();
        let http = reqwest::Client::new();
        mint(&http, &api, "brief", json!({ "expires_in": 1 })).await;
        let work = tempfile::tempdir().unwrap();
        let env = [
            ("SIXPN_API_URL", api.as_str()),
            ("SIXPN_ADMIN_TOKEN", ADMIN_TOKEN),
        ];
        let created = sixpn_cli(
            work.path(),
            &[
                "token",
                "create",
                "--name",
                "rotating",
                "--key-expiry",
                "24h",
            ],
            &env,
        );
        assert!(created.status.success(), "{created:?}");
        for (body, what) in [
            (
                json!({ "name": "x1", "key_expiry": "soon" }),
                "not a duration",
            ),
            (json!({ "name": "x2", "key_expiry": 0 }), "longer than zero"),
            (json!({ "name": "x3", "key_expiry": null }), "not null"),
        ] {
            let (status, err) = send(
                &http,
                reqwest::Method::POST,
                format!("{api}/api/v1/orgs/personal/wireguard_tokens"),
                ADMIN_TOKEN,
                Some(body),
            )
            .await;
            assert_eq!(status, 422, "{err}");
            let text = err["error"].as_str().unwrap();
            assert!(text.contains("key_expiry") && text.contains(what), "{text}");
        }

        crate::support::eventually(Duration::from_secs(10), "token brief expires", || {
            let run = sixpn_cli(work.path(), &["token", "list", "--json"], &env);
            let tokens: Vec<Value> = serde_json::from_slice(&run.stdout).unwrap();
            tokens
                .iter()
                .any(|t| t["name"] == "brief" && t["expired"] == true)
        });
        let run = sixpn_cli(work.path(), &["token", "list", "--json"], &env);
        let tokens: Vec<Value> = serde_json::from_slice(&run.stdout).unwrap();
        let rotating = tokens.iter().find(|t| t["name"] == "rotating").unwrap();
        assert_eq!(rotating["expired"], false, "{rotating}");
        assert_eq!(rotating["key_expiry"], 86_400, "{rotating}");
        let run = sixpn_cli(work.path(), &["token", "list"], &env);
        let text = String::from_utf8_lossy(&run.stdout);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .to_owned()
        };
        assert!(line("brief").ends_with("expired"), "{text}");
        assert!(line("rotating").ends_with("active"), "{text}");
        assert!(line("rotating").contains("1day"), "{text}");
        drop(server);
    }
}

/// `sixpn token ensure` run in a loop keeps a peer with a short key lifetime served: it re-keys
/// once less than a third of the lifetime is left, and leaves the peer alone otherwise. Real
/// time, a real server (the decision itself is tested on a paused clock in `cli::answer`).
#[tokio::test]
async fn issue23_token_ensure_in_a_loop_rotates_before_expiry() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &db, &[]);
    let api = server.api.clone();
    let http = reqwest::Client::new();
    let (token, _) = mint(&http, &api, "node", json!({ "key_expiry": "6s" })).await;
    let work = tempfile::tempdir().unwrap();
    let env = [
        ("SIXPN_API_URL", api.as_str()),
        ("SIXPN_WIREGUARD_TOKEN", token.as_str()),
    ];
    let file = work.path().join("wg0.conf");
    let ensure = || {
        let run = sixpn_cli(
            work.path(),
            &["token", "ensure", "node-1", "web", "", "wg0.conf"],
            &env,
        );
        assert!(run.status.success(), "{run:?}");
        std::fs::read_to_string(&file).unwrap()
    };
    let mut contents = ensure();
    let mut keys = vec![contents.clone()];
    let (mut unchanged, mut runs) = (0, 0);
    let start = Instant::now();
    // Three lifetimes: without rotation the peer would be gone after the first.
    while start.elapsed() < Duration::from_secs(18) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let next = ensure();
        runs += 1;
        if next == contents {
            unchanged += 1;
        } else {
            keys.push(next.clone());
            contents = next;
        }
        let peer = admin_peer(&http, &api, "node-1").await;
        assert_eq!(peer["expired"], false, "expired despite ensure: {peer}");
        let dns = server.dns;
        assert!(
            tokio::task::spawn_blocking(move || resolve(dns, "node-1._peer.internal"))
                .await
                .unwrap()
                .is_some(),
            "node-1 stopped resolving despite ensure"
        );
    }
    // About every 4 s (the last third of 6 s is its last 2 s): 3 to 6 rotations in 18 s.
    let rotations = keys.len() - 1;
    assert!(
        (3..=6).contains(&rotations),
        "{rotations} rotations in {runs} runs"
    );
    assert!(
        unchanged >= runs / 2,
        "ensure re-keyed too often: {unchanged} of {runs} runs left the peer alone"
    );
    drop(server);
}

/// The gateway's WireGuard peer set follows key expiry: the peer leaves the interface within 1 s
/// of its deadline and comes back after a re-key. A real `wireguard-go` (see `gateway.rs`; needs
/// root), with a SQLite store: the network namespace cannot reach a PostgreSQL server (the DNS
/// test above covers PostgreSQL; the gateway reads the same change feed).
#[tokio::test]
async fn issue23_gateway_drops_an_expired_peer_and_takes_it_back_on_rekey() {
    use crate::gateway::{INNER, WgNetns, run_inside};
    if let Ok(dir) = std::env::var(INNER) {
        return gateway_inner(Path::new(&dir)).await;
    }
    let Some(wg) = WgNetns::start("expiry") else {
        return;
    };
    run_inside(
        &wg,
        "key_expiry::issue23_gateway_drops_an_expired_peer_and_takes_it_back_on_rekey",
        false,
    );
}

async fn gateway_inner(uapi_dir: &Path) {
    use crate::gateway::{IFACE, key};
    use sixpn::gateway::uapi::UapiClient;
    use sixpn::store::{NewPeer, NewToken};

    let db = TestDb::sqlite();
    let store = db.open().await;
    let org: sixpn::model::OrgSlug = "personal".parse().unwrap();
    let mint = |name: &str, key_expiry| NewToken {
        name: name.parse().unwrap(),
        group: None,
        expires_at: None,
        max_peers: None,
        key_expiry,
    };
    let (_, secret) = store
        .mint_token(&org, mint("short", Some(3)))
        .await
        .unwrap();
    let short = store.authenticate(secret.expose()).await.unwrap();
    let (_, secret) = store.mint_token(&org, mint("lasting", None)).await.unwrap();
    let lasting = store.authenticate(secret.expose()).await.unwrap();
    let peer = |name: &str, n: u8| NewPeer {
        name: name.parse().unwrap(),
        group: "web".parse().unwrap(),
        region: "e2e".parse().unwrap(),
        pubkey: key(n),
    };
    let config = sixpn::config::GatewayConfig {
        interface: IFACE.into(),
        region: "e2e".parse().unwrap(),
        private_key_file: Some(Path::new(&db.url["sqlite://".len()..]).with_file_name("gw.key")),
        listen_port: 51889,
        uapi_dir: Some(uapi_dir.to_owned()),
        resync_period: sixpn::gateway::RESYNC_PERIOD,
        liveness: Default::default(),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let handle = sixpn::gateway::start(&config, store.clone(), cancel.clone())
        .await
        .unwrap();
    let client = UapiClient::new(Some(uapi_dir), IFACE);
    let keys = || async {
        let mut keys: Vec<[u8; 32]> = client
            .get()
            .await
            .unwrap()
            .peers
            .iter()
            .map(|p| p.public_key)
            .collect();
        keys.sort();
        keys
    };

    let (stays, _) = store
        .register_peer(&lasting, peer("stays", 1))
        .await
        .unwrap();
    let (node, generation) = store
        .register_peer(&short, peer("node-1", 2))
        .await
        .unwrap();
    let expires = node.key_expires_at.expect("a deadline") as f64;
    let mut applied = handle.applied();
    crate::support::wait::reached(&mut applied, generation, Duration::from_secs(5), "added").await;
    assert!(now_secs() < expires, "the test is too slow to check this");
    assert_eq!(keys().await, [*key(1).as_bytes(), *key(2).as_bytes()]);

    // Leaves the interface at its deadline (not before), within 1 s; the other peer stays.
    let gone = loop {
        let now = now_secs();
        if !keys().await.contains(key(2).as_bytes()) {
            break now;
        }
        assert!(
            now < expires + 5.0,
            "still on the interface 5 s after expiry"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        gone >= expires - 0.05,
        "removed {:.2} s early",
        expires - gone
    );
    assert!(
        gone <= expires + 1.0,
        "removed {:.2} s late",
        gone - expires
    );
    assert_eq!(keys().await, [*stays.pubkey.as_bytes()]);

    // A re-key brings it back with its new key, at the same address.
    let (rekeyed, generation) = store.rekey_peer(&short, &node.name, key(3)).await.unwrap();
    crate::support::wait::reached(&mut applied, generation, Duration::from_secs(5), "re-key").await;
    let device = client.get().await.unwrap();
    let back = device
        .peers
        .iter()
        .find(|p| p.public_key == *key(3).as_bytes())
        .expect("the re-keyed peer is back");
    assert_eq!(
        back.allowed_ips,
        vec![format!("{}/128", rekeyed.address).parse().unwrap()]
    );
    assert_eq!(device.peers.len(), 2);
    cancel.cancel();
}
