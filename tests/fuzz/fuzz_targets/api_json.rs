//! The API's request bodies, through the real router (`api::router`) over a real SQLite store in
//! a temporary folder, on one current-thread tokio runtime per process: content-type check, body
//! limit, the JSON object reader (duplicate keys refused) and each handler's field reading, for
//! peer create (with a free token and with a group-confined one), peer re-key, token mint and org
//! create.
//!
//! Input: one byte choosing the request (see `ROUTES`), one byte choosing the content type
//! (below 0xF0 `application/json`, else another), then the body.
//!
//! Fails when a request panics the router, answers 5xx, answers a body that is not JSON, a
//! failure without a non-empty `"error"` (flyctl takes any parseable body without `error` for
//! success), or a peer success without `us`, `them` and `key`.

#![no_main]

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sixpn::api::{AdminToken, ApiState, RateLimits, router};
use sixpn::model::{Generation, Region};
use sixpn::store::Store;
use sixpn::wireguard::PrivateKey;
use tower::ServiceExt;

const ADMIN: &str = "fuzz-admin-token-0123456789abcdef";

/// Method, path, which credential (0 admin, 1 free token, 2 token confined to group `web`).
const ROUTES: &[(&str, &str, usize)] = &[
    ("POST", "/api/v3/wire_guard_peers", 1),
    ("POST", "/api/v3/wire_guard_peers", 2),
    ("PUT", "/api/v3/wire_guard_peers/node-1", 1),
    ("POST", "/api/v1/orgs/personal/wireguard_tokens", 0),
    ("POST", "/api/v1/orgs", 0),
];

const CONTENT_TYPES: &[&str] = &[
    "text/plain",
    "application/merge-patch+json",
    "Application/JSON; charset=utf-8",
    "application/x-www-form-urlencoded",
];

struct Api {
    router: Router,
    /// Bearer values: admin, free token, group token.
    auth: [String; 3],
}

async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    auth: &str,
    ct: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {auth}"))
        .header("content-type", ct)
        .body(Body::from(body))
        .expect("a valid request");
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status().as_u16();
    let bytes = res
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, bytes)
}

fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sixpn-fuzz-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary folder");
        let url = format!("sqlite://{}/fuzz.db", dir.display());
        sixpn_fuzz::runtime().block_on(async {
            let store = Store::open(&url, "fdaa::/16".parse().expect("prefix"))
                .await
                .expect("open the store");
            let key = |b| PrivateKey::from_bytes([b; 32]).public_key();
            let regions = vec![
                Region {
                    code: "local".parse().expect("region"),
                    endpoint_host: "127.0.0.1".into(),
                    port: 51820,
                    public_key: key(1),
                    default: true,
                },
                Region {
                    code: "ams".parse().expect("region"),
                    endpoint_host: "203.0.113.7".into(),
                    port: 51821,
                    public_key: key(2),
                    default: false,
                },
            ];
            // Writes wait for DNS to publish their generation; here it is always published.
            let (published_tx, published) = tokio::sync::watch::channel(Generation(u64::MAX));
            std::mem::forget(published_tx);
            let router = router(ApiState {
                store,
                regions: std::sync::Arc::new(regions),
                admin_token: AdminToken::new(ADMIN),
                published,
                gateway: None,
                body_limit: 4096,
                body_timeout: std::time::Duration::from_secs(10),
                // One client sends everything; the limits have their own tests.
                rate_limits: RateLimits::off(),
                key_expiry: None,
                live_window: std::time::Duration::from_secs(180),
                snapshot: None,
                console: true,
            });
            let mint = |body: &'static str| {
                let router = router.clone();
                async move {
                    let (status, bytes) = call(
                        &router,
                        "POST",
                        "/api/v1/orgs/personal/wireguard_tokens",
                        ADMIN,
                        "application/json",
                        body.into(),
                    )
                    .await;
                    let json: Value = serde_json::from_slice(&bytes).expect("JSON");
                    assert!(status < 300, "mint: {status} {json}");
                    json["token"].as_str().expect("token").to_owned()
                }
            };
            let free = mint(r#"{"name":"fuzz-free"}"#).await;
            let web = mint(r#"{"name":"fuzz-web","group":"web"}"#).await;
            let pubkey = PrivateKey::from_bytes([3; 32]).public_key().to_base64();
            let body = format!(r#"{{"name":"node-1","group":"k8s","pubkey":"{pubkey}"}}"#);
            let (status, _) = call(
                &router,
                "POST",
                "/api/v3/wire_guard_peers",
                &free,
                "application/json",
                body.into_bytes(),
            )
            .await;
            assert!(status < 300, "create node-1: {status}");
            Api {
                router,
                auth: [ADMIN.to_owned(), free, web],
            }
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let [route, ct, body @ ..] = data else {
        return;
    };
    let api = api();
    let (method, uri, who) = ROUTES[usize::from(*route) % ROUTES.len()];
    let ct = if *ct < 0xF0 {
        "application/json"
    } else {
        CONTENT_TYPES[usize::from(*ct) % CONTENT_TYPES.len()]
    };
    let (status, bytes) = sixpn_fuzz::runtime().block_on(call(
        &api.router,
        method,
        uri,
        &api.auth[who],
        ct,
        body.to_vec(),
    ));
    let shown = String::from_utf8_lossy(&bytes);
    assert!(status < 500, "{method} {uri}: {status} {shown}");
    let json: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {uri}: {status}: body is not JSON ({e}): {shown}"));
    if status >= 400 {
        let error = json["error"].as_str().unwrap_or_default();
        assert!(
            !error.is_empty(),
            "{method} {uri}: {status} without an error: {shown}"
        );
    } else if uri.starts_with("/api/v3") {
        for field in ["us", "them", "key"] {
            assert!(
                json[field].is_string(),
                "{method} {uri}: {status} without {field}: {shown}"
            );
        }
    }
});
