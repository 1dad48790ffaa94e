//! TLS (issue 12): the API over HTTPS with a private CA, and PostgreSQL over TLS
//! (`sslmode=require`, `verify-full`) on a throwaway server started with `ssl=on`; on the same
//! server, two replicas hand out the same default-region gateway key (issue 13).

use std::path::PathBuf;

use crate::support::pki::Pki;
use crate::support::postgres::Cluster;
use crate::support::{ADMIN_TOKEN, TestDb, server_config, sixpn_cli, start_server_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_the_api_serves_https_and_the_cli_registers_with_cacert() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let mut config = server_config(data.path(), None);
    config.api.tls_cert = Some(pki.path("server.crt"));
    config.api.tls_key = Some(pki.path("server.key"));
    config.validate().unwrap();
    let server = sixpn::serve::start(config).await.expect("server starts");
    let url = format!("https://127.0.0.1:{}", server.api_addr.port());
    let ca = pki.path("ca.pem").display().to_string();

    let work = tempfile::tempdir().unwrap();
    let (url2, ca2, dir) = (url.clone(), ca.clone(), work.path().to_owned());
    let (minted, started, refused, plain) = tokio::task::spawn_blocking(move || {
        let minted = sixpn_cli(
            &dir,
            &["token", "create", "--name", "tls", "--group", "web"],
            &[
                ("SIXPN_API_URL", &url2),
                ("SIXPN_ADMIN_TOKEN", ADMIN_TOKEN),
                ("SIXPN_CA_CERT", &ca2),
            ],
        );
        let token = String::from_utf8_lossy(&minted.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("SIXPN_WIREGUARD_TOKEN=").map(str::to_owned))
            .unwrap_or_default();
        let started = sixpn_cli(
            &dir,
            &[
                "token", "start", "node-1", "web", "", "wg0.conf", "--cacert", &ca2,
            ],
            &[("SIXPN_API_URL", &url2), ("SIXPN_WIREGUARD_TOKEN", &token)],
        );
        // Without the CA the server is not trusted.
        let refused = sixpn_cli(
            &dir,
            &["token", "start", "node-2", "web", "", "-"],
            &[("SIXPN_API_URL", &url2), ("SIXPN_WIREGUARD_TOKEN", &token)],
        );
        // Plain HTTP on the HTTPS port gets no HTTP answer.
        let plain = sixpn_cli(
            &dir,
            &["token", "start", "node-3", "web", "", "-"],
            &[
                ("SIXPN_API_URL", &url2.replace("https://", "http://")),
                ("SIXPN_WIREGUARD_TOKEN", &token),
            ],
        );
        (minted, started, refused, plain)
    })
    .await
    .unwrap();
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let conf = std::fs::read_to_string(work.path().join("wg0.conf")).unwrap();
    assert!(conf.contains("[Peer]"), "{conf}");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--cacert"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!plain.status.success());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn issue12_missing_or_bad_tls_files_are_named() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let config = |cert: PathBuf, key: PathBuf| {
        let mut config = server_config(data.path(), None);
        config.api.tls_cert = Some(cert);
        config.api.tls_key = Some(key);
        config
    };
    for (cert, key, expect) in [
        (
            pki.path("missing.crt"),
            pki.path("server.key"),
            "missing.crt",
        ),
        (
            pki.path("server.crt"),
            pki.path("missing.key"),
            "missing.key",
        ),
        (pki.path("server.key"), pki.path("server.key"), "server.key"),
        (
            pki.path("server.crt"),
            pki.path("server.crt"),
            "no PEM private key",
        ),
    ] {
        let err = match sixpn::serve::start(config(cert, key)).await {
            Ok(_) => panic!("must not start"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(expect), "{expect}: {err}");
        assert!(err.contains("api.tls_"), "{err}");
    }
}

/// A throwaway PostgreSQL cluster with `ssl=on` and the certificate of `pki`.
fn postgres_with_tls(pki: &Pki) -> Option<Cluster> {
    let (cert, key) = (pki.path("server.crt"), pki.path("server.key"));
    Cluster::start(Some((&cert, &key)), "the PostgreSQL TLS test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_postgres_over_tls_with_sslmode_require_and_verify_full() {
    use sqlx::Connection as _;
    let pki = Pki::new();
    let Some(pg) = postgres_with_tls(&pki) else {
        return;
    };
    pg.ready().await;
    let ca = pki.path("ca.pem").display().to_string();
    for params in [
        "?sslmode=require".to_owned(),
        format!("?sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let url = pg.url(&params);
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{params}: {e}"));
        let ssl: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert!(ssl, "{params}: the connection is not encrypted");
        conn.close().await.ok();
        // The store opens on it as well.
        sixpn::store::Store::open(&url, "fdaa::/16".parse().unwrap())
            .await
            .unwrap_or_else(|e| panic!("{params}: {e}"));
    }
    // verify-full without the private CA: the server's certificate is not trusted.
    let err = match sqlx::PgConnection::connect(&pg.url("?sslmode=verify-full")).await {
        Ok(_) => panic!("an untrusted certificate must be refused"),
        Err(e) => e,
    };
    eprintln!("verify-full without the CA: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_replicas_on_one_postgres_hand_out_the_same_gateway_key() {
    let pki = Pki::new();
    let Some(pg) = postgres_with_tls(&pki) else {
        return;
    };
    pg.ready().await;
    let db = TestDb::postgres(&pg.url("?sslmode=require")).await;
    let url = format!("{}?sslmode=require", db.url);
    let mut keys = Vec::new();
    let mut servers = Vec::new();
    for i in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let server = start_server_on(dir.path(), Some(&url))
            .await
            .expect("replica starts");
        // The key every answer's `key` field carries for the default region. (Registering a
        // peer through PostgreSQL currently fails in the store: `0 AS live_peers` decodes as
        // INT4 into an i64, src/store/tokens.rs; reported, not ours to fix here.)
        let region = server.regions.iter().find(|r| r.default).unwrap();
        assert_eq!(region.code.as_str(), "local");
        keys.push(region.public_key.to_string());
        // Each replica generated its own key file; only the first one's key is handed out.
        let own =
            sixpn::serve::bootstrap::load_or_generate_key(&dir.path().join("gateway.key")).unwrap();
        if i == 1 {
            assert_ne!(own.public_key().to_string(), keys[0], "distinct candidates");
        }
        servers.push((server, dir));
    }
    assert_eq!(keys[0], keys[1], "each replica handed out its own key");
    for (server, _dir) in servers {
        server.shutdown().await.unwrap();
    }
    drop(db);
    drop(pg);
}
