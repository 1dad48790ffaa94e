//! Operations (issue 10): `/metrics`, the audit log and ephemeral peers, through a real server.

use hickory_proto::rr::RecordType;

use crate::support::{Api, ServerProcess, dns_query};

/// The value of the first sample of `name` whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of every sample of `name` whose labels contain every one of `labels`.
fn total(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(base: &str) -> String {
    let res = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    res.text().await.unwrap()
}

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
    assert_eq!(
        sample(&after, "sixpn_org_peers", &["org=\"personal\""]),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, "sixpn_org_tokens", &["org=\"personal\""]),
        Some(1.0)
    );
    assert_eq!(sample(&after, "sixpn_store_up", &[]), Some(1.0));
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

    let audit_url = format!("{}/api/v1/orgs/personal/audit", server.api);
    let page: serde_json::Value = http
        .get(&audit_url)
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
        ("peer_deleted", "admin", "a2"),
        ("token_deleted", "admin", "ci"),
        ("peer_deleted", "ci", "a1"),
        ("peer_rekeyed", "ci", "a1"),
        ("peer_created", "ci", "a2"),
        ("peer_created", "ci", "a1"),
        ("token_minted", "admin", "ci"),
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
        let page: serde_json::Value = http
            .get(url)
            .bearer_auth(&server.admin_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
