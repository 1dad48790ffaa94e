//! Helpers for the API tests: a router over a real store in a temporary folder, requests built
//! from exact bytes, and JSON answers.

#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sixpn::api::{AdminToken, ApiState, RateLimits, router};
use sixpn::model::{Generation, Region};
use sixpn::store::Store;
use sixpn::wireguard::PrivateKey;
use tokio::sync::watch;
use tower::ServiceExt;

/// The admin token of every test router.
pub const ADMIN: &str = "test-admin-token-0123456789";

/// The body limit of every test router.
pub const BODY_LIMIT: usize = 4096;

/// The body read timeout of every test router.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// A fresh WireGuard public key in text form.
pub fn pubkey() -> String {
    PrivateKey::generate()
        .expect("OS random source")
        .public_key()
        .to_base64()
}

/// The two configured regions: `local` (default, 127.0.0.1) and `ams`.
pub fn regions() -> Arc<Vec<Region>> {
    let key = |_| PrivateKey::generate().expect("random").public_key();
    Arc::new(vec![
        Region {
            code: "local".parse().unwrap(),
            endpoint_host: "127.0.0.1".into(),
            port: 51820,
            public_key: key(0),
            default: true,
        },
        Region {
            code: "ams".parse().unwrap(),
            endpoint_host: "203.0.113.7".into(),
            port: 51821,
            public_key: key(1),
            default: false,
        },
    ])
}

/// An API over a real store.
pub struct TestApi {
    /// The store behind the API.
    pub store: Store,
    /// The router under test.
    pub router: Router,
    /// The configured regions.
    pub regions: Arc<Vec<Region>>,
    _dir: Option<tempfile::TempDir>,
}

/// One answer: status, headers and the body parsed as JSON (every answer must be JSON).
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub json: Value,
}

impl Answer {
    /// The `error` text, asserting it is there and not empty.
    pub fn error(&self) -> &str {
        let error = self.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no \"error\" in {} answer: {}", self.status, self.json));
        assert!(!error.is_empty(), "empty error in {} answer", self.status);
        error
    }

    /// Asserts the status and that the error mentions each of `words` (case-insensitively).
    pub fn expect_error(&self, status: u16, words: &[&str]) -> &Self {
        assert_eq!(self.status.as_u16(), status, "answer: {}", self.json);
        let error = self.error().to_ascii_lowercase();
        for word in words {
            assert!(
                error.contains(&word.to_ascii_lowercase()),
                "error {error:?} should mention {word:?}"
            );
        }
        self
    }

    /// Asserts `200`/`201` and returns the body.
    pub fn ok(&self) -> &Value {
        assert!(
            self.status.is_success(),
            "expected success, got {}: {}",
            self.status,
            self.json
        );
        &self.json
    }
}

/// The state over `store` with `published` following the store's change channel directly.
pub fn state(store: &Store, regions: Arc<Vec<Region>>) -> ApiState {
    state_with(store, regions, store.changes())
}

/// The state over `store` with a given `published` receiver.
pub fn state_with(
    store: &Store,
    regions: Arc<Vec<Region>>,
    published: watch::Receiver<Generation>,
) -> ApiState {
    ApiState {
        store: store.clone(),
        regions,
        admin_token: AdminToken::new(ADMIN),
        published,
        gateway: None,
        body_limit: BODY_LIMIT,
        body_timeout: BODY_TIMEOUT,
        // Most tests send bursts from one token; the rate-limit tests turn limits on.
        rate_limits: RateLimits::off(),
        key_expiry: None,
        live_window: sixpn::config::DEFAULT_HEALTH_WINDOW,
        snapshot: None,
        console: true,
    }
}

impl TestApi {
    /// A router over a new SQLite store in a temporary folder.
    pub async fn new() -> TestApi {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let store = Store::open(&url, "fdaa::/16".parse().unwrap())
            .await
            .expect("open store");
        TestApi::over(store, Some(dir))
    }

