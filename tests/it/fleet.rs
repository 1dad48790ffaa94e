//! Issue 23, point 5: fleet deploys that cannot hijack each other, through a real server on
//! SQLite and PostgreSQL.
//!
//! - A node's token derived from the fleet token with its own name (what `sixpn-node` does at
//!   start) re-keys its own peer and is `403` on another node's peer, whose key stays.
//! - A re-key from another client address than the peer's last create or re-key is audited with
//!   both (`source_changed=OLD->NEW` in the `peer_rekeyed` row, whose `source` is the new one); a
//!   re-key from the same address is not flagged, and the address kept survives a restart.

use std::net::IpAddr;

use serde_json::{Value, json};
use sixpn::wireguard::derived::{self, Caveat, Kind};

use crate::support::db::each_backend;
use crate::support::{ADMIN_TOKEN, Api, TestDb, start_server_on};

fn pubkey() -> String {
    sixpn::wireguard::PrivateKey::generate()
        .unwrap()
        .public_key()
        .to_base64()
}

fn node_token(fleet: &str, name: &str) -> String {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    derived::attenuate(Kind::Token, fleet, &[Caveat::Peer(name.into())], seed).unwrap()
}

/// A client whose connections come from `source` (an address on 127/8).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn send(req: reqwest::RequestBuilder, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = req.bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The org's `peer_rekeyed` audit rows for `peer`, newest first: (source, detail).
async fn rekeys(base: &str, peer: &str) -> Vec<(String, String)> {
    let (status, page) = send(
        reqwest::Client::new().get(format!("{base}/api/v1/orgs/personal/audit?limit=100")),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "peer_rekeyed" && e["target"] == peer)
        .map(|e| {
            (
                e["source"].as_str().unwrap_or_default().to_owned(),
                e["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue23_node_tokens_cannot_rekey_each_other_and_source_changes_are_audited() {
    each_backend(|db: TestDb| async move {
        let dir = tempfile::tempdir().unwrap();
        let server = start_server_on(dir.path(), Some(&db.url))
            .await
            .expect("server starts");
        let api = Api::of(&server);
        let base = api.base.clone();
        let peers = format!("{base}/api/v3/wire_guard_peers");
        let fleet = api.mint("personal", "k8s-web", Some("web")).await;
        let token_a = node_token(&fleet, "node-a");
        let token_b = node_token(&fleet, "node-b");
        let host_a = client_from("127.0.0.1");
        let host_b = client_from("127.0.0.2");

        // Each node registers itself from its own address.
        for (http, token, name) in [(&host_a, &token_a, "node-a"), (&host_b, &token_b, "node-b")] {
            let body = json!({ "name": name, "group": "web", "pubkey": pubkey() });
            let (status, res) = send(http.post(&peers), token, Some(body)).await;
            assert_eq!(status, 200, "{name}: {res}");
        }
        let (_, b_before) = send(host_b.get(format!("{peers}/node-b")), &token_b, None).await;

        // Node A, with its own token, cannot re-key (nor read, nor delete) node B: 403, and B
        // keeps its key.
        let (status, res) = send(
            host_a.put(format!("{peers}/node-b")),
            &token_a,
            Some(json!({ "pubkey": pubkey() })),
        )
        .await;
        assert_eq!(status, 403, "node A re-keying node B: {res}");
        assert!(
            res["error"].as_str().unwrap().contains("node-a"),
            "the error names the peer the token is limited to: {res}"
        );
        let (status, _) = send(host_a.delete(format!("{peers}/node-b")), &token_a, None).await;
        assert_eq!(status, 403);
        let (_, b_after) = send(host_b.get(format!("{peers}/node-b")), &token_b, None).await;
        assert_eq!(b_after["pubkey"], b_before["pubkey"], "{b_after}");

        // A re-key from the same address: audited, not flagged.
        let (status, res) = send(
            host_a.put(format!("{peers}/node-a")),
            &token_a,
            Some(json!({ "pubkey": pubkey() })),
        )
        .await;
        assert_eq!(status, 200, "{res}");
        let rows = rekeys(&base, "node-a").await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].0, "127.0.0.1");
        assert!(!rows[0].1.contains("source_changed"), "{rows:?}");

        // The fleet token (which any node's Secret holds) re-keys node A from B's address: it
        // may, and the audit names both addresses.
        let (status, res) = send(
            host_b.put(format!("{peers}/node-a")),
            &fleet,
            Some(json!({ "pubkey": pubkey() })),
        )
        .await;
        assert_eq!(status, 200, "{res}");
        let rows = rekeys(&base, "node-a").await;
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].0, "127.0.0.2", "{rows:?}");
        assert!(
            rows[0].1.contains("source_changed=127.0.0.1->127.0.0.2"),
            "{rows:?}"
        );

        // The address kept is now B's, across a restart: a re-key from B again is not flagged,
        // one from A is.
        server.shutdown().await.expect("clean stop");
        let server = start_server_on(dir.path(), Some(&db.url))
            .await
            .expect("server starts again");
        let base = Api::of(&server).base;
        let peers = format!("{base}/api/v3/wire_guard_peers");
        let (status, _) = send(
            host_b.put(format!("{peers}/node-a")),
            &fleet,
            Some(json!({ "pubkey": pubkey() })),
        )
        .await;
        assert_eq!(status, 200);
        let (status, _) = send(
            host_a.put(format!("{peers}/node-a")),
            &token_a,
            Some(json!({ "pubkey": pubkey() })),
        )
        .await;
        assert_eq!(status, 200);
        let rows = rekeys(&base, "node-a").await;
        assert_eq!(rows.len(), 4, "{rows:?}");
        assert!(!rows[1].1.contains("source_changed"), "{rows:?}");
        assert_eq!(rows[0].0, "127.0.0.1", "{rows:?}");
        assert!(
            rows[0].1.contains("source_changed=127.0.0.2->127.0.0.1"),
            "{rows:?}"
        );
        server.shutdown().await.expect("clean stop");
    })
    .await;
}
