//! The HTTP API against a real SQLite store (and PostgreSQL when `SIXPN_TEST_POSTGRES_URL` is
//! set): flyctl's exact bytes, every auth form, every error case, isolation, cascades and
//! concurrency. Most tests call `router(state).oneshot(request)`; a few go through a socket.

use std::collections::HashSet;
use std::net::Ipv6Addr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ipnet::Ipv6Net;
use serde_json::{Value, json};
use sixpn::model::{Generation, PeerName, now_unix};
use sixpn::store::NewToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api_support::{
    ADMIN, BODY_LIMIT, TestApi, flyctl_create, flyctl_update, pubkey, request, send, state_with,
};

const PEERS: &str = "/api/v3/wire_guard_peers";

fn prefix_of(api_answer: &Value) -> Ipv6Net {
    api_answer["allowed_ips"].as_str().unwrap().parse().unwrap()
}

fn us(answer: &Value) -> Ipv6Addr {
    answer["us"].as_str().unwrap().parse().unwrap()
}

/// The issue-2 acceptance flow: flyctl's exact POST and PUT bytes.
async fn flyctl_create_and_update(api: &TestApi) {
    let token = api.mint("personal", "k8s", json!({})).await;
    let org = api.admin("GET", "/api/v1/orgs", None).await;
    let personal: Ipv6Net = org.ok().as_array().unwrap()[0]["prefix"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let first_key = pubkey();
    let created = api
        .peer(
            "POST",
            PEERS,
            &token,
            Some(&flyctl_create("node-1", "k8s", &first_key, "local")),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.json);
    let body = created.ok();
    let address = us(body);
    assert!(personal.contains(&address), "{address} outside {personal}");
    assert_eq!(body["them"], "127.0.0.1");
    assert_eq!(body["key"], api.regions[0].public_key.to_base64());
    assert_eq!(body["endpoint"], "127.0.0.1:51820");
    assert_eq!(body["name"], "node-1");
    assert_eq!(body["group"], "k8s");
    assert_eq!(body["region"], "local");
    assert_eq!(body["org"], "personal");
    assert_eq!(body["pubkey"], first_key.as_str());
    assert_eq!(prefix_of(body), personal);
    assert_eq!(
        body["dns"].as_str().unwrap().parse::<Ipv6Addr>().unwrap(),
        Ipv6Addr::from(u128::from(personal.network()) | 3)
    );
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));

    let new_key = pubkey();
    let updated = api
        .peer(
            "PUT",
            &format!("{PEERS}/node-1"),
            &token,
            Some(&flyctl_update(&new_key)),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.json);
    assert_eq!(us(updated.ok()), address, "the address survives re-key");
    assert_eq!(updated.json["pubkey"], new_key.as_str());
    assert_eq!(updated.json["them"], "127.0.0.1");

    // The new key is what the store holds.
    let stored = api
        .store
        .get_peer(
            &"personal".parse().unwrap(),
            &"node-1".parse::<PeerName>().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(stored.pubkey.to_base64(), new_key);
    assert_eq!(stored.address, address);

    // The old key is free again: another peer may take it.
    let again = api.create(&token, "node-2", "k8s", &first_key).await;
    again.ok();
}

#[tokio::test]
async fn flyctl_exact_bytes_create_then_rekey() {
    flyctl_create_and_update(&TestApi::new().await).await;
}

#[tokio::test]
async fn flyctl_exact_bytes_on_postgres() {
    let Some(base) = crate::store::postgres_base_url() else {
        eprintln!("skipped: SIXPN_TEST_POSTGRES_URL is not set");
        return;
    };
    let db = crate::store::TestDb::postgres(&base).await;
    let api = TestApi::over(db.open().await, None);
    flyctl_create_and_update(&api).await;
}

#[tokio::test]
async fn every_authorization_form_works() {
    let api = TestApi::new().await;
    let token = api.mint("personal", "forms", json!({})).await;
    api.create(&token, "node-1", "", &pubkey()).await.ok();
    for form in [
        format!("Bearer {token}"),
        format!("FlyV1 {token}"),
        format!("Bearer FlyV1 {token}"),
        format!("bearer {token}"),
        format!("  Bearer   FlyV1   {token}  "),
    ] {
        let answer = api
            .call("GET", &format!("{PEERS}/node-1"), Some(&form), None)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{form:?}: {}", answer.json);
        assert_eq!(answer.json["name"], "node-1");
    }
    // The same forms create peers too.
    let created = api
        .call(
            "POST",
            PEERS,
            Some(&format!("FlyV1 {token}")),
            Some(&flyctl_create("node-2", "", &pubkey(), "")),
        )
        .await;
    created.ok();
}

