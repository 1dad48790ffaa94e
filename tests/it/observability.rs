//! The shipped observability files (issue 19) against a real server: every `sixpn_*` metric the
//! Grafana dashboard (`deploy/grafana/sixpn.json`) or an alert rule (`deploy/prometheus/alerts.yml`)
//! queries is in the server's `/metrics`, with at least one sample, once the server has done the
//! ordinary things (a token minted, a peer created, DNS queries answered and refused).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::support::{Api, ServerProcess, dns_query, eventually_async, scrape};

/// The repository's root (where Cargo.toml is).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `sixpn_*` metric name in `expr` (PromQL), as written (a histogram's `_bucket`, `_sum`
/// or `_count` kept: [`missing`] resolves them against what `/metrics` says is a histogram).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let name = regex::Regex::new(r"\bsixpn_[a-zA-Z0-9_]*").unwrap();
    name.find_iter(expr)
        .map(|m| m.as_str().to_owned())
        .collect()
}

/// The `expr` of every target of every panel (rows' nested panels too) of the dashboard.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<String>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(expr.to_owned());
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    // Template variables query metrics too (`label_values(metric, label)`).
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(q) = var["query"]["query"].as_str().or(var["query"].as_str()) {
            out.push(q.to_owned());
        }
    }
    out
}

/// The `alert` name and `expr` of every rule of a Prometheus rules file: the `expr:` line and the
/// lines indented deeper that follow it (a folded `>-` block). A plain reading of the YAML the
/// file is written in; `promtool check rules` (deploy/check.sh) checks the YAML itself.
fn alert_exprs(yaml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut alert = String::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alert = name.trim().to_owned();
        } else if let Some(first) = trimmed.strip_prefix("expr:") {
            let mut expr = first.trim().trim_start_matches(">-").to_owned();
            while let Some(next) = lines.peek() {
                let next_trimmed = next.trim_start();
                if !next_trimmed.is_empty() && next.len() - next_trimmed.len() <= indent {
                    break;
                }
                expr.push(' ');
                expr.push_str(next_trimmed);
                lines.next();
            }
            out.push((alert.clone(), expr));
        }
    }
    out
}

/// The `# TYPE` of every metric family in a `/metrics` text.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

/// Whether `text` has a sample of exactly the series name `name`.
fn has_sample(text: &str, name: &str) -> bool {
    text.lines().filter(|l| !l.starts_with('#')).any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

/// The names in `wanted` that `/metrics` (`text`) does not show: neither a family of that name
/// with a sample, nor, for `<base>_bucket`/`_sum`/`_count`, a histogram (or, for `_sum` and
/// `_count`, a summary) `<base>` with such a sample.
fn missing(text: &str, wanted: &BTreeSet<String>) -> Vec<String> {
    let types = types(text);
    wanted
        .iter()
        .filter(|name| {
            let plain = types.contains_key(name.as_str()) && has_sample(text, name);
            let part = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix).is_some_and(|base| {
                    let kind = types.get(base).map(String::as_str);
                    let fits = match *suffix {
                        "_bucket" => kind == Some("histogram"),
                        _ => matches!(kind, Some("histogram" | "summary")),
                    };
                    fits && has_sample(text, name)
                })
            });
            !(plain || part)
        })
        .cloned()
        .collect()
}

