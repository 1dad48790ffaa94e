//! Operations (issue 10): `/metrics`, the audit log and ephemeral peers, through a real server.

use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::support::{Api, ServerProcess, dns_query, eventually_async, sample, scrape, total};

/// Runs `promtool check metrics` on `text` when promtool is installed (Debian package
/// `prometheus`); says so and passes when it is not.
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            eprintln!(
                "promtool not runnable ({e}); skipping the format check (apt-get install prometheus)"
            );
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// issue 10: `/metrics` passes `promtool check metrics`, and its counters move as the test acts:
/// creates, DNS queries, a 429.
#[tokio::test]
async fn issue10_metrics_pass_promtool_and_move() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(dir.path(), &[]);
    let api = Api::new(&server.api, &server.admin_token);
    let before = scrape(&server.api).await;
    promtool_check(&before);

    let token = api.mint("personal", "metrics", None).await;
    let (status, _) = api.register(&token, "m1", "web").await;
    assert_eq!(status, 200);
    for _ in 0..3 {
        let answer = dns_query(server.dns, "m1._peer.internal", RecordType::AAAA);
        assert_eq!(answer.answers.len(), 1);
    }
    dns_query(server.dns, "nobody._peer.internal", RecordType::AAAA);
    // Failed authentications from one address: the 21st is over the default burst of 20.
    let http = reqwest::Client::new();
    let mut limited = false;
    for _ in 0..25 {
        let res = http
            .get(format!("{}/api/v3/wire_guard_peers/m1", server.api))
            .bearer_auth("sixpn_wg_0000000000000000000000000000000000000000000")
            .send()
            .await
            .unwrap();
        if res.status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "never rate limited");

    let after = scrape(&server.api).await;
    promtool_check(&after);
    let created = |text: &str| {
        total(
            text,
            "sixpn_api_requests_total",
            &["route=\"/api/v3/wire_guard_peers\"", "status=\"200\""],
        )
    };
    assert_eq!(created(&before), 0.0);
    assert_eq!(created(&after), 1.0, "{after}");
    assert!(total(&after, "sixpn_api_requests_total", &["status=\"429\""]) >= 1.0);
    let noerror = |text: &str| total(text, "sixpn_dns_queries_total", &["rcode=\"NOERROR\""]);
    let nxdomain = |text: &str| total(text, "sixpn_dns_queries_total", &["rcode=\"NXDOMAIN\""]);
    assert!(noerror(&after) - noerror(&before) >= 3.0, "{after}");
    assert!(nxdomain(&after) - nxdomain(&before) >= 1.0, "{after}");
    assert_eq!(sample(&after, "sixpn_store_up", &[]), Some(1.0));
    // The per-org counts come from a cache refreshed at most every 5 s (issue 22).
    eventually_async(Duration::from_secs(15), "the org counts move", || async {
        let now = scrape(&server.api).await;
        let org = |name| sample(&now, name, &["org=\"personal\""]);
        match (org("sixpn_org_peers"), org("sixpn_org_tokens")) {
            (Some(1.0), Some(1.0)) => Ok(()),
            other => Err(format!("peers and tokens {other:?}")),
        }
    })
    .await;
    assert!(sample(&after, "sixpn_snapshot_generation", &[]).unwrap() >= 1.0);
    assert!(sample(&after, "sixpn_snapshot_age_seconds", &[]).is_some());
    assert!(
        total(
            &after,
            "sixpn_api_request_duration_seconds_count",
            &["route=\"/api/v3/wire_guard_peers\""]
        ) >= 1.0
    );
    assert!(
        total(
            &after,
            "sixpn_store_duration_seconds_count",
            &["op=\"register_peer\""]
        ) >= 1.0
    );
}

/// A fresh public key, base64.
fn new_key() -> String {
    sixpn::wireguard::PrivateKey::generate()
        .unwrap()
        .public_key()
        .to_base64()
}

