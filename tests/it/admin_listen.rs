//! The admin plane on its own listener (issue 22, point 5): with `[api] admin_listen` set, the
//! admin API and `/metrics` answer only there, and the public listener (`[api] listen`) serves
//! the peer API, the probes and the OpenAPI document, answering `404` for the admin plane even
//! with the admin token. `/metrics` reads the per-org counts from a cache: a flood of scrapes
//! costs one count query.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::pki::Pki;
use crate::support::{
    ADMIN_TOKEN, Api, Serve, free_port, sample, scrape, server_config, sixpn_cli,
};

/// `method path` on `base` with `bearer`: status and JSON body (`Null` when not JSON).
async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    bearer: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http.request(method, url).bearer_auth(bearer);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A `404` for `path` exactly as a path that exists nowhere gets it: the same error, but for the
/// path.
fn assert_no_such_route(answer: &(u16, Value), nowhere: &(u16, Value), path: &str) {
    assert_eq!(answer.0, 404, "{path}: {}", answer.1);
    let error = answer.1["error"].as_str().expect("a JSON error");
    let reference = nowhere.1["error"].as_str().expect("a JSON error");
    assert_eq!(
        error.replace(path, "PATH"),
        reference.replace("/api/v1/nowhere", "PATH"),
        "{path} must look like a route that does not exist"
    );
}

/// issue 22: with `SIXPN_ADMIN_LISTEN`, `/api/v1/*` and `/metrics` are `404` on the public
/// listener even with the admin token, and work on the admin listener, CLI included; the peer
/// API, `/healthz`, `/readyz` and `/api/openapi.json` work on the public one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue22_the_admin_plane_answers_only_on_admin_listen() {
    let dir = tempfile::tempdir().unwrap();
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let server = Serve::new(dir.path())
        .env("SIXPN_ADMIN_LISTEN", &admin_addr)
        .spawn();
    let public = server.api.clone();
    let admin = format!("http://{admin_addr}");
    let token = server.admin_token.clone();
    let http = reqwest::Client::new();

    // The public listener: the admin plane is no route at all, whatever the credential.
    let nowhere = call(
        &http,
        "GET",
        &format!("{public}/api/v1/nowhere"),
        &token,
        None,
    )
    .await;
    assert_eq!(nowhere.0, 404);
    for (method, path) in [
        ("GET", "/api/v1/orgs"),
        ("POST", "/api/v1/orgs"),
        ("GET", "/api/v1/orgs/personal/wireguard_tokens"),
        ("POST", "/api/v1/orgs/personal/wireguard_tokens"),
        ("GET", "/api/v1/orgs/personal/peers"),
        ("GET", "/api/v1/orgs/personal/audit"),
        ("GET", "/metrics"),
    ] {
        let body = (method == "POST").then(|| serde_json::json!({ "name": "x", "slug": "x" }));
        let with_token = call(&http, method, &format!("{public}{path}"), &token, body).await;
        assert_no_such_route(&with_token, &nowhere, path);
        let without = call(&http, method, &format!("{public}{path}"), "", None).await;
        assert_no_such_route(&without, &nowhere, path);
    }
    // Nothing reached the store through the public listener.
    let api = Api::new(&admin, &token);
    assert!(api.peers("personal").await.is_empty());

    // The admin listener: the admin API and /metrics work.
    let (status, orgs) = call(&http, "GET", &format!("{admin}/api/v1/orgs"), &token, None).await;
    assert_eq!(status, 200, "{orgs}");
    assert!(
        orgs.as_array()
            .unwrap()
            .iter()
            .any(|o| o["slug"] == "personal")
    );
    let metrics = scrape(&admin).await;
    assert_eq!(sample(&metrics, "sixpn_store_up", &[]), Some(1.0));
    // The admin listener does not serve the peer API.
    let (status, _) = call(
        &http,
        "GET",
        &format!("{admin}/api/v3/wire_guard_peers/n1"),
        "",
        None,
    )
    .await;
    assert_eq!(status, 404);

    // The CLI with SIXPN_API_URL at the admin listener.
    let work = tempfile::tempdir().unwrap();
    let (admin2, token2, wdir) = (admin.clone(), token.clone(), work.path().to_owned());
    let public2 = public.clone();
    let (created, listed, wrong) = tokio::task::spawn_blocking(move || {
        let env = [
            ("SIXPN_API_URL", admin2.as_str()),
            ("SIXPN_ADMIN_TOKEN", token2.as_str()),
        ];
        let created = sixpn_cli(&wdir, &["token", "create", "--name", "via-admin"], &env);
        let listed = sixpn_cli(&wdir, &["token", "list"], &env);
        let wrong = sixpn_cli(
            &wdir,
            &["token", "list"],
            &[
                ("SIXPN_API_URL", public2.as_str()),
                ("SIXPN_ADMIN_TOKEN", token2.as_str()),
            ],
        );
        (created, listed, wrong)
    })
    .await
    .unwrap();
    let stdout = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(created.status.success(), "{}", stderr(&created));
    let wg_token = stdout(&created)
        .lines()
        .find_map(|l| l.strip_prefix("SIXPN_WIREGUARD_TOKEN=").map(str::to_owned))
        .expect("the token is printed");
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).contains("via-admin"), "{}", stdout(&listed));
    // Pointed at the public listener, admin commands find nothing there.
    assert!(!wrong.status.success(), "{}", stdout(&wrong));

    // The public listener: the peer API with the WireGuard token, the probes, the document.
    let (status, peer) = Api::new(&public, &token)
        .register(&wg_token, "n1", "web")
        .await;
    assert_eq!(status, 200, "{peer}");
    let (status, shown) = call(
        &http,
        "GET",
        &format!("{public}/api/v3/wire_guard_peers/n1"),
        &wg_token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    for probe in ["/healthz", "/readyz"] {
        let (status, body) = call(&http, "GET", &format!("{public}{probe}"), "", None).await;
        assert_eq!(status, 200, "{probe}: {body}");
    }
    let (status, doc) = call(
        &http,
        "GET",
        &format!("{public}/api/openapi.json"),
        "",
        None,
    )
    .await;
    assert_eq!(status, 200);
    // The document stays the whole API's.
    for path in [
        "/api/v1/orgs",
        "/metrics",
        "/api/v3/wire_guard_peers",
        "/healthz",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} in the document");
    }
    assert_eq!(api.peers("personal").await.len(), 1);
}

