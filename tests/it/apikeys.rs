//! Issue 16: API keys, and roles and scopes on every admin operation.
//!
//! - The scope matrix, generated from the OpenAPI document: every admin operation (`/api/v1/*`)
//!   × {owner, operator, viewer of org A; owner of org B; owner of `*`; an expired key; a
//!   revoked key; the bootstrap token; the bootstrap token turned off}. Each case gets the status
//!   its operation's `x-sixpn-roles`/`x-sixpn-scope` say, that status is among the documented
//!   ones, and no answer to the key of B holds anything of A. An operation without declared
//!   roles, or one this test cannot call, fails the test.
//! - Revocation across replicas (PostgreSQL): a key revoked through replica A is refused by
//!   replica B within a second.
//! - The CLI: `apikey create|list|revoke`, and an admin command authenticated by
//!   `SIXPN_API_KEY`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Api, TestDb, eventually_async, server_config, sixpn_cli};

/// Org A of the matrix: every name of its resources starts with it, so "anything of A" is
/// whatever holds this word (or A's prefix).
const A: &str = "alpha";
/// Org B.
const B: &str = "bravo";
/// An org that does not exist: what an org outside a key's scope must look like.
const MISSING: &str = "zulu";

/// One HTTP call; the status and the body as text (empty on a transport failure, status 0).
async fn call(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    bearer: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut req = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(bearer);
    if let Some(body) = body {
        req = req.json(body);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// Creates an API key through `bearer`; returns the key.
async fn create_key(
    http: &reqwest::Client,
    base: &str,
    bearer: &str,
    name: &str,
    org: &str,
    role: &str,
    expires_in: Option<u64>,
) -> String {
    let mut body = json!({ "name": name, "org": org, "role": role });
    if let Some(secs) = expires_in {
        body["expires_in"] = json!(secs);
    }
    let (status, text) = call(http, base, "post", "/api/v1/api_keys", bearer, Some(&body)).await;
    assert_eq!(status, 201, "creating key {name}: {text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["name"], name);
    assert_eq!(answer["org"], org);
    assert_eq!(answer["role"], role);
    let key = answer["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sixpn_ak_") && key.len() == 9 + 64, "{key}");
    key
}

/// Who calls, in the matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    /// An API key with this role and scope (`"*"` or an org).
    Key(&'static str, &'static str),
    Expired,
    Revoked,
    Bootstrap,
    BootstrapOff,
}

/// The status `who` must get for an operation with these roles and scope rule, whose success
/// status is `success`, acting on org A.
fn expected(who: Who, roles: &[String], scope: &str, success: u16) -> u16 {
    match who {
        Who::Expired | Who::Revoked | Who::BootstrapOff => 401,
        Who::Bootstrap => success,
        Who::Key(role, key_scope) => {
            let has_role = roles.iter().any(|r| r == role);
            match scope {
                "org" if key_scope != "*" && key_scope != A => 404,
                "all" if key_scope != "*" => 403,
                "org" | "all" | "any" => {
                    if has_role {
                        success
                    } else {
                        403
                    }
                }
                other => panic!("unknown x-sixpn-scope {other:?}"),
            }
        }
    }
}

/// A request of the matrix: method, path, body.
struct Request {
    method: String,
    path: String,
    body: Option<Value>,
}

impl Request {
    /// The same request about org `MISSING` instead of A (its names too).
    fn about_missing(&self) -> Request {
        Request {
            method: self.method.clone(),
            path: self.path.replace(A, MISSING),
            body: self
                .body
                .as_ref()
                .map(|b| serde_json::from_str(&b.to_string().replace(A, MISSING)).unwrap()),
        }
    }

    fn mentions_a(&self) -> bool {
        self.path.contains(A)
            || self
                .body
                .as_ref()
                .is_some_and(|b| b.to_string().contains(A))
    }
}

/// The server side of the matrix: a base URL, the bootstrap token, a client.
struct Fixture {
    http: reqwest::Client,
    base: String,
    api: Api,
    /// A WireGuard token of A that creates the peers the cases delete.
    peer_token: String,
}

impl Fixture {
    /// Sets up what case `n` of `operation` acts on, and returns its request (about org A).
    async fn request(&self, operation: &str, n: usize) -> Request {
        let (method, path, body) = match operation {
            "createOrg" => (
                "post",
                "/api/v1/orgs".to_owned(),
                Some(json!({ "slug": format!("new-{n}") })),
            ),
            "listOrgs" => ("get", "/api/v1/orgs".to_owned(), None),
            "deleteOrg" => {
                let slug = format!("gone-{n}");
                self.api.create_org(&slug).await;
                ("delete", format!("/api/v1/orgs/{slug}"), None)
            }
            "showToken" => (
                "get",
                format!("/api/v1/orgs/{A}/wireguard_tokens/{A}-nodes"),
                None,
            ),
            "mintToken" => (
                "post",
                format!("/api/v1/orgs/{A}/wireguard_tokens"),
                Some(json!({ "name": format!("{A}-m-{n}") })),
            ),
            "listTokens" => ("get", format!("/api/v1/orgs/{A}/wireguard_tokens"), None),
            "deleteToken" => {
                let name = format!("{A}-d-{n}");
                self.api.mint(A, &name, None).await;
                (
                    "delete",
                    format!("/api/v1/orgs/{A}/wireguard_tokens/{name}"),
                    None,
                )
            }
            "listOrgPeers" => ("get", format!("/api/v1/orgs/{A}/peers"), None),
            "showOrgPeer" => ("get", format!("/api/v1/orgs/{A}/peers/{A}-node"), None),
            "deleteOrgPeer" => {
                let name = format!("{A}-p-{n}");
                let (status, body) = self.api.register(&self.peer_token, &name, "web").await;
                assert_eq!(status, 200, "{body}");
                ("delete", format!("/api/v1/orgs/{A}/peers/{name}"), None)
            }
            "listAudit" => ("get", format!("/api/v1/orgs/{A}/audit"), None),
            "createApiKey" => (
                "post",
                "/api/v1/api_keys".to_owned(),
                Some(json!({ "name": format!("{A}-k-{n}"), "org": A, "role": "viewer" })),
            ),
            "listApiKeys" => ("get", "/api/v1/api_keys".to_owned(), None),
            "revokeApiKey" => {
                let name = format!("{A}-r-{n}");
                create_key(
                    &self.http,
                    &self.base,
                    ADMIN_TOKEN,
                    &name,
                    A,
                    "viewer",
                    None,
                )
                .await;
                ("delete", format!("/api/v1/api_keys/{name}"), None)
            }
            other => panic!(
                "admin operation {other} has no case in tests/it/apikeys.rs: add one (and its roles)"
            ),
        };
        Request {
            method: method.to_owned(),
            path,
            body,
        }
    }
}

/// Starts an in-process server on SQLite with the failed-auth limit off (the matrix makes many
/// refused calls from one address on purpose) and the bootstrap token `bootstrap`.
async fn matrix_server(bootstrap: bool) -> (sixpn::serve::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = server_config(dir.path(), None);
    config.api.failed_auth_rate = 0.0;
    config.api.bootstrap_token = bootstrap;
    let running = sixpn::serve::start(config).await.expect("server starts");
    (running, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue16_scope_matrix_from_the_openapi_document() {
    let (server, _dir) = matrix_server(true).await;
    let (off, _off_dir) = matrix_server(false).await;
    let base = format!("http://{}", server.api_addr);
    let off_base = format!("http://{}", off.api_addr);
    let http = reqwest::Client::new();
    let api = Api::of(&server);
    let a = api.create_org(A).await;
    let a_prefix = a["prefix"].as_str().unwrap().to_owned();
    api.create_org(B).await;
    let peer_token = api.mint(A, &format!("{A}-nodes"), None).await;
    let (status, body) = api.register(&peer_token, &format!("{A}-node"), "web").await;
    assert_eq!(status, 200, "{body}");

    let mut keys: Vec<(Who, String)> = Vec::new();
    for (who, name) in [
        (Who::Key("owner", A), "owner-a"),
        (Who::Key("operator", A), "operator-a"),
        (Who::Key("viewer", A), "viewer-a"),
        (Who::Key("owner", B), "owner-b"),
        (Who::Key("owner", "*"), "owner-all"),
    ] {
        let Who::Key(role, scope) = who else {
            unreachable!()
        };
        keys.push((
            who,
            create_key(&http, &base, ADMIN_TOKEN, name, scope, role, None).await,
        ));
    }
    // Names are unique among live keys; fields are checked.
    for (body, want) in [
        (
            json!({ "name": "owner-a", "org": B, "role": "viewer" }),
            409,
        ),
        (json!({ "name": "x", "org": A, "role": "admin" }), 422),
        (
            json!({ "name": "not a label", "org": A, "role": "viewer" }),
            422,
        ),
        (
            json!({ "name": "x", "org": "no such", "role": "viewer" }),
            422,
        ),
        (
            json!({ "name": "x", "org": MISSING, "role": "viewer" }),
            404,
        ),
        (
            json!({ "name": "x", "org": A, "role": "viewer", "expires_in": "soon" }),
            422,
        ),
    ] {
        let (status, text) = call(
            &http,
            &base,
            "post",
            "/api/v1/api_keys",
            ADMIN_TOKEN,
            Some(&body),
        )
        .await;
        assert_eq!(status, want, "{body}: {text}");
    }
    let expired = create_key(&http, &base, ADMIN_TOKEN, "expired", A, "owner", Some(1)).await;
    let revoked = create_key(&http, &base, ADMIN_TOKEN, "revoked", A, "owner", None).await;
    let (status, text) = call(
        &http,
        &base,
        "delete",
        "/api/v1/api_keys/revoked",
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // Wait (by polling) until the short-lived key is past its expiry.
    eventually_async(Duration::from_secs(10), "the key expires", || async {
        match call(&http, &base, "get", "/api/v1/orgs", &expired, None).await {
            (401, _) => Ok(()),
            (status, text) => Err(format!("{status} {text}")),
        }
    })
    .await;
    keys.push((Who::Expired, expired));
    keys.push((Who::Revoked, revoked));
    keys.push((Who::Bootstrap, ADMIN_TOKEN.to_owned()));
    keys.push((Who::BootstrapOff, ADMIN_TOKEN.to_owned()));

    let fixture = Fixture {
        http: http.clone(),
        base: base.clone(),
        api: api.clone(),
        peer_token,
    };
    let doc: Value = reqwest::get(format!("{base}/api/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut n = 0;
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") && path != "/api/v1" {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            operations += 1;
            let id = op["operationId"].as_str().unwrap();
            let roles: Vec<String> = op["x-sixpn-roles"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} ({id}) declares no x-sixpn-roles"))
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect();
            assert!(!roles.is_empty(), "{id}: empty x-sixpn-roles");
            let scope = op["x-sixpn-scope"]
                .as_str()
                .unwrap_or_else(|| panic!("{id} declares no x-sixpn-scope"));
            assert!(
                op["description"].as_str().unwrap_or("").contains("Roles: "),
                "{id}: the description does not state its roles"
            );
            let documented: Vec<u16> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|s| s.parse().unwrap())
                .collect();
            let success = *documented
                .iter()
                .find(|s| (200..300).contains(*s))
                .unwrap_or_else(|| panic!("{id}: no success status"));
            for (who, bearer) in &keys {
                n += 1;
                let request = fixture.request(id, n).await;
                assert_eq!(request.method, *method, "{id}: the case's method");
                let target = if *who == Who::BootstrapOff {
                    &off_base
                } else {
                    &base
                };
                let (status, text) = call(
                    &http,
                    target,
                    &request.method,
                    &request.path,
                    bearer,
                    request.body.as_ref(),
                )
                .await;
                let want = expected(*who, &roles, scope, success);
                assert_eq!(
                    status, want,
                    "{id} as {who:?}: {} {} answered {text}",
                    request.method, request.path
                );
                assert!(
                    documented.contains(&status),
                    "{id} as {who:?}: {status} is not documented ({documented:?})"
                );
                let body: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("{id} as {who:?}: not JSON: {text}"));
                if status >= 400 {
                    assert!(
                        body["error"].as_str().is_some_and(|e| !e.is_empty()),
                        "{id} as {who:?}: {text}"
                    );
                }
                if status == 403 {
                    let error = body["error"].as_str().unwrap();
                    assert!(
                        roles.iter().any(|r| error.contains(r.as_str())),
                        "{id} as {who:?}: the 403 names no role needed: {error}"
                    );
                }
                assert!(
                    !text.contains("sixpn_ak_") || id == "createApiKey",
                    "{id}: {text}"
                );
                if *who == Who::Key("owner", B) {
                    // Nothing of A: its prefix never, its name only as the request's own echo, and
                    // then exactly as a missing org's answer.
                    assert!(!text.contains(&a_prefix), "{id} as owner of B: {text}");
                    if request.mentions_a() {
                        let twin = request.about_missing();
                        let (twin_status, twin_text) = call(
                            &http,
                            &base,
                            &twin.method,
                            &twin.path,
                            bearer,
                            twin.body.as_ref(),
                        )
                        .await;
                        assert_eq!(
                            (status, text.replace(A, MISSING)),
                            (twin_status, twin_text),
                            "{id}: a key of B tells A from a missing org"
                        );
                    } else {
                        assert!(!text.contains(A), "{id} as owner of B: {text}");
                    }
                }
            }
        }
    }
    assert!(operations >= 12, "{operations} admin operations");

    // The audit log names the key that acted, and the bootstrap token as such; never a key.
    let audit: Value = serde_json::from_str(
        &call(
            &http,
            &base,
            "get",
            &format!("/api/v1/orgs/{A}/audit?limit=1000"),
            ADMIN_TOKEN,
            None,
        )
        .await
        .1,
    )
    .unwrap();
    let actors: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    for actor in [
        "key:owner-a",
        "key:operator-a",
        "key:owner-all",
        "bootstrap",
    ] {
        assert!(actors.contains(&actor), "{actor} not in {actors:?}");
    }
    assert!(!audit.to_string().contains("sixpn_ak_"));
    assert!(!actors.contains(&"admin"), "{actors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue16_a_key_revoked_on_one_replica_is_refused_by_another_within_a_second() {
    let Some(db) = TestDb::postgres_if_configured("API key replica test").await else {
        return;
    };
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a = sixpn::serve::start(server_config(dir_a.path(), Some(&db.url)))
        .await
        .unwrap();
    let b = sixpn::serve::start(server_config(dir_b.path(), Some(&db.url)))
        .await
        .unwrap();
    let (base_a, base_b) = (
        format!("http://{}", a.api_addr),
        format!("http://{}", b.api_addr),
    );
    let http = reqwest::Client::new();
    let key = create_key(
        &http,
        &base_a,
        ADMIN_TOKEN,
        "ci",
        "personal",
        "operator",
        None,
    )
    .await;
    let (status, text) = call(
        &http,
        &base_b,
        "get",
        "/api/v1/orgs/personal/wireguard_tokens",
        &key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = call(
        &http,
        &base_a,
        "delete",
        "/api/v1/api_keys/ci",
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    eventually_async(
        Duration::from_secs(1),
        "replica B refuses the revoked key",
        || async {
            match call(
                &http,
                &base_b,
                "get",
                "/api/v1/orgs/personal/wireguard_tokens",
                &key,
                None,
            )
            .await
            {
                (401, text) if text.contains("revoked") => Ok(()),
                (status, text) => Err(format!("{status} {text}")),
            }
        },
    )
    .await;
    // Listed nowhere any more.
    let (_, list) = call(&http, &base_b, "get", "/api/v1/api_keys", ADMIN_TOKEN, None).await;
    assert!(!list.contains("\"ci\""), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue16_cli_apikey_round_trip() {
    let (server, _dir) = matrix_server(true).await;
    let url = format!("http://{}", server.api_addr);
    let work = tempfile::tempdir().unwrap();
    let cli = move |args: Vec<String>, env: Vec<(String, String)>| {
        let dir = work.path().to_owned();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                sixpn_cli(&dir, &args, &env)
            })
            .await
            .unwrap()
        }
    };
    let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let admin_env = vec![
        ("SIXPN_API_URL".to_owned(), url.clone()),
        ("SIXPN_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
    ];
    let out = cli(
        words("apikey create --name ci --org personal --role operator --expires 90d"),
        admin_env.clone(),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout
        .trim()
        .strip_prefix("SIXPN_API_KEY=")
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_owned();
    assert!(key.starts_with("sixpn_ak_"));

    let out = cli(words("apikey list --json"), admin_env.clone()).await;
    assert!(out.status.success(), "{out:?}");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "ci");
    assert_eq!(list[0]["role"], "operator");
    assert!(list[0]["expires_at"].is_string());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("sixpn_ak_"));

    // An admin command with the key alone: SIXPN_API_KEY wins over the bootstrap token.
    let key_env = vec![
        ("SIXPN_API_URL".to_owned(), url.clone()),
        ("SIXPN_API_KEY".to_owned(), key.clone()),
        ("SIXPN_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
    ];
    let out = cli(words("token create --name from-ci"), key_env.clone()).await;
    assert!(out.status.success(), "{out:?}");
    let out = cli(words("org create nope"), key_env.clone()).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("owner"), "{stderr}");
    let out = cli(words("audit --json"), admin_env.clone()).await;
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "key:ci" && e["target"] == "from-ci"),
        "{audit}"
    );

    let out = cli(words("apikey revoke ci --yes"), admin_env.clone()).await;
    assert!(out.status.success(), "{out:?}");
    let out = cli(words("token list"), key_env).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("revoked"), "{stderr}");
    let out = cli(words("apikey list --json"), admin_env).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue16_wrong_api_keys_hit_the_failed_auth_limit_but_a_known_key_gets_through() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = server_config(dir.path(), None);
    config.api.failed_auth_rate = 0.01;
    config.api.failed_auth_burst = 5;
    let server = sixpn::serve::start(config).await.unwrap();
    let base = format!("http://{}", server.api_addr);
    let http = reqwest::Client::new();
    let key = create_key(
        &http,
        &base,
        ADMIN_TOKEN,
        "good",
        "personal",
        "viewer",
        None,
    )
    .await;
    let (status, _) = call(&http, &base, "get", "/api/v1/orgs", &key, None).await;
    assert_eq!(status, 200);
    let wrong = format!("sixpn_ak_{}", "0".repeat(64));
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (status, text) = call(&http, &base, "get", "/api/v1/orgs", &wrong, None).await;
        assert!(!text.contains(&wrong), "{text}");
        statuses.push(status);
    }
    assert_eq!(statuses[0], 401, "{statuses:?}");
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    // The key seen valid gets through its address's limit; a wrong one stays refused.
    let (status, text) = call(&http, &base, "get", "/api/v1/orgs", &key, None).await;
    assert_eq!(status, 200, "{text}");
}
