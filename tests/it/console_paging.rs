//! The console's org page at size (issue 19): peers in keyset pages and searched by name prefix
//! on the server, groups with their sizes and first members, the picture, all without reading
//! the whole org per page. On SQLite, then on PostgreSQL when `SIXPN_TEST_POSTGRES_URL` is set.

use crate::support::{ADMIN_TOKEN, Api};

/// Signs in to the console with `key`; returns the `Cookie` header value.
async fn sign_in(http: &reqwest::Client, base: &str, key: &str) -> String {
    let res = http
        .post(format!("{base}/ui/login"))
        .form(&[("key", key)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

async fn get(http: &reqwest::Client, base: &str, cookie: &str, path: &str) -> String {
    let res = http
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.text().await.unwrap()
}

/// The peer names of a page's peers table, in order.
fn listed(body: &str) -> Vec<String> {
    let peers = &body[body.find("<section id=\"peers\"").unwrap()..];
    let peers = &peers[..peers.find("</section>").unwrap()];
    let row = regex::Regex::new(r#"<tr class="(?:live|idle)"><td>([a-z0-9-]+)</td>"#).unwrap();
    row.captures_iter(peers).map(|c| c[1].to_owned()).collect()
}

/// The `after` cursor of the page's Next link, if any.
fn next_cursor(body: &str) -> Option<String> {
    let next = regex::Regex::new(r#"after=([a-z0-9-]+)#peers">Next<"#).unwrap();
    next.captures(body).map(|c| c[1].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_org_page_pages_searches_and_sums_groups_on_the_server() {
    crate::support::db::each_backend(|db| async move { org_page_at_size(db).await }).await;
}

async fn org_page_at_size(db: crate::support::TestDb) {
    let (server, _dir) = crate::support::start_server(Some(&db.url)).await;
    let base = format!("http://{}", server.api_addr);
    let api = Api::of(&server);
    let secret = api.mint("personal", "many", None).await;
    // 230 peers: n000..n229, in groups a (n000..n099), b (n100..n199) and c (the rest).
    let mut names = Vec::new();
    for i in 0..230 {
        let name = format!("n{i:03}");
        let group = ["a", "b", "c"][i / 100];
        let (status, body) = api.register(&secret, &name, group).await;
        assert_eq!(status, 200, "{body}");
        names.push(name);
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = sign_in(&http, &base, ADMIN_TOKEN).await;

    // Three pages of at most 100, in name order, each linking the next; together every peer once.
    let first = get(&http, &base, &cookie, "/ui/orgs/personal").await;
    assert!(first.contains("<h2>Peers (230)</h2>"), "{first}");
    let mut seen = listed(&first);
    assert_eq!(seen.len(), 100);
    let mut cursor = next_cursor(&first);
    let mut pages = 1;
    while let Some(after) = cursor {
        let page = get(
            &http,
            &base,
            &cookie,
            &format!("/ui/orgs/personal?after={after}"),
        )
        .await;
        assert!(page.contains("First page"), "{page}");
        seen.extend(listed(&page));
        cursor = next_cursor(&page);
        pages += 1;
        assert!(pages <= 3, "more pages than the peers fill");
    }
    assert_eq!(seen, names);

    // A search is a name prefix: n12 matches n120..n129 only.
    let found = listed(&get(&http, &base, &cookie, "/ui/orgs/personal?q=n12").await);
    assert_eq!(
        found,
        (120..130).map(|i| format!("n{i}")).collect::<Vec<_>>()
    );
    let found = listed(&get(&http, &base, &cookie, "/ui/orgs/personal?q=n2").await);
    assert_eq!(found.len(), 30);
    let none = get(&http, &base, &cookie, "/ui/orgs/personal?q=zz").await;
    assert!(listed(&none).is_empty());
    assert!(next_cursor(&none).is_none());
    // Characters no name has match nothing (and are escaped back).
    let odd = get(&http, &base, &cookie, "/ui/orgs/personal?q=N%3C").await;
    assert!(listed(&odd).is_empty());
    assert!(odd.contains("value=\"N&lt;\""), "{odd}");

    // Groups: sizes, and the first members by name.
    let groups = &first[first.find("<section id=\"groups\"").unwrap()..];
    let groups = &groups[..groups.find("</section>").unwrap()];
    for (group, size, first_member) in [("a", 100, "n000"), ("b", 100, "n100"), ("c", 30, "n200")] {
        let row = format!("<tr><td>{group}</td><td>0 / {size}</td><td>{first_member}, ");
        assert!(groups.contains(&row), "{row} in {groups}");
    }
    assert!(groups.contains(" … and 80 more"), "{groups}");
    // The picture names its groups with their sizes.
    assert!(first.contains("c (0/30)"), "{first}");

    // Sizes are read at most every 2 s; names at once: a group whose peers are all gone leaves
    // the page as soon as they do.
    let secret_d = api.mint("personal", "solo", None).await;
    let (status, _) = api.register(&secret_d, "solo-1", "d").await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let page = get(&http, &base, &cookie, "/ui/orgs/personal").await;
    assert!(
        page.contains("<tr><td>d</td><td>0 / 1</td><td>solo-1"),
        "{page}"
    );
    let res = reqwest::Client::new()
        .delete(format!("{base}/api/v1/orgs/personal/peers/solo-1"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let page = get(&http, &base, &cookie, "/ui/orgs/personal").await;
    assert!(!page.contains("solo-1"), "{page}");
    assert!(!page.contains("<tr><td>d</td>"), "{page}");

    // The overview: the org's counts.
    let overview = get(&http, &base, &cookie, "/ui").await;
    assert!(
        overview.contains("<td>230</td><td>0</td><td>3</td>")
            || overview.contains("<td>230</td><td>0</td><td>4</td>"),
        "{overview}"
    );
}
