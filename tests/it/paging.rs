//! Paging of the admin lists (issue 20): every list (`/api/v1/orgs`, `.../wireguard_tokens`,
//! `.../peers`, `/api/v1/api_keys`) takes `limit` and `after`, answers the next page's cursor in
//! `X-Next-Cursor` and `Link`, refuses a bad cursor as the audit log does, and the CLI follows
//! the pages. On SQLite and, when `SIXPN_TEST_POSTGRES_URL` is set, PostgreSQL.

use std::collections::BTreeSet;
use std::time::Instant;

use base64::Engine as _;
use serde_json::{Value, json};
use sixpn::model::OrgSlug;
use sixpn::store::NewToken;
use sixpn::wireguard::PublicKey;

use crate::support::db::each_backend;
use crate::support::{ADMIN_TOKEN, Api, sixpn_cli, start_server};

/// One answer: status, the `X-Next-Cursor` and `Link` headers, and the JSON body.
struct Answer {
    status: u16,
    next: Option<String>,
    link: Option<String>,
    body: Value,
}

async fn get(http: &reqwest::Client, base: &str, path: &str) -> Answer {
    let resp = http
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_owned())
    };
    let (next, link) = (header("x-next-cursor"), header("link"));
    let status = resp.status().as_u16();
    let body = resp.json().await.expect("JSON body");
    Answer {
        status,
        next,
        link,
        body,
    }
}

async fn post(http: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    let resp = http
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.expect("JSON body")
}

/// The names (or slugs) of a page, in order.
fn names(body: &Value) -> Vec<String> {
    body.as_array()
        .unwrap_or_else(|| panic!("not an array: {body}"))
        .iter()
        .map(|item| {
            item.get("name")
                .or_else(|| item.get("slug"))
                .and_then(Value::as_str)
                .expect("a name")
                .to_owned()
        })
        .collect()
}

/// Follows `Link: <...>; rel="next"` from `first` until the last page; returns every name and
/// how many pages there were. Checks on the way that `X-Next-Cursor` is the page's last name and
/// that `Link` carries it.
async fn follow(http: &reqwest::Client, base: &str, first: &str) -> (Vec<String>, usize) {
    let mut path = first.to_owned();
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let answer = get(http, base, &path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        pages += 1;
        let page = names(&answer.body);
        match (&answer.next, &answer.link) {
            (Some(next), Some(link)) => {
                assert_eq!(
                    Some(next),
                    page.last(),
                    "{path}: the cursor is the last name"
                );
                let url = link
                    .strip_prefix('<')
                    .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                    .unwrap_or_else(|| panic!("{path}: Link is {link:?}"));
                assert!(url.contains(&format!("after={next}")), "{link}");
                path = url.to_owned();
            }
            (None, None) => {
                all.extend(page);
                return (all, pages);
            }
            other => panic!("{path}: X-Next-Cursor and Link disagree: {other:?}"),
        }
        all.extend(page);
        assert!(pages < 10_000, "{first}: the pages never end");
    }
}