#[tokio::test]
async fn authentication_failures_are_401_with_a_reason() {
    let api = TestApi::new().await;
    let body = flyctl_create("node-1", "", &pubkey(), "");

    let none = api.call("POST", PEERS, None, Some(&body)).await;
    none.expect_error(401, &["authorization"]);
    assert!(none.headers.contains_key("www-authenticate"));

    api.call("POST", PEERS, Some(""), Some(&body))
        .await
        .expect_error(401, &["authorization"]);
    api.call("POST", PEERS, Some("Basic dXNlcjpwdw=="), Some(&body))
        .await
        .expect_error(401, &["bearer"]);
    api.call("POST", PEERS, Some("Bearer"), Some(&body))
        .await
        .expect_error(401, &["bearer"]);
    api.peer("POST", PEERS, "sixpn_wg_0000000000000000", Some(&body))
        .await
        .expect_error(401, &["unknown token"]);

    // Expired: minted directly in the store with an expiry in the past.
    let (_, expired) = api
        .store
        .mint_token(
            &"personal".parse().unwrap(),
            NewToken {
                name: "old".parse().unwrap(),
                group: None,
                expires_at: Some(now_unix() - 60),
                max_peers: None,
            },
        )
        .await
        .unwrap();
    api.peer("POST", PEERS, expired.expose(), Some(&body))
        .await
        .expect_error(401, &["expired"]);

    // Deleted.
    let deleted = api.mint("personal", "gone", json!({})).await;
    api.admin(
        "DELETE",
        "/api/v1/orgs/personal/wireguard_tokens/gone",
        None,
    )
    .await
    .ok();
    api.peer("POST", PEERS, &deleted, Some(&body))
        .await
        .expect_error(401, &["deleted"]);
    api.peer("GET", &format!("{PEERS}/node-1"), &deleted, None)
        .await
        .expect_error(401, &["deleted"]);

    // Authentication comes before the body: no token and a broken body is still 401.
    api.call("POST", PEERS, None, Some("{not json"))
        .await
        .expect_error(401, &[]);
}

