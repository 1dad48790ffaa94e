//! Shared test helpers: a real `sixpn serve` process or an in-process server, an admin/peer HTTP
//! client, and DNS queries over real sockets.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::{Value, json};

/// A port that was free a moment ago on 127.0.0.1 (TCP and UDP).
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A `sixpn serve` child process; killed (SIGKILL) on drop.
pub struct ServerProcess {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub api: String,
    /// The DNS address.
    pub dns: SocketAddr,
    /// The admin token.
    pub admin_token: String,
    /// The environment it was started with, to restart it the same way.
    pub env: Vec<(String, String)>,
}

impl ServerProcess {
    /// Starts the binary with `SIXPN_*` variables for `data_dir`, fresh ports and `extra` env,
    /// and waits until its API answers.
    pub fn spawn(data_dir: &std::path::Path, extra: &[(&str, &str)]) -> ServerProcess {
        let api_port = free_port();
        let dns_port = free_port();
        let mut env: Vec<(String, String)> = vec![
            ("SIXPN_DATA_DIR".into(), data_dir.display().to_string()),
            ("SIXPN_API_LISTEN".into(), format!("127.0.0.1:{api_port}")),
            ("SIXPN_DNS_LISTEN".into(), format!("127.0.0.1:{dns_port}")),
            ("SIXPN_ADMIN_TOKEN".into(), "test-admin-token".into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        for (k, v) in extra {
            env.push(((*k).into(), (*v).into()));
        }
        Self::spawn_env(env)
    }

    /// Starts the binary again with the same environment (same data, same ports).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let again = Self::spawn_env(self.env.clone());
        *self = again;
    }

    fn spawn_env(env: Vec<(String, String)>) -> ServerProcess {
        let get = |k: &str| {
            env.iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .expect("set above")
        };
        let api = format!("http://{}", get("SIXPN_API_LISTEN"));
        let dns: SocketAddr = get("SIXPN_DNS_LISTEN").parse().expect("addr");
        let admin_token = get("SIXPN_ADMIN_TOKEN");
        let child = Command::new(env!("CARGO_BIN_EXE_sixpn"))
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sixpn serve");
        let mut server = ServerProcess {
            child,
            api,
            dns,
            admin_token,
            env,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("{}/healthz", self.api);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sixpn serve exited early: {status}");
            }
            if let Ok(true) = http_probe::get_ok(&url) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sixpn serve did not answer {url} within 30 s");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tiny blocking HTTP probe without a runtime (std only), for readiness checks.
mod http_probe {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    /// `true` when `url` (plain `http://host:port/path`) answers 200.
    pub fn get_ok(url: &str) -> std::io::Result<bool> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut s = TcpStream::connect(host)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf.starts_with("HTTP/1.1 200"))
    }
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

/// Sends one UDP query from `source` (an address on 127/8) and decodes the answer.
pub fn dns_query_from(source: &str, server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let sock = UdpSocket::bind((source, 0)).expect("bind client");
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut msg = Message::query();
    msg.metadata.id = 4242;
    msg.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    sock.send_to(&msg.to_vec().expect("encode"), server)
        .expect("send");
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).expect("DNS answer");
    Message::from_vec(&buf[..n]).expect("decode")
}

/// Sends one UDP query from 127.0.0.1.
pub fn dns_query(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    dns_query_from("127.0.0.1", server, name, rtype)
}

/// The value of the first sample of `name` whose labels contain every one of `labels`.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
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
pub fn total(text: &str, name: &str, labels: &[&str]) -> f64 {
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