/// Cursors and limits no list may take, each with the field its error names.
const BAD: [(&str, &str); 10] = [
    ("after=", "after"),
    ("after=not%20a%20name", "after"),
    ("after=-node", "after"),
    ("after=a.b", "after"),
    ("after=%FF", "after"),
    ("limit=0", "limit"),
    ("limit=10001", "limit"),
    ("limit=ten", "limit"),
    ("before=5", "query"),
    ("after=a&after=b", "query"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue20_every_list_pages_by_link_and_refuses_a_bad_cursor() {
    each_backend(|db| async move {
        let (server, _dir) = start_server(Some(&db.url)).await;
        let api = Api::of(&server);
        let base = api.base.clone();
        let http = reqwest::Client::new();
        for n in 1..=4 {
            api.create_org(&format!("org-{n}")).await;
        }
        let mut secrets = Vec::new();
        for n in 1..=5 {
            secrets.push(api.mint("personal", &format!("t-{n}"), None).await);
        }
        for n in 1..=5 {
            let body = json!({"name": format!("k-{n}"), "org": "*", "role": "viewer"});
            post(&http, &base, "/api/v1/api_keys", body).await;
        }
        for n in 1..=7 {
            let (status, body) = api
                .register(&secrets[n % 2], &format!("node-{n}"), "web")
                .await;
            assert_eq!(status, 200, "{body}");
        }

        let lists = [
            ("/api/v1/orgs", 5),
            ("/api/v1/orgs/personal/wireguard_tokens", 5),
            ("/api/v1/orgs/personal/peers", 7),
            ("/api/v1/api_keys", 5),
        ];
        for (list, n) in lists {
            // Without a limit: one page of the default size (1000), so everything here, and
            // no cursor.
            let whole = get(&http, &base, list).await;
            assert_eq!(whole.status, 200, "{list}: {}", whole.body);
            assert_eq!((whole.next.as_deref(), whole.link.as_deref()), (None, None));
            let expect = names(&whole.body);
            assert_eq!(expect.len(), n, "{list}: {expect:?}");
            let mut sorted = expect.clone();
            sorted.sort();
            assert_eq!(expect, sorted, "{list} is by name");

            // Two at a time, following Link: the same names, each once, in as many pages as
            // it takes.
            for limit in [1, 2, 3] {
                let (paged, pages) = follow(&http, &base, &format!("{list}?limit={limit}")).await;
                assert_eq!(paged, expect, "{list} by {limit}");
                assert_eq!(pages, n.div_ceil(limit), "{list} by {limit}");
            }
            // A page starts right after the name its cursor names.
            let from = get(&http, &base, &format!("{list}?after={}", &expect[1])).await;
            assert_eq!(names(&from.body), expect[2..].to_vec(), "{list}");

            // A bad cursor or limit: 422 with a JSON `error`, as the audit log answers one.
            for (query, field) in BAD {
                let answer = get(&http, &base, &format!("{list}?{query}")).await;
                assert_eq!(answer.status, 422, "{list}?{query}: {}", answer.body);
                let error = answer.body["error"].as_str().expect("error text");
                assert!(
                    error.contains(&format!("`{field}`")),
                    "{list}?{query}: {error}"
                );
            }
        }
        let audit = get(&http, &base, "/api/v1/orgs/personal/audit?before=x").await;
        assert_eq!(
            audit.status, 422,
            "the audit log refuses a bad cursor alike"
        );
        assert!(audit.body["error"].is_string());

        server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue20_peer_filters_on_the_api_and_the_cli() {
    each_backend(|db| async move {
        let (server, _dir) = start_server(Some(&db.url)).await;
        let api = Api::of(&server);
        let base = api.base.clone();
        let http = reqwest::Client::new();
        let web = api.mint("personal", "t-web", None).await;
        let db_token = api.mint("personal", "t-db", None).await;
        for n in 1..=3 {
            assert_eq!(api.register(&web, &format!("web-{n}"), "web").await.0, 200);
        }
        for n in 1..=2 {
            assert_eq!(
                api.register(&db_token, &format!("db-{n}"), "db").await.0,
                200
            );
        }
        // A gateway saw web-2 just now.
        let peers = get(&http, &base, "/api/v1/orgs/personal/peers").await.body;
        let web2 = peers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "web-2")
            .unwrap();
        assert!(web2["last_seen_at"].is_null());
        let key = PublicKey::parse(web2["pubkey"].as_str().unwrap()).unwrap();
        let now = sixpn::model::now_unix();
        server
            .store
            .record_handshakes(&[(key, now)], 0)
            .await
            .unwrap();

        let list = |query: &'static str| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let answer = get(
                    &http,
                    &base,
                    &format!("/api/v1/orgs/personal/peers?{query}"),
                )
                .await;
                assert_eq!(answer.status, 200, "{query}: {}", answer.body);
                names(&answer.body)
            }
        };
        assert_eq!(list("group=web").await, ["web-1", "web-2", "web-3"]);
        assert_eq!(list("group=WEB&limit=1&after=web-1").await, ["web-2"]);
        assert_eq!(list("token=t-db").await, ["db-1", "db-2"]);
        assert_eq!(list("token=nobody").await, Vec::<String>::new());
        assert_eq!(list("region=local").await.len(), 5);
        assert_eq!(list("region=elsewhere").await, Vec::<String>::new());
        assert_eq!(list("live=true").await, ["web-2"]);
        assert_eq!(list("live=false").await, ["db-1", "db-2", "web-1", "web-3"]);
        assert_eq!(list("group=db&live=true").await, Vec::<String>::new());
        assert_eq!(
            list("group=web&token=t-web&live=false").await,
            ["web-1", "web-3"]
        );
        let live = get(&http, &base, "/api/v1/orgs/personal/peers?live=true").await;
        assert!(live.body[0]["last_seen_at"].is_string(), "{}", live.body);
        for (query, field) in [
            ("group=-web", "group"),
            ("region=", "region"),
            ("token=a.b", "token"),
            ("live=yes", "live"),
            ("live=", "live"),
            ("grop=web", "query"),
        ] {
            let answer = get(
                &http,
                &base,
                &format!("/api/v1/orgs/personal/peers?{query}"),
            )
            .await;
            assert_eq!(answer.status, 422, "{query}: {}", answer.body);
            let error = answer.body["error"].as_str().unwrap();
            assert!(error.contains(&format!("`{field}`")), "{query}: {error}");
        }

        // The CLI's flags are the same filters, and its pages the same pages.
        let work = tempfile::tempdir().unwrap();
        let env = [
            ("SIXPN_API_URL", base.as_str()),
            ("SIXPN_ADMIN_TOKEN", ADMIN_TOKEN),
        ];
        let cli = |args: Vec<&'static str>| {
            let output = sixpn_cli(work.path(), &args, &env);
            assert!(output.status.success(), "{args:?}: {output:?}");
            let json: Value = serde_json::from_slice(&output.stdout).expect("JSON");
            names(&json)
        };
        let json = |extra: &[&'static str]| {
            let mut args = vec!["peer", "list", "--json", "--page-size", "1"];
            args.extend_from_slice(extra);
            cli(args)
        };
        assert_eq!(json(&["--group", "web"]), ["web-1", "web-2", "web-3"]);
        assert_eq!(json(&["--token", "t-db"]), ["db-1", "db-2"]);
        assert_eq!(json(&["--live"]), ["web-2"]);
        assert_eq!(json(&["--idle", "--group", "web"]), ["web-1", "web-3"]);
        assert_eq!(json(&["--region", "local"]).len(), 5);
        let output = sixpn_cli(work.path(), &["peer", "list", "--live", "--idle"], &env);
        assert_eq!(output.status.code(), Some(2), "--live and --idle conflict");
        // The other lists follow pages too.
        assert_eq!(
            cli(vec!["token", "list", "--json", "--page-size", "1"]),
            ["t-db", "t-web"]
        );
        assert_eq!(
            cli(vec!["org", "list", "--json", "--page-size", "1"]),
            ["personal"]
        );
        assert_eq!(
            cli(vec!["apikey", "list", "--json", "--page-size", "1"]),
            Vec::<String>::new()
        );

        server.shutdown().await.unwrap();
    })
    .await;
}