/// The `sixpn` binary with the server's address and admin token in its environment.
fn cli(server: &ServerProcess, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sixpn"))
        .args(args)
        .env("SIXPN_API_URL", &server.api)
        .env("SIXPN_ADMIN_TOKEN", &server.admin_token)
        .env_remove("SIXPN_ORG")
        .output()
        .expect("run sixpn")
}

/// issue 10: the audit log lists each change of a run in order, with actor and source address,
/// through the API (with a working cursor) and the CLI.
#[tokio::test]
async fn issue10_audit_log_lists_every_change_with_actor_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(dir.path(), &[]);
    let api = Api::new(&server.api, &server.admin_token);
    let http = reqwest::Client::new();
    let peers = format!("{}/api/v3/wire_guard_peers", server.api);

    let token = api.mint("personal", "ci", None).await;
    let (status, _) = api.register(&token, "a1", "web").await;
    assert_eq!(status, 200);
    let (status, _) = api.register(&token, "a2", "web").await;
    assert_eq!(status, 200);
    let res = http
        .put(format!("{peers}/a1"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(format!("{{\"pubkey\":\"{}\"}}", new_key()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http
        .delete(format!("{peers}/a1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    api.delete_token("personal", "ci").await;

    let audit_url = "/api/v1/orgs/personal/audit";
    let (status, page) = admin_get(&server, audit_url).await;
    assert_eq!(status, 200, "{page}");
    let got: Vec<(String, String, String)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["source"], "127.0.0.1", "{e}");
            assert!(e["at"].as_str().unwrap().ends_with('Z'), "{e}");
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("peer_deleted", "bootstrap", "a2"),
        ("token_deleted", "bootstrap", "ci"),
        ("peer_deleted", "ci", "a1"),
        ("peer_rekeyed", "ci", "a1"),
        ("peer_created", "ci", "a2"),
        ("peer_created", "ci", "a1"),
        ("token_minted", "bootstrap", "ci"),
    ]
    .iter()
    .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
    .collect();
    assert_eq!(got, want, "{page}");
    assert!(page["next"].is_null());

    // The cursor walks the same log in pages.
    let mut walked = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let url = match before {
            Some(id) => format!("{audit_url}?limit=3&before={id}"),
            None => format!("{audit_url}?limit=3"),
        };
        let (status, page) = admin_get(&server, &url).await;
        assert_eq!(status, 200, "{page}");
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 3);
        walked.extend(
            entries
                .iter()
                .map(|e| e["action"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_i64() {
            Some(id) => before = Some(id),
            None => break,
        }
    }
    assert_eq!(walked, want.iter().map(|w| w.0.clone()).collect::<Vec<_>>());

    // Through the CLI: JSON, then the table.
    let out = cli(&server, &["audit", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["entries"], page["entries"]);
    let out = cli(&server, &["audit", "--org", "personal", "--limit", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].contains("ACTION") && lines[0].contains("SOURCE"),
        "{table}"
    );
    assert!(
        lines[1].contains("peer_deleted") && lines[1].contains("a2"),
        "{table}"
    );
    assert!(
        lines[2].contains("token_deleted") && lines[2].contains("127.0.0.1"),
        "{table}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--before"));
}

async fn admin_get(server: &ServerProcess, path: &str) -> (u16, serde_json::Value) {
    let res = reqwest::Client::new()
        .get(format!("{}{path}", server.api))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// Creates a peer with `extra` fields in flyctl's body; returns the status and the answer.
async fn create_peer(
    server: &ServerProcess,
    token: &str,
    name: &str,
    extra: &str,
) -> (u16, serde_json::Value) {
    let body = format!(
        "{{\"name\":\"{name}\",\"group\":\"pods\",\"pubkey\":\"{}\",\"region\":\"\"{extra}}}",
        new_key()
    );
    let res = reqwest::Client::new()
        .post(format!("{}/api/v3/wire_guard_peers", server.api))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// issue 10: with a short `[peers] ephemeral_idle`, an ephemeral peer that never handshakes is
/// removed from the API and DNS (and so, through the change feed, from any gateway interface:
/// the reaper's delete is an ordinary store delete), logged as `peer_reaped`, counted in
/// `/metrics`; an ephemeral peer whose handshakes are being recorded stays until they stop, and a
/// plain peer stays. The handshakes are recorded into the store directly, as a gateway does
/// (`Store::record_handshakes`), not made through wireguard-go.
#[tokio::test]
async fn issue10_idle_ephemeral_peers_are_reaped_live_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sixpn.toml");
    std::fs::write(&config, "[peers]\nephemeral_idle = \"3s\"\n").unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::spawn(&data, &[("SIXPN_CONFIG", config.to_str().unwrap())]);
    let api = Api::new(&server.api, &server.admin_token);

    // A token minted ephemeral makes its peers ephemeral; a plain token's peer is one on request.
    let res = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/orgs/personal/wireguard_tokens",
            server.api
        ))
        .bearer_auth(&server.admin_token)
        .json(&serde_json::json!({ "name": "ci-runs", "ephemeral": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let minted: serde_json::Value = res.json().await.unwrap();
    assert_eq!(minted["ephemeral"], true);
    let eph_token = minted["token"].as_str().unwrap().to_owned();
    let plain_token = api.mint("personal", "plain", None).await;

    let (status, idle) = create_peer(&server, &eph_token, "idle-1", "").await;
    assert_eq!(status, 200, "{idle}");
    assert_eq!(idle["ephemeral"], true);
    let (status, live) = create_peer(&server, &plain_token, "live-1", ",\"ephemeral\":true").await;
    assert_eq!(status, 200, "{live}");
    assert_eq!(live["ephemeral"], true);
    let (status, steady) = create_peer(&server, &plain_token, "steady-1", "").await;
    assert_eq!(status, 200, "{steady}");
    assert_eq!(steady["ephemeral"], false);
    let live_key: sixpn::wireguard::PublicKey = live["pubkey"].as_str().unwrap().parse().unwrap();

    // What a gateway does: record live-1's handshakes in the store, here every 300 ms.
    let store = sixpn::store::Store::open(
        &format!("sqlite://{}", data.join("sixpn.db").display()),
        "fdaa::/16".parse().unwrap(),
    )
    .await
    .unwrap();
    let start = std::time::Instant::now();
    loop {
        let now = sixpn::model::now_unix();
        store
            .record_handshakes(&[(live_key, now)], 0)
            .await
            .unwrap();
        let (status, _) = admin_get(&server, "/api/v1/orgs/personal/peers/idle-1").await;
        if status == 404 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "idle-1 was never reaped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let waited = start.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(2),
        "reaped too early: {waited:?}"
    );
    let nx = dns_query(server.dns, "idle-1._peer.internal", RecordType::AAAA);
    assert_eq!(
        nx.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain
    );
    let (_, list) = admin_get(&server, "/api/v1/orgs/personal/peers").await;
    let shown: Vec<(&str, bool, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["ephemeral"].as_bool().unwrap(),
                p["last_seen_at"].is_string(),
            )
        })
        .collect();
    assert_eq!(shown, [("live-1", true, true), ("steady-1", false, false)]);
    for name in ["live-1", "steady-1"] {
        let (status, _) = admin_get(&server, &format!("/api/v1/orgs/personal/peers/{name}")).await;
        assert_eq!(status, 200, "{name} was reaped");
        let answer = dns_query(
            server.dns,
            &format!("{name}._peer.internal"),
            RecordType::AAAA,
        );
        assert_eq!(answer.answers.len(), 1, "{name}");
    }

    // Once its handshakes stop, live-1 goes too; steady-1 never does.
    eventually_async(Duration::from_secs(20), "live-1 is reaped", || async {
        match admin_get(&server, "/api/v1/orgs/personal/peers/live-1").await {
            (404, _) => Ok(()),
            (status, _) => Err(format!("HTTP {status}")),
        }
    })
    .await;
    let (status, _) = admin_get(&server, "/api/v1/orgs/personal/peers/steady-1").await;
    assert_eq!(status, 200);

    let (_, page) = admin_get(&server, "/api/v1/orgs/personal/audit?limit=2").await;
    let entries = page["entries"].as_array().unwrap();
    for (entry, target) in entries.iter().zip(["live-1", "idle-1"]) {
        assert_eq!(entry["action"], "peer_reaped", "{page}");
        assert_eq!(entry["actor"], "reaper");
        assert_eq!(entry["target"], target);
        assert!(entry["source"].is_null());
    }
    let metrics = scrape(&server.api).await;
    assert_eq!(sample(&metrics, "sixpn_peers_reaped_total", &[]), Some(2.0));
    assert_eq!(
        sample(&metrics, "sixpn_org_peers", &["org=\"personal\""]),
        Some(1.0)
    );
    store.close().await;
}

/// The sorted AAAA addresses `name` answers (empty for no records).
fn aaaa(server: &ServerProcess, name: &str) -> Vec<String> {
    let answer = dns_query(server.dns, name, RecordType::AAAA);
    let mut addrs: Vec<String> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    addrs.sort();
    addrs
}

/// Polls `name` until it answers exactly `want` (sorted), for at most 15 s.
async fn wait_for_group(server: &ServerProcess, name: &str, want: &[&String]) {
    let mut want: Vec<String> = want.iter().map(|s| (*s).clone()).collect();
    want.sort();
    eventually_async(Duration::from_secs(15), name, || async {
        let got = aaaa(server, name);
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}, want {want:?}"))
        }
    })
    .await;
}

/// issue 10: with health-aware groups on (`[groups] healthy_only`), a group lists only the
/// members whose liveness was recorded within `health_window`; a member seen again comes back;
/// a group without a live member lists everyone (fail open); peer names keep resolving. Liveness
/// is recorded into the store as a gateway does (`Store::record_handshakes`); the end-to-end
/// test does it with real tunnels and HAProxy.
#[tokio::test]
async fn issue10_health_aware_groups_list_live_members() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sixpn.toml");
    std::fs::write(
        &config,
        "[groups]\nhealthy_only = [\"*\"]\nhealth_window = \"30s\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::spawn(&data, &[("SIXPN_CONFIG", config.to_str().unwrap())]);
    let api = Api::new(&server.api, &server.admin_token);
    let token = api.mint("personal", "nodes", None).await;
    let mut peers = Vec::new();
    for (name, group) in [("web-a", "web"), ("web-b", "web"), ("db-a", "db")] {
        let (status, peer) = api.register(&token, name, group).await;
        assert_eq!(status, 200, "{peer}");
        let key: sixpn::wireguard::PublicKey = peer["pubkey"].as_str().unwrap().parse().unwrap();
        peers.push((key, peer["us"].as_str().unwrap().to_owned()));
    }
    let [(key_a, ip_a), (key_b, ip_b), (_, ip_db)] = &peers[..] else {
        unreachable!()
    };

    let store = sixpn::store::Store::open(
        &format!("sqlite://{}", data.join("sixpn.db").display()),
        "fdaa::/16".parse().unwrap(),
    )
    .await
    .unwrap();
    let now = sixpn::model::now_unix();
    // web-a seen now, web-b last seen long ago: web lists web-a only.
    store
        .record_handshakes(&[(*key_a, now), (*key_b, now - 600)], 0)
        .await
        .unwrap();
    wait_for_group(&server, "web._g.internal", &[ip_a]).await;
    // web-b's peer name still resolves; db has no live member and lists everyone.
    assert_eq!(
        aaaa(&server, "web-b._peer.internal"),
        std::slice::from_ref(ip_b)
    );
    assert_eq!(aaaa(&server, "db._g.internal"), std::slice::from_ref(ip_db));
    // web-b is back.
    store
        .record_handshakes(&[(*key_b, sixpn::model::now_unix())], 0)
        .await
        .unwrap();
    wait_for_group(&server, "web._g.internal", &[ip_a, ip_b]).await;
}