    /// A router over an already opened store.
    pub fn over(store: Store, dir: Option<tempfile::TempDir>) -> TestApi {
        let regions = regions();
        let router = router(state(&store, regions.clone()));
        TestApi {
            store,
            router,
            regions,
            _dir: dir,
        }
    }

    /// The folder of the SQLite database.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.as_ref().expect("sqlite test api").path()
    }

    /// Sends `req` through a clone of the router.
    pub async fn send(&self, req: Request<Body>) -> Answer {
        send(&self.router, req).await
    }

    /// A request with optional `Authorization` value and a JSON body given as exact bytes.
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        authorization: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        self.send(request(method, uri, authorization, body)).await
    }

    /// A peer-API request with `Authorization: Bearer <token>`.
    pub async fn peer(&self, method: &str, uri: &str, token: &str, body: Option<&str>) -> Answer {
        self.call(method, uri, Some(&format!("Bearer {token}")), body)
            .await
    }

    /// An admin-API request.
    pub async fn admin(&self, method: &str, uri: &str, body: Option<Value>) -> Answer {
        let body = body.map(|b| b.to_string());
        self.call(
            method,
            uri,
            Some(&format!("Bearer {ADMIN}")),
            body.as_deref(),
        )
        .await
    }

    /// Mints a token in `org` through the admin API; `extra` adds fields to the body.
    pub async fn mint(&self, org: &str, name: &str, extra: Value) -> String {
        let mut body = json!({ "name": name });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let answer = self
            .admin(
                "POST",
                &format!("/api/v1/orgs/{org}/wireguard_tokens"),
                Some(body),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.json);
        answer.json["token"].as_str().expect("token").to_owned()
    }

    /// Creates a peer with flyctl's exact body.
    pub async fn create(&self, token: &str, name: &str, group: &str, key: &str) -> Answer {
        self.peer(
            "POST",
            "/api/v3/wire_guard_peers",
            token,
            Some(&flyctl_create(name, group, key, "")),
        )
        .await
    }
}

/// flyctl's exact create body (`wireguard token start`), trailing newline included.
pub fn flyctl_create(name: &str, group: &str, pubkey: &str, region: &str) -> String {
    format!(
        "{{\"name\":\"{name}\",\"group\":\"{group}\",\"pubkey\":\"{pubkey}\",\"region\":\"{region}\"}}\n"
    )
}

/// flyctl's exact re-key body (`wireguard token update`), trailing newline included.
pub fn flyctl_update(pubkey: &str) -> String {
    format!("{{\"name\":\"\",\"group\":\"\",\"pubkey\":\"{pubkey}\",\"region\":\"\"}}\n")
}

/// A request; a body gets `Content-Type: application/json`.
pub fn request(
    method: &str,
    uri: &str,
    authorization: Option<&str>,
    body: Option<&str>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(value) = authorization {
        builder = builder.header("authorization", value);
    }
    match body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned())),
        None => builder.body(Body::empty()),
    }
    .expect("valid request")
}

/// Sends `req` through a clone of `router` and parses the answer.
pub async fn send(router: &Router, req: Request<Body>) -> Answer {
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{status} answer is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Answer {
        status,
        headers,
        json,
    }
}

/// A router with `rate_limits` over the same store as `api`.
pub fn router_with_limits(api: &TestApi, rate_limits: RateLimits) -> Router {
    let mut state = state(&api.store, api.regions.clone());
    state.rate_limits = rate_limits;
    router(state)
}

/// `router` served on a real socket by the API's own server with `limits`; stops on `stop`.
pub struct Served {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Cancels the server.
    pub stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    /// Starts serving.
    pub async fn start(router: Router, limits: sixpn::api::server::ServerLimits) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(sixpn::api::server::serve(
            listener,
            router,
            limits,
            stop.clone(),
        ));
        Served { addr, stop, task }
    }

    /// Stops the server and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}
