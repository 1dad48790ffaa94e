//! Shared test helpers: a real `sixpn serve` process or an in-process server, an admin/peer HTTP
//! client, DNS queries over real sockets, throwaway databases (SQLite, a PostgreSQL database, a
//! whole PostgreSQL cluster), a private CA, and waiting on state rather than the clock.

#![allow(dead_code)]

pub mod db;
pub mod pki;
pub mod postgres;
mod server;
pub mod wait;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output};
use std::time::Duration;

pub use db::TestDb;
pub use server::{ADMIN_TOKEN, Serve, ServerProcess, server_config, start_server, start_server_on};
pub use wait::{eventually, eventually_async};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::{Value, json};

/// The ports [`free_port`] hands out: below Linux's ephemeral range (32768-60999), so a socket
/// bound to port 0 (a client's, a server's with `:0`) is never given one of them between our
/// check and the server's bind. Taking ports from the kernel's `:0` instead let concurrent tests
/// collide now and then on a busy machine ("sixpn serve exited early": address in use).
const FREE_PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A port that was free a moment ago on 127.0.0.1 (TCP and UDP), from [`FREE_PORTS`]. Each test
/// process walks the range from its own random point, one port after another, so two processes
/// (nextest runs each test in its own) rarely meet and one process never hands a port out twice.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher as _, Hasher as _};
    use std::sync::atomic::{AtomicU32, Ordering};
    static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = FREE_PORTS.end - FREE_PORTS.start;
    let start = *START.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        (h.finish() % u64::from(span)) as u32
    });
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "no free port left in {FREE_PORTS:?}");
        let port = (FREE_PORTS.start + (start + n) % span) as u16;
        // One bind at a time (each socket is closed at the end of its statement): free on
        // loopback and on every address, for TCP and UDP.
        let tcp = std::net::TcpListener::bind(("0.0.0.0", port)).is_ok();
        let udp = tcp && UdpSocket::bind(("0.0.0.0", port)).is_ok();
        if udp {
            return port;
        }
    }
}

/// What a CLI run never inherits from the test's environment.
const CLI_CLEARED: [&str; 9] = [
    "SIXPN_API_URL",
    "SIXPN_ADMIN_TOKEN",
    "SIXPN_DATA_DIR",
    "SIXPN_ORG",
    "SIXPN_CONFIG",
    "SIXPN_WIREGUARD_TOKEN",
    "FLY_WIREGUARD_TOKEN",
    "SIXPN_CA_CERT",
    "RUST_LOG",
];