/// issue 22: 64 concurrent scrapes share one read of the per-org counts, however many clients
/// ask (`sixpn_store_duration_seconds_count{op="org_counts"}` counts the reads; the cache is
/// refreshed at most every 5 s, so a run that took longer may see one more read per 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue22_concurrent_scrapes_cost_one_count_query() {
    let dir = tempfile::tempdir().unwrap();
    let admin_addr = format!("127.0.0.1:{}", free_port());
    // Every scrape opens a connection from 127.0.0.1, past one source's accept burst (64): a
    // fleet of scrapers would come from many addresses, so this one source is let through.
    let config = dir.path().join("sixpn.toml");
    std::fs::write(&config, "[api]\naccept_rate = 0\n").unwrap();
    let server = Serve::new(dir.path())
        .env("SIXPN_ADMIN_LISTEN", &admin_addr)
        .args(["--config", config.to_str().unwrap()])
        .spawn();
    let admin = format!("http://{admin_addr}");
    let api = Api::new(&admin, &server.admin_token);
    let wg = api.mint("personal", "scrape", None).await;
    let (status, _) = Api::new(&server.api, &server.admin_token)
        .register(&wg, "s1", "web")
        .await;
    assert_eq!(status, 200);

    let reads = |text: &str| {
        sample(
            text,
            "sixpn_store_duration_seconds_count",
            &["op=\"org_counts\""],
        )
        .unwrap_or(0.0)
    };
    let start = Instant::now();
    let scrapes: Vec<_> = (0..64)
        .map(|_| {
            let admin = admin.clone();
            tokio::spawn(async move { scrape(&admin).await })
        })
        .collect();
    for scrape in scrapes {
        let text = scrape.await.unwrap();
        // Every scrape shows the counts, read once for all of them.
        assert_eq!(
            sample(&text, "sixpn_org_peers", &["org=\"personal\""]),
            Some(1.0),
            "{text}"
        );
        assert_eq!(sample(&text, "sixpn_store_up", &[]), Some(1.0));
    }
    let after = scrape(&admin).await;
    let windows = start.elapsed().as_secs() / 5;
    let n = reads(&after);
    assert!(n >= 1.0, "the counts were read: {after}");
    assert!(
        n <= 1.0 + windows as f64,
        "65 scrapes in {:?} ran {n} count queries",
        start.elapsed()
    );
    // An admin call in between changes nothing: it reads no counts.
    api.peers("personal").await;
    assert!(reads(&scrape(&admin).await) <= 1.0 + (start.elapsed().as_secs() / 5) as f64);
}

/// issue 22: the admin listener gets the same TLS settings as the public one, and
/// `Running::admin_addr` tells where it is; unset, there is no second listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue22_admin_listen_serves_https_like_listen() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let mut config = server_config(data.path(), None);
    config.api.tls_cert = Some(pki.path("server.crt"));
    config.api.tls_key = Some(pki.path("server.key"));
    config.api.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    config.validate().unwrap();
    let server = sixpn::serve::start(config).await.expect("server starts");
    let admin_addr = server.admin_addr.expect("an admin listener");
    assert_ne!(admin_addr, server.api_addr);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.path("ca.pem")).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let admin = format!("https://127.0.0.1:{}", admin_addr.port());
    let public = format!("https://127.0.0.1:{}", server.api_addr.port());
    let (status, _) = call(
        &https,
        "GET",
        &format!("{admin}/api/v1/orgs"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(&https, "GET", &format!("{public}/healthz"), "", None).await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &https,
        "GET",
        &format!("{public}/api/v1/orgs"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 404);
    // Plain HTTP on the admin port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{admin_addr}/api/v1/orgs"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    server.shutdown().await.unwrap();

    let data = tempfile::tempdir().unwrap();
    let server = sixpn::serve::start(server_config(data.path(), None))
        .await
        .unwrap();
    assert_eq!(server.admin_addr, None);
    server.shutdown().await.unwrap();
}

/// issue 22: the shipped gateway configuration keeps the admin plane on loopback and the peer
/// API public.
#[test]
fn issue22_the_shipped_gateway_config_puts_the_admin_plane_on_loopback() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/gateway/sixpn.toml");
    let config = sixpn::config::Config::from_file(&path).unwrap();
    config.validate().unwrap();
    let admin = config.api.admin_listen.expect("admin_listen is set");
    assert!(admin.ip().is_loopback(), "{admin}");
    assert!(config.api.listen.ip().is_unspecified());
}
