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