/// Runs `sixpn args…` (a CLI command, not a server) in `dir` with a clean environment plus `env`.
pub fn sixpn_cli(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sixpn"));
    command.args(args).current_dir(dir);
    for var in CLI_CLEARED {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command.output().expect("run sixpn")
}

/// A small JSON client for the admin and peer APIs.
#[derive(Clone)]
pub struct Api {
    /// Base URL.
    pub base: String,
    /// Admin bearer token.
    pub admin_token: String,
    http: ::reqwest::Client,
}

impl Api {
    /// A client for an in-process server started with [`ADMIN_TOKEN`].
    pub fn of(server: &sixpn::serve::Running) -> Api {
        Api::new(&format!("http://{}", server.api_addr), ADMIN_TOKEN)
    }

    /// A client for `base`.
    pub fn new(base: &str, admin_token: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            admin_token: admin_token.to_owned(),
            http: ::reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
        }
    }

    /// Mints a token in `org` and returns its secret.
    pub async fn mint(&self, org: &str, name: &str, group: Option<&str>) -> String {
        let mut body = json!({ "name": name });
        if let Some(g) = group {
            body["group"] = json!(g);
        }
        let resp = self
            .http
            .post(format!("{}/api/v1/orgs/{org}/wireguard_tokens", self.base))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await
            .expect("mint request");
        let status = resp.status();
        let v: Value = resp.json().await.expect("mint json");
        assert!(status.is_success(), "mint failed: {status} {v}");
        v["token"].as_str().expect("token field").to_owned()
    }

    /// `DELETE /api/v1/orgs/{org}/wireguard_tokens/{name}`.
    pub async fn delete_token(&self, org: &str, name: &str) -> Value {
        let resp = self
            .http
            .delete(format!(
                "{}/api/v1/orgs/{org}/wireguard_tokens/{name}",
                self.base
            ))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("delete request");
        assert!(
            resp.status().is_success(),
            "delete failed: {}",
            resp.status()
        );
        resp.json().await.expect("json")
    }

    /// `GET /api/v1/orgs/{org}/peers`.
    pub async fn peers(&self, org: &str) -> Vec<Value> {
        let resp = self
            .http
            .get(format!("{}/api/v1/orgs/{org}/peers", self.base))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("list request");
        assert!(resp.status().is_success(), "list failed: {}", resp.status());
        resp.json().await.expect("json")
    }

    /// `POST /api/v1/orgs`.
    pub async fn create_org(&self, slug: &str) -> Value {
        let resp = self
            .http
            .post(format!("{}/api/v1/orgs", self.base))
            .bearer_auth(&self.admin_token)
            .json(&json!({ "slug": slug }))
            .send()
            .await
            .expect("org request");
        assert!(
            resp.status().is_success(),
            "org create failed: {}",
            resp.status()
        );
        resp.json().await.expect("json")
    }

    /// `POST /api/v3/wire_guard_peers` with flyctl's body; returns status and JSON.
    pub async fn register(&self, token: &str, name: &str, group: &str) -> (u16, Value) {
        let key = sixpn::wireguard::PrivateKey::generate()
            .unwrap()
            .public_key();
        let body = format!(
            "{{\"name\":\"{name}\",\"group\":\"{group}\",\"pubkey\":\"{key}\",\"region\":\"\"}}\n"
        );
        let resp = self
            .http
            .post(format!("{}/api/v3/wire_guard_peers", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match resp {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }
}

/// Sends one UDP query from `source` (an address on 127/8) and decodes the answer. Like a stub
/// resolver it asks again when no answer comes (UDP may lose one, and a test polling for a name
/// that does not resolve yet may trip the server's response-rate limit on NXDOMAIN): three tries,
/// 2 s each.
pub fn dns_query_from(source: &str, server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let sock = UdpSocket::bind((source, 0)).expect("bind client");
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut msg = Message::query();
    msg.metadata.id = 4242;
    msg.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    let query = msg.to_vec().expect("encode");
    let mut buf = [0u8; 4096];
    for _ in 0..3 {
        sock.send_to(&query, server).expect("send");
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return Message::from_vec(&buf[..n]).expect("decode");
        }
    }
    panic!("no DNS answer from {server} for {name} {rtype} after 3 tries");
}

/// Sends one UDP query from 127.0.0.1.
pub fn dns_query(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    dns_query_from("127.0.0.1", server, name, rtype)
}

/// [`dns_query`] from async code (on a blocking thread).
pub async fn dns_query_async(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || dns_query(server, &name, rtype))
        .await
        .expect("DNS query thread")
}

/// The values of the samples of `name` whose labels contain every one of `labels`, in order.
fn samples<'a>(
    text: &'a str,
    name: &'a str,
    labels: &'a [&'a str],
) -> impl Iterator<Item = f64> + 'a {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(move |l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(move |l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
}

/// The value of the first sample of `name` whose labels contain every one of `labels`.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    samples(text, name, labels).next()
}

/// The sum of every sample of `name` whose labels contain every one of `labels`.
pub fn total(text: &str, name: &str, labels: &[&str]) -> f64 {
    samples(text, name, labels).sum()
}

/// `GET {base}/metrics`, checked to be Prometheus text.
pub async fn scrape(base: &str) -> String {
    let res = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    res.text().await.unwrap()
}