#[tokio::test]
async fn bad_bodies_get_specific_errors() {
    let api = TestApi::new().await;
    let token = api.mint("personal", "bodies", json!({})).await;
    let key = pubkey();
    let post = |body: String| {
        let api = &api;
        let token = token.clone();
        async move { api.peer("POST", PEERS, &token, Some(&body)).await }
    };

    post("{\"name\":\"node-1\",".into())
        .await
        .expect_error(400, &["malformed json"]);
    post("".into()).await.expect_error(400, &["empty"]);
    post("[]".into()).await.expect_error(422, &["object"]);
    post("{}".into())
        .await
        .expect_error(422, &["name", "required"]);
    post(format!(
        "{{\"name\":\"node-1\",\"pubkey\":\"{key}\",\"group\":7}}"
    ))
    .await
    .expect_error(422, &["group", "string"]);
    post("{\"name\":\"node-1\"}".into())
        .await
        .expect_error(422, &["pubkey", "required"]);
    post(flyctl_create("node_1", "", &key, ""))
        .await
        .expect_error(422, &["name", "dns label"]);
    post(flyctl_create(&"a".repeat(64), "", &key, ""))
        .await
        .expect_error(422, &["name", "63"]);
    post(flyctl_create("-node", "", &key, ""))
        .await
        .expect_error(422, &["name", "'-'"]);
    post(flyctl_create("node-1", "k8s.prod", &key, ""))
        .await
        .expect_error(422, &["group", "dns label"]);
    post(flyctl_create("node-1", "", "not-base64!", ""))
        .await
        .expect_error(422, &["pubkey", "32 bytes"]);
    post(flyctl_create("node-1", "", "AAAA", ""))
        .await
        .expect_error(422, &["pubkey", "44"]);
    // 44 characters, but not the standard alphabet.
    post(flyctl_create(
        "node-1",
        "",
        &key.replace(['+', '/'], "-")
            .replace(|c: char| c.is_ascii_digit(), "_"),
        "",
    ))
    .await
    .expect_error(422, &["pubkey"]);
    // A low-order point: all zeros, and u = 1.
    let zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    post(flyctl_create("node-1", "", zero, ""))
        .await
        .expect_error(422, &["pubkey", "low-order"]);
    let one = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    post(flyctl_create("node-1", "", one, ""))
        .await
        .expect_error(422, &["low-order"]);
    post(flyctl_create("node-1", "", &key, "mars"))
        .await
        .expect_error(422, &["region", "mars", "local", "ams"]);

    // Content types.
    let mut req = request("POST", PEERS, Some(&format!("Bearer {token}")), None);
    *req.body_mut() = Body::from(flyctl_create("node-1", "", &key, ""));
    api.send(req)
        .await
        .expect_error(415, &["content-type: application/json"]);
    let req = Request::builder()
        .method("POST")
        .uri(PEERS)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("name=node-1"))
        .unwrap();
    api.send(req)
        .await
        .expect_error(415, &["x-www-form-urlencoded"]);

    // Over the size limit, with and without a Content-Length that says so.
    let padding = "x".repeat(BODY_LIMIT + 10);
    let big = format!("{{\"name\":\"node-1\",\"pubkey\":\"{key}\",\"pad\":\"{padding}\"}}");
    post(big.clone())
        .await
        .expect_error(413, &[&BODY_LIMIT.to_string()]);
    // None of this created anything, and a good body still works.
    assert!(
        api.store
            .list_peers(&"personal".parse().unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    post(flyctl_create("NODE-1", "", &key, "AMS")).await.ok();
    let peer = api
        .peer("GET", &format!("{PEERS}/node-1"), &token, None)
        .await;
    assert_eq!(peer.ok()["region"], "ams");
    assert_eq!(peer.json["them"], "203.0.113.7");
    assert_eq!(peer.json["endpoint"], "203.0.113.7:51821");
}

#[tokio::test]
async fn duplicate_name_is_409_pointing_at_put() {
    let api = TestApi::new().await;
    let token = api.mint("personal", "dup", json!({})).await;
    api.create(&token, "node-1", "", &pubkey()).await.ok();
    api.create(&token, "node-1", "", &pubkey())
        .await
        .expect_error(
            409,
            &["already exists", "PUT /api/v3/wire_guard_peers/node-1"],
        );
    // Names are case-insensitive.
    api.create(&token, "Node-1", "", &pubkey())
        .await
        .expect_error(409, &["already exists"]);
    // Another token of the same org cannot take the name either.
    let other = api.mint("personal", "other", json!({})).await;
    api.create(&other, "node-1", "", &pubkey())
        .await
        .expect_error(409, &["already exists"]);
}

#[tokio::test]
async fn a_public_key_in_use_is_409() {
    let api = TestApi::new().await;
    let token = api.mint("personal", "keys", json!({})).await;
    let key = pubkey();
    api.create(&token, "node-1", "", &key).await.ok();
    api.create(&token, "node-2", "", &key)
        .await
        .expect_error(409, &["public key", "already used"]);
    // Re-keying to another peer's key is refused as well.
    let other_key = pubkey();
    api.create(&token, "node-3", "", &other_key).await.ok();
    api.peer(
        "PUT",
        &format!("{PEERS}/node-3"),
        &token,
        Some(&flyctl_update(&key)),
    )
    .await
    .expect_error(409, &["public key"]);
    // Re-keying to its own key is fine.
    api.peer(
        "PUT",
        &format!("{PEERS}/node-3"),
        &token,
        Some(&flyctl_update(&other_key)),
    )
    .await
    .ok();
}

#[tokio::test]
async fn another_tokens_peer_looks_exactly_like_no_peer() {
    let api = TestApi::new().await;
    let owner = api.mint("personal", "owner", json!({})).await;
    let stranger = api.mint("personal", "stranger", json!({})).await;
    let key = pubkey();
    api.create(&owner, "node-1", "", &key).await.ok();

    for (method, body) in [
        ("GET", None),
        ("PUT", Some(flyctl_update(&pubkey()))),
        ("DELETE", None),
    ] {
        let theirs = api
            .peer(
                method,
                &format!("{PEERS}/node-1"),
                &stranger,
                body.as_deref(),
            )
            .await;
        theirs.expect_error(404, &["node-1"]);
        let missing = api
            .peer(
                method,
                &format!("{PEERS}/node-9"),
                &stranger,
                body.as_deref(),
            )
            .await;
        missing.expect_error(404, &["node-9"]);
        assert_eq!(
            theirs.error().replace("node-1", "NAME"),
            missing.error().replace("node-9", "NAME"),
            "{method}: the answers must not tell the two apart"
        );
    }
    // Nothing changed for the owner.
    let peer = api
        .peer("GET", &format!("{PEERS}/node-1"), &owner, None)
        .await;
    assert_eq!(peer.ok()["pubkey"], key.as_str());
    // The owner can delete it.
    let deleted = api
        .peer("DELETE", &format!("{PEERS}/node-1"), &owner, None)
        .await;
    assert_eq!(deleted.ok()["deleted"], "node-1");
    api.peer("GET", &format!("{PEERS}/node-1"), &owner, None)
        .await
        .expect_error(404, &["node-1"]);
}

#[tokio::test]
async fn a_group_confined_token_stays_in_its_group() {
    let api = TestApi::new().await;
    let token = api.mint("personal", "web", json!({"group": "web"})).await;
    api.create(&token, "node-1", "db", &pubkey())
        .await
        .expect_error(403, &["confined", "web", "db"]);
    let defaulted = api.create(&token, "node-1", "", &pubkey()).await;
    assert_eq!(defaulted.ok()["group"], "web");
    let explicit = api.create(&token, "node-2", "WEB", &pubkey()).await;
    assert_eq!(explicit.ok()["group"], "web");
    // An unconfined token without a group gets the default group.
    let free = api.mint("personal", "free", json!({})).await;
    let peer = api.create(&free, "node-3", "", &pubkey()).await;
    assert_eq!(peer.ok()["group"], sixpn::api::DEFAULT_GROUP);
    // Re-key cannot move a peer to another group or region.
    api.peer(
        "PUT",
        &format!("{PEERS}/node-1"),
        &token,
        Some(&format!("{{\"pubkey\":\"{}\",\"group\":\"db\"}}", pubkey())),
    )
    .await
    .expect_error(422, &["group"]);
    api.peer(
        "PUT",
        &format!("{PEERS}/node-1"),
        &token,
        Some(&format!(
            "{{\"pubkey\":\"{}\",\"region\":\"ams\"}}",
            pubkey()
        )),
    )
    .await
    .expect_error(422, &["region"]);
    api.peer(
        "PUT",
        &format!("{PEERS}/node-1"),
        &token,
        Some(&format!(
            "{{\"pubkey\":\"{}\",\"name\":\"node-2\"}}",
            pubkey()
        )),
    )
    .await
    .expect_error(422, &["name", "renamed"]);
    // Matching non-empty fields are fine.
    api.peer(
        "PUT",
        &format!("{PEERS}/node-1"),
        &token,
        Some(&format!(
            "{{\"pubkey\":\"{}\",\"name\":\"node-1\",\"group\":\"web\",\"region\":\"local\"}}",
            pubkey()
        )),
    )
    .await
    .ok();
}

#[tokio::test]
async fn the_peer_cap_is_enforced() {
    let api = TestApi::new().await;
    let token = api
        .mint("personal", "capped", json!({"max_peers": 2}))
        .await;
    api.create(&token, "node-1", "", &pubkey()).await.ok();
    api.create(&token, "node-2", "", &pubkey()).await.ok();
    api.create(&token, "node-3", "", &pubkey())
        .await
        .expect_error(429, &["cap of 2"]);
    // Deleting one frees a slot.
    api.peer("DELETE", &format!("{PEERS}/node-1"), &token, None)
        .await
        .ok();
    api.create(&token, "node-3", "", &pubkey()).await.ok();
    let tokens = api
        .admin("GET", "/api/v1/orgs/personal/wireguard_tokens", None)
        .await;
    let capped = &tokens.ok().as_array().unwrap()[0];
    assert_eq!(capped["max_peers"], 2);
    assert_eq!(capped["live_peers"], 2);
}

#[tokio::test]
async fn orgs_are_isolated() {
    let api = TestApi::new().await;
    let acme = api
        .admin("POST", "/api/v1/orgs", Some(json!({"slug": "acme"})))
        .await;
    assert_eq!(acme.status, StatusCode::CREATED, "{}", acme.json);
    let acme_prefix: Ipv6Net = acme.json["prefix"].as_str().unwrap().parse().unwrap();

    let a = api.mint("personal", "nodes", json!({})).await;
    let b = api.mint("acme", "nodes", json!({})).await;
    let a_peer = api.create(&a, "node-1", "web", &pubkey()).await;
    let a_address = us(a_peer.ok());

    // Org B sees nothing of A's node-1 and cannot change it.
    api.peer("GET", &format!("{PEERS}/node-1"), &b, None)
        .await
        .expect_error(404, &[]);
    api.peer(
        "PUT",
        &format!("{PEERS}/node-1"),
        &b,
        Some(&flyctl_update(&pubkey())),
    )
    .await
    .expect_error(404, &[]);
    api.peer("DELETE", &format!("{PEERS}/node-1"), &b, None)
        .await
        .expect_error(404, &[]);

    // B may use the same name in its own org, inside its own /48.
    let b_peer = api.create(&b, "node-1", "web", &pubkey()).await;
    let b_address = us(b_peer.ok());
    assert!(acme_prefix.contains(&b_address));
    assert!(!acme_prefix.contains(&a_address));
    assert_eq!(b_peer.json["org"], "acme");
    assert_eq!(prefix_of(&b_peer.json), acme_prefix);

    // Each org's lists hold only its own.
    let personal_peers = api.admin("GET", "/api/v1/orgs/personal/peers", None).await;
    let personal_peers = personal_peers.ok().as_array().unwrap().clone();
    assert_eq!(personal_peers.len(), 1);
    assert_eq!(personal_peers[0]["address"], a_address.to_string());
    let acme_peers = api.admin("GET", "/api/v1/orgs/acme/peers", None).await;
    assert_eq!(acme_peers.ok().as_array().unwrap().len(), 1);
    assert_eq!(acme_peers.json[0]["address"], b_address.to_string());

    // A still has its peer, unchanged.
    let still = api.peer("GET", &format!("{PEERS}/node-1"), &a, None).await;
    assert_eq!(us(still.ok()), a_address);
}

#[tokio::test]
async fn deleting_a_token_deletes_its_peers() {
    let api = TestApi::new().await;
    let doomed = api.mint("personal", "doomed", json!({})).await;
    let kept = api.mint("personal", "kept", json!({})).await;
    for i in 0..3 {
        api.create(&doomed, &format!("d-{i}"), "", &pubkey())
            .await
            .ok();
    }
    api.create(&kept, "k-0", "", &pubkey()).await.ok();
    let start = *api.store.changes().borrow();

    let deleted = api
        .admin(
            "DELETE",
            "/api/v1/orgs/personal/wireguard_tokens/doomed",
            None,
        )
        .await;
    assert_eq!(deleted.ok()["deleted"], "doomed");
    assert_eq!(deleted.json["deleted_peers"], 3);
    assert!(*api.store.changes().borrow() > start, "a new generation");

    let peers = api.admin("GET", "/api/v1/orgs/personal/peers", None).await;
    let names: Vec<&str> = peers
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["k-0"]);
    let tokens = api
        .admin("GET", "/api/v1/orgs/personal/wireguard_tokens", None)
        .await;
    assert_eq!(tokens.ok().as_array().unwrap().len(), 1);
    api.admin(
        "DELETE",
        "/api/v1/orgs/personal/wireguard_tokens/doomed",
        None,
    )
    .await
    .expect_error(404, &["doomed"]);
    api.peer("GET", &format!("{PEERS}/d-0"), &doomed, None)
        .await
        .expect_error(401, &["deleted"]);
}

