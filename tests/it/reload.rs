//! Issue 18, point 3: `SIGHUP` re-reads the configuration of a running `sixpn serve`: new TLS
//! files (a connection opened before keeps working), a view added, and a broken file refused
//! whole with the old configuration still serving.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{ADMIN_TOKEN, dns_query_from, eventually, free_port, pki::Pki};

/// A `sixpn serve` started from a config file, its log in a file read while it runs.
struct Server {
    child: Child,
    api: SocketAddr,
    dns: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(config_text: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sixpn.toml");
        std::fs::write(&config, config_text).unwrap();
        let log = dir.path().join("stderr.log");
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sixpn"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("SIXPN_DATA_DIR", dir.path().join("data"))
            .env("SIXPN_API_LISTEN", api.to_string())
            .env("SIXPN_DNS_LISTEN", dns.to_string())
            .env("SIXPN_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("SIXPN_DATABASE_URL")
            .env_remove("SIXPN_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn sixpn serve");
        let mut server = Server {
            child,
            api,
            dns,
            config,
            log,
            _dir: dir,
        };
        let log = server.log.clone();
        let child = &mut server.child;
        eventually(Duration::from_secs(30), "sixpn serve listens", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "sixpn serve exited early: {status}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("DNS listening"))
        });
        server
    }

    fn rewrite(&self, text: &str) {
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    fn hup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn still_running(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the server exited:\n{}",
            self.log()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rcode_from(source: &str, server: SocketAddr) -> ResponseCode {
    dns_query_from(source, server, "internal.", RecordType::SOA)
        .metadata
        .response_code
}

#[test]
fn issue18_sighup_adds_a_view_and_a_broken_file_changes_nothing() {
    let only_127_0_0_2 = "[[dns.views]]\nsource = \"127.0.0.2/32\"\norg = \"personal\"\n";
    let mut server = Server::start(only_127_0_0_2);
    assert_eq!(rcode_from("127.0.0.2", server.dns), ResponseCode::NoError);
    assert_eq!(rcode_from("127.0.0.1", server.dns), ResponseCode::Refused);

    // A view added by reload answers its source.
    server.rewrite(&format!(
        "{only_127_0_0_2}[[dns.views]]\nsource = \"127.0.0.1/32\"\norg = \"personal\"\n"
    ));
    server.hup();
    eventually(
        Duration::from_secs(10),
        "127.0.0.1 is answered after the reload",
        || rcode_from("127.0.0.1", server.dns) == ResponseCode::NoError,
    );
    assert!(
        server.log().contains("configuration reloaded"),
        "{}",
        server.log()
    );

    // A file that does not parse: refused whole, the log names the key, nothing changes.
    server.rewrite("[dns]\ntll = 30\n");
    server.hup();
    eventually(Duration::from_secs(10), "the refusal is logged", || {
        server.log().contains("reload refused")
    });
    let log = server.log();
    let refusal = log
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap()
        .to_owned();
    assert!(
        refusal.contains("tll"),
        "the log names the bad key: {refusal}"
    );
    // A file that parses but does not validate: refused whole too, naming the key.
    server.rewrite(
        "[[dns.views]]\nsource = \"127.0.0.2/32\"\norg = \"personal\"\n\
         [groups]\nhealthy_only = [\"*\"]\nhealth_window = \"1s\"\n",
    );
    server.hup();
    eventually(
        Duration::from_secs(10),
        "the second refusal is logged",
        || server.log().matches("reload refused").count() >= 2,
    );
    assert!(
        server.log().contains("health_window"),
        "the log names the bad key:\n{}",
        server.log()
    );
    server.still_running();
    // The running configuration stays: both views still answer.
    assert_eq!(rcode_from("127.0.0.1", server.dns), ResponseCode::NoError);
    assert_eq!(rcode_from("127.0.0.2", server.dns), ResponseCode::NoError);
    // And the API too.
    let url = format!("http://{}/healthz", server.api);
    assert_eq!(http::blocking_get_status(&url), 200);
}

/// A TLS client that trusts `cas` and records the certificate the server presents.
fn tls_client(cas: &[&Path]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Opens a TLS connection and returns it with the DER of the server's certificate.
async fn connect(client: &tokio_rustls::TlsConnector, addr: SocketAddr) -> (Tls, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = client.connect(name, tcp).await.unwrap();
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (tls, der)
}

/// One keep-alive `GET /healthz` on `tls`; returns the status line.
async fn healthz(tls: &mut Tls) -> String {
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(n > 0, "the connection was closed");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn der_of(pem_file: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_file(pem_file).unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn issue18_sighup_swaps_the_tls_certificate_and_keeps_open_connections() {
    let (first, second) = (Pki::new(), Pki::new());
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (files.path().join("api.crt"), files.path().join("api.key"));
    std::fs::copy(first.path("server.crt"), &cert).unwrap();
    std::fs::copy(first.path("server.key"), &key).unwrap();
    let mut server = Server::start(&format!(
        "[api]\ntls_cert = {:?}\ntls_key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    ));
    let client = tls_client(&[&first.path("ca.pem"), &second.path("ca.pem")]);
    let (mut before, presented) = connect(&client, server.api).await;
    assert_eq!(presented, der_of(&first.path("server.crt")));
    assert!(healthz(&mut before).await.contains("200"));

    // The files are replaced (as cert-manager does: new files renamed into place), then SIGHUP.
    for (from, to) in [("server.key", &key), ("server.crt", &cert)] {
        let tmp = to.with_extension("new");
        std::fs::copy(second.path(from), &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    server.hup();
    let wanted = der_of(&second.path("server.crt"));
    let mut presented = Vec::new();
    for _ in 0..50 {
        presented = connect(&client, server.api).await.1;
        if presented == wanted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        presented,
        wanted,
        "new connections get the new certificate\n{}",
        server.log()
    );
    // The connection opened before the reload keeps working.
    assert!(healthz(&mut before).await.contains("200"));
    let (mut after, _) = connect(&client, server.api).await;
    assert!(healthz(&mut after).await.contains("200"));

    // Files changed on disk without a SIGHUP are picked up too (every few seconds).
    for (from, to) in [("server.key", &key), ("server.crt", &cert)] {
        let tmp = to.with_extension("new");
        std::fs::copy(first.path(from), &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    let wanted = der_of(&first.path("server.crt"));
    for _ in 0..100 {
        presented = connect(&client, server.api).await.1;
        if presented == wanted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(presented, wanted, "a change on disk alone is picked up");
    server.still_running();
}

/// A tiny blocking HTTP GET (plain HTTP), for the status code.
mod http {
    use std::io::{Read as _, Write as _};

    pub fn blocking_get_status(url: &str) -> u16 {
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.split(' ').nth(1).unwrap().parse().unwrap()
    }
}