/// The peers seeded straight into the database: one multi-row insert per thousand, the way a
/// restore would, so 10,000 take a second rather than 10,000 API round trips.
const SEEDED: u64 = 10_000;

async fn seed_peers(url: &str, org: &OrgSlug, prefix: ipnet::Ipv6Net, token: &str) {
    let (org_id, token_id) = (
        format!("(SELECT id FROM orgs WHERE slug = '{org}')"),
        format!("(SELECT id FROM tokens WHERE name = '{token}' AND deleted_at IS NULL)"),
    );
    let now = sixpn::model::now_unix();
    let mut statements = Vec::new();
    for chunk in (1..=SEEDED).collect::<Vec<_>>().chunks(1000) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|n| {
                let mut key = [0x5au8; 32];
                key[..8].copy_from_slice(&n.to_le_bytes());
                let key = base64::engine::general_purpose::STANDARD.encode(key);
                let address = sixpn::store::peer_address(prefix, *n);
                format!("(0, 0, 'node-{n:05}', 'web', 'local', '{key}', '{address}', {now}, {now})")
            })
            .collect();
        // Through a staging table, so the org's and token's ids are looked up once.
        statements.push(format!(
            "INSERT INTO seed (org_id, token_id, name, group_name, region, pubkey, address, \
             created_at, updated_at) VALUES {}",
            rows.join(", ")
        ));
    }
    statements.insert(
        0,
        "CREATE TEMPORARY TABLE seed (org_id BIGINT, token_id BIGINT, name TEXT, group_name TEXT, \
         region TEXT, pubkey TEXT, address TEXT, created_at BIGINT, updated_at BIGINT)"
            .to_owned(),
    );
    statements.push(format!(
        "INSERT INTO peers (org_id, token_id, name, group_name, region, pubkey, address, \
         created_at, updated_at) SELECT {org_id}, {token_id}, name, group_name, region, pubkey, \
         address, created_at, updated_at FROM seed"
    ));
    statements.push(format!(
        "UPDATE orgs SET next_host = {} WHERE slug = '{org}'",
        SEEDED + 1
    ));
    macro_rules! run {
        ($pool:expr) => {{
            let pool = $pool.expect("connect");
            let mut tx = pool.begin().await.expect("begin");
            for statement in statements {
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .execute(&mut *tx)
                    .await
                    .expect("seed");
            }
            tx.commit().await.expect("commit");
            pool.close().await;
        }};
    }
    if url.starts_with("sqlite") {
        run!(sqlx::SqlitePool::connect(url).await);
    } else {
        run!(sqlx::PgPool::connect(url).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue20_ten_thousand_peers_one_default_page_and_the_cli_lists_them_all() {
    each_backend(|db| async move {
        let org: OrgSlug = "personal".parse().unwrap();
        let store = db.open().await;
        let prefix = store.get_org(&org).await.unwrap().prefix;
        let new = NewToken {
            name: "bulk".parse().unwrap(),
            group: None,
            expires_at: None,
            max_peers: None,
            key_expiry: None,
        };
        store.mint_token(&org, new).await.unwrap();
        store.close().await;
        let started = Instant::now();
        seed_peers(&db.url, &org, prefix, "bulk").await;
        eprintln!("seeded {SEEDED} peers in {:?}", started.elapsed());

        let (server, _dir) = start_server(Some(&db.url)).await;
        let base = format!("http://{}", server.api_addr);
        let http = reqwest::Client::new();
        let expect: Vec<String> = (1..=SEEDED).map(|n| format!("node-{n:05}")).collect();

        // No limit: one page of the documented default, 1000, and the cursor to the next.
        let first = get(&http, &base, "/api/v1/orgs/personal/peers").await;
        assert_eq!(first.status, 200);
        assert_eq!(names(&first.body), expect[..1000].to_vec());
        assert_eq!(first.next.as_deref(), Some("node-01000"));
        // The largest page is 10,000: all of them, and no cursor.
        let max = get(&http, &base, "/api/v1/orgs/personal/peers?limit=10000").await;
        assert_eq!(names(&max.body).len(), 10_000);
        assert_eq!(max.next, None);
        // Deep in the list a page is as quick as the first (keyset, no OFFSET): on the order
        // of the page, whatever comes before it.
        let last = get(&http, &base, "/api/v1/orgs/personal/peers?after=node-09990").await;
        assert_eq!(names(&last.body), expect[9990..].to_vec());
        assert_eq!(last.next, None);

        // The CLI follows the pages: --json is one array of all 10,000, by name.
        let work = tempfile::tempdir().unwrap();
        let env = [
            ("SIXPN_API_URL", base.as_str()),
            ("SIXPN_ADMIN_TOKEN", ADMIN_TOKEN),
        ];
        let started = Instant::now();
        let output = sixpn_cli(work.path(), &["peer", "list", "--json"], &env);
        eprintln!("sixpn peer list --json: {:?}", started.elapsed());
        assert!(output.status.success(), "{output:?}");
        let listed: Value = serde_json::from_slice(&output.stdout).expect("one JSON array");
        assert_eq!(names(&listed), expect);
        // The text table: a header and one line per peer, each once.
        let output = sixpn_cli(work.path(), &["peer", "list"], &env);
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("NAME "), "{text:.200}");
        let listed: Vec<&str> = lines.map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(listed.len(), expect.len());
        assert_eq!(listed.iter().collect::<BTreeSet<_>>().len(), expect.len());
        assert_eq!(listed, expect);

        server.shutdown().await.unwrap();
    })
    .await;
}
