//! Issue 19: the admin console at `/ui`, over real HTTP against a real server.
//!
//! - Sign-in exchanges a key for an `HttpOnly`, `SameSite=Strict`, expiring session cookie; a
//!   wrong key gets a clear message and counts against the failed-auth limit; sign-out and a
//!   revoked key end the session.
//! - Pages show the org's peers, groups, tokens and DNS answers; a viewer sees no control that
//!   changes anything and a forged POST with its session gets `403`; a key of another org sees
//!   nothing of this one.
//! - Every POST needs the session's CSRF token; mint and delete work for an operator, and a
//!   token minted in the console registers a peer.
//! - Reflected and stored text is escaped; the console is absent from the public listener when
//!   `[api] admin_listen` is set.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Api, eventually_async, free_port, server_config};

/// A browser-like client of one console: no redirects followed, the session cookie kept by hand.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

/// An answer: status, headers, body.
struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The CSRF token of the page's forms.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token");
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookie: None,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", c),
            None => req,
        };
        let res = req.send().await.expect("request");
        Page {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: res.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_body(fields)),
        )
        .await
    }

    /// Signs in with `key`; the `Set-Cookie` value.
    async fn sign_in(&mut self, key: &str) -> String {
        let page = self.post("/ui/login", &[("key", key)]).await;
        assert_eq!(page.status, 303, "sign-in: {}", page.body);
        assert_eq!(page.location(), "/ui");
        let set = page
            .headers
            .get("set-cookie")
            .expect("a session cookie")
            .to_str()
            .unwrap()
            .to_owned();
        self.cookie = Some(set.split(';').next().unwrap().to_owned());
        set
    }
}