#[test]
fn metric_names_and_alert_exprs_are_read_as_written() {
    let names = metric_names(
        "histogram_quantile(0.95, sum by (le) (rate(sixpn_api_request_duration_seconds_bucket{a=\"sixpn_not\"}[5m]))) / sixpn_up",
    );
    assert!(names.contains("sixpn_api_request_duration_seconds_bucket"));
    assert!(names.contains("sixpn_up"));
    let yaml = "groups:\n  - rules:\n      - alert: A\n        expr: >-\n          sixpn_a > 1\n          or\n          sixpn_b\n        for: 1m\n      - alert: B\n        expr: sixpn_c > 0\n";
    assert_eq!(
        alert_exprs(yaml),
        [
            ("A".to_owned(), " sixpn_a > 1 or sixpn_b".to_owned()),
            ("B".to_owned(), "sixpn_c > 0".to_owned())
        ]
    );
    // A histogram's parts resolve to the histogram; a made-up part or name does not.
    let text = "# TYPE sixpn_h histogram\nsixpn_h_bucket{le=\"1\"} 1\nsixpn_h_sum 1\nsixpn_h_count 1\n# TYPE sixpn_c counter\nsixpn_c 0\n# TYPE sixpn_g gauge\n";
    let wanted: BTreeSet<String> = [
        "sixpn_h_bucket",
        "sixpn_h_count",
        "sixpn_c",
        "sixpn_c_count",
        "sixpn_g",
        "sixpn_h",
        "sixpn_nope",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(
        missing(text, &wanted),
        ["sixpn_c_count", "sixpn_g", "sixpn_h", "sixpn_nope"]
    );
}

/// issue 19: the dashboard is valid Grafana JSON, the rules file holds the alerts the issue asks
/// for, and every metric either queries is in `/metrics` of a running server.
#[tokio::test]
async fn issue19_every_metric_the_dashboard_and_alerts_query_is_served() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/sixpn.json")).unwrap(),
    )
    .expect("deploy/grafana/sixpn.json is JSON");
    assert_eq!(dashboard["title"], "sixpn");
    assert!(dashboard["uid"].is_string());
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let vars: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "datasource")
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["datasource"], "a data source variable");
    let panel_exprs = dashboard_exprs(&dashboard);
    assert!(panel_exprs.len() >= 20, "{panel_exprs:?}");
    let from_dashboard: BTreeSet<String> =
        panel_exprs.iter().flat_map(|e| metric_names(e)).collect();

    let alerts =
        alert_exprs(&std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap());
    let alert_names: BTreeSet<&str> = alerts.iter().map(|(a, _)| a.as_str()).collect();
    for wanted in [
        "SixpnDnsSnapshotStale",
        "SixpnWritesFailing",
        "SixpnGatewayReconcileFailing",
        "SixpnReaperFailing",
        "SixpnDnsRrlDropping",
        "SixpnReplicaBehind",
    ] {
        assert!(alert_names.contains(wanted), "no alert {wanted}");
    }
    let mut from_alerts = BTreeSet::new();
    for (alert, expr) in &alerts {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{alert} queries no sixpn metric: {expr}");
        from_alerts.extend(names);
    }

    // A server that has done the ordinary things: a token, a peer, DNS hits and misses.
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(dir.path(), &[]);
    let api = Api::new(&server.api, &server.admin_token);
    let token = api.mint("personal", "observability", None).await;
    let (status, body) = api.register(&token, "o1", "web").await;
    assert_eq!(status, 200, "{body}");
    let answer = dns_query(server.dns, "o1._peer.internal", RecordType::AAAA);
    assert_eq!(answer.answers.len(), 1);
    dns_query(server.dns, "nobody._peer.internal", RecordType::AAAA);

    // The per-org counts and the reapers' first passes come within seconds of the start.
    let all: BTreeSet<String> = from_dashboard.union(&from_alerts).cloned().collect();
    let text = eventually_async(
        Duration::from_secs(30),
        "every queried metric is served",
        || async {
            let text = scrape(&server.api).await;
            let gone = missing(&text, &all);
            if gone.is_empty() {
                Ok(text)
            } else {
                Err(format!("not in /metrics: {gone:?}"))
            }
        },
    )
    .await;
    // Both sets, named apart, when one fails (the eventual check above covers their union).
    assert_eq!(
        missing(&text, &from_dashboard),
        Vec::<String>::new(),
        "dashboard"
    );
    assert_eq!(
        missing(&text, &from_alerts),
        Vec::<String>::new(),
        "alerts.yml"
    );
}
