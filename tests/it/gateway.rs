//! The gateway's UAPI client and reconcile diff against a real `wireguard-go` (in a network
//! namespace of its own, with its socket directory bind-mounted to a temp dir we can reach), and
//! the client's error handling against a fake UAPI server.
//!
//! The `wireguard-go` tests need root, `ip` and `wireguard-go`; without them they print why and
//! skip.

use std::net::Ipv6Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sixpn::gateway::reconcile::{self, Change, Wanted};
use sixpn::gateway::uapi::{DeviceUpdate, PeerUpdate, UapiClient, UapiError};
use sixpn::wireguard::{PrivateKey, PublicKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::wait::reached;
use crate::support::{eventually, eventually_async};

pub(crate) const IFACE: &str = "wgit0";

/// A `wireguard-go` interface in its own network namespace; both are removed on drop.
pub(crate) struct WgNetns {
    netns: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl WgNetns {
    pub(crate) fn start(tag: &str) -> Option<WgNetns> {
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let have = |tool: &str| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !is_root || !have("wireguard-go") || !have("ip") || !have("unshare") {
            eprintln!("skipped: needs root, ip, unshare and wireguard-go");
            return None;
        }
        let netns = format!("sixpn-it-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {netns}");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all("/run/wireguard").expect("mkdir /run/wireguard");
        // wireguard-go always uses /run/wireguard; give it our temp dir there, in a private
        // mount namespace, so its socket lands where this process can reach it.
        let script = format!(
            "mount --bind {} /run/wireguard && exec wireguard-go -f {IFACE}",
            dir.path().display()
        );
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "unshare",
                "-m",
                "--propagation",
                "private",
            ])
            .args(["sh", "-c", &script])
            .env("LOG_LEVEL", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn wireguard-go");
        let wg = WgNetns { netns, child, dir };
        let sock = wg.dir.path().join(format!("{IFACE}.sock"));
        eventually(
            Duration::from_secs(10),
            &format!("wireguard-go listens on {sock:?}"),
            // Listening, not only created: the file exists a moment before wireguard-go accepts.
            || std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        );
        Some(wg)
    }

    fn client(&self) -> UapiClient {
        UapiClient::new(Some(self.dir.path()), IFACE)
    }
}

impl Drop for WgNetns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

pub(crate) fn key(n: u8) -> PublicKey {
    PrivateKey::from_bytes([n; 32]).public_key()
}

fn wanted(name: &str, n: u8, host: u16) -> Wanted {
    Wanted {
        org: "personal".parse().unwrap(),
        name: name.parse().unwrap(),
        pubkey: key(n),
        address: Ipv6Addr::new(0xfdaa, 0, 1, 1, 0, 0, 0, host),
    }
}

/// Plans against the live interface, applies, and returns the changes.
async fn converge(client: &UapiClient, want: &[Wanted]) -> Vec<Change> {
    let device = client.get().await.unwrap();
    let changes = reconcile::plan(want, &device.peers);
    if !changes.is_empty() {
        client.set(&reconcile::to_update(&changes)).await.unwrap();
    }
    changes
}

#[tokio::test]
async fn uapi_and_reconcile_against_wireguard_go() {
    let Some(wg) = WgNetns::start("uapi") else {
        return;
    };
    let client = wg.client();

    // A fresh device: no key, no peers.
    let device = client.get().await.unwrap();
    assert!(device.private_key.is_none() && device.peers.is_empty());

    // Key and port.
    let private = PrivateKey::generate().unwrap();
    client
        .set(&DeviceUpdate {
            private_key: Some(private.clone()),
            listen_port: Some(51999),
            ..Default::default()
        })
        .await
        .unwrap();
    let device = client.get().await.unwrap();
    assert_eq!(device.listen_port, 51999);
    assert_eq!(
        device.private_key.unwrap().public_key(),
        private.public_key()
    );

    // Three peers added in one request.
    let mut want = vec![wanted("a", 1, 1), wanted("b", 2, 2), wanted("c", 3, 3)];
    assert_eq!(converge(&client, &want).await.len(), 3);
    let device = client.get().await.unwrap();
    assert_eq!(device.peers.len(), 3);
    for w in &want {
        let peer = device
            .peers
            .iter()
            .find(|p| p.public_key == *w.pubkey.as_bytes())
            .expect("peer on the interface");
        assert_eq!(peer.allowed_ips, w.allowed_ips());
    }

    // Give "a" and "c" state that a remove + re-add would lose (an endpoint, a keepalive).
    for n in [1, 3] {
        client
            .set(&DeviceUpdate {
                peers: vec![PeerUpdate {
                    public_key: *key(n).as_bytes(),
                    update_only: true,
                    endpoint: Some("192.0.2.1:51820".parse().unwrap()),
                    persistent_keepalive: Some(25),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .unwrap();
    }

    // Re-key "b": one Rekey, the address moves, the others keep their state.
    want[1] = wanted("b", 9, 2);
    let changes = converge(&client, &want).await;
    assert!(
        matches!(&changes[..], [Change::Rekey { old_key, .. }] if *old_key == *key(2).as_bytes()),
        "{changes:?}"
    );
    let device = client.get().await.unwrap();
    assert_eq!(device.peers.len(), 3);
    assert!(
        !device
            .peers
            .iter()
            .any(|p| p.public_key == *key(2).as_bytes())
    );
    let b = device
        .peers
        .iter()
        .find(|p| p.public_key == *key(9).as_bytes())
        .unwrap();
    assert_eq!(b.allowed_ips, want[1].allowed_ips());
    for n in [1, 3] {
        let p = device
            .peers
            .iter()
            .find(|p| p.public_key == *key(n).as_bytes())
            .unwrap();
        assert_eq!(
            p.endpoint.as_deref(),
            Some("192.0.2.1:51820"),
            "peer {n} was disturbed"
        );
        assert_eq!(p.persistent_keepalive, 25, "peer {n} was disturbed");
    }

    // Remove "c"; then nothing is left to do.
    want.pop();
    let changes = converge(&client, &want).await;
    assert_eq!(changes, vec![Change::Remove(*key(3).as_bytes())]);
    assert_eq!(converge(&client, &want).await, vec![]);
    let device = client.get().await.unwrap();
    assert_eq!(device.peers.len(), 2);
    let a = device
        .peers
        .iter()
        .find(|p| p.public_key == *key(1).as_bytes())
        .unwrap();
    assert_eq!(a.endpoint.as_deref(), Some("192.0.2.1:51820"));

    // Drift: someone widens "a"'s allowed IPs; the reconcile narrows them, in place.
    client
        .set(&DeviceUpdate {
            peers: vec![PeerUpdate {
                public_key: *key(1).as_bytes(),
                update_only: true,
                allowed_ips: vec!["10.0.0.0/8".parse().unwrap()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let changes = converge(&client, &want).await;
    assert!(
        matches!(&changes[..], [Change::FixAllowedIps { .. }]),
        "{changes:?}"
    );
    let device = client.get().await.unwrap();
    let a = device
        .peers
        .iter()
        .find(|p| p.public_key == *key(1).as_bytes())
        .unwrap();
    assert_eq!(a.allowed_ips, want[0].allowed_ips());
    assert_eq!(a.endpoint.as_deref(), Some("192.0.2.1:51820"));
}

/// Set in the child that the `gateway_start_*` tests run inside the namespace: the UAPI dir.
pub(crate) const INNER: &str = "SIXPN_IT_GATEWAY_INNER_DIR";
/// Set with [`INNER`] to drive the interface through `wg` instead of the socket.
const INNER_WG: &str = "SIXPN_IT_GATEWAY_INNER_WG";

/// Runs `test` of this binary again inside `wg`'s namespace, with /run/wireguard bound to the
/// interface's socket dir (so `wg` finds it), and checks that it passed.
pub(crate) fn run_inside(wg: &WgNetns, test: &str, via_wg: bool) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &wg.netns,
        "unshare",
        "-m",
        "--propagation",
        "private",
    ])
    .args([
        "sh",
        "-c",
        "mount --bind \"$0\" /run/wireguard && exec \"$@\"",
    ])
    .arg(wg.dir.path())
    .arg(&exe)
    .args([test, "--exact", "--nocapture"])
    .env(INNER, wg.dir.path());
    if via_wg {
        cmd.env(INNER_WG, "1");
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inner test failed:\n{text}");
    assert!(text.contains("1 passed"), "inner test did not run:\n{text}");
}

/// `gateway::start` with a real store on a real wireguard-go interface, through its UAPI socket.
/// The outer test makes the namespace and the interface, then runs this same test again inside
/// the namespace, where `start` can set addresses and routes on the interface.
#[tokio::test]
async fn gateway_start_keeps_the_interface_in_step() {
    if let Ok(dir) = std::env::var(INNER) {
        return gateway_start_inner(Path::new(&dir), false).await;
    }
    let Some(wg) = WgNetns::start("start") else {
        return;
    };
    run_inside(
        &wg,
        "gateway::gateway_start_keeps_the_interface_in_step",
        false,
    );
}

/// The same through the `wg` command (the path kernel WireGuard takes): the configured UAPI dir
/// has no socket, so `start` falls back to `wg`, which finds wireguard-go's socket itself.
#[tokio::test]
async fn gateway_start_through_the_wg_command() {
    if let Ok(dir) = std::env::var(INNER) {
        return gateway_start_inner(Path::new(&dir), true).await;
    }
    let Some(wg) = WgNetns::start("startwg") else {
        return;
    };
    run_inside(&wg, "gateway::gateway_start_through_the_wg_command", true);
}

async fn ip_json(args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new("ip")
        .arg("-json")
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "ip {args:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn gateway_start_inner(uapi_dir: &Path, via_wg: bool) {
    assert_eq!(via_wg, std::env::var(INNER_WG).is_ok());
    use sixpn::config::GatewayConfig;
    use sixpn::store::{NewPeer, NewToken, Store};

    let data = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", data.path().join("sixpn.db").display());
    let store = Store::open(&url, "fdaa::/16".parse().unwrap())
        .await
        .unwrap();
    let org_slug: sixpn::model::OrgSlug = "personal".parse().unwrap();
    let org = store.get_org(&org_slug).await.unwrap();
    let (_, secret) = store
        .mint_token(
            &org_slug,
            NewToken {
                name: "web".parse().unwrap(),
                group: Some("web".parse().unwrap()),
                expires_at: None,
                max_peers: None,
                key_expiry: None,
            },
        )
        .await
        .unwrap();
    let token = store.authenticate(secret.expose()).await.unwrap();
    let register = |name: &str, region: &str, n: u8| NewPeer {
        name: name.parse().unwrap(),
        group: "web".parse().unwrap(),
        region: region.parse().unwrap(),
        pubkey: key(n),
    };
    let (a, _) = store
        .register_peer(&token, register("a", "e2e", 1))
        .await
        .unwrap();
    let (b, _) = store
        .register_peer(&token, register("b", "e2e", 2))
        .await
        .unwrap();
    // Another region's peer never lands on this interface.
    store
        .register_peer(&token, register("far", "other", 3))
        .await
        .unwrap();

    let config = GatewayConfig {
        interface: IFACE.into(),
        region: "e2e".parse().unwrap(),
        private_key_file: Some(data.path().join("keys/gateway.key")),
        listen_port: 51888,
        uapi_dir: Some(if via_wg {
            data.path().join("no-socket-here")
        } else {
            uapi_dir.to_owned()
        }),
        resync_period: sixpn::gateway::RESYNC_PERIOD,
        liveness: Default::default(),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let handle = sixpn::gateway::start(&config, store.clone(), cancel.clone())
        .await
        .unwrap();
    let client = UapiClient::new(Some(uapi_dir), IFACE);

    // Key, port, peers.
    let device = client.get().await.unwrap();
    assert_eq!(device.listen_port, 51888);
    assert_eq!(
        device.private_key.unwrap().public_key(),
        handle.public_key()
    );
    let mut keys: Vec<_> = device.peers.iter().map(|p| p.public_key).collect();
    keys.sort();
    let mut expect = vec![*a.pubkey.as_bytes(), *b.pubkey.as_bytes()];
    expect.sort();
    assert_eq!(keys, expect);

    // Addresses (::1 and ::3 as /128), link up, the org's /48 routed with source ::3.
    let link = ip_json(&["-6", "addr", "show", "dev", IFACE]).await;
    let flags = link[0]["flags"].as_array().unwrap();
    assert!(flags.iter().any(|f| f == "UP"), "{link}");
    let addrs: Vec<String> = link[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    assert!(
        addrs.contains(&format!("{}/128", org.gateway_addr())),
        "{addrs:?}"
    );
    assert!(
        addrs.contains(&format!("{}/128", org.dns_addr())),
        "{addrs:?}"
    );
    let routes = ip_json(&["-6", "route", "show", "dev", IFACE]).await;
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == org.prefix.to_string().as_str()
                && r["prefsrc"] == org.dns_addr().to_string().as_str()),
        "{routes}"
    );

    // Org isolation: from the org's /48 to itself is routed, anything else arriving is refused.
    let rules = ip_json(&["-6", "rule", "show"]).await;
    let ours: Vec<&serde_json::Value> = rules
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["iif"] == IFACE)
        .collect();
    let net = org.prefix.network().to_string();
    assert!(
        ours.iter().any(|r| r["src"] == net.as_str()
            && r["dst"] == net.as_str()
            && r["srclen"] == 48
            && r["table"] == "main"),
        "{rules}"
    );
    assert!(ours.iter().any(|r| r["action"] == "prohibit"), "{rules}");

    // Status of a configured peer (no handshake yet), and of an unknown key.
    let status = handle.peer_status(&a.pubkey).await.unwrap();
    assert_eq!(status.last_handshake, None);
    assert_eq!(status.rx_bytes, 0);
    assert!(handle.peer_status(&key(99)).await.is_none());

    // Mark "a" so that a remove + re-add would show.
    client
        .set(&DeviceUpdate {
            peers: vec![PeerUpdate {
                public_key: *a.pubkey.as_bytes(),
                update_only: true,
                endpoint: Some("192.0.2.7:51820".parse().unwrap()),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();

    // Re-key "b": applied in place; "a" untouched.
    let (b2, generation) = store.rekey_peer(&token, &b.name, key(4)).await.unwrap();
    let mut applied = handle.applied();
    reached(
        &mut applied,
        generation,
        Duration::from_secs(5),
        "gateway applies the re-key",
    )
    .await;
    let device = client.get().await.unwrap();
    assert_eq!(device.peers.len(), 2);
    let peer_b = device
        .peers
        .iter()
        .find(|p| p.public_key == *b2.pubkey.as_bytes())
        .expect("new key on the interface");
    assert_eq!(
        peer_b.allowed_ips,
        vec![format!("{}/128", b.address).parse().unwrap()]
    );
    let peer_a = device
        .peers
        .iter()
        .find(|p| p.public_key == *a.pubkey.as_bytes())
        .unwrap();
    assert_eq!(peer_a.endpoint.as_deref(), Some("192.0.2.7:51820"));

    // Delete "a": gone from the interface.
    let generation = store.delete_peer(&org_slug, &a.name).await.unwrap();
    reached(
        &mut applied,
        generation,
        Duration::from_secs(5),
        "gateway applies the delete",
    )
    .await;
    let device = client.get().await.unwrap();
    let keys: Vec<_> = device.peers.iter().map(|p| p.public_key).collect();
    assert_eq!(keys, vec![*b2.pubkey.as_bytes()]);

    // Drift: a stray peer added by hand is removed by the next probe's full reconcile (the
    // change feed never mentions it).
    client
        .set(&DeviceUpdate {
            peers: vec![PeerUpdate::upsert(*key(50).as_bytes(), vec![])],
            ..Default::default()
        })
        .await
        .unwrap();
    let keys = eventually_async(
        sixpn::gateway::PROBE_PERIOD * 3,
        "the next probe removes the stray peer",
        || async {
            let device = client.get().await.unwrap();
            let keys: Vec<_> = device.peers.iter().map(|p| p.public_key).collect();
            match keys.len() {
                1 => Ok(keys),
                n => Err(format!("{n} peers")),
            }
        },
    )
    .await;
    assert_eq!(keys, vec![*b2.pubkey.as_bytes()]);

    // A second start with the same key file keeps the key.
    cancel.cancel();
    let again = sixpn::gateway::start(
        &config,
        store.clone(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(again.public_key(), handle.public_key());
}

/// Many peers: one request adds them all, and a later single change is a single-peer request.
#[tokio::test]
async fn reconcile_scales_to_many_peers() {
    let Some(wg) = WgNetns::start("many") else {
        return;
    };
    let client = wg.client();
    let many = |rekeyed: Option<u16>| -> Vec<Wanted> {
        (1..=2000u16)
            .map(|i| {
                let private = PrivateKey::from_bytes({
                    let mut b = [0u8; 32];
                    // Not byte 0: X25519 clamping clears its low bits.
                    b[1..3].copy_from_slice(&i.to_le_bytes());
                    b[4] = u8::from(rekeyed == Some(i));
                    b[3] = 7;
                    b
                });
                Wanted {
                    org: "personal".parse().unwrap(),
                    name: format!("p{i}").parse().unwrap(),
                    pubkey: private.public_key(),
                    address: Ipv6Addr::new(0xfdaa, 0, 1, 1, 0, 0, 0, i),
                }
            })
            .collect()
    };
    let start = Instant::now();
    assert_eq!(converge(&client, &many(None)).await.len(), 2000);
    assert_eq!(client.get().await.unwrap().peers.len(), 2000);
    let changes = converge(&client, &many(Some(1234))).await;
    assert!(
        matches!(&changes[..], [Change::Rekey { .. }]),
        "{changes:?}"
    );
    assert_eq!(converge(&client, &many(Some(1234))).await, vec![]);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "2000 peers took {:?}",
        start.elapsed()
    );
}

/// Serves one UAPI exchange on `path` with a canned answer and returns the request it got.
async fn fake_uapi(path: &Path, answer: &'static str) -> tokio::task::JoinHandle<String> {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.ends_with(b"\n\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        stream.write_all(answer.as_bytes()).await.unwrap();
        String::from_utf8(request).unwrap()
    })
}

#[tokio::test]
async fn uapi_client_reports_errno_and_protocol_errors() {
    let dir = tempfile::tempdir().unwrap();
    let client = UapiClient::new(Some(dir.path()), "wgfake");
    let sock = dir.path().join("wgfake.sock");

    // No socket: a Connect error that names the path.
    let err = client.get().await.unwrap_err();
    assert!(matches!(err, UapiError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("wgfake.sock"), "{err}");

    // The daemon refuses a set.
    let server = fake_uapi(&sock, "errno=22\n\n").await;
    let update = DeviceUpdate {
        peers: vec![PeerUpdate::remove([7; 32])],
        ..Default::default()
    };
    let err = client.set(&update).await.unwrap_err();
    assert!(matches!(err, UapiError::Errno { errno: 22 }), "{err}");
    assert_eq!(server.await.unwrap(), update.render());
    std::fs::remove_file(&sock).unwrap();

    // A get answer with a failure errno.
    let server = fake_uapi(&sock, "errno=19\n\n").await;
    assert!(matches!(
        client.get().await,
        Err(UapiError::Errno { errno: 19 })
    ));
    assert_eq!(server.await.unwrap(), "get=1\n\n");
    std::fs::remove_file(&sock).unwrap();

    // The daemon hangs up without an errno line.
    let server = fake_uapi(&sock, "listen_port=1\n").await;
    assert!(matches!(client.get().await, Err(UapiError::Protocol(_))));
    server.await.unwrap();
}

/// issue 10: a real WireGuard handshake between a node (a second wireguard-go) and the gateway
/// interface is recorded in the store by the gateway, so reaping removes the ephemeral peer that
/// never connected (from the store and the interface) and keeps the one that did.
#[tokio::test]
async fn issue10_real_handshakes_keep_an_ephemeral_peer_alive() {
    if std::env::var(INNER).is_ok() {
        return handshake_inner().await;
    }
    let Some(wg) = WgNetns::start("hs") else {
        return;
    };
    run_inside(
        &wg,
        "gateway::issue10_real_handshakes_keep_an_ephemeral_peer_alive",
        false,
    );
}

async fn handshake_inner() {
    use sixpn::config::GatewayConfig;
    use sixpn::store::{NewPeer, NewToken, Store};
    const NODE_IFACE: &str = "wgnode0";
    const PORT: u16 = 51899;
    let uapi_dir = std::path::PathBuf::from(std::env::var(INNER).unwrap());

    let data = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", data.path().join("sixpn.db").display());
    let store = Store::open(&url, "fdaa::/16".parse().unwrap())
        .await
        .unwrap();
    let org: sixpn::model::OrgSlug = "personal".parse().unwrap();
    let new_token = NewToken {
        name: "ci".parse().unwrap(),
        group: None,
        expires_at: None,
        max_peers: None,
        key_expiry: None,
    };
    let (_, secret) = store.mint_token_opts(&org, new_token, true).await.unwrap();
    let token = store.authenticate(secret.expose()).await.unwrap();
    let node_key = PrivateKey::generate().unwrap();
    let peer = |name: &str, pubkey: PublicKey| NewPeer {
        name: name.parse().unwrap(),
        group: "ci".parse().unwrap(),
        region: "e2e".parse().unwrap(),
        pubkey,
    };
    let (idle, _) = store
        .register_peer(&token, peer("idle", key(7)))
        .await
        .unwrap();
    let (live, _) = store
        .register_peer(&token, peer("live", node_key.public_key()))
        .await
        .unwrap();

    let config = GatewayConfig {
        interface: IFACE.into(),
        region: "e2e".parse().unwrap(),
        private_key_file: Some(data.path().join("gateway.key")),
        listen_port: PORT,
        uapi_dir: Some(uapi_dir.clone()),
        resync_period: sixpn::gateway::RESYNC_PERIOD,
        liveness: Default::default(),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let handle = sixpn::gateway::start(&config, store.clone(), cancel.clone())
        .await
        .unwrap();
    // The idle peer must be older than the handshake by a margin the reap below can tell.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The node: a second wireguard-go in this namespace, pointed at the gateway over loopback.
    let ok = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut node = Command::new("wireguard-go")
        .args(["-f", NODE_IFACE])
        .env("LOG_LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the node's wireguard-go");
    let sock = uapi_dir.join(format!("{NODE_IFACE}.sock"));
    eventually_async(
        Duration::from_secs(10),
        &format!("wireguard-go listens on {sock:?}"),
        // Listening, not only created: the file exists a moment before wireguard-go accepts
        // (a loaded machine got "connection refused" in that moment).
        || async {
            std::os::unix::net::UnixStream::connect(&sock)
                .map(drop)
                .map_err(|e| e.to_string())
        },
    )
    .await;
    let node_client = UapiClient::new(Some(&uapi_dir), NODE_IFACE);
    node_client
        .set(&DeviceUpdate {
            private_key: Some(node_key.clone()),
            peers: vec![PeerUpdate {
                public_key: *handle.public_key().as_bytes(),
                allowed_ips: vec!["fdaa::/16".parse().unwrap()],
                endpoint: Some(format!("127.0.0.1:{PORT}").parse().unwrap()),
                persistent_keepalive: Some(1),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let ok = Command::new("ip")
        .args(["link", "set", NODE_IFACE, "up"])
        .status()
        .unwrap()
        .success();
    assert!(ok);

    // A real handshake, as the gateway sees it...
    let handshake = eventually_async(
        Duration::from_secs(15),
        "a handshake with the gateway",
        || async {
            let status = handle.peer_status(&live.pubkey).await;
            status
                .and_then(|s| s.last_handshake)
                .ok_or_else(|| "none yet".to_owned())
        },
    )
    .await;
    // ...recorded in the store by the gateway within a period.
    let recorded = eventually_async(
        sixpn::gateway::HANDSHAKE_PERIOD + Duration::from_secs(5),
        "the gateway records the handshake",
        || async {
            let (at, ephemeral) = store.peer_liveness(&org, &live.name).await.unwrap();
            assert!(ephemeral);
            at.ok_or_else(|| "not recorded yet".to_owned())
        },
    )
    .await;
    assert!(recorded >= handshake, "{recorded} < {handshake}");
    assert_eq!(store.peer_liveness(&org, &idle.name).await.unwrap().0, None);

    // Reap with an idle time that ends just before the handshake: the never-connected peer
    // (created 3 s earlier) goes, the live one stays.
    let now = sixpn::model::now_unix();
    let idle_for = Duration::from_secs(u64::try_from(now - recorded + 1).unwrap());
    let (reaped, generation) = store.reap_idle_peers(idle_for).await.unwrap();
    let names: Vec<&str> = reaped.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["idle"]);
    let mut applied = handle.applied();
    reached(
        &mut applied,
        generation,
        Duration::from_secs(5),
        "gateway applies the reap",
    )
    .await;
    let gateway_client = UapiClient::new(Some(&uapi_dir), IFACE);
    let keys: Vec<_> = gateway_client
        .get()
        .await
        .unwrap()
        .peers
        .iter()
        .map(|p| p.public_key)
        .collect();
    assert_eq!(keys, vec![*live.pubkey.as_bytes()]);
    cancel.cancel();
    let _ = node.kill();
    let _ = node.wait();
}