/// 200 concurrent POSTs with distinct names get 200 distinct addresses.
async fn concurrent_posts(api: &TestApi) {
    let token = api.mint("personal", "swarm", json!({})).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let router = api.router.clone();
        let token = token.clone();
        tasks.spawn(async move {
            let body = flyctl_create(&format!("node-{i}"), "swarm", &pubkey(), "");
            let req = request("POST", PEERS, Some(&format!("Bearer {token}")), Some(&body));
            send(&router, req).await
        });
    }
    let mut addresses = HashSet::new();
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.expect("task");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
        addresses.insert(us(&answer.json));
    }
    assert_eq!(addresses.len(), 200);
    let peers = api
        .store
        .list_peers(&"personal".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(peers.len(), 200);
    let stored: HashSet<Ipv6Addr> = peers.iter().map(|p| p.address).collect();
    assert_eq!(stored, addresses);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_posts_get_distinct_addresses() {
    concurrent_posts(&TestApi::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_posts_on_postgres() {
    let Some(base) = crate::store::postgres_base_url() else {
        eprintln!("skipped: SIXPN_TEST_POSTGRES_URL is not set");
        return;
    };
    let db = crate::store::TestDb::postgres(&base).await;
    concurrent_posts(&TestApi::over(db.open().await, None)).await;
}

#[tokio::test]
async fn secrets_appear_only_in_the_mint_answer() {
    let api = TestApi::new().await;
    let minted = api
        .admin(
            "POST",
            "/api/v1/orgs/personal/wireguard_tokens",
            Some(json!({"name": "k8s", "group": "web", "expires_in": "30d", "max_peers": 5})),
        )
        .await;
    assert_eq!(minted.status, StatusCode::CREATED);
    let secret = minted.json["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sixpn_wg_") && secret.len() > 40);
    assert_eq!(minted.json["name"], "k8s");
    assert_eq!(minted.json["group"], "web");
    assert_eq!(minted.json["max_peers"], 5);
    assert_eq!(minted.json["live_peers"], 0);
    assert!(minted.json["last_used_at"].is_null());
    let expires: String = minted.json["expires_at"].as_str().unwrap().to_owned();
    let expires = humantime::parse_rfc3339(&expires).unwrap();
    let in_days = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs()
        / 86400;
    assert!((29..=30).contains(&in_days), "{in_days} days");

    api.create(&secret, "node-1", "", &pubkey()).await.ok();
    let mut outputs = String::new();
    for uri in [
        "/api/v1/orgs/personal/wireguard_tokens",
        "/api/v1/orgs/personal/peers",
        "/api/v1/orgs/personal/peers/node-1",
        "/api/v1/orgs",
    ] {
        outputs.push_str(&api.admin("GET", uri, None).await.ok().to_string());
    }
    outputs.push_str(
        &api.peer("GET", &format!("{PEERS}/node-1"), &secret, None)
            .await
            .json
            .to_string(),
    );
    assert!(outputs.contains("node-1"));
    assert!(!outputs.contains(&secret), "a secret leaked into an answer");
    let hex = secret.trim_start_matches("sixpn_wg_");
    assert!(!outputs.contains(hex));
    let listed = api
        .admin("GET", "/api/v1/orgs/personal/wireguard_tokens", None)
        .await;
    assert!(
        listed.json[0]["last_used_at"].is_string(),
        "{}",
        listed.json
    );
    assert_eq!(listed.json[0]["live_peers"], 1);
    assert!(listed.json[0].get("token").is_none());

    // Not in the database files either.
    for entry in std::fs::read_dir(api.dir()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(hex.len()).any(|w| w == hex.as_bytes()),
            "the secret is stored in clear"
        );
    }
}

#[tokio::test]
async fn admin_api_round_trip() {
    let api = TestApi::new().await;
    // Orgs.
    let created = api
        .admin("POST", "/api/v1/orgs", Some(json!({"slug": "Acme"})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json["slug"], "acme");
    let prefix: Ipv6Net = created.json["prefix"].as_str().unwrap().parse().unwrap();
    assert_eq!(prefix.prefix_len(), 48);
    assert_eq!(
        created.json["dns"]
            .as_str()
            .unwrap()
            .parse::<Ipv6Addr>()
            .unwrap(),
        Ipv6Addr::from(u128::from(prefix.network()) | 3)
    );
    api.admin("POST", "/api/v1/orgs", Some(json!({"slug": "acme"})))
        .await
        .expect_error(409, &["already exists"]);
    api.admin("POST", "/api/v1/orgs", Some(json!({"slug": "a b"})))
        .await
        .expect_error(422, &["slug", "dns label"]);
    api.admin("POST", "/api/v1/orgs", Some(json!({})))
        .await
        .expect_error(422, &["slug", "required"]);
    let orgs = api.admin("GET", "/api/v1/orgs", None).await;
    let slugs: Vec<&str> = orgs
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["acme", "personal"]);

    // Tokens.
    let minted = api
        .admin(
            "POST",
            "/api/v1/orgs/acme/wireguard_tokens",
            Some(json!({"name": "ci", "expires_in": 3600})),
        )
        .await;
    assert_eq!(minted.status, StatusCode::CREATED, "{}", minted.json);
    assert!(minted.json["group"].is_null());
    assert!(minted.json["max_peers"].is_null());
    assert!(minted.json["expires_at"].is_string());
    api.admin(
        "POST",
        "/api/v1/orgs/acme/wireguard_tokens",
        Some(json!({"name": "ci"})),
    )
    .await
    .expect_error(409, &["ci", "already exists"]);
    for (body, words) in [
        (
            json!({"name": "x", "expires_in": "soon"}),
            &["expires_in"][..],
        ),
        (json!({"name": "x", "expires_in": 0}), &["expires_in"][..]),
        (json!({"name": "x", "expires_in": -3}), &["expires_in"][..]),
        (json!({"name": "x", "max_peers": 0}), &["max_peers"][..]),
        (
            json!({"name": "x", "max_peers": "3"}),
            &["max_peers", "number"][..],
        ),
        (json!({"name": "x", "group": "a.b"}), &["group"][..]),
        (json!({"name": "x_y"}), &["name"][..]),
    ] {
        api.admin("POST", "/api/v1/orgs/acme/wireguard_tokens", Some(body))
            .await
            .expect_error(422, words);
    }
    api.admin(
        "POST",
        "/api/v1/orgs/nope/wireguard_tokens",
        Some(json!({"name": "x"})),
    )
    .await
    .expect_error(404, &["nope"]);
    api.admin("GET", "/api/v1/orgs/nope/wireguard_tokens", None)
        .await
        .expect_error(404, &["nope"]);
    api.admin("GET", "/api/v1/orgs/nope/peers", None)
        .await
        .expect_error(404, &["nope"]);

    // Peers.
    let secret = minted.json["token"].as_str().unwrap();
    api.create(secret, "node-1", "", &pubkey()).await.ok();
    let shown = api
        .admin("GET", "/api/v1/orgs/acme/peers/node-1", None)
        .await;
    let shown = shown.ok();
    assert_eq!(shown["name"], "node-1");
    assert_eq!(shown["token"], "ci");
    assert_eq!(shown["org"], "acme");
    assert_eq!(shown["region"], "local");
    assert!(shown["status"].is_null(), "no gateway, no status");
    for field in ["group", "pubkey", "address", "created_at", "updated_at"] {
        assert!(shown[field].is_string(), "{field}: {shown}");
    }
    api.admin("GET", "/api/v1/orgs/personal/peers/node-1", None)
        .await
        .expect_error(404, &["node-1"]);
    let deleted = api
        .admin("DELETE", "/api/v1/orgs/acme/peers/node-1", None)
        .await;
    assert_eq!(deleted.ok()["deleted"], "node-1");
    api.admin("DELETE", "/api/v1/orgs/acme/peers/node-1", None)
        .await
        .expect_error(404, &["node-1"]);
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_token() {
    let api = TestApi::new().await;
    let peer_token = api.mint("personal", "node", json!({})).await;
    for auth in [
        None,
        Some("Bearer wrong".to_owned()),
        Some(format!("Bearer {peer_token}")),
        Some(format!("Bearer {ADMIN}x")),
        Some(format!("Basic {ADMIN}")),
    ] {
        let answer = api.call("GET", "/api/v1/orgs", auth.as_deref(), None).await;
        answer.expect_error(401, &[]);
        let answer = api
            .call(
                "POST",
                "/api/v1/orgs",
                auth.as_deref(),
                Some("{\"slug\":\"evil\"}"),
            )
            .await;
        answer.expect_error(401, &[]);
    }
    // The admin token is not a peer token either.
    api.peer(
        "POST",
        PEERS,
        ADMIN,
        Some(&flyctl_create("n", "", &pubkey(), "")),
    )
    .await
    .expect_error(401, &["unknown token"]);
    let orgs = api.admin("GET", "/api/v1/orgs", None).await;
    assert_eq!(orgs.ok().as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let api = TestApi::new().await;
    api.call("GET", "/nope", None, None)
        .await
        .expect_error(404, &["/nope", "openapi"]);
    api.call("GET", "/api/v3/wire_guard_peers/a/b", None, None)
        .await
        .expect_error(404, &[]);
    let wrong = api.call("GET", PEERS, None, None).await;
    wrong.expect_error(405, &["GET"]);
    assert_eq!(wrong.headers["allow"], "POST");
    let wrong = api
        .call("PATCH", &format!("{PEERS}/node-1"), None, None)
        .await;
    wrong.expect_error(405, &["PATCH"]);
    api.call("POST", "/healthz", None, None)
        .await
        .expect_error(405, &[]);
    // Names in the path are checked too.
    let token = api.mint("personal", "paths", json!({})).await;
    api.peer("GET", &format!("{PEERS}/bad_name"), &token, None)
        .await
        .expect_error(422, &["name", "dns label"]);
    api.peer("GET", &format!("{PEERS}/%FF%FE"), &token, None)
        .await
        .expect_error(422, &["name"]);
}

#[tokio::test]
async fn healthz_and_openapi() {
    let api = TestApi::new().await;
    let health = api.call("GET", "/healthz", None, None).await;
    assert_eq!(health.ok()["status"], "ok");
    assert!(health.json["generation"].is_u64());

    let doc = api.call("GET", "/api/openapi.json", None, None).await;
    let doc = doc.ok();
    // For an external validator: `SIXPN_DUMP_OPENAPI=/tmp/openapi.json cargo test --test it
    // healthz_and_openapi`, then e.g. Python's `openapi-spec-validator /tmp/openapi.json`.
    if let Ok(path) = std::env::var("SIXPN_DUMP_OPENAPI") {
        std::fs::write(path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    }
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
    let routes = [
        ("/api/v3/wire_guard_peers", &["post"][..]),
        (
            "/api/v3/wire_guard_peers/{name}",
            &["get", "put", "delete"][..],
        ),
        ("/api/v1/orgs", &["get", "post"][..]),
        ("/api/v1/orgs/{org}/wireguard_tokens", &["get", "post"][..]),
        (
            "/api/v1/orgs/{org}/wireguard_tokens/{name}",
            &["delete"][..],
        ),
        ("/api/v1/orgs/{org}/peers", &["get"][..]),
        ("/api/v1/orgs/{org}/peers/{name}", &["get", "delete"][..]),
        ("/api/openapi.json", &["get"][..]),
        ("/healthz", &["get"][..]),
    ];
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), routes.len());
    for (path, methods) in routes {
        for method in methods {
            assert!(
                doc["paths"][path][method]["responses"].is_object(),
                "{method} {path} missing from the document"
            );
        }
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert!(schemes.contains_key("bearerToken") && schemes.contains_key("adminToken"));
    for schema in [
        "PeerResponse",
        "PeerCreate",
        "Error",
        "Token",
        "Org",
        "Peer",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}

#[tokio::test]
async fn writes_wait_until_dns_has_published_them() {
    let api = TestApi::new().await;
    let token = api.mint("personal", "slow", json!({})).await;
    // A publisher that we drive by hand.
    let (publish, published) = tokio::sync::watch::channel(Generation(0));
    let router = sixpn::api::router(state_with(&api.store, api.regions.clone(), published));
    let mut committed = api.store.changes();
    let start = *committed.borrow_and_update();

    let req = request(
        "POST",
        PEERS,
        Some(&format!("Bearer {token}")),
        Some(&flyctl_create("node-1", "", &pubkey(), "")),
    );
    let call = tokio::spawn({
        let router = router.clone();
        async move { send(&router, req).await }
    });
    // The write commits...
    let generation = *committed.wait_for(|g| *g > start).await.unwrap();
    // ...but the answer waits for DNS.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !call.is_finished(),
        "answered before DNS published the write"
    );
    publish.send(generation).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(1), call)
        .await
        .expect("answers once published")
        .unwrap();
    answer.ok();

    // When DNS never catches up, the write still answers after the timeout.
    let started = std::time::Instant::now();
    let req = request(
        "POST",
        PEERS,
        Some(&format!("Bearer {token}")),
        Some(&flyctl_create("node-2", "", &pubkey(), "")),
    );
    send(&router, req).await.ok();
    let waited = started.elapsed();
    assert!(
        waited >= sixpn::api::PUBLISH_TIMEOUT && waited < sixpn::api::PUBLISH_TIMEOUT * 3,
        "{waited:?}"
    );
}

#[tokio::test]
async fn odd_requests_never_crash_or_5xx() {
    let api = TestApi::new().await;
    let token = api.mint("personal", "fuzz", json!({})).await;
    let auth = format!("Bearer {token}");
    let key = pubkey();
    let bodies = [
        "\u{0}\u{1}\u{2}".to_owned(),
        "{\"name\":null,\"pubkey\":null}".to_owned(),
        "{\"name\":[],\"pubkey\":{}}".to_owned(),
        format!("{{\"name\":\"n\",\"pubkey\":\"{key}\",\"name\":\"m\"}}"),
        "{\"name\":\"\u{e9}t\u{e9}\"}".to_owned(),
        "1e999999".to_owned(),
        "[".repeat(3000),
        "{\"name\":\"n\"".repeat(100),
        "\"just a string\"".to_owned(),
        format!("{{\"name\":\"ok-1\",\"pubkey\":\"{key}\",\"region\":\"../../etc\"}}"),
        format!("{{\"name\":\"ok-2\",\"pubkey\":\"{key}\",\"group\":\"\u{1F600}\"}}"),
    ];
    for body in bodies {
        for (method, uri) in [
            ("POST", PEERS.to_owned()),
            ("PUT", format!("{PEERS}/node-1")),
        ] {
            let answer = api.call(method, &uri, Some(&auth), Some(&body)).await;
            assert!(
                answer.status.is_client_error(),
                "{method} {body:?}: {} {}",
                answer.status,
                answer.json
            );
            answer.error();
        }
    }
    // A non-UTF-8 Authorization header.
    let req = Request::builder()
        .method("GET")
        .uri(format!("{PEERS}/node-1"))
        .header("authorization", &b"Bearer \xff\xfe"[..])
        .body(Body::empty())
        .unwrap();
    api.send(req).await.expect_error(401, &[]);
    // Overlong token.
    api.peer("GET", &format!("{PEERS}/node-1"), &"x".repeat(10_000), None)
        .await
        .expect_error(401, &[]);
    // Overlong name in the path.
    api.peer(
        "GET",
        &format!("{PEERS}/{}", "a".repeat(5000)),
        &token,
        None,
    )
    .await
    .expect_error(422, &["name"]);
}

/// Sends raw HTTP/1.1 bytes over TCP and returns the status code and JSON body.
async fn raw_http(addr: std::net::SocketAddr, bytes: &[u8]) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (status, serde_json::from_str(body).unwrap())
}

#[tokio::test]
async fn flyctl_bytes_over_a_real_socket() {
    let api = TestApi::new().await;
    let token = api.mint("personal", "tcp", json!({})).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let router = api.router.clone();
        let stop = stop.clone();
        async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    });

    let body = flyctl_create("node-1", "k8s", &pubkey(), "local");
    let request = format!(
        "POST /api/v3/wire_guard_peers HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: fly-cli\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, created) = raw_http(addr, request.as_bytes()).await;
    assert_eq!(status, 200, "{created}");
    assert!(!created["us"].as_str().unwrap().is_empty());
    assert_eq!(created["them"], "127.0.0.1");
    assert!(!created["key"].as_str().unwrap().is_empty());

    let body = flyctl_update(&pubkey());
    let request = format!(
        "PUT /api/v3/wire_guard_peers/node-1 HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: FlyV1 {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, updated) = raw_http(addr, request.as_bytes()).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["us"], created["us"]);

    // A chunked body (no Content-Length) over the limit: found while reading.
    let chunk = "x".repeat(1000);
    let mut request = format!(
        "POST /api/v3/wire_guard_peers HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for _ in 0..(BODY_LIMIT / 1000 + 2) {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    let (status, too_big) = raw_http(addr, request.as_bytes()).await;
    assert_eq!(status, 413, "{too_big}");
    assert!(too_big["error"].as_str().unwrap().contains("limit"));

    // An HTTP client with a body over the limit.
    let client = reqwest::Client::new();
    let res = client
        .post(format!("http://{addr}{PEERS}"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("x".repeat(BODY_LIMIT * 4))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
    let json: Value = res.json().await.unwrap();
    assert!(json["error"].as_str().unwrap().contains("limit"));

    stop.cancel();
    server.await.unwrap().unwrap();
}

/// Set for the child process of [`logs_name_routes_but_never_secrets`].
const LOG_CHILD_ENV: &str = "SIXPN_TEST_API_LOG_CHILD";

/// The logging scenario, run in a child process so that its global subscriber sees every
/// callsite (a scoped subscriber in a binary whose other tests run in parallel misses some:
/// tracing caches each callsite's interest process-wide). Does nothing unless started by
/// [`logs_name_routes_but_never_secrets`].
#[tokio::test]
async fn logs_child_process() {
    if std::env::var_os(LOG_CHILD_ENV).is_none() {
        return;
    }
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();

    let api = TestApi::new().await;
    let secret = api.mint("personal", "logged", json!({})).await;
    let wrong = "sixpn_wg_notarealsecretnotarealsecret";
    api.create(&secret, "node-1", "", &pubkey()).await.ok();
    api.call(
        "GET",
        &format!("{PEERS}/node-1"),
        Some(&format!("Bearer FlyV1 {secret}")),
        None,
    )
    .await
    .ok();
    api.peer("GET", &format!("{PEERS}/node-1"), wrong, None)
        .await
        .expect_error(401, &[]);
    api.call("GET", "/api/v1/orgs", Some("Bearer not-the-admin"), None)
        .await
        .expect_error(401, &[]);

    // The database goes away: a generic 5xx.
    api.store.close().await;
    for (uri, auth) in [
        ("/healthz", None),
        (
            "/api/v1/orgs/personal/peers",
            Some(format!("Bearer {ADMIN}")),
        ),
    ] {
        let failed = api.call("GET", uri, auth.as_deref(), None).await;
        assert!(failed.status.is_server_error(), "{}", failed.status);
        let error = failed.error();
        assert!(
            !error.contains("pool") && !error.contains("sqlx"),
            "{error}"
        );
    }
    // Not a log line: the parent needs it to search the logs.
    println!("SECRET={secret}");
}

#[test]
fn logs_name_routes_but_never_secrets() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "api::logs_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LOG_CHILD_ENV, "1")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{logs}");
    let secret = stdout
        .split_once("SECRET=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the child did not run the scenario:\n{stdout}"));

    assert!(
        logs.contains("route=/api/v3/wire_guard_peers/{name}"),
        "{logs}"
    );
    assert!(logs.contains("token=logged"), "{logs}");
    assert!(logs.contains("peer registered"), "{logs}");
    assert_eq!(
        logs.matches("request failed").count(),
        2,
        "each 5xx is logged exactly once:\n{logs}"
    );
    let hex = secret.trim_start_matches("sixpn_wg_");
    for needle in [hex, ADMIN, "notarealsecret", "not-the-admin"] {
        assert!(!logs.contains(needle), "{needle:?} appears in the logs");
    }
}