/// An admin API call with `bearer`: status and JSON.
async fn admin(
    base: &str,
    method: &str,
    path: &str,
    bearer: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let http = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(bearer);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Creates an API key; its secret.
async fn api_key(base: &str, name: &str, org: &str, role: &str) -> String {
    let (status, body) = admin(
        base,
        "POST",
        "/api/v1/api_keys",
        ADMIN_TOKEN,
        Some(json!({"name": name, "org": org, "role": role})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

/// Whether a page holds any control that changes something (besides signing out).
fn has_mutation_controls(body: &str) -> bool {
    body.contains("action=\"/ui/orgs/")
        && body
            .split("<form")
            .skip(1)
            .any(|f| f.contains("method=\"post\"") && !f.contains("action=\"/ui/logout\""))
        || body.contains("/delete\"")
        || body.contains("Mint")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_sign_in_session_cookie_sign_out_and_revocation() {
    let (server, _dir) = crate::support::start_server(None).await;
    let base = format!("http://{}", server.api_addr);
    let mut browser = Browser::new(&base);

    // Not signed in: pages send to the sign-in form, POSTs are refused.
    let page = browser.get("/ui").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/ui/login");
    let page = browser.get("/ui/login").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("name=\"key\""), "{}", page.body);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(
        browser.post("/ui/logout", &[("csrf", "x")]).await.status,
        401
    );

    // A wrong key: a clear message, no cookie.
    let page = browser
        .post("/ui/login", &[("key", "sixpn_ak_not-a-real-key")])
        .await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(page.body.contains("not accepted"), "{}", page.body);
    assert!(page.headers.get("set-cookie").is_none());

    // The bootstrap token: a session cookie with the right attributes.
    let set = browser.sign_in(ADMIN_TOKEN).await;
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "no TLS here: {set}");
    assert!(!set.contains(ADMIN_TOKEN), "the cookie never holds the key");
    let page = browser.get("/ui").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("href=\"/ui/orgs/personal\""),
        "{}",
        page.body
    );

    // Sign-out needs the CSRF token, then ends the session.
    let csrf = page.csrf();
    assert_eq!(browser.post("/ui/logout", &[]).await.status, 403);
    assert_eq!(
        browser
            .post("/ui/logout", &[("csrf", "0".repeat(64).as_str())])
            .await
            .status,
        403
    );
    let out = browser.post("/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(browser.get("/ui").await.status, 303);

    // A revoked key ends its session at the next request.
    let key = api_key(&base, "ops", "personal", "operator").await;
    browser.sign_in(&key).await;
    assert_eq!(browser.get("/ui/orgs/personal").await.status, 200);
    let (status, _) = admin(&base, "DELETE", "/api/v1/api_keys/ops", ADMIN_TOKEN, None).await;
    assert_eq!(status, 200);
    let page = browser.get("/ui/orgs/personal").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/ui/login?ended=1");
    assert_eq!(browser.get("/ui").await.status, 303, "the session is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_wrong_keys_count_against_the_failed_auth_limit() {
    let (server, _dir) = crate::support::start_server(None).await;
    let base = format!("http://{}", server.api_addr);
    let browser = Browser::new(&base);
    let mut limited = None;
    for i in 0..60 {
        let page = browser
            .post("/ui/login", &[("key", "wrong-admin-token")])
            .await;
        if page.status == 429 {
            limited = Some((i, page.body));
            break;
        }
        assert_eq!(page.status, 401);
    }
    let (i, body) = limited.expect("wrong keys are rate limited");
    assert!(i >= 5, "limited after {i} tries");
    assert!(body.contains("too many failed"), "{body}");
    // The right credential still gets through its address's limit.
    let mut browser = Browser::new(&base);
    browser.sign_in(ADMIN_TOKEN).await;
}

/// On SQLite, then on PostgreSQL when `SIXPN_TEST_POSTGRES_URL` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_pages_roles_csrf_mint_delete_and_escaping() {
    crate::support::db::each_backend(|db| async move { pages_roles_csrf_mint_delete(db).await })
        .await;
}

#[allow(clippy::too_many_lines)]
async fn pages_roles_csrf_mint_delete(db: crate::support::TestDb) {
    let (server, _dir) = crate::support::start_server(Some(&db.url)).await;
    let base = format!("http://{}", server.api_addr);
    let api = Api::of(&server);
    api.create_org("acme").await;
    api.create_org("beta").await;
    let secret = api.mint("acme", "web-token", Some("web")).await;
    let (status, peer) = api.register(&secret, "web-1", "web").await;
    assert_eq!(status, 200, "{peer}");
    let address = api.peers("acme").await[0]["address"]
        .as_str()
        .unwrap()
        .to_owned();
    // Hostile names are refused at the API already.
    let (status, _) = admin(
        &base,
        "POST",
        "/api/v1/orgs/acme/wireguard_tokens",
        ADMIN_TOKEN,
        Some(json!({"name": "evil", "group": "<b>x</b>"})),
    )
    .await;
    assert_eq!(status, 422);

    // An operator of acme.
    let mut op = Browser::new(&base);
    op.sign_in(&api_key(&base, "op", "acme", "operator").await)
        .await;
    let overview = op.get("/ui").await;
    assert!(overview.body.contains("/ui/orgs/acme"));
    assert!(
        !overview.body.contains("/ui/orgs/beta"),
        "scope: {}",
        overview.body
    );
    let page = op.get("/ui/orgs/acme").await;
    assert_eq!(page.status, 200, "{}", page.body);
    for want in [
        "web-1",
        "web-token",
        &address,
        "Mint",
        "/ui/orgs/acme/peers/web-1/delete",
    ] {
        assert!(page.body.contains(want), "{want} in {}", page.body);
    }
    assert_eq!(
        op.get("/ui/orgs/beta").await.status,
        404,
        "another org is not found"
    );

    // DNS look-up from the published snapshot.
    let page = op.get("/ui/orgs/acme?lookup=web._g.internal").await;
    assert!(page.body.contains(&address), "{}", page.body);
    let page = op.get("/ui/orgs/acme?lookup=web-1._peer.internal").await;
    assert!(page.body.contains(&address), "{}", page.body);
    let page = op.get("/ui/orgs/acme?lookup=nobody._peer.internal").await;
    assert!(page.body.contains("no AAAA"), "{}", page.body);

    // Reflected input is escaped: the look-up box and the search box.
    let page = op
        .get("/ui/orgs/acme?lookup=%3Cscript%3Ealert(1)%3C%2Fscript%3E&q=%22%3E%3Cimg%20src%3Dx%3E")
        .await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(!page.body.contains("<img src=x>"), "{}", page.body);
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.body.contains("&quot;&gt;&lt;img src=x&gt;"));
    let page = op
        .get("/ui/orgs/acme/audit?actor=%3Cscript%3E&target=%22%3E%3Cb%3E")
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("<script>") && !page.body.contains("\"><b>"));

    // Mint: CSRF first, then the secret shown once.
    let csrf = op.get("/ui/orgs/acme").await.csrf();
    let fields = [("name", "ui-token"), ("group", "db")];
    assert_eq!(op.post("/ui/orgs/acme/tokens", &fields).await.status, 403);
    let wrong = "f".repeat(64);
    let with_wrong = [
        ("name", "ui-token"),
        ("group", "db"),
        ("csrf", wrong.as_str()),
    ];
    assert_eq!(
        op.post("/ui/orgs/acme/tokens", &with_wrong).await.status,
        403
    );
    let good = [
        ("name", "ui-token"),
        ("group", "db"),
        ("csrf", csrf.as_str()),
    ];
    let page = op.post("/ui/orgs/acme/tokens", &good).await;
    assert_eq!(page.status, 201, "{}", page.body);
    let at = page.body.find("sixpn_wg_").expect("the secret");
    let minted = page.body[at..at + 9 + 64].to_owned();
    assert_eq!(page.headers["cache-control"], "no-store");
    let (status, body) = api.register(&minted, "db-1", "db").await;
    assert_eq!(status, 200, "the console's token registers a peer: {body}");
    let page = op.get("/ui/orgs/acme").await;
    assert!(page.body.contains("db-1") && page.body.contains("ui-token"));
    assert!(!page.body.contains(&minted), "lists never show a secret");

    // Audit log: the console's mint, by this key, filtered.
    let page = op.get("/ui/orgs/acme/audit?actor=key:op").await;
    assert!(page.body.contains("ui-token"), "{}", page.body);
    assert!(!page.body.contains("web-token"), "filtered: {}", page.body);

    // Delete a peer: a confirmation, CSRF, then gone from the list and from DNS.
    let confirm = op.get("/ui/orgs/acme/peers/db-1/delete").await;
    assert_eq!(confirm.status, 200);
    assert!(
        confirm
            .body
            .contains("action=\"/ui/orgs/acme/peers/db-1/delete\"")
    );
    assert_eq!(
        op.post("/ui/orgs/acme/peers/db-1/delete", &[]).await.status,
        403
    );
    assert!(api.peers("acme").await.iter().any(|p| p["name"] == "db-1"));
    let page = op
        .post("/ui/orgs/acme/peers/db-1/delete", &[("csrf", &csrf)])
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(!api.peers("acme").await.iter().any(|p| p["name"] == "db-1"));
    let page = op.get("/ui/orgs/acme?lookup=db-1._peer.internal").await;
    assert!(page.body.contains("no AAAA"), "{}", page.body);

    // Delete a token (and its peers).
    assert_eq!(
        op.post("/ui/orgs/acme/tokens/web-token/delete", &[("csrf", "x")])
            .await
            .status,
        403
    );
    let page = op
        .post("/ui/orgs/acme/tokens/web-token/delete", &[("csrf", &csrf)])
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(api.peers("acme").await.is_empty());

    // A viewer of acme: data, no controls; a forged POST with its own CSRF token is 403.
    api.mint("acme", "t2", None).await;
    let mut viewer = Browser::new(&base);
    viewer
        .sign_in(&api_key(&base, "view", "acme", "viewer").await)
        .await;
    let page = viewer.get("/ui/orgs/acme").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("t2"), "{}", page.body);
    assert!(!has_mutation_controls(&page.body), "{}", page.body);
    let vcsrf = page.csrf();
    let forged = [("name", "x"), ("csrf", vcsrf.as_str())];
    assert_eq!(
        viewer.post("/ui/orgs/acme/tokens", &forged).await.status,
        403
    );
    assert_eq!(
        viewer
            .post("/ui/orgs/acme/tokens/t2/delete", &[("csrf", &vcsrf)])
            .await
            .status,
        403
    );
    assert_eq!(
        viewer.get("/ui/orgs/acme/tokens/t2/delete").await.status,
        403
    );
    assert_eq!(viewer.get("/ui/orgs/acme/audit").await.status, 403);
    assert!(api.mint("acme", "t3", None).await.starts_with("sixpn_wg_"));

    // A key of beta sees nothing of acme.
    let mut other = Browser::new(&base);
    other
        .sign_in(&api_key(&base, "b", "beta", "owner").await)
        .await;
    let page = other.get("/ui").await;
    assert!(!page.body.contains("acme"), "{}", page.body);
    let page = other.get("/ui/orgs/acme").await;
    assert_eq!(page.status, 404);
    assert!(!page.body.contains("t2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_the_console_is_on_the_admin_listener_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = server_config(dir.path(), None);
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    config.api.admin_listen = Some(admin_addr);
    let server = sixpn::serve::start(config).await.expect("server starts");
    let public = Browser::new(&format!("http://{}", server.api_addr));
    for path in ["/ui", "/ui/login", "/ui/static/console.css"] {
        assert_eq!(
            public.get(path).await.status,
            404,
            "{path} on the public listener"
        );
    }
    assert_eq!(
        public
            .post("/ui/login", &[("key", ADMIN_TOKEN)])
            .await
            .status,
        404
    );
    let mut admin = Browser::new(&format!("http://{admin_addr}"));
    assert_eq!(admin.get("/ui/static/console.css").await.status, 200);
    admin.sign_in(ADMIN_TOKEN).await;
    let page = eventually_async(Duration::from_secs(5), "the overview", || async {
        let page = admin.get("/ui").await;
        if page.status == 200 {
            Ok(page)
        } else {
            Err(format!("status {}", page.status))
        }
    })
    .await;
    assert!(page.body.contains("personal"));
}

/// Reads `res` until an SSE `generation` event other than `after` arrives; its data.
async fn next_generation(
    res: &mut reqwest::Response,
    buf: &mut String,
    after: Option<&str>,
) -> String {
    loop {
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if event.lines().any(|l| l == "event: generation")
                && let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: "))
                && Some(data) != after
            {
                return data.to_owned();
            }
        }
        let chunk = res
            .chunk()
            .await
            .expect("the feed")
            .expect("the feed stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_the_live_feed_announces_a_new_peer() {
    let (server, _dir) = crate::support::start_server(None).await;
    let base = format!("http://{}", server.api_addr);
    let api = Api::of(&server);
    let secret = api.mint("personal", "feed", None).await;
    let mut browser = Browser::new(&base);
    assert_eq!(browser.get("/ui/orgs/personal/events").await.status, 303);
    browser
        .sign_in(&api_key(&base, "watch", "personal", "viewer").await)
        .await;
    let page = browser.get("/ui/orgs/personal").await;
    assert!(page.body.contains("data-events=\"/ui/orgs/personal\""));
    assert!(!page.body.contains("live-1"));
    let mut res = browser
        .http
        .get(format!("{base}/ui/orgs/personal/events"))
        .header("cookie", browser.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut buf = String::new();
    let first = next_generation(&mut res, &mut buf, None).await;
    let (status, body) = api.register(&secret, "live-1", "web").await;
    assert_eq!(status, 200, "{body}");
    let next = tokio::time::timeout(
        Duration::from_secs(1),
        next_generation(&mut res, &mut buf, Some(&first)),
    )
    .await
    .expect("an event within a second of the write");
    assert!(next.parse::<u64>().unwrap() > first.parse::<u64>().unwrap());
    // What the page then fetches holds the new peer.
    assert!(
        browser
            .get("/ui/orgs/personal")
            .await
            .body
            .contains("live-1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_ui_enabled_false_turns_the_console_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = server_config(dir.path(), None);
    config.ui.enabled = false;
    let server = sixpn::serve::start(config).await.expect("server starts");
    let base = format!("http://{}", server.api_addr);
    let browser = Browser::new(&base);
    let nowhere = browser.get("/nowhere").await;
    for path in [
        "/ui",
        "/ui/login",
        "/ui/static/console.js",
        "/ui/orgs/personal",
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 404, "{path}");
        assert_eq!(
            page.body.replace(path, "PATH"),
            nowhere.body.replace("/nowhere", "PATH"),
            "{path} looks like a path that exists nowhere"
        );
    }
    let page = browser.post("/ui/login", &[("key", ADMIN_TOKEN)]).await;
    assert_eq!(page.status, 404);
    assert!(page.headers.get("set-cookie").is_none());
    // The admin API is untouched.
    let (status, _) = admin(&base, "GET", "/api/v1/orgs", ADMIN_TOKEN, None).await;
    assert_eq!(status, 200);
}
